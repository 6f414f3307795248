//! `switchboard bench`: the load generator, against any server.

use super::{parse_addr, parse_duration, parse_size, print_json, Failed, RecordArgs, DEFAULT_ADDR};
use indicatif::{ProgressBar, ProgressStyle};
use std::io::{self, IsTerminal, Write};
use std::time::Duration;
use switchboard::bench::{
    self, shard, thousands, BenchConfig, Expect, Observer, Payload, Progress, Report,
};
use switchboard::codec::Framing;
use switchboard::store::now_us;
use switchboard::Addr;

/// Load a server with many connections, check every reply, report throughput and latency.
#[derive(clap::Args)]
#[command(
    args_override_self = true,
    long_about = "Load a server with many connections, check every reply, and report throughput and latency percentiles.\n\n\
    Closed loop (the default): each connection keeps --depth requests in flight and sends the next as each reply comes back.\n\
    Open loop (--rate): requests go out on a fixed schedule whatever the replies do, and each latency counts from when its request was due, so a stalling server shows in the percentiles.\n\n\
    Nothing is hidden: a request still unanswered when the run ends counts in the latencies as at least its wait until then, and the report says how many connections asked and were never answered, the spread of replies per connection, and what was left waiting.\n\n\
    Exit status 1 if any reply was wrong, any connection failed, any connection was never answered, or a request was left waiting past --max-wait (unless --allow-unserved); the report says how many and of which kind.",
    after_help = "Examples:\n  switchboard bench\n  switchboard bench tcp://127.0.0.1:9000 --conns 1000 --duration 30s\n  switchboard bench unix:///tmp/sb.sock --frame line --rate 20000 --json\n  switchboard bench udp://127.0.0.1:9000 --depth 4"
)]
pub struct Args {
    /// The server: tcp://, unix://, udp:// or unixgram://.
    #[arg(default_value = DEFAULT_ADDR, value_parser = parse_addr)]
    addr: Addr,
    /// Connections (datagram sockets) open at once. Past what one process may hold (its open-file limit), bench runs as several processes, each with a share, and reports them as one.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    conns: u64,
    /// Requests in flight per connection (closed loop); above 1 pipelines.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=65536))]
    depth: u64,
    /// Bytes per request: lower-case letters, different in every message. With a unit: 4KiB.
    #[arg(long, default_value = "64", value_parser = parse_size, conflicts_with = "message")]
    size: usize,
    /// Send this text in every request instead of generated letters.
    #[arg(long)]
    message: Option<String>,
    /// Open loop: requests per second in all, spread evenly over the connections.
    #[arg(long)]
    rate: Option<f64>,
    /// How long to measure: seconds or with a unit (500ms, 10s, 2m).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    duration: Duration,
    /// How long to run before measuring.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    warmup: Duration,
    /// Load generator threads (default: one per core, or half the cores when the server is on this machine, so it keeps cores of its own).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=1024))]
    threads: Option<u64>,
    /// The server's framing.
    #[arg(long, value_enum, default_value_t = Framing::default())]
    frame: Framing,
    /// What a correct reply is: upper (the request upper-cased), echo (the request), any (not checked).
    #[arg(long, value_enum, default_value_t = Expect::default())]
    expect: Expect,
    /// A reply owed for longer than this fails its connection (a datagram is counted lost).
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    timeout: Duration,
    /// After a connection fails, count it and open another.
    #[arg(long)]
    reconnect: bool,
    /// A run that ends with a request unanswered for longer than this exits 1 (its wait is among the latencies either way).
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    max_wait: Duration,
    /// Exit 0 even when connections were never answered or a request waited past --max-wait: for measuring an unfair server on purpose.
    #[arg(long)]
    allow_unserved: bool,
    /// What to call the server in `switchboard runs` (its model, say).
    #[arg(long)]
    label: Option<String>,
    /// Print one JSON object instead of the summary.
    #[arg(long)]
    json: bool,
    /// Write the window second by second into FILE, one JSON object per line: its replies, errors, and p50, p99 and max latency (a stall or a lost server shows where it happened).
    #[arg(long, value_name = "FILE")]
    timeline: Option<std::path::PathBuf>,
    #[command(flatten)]
    record: RecordArgs,
    #[command(flatten)]
    trust: super::TrustArgs,
    /// TCP: connect from this local address (repeatable; connections take them in turn). Each gives about 25,000 connections to one server; past that, to a 127.0.0.0/8 server, 127.0.0.1, .2, ... are used by themselves.
    #[arg(long = "source", value_name = "IP")]
    sources: Vec<std::net::IpAddr>,
}

