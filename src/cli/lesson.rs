//! `switchboard lesson`: the plan's lessons, listed, or one run on this machine.

use super::{parse_store, print_json, Usage};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use switchboard::lesson::{self, LESSONS};
use switchboard::store::StoreUrl;

/// The plan's lessons, each an experiment run on this machine: without NAME, the list.
#[derive(clap::Args)]
#[command(
    after_help = "Examples:\n  switchboard lesson\n  switchboard lesson glue\n  switchboard lesson sendall --json"
)]
pub struct Args {
    /// The lesson to run (`switchboard lesson` lists them).
    name: Option<String>,
    /// Print what it measured as JSON instead.
    #[arg(long)]
    json: bool,
    /// For the data lesson: the store to record into (default: an SQLite file of its own).
    #[arg(long, value_parser = parse_store)]
    store: Option<StoreUrl>,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let Some(name) = args.name else {
        for (i, l) in LESSONS.iter().enumerate() {
            println!("{:>2}. {:<14} {}", i + 1, l.name, l.title);
            println!("    {:<14} {}", "", l.summary);
        }
        println!("\nRun one: switchboard lesson NAME");
        return Ok(());
    };
    let Some(lesson) = lesson::find(&name) else {
        let names: Vec<&str> = LESSONS.iter().map(|l| l.name).collect();
        return Err(Usage(format!(
            "no lesson named {name:?}: the lessons are {}",
            names.join(", ")
        ))
        .into());
    };
    // Ctrl-C ends the lesson between its steps, and what it started is cleaned up.
    let interrupted = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGINT, interrupted.clone())?;
    signal_hook::flag::register(signal_hook::consts::SIGTERM, interrupted.clone())?;
    let exe = std::env::current_exe()?;
    if !args.json {
        println!("{}: {}\n", lesson.name, lesson.title);
    }
    let json = args.json;
    let mut say = |line: &str| {
        if !json {
            println!("{line}");
        }
    };
    let record = lesson::run(lesson, &exe, args.store, interrupted, &mut say)?;
    if json {
        return Ok(print_json(&mut std::io::stdout().lock(), &record)?);
    }
    println!("\nWhat it shows: {}", record.shows);
    println!("Done right in: {}", record.code.join("; "));
    Ok(())
}
