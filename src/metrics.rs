//! Metrics for a monitoring system: `serve --metrics tcp://HOST:PORT` answers `GET /metrics` in
//! the Prometheus text format (version 0.0.4, encoded by the `prometheus` crate).
//!
//! Every figure is read at scrape time from memory the server already keeps, most of it shared
//! with forked processes (`MAP_SHARED`), so `fork` children and `prefork` workers count into
//! what the master serves: the connection and byte totals, closes by reason, two histograms
//! (connection durations and per-message service time), and the store's recorder.

use crate::session::CloseReason;
use crate::shared::Counters;
use crate::store::SharedStats;
use crate::sys::SharedMem;
use prometheus::proto::{self, LabelPair, Metric, MetricFamily, MetricType};
use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{
    AtomicU64,
    Ordering::{Acquire, Relaxed, Release},
};
use std::sync::Arc;
use std::time::Duration;

/// Close reasons as the store names them, in the order counted.
const REASONS: [&str; 7] = [
    "eof",
    "reset",
    "timeout",
    "error",
    "denied",
    "untrusted",
    "shutdown",
];

/// Upper bounds of the connection-duration buckets, in seconds.
const DURATION_BUCKETS: [f64; 8] = [0.001, 0.01, 0.1, 1.0, 10.0, 60.0, 600.0, 3600.0];
/// Upper bounds of the service-time buckets (one message's call into the service), in seconds.
const SERVICE_BUCKETS: [f64; 8] = [1e-6, 5e-6, 1e-5, 5e-5, 1e-4, 1e-3, 1e-2, 1e-1];

/// A histogram of fixed buckets in atomics: plain data, so it can live in shared memory.
#[derive(Debug, Default)]
pub(crate) struct AtomicHistogram {
    /// Observations at or under each bound (not cumulative: summed at scrape time).
    buckets: [AtomicU64; 8],
    /// Observations over the last bound.
    over: AtomicU64,
    count: AtomicU64,
    /// Sum of observations, in nanoseconds.
    sum_ns: AtomicU64,
}

impl AtomicHistogram {
    fn observe(&self, bounds: &[f64; 8], d: Duration) {
        let secs = d.as_secs_f64();
        match bounds.iter().position(|&b| secs <= b) {
            Some(i) => self.buckets[i].fetch_add(1, Relaxed),
            None => self.over.fetch_add(1, Relaxed),
        };
        self.count.fetch_add(1, Relaxed);
        self.sum_ns.fetch_add(d.as_nanos() as u64, Relaxed);
    }

    /// (sum in seconds, count, cumulative buckets) as the exposition wants them.
    fn snapshot(&self, bounds: &[f64; 8]) -> (f64, u64, Vec<(f64, u64)>) {
        let mut running = 0;
        let mut buckets: Vec<(f64, u64)> = bounds
            .iter()
            .zip(&self.buckets)
            .map(|(&b, n)| {
                running += n.load(Relaxed);
                (b, running)
            })
            .collect();
        let count = running + self.over.load(Relaxed);
        buckets.push((f64::INFINITY, count));
        (self.sum_ns.load(Relaxed) as f64 / 1e9, count, buckets)
    }
}

/// What the metrics add to the server's counters, in shared memory like them.
#[derive(Debug, Default)]
pub(crate) struct Meters {
    closes: [AtomicU64; REASONS.len()],
    durations: AtomicHistogram,
    service: AtomicHistogram,
}

impl Meters {
    /// A connection closed after `open` for `reason`.
    pub(crate) fn closed(&self, reason: &CloseReason, open: Duration) {
        self.durations.observe(&DURATION_BUCKETS, open);
        // Released last, acquired first by a scrape: what was counted before it is seen with it.
        let kind = reason.kind();
        if let Some(i) = REASONS.iter().position(|r| *r == kind) {
            self.closes[i].fetch_add(1, Release);
        }
    }

    /// One message took `d` in the service.
    pub(crate) fn served(&self, d: Duration) {
        self.service.observe(&SERVICE_BUCKETS, d);
    }
}

/// Reads everything at scrape time.
struct Scrape {
    counters: Arc<SharedMem<Counters>>,
    meters: Arc<SharedMem<Meters>>,
    store: Option<SharedStats>,
}

fn family(name: &str, help: &str, kind: MetricType, metrics: Vec<Metric>) -> MetricFamily {
    let mut f = MetricFamily::default();
    f.set_name(name.into());
    f.set_help(help.into());
    f.set_field_type(kind);
    f.set_metric(metrics);
    f
}

fn counter(name: &str, help: &str, v: u64) -> MetricFamily {
    family(
        name,
        help,
        MetricType::COUNTER,
        vec![counter_metric(v, vec![])],
    )
}

fn counter_metric(v: u64, labels: Vec<LabelPair>) -> Metric {
    let mut c = proto::Counter::default();
    c.set_value(v as f64);
    let mut m = Metric::from_label(labels);
    m.set_counter(c);
    m
}

fn gauge(name: &str, help: &str, v: i64) -> MetricFamily {
    let mut g = proto::Gauge::default();
    g.set_value(v as f64);
    family(name, help, MetricType::GAUGE, vec![Metric::from_gauge(g)])
}

