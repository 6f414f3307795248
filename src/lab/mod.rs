//! The lab behind `switchboard lab`: every model side by side under the same load, on the
//! reader's own machine, with what each costs: the plan's "IO models" lesson, measured.
//!
//! A matrix of servers x connections x sizes x depths; each cell is measured `rounds` times,
//! the servers interleaved round by round (A B C A B C, so a slow minute of a shared machine
//! does not land on one server), and the medians are kept. Each measurement starts a fresh
//! server (a real `switchboard serve` child, or a reference command) in a process group of its
//! own, loads it with [`crate::bench`] and reads the server's CPU time and memory from
//! `/proc` at the edges of the measured window. With `pin`, the server and the load generator
//! run on disjoint cores, so the server's CPU time is its own.
//!
//! [`write()`] turns the results into `results.json`, `results.md`, plots (SVG and PNG) and one
//! self-contained `index.html`.

mod plot;
mod proc;
mod report;
mod server;

pub use report::write;
pub use server::LabServer;

use crate::bench::{self, BenchConfig, Observer, Report};
use crate::model::Model;
use server::Running;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

/// The least growth of a server's memory (bytes) the lab reads as per-connection memory:
/// below it, what the allocator happens to keep or give back is all it shows.
pub const MEMORY_NOISE: f64 = 256.0 * 1024.0;

/// The plan's own stack, carried as a reference: Python's `socketserver.ThreadingTCPServer`
/// answering with the bytes upper-cased. Run as `python3 -c SOURCE PORT`.
pub const PYTHON_REFERENCE: &str = include_str!("upper_server.py");

/// What to measure: the options of `switchboard lab`.
#[derive(Debug, Clone)]
pub struct LabConfig {
    /// The servers, in the order of the tables.
    pub servers: Vec<LabServer>,
    /// Connection counts.
    pub conns: Vec<usize>,
    /// Request sizes in bytes.
    pub sizes: Vec<usize>,
    /// Requests in flight per connection.
    pub depths: Vec<usize>,
    /// Measurements per cell; the median is kept.
    pub rounds: usize,
    /// Each measurement's window.
    pub duration: Duration,
    /// Each measurement's warm-up.
    pub warmup: Duration,
    /// Server and load generator on disjoint cores.
    pub pin: bool,
    /// The `switchboard` executable that serves the models.
    pub exe: PathBuf,
    /// Arguments added to every `switchboard serve` (`--no-store`, or a store).
    pub serve_args: Vec<String>,
    /// Open loop: requests per second in all, per cell, spread over its connections (a low
    /// rate over many connections measures connections that are mostly idle). `None`: closed
    /// loop.
    pub rate: Option<f64>,
}

impl LabConfig {
    /// The defaults of `switchboard lab`: every model available here, 1 to 1,000 connections,
    /// 64 bytes, depth 1, 3 rounds of 3 s after 1 s, pinned where there are 2 cores or more.
    pub fn new(exe: PathBuf) -> LabConfig {
        LabConfig {
            servers: Model::ALL
                .iter()
                .filter(|m| m.available().is_ok())
                .map(|&m| LabServer::Model(m))
                .collect(),
            conns: vec![1, 10, 100, 1000],
            sizes: vec![64],
            depths: vec![1],
            rounds: 3,
            duration: Duration::from_secs(3),
            warmup: Duration::from_secs(1),
            pin: cores().len() >= 2,
            exe,
            serve_args: vec!["--no-store".into()],
            rate: None,
        }
    }

    /// Adds, after each model, the same model serving `tls://` with the certificate `cert` and
    /// its key `key`, checked now: a file that cannot be used fails once, not in every cell.
    pub fn add_tls(
        &mut self,
        cert: &std::path::Path,
        key: &std::path::Path,
    ) -> Result<(), crate::tls::TlsError> {
        crate::tls::server_config(cert, key, None)?;
        self.servers = self
            .servers
            .iter()
            .flat_map(|s| match s {
                LabServer::Model(m) => vec![s.clone(), LabServer::tls(*m, cert, key)],
                _ => vec![s.clone()],
            })
            .collect();
        Ok(())
    }

    /// Adds the plan's own stack, Python's `socketserver` ([`PYTHON_REFERENCE`]), as a reference
    /// server, its script written into `dir` beside the results so a reader sees what was
    /// measured.
    pub fn add_python_reference(&mut self, dir: &std::path::Path) -> std::io::Result<()> {
        let script = dir.join("upper_server.py");
        std::fs::write(&script, PYTHON_REFERENCE)?;
        let quoted = script.display().to_string().replace('\'', "'\\''");
        self.servers.push(LabServer::Reference {
            name: "python".into(),
            command: format!("python3 '{quoted}' {{port}}"),
        });
        Ok(())
    }

