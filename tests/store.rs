//! The store: what every model served, recorded in a real SQLite database and read back.

mod common;

use common::*;
use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::thread;
use switchboard::store::{
    self, MessageBatch, OnStoreError, Record, Recorder, RecorderOptions, RecorderStats, SessionRow,
    StoreUrl,
};

fn switchboard_in(dir: &std::path::Path, args: &[&str]) -> std::process::Output {
    Command::new(bin())
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn every_model_records_each_session_exactly() {
    // Every model there is: a new one is covered without a line here.
    for model in switchboard::Model::ALL.iter().map(|m| m.name()) {
        let s = ServerProcess::stream(model, "tcp", &["--frame", "line"]);
        for i in 0..5 {
            let mut c = s.connect();
            for j in 0..=i {
                c.write_all(format!("conn {i} msg {j}\n").as_bytes())
                    .unwrap();
                assert_eq!(recv_line(&mut c), format!("CONN {i} MSG {j}").as_bytes());
            }
        }
        let dir = s.dir.clone();
        let (status, summary) = s.terminate();
        assert!(status.success(), "{model}");
        assert!(
            summary.contains("served 5 connections"),
            "{model}: {summary}"
        );
        let mut store = store::open(&StoreUrl::Sqlite(dir.join("switchboard.db"))).unwrap();
        let mut rows: Vec<SessionRow> = store
            .sessions(100, None)
            .unwrap()
            .into_iter()
            .map(|(_, r)| r)
            .collect();
        rows.sort_by_key(|r| r.msgs_in);
        assert_eq!(rows.len(), 5, "{model}: one row per connection");
        for (i, r) in rows.iter().enumerate() {
            let msgs = i as u64 + 1;
            let bytes: u64 = (0..msgs)
                .map(|j| format!("conn {i} msg {j}\n").len() as u64)
                .sum();
            assert_eq!(
                (r.msgs_in, r.msgs_out, r.bytes_in, r.bytes_out),
                (msgs, msgs, bytes, bytes),
                "{model}"
            );
            assert_eq!(
                (r.reason.as_str(), r.transport.as_str()),
                ("eof", "tcp"),
                "{model}"
            );
            assert!(r.closed >= r.opened, "{model}");
        }
        let stats = store.stats().unwrap();
        assert_eq!(stats.len(), 1);
        assert_eq!((stats[0].sessions, stats[0].model.as_str()), (5, model));
        assert_eq!(
            stats[0].written,
            Some(5),
            "{model}: the writer's count, kept at stop"
        );
        assert_eq!(stats[0].dropped, Some(0), "{model}");
    }
}

#[test]
fn messages_are_recorded_byte_for_byte() {
    for model in ["threads", "fork", "epoll", "uring"] {
        let s = ServerProcess::stream(model, "unix", &["--frame", "len", "--record", "messages"]);
        let sent: Vec<Vec<u8>> = vec![
            b"hello".to_vec(),
            (0..=255).collect(),
            "héllo wörld\0".into(),
            Vec::new(),
        ];
        let mut c = s.connect();
        for m in &sent {
            send_len(&mut c, m);
            assert_eq!(recv_len(&mut c), upper(m));
        }
        drop(c);
        let dir = s.dir.clone();
        assert!(s.terminate().0.success());
        let mut store = store::open(&StoreUrl::Sqlite(dir.join("switchboard.db"))).unwrap();
        let (instance, row) = store.sessions(1, None).unwrap().remove(0);
        let messages = store.messages(&instance, row.id).unwrap();
        assert_eq!(messages.len(), sent.len(), "{model}");
        for (i, (m, want)) in messages.iter().zip(&sent).enumerate() {
            assert_eq!(
                (m.seq, &m.request, &m.reply),
                (i as u64 + 1, want, &upper(want)),
                "{model}"
            );
        }
    }
}

#[test]
fn the_messages_command_reads_every_option_back() {
    let dir = scratch("messages");
    check_messages_command(&format!("sqlite://{}/m.db", dir.display()));
}

#[test]
fn a_keyed_messages_table_of_version_2_keeps_its_rows_and_loses_its_key() {
    let dir = scratch("migrate-3");
    let path = dir.join("old.db");
    drop(store::open(&StoreUrl::Sqlite(path.clone())).unwrap());
    // The table as version 2 had it, with one message.
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute_batch(
        "DROP TABLE messages;
         DROP TABLE message_spans;
         DROP TABLE session_spans;
         CREATE TABLE messages (instance VARCHAR(128) NOT NULL, session BIGINT NOT NULL, seq BIGINT NOT NULL,
             at BIGINT NOT NULL, request LONGBLOB NOT NULL, reply LONGBLOB NOT NULL,
             PRIMARY KEY (instance, session, seq));
         INSERT INTO messages VALUES ('old', 1, 1, 5, X'6869', X'4849');
         UPDATE schema_version SET version = 2;",
    )
    .unwrap();
    drop(conn);
    let mut migrated = store::open(&StoreUrl::Sqlite(path.clone())).unwrap();
    assert_eq!(migrated.version().unwrap(), 5);
    assert_eq!(
        migrated.messages("old", 1).unwrap()[0].request,
        b"hi",
        "the row survived"
    );
    let conn = rusqlite::Connection::open(&path).unwrap();
    let indexes: i64 = conn
        .query_row(
            "SELECT COUNT(*) FROM pragma_index_list('messages')",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(indexes, 0, "no key to maintain per message");
}

/// Session `id`'s row, one message and `bytes` each way, closed at its end of stream.
fn closed_session(id: u64, bytes: u64) -> SessionRow {
    SessionRow {
        id,
        peer: "tcp://127.0.0.1:1".into(),
        transport: "tcp".into(),
        opened: 1,
        closed: 2,
        bytes_in: bytes,
        bytes_out: bytes,
        msgs_in: 1,
        msgs_out: 1,
        reason: "eof".into(),
    }
}

/// A recorder's options: a queue of `records` and `bytes`, `on_error`, spools in `dir`.
fn options(records: usize, bytes: usize, on_error: OnStoreError, dir: &Path) -> RecorderOptions {
    RecorderOptions {
        records,
        bytes,
        on_error,
        spool_dir: dir.to_path_buf(),
    }
}

/// A server that is not stopping.
fn never_stopping() -> store::Stopping {
    Box::new(|| false)
}

#[test]
fn a_full_queue_makes_models_wait_and_loses_nothing() {
    let dir = scratch("backpressure");
    let url = StoreUrl::Sqlite(dir.join("bp.db"));
    let backend = store::open(&url).unwrap();
    let stats = Arc::new(RecorderStats::default());
    // A queue of one record: the four senders find it full again and again.
    let (recorder, writer) = Recorder::start(
        Box::new(backend),
        "test".into(),
        options(1, store::QUEUE_BYTES, OnStoreError::Wait, &dir),
        Arc::new(stats.clone()),
        never_stopping(),
    )
    .unwrap();
    let senders: Vec<_> = (0..4)
        .map(|t| {
            let recorder = recorder.clone();
            thread::spawn(move || {
                for i in 0..2500u64 {
                    recorder.record(Record::Session(closed_session(t * 10_000 + i, i)));
                }
            })
        })
        .collect();
    for t in senders {
        t.join().unwrap();
    }
    drop(recorder);
    writer.finish().unwrap();
    use std::sync::atomic::Ordering::Relaxed;
    assert_eq!(stats.written.load(Relaxed), 10_000);
    assert_eq!(stats.dropped.load(Relaxed), 0);
    assert!(
        stats.waited.load(Relaxed) > 0,
        "the queue was full and senders waited"
    );
    assert_eq!(
        store::open(&url)
            .unwrap()
            .sessions(20_000, None)
            .unwrap()
            .len(),
        10_000
    );
}

/// A real SQLite store in front of which a switch makes every write fail, as a full disk or a
/// lock held elsewhere would, until it is turned off.
struct Failing {
    store: store::Store,
    failing: Arc<AtomicBool>,
}

impl store::Backend for Failing {
    fn write(
        &mut self,
        instance: &str,
        batch: &[Record],
    ) -> Result<store::Written, store::StoreError> {
        if self.failing.load(Relaxed) {
            return Err(store::StoreError::Url(
                "disk full (the test's switch)".into(),
            ));
        }
        self.store.write(instance, batch)
    }
    fn stop_server(&mut self, i: &str, t: i64, s: &RecorderStats) -> Result<(), store::StoreError> {
        self.store.stop_server(i, t, s)
    }
}

/// A store at `dir/name.db` that fails while the switch returned is on (it starts on).
fn failing_store(dir: &Path, name: &str) -> (Failing, Arc<AtomicBool>, StoreUrl) {
    let url = StoreUrl::Sqlite(dir.join(format!("{name}.db")));
    let failing = Arc::new(AtomicBool::new(true));
    let store = store::open(&url).unwrap();
    (
        Failing {
            store,
            failing: failing.clone(),
        },
        failing,
        url,
    )
}

/// A packed record of `n` messages of `size` bytes each way, of session `id`.
fn messages(id: u64, n: u64, size: usize) -> Record {
    let mut batch = MessageBatch::new(id);
    for seq in 1..=n {
        batch.push(seq, 1, &vec![b'a'; size], &vec![b'A'; size]);
    }
    Record::Messages(batch)
}

/// Waits (bounded) until `done` says so.
fn eventually(what: &str, done: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + PATIENCE;
    while !done() {
        assert!(std::time::Instant::now() < deadline, "never: {what}");
        thread::sleep(std::time::Duration::from_millis(10));
    }
}

#[test]
fn while_the_store_fails_records_wait_within_the_byte_budget_and_none_is_lost() {
    let dir = scratch("outage");
    let (backend, failing, url) = failing_store(&dir, "outage");
    let stats = Arc::new(RecorderStats::default());
    let budget = 1 << 20;
    let (recorder, writer) = Recorder::start(
        Box::new(backend),
        "test".into(),
        options(store::QUEUE, budget, OnStoreError::Wait, &dir),
        Arc::new(stats.clone()),
        never_stopping(),
    )
    .unwrap();
    // 64 records of 2 x 64 KiB (8 MiB in all) from a model's thread, into a store that fails.
    let sender = {
        let recorder = recorder.clone();
        thread::spawn(move || {
            for id in 0..64 {
                recorder.record(messages(id, 1, 64 * 1024));
            }
        })
    };
    eventually("the store's failure is seen", || {
        stats.failing.load(Relaxed) == 1
    });
    eventually("the sender waits for room", || {
        stats.waited.load(Relaxed) > 0
    });
    thread::sleep(std::time::Duration::from_millis(300));
    let held = stats.bytes.load(Relaxed) as usize;
    assert!(
        held <= budget + 200 * 1024,
        "{held} bytes queued past a budget of {budget}"
    );
    assert!(!sender.is_finished(), "serving waits while the store fails");
    assert_eq!(stats.dropped.load(Relaxed), 0);
    // The store can write again: everything is written, nothing was dropped.
    failing.store(false, Relaxed);
    sender.join().unwrap();
    drop(recorder);
    writer.finish().unwrap();
    assert_eq!(stats.failing.load(Relaxed), 0, "the outage is over");
    assert_eq!(stats.written.load(Relaxed), 64);
    assert_eq!(stats.dropped.load(Relaxed), 0);
    let mut db = store::open(&url).unwrap();
    let all = db
        .recorded_messages(&store::MessageFilter {
            last: 1000,
            ..Default::default()
        })
        .unwrap();
    assert_eq!(all.len(), 64);
}

#[test]
fn a_stop_while_the_store_fails_spools_what_is_left_for_the_next_server() {
    let dir = scratch("outage-stop");
    let (backend, _failing, url) = failing_store(&dir, "stop");
    let stats = Arc::new(RecorderStats::default());
    let stopping = Arc::new(AtomicBool::new(false));
    let stop = stopping.clone();
    let (recorder, writer) = Recorder::start(
        Box::new(backend),
        // A process of this host that is not running: its spool is anyone's to replay.
        format!(
            "{}:4194000:1",
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .unwrap()
                .trim()
        ),
        options(8, store::QUEUE_BYTES, OnStoreError::Wait, &dir),
        Arc::new(stats.clone()),
        Box::new(move || stop.load(Relaxed)),
    )
    .unwrap();
    // More than the queue holds: the sender waits, until the stop spools what is queued.
    let sender = {
        let recorder = recorder.clone();
        thread::spawn(move || {
            for id in 0..100 {
                recorder.record(Record::Session(closed_session(id, 1)));
            }
        })
    };
    eventually("the sender waits", || stats.waited.load(Relaxed) > 0);
    stopping.store(true, Relaxed);
    sender.join().unwrap();
    drop(recorder);
    writer.finish().unwrap();
    assert_eq!(stats.dropped.load(Relaxed), 0);
    assert_eq!(stats.spooled.load(Relaxed), 100, "all went to the spool");
    // The next server's start replays the spool into the store, and removes it.
    let mut db = store::open(&url).unwrap();
    store::spool::replay_leftovers(&mut db, &dir).unwrap();
    assert_eq!(db.sessions(1000, None).unwrap().len(), 100);
    let left = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("switchboard-spool")
        })
        .count();
    assert_eq!(left, 0, "the spool is gone once replayed");
}

