//! The MySQL/MariaDB backend: many server instances, on one machine or several, record into
//! one database. When the database is unreachable or goes away, a recording server's batches
//! go to a local spool ([`super::spool`]) and are replayed once it answers again; its primary
//! keys make a replayed record land once even if it had reached the database before.

use super::schema::{BENCH_COLUMNS, MIGRATIONS, VERSION};
use super::{
    add_up, by_bound, messages_in, newest, session_spans, Backend, BenchRow, Bounded,
    InstanceStats, MessageFilter, MessageRef, MessageRow, ReasonTotals, Record, RecordedMessage,
    RecorderStats, ServerRow, SessionRow, SessionSpan, StoreError, Written, INSERT_SESSION_SPAN,
    MIGRATION_TIMEOUT, NEWEST_SESSIONS, SESSION_SPANS, SPAN_SESSIONS, STATS_SERVERS,
    STATS_SESSIONS,
};
use mysql::prelude::Queryable;
use mysql::{Conn, Opts, OptsBuilder, Params, Transaction, Value};
use std::cell::RefCell;
use std::collections::VecDeque;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

/// How long the server may take to answer a recording server's store before it gives up on
/// it (and spools).
const TIMEOUT: Duration = Duration::from_secs(30);
/// How long it may take to answer a read (`sessions`, `stats`, `messages`, `runs`): `stats`
/// adds up every session, 36 s for 21 million here.
const READ_TIMEOUT: Duration = Duration::from_secs(600);
/// Rows per multi-row INSERT or per bulk command, at most.
const ROWS_PER_INSERT: usize = 512;
/// Sessions of one instance that `messages` finds one query each, at most: an instance with
/// more is read in one query that sorts its rows.
const SESSIONS_ONE_BY_ONE: usize = 4096;
/// Messages per session, on average, from which `messages` reads an instance session by session.
const LONG_SESSION: u64 = 100;
/// One session's newest messages below a sequence number, through the key: a session's
/// messages are answered in order, so its highest sequence numbers are its newest. The columns
/// of [`super::RECORDED_MESSAGES`].
const SESSION_MESSAGES: &str =
    "SELECT m.instance, s.peer, m.session, m.seq, m.at, m.request, m.reply
    FROM messages m LEFT JOIN sessions s ON s.instance = m.instance AND s.id = m.session
    WHERE m.instance = ? AND m.session = ? AND m.seq < ? ORDER BY m.seq DESC LIMIT ?";
/// Messages of a session read at a time once the newest `--last` are found: most sessions
/// then hold few newer than those, or none.
const SESSION_PAGE: usize = 64;

/// Spans `sessions` reads in its first page; each next page is twice the last.
const SPAN_PAGE: usize = 16;

/// A MySQL or MariaDB store.
pub struct Mysql {
    opts: Opts,
    url: String,
    conn: Option<Conn>,
    /// Whether the server is MariaDB, which inserts a batch by bulk execution (see
    /// [`insert_rows`]).
    bulk: bool,
}

impl Mysql {
    /// Connects and brings the schema up to date, for a recording server: a statement not
    /// answered within 30 s fails (and the server spools).
    pub fn open(url: &str, display: String) -> Result<Mysql, StoreError> {
        Mysql::open_within(url, display, TIMEOUT)
    }

    /// As [`open`](Mysql::open), for reading: a statement may take up to 10 minutes.
    pub fn open_to_read(url: &str, display: String) -> Result<Mysql, StoreError> {
        Mysql::open_within(url, display, READ_TIMEOUT)
    }

    fn open_within(url: &str, display: String, timeout: Duration) -> Result<Mysql, StoreError> {
        let opts = Opts::from_url(url).map_err(|_| StoreError::Url(display.clone()))?;
        let opts: Opts = OptsBuilder::from_opts(opts)
            .tcp_connect_timeout(Some(Duration::from_secs(5)))
            .read_timeout(Some(timeout))
            .write_timeout(Some(TIMEOUT))
            .into();
        let (conn, bulk) = connect(&opts).map_err(|source| StoreError::Mysql {
            url: display.clone(),
            source,
        })?;
        let mut store = Mysql {
            opts,
            url: display,
            conn: Some(conn),
            bulk,
        };
        store.migrate(MIGRATION_TIMEOUT)?;
        Ok(store)
    }

