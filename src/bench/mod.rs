//! The load generator behind `switchboard bench`: many connections against any server, every
//! reply checked, latencies in HDR histograms.
//!
//! **Closed loop** (the default): each connection keeps `depth` requests in flight and sends
//! the next as each reply comes back, so it measures how fast the server answers as much as it
//! can take. **Open loop** (`rate`): requests go out on a fixed schedule whatever the replies
//! do, and each latency is measured from when its request was *due*, so a server that stalls
//! shows the stall in its percentiles instead of slowing the load down to hide it (coordinated
//! omission, as wrk2 corrects it).
//!
//! Connections are spread over `threads` threads, each running a single-threaded tokio
//! runtime of its own (no work stealing, no locks shared between threads); counts are merged
//! at the end. Only replies that arrive inside the measured window (after the warm-up) count.
//!
//! ```no_run
//! use switchboard::bench::{self, BenchConfig};
//! let mut config = BenchConfig::new("tcp://127.0.0.1:8079".parse().unwrap());
//! config.conns = 100;
//! config.duration = std::time::Duration::from_secs(5);
//! let report = bench::run(&config, &mut ()).unwrap();
//! println!("{:.0} msgs/s, p99 {} µs", report.result.msgs_per_s, report.result.p99_us);
//! ```

mod datagram;
mod payload;
mod schedule;
pub mod shard;
mod stream;
mod tally;

pub use payload::{Expect, Payload};

use crate::addr::Addr;
use crate::codec::{Codec, Framing, DEFAULT_MAX_FRAME};
use crate::store::{BenchResult, BenchRow};
use crate::transport::MAX_DATAGRAM;
use datagram::{datagram_loop, DatagramSocket};
use schedule::Schedule;
use std::cell::Cell;
use std::collections::BTreeMap;
use std::io;
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use stream::{closed_loop, open_loop, Conn};
use tally::{Failure, Tally};
use tokio::net::{TcpStream, UnixStream};

/// What to measure and how: the options of `switchboard bench`.
#[derive(Debug, Clone)]
pub struct BenchConfig {
    /// The server.
    pub addr: Addr,
    /// Connections (for datagrams: sockets) open at once. Default 50.
    pub conns: usize,
    /// Requests in flight per connection in the closed loop (above 1: pipelining). Default 1.
    pub depth: usize,
    /// What each request carries. Default: 64 lower-case letters.
    pub payload: Payload,
    /// Open loop: requests per second in all, spread evenly over the connections. `None`:
    /// closed loop.
    pub rate: Option<f64>,
    /// How long the measured window lasts. Default 10 s.
    pub duration: Duration,
    /// How long to run before measuring (connections open, caches warm). Default 1 s.
    pub warmup: Duration,
    /// Threads that generate load. Default: one per core this process may use, or half of
    /// them when the server is on this machine (a loopback or Unix address), so the server
    /// keeps cores of its own: a load generator that takes every core measures itself.
    pub threads: usize,
    /// The server's framing.
    pub framing: Framing,
    /// What a correct reply is.
    pub expect: Expect,
    /// A reply owed for longer than this fails its connection (`timeout`); a datagram is
    /// counted lost. Default 5 s.
    pub timeout: Duration,
    /// After a connection fails, open another and go on (the failure is still counted).
    pub reconnect: bool,
    /// Run the load generator's threads on these CPUs only.
    pub cpus: Option<Vec<usize>>,
    /// How a `tls://` server is trusted (see [`crate::tls::client_config`]). `None`: no
    /// certificate is.
    pub tls: Option<std::sync::Arc<rustls::ClientConfig>>,
    /// TCP: the local addresses connections are made from, in turn (empty: the kernel's
    /// choice). Each gives about 28,000 ports to one server; [`run`] spreads connections to a
    /// loopback IPv4 server over 127.0.0.x by itself when one address has too few.
    pub sources: Vec<std::net::IpAddr>,
}

