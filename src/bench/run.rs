//! A run: the connections spread over threads, each a single-threaded tokio runtime, made
//! first, then the warm-up and the measured window; their counts merged at the end.

use crate::addr::Addr;
use crate::bench::config::{BenchConfig, BenchError, CONNS_PER_SOURCE, SPARE_FILES};
use crate::bench::connection::{connection, Plan, CLOSING};
use crate::bench::observer::{Observer, Progress};
use crate::bench::payload::Messages;
use crate::bench::report::{report, Report};
use crate::bench::stream::Conn;
use crate::bench::tally::Tally;
use crate::codec::DEFAULT_MAX_FRAME;
use std::io;
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Connects (and TLS handshakes) in flight at once per load generator thread.
pub(super) const CONNECTS_AT_ONCE: usize = 64;

/// Runs the load `config` describes and reports it. `observer` is told of the window's edges
/// and of progress a few times a second.
///
/// The connections must fit in this process's open files ([`conns_per_process`]); the
/// `switchboard` command spreads more over several processes ([`crate::bench::shard`]).
pub fn run(config: &BenchConfig, observer: &mut dyn Observer) -> Result<Report, BenchError> {
    let (config, threads, tally) = measure(config, observer)?;
    Ok(report(&config, threads, 1, &tally))
}

/// How many connections one process can hold: its open-file limit (raised to the hard
/// limit) less a few files for other uses.
pub fn conns_per_process() -> usize {
    crate::sys::raise_fd_limit();
    crate::sys::fd_limit().saturating_sub(SPARE_FILES) as usize
}

/// Runs the load; the configuration it ran (with the source addresses it spread over), its
/// threads and their counts merged.
pub(super) fn measure(
    config: &BenchConfig,
    observer: &mut dyn Observer,
) -> Result<(BenchConfig, usize, Tally), BenchError> {
    config.check()?;
    fits_one_process(config)?;
    let config = spread_sources(config)?.unwrap_or_else(|| config.clone());
    let config = &config;
    probe(config)?;
    let threads = config.threads.min(config.conns);
    // Connecting comes first, every connection at once (paced per thread); the load, its
    // warm-up and its window start from the moment all are made, so no request waits on the
    // load generator's own connects.
    let begun = Instant::now();
    let far = begun + Duration::from_secs(365 * 86_400);
    let tallies: Vec<Arc<Mutex<Tally>>> = (0..threads)
        .map(|_| Arc::new(Mutex::new(Tally::new(far, far))))
        .collect();
    let settled = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (go, start) = tokio::sync::watch::channel(None);
    let mut handles = Vec::with_capacity(threads);
    for (t, tally) in tallies.iter().enumerate() {
        let (config, tally) = (config.clone(), tally.clone());
        let start = StartLine {
            settled: settled.clone(),
            go: start.clone(),
        };
        let handle = std::thread::Builder::new()
            .name(format!("bench-{t}"))
            .spawn(move || generate(&config, t, threads, tally, start))?;
        handles.push(handle);
    }
    let progress = |started, elapsed, measuring| {
        progress_of(config, &merged(&tallies), started, elapsed, measuring)
    };
    while settled.load(std::sync::atomic::Ordering::Acquire) < config.conns {
        if handles.iter().any(|h| h.is_finished()) {
            break; // a thread that could not start; its error is below
        }
        std::thread::sleep(Duration::from_millis(50));
        observer.progress(&progress(false, Duration::ZERO, false));
    }
    observer.all_connected();
    let t0 = Instant::now();
    let (window_start, stop) = (t0 + config.warmup, t0 + config.warmup + config.duration);
    for tally in &tallies {
        let mut tally = tally.lock().unwrap_or_else(|e| e.into_inner());
        tally.set_window(window_start, stop);
    }
    let _ = go.send(Some(t0));
    watch_window(observer, t0, window_start, stop, &progress);
    for handle in handles {
        handle
            .join()
            .map_err(|_| io::Error::other("a load generator thread panicked"))??;
    }
    let mut all = merged(&tallies);
    all.connect_secs = (t0 - begun).as_secs_f64();
    Ok((config.clone(), threads, all))
}

