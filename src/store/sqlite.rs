//! The SQLite backend: an embedded database file, in WAL mode so readers (`sessions`, `stats`)
//! and the process models' writers share it.

use super::schema::{BENCH_COLUMNS, MIGRATIONS, SQLITE_ONLY, VERSION};
use super::{
    messages_in, Backend, BenchRow, InstanceStats, MessageFilter, MessageRef, MessageRow, Record,
    RecordedMessage, RecorderStats, ServerRow, SessionRow, StoreError, Written,
};
use rusqlite::{params, Connection, OptionalExtension};
use std::path::Path;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

/// Spooled rows, by table, that a replay has taken.
#[derive(Debug, Default)]
pub(crate) struct SpoolRows {
    sessions: Vec<i64>,
    messages: Vec<i64>,
}

/// An SQLite store.
pub struct Sqlite {
    conn: Connection,
    url: String,
}

impl Sqlite {
    /// Opens (creating if needed) the database at `path` and brings its schema up to date.
    pub fn open(path: &Path) -> Result<Sqlite, StoreError> {
        let url = format!("sqlite://{}", path.display());
        let err = |source| StoreError::Database {
            url: url.clone(),
            source,
        };
        let conn = Connection::open(path).map_err(err)?;
        // Several processes (prefork, fork) write at once: wait for each other, briefly.
        conn.busy_timeout(Duration::from_secs(10)).map_err(err)?;
        // 16 KiB pages for a new store (an existing one keeps its own): a batch of messages
        // is a quarter of the pages, page writes and WAL frames, a quarter fewer µs of the
        // writer's per message. Set before WAL, which fixes the page size.
        conn.pragma_update(None, "page_size", 16384).map_err(err)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(err)?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(err)?;
        let mut store = Sqlite { conn, url };
        store.migrate()?;
        Ok(store)
    }

