//! What the server served, in SQL: SQLite embedded by default, MySQL/MariaDB by URL so many
//! server instances share one database.
//!
//! Models never wait on the database: a connection's record goes into a bounded queue, and a
//! writer thread batches the queue into transactions. When the queue is full the model waits
//! for room (backpressure), so a store slower than the traffic slows serving rather than lose
//! a record; `stats` shows how often that happened.
//!
//! The tables, the same on every backend but where said (times are microseconds since the Unix
//! epoch):
//!
//! | table | one row per | columns |
//! | --- | --- | --- |
//! | `servers` | `serve` process (instance) | instance, host, pid, model, address, service, frame, started, stopped, written, spooled, waited, dropped |
//! | `sessions` | connection (or datagram) | instance, id, peer, transport, opened, closed, bytes_in, bytes_out, msgs_in, msgs_out, reason (eof, reset, timeout, error, denied, untrusted, limited, shutdown) |
//! | `messages` | request answered, with `--record messages` | instance, session, seq, at, request, reply (BLOBs); on SQLite also `id`, first |
//! | `message_spans` | SQLite only: store writer's transaction | instance, first_id, last_id, first_at, last_at (see `schema::SQLITE_ONLY`) |
//! | `session_spans` | store writer's transaction, per run of close session ids | instance, first_id, last_id, first_closed, last_closed (see `schema::MIGRATIONS`, version 5) |
//! | `bench_runs` | load-generator run (`bench`, or a cell of `lab`) | run, lab, started, address, model, frame, conns, size, depth, rate, secs, msgs_per_s, mb_per_s, p50_us, p90_us, p99_us, p999_us, max_us, errors, mismatches, cpu_us_per_msg, rss_bytes_per_conn |
//! | `schema_version` | (one row) | version |

mod mysql;
mod recorder;
mod schema;
pub mod spool;
mod sqlite;

pub use mysql::Mysql;
pub use recorder::{
    OnStoreError, Recorder, RecorderOptions, RecorderStats, SharedStats, Stopping, Writer, LINGER,
    QUEUE, QUEUE_BYTES,
};
pub use sqlite::Sqlite;

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Where the store is: `sqlite://PATH` (relative to the working directory, or absolute with a
/// third slash: `sqlite:///var/lib/sb.db`) or `mysql://USER:PASS@HOST:PORT/DB`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreUrl {
    /// An SQLite database file.
    Sqlite(PathBuf),
    /// A MySQL or MariaDB database.
    Mysql(String),
}

/// The default store: `switchboard.db` in the working directory.
pub const DEFAULT_STORE: &str = "sqlite://switchboard.db";

/// How long a schema migration may take, and how long another instance waits for it: a
/// migration that copies or fills a table from a large one takes about a minute per 20
/// million rows here.
pub(crate) const MIGRATION_TIMEOUT: Duration = Duration::from_secs(3600);

impl FromStr for StoreUrl {
    type Err = StoreError;

    fn from_str(s: &str) -> Result<Self, StoreError> {
        if let Some(path) = s.strip_prefix("sqlite://") {
            if path.is_empty() {
                return Err(StoreError::Url(s.to_string()));
            }
            Ok(StoreUrl::Sqlite(PathBuf::from(path)))
        } else if s.starts_with("mysql://") {
            Ok(StoreUrl::Mysql(s.to_string()))
        } else {
            Err(StoreError::Url(s.to_string()))
        }
    }
}

impl StoreUrl {
    /// The URL as given, password included, to hand to another process (`Display` hides
    /// the password).
    pub fn full(&self) -> String {
        match self {
            StoreUrl::Sqlite(p) => format!("sqlite://{}", p.display()),
            StoreUrl::Mysql(url) => url.clone(),
        }
    }
}

impl fmt::Display for StoreUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreUrl::Sqlite(p) => write!(f, "sqlite://{}", p.display()),
            // The password stays out of logs.
            StoreUrl::Mysql(url) => match (url.find("://"), url.rfind('@')) {
                (Some(a), Some(b)) if b > a => write!(f, "mysql://…@{}", &url[b + 1..]),
                _ => f.write_str(url),
            },
        }
    }
}

/// Why the store could not be used.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The URL is not one the store knows.
    #[error("`{0}` is not a store URL: expected sqlite://PATH or mysql://USER:PASS@HOST:PORT/DB (or --no-store)")]
    Url(String),
    /// The database's schema is newer than this binary's.
    #[error("the store's schema is version {found}, newer than this switchboard's ({known}): upgrade switchboard or use another store")]
    SchemaTooNew {
        /// The version in the database.
        found: i64,
        /// The newest version this binary knows.
        known: i64,
    },
    /// Another instance held the schema migration's lock for longer than this one waited.
    #[error("store {url}: another switchboard has been migrating its schema for over {waited} s; start again once it is done")]
    MigrationBusy {
        /// The store (password hidden).
        url: String,
        /// How long this one waited, in seconds.
        waited: u64,
    },
    /// The MySQL/MariaDB server refused or failed.
    #[error("store {url}: {}", mysql::describe(source))]
    Mysql {
        /// The store (password hidden).
        url: String,
        /// What the server said.
        source: ::mysql::Error,
    },
    /// The database refused or failed.
    #[error("store {url}: {source}")]
    Database {
        /// The store (password hidden).
        url: String,
        /// What the database said.
        source: rusqlite::Error,
    },
}

