//! The MySQL/MariaDB backend: many server instances, on one machine or several, record into
//! one database. When the database is unreachable or goes away, batches go to a local SQLite
//! spool (same schema) and are replayed, in order, once it answers again; its primary keys
//! make a replayed record land once even if it had reached the database before.

use super::schema::{BENCH_COLUMNS, MIGRATIONS, VERSION};
use super::sqlite::{SpoolRows, Sqlite};
use super::{
    messages_in, Backend, BenchRow, InstanceStats, MessageFilter, MessageRef, MessageRow, Record,
    RecordedMessage, RecorderStats, ServerRow, SessionRow, StoreError, Written,
};
use mysql::prelude::Queryable;
use mysql::{Conn, Opts, OptsBuilder, Params, Transaction, Value};
use std::path::PathBuf;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

/// How long the server may take to answer before the store gives up on it.
const TIMEOUT: Duration = Duration::from_secs(30);
/// Rows per multi-row INSERT or per bulk command, at most.
const ROWS_PER_INSERT: usize = 512;
/// How often a spooling writer tries the database again.
const RETRY: Duration = Duration::from_secs(1);

/// A MySQL or MariaDB store.
pub struct Mysql {
    opts: Opts,
    url: String,
    conn: Option<Conn>,
    /// Whether the server is MariaDB, which inserts a batch by bulk execution (see
    /// [`insert_rows`]).
    bulk: bool,
    /// Where batches go while the database is away, and when it was last tried.
    spool: Option<Sqlite>,
    spool_path: Option<PathBuf>,
    last_try: Option<Instant>,
}