    fn err(&self) -> impl Fn(rusqlite::Error) -> StoreError + '_ {
        |source| StoreError::Database {
            url: self.url.clone(),
            source,
        }
    }

    /// Applies the migrations the database lacks; refuses a schema newer than this binary's.
    fn migrate(&mut self) -> Result<(), StoreError> {
        let url = self.url.clone();
        let err = |source| StoreError::Database {
            url: url.clone(),
            source,
        };
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(err)?;
        tx.execute_batch("CREATE TABLE IF NOT EXISTS schema_version (version BIGINT NOT NULL)")
            .map_err(err)?;
        let found: Option<i64> = tx
            .query_row("SELECT MAX(version) FROM schema_version", [], |r| r.get(0))
            .optional()
            .map_err(err)?
            .flatten();
        let found = found.unwrap_or(0);
        if found > VERSION {
            return Err(StoreError::SchemaTooNew {
                found,
                known: VERSION,
            });
        }
        for (i, statements) in MIGRATIONS.iter().enumerate().skip(found as usize) {
            for sql in statements.iter().chain(SQLITE_ONLY[i]) {
                tx.execute_batch(sql).map_err(err)?;
            }
            tx.execute("DELETE FROM schema_version", []).map_err(err)?;
            tx.execute(
                "INSERT INTO schema_version (version) VALUES (?1)",
                [i as i64 + 1],
            )
            .map_err(err)?;
        }
        tx.commit().map_err(err)
    }

    /// The schema version of the database.
    pub fn version(&self) -> Result<i64, StoreError> {
        self.conn
            .query_row("SELECT MAX(version) FROM schema_version", [], |r| r.get(0))
            .map_err(self.err())
    }

    /// Records a server's start.
    pub fn start_server(&mut self, row: &ServerRow) -> Result<(), StoreError> {
        self.conn
            .execute(
                "INSERT INTO servers (instance, host, pid, model, address, service, frame, started)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![
                    row.instance,
                    row.host,
                    row.pid,
                    row.model,
                    row.address,
                    row.service,
                    row.frame,
                    row.started
                ],
            )
            .map(drop)
            .map_err(self.err())
    }

    /// The last `last` sessions (newest first), of the peer `peer` if given, with their
    /// instance.
    pub fn sessions(
        &self,
        last: usize,
        peer: Option<&str>,
    ) -> Result<Vec<(String, SessionRow)>, StoreError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT instance, id, peer, transport, opened, closed, bytes_in, bytes_out, msgs_in, msgs_out, reason
                 FROM sessions WHERE (?1 IS NULL OR peer = ?1) ORDER BY closed DESC, id DESC LIMIT ?2",
            )
            .map_err(self.err())?;
        let rows = stmt
            .query_map(params![peer, last as i64], |r| {
                Ok((r.get::<_, String>(0)?, session_row(r)?))
            })
            .map_err(self.err())?;
        rows.collect::<Result<_, _>>().map_err(self.err())
    }

    /// The messages of one session, in order.
    pub fn messages(&self, instance: &str, session: u64) -> Result<Vec<MessageRow>, StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT session, seq, at, request, reply FROM messages WHERE instance = ?1 AND session = ?2 ORDER BY seq")
            .map_err(self.err())?;
        let rows = stmt
            .query_map(params![instance, session as i64], |r| message_row(r, 0))
            .map_err(self.err())?;
        rows.collect::<Result<_, _>>().map_err(self.err())
    }

    /// As a spool: up to `limit` of the oldest sessions and messages, with the row ids to
    /// [`forget`](Sqlite::forget) once they are safely elsewhere.
    pub(crate) fn oldest(
        &self,
        instance: &str,
        limit: usize,
    ) -> Result<(SpoolRows, Vec<Record>), StoreError> {
        let mut rows = SpoolRows::default();
        let mut records = Vec::new();
        let mut stmt = self
            .conn
            .prepare(
                "SELECT rowid, id, peer, transport, opened, closed, bytes_in, bytes_out, msgs_in, msgs_out, reason
                 FROM sessions WHERE instance = ?2 ORDER BY rowid LIMIT ?1",
            )
            .map_err(self.err())?;
        let sessions = stmt
            .query_map(params![limit as i64, instance], |r| {
                Ok((r.get::<_, i64>(0)?, session_row(r)?))
            })
            .map_err(self.err())?;
        for row in sessions {
            let (rowid, session) = row.map_err(self.err())?;
            rows.sessions.push(rowid);
            records.push(Record::Session(session));
        }
        let mut stmt = self
            .conn
            .prepare("SELECT rowid, session, seq, at, request, reply FROM messages WHERE instance = ?2 ORDER BY rowid LIMIT ?1")
            .map_err(self.err())?;
        let messages = stmt
            .query_map(params![limit as i64, instance], |r| {
                Ok((r.get::<_, i64>(0)?, message_row(r, 1)?))
            })
            .map_err(self.err())?;
        for row in messages {
            let (rowid, message) = row.map_err(self.err())?;
            rows.messages.push(rowid);
            records.push(Record::Message(message));
        }
        Ok((rows, records))
    }

    /// As a spool: the instances it holds records of.
    pub(crate) fn spooled_instances(&self) -> Result<Vec<String>, StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT instance FROM sessions UNION SELECT instance FROM messages")
            .map_err(self.err())?;
        let rows = stmt.query_map([], |r| r.get(0)).map_err(self.err())?;
        rows.collect::<Result<_, _>>().map_err(self.err())
    }

    /// As a spool: deletes rows that [`oldest`](Sqlite::oldest) returned.
    pub(crate) fn forget(&mut self, rows: &SpoolRows) -> Result<(), StoreError> {
        let url = self.url.clone();
        let err = |source| StoreError::Database {
            url: url.clone(),
            source,
        };
        let tx = self.conn.transaction().map_err(err)?;
        for id in &rows.sessions {
            tx.execute("DELETE FROM sessions WHERE rowid = ?1", [id])
                .map_err(err)?;
        }
        for id in &rows.messages {
            tx.execute("DELETE FROM messages WHERE rowid = ?1", [id])
                .map_err(err)?;
        }
        tx.commit().map_err(err)
    }

    /// Totals per instance, in order of start.
    pub fn stats(&self) -> Result<Vec<InstanceStats>, StoreError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT s.instance, s.model, s.address, s.written, s.waited, s.dropped, s.spooled,
                        COUNT(x.id), COALESCE(SUM(x.bytes_in), 0), COALESCE(SUM(x.bytes_out), 0), COALESCE(SUM(x.msgs_in), 0)
                 FROM servers s LEFT JOIN sessions x ON x.instance = s.instance
                 GROUP BY s.instance, s.model, s.address, s.written, s.waited, s.dropped, s.spooled, s.started
                 ORDER BY s.started",
            )
            .map_err(self.err())?;
        let mut all: Vec<InstanceStats> = stmt
            .query_map([], |r| {
                Ok(InstanceStats {
                    instance: r.get(0)?,
                    model: r.get(1)?,
                    address: r.get(2)?,
                    written: r.get::<_, Option<i64>>(3)?.map(|v| v as u64),
                    waited: r.get::<_, Option<i64>>(4)?.map(|v| v as u64),
                    dropped: r.get::<_, Option<i64>>(5)?.map(|v| v as u64),
                    spooled: r.get::<_, Option<i64>>(6)?.map(|v| v as u64),
                    sessions: r.get::<_, i64>(7)? as u64,
                    bytes_in: r.get::<_, i64>(8)? as u64,
                    bytes_out: r.get::<_, i64>(9)? as u64,
                    messages: r.get::<_, i64>(10)? as u64,
                    reasons: Vec::new(),
                })
            })
            .map_err(self.err())?
            .collect::<Result<_, _>>()
            .map_err(self.err())?;
        let mut stmt = self
            .conn
            .prepare("SELECT reason, COUNT(*) FROM sessions WHERE instance = ?1 GROUP BY reason ORDER BY reason")
            .map_err(self.err())?;
        for s in &mut all {
            s.reasons = stmt
                .query_map([&s.instance], |r| {
                    Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64))
                })
                .map_err(self.err())?
                .collect::<Result<_, _>>()
                .map_err(self.err())?;
        }
        Ok(all)
    }
}

