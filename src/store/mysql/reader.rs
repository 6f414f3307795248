//! Reading MySQL/MariaDB back, page by page: sessions through their spans, messages session
//! by session, totals, bench runs.

use super::col;
use crate::store::error::StoreError;
use crate::store::mysql::Mysql;
use crate::store::queries::{
    NEWEST_SESSIONS, SESSION_SPANS, SPAN_SESSIONS, STATS_SERVERS, STATS_SESSIONS,
};
use crate::store::reading::{add_up, by_bound, newest, Bounded, ReasonTotals};
use crate::store::rows::{
    BenchResult, BenchRow, InstanceStats, MessageFilter, MessageRow, RecordedMessage, SessionRow,
};
use crate::store::schema::BENCH_COLUMNS;
use crate::store::spans::SessionSpan;
use mysql::prelude::Queryable;
use mysql::{Params, Value};
use std::cell::RefCell;
use std::collections::VecDeque;

/// Sessions of one instance that `messages` finds one query each, at most: an instance with
/// more is read in one query that sorts its rows.
const SESSIONS_ONE_BY_ONE: usize = 4096;

/// Messages per session, on average, from which `messages` reads an instance session by session.
const LONG_SESSION: u64 = 100;

/// One session's newest messages below a sequence number, through the key: a session's
/// messages are answered in order, so its highest sequence numbers are its newest. The columns
/// of [`crate::store::queries::RECORDED_MESSAGES`].
const SESSION_MESSAGES: &str =
    "SELECT m.instance, s.peer, m.session, m.seq, m.at, m.request, m.reply
    FROM messages m LEFT JOIN sessions s ON s.instance = m.instance AND s.id = m.session
    WHERE m.instance = ? AND m.session = ? AND m.seq < ? ORDER BY m.seq DESC LIMIT ?";

/// Messages of a session read at a time once the newest `--last` are found: most sessions
/// then hold few newer than those, or none.
const SESSION_PAGE: usize = 64;

/// Spans `sessions` reads in its first page; each next page is twice the last.
const SPAN_PAGE: usize = 16;

impl Mysql {
    /// Runs one SQL statement that returns rows, each value as text (see [`crate::store::Store::query`]).
    pub fn query(&mut self, sql: &str) -> Result<Vec<Vec<String>>, StoreError> {
        let url = self.url.clone();
        let rows: Vec<mysql::Row> = self
            .conn()?
            .query(sql)
            .map_err(|source| StoreError::Mysql { url, source })?;
        Ok(rows
            .into_iter()
            .map(|r| {
                r.unwrap()
                    .into_iter()
                    .map(|v| match v {
                        Value::NULL => "NULL".to_string(),
                        Value::Bytes(b) => String::from_utf8_lossy(&b).into_owned(),
                        Value::Int(n) => n.to_string(),
                        Value::UInt(n) => n.to_string(),
                        Value::Float(x) => x.to_string(),
                        Value::Double(x) => x.to_string(),
                        other => other.as_sql(true),
                    })
                    .collect()
            })
            .collect())
    }

    /// Records the servers that recorded here reported dropped (see [`crate::store::Store::dropped`]).
    pub fn dropped(&mut self) -> Result<u64, StoreError> {
        let url = self.url.clone();
        let n: Option<Option<i64>> = self
            .conn()?
            .query_first(crate::store::queries::DROPPED)
            .map_err(|source| StoreError::Mysql { url, source })?;
        Ok(n.flatten().unwrap_or(0).max(0) as u64)
    }