fn histogram(name: &str, help: &str, h: &AtomicHistogram, bounds: &[f64; 8]) -> MetricFamily {
    let (sum, count, cumulative) = h.snapshot(bounds);
    let mut p = proto::Histogram::default();
    p.set_sample_sum(sum);
    p.set_sample_count(count);
    p.set_bucket(
        cumulative
            .into_iter()
            .filter(|(bound, _)| bound.is_finite()) // +Inf is the count, written by the encoder
            .map(|(bound, n)| {
                let mut b = proto::Bucket::default();
                b.set_upper_bound(bound);
                b.set_cumulative_count(n);
                b
            })
            .collect(),
    );
    let mut m = Metric::default();
    m.set_histogram(p);
    family(name, help, MetricType::HISTOGRAM, vec![m])
}

impl Scrape {
    fn families(&self) -> Vec<MetricFamily> {
        // Closes first, then accepts: every close read was accepted before it, so the open
        // gauge and the closes by reason agree within one scrape and never go below zero.
        let closes: Vec<u64> = self.meters.closes.iter().map(|n| n.load(Acquire)).collect();
        let c = self.counters.snapshot();
        let accepted = c.connections_seen;
        let open = accepted as i64 - closes.iter().sum::<u64>() as i64;
        let reasons = REASONS
            .iter()
            .zip(&closes)
            .map(|(reason, &n)| {
                let mut label = LabelPair::default();
                label.set_name("reason".into());
                label.set_value(reason.to_string());
                counter_metric(n, vec![label])
            })
            .collect();
        let mut all = vec![
            counter(
                "switchboard_connections_accepted_total",
                "Connections accepted, admitted or denied.",
                accepted,
            ),
            counter(
                "switchboard_connections_denied_total",
                "Connections refused by --allow, --deny or --allow-uid.",
                c.denied,
            ),
            gauge(
                "switchboard_connections_open",
                "Connections open now.",
                open,
            ),
            counter(
                "switchboard_connection_errors_total",
                "Connections that ended in an error.",
                c.errors,
            ),
            counter(
                "switchboard_messages_total",
                "Requests answered.",
                c.messages,
            ),
            counter(
                "switchboard_received_bytes_total",
                "Bytes received.",
                c.bytes_in,
            ),
            counter("switchboard_sent_bytes_total", "Bytes sent.", c.bytes_out),
            family(
                "switchboard_closes_total",
                "Connections closed, by reason.",
                MetricType::COUNTER,
                reasons,
            ),
            histogram(
                "switchboard_connection_duration_seconds",
                "How long connections stayed open.",
                &self.meters.durations,
                &DURATION_BUCKETS,
            ),
            histogram(
                "switchboard_service_seconds",
                "Time in the service per message.",
                &self.meters.service,
                &SERVICE_BUCKETS,
            ),
        ];
        if let Some(store) = &self.store {
            let depth = store.queued.load(Relaxed) as i64 - store.taken.load(Relaxed) as i64;
            all.extend([
                gauge(
                    "switchboard_store_queue_depth",
                    "Records waiting for the store's writer.",
                    depth,
                ),
                gauge(
                    "switchboard_store_queue_bytes",
                    "Bytes of the records waiting for the store's writer (bounded by --store-queue).",
                    store.bytes.load(Relaxed) as i64,
                ),
                gauge(
                    "switchboard_store_failing",
                    "1 while the store cannot take records (they wait, spool or drop, as --on-store-error says).",
                    store.failing.load(Relaxed) as i64,
                ),
                counter(
                    "switchboard_store_written_total",
                    "Rows the store's writer wrote.",
                    store.written.load(Relaxed),
                ),
                counter(
                    "switchboard_store_spooled_total",
                    "Rows written to the local spool while the store could not take them.",
                    store.spooled.load(Relaxed),
                ),
                counter(
                    "switchboard_store_waited_total",
                    "Times a model waited for room in the store's queue (records or bytes).",
                    store.waited.load(Relaxed),
                ),
                counter(
                    "switchboard_store_dropped_total",
                    "Rows the store could not write, dropped (--on-store-error drop, or a stop when the spool failed too).",
                    store.dropped.load(Relaxed),
                ),
            ]);
        }
        all
    }
}

/// The metrics endpoint: a thread answering `GET /metrics` on `listener` until the process
/// ends. Anything else gets 404; a client that sends nothing for 2 s is dropped.
pub(crate) fn serve(
    listener: TcpListener,
    counters: Arc<SharedMem<Counters>>,
    meters: Arc<SharedMem<Meters>>,
    store: Option<SharedStats>,
) -> std::io::Result<()> {
    let scrape = Scrape {
        counters,
        meters,
        store,
    };
    crate::sys::spawn_settled(
        std::thread::Builder::new().name("metrics".into()),
        move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                let _ = conn.set_read_timeout(Some(Duration::from_secs(2)));
                let mut head = [0u8; 4096];
                let n = conn.read(&mut head).unwrap_or(0);
                let request = String::from_utf8_lossy(&head[..n]);
                let response = if request.starts_with("GET /metrics ")
                    || request.starts_with("GET /metrics\r")
                {
                    let mut body = String::new();
                    match prometheus::TextEncoder::new().encode_utf8(&scrape.families(), &mut body) {
                    Ok(()) => format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    ),
                    Err(_) => "HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_string(),
                }
                } else {
                    let body = "only GET /metrics is served here\n";
                    format!("HTTP/1.1 404 Not Found\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len())
                };
                let _ = conn.write_all(response.as_bytes());
            }
        },
    )?;
    Ok(())
}