/// A `serve` process, as the `servers` table holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerRow {
    /// Unique per process: host, pid and start time.
    pub instance: String,
    /// The machine's host name.
    pub host: String,
    /// The process id.
    pub pid: u32,
    /// The model's name.
    pub model: String,
    /// The address served.
    pub address: String,
    /// The service's name.
    pub service: String,
    /// The framing's name.
    pub frame: String,
    /// When it started (µs since the epoch).
    pub started: i64,
}

#[cfg(test)]
impl ServerRow {
    /// An `epoll` server of `instance` that started at `started`, for the backends' tests.
    pub(crate) fn for_test(instance: &str, started: i64) -> ServerRow {
        ServerRow {
            instance: instance.into(),
            host: "test".into(),
            pid: 1,
            model: "epoll".into(),
            address: "tcp://127.0.0.1:9".into(),
            service: "upper".into(),
            frame: "line".into(),
            started,
        }
    }
}

/// One connection (or datagram), as the `sessions` table holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRow {
    /// The connection's id within its instance.
    pub id: u64,
    /// The peer's address.
    pub peer: String,
    /// `tcp`, `unix`, `udp` or `unixgram`.
    pub transport: String,
    /// When it opened and closed (µs since the epoch).
    pub opened: i64,
    /// See `opened`.
    pub closed: i64,
    /// Bytes received.
    pub bytes_in: u64,
    /// Bytes sent.
    pub bytes_out: u64,
    /// Requests decoded.
    pub msgs_in: u64,
    /// Replies queued.
    pub msgs_out: u64,
    /// `eof`, `reset`, `timeout`, `error`, `denied`, `untrusted`, `limited` or `shutdown`.
    pub reason: String,
}

/// One request and its reply, as the `messages` table holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageRow {
    /// The connection's id.
    pub session: u64,
    /// The message's number in its connection, from 1.
    pub seq: u64,
    /// When it was answered (µs since the epoch).
    pub at: i64,
    /// The request's bytes.
    pub request: Vec<u8>,
    /// The reply's bytes.
    pub reply: Vec<u8>,
}

/// One load-generator run, as the `bench_runs` table holds it: written by `switchboard bench`
/// and by each cell of `switchboard lab`.
#[derive(Debug, Clone, PartialEq, Default, serde::Serialize)]
pub struct BenchRow {
    /// Unique per run: host, pid and start time.
    pub run: String,
    /// The lab run this cell belongs to, if any.
    pub lab: Option<String>,
    /// When it started (µs since the epoch).
    pub started: i64,
    /// The server's address.
    pub address: String,
    /// The server measured: its model in a lab, or `bench --label`.
    pub model: Option<String>,
    /// The framing spoken.
    pub frame: String,
    /// Connections.
    pub conns: u64,
    /// Bytes per request.
    pub size: u64,
    /// Requests in flight per connection.
    pub depth: u64,
    /// Open loop: requests per second asked for.
    pub rate: Option<f64>,
    /// The measured window, in seconds.
    pub secs: f64,
    /// Correct replies per second.
    pub msgs_per_s: f64,
    /// Request payload megabytes per second.
    pub mb_per_s: f64,
    /// Latency percentiles and maximum, in µs.
    pub p50_us: u64,
    /// See `p50_us`.
    pub p90_us: u64,
    /// See `p50_us`.
    pub p99_us: u64,
    /// See `p50_us`.
    pub p999_us: u64,
    /// See `p50_us`.
    pub max_us: u64,
    /// Failed connections and lost datagrams.
    pub errors: u64,
    /// Wrong replies.
    pub mismatches: u64,
    /// The server's CPU time per reply (lab only).
    pub cpu_us_per_msg: Option<f64>,
    /// The server's memory growth per open connection (lab only).
    pub rss_bytes_per_conn: Option<f64>,
}

/// Which recorded messages `switchboard messages` reads back.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MessageFilter {
    /// Only this server instance's.
    pub instance: Option<String>,
    /// Only this connection's (its id within its instance).
    pub session: Option<u64>,
    /// Only this peer's (as the log shows it, e.g. `tcp://127.0.0.1:50312`).
    pub peer: Option<String>,
    /// The newest this many.
    pub last: usize,
}

