//! The store on a real MariaDB server. `scripts/test.sh` starts one and names it in
//! `SWITCHBOARD_TEST_MYSQL`; without it these tests say so and pass, unless
//! `SWITCHBOARD_REQUIRE_MYSQL` is set (as `scripts/test.sh` sets it).

mod common;

use common::*;
use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::thread;
use std::time::Duration;
use switchboard::store::{self, StoreUrl};

/// The test database's URL, or `None` (after saying why) to skip.
fn mysql_url() -> Option<String> {
    match std::env::var("SWITCHBOARD_TEST_MYSQL") {
        Ok(url) => Some(url),
        Err(_) => {
            assert!(
                std::env::var_os("SWITCHBOARD_REQUIRE_MYSQL").is_none(),
                "SWITCHBOARD_TEST_MYSQL is not set: run scripts/test.sh, which starts MariaDB"
            );
            eprintln!(
                "SWITCHBOARD_TEST_MYSQL is not set: skipping (scripts/test.sh starts MariaDB)"
            );
            None
        }
    }
}

fn open(url: &str) -> store::Store {
    store::open(&url.parse::<StoreUrl>().unwrap()).unwrap()
}

/// The totals of the instance that served `addr` (tests share the database, so each finds
/// its own server by its address).
/// The newest instance that served `addr` (an earlier run's server may have had its port).
fn instance(url: &str, addr: &str) -> store::InstanceStats {
    let all = open(url).stats().unwrap();
    all.into_iter()
        .rev()
        .find(|s| s.address == addr)
        .unwrap_or_else(|| panic!("no instance served {addr}"))
}

fn serve_with(model: &str, url: &str, extra: &[&str]) -> ServerProcess {
    let mut args = vec!["--store", url, "--frame", "line"];
    args.extend_from_slice(extra);
    ServerProcess::stream(model, "tcp", &args)
}

fn talk(s: &ServerProcess, conns: usize) {
    for i in 0..conns {
        let mut c = s.connect();
        c.write_all(format!("conn {i}\n").as_bytes()).unwrap();
        assert_eq!(recv_line(&mut c), format!("CONN {i}").as_bytes());
    }
}

/// A MariaDB of the test's own in `dir`, driven by `scripts/mariadb.sh`: `start` (returns its
/// URL; again over the same `dir`, the same data and port) or `stop`.
fn private_mariadb(dir: &Path) -> impl Fn(&str) -> String + '_ {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/mariadb.sh");
    move |cmd: &str| {
        let out = Command::new(&script)
            .arg(cmd)
            .arg(dir.join("db"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "mariadb.sh {cmd}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

#[test]
fn the_schema_is_created_and_kept() {
    let Some(url) = mysql_url() else { return };
    assert_eq!(open(&url).version().unwrap(), 5);
    assert_eq!(
        open(&url).version().unwrap(),
        5,
        "a second open migrates nothing"
    );
}

#[test]
fn the_messages_command_reads_every_option_back() {
    let Some(url) = mysql_url() else { return };
    check_messages_command(&url);
}

#[test]
fn every_model_records_each_session_exactly() {
    let Some(url) = mysql_url() else { return };
    // Every model there is: a new one is covered without a line here.
    for model in switchboard::Model::ALL.iter().map(|m| m.name()) {
        let s = serve_with(model, &url, &[]);
        talk(&s, 4);
        let addr = s.addr.clone();
        let (status, summary) = s.terminate();
        assert!(status.success(), "{model}");
        assert!(summary.contains("served 4 connections"), "{summary}");
        let stats = instance(&url, &addr);
        assert_eq!(
            (stats.model.as_str(), stats.sessions, stats.messages),
            (model, 4, 4),
            "{model}"
        );
        assert_eq!(
            (stats.written, stats.spooled, stats.dropped),
            (Some(4), Some(0), Some(0)),
            "{model}"
        );
        assert_eq!(
            stats.bytes_in,
            (0..4)
                .map(|i| format!("conn {i}\n").len() as u64)
                .sum::<u64>(),
            "{model}"
        );
    }
}

#[test]
fn messages_come_back_byte_for_byte() {
    let Some(url) = mysql_url() else { return };
    let s = ServerProcess::stream(
        "epoll",
        "unix",
        &["--store", &url, "--frame", "len", "--record", "messages"],
    );
    let sent: Vec<Vec<u8>> = vec![
        (0..=255).collect(),
        "héllo\0wörld".into(),
        vec![b'x'; 100_000],
    ];
    let mut c = s.connect();
    for m in &sent {
        send_len(&mut c, m);
        assert_eq!(recv_len(&mut c), upper(m));
    }
    drop(c);
    let addr = s.addr.clone();
    assert!(s.terminate().0.success());
    let stats = instance(&url, &addr);
    let mut db = open(&url);
    let messages = db.messages(&stats.instance, 1).unwrap();
    assert_eq!(messages.len(), 3);
    for (m, want) in messages.iter().zip(&sent) {
        assert_eq!((&m.request, &m.reply), (want, &upper(want)));
    }
}

#[test]
fn two_instances_at_once_share_the_database() {
    let Some(url) = mysql_url() else { return };
    let a = serve_with("threads", &url, &[]);
    let b = serve_with("epoll", &url, &[]);
    talk(&a, 3);
    talk(&b, 5);
    let (addr_a, addr_b) = (a.addr.clone(), b.addr.clone());
    assert!(a.terminate().0.success());
    assert!(b.terminate().0.success());
    let (sa, sb) = (instance(&url, &addr_a), instance(&url, &addr_b));
    assert_eq!((sa.model.as_str(), sa.sessions), ("threads", 3));
    assert_eq!((sb.model.as_str(), sb.sessions), ("epoll", 5));
    assert_ne!(sa.instance, sb.instance, "told apart by instance id");
    // `stats` adds them up per instance, one line each.
    let out = Command::new(bin())
        .args(["stats", "--store", &url])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!(
            "{} (threads on {addr_a}): 3 sessions",
            sa.instance
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!("{} (epoll on {addr_b}): 5 sessions", sb.instance)),
        "{text}"
    );
    assert!(text.starts_with("all "), "a total line first: {text}");
}

#[test]
fn a_refusing_database_is_a_usage_error_at_start() {
    let Some(url) = mysql_url() else { return };
    let wrong = url.replacen("switchboard:switchboard@", "switchboard:wrong@", 1);
    let out = Command::new(bin())
        .args(["serve", "tcp://127.0.0.1:0", "--store", &wrong])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("Access denied") && !err.contains("wrong@"),
        "says why, hides the password: {err}"
    );
    assert!(
        err.contains("check the user and password in the URL") && !err.contains("MySqlError"),
        "says what to check, once, in words: {err}"
    );
    // Nothing listening: says where it tried and what to check.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = Command::new(bin())
        .args(["messages", "--store"])
        .arg(format!(
            "mysql://switchboard:switchboard@127.0.0.1:{port}/switchboard"
        ))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("could not connect to 127.0.0.1:{port}"))
            && err.contains("is MySQL or MariaDB listening there?")
            && !err.contains("DriverError"),
        "{err}"
    );
}

