//! `switchboard lesson`: each lesson run as a learner would, its `--json` parsed, and the sense
//! of its figures checked (the glued messages really came in one recv, send really returned
//! less, the second client really waited), never their speed; an interrupted lesson leaves
//! nothing behind.

mod common;

use common::*;
use serde_json::Value;
use std::process::{Command, Stdio};
use std::time::Duration;

/// Runs `switchboard lesson NAME --json ARGS`: its figures.
fn lesson(name: &str, args: &[&str]) -> Value {
    let out = Command::new(bin())
        .args(["lesson", name, "--json"])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "lesson {name}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let record: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(record["lesson"], name);
    assert!(!record["shows"].as_str().unwrap().is_empty());
    assert!(!record["code"].as_array().unwrap().is_empty());
    assert!(!record["steps"].as_array().unwrap().is_empty());
    record["figures"].clone()
}

#[test]
fn the_list_names_every_lesson_in_the_plans_order() {
    let out = Command::new(bin()).arg("lesson").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    let names = [
        "phone",
        "layers",
        "calls",
        "sendall",
        "glue",
        "loops",
        "backlog",
        "one-at-a-time",
        "io-models",
        "c10k",
        "socketserver",
        "data",
    ];
    let at: Vec<usize> = names
        .iter()
        .map(|n| {
            text.find(&format!(". {n:<14} "))
                .unwrap_or_else(|| panic!("{n} in {text}"))
        })
        .collect();
    assert!(at.windows(2).all(|w| w[0] < w[1]), "in order: {text}");
}

#[test]
fn an_unknown_lesson_is_a_usage_error_naming_the_lessons() {
    let out = Command::new(bin())
        .args(["lesson", "nope"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("phone"));
}

#[test]
fn the_phone_answers_the_plans_client() {
    let f = lesson("phone", &[]);
    assert_eq!(f["replies"], serde_json::json!(["HELLO", "WORLD"]));
    assert!(f["port"].as_u64().unwrap() > 0);
}

#[test]
fn the_other_socket_calls_each_work() {
    let f = lesson("calls", &[]);
    assert_eq!(f["connect_ex_errno"], libc::ECONNREFUSED);
    assert_eq!(f["rebind_without_reuseaddr_errno"], libc::EADDRINUSE);
    assert_eq!(f["rebind_with_reuseaddr_errno"], 0);
    assert_eq!(f["nonblocking_recv_errno"], libc::EAGAIN);
    assert!(f["settimeout_fired_after_s"].as_f64().unwrap() >= 0.15);
    assert_eq!(
        f["makefile_lines"],
        serde_json::json!(["one", "two", "three"])
    );
}

#[test]
fn send_returns_less_and_sendall_sends_it_all() {
    let f = lesson("sendall", &[]);
    assert!(f["first_send_bytes"].as_u64().unwrap() < 1 << 20);
    assert!(f["sends_in_all"].as_u64().unwrap() > 2);
}

#[test]
fn messages_glue_and_framings_cut_them_apart() {
    let f = lesson("glue", &[]);
    assert_eq!(f["two_sends_first_recv"], "helloworld");
    assert!(f["large_message_recvs"].as_u64().unwrap() > 1);
    assert_eq!(f["line_frames"], serde_json::json!(["hello", "world"]));
    assert_eq!(f["len_frames"], serde_json::json!(["hello", "world"]));
}

#[test]
fn the_plans_loop_spins_and_the_fixed_one_serves_the_next_client() {
    let f = lesson("loops", &[]);
    assert!(f["empty_recvs_in_spin"].as_u64().unwrap() > 1);
    assert_eq!(f["fixed_loop_recvs"], 2);
}

#[test]
fn a_small_backlog_drops_a_burst_that_a_large_one_takes() {
    let f = lesson("backlog", &[]);
    assert!(f["listen_5_retried"].as_u64().unwrap() > 0, "{f}");
    assert_eq!(f["listen_1024_retried"], 0, "{f}");
}

#[test]
fn the_iterative_server_keeps_the_second_client_waiting() {
    let f = lesson("one-at-a-time", &[]);
    assert!(
        f["iterative_second_client_waited_ms"].as_u64().unwrap() >= 300,
        "{f}"
    );
    assert!(
        f["threads_second_client_waited_ms"].as_u64().unwrap() < 300,
        "{f}"
    );
    assert!(
        f["fork_second_client_waited_ms"].as_u64().unwrap() < 300,
        "{f}"
    );
}

#[test]
fn the_data_lesson_records_and_answers_its_questions() {
    let f = lesson("data", &[]);
    assert_eq!(f["sessions_recorded"], 3);
    assert_eq!(f["questions_answered"], 5);
    if let Some(url) = mysql_url() {
        let f = lesson("data", &["--store", &url]);
        assert!(f["sessions_recorded"].as_u64().unwrap() >= 3);
    }
}

#[test]
fn the_layers_lesson_unwraps_a_frame() {
    // SAFETY: geteuid takes nothing and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        assert!(std::env::var_os("SWITCHBOARD_REQUIRE_CAPTURE").is_none());
        eprintln!("skipped: capturing packets needs root");
        return;
    }
    let f = lesson("layers", &[]);
    let sum = [
        "ethernet_header_bytes",
        "ip_header_bytes",
        "tcp_header_bytes",
        "message_bytes",
    ]
    .iter()
    .map(|k| f[k].as_u64().unwrap())
    .sum::<u64>();
    assert_eq!(f["frame_bytes"].as_u64().unwrap(), sum);
    assert_eq!(f["message_bytes"], 5);
    assert!(f["packets"].as_u64().unwrap() >= 7);
}

