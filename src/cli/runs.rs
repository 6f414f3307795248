//! `switchboard runs`: the load-generator runs a store recorded, newest first.

use super::{print_json, Failed, StoreArg};
use std::io::{self, BufRead, Write};
use std::path::PathBuf;
use switchboard::bench::thousands;

/// List the runs `bench` and `lab` recorded, newest first; or merge runs made at once.
#[derive(clap::Args)]
#[command(
    args_conflicts_with_subcommands = true,
    after_help = "Examples:\n  switchboard runs --last 10\n  switchboard runs --lab lab-20261128-143000 --json\n  switchboard runs merge a.json b.json c.json"
)]
pub struct Args {
    #[command(subcommand)]
    action: Option<Action>,
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

#[derive(clap::Subcommand)]
enum Action {
    /// Merge the `bench --json` reports of runs made at the same time (one load generator per machine, say) into one report: throughput and counts summed, percentiles from the runs' histograms merged (never averaged), errors by kind.
    #[command(
        after_help = "Examples:\n  switchboard runs merge a.json b.json\n  cat runs/*.json | switchboard runs merge - --json"
    )]
    Merge(MergeArgs),
}

#[derive(clap::Args)]
struct MergeArgs {
    /// `bench --json` reports, one per file; `-` reads them from standard input, one per line.
    #[arg(required = true, value_name = "FILE")]
    files: Vec<PathBuf>,
    /// Print the merged report as one JSON object, as `bench --json` does.
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    if let Some(Action::Merge(merge)) = args.action {
        return run_merge(merge);
    }
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

/// `runs merge`: the reports read, merged, printed as `bench` prints one run. Exit status 1,
/// as `bench`'s, when the merged runs had failures, wrong replies or unserved connections.
fn run_merge(args: MergeArgs) -> anyhow::Result<()> {
    let mut runs = Vec::new();
    for file in &args.files {
        if file.as_os_str() == "-" {
            for (i, line) in io::stdin().lock().lines().enumerate() {
                let line = line?;
                if !line.trim().is_empty() {
                    runs.push((format!("standard input, line {}", i + 1), line));
                }
            }
        } else {
            let text = std::fs::read_to_string(file).map_err(|e| {
                anyhow::Error::new(super::Usage(format!("cannot read {}: {e}", file.display())))
            })?;
            runs.push((file.display().to_string(), text));
        }
    }
    let report = switchboard::bench::merge(&runs)
        .map_err(|e| anyhow::Error::new(super::Usage(e.to_string())))?;
    let mut out = io::stdout().lock();
    if args.json {
        print_json(&mut out, &report)?;
    } else {
        writeln!(out, "merged {} runs", runs.len())?;
        write!(out, "{}", super::bench::summary(&report))?;
    }
    if !report.clean() || report.unserved_conns > 0 {
        return Err(Failed(format!(
            "the runs had {} failed connections, {} wrong replies and {} connections never answered",
            report.result.errors, report.result.mismatches, report.unserved_conns
        ))
        .into());
    }
    Ok(())
}
