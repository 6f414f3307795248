//! The data in MySQL: a server recording what it serves into SQL (SQLite here by default, or
//! the MySQL/MariaDB given with `--store`), and the plan's kind of questions asked of it.

use super::{Class, Lesson, LessonError, Taught};
use crate::store::{self, StoreUrl, QUESTIONS};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

pub(super) const LESSON: Lesson = Lesson {
    name: "data",
    title: "the data in MySQL: what a server served, in SQL",
    summary: "a server recording its sessions and messages, then SQL questions asked of them (SQLite by default, --store mysql://...)",
    run,
};

fn run(c: &mut Class) -> Result<Taught, LessonError> {
    let url = match &c.store {
        Some(url) => url.clone(),
        None => StoreUrl::Sqlite(c.dir().join("lesson.db")),
    };
    let served = c.serve(
        "tcp://127.0.0.1:0",
        &["--store", &url.full(), "--record", "messages"],
    )?;
    let addr = served.sockaddr();
    for (i, words) in [["hello", "world"], ["one", "two"], ["bye", "now"]]
        .iter()
        .enumerate()
    {
        let mut conn = TcpStream::connect(addr)?;
        conn.set_read_timeout(Some(Duration::from_secs(5)))?;
        for w in words {
            conn.write_all(w.as_bytes())?;
            let mut buf = vec![0u8; w.len()];
            conn.read_exact(&mut buf)?;
        }
        c.say(format!(
            "client {}: sent {words:?}, got them upper-cased",
            i + 1
        ));
    }
    drop(served); // a graceful stop writes out what is queued
    c.say(format!("the server stopped; what it served is in {url}"));
    c.check()?;
    let mut db =
        store::open_to_read(&url).map_err(|e| LessonError::Io(std::io::Error::other(e)))?;
    let mut answered = 0;
    for (question, sql) in QUESTIONS {
        let rows = db
            .query(sql)
            .map_err(|e| LessonError::Io(std::io::Error::other(e)))?;
        c.say(format!("{question}:\n  {}", sql.replace('\n', "\n  ")));
        for row in rows.iter().take(5) {
            c.say(format!("    {}", row.join(" | ")));
        }
        answered += usize::from(!rows.is_empty());
    }
    let sessions = db
        .query("SELECT COUNT(*) FROM sessions")
        .map_err(|e| LessonError::Io(std::io::Error::other(e)))?;
    let count: u64 = sessions
        .first()
        .and_then(|r| r.first())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    c.figure("sessions_recorded", count);
    c.figure("questions_answered", answered);
    if count < 3 {
        return Err(LessonError::Unexpected(format!(
            "{count} sessions recorded, not 3"
        )));
    }
    Ok(Taught {
        shows: "Every connection the server served became a row in `sessions`, every message a row \
                in `messages`, written by a thread of its own in batches so the serving never waits \
                on the database. The same tables and the same SQL work on SQLite (a file, the \
                default) and on MySQL/MariaDB, which many servers can share."
            .into(),
        code: vec![
            "src/store/recording.rs (a server's store)",
            "src/store/recorder.rs (the queue and the writer)",
            "src/store/schema.rs (the tables)",
        ],
    })
}