#[test]
fn dropping_is_the_operators_choice_and_is_counted() {
    let dir = scratch("outage-drop");
    let (backend, failing, _url) = failing_store(&dir, "drop");
    let stats = Arc::new(RecorderStats::default());
    let (recorder, writer) = Recorder::start(
        Box::new(backend),
        "test".into(),
        options(4, store::QUEUE_BYTES, OnStoreError::Drop, &dir),
        Arc::new(stats.clone()),
        never_stopping(),
    )
    .unwrap();
    for id in 0..50 {
        recorder.record(Record::Session(closed_session(id, 1)));
    }
    failing.store(false, Relaxed);
    recorder.record(Record::Session(closed_session(50, 1)));
    drop(recorder);
    writer.finish().unwrap();
    let (written, dropped) = (stats.written.load(Relaxed), stats.dropped.load(Relaxed));
    assert_eq!(written + dropped, 51);
    assert!(
        dropped > 0 && written >= 1,
        "{written} written, {dropped} dropped"
    );
}

/// A backend that counts its transactions and the records in them.
struct Counting(Arc<std::sync::Mutex<Vec<usize>>>);

impl store::Backend for Counting {
    fn write(&mut self, _: &str, batch: &[Record]) -> Result<store::Written, store::StoreError> {
        self.0.lock().unwrap().push(batch.len());
        Ok(store::Written::default())
    }
    fn stop_server(&mut self, _: &str, _: i64, _: &RecorderStats) -> Result<(), store::StoreError> {
        Ok(())
    }
}

