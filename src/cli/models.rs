//! `switchboard models`: the models `serve --model` accepts, and whether each runs here.

use std::io::{self, Write};
use switchboard::Model;

/// List the models `serve --model` accepts: IO class, unit of concurrency, transports, and whether each runs here.
#[derive(clap::Args)]
pub struct Args {}

pub fn run(_args: Args) -> anyhow::Result<()> {
    let mut out = io::stdout().lock();
    writeln!(
        out,
        "{:<12} {:<14} {:<21} {:<22} HERE",
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
            "{:<12} {:<14} {:<21} {:<22} {here}\n             {}{default}",
            model.name(),
            model.io_class(),
            model.unit(),
            model.transports(),
            model.summary()
        )?;
    }
    Ok(())
}
