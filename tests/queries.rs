//! The SQL queries the book offers (store/sql.md) over a server's own data, run as written on SQLite and on
//! MariaDB over the same rows, with the answers they must give.

use mysql::prelude::Queryable;
use switchboard::store::{self, Backend, MessageRow, Record, ServerRow, SessionRow, StoreUrl};

/// A whole minute, in µs since the epoch, so the minutes below are exact.
const BASE: i64 = 1_800_000_000_000_000;
const MINUTE: i64 = 60_000_000;

/// The book's queries (docs/book/src/store/sql.md): each `-- name: what it shows` line, then its SQL up to `;`.
fn book_queries() -> Vec<(String, String)> {
    let readme = include_str!("../docs/book/src/store/sql.md");
    let mut queries = Vec::new();
    for block in readme.split("```sql\n").skip(1) {
        let block = block.split("```").next().unwrap();
        for statement in block.split(';') {
            let mut lines = statement.trim().lines();
            let Some(head) = lines.next() else { continue };
            let name = head
                .strip_prefix("-- ")
                .and_then(|h| h.split(':').next())
                .unwrap_or_else(|| panic!("a query without a `-- name:` line: {statement}"));
            queries.push((name.to_string(), lines.collect::<Vec<_>>().join("\n")));
        }
    }
    queries
}

/// The same rows in every store: four sessions of three peers over two minutes, and messages
/// for two of them.
fn fill(store: &mut store::Store) {
    store
        .start_server(&ServerRow {
            instance: "q".into(),
            host: "test".into(),
            pid: 1,
            model: "epoll".into(),
            address: "tcp://127.0.0.1:1".into(),
            service: "upper".into(),
            frame: "line".into(),
            started: BASE,
        })
        .unwrap();
    let session = |id, peer: &str, opened, closed, bytes, msgs, reason: &str| {
        Record::Session(SessionRow {
            id,
            peer: peer.into(),
            transport: "tcp".into(),
            opened: BASE + opened,
            closed: BASE + closed,
            bytes_in: bytes,
            bytes_out: bytes,
            msgs_in: msgs,
            msgs_out: msgs,
            reason: reason.into(),
        })
    };
    let message = |session, seq, request: &[u8]| {
        Record::Message(MessageRow {
            session,
            seq,
            at: BASE + seq as i64,
            request: request.to_vec(),
            reply: request.to_ascii_uppercase(),
        })
    };
    let (a, b, c) = (
        "tcp://10.0.0.1:4000",
        "tcp://10.0.0.2:4000",
        "tcp://10.0.0.3:4000",
    );
    store
        .write(
            "q",
            &[
                session(1, a, 1_000_000, 2_000_000, 10, 2, "eof"),
                session(2, a, 3_000_000, 63_000_000, 30, 5, "reset"),
                session(3, b, 10_000_000, 70_000_000, 100, 1, "eof"),
                session(4, c, 5_000_000, 5_500_000, 0, 0, "timeout"),
                message(1, 1, b"hi"),
                message(2, 1, b"one"),
                message(2, 2, b"two"),
                message(2, 3, b"three"),
            ],
        )
        .unwrap();
}

/// What each query must answer, as rows of text.
fn expected(name: &str) -> Vec<Vec<String>> {
    let (a, b, c) = (
        "tcp://10.0.0.1:4000",
        "tcp://10.0.0.2:4000",
        "tcp://10.0.0.3:4000",
    );
    let m0 = BASE.to_string();
    let m1 = (BASE + MINUTE).to_string();
    let rows: Vec<Vec<&str>> = match name {
        "busiest peers" => vec![
            vec![a, "2", "7", "80"],
            vec![b, "1", "1", "200"],
            vec![c, "1", "0", "0"],
        ],
        "bytes per minute" => vec![vec![&m0, "10", "10"], vec![&m1, "130", "130"]],
        "slowest sessions" => vec![
            vec!["q", "2", a, "60000000", "5"],
            vec!["q", "3", b, "60000000", "1"],
            vec!["q", "1", a, "1000000", "2"],
            vec!["q", "4", c, "500000", "0"],
        ],
        "close reasons over time" => vec![
            vec![&m0, "eof", "1"],
            vec![&m0, "timeout", "1"],
            vec![&m1, "eof", "1"],
            vec![&m1, "reset", "1"],
        ],
        "messages per session" => vec![vec!["q", "2", "3", "11"], vec!["q", "1", "1", "2"]],
        other => panic!("the book has a query this test does not know: {other}"),
    };
    rows.into_iter()
        .map(|r| r.into_iter().map(String::from).collect())
        .collect()
}

