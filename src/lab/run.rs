//! A lab run: a fresh server per measurement, loaded by the bench, its CPU time and memory
//! read at the window's edges.

use super::proc;
use super::server::Running;
use crate::bench::{self, BenchConfig, Observer};
use crate::lab::config::{CellKey, LabConfig};
use crate::lab::results::{summarize, LabResults, Machine, Measurement, Moment, MEMORY_NOISE};
use crate::lab::server::LabServer;
use crate::model::Model;
use crate::sys::{Counted, Counter};
use std::process::Command;
use std::time::{Duration, Instant};

/// Told of each measurement as the lab goes.
pub trait LabObserver {
    /// A measurement begins (`done` of `total` are finished).
    fn measuring(
        &mut self,
        _server: &str,
        _conns: usize,
        _round: usize,
        _done: usize,
        _total: usize,
    ) {
    }
    /// A measurement is finished.
    fn measured(&mut self, _m: &Measurement) {}
    /// True when the run should stop before its next measurement (the cells measured so far
    /// are still summarized).
    fn stopped(&self) -> bool {
        false
    }
}

impl LabObserver for () {}

/// Runs the matrix `config` describes.
pub fn run(config: &LabConfig, command: String, observer: &mut dyn LabObserver) -> LabResults {
    let started = crate::store::now_us();
    let total = config.measurements();
    let (server_cores, bench_cores) = config.cores();
    let mut measurements = Vec::with_capacity(total);
    let mut cells = Vec::new();
    for group in config.groups() {
        let mut by_cell: Vec<Vec<Measurement>> = vec![Vec::new(); group.len()];
        for round in 1..=config.rounds {
            for (i, key) in group.iter().enumerate() {
                if observer.stopped() {
                    break;
                }
                observer.measuring(
                    key.server.name(),
                    key.conns,
                    round,
                    measurements.len(),
                    total,
                );
                let m = measure(
                    config,
                    key,
                    round,
                    server_cores.as_deref(),
                    bench_cores.as_deref(),
                );
                observer.measured(&m);
                by_cell[i].push(m.clone());
                measurements.push(m);
            }
        }
        for (key, ms) in group.iter().zip(&by_cell) {
            cells.push(summarize(
                config,
                key,
                ms,
                server_cores.as_ref().map_or(0, Vec::len),
            ));
        }
    }
    LabResults {
        cells,
        measurements,
        machine: Machine::read(config),
        started,
        config: config.clone(),
        command,
    }
}

/// Reads the server's CPU time and memory at the edges of the measured window.
pub(super) struct Meter {
    pgid: u32,
    /// Where the server answers `GET /metrics`, if it does.
    metrics: Option<std::net::SocketAddr>,
    /// The server, second by second through the window, while it is measured.
    sampler: Option<Sampler>,
    /// What the sampler saw, once the window ended.
    seconds: Vec<ServerSecond>,
    cpu_start: Option<Duration>,
    cpu_end: Option<Duration>,
    memory_end: Option<u64>,
    /// The server's system calls and context switches, counted over the window.
    counters: Option<(Vec<Counter>, Vec<Counter>)>,
    counted: Option<(u64, u64)>,
}

/// Past this many threads the server's calls are not counted: two counters a thread would
/// take more open files than the load generator can spare.
const MOST_COUNTED: usize = 2000;

impl Meter {
    fn new(pgid: u32, metrics: Option<std::net::SocketAddr>) -> Meter {
        Meter {
            pgid,
            metrics,
            sampler: None,
            seconds: Vec::new(),
            cpu_start: None,
            cpu_end: None,
            memory_end: None,
            counters: None,
            counted: None,
        }
    }

    /// Counters of the system calls and context switches of every thread of the server (and
    /// those they start), or none where the kernel refuses them (not root).
    fn start_counting(&mut self) {
        let tasks = proc::tasks(self.pgid);
        if tasks.is_empty() || tasks.len() > MOST_COUNTED {
            return;
        }
        let open = |what| -> std::io::Result<Vec<Counter>> {
            tasks.iter().map(|&tid| Counter::open(tid, what)).collect()
        };
        if let (Ok(calls), Ok(switches)) = (open(Counted::Syscalls), open(Counted::ContextSwitches))
        {
            self.counters = Some((calls, switches));
        }
    }

    fn stop_counting(&mut self) {
        let sum =
            |counters: &[Counter]| -> u64 { counters.iter().filter_map(|c| c.read().ok()).sum() };
        if let Some((calls, switches)) = self.counters.take() {
            self.counted = Some((sum(&calls), sum(&switches)));
        }
    }
}

impl Observer for Meter {
    fn window_started(&mut self) {
        self.start_counting();
        self.cpu_start = Some(proc::cpu_time(self.pgid));
        self.sampler = Some(Sampler::start(self.pgid, self.metrics));
    }