/// A recorded message with where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedMessage {
    /// The server instance that answered it.
    pub instance: String,
    /// The connection's peer; `None` while the connection is still open (its session row is
    /// written when it closes).
    pub peer: Option<String>,
    /// The message.
    pub message: MessageRow,
}

/// The query behind [`Store::recorded_messages`], the same on both backends: the newest
/// first, so `LIMIT` keeps the last ones.
pub(crate) const RECORDED_MESSAGES: &str = "SELECT m.instance, s.peer, m.session, m.seq, m.at, m.request, m.reply
    FROM messages m LEFT JOIN sessions s ON s.instance = m.instance AND s.id = m.session
    WHERE (? IS NULL OR m.instance = ?) AND (? IS NULL OR m.session = ?) AND (? IS NULL OR s.peer = ?)
    ORDER BY m.at DESC, m.instance DESC, m.session DESC, m.seq DESC LIMIT ?";

/// The query behind [`Store::sessions`] read whole (with `--peer`, or where spans cannot be
/// used), the same on both backends: the newest first, so `LIMIT` keeps the last ones.
pub(crate) const NEWEST_SESSIONS: &str = "SELECT instance, id, peer, transport, opened, closed, bytes_in, bytes_out, msgs_in, msgs_out, reason
    FROM sessions WHERE (? IS NULL OR peer = ?) ORDER BY closed DESC, id DESC, instance DESC LIMIT ?";

/// The spans of `session_spans`, newest first through their index on `last_closed`.
pub(crate) const SESSION_SPANS: &str =
    "SELECT instance, first_id, last_id, first_closed, last_closed FROM session_spans ORDER BY last_closed DESC";

/// One span's sessions (instance, ids from, to, closed from, to, how many), newest first.
/// The ids are the key's second column, so this reads the span's rows and those of other
/// spans between them, and keeps those that closed within the span's times.
pub(crate) const SPAN_SESSIONS: &str = "SELECT instance, id, peer, transport, opened, closed, bytes_in, bytes_out, msgs_in, msgs_out, reason
    FROM sessions WHERE instance = ? AND id BETWEEN ? AND ? AND closed BETWEEN ? AND ?
    ORDER BY closed DESC, id DESC LIMIT ?";

/// How the store writer adds a [`SessionSpan`] (instance, ids from, to, closed from, to).
pub(crate) const INSERT_SESSION_SPAN: &str =
    "INSERT INTO session_spans (instance, first_id, last_id, first_closed, last_closed)
    VALUES (?, ?, ?, ?, ?)";

/// A row of `session_spans`: sessions one transaction of the store writer recorded, with
/// ids close together, and the oldest and newest time they closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SessionSpan {
    pub first_id: u64,
    pub last_id: u64,
    pub first_closed: i64,
    pub last_closed: i64,
}

/// Ids further apart than this, within one transaction, start a new span. A span's rows are
/// read by id range: a long session closing beside new ones would otherwise make its span
/// reach back over every session opened since (each read to be passed over).
const SPAN_GAP: u64 = 1024;

/// The spans a batch's sessions take, in order of id.
pub(crate) fn session_spans(batch: &[Record]) -> Vec<SessionSpan> {
    let mut sessions: Vec<(u64, i64)> = batch
        .iter()
        .filter_map(|r| match r {
            Record::Session(s) => Some((s.id, s.closed)),
            Record::Messages(_) | Record::Message(_) => None,
        })
        .collect();
    sessions.sort_unstable();
    let mut spans: Vec<SessionSpan> = Vec::new();
    for (id, closed) in sessions {
        match spans.last_mut() {
            Some(span) if id - span.last_id <= SPAN_GAP => {
                span.last_id = id;
                span.first_closed = span.first_closed.min(closed);
                span.last_closed = span.last_closed.max(closed);
            }
            _ => spans.push(SessionSpan {
                first_id: id,
                last_id: id,
                first_closed: closed,
                last_closed: closed,
            }),
        }
    }
    spans
}

impl SessionSpan {
    /// The times of [`SPAN_SESSIONS`] for this span, once the newest found so far reach back
    /// to `oldest_kept`: a session that closed before cannot be among them.
    pub(crate) fn closed_between(&self, oldest_kept: Option<i64>) -> (i64, i64) {
        let from = oldest_kept.map_or(self.first_closed, |t| t.max(self.first_closed));
        (from, self.last_closed)
    }
}

/// The servers behind [`Store::stats`], in order of start: instance, model, address, written,
/// spooled, waited, dropped.
pub(crate) const STATS_SERVERS: &str =
    "SELECT instance, model, address, written, spooled, waited, dropped FROM servers ORDER BY started, instance";