/// Connections one source address is given to one server: the kernel's ephemeral ports
/// (32768-60999 by default) less a margin for other sockets.
pub const CONNS_PER_SOURCE: usize = 25_000;

/// Open files kept for other uses than connections (the store, the runtime, stdio).
const SPARE_FILES: u64 = 64;

impl BenchConfig {
    /// The defaults of `switchboard bench`, against `addr`.
    pub fn new(addr: Addr) -> Self {
        BenchConfig {
            threads: default_threads(&addr),
            addr,
            conns: 50,
            depth: 1,
            payload: Payload::Letters(64),
            rate: None,
            duration: Duration::from_secs(10),
            warmup: Duration::from_secs(1),
            framing: Framing::Raw,
            expect: Expect::Upper,
            timeout: Duration::from_secs(5),
            reconnect: false,
            cpus: None,
            tls: None,
            sources: Vec::new(),
        }
    }

    /// Refuses a configuration that cannot run, saying what to change.
    fn check(&self) -> Result<(), BenchError> {
        let invalid = |why: String| Err(BenchError::Invalid(why));
        if self.conns == 0 || self.depth == 0 || self.threads == 0 {
            return invalid("--conns, --depth and --threads must be at least 1".into());
        }
        if self.payload.is_empty() {
            return invalid("the message must not be empty (--size at least 1)".into());
        }
        if self.duration.is_zero() {
            return invalid("--duration must be above 0".into());
        }
        match self.rate {
            Some(r) if !(r.is_finite() && r > 0.0) => {
                return invalid(format!("--rate {r}: give a number of messages per second above 0"))
            }
            Some(r) if r / (self.conns as f64) > 1e6 => {
                return invalid(format!(
                    "--rate {r} over {} connections is over a million per connection per second: open more connections",
                    self.conns
                ))
            }
            _ => {}
        }
        if let Payload::Fixed(m) = &self.payload {
            if self.framing == Framing::Line && m.contains(&b'\n') {
                return invalid(
                    "a line-framed message cannot hold a newline (use --frame len)".into(),
                );
            }
        }
        let framed = self.payload.len() + if self.framing == Framing::Len { 4 } else { 1 };
        if !self.addr.is_stream() && framed > MAX_DATAGRAM {
            return invalid(format!(
                "a {}-byte message does not fit in one datagram (at most {MAX_DATAGRAM} bytes with its framing)",
                self.payload.len()
            ));
        }
        if framed > DEFAULT_MAX_FRAME {
            return invalid(format!(
                "a {}-byte message is over the 16 MiB that servers take by default",
                self.payload.len()
            ));
        }
        Ok(())
    }
}

/// One thread per core, or half the cores for a server on this machine.
fn default_threads(addr: &Addr) -> usize {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let local = match addr {
        Addr::Tcp(sa) | Addr::Tls { addr: sa, .. } | Addr::Udp(sa) => sa.ip().is_loopback(),
        Addr::Unix(_) | Addr::UnixGram(_) => true,
    };
    if local {
        (cores / 2).max(1)
    } else {
        cores
    }
}

/// Why a run could not be made.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// The configuration cannot run.
    #[error("{0}")]
    Invalid(String),
    /// Nothing answered at the address before the run.
    #[error("cannot reach {addr}: {why} (is a server listening there? `switchboard serve {addr}` starts one)")]
    Unreachable {
        /// The server's address.
        addr: Addr,
        /// What failed.
        why: String,
    },
    /// The load generator's threads could not be started.
    #[error("cannot start the load generator")]
    Io(#[from] io::Error),
}

/// How far a run has come, for a progress line.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Progress {
    /// Connections made so far (while connecting; afterwards all that were).
    pub connected: u64,
    /// True once every connection is made (or has failed once) and the load has begun.
    pub started: bool,
    /// Since the load started (warm-up included); zero while connecting.
    pub elapsed: Duration,
    /// The load's whole length (warm-up included).
    pub total: Duration,
    /// True once the warm-up is over.
    pub measuring: bool,
    /// Replies counted so far.
    pub replies: u64,
    /// Replies per second so far in the measured window.
    pub msgs_per_s: f64,
    /// The 99th percentile latency so far, in µs.
    pub p99_us: u64,
    /// Failures and mismatches so far.
    pub errors: u64,
}

