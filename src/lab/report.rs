//! What a lab run leaves in its directory: `results.json` (one object per cell), `results.md`
//! (the tables), plots as SVG and PNG, and `index.html`, one self-contained page with the plots,
//! the tables, the machine and a paragraph per server on what its figures show.

use super::plot;
use crate::bench::thousands;
use crate::lab::plot::{Plot, Series};
use crate::lab::results::{Cell, LabResults, Moment};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// The metrics plotted, each against connections: (file stem, title, axis, log scale, value).
type Metric = (
    &'static str,
    &'static str,
    &'static str,
    bool,
    fn(&Cell) -> Option<f64>,
);

const METRICS: &[Metric] = &[
    (
        "throughput",
        "Throughput",
        "replies per second",
        false,
        |c| Some(c.msgs_per_s),
    ),
    ("p99", "99th percentile latency", "µs", true, |c| {
        Some(c.p99_us as f64)
    }),
    ("mbps", "Throughput in bytes", "MB per second", false, |c| {
        (c.size >= LARGE).then_some(c.mb_per_s)
    }),
    (
        "cpu",
        "Server CPU time per reply",
        "µs per reply",
        false,
        |c| c.cpu_us_per_msg,
    ),
    (
        "memory",
        "Server memory per open connection",
        "bytes per connection",
        false,
        |c| c.rss_bytes_per_conn,
    ),
];

/// What a window's timeline draws, each against its seconds: (file stem, title, axis, value).
type TimelineMetric = (
    &'static str,
    &'static str,
    &'static str,
    fn(&Moment) -> Option<f64>,
);

const TIMELINE: &[TimelineMetric] = &[
    ("replies", "Replies", "replies in the second", |m| {
        Some(m.replies as f64)
    }),
    ("cpu", "Server CPU", "cores busy", |m| m.cpu_cores),
    (
        "open",
        "Open connections (the server's /metrics)",
        "connections",
        |m| m.open_conns.map(|n| n as f64),
    ),
];

/// One line per server: its cell at `conns` connections, second by second.
fn timeline_series(
    cells: &[Cell],
    size: usize,
    depth: usize,
    conns: usize,
    value: fn(&Moment) -> Option<f64>,
) -> Vec<Series> {
    cells
        .iter()
        .filter(|c| c.size == size && c.depth == depth && c.conns == conns)
        .filter_map(|c| {
            let points: Vec<(f64, f64)> = c
                .timeline
                .iter()
                .filter_map(|m| Some((m.second as f64, value(m)?)))
                .collect();
            (!points.is_empty()).then(|| Series {
                name: c.model.clone(),
                points,
            })
        })
        .collect()
}

/// Requests from this size on are large: their throughput is also drawn in bytes.
const LARGE: usize = 4096;

/// Writes every file of a lab run into `dir` (created if needed); returns the files written.
/// The page carries its plots; `images` also writes each as an SVG and a PNG file beside it.
/// Plots are skipped, with the reason returned beside the files, when no font can be found.
pub fn write(
    results: &LabResults,
    dir: &Path,
    images: bool,
) -> std::io::Result<(Vec<PathBuf>, Option<String>)> {
    std::fs::create_dir_all(dir)?;
    let mut files = Vec::new();
    let json = dir.join("results.json");
    std::fs::write(&json, serde_json::to_string_pretty(&results.cells)?)?;
    files.push(json);
    let md = dir.join("results.md");
    std::fs::write(&md, markdown(results))?;
    files.push(md);
    let mut plots: Vec<(String, String)> = Vec::new();
    let mut plot_error = None;
    'loads: for (size, depth) in loads(&results.cells) {
        for (stem, title, axis, log_y, value) in METRICS {
            let series = series(&results.cells, size, depth, *value);
            if series.is_empty() {
                continue;
            }
            let title = format!("{title}, {size} B requests, depth {depth}");
            let plot = Plot {
                title: &title,
                y_label: axis,
                log_y: *log_y,
                x_label: None,
                series: &series,
            };
            let name = format!("{stem}-{size}b-d{depth}");
            if let Err(e) = drawn(
                &plot,
                images.then_some((dir, name.as_str())),
                &mut plots,
                &mut files,
            ) {
                plot_error = Some(e);
                break 'loads;
            }
        }
        // The largest cell's last round, second by second, every server in one plot a figure.
        let Some(conns) = results
            .cells
            .iter()
            .filter(|c| c.size == size && c.depth == depth && !c.timeline.is_empty())
            .map(|c| c.conns)
            .max()
        else {
            continue;
        };
        for (stem, title, axis, value) in TIMELINE {
            let series = timeline_series(&results.cells, size, depth, conns, *value);
            if series.is_empty() {
                continue;
            }
            let title =
                format!("{title}, second by second: {conns} connections, {size} B, depth {depth}");
            let plot = Plot {
                title: &title,
                y_label: axis,
                log_y: false,
                x_label: Some("second of the window"),
                series: &series,
            };
            let name = format!("timeline-{stem}-{size}b-d{depth}");
            if let Err(e) = drawn(
                &plot,
                images.then_some((dir, name.as_str())),
                &mut plots,
                &mut files,
            ) {
                plot_error = Some(e);
                break 'loads;
            }
        }
    }
    let html = dir.join("index.html");
    std::fs::write(&html, page(results, &plots, plot_error.as_deref())?)?;
    files.push(html);
    Ok((files, plot_error))
}

