//! `switchboard lab`: every model side by side under the same loads, written up as tables,
//! plots and one page.

use super::{parse_duration, parse_size, RecordArgs};
use indicatif::{ProgressBar, ProgressStyle};
use std::io::{self, IsTerminal, Write};
use std::path::PathBuf;
use std::time::Duration;
use switchboard::bench::thousands;
use switchboard::lab::{self, LabConfig, LabObserver, LabServer, Measurement};
use switchboard::store::{Store, StoreUrl};
use switchboard::Model;

/// Run every model side by side under the same loads; write tables, plots and a page.
#[derive(clap::Args)]
#[command(
    long_about = "Run every model side by side under the same loads, and write the results as tables, plots and one page.\n\n\
    A matrix of --models x --conns x --sizes x --depth; each cell is measured --rounds times, the servers interleaved round by round, and the medians are kept. \
    Each server is a fresh `switchboard serve` child on a free loopback port (or a --reference command), loaded by the same load generator as `switchboard bench`; \
    its CPU time per reply and memory per connection are read from /proc. With --pin (the default where there are 2 cores or more) the servers and the load generator run on disjoint cores.\n\n\
    Writes results.json, results.md, plots (SVG and PNG) and index.html into --out.",
    after_help = "Examples:\n  switchboard lab\n  switchboard lab --models epoll,uring,async --conns 10,100,1000 --rounds 5\n  switchboard lab --models epoll --reference 'c-epoll=/opt/c-epoll {port}' --sizes 64,4KiB\n  switchboard lab --ablation --conns 100,1000"
)]
pub struct Args {
    /// The models, comma-separated (default: every model that runs here).
    #[arg(long, value_enum, value_delimiter = ',')]
    models: Vec<Model>,
    /// Connection counts, comma-separated.
    #[arg(long, default_value = "1,10,100,1000", value_delimiter = ',', value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    conns: Vec<u64>,
    /// Request sizes, comma-separated (units allowed: 4KiB).
    #[arg(long, default_value = "64", value_delimiter = ',', value_parser = parse_size)]
    sizes: Vec<usize>,
    /// Requests in flight per connection, comma-separated.
    #[arg(long, default_value = "1", value_delimiter = ',', value_parser = clap::value_parser!(u64).range(1..=65536))]
    depth: Vec<u64>,
    /// Measurements per cell (the median is kept).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=100))]
    rounds: u64,
    /// Each measurement's window: seconds or with a unit (500ms, 3s).
    #[arg(long, default_value = "3s", value_parser = parse_duration)]
    duration: Duration,
    /// Each measurement's warm-up.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    warmup: Duration,
    /// Open loop: this many requests per second in all, spread over each cell's connections (default: closed loop). A low rate over many connections measures mostly idle ones: --conns 1000,10000 --rate 1000.
    #[arg(long)]
    rate: Option<f64>,
    /// Another server to measure: 'NAME=COMMAND {port}' ({port} is replaced by a free loopback port). Repeatable.
    #[arg(long = "reference", value_parser = LabServer::reference)]
    references: Vec<LabServer>,
    /// Measure every model over TLS too (as MODEL+tls, beside it), with this certificate chain (PEM).
    #[arg(long, value_name = "PEM", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM).
    #[arg(long, value_name = "PEM", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Measure uring feature by feature: beside uring, uring with each of its io_uring features turned the other way in turn (serve --uring NAME=off, or =on for sqpoll and send-zc, which are off by default), and a table of their throughput and CPU per reply as ratios to uring's. Without --models, uring alone (and no Python) with them.
    #[arg(long)]
    ablation: bool,
    /// Leave out the plan's own stack (Python's socketserver.ThreadingTCPServer), run by default where python3 is installed.
    #[arg(long)]
    no_python: bool,
    /// Run the servers and the load generator on disjoint cores (default where there are 2 cores or more).
    #[arg(long, overrides_with = "no_pin")]
    pin: bool,
    /// Let the servers and the load generator share every core.
    #[arg(long, overrides_with = "pin")]
    no_pin: bool,
    /// Where to write the results (default: lab-YYYYMMDD-HHMMSS in the working directory).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Write only the page (its plots inline) and the tables: no SVG and PNG file per plot.
    #[arg(long)]
    no_images: bool,
    /// A store the servers record into while measured (default: they record nothing).
    #[arg(long, value_parser = super::parse_store)]
    serve_store: Option<StoreUrl>,
    #[command(flatten)]
    record: RecordArgs,
}

/// The live progress across the matrix, and each measurement into the store.
struct Progress {
    bar: Option<ProgressBar>,
    store: Option<Store>,
    lab: String,
}

impl LabObserver for Progress {
    fn measuring(&mut self, server: &str, conns: usize, round: usize, done: usize, total: usize) {
        if let Some(bar) = &self.bar {
            bar.set_length(total as u64);
            bar.set_position(done as u64);
            bar.set_message(format!("{server}, {conns} connections, round {round}"));
        }
    }

