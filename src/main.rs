//! The `switchboard` command: the command line only; everything it does is in the library.
//!
//! Exit status: 0 done, 1 runtime failure (cannot bind, cannot connect, no reply), 2 bad usage
//! (a bad address or option, a model that does not serve that address, a store that cannot be
//! used as given).

use anyhow::Context;
use clap::{Parser, Subcommand};
use signal_hook::consts::{SIGINT, SIGTERM};
use std::io::{self, IsTerminal, Write};
use std::process::ExitCode;
use std::time::Duration;
use switchboard::client::{self, Client};
use switchboard::codec::Framing;
use switchboard::service::Builtin;
use switchboard::store::{StoreUrl, DEFAULT_STORE};
use switchboard::transport::SocketOptions;
use switchboard::{Addr, Model, ServeError, Server};

/// The plan's address.
const DEFAULT_ADDR: &str = "tcp://127.0.0.1:8079";

#[derive(Parser)]
#[command(
    name = "switchboard",
    version,
    about = "Serve any service under any concurrency model, and talk to it.",
    long_about = "Serve any service under any concurrency model over TCP and Unix sockets, and talk to it.\n\n\
    Addresses are tcp://HOST:PORT (IPv6 as tcp://[::1]:PORT; port 0 picks a free port) or unix:///PATH.\n\
    Log level: RUST_LOG (error, warn, info, debug). Exit status: 0 ok, 1 runtime failure, 2 bad usage."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve a service until SIGINT or SIGTERM, then drain and print a summary.
    #[command(
        after_help = "Examples:\n  switchboard serve\n  switchboard serve tcp://0.0.0.0:9000 --model iterative\n  switchboard serve unix:///tmp/sb.sock --frame line --service echo"
    )]
    Serve {
        /// Where to listen.
        #[arg(default_value = DEFAULT_ADDR, value_parser = parse_addr)]
        addr: Addr,
        /// How connections are served (see `switchboard models`).
        #[arg(long, value_enum, default_value_t = Model::default())]
        model: Model,
        /// What is served.
        #[arg(long, value_enum, default_value_t = Builtin::default())]
        service: Builtin,
        /// How messages are framed: raw (bytes as they come), line (\n-delimited), len (u32 big-endian length prefix).
        #[arg(long, value_enum, default_value_t = Framing::default())]
        frame: Framing,
        /// Largest frame accepted; a longer one closes its connection. Bytes, or with a unit: 64KiB, 16MiB.
        #[arg(long, default_value = "16MiB", value_parser = parse_size)]
        max_frame: usize,
        /// Length of the kernel's queue of connections waiting to be accepted.
        #[arg(long, default_value_t = 1024)]
        backlog: i32,
        /// Threads or processes for the models that run several: pool (default 4 per core, at least 8), epoll (default 1), async and prefork (default one per core).
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=4096))]
        workers: Option<u32>,
        /// The most child processes the fork model runs at once; past it, new connections wait in the backlog.
        #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..))]
        max_children: u32,
        /// Set SO_REUSEPORT, so several servers can share the port.
        #[arg(long)]
        reuse_port: bool,
        /// Seconds open connections may take to finish after SIGINT/SIGTERM (a second signal cuts them at once).
        #[arg(long, default_value_t = 5.0, value_parser = parse_secs)]
        drain: f64,
        /// Where to record what is served: sqlite://PATH (relative to the working directory) or mysql://USER:PASS@HOST:PORT/DB.
        #[arg(long, default_value = DEFAULT_STORE, value_parser = parse_store)]
        store: StoreUrl,
        /// Record nothing.
        #[arg(long, conflicts_with = "store")]
        no_store: bool,
        /// What to record: a row per connection (sessions), or every request and reply too (messages).
        #[arg(long, value_enum, default_value_t = RecordWhat::Sessions)]
        record: RecordWhat,
    },
    /// The plan's client: prompt `>>: `, send each line, print each reply. Reads lines from stdin when it is not a terminal.
    #[command(
        after_help = "Examples:\n  switchboard connect\n  printf 'hello\\nworld\\n' | switchboard connect tcp://127.0.0.1:8079"
    )]
    Connect {
        /// The server.
        #[arg(default_value = DEFAULT_ADDR, value_parser = parse_addr)]
        addr: Addr,
        #[command(flatten)]
        talk: TalkArgs,
    },
    /// Send one message, print its reply, exit.
    #[command(after_help = "Example:\n  switchboard send tcp://127.0.0.1:8079 hello world")]
    Send {
        /// The server.
        #[arg(value_parser = parse_addr)]
        addr: Addr,
        /// The message; several words are joined by spaces.
        #[arg(required = true)]
        message: Vec<String>,
        #[command(flatten)]
        talk: TalkArgs,
    },
    /// List the sessions a store recorded, newest first.
    #[command(
        after_help = "Examples:\n  switchboard sessions --last 20\n  switchboard sessions --peer unix:// --json"
    )]
    Sessions {
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
    },
    /// Totals per server instance in a store: sessions, bytes, messages, close reasons, and what its recorder wrote.
    Stats {
        #[command(flatten)]
        store: StoreArg,
        /// One JSON object per line instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// List the models `serve --model` accepts: IO class, unit of concurrency, transports, and whether each runs here.
    Models,
}

