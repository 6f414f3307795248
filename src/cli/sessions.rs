//! `switchboard sessions`: the connections a store recorded, newest first.

use super::{print_json, StoreArg};
use std::io::{self, Write};

/// List the sessions a store recorded, newest first.
#[derive(clap::Args)]
#[command(
    after_help = "Examples:\n  switchboard sessions --last 20\n  switchboard sessions --peer tcp://127.0.0.1:50312 --json"
)]
pub struct Args {
    #[command(flatten)]
    store: StoreArg,
    /// How many, at most.
    #[arg(long, default_value_t = 50)]
    last: usize,
    /// Only this peer address (as the log shows it, e.g. tcp://127.0.0.1:50312).
    #[arg(long)]
    peer: Option<String>,
    /// One JSON object per line instead of a table.
    #[arg(long)]
    json: bool,
}

/// A session as `--json` prints it.
#[derive(serde::Serialize)]
struct SessionJson<'a> {
    instance: &'a str,
    id: u64,
    peer: &'a str,
    transport: &'a str,
    opened_us: i64,
    closed_us: i64,
    bytes_in: u64,
    bytes_out: u64,
    msgs_in: u64,
    msgs_out: u64,
    reason: &'a str,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let mut db = args.store.open()?;
    let mut out = io::stdout().lock();
    let rows = db.sessions(args.last, args.peer.as_deref())?;
    super::say_if_incomplete(&mut db)?;
    if !args.json {
        writeln!(
            out,
            "{:<6} {:<28} {:<9} {:>10} {:>10} {:>8} {:>10}  REASON",
            "ID", "PEER", "TRANSPORT", "BYTES IN", "BYTES OUT", "MSGS", "MS"
        )?;
    }
    for (instance, s) in &rows {
        if args.json {
            print_json(
                &mut out,
                &SessionJson {
                    instance,
                    id: s.id,
                    peer: &s.peer,
                    transport: &s.transport,
                    opened_us: s.opened,
                    closed_us: s.closed,
                    bytes_in: s.bytes_in,
                    bytes_out: s.bytes_out,
                    msgs_in: s.msgs_in,
                    msgs_out: s.msgs_out,
                    reason: &s.reason,
                },
            )?;
        } else {
            let ms = (s.closed - s.opened) as f64 / 1000.0;
            writeln!(
                out,
                "{:<6} {:<28} {:<9} {:>10} {:>10} {:>8} {:>10.1}  {}",
                s.id, s.peer, s.transport, s.bytes_in, s.bytes_out, s.msgs_in, ms, s.reason
            )?;
        }
    }
    Ok(())
}
