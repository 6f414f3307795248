//! Many runs as one: the `bench --json` reports of load generators that ran at once (one per
//! machine, say), added up into one report. Counts and throughput are summed; percentiles come
//! from the runs' histograms merged bucket by bucket, never from averaging their percentiles.

use crate::bench::payload::Expect;
use crate::bench::report::{self, from_hdr, hdr, Report};
use crate::bench::tally::{histogram, Failure, Second};
use crate::bench::BenchError;
use crate::store::BenchResult;
use hdrhistogram::Histogram;
use std::collections::BTreeMap;

/// What a merge reads of one run's `--json` report.
#[derive(serde::Deserialize)]
struct Run {
    address: String,
    frame: String,
    conns: u64,
    size: u64,
    depth: u64,
    rate: Option<f64>,
    secs: f64,
    msgs_per_s: f64,
    mb_per_s: f64,
    errors: u64,
    mismatches: u64,
    expect: Expect,
    connected: u64,
    warmup_secs: f64,
    threads: usize,
    processes: usize,
    sources: Vec<String>,
    msgs: u64,
    connect_secs: f64,
    errors_by_kind: BTreeMap<String, u64>,
    unanswered: u64,
    oldest_unanswered_us: u64,
    unserved_conns: u64,
    #[serde(default)]
    late_starts: u64,
    #[serde(default)]
    latest_start_us: u64,
    latency_hdr: String,
    connect_hdr: String,
    replies_per_conn_hdr: String,
    #[serde(default)]
    timeline: Vec<report::Second>,
}

/// Merges the `bench --json` reports `runs` (each a name to say in errors, and its text) into
/// one report, as if one load generator had made all their connections.
pub fn merge(runs: &[(String, String)]) -> Result<Report, BenchError> {
    if runs.is_empty() {
        return Err(BenchError::Invalid("no runs to merge".into()));
    }
    let parsed = runs
        .iter()
        .map(|(name, text)| {
            serde_json::from_str::<Run>(text.trim()).map_err(|e| {
                BenchError::Invalid(format!(
                    "{name} is not a `switchboard bench --json` report of this version: {e}"
                ))
            })
        })
        .collect::<Result<Vec<Run>, BenchError>>()?;
    let histogram_of = |name: &str, what: &str, text: &str| {
        from_hdr(text).map_err(|e| BenchError::Invalid(format!("{name}: {what}: {e}")))
    };
    let mut latency = histogram();
    let mut connect = histogram();
    // Replies per connection have no bound: this one grows to hold them.
    let mut per_conn = Histogram::<u64>::new(3).expect("3 significant digits is valid");
    let mut errors_by_kind: BTreeMap<&'static str, u64> = BTreeMap::new();
    // Second by second, the runs' seconds added up (runs made at once share their clock).
    let mut seconds: Vec<Second> = Vec::new();
    for ((name, _), run) in runs.iter().zip(&parsed) {
        add(
            &mut latency,
            histogram_of(name, "latency_hdr", &run.latency_hdr)?,
        );
        add(
            &mut connect,
            histogram_of(name, "connect_hdr", &run.connect_hdr)?,
        );
        let replies = histogram_of(name, "replies_per_conn_hdr", &run.replies_per_conn_hdr)?;
        per_conn
            .add(&replies)
            .map_err(|e| BenchError::Invalid(format!("{name}: replies_per_conn_hdr: {e:?}")))?;
        for s in &run.timeline {
            let i = s.second as usize;
            if seconds.len() <= i {
                seconds.resize_with(i + 1, Second::new);
            }
            let latency = histogram_of(name, "timeline", &s.latency_hdr)?;
            seconds[i].add(&Second {
                replies: s.replies,
                errors: s.errors,
                latency,
            });
        }
        for (kind, n) in &run.errors_by_kind {
            let failure = Failure::from_name(kind)
                .ok_or_else(|| BenchError::Invalid(format!("{name}: an error of kind '{kind}'")))?;
            *errors_by_kind.entry(failure.name()).or_default() += n;
        }
    }
    let sum = |f: fn(&Run) -> u64| parsed.iter().map(f).sum::<u64>();
    let max = |f: fn(&Run) -> f64| parsed.iter().map(f).fold(0.0, f64::max);
    let us = |q: f64| latency.value_at_quantile(q) / 1000;
    Ok(Report {
        result: BenchResult {
            address: joined(parsed.iter().map(|r| r.address.clone())),
            frame: joined(parsed.iter().map(|r| r.frame.clone())),
            conns: sum(|r| r.conns),
            size: parsed[0].size,
            depth: parsed[0].depth,
            rate: parsed.iter().map(|r| r.rate).sum::<Option<f64>>(),
            secs: max(|r| r.secs),
            msgs_per_s: parsed.iter().map(|r| r.msgs_per_s).sum(),
            mb_per_s: parsed.iter().map(|r| r.mb_per_s).sum(),
            p50_us: us(0.5),
            p90_us: us(0.9),
            p99_us: us(0.99),
            p999_us: us(0.999),
            max_us: latency.max() / 1000,
            errors: sum(|r| r.errors),
            mismatches: sum(|r| r.mismatches),
        },
        expect: parsed[0].expect,
        connected: sum(|r| r.connected),
        warmup_secs: max(|r| r.warmup_secs),
        threads: parsed.iter().map(|r| r.threads).sum(),
        processes: parsed.iter().map(|r| r.processes).sum(),
        sources: parsed.iter().flat_map(|r| r.sources.clone()).collect(),
        msgs: sum(|r| r.msgs),
        mean_us: latency.mean() / 1000.0,
        connect_secs: max(|r| r.connect_secs),
        connect_p50_us: connect.value_at_quantile(0.5) / 1000,
        connect_max_us: connect.max() / 1000,
        errors_by_kind,
        unanswered: sum(|r| r.unanswered),
        oldest_unanswered_us: parsed
            .iter()
            .map(|r| r.oldest_unanswered_us)
            .max()
            .unwrap_or(0),
        unserved_conns: sum(|r| r.unserved_conns),
        late_starts: sum(|r| r.late_starts),
        latest_start_us: parsed.iter().map(|r| r.latest_start_us).max().unwrap_or(0),
        replies_per_conn_min: per_conn.min(),
        replies_per_conn_median: per_conn.value_at_quantile(0.5),
        replies_per_conn_max: per_conn.max(),
        latency_hdr: hdr(&latency),
        connect_hdr: hdr(&connect),
        replies_per_conn_hdr: hdr(&per_conn),
        timeline: seconds
            .iter()
            .enumerate()
            .map(|(i, s)| report::Second::of(i, s))
            .collect(),
    })
}