    /// Gives every connection of the largest cell a place in the served models: past their
    /// `--max-conns` the rest would wait in the backlog, and the cell would measure that.
    pub fn fit_max_conns(&mut self) {
        let most = self.conns.iter().copied().max().unwrap_or(0);
        if most > crate::server::DEFAULT_MAX_CONNS {
            self.serve_args
                .extend(["--max-conns".into(), most.to_string()]);
        }
    }

    /// The cores for the server and for the load generator: halves of the cores this process
    /// may use when pinning (the server gets the larger), else none.
    pub fn cores(&self) -> (Option<Vec<usize>>, Option<Vec<usize>>) {
        let all = cores();
        if !self.pin || all.len() < 2 {
            return (None, None);
        }
        let split = all.len().div_ceil(2);
        (Some(all[..split].to_vec()), Some(all[split..].to_vec()))
    }

    /// Every cell, and how they are grouped to be interleaved: the cells of one group (same
    /// load) are measured round by round, one server after the other.
    fn groups(&self) -> Vec<Vec<CellKey>> {
        let mut seen = Vec::new();
        let mut groups = Vec::new();
        for &size in &self.sizes {
            for &depth in &self.depths {
                for &conns in &self.conns {
                    let mut group = Vec::new();
                    for server in &self.servers {
                        // `iterative` serves one client at a time: it gets one connection.
                        let conns = if server.model() == Some(Model::Iterative) {
                            1
                        } else {
                            conns
                        };
                        let key = CellKey {
                            server: server.clone(),
                            conns,
                            size,
                            depth,
                        };
                        if !seen.contains(&key) {
                            seen.push(key.clone());
                            group.push(key);
                        }
                    }
                    if !group.is_empty() {
                        groups.push(group);
                    }
                }
            }
        }
        groups
    }

    /// How many measurements the whole matrix takes.
    pub fn measurements(&self) -> usize {
        self.groups().iter().map(Vec::len).sum::<usize>() * self.rounds
    }
}

/// The cores this process may run on.
fn cores() -> Vec<usize> {
    crate::sys::allowed_cpus().unwrap_or_default()
}

/// One cell of the matrix.
#[derive(Debug, Clone, PartialEq, Eq)]
struct CellKey {
    server: LabServer,
    conns: usize,
    size: usize,
    depth: usize,
}

/// One measurement: a fresh server under one load for one window.
#[derive(Debug, Clone)]
pub struct Measurement {
    /// The server's name.
    pub server: String,
    /// Its model, for `switchboard serve` servers.
    pub model: Option<Model>,
    /// The load.
    pub conns: usize,
    /// See `conns`.
    pub size: usize,
    /// See `conns`.
    pub depth: usize,
    /// Which round, from 1.
    pub round: usize,
    /// What the load generator saw; `Err` when the server could not be started or reached.
    pub report: Result<Report, String>,
    /// The server's CPU time per reply in the window, in µs.
    pub cpu_us_per_msg: Option<f64>,
    /// The server's memory growth per open connection, in bytes, from before the load to the
    /// end of the window (connections still open).
    pub rss_bytes_per_conn: Option<f64>,
    /// When it started (µs since the epoch).
    pub started: i64,
}

/// A cell's medians over its rounds: one object of `results.json`.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Cell {
    /// The server: a model's name or a reference's.
    pub model: String,
    /// True for a reference server, not a switchboard model.
    pub reference: bool,
    /// Connections.
    pub conns: usize,
    /// Bytes per request.
    pub size: usize,
    /// Requests in flight per connection.
    pub depth: usize,
    /// Rounds measured (those whose server started).
    pub rounds: usize,
    /// Median replies per second, and the lowest and highest round.
    pub msgs_per_s: f64,
    /// See `msgs_per_s`.
    pub msgs_per_s_min: f64,
    /// See `msgs_per_s`.
    pub msgs_per_s_max: f64,
    /// Median request megabytes per second.
    pub mb_per_s: f64,
    /// Median latency percentiles, in µs.
    pub p50_us: u64,
    /// See `p50_us`.
    pub p99_us: u64,
    /// See `p50_us`.
    pub p999_us: u64,
    /// Median server CPU time per reply, in µs.
    pub cpu_us_per_msg: Option<f64>,
    /// Median server memory growth per open connection, in bytes.
    pub rss_bytes_per_conn: Option<f64>,
    /// Failed connections and wrong replies, over every round.
    pub errors: u64,
    /// See `errors`.
    pub mismatches: u64,
    /// What a reader must know to read the figures (a pool that serves fewer at a time, a
    /// server that did not start).
    pub note: Option<String>,
}

