//! One load over several processes, when its connections need more open files than one process
//! may have (20,000 on some machines, and a hard limit cannot be raised from inside).
//!
//! The parent starts `k` copies of a command that runs the same bench with
//! [`SHARD_ENV`]` = "i/k"` in its environment. Each copy takes its share of the connections
//! and of the rate ([`BenchConfig::share`]), its own source addresses (so no two processes
//! compete for one address's ports), and writes JSON lines on its stdout: its progress a few
//! times a second, then its counts, with both latency histograms whole. The parent adds the
//! histograms up bucket by bucket, so the merged percentiles are those of one histogram of
//! every reply, not an average of percentiles.

use crate::bench::config::{BenchConfig, BenchError};
use crate::bench::observer::{Observer, Progress};
use crate::bench::report::{report, Report};
use crate::bench::run::spread_sources;
use crate::bench::tally::{Failure, Tally};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::{self, BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The environment variable that makes a bench process one shard: `"i/k"`, shard `i` (from 0)
/// of `k`.
pub const SHARD_ENV: &str = "SWITCHBOARD_BENCH_SHARD";

/// Which shard this process is, from [`SHARD_ENV`]; `None` when it is not one.
pub fn this_shard() -> Result<Option<(usize, usize)>, BenchError> {
    let Some(value) = std::env::var_os(SHARD_ENV) else {
        return Ok(None);
    };
    let value = value.to_string_lossy();
    let parsed = value
        .split_once('/')
        .and_then(|(i, k)| Some((i.parse().ok()?, k.parse().ok()?)))
        .filter(|&(i, k): &(usize, usize)| i < k);
    parsed
        .map(Some)
        .ok_or_else(|| BenchError::Invalid(format!("{SHARD_ENV}={value}: expected i/k with i < k")))
}

/// The most processes one bench spreads over: past it, the load generators would measure this
/// machine's scheduler rather than the server.
pub const MAX_PROCESSES: usize = 32;

/// How many processes `config`'s connections need: 1 when they fit in this one; an error
/// past [`MAX_PROCESSES`].
pub fn processes_needed(config: &BenchConfig) -> Result<usize, BenchError> {
    let each = super::conns_per_process().max(1);
    let k = config.conns.div_ceil(each);
    if k > MAX_PROCESSES {
        return Err(BenchError::Invalid(format!(
            "--conns {} would need {k} processes of {each} connections (the open files one may have); one bench runs at most {MAX_PROCESSES}: run benches on several machines, or raise the hard open-file limit (ulimit -Hn)",
            config.conns
        )));
    }
    Ok(k)
}

impl BenchConfig {
    /// Shard `i` of `k`'s part of this load: its connections, its share of the rate and of
    /// the threads, and its source addresses. The shards' connections add up to `conns`.
    pub fn share(&self, i: usize, k: usize) -> Result<BenchConfig, BenchError> {
        let mut part = self.clone();
        part.conns = self.conns / k + usize::from(i < self.conns % k);
        if part.conns == 0 {
            return Err(BenchError::Invalid(format!(
                "{} connections cannot be spread over {k} processes",
                self.conns
            )));
        }
        part.rate = self.rate.map(|r| r * part.conns as f64 / self.conns as f64);
        part.threads = (self.threads / k).max(1);
        let sources = all_sources(self, k)?;
        part.sources = if sources.len() >= k {
            sources[i * sources.len() / k..(i + 1) * sources.len() / k].to_vec()
        } else if sources.is_empty() {
            Vec::new()
        } else {
            vec![sources[i % sources.len()]]
        };
        Ok(part)
    }
}

/// The source addresses of the whole load: those given, or, to a loopback server, at least
/// one 127.0.0.x per shard, so each process has an address's ports to itself.
fn all_sources(config: &BenchConfig, k: usize) -> Result<Vec<std::net::IpAddr>, BenchError> {
    let loopback_v4 = matches!(&config.addr,
        crate::Addr::Tcp(sa) | crate::Addr::Tls { addr: sa, .. } if sa.ip().is_loopback() && sa.is_ipv4());
    if config.sources.is_empty() && loopback_v4 && k > 1 {
        let needed = k.max(config.conns.div_ceil(super::config::CONNS_PER_SOURCE));
        if needed >= 255 {
            return Err(BenchError::Invalid(format!(
                "{} connections need {needed} loopback source addresses, more than 127.0.0.1-254",
                config.conns
            )));
        }
        return Ok((1..=needed as u8)
            .map(|n| std::net::Ipv4Addr::new(127, 0, 0, n).into())
            .collect());
    }
    Ok(spread_sources(config)?.map_or_else(|| config.sources.clone(), |c| c.sources))
}

/// What a shard writes on its stdout, one JSON object per line.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Line {
    /// How far it has come.
    Progress {
        connected: u64,
        started: bool,
        elapsed_ms: u64,
        total_ms: u64,
        measuring: bool,
        replies: u64,
        msgs_per_s: f64,
        p99_us: u64,
        errors: u64,
    },
    /// Its connections are made; it waits for `go` on its stdin to start the load.
    Connected,
    /// Everything it counted; its last line.
    Done(Counts),
}