/// Told what happens during a run, on the thread that called [`run`]: the lab reads a
/// server's CPU time and memory at the edges of the measured window.
pub trait Observer {
    /// Every connection is made (or has failed once); the load begins when this returns, so
    /// an observer may hold it back (the processes of one bench start together).
    fn all_connected(&mut self) {}
    /// The warm-up is over: the measured window begins.
    fn window_started(&mut self) {}
    /// A few times a second.
    fn progress(&mut self, _progress: &Progress) {}
    /// The measured window is over; connections are still open.
    fn window_ended(&mut self) {}
}

/// Nothing to observe.
impl Observer for () {}

/// What a run measured. `--json` prints it as one object: the [`BenchResult`] a store keeps
/// of it, and what only the run itself knows (how replies were checked, the load generator's
/// threads and processes, connecting, errors by kind).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Report {
    /// The figures a store keeps (`bench_runs`).
    #[serde(flatten)]
    pub result: BenchResult,
    /// How replies were checked.
    pub expect: Expect,
    /// Connections made (reconnects included).
    pub connected: u64,
    /// The warm-up before the measured window, in seconds.
    pub warmup_secs: f64,
    /// Load generator threads, in all.
    pub threads: usize,
    /// Load generator processes: 1, or more when the connections need more open files than
    /// one process may have.
    pub processes: usize,
    /// The local addresses connections were made from (empty: the kernel's choice).
    pub sources: Vec<String>,
    /// Correct replies in the window.
    pub msgs: u64,
    /// Mean latency, in µs.
    pub mean_us: f64,
    /// How long making every connection took, in seconds, before the load (and the warm-up)
    /// began.
    pub connect_secs: f64,
    /// Time to connect, median and slowest, in µs.
    pub connect_p50_us: u64,
    /// See `connect_p50_us`.
    pub connect_max_us: u64,
    /// `errors` by kind: refused, connect, reset, closed, timeout, frame, lost, io.
    pub errors_by_kind: BTreeMap<&'static str, u64>,
}

impl Report {
    /// The row a store keeps of this run (`runs`), begun at `started` (µs since the epoch):
    /// `model` is the lab's server or `bench --label`, `lab` the lab run it belongs to. What
    /// the server cost (CPU, memory) is the lab's to fill in.
    pub fn row(&self, started: i64, model: Option<String>, lab: Option<String>) -> BenchRow {
        BenchRow {
            run: crate::store::unique_id(),
            lab,
            started,
            model,
            result: self.result.clone(),
            cpu_us_per_msg: None,
            rss_bytes_per_conn: None,
        }
    }

    /// True when every reply was right and no connection failed.
    pub fn clean(&self) -> bool {
        self.result.errors == 0 && self.result.mismatches == 0
    }
}

/// A figure as reports print it, rounded, with thousands separated: `1,234,567`.
///
/// ```
/// assert_eq!(switchboard::bench::thousands(1234567.4), "1,234,567");
/// assert_eq!(switchboard::bench::thousands(-28672.0), "-28,672");
/// assert_eq!(switchboard::bench::thousands(999.0), "999");
/// ```
pub fn thousands(v: f64) -> String {
    let digits = (v.round().abs() as u64).to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3 + 1);
    if v.round() < 0.0 {
        out.push('-');
    }
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// What every connection of one thread shares for the run.
pub(crate) struct Plan {
    pub(crate) payload: Payload,
    pub(crate) framing: Framing,
    pub(crate) codec: Box<dyn Codec>,
    pub(crate) expect: Expect,
    pub(crate) depth: usize,
    pub(crate) timeout: Duration,
    pub(crate) tls: Option<std::sync::Arc<rustls::ClientConfig>>,
    pub(crate) sources: Vec<std::net::IpAddr>,
    /// Connects in flight at once on this thread: thousands of connections opened together
    /// would overflow the server's backlog and wait out SYN retransmits (seconds each).
    pub(crate) connecting: tokio::sync::Semaphore,
    /// Set when the run is over: each connection stops sending, says so (a FIN, and TLS's
    /// close_notify) and reads what is still on its way, so the server sees an orderly close
    /// rather than the reset a socket closed with unread replies sends.
    pub(crate) ending: tokio::sync::watch::Sender<bool>,
}