/// The machine a lab ran on, printed with its results.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Machine {
    /// Host name.
    pub host: String,
    /// Kernel release.
    pub kernel: String,
    /// CPU model.
    pub cpu: String,
    /// Cores this process could use.
    pub cores: usize,
    /// The server's cores and the load generator's, when pinned.
    pub server_cores: Option<Vec<usize>>,
    /// See `server_cores`.
    pub bench_cores: Option<Vec<usize>>,
}

impl Machine {
    fn read(config: &LabConfig) -> Machine {
        let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
        let (server_cores, bench_cores) = config.cores();
        Machine {
            host: read("/proc/sys/kernel/hostname").trim().to_string(),
            kernel: read("/proc/sys/kernel/osrelease").trim().to_string(),
            cpu: read("/proc/cpuinfo")
                .lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|v| v.trim_start_matches([' ', '\t', ':']).trim().to_string())
                .unwrap_or_else(|| "unknown".into()),
            cores: cores().len(),
            server_cores,
            bench_cores,
        }
    }
}

/// A whole lab run.
#[derive(Debug, Clone)]
pub struct LabResults {
    /// One entry per cell, in matrix order.
    pub cells: Vec<Cell>,
    /// Every measurement, in the order taken.
    pub measurements: Vec<Measurement>,
    /// Where it ran.
    pub machine: Machine,
    /// When it started (µs since the epoch).
    pub started: i64,
    /// The configuration.
    pub config: LabConfig,
    /// The command line that made it, for the page and the tables.
    pub command: String,
}

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
struct Meter {
    pgid: u32,
    cpu_start: Option<Duration>,
    cpu_end: Option<Duration>,
    memory_end: Option<u64>,
}

impl Observer for Meter {
    fn window_started(&mut self) {
        self.cpu_start = Some(proc::cpu_time(self.pgid));
    }

    fn window_ended(&mut self) {
        self.cpu_end = Some(proc::cpu_time(self.pgid));
        self.memory_end = Some(proc::memory(self.pgid));
    }
}