/// Draws `plot` for the page, and, given `(dir, NAME)`, as `dir/NAME.svg` and `.png` too,
/// listed among the files.
fn drawn(
    plot: &Plot<'_>,
    image: Option<(&Path, &str)>,
    plots: &mut Vec<(String, String)>,
    files: &mut Vec<PathBuf>,
) -> Result<(), String> {
    let svg = plot::svg(plot)?;
    if let Some((dir, name)) = image {
        let (svg_file, png_file) = (
            dir.join(format!("{name}.svg")),
            dir.join(format!("{name}.png")),
        );
        std::fs::write(&svg_file, &svg).map_err(|e| format!("{}: {e}", svg_file.display()))?;
        plot::png(plot, &png_file)?;
        files.push(svg_file);
        files.push(png_file);
    }
    plots.push((plot.title.to_string(), svg));
    Ok(())
}

/// The (size, depth) loads measured, in order.
fn loads(cells: &[Cell]) -> Vec<(usize, usize)> {
    let mut loads = Vec::new();
    for c in cells {
        if !loads.contains(&(c.size, c.depth)) {
            loads.push((c.size, c.depth));
        }
    }
    loads
}

/// The servers, in order of first appearance.
fn servers(cells: &[Cell]) -> Vec<&str> {
    let mut names: Vec<&str> = Vec::new();
    for c in cells {
        if !names.contains(&c.model.as_str()) {
            names.push(&c.model);
        }
    }
    names
}

fn series(
    cells: &[Cell],
    size: usize,
    depth: usize,
    value: fn(&Cell) -> Option<f64>,
) -> Vec<Series> {
    servers(cells)
        .into_iter()
        .filter_map(|name| {
            let mut points: Vec<(f64, f64)> = cells
                .iter()
                .filter(|c| c.model == name && c.size == size && c.depth == depth && c.rounds > 0)
                .filter_map(|c| Some((c.conns as f64, value(c)?)))
                .collect();
            points.sort_by(|a, b| a.0.total_cmp(&b.0));
            (!points.is_empty()).then(|| Series {
                name: name.to_string(),
                points,
            })
        })
        .collect()
}

fn opt(v: Option<f64>, digits: usize) -> String {
    match v {
        Some(v) if digits == 0 => thousands(v),
        Some(v) => format!("{v:.digits$}"),
        None => "-".into(),
    }
}

/// One table row's cells, shared by the Markdown and the HTML. A cell with no round measured
/// shows dashes, not zeros.
fn row(c: &Cell) -> [String; 14] {
    if c.rounds == 0 {
        let mut dashes: [String; 14] = std::array::from_fn(|_| "-".to_string());
        dashes[0] = c.model.clone();
        dashes[1] = thousands(c.conns as f64);
        dashes[13] = c.note.clone().unwrap_or_default();
        return dashes;
    }
    [
        c.model.clone(),
        thousands(c.conns as f64),
        format!(
            "{} ({}–{})",
            thousands(c.msgs_per_s),
            thousands(c.msgs_per_s_min),
            thousands(c.msgs_per_s_max)
        ),
        format!("{:.2}", c.mb_per_s),
        thousands(c.p50_us as f64),
        thousands(c.p99_us as f64),
        thousands(c.p999_us as f64),
        opt(c.cpu_us_per_msg, 2),
        opt(cpu_ns_per_byte(c), 3),
        opt(c.syscalls_per_msg, 2),
        opt(c.switches_per_msg, 2),
        opt(c.rss_bytes_per_conn, 0),
        (c.errors + c.mismatches).to_string(),
        c.note.clone().unwrap_or_default(),
    ]
}