impl Mysql {
    /// Connects and brings the schema up to date.
    pub fn open(url: &str, display: String) -> Result<Mysql, StoreError> {
        let opts = Opts::from_url(url).map_err(|_| StoreError::Url(display.clone()))?;
        let opts: Opts = OptsBuilder::from_opts(opts)
            .tcp_connect_timeout(Some(Duration::from_secs(5)))
            .read_timeout(Some(TIMEOUT))
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
            spool: None,
            spool_path: None,
            last_try: None,
        };
        store.migrate()?;
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
    fn migrate(&mut self) -> Result<(), StoreError> {
        let url = self.url.clone();
        let err = |source| StoreError::Mysql {
            url: url.clone(),
            source,
        };
        let conn = self.conn()?;
        conn.query_drop("SELECT GET_LOCK('switchboard_migrate', 30)")
            .map_err(err)?;
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
    pub fn sessions(
        &mut self,
        last: usize,
        peer: Option<&str>,
    ) -> Result<Vec<(String, SessionRow)>, StoreError> {
        let url = self.url.clone();
        let rows: Vec<mysql::Row> = self
            .conn()?
            .exec(
                "SELECT instance, id, peer, transport, opened, closed, bytes_in, bytes_out, msgs_in, msgs_out, reason
                 FROM sessions WHERE (? IS NULL OR peer = ?) ORDER BY closed DESC, id DESC LIMIT ?",
                (peer, peer, last as u64),
            )
            .map_err(|source| StoreError::Mysql { url, source })?;
        Ok(rows
            .into_iter()
            .map(|r| {
                let mut r = r;
                let instance: String = col(&mut r, 0);
                let (id, peer, transport) = (col(&mut r, 1), col(&mut r, 2), col(&mut r, 3));
                let (opened, closed) = (col(&mut r, 4), col(&mut r, 5));
                let (bytes_in, bytes_out) = (col(&mut r, 6), col(&mut r, 7));
                let (msgs_in, msgs_out, reason) = (col(&mut r, 8), col(&mut r, 9), col(&mut r, 10));
                (
                    instance,
                    SessionRow {
                        id,
                        peer,
                        transport,
                        opened,
                        closed,
                        bytes_in,
                        bytes_out,
                        msgs_in,
                        msgs_out,
                        reason,
                    },
                )
            })
            .collect())
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
        let rows: Vec<mysql::Row> = conn
            .query(
                "SELECT s.instance, s.model, s.address, s.written, s.spooled, s.waited, s.dropped,
                        COUNT(x.id), CAST(COALESCE(SUM(x.bytes_in), 0) AS SIGNED), CAST(COALESCE(SUM(x.bytes_out), 0) AS SIGNED),
                        CAST(COALESCE(SUM(x.msgs_in), 0) AS SIGNED)
                 FROM servers s LEFT JOIN sessions x ON x.instance = s.instance
                 GROUP BY s.instance, s.model, s.address, s.written, s.spooled, s.waited, s.dropped, s.started
                 ORDER BY s.started",
            )
            .map_err(err)?;
        let mut all = Vec::new();
        for r in rows {
            let mut r = r;
            let (instance, model, address): (String, String, String) =
                (col(&mut r, 0), col(&mut r, 1), col(&mut r, 2));
            let (written, spooled, waited, dropped) = (
                col(&mut r, 3),
                col(&mut r, 4),
                col(&mut r, 5),
                col(&mut r, 6),
            );
            let (sessions, bytes_in) = (col(&mut r, 7), col(&mut r, 8));
            let (bytes_out, messages) = (col(&mut r, 9), col(&mut r, 10));
            let reasons: Vec<(String, u64)> = conn
                .exec("SELECT reason, COUNT(*) FROM sessions WHERE instance = ? GROUP BY reason ORDER BY reason", (&instance,))
                .map_err(err)?;
            all.push(InstanceStats {
                instance,
                model,
                address,
                sessions,
                bytes_in,
                bytes_out,
                messages,
                reasons,
                written,
                spooled,
                waited,
                dropped,
            });
        }
        Ok(all)
    }

    /// Recorded messages that match `filter`, newest first.
    ///
    /// The table's key begins with the instance, so a read of one instance's messages goes
    /// through the key, while one query over every instance would read the whole table (minutes
    /// for tens of millions of rows). Without `filter.instance`, each instance is therefore read
    /// on its own, those that may still hold the newest messages first (running, or gone without
    /// saying when it stopped, then the last to stop), until no instance left stopped after the
    /// oldest of the newest `filter.last` found so far: its messages were all answered before
    /// it stopped, so none of them is among them. An index on the time would answer directly,
    /// but made every recorded message cost MariaDB 60% more.
    pub fn recorded_messages(
        &mut self,
        filter: &MessageFilter,
    ) -> Result<Vec<RecordedMessage>, StoreError> {
        if filter.instance.is_some() || filter.last == 0 {
            return self.recorded_messages_in(filter);
        }
        let url = self.url.clone();
        // DISTINCT on the key's first column skips from one instance to the next.
        let mut instances: Vec<(String, Option<i64>)> = self
            .conn()?
            .query(
                "SELECT m.instance, s.stopped FROM (SELECT DISTINCT instance FROM messages) m
                 LEFT JOIN servers s ON s.instance = m.instance",
            )
            .map_err(|source| StoreError::Mysql { url, source })?;
        // Not stopped (None) first, then the last to stop.
        instances.sort_by_key(|(_, stopped)| std::cmp::Reverse(stopped.unwrap_or(i64::MAX)));
        let mut found: Vec<RecordedMessage> = Vec::new();
        for (instance, stopped) in instances {
            let oldest_kept = found.get(filter.last - 1).map(|m| m.message.at);
            if oldest_kept
                .zip(stopped)
                .is_some_and(|(at, stopped)| at > stopped)
            {
                break;
            }
            let one = MessageFilter {
                instance: Some(instance),
                ..filter.clone()
            };
            found.extend(self.recorded_messages_in(&one)?);
            found.sort_by(|a, b| newest_first_key(b).cmp(&newest_first_key(a)));
            found.truncate(filter.last);
        }
        Ok(found)
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
        Ok(rows
            .into_iter()
            .map(|mut r| RecordedMessage {
                instance: col(&mut r, 0),
                peer: col(&mut r, 1),
                message: MessageRow {
                    session: col(&mut r, 2),
                    seq: col(&mut r, 3),
                    at: col(&mut r, 4),
                    request: col(&mut r, 5),
                    reply: col(&mut r, 6),
                },
            })
            .collect())
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

    /// The spool, opened (created) on first use, beside the working directory's files.
    fn spool(&mut self, instance: &str) -> Result<&mut Sqlite, StoreError> {
        if self.spool.is_none() {
            let name: String = instance
                .chars()
                .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
                .collect();
            let path = PathBuf::from(format!("switchboard-spool-{name}.db"));
            tracing::warn!(spool = %path.display(), "the database is away: spooling records locally");
            self.spool = Some(Sqlite::open(&path)?);
            self.spool_path = Some(path);
        }
        Ok(self.spool.as_mut().expect("opened above"))
    }

    /// Moves what the spool holds into the database, oldest first; stops at the first failure.
    fn replay(&mut self, instance: &str) -> Result<(), StoreError> {
        let Some(mut spool) = self.spool.take() else {
            return Ok(());
        };
        match self.drain_spool(&mut spool, instance) {
            Ok(()) => {
                if let Some(path) = self.spool_path.take() {
                    drop(spool);
                    tracing::info!(spool = %path.display(), "spool replayed into the database");
                    remove_spool(&path);
                }
                Ok(())
            }
            Err(e) => {
                self.spool = Some(spool);
                Err(e)
            }
        }
    }

    /// Writes one instance's spooled records into the database and forgets them, in order.
    fn drain_spool(&mut self, spool: &mut Sqlite, instance: &str) -> Result<(), StoreError> {
        loop {
            let (rows, batch): (SpoolRows, Vec<Record>) =
                spool.oldest(instance, ROWS_PER_INSERT)?;
            if batch.is_empty() {
                return Ok(());
            }
            self.write_db(instance, &batch)?;
            spool.forget(&rows)?;
        }
    }

    /// Replays the spools that servers which have since died left in the working directory
    /// (the database was still away when they stopped). A spool whose server still runs on
    /// this host is its own to replay, and is left alone.
    pub fn replay_leftover_spools(&mut self) -> Result<(), StoreError> {
        let Ok(entries) = std::fs::read_dir(".") else {
            return Ok(());
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !(name.starts_with("switchboard-spool-") && name.ends_with(".db")) {
                continue;
            }
            let path = entry.path();
            let mut spool = Sqlite::open(&path)?;
            let instances = spool.spooled_instances()?;
            if instances.iter().any(|i| still_running(i)) {
                continue;
            }
            for instance in &instances {
                self.drain_spool(&mut spool, instance)?;
            }
            drop(spool);
            tracing::info!(spool = %path.display(), "a dead server's spool replayed into the database");
            remove_spool(&path);
        }
        Ok(())
    }
}

/// Removes a spool and the files SQLite keeps beside it.
fn remove_spool(path: &std::path::Path) {
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
}

/// True if the instance (`host:pid:start`) is a process still running on this host.
fn still_running(instance: &str) -> bool {
    let mut parts = instance.split(':');
    let (host, pid) = (parts.next(), parts.next());
    let here = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    host != Some(here.trim())
        || pid.is_some_and(|pid| std::path::Path::new(&format!("/proc/{pid}")).exists())
}

impl Backend for Mysql {
    fn write(&mut self, instance: &str, batch: &[Record]) -> Result<Written, StoreError> {
        // While records wait in the spool, newer ones queue behind them, so order is kept.
        if self.spool.is_some() && self.last_try.is_none_or(|t| t.elapsed() >= RETRY) {
            self.last_try = Some(Instant::now());
            if let Err(e) = self.replay(instance) {
                tracing::debug!(error = %e, "the database is still away");
                self.conn = None;
            }
        }
        if self.spool.is_none() {
            match self.write_db(instance, batch) {
                Ok(()) => return Ok(Written { spooled: 0 }),
                Err(e) => {
                    tracing::warn!(error = %e, "database write failed");
                    self.conn = None;
                    self.last_try = Some(Instant::now());
                }
            }
        }
        self.spool(instance)?.write(instance, batch)?;
        Ok(Written {
            spooled: batch.len() as u64,
        })
    }

    fn stop_server(
        &mut self,
        instance: &str,
        stopped: i64,
        stats: &RecorderStats,
    ) -> Result<(), StoreError> {
        // A last chance for what is spooled: replayed now if the database is back.
        if self.spool.is_some() {
            self.replay(instance)?;
        }
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

/// A driver error in words: a timed-out socket says that the server did not answer in time
/// (the driver's own text is "Resource temporarily unavailable").
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
            "the server did not answer within {} s (a stalled server, or a read of a very large \
             table: narrow `messages` with --instance)",
            TIMEOUT.as_secs()
        ),
        _ => e.to_string(),
    }
}

/// What [`super::RECORDED_MESSAGES`] orders by, newest first when compared in reverse.
fn newest_first_key(m: &RecordedMessage) -> (i64, &str, u64, u64) {
    (m.message.at, &m.instance, m.message.session, m.message.seq)
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
    fn a_timed_out_read_says_so() {
        let timed_out = mysql::Error::IoError(std::io::ErrorKind::WouldBlock.into());
        assert!(
            describe(&timed_out).starts_with("the server did not answer within 30 s"),
            "{}",
            describe(&timed_out)
        );
        let refused = mysql::Error::IoError(std::io::ErrorKind::ConnectionRefused.into());
        assert_eq!(describe(&refused), refused.to_string());
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

    /// Without an instance, the newest messages are read instance by instance; that must give
    /// exactly what one query over the whole table gives, including when the instance that
    /// holds the newest messages is read last (it stopped before another one that is older).
    #[test]
    fn the_newest_messages_read_instance_by_instance_match_one_query() {
        let Some(url) = test_database() else { return };
        let mut db = Mysql::open(&url, "the test database".into()).unwrap();
        // A century ahead, so these are the newest rows whatever else the database holds.
        let base = super::super::now_us() + 100 * 365 * 86_400 * 1_000_000;
        let message = |seq: u64, at: i64| {
            Record::Message(MessageRow {
                session: 1,
                seq,
                at: base + at,
                request: format!("m{at}").into_bytes(),
                reply: format!("M{at}").into_bytes(),
            })
        };
        // (name, its messages' times, when it stopped: None while it runs)
        let instances: [(&str, Vec<i64>, Option<i64>); 3] = [
            ("running", (0..50).map(|i| 1 + 2 * i).collect(), None),
            ("stopped-late", (10..20).collect(), Some(400)),
            ("newest", (200..250).collect(), Some(300)),
        ];
        for (name, times, stopped) in &instances {
            let instance = format!("newest-{base}-{name}");
            db.start_server(&ServerRow {
                instance: instance.clone(),
                host: "test".into(),
                pid: 1,
                model: "epoll".into(),
                address: "tcp://127.0.0.1:9".into(),
                service: "upper".into(),
                frame: "line".into(),
                started: base,
            })
            .unwrap();
            let mut batch: Vec<Record> = (1..)
                .zip(times)
                .map(|(seq, at)| message(seq, *at))
                .collect();
            batch.push(Record::Session(SessionRow {
                id: 1,
                peer: format!("tcp://127.0.0.1:{}", times.len()),
                transport: "tcp".into(),
                opened: base,
                closed: base + 500,
                bytes_in: 0,
                bytes_out: 0,
                msgs_in: times.len() as u64,
                msgs_out: times.len() as u64,
                reason: "eof".into(),
            }));
            db.write_db(&instance, &batch).unwrap();
            if let Some(stopped) = stopped {
                db.stop_server(&instance, base + stopped, &RecorderStats::default())
                    .unwrap();
            }
        }
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
        for (session, peer, last) in [
            (None, None, 1),
            (None, None, 75),
            (Some(1), None, 60),
            (None, Some("tcp://127.0.0.1:10"), 4),
            (None, Some("tcp://127.0.0.1:50"), 120),
        ] {
            let filter = MessageFilter {
                instance: None,
                session,
                peer: peer.map(String::from),
                last,
            };
            let by_instance = db.recorded_messages(&filter).unwrap();
            let in_one_query = db.recorded_messages_in(&filter).unwrap();
            assert_eq!(by_instance.len(), last.min(in_one_query.len()));
            assert_eq!(by_instance, in_one_query, "{filter:?}");
        }
    }
}
