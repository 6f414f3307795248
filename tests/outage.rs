//! The store in trouble, for real: another process holds the SQLite file's lock, or the disk
//! under it fills (a tmpfs of 2 MiB, which needs root). By default nothing recorded is lost:
//! records wait within the queue's byte budget, then serving waits (the server's memory bounded,
//! measured, never timed), and everything resumes by itself once the store can write again.
//! Spooling and dropping are the operator's choices, and a store that lost records says so.

mod common;

use common::*;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::Duration;

/// A process of its own holding an SQLite file's write lock (`BEGIN EXCLUSIVE`), as another
/// program on the machine might; released (the process killed by its PID) when dropped.
struct Lock(Child);

impl Lock {
    fn hold(db: &Path) -> Lock {
        let mut child = Command::new("python3")
            .args([
                "-c",
                "import sqlite3, sys\n\
                 c = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=30)\n\
                 c.execute('BEGIN EXCLUSIVE')\n\
                 print('locked', flush=True)\n\
                 sys.stdin.read()",
            ])
            .arg(db)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 runs the lock holder");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "locked");
        Lock(child)
    }
}

impl Drop for Lock {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A tmpfs of `size` mounted at `dir/disk` (root only), unmounted when dropped.
struct Disk(PathBuf);

impl Disk {
    /// The disk, or `None` where mounting is not allowed (not root): the caller skips.
    fn mount(dir: &Path, size: &str) -> Option<Disk> {
        let at = dir.join("disk");
        std::fs::create_dir_all(&at).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&at)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            assert!(
                std::env::var_os("SWITCHBOARD_REQUIRE_MOUNT").is_none(),
                "cannot mount a tmpfs, and the test script requires it"
            );
            eprintln!("cannot mount a tmpfs (not root?): skipping");
            return None;
        }
        Some(Disk(at))
    }

    /// Gives the disk room: what an operator does once it filled.
    fn grow(&self, size: &str) {
        let status = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.0)
            .status()
            .unwrap();
        assert!(status.success());
    }
}

impl Drop for Disk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// A server of `model` in `dir` recording every message into `store`, with `extra` options.
fn serve(dir: &Path, model: &str, store: &Path, extra: &[&str]) -> ServerProcess {
    let url = format!("sqlite://{}", store.display());
    let mut args = vec![
        "--model",
        model,
        "--frame",
        "line",
        "--max-frame",
        "1MiB",
        "--record",
        "messages",
        "--store",
        &url,
    ];
    args.extend_from_slice(extra);
    ServerProcess::start_in(dir, "tcp://127.0.0.1:0", &args)
}

/// A client sending `n` lines of `size` bytes from one thread and reading the replies in
/// another; returns both, and the count of replies read so far.
struct Talk {
    sender: thread::JoinHandle<()>,
    reader: thread::JoinHandle<()>,
    replies: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    n: usize,
}

