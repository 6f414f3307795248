//! `switchboard send`: one request, its reply printed.

use super::{parse_addr, TalkArgs};
use std::io::{self, Write};
use switchboard::Addr;

/// Send one message, print its reply, exit.
#[derive(clap::Args)]
#[command(after_help = "Example:\n  switchboard send tcp://127.0.0.1:8079 hello world")]
pub struct Args {
    /// The server.
    #[arg(value_parser = parse_addr)]
    addr: Addr,
    /// The message; several words are joined by spaces.
    #[arg(required = true)]
    message: Vec<String>,
    #[command(flatten)]
    talk: TalkArgs,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let mut client = args.talk.connect(&args.addr)?;
    let reply = client.request(args.message.join(" ").as_bytes())?;
    let mut out = io::stdout().lock();
    out.write_all(&reply)?;
    out.write_all(b"\n")?;
    Ok(())
}