#[test]
fn a_trickle_of_records_is_written_in_few_transactions() {
    let writes = Arc::new(std::sync::Mutex::new(Vec::new()));
    let stats = Arc::new(RecorderStats::default());
    let (recorder, writer) = Recorder::start(
        Box::new(Counting(writes.clone())),
        "test".into(),
        options(
            store::QUEUE,
            store::QUEUE_BYTES,
            OnStoreError::Wait,
            &scratch("trickle"),
        ),
        Arc::new(stats.clone()),
        never_stopping(),
    )
    .unwrap();
    let began = std::time::Instant::now();
    // One record every 100 µs or more: without a pause between transactions, each would
    // wake the writer and be a transaction of its own.
    for id in 0..200 {
        recorder.record(Record::Session(closed_session(id, 0)));
        thread::sleep(std::time::Duration::from_micros(100));
    }
    drop(recorder);
    writer.finish().unwrap();
    let elapsed = began.elapsed();
    let writes = writes.lock().unwrap();
    assert_eq!(writes.iter().sum::<usize>(), 200, "every record written");
    // The writer pauses after each short transaction, so however slow this machine, there
    // are at most as many transactions as pauses fit, and one more for the end.
    let spans = (elapsed.as_millis() / store::LINGER.as_millis()) as usize;
    assert!(
        writes.len() <= spans + 2,
        "{} transactions in {elapsed:?}: {writes:?}",
        writes.len()
    );
}

