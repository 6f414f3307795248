//! The SQLite backend's own tests: migrations waited for, and every paged read checked
//! against one query over the same rows.

use super::schema::BUSY_TIMEOUT;
use crate::store::recorder::RecorderStats;
use crate::store::rows::{MessageFilter, MessageRow, Record, ServerRow, SessionRow};
use crate::store::schema::VERSION;
use crate::store::sqlite::Sqlite;
use crate::store::Backend;
use rusqlite::Connection;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

/// A new store in a directory of its own under the system's temporary directory.
fn fresh(name: &str) -> (Sqlite, std::path::PathBuf) {
    let dir = std::env::temp_dir().join(format!("sb-sqlite-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("s.db");
    (Sqlite::open(&path).unwrap(), path)
}

/// A store being migrated is waited for, not failed after the busy timeout's 10 s, and
/// the wait's end is said plainly; a store already up to date opens beside a writer.
#[test]
fn a_migration_under_way_is_waited_for() {
    let (_, path) = fresh("migrating");
    let writer = Connection::open(&path).unwrap();
    writer.execute_batch("BEGIN IMMEDIATE").unwrap();
    let opened = Sqlite::open_within(&path, Duration::from_secs(1));
    assert!(opened.is_ok(), "{:?}", opened.err());
    writer.execute_batch("ROLLBACK").unwrap();

    // Another instance creating a store: WAL set, its first migration's write lock held.
    let path = path.with_file_name("new.db");
    let other = Connection::open(&path).unwrap();
    other.pragma_update(None, "journal_mode", "WAL").unwrap();
    other
        .execute_batch("BEGIN IMMEDIATE; CREATE TABLE schema_version (version BIGINT NOT NULL)")
        .unwrap();
    let started = std::time::Instant::now();
    let busy = Sqlite::open_within(&path, Duration::from_secs(1))
        .err()
        .unwrap();
    assert!(
        busy.to_string().contains(
            "another switchboard has been migrating its schema for over 1 s; start again once it is done"
        ),
        "{busy}"
    );
    assert!(
        started.elapsed() < BUSY_TIMEOUT,
        "waited the busy timeout, not the wait"
    );
    // Committed within the wait: this one migrates what the other left.
    let release = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(500));
        other.execute_batch("COMMIT").unwrap();
    });
    let db = Sqlite::open_within(&path, Duration::from_secs(20)).unwrap();
    release.join().unwrap();
    assert_eq!(db.version().unwrap(), VERSION);
}

/// Three instances recorded as servers record: sessions answered interleaved in time, each
/// session's messages handed over in batches of up to five (so a transaction's times are
/// out of order), transactions of uneven size, a session row after each session's last
/// message but for one still open, times tied across sessions, peers shared across
/// sessions and instances. `finished` stops; `running` does not; `crashed` stopped having
/// dropped records. Times start at `from`, session ids at `first`. Longer than a screen: the
/// rows themselves, written out, are the test's data.
fn record_three_instances(db: &mut Sqlite, from: i64, first: u64) {
    let mut seed = 7u64;
    let mut random = move |n: u64| {
        seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
        (seed >> 33) % n
    };
    for (instance, open_session) in [
        ("finished", None),
        ("running", Some(3)),
        ("crashed", Some(1)),
    ] {
        db.start_server(&ServerRow::for_test(instance, 0)).unwrap();
        // (time handed over, record): messages in batches of up to five per session.
        let mut queue: Vec<(i64, Record)> = Vec::new();
        for n in 0..6 {
            let session = first + n;
            // Seconds apart, longer than the slack in the sessions' windows.
            let opened = from + 3_000_000 * n as i64 + random(500) as i64;
            let mut at = opened;
            let mut batch: Vec<MessageRow> = Vec::new();
            let count = 20 + random(80);
            for seq in 1..=count {
                at += random(40) as i64 * 1_000; // 0 now and then: a tie
                batch.push(MessageRow {
                    session,
                    seq,
                    at,
                    request: format!("{instance}.{session}.{seq}").into_bytes(),
                    reply: vec![seq as u8, 0, 255],
                });
                if batch.len() == 1 + random(5) as usize || seq == count {
                    // Now and then a batch is handed over late, among newer ones.
                    let late = if random(10) == 0 {
                        random(2_000_000)
                    } else {
                        0
                    };
                    for m in batch.drain(..) {
                        queue.push((at + late as i64, Record::Message(m)));
                    }
                }
            }
            if Some(n) != open_session {
                let row = SessionRow {
                    id: session,
                    peer: format!("tcp://127.0.0.1:{}", session % 3),
                    transport: "tcp".into(),
                    opened,
                    closed: at + 1,
                    bytes_in: 0,
                    bytes_out: 0,
                    msgs_in: count,
                    msgs_out: count,
                    reason: "eof".into(),
                };
                queue.push((at + 1, Record::Session(row)));
            }
        }
        if let Some(open) = open_session {
            // Last of all, the open session's oldest and newest messages in one
            // transaction: its span is the newest by its last time, the oldest by its first.
            for (seq, at) in [(1_000, from + 1), (1_001, from + 59_000_000)] {
                let m = MessageRow {
                    session: first + open,
                    seq,
                    at,
                    request: b"slow".to_vec(),
                    reply: b"SLOW".to_vec(),
                };
                queue.push((from + 60_000_000, Record::Message(m)));
            }
        }
        queue.sort_by_key(|(handed, _)| *handed);
        let mut records = queue.into_iter().map(|(_, r)| r).peekable();
        while records.peek().is_some() {
            let size = 1 + random(120) as usize;
            let batch: Vec<Record> = records.by_ref().take(size).collect();
            db.write(instance, &batch).unwrap();
        }
        let stats = RecorderStats::default();
        match instance {
            "finished" => db.stop_server(instance, from + 70_000_000, &stats).unwrap(),
            "crashed" => {
                stats.dropped.store(3, Relaxed);
                db.stop_server(instance, from + 70_000_000, &stats).unwrap()
            }
            _ => {}
        }
    }
}

