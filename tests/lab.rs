//! `switchboard lab` on a small matrix: every file written, the results sound, the cells in
//! the store, and the page rendered in a real headless browser.

mod common;

use common::*;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Runs `switchboard lab ARGS... --out DIR/out` in `dir`; returns the output directory, stdout
/// and the cells of results.json. The run must succeed.
fn lab(dir: &Path, args: &[&str]) -> (PathBuf, String, Vec<Value>) {
    lab_with(dir, args, None)
}

/// Like [`lab`], the lab (and the servers it starts) allowed at most `open_files` open files.
fn lab_with(dir: &Path, args: &[&str], open_files: Option<u64>) -> (PathBuf, String, Vec<Value>) {
    let out = dir.join("out");
    let mut command = Command::new(bin());
    command
        .current_dir(dir)
        .arg("lab")
        .args(args)
        .arg("--out")
        .arg(&out)
        .stdin(Stdio::null());
    if let Some(n) = open_files {
        limit_open_files(&mut command, n);
    }
    let run = command.output().unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let cells =
        serde_json::from_str(&std::fs::read_to_string(out.join("results.json")).unwrap()).unwrap();
    (
        out,
        String::from_utf8_lossy(&run.stdout).into_owned(),
        cells,
    )
}

#[test]
fn a_small_lab_writes_every_file_and_a_page_a_browser_renders() {
    let dir = scratch("lab");
    let store = format!("sqlite://{}/lab.db", dir.display());
    let (out, stdout, cells) = lab(
        &dir,
        &[
            "--models",
            "epoll,threads",
            "--conns",
            "1,8",
            "--rounds",
            "1",
            "--duration",
            "2s",
            "--warmup",
            "200ms",
            "--store",
            &store,
        ],
    );
    assert!(stdout.contains("| epoll | 8 |"), "the tables: {stdout}");

    // Each cell's window second by second: the load generator's replies beside the server's
    // CPU (from /proc) and open connections (from its /metrics).
    let epoll = cells
        .iter()
        .find(|c| c["model"] == "epoll" && c["conns"] == 8)
        .unwrap();
    let seconds = epoll["timeline"].as_array().expect("a timeline");
    assert!(!seconds.is_empty(), "{epoll}");
    let replies: u64 = seconds.iter().map(|s| s["replies"].as_u64().unwrap()).sum();
    assert!(replies > 0, "{epoll}");
    let first = &seconds[0];
    assert!(first["cpu_cores"].as_f64().unwrap() > 0.0, "{first}");
    assert_eq!(first["open_conns"], 8, "the bench's 8 connections: {first}");
    for metric in ["replies", "cpu", "open"] {
        let f = out.join(format!("timeline-{metric}-64b-d1.svg"));
        assert!(f.exists(), "{} missing", f.display());
    }

    // results.json: one object per cell with the documented fields.
    let python = Command::new("python3").arg("--version").output().is_ok();
    assert_eq!(cells.len(), if python { 6 } else { 4 }, "{cells:?}");
    for cell in &cells {
        for key in [
            "model",
            "conns",
            "size",
            "depth",
            "msgs_per_s",
            "p50_us",
            "p99_us",
            "p999_us",
            "cpu_us_per_msg",
        ] {
            assert!(!cell[key].is_null(), "{key} missing in {cell}");
        }
        // Memory per connection: blank where the server grew by less than the allocator's
        // noise (a few connections can show a shrink), never a figure below it.
        if let Some(bytes) = cell["rss_bytes_per_conn"].as_f64() {
            let conns = cell["conns"].as_f64().unwrap();
            assert!(bytes * conns >= 256.0 * 1024.0, "{cell}");
        }
        assert!(cell["msgs_per_s"].as_f64().unwrap() > 0.0, "{cell}");
        assert!(cell["cpu_us_per_msg"].as_f64().unwrap() > 0.0, "{cell}");
        assert_eq!(cell["errors"], 0, "{cell}");
        assert_eq!(cell["mismatches"], 0, "{cell}");
    }
    let models: Vec<&str> = cells.iter().map(|c| c["model"].as_str().unwrap()).collect();
    assert!(models.contains(&"epoll") && models.contains(&"threads"));
    if python {
        assert!(
            models.contains(&"python"),
            "the plan's own stack: {models:?}"
        );
    }

    // The tables, the plots, the page.
    let md = std::fs::read_to_string(out.join("results.md")).unwrap();
    assert!(
        md.contains("CPU µs/msg") && md.contains("| threads | 1 |"),
        "{md}"
    );
    for metric in ["throughput", "p99", "cpu", "memory"] {
        for ext in ["svg", "png"] {
            let f = out.join(format!("{metric}-64b-d1.{ext}"));
            assert!(
                std::fs::metadata(&f)
                    .map(|m| m.len() > 1000)
                    .unwrap_or(false),
                "{} missing or empty",
                f.display()
            );
        }
    }
    let page = out.join("index.html");
    let html = std::fs::read_to_string(&page).unwrap();
    assert!(html.matches("<svg").count() >= 4, "the plots are inline");
    assert!(html.contains("<strong>epoll</strong>") && html.contains("<table>"));
    assert!(
        html.contains("cores") && html.contains("Linux"),
        "the machine"
    );

    // Every measurement is a bench_runs row of one lab run.
    let runs = Command::new(bin())
        .args(["runs", "--store", &store, "--lab", "out", "--json"])
        .output()
        .unwrap();
    let rows: Vec<Value> = String::from_utf8_lossy(&runs.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), cells.len(), "{rows:?}");
    assert!(rows
        .iter()
        .all(|r| r["cpu_us_per_msg"].as_f64().unwrap_or(0.0) > 0.0));

    // The page in a real browser: a screenshot that is not blank.
    assert_renders(&page);
}