    fn measured(&mut self, m: &Measurement) {
        let line = match &m.report {
            Ok(r) => format!(
                "{:<12} {:>6} conns {:>6} B  round {}: {:>9} msgs/s  p99 {:>7} µs  cpu {} µs/msg",
                m.server,
                m.conns,
                m.size,
                m.round,
                thousands(r.result.msgs_per_s),
                thousands(r.result.p99_us as f64),
                m.cpu_us_per_msg.map_or("-".into(), |c| format!("{c:.2}"))
            ),
            Err(why) => format!(
                "{:<12} {:>6} conns  round {}: {why}",
                m.server, m.conns, m.round
            ),
        };
        match &self.bar {
            Some(bar) => bar.println(line),
            None => eprintln!("{line}"),
        }
        if let (Some(store), Ok(report)) = (&mut self.store, &m.report) {
            let mut row = report.row(m.started, Some(m.server.clone()), Some(self.lab.clone()));
            row.cpu_us_per_msg = m.cpu_us_per_msg;
            row.rss_bytes_per_conn = m.rss_bytes_per_conn;
            if let Err(e) = store.record_bench(&row) {
                tracing::warn!(error = %e, "cannot record a lab measurement");
            }
        }
    }
}

/// `lab-YYYYMMDD-HHMMSS`, in UTC.
fn default_name() -> String {
    let now = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    let digits: String = now.chars().filter(char::is_ascii_digit).collect();
    format!("lab-{}-{}", &digits[..8], &digits[8..14])
}

fn python3() -> bool {
    std::process::Command::new("python3")
        .arg("--version")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// What to measure, as the options say, and where the results go (made once the options
/// have been checked; the Python reference's script is written there).
fn config(args: &Args) -> anyhow::Result<(LabConfig, PathBuf)> {
    let mut config = LabConfig::new(std::env::current_exe()?);
    if !args.models.is_empty() {
        config.servers = args.models.iter().map(|&m| LabServer::Model(m)).collect();
        for m in &args.models {
            if let Err(why) = m.available() {
                return Err(super::Usage(format!("model `{m}` cannot run here: {why}")).into());
            }
        }
    }
    if let Some(rate) = args.rate {
        if !(rate > 0.0 && rate.is_finite()) {
            return Err(
                super::Usage(format!("--rate {rate}: give requests per second above 0")).into(),
            );
        }
        config.rate = Some(rate);
    }
    if args.ablation {
        if let Err(why) = Model::Uring.available() {
            return Err(super::Usage(format!(
                "--ablation measures uring, which cannot run here: {why}"
            ))
            .into());
        }
        if args.models.is_empty() {
            config.servers.clear();
        }
        config.add_uring_ablation();
    }
    if let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) {
        config.add_tls(cert, key)?;
    }
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from(default_name()));
    std::fs::create_dir_all(&out)?;
    let uring_alone = args.ablation && args.models.is_empty();
    if !args.no_python && !uring_alone && python3() {
        config.add_python_reference(&out)?;
    }
    config.servers.extend(args.references.iter().cloned());
    config.conns = args.conns.iter().map(|&n| n as usize).collect();
    config.sizes = args.sizes.clone();
    config.depths = args.depth.iter().map(|&n| n as usize).collect();
    config.rounds = args.rounds as usize;
    config.duration = args.duration;
    config.warmup = args.warmup;
    if args.no_pin {
        config.pin = false;
    } else if args.pin {
        config.pin = true;
    }
    config.serve_args = match &args.serve_store {
        Some(url) => vec!["--store".into(), url.full()],
        None => vec!["--no-store".into()],
    };
    config.fit_max_conns();
    Ok((config, out))
}

/// A bar of the cells measured, on a terminal only.
fn progress_bar(total: usize) -> Option<ProgressBar> {
    io::stderr().is_terminal().then(|| {
        let bar = ProgressBar::new(total as u64);
        bar.set_style(
            ProgressStyle::with_template(
                "[{elapsed_precise}] {wide_bar} {pos}/{len} cells, ETA {eta} {msg}",
            )
            .expect("a valid template"),
        );
        bar.enable_steady_tick(Duration::from_millis(500));
        bar
    })
}

/// This command line as a shell would take it back, for the page to show.
fn command_line() -> String {
    std::env::args()
        .map(|a| {
            if a.contains(char::is_whitespace) {
                format!("'{a}'")
            } else {
                a
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// A run's expected length, as a person would say it: "20 seconds", "1 minute", "12 minutes".
fn about(length: Duration) -> String {
    let secs = length.as_secs_f64().ceil() as u64;
    match secs {
        0..=1 => "1 second".into(),
        2..=59 => format!("{secs} seconds"),
        60..=89 => "1 minute".into(),
        _ => format!("{} minutes", (secs as f64 / 60.0).round()),
    }
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let (config, out) = config(&args)?;
    let store = match args.record.url() {
        Some(url) => Some(switchboard::store::open(&url)?),
        None => None,
    };
    let lab_id = out
        .file_name()
        .map_or_else(default_name, |n| n.to_string_lossy().into_owned());
    let total = config.measurements();
    let per = config.warmup + config.duration + Duration::from_millis(400);
    eprintln!(
        "lab {lab_id}: {} servers, {total} measurements of {:.1} s, about {}; writing to {}",
        config.servers.len(),
        per.as_secs_f64(),
        about(per * total as u32),
        out.display()
    );
    let mut progress = Progress {
        bar: progress_bar(total),
        store,
        lab: lab_id,
    };
    let results = lab::run(&config, command_line(), &mut progress);
    if let Some(bar) = &progress.bar {
        bar.finish_and_clear();
    }
    let (files, plot_error) = lab::write(&results, &out, !args.no_images)?;
    let mut stdout = io::stdout().lock();
    stdout.write_all(std::fs::read_to_string(out.join("results.md"))?.as_bytes())?;
    if let Some(e) = plot_error {
        eprintln!("warning: no plots: {e}");
    }
    writeln!(
        stdout,
        "wrote {} files; open {}",
        files.len(),
        out.join("index.html").display()
    )?;
    Ok(())
}