/// Refuses more connections than this process may have open files for.
fn fits_one_process(config: &BenchConfig) -> Result<(), BenchError> {
    let most = conns_per_process();
    if config.conns <= most {
        return Ok(());
    }
    Err(BenchError::Invalid(format!(
        "--conns {} needs {} open files and this process may have {} (RLIMIT_NOFILE, raised to its hard limit): spread the connections over several processes (the switchboard command does so by itself), or raise the hard limit (ulimit -Hn)",
        config.conns,
        config.conns as u64 + SPARE_FILES,
        most as u64 + SPARE_FILES
    )))
}

/// Tells `observer` of the load from `t0` (its start) to `stop`: the window's edges, and
/// `progress` four times a second.
fn watch_window(
    observer: &mut dyn Observer,
    t0: Instant,
    window_start: Instant,
    stop: Instant,
    progress: &dyn Fn(bool, Duration, bool) -> Progress,
) {
    let mut measuring = false;
    loop {
        let now = Instant::now();
        if now >= stop {
            break;
        }
        if !measuring && now >= window_start {
            measuring = true;
            observer.window_started();
        }
        let edge = if measuring { stop } else { window_start };
        let next = (now + Duration::from_millis(250)).min(edge);
        std::thread::sleep(next.saturating_duration_since(now));
        observer.progress(&progress(true, t0.elapsed().min(stop - t0), measuring));
    }
    if !measuring {
        observer.window_started();
    }
    observer.window_ended();
}

/// Progress so far, from the threads' counts merged: `elapsed` since the load started.
fn progress_of(
    config: &BenchConfig,
    so_far: &Tally,
    started: bool,
    elapsed: Duration,
    measuring: bool,
) -> Progress {
    let window = elapsed.saturating_sub(config.warmup).as_secs_f64();
    Progress {
        connected: so_far.connected,
        started,
        elapsed,
        total: config.warmup + config.duration,
        measuring,
        replies: so_far.replies,
        msgs_per_s: if window > 0.0 {
            so_far.replies as f64 / window
        } else {
            0.0
        },
        p99_us: so_far.latency.value_at_quantile(0.99) / 1000,
        errors: so_far.errors() + so_far.mismatches,
    }
}

/// Where a thread's connections wait once made: the count of connections made or failed
/// once, and the moment the load starts, sent once all are.
pub(super) struct StartLine {
    pub(super) settled: Arc<std::sync::atomic::AtomicUsize>,
    pub(super) go: tokio::sync::watch::Receiver<Option<Instant>>,
}

pub(super) fn merged(tallies: &[Arc<Mutex<Tally>>]) -> Tally {
    let mut all: Option<Tally> = None;
    for t in tallies {
        let t = t.lock().unwrap_or_else(|e| e.into_inner());
        match &mut all {
            None => {
                let mut first = Tally::new(Instant::now(), Instant::now());
                first.add(&t);
                all = Some(first);
            }
            Some(all) => all.add(&t),
        }
    }
    all.unwrap_or_else(|| Tally::new(Instant::now(), Instant::now()))
}

/// A copy of `config` with its connections spread over enough loopback source addresses, when
/// one address has too few ports for them; an error when the server's address has no others.
pub(super) fn spread_sources(config: &BenchConfig) -> Result<Option<BenchConfig>, BenchError> {
    let needed = config.conns.div_ceil(CONNS_PER_SOURCE);
    let server = match &config.addr {
        Addr::Tcp(sa) | Addr::Tls { addr: sa, .. } => *sa,
        _ => return Ok(None),
    };
    if needed <= 1 || config.sources.len() >= needed {
        return Ok(None);
    }
    if !config.sources.is_empty() {
        return Err(BenchError::Invalid(format!(
            "{} connections need {needed} source addresses (about {CONNS_PER_SOURCE} each), and {} were given",
            config.conns,
            config.sources.len()
        )));
    }
    match server.ip() {
        std::net::IpAddr::V4(ip) if ip.is_loopback() && needed < 255 => {
            let mut spread = config.clone();
            spread.sources = (1..=needed as u8)
                .map(|n| std::net::IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, n)))
                .collect();
            Ok(Some(spread))
        }
        _ => Err(BenchError::Invalid(format!(
            "{} connections to one server need {needed} source addresses (about {CONNS_PER_SOURCE} ports each); only a 127.0.0.0/8 server gets them by itself: give addresses this machine has with --source",
            config.conns
        ))),
    }
}

