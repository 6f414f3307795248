//! The command line: one file per command, each declaring its arguments and calling into the
//! library; what they share (argument parsers, the store and client options, JSON output) is
//! here.

pub mod bench;
pub mod connect;
pub mod lab;
pub mod lesson;
pub mod messages;
pub mod models;
pub mod runs;
pub mod send;
pub mod serve;
pub mod sessions;
pub mod stats;
pub mod trace;

use std::io::{self, Write};
use std::time::Duration;
use switchboard::client::{Client, ClientError};
use switchboard::codec::Framing;
use switchboard::store::{Store, StoreUrl, DEFAULT_STORE};
use switchboard::Addr;

/// The plan's address.
pub const DEFAULT_ADDR: &str = "tcp://127.0.0.1:8079";

/// A run that went through but failed what it measured (a bench with errors): exit status 1
/// after its report, with this line on stderr.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Failed(pub String);

/// Bad usage found after parsing (exit status 2).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Usage(pub String);

/// `--store` for the commands that read one.
#[derive(clap::Args)]
pub struct StoreArg {
    /// The store to read: sqlite://PATH or mysql://USER:PASS@HOST:PORT/DB.
    #[arg(long, default_value = DEFAULT_STORE, value_parser = parse_store)]
    pub store: StoreUrl,
}

impl StoreArg {
    /// Opens a store that exists: reading one must not create an empty one.
    pub fn open(&self) -> anyhow::Result<Store> {
        if let StoreUrl::Sqlite(path) = &self.store {
            anyhow::ensure!(
                path.exists(),
                "no store at {}: `switchboard serve` and `switchboard bench` record there (see --store)",
                self.store
            );
        }
        Ok(switchboard::store::open_to_read(&self.store)?)
    }
}

/// `--store` and `--no-store` for the commands that record.
#[derive(clap::Args)]
pub struct RecordArgs {
    /// Where to record: sqlite://PATH (relative to the working directory) or mysql://USER:PASS@HOST:PORT/DB.
    #[arg(long, default_value = DEFAULT_STORE, value_parser = parse_store)]
    pub store: StoreUrl,
    /// Record nothing.
    #[arg(long, conflicts_with = "store")]
    pub no_store: bool,
}

impl RecordArgs {
    /// The store to record into, if any.
    pub fn url(&self) -> Option<StoreUrl> {
        (!self.no_store).then(|| self.store.clone())
    }
}

/// Says on stderr when what a store shows is incomplete: its servers dropped records.
pub fn say_if_incomplete(db: &mut switchboard::store::Store) -> anyhow::Result<()> {
    let dropped = db.dropped()?;
    if dropped > 0 {
        eprintln!("note: this store is incomplete: its servers dropped {dropped} records they could not write (see `switchboard stats`, column dropped)");
    }
    Ok(())
}

/// How a client trusts a `tls://` server.
#[derive(clap::Args)]
pub struct TrustArgs {
    /// tls://: trust the CA certificate(s) in this PEM file (the server's own, if self-signed).
    #[arg(long, value_name = "PEM")]
    pub ca: Option<std::path::PathBuf>,
    /// tls://: accept any certificate. The connection is encrypted, but to whom is not checked: for a test server only.
    #[arg(long, conflicts_with = "ca")]
    pub insecure: bool,
}

impl TrustArgs {
    /// The client's TLS configuration, for a `tls://` address (said loudly when insecure).
    pub fn config(
        &self,
        addr: &Addr,
    ) -> Result<Option<std::sync::Arc<rustls::ClientConfig>>, switchboard::tls::TlsError> {
        if !matches!(addr, Addr::Tls { .. }) {
            return Ok(None);
        }
        if self.insecure {
            eprintln!("warning: --insecure: the server's certificate is not checked; anyone on the path can pose as {addr}");
        }
        switchboard::tls::client_config(self.ca.as_deref(), self.insecure).map(Some)
    }
}

/// How `connect` and `send` talk to a server.
#[derive(clap::Args)]
pub struct TalkArgs {
    /// The server's framing.
    #[arg(long, value_enum, default_value_t = Framing::default())]
    pub frame: Framing,
    /// How long to wait for each reply: seconds, or with a unit (500ms, 10s, 1m).
    #[arg(long, default_value = "10", value_parser = parse_duration)]
    pub timeout: Duration,
    #[command(flatten)]
    pub trust: TrustArgs,
}

impl TalkArgs {
    pub fn connect(&self, addr: &Addr) -> Result<Client, ClientError> {
        let mut client = Client::connect_tls(addr, self.frame, self.trust.config(addr)?)?;
        client.set_timeout(self.timeout);
        Ok(client)
    }
}

pub fn parse_addr(s: &str) -> Result<Addr, String> {
    s.parse()
        .map_err(|e: switchboard::addr::AddrError| e.to_string())
}

pub fn parse_store(s: &str) -> Result<StoreUrl, String> {
    s.parse()
        .map_err(|e: switchboard::store::StoreError| e.to_string())
}

/// A duration: a bare number is seconds (`5`, `0.5`); otherwise a number and a unit, as in
/// `500ms`, `4s`, `2m`, `1h 30m`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    if let Ok(secs) = s.trim().parse::<f64>() {
        return Duration::try_from_secs_f64(secs).map_err(|_| {
            format!("`{s}` is not a duration: give seconds (5, 0.5) or a unit (500ms, 4s, 2m)")
        });
    }
    humantime::parse_duration(s.trim()).map_err(|e| {
        format!("`{s}` is not a duration ({e}): give seconds (5, 0.5) or a unit (500ms, 4s, 2m)")
    })
}

/// A size in bytes: a bare number, or with a unit, K/KiB, M/MiB, G/GiB (all powers of 1024).
pub fn parse_size(s: &str) -> Result<usize, String> {
    let bytes = parse_size::Config::new()
        .with_binary()
        .parse_size(s.trim())
        .map_err(|e| {
            format!("`{s}` is not a size ({e}): give bytes (65536) or a unit (64KiB, 16MiB)")
        })?;
    usize::try_from(bytes)
        .ok()
        .filter(|&b| b > 0)
        .ok_or_else(|| format!("`{s}`: the size must be above 0 and fit in memory"))
}

/// Prints one JSON value on a line of its own.
pub fn print_json(out: &mut impl Write, value: &impl serde::Serialize) -> io::Result<()> {
    serde_json::to_writer(&mut *out, value)?;
    out.write_all(b"\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_take_units() {
        assert_eq!(parse_size("65536"), Ok(65536));
        assert_eq!(parse_size("64KiB"), Ok(64 << 10));
        assert_eq!(parse_size("16M"), Ok(16 << 20));
        assert_eq!(parse_size("16MiB"), Ok(16 << 20));
        assert!(parse_size("0").is_err());
        assert!(parse_size("12 parsecs").is_err());
        assert!(parse_size("lots").unwrap_err().contains("64KiB"));
    }

    #[test]
    fn durations_take_seconds_or_units() {
        assert_eq!(parse_duration("5"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("0.5"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("-1").is_err());
        assert!(parse_duration("soon").unwrap_err().contains("500ms"));
    }
}