/// The sessions behind [`Store::stats`], in one pass over the table (it is read whole: an
/// aggregate of every row): per instance and close reason, how many, their bytes in and out,
/// and their messages.
pub(crate) const STATS_SESSIONS: &str = "SELECT instance, reason, COUNT(*), CAST(SUM(bytes_in) AS SIGNED),
    CAST(SUM(bytes_out) AS SIGNED), CAST(SUM(msgs_in) AS SIGNED) FROM sessions GROUP BY instance, reason";

/// A row of [`STATS_SESSIONS`].
pub(crate) struct ReasonTotals {
    pub instance: String,
    pub reason: String,
    pub sessions: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub messages: u64,
}

/// Each instance's totals added up from its rows of [`STATS_SESSIONS`] (`servers` come with
/// theirs empty), its reasons in order; sessions of an instance not in `servers` are left out.
pub(crate) fn add_up(
    mut servers: Vec<InstanceStats>,
    groups: impl IntoIterator<Item = ReasonTotals>,
) -> Vec<InstanceStats> {
    let at: std::collections::HashMap<String, usize> = servers
        .iter()
        .enumerate()
        .map(|(i, s)| (s.instance.clone(), i))
        .collect();
    for g in groups {
        if let Some(&i) = at.get(&g.instance) {
            let s = &mut servers[i];
            s.sessions += g.sessions;
            s.bytes_in += g.bytes_in;
            s.bytes_out += g.bytes_out;
            s.messages += g.messages;
            s.reasons.push((g.reason, g.sessions));
        }
    }
    for s in &mut servers {
        s.reasons.sort();
    }
    servers
}

/// A row [`newest`] can pick the newest of: ranked by a time, ties broken as its one-query
/// read breaks them.
pub(crate) trait Ranked {
    /// The time it is ranked by.
    fn at(&self) -> i64;
    /// Its order against another, the newer first (as its query's `ORDER BY ... DESC`).
    fn newer_first(&self, other: &Self) -> std::cmp::Ordering;
}

impl Ranked for RecordedMessage {
    fn at(&self) -> i64 {
        self.message.at
    }

    /// As [`RECORDED_MESSAGES`] orders them.
    fn newer_first(&self, other: &Self) -> std::cmp::Ordering {
        fn key(m: &RecordedMessage) -> (i64, &str, u64, u64) {
            (m.message.at, &m.instance, m.message.session, m.message.seq)
        }
        key(other).cmp(&key(self))
    }
}

impl Ranked for (String, SessionRow) {
    fn at(&self) -> i64 {
        self.1.closed
    }

    /// As [`NEWEST_SESSIONS`] orders them.
    fn newer_first(&self, other: &Self) -> std::cmp::Ordering {
        fn key((instance, s): &(String, SessionRow)) -> (i64, u64, &str) {
            (s.closed, s.id, instance)
        }
        key(other).cmp(&key(self))
    }
}

/// A group of rows (an instance, a session, a span of rows) with the time none of them is
/// newer than, when known.
pub(crate) type Bounded<G> = (G, Option<i64>);

/// The newest `last` rows of `groups`, read one group at a time by `read`, ordered as their
/// one query orders them ([`Ranked`]), each once however many groups held it. `groups` come
/// newest bound first, those without a bound before all ([`by_bound`] puts them so): reading
/// stops at the first group whose bound is older than the oldest of the newest `last` found
/// so far, and the groups after it are never asked for. Once `last` are found, `read` is also
/// given the time of the oldest of them: a group's rows older than that cannot be among the
/// newest and need not be read.
pub(crate) fn newest<G, R: Ranked>(
    groups: impl IntoIterator<Item = Result<Bounded<G>, StoreError>>,
    last: usize,
    mut read: impl FnMut(G, Option<i64>) -> Result<Vec<R>, StoreError>,
) -> Result<Vec<R>, StoreError> {
    let mut found: Vec<R> = Vec::new();
    for group in groups {
        let (group, bound) = group?;
        let oldest_kept = last
            .checked_sub(1)
            .and_then(|i| found.get(i))
            .map(Ranked::at);
        if oldest_kept
            .zip(bound)
            .is_some_and(|(oldest, bound)| oldest > bound)
        {
            break;
        }
        found.extend(read(group, oldest_kept)?);
        found.sort_by(R::newer_first);
        found.dedup_by(|a, b| a.newer_first(b).is_eq());
        found.truncate(last);
    }
    Ok(found)
}

/// `groups` in the order [`newest`] reads them: without a bound first, then newest bound first.
pub(crate) fn by_bound<G>(
    mut groups: Vec<Bounded<G>>,
) -> impl Iterator<Item = Result<Bounded<G>, StoreError>> {
    groups.sort_by_key(|(_, bound)| std::cmp::Reverse(bound.unwrap_or(i64::MAX)));
    groups.into_iter().map(Ok)
}

