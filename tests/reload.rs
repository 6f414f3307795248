//! Reloads and stops together: a stop acts at once whatever a reload is doing, a new server
//! that fails is reported with its exit status, and many reload-then-stop cycles each stop
//! within the drain. The new server is whatever sits at the executable's path (an upgrade in
//! place), so a test puts a program of its own there to make it hang or fail.

mod common;

use common::*;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A copy of switchboard at a path of the test's own (a hard link where the file system
/// allows), so the test can put another program there for the reload to start.
fn own_copy(dir: &Path) -> PathBuf {
    let exe = dir.join("switchboard");
    if std::fs::hard_link(bin(), &exe).is_err() {
        std::fs::copy(bin(), &exe).unwrap();
    }
    exe
}

/// Puts a shell script in place of the executable: what a broken upgrade would leave.
fn replace_with_script(exe: &Path, body: &str) {
    let new = exe.with_extension("new");
    std::fs::write(&new, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&new, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::rename(&new, exe).unwrap(); // the running server keeps its own file
}

/// True once no process `pid` runs (gone, or a zombie not yet reaped).
fn gone(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |stat| {
        stat.rsplit(')')
            .next()
            .is_some_and(|s| s.trim_start().starts_with('Z'))
    })
}

/// Waits (bounded) until `pid` is gone.
fn wait_gone(pid: u32, what: &str) {
    let deadline = Instant::now() + PATIENCE;
    while !gone(pid) {
        assert!(
            Instant::now() < deadline,
            "{what} (pid {pid}) is still running"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_stop_during_a_reload_acts_at_once_and_stops_the_new_server() {
    let dir = scratch("reload-hangs");
    let exe = own_copy(&dir);
    let s = ServerProcess::start_exe(
        &exe,
        &dir,
        "tcp://127.0.0.1:0",
        &["--no-store", "--drain", "1"],
        None,
    );
    // The upgrade hangs: it never says it serves (the old server would wait 30 s for it).
    replace_with_script(&exe, "echo $$ > hung.pid\nexec sleep 60");
    s.signal(libc::SIGHUP);
    s.wait_log("SIGHUP: starting a new server");
    let deadline = Instant::now() + PATIENCE;
    while !dir.join("hung.pid").exists() {
        assert!(Instant::now() < deadline, "the new server never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    s.signal(libc::SIGTERM);
    let mut s = s;
    let (status, _) = s.wait_exit(); // within the patience, where the reload's wait is 30 s
    assert!(status.success(), "{status:?}");
    let log = s.log();
    assert!(log.contains("was stopped before it served"), "{log}");
    let hung: u32 = std::fs::read_to_string(dir.join("hung.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    wait_gone(hung, "the new server the stop abandoned");
}

#[test]
fn a_new_server_that_exits_at_once_is_reported_with_its_exit_status() {
    let dir = scratch("reload-exits");
    let exe = own_copy(&dir);
    let s = ServerProcess::start_exe(&exe, &dir, "tcp://127.0.0.1:0", &["--no-store"], None);
    replace_with_script(&exe, "exit 3");
    s.signal(libc::SIGHUP);
    let log = s.wait_log("did not take over; serving on");
    assert!(
        log.contains("exited before it served (exit status: 3)"),
        "{log}"
    );
    // It serves on.
    let mut c = s.connect();
    c.write_all(b"still").unwrap();
    assert_eq!(read_n(&mut c, 5), b"STILL");
    drop(c);
    let (status, _) = s.terminate();
    assert!(status.success());
}

#[test]
fn many_reload_then_stop_cycles_each_stop_within_the_drain() {
    for cycle in 0..8 {
        let dir = scratch("reload-cycles");
        let pid_file = dir.join("sb.pid");
        let path = pid_file.display().to_string();
        let s = ServerProcess::start_in(
            &dir,
            "tcp://127.0.0.1:0",
            &[
                "--model",
                "threads",
                "--no-store",
                "--drain",
                "1",
                "--pid-file",
                &path,
            ],
        );
        let first = s.pid();
        // A reload, and another SIGHUP on its heels (ignored while the first is under way, or
        // a second reload): then a stop for whichever server is newest, as soon as it serves.
        s.signal(libc::SIGHUP);
        if cycle % 2 == 1 {
            s.signal(libc::SIGHUP);
        }
        let deadline = Instant::now() + PATIENCE;
        let newest = loop {
            let pid: u32 = std::fs::read_to_string(&pid_file)
                .ok()
                .and_then(|p| p.trim().parse().ok())
                .unwrap_or(first);
            if pid != first {
                break pid;
            }
            assert!(Instant::now() < deadline, "cycle {cycle}: no new server");
            std::thread::sleep(Duration::from_millis(10));
        };
        // SAFETY: kill(2) on a process this test started (through its server).
        assert_eq!(unsafe { libc::kill(newest as i32, libc::SIGTERM) }, 0);
        wait_gone(
            newest,
            &format!("cycle {cycle}: the newest server after SIGTERM"),
        );
        let mut s = s;
        let (status, _) = s.wait_exit(); // the old one drained and left on its own
        assert!(status.success(), "cycle {cycle}: {status:?}");
        // A newer one may have come from the second SIGHUP: it is stopped too.
        if let Some(pid) = std::fs::read_to_string(&pid_file)
            .ok()
            .and_then(|p| p.trim().parse::<u32>().ok())
        {
            if !gone(pid) {
                // SAFETY: as above.
                unsafe { libc::kill(pid as i32, libc::SIGTERM) };
                wait_gone(pid, &format!("cycle {cycle}: the newest server"));
            }
        }
    }
}