impl Args {
    fn config(&self) -> BenchConfig {
        let mut config = BenchConfig::new(self.addr.clone());
        config.conns = self.conns as usize;
        config.depth = self.depth as usize;
        config.payload = match &self.message {
            Some(m) => Payload::Fixed(m.clone().into_bytes()),
            None => Payload::Letters(self.size),
        };
        config.rate = self.rate;
        config.duration = self.duration;
        config.warmup = self.warmup;
        if let Some(t) = self.threads {
            config.threads = t as usize;
        }
        config.framing = self.frame;
        config.expect = self.expect;
        config.timeout = self.timeout;
        config.reconnect = self.reconnect;
        config.sources = self.sources.clone();
        config
    }
}

/// The live progress line, on a terminal only, and the connections to make.
struct Bar(Option<ProgressBar>, usize);

impl Observer for Bar {
    fn progress(&mut self, p: &Progress) {
        if let Some(bar) = &self.0 {
            bar.set_length(p.total.as_millis() as u64);
            bar.set_position(p.elapsed.as_millis() as u64);
            bar.set_message(if !p.started {
                format!(
                    "connecting: {} of {}",
                    thousands(p.connected as f64),
                    thousands(self.1 as f64)
                )
            } else if p.measuring {
                format!(
                    "{} msgs/s, p99 {} µs, {} errors",
                    thousands(p.msgs_per_s),
                    thousands(p.p99_us as f64),
                    p.errors
                )
            } else {
                "warming up".to_string()
            });
        }
    }
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let mut config = args.config();
    config.tls = args.trust.config(&args.addr)?;
    if let Some(shard) = shard::this_shard()? {
        // One of several processes of a bench started by the next function: its lines go
        // to that parent, which reports and records the whole run.
        shard::run_shard(&config, shard, io::stdout().lock())?;
        return Ok(());
    }
    // A store that cannot be used is found before the run, not after it.
    let mut store = match args.record.url() {
        Some(url) => Some(switchboard::store::open(&url)?),
        None => None,
    };
    let started = now_us();
    let bar = io::stderr().is_terminal().then(|| {
        let bar = ProgressBar::new(1);
        bar.set_style(
            ProgressStyle::with_template("{spinner} [{elapsed_precise}] {wide_bar} {msg}")
                .expect("a valid template"),
        );
        bar.enable_steady_tick(Duration::from_millis(200));
        bar
    });
    let mut observer = Bar(bar, config.conns);
    let processes = shard::processes_needed(&config)?;
    let result = if processes > 1 {
        say_spread(&config, processes)?;
        // The same command line again, each copy told which share is its own.
        let exe = std::env::current_exe()?;
        shard::run_sharded(
            &config,
            processes,
            |_| {
                let mut c = std::process::Command::new(&exe);
                c.args(std::env::args_os().skip(1));
                c
            },
            &mut observer,
        )
    } else {
        bench::run(&config, &mut observer)
    };
    if let Some(bar) = &observer.0 {
        bar.finish_and_clear();
    }
    let report = result?;
    if let Some(path) = &args.timeline {
        write_timeline(path, &report)
            .map_err(|e| anyhow::anyhow!("cannot write the timeline to {}: {e}", path.display()))?;
    }
    let mut out = io::stdout().lock();
    if args.json {
        print_json(&mut out, &report)?;
    } else {
        write!(out, "{}", summary(&report))?;
    }
    if let Some(store) = &mut store {
        store.record_bench(&report.row(started, args.label.clone(), None))?;
    }
    if !report.clean() {
        return Err(Failed(format!(
            "{} failed connections or lost datagrams{} and {} wrong replies",
            report.result.errors,
            by_kind(&report),
            report.result.mismatches
        ))
        .into());
    }
    if !args.allow_unserved && !report.served_everyone(args.max_wait) {
        return Err(Failed(format!(
            "{} of {} connections were never answered in the window, and the oldest request still unanswered at its end had waited {} (--max-wait {}); --allow-unserved measures such a server anyway",
            report.unserved_conns,
            report.result.conns,
            millis(report.oldest_unanswered_us),
            millis(args.max_wait.as_micros() as u64),
        ))
        .into());
    }
    Ok(())
}

/// The run's seconds into `path`, one JSON object per line.
fn write_timeline(path: &std::path::Path, report: &Report) -> io::Result<()> {
    let mut file = io::BufWriter::new(std::fs::File::create(path)?);
    for second in &report.timeline {
        print_json(&mut file, second)?;
    }
    file.flush()
}

/// A wait in µs, said in milliseconds: `0.3 ms`, `3,012 ms`.
fn millis(us: u64) -> String {
    if us < 10_000 {
        format!("{:.1} ms", us as f64 / 1000.0)
    } else {
        format!("{} ms", thousands(us as f64 / 1000.0))
    }
}