impl Sqlite {
    /// Recorded messages that match `filter`, newest first.
    pub fn recorded_messages(
        &self,
        filter: &MessageFilter,
    ) -> Result<Vec<RecordedMessage>, StoreError> {
        let mut stmt = self
            .conn
            .prepare(super::RECORDED_MESSAGES)
            .map_err(self.err())?;
        let session = filter.session.map(|s| s as i64);
        let rows = stmt
            .query_map(
                params![
                    filter.instance,
                    filter.instance,
                    session,
                    session,
                    filter.peer,
                    filter.peer,
                    filter.last as i64
                ],
                |r| {
                    Ok(RecordedMessage {
                        instance: r.get(0)?,
                        peer: r.get(1)?,
                        message: message_row(r, 2)?,
                    })
                },
            )
            .map_err(self.err())?;
        rows.collect::<Result<_, _>>().map_err(self.err())
    }

    /// Records a load-generator run.
    pub fn record_bench(&mut self, r: &BenchRow) -> Result<(), StoreError> {
        self.conn
            .execute(
                &format!(
                    "INSERT INTO bench_runs ({BENCH_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21, ?22)"
                ),
                params![
                    r.run, r.lab, r.started, r.address, r.model, r.frame, r.conns as i64,
                    r.size as i64, r.depth as i64, r.rate, r.secs, r.msgs_per_s, r.mb_per_s,
                    r.p50_us as i64, r.p90_us as i64, r.p99_us as i64, r.p999_us as i64,
                    r.max_us as i64, r.errors as i64, r.mismatches as i64, r.cpu_us_per_msg,
                    r.rss_bytes_per_conn
                ],
            )
            .map(drop)
            .map_err(self.err())
    }

    /// The last `last` load-generator runs (newest first), of one lab run if given.
    pub fn bench_runs(&self, last: usize, lab: Option<&str>) -> Result<Vec<BenchRow>, StoreError> {
        let mut stmt = self
            .conn
            .prepare(&format!(
                "SELECT {BENCH_COLUMNS} FROM bench_runs WHERE (?1 IS NULL OR lab = ?1) ORDER BY started DESC, run DESC LIMIT ?2"
            ))
            .map_err(self.err())?;
        let int =
            |r: &rusqlite::Row<'_>, i| r.get::<_, Option<i64>>(i).map(|v| v.unwrap_or(0) as u64);
        let rows = stmt
            .query_map(params![lab, last as i64], |r| {
                Ok(BenchRow {
                    run: r.get(0)?,
                    lab: r.get(1)?,
                    started: r.get(2)?,
                    address: r.get(3)?,
                    model: r.get(4)?,
                    frame: r.get::<_, Option<String>>(5)?.unwrap_or_default(),
                    conns: int(r, 6)?,
                    size: int(r, 7)?,
                    depth: int(r, 8)?,
                    rate: r.get(9)?,
                    secs: r.get(10)?,
                    msgs_per_s: r.get(11)?,
                    mb_per_s: r.get::<_, Option<f64>>(12)?.unwrap_or_default(),
                    p50_us: int(r, 13)?,
                    p90_us: int(r, 14)?,
                    p99_us: int(r, 15)?,
                    p999_us: int(r, 16)?,
                    max_us: int(r, 17)?,
                    errors: int(r, 18)?,
                    mismatches: int(r, 19)?,
                    cpu_us_per_msg: r.get(20)?,
                    rss_bytes_per_conn: r.get(21)?,
                })
            })
            .map_err(self.err())?;
        rows.collect::<Result<_, _>>().map_err(self.err())
    }
}