impl Talk {
    fn start(s: &ServerProcess, n: usize, size: usize) -> Talk {
        let c = s.connect();
        c.set_timeouts(Some(Duration::from_secs(120))); // the store may hold it for a while
        let mut writer = c.try_clone();
        let line = [vec![b'm'; size - 1], vec![b'\n']].concat();
        let sender = thread::spawn(move || {
            for _ in 0..n {
                writer.write_all(&line).unwrap();
            }
        });
        let replies = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = replies.clone();
        let reader = thread::spawn(move || {
            let mut lines = BufReader::new(c);
            let mut reply = Vec::new();
            for _ in 0..n {
                reply.clear();
                lines.read_until(b'\n', &mut reply).unwrap();
                assert_eq!(reply.len(), size, "a whole reply");
                counted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        });
        Talk {
            sender,
            reader,
            replies,
            n,
        }
    }

    fn replies(&self) -> usize {
        self.replies.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn finish(self) {
        self.sender.join().unwrap();
        self.reader.join().unwrap();
    }
}

/// `switchboard stats` of `store`: its stdout and stderr.
fn stats(store: &Path) -> (String, String) {
    let out = Command::new(bin())
        .args(["stats", "--store"])
        .arg(format!("sqlite://{}", store.display()))
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_locked_store_holds_the_server_within_its_budget_and_loses_nothing() {
    let dir = scratch("locked");
    let db = dir.join("locked.db");
    let s = serve(&dir, "epoll", &db, &["--store-queue", "4MiB"]);
    let lock = Lock::hold(&db);
    let before = pss(s.pid());
    // 400 lines of 128 KiB: 100 MiB of records, far past the queue's 4 MiB.
    let talk = Talk::start(&s, 400, 128 * 1024);
    s.wait_log("the store cannot take records");
    s.wait_log("then serving waits"); // said once, with what happens meanwhile
                                      // The queue is full and the model waits: the server holds the budget, not the traffic.
    for _ in 0..10 {
        let grown = pss(s.pid()).saturating_sub(before);
        assert!(
            grown <= 16 << 20,
            "the server grew by {} MiB with the store locked",
            grown >> 20
        );
        thread::sleep(Duration::from_millis(200));
    }
    assert!(
        talk.replies() < talk.n,
        "the client was not slowed while the store could not write"
    );
    drop(lock); // the other program lets go: the server resumes by itself
    talk.finish();
    s.wait_log("the store takes records again");
    let (status, _) = s.terminate();
    assert!(status.success());
    let (out, err) = stats(&db);
    assert!(out.contains("1 sessions, 400 messages"), "{out}");
    assert!(out.contains("dropped 0"), "{out}");
    assert!(!err.contains("incomplete"), "{err}");
}

#[test]
fn a_full_disk_holds_the_server_until_it_has_room_again() {
    let dir = scratch("full-disk");
    let Some(disk) = Disk::mount(&dir, "2m") else {
        return;
    };
    let db = disk.0.join("full.db");
    let s = serve(&dir, "uring", &db, &["--store-queue", "1MiB"]);
    // 8,000 lines of 1 KiB: 16 MB of records, which a 2 MiB disk cannot take.
    let talk = Talk::start(&s, 8000, 1024);
    s.wait_log("the store cannot take records");
    // Records wait within 1 MiB, then serving waits: the client cannot get all its replies.
    thread::sleep(Duration::from_millis(500));
    assert!(talk.replies() < talk.n, "served on past a full disk");
    disk.grow("256m");
    talk.finish();
    s.wait_log("the store takes records again");
    let (status, _) = s.terminate();
    assert!(status.success());
    let (out, _) = stats(&db);
    assert!(out.contains("1 sessions, 8000 messages"), "{out}");
    assert!(out.contains("dropped 0"), "{out}");
}

#[test]
fn on_a_full_disk_the_operator_may_spool_elsewhere_or_drop() {
    let dir = scratch("full-disk-choices");
    let Some(disk) = Disk::mount(&dir, "2m") else {
        return;
    };
    // Spooled to another directory: serving never waits, and the stop replays the spool.
    let db = disk.0.join("spooled.db");
    let spools = dir.join("spools");
    std::fs::create_dir_all(&spools).unwrap();
    let spool_dir = spools.display().to_string();
    let s = serve(
        &dir,
        "epoll",
        &db,
        &[
            "--on-store-error",
            "spool",
            "--spool-dir",
            &spool_dir,
            "--store-queue",
            "1MiB",
        ],
    );
    Talk::start(&s, 4000, 1024).finish(); // not held up
    s.wait_log("spooling them locally");
    disk.grow("256m");
    let (status, _) = s.terminate();
    assert!(status.success());
    let (out, _) = stats(&db);
    assert!(out.contains("1 sessions, 4000 messages"), "{out}");
    assert!(out.contains("dropped 0"), "{out}");
    let left = std::fs::read_dir(&spools).unwrap().count();
    assert_eq!(left, 0, "the spool was replayed and removed");

    // Dropped: serving never waits, the drops are counted, and the store says it is
    // incomplete (the disk given room before the stop, so the server can say how many).
    let Some(disk) = Disk::mount(&dir.join("second"), "2m") else {
        return;
    };
    let db = disk.0.join("dropped.db");
    let s = serve(&dir, "epoll", &db, &["--on-store-error", "drop"]);
    let filler = disk.0.join("filler");
    let mut f = std::fs::File::create(&filler).unwrap();
    let _ = f.write_all(&vec![0; 4 << 20]); // fills the disk
    drop(f);
    Talk::start(&s, 4000, 1024).finish();
    s.wait_log("records are dropped until it can");
    std::fs::remove_file(&filler).unwrap();
    let (status, _) = s.terminate();
    assert!(status.success());
    let (out, err) = stats(&db);
    assert!(err.contains("this store is incomplete"), "{err}");
    let dropped: u64 = out
        .split("dropped ")
        .nth(1)
        .and_then(|d| d.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    assert!(dropped > 0, "{out}");
    let mut sessions = Command::new(bin())
        .args(["sessions", "--store"])
        .arg(format!("sqlite://{}", db.display()))
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut err = String::new();
    sessions
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    sessions.wait().unwrap();
    assert!(err.contains("incomplete"), "{err}");
}