/// Messages of one connection, packed into one buffer and handed to the recorder whole: one
/// queue hand-over and no allocation per message, however many it holds.
///
/// ```
/// use switchboard::store::MessageBatch;
/// let mut batch = MessageBatch::new(7);
/// batch.push(1, 1_000, b"hi", b"HI");
/// batch.push(2, 2_000, b"", b"");
/// let got: Vec<_> = batch.iter().map(|m| (m.seq, m.request, m.reply)).collect();
/// assert_eq!(got, vec![(1, &b"hi"[..], &b"HI"[..]), (2, &b""[..], &b""[..])]);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MessageBatch {
    session: u64,
    /// Per message: sequence number, time, and where its request and reply end in `bytes`.
    entries: Vec<(u64, i64, usize, usize)>,
    bytes: Vec<u8>,
}

/// One message of a [`MessageBatch`], borrowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MessageRef<'a> {
    /// The connection's id.
    pub session: u64,
    /// The message's number in its connection, from 1.
    pub seq: u64,
    /// When it was answered (µs since the epoch).
    pub at: i64,
    /// The request's bytes.
    pub request: &'a [u8],
    /// The reply's bytes.
    pub reply: &'a [u8],
}

impl MessageBatch {
    /// An empty batch of connection `session`'s messages.
    pub fn new(session: u64) -> Self {
        MessageBatch {
            session,
            ..Default::default()
        }
    }

    /// Appends message `seq`, answered at `at`.
    pub fn push(&mut self, seq: u64, at: i64, request: &[u8], reply: &[u8]) {
        self.bytes.extend_from_slice(request);
        let request_end = self.bytes.len();
        self.bytes.extend_from_slice(reply);
        self.entries.push((seq, at, request_end, self.bytes.len()));
    }

    /// The connection whose messages these are.
    pub fn session(&self) -> u64 {
        self.session
    }

    /// Messages held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when it holds no message.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Bytes of requests and replies held.
    pub fn bytes(&self) -> usize {
        self.bytes.len()
    }

    /// The messages, in the order pushed.
    pub fn iter(&self) -> impl Iterator<Item = MessageRef<'_>> {
        let mut start = 0;
        self.entries
            .iter()
            .map(move |&(seq, at, request_end, reply_end)| {
                let m = MessageRef {
                    session: self.session,
                    seq,
                    at,
                    request: &self.bytes[start..request_end],
                    reply: &self.bytes[request_end..reply_end],
                };
                start = reply_end;
                m
            })
    }
}

/// What the recorder queues for the writer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// A connection closed.
    Session(SessionRow),
    /// A message was answered (`--record messages`), one by one (as a spool replays them).
    Message(MessageRow),
    /// Messages of one connection, packed (as the server records them).
    Messages(MessageBatch),
}

impl Record {
    /// About how much memory the record holds while it is queued.
    pub fn bytes(&self) -> usize {
        let own = std::mem::size_of::<Record>();
        match self {
            Record::Session(s) => own + s.peer.len() + s.transport.len() + s.reason.len(),
            Record::Message(m) => own + m.request.len() + m.reply.len(),
            Record::Messages(b) => own + b.bytes() + b.len() * 32,
        }
    }

    /// Rows this record becomes.
    pub fn rows(&self) -> u64 {
        match self {
            Record::Session(_) | Record::Message(_) => 1,
            Record::Messages(b) => b.len() as u64,
        }
    }
}

/// Every message in `records`, single or packed, in order.
pub(crate) fn messages_in(records: &[Record]) -> impl Iterator<Item = MessageRef<'_>> {
    records.iter().flat_map(|r| {
        let (single, packed) = match r {
            Record::Message(m) => (
                Some(MessageRef {
                    session: m.session,
                    seq: m.seq,
                    at: m.at,
                    request: &m.request,
                    reply: &m.reply,
                }),
                None,
            ),
            Record::Messages(b) => (None, Some(b.iter())),
            Record::Session(_) => (None, None),
        };
        single.into_iter().chain(packed.into_iter().flatten())
    })
}

/// The records dropped, over every server: `CAST` so both backends return an integer.
const DROPPED: &str = "SELECT CAST(COALESCE(SUM(dropped), 0) AS SIGNED) FROM servers";

/// Microseconds since the Unix epoch, now.
pub fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

/// A per-instance aggregate, for `switchboard stats`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct InstanceStats {
    /// The instance.
    pub instance: String,
    /// Its model.
    pub model: String,
    /// Its address.
    pub address: String,
    /// Sessions recorded.
    pub sessions: u64,
    /// Bytes in and out over them.
    pub bytes_in: u64,
    /// See `bytes_in`.
    pub bytes_out: u64,
    /// Messages over them.
    pub messages: u64,
    /// Sessions per close reason, as `reason=count` pairs.
    pub reasons: Vec<(String, u64)>,
    /// Records the writer wrote, of them those that went through the local spool, the times
    /// a model waited for room, and records dropped (as the instance reported when it stopped;
    /// empty while it runs).
    pub written: Option<u64>,
    /// See `written`.
    pub spooled: Option<u64>,
    /// See `written`.
    pub waited: Option<u64>,
    /// See `written`.
    pub dropped: Option<u64>,
}