#[derive(clap::Args)]
struct StoreArg {
    /// The store to read.
    #[arg(long, default_value = DEFAULT_STORE, value_parser = parse_store)]
    store: StoreUrl,
}

impl StoreArg {
    /// Opens a store that exists: reading one must not create an empty one.
    fn open(&self) -> anyhow::Result<switchboard::store::Store> {
        if let StoreUrl::Sqlite(path) = &self.store {
            anyhow::ensure!(
                path.exists(),
                "no store at {}: `switchboard serve` records there (see --store)",
                self.store
            );
        }
        Ok(switchboard::store::open(&self.store)?)
    }
}

/// What `serve --record` keeps.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum RecordWhat {
    /// A row per connection.
    Sessions,
    /// A row per connection, and every request and reply.
    Messages,
}

fn parse_store(s: &str) -> Result<StoreUrl, String> {
    s.parse()
        .map_err(|e: switchboard::store::StoreError| e.to_string())
}

#[derive(clap::Args)]
struct TalkArgs {
    /// The server's framing.
    #[arg(long, value_enum, default_value_t = Framing::default())]
    frame: Framing,
    /// Seconds to wait for each reply.
    #[arg(long, default_value_t = 10.0, value_parser = parse_secs)]
    timeout: f64,
}

impl TalkArgs {
    fn connect(&self, addr: &Addr) -> Result<Client, switchboard::client::ClientError> {
        let mut client = Client::connect(addr, self.frame)?;
        client.set_timeout(Duration::from_secs_f64(self.timeout));
        Ok(client)
    }
}

fn parse_addr(s: &str) -> Result<Addr, String> {
    s.parse()
        .map_err(|e: switchboard::addr::AddrError| e.to_string())
}

fn parse_secs(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 => Ok(v),
        _ => Err(format!("`{s}` is not a number of seconds (e.g. 5 or 0.5)")),
    }
}