#[test]
fn an_interrupted_lesson_leaves_nothing_behind() {
    let child = Command::new(bin())
        .args(["lesson", "one-at-a-time"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let dir = std::env::temp_dir().join(format!("switchboard-lesson-one-at-a-time-{pid}"));
    std::thread::sleep(Duration::from_millis(400));
    // SAFETY: kill(2) on our own child, not yet reaped.
    unsafe { libc::kill(pid as i32, libc::SIGINT) };
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("interrupted"), "{stderr}");
    assert!(!dir.exists(), "its directory is removed");
    // No server it started is left: none has the lesson's directory as its working directory.
    let left: Vec<String> = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|p| std::fs::read_link(p.path().join("cwd")).ok())
        .map(|cwd| cwd.display().to_string())
        .filter(|cwd| cwd.starts_with(&dir.display().to_string()))
        .collect();
    assert!(
        left.is_empty(),
        "processes left in {}: {left:?}",
        dir.display()
    );
}

#[test]
fn an_interrupted_measurement_lesson_stops_at_the_next_measurement() {
    let child = Command::new(bin())
        .args(["lesson", "io-models"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let pid = child.id() as i32;
    // SAFETY: kill(2) on our own child, not yet reaped.
    unsafe { libc::kill(pid, libc::SIGINT) };
    let began = std::time::Instant::now();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("interrupted"), "{stderr}");
    // At most the measurement under way finishes (about 3 s), not the other four.
    assert!(
        began.elapsed() < Duration::from_secs(10),
        "took {:?}",
        began.elapsed()
    );
}

fn root() -> bool {
    // SAFETY: geteuid takes nothing and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

#[test]
fn the_io_models_lesson_counts_what_each_model_spends() {
    let f = lesson("io-models", &[]);
    for model in ["threads", "nonblocking", "epoll", "sigio", "uring"] {
        assert!(
            f[format!("{model}_50_msgs_per_s")].as_f64().unwrap() > 0.0,
            "{model}: {f}"
        );
    }
    if root() {
        let per = |k: &str| f[k].as_f64().unwrap_or_else(|| panic!("{k}: {f}"));
        // A thread per connection switches at every reply; an event loop hardly ever (tests
        // running beside it add switches of their own, so only the order is checked).
        assert!(
            per("threads_50_switches_per_msg") > per("epoll_50_switches_per_msg"),
            "{f}"
        );
        // io_uring hands the kernel the IO itself: fewer system calls per reply than epoll's
        // read, write and wait; signals cost one more call each.
        assert!(
            per("uring_50_syscalls_per_msg") < per("epoll_50_syscalls_per_msg"),
            "{f}"
        );
        assert!(
            per("sigio_50_syscalls_per_msg") > per("epoll_50_syscalls_per_msg"),
            "{f}"
        );
    }
}

#[test]
fn the_c10k_lesson_shows_threads_cost_more_memory_per_connection() {
    let f = lesson("c10k", &[]);
    let threads = f["threads_10000_rss_bytes_per_conn"].as_f64();
    let epoll = f["epoll_10000_rss_bytes_per_conn"].as_f64();
    assert!(threads.is_some(), "{f}");
    if let (Some(t), Some(e)) = (threads, epoll) {
        assert!(t > 4.0 * e, "{f}");
    }
}

#[test]
fn the_socketserver_lesson_runs_the_plans_python_beside_its_copies() {
    if std::process::Command::new("python3")
        .arg("--version")
        .output()
        .is_err()
    {
        assert!(
            std::env::var_os("SWITCHBOARD_REQUIRE_MYSQL").is_none(),
            "python3 is missing"
        );
        eprintln!("skipped: python3 is missing");
        return;
    }
    let f = lesson("socketserver", &[]);
    for server in ["ThreadingTCPServer", "threads", "ForkingTCPServer", "fork"] {
        assert!(
            f[format!("{server}_100_msgs_per_s")].as_f64().unwrap() > 0.0,
            "{server}: {f}"
        );
    }
}

fn mysql_url() -> Option<String> {
    std::env::var("SWITCHBOARD_TEST_MYSQL")
        .ok()
        .filter(|u| !u.is_empty())
}
