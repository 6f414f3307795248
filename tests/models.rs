//! What single models promise beyond the conformance suite: process models reap and restart
//! their children, `select` refuses what it cannot hold, `epoll` keeps its connections in file
//! tables of its reactors' own.

mod common;

use common::*;
use std::io::Write;
use std::time::{Duration, Instant};

/// The children of `parent`, with their state letter from /proc (`Z` for a zombie).
fn children_of(parent: u32) -> Vec<(u32, char)> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // After the ")" that ends the command name: state, then the parent's pid.
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let mut fields = rest.split_whitespace();
        let state = fields.next().and_then(|s| s.chars().next()).unwrap_or('?');
        if fields.next().and_then(|p| p.parse::<u32>().ok()) == Some(parent) {
            found.push((pid, state));
        }
    }
    found
}

/// Waits (bounded) until `done` holds for the children of `parent`; returns them.
fn wait_children(parent: u32, done: impl Fn(&[(u32, char)]) -> bool) -> Vec<(u32, char)> {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let children = children_of(parent);
        if done(&children) {
            return children;
        }
        assert!(
            Instant::now() < deadline,
            "children never settled: {children:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn request(s: &ServerProcess, msg: &str) {
    let mut c = s.connect();
    c.write_all(format!("{msg}\n").as_bytes()).unwrap();
    assert_eq!(recv_line(&mut c), msg.to_uppercase().as_bytes());
}

#[test]
fn fork_leaves_no_zombie_after_200_connections() {
    let s = ServerProcess::tcp("fork", &["--frame", "line"]);
    for i in 0..200 {
        request(&s, &format!("call {i}"));
    }
    // Every child ends with its connection and is reaped: none is left, zombie or not.
    wait_children(s.child.id(), |c| c.is_empty());
    let (status, summary) = s.terminate();
    assert!(status.success());
    assert!(
        summary.contains("served 200 connections (0 errors), 200 messages"),
        "{summary}"
    );
}

#[test]
fn fork_bounds_its_children() {
    let s = ServerProcess::tcp("fork", &["--frame", "line", "--max-children", "2"]);
    let held: Vec<TestConn> = (0..2).map(|_| s.connect()).collect();
    wait_children(s.child.id(), |c| c.len() == 2);
    let mut third = s.connect(); // accepted by the kernel, not yet by the server
    third.write_all(b"waiting\n").unwrap();
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        children_of(s.child.id()).len(),
        2,
        "no third child while two are busy"
    );
    drop(held);
    assert_eq!(recv_line(&mut third), b"WAITING");
}

#[test]
fn prefork_restarts_a_killed_worker_and_still_serves() {
    let s = ServerProcess::tcp("prefork", &["--frame", "line", "--workers", "2"]);
    let workers = wait_children(s.child.id(), |c| c.len() == 2);
    let victim = workers[0].0;
    // SAFETY: kill(2) on a worker of our own server.
    assert_eq!(unsafe { libc::kill(victim as i32, libc::SIGKILL) }, 0);
    for i in 0..20 {
        request(&s, &format!("still here {i}"));
    }
    let after = wait_children(s.child.id(), |c| {
        c.len() == 2 && c.iter().all(|&(pid, st)| pid != victim && st != 'Z')
    });
    assert!(after.iter().all(|&(pid, _)| pid != victim));
    let (status, summary) = s.terminate();
    assert!(status.success());
    assert!(
        summary.contains("served 20 connections (0 errors), 20 messages"),
        "{summary}"
    );
}

#[test]
fn prefork_workers_drain_on_sigterm() {
    let s = ServerProcess::tcp(
        "prefork",
        &["--frame", "line", "--workers", "2", "--drain", "10"],
    );
    wait_children(s.child.id(), |c| c.len() == 2);
    let mut open = s.connect();
    request(&s, "warm");
    open.write_all(b"before\n").unwrap();
    assert_eq!(recv_line(&mut open), b"BEFORE");
    s.signal(libc::SIGTERM);
    s.wait_log("draining");
    open.write_all(b"during\n").unwrap();
    assert_eq!(recv_line(&mut open), b"DURING");
    drop(open);
    let mut s = s;
    let (status, summary) = s.wait_exit();
    assert!(status.success());
    assert!(
        summary.contains("served 2 connections (0 errors), 3 messages"),
        "{summary}"
    );
}

#[test]
fn select_refuses_fds_past_fd_setsize() {
    raise_fd_limit();
    let s = ServerProcess::tcp("select", &["--frame", "line"]);
    // More connections than an fd_set holds: the ones past it are closed, not corrupted.
    let conns: Vec<TestConn> = (0..1100).map(|_| s.connect()).collect();
    s.wait_log("FD_SETSIZE");
    let mut served = 0;
    let mut refused = 0;
    for mut c in conns {
        if c.write_all(b"x\n").is_ok() {
            c.set_timeouts(Some(Duration::from_secs(5)));
            let mut line = [0u8; 2];
            match std::io::Read::read(&mut c, &mut line) {
                Ok(2) => served += 1,
                _ => refused += 1,
            }
        } else {
            refused += 1;
        }
    }
    assert!(
        served >= 1000 && refused > 0,
        "served {served}, refused {refused}"
    );
    request(&s, "after");
}

