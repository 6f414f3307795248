//! The MySQL/MariaDB backend's own tests, against the server `SWITCHBOARD_TEST_MYSQL` names:
//! errors said in words, both insert paths, and every paged read checked against one query.

use super::describe;
use super::reader::session_of;
use super::writer::statement_sizes;
use crate::store::mysql::Mysql;
use crate::store::queries::NEWEST_SESSIONS;
use crate::store::recorder::RecorderStats;
use crate::store::rows::{MessageFilter, MessageRow, Record, ServerRow, SessionRow};
use crate::store::Backend;
use mysql::prelude::Queryable;
use mysql::{Conn, Opts};
use std::time::Duration;

/// The MariaDB that `scripts/test.sh` starts, or `None` to skip (an error where it is
/// required).
fn test_database() -> Option<String> {
    let url = std::env::var("SWITCHBOARD_TEST_MYSQL").ok();
    assert!(
        url.is_some() || std::env::var_os("SWITCHBOARD_REQUIRE_MYSQL").is_none(),
        "SWITCHBOARD_TEST_MYSQL is not set: run scripts/test.sh, which starts MariaDB"
    );
    url
}

#[test]
fn driver_errors_are_said_in_words() {
    let timed_out = mysql::Error::IoError(std::io::ErrorKind::WouldBlock.into());
    assert!(
        describe(&timed_out).starts_with(
            "the server did not answer in time (30 s for a server's records, 600 s for a read"
        ),
        "{}",
        describe(&timed_out)
    );
    // Any other socket error is said as the system says it, without the driver's wrapping.
    let refused = mysql::Error::IoError(std::io::ErrorKind::ConnectionRefused.into());
    assert_eq!(describe(&refused), "connection refused");
    let denied = mysql::Error::MySqlError(mysql::MySqlError {
        state: "28000".into(),
        message: "Access denied for user 'u'@'h' (using password: YES)".into(),
        code: 1045,
    });
    assert_eq!(
        describe(&denied),
        "Access denied for user 'u'@'h' (using password: YES) (error 1045): check the user \
         and password in the URL, and the user's grants on the database"
    );
}

#[test]
fn rows_are_cut_into_powers_of_two_largest_first() {
    let sizes = |n: usize| statement_sizes(n).collect::<Vec<_>>();
    assert_eq!(sizes(0), Vec::<usize>::new());
    assert_eq!(sizes(1), vec![1]);
    assert_eq!(sizes(64), vec![64]);
    assert_eq!(sizes(1300), vec![512, 512, 256, 16, 4]);
    assert_eq!(sizes(1023), vec![512, 256, 128, 64, 32, 16, 8, 4, 2, 1]);
}

/// Both ways [`insert_rows`] inserts land every row once, byte for byte, on a real server:
/// MariaDB's bulk execution and the multi-row statements MySQL gets (forced here, as the
/// tests have MariaDB). Run against the server `scripts/test.sh` starts.
#[test]
fn bulk_and_multi_row_inserts_land_the_same_rows_once() {
    let Some(url) = test_database() else { return };
    // 1,300 rows: statements of 512, 512, 256, 16 and 4 rows when not in bulk.
    let messages: Vec<MessageRow> = (1..=1300u64)
        .map(|seq| MessageRow {
            session: 1,
            seq,
            at: 1_000_000 + seq as i64,
            request: [b"\0\xff\r\n'\\ ".as_slice(), &seq.to_be_bytes()].concat(),
            reply: format!("ÄÖ {seq}").into_bytes(),
        })
        .collect();
    let session = SessionRow {
        id: 1,
        peer: "tcp://127.0.0.1:1".into(),
        transport: "tcp".into(),
        opened: 1,
        closed: 2,
        bytes_in: 3,
        bytes_out: 4,
        msgs_in: 1300,
        msgs_out: 1300,
        reason: "eof".into(),
    };
    let mut batch: Vec<Record> = messages.iter().cloned().map(Record::Message).collect();
    batch.push(Record::Session(session));
    for bulk in [true, false] {
        let mut db = Mysql::open(&url, "the test database".into()).unwrap();
        assert!(db.bulk, "the test server is MariaDB, which inserts in bulk");
        db.bulk = bulk;
        let started = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let instance = format!("insert-rows-{bulk}-{started}");
        // Twice: a replayed batch lands once.
        db.write_db(&instance, &batch).unwrap();
        db.write_db(&instance, &batch).unwrap();
        let filter = MessageFilter {
            instance: Some(instance.clone()),
            session: None,
            peer: None,
            last: 10_000,
        };
        let mut back = db.recorded_messages(&filter).unwrap();
        back.reverse();
        assert_eq!(back.len(), messages.len(), "bulk: {bulk}");
        for (got, sent) in back.iter().zip(&messages) {
            assert_eq!(&got.message, sent, "bulk: {bulk}");
            assert_eq!(got.peer.as_deref(), Some("tcp://127.0.0.1:1"));
        }
    }
}

