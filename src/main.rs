//! The `switchboard` command: parses the command line and dispatches to one file per command
//! in `cli/`; everything they do is in the library.
//!
//! Exit status: 0 done, 1 runtime failure (cannot bind, cannot connect, no reply, a bench
//! with errors), 2 bad usage (a bad address or option, a model that does not serve that
//! address, a store that cannot be used as given).

mod cli;

use clap::{Parser, Subcommand};
use std::io::{self, IsTerminal};
use std::process::ExitCode;
use switchboard::bench::BenchError;
use switchboard::store::StoreError;
use switchboard::ServeError;

#[derive(Parser)]
#[command(
    name = "switchboard",
    version,
    about = "Serve any service under any concurrency model, talk to it, and measure it.",
    long_about = "Serve any service under any concurrency model over TCP, UDP and Unix sockets; talk to it; load it and compare the models.\n\n\
    Addresses are tcp://HOST:PORT (IPv6 as tcp://[::1]:PORT; port 0 picks a free port), udp://HOST:PORT, unix:///PATH or unixgram:///PATH.\n\
    Log level: RUST_LOG (error, warn, info, debug). Exit status: 0 ok, 1 runtime failure, 2 bad usage."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve a service until SIGINT or SIGTERM, then drain and print a summary.
    Serve(cli::serve::Args),
    /// The plan's client: prompt `>>: `, send each line, print each reply. Reads lines from stdin when it is not a terminal.
    Connect(cli::connect::Args),
    /// Send one message, print its reply, exit.
    Send(cli::send::Args),
    /// Load a server with many connections, check every reply, report throughput and latency.
    Bench(cli::bench::Args),
    /// Run every model side by side under the same loads; write tables, plots and a page.
    Lab(cli::lab::Args),
    /// List the load-generator runs a store recorded, newest first.
    Runs(cli::runs::Args),
    /// List the sessions a store recorded, newest first.
    Sessions(cli::sessions::Args),
    /// List recorded requests and replies (`serve --record messages`), oldest first.
    Messages(cli::messages::Args),
    /// Totals per server instance in a store: sessions, bytes, messages, close reasons, and what its recorder wrote.
    Stats(cli::stats::Args),
    /// The plan's lessons, each an experiment run on this machine; without NAME, the list.
    Lesson(cli::lesson::Args),
    /// Capture the packets of one exchange and unwrap each layer: link, network, transport, application. Needs CAP_NET_RAW.
    Trace(cli::trace::Args),
    /// List the models `serve --model` accepts: IO class, unit of concurrency, transports, and whether each runs here.
    Models(cli::models::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let default_level = if matches!(cli.command, Command::Serve(_)) {
        "info"
    } else {
        "warn"
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level)),
        )
        // Not io::stderr: a forked child must not wait on a lock its parent's threads held.
        .with_writer(|| switchboard::RawStderr)
        .with_ansi(io::stderr().is_terminal())
        .init();
    let result = match cli.command {
        Command::Serve(args) => cli::serve::run(args),
        Command::Connect(args) => cli::connect::run(args),
        Command::Send(args) => cli::send::run(args),
        Command::Bench(args) => cli::bench::run(args),
        Command::Lab(args) => cli::lab::run(args),
        Command::Runs(args) => cli::runs::run(args),
        Command::Sessions(args) => cli::sessions::run(args),
        Command::Messages(args) => cli::messages::run(args),
        Command::Stats(args) => cli::stats::run(args),
        Command::Models(args) => cli::models::run(args),
        Command::Trace(args) => cli::trace::run(args),
        Command::Lesson(args) => cli::lesson::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // Whoever read the output stopped reading (`switchboard models | head`): done, quietly,
        // as `ls | head` is. A socket's broken pipe is a client error, never a bare io::Error.
        Err(e)
            if e.downcast_ref::<io::Error>()
                .is_some_and(|e| e.kind() == io::ErrorKind::BrokenPipe) =>
        {
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {}", message(&e));
            ExitCode::from(if is_usage(&e) { 2 } else { 1 })
        }
    }
}

/// The error and its causes, each said once. An error whose message already quotes its cause
/// (`store X: <what the driver said>`), or says it in its own words (a MySQL driver's error,
/// which the store describes), does not get the cause repeated after it, nor what lies under
/// that cause (the driver's own internals, which its message chose how to say).
fn message(e: &anyhow::Error) -> String {
    let mut message = e.to_string();
    for cause in e.chain().skip(1) {
        if cause.downcast_ref::<mysql::Error>().is_some() {
            break;
        }
        let cause = cause.to_string();
        if message.contains(&cause) {
            break;
        }
        message.push_str(": ");
        message.push_str(&cause);
    }
    message
}

/// Bad usage: a model that does not serve the address, a store that cannot be used as given
/// (a bad URL, a database that refuses, a schema from a newer switchboard), a load that
/// cannot run.
fn is_usage(e: &anyhow::Error) -> bool {
    matches!(
        e.downcast_ref::<ServeError>(),
        Some(ServeError::Unsupported { .. } | ServeError::Store(_) | ServeError::Invalid(_))
    ) || e.is::<StoreError>()
        || matches!(e.downcast_ref::<BenchError>(), Some(BenchError::Invalid(_)))
        || e.is::<cli::Usage>()
        || matches!(
            e.downcast_ref::<switchboard::lesson::LessonError>(),
            Some(switchboard::lesson::LessonError::Needs(_))
        )
        || e.is::<switchboard::tls::TlsError>()
        || matches!(
            e.downcast_ref::<switchboard::trace::TraceError>(),
            Some(switchboard::trace::TraceError::Capture(
                switchboard::trace::CaptureError::NotPermitted { .. }
            ))
        )
        || matches!(
            e.downcast_ref::<switchboard::client::ClientError>(),
            Some(switchboard::client::ClientError::TlsConfig(_))
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_cause_is_said_once() {
        let io = std::io::Error::other("disk on fire");
        let quoted = anyhow::Error::new(switchboard::client::ClientError::Io(io));
        assert_eq!(message(&quoted), "connection failed: disk on fire");
        let wrapped = anyhow::Error::new(std::io::Error::other("refused")).context("cannot start");
        assert_eq!(message(&wrapped), "cannot start: refused");
        let twice = anyhow::Error::new(std::io::Error::other("deep"))
            .context("middle: deep")
            .context("top");
        assert_eq!(message(&twice), "top: middle: deep");
    }

    #[test]
    fn the_command_line_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
