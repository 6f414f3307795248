//! Writing to SQLite: the recorder's batches, server starts and stops, bench runs, and the
//! spool's rows read back and forgotten.

use super::reader::{message_row, session_row};
use crate::store::error::StoreError;
use crate::store::handle::{Backend, Written};
use crate::store::queries::INSERT_SESSION_SPAN;
use crate::store::recorder::RecorderStats;
use crate::store::rows::{messages_in, BenchRow, MessageRef, Record, ServerRow, SessionRow};
use crate::store::schema::BENCH_COLUMNS;
use crate::store::spans::session_spans;
use crate::store::sqlite::Sqlite;
use rusqlite::params;
use std::sync::atomic::Ordering::Relaxed;

/// Spooled rows, by table, that a replay has taken.
#[derive(Debug, Default)]
pub(crate) struct SpoolRows {
    sessions: Vec<i64>,
    messages: Vec<i64>,
}

impl Sqlite {
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
}

impl Sqlite {
    /// Records a load-generator run.
    pub fn record_bench(&mut self, r: &BenchRow) -> Result<(), StoreError> {
        self.conn
            .execute(
                &format!(
                    "INSERT INTO bench_runs ({BENCH_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21, ?22)"
                ),
                params![
                    r.run, r.lab, r.started, r.result.address, r.model, r.result.frame, r.result.conns as i64,
                    r.result.size as i64, r.result.depth as i64, r.result.rate, r.result.secs, r.result.msgs_per_s, r.result.mb_per_s,
                    r.result.p50_us as i64, r.result.p90_us as i64, r.result.p99_us as i64, r.result.p999_us as i64,
                    r.result.max_us as i64, r.result.errors as i64, r.result.mismatches as i64, r.cpu_us_per_msg,
                    r.rss_bytes_per_conn
                ],
            )
            .map(drop)
            .map_err(self.err())
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
            // Sessions as messages are: a datagram server records a session per datagram.
            let sessions: Vec<&SessionRow> = batch
                .iter()
                .filter_map(|r| match r {
                    Record::Session(s) => Some(s),
                    Record::Message(_) | Record::Messages(_) => None,
                })
                .collect();
            insert_chunked(&tx, instance, &sessions, insert_sessions, bind_sessions)
                .map_err(err)?;
            let mut span = tx.prepare_cached(INSERT_SESSION_SPAN).map_err(err)?;
            for s in session_spans(batch) {
                span.execute(params![
                    instance,
                    s.first_id as i64,
                    s.last_id as i64,
                    s.first_closed,
                    s.last_closed
                ])
                .map_err(err)?;
            }
            let messages: Vec<MessageRef<'_>> = messages_in(batch).collect();
            insert_chunked(&tx, instance, &messages, insert_messages, bind_messages)
                .map_err(err)?;
            // The span these messages took: while this transaction holds the write lock, the
            // table's rows are numbered on from its highest id, so they took the ids just
            // below the last one.
            if let (Some(first_at), Some(last_at)) = (
                messages.iter().map(|m| m.at).min(),
                messages.iter().map(|m| m.at).max(),
            ) {
                let last_id = tx.last_insert_rowid();
                tx.prepare_cached(
                    "INSERT INTO message_spans (instance, first_id, last_id, first_at, last_at)
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                )
                .and_then(|mut span| {
                    span.execute(params![
                        instance,
                        last_id + 1 - messages.len() as i64,
                        last_id,
                        first_at,
                        last_at
                    ])
                })
                .map_err(err)?;
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

/// Rows per multi-row INSERT.
const ROWS_PER_INSERT: usize = 32;

/// Inserts `rows` in statements of [`ROWS_PER_INSERT`] rows each (`sql(n)` for `n` rows, bound
/// by `bind`), the remainder one at a time: SQLite's work per statement (bind, step, reset)
/// is then paid once per 32 rows, and only two statements are ever prepared.
fn insert_chunked<T>(
    tx: &rusqlite::Transaction<'_>,
    instance: &str,
    rows: &[T],
    sql: fn(usize) -> String,
    bind: fn(&mut rusqlite::CachedStatement<'_>, &str, &[T]) -> rusqlite::Result<()>,
) -> rusqlite::Result<()> {
    let mut many = tx.prepare_cached(&sql(ROWS_PER_INSERT))?;
    let mut chunks = rows.chunks_exact(ROWS_PER_INSERT);
    for chunk in &mut chunks {
        bind(&mut many, instance, chunk)?;
        many.raw_execute()?;
    }
    let mut one = tx.prepare_cached(&sql(1))?;
    for row in chunks.remainder() {
        bind(&mut one, instance, std::slice::from_ref(row))?;
        one.raw_execute()?;
    }
    Ok(())
}

/// `INSERT OR IGNORE INTO {into} VALUES (...), ...` for `rows` rows of the instance and
/// `columns` more (OR IGNORE: a record written twice, by a retried batch, is kept once).
///
/// The instance, the same in every row, is one parameter (`?1`) that every row names, so it is
/// bound (and copied) once per statement rather than once per row.
fn insert_many(into: &str, columns: usize, rows: usize) -> String {
    let values: Vec<String> = (0..rows)
        .map(|i| {
            let marks: Vec<String> = (0..columns)
                .map(|c| format!("?{}", 2 + i * columns + c))
                .collect();
            format!("(?1, {})", marks.join(", "))
        })
        .collect();
    format!("INSERT OR IGNORE INTO {into} VALUES {}", values.join(", "))
}

/// [`insert_many`] for messages.
fn insert_messages(rows: usize) -> String {
    insert_many(
        "messages (instance, session, seq, at, request, reply)",
        5,
        rows,
    )
}

/// [`insert_many`] for sessions.
fn insert_sessions(rows: usize) -> String {
    insert_many(
        "sessions (instance, id, peer, transport, opened, closed, bytes_in, bytes_out, msgs_in, msgs_out, reason)",
        10,
        rows,
    )
}

fn bind_sessions(
    stmt: &mut rusqlite::CachedStatement<'_>,
    instance: &str,
    sessions: &[&SessionRow],
) -> rusqlite::Result<()> {
    stmt.raw_bind_parameter(1, instance)?;
    for (i, s) in sessions.iter().enumerate() {
        let at = 2 + i * 10;
        stmt.raw_bind_parameter(at, s.id as i64)?;
        stmt.raw_bind_parameter(at + 1, s.peer.as_str())?;
        stmt.raw_bind_parameter(at + 2, s.transport.as_str())?;
        stmt.raw_bind_parameter(at + 3, s.opened)?;
        stmt.raw_bind_parameter(at + 4, s.closed)?;
        stmt.raw_bind_parameter(at + 5, s.bytes_in as i64)?;
        stmt.raw_bind_parameter(at + 6, s.bytes_out as i64)?;
        stmt.raw_bind_parameter(at + 7, s.msgs_in as i64)?;
        stmt.raw_bind_parameter(at + 8, s.msgs_out as i64)?;
        stmt.raw_bind_parameter(at + 9, s.reason.as_str())?;
    }
    Ok(())
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
