//! The SQLite backend: an embedded database file, in WAL mode so readers (`sessions`, `stats`)
//! and the process models' writers share it.

use super::schema::{BENCH_COLUMNS, MIGRATIONS, SQLITE_ONLY, VERSION};
use super::{
    add_up, messages_in, newest, session_spans, Backend, BenchRow, InstanceStats, MessageFilter,
    MessageRef, MessageRow, ReasonTotals, Record, RecordedMessage, RecorderStats, ServerRow,
    SessionRow, SessionSpan, StoreError, Written, INSERT_SESSION_SPAN, MIGRATION_TIMEOUT,
    NEWEST_SESSIONS, SESSION_SPANS, SPAN_SESSIONS, STATS_SERVERS, STATS_SESSIONS,
};
use rusqlite::{params, Connection, ErrorCode, Transaction, TransactionBehavior};
use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

/// How long a write waits for another process's (prefork, fork) before it fails.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

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
        Sqlite::open_within(path, MIGRATION_TIMEOUT)
    }

    /// [`Sqlite::open`], waiting up to `wait` for another instance's schema migration.
    fn open_within(path: &Path, wait: Duration) -> Result<Sqlite, StoreError> {
        let url = format!("sqlite://{}", path.display());
        let err = |source| StoreError::Database {
            url: url.clone(),
            source,
        };
        let conn = Connection::open(path).map_err(err)?;
        // Several processes (prefork, fork) write at once: wait for each other, briefly.
        conn.busy_timeout(BUSY_TIMEOUT).map_err(err)?;
        // 16 KiB pages for a new store (an existing one keeps its own): a batch of messages
        // is a quarter of the pages, page writes and WAL frames, a quarter fewer µs of the
        // writer's per message. Set before WAL, which fixes the page size.
        conn.pragma_update(None, "page_size", 16384).map_err(err)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(err)?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(err)?;
        let mut store = Sqlite { conn, url };
        store.migrate(wait)?;
        Ok(store)
    }

    fn err(&self) -> impl Fn(rusqlite::Error) -> StoreError + '_ {
        |source| StoreError::Database {
            url: self.url.clone(),
            source,
        }
    }

    /// Applies the migrations the database lacks; refuses a schema newer than this binary's.
    ///
    /// A store that is up to date is only read. One that is not is migrated in one write
    /// transaction, which another instance's migration holds for as long as it runs (version 4
    /// copies every message): that is waited for up to `wait`, not the busy timeout's 10 s.
    fn migrate(&mut self, wait: Duration) -> Result<(), StoreError> {
        let url = self.url.clone();
        let err = |source| StoreError::Database {
            url: url.clone(),
            source,
        };
        let known = |found| match found {
            found if found > VERSION => Err(StoreError::SchemaTooNew {
                found,
                known: VERSION,
            }),
            found => Ok(found),
        };
        if known(schema_version(&self.conn).map_err(err)?)? == VERSION {
            return Ok(());
        }
        self.conn.busy_timeout(wait).map_err(err)?;
        let began = Transaction::new_unchecked(&self.conn, TransactionBehavior::Immediate);
        let tx = match began {
            Ok(tx) => tx,
            Err(e) if e.sqlite_error_code() == Some(ErrorCode::DatabaseBusy) => {
                self.conn.busy_timeout(BUSY_TIMEOUT).map_err(err)?;
                return Err(StoreError::MigrationBusy {
                    url,
                    waited: wait.as_secs(),
                });
            }
            Err(e) => return Err(err(e)),
        };
        tx.busy_timeout(BUSY_TIMEOUT).map_err(err)?;
        tx.execute_batch("CREATE TABLE IF NOT EXISTS schema_version (version BIGINT NOT NULL)")
            .map_err(err)?;
        // Again, now that no other instance can be migrating: it may have done so meanwhile.
        let found = known(schema_version(&tx).map_err(err)?)?;
        if found > 0 && found < VERSION {
            // Version 4 copies the `messages` table once: long for a store of many.
            tracing::info!(store = %url, from = found, to = VERSION, "migrating the store's schema");
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

    /// Records the servers that recorded here reported dropped (see [`super::Store::dropped`]).
    pub fn dropped(&self) -> Result<u64, StoreError> {
        self.conn
            .query_row(super::DROPPED, [], |r| r.get::<_, i64>(0))
            .map(|n| n.max(0) as u64)
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
    ///
    /// Without a peer, read through `session_spans` (the schema's version 5): spans newest
    /// first through their index, each span's rows through the key, until no span left can
    /// hold a session newer than the oldest of the newest `last` found. With a peer, which no
    /// span knows, the table is read in one query.
    pub fn sessions(
        &self,
        last: usize,
        peer: Option<&str>,
    ) -> Result<Vec<(String, SessionRow)>, StoreError> {
        if peer.is_some() || last == 0 {
            return self.sessions_in(last, peer);
        }
        // One read transaction: the spans and the rows as they were at one moment.
        let tx = self.conn.unchecked_transaction().map_err(self.err())?;
        let mut spans = tx.prepare(SESSION_SPANS).map_err(self.err())?;
        let spans = spans
            .query_map([], |r| {
                let span = SessionSpan {
                    first_id: r.get::<_, i64>(1)? as u64,
                    last_id: r.get::<_, i64>(2)? as u64,
                    first_closed: r.get(3)?,
                    last_closed: r.get(4)?,
                };
                Ok(((r.get::<_, String>(0)?, span), Some(span.last_closed)))
            })
            .map_err(self.err())?
            .map(|span| span.map_err(self.err()));
        let mut read = tx.prepare(SPAN_SESSIONS).map_err(self.err())?;
        newest(spans, last, |(instance, span), oldest_kept| {
            let (from, to) = span.closed_between(oldest_kept);
            let rows = read
                .query_map(
                    params![
                        instance,
                        span.first_id as i64,
                        span.last_id as i64,
                        from,
                        to,
                        last as i64
                    ],
                    |r| Ok((r.get::<_, String>(0)?, session_row(r)?)),
                )
                .map_err(self.err())?;
            rows.collect::<Result<_, _>>().map_err(self.err())
        })
    }

    /// [`sessions`](Sqlite::sessions) in one query over the whole table.
    fn sessions_in(
        &self,
        last: usize,
        peer: Option<&str>,
    ) -> Result<Vec<(String, SessionRow)>, StoreError> {
        let mut stmt = self.conn.prepare(NEWEST_SESSIONS).map_err(self.err())?;
        let rows = stmt
            .query_map(params![peer, peer, last as i64], |r| {
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
        let mut stmt = self.conn.prepare(STATS_SERVERS).map_err(self.err())?;
        let count =
            |r: &rusqlite::Row<'_>, i| r.get::<_, Option<i64>>(i).map(|v| v.map(|v| v as u64));
        let servers = stmt
            .query_map([], |r| {
                Ok(InstanceStats {
                    instance: r.get(0)?,
                    model: r.get(1)?,
                    address: r.get(2)?,
                    written: count(r, 3)?,
                    spooled: count(r, 4)?,
                    waited: count(r, 5)?,
                    dropped: count(r, 6)?,
                    sessions: 0,
                    bytes_in: 0,
                    bytes_out: 0,
                    messages: 0,
                    reasons: Vec::new(),
                })
            })
            .map_err(self.err())?
            .collect::<Result<_, _>>()
            .map_err(self.err())?;
        let mut stmt = self.conn.prepare(STATS_SESSIONS).map_err(self.err())?;
        let groups: Vec<ReasonTotals> = stmt
            .query_map([], |r| {
                Ok(ReasonTotals {
                    instance: r.get(0)?,
                    reason: r.get(1)?,
                    sessions: r.get::<_, i64>(2)? as u64,
                    bytes_in: r.get::<_, i64>(3)? as u64,
                    bytes_out: r.get::<_, i64>(4)? as u64,
                    messages: r.get::<_, i64>(5)? as u64,
                })
            })
            .map_err(self.err())?
            .collect::<Result<_, _>>()
            .map_err(self.err())?;
        Ok(add_up(servers, groups))
    }
}

impl Sqlite {
    /// Recorded messages that match `filter`, newest first.
    ///
    /// Read through `message_spans` (the schema's version 4): spans newest first through
    /// their index, each span's rows by id, until no span left can hold a message newer than
    /// the oldest of the newest `filter.last` found. With a session or a peer to
    /// match, a span is passed over when its instance's matching sessions closed before it
    /// began or opened after it ended (their messages were answered in between). Should some
    /// rows lie past the last span (written by something other than this store), the whole
    /// table is read in one query instead.
    pub fn recorded_messages(
        &self,
        filter: &MessageFilter,
    ) -> Result<Vec<RecordedMessage>, StoreError> {
        if filter.last == 0 {
            return Ok(Vec::new());
        }
        // One read transaction: the spans and the rows as they were at one moment.
        let tx = self.conn.unchecked_transaction().map_err(self.err())?;
        if !self.spans_cover_messages()? {
            return self.recorded_messages_in(filter);
        }
        let matching = self.matching(filter)?;
        // Newest first through an index: (instance, last_at) for one instance, else last_at.
        let mut spans = tx
            .prepare(&format!(
                "SELECT instance, first_id, last_id, first_at, last_at FROM message_spans {}
                 ORDER BY last_at DESC",
                if filter.instance.is_some() {
                    "WHERE instance = ?1"
                } else {
                    ""
                }
            ))
            .map_err(self.err())?;
        let spans = spans
            .query_map(rusqlite::params_from_iter(&filter.instance), |r| {
                let span = Span {
                    instance: r.get(0)?,
                    first_id: r.get(1)?,
                    last_id: r.get(2)?,
                    first_at: r.get(3)?,
                };
                Ok((span, Some(r.get::<_, i64>(4)?)))
            })
            .map_err(self.err())?
            .map(|span| span.map_err(self.err()))
            .filter(|span| match (span, &matching) {
                (Ok((span, Some(last_at))), Some(matching)) => matching.may_hold(span, *last_at),
                _ => true,
            });
        let mut read = tx.prepare(SPAN_MESSAGES).map_err(self.err())?;
        newest(spans, filter.last, |span, oldest_kept| {
            let session = filter.session.map(|s| s as i64);
            let rows = read
                .query_map(
                    params![
                        span.first_id,
                        span.last_id,
                        span.instance,
                        session,
                        filter.peer,
                        oldest_kept,
                        filter.last as i64
                    ],
                    recorded_message,
                )
                .map_err(self.err())?;
            rows.collect::<Result<_, _>>().map_err(self.err())
        })
    }

    /// Whether the last span reaches the table's last row: a row written by something other
    /// than this store's writer, past it, has no span.
    fn spans_cover_messages(&self) -> Result<bool, StoreError> {
        self.conn
            .query_row(
                "SELECT COALESCE((SELECT MAX(id) FROM messages), 0)
                     <= COALESCE((SELECT last_id FROM message_spans ORDER BY rowid DESC LIMIT 1), 0)",
                [],
                |r| r.get(0),
            )
            .map_err(self.err())
    }

    /// What is known of where `filter`'s session or peer can have messages; `None` without
    /// either.
    fn matching(&self, filter: &MessageFilter) -> Result<Option<Matching>, StoreError> {
        if filter.session.is_none() && filter.peer.is_none() {
            return Ok(None);
        }
        let mut stmt = self
            .conn
            .prepare(
                "SELECT instance, MIN(opened), MAX(closed) FROM sessions
                 WHERE (?1 IS NULL OR instance = ?1) AND (?2 IS NULL OR id = ?2) AND (?3 IS NULL OR peer = ?3)
                 GROUP BY instance",
            )
            .map_err(self.err())?;
        let windows = stmt
            .query_map(
                params![
                    filter.instance,
                    filter.session.map(|s| s as i64),
                    filter.peer
                ],
                |r| {
                    let (opened, closed): (i64, i64) = (r.get(1)?, r.get(2)?);
                    Ok((
                        r.get(0)?,
                        (opened - CLOCK_SLACK_US, closed + CLOCK_SLACK_US),
                    ))
                },
            )
            .map_err(self.err())?
            .collect::<Result<_, _>>()
            .map_err(self.err())?;
        let mut stmt = self
            .conn
            .prepare(
                "SELECT instance FROM servers WHERE stopped IS NOT NULL AND COALESCE(dropped, 0) = 0",
            )
            .map_err(self.err())?;
        let finished = stmt
            .query_map([], |r| r.get(0))
            .map_err(self.err())?
            .collect::<Result<_, _>>()
            .map_err(self.err())?;
        Ok(Some(Matching {
            windows,
            finished,
            peer: filter.peer.is_some(),
        }))
    }

    /// [`recorded_messages`](Sqlite::recorded_messages) in one query over the whole table.
    fn recorded_messages_in(
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
                recorded_message,
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

/// The schema version `conn` sees, 0 for a database switchboard has not set up yet.
fn schema_version(conn: &Connection) -> rusqlite::Result<i64> {
    let exists: bool = conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_version')",
        [],
        |r| r.get(0),
    )?;
    if !exists {
        return Ok(0);
    }
    let version: Option<i64> =
        conn.query_row("SELECT MAX(version) FROM schema_version", [], |r| r.get(0))?;
    Ok(version.unwrap_or(0))
}

/// One transaction's messages of one instance: rows `first_id..=last_id`, none older than
/// `first_at` (a span given to a migrated store's rows may hold other instances' rows too).
struct Span {
    instance: String,
    first_id: i64,
    last_id: i64,
    first_at: i64,
}

/// Where the messages of a session or a peer asked for can be.
struct Matching {
    /// Per instance, from when the first of its matching sessions opened to when the last
    /// closed, widened by [`CLOCK_SLACK_US`]: their messages were answered in between.
    windows: HashMap<String, (i64, i64)>,
    /// Instances that stopped and wrote every record: each of their sessions has its row.
    finished: HashSet<String>,
    /// A peer is asked for: only a session that closed has a peer on record, so an instance
    /// without a matching session has no matching message.
    peer: bool,
}

impl Matching {
    /// Whether `span`, whose newest message was answered at `last_at`, can hold a message that
    /// matches. Without a matching session an instance can still hold an open one's messages
    /// (when no peer is asked for) unless it has finished.
    fn may_hold(&self, span: &Span, last_at: i64) -> bool {
        match self.windows.get(&span.instance) {
            Some(&(opened, closed)) => last_at >= opened && span.first_at <= closed,
            None => !self.peer && !self.finished.contains(&span.instance),
        }
    }
}

/// How far a message's time may lie outside its session's opened and closed times and still
/// be found: those come from the same clock, but `opened` is worked back from the session's
/// length, and a few microseconds of rounding must not lose a message.
const CLOCK_SLACK_US: i64 = 1_000_000;

/// A span's rows that match a filter and are no older than `?6` (when given), newest first
/// (the order of [`super::RECORDED_MESSAGES`]), at most `?7`.
const SPAN_MESSAGES: &str = "SELECT m.instance, s.peer, m.session, m.seq, m.at, m.request, m.reply
    FROM messages m LEFT JOIN sessions s ON s.instance = m.instance AND s.id = m.session
    WHERE m.id BETWEEN ?1 AND ?2 AND m.instance = ?3 AND (?4 IS NULL OR m.session = ?4)
        AND (?5 IS NULL OR s.peer = ?5) AND (?6 IS NULL OR m.at >= ?6)
    ORDER BY m.at DESC, m.session DESC, m.seq DESC LIMIT ?7";

/// A row of [`super::RECORDED_MESSAGES`] or [`SPAN_MESSAGES`].
fn recorded_message(r: &rusqlite::Row<'_>) -> rusqlite::Result<RecordedMessage> {
    Ok(RecordedMessage {
        instance: r.get(0)?,
        peer: r.get(1)?,
        message: message_row(r, 2)?,
    })
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{ServerRow, SessionRow};

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
    /// dropped records. Times start at `from`, session ids at `first`.
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
        crate::store::recorded_sessions::assert_spans_match_one_query(|last| {
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
        let recorded =
            crate::store::recorded_sessions::record_into(&mut db, |db: &mut Sqlite, row| {
                db.start_server(row).unwrap()
            });
        let read =
            crate::store::recorded_sessions::in_key_order(db.sessions(100_000, None).unwrap());
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
}