#[test]
fn a_graceful_stop_under_load_loses_no_session() {
    let s = ServerProcess::stream("epoll", "tcp", &["--frame", "line"]);
    let addr = s.sockaddr().to_string();
    let clients: Vec<_> = (0..8)
        .map(|_| {
            let addr = addr.clone();
            thread::spawn(move || {
                // Short connections until the server stops taking them (bounded either way).
                for _ in 0..5000 {
                    let Ok(mut c) = std::net::TcpStream::connect(&addr) else {
                        return;
                    };
                    if c.write_all(b"x\n").is_err() {
                        return;
                    }
                    let mut b = [0u8; 2];
                    if std::io::Read::read_exact(&mut c, &mut b).is_err() {
                        return;
                    }
                }
            })
        })
        .collect();
    std::thread::sleep(std::time::Duration::from_millis(500));
    let dir = s.dir.clone();
    let (status, summary) = s.terminate();
    for c in clients {
        c.join().unwrap();
    }
    assert!(status.success());
    let served: usize = summary
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{summary}"));
    assert!(served > 0);
    let mut store = store::open(&StoreUrl::Sqlite(dir.join("switchboard.db"))).unwrap();
    assert_eq!(
        store.sessions(1_000_000, None).unwrap().len(),
        served,
        "{summary}"
    );
}