/// An open store of either kind, for reading (`sessions`, `stats`) and writing.
pub enum Store {
    /// SQLite.
    Sqlite(Sqlite),
    /// MySQL or MariaDB.
    Mysql(Mysql),
}

/// Opens the store at `url`, creating and migrating its schema as needed.
pub fn open(url: &StoreUrl) -> Result<Store, StoreError> {
    match url {
        StoreUrl::Sqlite(path) => Sqlite::open(path).map(Store::Sqlite),
        StoreUrl::Mysql(raw) => Mysql::open(raw, url.to_string()).map(Store::Mysql),
    }
}

/// As [`open`], for a person reading the store (`sessions`, `stats`, `messages`, `runs`): on
/// MySQL/MariaDB a statement may take minutes rather than a recording server's 30 s (`stats`
/// adds up every session).
pub fn open_to_read(url: &StoreUrl) -> Result<Store, StoreError> {
    match url {
        StoreUrl::Mysql(raw) => Mysql::open_to_read(raw, url.to_string()).map(Store::Mysql),
        StoreUrl::Sqlite(_) => open(url),
    }
}

impl Store {
    /// The schema version of the database.
    pub fn version(&mut self) -> Result<i64, StoreError> {
        match self {
            Store::Sqlite(s) => s.version(),
            Store::Mysql(m) => m.version(),
        }
    }

    /// Records a server's start.
    pub fn start_server(&mut self, row: &ServerRow) -> Result<(), StoreError> {
        match self {
            Store::Sqlite(s) => s.start_server(row),
            Store::Mysql(m) => m.start_server(row),
        }
    }

    /// The last `last` sessions (newest first), of the peer `peer` if given, with their
    /// instance. Without a peer, found through `session_spans` (the schema's version 5): the
    /// spans newest first, each span's sessions through the key, until no span left can hold
    /// a newer one. Sessions inserted by other means than a store's writer have no span and
    /// are not found that way.
    pub fn sessions(
        &mut self,
        last: usize,
        peer: Option<&str>,
    ) -> Result<Vec<(String, SessionRow)>, StoreError> {
        match self {
            Store::Sqlite(s) => s.sessions(last, peer),
            Store::Mysql(m) => m.sessions(last, peer),
        }
    }

    /// The messages of one session, in order.
    pub fn messages(
        &mut self,
        instance: &str,
        session: u64,
    ) -> Result<Vec<MessageRow>, StoreError> {
        match self {
            Store::Sqlite(s) => s.messages(instance, session),
            Store::Mysql(m) => m.messages(instance, session),
        }
    }

    /// Recorded messages that match `filter`, the last `filter.last` of them, oldest first.
    pub fn recorded_messages(
        &mut self,
        filter: &MessageFilter,
    ) -> Result<Vec<RecordedMessage>, StoreError> {
        let mut rows = match self {
            Store::Sqlite(s) => s.recorded_messages(filter),
            Store::Mysql(m) => m.recorded_messages(filter),
        }?;
        rows.reverse();
        Ok(rows)
    }

    /// Totals per instance, in order of start.
    pub fn stats(&mut self) -> Result<Vec<InstanceStats>, StoreError> {
        match self {
            Store::Sqlite(s) => s.stats(),
            Store::Mysql(m) => m.stats(),
        }
    }

    /// Records that the servers which recorded here could not write and dropped, as each
    /// reported when it stopped: when above 0, what the store shows is incomplete.
    pub fn dropped(&mut self) -> Result<u64, StoreError> {
        match self {
            Store::Sqlite(s) => s.dropped(),
            Store::Mysql(m) => m.dropped(),
        }
    }

    /// Records a load-generator run.
    pub fn record_bench(&mut self, row: &BenchRow) -> Result<(), StoreError> {
        match self {
            Store::Sqlite(s) => s.record_bench(row),
            Store::Mysql(m) => m.record_bench(row),
        }
    }

    /// The last `last` load-generator runs (newest first), of one lab run if given.
    pub fn bench_runs(
        &mut self,
        last: usize,
        lab: Option<&str>,
    ) -> Result<Vec<BenchRow>, StoreError> {
        match self {
            Store::Sqlite(s) => s.bench_runs(last, lab),
            Store::Mysql(m) => m.bench_runs(last, lab),
        }
    }
}

/// A process unique id for a run or an instance: host, pid and start time.
pub fn unique_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "localhost".into());
    format!("{host}:{}:{:x}", std::process::id(), now_us())
}

impl Backend for Store {
    fn write(&mut self, instance: &str, batch: &[Record]) -> Result<Written, StoreError> {
        match self {
            Store::Sqlite(s) => s.write(instance, batch),
            Store::Mysql(m) => m.write(instance, batch),
        }
    }