/// Its own MariaDB, stopped and started again while a server records into it.
#[test]
fn mariadb_stopped_mid_load_and_restarted_loses_nothing_and_doubles_nothing() {
    if mysql_url().is_none() {
        return;
    }
    let dir = scratch("mariadb-restart");
    let mariadb = private_mariadb(&dir);
    let url = mariadb("start");
    let s = serve_with("epoll", &url, &[]);
    let addr = s.sockaddr().to_string();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let (addr, stop) = (addr.clone(), stop.clone());
            thread::spawn(move || {
                let mut done = 0u64;
                // Short connections until told to stop (at most 20,000 each).
                while !stop.load(std::sync::atomic::Ordering::Relaxed) && done < 20_000 {
                    let mut c = std::net::TcpStream::connect(&addr).unwrap();
                    c.write_all(b"x\n").unwrap();
                    let mut b = [0u8; 2];
                    std::io::Read::read_exact(&mut c, &mut b).unwrap();
                    done += 1;
                }
                done
            })
        })
        .collect();
    thread::sleep(Duration::from_millis(400));
    mariadb("stop");
    thread::sleep(Duration::from_millis(800));
    mariadb("start");
    thread::sleep(Duration::from_millis(1500));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let sent: u64 = clients.into_iter().map(|c| c.join().unwrap()).sum();
    let server_dir = s.dir.clone();
    let addr = s.addr.clone();
    let (status, summary) = s.terminate();
    assert!(status.success(), "{summary}");
    assert!(
        summary.contains(&format!("served {sent} connections")),
        "{sent}: {summary}"
    );
    let stats = instance(&url, &addr);
    assert_eq!(stats.sessions, sent, "every session arrived, none twice");
    assert_eq!(stats.written, Some(sent));
    assert!(
        stats.spooled.unwrap_or(0) > 0,
        "some went through the spool: {stats:?}"
    );
    let leftovers: Vec<_> = std::fs::read_dir(&server_dir)
        .unwrap()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("switchboard-spool")
        })
        .collect();
    assert!(
        leftovers.is_empty(),
        "the spool is gone once replayed: {leftovers:?}"
    );
    mariadb("stop");
}

#[test]
fn a_spool_left_while_the_database_was_away_is_replayed_by_the_next_server() {
    if mysql_url().is_none() {
        return;
    }
    let dir = scratch("leftover-spool");
    let mariadb = private_mariadb(&dir);
    let url = mariadb("start");
    let work = dir.join("work");
    std::fs::create_dir_all(&work).unwrap();
    let first = ServerProcess::start_in(
        &work,
        "tcp://127.0.0.1:0",
        &["--store", &url, "--frame", "line"],
    );
    mariadb("stop");
    talk(&first, 7); // recorded while the database is away: into the spool
    let first_addr = first.addr.clone();
    assert!(
        first.terminate().0.success(),
        "a stop with the database away still exits 0"
    );
    let spools = || {
        std::fs::read_dir(&work)
            .unwrap()
            .flatten()
            .filter(|e| {
                e.file_name()
                    .to_string_lossy()
                    .starts_with("switchboard-spool")
            })
            .count()
    };
    assert!(spools() > 0, "the spool is kept while the database is away");
    mariadb("start");
    let second = ServerProcess::start_in(&work, "tcp://127.0.0.1:0", &["--store", &url]);
    assert!(second.terminate().0.success());
    let stats = instance(&url, &first_addr);
    assert_eq!(
        stats.sessions, 7,
        "the first server's sessions arrived, once each"
    );
    assert_eq!(spools(), 0, "and its spool is gone");
    mariadb("stop");
}
