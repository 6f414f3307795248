//! `switchboard messages`: the requests and replies a store recorded (`serve --record
//! messages`), read back in order.

use super::{print_json, StoreArg};
use base64::Engine;
use std::io::{self, Write};
use switchboard::store::MessageFilter;

/// List recorded requests and replies (`serve --record messages`), oldest first.
#[derive(clap::Args)]
#[command(
    long_about = "List the requests and replies a store recorded (`serve --record messages`), oldest first, with their session, sequence number and time.\n\n\
    Printable text is shown as it is; anything else is escaped (\\n, \\t, \\\\, \\xNN for bytes that are not UTF-8, \\u{..} for other control characters), so no raw control byte reaches the terminal. \
    --json gives each message's bytes in base64 (standard alphabet, padded), with the text beside them when it is valid UTF-8.",
    after_help = "Examples:\n  switchboard messages --last 20\n  switchboard messages --session 42 --instance myhost:1234:5f1c2a\n  switchboard messages --peer tcp://127.0.0.1:50312 --json"
)]
pub struct Args {
    #[command(flatten)]
    store: StoreArg,
    /// Only this connection's messages (its id, as `sessions` shows it).
    #[arg(long)]
    session: Option<u64>,
    /// Only this server instance's messages (as `stats` shows it).
    #[arg(long)]
    instance: Option<String>,
    /// Only this peer's messages (as the log shows it, e.g. tcp://127.0.0.1:50312).
    #[arg(long)]
    peer: Option<String>,
    /// The newest this many, at most.
    #[arg(long, default_value_t = 50)]
    last: usize,
    /// One JSON object per line instead of a table.
    #[arg(long)]
    json: bool,
}

/// A message as `--json` prints it.
#[derive(serde::Serialize)]
struct MessageJson<'a> {
    instance: &'a str,
    session: u64,
    seq: u64,
    at_us: i64,
    peer: Option<&'a str>,
    /// Base64.
    request: String,
    /// Base64.
    reply: String,
    request_text: Option<&'a str>,
    reply_text: Option<&'a str>,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let mut db = args.store.open()?;
    super::say_if_incomplete(&mut db)?;
    let rows = db.recorded_messages(&MessageFilter {
        instance: args.instance.clone(),
        session: args.session,
        peer: args.peer.clone(),
        last: args.last,
    })?;
    if rows.is_empty() {
        eprintln!("note: no messages recorded here{}: a server records them with `switchboard serve --record messages` (by default it records only a row per connection)",
            if args.instance.is_some() || args.session.is_some() || args.peer.is_some() { " that match" } else { "" });
    }
    let mut out = io::stdout().lock();
    if args.json {
        let b64 = base64::engine::general_purpose::STANDARD;
        for r in &rows {
            let m = &r.message;
            print_json(
                &mut out,
                &MessageJson {
                    instance: &r.instance,
                    session: m.session,
                    seq: m.seq,
                    at_us: m.at,
                    peer: r.peer.as_deref(),
                    request: b64.encode(&m.request),
                    reply: b64.encode(&m.reply),
                    request_text: std::str::from_utf8(&m.request).ok(),
                    reply_text: std::str::from_utf8(&m.reply).ok(),
                },
            )?;
        }
        return Ok(());
    }
    writeln!(
        out,
        "{:<7} {:>5}  {:<27} {:<24} REQUEST -> REPLY",
        "SESSION", "SEQ", "AT (UTC)", "PEER"
    )?;
    for r in &rows {
        let m = &r.message;
        let at = humantime::format_rfc3339_micros(
            std::time::UNIX_EPOCH + std::time::Duration::from_micros(m.at.max(0) as u64),
        );
        writeln!(
            out,
            "{:<7} {:>5}  {:<27} {:<24} {} -> {}",
            m.session,
            m.seq,
            at.to_string(),
            r.peer.as_deref().unwrap_or("(open)"),
            shown(&m.request),
            shown(&m.reply)
        )?;
    }
    Ok(())
}

/// Bytes as a terminal may show them: printable text as it is, everything else escaped.
fn shown(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                '\t' => out.push_str("\\t"),
                '\\' => out.push_str("\\\\"),
                c if c.is_control() => out.push_str(&c.escape_unicode().to_string()),
                c => out.push(c),
            }
        }
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_shown_and_the_rest_escaped() {
        assert_eq!(shown(b"hello world"), "hello world");
        assert_eq!(shown("héllo 世界".as_bytes()), "héllo 世界");
        assert_eq!(shown(b"a\nb\tc\\"), "a\\nb\\tc\\\\");
        assert_eq!(shown(b"\x1b[31mred"), "\\u{1b}[31mred");
        assert_eq!(shown(b"\xff\x00ok"), "\\xff\\u{0}ok");
    }
}