impl Backend for Sqlite {
    fn write(&mut self, instance: &str, batch: &[Record]) -> Result<Written, StoreError> {
        let url = self.url.clone();
        let err = |source| StoreError::Database {
            url: url.clone(),
            source,
        };
        let tx = self.conn.transaction().map_err(err)?;
        {
            // OR IGNORE: a record written twice (a retried batch) is kept once.
            let mut session = tx
                .prepare_cached(
                    "INSERT OR IGNORE INTO sessions (instance, id, peer, transport, opened, closed, bytes_in, bytes_out, msgs_in, msgs_out, reason)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
                )
                .map_err(err)?;
            for record in batch {
                if let Record::Session(s) = record {
                    session
                        .execute(params![
                            instance,
                            s.id as i64,
                            s.peer,
                            s.transport,
                            s.opened,
                            s.closed,
                            s.bytes_in as i64,
                            s.bytes_out as i64,
                            s.msgs_in as i64,
                            s.msgs_out as i64,
                            s.reason
                        ])
                        .map_err(err)?;
                }
            }
            // Messages go in statements of many rows each: SQLite's work per statement
            // (bind, step, reset) is then paid once per MESSAGE_ROWS messages.
            let mut many = tx
                .prepare_cached(&insert_messages(MESSAGE_ROWS))
                .map_err(err)?;
            let mut one = tx.prepare_cached(&insert_messages(1)).map_err(err)?;
            let messages: Vec<MessageRef<'_>> = messages_in(batch).collect();
            let mut chunks = messages.chunks_exact(MESSAGE_ROWS);
            for chunk in &mut chunks {
                bind_messages(&mut many, instance, chunk).map_err(err)?;
                many.raw_execute().map_err(err)?;
            }
            for m in chunks.remainder() {
                bind_messages(&mut one, instance, std::slice::from_ref(m)).map_err(err)?;
                one.raw_execute().map_err(err)?;
            }
        }
        tx.commit().map_err(err)?;
        Ok(Written::default())
    }

    fn stop_server(
        &mut self,
        instance: &str,
        stopped: i64,
        stats: &RecorderStats,
    ) -> Result<(), StoreError> {
        self.conn
            .execute(
                "UPDATE servers SET stopped = ?2, written = ?3, waited = ?4, dropped = ?5, spooled = ?6 WHERE instance = ?1",
                params![
                    instance,
                    stopped,
                    stats.written.load(Relaxed) as i64,
                    stats.waited.load(Relaxed) as i64,
                    stats.dropped.load(Relaxed) as i64,
                    stats.spooled.load(Relaxed) as i64
                ],
            )
            .map(drop)
            .map_err(self.err())
    }
}

/// Messages per multi-row INSERT.
const MESSAGE_ROWS: usize = 32;

/// `INSERT OR IGNORE INTO messages ... VALUES (...), ...` for `rows` rows (OR IGNORE: a
/// message written twice, by a retried batch, is kept once).
///
/// The instance, the same in every row, is one parameter (`?1`) that every row names, so it is
/// bound (and copied) once per statement rather than once per message.
fn insert_messages(rows: usize) -> String {
    let values: Vec<String> = (0..rows)
        .map(|i| {
            let at = 2 + i * 5;
            format!(
                "(?1, ?{}, ?{}, ?{}, ?{}, ?{})",
                at,
                at + 1,
                at + 2,
                at + 3,
                at + 4
            )
        })
        .collect();
    format!(
        "INSERT OR IGNORE INTO messages (instance, session, seq, at, request, reply) VALUES {}",
        values.join(", ")
    )
}

fn bind_messages(
    stmt: &mut rusqlite::CachedStatement<'_>,
    instance: &str,
    messages: &[MessageRef<'_>],
) -> rusqlite::Result<()> {
    stmt.raw_bind_parameter(1, instance)?;
    for (i, m) in messages.iter().enumerate() {
        let at = 2 + i * 5;
        stmt.raw_bind_parameter(at, m.session as i64)?;
        stmt.raw_bind_parameter(at + 1, m.seq as i64)?;
        stmt.raw_bind_parameter(at + 2, m.at)?;
        stmt.raw_bind_parameter(at + 3, m.request)?;
        stmt.raw_bind_parameter(at + 4, m.reply)?;
    }
    Ok(())
}

/// A `sessions` row from columns 1..=10 of a query (column 0 is the instance or a row id).
fn session_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<SessionRow> {
    Ok(SessionRow {
        id: r.get::<_, i64>(1)? as u64,
        peer: r.get(2)?,
        transport: r.get(3)?,
        opened: r.get(4)?,
        closed: r.get(5)?,
        bytes_in: r.get::<_, i64>(6)? as u64,
        bytes_out: r.get::<_, i64>(7)? as u64,
        msgs_in: r.get::<_, i64>(8)? as u64,
        msgs_out: r.get::<_, i64>(9)? as u64,
        reason: r.get(10)?,
    })
}

/// A `messages` row from the five columns that start at `at`.
fn message_row(r: &rusqlite::Row<'_>, at: usize) -> rusqlite::Result<MessageRow> {
    Ok(MessageRow {
        session: r.get::<_, i64>(at)? as u64,
        seq: r.get::<_, i64>(at + 1)? as u64,
        at: r.get(at + 2)?,
        request: r.get(at + 3)?,
        reply: r.get(at + 4)?,
    })
}