/// An instance a century ahead (so its rows are the newest whatever else the database
/// holds) that stopped at `base + stopped` (`None`: still running), with `messages` as
/// (session, time after `base`), and a closed session row for each of `closed`.
fn record_instance(
    db: &mut Mysql,
    name: &str,
    stopped: Option<i64>,
    messages: &[(u64, i64)],
    closed: &[u64],
) -> String {
    let base = century_ahead();
    let instance = format!("newest-{base}-{name}");
    db.start_server(&ServerRow::for_test(&instance, base))
        .unwrap();
    let mut batch = Vec::new();
    for &(session, at) in messages {
        let seq = batch.len() as u64 + 1; // rising in every session, as a server numbers them
        batch.push(Record::Message(MessageRow {
            session,
            seq,
            at: base + at,
            request: format!("m{session}.{at}").into_bytes(),
            reply: format!("M{session}.{at}").into_bytes(),
        }));
    }
    for &id in closed {
        let count = messages.iter().filter(|(s, _)| *s == id).count() as u64;
        batch.push(Record::Session(SessionRow {
            id,
            peer: peer_of(name, id),
            transport: "tcp".into(),
            opened: base,
            closed: base + messages.iter().map(|m| m.1).max().unwrap_or(0) + 1,
            bytes_in: 0,
            bytes_out: 0,
            msgs_in: count,
            msgs_out: count,
            reason: "eof".into(),
        }));
    }
    db.write_db(&instance, &batch).unwrap();
    if let Some(stopped) = stopped {
        db.stop_server(&instance, base + stopped, &RecorderStats::default())
            .unwrap();
    }
    instance
}

/// The peer [`record_instance`] gives session `id` of instance `name`: each test's its own.
fn peer_of(name: &str, id: u64) -> String {
    format!("tcp://{name}:{id}")
}

/// One time, a century from the first call, shared by the tests' instances.
fn century_ahead() -> i64 {
    static BASE: std::sync::OnceLock<i64> = std::sync::OnceLock::new();
    *BASE.get_or_init(|| super::super::now_us() + 100 * 365 * 86_400 * 1_000_000)
}

/// (instance, session, peer, last), as [`MessageFilter`] holds them.
type TestFilter<'a> = (Option<&'a str>, Option<u64>, Option<String>, usize);

/// What `messages` reads, checked against the one query over the same rows that it
/// replaces, for each of `filters` as (instance, session, peer, last).
fn assert_matches_one_query(db: &mut Mysql, filters: &[TestFilter]) {
    for (instance, session, peer, last) in filters {
        let filter = MessageFilter {
            instance: instance.map(String::from),
            session: *session,
            peer: peer.clone(),
            last: *last,
        };
        let read = db.recorded_messages(&filter).unwrap();
        let in_one_query = db.recorded_messages_in(&filter).unwrap();
        assert_eq!(read.len(), (*last).min(in_one_query.len()));
        assert_eq!(read, in_one_query, "{filter:?}");
    }
}

/// Without an instance, the newest messages are read instance by instance; that must give
/// exactly what one query over the whole table gives, including when the instance that
/// holds the newest messages is read last (it stopped before another one that is older).
#[test]
fn the_newest_messages_read_instance_by_instance_match_one_query() {
    let Some(url) = test_database() else { return };
    let mut db = Mysql::open(&url, "the test database".into()).unwrap();
    let base = century_ahead();
    let one_session = |times: std::ops::Range<i64>, step: i64| -> Vec<(u64, i64)> {
        times.map(|i| (1, i * step)).collect()
    };
    // (name, its messages (session 1 each), when it stopped: None while it runs)
    record_instance(&mut db, "running", None, &one_session(0..50, 2), &[1]);
    record_instance(
        &mut db,
        "stopped-late",
        Some(400),
        &one_session(10..20, 1),
        &[1],
    );
    record_instance(
        &mut db,
        "newest",
        Some(300),
        &one_session(200..250, 1),
        &[1],
    );
    let newest: Vec<i64> = db
        .recorded_messages(&MessageFilter {
            instance: None,
            session: None,
            peer: None,
            last: 10,
        })
        .unwrap()
        .iter()
        .map(|m| m.message.at - base)
        .collect();
    assert_eq!(newest, (240..250).rev().collect::<Vec<_>>());
    assert_matches_one_query(
        &mut db,
        &[
            (None, None, None, 1),
            (None, None, None, 75),
            (None, Some(1), None, 60),
            (None, None, Some(peer_of("running", 1)), 4),
            (None, None, Some(peer_of("newest", 1)), 120),
        ],
    );
}

