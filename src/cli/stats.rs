//! `switchboard stats`: totals per server instance in a store, and all of them added up.

use super::{print_json, StoreArg};
use std::collections::BTreeMap;
use std::io::{self, Write};
use switchboard::store::InstanceStats;

/// Totals per server instance in a store: sessions, bytes, messages, close reasons, and what its recorder wrote.
#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    store: StoreArg,
    /// One JSON object per line instead of a table.
    #[arg(long)]
    json: bool,
}

/// An instance as `--json` prints it.
#[derive(serde::Serialize)]
struct StatsJson<'a> {
    instance: &'a str,
    model: &'a str,
    address: &'a str,
    sessions: u64,
    bytes_in: u64,
    bytes_out: u64,
    messages: u64,
    reasons: BTreeMap<&'a str, u64>,
    written: Option<u64>,
    spooled: Option<u64>,
    waited: Option<u64>,
    dropped: Option<u64>,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let mut db = args.store.open()?;
    let mut out = io::stdout().lock();
    let all = db.stats()?;
    super::say_if_incomplete(&mut db)?;
    if args.json {
        for s in &all {
            print_json(
                &mut out,
                &StatsJson {
                    instance: &s.instance,
                    model: &s.model,
                    address: &s.address,
                    sessions: s.sessions,
                    bytes_in: s.bytes_in,
                    bytes_out: s.bytes_out,
                    messages: s.messages,
                    reasons: s.reasons.iter().map(|(r, n)| (r.as_str(), *n)).collect(),
                    written: s.written,
                    spooled: s.spooled,
                    waited: s.waited,
                    dropped: s.dropped,
                },
            )?;
        }
        return Ok(());
    }
    if all.len() > 1 {
        // Instances sharing a store, added up.
        let sum = |f: fn(&InstanceStats) -> u64| all.iter().map(f).sum::<u64>();
        writeln!(
            out,
            "all {} instances: {} sessions, {} messages, {} bytes in, {} bytes out",
            all.len(),
            sum(|s| s.sessions),
            sum(|s| s.messages),
            sum(|s| s.bytes_in),
            sum(|s| s.bytes_out)
        )?;
    }
    let opt = |v: Option<u64>| v.map_or("-".to_string(), |v| v.to_string());
    for s in &all {
        let reasons: Vec<String> = s.reasons.iter().map(|(r, n)| format!("{r}={n}")).collect();
        writeln!(
            out,
            "{} ({} on {}): {} sessions, {} messages, {} bytes in, {} bytes out; {}; records written {} (spooled {}), waited {}, dropped {}",
            s.instance, s.model, s.address, s.sessions, s.messages, s.bytes_in, s.bytes_out,
            if reasons.is_empty() { "no sessions".to_string() } else { reasons.join(" ") },
            opt(s.written), opt(s.spooled), opt(s.waited), opt(s.dropped)
        )?;
    }
    Ok(())
}