#[test]
fn a_reference_command_joins_the_matrix_and_a_broken_one_is_noted() {
    let dir = scratch("lab-ref");
    // The reference: switchboard itself under another name, on the port the lab gives it.
    let reference = format!(
        "mine={} serve tcp://127.0.0.1:{{port}} --model poll --no-store",
        bin()
    );
    let (out, stdout, cells) = lab(
        &dir,
        &[
            "--models",
            "epoll",
            "--conns",
            "4",
            "--rounds",
            "2",
            "--duration",
            "500ms",
            "--warmup",
            "100ms",
            "--no-python",
            "--no-store",
            "--no-pin",
            "--no-images",
            "--reference",
            &reference,
            "--reference",
            "broken=false {port}",
        ],
    );
    // --no-images: the page with its plots inline and the tables, no file per plot.
    let mut written: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    written.sort();
    assert_eq!(
        written,
        ["index.html", "results.json", "results.md"],
        "{stdout}"
    );
    assert!(stdout.contains("wrote 3 files"), "{stdout}");
    let html = std::fs::read_to_string(out.join("index.html")).unwrap();
    assert!(html.matches("<svg").count() >= 4, "the plots are inline");
    let by = |name: &str| cells.iter().find(|c| c["model"] == name).unwrap().clone();
    let mine = by("mine");
    assert_eq!(mine["reference"], true);
    assert_eq!(mine["rounds"], 2);
    assert!(mine["msgs_per_s"].as_f64().unwrap() > 0.0, "{mine}");
    let broken = by("broken");
    assert_eq!(broken["rounds"], 0);
    assert!(
        broken["note"].as_str().unwrap().contains("did not start"),
        "{broken}"
    );
}

#[test]
fn with_a_certificate_every_model_is_measured_over_tls_beside_itself() {
    let dir = scratch("lab-tls");
    let Some(t) = tls_files(&dir) else {
        return;
    };
    let (cert, key) = (t.cert.display().to_string(), t.key.display().to_string());
    let (_, _, cells) = lab(
        &dir,
        &[
            "--models",
            "epoll",
            "--conns",
            "4",
            "--rounds",
            "1",
            "--duration",
            "500ms",
            "--warmup",
            "100ms",
            "--no-python",
            "--no-store",
            "--no-pin",
            "--tls-cert",
            &cert,
            "--tls-key",
            &key,
        ],
    );
    let names: Vec<&str> = cells.iter().filter_map(|c| c["model"].as_str()).collect();
    assert_eq!(names, ["epoll", "epoll+tls"]);
    for cell in &cells {
        assert!(cell["msgs_per_s"].as_f64().unwrap() > 0.0, "{cell}");
        assert_eq!(cell["errors"], 0, "{cell}");
    }
    // A key that is not the certificate's fails at once, as `serve` would.
    let bad = Command::new(bin())
        .args(["lab", "--models", "epoll", "--no-store", "--tls-cert"])
        .arg(&t.cert)
        .arg("--tls-key")
        .arg(&t.client_key)
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("does not go with"));
}