/// The server's CPU time per byte of requests, in ns: what separates servers once messages
/// are large and copies, not system calls, are the cost.
fn cpu_ns_per_byte(c: &Cell) -> Option<f64> {
    c.cpu_us_per_msg
        .map(|us| us * 1000.0 / c.size.max(1) as f64)
}

const HEADER: [&str; 14] = [
    "server",
    "conns",
    "msgs/s (min–max)",
    "MB/s",
    "p50 µs",
    "p99 µs",
    "p99.9 µs",
    "CPU µs/msg",
    "CPU ns/B",
    "syscalls/msg",
    "switches/msg",
    "memory B/conn",
    "errors",
    "note",
];

fn when(results: &LabResults) -> String {
    humantime::format_rfc3339_seconds(
        std::time::UNIX_EPOCH + std::time::Duration::from_micros(results.started.max(0) as u64),
    )
    .to_string()
}

fn setup(results: &LabResults) -> String {
    let m = &results.machine;
    let c = &results.config;
    let load = match c.rate {
        Some(rate) => format!("open loop, {rate} requests/s in all per cell"),
        None => "closed loop".to_string(),
    };
    let pinned = match (&m.server_cores, &m.bench_cores) {
        (Some(s), Some(b)) => format!("servers pinned to cores {s:?}, load generator to {b:?}"),
        _ => "not pinned: servers and load generator share the cores".to_string(),
    };
    format!(
        "{} ({} cores, {}), Linux {}, {}; {load}; {} round(s) per cell of {:.1} s after {:.1} s warm-up (after every connection is made), servers interleaved round by round, medians; {pinned}",
        m.host,
        m.cores,
        m.cpu,
        m.kernel,
        when(results),
        c.rounds,
        c.duration.as_secs_f64(),
        c.warmup.as_secs_f64()
    )
}

fn markdown(results: &LabResults) -> String {
    let mut md = String::new();
    let _ = writeln!(md, "# switchboard lab\n");
    let _ = writeln!(md, "`{}`\n", results.command);
    let _ = writeln!(md, "{}\n", setup(results));
    for (size, depth) in loads(&results.cells) {
        let _ = writeln!(md, "## {size} B requests, depth {depth}\n");
        let _ = writeln!(md, "| {} |", HEADER.join(" | "));
        let _ = writeln!(md, "|{}", " --- |".repeat(HEADER.len()));
        for c in results
            .cells
            .iter()
            .filter(|c| c.size == size && c.depth == depth)
        {
            let cells: Vec<String> = row(c).iter().map(|v| v.replace('|', "\\|")).collect();
            let _ = writeln!(md, "| {} |", cells.join(" | "));
        }
        md.push('\n');
        let rows = ablation(&results.cells, size, depth);
        if !rows.is_empty() {
            let _ = writeln!(
                md,
                "### uring feature by feature, {size} B requests, depth {depth}\n"
            );
            let _ = writeln!(md, "| {} |", ABLATION_HEADER.join(" | "));
            let _ = writeln!(md, "|{}", " --- |".repeat(ABLATION_HEADER.len()));
            for r in rows {
                let _ = writeln!(md, "| {} |", r.join(" | "));
            }
            md.push('\n');
        }
    }
    md
}

const ABLATION_HEADER: [&str; 7] = [
    "server",
    "conns",
    "msgs/s",
    "× uring",
    "CPU µs/msg",
    "× uring",
    "p99 µs",
];

