//! `switchboard bench` against real servers: switchboard's own over every transport and framing,
//! and small servers of the test's own that answer wrongly, stall, close or reset.

mod common;

use common::*;
use serde_json::Value;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn bench(addr: &str, args: &[&str]) -> Output {
    Command::new(bin())
        .arg("bench")
        .arg(addr)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run switchboard bench")
}

/// Runs a short bench with `--json` and returns its exit code and report.
fn bench_json(addr: &str, args: &[&str]) -> (Option<i32>, Value) {
    let mut all = vec![
        "--json",
        "--no-store",
        "--duration",
        "1s",
        "--warmup",
        "200ms",
        "--conns",
        "4",
    ];
    all.extend_from_slice(args);
    let out = bench(addr, &all);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report: Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!(
            "bench printed no JSON ({e}): {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code(), report)
}

fn n(report: &Value, key: &str) -> f64 {
    report[key]
        .as_f64()
        .unwrap_or_else(|| panic!("no number {key} in {report}"))
}

fn clean(code: Option<i32>, report: &Value) {
    assert_eq!(code, Some(0), "{report}");
    assert!(n(report, "msgs") > 0.0, "{report}");
    assert_eq!(n(report, "errors"), 0.0, "{report}");
    assert_eq!(n(report, "mismatches"), 0.0, "{report}");
}

#[test]
fn the_json_report_has_every_field() {
    let s = ServerProcess::tcp("epoll", &["--no-store"]);
    let (code, r) = bench_json(&s.addr, &["--depth", "2", "--size", "100"]);
    clean(code, &r);
    for key in [
        "msgs_per_s",
        "mb_per_s",
        "p50_us",
        "p90_us",
        "p99_us",
        "p999_us",
        "max_us",
        "errors",
        "mismatches",
        "conns",
        "size",
        "depth",
        "secs",
        "connected",
        "connect_secs",
        "threads",
        "processes",
        "unanswered",
        "oldest_unanswered_us",
        "unserved_conns",
        "late_starts",
        "latest_start_us",
        "replies_per_conn_min",
        "replies_per_conn_median",
        "replies_per_conn_max",
    ] {
        assert!(r[key].is_number(), "{key} missing in {r}");
    }
    // A fair server: every connection served, each with about its share.
    assert_eq!(n(&r, "unserved_conns"), 0.0, "{r}");
    // Four connections begin in the warm-up, long before the window.
    assert_eq!(n(&r, "late_starts"), 0.0, "{r}");
    assert!(n(&r, "replies_per_conn_min") > 0.0, "{r}");
    assert!(n(&r, "replies_per_conn_min") <= n(&r, "replies_per_conn_median"));
    assert!(n(&r, "replies_per_conn_median") <= n(&r, "replies_per_conn_max"));
    // At most the depth's requests per connection were in flight at the end, none for long.
    assert!(n(&r, "unanswered") <= 8.0, "{r}");
    assert!(n(&r, "oldest_unanswered_us") < 1_000_000.0, "{r}");
    assert!(r["rate"].is_null(), "closed loop: {r}");
    assert_eq!(
        (n(&r, "conns"), n(&r, "size"), n(&r, "depth")),
        (4.0, 100.0, 2.0)
    );
    assert!(n(&r, "p50_us") <= n(&r, "p99_us") && n(&r, "p99_us") <= n(&r, "max_us"));
    let mb = n(&r, "msgs_per_s") * 100.0 / 1e6;
    assert!((n(&r, "mb_per_s") - mb).abs() < 0.01 * mb.max(0.01), "{r}");
}

#[test]
fn every_framing_over_tcp_unix_and_datagrams() {
    for frame in ["raw", "line", "len"] {
        for addr in [
            "tcp://127.0.0.1:0".to_string(),
            format!("unix://{}/s.sock", scratch("bench-unix").display()),
            "udp://127.0.0.1:0".to_string(),
            format!("unixgram://{}/g.sock", scratch("bench-gram").display()),
        ] {
            let s =
                ServerProcess::start(&addr, &["--model", "epoll", "--frame", frame, "--no-store"]);
            for depth in ["1", "3"] {
                let (code, r) = bench_json(&s.addr, &["--frame", frame, "--depth", depth]);
                clean(code, &r);
            }
        }
    }
}

#[test]
fn echo_is_checked_as_echo_and_any_is_not_checked() {
    let s = ServerProcess::tcp("threads", &["--service", "echo", "--no-store"]);
    let (code, r) = bench_json(&s.addr, &["--expect", "echo"]);
    clean(code, &r);
    let (code, r) = bench_json(&s.addr, &["--expect", "upper"]);
    assert_eq!(code, Some(1), "an echo is not an upper-cased reply: {r}");
    assert!(n(&r, "mismatches") > 0.0);
    let (code, r) = bench_json(&s.addr, &["--expect", "any", "--message", "hello"]);
    clean(code, &r);
    assert_eq!(n(&r, "size"), 5.0);
}

#[test]
fn the_open_loop_sends_on_schedule() {
    let s = ServerProcess::tcp("epoll", &["--no-store"]);
    let (code, r) = bench_json(&s.addr, &["--rate", "1000", "--duration", "2s"]);
    clean(code, &r);
    assert_eq!(n(&r, "rate"), 1000.0);
    // 1,000 a second for 2 s, whatever the server's speed: not more, and not far fewer.
    let msgs = n(&r, "msgs");
    assert!((1500.0..=2050.0).contains(&msgs), "{msgs} replies: {r}");
    let u = ServerProcess::start("udp://127.0.0.1:0", &["--model", "epoll", "--no-store"]);
    let (code, r) = bench_json(&u.addr, &["--rate", "500"]);
    clean(code, &r);
}

/// How a test server answers message `i` of a connection: `None` closes the connection.
type Answer = dyn Fn(u64, &[u8]) -> Option<Vec<u8>> + Send + Sync;

/// A line server of the test's own, a thread per connection, answering each line with
/// `answer(connection's message number, line)`; `None` closes the connection, and with
/// `reset` it closes with a reset.
fn test_server(
    answer: impl Fn(u64, &[u8]) -> Option<Vec<u8>> + Send + Sync + 'static,
    reset: bool,
) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = format!("tcp://{}", listener.local_addr().unwrap());
    let answer = Arc::new(answer);
    std::thread::spawn(move || {
        // Bounded: a test makes far fewer connections than this.
        for conn in listener.incoming().take(20_000) {
            let Ok(conn) = conn else { continue };
            let answer = answer.clone();
            std::thread::spawn(move || serve_lines(conn, &*answer, reset));
        }
    });
    addr
}