/// Bytes, optionally with a unit: B, K/KB/KiB, M/MB/MiB, G/GB/GiB (all powers of 1024).
fn parse_size(s: &str) -> Result<usize, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        _ => return Err(format!("`{s}`: unknown unit; use bytes or KiB, MiB, GiB")),
    };
    let n: usize = num
        .parse()
        .map_err(|_| format!("`{s}` is not a size (e.g. 65536, 64KiB, 16MiB)"))?;
    n.checked_mul(1 << shift)
        .filter(|&v| v > 0)
        .ok_or_else(|| format!("`{s}`: the size must be above 0 and fit in memory"))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let default_level = if matches!(cli.command, Command::Serve { .. }) {
        "info"
    } else {
        "warn"
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level)),
        )
        .with_writer(io::stderr)
        .with_ansi(io::stderr().is_terminal())
        .init();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            // Bad usage: a model that does not serve the address, or a store that cannot be used
            // as given (a bad URL, a database that refuses, a schema from a newer switchboard).
            let usage = matches!(
                e.downcast_ref::<ServeError>(),
                Some(ServeError::Unsupported { .. } | ServeError::Store(_))
            );
            ExitCode::from(if usage { 2 } else { 1 })
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve {
            addr,
            model,
            service,
            frame,
            max_frame,
            backlog,
            workers,
            max_children,
            reuse_port,
            drain,
            store,
            no_store,
            record,
        } => {
            // Handlers first: a signal that comes as soon as `listening on` is printed must
            // stop the server gracefully, not kill it.
            let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM])
                .context("cannot install signal handlers")?;
            let signals_handle = signals.handle();
            let service = service.service();
            let mut builder = Server::builder();
            if let Some(n) = workers {
                builder = builder.workers(n as usize);
            }
            let server = builder
                .addr(addr)
                .model(model)
                .service_arc(service.clone())
                .framing(frame)
                .max_frame(max_frame)
                .socket_options(SocketOptions {
                    backlog,
                    reuse_port,
                    ..SocketOptions::default()
                })
                .drain(Duration::from_secs_f64(drain))
                .max_children(max_children as usize)
                .store((!no_store).then_some(store))
                .record_messages(record == RecordWhat::Messages)
                .bind()?;
            let local = server.local_addr()?;
            println!("listening on {local}");
            io::stdout().flush()?;
            tracing::info!(addr = %local, %model, service = service.name(), frame = %frame, "serving");
            let stop = server.stop_handle();
            // Wait until the thread runs: a process model must not fork while a thread is
            // still starting (the child would inherit std's thread-start lock, held).
            let (started, settled) = std::sync::mpsc::sync_channel(1);
            std::thread::spawn(move || {
                let _ = started.send(());
                for signal in signals.forever() {
                    let name = if signal == SIGINT {
                        "SIGINT"
                    } else {
                        "SIGTERM"
                    };
                    if stop.is_stopping() {
                        tracing::info!("{name} again: closing open connections now");
                    } else {
                        tracing::info!("{name}: no longer accepting; draining open connections");
                    }
                    stop.stop();
                }
            });
            let _ = settled.recv();
            let summary = server.run()?;
            signals_handle.close();
            // A closed stdout must not turn a clean stop into a failure.
            let _ = writeln!(io::stdout(), "{summary}");
            Ok(())
        }
        Command::Connect { addr, talk } => {
            let mut client = talk.connect(&addr)?;
            if io::stdin().is_terminal() {
                client::interactive(&mut client)?;
            } else {
                client::pipe(&mut client, io::stdin().lock(), io::stdout().lock())?;
            }
            Ok(())
        }
        Command::Send {
            addr,
            message,
            talk,
        } => {
            let mut client = talk.connect(&addr)?;
            let reply = client.request(message.join(" ").as_bytes())?;
            let mut out = io::stdout().lock();
            out.write_all(&reply)?;
            out.write_all(b"\n")?;
            Ok(())
        }
        Command::Sessions {
            store,
            last,
            peer,
            json,
        } => {
            let mut db = store.open()?;
            let mut out = io::stdout().lock();
            let rows = db.sessions(last, peer.as_deref())?;
            if !json {
                writeln!(
                    out,
                    "{:<6} {:<28} {:<9} {:>10} {:>10} {:>8} {:>10}  REASON",
                    "ID", "PEER", "TRANSPORT", "BYTES IN", "BYTES OUT", "MSGS", "MS"
                )?;
            }
            for (instance, s) in rows {
                if json {
                    writeln!(
                        out,
                        "{{\"instance\":{},\"id\":{},\"peer\":{},\"transport\":{},\"opened_us\":{},\"closed_us\":{},\"bytes_in\":{},\"bytes_out\":{},\"msgs_in\":{},\"msgs_out\":{},\"reason\":{}}}",
                        json_str(&instance), s.id, json_str(&s.peer), json_str(&s.transport), s.opened, s.closed,
                        s.bytes_in, s.bytes_out, s.msgs_in, s.msgs_out, json_str(&s.reason)
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
        Command::Stats { store, json } => {
            let mut db = store.open()?;
            let mut out = io::stdout().lock();
            let opt = |v: Option<u64>| v.map_or("-".to_string(), |v| v.to_string());
            let all = db.stats()?;
            if !json && all.len() > 1 {
                // Instances sharing a store, added up.
                let sum = |f: fn(&switchboard::store::InstanceStats) -> u64| {
                    all.iter().map(f).sum::<u64>()
                };
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
            for s in all {
                let reasons: Vec<String> =
                    s.reasons.iter().map(|(r, n)| format!("{r}={n}")).collect();
                if json {
                    let reasons: Vec<String> = s
                        .reasons
                        .iter()
                        .map(|(r, n)| format!("{}:{n}", json_str(r)))
                        .collect();
                    let num = |v: Option<u64>| v.map_or("null".to_string(), |v| v.to_string());
                    writeln!(
                        out,
                        "{{\"instance\":{},\"model\":{},\"address\":{},\"sessions\":{},\"bytes_in\":{},\"bytes_out\":{},\"messages\":{},\"reasons\":{{{}}},\"written\":{},\"spooled\":{},\"waited\":{},\"dropped\":{}}}",
                        json_str(&s.instance), json_str(&s.model), json_str(&s.address), s.sessions, s.bytes_in, s.bytes_out,
                        s.messages, reasons.join(","), num(s.written), num(s.spooled), num(s.waited), num(s.dropped)
                    )?;
                } else {
                    writeln!(
                        out,
                        "{} ({} on {}): {} sessions, {} messages, {} bytes in, {} bytes out; {}; records written {} (spooled {}), waited {}, dropped {}",
                        s.instance, s.model, s.address, s.sessions, s.messages, s.bytes_in, s.bytes_out,
                        if reasons.is_empty() { "no sessions".to_string() } else { reasons.join(" ") },
                        opt(s.written), opt(s.spooled), opt(s.waited), opt(s.dropped)
                    )?;
                }
            }
            Ok(())
        }
        Command::Models => {
            let mut out = io::stdout().lock();
            writeln!(
                out,
                "{:<12} {:<13} {:<21} {:<22} HERE",
                "MODEL", "IO", "CONCURRENCY", "TRANSPORTS"
            )?;
            for &model in Model::ALL {
                let here = match model.available() {
                    Ok(()) => "yes".to_string(),
                    Err(why) => format!("no: {why}"),
                };
                let default = if model == Model::default() {
                    " (default)"
                } else {
                    ""
                };
                writeln!(
                    out,
                    "{:<12} {:<13} {:<21} {:<22} {here}\n             {}{default}",
                    model.name(),
                    model.io_class(),
                    model.unit(),
                    model.transports(),
                    model.summary()
                )?;
            }
            Ok(())
        }
    }
}

/// A JSON string literal.
fn json_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_take_units() {
        assert_eq!(parse_size("65536"), Ok(65536));
        assert_eq!(parse_size("64KiB"), Ok(64 << 10));
        assert_eq!(parse_size("16M"), Ok(16 << 20));
        assert!(parse_size("0").is_err());
        assert!(parse_size("12 parsecs").unwrap_err().contains("unit"));
        assert!(parse_size("lots").is_err());
    }

    #[test]
    fn the_command_line_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