/// The ablation (`lab --ablation`): `uring` and each of its variants at every connection count
/// of a load, with their throughput and CPU per reply as ratios to `uring`'s in the same run.
/// Empty without variants.
fn ablation(cells: &[Cell], size: usize, depth: usize) -> Vec<[String; 7]> {
    let here = |c: &&Cell| c.size == size && c.depth == depth && c.rounds > 0;
    if !cells
        .iter()
        .filter(here)
        .any(|c| c.model.starts_with("uring/"))
    {
        return Vec::new();
    }
    let mut conns: Vec<usize> = cells.iter().filter(here).map(|c| c.conns).collect();
    conns.sort_unstable();
    conns.dedup();
    let mut rows = Vec::new();
    for n in conns {
        let at: Vec<&Cell> = cells.iter().filter(here).filter(|c| c.conns == n).collect();
        let Some(base) = at.iter().find(|c| c.model == "uring") else {
            continue;
        };
        for c in at
            .iter()
            .filter(|c| c.model == "uring" || c.model.starts_with("uring/"))
        {
            let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
                (Some(a), Some(b)) if b > 0.0 => format!("{:.2}", a / b),
                _ => "-".into(),
            };
            rows.push([
                c.model.clone(),
                thousands(n as f64),
                thousands(c.msgs_per_s),
                ratio(Some(c.msgs_per_s), Some(base.msgs_per_s)),
                opt(c.cpu_us_per_msg, 2),
                ratio(c.cpu_us_per_msg, base.cpu_us_per_msg),
                thousands(c.p99_us as f64),
            ]);
        }
    }
    rows
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn page(
    results: &LabResults,
    plots: &[(String, String)],
    plot_error: Option<&str>,
) -> std::io::Result<String> {
    let mut h = String::new();
    let _ = write!(
        h,
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>switchboard lab</title>\n<style>\
         body{{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}}\
         table{{border-collapse:collapse;font-size:13px;margin:1em 0}}td,th{{border:1px solid #ccc;padding:3px 6px;text-align:right}}\
         td:first-child,th:first-child,td:last-child{{text-align:left}}th{{background:#f0f0f0}}\
         figure{{margin:1em 0}}svg{{max-width:100%;height:auto}}code{{background:#f4f4f4;padding:1px 4px}}\
         </style></head><body>\n<h1>switchboard lab: every model, side by side</h1>\n"
    );
    let _ = writeln!(h, "<p><code>{}</code></p>", escape(&results.command));
    let _ = writeln!(h, "<p>{}</p>", escape(&setup(results)));
    let _ = writeln!(
        h,
        "<p>Each server is a fresh process on a loopback port, loaded by <code>switchboard bench</code> (every reply checked). \
         CPU per reply is the server's own CPU time (all its processes and threads) over the replies of the window; memory per connection is \
         the growth of its proportional set size while the cell's connections are open, left blank where the whole growth was under 256 KiB \
         (the allocator's own noise: a few connections can even show a shrink). \
         The timelines are each load's largest cell, its last round, second by second: the load generator's replies beside the server's own \
         CPU (cores kept busy, from <code>/proc</code>) and open connections (from its <code>/metrics</code>; a reference serves none), \
         so a stall shows in the second it happened.</p>"
    );
    if let Some(e) = plot_error {
        let _ = writeln!(h, "<p><strong>No plots:</strong> {}</p>", escape(e));
    }
    for (title, text) in plots {
        let body = text.find("<svg").map_or(text.as_str(), |i| &text[i..]);
        let _ = writeln!(
            h,
            "<figure aria-label=\"{}\">{body}</figure>",
            escape(title)
        );
    }
    let _ = writeln!(h, "<h2>What each server shows</h2>");
    for name in servers(&results.cells) {
        let _ = writeln!(h, "<p>{}</p>", describe(name, &results.cells));
    }
    for (size, depth) in loads(&results.cells) {
        let _ = writeln!(h, "<h2>{size} B requests, depth {depth}</h2>\n<table><tr>");
        for head in HEADER {
            let _ = write!(h, "<th>{}</th>", escape(head));
        }
        let _ = writeln!(h, "</tr>");
        for c in results
            .cells
            .iter()
            .filter(|c| c.size == size && c.depth == depth)
        {
            table_row(&mut h, &row(c));
        }
        let _ = writeln!(h, "</table>");
        let rows = ablation(&results.cells, size, depth);
        if !rows.is_empty() {
            let _ = writeln!(
                h,
                "<h3>uring feature by feature, {size} B requests, depth {depth}</h3>\n\
                 <p>Each row is <code>uring</code> with one io_uring feature turned the other way \
                 (<code>serve --uring NAME=off</code>, or <code>=on</code> for <code>sqpoll</code> and <code>send-zc</code>), its throughput and \
                 CPU per reply as ratios to <code>uring</code>'s own in the same run: a CPU ratio \
                 above 1 is what the feature saves.</p>\n<table><tr>"
            );
            for head in ABLATION_HEADER {
                let _ = write!(h, "<th>{}</th>", escape(head));
            }
            let _ = writeln!(h, "</tr>");
            for r in rows {
                table_row(&mut h, &r);
            }
            let _ = writeln!(h, "</table>");
        }
    }
    h.push_str("</body></html>\n");
    Ok(h)
}

/// One row of an HTML table.
fn table_row(h: &mut String, cells: &[String]) {
    h.push_str("<tr>");
    for cell in cells {
        let _ = write!(h, "<td>{}</td>", escape(cell));
    }
    h.push_str("</tr>\n");
}

/// A paragraph on one server, from its figures alone: how its throughput, tail latency, CPU
/// and memory move with connections, and how it stands against the others at the largest load
/// they all share.
fn describe(name: &str, cells: &[Cell]) -> String {
    let model = crate::Model::ALL.iter().find(|m| m.name() == name);
    let mut p = format!("<strong>{}</strong>", escape(name));
    match (model, name.split_once('/')) {
        (Some(m), _) => {
            let _ = write!(p, " ({}): ", escape(m.summary()));
        }
        (None, Some((base, change))) => {
            let what = match change.strip_prefix("no-") {
                Some(feature) => format!("without {feature}"),
                None => format!("with {change}"),
            };
            let _ = write!(p, " ({} {}): ", escape(base), escape(&what));
        }
        (None, None) => p.push_str(" (reference): "),
    }
    let Some(&(size, depth)) = loads(cells).first() else {
        return p;
    };
    let mine: Vec<&Cell> = cells
        .iter()
        .filter(|c| c.model == name && c.size == size && c.depth == depth && c.rounds > 0)
        .collect();
    let Some(last) = mine.last() else {
        p.push_str("no measurement succeeded.");
        return p;
    };
    own_figures(&mut p, &mine);
    p.push('.');
    // Against the others, at the largest connection count every server was measured at.
    let peers: Vec<&Cell> = cells
        .iter()
        .filter(|c| c.size == size && c.depth == depth && c.conns == last.conns && c.rounds > 0)
        .collect();
    if peers.len() > 1 {
        against_peers(&mut p, name, last, &peers);
    }
    if let Some(note) = &last.note {
        let _ = write!(p, " Note: {}.", escape(note));
    }
    p
}

/// A server's own figures over the connection counts of one load: throughput and p99 from the
/// fewest connections to the most, CPU per reply, memory per connection.
fn own_figures(p: &mut String, mine: &[&Cell]) {
    let (first, last) = (mine[0], mine[mine.len() - 1]);
    if mine.len() > 1 {
        let _ = write!(
            p,
            "from {} to {} connections its throughput goes from {} to {} replies/s and its p99 from {} to {} µs",
            thousands(first.conns as f64),
            thousands(last.conns as f64),
            thousands(first.msgs_per_s),
            thousands(last.msgs_per_s),
            thousands(first.p99_us as f64),
            thousands(last.p99_us as f64)
        );
    } else {
        let _ = write!(
            p,
            "at {} connection(s): {} replies/s, p99 {} µs",
            thousands(first.conns as f64),
            thousands(first.msgs_per_s),
            thousands(first.p99_us as f64)
        );
    }
    let cpus: Vec<f64> = mine.iter().filter_map(|c| c.cpu_us_per_msg).collect();
    if let (Some(lo), Some(hi)) = (
        cpus.iter().copied().reduce(f64::min),
        cpus.iter().copied().reduce(f64::max),
    ) {
        let _ = write!(p, "; it spends {lo:.2}–{hi:.2} µs of CPU per reply");
    }
    if let Some(mem) = last.rss_bytes_per_conn {
        let _ = write!(
            p,
            " and {} bytes per open connection at {}",
            thousands(mem),
            thousands(last.conns as f64)
        );
    }
}

/// How a server compares with the fastest and the cheapest of `peers`, all measured at its
/// largest connection count.
fn against_peers(p: &mut String, name: &str, last: &Cell, peers: &[&Cell]) {
    let best = peers
        .iter()
        .max_by(|a, b| a.msgs_per_s.total_cmp(&b.msgs_per_s));
    let cheapest = peers
        .iter()
        .filter(|c| c.cpu_us_per_msg.is_some())
        .min_by(|a, b| {
            a.cpu_us_per_msg
                .unwrap_or(f64::MAX)
                .total_cmp(&b.cpu_us_per_msg.unwrap_or(f64::MAX))
        });
    if let Some(best) = best {
        if best.model == name {
            let _ = write!(
                p,
                " At {} connections it has the highest throughput",
                thousands(last.conns as f64)
            );
        } else if best.msgs_per_s > 0.0 {
            let _ = write!(
                p,
                " At {} connections it serves {:.2}x the throughput of the fastest, {}",
                thousands(last.conns as f64),
                last.msgs_per_s / best.msgs_per_s,
                escape(&best.model)
            );
        }
    }
    if let (Some(cheapest), Some(mine)) = (cheapest, last.cpu_us_per_msg) {
        if cheapest.model == name {
            p.push_str(" and the lowest CPU per reply.");
        } else if let Some(theirs) = cheapest.cpu_us_per_msg {
            let _ = write!(
                p,
                ", at {:.2}x the CPU per reply of the cheapest, {}.",
                mine / theirs,
                escape(&cheapest.model)
            );
        }
    } else {
        p.push('.');
    }
}