/// How long a connection at the end of a run waits for the server's last replies and close.
const CLOSING: Duration = Duration::from_secs(2);

impl Plan {
    /// Completes once the run is over.
    pub(crate) async fn over(&self) {
        let _ = self.ending.subscribe().wait_for(|over| *over).await;
    }
}

/// Connects (and TLS handshakes) in flight at once per load generator thread.
const CONNECTS_AT_ONCE: usize = 64;

impl Plan {
    /// The sequence number (and its modulus) a reply's body carries, where it can be read.
    pub(crate) fn carried_seq(&self, reply: &[u8]) -> Option<(u64, u64)> {
        match self.expect {
            Expect::Any => None,
            _ => self.payload.seq_of(reply),
        }
    }
}

/// Runs the load `config` describes and reports it. `observer` is told of the window's edges
/// and of progress a few times a second.
///
/// The connections must fit in this process's open files ([`conns_per_process`]); the
/// `switchboard` command spreads more over several processes ([`shard`]).
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
fn measure(
    config: &BenchConfig,
    observer: &mut dyn Observer,
) -> Result<(BenchConfig, usize, Tally), BenchError> {
    config.check()?;
    let most = conns_per_process();
    if config.conns > most {
        return Err(BenchError::Invalid(format!(
            "--conns {} needs {} open files and this process may have {} (RLIMIT_NOFILE, raised to its hard limit): spread the connections over several processes (the switchboard command does so by itself), or raise the hard limit (ulimit -Hn)",
            config.conns,
            config.conns as u64 + SPARE_FILES,
            most as u64 + SPARE_FILES
        )));
    }
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
    let total = config.warmup + config.duration;
    let progress = |started: bool, elapsed: Duration, measuring: bool| {
        let so_far = merged(&tallies);
        let window = elapsed.saturating_sub(config.warmup).as_secs_f64();
        Progress {
            connected: so_far.connected,
            started,
            elapsed,
            total,
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
    let connect_secs = (t0 - begun).as_secs_f64();
    let window_start = t0 + config.warmup;
    let stop = window_start + config.duration;
    for tally in &tallies {
        tally
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .set_window(window_start, stop);
    }
    let _ = go.send(Some(t0));
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
        let next = if measuring {
            (now + Duration::from_millis(250)).min(stop)
        } else {
            (now + Duration::from_millis(250)).min(window_start)
        };
        std::thread::sleep(next.saturating_duration_since(now));
        observer.progress(&progress(true, t0.elapsed().min(total), measuring));
    }
    if !measuring {
        observer.window_started();
    }
    observer.window_ended();
    for handle in handles {
        handle
            .join()
            .map_err(|_| io::Error::other("a load generator thread panicked"))??;
    }
    let mut all = merged(&tallies);
    all.connect_secs = connect_secs;
    Ok((config.clone(), threads, all))
}

/// Where a thread's connections wait once made: the count of connections made or failed
/// once, and the moment the load starts, sent once all are.
struct StartLine {
    settled: Arc<std::sync::atomic::AtomicUsize>,
    go: tokio::sync::watch::Receiver<Option<Instant>>,
}

fn merged(tallies: &[Arc<Mutex<Tally>>]) -> Tally {
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
fn spread_sources(config: &BenchConfig) -> Result<Option<BenchConfig>, BenchError> {
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

fn report(config: &BenchConfig, threads: usize, processes: usize, t: &Tally) -> Report {
    let secs = config.duration.as_secs_f64();
    let us = |q: f64| t.latency.value_at_quantile(q) / 1000;
    let msgs_per_s = t.replies as f64 / secs;
    Report {
        result: BenchResult {
            address: config.addr.to_string(),
            frame: config.framing.name().to_string(),
            conns: config.conns as u64,
            size: config.payload.len() as u64,
            depth: config.depth as u64,
            rate: config.rate,
            secs,
            msgs_per_s,
            mb_per_s: msgs_per_s * config.payload.len() as f64 / 1e6,
            p50_us: us(0.5),
            p90_us: us(0.9),
            p99_us: us(0.99),
            p999_us: us(0.999),
            max_us: t.latency.max() / 1000,
            errors: t.errors(),
            mismatches: t.mismatches,
        },
        expect: config.expect,
        connected: t.connected,
        warmup_secs: config.warmup.as_secs_f64(),
        threads,
        processes,
        sources: config.sources.iter().map(|ip| ip.to_string()).collect(),
        msgs: t.replies,
        mean_us: t.latency.mean() / 1000.0,
        connect_secs: t.connect_secs,
        connect_p50_us: t.connect.value_at_quantile(0.5) / 1000,
        connect_max_us: t.connect.max() / 1000,
        errors_by_kind: t.failures.iter().map(|(k, v)| (k.name(), *v)).collect(),
    }
}

/// One connection before the run, so a server that is not there is one clear error rather
/// than a report of every connection failing.
fn probe(config: &BenchConfig) -> Result<(), BenchError> {
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
fn generate(
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
        framing: config.framing,
        codec: config.framing.codec(DEFAULT_MAX_FRAME),
        expect: config.expect,
        depth: config.depth,
        timeout: config.timeout,
        tls: config.tls.clone(),
        sources: config.sources.clone(),
        connecting: tokio::sync::Semaphore::new(CONNECTS_AT_ONCE),
        ending: tokio::sync::watch::Sender::new(false),
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
            let conn = Conn {
                plan: &plan,
                tally: &tally,
                id: id as u64,
                seq: Cell::new(0),
            };
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
async fn started(start: &StartLine) -> Option<Instant> {
    let mut go = start.go.clone();
    go.wait_for(Option::is_some).await.ok().and_then(|t| *t)
}

/// One connection for the whole run: connects, drives the loop, and on a failure counts it
/// and, with `reconnect`, connects again.
///
/// The first attempt settles the connection at the start line (made or failed); once made,
/// it waits there for the load to start. `rate` is the open loop's (offset, interval).
async fn connection(
    conn: &Conn<'_>,
    addr: &Addr,
    rate: Option<(Duration, Duration)>,
    reconnect: bool,
    start: &StartLine,
) {
    let mut settled = false;
    let mut settle = || {
        if !std::mem::replace(&mut settled, true) {
            start
                .settled
                .fetch_add(1, std::sync::atomic::Ordering::Release);
        }
    };
    let mut schedule: Option<Schedule> = None;
    loop {
        // A place among the connects in flight, given back once this one is made or failed.
        let permit = conn.plan.connecting.acquire().await.ok();
        let began = Instant::now();
        let made = match addr {
            Addr::Tcp(sa) => connect(tcp_connect(conn, *sa), conn.plan.timeout)
                .await
                .map(Made::Tcp),
            Addr::Tls { addr: sa, host } => {
                let handshake = async {
                    let s = TcpStream::connect(sa).await?;
                    let config = match &conn.plan.tls {
                        Some(config) => config.clone(),
                        None => crate::tls::client_config(None, false).map_err(io::Error::other)?,
                    };
                    tokio_rustls::TlsConnector::from(config)
                        .connect(crate::tls::server_name(host), s)
                        .await
                };
                connect(handshake, conn.plan.timeout)
                    .await
                    .map(|s| Made::Tls(Box::new(s)))
            }
            Addr::Unix(path) => connect(UnixStream::connect(path), conn.plan.timeout)
                .await
                .map(Made::Unix),
            Addr::Udp(_) | Addr::UnixGram(_) => {
                connect(DatagramSocket::connect(addr), conn.plan.timeout)
                    .await
                    .map(Made::Datagram)
            }
        };
        drop(permit);
        settle();
        let result = match made {
            Err(failure) => Err(failure),
            Ok(made) => {
                conn.lock().connected(began.elapsed());
                // Made: it waits at the start line; the open loop's schedule starts from it.
                let Some(t0) = started(start).await else {
                    return;
                };
                if schedule.is_none() {
                    schedule = rate.map(|(offset, interval)| Schedule::new(t0 + offset, interval));
                }
                match made {
                    Made::Tcp(s) => {
                        let _ = s.set_nodelay(true);
                        drive(s, conn, schedule.as_mut()).await
                    }
                    Made::Tls(s) => {
                        let _ = s.get_ref().0.set_nodelay(true);
                        drive(s, conn, schedule.as_mut()).await
                    }
                    Made::Unix(s) => drive(s, conn, schedule.as_mut()).await,
                    Made::Datagram(s) => datagram_loop(&s, conn, schedule.as_mut()).await,
                }
            }
        };
        let Err(failure) = result else { return };
        conn.lock().fail(failure, Instant::now());
        if !reconnect {
            return;
        }
        // A refusing server is not hammered; another failure reconnects at once.
        if failure == Failure::Refused {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if let Some(schedule) = &mut schedule {
            schedule.restart(Instant::now());
        }
    }
}

/// A connection made, of whichever kind the address asks for.
enum Made {
    Tcp(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
    Unix(UnixStream),
    Datagram(DatagramSocket),
}

/// A TCP connection to `server`, from this connection's source address if there are several.
async fn tcp_connect(conn: &Conn<'_>, server: std::net::SocketAddr) -> io::Result<TcpStream> {
    let sources = &conn.plan.sources;
    if sources.is_empty() {
        return TcpStream::connect(server).await;
    }
    let source = sources[conn.id as usize % sources.len()];
    let socket = match source {
        std::net::IpAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        std::net::IpAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    // The port is chosen at connect, by the whole address pair, as without a bind: so
    // loopback's TIME_WAIT sockets of earlier runs can be reused rather than exhaust the ports.
    crate::sys::bind_address_no_port(std::os::fd::AsRawFd::as_raw_fd(&socket));
    socket.bind((source, 0).into())?;
    socket.connect(server).await
}

async fn connect<S>(
    connecting: impl std::future::Future<Output = io::Result<S>>,
    timeout: Duration,
) -> Result<S, Failure> {
    match tokio::time::timeout(timeout, connecting).await {
        Ok(Ok(s)) => Ok(s),
        Ok(Err(e)) => Err(Failure::connecting(&e)),
        Err(_) => Err(Failure::Timeout),
    }
}

async fn drive<S>(
    mut stream: S,
    conn: &Conn<'_>,
    schedule: Option<&mut Schedule>,
) -> Result<(), Failure>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    match schedule {
        None => {
            closed_loop(&mut stream, conn).await?;
            close(&mut stream).await;
            Ok(())
        }
        Some(schedule) => open_loop(stream, conn, schedule).await,
    }
}

/// The run is over: says so (shuts the writing side: a FIN, and TLS's close_notify first) and
/// reads, uncounted, what the server still sends until it closes too, so neither side leaves
/// unread bytes that would turn the close into a reset.
pub(crate) async fn close<S>(stream: &mut S)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let _ = stream.shutdown().await;
    let mut sink = vec![0u8; 16 * 1024];
    let drained = async { while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {} };
    let _ = tokio::time::timeout(CLOSING, drained).await;
}