    fn stop_server(
        &mut self,
        instance: &str,
        stopped: i64,
        stats: &RecorderStats,
    ) -> Result<(), StoreError> {
        match self {
            Store::Sqlite(s) => s.stop_server(instance, stopped, stats),
            Store::Mysql(m) => m.stop_server(instance, stopped, stats),
        }
    }
}

/// What became of a batch the backend took.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Written {
    /// Records that went to the local spool (the database was away) instead of the database.
    pub spooled: u64,
}

/// A database the recorder writes to.
pub trait Backend: Send {
    /// Writes a batch in one transaction; a record already there is kept once.
    fn write(&mut self, instance: &str, batch: &[Record]) -> Result<Written, StoreError>;

    /// Marks an instance stopped, with what its recorder did.
    fn stop_server(
        &mut self,
        instance: &str,
        stopped: i64,
        stats: &RecorderStats,
    ) -> Result<(), StoreError>;
}

/// Sessions as servers record them, for the backends' tests: three instances' batches.
#[cfg(test)]
pub(crate) mod recorded_sessions {
    use super::{Backend, Record, ServerRow, SessionRow};

    /// `stream` (connections opened 10 ms apart, most closing within 50 ms, some after
    /// seconds, a few only at the end), `datagram` (a session per datagram, closed as it
    /// opened, ids in order) and `twin` (the same ids and times as `stream`, so every session
    /// ties with one of another instance). Each instance's sessions are handed over as they
    /// close (a stream session now and then late, among newer ones: spans that overlap; the
    /// datagrams' spans do not), in transactions of 1 to 60; times are whole milliseconds
    /// (ties) from `from`.
    pub(crate) fn batches(from: i64) -> Vec<(&'static str, Vec<Vec<Record>>)> {
        let mut seed = 11u64;
        let mut random = move |n: u64| {
            seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            (seed >> 33) % n
        };
        let ms = 1_000;
        let mut stream: Vec<(i64, u64, i64)> = Vec::new(); // (closed, id, opened)
        for id in 1..=600 {
            let opened = from + id as i64 * 10 * ms;
            let lasted = match random(20) {
                0 => random(8_000),
                1 => 100_000,
                _ => random(50),
            } as i64;
            stream.push((opened + lasted * ms, id, opened));
        }
        let datagram: Vec<(i64, u64, i64)> = (1..=3_000)
            .map(|id| {
                let at = from + id as i64 * 2 * ms + random(3) as i64 * ms;
                (at, id, at)
            })
            .collect();
        let mut batches = Vec::new();
        for (instance, sessions) in INSTANCES
            .into_iter()
            .zip([stream.clone(), datagram, stream])
        {
            let mut queue: Vec<(i64, Record)> = sessions
                .into_iter()
                .map(|(closed, id, opened)| {
                    let late = if instance != "datagram" && random(15) == 0 {
                        random(3_000)
                    } else {
                        0
                    };
                    // Every column its own value, so that one bound to another's place shows.
                    let transport = if instance == "datagram" { "udp" } else { "tcp" };
                    let row = SessionRow {
                        id,
                        peer: format!("{transport}://127.0.0.1:{}", 40_000 + id % 7),
                        transport: transport.into(),
                        opened,
                        closed,
                        bytes_in: id,
                        bytes_out: 2 * id + 1,
                        msgs_in: id % 5,
                        msgs_out: id % 5 + 1,
                        reason: ["eof", "reset", "timeout"][id as usize % 3].into(),
                    };
                    (closed + late as i64 * ms, Record::Session(row))
                })
                .collect();
            queue.sort_by_key(|(handed, _)| *handed);
            let mut records = queue.into_iter().map(|(_, r)| r).peekable();
            let mut transactions = Vec::new();
            while records.peek().is_some() {
                let size = 1 + random(60) as usize;
                transactions.push(records.by_ref().take(size).collect());
            }
            batches.push((instance, transactions));
        }
        batches
    }

    /// The instances [`batches`] records.
    pub(crate) const INSTANCES: [&str; 3] = ["stream", "datagram", "twin"];

    /// Records [`batches`] into `db` (each instance started first by `start`, as a server
    /// starts) and returns the sessions written, with their instance, in order of instance and
    /// id.
    pub(crate) fn record_into<B: Backend>(
        db: &mut B,
        start: impl Fn(&mut B, &ServerRow),
    ) -> Vec<(String, SessionRow)> {
        for instance in INSTANCES {
            start(db, &ServerRow::for_test(instance, 0));
        }
        let mut recorded = Vec::new();
        for (instance, batches) in batches(1_000_000) {
            for batch in batches {
                db.write(instance, &batch).unwrap();
                for record in batch {
                    if let Record::Session(s) = record {
                        recorded.push((instance.to_string(), s));
                    }
                }
            }
        }
        in_key_order(recorded)
    }