    /// The last `last` sessions (newest first), of the peer `peer` if given.
    ///
    /// Without a peer, read through `session_spans` as on SQLite ([`crate::store::Sqlite::sessions`]), the
    /// spans a page at a time, in one snapshot.
    pub fn sessions(
        &mut self,
        last: usize,
        peer: Option<&str>,
    ) -> Result<Vec<(String, SessionRow)>, StoreError> {
        let url = self.url.clone();
        let err = |source| StoreError::Mysql {
            url: url.clone(),
            source,
        };
        let conn = self.conn()?;
        if peer.is_some() || last == 0 {
            let rows: Vec<mysql::Row> = conn
                .exec(NEWEST_SESSIONS, (peer, peer, last as u64))
                .map_err(err)?;
            return Ok(rows.into_iter().map(session_of).collect());
        }
        // One snapshot: the pages of spans follow on from each other, and rows do not move.
        let opts = mysql::TxOpts::default()
            .set_with_consistent_snapshot(true)
            .set_access_mode(Some(mysql::AccessMode::ReadOnly));
        let tx = RefCell::new(conn.start_transaction(opts).map_err(err)?);
        let (mut page, mut offset, mut size, mut more) = (VecDeque::new(), 0, SPAN_PAGE, true);
        let spans = std::iter::from_fn(|| {
            if page.is_empty() && more {
                let rows: Result<Vec<mysql::Row>, _> = tx.borrow_mut().exec(
                    format!("{SESSION_SPANS} LIMIT ? OFFSET ?"),
                    (size as u64, offset as u64),
                );
                match rows {
                    Ok(rows) => {
                        more = rows.len() == size;
                        offset += rows.len();
                        // Most reads need a span or two; each page twice the last, up to 1,024.
                        size = (size * 2).min(1024);
                        page.extend(rows.into_iter().map(|mut r| {
                            let span = SessionSpan {
                                first_id: col(&mut r, 1),
                                last_id: col(&mut r, 2),
                                first_closed: col(&mut r, 3),
                                last_closed: col(&mut r, 4),
                            };
                            Ok(((col::<String>(&mut r, 0), span), Some(span.last_closed)))
                        }));
                    }
                    Err(e) => return Some(Err(err(e))),
                }
            }
            page.pop_front()
        });
        newest(
            spans,
            last,
            |(instance, span): (String, SessionSpan), oldest_kept| {
                let (from, to) = span.closed_between(oldest_kept);
                let rows: Vec<mysql::Row> = tx
                    .borrow_mut()
                    .exec(
                        SPAN_SESSIONS,
                        (
                            &instance,
                            span.first_id,
                            span.last_id,
                            from,
                            to,
                            last as u64,
                        ),
                    )
                    .map_err(err)?;
                Ok(rows.into_iter().map(session_of).collect())
            },
        )
    }

    /// The messages of one session, in order.
    pub fn messages(
        &mut self,
        instance: &str,
        session: u64,
    ) -> Result<Vec<MessageRow>, StoreError> {
        let url = self.url.clone();
        let rows: Vec<mysql::Row> = self
            .conn()?
            .exec(
                "SELECT session, seq, at, request, reply FROM messages WHERE instance = ? AND session = ? ORDER BY seq",
                (instance, session),
            )
            .map_err(|source| StoreError::Mysql { url, source })?;
        Ok(rows
            .into_iter()
            .map(|mut r| MessageRow {
                session: col(&mut r, 0),
                seq: col(&mut r, 1),
                at: col(&mut r, 2),
                request: col(&mut r, 3),
                reply: col(&mut r, 4),
            })
            .collect())
    }

    /// Totals per instance, in order of start.
    pub fn stats(&mut self) -> Result<Vec<InstanceStats>, StoreError> {
        let url = self.url.clone();
        let err = |source| StoreError::Mysql {
            url: url.clone(),
            source,
        };
        let conn = self.conn()?;
        let servers: Vec<mysql::Row> = conn.query(STATS_SERVERS).map_err(err)?;
        let servers = servers
            .into_iter()
            .map(|mut r| InstanceStats {
                instance: col(&mut r, 0),
                model: col(&mut r, 1),
                address: col(&mut r, 2),
                written: col(&mut r, 3),
                spooled: col(&mut r, 4),
                waited: col(&mut r, 5),
                dropped: col(&mut r, 6),
                sessions: 0,
                bytes_in: 0,
                bytes_out: 0,
                messages: 0,
                reasons: Vec::new(),
            })
            .collect();
        let groups: Vec<mysql::Row> = conn.query(STATS_SESSIONS).map_err(err)?;
        let groups = groups.into_iter().map(|mut r| ReasonTotals {
            instance: col(&mut r, 0),
            reason: col(&mut r, 1),
            sessions: col(&mut r, 2),
            bytes_in: col(&mut r, 3),
            bytes_out: col(&mut r, 4),
            messages: col(&mut r, 5),
        });
        Ok(add_up(servers, groups))
    }

