//! Metrics for a monitoring system: `serve --metrics tcp://HOST:PORT` answers `GET /metrics` in
//! the Prometheus text format (version 0.0.4, encoded by the `prometheus` crate).
//!
//! Every figure is read at scrape time from memory the server already keeps, most of it shared
//! with forked processes (`MAP_SHARED`), so `fork` children and `prefork` workers count into
//! what the master serves: the connection and byte totals, closes by reason, two histograms
//! (connection durations and per-message service time), and the store's recorder.

use crate::access::AccessList;
use crate::counters::Counters;
use crate::session::CloseReason;
use crate::store::{RecorderStats, SharedStats};
use crate::sys::SharedMem;
use bytes::Bytes;
use http_body_util::Full;
use prometheus::proto::{self, LabelPair, Metric, MetricFamily, MetricType};
use std::net::TcpListener;
use std::sync::atomic::{
    AtomicU64,
    Ordering::{Acquire, Relaxed, Release},
};
use std::sync::Arc;
use std::time::Duration;

/// Close reasons as the store names them, in the order counted.
const REASONS: [&str; 8] = [
    "eof",
    "reset",
    "timeout",
    "error",
    "denied",
    "untrusted",
    "limited",
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

/// The CPU time (user and system, seconds) of this process's threads and of its children that
/// have exited: `getrusage`.
fn cpu_seconds() -> f64 {
    let of = |who| {
        // SAFETY: getrusage writes one rusage, which an all-zero value is a valid start for.
        let mut r: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: `r` is a valid rusage to write into.
        if unsafe { libc::getrusage(who, &mut r) } != 0 {
            return 0.0;
        }
        let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
        secs(r.ru_utime) + secs(r.ru_stime)
    };
    of(libc::RUSAGE_SELF) + of(libc::RUSAGE_CHILDREN)
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
            {
                let mut c = proto::Counter::default();
                c.set_value(cpu_seconds());
                let mut m = Metric::default();
                m.set_counter(c);
                family(
                    "process_cpu_seconds_total",
                    "CPU time of the server's process (every thread) and its exited children, user and system.",
                    MetricType::COUNTER,
                    vec![m],
                )
            },
        ];
        if let Some(store) = &self.store {
            all.extend(store_families(store));
        }
        all
    }
}

/// What the store's writer did, over every process of the server.
fn store_families(store: &RecorderStats) -> Vec<MetricFamily> {
    let depth = store.queued.load(Relaxed) as i64 - store.taken.load(Relaxed) as i64;
    vec![
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
    ]
}

/// How long a scrape's request head may take to arrive, and the longest a connection may sit
/// idle between requests: a client that sends nothing is closed after this, so it holds up
/// no scrape for longer.
const READ_TIMEOUT: Duration = Duration::from_secs(2);
/// Connections served at once (of the peers `--metrics-allow` admits; others are closed at
/// once); past it the endpoint stops accepting, so the rest wait in the kernel's backlog until
/// a place frees, at the latest after [`READ_TIMEOUT`].
const MAX_CONNECTIONS: usize = 256;
/// The longest one connection is kept, requests and keep-alive included.
const MAX_CONNECTION_LIFE: Duration = Duration::from_secs(60);

/// The metrics endpoint: a thread of its own, serving `GET /metrics` over HTTP/1.1 (hyper, on
/// a single-threaded tokio runtime) to the peers `allow` admits, until the process ends.
/// Scrapes are served concurrently: a silent client is closed after [`READ_TIMEOUT`], and at
/// most [`MAX_CONNECTIONS`] are open at once. Anything but `GET /metrics` gets 404.
pub(crate) fn serve(
    listener: TcpListener,
    counters: Arc<SharedMem<Counters>>,
    meters: Arc<SharedMem<Meters>>,
    store: Option<SharedStats>,
    allow: AccessList,
) -> std::io::Result<()> {
    let scrape = Arc::new(Scrape {
        counters,
        meters,
        store,
    });
    listener.set_nonblocking(true)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()?;
    crate::sys::spawn_settled(
        std::thread::Builder::new().name("metrics".into()),
        move || runtime.block_on(accept(listener, scrape, allow)),
    )?;
    Ok(())
}

/// Accepts scrapers while there is room, and serves each in a task of its own.
async fn accept(listener: TcpListener, scrape: Arc<Scrape>, allow: AccessList) {
    let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
        return;
    };
    let room = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(place) = room.clone().acquire_owned().await else {
            return;
        };
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of open files, most likely: the backlog waits a moment.
                tracing::debug!(error = %e, "metrics: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        if !allow.admits_ip(peer.ip()) {
            tracing::debug!(%peer, "metrics: refused by --metrics-allow");
            continue; // dropped: closed unread
        }
        let scrape = scrape.clone();
        tokio::spawn(async move {
            let _place = place;
            let service = hyper::service::service_fn(move |request| {
                let response = respond(&scrape, &request);
                async move { Ok::<_, std::convert::Infallible>(response) }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(READ_TIMEOUT)
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
            let _ = tokio::time::timeout(MAX_CONNECTION_LIFE, connection).await;
        });
    }
}

/// The answer to one request: the metrics for `GET /metrics`, 404 for anything else.
fn respond<B>(scrape: &Scrape, request: &hyper::Request<B>) -> hyper::Response<Full<Bytes>> {
    let reply = |status: u16, kind: &str, body: String| {
        hyper::Response::builder()
            .status(status)
            .header("Content-Type", kind)
            .body(Full::new(Bytes::from(body)))
            .unwrap_or_default()
    };
    if request.method() != hyper::Method::GET || request.uri().path() != "/metrics" {
        return reply(
            404,
            "text/plain",
            "only GET /metrics is served here\n".into(),
        );
    }
    let mut body = String::new();
    match prometheus::TextEncoder::new().encode_utf8(&scrape.families(), &mut body) {
        Ok(()) => reply(200, "text/plain; version=0.0.4; charset=utf-8", body),
        Err(e) => reply(500, "text/plain", format!("{e}\n")),
    }
}