/// Adds `other` to `all`, bucket by bucket (values past `all`'s bounds are clamped).
fn add(all: &mut Histogram<u64>, other: Histogram<u64>) {
    for v in other.iter_recorded() {
        all.saturating_record_n(v.value_iterated_to(), v.count_at_value());
    }
}

/// The distinct values, in order of first appearance, joined by `, `.
fn joined(values: impl Iterator<Item = String>) -> String {
    let mut seen: Vec<String> = Vec::new();
    for v in values {
        if !seen.contains(&v) {
            seen.push(v);
        }
    }
    seen.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::tally::Tally;
    use crate::bench::BenchConfig;
    use std::time::{Duration, Instant};

    /// A report whose latencies are `count` replies at each of `latencies_us`.
    fn run(addr: &str, conns: usize, latencies_us: &[(u64, u64)]) -> String {
        let t0 = Instant::now();
        let mut t = Tally::new(t0, t0 + Duration::from_secs(600));
        for &(us, count) in latencies_us {
            for _ in 0..count {
                t.reply(t0, t0 + Duration::from_micros(us));
            }
        }
        for _ in 0..conns {
            t.served(t.replies / conns as u64, None);
        }
        t.fail(Failure::Reset, t0);
        let mut config = BenchConfig::new(addr.parse().unwrap());
        config.conns = conns;
        config.duration = Duration::from_secs(2);
        let report = crate::bench::report::report(&config, 1, 1, &t);
        serde_json::to_string(&report).unwrap()
    }

    #[test]
    fn percentiles_come_from_the_merged_histograms() {
        // A: 90 fast replies (1 ms); B: 10 slow ones (50 ms). Averaging the two p99s would say
        // 25.5 ms; merged, p50 is 1 ms, p90 1 ms and p99 50 ms.
        let a = run("tcp://10.0.0.1:8079", 9, &[(1_000, 90)]);
        let b = run("tcp://10.0.0.1:8079", 1, &[(50_000, 10)]);
        let merged = merge(&[("a".into(), a), ("b".into(), b)]).unwrap();
        let r = &merged.result;
        assert_eq!((r.conns, merged.msgs, r.errors), (10, 100, 2));
        assert_eq!(merged.errors_by_kind["reset"], 2);
        assert!((r.msgs_per_s - 50.0).abs() < 1e-9, "{}", r.msgs_per_s);
        assert_eq!((r.p50_us, r.p90_us), (1_000, 1_000));
        assert!((49_950..=50_050).contains(&r.p99_us), "{}", r.p99_us);
        assert!((49_950..=50_050).contains(&r.max_us), "{}", r.max_us);
        assert_eq!(r.address, "tcp://10.0.0.1:8079");
        // Replies per connection: nine of 10 (A) and one of 10 (B).
        assert_eq!(
            (merged.replies_per_conn_min, merged.replies_per_conn_max),
            (10, 10)
        );
        // Large counts survive the trip too (exact to three significant digits).
        let c = run("tcp://10.0.0.1:8079", 1, &[(1_000, 5_000)]);
        let big = merge(&[("c".into(), c)]).unwrap();
        assert!((5_000..=5_005).contains(&big.replies_per_conn_median));
        // Merging the merge with nothing new changes nothing.
        let again = serde_json::to_string(&merged).unwrap();
        let twice = merge(&[("m".into(), again)]).unwrap();
        assert_eq!(twice.result, merged.result);
    }

    #[test]
    fn what_is_not_a_report_is_a_clear_error() {
        let err = merge(&[("x.json".into(), "{\"conns\": 3}".into())]).unwrap_err();
        assert!(
            err.to_string()
                .contains("x.json is not a `switchboard bench --json` report"),
            "{err}"
        );
        assert!(merge(&[]).is_err());
    }
}