    fn window_ended(&mut self) {
        if let Some(sampler) = self.sampler.take() {
            self.seconds = sampler.stop();
        }
        self.cpu_end = Some(proc::cpu_time(self.pgid));
        self.stop_counting();
        self.memory_end = Some(proc::memory(self.pgid));
    }
}

/// What the server did in one second of the window: its CPU time (all its processes, from
/// `/proc`) and its open connections (from its `/metrics`, when it serves them).
#[derive(Debug, Clone, Copy)]
struct ServerSecond {
    cpu: Duration,
    open: Option<u64>,
}

/// A thread that reads the server every second of the window, until stopped (or an hour).
struct Sampler {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<Vec<ServerSecond>>,
}

impl Sampler {
    fn start(pgid: u32, metrics: Option<std::net::SocketAddr>) -> Sampler {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::spawn(move || {
            let begun = Instant::now();
            let mut last = proc::cpu_time(pgid);
            let mut seconds = Vec::new();
            for i in 1..=3600u32 {
                // Sleeps in short steps to the next second, so a stop is seen at once; a stop
                // in the last tenth of a second still reads it (the window ends on a second).
                let mut stop = false;
                while begun.elapsed() < Duration::from_secs(i.into()) {
                    if stopped.load(std::sync::atomic::Ordering::Relaxed) {
                        let into = begun.elapsed().as_secs_f64() - f64::from(i - 1);
                        if into < 0.9 {
                            return seconds;
                        }
                        stop = true;
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                let cpu = proc::cpu_time(pgid);
                // Read at a stop, the count would be of connections already closing.
                let open = metrics.filter(|_| !stop).and_then(open_connections);
                seconds.push(ServerSecond {
                    cpu: cpu.saturating_sub(last),
                    open,
                });
                last = cpu;
                if stop {
                    break;
                }
            }
            seconds
        });
        Sampler { stop, thread }
    }

    /// Stops it; every whole second it read.
    fn stop(self) -> Vec<ServerSecond> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.join().unwrap_or_default()
    }
}

/// `switchboard_connections_open` from the metrics at `addr` (a plain HTTP/1.0 GET, within a
/// second), or none.
fn open_connections(addr: std::net::SocketAddr) -> Option<u64> {
    use std::io::{Read, Write};
    let patience = Duration::from_secs(1);
    let mut c = std::net::TcpStream::connect_timeout(&addr, patience).ok()?;
    c.set_read_timeout(Some(patience)).ok()?;
    c.write_all(b"GET /metrics HTTP/1.0\r\nHost: lab\r\n\r\n")
        .ok()?;
    let mut body = String::new();
    c.take(1 << 20).read_to_string(&mut body).ok()?;
    body.lines()
        .find_map(|l| l.strip_prefix("switchboard_connections_open "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map(|v| v as u64)
}

/// The window second by second: the load generator's replies, errors and p99 beside the
/// server's CPU and open connections in the same second.
fn timeline(report: &bench::Report, server: &[ServerSecond]) -> Vec<Moment> {
    report
        .timeline
        .iter()
        .map(|s| {
            let at = server.get(s.second as usize);
            Moment {
                second: s.second,
                replies: s.replies,
                errors: s.errors,
                p99_us: s.p99_us,
                cpu_cores: at.map(|a| a.cpu.as_secs_f64()),
                open_conns: at.and_then(|a| a.open),
            }
        })
        .collect()
}

pub(super) fn measure(
    config: &LabConfig,
    key: &CellKey,
    round: usize,
    server_cores: Option<&[usize]>,
    bench_cores: Option<&[usize]>,
) -> Measurement {
    let mut m = Measurement {
        server: key.server.name().to_string(),
        model: key.server.model(),
        conns: key.conns,
        size: key.size,
        depth: key.depth,
        round,
        report: Err(String::new()),
        cpu_us_per_msg: None,
        syscalls_per_msg: None,
        switches_per_msg: None,
        rss_bytes_per_conn: None,
        started: crate::store::now_us(),
        timeline: Vec::new(),
    };
    let server = match start_server(config, key, server_cores) {
        Ok(server) => server,
        Err(why) => {
            m.report = Err(why);
            return m;
        }
    };
    // Settle: a server that just printed its address may still be starting workers.
    std::thread::sleep(Duration::from_millis(100));
    let memory_before = proc::memory(server.pgid());
    let bench = match load_for(config, key, &server, bench_cores) {
        Ok(bench) => bench,
        Err(why) => {
            m.report = Err(why);
            return m;
        }
    };
    let mut meter = Meter::new(server.pgid(), server.metrics);
    let t = Instant::now();
    let processes = bench.conns.div_ceil(bench::conns_per_process().max(1));
    m.report = if processes > 1 {
        let command = |_| bench_command(config, &bench, bench_cores);
        bench::shard::run_sharded(&bench, processes, command, &mut meter)
    } else {
        bench::run(&bench, &mut meter)
    }
    .map_err(|e| e.to_string());
    drop(server);
    tracing::debug!(server = %m.server, conns = m.conns, round, secs = t.elapsed().as_secs_f64(), "measured");
    if let Ok(report) = &m.report {
        m.timeline = timeline(report, &meter.seconds);
        if let (Some(a), Some(b)) = (meter.cpu_start, meter.cpu_end) {
            if report.msgs > 0 {
                m.cpu_us_per_msg = Some((b - a).as_secs_f64() * 1e6 / report.msgs as f64);
            }
        }
        if let (Some((calls, switches)), true) = (meter.counted, report.msgs > 0) {
            m.syscalls_per_msg = Some(calls as f64 / report.msgs as f64);
            m.switches_per_msg = Some(switches as f64 / report.msgs as f64);
        }
        if let Some(after) = meter.memory_end {
            // A growth under the noise (the allocator keeps and returns memory in chunks, so a
            // few connections can even show a shrink) says nothing per connection: left blank.
            let grown = after as f64 - memory_before as f64;
            m.rss_bytes_per_conn = (grown >= MEMORY_NOISE).then(|| grown / key.conns as f64);
        }
    }
    m
}

/// Starts the server of `key`'s cell, or says why it is not measured: past one process's
/// open files only a server of several processes can hold the cell (and `prefork` is given
/// the workers to hold it).
fn start_server(
    config: &LabConfig,
    key: &CellKey,
    server_cores: Option<&[usize]>,
) -> Result<Running, String> {
    let per_process = bench::conns_per_process();
    let model = key.server.model();
    if key.conns > per_process && model != Some(Model::Prefork) {
        return Err(format!(
            "not measured: one process holds at most {per_process} connections (its open files), and {} serves from one",
            key.server.name()
        ));
    }
    let mut serve_args = config.serve_args.clone();
    let workers = workers_to_hold(config, key.conns);
    if let (Some(Model::Prefork), Some(workers)) = (model, workers) {
        serve_args.extend(["--workers".into(), workers.to_string()]);
    }
    Running::start(&key.server, &config.exe, &serve_args, server_cores)
}

/// The load of `key`'s cell against `server`, the load generator on `bench_cores`.
fn load_for(
    config: &LabConfig,
    key: &CellKey,
    server: &Running,
    bench_cores: Option<&[usize]>,
) -> Result<BenchConfig, String> {
    let mut bench = BenchConfig::new(server.addr.clone());
    if let LabServer::Tls { .. } = key.server {
        bench.tls = Some(crate::tls::client_config(None, true).map_err(|e| e.to_string())?);
    }
    bench.conns = key.conns;
    bench.depth = key.depth;
    bench.rate = config.rate;
    bench.payload = bench::Payload::Letters(key.size);
    bench.duration = config.duration;
    bench.warmup = config.warmup;
    // A connection that waits in a backlog the whole run (a full `pool`) is not a failure.
    bench.timeout = config.warmup + config.duration + Duration::from_secs(1);
    if let Some(cores) = bench_cores {
        bench.threads = cores.len();
        bench.cpus = Some(cores.to_vec());
    }
    Ok(bench)
}

/// `prefork`'s workers for `conns` connections past one process's open files (with room for
/// an uneven spread: a full worker leaves clients to the others); `None` when the default
/// does, or `--workers` was given.
pub(super) fn workers_to_hold(config: &LabConfig, conns: usize) -> Option<usize> {
    let per_process = bench::conns_per_process().max(1);
    let explicit = config.serve_args.iter().any(|a| a == "--workers");
    (conns > per_process && !explicit).then(|| (conns * 3 / 2).div_ceil(per_process))
}

/// A `switchboard bench` command that runs one share of `bench` (the lab's load for a cell
/// too large for one process), on the load generator's cores.
pub(super) fn bench_command(
    config: &LabConfig,
    bench: &BenchConfig,
    cores: Option<&[usize]>,
) -> Command {
    let ms = |d: Duration| format!("{}ms", d.as_millis());
    let mut c = Command::new(&config.exe);
    c.arg("bench")
        .arg(bench.addr.to_string())
        .args(["--conns", &bench.conns.to_string()])
        .args(["--depth", &bench.depth.to_string()])
        .args(["--size", &bench.payload.len().to_string()])
        .args(["--duration", &ms(bench.duration)])
        .args(["--warmup", &ms(bench.warmup)])
        .args(["--timeout", &ms(bench.timeout)])
        .args(["--threads", &bench.threads.to_string()])
        .arg("--no-store");
    if let Some(rate) = bench.rate {
        c.args(["--rate", &rate.to_string()]);
    }
    if bench.tls.is_some() {
        c.arg("--insecure");
    }
    if let Some(cores) = cores {
        crate::sys::pin_command(&mut c, cores.to_vec());
    }
    c
}