    fn err(&self) -> impl Fn(mysql::Error) -> StoreError + '_ {
        |source| StoreError::Mysql {
            url: self.url.clone(),
            source,
        }
    }

    fn conn(&mut self) -> Result<&mut Conn, StoreError> {
        if self.conn.is_none() {
            let (conn, bulk) = connect(&self.opts).map_err(self.err())?;
            self.conn = Some(conn);
            self.bulk = bulk;
        }
        Ok(self.conn.as_mut().expect("connected above"))
    }

    /// Applies the migrations the database lacks, one instance at a time (a named lock).
    ///
    /// On a connection of its own, whose reads may take up to [`MIGRATION_TIMEOUT`]: a
    /// migration that fills a table from a large one (version 5 reads every session) can
    /// take minutes, longer than the store's usual [`TIMEOUT`]. Another instance's migration is
    /// waited for up to `wait` (at start, as long).
    fn migrate(&mut self, wait: Duration) -> Result<(), StoreError> {
        let url = self.url.clone();
        let err = |source| StoreError::Mysql {
            url: url.clone(),
            source,
        };
        let opts = OptsBuilder::from_opts(self.opts.clone()).read_timeout(Some(MIGRATION_TIMEOUT));
        let conn = &mut Conn::new(opts).map_err(err)?;
        let locked: Option<Option<i64>> = conn
            .query_first(format!(
                "SELECT GET_LOCK('switchboard_migrate', {})",
                wait.as_secs()
            ))
            .map_err(err)?;
        if locked.flatten() != Some(1) {
            return Err(StoreError::MigrationBusy {
                url: url.clone(),
                waited: wait.as_secs(),
            });
        }
        let result = (|| {
            conn.query_drop("CREATE TABLE IF NOT EXISTS schema_version (version BIGINT NOT NULL)")
                .map_err(err)?;
            let found: Option<Option<i64>> = conn
                .query_first("SELECT MAX(version) FROM schema_version")
                .map_err(err)?;
            let found = found.flatten().unwrap_or(0);
            if found > VERSION {
                return Err(StoreError::SchemaTooNew {
                    found,
                    known: VERSION,
                });
            }
            if found > 0 && found < VERSION {
                tracing::info!(store = %url, from = found, to = VERSION, "migrating the store's schema");
            }
            for (i, statements) in MIGRATIONS.iter().enumerate().skip(found as usize) {
                for sql in *statements {
                    conn.query_drop(*sql).map_err(err)?;
                }
                conn.query_drop("DELETE FROM schema_version").map_err(err)?;
                conn.exec_drop(
                    "INSERT INTO schema_version (version) VALUES (?)",
                    (i as i64 + 1,),
                )
                .map_err(err)?;
            }
            Ok(())
        })();
        let _ = conn.query_drop("SELECT RELEASE_LOCK('switchboard_migrate')");
        result
    }

    /// The schema version of the database.
    pub fn version(&mut self) -> Result<i64, StoreError> {
        let url = self.url.clone();
        let v: Option<Option<i64>> = self
            .conn()?
            .query_first("SELECT MAX(version) FROM schema_version")
            .map_err(|source| StoreError::Mysql { url, source })?;
        Ok(v.flatten().unwrap_or(0))
    }

    /// Records the servers that recorded here reported dropped (see [`super::Store::dropped`]).
    pub fn dropped(&mut self) -> Result<u64, StoreError> {
        let url = self.url.clone();
        let n: Option<Option<i64>> = self
            .conn()?
            .query_first(super::DROPPED)
            .map_err(|source| StoreError::Mysql { url, source })?;
        Ok(n.flatten().unwrap_or(0).max(0) as u64)
    }

    /// Records a server's start.
    pub fn start_server(&mut self, row: &ServerRow) -> Result<(), StoreError> {
        let url = self.url.clone();
        self.conn()?
            .exec_drop(
                "INSERT INTO servers (instance, host, pid, model, address, service, frame, started) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (&row.instance, &row.host, row.pid, &row.model, &row.address, &row.service, &row.frame, row.started),
            )
            .map_err(|source| StoreError::Mysql { url, source })
    }

    /// The last `last` sessions (newest first), of the peer `peer` if given.
    ///
    /// Without a peer, read through `session_spans` as on SQLite ([`Sqlite::sessions`]), the
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
    fn recorded_messages_in(
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
            .exec(super::RECORDED_MESSAGES, Params::Positional(params))
            .map_err(|source| StoreError::Mysql { url, source })?;
        Ok(rows.into_iter().map(recorded_message).collect())
    }

    /// Records a load-generator run.
    pub fn record_bench(&mut self, r: &BenchRow) -> Result<(), StoreError> {
        let url = self.url.clone();
        let values: Vec<Value> = vec![
            r.run.clone().into(),
            r.lab.clone().into(),
            r.started.into(),
            r.address.clone().into(),
            r.model.clone().into(),
            r.frame.clone().into(),
            r.conns.into(),
            r.size.into(),
            r.depth.into(),
            r.rate.into(),
            r.secs.into(),
            r.msgs_per_s.into(),
            r.mb_per_s.into(),
            r.p50_us.into(),
            r.p90_us.into(),
            r.p99_us.into(),
            r.p999_us.into(),
            r.max_us.into(),
            r.errors.into(),
            r.mismatches.into(),
            r.cpu_us_per_msg.into(),
            r.rss_bytes_per_conn.into(),
        ];
        let marks = vec!["?"; values.len()].join(", ");
        self.conn()?
            .exec_drop(
                format!("INSERT INTO bench_runs ({BENCH_COLUMNS}) VALUES ({marks})"),
                Params::Positional(values),
            )
            .map_err(|source| StoreError::Mysql { url, source })
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
                address: col(&mut r, 3),
                model: col(&mut r, 4),
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
                cpu_us_per_msg: col(&mut r, 20),
                rss_bytes_per_conn: col(&mut r, 21),
            })
            .collect())
    }

    /// Writes a batch straight to the database, in one transaction ([`insert_rows`] says how).
    fn write_db(&mut self, instance: &str, batch: &[Record]) -> Result<(), StoreError> {
        let url = self.url.clone();
        let err = |source| StoreError::Mysql {
            url: url.clone(),
            source,
        };
        // Connected first: how rows are inserted depends on the server.
        self.conn()?;
        let bulk = self.bulk;
        let conn = self.conn()?;
        let mut tx = conn
            .start_transaction(mysql::TxOpts::default())
            .map_err(err)?;
        let sessions: Vec<[Value; 11]> = batch
            .iter()
            .filter_map(|r| match r {
                Record::Session(s) => Some([
                    Value::from(instance),
                    s.id.into(),
                    s.peer.as_str().into(),
                    s.transport.as_str().into(),
                    s.opened.into(),
                    s.closed.into(),
                    s.bytes_in.into(),
                    s.bytes_out.into(),
                    s.msgs_in.into(),
                    s.msgs_out.into(),
                    s.reason.as_str().into(),
                ]),
                _ => None,
            })
            .collect();
        let messages: Vec<MessageRef<'_>> = messages_in(batch).collect();
        let message_rows = messages.iter().map(|m| {
            [
                m.session.into(),
                m.seq.into(),
                m.at.into(),
                m.request.into(),
                m.reply.into(),
            ]
        });
        // IGNORE: a record replayed after it had already landed is kept once.
        insert_rows(
            &mut tx,
            bulk,
            "INSERT IGNORE INTO sessions (instance, id, peer, transport, opened, closed, bytes_in, bytes_out, msgs_in, msgs_out, reason) VALUES",
            "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            sessions.into_iter(),
        )
        .map_err(err)?;
        let spans = session_spans(batch);
        if !spans.is_empty() {
            let spans = spans.iter().map(|s| {
                (
                    instance,
                    s.first_id,
                    s.last_id,
                    s.first_closed,
                    s.last_closed,
                )
            });
            tx.exec_batch(INSERT_SESSION_SPAN, spans).map_err(err)?;
        }
        if !messages.is_empty() {
            // The instance, the same in every row, is a variable of the connection rather
            // than a parameter of each row: the server checks and converts a string
            // parameter's characters row by row, a third of its work per message. For the
            // same reason the requests and replies are sent as binary strings: their bytes go
            // into BLOBs unexamined (`perf`: their conversion fell from 7.5% of MariaDB's samples to 2%).
            tx.exec_drop(
                "SET @switchboard_instance = ?, character_set_client = binary",
                (instance,),
            )
            .map_err(err)?;
            insert_rows(
                &mut tx,
                bulk,
                "INSERT IGNORE INTO messages (instance, session, seq, at, request, reply) VALUES",
                "(@switchboard_instance, ?, ?, ?, ?, ?)",
                message_rows,
            )
            .map_err(err)?;
            // Back to the character set the connection began with (the handshake sets both).
            tx.query_drop("SET character_set_client = @@character_set_connection")
                .map_err(err)?;
        }
        tx.commit().map_err(err)
    }
}