    /// `sessions` in order of instance and id.
    pub(crate) fn in_key_order(
        mut sessions: Vec<(String, SessionRow)>,
    ) -> Vec<(String, SessionRow)> {
        sessions.sort_by(|a, b| (&a.0, a.1.id).cmp(&(&b.0, b.1.id)));
        sessions
    }

    /// Checks what `sessions` reads through spans against one query over the whole table
    /// (`read` gives both, for a count) for every count to 100 (each cuts at another time,
    /// ties among them) and some more; returns how many sessions were checked.
    pub(crate) fn assert_spans_match_one_query(
        mut read: impl FnMut(usize) -> (Vec<(String, SessionRow)>, Vec<(String, SessionRow)>),
    ) -> usize {
        let mut checked = 0;
        for last in (1..=100).chain([333, 1_000, 4_000, 100_000]) {
            let (spans, in_one_query) = read(last);
            let differ = spans.iter().zip(&in_one_query).position(|(a, b)| a != b);
            assert!(
                spans.len() == in_one_query.len() && differ.is_none(),
                "--last {last}: {} read, {} in one query, the first difference at {differ:?}",
                spans.len(),
                in_one_query.len()
            );
            checked += spans.len();
        }
        checked
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(id: u64, closed: i64) -> Record {
        Record::Session(SessionRow {
            id,
            peer: String::new(),
            transport: "udp".into(),
            opened: closed,
            closed,
            bytes_in: 0,
            bytes_out: 0,
            msgs_in: 0,
            msgs_out: 0,
            reason: "eof".into(),
        })
    }

    /// A transaction's sessions become spans of ids no further apart than `SPAN_GAP`, each
    /// with the oldest and newest time its sessions closed; messages take none.
    #[test]
    fn sessions_far_apart_in_id_take_spans_of_their_own() {
        let far = 10 + 2 * SPAN_GAP + 1;
        let batch = [
            session(10 + SPAN_GAP, 50),
            Record::Messages(MessageBatch::new(3)),
            session(far, 40),
            session(12, 70),
            session(10, 60),
        ];
        let span = |first_id, last_id, first_closed, last_closed| SessionSpan {
            first_id,
            last_id,
            first_closed,
            last_closed,
        };
        assert_eq!(
            session_spans(&batch),
            [span(10, 10 + SPAN_GAP, 50, 70), span(far, far, 40, 40)]
        );
        assert!(session_spans(&[Record::Messages(MessageBatch::new(1))]).is_empty());
        assert_eq!(
            span(1, 9, 100, 200).closed_between(None),
            (100, 200),
            "all of it"
        );
        assert_eq!(span(1, 9, 100, 200).closed_between(Some(150)), (150, 200));
        assert_eq!(span(1, 9, 100, 200).closed_between(Some(50)), (100, 200));
    }

    /// `stats` adds each instance's rows by close reason into its totals, reasons in order,
    /// and leaves out sessions of an instance no server row names.
    #[test]
    fn stats_add_up_each_instance_by_reason() {
        let server = |instance: &str| InstanceStats {
            instance: instance.into(),
            model: "epoll".into(),
            address: "tcp://127.0.0.1:1".into(),
            sessions: 0,
            bytes_in: 0,
            bytes_out: 0,
            messages: 0,
            reasons: Vec::new(),
            written: Some(9),
            spooled: None,
            waited: None,
            dropped: None,
        };
        let group = |instance: &str, reason: &str, n: u64| ReasonTotals {
            instance: instance.into(),
            reason: reason.into(),
            sessions: n,
            bytes_in: 10 * n,
            bytes_out: 100 * n,
            messages: 1000 * n,
        };
        let all = add_up(
            vec![server("b"), server("a"), server("idle")],
            [
                group("a", "reset", 2),
                group("gone", "eof", 7),
                group("b", "eof", 1),
                group("a", "eof", 3),
            ],
        );
        let got: Vec<_> = all
            .iter()
            .map(|s| {
                let (name, reasons) = (s.instance.as_str(), s.reasons.clone());
                (
                    name,
                    s.sessions,
                    s.bytes_in,
                    s.bytes_out,
                    s.messages,
                    reasons,
                )
            })
            .collect();
        let reasons = |r: &[(&str, u64)]| -> Vec<(String, u64)> {
            r.iter().map(|(s, n)| (s.to_string(), *n)).collect()
        };
        assert_eq!(
            got,
            [
                ("b", 1, 10, 100, 1000, reasons(&[("eof", 1)])),
                ("a", 5, 50, 500, 5000, reasons(&[("eof", 3), ("reset", 2)])),
                ("idle", 0, 0, 0, 0, reasons(&[])),
            ]
        );
        assert_eq!(all[0].written, Some(9), "the server's own columns kept");
    }
}