/// What `messages` reads, checked against one query over the whole table for every
/// combination of the options; returns how many filters were checked.
fn assert_matches_one_query(db: &Sqlite) -> usize {
    let mut checked = 0;
    for instance in [None, Some("finished"), Some("running"), Some("crashed")] {
        for session in [None, Some(1), Some(2), Some(4), Some(99), Some(102)] {
            for peer in [None, Some("tcp://127.0.0.1:1"), Some("tcp://127.0.0.1:9")] {
                for last in [1, 2, 7, 50, 333, 10_000] {
                    let filter = MessageFilter {
                        instance: instance.map(String::from),
                        session,
                        peer: peer.map(String::from),
                        last,
                    };
                    let read = db.recorded_messages(&filter).unwrap();
                    let in_one_query = db.recorded_messages_in(&filter).unwrap();
                    let differ = read.iter().zip(&in_one_query).position(|(a, b)| a != b);
                    assert!(
                        read.len() == in_one_query.len() && differ.is_none(),
                        "{filter:?}: {} read, {} in one query, the first difference at {differ:?}",
                        read.len(),
                        in_one_query.len()
                    );
                    checked += 1;
                }
            }
        }
    }
    checked
}

/// Read span by span, the newest messages are exactly what one query over the whole
/// table gives, for every filter; and the spans are what the walk relies on.
#[test]
fn the_newest_messages_read_span_by_span_match_one_query() {
    let (mut db, _) = fresh("spans");
    record_three_instances(&mut db, 0, 1);
    let (spans, messages, uncovered): (i64, i64, i64) = db
        .conn
        .query_row(
            "SELECT (SELECT COUNT(*) FROM message_spans), (SELECT COUNT(*) FROM messages),
                    (SELECT COUNT(*) FROM messages m WHERE NOT EXISTS (SELECT 1 FROM message_spans s
                        WHERE m.id BETWEEN s.first_id AND s.last_id AND s.instance = m.instance
                          AND m.at BETWEEN s.first_at AND s.last_at))",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    assert!(
        spans > 10 && messages > 500,
        "{spans} spans, {messages} messages"
    );
    assert_eq!(
        uncovered, 0,
        "every message lies in a span of its instance and time"
    );
    assert!(db.spans_cover_messages().unwrap(), "read through spans");
    assert_eq!(assert_matches_one_query(&db), 432);
    // Nothing found where nothing matches, and a message recorded only once is found once.
    let newest = db
        .recorded_messages(&MessageFilter {
            instance: None,
            session: None,
            peer: None,
            last: 1_000_000,
        })
        .unwrap();
    assert_eq!(newest.len() as i64, messages);
}

