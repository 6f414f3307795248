//! `switchboard connect`: the plan's interactive `>>: ` client, or a pipe of requests.

use super::{parse_addr, TalkArgs, DEFAULT_ADDR};
use std::io::{self, IsTerminal};
use switchboard::client;
use switchboard::Addr;

/// The plan's client: prompt `>>: `, send each line, print each reply. Reads lines from stdin when it is not a terminal.
#[derive(clap::Args)]
#[command(
    after_help = "Examples:\n  switchboard connect\n  printf 'hello\\nworld\\n' | switchboard connect tcp://127.0.0.1:8079"
)]
pub struct Args {
    /// The server.
    #[arg(default_value = DEFAULT_ADDR, value_parser = parse_addr)]
    addr: Addr,
    #[command(flatten)]
    talk: TalkArgs,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let mut client = args.talk.connect(&args.addr)?;
    if io::stdin().is_terminal() {
        client::interactive(&mut client)?;
    } else {
        client::pipe(&mut client, io::stdin().lock(), io::stdout().lock())?;
    }
    Ok(())
}
