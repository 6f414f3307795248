//! `switchboard runs`: the load-generator runs a store recorded, newest first.

use super::{print_json, StoreArg};
use std::io::{self, Write};
use switchboard::bench::thousands;

/// List the runs `bench` and `lab` recorded, newest first.
#[derive(clap::Args)]
#[command(
    after_help = "Examples:\n  switchboard runs --last 10\n  switchboard runs --lab lab-20261128-143000 --json"
)]
pub struct Args {
    #[command(flatten)]
    store: StoreArg,
    /// How many, at most.
    #[arg(long, default_value_t = 20)]
    last: usize,
    /// Only the cells of this lab run.
    #[arg(long)]
    lab: Option<String>,
    /// One JSON object per line instead of a table.
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let mut db = args.store.open()?;
    let rows = db.bench_runs(args.last, args.lab.as_deref())?;
    let mut out = io::stdout().lock();
    if args.json {
        for r in &rows {
            print_json(&mut out, r)?;
        }
        return Ok(());
    }
    writeln!(
        out,
        "{:<19} {:<12} {:<26} {:>6} {:>6} {:>5} {:>10} {:>8} {:>8} {:>6}",
        "STARTED",
        "SERVER",
        "ADDRESS",
        "CONNS",
        "SIZE",
        "DEPTH",
        "MSGS/S",
        "P50 µs",
        "P99 µs",
        "ERRORS"
    )?;
    for r in &rows {
        let started = humantime::format_rfc3339_seconds(
            std::time::UNIX_EPOCH + std::time::Duration::from_micros(r.started.max(0) as u64),
        )
        .to_string();
        let rate = r
            .result
            .rate
            .map_or(String::new(), |r| format!(" (open loop {r:.0}/s)"));
        writeln!(
            out,
            "{:<19} {:<12} {:<26} {:>6} {:>6} {:>5} {:>10} {:>8} {:>8} {:>6}{rate}",
            &started[..19.min(started.len())],
            r.model.as_deref().unwrap_or("-"),
            r.result.address,
            r.result.conns,
            r.result.size,
            r.result.depth,
            thousands(r.result.msgs_per_s),
            thousands(r.result.p50_us as f64),
            thousands(r.result.p99_us as f64),
            r.result.errors + r.result.mismatches,
        )?;
    }
    Ok(())
}