fn sqlite_rows(path: &std::path::Path, sql: &str) -> Vec<Vec<String>> {
    let conn = rusqlite::Connection::open(path).unwrap();
    let mut stmt = conn.prepare(sql).unwrap_or_else(|e| panic!("{e}: {sql}"));
    let n = stmt.column_count();
    let rows = stmt
        .query_map([], |r| {
            (0..n)
                .map(|i| {
                    Ok(match r.get_ref(i)? {
                        rusqlite::types::ValueRef::Null => "NULL".to_string(),
                        rusqlite::types::ValueRef::Integer(v) => v.to_string(),
                        rusqlite::types::ValueRef::Real(v) => v.to_string(),
                        rusqlite::types::ValueRef::Text(t) | rusqlite::types::ValueRef::Blob(t) => {
                            String::from_utf8_lossy(t).into_owned()
                        }
                    })
                })
                .collect()
        })
        .unwrap();
    rows.collect::<Result<_, _>>().unwrap()
}

fn mysql_rows(conn: &mut mysql::Conn, sql: &str) -> Vec<Vec<String>> {
    let rows: Vec<mysql::Row> = conn.query(sql).unwrap_or_else(|e| panic!("{e}: {sql}"));
    rows.into_iter()
        .map(|row| {
            row.unwrap()
                .into_iter()
                .map(|v| match v {
                    mysql::Value::NULL => "NULL".to_string(),
                    mysql::Value::Bytes(b) => String::from_utf8_lossy(&b).into_owned(),
                    mysql::Value::Int(i) => i.to_string(),
                    mysql::Value::UInt(u) => u.to_string(),
                    other => format!("{other:?}"),
                })
                .collect()
        })
        .collect()
}

#[test]
fn the_book_queries_answer_the_same_on_sqlite() {
    let queries = book_queries();
    assert!(queries.len() >= 4, "{queries:?}");
    let dir = std::env::temp_dir().join(format!("sb-queries-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("q.db");
    let _ = std::fs::remove_file(&path);
    fill(&mut store::open(&StoreUrl::Sqlite(path.clone())).unwrap());
    for (name, sql) in &queries {
        assert_eq!(sqlite_rows(&path, sql), expected(name), "{name}:\n{sql}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_book_queries_answer_the_same_on_mariadb() {
    let Ok(url) = std::env::var("SWITCHBOARD_TEST_MYSQL") else {
        assert!(
            std::env::var_os("SWITCHBOARD_REQUIRE_MYSQL").is_none(),
            "SWITCHBOARD_TEST_MYSQL is not set: run scripts/test.sh, which starts MariaDB"
        );
        eprintln!("SWITCHBOARD_TEST_MYSQL is not set: skipping (scripts/test.sh starts MariaDB)");
        return;
    };
    // A database of this test's own, so other tests' rows do not change the answers.
    let db = format!("switchboard_queries_{}", std::process::id());
    let mut admin = mysql::Conn::new(mysql::Opts::from_url(&url).unwrap()).unwrap();
    admin
        .query_drop(format!("CREATE DATABASE IF NOT EXISTS {db}"))
        .unwrap();
    let (base, _) = url.rsplit_once('/').unwrap();
    let own = format!("{base}/{db}");
    fill(&mut store::open(&own.parse::<StoreUrl>().unwrap()).unwrap());
    let mut conn = mysql::Conn::new(mysql::Opts::from_url(&own).unwrap()).unwrap();
    for (name, sql) in book_queries() {
        assert_eq!(
            mysql_rows(&mut conn, &sql),
            expected(&name),
            "{name}:\n{sql}"
        );
    }
    admin.query_drop(format!("DROP DATABASE {db}")).unwrap();
}

/// The questions the data lesson asks (`store::QUESTIONS`) are the book's, word for word.
#[test]
fn the_lessons_questions_are_the_books() {
    let book = book_queries();
    let lesson: Vec<(String, String)> = store::QUESTIONS
        .iter()
        .map(|(question, sql)| {
            let name = question.split(':').next().unwrap().to_string();
            (name, sql.to_string())
        })
        .collect();
    assert_eq!(lesson, book);
}