#[test]
fn prefork_workers_do_not_outlive_a_killed_master() {
    let mut s = ServerProcess::tcp("prefork", &["--workers", "2"]);
    let workers = wait_children(s.child.id(), |c| c.len() == 2);
    s.child.kill().unwrap(); // SIGKILL: the master cannot stop them itself
    s.child.wait().unwrap();
    let deadline = Instant::now() + PATIENCE;
    for (pid, _) in workers {
        // Gone, or a zombie waiting for whoever adopted it: either way, not serving.
        while std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
            stat.rsplit_once(')')
                .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z'))
        }) {
            assert!(
                Instant::now() < deadline,
                "worker {pid} outlived its master"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

#[test]
fn several_epoll_and_async_workers_serve_like_one() {
    for (model, transport) in [("epoll", "tcp"), ("epoll", "unix"), ("async", "tcp")] {
        let s = ServerProcess::stream(model, transport, &["--frame", "line", "--workers", "3"]);
        let mut conns: Vec<TestConn> = (0..100).map(|_| s.connect()).collect();
        for (i, c) in conns.iter_mut().enumerate() {
            c.write_all(format!("worker check {i}\n").as_bytes())
                .unwrap();
        }
        for (i, c) in conns.iter_mut().enumerate() {
            assert_eq!(
                recv_line(c),
                format!("WORKER CHECK {i}").as_bytes(),
                "{model} {transport}"
            );
        }
        drop(conns);
        let (status, summary) = s.terminate();
        assert!(status.success());
        assert!(
            summary.contains("served 100 connections (0 errors), 100 messages"),
            "{model}: {summary}"
        );
    }
}

/// The processes working in `dir` (a server and its workers run in their test's own directory).
fn processes_in(dir: &std::path::Path) -> Vec<u32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let alive = std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
            s.rsplit_once(')')
                .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z'))
        });
        if alive && std::fs::read_link(format!("/proc/{pid}/cwd")).is_ok_and(|cwd| cwd == dir) {
            found.push(pid);
        }
    }
    found
}

