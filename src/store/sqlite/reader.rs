//! Reading SQLite back, page by page: sessions and messages through their spans, totals,
//! bench runs.

use crate::store::error::StoreError;
use crate::store::queries::{
    NEWEST_SESSIONS, SESSION_SPANS, SPAN_SESSIONS, STATS_SERVERS, STATS_SESSIONS,
};
use crate::store::reading::{add_up, newest, ReasonTotals};
use crate::store::rows::{
    BenchResult, BenchRow, InstanceStats, MessageFilter, MessageRow, RecordedMessage, SessionRow,
};
use crate::store::schema::BENCH_COLUMNS;
use crate::store::spans::SessionSpan;
use crate::store::sqlite::Sqlite;
use rusqlite::params;
use std::collections::{HashMap, HashSet};

impl Sqlite {
    /// Runs one SQL statement that returns rows, each value as text (see [`crate::store::Store::query`]).
    pub fn query(&self, sql: &str) -> Result<Vec<Vec<String>>, StoreError> {
        use rusqlite::types::ValueRef;
        let mut stmt = self.conn.prepare(sql).map_err(self.err())?;
        let columns = stmt.column_count();
        let rows = stmt
            .query_map([], |r| {
                (0..columns)
                    .map(|i| {
                        Ok(match r.get_ref(i)? {
                            ValueRef::Null => "NULL".to_string(),
                            ValueRef::Integer(n) => n.to_string(),
                            ValueRef::Real(x) => x.to_string(),
                            ValueRef::Text(s) | ValueRef::Blob(s) => {
                                String::from_utf8_lossy(s).into_owned()
                            }
                        })
                    })
                    .collect()
            })
            .map_err(self.err())?;
        rows.collect::<Result<_, _>>().map_err(self.err())
    }

    /// Records the servers that recorded here reported dropped (see [`crate::store::Store::dropped`]).
    pub fn dropped(&self) -> Result<u64, StoreError> {
        self.conn
            .query_row(crate::store::queries::DROPPED, [], |r| r.get::<_, i64>(0))
            .map(|n| n.max(0) as u64)
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
    pub(super) fn sessions_in(
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
    pub(super) fn spans_cover_messages(&self) -> Result<bool, StoreError> {
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
    pub(super) fn recorded_messages_in(
        &self,
        filter: &MessageFilter,
    ) -> Result<Vec<RecordedMessage>, StoreError> {
        let mut stmt = self
            .conn
            .prepare(crate::store::queries::RECORDED_MESSAGES)
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
                    model: r.get(4)?,
                    result: BenchResult {
                        address: r.get(3)?,
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
                    },
                    cpu_us_per_msg: r.get(20)?,
                    rss_bytes_per_conn: r.get(21)?,
                })
            })
            .map_err(self.err())?;
        rows.collect::<Result<_, _>>().map_err(self.err())
    }
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
/// (the order of [`crate::store::queries::RECORDED_MESSAGES`]), at most `?7`.
const SPAN_MESSAGES: &str = "SELECT m.instance, s.peer, m.session, m.seq, m.at, m.request, m.reply
    FROM messages m LEFT JOIN sessions s ON s.instance = m.instance AND s.id = m.session
    WHERE m.id BETWEEN ?1 AND ?2 AND m.instance = ?3 AND (?4 IS NULL OR m.session = ?4)
        AND (?5 IS NULL OR s.peer = ?5) AND (?6 IS NULL OR m.at >= ?6)
    ORDER BY m.at DESC, m.session DESC, m.seq DESC LIMIT ?7";

/// A row of [`crate::store::queries::RECORDED_MESSAGES`] or [`SPAN_MESSAGES`].
fn recorded_message(r: &rusqlite::Row<'_>) -> rusqlite::Result<RecordedMessage> {
    Ok(RecordedMessage {
        instance: r.get(0)?,
        peer: r.get(1)?,
        message: message_row(r, 2)?,
    })
}

/// A `sessions` row from columns 1..=10 of a query (column 0 is the instance or a row id).
pub(super) fn session_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<SessionRow> {
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
pub(super) fn message_row(r: &rusqlite::Row<'_>, at: usize) -> rusqlite::Result<MessageRow> {
    Ok(MessageRow {
        session: r.get::<_, i64>(at)? as u64,
        seq: r.get::<_, i64>(at + 1)? as u64,
        at: r.get(at + 2)?,
        request: r.get(at + 3)?,
        reply: r.get(at + 4)?,
    })
}
