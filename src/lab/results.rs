//! What a lab measured: each measurement, each cell's medians, the machine it ran on.

use crate::bench::{self, Report};
use crate::lab::config::{cores, CellKey, LabConfig};
use crate::lab::run::workers_to_hold;
use crate::lab::server::LabServer;
use crate::model::Model;

/// The least growth of a server's memory (bytes) the lab reads as per-connection memory:
/// below it, what the allocator happens to keep or give back is all it shows.
pub const MEMORY_NOISE: f64 = 256.0 * 1024.0;

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
    /// The server's system calls per reply in the window (perf's count of the
    /// `raw_syscalls:sys_enter` tracepoint over its processes and threads; root only).
    pub syscalls_per_msg: Option<f64>,
    /// The server's context switches per reply in the window (perf's count; root only).
    pub switches_per_msg: Option<f64>,
    /// The server's memory growth per open connection, in bytes, from before the load to the
    /// end of the window (connections still open).
    pub rss_bytes_per_conn: Option<f64>,
    /// When it started (µs since the epoch).
    pub started: i64,
    /// The window second by second.
    pub timeline: Vec<Moment>,
}

/// One second of a measurement's window: what the load generator saw beside what the server
/// did.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Moment {
    /// Seconds since the window began: this one covers [second, second + 1).
    pub second: u64,
    /// Correct replies in it.
    pub replies: u64,
    /// Failed connections and wrong replies in it.
    pub errors: u64,
    /// Its 99th percentile latency, in µs.
    pub p99_us: u64,
    /// The server's CPU time in it, in seconds: the cores it kept busy.
    pub cpu_cores: Option<f64>,
    /// The server's open connections at its end (from its `/metrics`).
    pub open_conns: Option<u64>,
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
    /// Median server system calls per reply (root only).
    pub syscalls_per_msg: Option<f64>,
    /// Median server context switches per reply (root only).
    pub switches_per_msg: Option<f64>,
    /// Median server memory growth per open connection, in bytes.
    pub rss_bytes_per_conn: Option<f64>,
    /// Failed connections and wrong replies, over every round.
    pub errors: u64,
    /// See `errors`.
    pub mismatches: u64,
    /// What a reader must know to read the figures (a pool that serves fewer at a time, a
    /// server that did not start).
    pub note: Option<String>,
    /// The last measured round's window, second by second.
    pub timeline: Vec<Moment>,
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
    pub(super) fn read(config: &LabConfig) -> Machine {
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

pub(super) fn median(mut values: Vec<f64>) -> Option<f64> {
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

pub(super) fn summarize(
    config: &LabConfig,
    key: &CellKey,
    ms: &[Measurement],
    server_cores: usize,
) -> Cell {
    let ok: Vec<&Report> = ms.iter().filter_map(|m| m.report.as_ref().ok()).collect();
    let of = |f: fn(&Report) -> f64| median(ok.iter().map(|r| f(r)).collect());
    let msgs: Vec<f64> = ok.iter().map(|r| r.result.msgs_per_s).collect();
    let notes = notes(config, key, ms, server_cores);
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
        syscalls_per_msg: median(ms.iter().filter_map(|m| m.syscalls_per_msg).collect()),
        switches_per_msg: median(ms.iter().filter_map(|m| m.switches_per_msg).collect()),
        rss_bytes_per_conn: median(ms.iter().filter_map(|m| m.rss_bytes_per_conn).collect()),
        errors: ok.iter().map(|r| r.result.errors).sum(),
        mismatches: ok.iter().map(|r| r.result.mismatches).sum(),
        note: (!notes.is_empty()).then(|| notes.join("; ")),
        timeline: ms
            .iter()
            .rev()
            .find(|m| m.report.is_ok())
            .map(|m| m.timeline.clone())
            .unwrap_or_default(),
    }
}

/// What a reader of a cell should know beside its figures: what the model's defaults make
/// of it (one client at a time, workers or children that leave the rest in the backlog), and
/// every distinct failure with the rounds it happened in.
fn notes(
    config: &LabConfig,
    key: &CellKey,
    ms: &[Measurement],
    server_cores: usize,
) -> Vec<String> {
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
    // Connections the server left unanswered for the whole window: its throughput is
    // theirs too, and a server that starves some is not as good as its figure.
    let starved: Vec<String> = ms
        .iter()
        .filter_map(|m| {
            let r = m.report.as_ref().ok()?;
            (r.unserved_conns > 0).then(|| format!("{} in round {}", r.unserved_conns, m.round))
        })
        .collect();
    if !starved.is_empty() {
        notes.push(format!(
            "connections that asked and got no reply in the whole window: {}",
            starved.join(", ")
        ));
    }
    notes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_of_odd_and_even_counts() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(vec![]), None);
    }
}