/// A shard's counts: what the parent needs to add them to the others'.
#[derive(Serialize, Deserialize)]
struct Counts {
    threads: usize,
    sources: Vec<String>,
    replies: u64,
    mismatches: u64,
    connected: u64,
    failures: BTreeMap<String, u64>,
    /// (value, count) of every bucket with a count: nanoseconds from request to reply.
    latency: Vec<(u64, u64)>,
    /// The same, for connecting.
    connect: Vec<(u64, u64)>,
    /// Requests unanswered at the end, and the oldest one's wait (ns).
    unanswered: u64,
    oldest_unanswered_ns: u64,
    /// Each connection's replies in the window.
    replies_per_conn: Vec<u64>,
    /// Connections waiting at the end that had no reply in the window.
    unserved: u64,
    /// Closed-loop connections that began after the window had, and the latest (ns).
    late_starts: u64,
    latest_start_ns: u64,
    /// The timeline: each second's replies, errors and latencies (compressed).
    seconds: Vec<(u64, u64, String)>,
}

fn buckets(h: &Histogram<u64>) -> Vec<(u64, u64)> {
    h.iter_recorded()
        .map(|v| (v.value_iterated_to(), v.count_at_value()))
        .collect()
}

fn refill(h: &mut Histogram<u64>, buckets: &[(u64, u64)]) {
    for &(value, count) in buckets {
        h.saturating_record_n(value, count);
    }
}

impl Counts {
    fn of(threads: usize, config: &BenchConfig, t: &Tally) -> Counts {
        Counts {
            threads,
            sources: config.sources.iter().map(|s| s.to_string()).collect(),
            replies: t.replies,
            mismatches: t.mismatches,
            connected: t.connected,
            failures: t
                .failures
                .iter()
                .map(|(f, n)| (f.name().to_string(), *n))
                .collect(),
            latency: buckets(&t.latency),
            connect: buckets(&t.connect),
            unanswered: t.unanswered,
            oldest_unanswered_ns: t.oldest_unanswered_ns,
            replies_per_conn: t.replies_per_conn.clone(),
            unserved: t.unserved,
            late_starts: t.late_starts,
            latest_start_ns: t.latest_start_ns,
            seconds: t
                .seconds
                .iter()
                .map(|s| (s.replies, s.errors, crate::bench::report::hdr(&s.latency)))
                .collect(),
        }
    }

    fn add_to(&self, t: &mut Tally) -> Result<(), BenchError> {
        refill(&mut t.latency, &self.latency);
        refill(&mut t.connect, &self.connect);
        t.replies += self.replies;
        t.mismatches += self.mismatches;
        t.connected += self.connected;
        t.unanswered += self.unanswered;
        t.oldest_unanswered_ns = t.oldest_unanswered_ns.max(self.oldest_unanswered_ns);
        t.replies_per_conn.extend_from_slice(&self.replies_per_conn);
        t.unserved += self.unserved;
        t.late_starts += self.late_starts;
        t.latest_start_ns = t.latest_start_ns.max(self.latest_start_ns);
        let mut seconds = Vec::with_capacity(self.seconds.len());
        for (replies, errors, latency) in &self.seconds {
            let latency = crate::bench::report::from_hdr(latency)
                .map_err(|e| BenchError::Invalid(format!("a bench process's timeline: {e}")))?;
            seconds.push(crate::bench::tally::Second {
                replies: *replies,
                errors: *errors,
                latency,
            });
        }
        t.add_seconds(&seconds);
        for (name, n) in &self.failures {
            let failure = Failure::from_name(name).ok_or_else(|| {
                BenchError::Invalid(format!("a bench process reported a failure '{name}'"))
            })?;
            *t.failures.entry(failure).or_default() += n;
        }
        Ok(())
    }
}