/// Within an instance, the newest messages are read session by session when sessions are
/// long, and in one query when they are short; either way exactly what one query gives,
/// with sessions interleaved in time, one still open (no session row), times tied across
/// sessions, and a session read page by page.
#[test]
fn the_newest_messages_read_session_by_session_match_one_query() {
    let Some(url) = test_database() else { return };
    let mut db = Mysql::open(&url, "the test database".into()).unwrap();
    // Before the other tests' century-ahead rows, so theirs stay the newest.
    let run = |session: u64, first: i64, step: i64, n: i64| {
        (0..n).map(move |i| (session, first + step * i - 10_000))
    };
    let messages: Vec<(u64, i64)> = run(1, 0, 10, 120)
        .chain(run(2, 5, 10, 120)) // interleaved with 1
        .chain(run(3, 2_000, 3, 120)) // the newest, ending at 2,357
        .chain(run(4, 1_000, 7, 50)) // still open: no session row
        .chain(run(5, 500, 1, 100)) // old
        .chain(run(6, 2_258, 1, 100)) // ending at 2,357 too: a tie with 3
        .collect();
    let long = record_instance(
        &mut db,
        "long-sessions",
        Some(-5_000),
        &messages,
        &[1, 2, 3, 5, 6],
    );
    let short_messages: Vec<(u64, i64)> = (1..=30).flat_map(|s| run(s, s as i64, 40, 2)).collect();
    let short = record_instance(&mut db, "short-sessions", None, &short_messages, &[]);
    let closed: Vec<u64> = (1..=30).collect();
    let short_closed = record_instance(
        &mut db,
        "short-sessions-closed",
        None,
        &short_messages,
        &closed,
    );
    let mut filters = Vec::new();
    for (instance, name) in [
        (&long, "long-sessions"),
        (&short, "short-sessions"),
        (&short_closed, "short-sessions-closed"),
    ] {
        let peer = |id| Some(peer_of(name, id));
        for last in [1, 2, 5, 99, 130, 400, 10_000] {
            filters.push((Some(instance.as_str()), None, None, last));
        }
        filters.push((Some(instance.as_str()), Some(3), None, 7));
        filters.push((Some(instance.as_str()), Some(4), None, 70));
        filters.push((Some(instance.as_str()), None, peer(2), 50));
        filters.push((Some(instance.as_str()), Some(2), peer(2), 3));
        filters.push((Some(instance.as_str()), Some(3), peer(2), 3));
        filters.push((Some(instance.as_str()), None, peer(4), 50));
    }
    // Paged: session 1 sparse and newest, session 2 dense and just older, so once session 1
    // has given the newest 100, session 2 still holds 100 newer than the oldest of them,
    // more than one page's worth.
    let paged_messages: Vec<(u64, i64)> = run(1, -11_000, 10, 100)
        .chain(run(2, -10_300, 1, 100))
        .collect();
    let paged = record_instance(&mut db, "paged", Some(-5_000), &paged_messages, &[1, 2]);
    for last in [50, 100, 150, 199, 200] {
        filters.push((Some(paged.as_str()), None, None, last));
    }
    assert_matches_one_query(&mut db, &filters);
    // The newest two are the tie at 2,357: session 6 before 3 in the order read back.
    let two = db
        .recorded_messages(&MessageFilter {
            instance: Some(long),
            session: None,
            peer: None,
            last: 2,
        })
        .unwrap();
    let got: Vec<(u64, i64)> = two
        .iter()
        .map(|m| (m.message.session, m.message.at - century_ahead()))
        .collect();
    assert_eq!(got, [(6, 2_357 - 10_000), (3, 2_357 - 10_000)]);
}