fn serve_lines(conn: TcpStream, answer: &Answer, reset: bool) {
    conn.set_nodelay(true).unwrap();
    conn.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut out = conn.try_clone().unwrap();
    let mut lines = BufReader::new(conn);
    let mut line = Vec::new();
    for i in 1.. {
        line.clear();
        match lines.read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let body = line.strip_suffix(b"\n").unwrap_or(&line);
        match answer(i, body) {
            Some(mut reply) => {
                reply.push(b'\n');
                if out.write_all(&reply).is_err() {
                    return;
                }
            }
            None => {
                if reset {
                    socket2::SockRef::from(&out)
                        .set_linger(Some(Duration::ZERO))
                        .unwrap();
                }
                return;
            }
        }
    }
}

#[test]
fn wrong_replies_are_counted_and_fail_the_run() {
    let addr = test_server(
        |i, line| {
            Some(if i % 10 == 0 {
                line.to_vec()
            } else {
                upper(line)
            })
        },
        false,
    );
    let (code, r) = bench_json(&addr, &["--frame", "line", "--depth", "2"]);
    assert_eq!(code, Some(1), "{r}");
    let (good, bad) = (n(&r, "msgs"), n(&r, "mismatches"));
    assert!(bad > 0.0, "{r}");
    // One in ten is wrong (give or take the replies at the window's edges).
    let share = bad / (good + bad);
    assert!((0.05..0.15).contains(&share), "{share}: {r}");
    assert_eq!(n(&r, "errors"), 0.0, "{r}");
    // The human summary says the same, and the error line says what failed.
    let out = bench(
        &addr,
        &[
            "--no-store",
            "--duration",
            "500ms",
            "--warmup",
            "0s",
            "--frame",
            "line",
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("wrong replies"));
    assert!(String::from_utf8_lossy(&out.stderr).contains("wrong replies"));
}

#[test]
fn a_stall_shows_in_the_open_loop_and_hides_in_the_closed_loop() {
    // One stall of 600 ms, 500 ms after the first message.
    let stall = Duration::from_millis(600);
    let server = |started: Arc<std::sync::OnceLock<Instant>>, stalled: Arc<AtomicBool>| {
        move |_: u64, line: &[u8]| {
            let t0 = *started.get_or_init(Instant::now);
            if t0.elapsed() > Duration::from_millis(500) && !stalled.swap(true, Ordering::SeqCst) {
                std::thread::sleep(stall);
            }
            Some(upper(line))
        }
    };
    let open = test_server(server(Default::default(), Default::default()), false);
    let (code, r) = bench_json(
        &open,
        &[
            "--frame",
            "line",
            "--conns",
            "1",
            "--rate",
            "200",
            "--duration",
            "2s",
            "--warmup",
            "0s",
        ],
    );
    clean(code, &r);
    // About 120 requests fell due during the stall: each counts from when it was due.
    assert!(n(&r, "p99_us") >= 300_000.0, "open loop hid the stall: {r}");
    assert!(n(&r, "p90_us") >= 50_000.0, "open loop hid the stall: {r}");

    let closed = test_server(server(Default::default(), Default::default()), false);
    let (code, r) = bench_json(
        &closed,
        &[
            "--frame",
            "line",
            "--conns",
            "1",
            "--duration",
            "2s",
            "--warmup",
            "0s",
        ],
    );
    clean(code, &r);
    // The closed loop waited politely: one slow reply among thousands.
    assert!(n(&r, "max_us") >= 500_000.0, "{r}");
    assert!(n(&r, "p90_us") < 50_000.0, "{r}");
}

#[test]
fn connections_a_full_server_never_answers_are_reported_and_fail_the_run() {
    // 10 places, 30 clients: 20 connect (the kernel's backlog takes them) and wait all run.
    let s = ServerProcess::tcp("epoll", &["--no-store", "--max-conns", "10"]);
    let (code, r) = bench_json(&s.addr, &["--conns", "30", "--duration", "1s"]);
    assert_eq!(code, Some(1), "starved connections passed as clean: {r}");
    assert_eq!(n(&r, "errors"), 0.0, "{r}");
    assert_eq!(n(&r, "unserved_conns"), 20.0, "{r}");
    assert_eq!(n(&r, "replies_per_conn_min"), 0.0, "{r}");
    assert!(n(&r, "replies_per_conn_max") > 0.0, "{r}");
    // Each starved request waited from the load's start (1.2 s before the end), and its wait
    // is among the latencies.
    assert!(n(&r, "unanswered") >= 20.0, "{r}");
    assert!(n(&r, "oldest_unanswered_us") >= 1_100_000.0, "{r}");
    assert!(
        n(&r, "max_us") >= 1_100_000.0,
        "the starved requests hid: {r}"
    );
    // Measured on purpose, the same run exits 0; the summary says what happened.
    let out = bench(
        &s.addr,
        &[
            "--no-store",
            "--conns",
            "30",
            "--duration",
            "1s",
            "--warmup",
            "200ms",
            "--allow-unserved",
        ],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("served      20 of 30 connections asked and got no reply; replies per connection min 0,"),
        "{text}"
    );
}

#[test]
fn runs_made_at_once_merge_into_one_report() {
    let s = ServerProcess::tcp("epoll", &["--no-store"]);
    let dir = scratch("merge");
    // Two load generators at once, as two machines would run them.
    let other = {
        let (addr, dir) = (s.addr.clone(), dir.clone());
        std::thread::spawn(move || {
            let (code, r) = bench_json(&addr, &["--conns", "3"]);
            std::fs::write(dir.join("a.json"), r.to_string()).unwrap();
            (code, r)
        })
    };
    let (code, b) = bench_json(&s.addr, &["--conns", "5"]);
    std::fs::write(dir.join("b.json"), b.to_string()).unwrap();
    let (code_a, a) = other.join().unwrap();
    clean(code, &b);
    clean(code_a, &a);
    let (a_json, b_json) = (dir.join("a.json"), dir.join("b.json"));
    let merged = switchboard_ok(&[
        "runs",
        "merge",
        a_json.to_str().unwrap(),
        b_json.to_str().unwrap(),
        "--json",
    ]);
    let m: Value = serde_json::from_str(&merged).unwrap();
    // Counts and throughput add up; each percentile lies between the two runs' own.
    assert_eq!(n(&m, "conns"), 8.0, "{m}");
    assert_eq!(n(&m, "msgs"), n(&a, "msgs") + n(&b, "msgs"), "{m}");
    let sum = n(&a, "msgs_per_s") + n(&b, "msgs_per_s");
    assert!((n(&m, "msgs_per_s") - sum).abs() < 1e-6 * sum, "{m}");
    for key in ["p50_us", "p99_us", "max_us"] {
        let (lo, hi) = (n(&a, key).min(n(&b, key)), n(&a, key).max(n(&b, key)));
        assert!((lo..=hi).contains(&n(&m, key)), "{key}: {m}");
    }
    assert_eq!(n(&m, "unserved_conns"), 0.0, "{m}");
    // Their timelines merge second by second, and still add up to the whole.
    let merged_seconds: f64 = m["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| n(s, "replies"))
        .sum();
    assert_eq!(merged_seconds, n(&m, "msgs"), "{m}");
    // The same from standard input, as text; and a file that is not a report, a clear error.
    let both = format!("{}\n{}\n", a, b);
    let mut child = Command::new(bin())
        .args(["runs", "merge", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(both.as_bytes())
        .unwrap();
    let text = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.starts_with("merged 2 runs\nbench "), "{text}");
    std::fs::write(dir.join("bad.json"), "{}").unwrap();
    let bad = Command::new(bin())
        .current_dir(&dir)
        .args(["runs", "merge", "bad.json"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr)
        .contains("bad.json is not a `switchboard bench --json` report"));
}

#[test]
fn the_timeline_shows_each_second_and_adds_up_to_the_run() {
    // A server that stalls once for 600 ms, 1.2 s into the load: in the window's second second.
    let started: Arc<std::sync::OnceLock<Instant>> = Default::default();
    let stalled = Arc::new(AtomicBool::new(false));
    let addr = test_server(
        move |_: u64, line: &[u8]| {
            let t0 = *started.get_or_init(Instant::now);
            if t0.elapsed() > Duration::from_millis(1200) && !stalled.swap(true, Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(600));
            }
            Some(upper(line))
        },
        false,
    );
    let dir = scratch("timeline");
    let file = dir.join("timeline.jsonl");
    let (code, r) = bench_json(
        &addr,
        &[
            "--frame",
            "line",
            "--conns",
            "1",
            "--duration",
            "3s",
            "--warmup",
            "0s",
            "--timeline",
            file.to_str().unwrap(),
        ],
    );
    clean(code, &r);
    let lines = std::fs::read_to_string(&file).unwrap();
    let seconds: Vec<Value> = lines
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(seconds.len(), 3, "{lines}");
    let replies: f64 = seconds.iter().map(|s| n(s, "replies")).sum();
    assert_eq!(replies, n(&r, "msgs"), "{lines}");
    for (i, s) in seconds.iter().enumerate() {
        assert_eq!(n(s, "second"), i as f64);
        assert_eq!(n(s, "errors"), 0.0);
    }
    // The stall is in the second it happened in, and only there.
    assert!(n(&seconds[1], "max_us") >= 500_000.0, "{lines}");
    assert!(n(&seconds[0], "max_us") < 300_000.0, "{lines}");
    assert!(n(&seconds[2], "max_us") < 300_000.0, "{lines}");
}

#[test]
fn closed_and_reset_connections_are_errors_by_kind() {
    let closing = test_server(|i, line| (i <= 3).then(|| upper(line)), false);
    let (code, r) = bench_json(&closing, &["--frame", "line"]);
    assert_eq!(code, Some(1), "{r}");
    assert_eq!(
        n(&r, "errors"),
        4.0,
        "each of the 4 connections failed once: {r}"
    );
    assert_eq!(r["errors_by_kind"]["closed"], 4, "{r}");

    let resetting = test_server(|i, line| (i <= 3).then(|| upper(line)), true);
    let (code, r) = bench_json(&resetting, &["--frame", "line", "--reconnect"]);
    assert_eq!(code, Some(1), "{r}");
    assert!(
        r["errors_by_kind"]["reset"].as_f64().unwrap_or(0.0) > 4.0,
        "{r}"
    );
    assert!(
        n(&r, "connected") > 4.0,
        "--reconnect opened new connections: {r}"
    );
    assert!(n(&r, "msgs") > 0.0, "{r}");
}

#[test]
fn a_server_that_is_not_there_is_one_clear_error() {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = bench(&format!("tcp://127.0.0.1:{port}"), &["--no-store"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot reach") && err.contains("switchboard serve"),
        "{err}"
    );
}

#[test]
fn connections_past_what_processes_can_hold_are_a_clear_error_and_sources_are_used() {
    let dir = scratch("bench-sources");
    let s = ServerProcess::start_in(&dir, "tcp://127.0.0.1:0", &["--model", "epoll"]);
    // More connections than one process may have files: said before anything is tried.
    let out = bench(
        &s.addr,
        &["--no-store", "--conns", "1000000", "--rate", "10"],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("open files") && err.contains("at most 32"),
        "{err}"
    );
    // --source: connections come from the addresses given, in turn.
    let (code, report) = bench_json(&s.addr, &["--source", "127.0.0.2", "--source", "127.0.0.3"]);
    clean(code, &report);
    assert_eq!(
        report["sources"],
        serde_json::json!(["127.0.0.2", "127.0.0.3"])
    );
    drop(s.terminate());
    let sessions = ask_store(&dir, &["sessions", "--json"]);
    for source in ["tcp://127.0.0.2:", "tcp://127.0.0.3:"] {
        assert!(sessions.contains(source), "{source}: {sessions}");
    }
    // Only the probe before the run (a bare connect, no message) came from elsewhere.
    for line in sessions.lines().filter(|l| l.contains("tcp://127.0.0.1:")) {
        assert!(line.contains("\"msgs_in\":0"), "{line}");
    }
}

#[test]
fn connections_past_one_process_are_spread_over_processes_and_sources() {
    let dir = scratch("bench-shards");
    let s = ServerProcess::start_in(
        &dir,
        "tcp://127.0.0.1:0",
        &["--model", "epoll", "--record", "messages"],
    );
    // Open files for 136 connections per process (200 less the 64 kept for other uses):
    // 500 connections take 4 processes, each from a loopback address of its own.
    let mut bench = Command::new(bin());
    bench
        .args(["bench", &s.addr, "--json", "--no-store", "--conns", "500"])
        .args(["--rate", "2000", "--duration", "1s", "--warmup", "500ms"])
        .stdin(Stdio::null());
    limit_open_files(&mut bench, 200);
    let out = bench.output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("so 4 processes run them: 125 connections from 127.0.0.1, 127.0.0.2, 127.0.0.3, 127.0.0.4"),
        "{err}"
    );
    let report: Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {err}"));
    clean(out.status.code(), &report);
    assert_eq!(n(&report, "processes"), 4.0, "{report}");
    assert_eq!(n(&report, "connected"), 500.0, "{report}");
    assert_eq!(n(&report, "conns"), 500.0, "{report}");
    assert_eq!(
        report["sources"],
        serde_json::json!(["127.0.0.1", "127.0.0.2", "127.0.0.3", "127.0.0.4"])
    );
    // About 2,000 a second in all over the 1 s window, from one histogram of every reply.
    assert!((1500.0..2500.0).contains(&n(&report, "msgs")), "{report}");
    assert!(n(&report, "p50_us") <= n(&report, "p99_us"), "{report}");
    let (_, summary) = s.terminate();
    // Each process's 125 connections and its probe.
    assert!(
        summary.starts_with("served 504 connections (0 errors)"),
        "{summary}"
    );
    let sessions = ask_store(&dir, &["sessions", "--json", "--last", "1000"]);
    // Every process made all its connections before any sent a request: the load starts once
    // all 500 are made.
    let last_opened = times(&sessions, "opened_us").max().unwrap();
    let messages = ask_store(&dir, &["messages", "--json", "--last", "100000"]);
    let first_message = times(&messages, "at_us").min().unwrap();
    assert!(
        first_message > last_opened,
        "a request came {} µs before the last connection",
        last_opened - first_message
    );
    assert!(n(&report, "connect_secs") > 0.0, "{report}");
    for source in 1..=4 {
        let from = format!("\"peer\":\"tcp://127.0.0.{source}:");
        let with_messages = sessions
            .lines()
            .filter(|l| l.contains(&from) && !l.contains("\"msgs_in\":0"))
            .count();
        assert_eq!(with_messages, 125, "from 127.0.0.{source}");
    }
}

/// Field `key` (microseconds) of every JSON line of `lines`.
fn times<'a>(lines: &'a str, key: &'a str) -> impl Iterator<Item = i64> + 'a {
    lines.lines().map(move |l| {
        serde_json::from_str::<Value>(l).unwrap()[key]
            .as_i64()
            .unwrap()
    })
}

#[test]
fn bad_options_are_usage_errors() {
    let s = ServerProcess::tcp("threads", &["--no-store"]);
    for args in [
        &["--conns", "0"][..],
        &["--size", "0"],
        &["--rate", "-5"],
        &["--duration", "soon"],
        &["--frame", "line", "--message", "two\nlines"],
        &["--expect", "lower"],
    ] {
        let mut all = vec!["--no-store"];
        all.extend_from_slice(args);
        let out = bench(&s.addr, &all);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn each_run_lands_in_bench_runs_and_runs_lists_it() {
    let s = ServerProcess::tcp("epoll", &["--no-store"]);
    let dir = scratch("bench-store");
    let store = format!("sqlite://{}/runs.db", dir.display());
    for label in ["first", "second"] {
        let out = bench(
            &s.addr,
            &[
                "--store",
                &store,
                "--label",
                label,
                "--duration",
                "500ms",
                "--warmup",
                "0s",
                "--conns",
                "3",
            ],
        );
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let rows: Vec<Value> = switchboard_ok(&["runs", "--store", &store, "--json"])
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert_eq!(rows[0]["model"], "second", "newest first");
    assert_eq!(rows[1]["model"], "first");
    for row in &rows {
        assert_eq!(row["address"], s.addr.as_str());
        assert_eq!(row["conns"], 3);
        assert!(row["msgs_per_s"].as_f64().unwrap() > 0.0, "{row}");
        assert!(row["lab"].is_null());
    }
    let table = Command::new(bin())
        .args(["runs", "--store", &store, "--last", "1"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&table.stdout);
    assert_eq!(text.lines().count(), 2, "a header and one run: {text}");
    assert!(text.contains("second") && text.contains("MSGS/S"), "{text}");
}

#[test]
fn the_bench_closes_its_connections_in_order_so_the_server_sees_no_reset() {
    for (model, extra) in [
        ("epoll", &[][..]),
        ("threads", &["--depth", "4"][..]),
        ("uring", &["--rate", "400"][..]),
    ] {
        let s = ServerProcess::stream(model, "tcp", &["--frame", "line"]);
        let mut args = vec!["--frame", "line"];
        args.extend_from_slice(extra);
        let (code, report) = bench_json(&s.addr, &args);
        clean(code, &report);
        let dir = s.dir.clone();
        let (status, _) = s.terminate();
        assert!(status.success());
        // Every connection ended with the bench's FIN, none with a reset.
        let stats = ask_store(&dir, &["stats"]);
        assert!(
            stats.contains("eof=") && !stats.contains("reset"),
            "{model}: {stats}"
        );
    }
}