/// Passes a shard's progress to its parent, and waits for its word to start.
struct ToParent<W: Write>(W);

impl<W: Write> Observer for ToParent<W> {
    fn all_connected(&mut self) {
        // Every shard connects first; the parent says `go` once all have, so their loads
        // (and their measured windows) start together. A parent gone (its pipes closed)
        // will read nothing: this shard of its load ends here rather than run unwatched.
        let mut word = String::new();
        let told = write_line(&mut self.0, &Line::Connected).is_ok()
            && io::stdin().lock().read_line(&mut word).is_ok_and(|n| n > 0);
        if !told {
            eprintln!("bench: the bench that started this process is gone; stopping");
            std::process::exit(1);
        }
    }

    fn progress(&mut self, p: &Progress) {
        let line = Line::Progress {
            connected: p.connected,
            started: p.started,
            elapsed_ms: p.elapsed.as_millis() as u64,
            total_ms: p.total.as_millis() as u64,
            measuring: p.measuring,
            replies: p.replies,
            msgs_per_s: p.msgs_per_s,
            p99_us: p.p99_us,
            errors: p.errors,
        };
        // A parent that stopped reading will see the shard's exit instead.
        let _ = write_line(&mut self.0, &line);
    }
}

fn write_line(out: &mut impl Write, line: &Line) -> io::Result<()> {
    serde_json::to_writer(&mut *out, line)?;
    out.write_all(b"\n")?;
    out.flush()
}

/// Runs shard `i` of `k` of `config` (the whole load's), writing its lines to `out`.
pub fn run_shard(
    config: &BenchConfig,
    (i, k): (usize, usize),
    out: impl Write,
) -> Result<(), BenchError> {
    let part = config.share(i, k)?;
    let mut observer = ToParent(out);
    let (ran, threads, tally) = super::run::measure(&part, &mut observer)?;
    write_line(
        &mut observer.0,
        &Line::Done(Counts::of(threads, &ran, &tally)),
    )?;
    Ok(())
}

/// What the parent knows of one shard so far.
#[derive(Default)]
struct Seen {
    progress: Option<Progress>,
    connected: bool,
    done: Option<Counts>,
    /// A line that was not understood (a shard of another version, say).
    garbled: Option<String>,
}

/// What every shard has said so far, in order of shard.
type AllSeen = Arc<Mutex<Vec<Seen>>>;