/// Read span by span, a page of spans at a time, the newest sessions are exactly what one
/// query over the whole table gives (see the fixture), also once a database of version 4
/// is migrated, and when that migration had been cut short. In a database of the test's own: other tests' sessions would move the
/// answers between the two reads.
#[test]
fn the_newest_sessions_read_span_by_span_match_one_query() {
    let Some(url) = test_database() else { return };
    let name = format!("switchboard_session_spans_{}", std::process::id());
    let mut admin = Conn::new(Opts::from_url(&url).unwrap()).unwrap();
    admin
        .query_drop(format!("DROP DATABASE IF EXISTS {name}"))
        .unwrap();
    admin.query_drop(format!("CREATE DATABASE {name}")).unwrap();
    let own = format!("{}/{name}", url.rsplit_once('/').unwrap().0);
    let mut db = Mysql::open(&own, "the test's own database".into()).unwrap();
    let recorded = crate::store::test_data::record_into(&mut db, |db: &mut Mysql, row| {
        db.start_server(row).unwrap()
    });
    let read = crate::store::test_data::in_key_order(db.sessions(100_000, None).unwrap());
    assert!(read == recorded, "the sessions read back are those written");
    let check = |db: &mut Mysql| {
        crate::store::test_data::assert_spans_match_one_query(|last| {
            let read = db.sessions(last, None).unwrap();
            let in_one_query: Vec<mysql::Row> = db
                .conn()
                .unwrap()
                .exec(NEWEST_SESSIONS, (None::<&str>, None::<&str>, last as u64))
                .unwrap();
            (read, in_one_query.into_iter().map(session_of).collect())
        })
    };
    assert!(check(&mut db) > 10_000);
    let spans: Option<u64> = db
        .conn()
        .unwrap()
        .query_first("SELECT COUNT(*) FROM session_spans")
        .unwrap();
    assert!(spans.unwrap() < 420, "{spans:?} spans");
    // Version 4 had no spans: the migration makes them of what is there.
    db.conn()
        .unwrap()
        .query_drop("DROP TABLE session_spans; UPDATE schema_version SET version = 4")
        .unwrap();
    drop(db);
    let mut db = Mysql::open(&own, "the test's own database".into()).unwrap();
    assert_eq!(db.version().unwrap(), 5);
    check(&mut db);
    let count = |db: &mut Mysql, sql: &str| -> u64 {
        db.conn().unwrap().query_first(sql).unwrap().unwrap()
    };
    let migrated = count(&mut db, "SELECT COUNT(*) FROM session_spans");
    // A migration cut short (its DDL already committed, its fill partly done, a stray
    // span left) runs again cleanly.
    db.conn()
        .unwrap()
        .query_drop(
            "DROP INDEX session_spans_by_time ON session_spans;
             INSERT INTO session_spans VALUES ('stray', 1, 2, 3, 4);
             UPDATE schema_version SET version = 4",
        )
        .unwrap();
    drop(db);
    let mut db = Mysql::open(&own, "the test's own database".into()).unwrap();
    assert_eq!(db.version().unwrap(), 5);
    assert_eq!(
        count(&mut db, "SELECT COUNT(*) FROM session_spans"),
        migrated
    );
    check(&mut db);
    admin.query_drop(format!("DROP DATABASE {name}")).unwrap();
}

/// A second instance waits for the first's migration (the named lock), and says so
/// plainly when it has waited its limit, rather than migrating beside it.
#[test]
fn a_migration_under_way_is_waited_for() {
    let Some(url) = test_database() else { return };
    let mut db = Mysql::open(&url, "the test database".into()).unwrap();
    let mut other = Conn::new(Opts::from_url(&url).unwrap()).unwrap();
    let held: Option<i64> = other
        .query_first("SELECT GET_LOCK('switchboard_migrate', 10)")
        .unwrap();
    assert_eq!(held, Some(1));
    let busy = db.migrate(Duration::from_secs(1)).unwrap_err();
    assert!(
        busy.to_string().contains(
            "another switchboard has been migrating its schema for over 1 s; start again once it is done"
        ),
        "{busy}"
    );
    // Released within the wait: the migration goes on (here, nothing is left to migrate).
    let release = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(500));
        other
            .query_drop("SELECT RELEASE_LOCK('switchboard_migrate')")
            .unwrap();
    });
    db.migrate(Duration::from_secs(20)).unwrap();
    release.join().unwrap();
}