/// Rows that no span covers (written by hand, say) are still found: the table is then read
/// in one query.
#[test]
fn rows_past_the_last_span_are_read_too() {
    let (mut db, _) = fresh("stray");
    record_three_instances(&mut db, 0, 1);
    db.conn
        .execute(
            "INSERT INTO messages (instance, session, seq, at, request, reply)
             VALUES ('by-hand', 1, 1, 900000000, X'68', X'48')",
            [],
        )
        .unwrap();
    let last = db
        .recorded_messages(&MessageFilter {
            instance: None,
            session: None,
            peer: None,
            last: 1,
        })
        .unwrap();
    assert_eq!(last[0].instance, "by-hand");
    assert!(!db.spans_cover_messages().unwrap(), "read in one query");
    assert_matches_one_query(&db);
}

/// A store of version 3 (no row ids, no spans) keeps its rows and reads them back the same;
/// so does a store whose rows were thinned and vacuumed (its row ids are declared, so
/// `VACUUM` keeps them).
#[test]
fn an_older_store_and_a_vacuumed_one_read_the_same() {
    let (mut db, path) = fresh("migrate-4");
    record_three_instances(&mut db, 0, 1);
    let before = db
        .recorded_messages_in(&MessageFilter {
            instance: None,
            session: None,
            peer: None,
            last: 1_000_000,
        })
        .unwrap();
    db.conn
        .execute_batch(
            "CREATE TABLE v3 AS SELECT instance, session, seq, at, request, reply FROM messages;
             DROP TABLE messages; ALTER TABLE v3 RENAME TO messages; DROP TABLE message_spans;
             DROP TABLE session_spans; UPDATE schema_version SET version = 3;",
        )
        .unwrap();
    drop(db);
    let mut db = Sqlite::open(&path).unwrap();
    assert_eq!(db.version().unwrap(), 5);
    assert!(db.spans_cover_messages().unwrap(), "read through spans");
    let all = MessageFilter {
        instance: None,
        session: None,
        peer: None,
        last: 1_000_000,
    };
    assert_eq!(db.recorded_messages(&all).unwrap(), before);
    assert_matches_one_query(&db);
    // New rows after the migration get spans of their own (the same instances, as if
    // recorded again with sessions of their own: their `servers` rows go first).
    db.conn.execute("DELETE FROM servers", []).unwrap();
    record_three_instances(&mut db, 1_500_000, 101);
    assert_matches_one_query(&db);
    db.conn
        .execute_batch("DELETE FROM messages WHERE id % 3 = 0; VACUUM;")
        .unwrap();
    assert_matches_one_query(&db);
}

/// What `sessions` reads through spans, checked against one query over the whole table.
fn assert_sessions_match_one_query(db: &Sqlite) -> usize {
    crate::store::test_data::assert_spans_match_one_query(|last| {
        (
            db.sessions(last, None).unwrap(),
            db.sessions_in(last, None).unwrap(),
        )
    })
}

/// Read span by span, the newest sessions are exactly what one query over the whole table
/// gives, for a stream server's sessions (closed out of id order), a datagram server's,
/// and ties between instances; so after a store of version 4 is migrated.
#[test]
fn the_newest_sessions_read_span_by_span_match_one_query() {
    let (mut db, path) = fresh("session-spans");
    let recorded = crate::store::test_data::record_into(&mut db, |db: &mut Sqlite, row| {
        db.start_server(row).unwrap()
    });
    let read = crate::store::test_data::in_key_order(db.sessions(100_000, None).unwrap());
    assert!(read == recorded, "the sessions read back are those written");
    let (spans, sessions): (i64, i64) = db
        .conn
        .query_row(
            "SELECT (SELECT COUNT(*) FROM session_spans), (SELECT COUNT(*) FROM sessions)",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!(sessions, 4_200);
    assert!(spans < sessions / 10, "{spans} spans");
    assert!(assert_sessions_match_one_query(&db) > 10_000);
    // Version 4 had no spans: the migration makes them of what is there.
    db.conn
        .execute_batch("DROP TABLE session_spans; UPDATE schema_version SET version = 4;")
        .unwrap();
    drop(db);
    let db = Sqlite::open(&path).unwrap();
    assert_eq!(db.version().unwrap(), 5);
    assert_sessions_match_one_query(&db);
}