#[test]
fn two_servers_sharing_a_store_are_told_apart_and_added_up() {
    let dir = scratch("shared-store");
    let url = format!("sqlite://{}", dir.join("shared.db").display());
    for n in 1..=2 {
        let s = ServerProcess::stream("threads", "tcp", &["--store", &url]);
        for _ in 0..n {
            let mut c = s.connect();
            c.write_all(b"hi").unwrap();
            assert_eq!(read_n(&mut c, 2), b"HI");
        }
        assert!(s.terminate().0.success());
    }
    let out = switchboard_in(&dir, &["stats", "--store", &url, "--json"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "two instances: {text}");
    assert!(
        lines[0].contains("\"sessions\":1") && lines[1].contains("\"sessions\":2"),
        "{text}"
    );
    let total = switchboard_in(&dir, &["stats", "--store", &url]);
    let total = String::from_utf8_lossy(&total.stdout);
    assert!(
        total.starts_with("all 2 instances: 3 sessions"),
        "added up: {total}"
    );
    let out = switchboard_in(&dir, &["sessions", "--store", &url, "--json"]);
    let json = String::from_utf8_lossy(&out.stdout);
    assert_eq!(json.lines().count(), 3, "{json}");
    let peer = json
        .lines()
        .next()
        .unwrap()
        .split("\"peer\":\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap();
    let out = switchboard_in(
        &dir,
        &["sessions", "--store", &url, "--peer", peer, "--json"],
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).lines().count(),
        1,
        "only that peer's session"
    );
    let out = switchboard_in(&dir, &["sessions", "--store", &url, "--last", "2"]);
    let table = String::from_utf8_lossy(&out.stdout);
    assert_eq!(table.lines().count(), 3, "a header and two rows: {table}");
}

#[test]
fn store_errors_are_usage_errors_at_start() {
    let dir = scratch("store-errors");
    let bad = switchboard_in(
        &dir,
        &["serve", "tcp://127.0.0.1:0", "--store", "postgres://x"],
    );
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("sqlite://PATH"));
    let refused = switchboard_in(
        &dir,
        &[
            "serve",
            "tcp://127.0.0.1:0",
            "--store",
            "sqlite:///nonexistent/dir/x.db",
        ],
    );
    assert_eq!(
        refused.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    // The database's own words appear once, not once per layer that passed them on.
    let err = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(
        err.matches("unable to open database file").count(),
        1,
        "said twice: {err}"
    );
    // A schema from the future.
    let future = dir.join("future.db");
    drop(store::open(&StoreUrl::Sqlite(future.clone())).unwrap());
    let py = format!("import sqlite3; c=sqlite3.connect('{}'); c.execute('UPDATE schema_version SET version=99'); c.commit()", future.display());
    if Command::new("python3")
        .args(["-c", &py])
        .status()
        .is_ok_and(|s| s.success())
    {
        let out = switchboard_in(
            &dir,
            &[
                "serve",
                "tcp://127.0.0.1:0",
                "--store",
                &format!("sqlite://{}", future.display()),
            ],
        );
        assert_eq!(out.status.code(), Some(2));
        assert!(String::from_utf8_lossy(&out.stderr).contains("newer than this switchboard"));
    }
    let missing = switchboard_in(&dir, &["sessions", "--store", "sqlite://absent.db"]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(
        !dir.join("absent.db").exists(),
        "reading does not create a store"
    );
}

#[test]
fn no_store_writes_nothing() {
    let s = ServerProcess::stream("threads", "tcp", &["--no-store"]);
    let mut c = s.connect();
    c.write_all(b"x").unwrap();
    assert_eq!(read_n(&mut c, 1), b"X");
    let dir = s.dir.clone();
    assert!(s.terminate().0.success());
    assert!(!dir.join("switchboard.db").exists());
}

#[test]
fn the_schema_is_created_once_and_migrations_are_kept() {
    let dir = scratch("schema");
    let url = StoreUrl::Sqlite(dir.join("s.db"));
    let mut first = store::open(&url).unwrap();
    assert_eq!(first.version().unwrap(), 5);
    drop(first);
    let mut again = store::open(&url).unwrap(); // nothing to migrate: opens as is
    assert_eq!(again.version().unwrap(), 5);
    assert!(again.sessions(1, None).unwrap().is_empty());
}