    /// Recorded messages that match `filter`, newest first.
    ///
    /// The table's key is (instance, session, seq), and no index holds the time: a query for the
    /// newest messages of a whole table, or of one instance, would read and sort every row it
    /// covers (minutes, past the timeout, for tens of millions). So they are read through the
    /// key, group by group, those that may hold the newest messages first, until no group left
    /// can hold a message newer than the oldest of the newest `filter.last` found so far:
    /// instance by instance, each bounded by when it stopped (its messages were all
    /// answered before), and within an instance session by session, each bounded by its last
    /// message's time, read backwards from its last sequence number. An index on the time would
    /// answer directly, but made every recorded message cost MariaDB 60% more.
    pub fn recorded_messages(
        &mut self,
        filter: &MessageFilter,
    ) -> Result<Vec<RecordedMessage>, StoreError> {
        if filter.last == 0 {
            return Ok(Vec::new());
        }
        let instances = match &filter.instance {
            Some(instance) => vec![(instance.clone(), None)],
            None => {
                let url = self.url.clone();
                // DISTINCT on the key's first column skips from one instance to the next.
                self.conn()?
                    .query(
                        "SELECT m.instance, s.stopped FROM (SELECT DISTINCT instance FROM messages) m
                         LEFT JOIN servers s ON s.instance = m.instance",
                    )
                    .map_err(|source| StoreError::Mysql { url, source })?
            }
        };
        newest(by_bound(instances), filter.last, |instance, _| {
            self.newest_of_instance(&instance, filter)
        })
    }

    /// One instance's newest messages that match `filter`, session by session.
    fn newest_of_instance(
        &mut self,
        instance: &str,
        filter: &MessageFilter,
    ) -> Result<Vec<RecordedMessage>, StoreError> {
        let sessions: Vec<Bounded<u64>> = if let Some(peer) = &filter.peer {
            // Only a session that closed has a peer on record; none of its messages came later.
            let url = self.url.clone();
            self.conn()?
                .exec(
                    "SELECT id, closed FROM sessions WHERE instance = ? AND peer = ?
                     AND (? IS NULL OR id = ?)",
                    (instance, peer, filter.session, filter.session),
                )
                .map_err(|source| StoreError::Mysql { url, source })?
        } else if let Some(session) = filter.session {
            vec![(session, None)]
        } else {
            let one_by_one = if self.long_sessions(instance)? {
                self.last_message_times(instance)?
            } else {
                None
            };
            match one_by_one {
                Some(sessions) => sessions,
                // Many short sessions: one query sorting the instance's rows costs less.
                None => {
                    let one = MessageFilter {
                        instance: Some(instance.into()),
                        ..filter.clone()
                    };
                    return self.recorded_messages_in(&one);
                }
            }
        };
        newest(by_bound(sessions), filter.last, |session, oldest_kept| {
            self.session_messages(instance, session, filter.last, oldest_kept)
        })
    }

    /// Session `session`'s newest `last` messages, read backwards from its last sequence
    /// number. Once the newest `last` of all are found (`oldest_kept` is the time of the oldest
    /// of them), in pages of [`SESSION_PAGE`], ending at the first message older than that:
    /// the session's earlier messages are older still.
    fn session_messages(
        &mut self,
        instance: &str,
        session: u64,
        last: usize,
        oldest_kept: Option<i64>,
    ) -> Result<Vec<RecordedMessage>, StoreError> {
        let page = match oldest_kept {
            Some(_) => SESSION_PAGE.min(last),
            None => last,
        };
        let mut messages: Vec<RecordedMessage> = Vec::new();
        loop {
            let below = messages.last().map_or(i64::MAX as u64, |m| m.message.seq);
            let url = self.url.clone();
            let rows: Vec<mysql::Row> = self
                .conn()?
                .exec(SESSION_MESSAGES, (instance, session, below, page as u64))
                .map_err(|source| StoreError::Mysql { url, source })?;
            let full = rows.len() == page;
            messages.extend(rows.into_iter().map(recorded_message));
            let past_the_cut = oldest_kept
                .zip(messages.last())
                .is_some_and(|(oldest, m)| m.message.at < oldest);
            if !full || past_the_cut || messages.len() >= last {
                return Ok(messages);
            }
        }
    }

    /// Whether `instance`'s closed sessions hold [`LONG_SESSION`] messages each or more on
    /// average (or there are none yet): then finding its sessions one query each, about 0.25 ms
    /// apiece here, costs less than sorting its rows, about 2.6 µs apiece.
    fn long_sessions(&mut self, instance: &str) -> Result<bool, StoreError> {
        let url = self.url.clone();
        let counts: Option<(u64, u64)> = self
            .conn()?
            .exec_first(
                "SELECT COUNT(*), CAST(COALESCE(SUM(msgs_in), 0) AS SIGNED) FROM sessions
                 WHERE instance = ?",
                (instance,),
            )
            .map_err(|source| StoreError::Mysql { url, source })?;
        Ok(counts.is_some_and(|(sessions, messages)| sessions * LONG_SESSION <= messages))
    }