impl Backend for Mysql {
    fn write(&mut self, instance: &str, batch: &[Record]) -> Result<Written, StoreError> {
        self.write_db(instance, batch).inspect_err(|_| {
            self.conn = None; // connected afresh at the next try
        })?;
        Ok(Written::default())
    }

    fn stop_server(
        &mut self,
        instance: &str,
        stopped: i64,
        stats: &RecorderStats,
    ) -> Result<(), StoreError> {
        let url = self.url.clone();
        self.conn()?
            .exec_drop(
                "UPDATE servers SET stopped = ?, written = ?, spooled = ?, waited = ?, dropped = ? WHERE instance = ?",
                (
                    stopped,
                    stats.written.load(Relaxed),
                    stats.spooled.load(Relaxed),
                    stats.waited.load(Relaxed),
                    stats.dropped.load(Relaxed),
                    instance,
                ),
            )
            .map_err(|source| StoreError::Mysql { url, source })
    }
}

/// A driver error in words, with what to do where that is known: a timed-out socket says
/// that the server did not answer in time (the driver's own text is "Resource temporarily
/// unavailable"), a refused login or a missing database says what to check.
pub(crate) fn describe(e: &mysql::Error) -> String {
    let io: Option<&std::io::Error> = match e {
        mysql::Error::IoError(io) => Some(io),
        mysql::Error::CodecError(codec) => {
            std::error::Error::source(codec).and_then(|io| io.downcast_ref())
        }
        _ => None,
    };
    match io.map(std::io::Error::kind) {
        Some(std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => format!(
            "the server did not answer in time ({} s for a server's records, {} s for a read: \
             a stalled server, or a read of a very large table)",
            TIMEOUT.as_secs(),
            READ_TIMEOUT.as_secs()
        ),
        _ => match e {
            mysql::Error::MySqlError(m) => {
                let hint = match m.code {
                    1044 | 1045 => {
                        ": check the user and password in the URL, and the user's grants on the \
                         database"
                    }
                    1049 => ": create it first (CREATE DATABASE), or name one that exists",
                    _ => "",
                };
                format!("{} (error {}){hint}", m.message, m.code)
            }
            mysql::Error::DriverError(mysql::DriverError::CouldNotConnect(Some((
                addr,
                why,
                _,
            )))) => {
                format!("could not connect to {addr}: {why} (is MySQL or MariaDB listening there?)")
            }
            mysql::Error::IoError(io) => io.to_string(),
            _ => e.to_string(),
        },
    }
}

/// A row of [`super::RECORDED_MESSAGES`] or [`SESSION_MESSAGES`].
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

/// Connects, and says whether the server is MariaDB (whose bulk execution [`insert_rows`] uses).
fn connect(opts: &Opts) -> mysql::Result<(Conn, bool)> {
    let mut conn = Conn::new(opts.clone())?;
    let version: Option<String> = conn.query_first("SELECT VERSION()")?;
    let mariadb = version.is_some_and(|v| v.contains("MariaDB"));
    Ok((conn, mariadb))
}

/// Inserts `rows` with the statement `head` followed by `marks` (one row's placeholders).
///
/// On MariaDB (`bulk`) the statement is of one row, prepared once and executed for up to
/// [`ROWS_PER_INSERT`] rows at a time in one `COM_STMT_BULK_EXECUTE` command (MariaDB 10.2.7 and
/// later): the server sets the statement up once per command rather than once per row, about
/// a sixth less of its CPU per recorded message than the multi-row statements below (README,
/// "Bulk execution on MariaDB"). MySQL has no bulk execution, so there `rows` go as multi-row
/// statements of a power of two rows, the largest first (512, then what is left as 256, 128,
/// ... 1): an INSERT of each size is prepared once and stays in the connection's statement
/// cache, where a remainder of any length would be a new statement to prepare (and one to
/// evict) in almost every transaction. Either way a row's values are made only when its
/// statement is sent, so a large batch is never held twice.
fn insert_rows<const N: usize>(
    tx: &mut Transaction<'_>,
    bulk: bool,
    head: &str,
    marks: &str,
    mut rows: impl ExactSizeIterator<Item = [Value; N]>,
) -> mysql::Result<()> {
    if rows.len() == 0 {
        return Ok(());
    }
    if bulk {
        let statement = tx.prep(format!("{head} {marks}"))?;
        while rows.len() > 0 {
            let chunk = rows.by_ref().take(ROWS_PER_INSERT);
            tx.exec_batch(&statement, chunk.map(|row| Params::Positional(row.into())))?;
        }
        return Ok(());
    }
    for size in statement_sizes(rows.len()) {
        let sql = format!("{head} {}", vec![marks; size].join(", "));
        let params: Vec<Value> = rows.by_ref().take(size).flatten().collect();
        tx.exec_drop(sql, Params::Positional(params))?;
    }
    Ok(())
}

/// The sizes [`insert_rows`] cuts `rows` rows into: powers of two, at most
/// [`ROWS_PER_INSERT`], the largest first.
fn statement_sizes(mut rows: usize) -> impl Iterator<Item = usize> {
    std::iter::from_fn(move || {
        (rows > 0).then(|| {
            let size = 1 << rows.min(ROWS_PER_INSERT).ilog2();
            rows -= size;
            size
        })
    })
}

/// A session from the columns of [`NEWEST_SESSIONS`].
fn session_of(mut r: mysql::Row) -> (String, SessionRow) {
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

/// Column `i` of a row, converted; NULL (or a value that does not convert) is the default.
fn col<T: mysql::prelude::FromValue + Default>(row: &mut mysql::Row, i: usize) -> T {
    row.take_opt(i).and_then(Result::ok).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let short_messages: Vec<(u64, i64)> =
            (1..=30).flat_map(|s| run(s, s as i64, 40, 2)).collect();
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
        let recorded =
            crate::store::recorded_sessions::record_into(&mut db, |db: &mut Mysql, row| {
                db.start_server(row).unwrap()
            });
        let read =
            crate::store::recorded_sessions::in_key_order(db.sessions(100_000, None).unwrap());
        assert!(read == recorded, "the sessions read back are those written");
        let check = |db: &mut Mysql| {
            crate::store::recorded_sessions::assert_spans_match_one_query(|last| {
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
}