/// One connection before the run, so a server that is not there is one clear error rather
/// than a report of every connection failing.
pub(super) fn probe(config: &BenchConfig) -> Result<(), BenchError> {
    let unreachable = |why: String| BenchError::Unreachable {
        addr: config.addr.clone(),
        why,
    };
    match &config.addr {
        Addr::Tcp(sa) => std::net::TcpStream::connect_timeout(sa, config.timeout)
            .map(drop)
            .map_err(|e| unreachable(e.to_string())),
        Addr::Unix(path) => std::os::unix::net::UnixStream::connect(path)
            .map(drop)
            .map_err(|e| unreachable(e.to_string())),
        // A datagram server shows it is there only by answering; a TLS one by a handshake
        // this client's trust accepts.
        Addr::Udp(_) | Addr::UnixGram(_) | Addr::Tls { .. } => {
            let mut client = crate::client::Client::connect_tls(
                &config.addr,
                config.framing,
                config.tls.clone(),
            )
            .map_err(|e| unreachable(e.to_string()))?;
            client.set_timeout(config.timeout);
            let mut body = Vec::new();
            config.payload.body(u64::MAX, 0, &mut body);
            client
                .request(&body)
                .map(drop)
                .map_err(|e| unreachable(e.to_string()))
        }
    }
}

/// One load generator thread: a single-threaded runtime driving connections `first`,
/// `first + threads`, ... from the start line to the end of the run.
pub(super) fn generate(
    config: &BenchConfig,
    first: usize,
    threads: usize,
    tally: Arc<Mutex<Tally>>,
    start: StartLine,
) -> io::Result<()> {
    if let Some(cpus) = &config.cpus {
        crate::sys::pin_current_thread(cpus)?;
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let local = tokio::task::LocalSet::new();
    let plan = Rc::new(Plan {
        payload: config.payload.clone(),
        messages: Messages::new(&config.payload, config.expect),
        framing: config.framing,
        codec: config.framing.codec(DEFAULT_MAX_FRAME),
        expect: config.expect,
        depth: config.depth,
        timeout: config.timeout,
        tls: config.tls.clone(),
        sources: config.sources.clone(),
        connecting: tokio::sync::Semaphore::new(CONNECTS_AT_ONCE),
        ending: tokio::sync::watch::Sender::new(false),
        go: tokio::sync::watch::Sender::new(None),
    });
    let start = Rc::new(start);
    let mut connections = Vec::new();
    for id in (first..config.conns).step_by(threads) {
        let (plan, tally, addr) = (plan.clone(), tally.clone(), config.addr.clone());
        // Open loop: connection `id` sends every `conns / rate` seconds from the start, the
        // connections staggered so the requests are spread evenly over time.
        let rate = config.rate.map(|rate| {
            (
                Duration::from_secs_f64(id as f64 / rate),
                Duration::from_secs_f64(config.conns as f64 / rate),
            )
        });
        let (reconnect, start) = (config.reconnect, start.clone());
        connections.push(local.spawn_local(async move {
            let conn = Conn::new(&plan, &tally, id as u64);
            connection(&conn, &addr, rate, reconnect, &start).await;
        }));
    }
    // At the end every connection closes in order (bounded by CLOSING); dropping the runtime
    // then ends any that has not. What is still in flight is not counted either way.
    let (warmup, duration) = (config.warmup, config.duration);
    local.block_on(&runtime, async move {
        let Some(t0) = started(&start).await else {
            return;
        };
        plan.go.send_replace(Some(t0));
        tokio::time::sleep_until((t0 + warmup + duration).into()).await;
        plan.ending.send_replace(true);
        let deadline = tokio::time::Instant::now() + CLOSING;
        for connection in connections {
            let _ = tokio::time::timeout_at(deadline, connection).await;
        }
    });
    Ok(())
}

/// Waits for the start line; when the load started. `None`: the run was given up before it
/// started.
pub(super) async fn started(start: &StartLine) -> Option<Instant> {
    let mut go = start.go.clone();
    go.wait_for(Option::is_some).await.ok().and_then(|t| *t)
}