#[test]
fn the_ablation_measures_uring_with_each_feature_turned_and_tables_the_ratios() {
    let dir = scratch("lab-ablation");
    let (out, stdout, cells) = lab(
        &dir,
        &[
            "--ablation",
            "--conns",
            "10",
            "--sizes",
            "64,64KiB",
            "--rounds",
            "1",
            "--duration",
            "300ms",
            "--warmup",
            "100ms",
            "--no-store",
        ],
    );
    let servers: Vec<&str> = cells
        .iter()
        .filter(|c| c["size"] == 64)
        .map(|c| c["model"].as_str().unwrap())
        .collect();
    assert_eq!(
        servers,
        [
            "uring",
            "uring/no-single-issuer",
            "uring/no-defer-taskrun",
            "uring/no-registered-ring",
            "uring/no-fixed-files",
            "uring/no-multishot-recv",
            "uring/no-incremental-buffers",
            "uring/no-batched-sends",
            "uring/sqpoll",
            "uring/send-zc",
        ],
        "uring alone, then each variant, no Python"
    );
    for c in &cells {
        assert_eq!(c["errors"], 0, "{c}");
        assert_eq!(c["mismatches"], 0, "{c}");
        assert!(c["msgs_per_s"].as_f64().unwrap() > 0.0, "{c}");
    }
    let md = std::fs::read_to_string(out.join("results.md")).unwrap();
    assert_eq!(
        md.matches("### uring feature by feature").count(),
        2,
        "one a size: {md}"
    );
    // uring against itself is 1.00 both ways; every variant has its ratios.
    assert!(
        md.contains("| uring | 10 | ") && md.contains(" | 1.00 | "),
        "{md}"
    );
    let variant = md
        .lines()
        .find(|l| l.starts_with("| uring/no-multishot-recv | 10 | ") && l.split('|').count() == 9)
        .unwrap_or_else(|| panic!("an ablation row: {md}"));
    let ratio: f64 = variant.split('|').nth(4).unwrap().trim().parse().unwrap();
    assert!(ratio > 0.0, "{variant}");
    assert!(
        stdout.contains("### uring feature by feature"),
        "printed too"
    );
    // Large messages are drawn in bytes per second too; small ones are not.
    assert!(out.join("mbps-65536b-d1.svg").exists());
    assert!(!out.join("mbps-64b-d1.svg").exists());
    let html = std::fs::read_to_string(out.join("index.html")).unwrap();
    assert!(
        html.contains("(uring without multishot-recv)") && html.contains("(uring with sqpoll)")
    );
}

#[test]
fn an_open_loop_lab_sends_at_its_rate() {
    let dir = scratch("lab-rate");
    let (out, _, cells) = lab(
        &dir,
        &[
            "--models",
            "epoll",
            "--conns",
            "20",
            "--rate",
            "400",
            "--rounds",
            "1",
            "--duration",
            "1s",
            "--warmup",
            "200ms",
            "--no-python",
            "--no-store",
            "--no-pin",
        ],
    );
    let rate = cells[0]["msgs_per_s"].as_f64().unwrap();
    assert!(
        (300.0..=500.0).contains(&rate),
        "sent on schedule, not as fast as it could: {rate}"
    );
    let md = std::fs::read_to_string(out.join("results.md")).unwrap();
    assert!(md.contains("open loop, 400 requests/s"), "{md}");
}

#[test]
fn past_one_process_the_lab_spreads_the_load_and_measures_only_servers_of_several() {
    // 300 open files: 236 connections a process. 500 connections take 3 bench processes,
    // and a prefork server with enough workers; epoll, one process, is not measured.
    let dir = scratch("lab-processes");
    let (out, _, cells) = lab_with(
        &dir,
        &[
            "--models",
            "epoll,prefork",
            "--conns",
            "500",
            "--rate",
            "1000",
            "--rounds",
            "1",
            "--duration",
            "1s",
            "--warmup",
            "200ms",
            "--no-python",
            "--no-store",
        ],
        Some(300),
    );
    let cell = |model: &str| {
        cells
            .iter()
            .find(|c| c["model"] == model)
            .unwrap_or_else(|| panic!("no {model} cell: {cells:?}"))
    };
    let epoll = cell("epoll");
    assert_eq!(epoll["rounds"], 0, "{epoll}");
    assert!(
        epoll["note"]
            .as_str()
            .unwrap()
            .starts_with("not measured: one process holds at most 236 connections"),
        "{epoll}"
    );
    let prefork = cell("prefork");
    assert_eq!(prefork["rounds"], 1, "{prefork}");
    assert_eq!(prefork["errors"], 0, "{prefork}");
    let rate = prefork["msgs_per_s"].as_f64().unwrap();
    assert!((800.0..=1200.0).contains(&rate), "{prefork}");
    assert!(
        prefork["rss_bytes_per_conn"].as_f64().is_some(),
        "memory per connection of every worker: {prefork}"
    );
    assert!(
        prefork["note"]
            .as_str()
            .unwrap()
            .contains("runs 4 workers to hold 500 connections"),
        "{prefork}"
    );
    let md = std::fs::read_to_string(out.join("results.md")).unwrap();
    assert!(md.contains("| epoll | 500 | - | - |"), "{md}");
}

#[test]
fn bad_lab_options_are_usage_errors() {
    for args in [
        &["lab", "--models", "nosuch"][..],
        &["lab", "--conns", "0"],
        &["lab", "--reference", "no-port-here"],
        &["lab", "--rounds", "0"],
    ] {
        let out = Command::new(bin()).args(args).output().unwrap();
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