/// Whom the server served: connections never answered, the spread of replies per
/// connection, and what was left waiting at the end.
fn service(r: &Report) -> String {
    let who = if r.unserved_conns == 0 {
        "every connection that asked was answered".to_string()
    } else {
        format!(
            "{} of {} connections asked and got no reply",
            thousands(r.unserved_conns as f64),
            thousands(r.result.conns as f64)
        )
    };
    let waiting = match r.unanswered {
        0 => "none unanswered at the end".to_string(),
        n => format!(
            "{} unanswered at the end, the oldest waiting {}",
            thousands(n as f64),
            millis(r.oldest_unanswered_us)
        ),
    };
    format!(
        "{who}; replies per connection min {}, median {}, max {}; {waiting}",
        thousands(r.replies_per_conn_min as f64),
        thousands(r.replies_per_conn_median as f64),
        thousands(r.replies_per_conn_max as f64),
    )
}

/// Tells, on stderr, how the connections are spread over processes and source addresses.
fn say_spread(config: &BenchConfig, processes: usize) -> anyhow::Result<()> {
    let shares = (0..processes)
        .map(|i| config.share(i, processes))
        .collect::<Result<Vec<_>, _>>()?;
    let sizes: Vec<usize> = shares.iter().map(|s| s.conns).collect();
    let from: Vec<String> = shares
        .iter()
        .map(|s| match s.sources.as_slice() {
            [] => "the kernel's choice".to_string(),
            many => many
                .iter()
                .map(|ip| ip.to_string())
                .collect::<Vec<_>>()
                .join("+"),
        })
        .collect();
    eprintln!(
        "bench: {} connections need more open files than one process may have ({}), so {processes} processes run them: {} connections from {}",
        thousands(config.conns as f64),
        thousands(bench::conns_per_process() as f64),
        thousands(*sizes.iter().max().unwrap_or(&0) as f64),
        from.join(", ")
    );
    Ok(())
}

fn by_kind(r: &Report) -> String {
    if r.errors_by_kind.is_empty() {
        return String::new();
    }
    let kinds: Vec<String> = r
        .errors_by_kind
        .iter()
        .map(|(k, n)| format!("{k} {n}"))
        .collect();
    format!(" ({})", kinds.join(", "))
}

/// The human summary.
pub(super) fn summary(r: &Report) -> String {
    let load = match r.result.rate {
        Some(rate) => format!("open loop at {} msgs/s", thousands(rate)),
        None => format!("closed loop, depth {}", r.result.depth),
    };
    let checked = match r.expect {
        Expect::Any => "not checked".to_string(),
        e => format!("each checked ({})", e.name()),
    };
    let since = if r.result.rate.is_some() {
        " (from when each request was due)"
    } else {
        ""
    };
    let errors = if r.clean() {
        "none".to_string()
    } else {
        format!(
            "{} failed{}; {} wrong replies",
            r.result.errors,
            by_kind(r),
            r.result.mismatches
        )
    };
    let from = match r.sources.as_slice() {
        [] => String::new(),
        [one] => format!(" from {one}"),
        many => format!(
            " from {} source addresses ({})",
            many.len(),
            many.join(", ")
        ),
    };
    format!(
        "bench {} ({}): {} connections x {} B{from}, {load}; {:.1} s measured after {:.1} s warm-up, {} thread{}{}\n\
         throughput  {} msgs/s, {:.2} MB/s ({} replies, {checked})\n\
         latency     p50 {} µs, p90 {} µs, p99 {} µs, p99.9 {} µs, max {} µs{since}\n\
         connect     {} made in {:.1} s, p50 {} µs, max {} µs\n\
         served      {}\n\
         errors      {errors}\n{}",
        r.result.address,
        r.result.frame,
        r.result.conns,
        r.result.size,
        r.result.secs,
        r.warmup_secs,
        r.threads,
        if r.threads == 1 { "" } else { "s" },
        if r.processes > 1 {
            format!(" in {} processes", r.processes)
        } else {
            String::new()
        },
        thousands(r.result.msgs_per_s),
        r.result.mb_per_s,
        thousands(r.msgs as f64),
        thousands(r.result.p50_us as f64),
        thousands(r.result.p90_us as f64),
        thousands(r.result.p99_us as f64),
        thousands(r.result.p999_us as f64),
        thousands(r.result.max_us as f64),
        r.connected,
        r.connect_secs,
        thousands(r.connect_p50_us as f64),
        thousands(r.connect_max_us as f64),
        service(r),
        late(r),
    )
}

/// A line when the load generator itself was late starting connections: the window then
/// measured less load than asked for, and the report says whose fault that was.
fn late(r: &Report) -> String {
    if r.late_starts == 0 {
        return String::new();
    }
    format!(
        "late        {} connections sent their first request well after the warm-up, the last {} into the window: the load generator could not start them in time (a longer --warmup, or more --threads)\n",
        thousands(r.late_starts as f64),
        millis(r.latest_start_us),
    )
}