fn measure(
    config: &LabConfig,
    key: &CellKey,
    round: usize,
    server_cores: Option<&[usize]>,
    bench_cores: Option<&[usize]>,
) -> Measurement {
    let started = crate::store::now_us();
    let mut m = Measurement {
        server: key.server.name().to_string(),
        model: key.server.model(),
        conns: key.conns,
        size: key.size,
        depth: key.depth,
        round,
        report: Err(String::new()),
        cpu_us_per_msg: None,
        rss_bytes_per_conn: None,
        started,
    };
    // Past one process's open files only a server of several processes can hold the cell.
    let per_process = bench::conns_per_process();
    let model = key.server.model();
    if key.conns > per_process && model != Some(Model::Prefork) {
        m.report = Err(format!(
            "not measured: one process holds at most {per_process} connections (its open files), and {} serves from one",
            key.server.name()
        ));
        return m;
    }
    let mut serve_args = config.serve_args.clone();
    let workers = workers_to_hold(config, key.conns);
    if let (Some(Model::Prefork), Some(workers)) = (model, workers) {
        serve_args.extend(["--workers".into(), workers.to_string()]);
    }
    let server = match Running::start(&key.server, &config.exe, &serve_args, server_cores) {
        Ok(s) => s,
        Err(why) => {
            m.report = Err(why);
            return m;
        }
    };
    // Settle: a server that just printed its address may still be starting workers.
    std::thread::sleep(Duration::from_millis(100));
    let memory_before = proc::memory(server.pgid());
    let mut bench = BenchConfig::new(server.addr.clone());
    if let LabServer::Tls { .. } = key.server {
        match crate::tls::client_config(None, true) {
            Ok(tls) => bench.tls = Some(tls),
            Err(e) => {
                m.report = Err(e.to_string());
                return m;
            }
        }
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
    let mut meter = Meter {
        pgid: server.pgid(),
        cpu_start: None,
        cpu_end: None,
        memory_end: None,
    };
    let t = Instant::now();
    let processes = bench.conns.div_ceil(per_process.max(1));
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
        if let (Some(a), Some(b)) = (meter.cpu_start, meter.cpu_end) {
            if report.msgs > 0 {
                m.cpu_us_per_msg = Some((b - a).as_secs_f64() * 1e6 / report.msgs as f64);
            }
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

/// `prefork`'s workers for `conns` connections past one process's open files (with room for
/// an uneven spread: a full worker leaves clients to the others); `None` when the default
/// does, or `--workers` was given.
fn workers_to_hold(config: &LabConfig, conns: usize) -> Option<usize> {
    let per_process = bench::conns_per_process().max(1);
    let explicit = config.serve_args.iter().any(|a| a == "--workers");
    (conns > per_process && !explicit).then(|| (conns * 3 / 2).div_ceil(per_process))
}

/// A `switchboard bench` command that runs one share of `bench` (the lab's load for a cell
/// too large for one process), on the load generator's cores.
fn bench_command(config: &LabConfig, bench: &BenchConfig, cores: Option<&[usize]>) -> Command {
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

fn median(mut values: Vec<f64>) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    Some(if values.len() % 2 == 1 {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
    })
}

fn summarize(config: &LabConfig, key: &CellKey, ms: &[Measurement], server_cores: usize) -> Cell {
    let ok: Vec<&Report> = ms.iter().filter_map(|m| m.report.as_ref().ok()).collect();
    let of = |f: fn(&Report) -> f64| median(ok.iter().map(|r| f(r)).collect());
    let msgs: Vec<f64> = ok.iter().map(|r| r.result.msgs_per_s).collect();
    let mut notes = Vec::new();
    if let Some(model) = key.server.model() {
        // What the defaults of `serve` make of the server's cores: the figures depend on it.
        let cores = if server_cores > 0 {
            server_cores
        } else {
            cores().len().max(1)
        };
        let explicit_workers = config.serve_args.iter().any(|a| a == "--workers");
        match model {
            Model::Iterative => {
                notes.push("serves one client at a time: measured with one connection".to_string())
            }
            Model::Pool if !explicit_workers && key.conns > (4 * cores).max(8) => {
                let workers = (4 * cores).max(8);
                notes.push(format!(
                    "serves {workers} connections at a time (its workers); the other {} wait in the backlog",
                    key.conns - workers
                ))
            }
            Model::Fork if key.conns > crate::server::DEFAULT_MAX_CHILDREN => notes.push(format!(
                "runs at most {} children; the other {} connections wait in the backlog",
                crate::server::DEFAULT_MAX_CHILDREN,
                key.conns - crate::server::DEFAULT_MAX_CHILDREN
            )),
            _ => {}
        }
    }
    if let (Some(Model::Prefork), Some(workers)) =
        (key.server.model(), workers_to_hold(config, key.conns))
    {
        notes.push(format!(
            "runs {workers} workers to hold {} connections (a process holds at most {})",
            key.conns,
            bench::conns_per_process()
        ));
    }
    // One note per distinct failure, with the rounds it happened in.
    let mut failures: Vec<(&str, Vec<String>)> = Vec::new();
    for m in ms {
        if let Err(why) = &m.report {
            match failures.iter_mut().find(|(w, _)| *w == why.as_str()) {
                Some((_, rounds)) => rounds.push(m.round.to_string()),
                None => failures.push((why, vec![m.round.to_string()])),
            }
        }
    }
    for (why, rounds) in failures {
        if rounds.len() == ms.len() && why.starts_with("not measured") {
            notes.push(why.to_string());
        } else {
            notes.push(format!("round {}: {why}", rounds.join(", ")));
        }
    }
    Cell {
        model: key.server.name().to_string(),
        reference: matches!(key.server, LabServer::Reference { .. }),
        conns: key.conns,
        size: key.size,
        depth: key.depth,
        rounds: ok.len(),
        msgs_per_s: median(msgs.clone()).unwrap_or(0.0),
        msgs_per_s_min: msgs.iter().copied().reduce(f64::min).unwrap_or(0.0),
        msgs_per_s_max: msgs.iter().copied().reduce(f64::max).unwrap_or(0.0),
        mb_per_s: of(|r| r.result.mb_per_s).unwrap_or(0.0),
        p50_us: of(|r| r.result.p50_us as f64).unwrap_or(0.0) as u64,
        p99_us: of(|r| r.result.p99_us as f64).unwrap_or(0.0) as u64,
        p999_us: of(|r| r.result.p999_us as f64).unwrap_or(0.0) as u64,
        cpu_us_per_msg: median(ms.iter().filter_map(|m| m.cpu_us_per_msg).collect()),
        rss_bytes_per_conn: median(ms.iter().filter_map(|m| m.rss_bytes_per_conn).collect()),
        errors: ok.iter().map(|r| r.result.errors).sum(),
        mismatches: ok.iter().map(|r| r.result.mismatches).sum(),
        note: (!notes.is_empty()).then(|| notes.join("; ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iterative_is_measured_once_with_one_connection_and_models_interleave() {
        let mut c = LabConfig::new(PathBuf::from("switchboard"));
        c.servers = vec![
            LabServer::Model(Model::Iterative),
            LabServer::Model(Model::Epoll),
        ];
        c.conns = vec![10, 100];
        let groups = c.groups();
        let shape: Vec<Vec<(&str, usize)>> = groups
            .iter()
            .map(|g| g.iter().map(|k| (k.server.name(), k.conns)).collect())
            .collect();
        assert_eq!(
            shape,
            vec![vec![("iterative", 1), ("epoll", 10)], vec![("epoll", 100)]]
        );
        assert_eq!(c.measurements(), 3 * 3);
    }

    #[test]
    fn medians_of_odd_and_even_counts() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(vec![]), None);
    }
}