#[test]
fn a_master_killed_while_its_workers_start_leaves_none_behind() {
    // A SIGTERM that reaches a worker before it is ready (here: the death of its master, at
    // once) must not be lost: the worker stops as soon as it can.
    for pause_ms in [0, 2, 5, 10, 20] {
        let mut s = ServerProcess::stream("prefork", "tcp", &["--workers", "2"]);
        std::thread::sleep(Duration::from_millis(pause_ms));
        s.child.kill().unwrap();
        s.child.wait().unwrap();
        let deadline = Instant::now() + PATIENCE;
        while !processes_in(&s.dir).is_empty() {
            assert!(
                Instant::now() < deadline,
                "workers outlived their master: {:?}",
                processes_in(&s.dir)
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// A server whose open files run out leaves new clients in the backlog and serves the
/// connections it has meanwhile; as those leave, the waiting clients are taken and served.
/// No client is lost and the server serves on.
#[test]
fn a_server_out_of_open_files_serves_its_clients_and_takes_the_waiting_ones_later() {
    const CLIENTS: usize = 100;
    for model in [
        "threads",
        "nonblocking",
        "poll",
        "epoll",
        "sigio",
        "async",
        "uring",
        "prefork",
    ] {
        // 48 files: the server's own (stdio, listener, event queue, runtime) and about 35
        // connections. One prefork worker, so one process holds them all.
        let s = ServerProcess::start_with(
            &scratch("files"),
            "tcp://127.0.0.1:0",
            &["--model", model, "--no-store", "--workers", "1"],
            Some(48),
        );
        let mut waiting: Vec<(usize, TestConn)> = (0..CLIENTS)
            .map(|i| {
                let mut c = s.connect();
                c.write_all(format!("client {i}").as_bytes()).unwrap();
                (i, c)
            })
            .collect();
        s.wait_log("accept failed");
        let full_since = Instant::now();
        std::thread::sleep(Duration::from_secs(1)); // full for a while: said once a second at most
                                                    // Answered while the server has no files to spare: the ones it took.
        let answered_first = take_answered(&mut waiting);
        assert!(
            !answered_first.is_empty() && answered_first.len() < CLIENTS,
            "{model}: {} answered of {CLIENTS}",
            answered_first.len()
        );
        // Those keep being served.
        for (i, mut c) in answered_first {
            c.set_timeouts(Some(PATIENCE));
            c.write_all(format!("again {i}").as_bytes()).unwrap();
            let reply = read_n(&mut c, format!("again {i}").len());
            assert_eq!(reply, format!("AGAIN {i}").as_bytes(), "{model}");
        } // and leave: the waiting clients get their places
        let deadline = Instant::now() + PATIENCE;
        while !waiting.is_empty() {
            assert!(
                Instant::now() < deadline,
                "{model}: {} clients never served",
                waiting.len()
            );
            take_answered(&mut waiting);
        }
        let said = s.log().matches("accept failed").count();
        assert!(
            said as f64 <= full_since.elapsed().as_secs_f64() + 2.0,
            "{model}: the full server said so {said} times in {:?}",
            full_since.elapsed()
        );
        let (status, summary) = s.terminate();
        assert!(status.success(), "{model}: {status:?}");
        assert!(
            summary.starts_with(&format!("served {CLIENTS} connections (0 errors)")),
            "{model}: {summary}"
        );
    }
}

/// The clients of `waiting` whose reply has come (each checked), taken out of it.
fn take_answered(waiting: &mut Vec<(usize, TestConn)>) -> Vec<(usize, TestConn)> {
    let mut answered = Vec::new();
    let mut still = Vec::new();
    for (i, mut c) in waiting.drain(..) {
        let expected = format!("CLIENT {i}");
        c.set_timeouts(Some(Duration::from_millis(20)));
        let mut reply = vec![0; expected.len()];
        match std::io::Read::read_exact(&mut c, &mut reply) {
            Ok(()) => {
                assert_eq!(reply, expected.as_bytes());
                answered.push((i, c));
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                still.push((i, c))
            }
            Err(e) => panic!("client {i}: {e}"),
        }
    }
    *waiting = still;
    answered
}

/// The sockets (`socket:[inode]`) open in the file table at `dir` (a `/proc/.../fd`).
fn sockets_in(dir: &str) -> std::collections::BTreeSet<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .filter_map(|fd| std::fs::read_link(fd.path()).ok())
        .map(|target| target.to_string_lossy().into_owned())
        .filter(|target| target.starts_with("socket:"))
        .collect()
}

/// The connections the `epoll` reactor threads of server `pid` hold in tables of their own:
/// their sockets that the process's main table does not have.
fn reactor_only_sockets(pid: u32) -> std::collections::BTreeSet<String> {
    let main = sockets_in(&format!("/proc/{pid}/fd"));
    let mut own = std::collections::BTreeSet::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .flatten()
    {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if comm.trim() == "epoll" {
            let fds = task.path().join("fd");
            own.extend(
                sockets_in(&fds.to_string_lossy())
                    .difference(&main)
                    .cloned(),
            );
        }
    }
    own
}

#[test]
fn epoll_reactors_hold_their_connections_in_file_tables_of_their_own() {
    let s = ServerProcess::tcp("epoll", &["--frame", "line", "--workers", "2"]);
    let pid = s.child.id();
    let mut conns: Vec<_> = (0..6).map(|_| s.connect()).collect();
    for c in &mut conns {
        c.write_all(b"hi\n").unwrap();
        assert_eq!(recv_line(c), b"HI");
    }
    // Every connection is in a reactor's own table, none in the table the other threads share.
    assert_eq!(reactor_only_sockets(pid).len(), 6);
    // Closed by the peer, each leaves its reactor's table too.
    drop(conns);
    let deadline = Instant::now() + PATIENCE;
    while !reactor_only_sockets(pid).is_empty() {
        assert!(Instant::now() < deadline, "connections never closed");
        std::thread::sleep(Duration::from_millis(20));
    }
    request(&s, "still serving");
}

/// `sigio` when the kernel's queue of readiness signals overflows (held here to 4 signals,
/// `RLIMIT_SIGPENDING`, against 100 clients sending at once): the plain SIGIO that comes
/// instead names no socket, so every connection is checked; every reply is still right, and
/// the summary says how often it happened.
#[test]
fn sigio_checks_every_connection_when_its_signal_queue_overflows() {
    let s = ServerProcess::tcp("sigio", &["--no-store"]);
    let limited = std::process::Command::new("prlimit")
        .args(["--pid", &s.pid().to_string(), "--sigpending=4:4"])
        .status()
        .expect("prlimit (util-linux)");
    assert!(limited.success());
    let out = std::process::Command::new(bin())
        .args(["bench", &s.addr, "--conns", "100", "--duration", "1s"])
        .args(["--warmup", "200ms", "--json"])
        .output()
        .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!("{e}: {}", String::from_utf8_lossy(&out.stderr));
    });
    assert_eq!(report["errors"], 0, "{report}");
    assert_eq!(report["mismatches"], 0, "{report}");
    assert!(report["msgs"].as_u64().unwrap() > 0, "{report}");
    let (status, summary) = s.terminate();
    assert!(status.success(), "{summary}");
    let overflows: u64 = summary
        .split("the signal queue overflowed ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no overflow in the summary: {summary}"));
    assert!(overflows > 0, "{summary}");
}