    /// Each session of `instance` with the time of its last message, found through the key
    /// from the highest session down, one query each; `None` past [`SESSIONS_ONE_BY_ONE`].
    /// A session's messages are answered in order, so its last sequence number is its newest.
    fn last_message_times(
        &mut self,
        instance: &str,
    ) -> Result<Option<Vec<Bounded<u64>>>, StoreError> {
        let mut sessions = Vec::new();
        let mut below = i64::MAX as u64;
        while sessions.len() <= SESSIONS_ONE_BY_ONE {
            let url = self.url.clone();
            let next: Option<(u64, i64)> = self
                .conn()?
                .exec_first(
                    "SELECT session, at FROM messages WHERE instance = ? AND session < ?
                     ORDER BY session DESC, seq DESC LIMIT 1",
                    (instance, below),
                )
                .map_err(|source| StoreError::Mysql { url, source })?;
            let Some((session, at)) = next else {
                return Ok(Some(sessions));
            };
            sessions.push((session, Some(at)));
            below = session;
        }
        Ok(None)
    }

    /// [`recorded_messages`](Mysql::recorded_messages) in one query.
    pub(super) fn recorded_messages_in(
        &mut self,
        filter: &MessageFilter,
    ) -> Result<Vec<RecordedMessage>, StoreError> {
        let url = self.url.clone();
        let (instance, peer) = (filter.instance.clone(), filter.peer.clone());
        let params: Vec<Value> = vec![
            instance.clone().into(),
            instance.into(),
            filter.session.into(),
            filter.session.into(),
            peer.clone().into(),
            peer.into(),
            (filter.last as u64).into(),
        ];
        let rows: Vec<mysql::Row> = self
            .conn()?
            .exec(
                crate::store::queries::RECORDED_MESSAGES,
                Params::Positional(params),
            )
            .map_err(|source| StoreError::Mysql { url, source })?;
        Ok(rows.into_iter().map(recorded_message).collect())
    }

    /// The last `last` load-generator runs (newest first), of one lab run if given.
    pub fn bench_runs(
        &mut self,
        last: usize,
        lab: Option<&str>,
    ) -> Result<Vec<BenchRow>, StoreError> {
        let url = self.url.clone();
        let rows: Vec<mysql::Row> = self
            .conn()?
            .exec(
                format!("SELECT {BENCH_COLUMNS} FROM bench_runs WHERE (? IS NULL OR lab = ?) ORDER BY started DESC, run DESC LIMIT ?"),
                (lab, lab, last as u64),
            )
            .map_err(|source| StoreError::Mysql { url, source })?;
        Ok(rows
            .into_iter()
            .map(|mut r| BenchRow {
                run: col(&mut r, 0),
                lab: col(&mut r, 1),
                started: col(&mut r, 2),
                model: col(&mut r, 4),
                result: BenchResult {
                    address: col(&mut r, 3),
                    frame: col(&mut r, 5),
                    conns: col(&mut r, 6),
                    size: col(&mut r, 7),
                    depth: col(&mut r, 8),
                    rate: col(&mut r, 9),
                    secs: col(&mut r, 10),
                    msgs_per_s: col(&mut r, 11),
                    mb_per_s: col(&mut r, 12),
                    p50_us: col(&mut r, 13),
                    p90_us: col(&mut r, 14),
                    p99_us: col(&mut r, 15),
                    p999_us: col(&mut r, 16),
                    max_us: col(&mut r, 17),
                    errors: col(&mut r, 18),
                    mismatches: col(&mut r, 19),
                },
                cpu_us_per_msg: col(&mut r, 20),
                rss_bytes_per_conn: col(&mut r, 21),
            })
            .collect())
    }
}

/// A row of [`crate::store::queries::RECORDED_MESSAGES`] or [`SESSION_MESSAGES`].
fn recorded_message(mut r: mysql::Row) -> RecordedMessage {
    RecordedMessage {
        instance: col(&mut r, 0),
        peer: col(&mut r, 1),
        message: MessageRow {
            session: col(&mut r, 2),
            seq: col(&mut r, 3),
            at: col(&mut r, 4),
            request: col(&mut r, 5),
            reply: col(&mut r, 6),
        },
    }
}

/// A session from the columns of [`NEWEST_SESSIONS`].
pub(super) fn session_of(mut r: mysql::Row) -> (String, SessionRow) {
    let session = SessionRow {
        id: col(&mut r, 1),
        peer: col(&mut r, 2),
        transport: col(&mut r, 3),
        opened: col(&mut r, 4),
        closed: col(&mut r, 5),
        bytes_in: col(&mut r, 6),
        bytes_out: col(&mut r, 7),
        msgs_in: col(&mut r, 8),
        msgs_out: col(&mut r, 9),
        reason: col(&mut r, 10),
    };
    (col(&mut r, 0), session)
}