/// Runs `config` over `k` processes, each started by `command(i)` (which must run this same
/// bench with [`SHARD_ENV`] set to `i/k`), and reports them as one run.
pub fn run_sharded(
    config: &BenchConfig,
    k: usize,
    command: impl Fn(usize) -> Command,
    observer: &mut dyn Observer,
) -> Result<Report, BenchError> {
    config.check()?;
    // Every share is checked here, so a load that cannot be spread fails before any starts.
    for i in 0..k {
        config.share(i, k)?;
    }
    let seen: AllSeen = Arc::new(Mutex::new((0..k).map(|_| Seen::default()).collect()));
    let mut children = Vec::with_capacity(k);
    let mut readers = Vec::with_capacity(k);
    for i in 0..k {
        let mut child = command(i)
            .env(SHARD_ENV, format!("{i}/{k}"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()?;
        let stdout = child.stdout.take().expect("piped stdout");
        let seen = seen.clone();
        readers.push(std::thread::spawn(move || read_shard(i, stdout, &seen)));
        children.push(child);
    }
    let (statuses, connect_secs) = watch_shards(&mut children, &seen, observer)?;
    for reader in readers {
        let _ = reader.join();
    }
    let seen = std::mem::take(&mut *lock(&seen));
    let (mut all, threads, sources) = add_up(seen, statuses)?;
    all.connect_secs = connect_secs.unwrap_or(0.0);
    let mut whole = config.clone();
    whole.sources = sources;
    Ok(report(&whole, threads, k, &all))
}

fn lock(seen: &AllSeen) -> std::sync::MutexGuard<'_, Vec<Seen>> {
    seen.lock().unwrap_or_else(|e| e.into_inner())
}

/// Reads shard `i`'s lines until it closes its stdout, noting each in `seen`.
fn read_shard(i: usize, stdout: std::process::ChildStdout, seen: &AllSeen) {
    for line in BufReader::new(stdout).lines() {
        let Ok(line) = line else { break };
        let mut seen = lock(seen);
        match serde_json::from_str::<Line>(&line) {
            Ok(Line::Progress {
                connected,
                started,
                elapsed_ms,
                total_ms,
                measuring,
                replies,
                msgs_per_s,
                p99_us,
                errors,
            }) => {
                seen[i].progress = Some(Progress {
                    connected,
                    started,
                    elapsed: Duration::from_millis(elapsed_ms),
                    total: Duration::from_millis(total_ms),
                    measuring,
                    replies,
                    msgs_per_s,
                    p99_us,
                    errors,
                })
            }
            Ok(Line::Connected) => seen[i].connected = true,
            Ok(Line::Done(counts)) => seen[i].done = Some(counts),
            Err(_) => seen[i].garbled = Some(line),
        }
    }
}

/// Waits for every shard to exit, telling `observer` of their progress added up; once every
/// shard has connected (or ended), all are told to start together. Returns how each exited,
/// and how long connecting took, in seconds.
fn watch_shards(
    children: &mut [std::process::Child],
    seen: &AllSeen,
    observer: &mut dyn Observer,
) -> io::Result<(Vec<std::process::ExitStatus>, Option<f64>)> {
    let begun = Instant::now();
    let mut connect_secs = None;
    let mut measuring = false;
    let mut statuses = vec![None; children.len()];
    while statuses.iter().any(Option::is_none) {
        std::thread::sleep(Duration::from_millis(100));
        for (child, status) in children.iter_mut().zip(statuses.iter_mut()) {
            if status.is_none() {
                *status = child.try_wait()?;
            }
        }
        let seen = lock(seen);
        let ready = |(s, status): (&Seen, &Option<_>)| s.connected || status.is_some();
        if connect_secs.is_none() && seen.iter().zip(&statuses).all(ready) {
            connect_secs = Some(begun.elapsed().as_secs_f64());
            for child in children.iter_mut() {
                if let Some(mut stdin) = child.stdin.take() {
                    let _ = stdin.write_all(b"go\n");
                }
            }
            observer.all_connected();
        }
        let all: Vec<&Progress> = seen.iter().filter_map(|s| s.progress.as_ref()).collect();
        if all.is_empty() {
            continue;
        }
        if !measuring && all.iter().any(|p| p.measuring) {
            measuring = true;
            observer.window_started();
        }
        observer.progress(&summed(&all, connect_secs.is_some(), measuring));
    }
    if !measuring {
        observer.window_started();
    }
    observer.window_ended();
    let statuses = statuses
        .into_iter()
        .map(|s| s.expect("every shard has exited"));
    Ok((statuses.collect(), connect_secs))
}

/// The shards' progress as one: their replies and errors added up, the worst shard's p99
/// (percentiles do not add, and the whole histograms come only at the end).
fn summed(all: &[&Progress], started: bool, measuring: bool) -> Progress {
    Progress {
        connected: all.iter().map(|p| p.connected).sum(),
        started,
        elapsed: all.iter().map(|p| p.elapsed).max().unwrap_or_default(),
        total: all.iter().map(|p| p.total).max().unwrap_or_default(),
        measuring,
        replies: all.iter().map(|p| p.replies).sum(),
        msgs_per_s: all.iter().map(|p| p.msgs_per_s).sum(),
        p99_us: all.iter().map(|p| p.p99_us).max().unwrap_or(0),
        errors: all.iter().map(|p| p.errors).sum(),
    }
}

/// Every shard's counts added up, with their threads and source addresses; an error naming
/// the first shard that ended without its counts.
fn add_up(
    seen: Vec<Seen>,
    statuses: Vec<std::process::ExitStatus>,
) -> Result<(Tally, usize, Vec<std::net::IpAddr>), BenchError> {
    let k = seen.len();
    let mut all = Tally::new(Instant::now(), Instant::now());
    let (mut threads, mut sources) = (0, Vec::new());
    for (i, (shard, status)) in seen.into_iter().zip(statuses).enumerate() {
        let Some(counts) = shard.done else {
            let why = match shard.garbled {
                Some(line) => format!("wrote a line that is not a shard's: {line}"),
                None => format!("ended ({status}) without its counts; its error is above"),
            };
            return Err(BenchError::Invalid(format!(
                "bench process {} of {k} {why}",
                i + 1
            )));
        };
        counts.add_to(&mut all)?;
        threads += counts.threads;
        let ips = counts
            .sources
            .iter()
            .filter_map(|s| s.parse::<std::net::IpAddr>().ok());
        sources.extend(ips);
    }
    Ok((all, threads, sources))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(conns: usize, rate: Option<f64>) -> BenchConfig {
        let mut c = BenchConfig::new("tcp://127.0.0.1:8079".parse().unwrap());
        c.conns = conns;
        c.rate = rate;
        c.threads = 2;
        c
    }

    #[test]
    fn shares_add_up_and_each_has_its_own_sources() {
        let whole = load(100_000, Some(20_000.0));
        let parts: Vec<BenchConfig> = (0..6).map(|i| whole.share(i, 6).unwrap()).collect();
        assert_eq!(parts.iter().map(|p| p.conns).sum::<usize>(), 100_000);
        assert!(parts.iter().all(|p| p.conns == 16_666 || p.conns == 16_667));
        let rate: f64 = parts.iter().map(|p| p.rate.unwrap()).sum();
        assert!((rate - 20_000.0).abs() < 1e-6, "{rate}");
        assert!(parts.iter().all(|p| p.threads == 1));
        let mut sources: Vec<_> = parts.iter().flat_map(|p| p.sources.clone()).collect();
        assert_eq!(sources.len(), 6, "one address each: {sources:?}");
        sources.dedup();
        assert_eq!(sources.len(), 6, "none shared: {sources:?}");
        assert_eq!(
            parts[0].sources,
            ["127.0.0.1".parse::<std::net::IpAddr>().unwrap()]
        );
    }

    #[test]
    fn given_sources_are_split_and_a_remote_server_needs_them() {
        let mut whole = load(30_000, None);
        whole.sources = (1..=4)
            .map(|n| std::net::Ipv4Addr::new(127, 0, 1, n).into())
            .collect();
        let a = whole.share(0, 2).unwrap();
        let b = whole.share(1, 2).unwrap();
        assert_eq!(a.sources, whole.sources[..2]);
        assert_eq!(b.sources, whole.sources[2..]);
        let mut remote = load(60_000, None);
        remote.addr = "tcp://10.9.9.9:8079".parse().unwrap();
        assert!(matches!(remote.share(0, 3), Err(BenchError::Invalid(_))));
        assert!(matches!(
            load(2, None).share(2, 3),
            Err(BenchError::Invalid(_))
        ));
    }

    #[test]
    fn counts_survive_the_trip_through_json() {
        let mut t = Tally::new(Instant::now(), Instant::now() + Duration::from_secs(60));
        let t0 = Instant::now();
        for us in [10, 20, 20, 3_000, 250_000] {
            t.reply(t0, t0 + Duration::from_micros(us));
        }
        t.connected(Duration::from_micros(40));
        t.fail(Failure::Reset, t0);
        t.mismatch(t0);
        t.served(5, None);
        t.served(0, Some(t0));
        t.first_request(t0 + Duration::from_secs(30));
        let config = load(10, None);
        let line = serde_json::to_string(&Line::Done(Counts::of(2, &config, &t))).unwrap();
        let Line::Done(back) = serde_json::from_str(&line).unwrap() else {
            panic!("{line}")
        };
        let mut merged = Tally::new(Instant::now(), Instant::now());
        back.add_to(&mut merged).unwrap();
        back.add_to(&mut merged).unwrap();
        assert_eq!(merged.replies, 10);
        assert_eq!(merged.latency.len(), 10);
        assert_eq!(merged.replies_per_conn, vec![5, 0, 5, 0]);
        assert_eq!(merged.unserved, 2);
        assert_eq!(merged.late_starts, 2);
        assert!(merged.latest_start_ns >= 30_000_000_000);
        // Every reply was in the first second of the window: twice, once per trip.
        assert_eq!(merged.seconds.len(), 1);
        assert_eq!(merged.seconds[0].replies, 10);
        assert_eq!(merged.seconds[0].latency.len(), 10);
        for q in [0.1, 0.5, 0.9, 0.99, 1.0] {
            assert_eq!(
                merged.latency.value_at_quantile(q),
                t.latency.value_at_quantile(q),
                "q {q}"
            );
        }
        assert_eq!(merged.failures[&Failure::Reset], 2);
        assert_eq!((merged.mismatches, merged.connected), (2, 2));
        assert_eq!(merged.connect.max(), t.connect.max());
    }
}
