//! What a run measured, as `bench` prints it and `--json` gives it.

use crate::bench::config::BenchConfig;
use crate::bench::payload::Expect;
use crate::bench::tally::Tally;
use crate::store::{BenchResult, BenchRow};
use base64::Engine;
use hdrhistogram::serialization::{Deserializer, Serializer, V2DeflateSerializer};
use hdrhistogram::Histogram;
use std::collections::BTreeMap;

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
    /// Requests sent before the window ended and unanswered when it did; each one's wait
    /// until then is among the latencies, as the least it waited.
    pub unanswered: u64,
    /// How long the oldest of them had waited by the end, in µs.
    pub oldest_unanswered_us: u64,
    /// Connections that had no reply in the window though a request of theirs had been
    /// waiting since its first half (or before): clients the server never served.
    pub unserved_conns: u64,
    /// Closed-loop connections whose first request went out more than a tenth of the window
    /// after the warm-up: the load generator itself was late (too many connections for its
    /// threads, or a busy machine), and the window measured less load than asked for. A
    /// longer `--warmup` cures it.
    pub late_starts: u64,
    /// How far into the window the last of them sent its first request, in µs.
    pub latest_start_us: u64,
    /// Correct replies per connection in the window: the fewest, the median, the most. A
    /// fair server keeps them close.
    pub replies_per_conn_min: u64,
    /// See `replies_per_conn_min`.
    pub replies_per_conn_median: u64,
    /// See `replies_per_conn_min`.
    pub replies_per_conn_max: u64,
    /// The latencies (ns) whole, in HdrHistogram's standard compressed form (V2, deflated,
    /// base64), so runs from many machines merge into exact percentiles (`runs merge`).
    pub latency_hdr: String,
    /// The connect times (ns), in the same form.
    pub connect_hdr: String,
    /// Replies per connection in the window, in the same form.
    pub replies_per_conn_hdr: String,
    /// The window second by second: when a stall, a reload or a lost server happened.
    pub timeline: Vec<Second>,
}

/// One second of a run's measured window (`bench --timeline` writes one per line).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Second {
    /// Seconds since the window began: this one covers [second, second + 1).
    pub second: u64,
    /// Correct replies that arrived in it.
    pub replies: u64,
    /// Failed connections, lost datagrams and wrong replies in it.
    pub errors: u64,
    /// Its latencies (µs): median, 99th percentile, slowest. The last second also holds the
    /// requests left unanswered at the end.
    pub p50_us: u64,
    /// See `p50_us`.
    pub p99_us: u64,
    /// See `p50_us`.
    pub max_us: u64,
    /// Its latencies whole (ns, to two significant digits), for `runs merge`.
    pub latency_hdr: String,
}

impl Second {
    /// The `i`th second of a tally.
    pub(crate) fn of(i: usize, s: &crate::bench::tally::Second) -> Second {
        Second {
            second: i as u64,
            replies: s.replies,
            errors: s.errors,
            p50_us: s.latency.value_at_quantile(0.5) / 1000,
            p99_us: s.latency.value_at_quantile(0.99) / 1000,
            max_us: s.latency.max() / 1000,
            latency_hdr: hdr(&s.latency),
        }
    }
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

    /// True when every connection that asked was answered in the window and no request was
    /// left waiting at the end for longer than `max_wait`.
    pub fn served_everyone(&self, max_wait: std::time::Duration) -> bool {
        self.unserved_conns == 0 && u128::from(self.oldest_unanswered_us) <= max_wait.as_micros()
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

/// A histogram in HdrHistogram's standard compressed form: V2, deflated, base64.
pub(crate) fn hdr(h: &Histogram<u64>) -> String {
    let mut bytes = Vec::new();
    // Writing into memory fails only on a histogram the serializer cannot hold (none here).
    let _ = V2DeflateSerializer::new().serialize(h, &mut bytes);
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// The histogram [`hdr`] wrote.
pub(crate) fn from_hdr(text: &str) -> Result<Histogram<u64>, String> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .map_err(|e| format!("not base64: {e}"))?;
    Deserializer::new()
        .deserialize(&mut bytes.as_slice())
        .map_err(|e| format!("not an HdrHistogram: {e:?}"))
}

/// Each connection's replies, as a histogram: exact below 2,048, to three significant digits
/// above.
fn per_conn_histogram(replies: &[u64]) -> Histogram<u64> {
    let mut h = Histogram::new(3).expect("3 significant digits is valid");
    for &n in replies {
        // It grows to hold any count, so recording cannot fail.
        let _ = h.record(n);
    }
    h
}

pub(super) fn report(config: &BenchConfig, threads: usize, processes: usize, t: &Tally) -> Report {
    let secs = config.duration.as_secs_f64();
    let mut per_conn = t.replies_per_conn.clone();
    per_conn.sort_unstable();
    let at = |i: usize| per_conn.get(i).copied().unwrap_or(0);
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
        unanswered: t.unanswered,
        oldest_unanswered_us: t.oldest_unanswered_ns / 1000,
        unserved_conns: t.unserved,
        late_starts: t.late_starts,
        latest_start_us: t.latest_start_ns / 1000,
        replies_per_conn_min: at(0),
        replies_per_conn_median: at(per_conn.len() / 2),
        replies_per_conn_max: per_conn.last().copied().unwrap_or(0),
        latency_hdr: hdr(&t.latency),
        connect_hdr: hdr(&t.connect),
        replies_per_conn_hdr: hdr(&per_conn_histogram(&per_conn)),
        timeline: t
            .seconds
            .iter()
            .enumerate()
            .map(|(i, s)| Second::of(i, s))
            .collect(),
    }
}
