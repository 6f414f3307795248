//! The store as one handle: opened in one place, either backend behind it.

use crate::store::error::StoreError;
use crate::store::mysql::Mysql;
use crate::store::recorder::RecorderStats;
use crate::store::rows::{
    BenchRow, InstanceStats, MessageFilter, MessageRow, Record, RecordedMessage, ServerRow,
    SessionRow,
};
use crate::store::sqlite::Sqlite;
use crate::store::url::StoreUrl;
use std::time::Duration;

/// How long a schema migration may take, and how long another instance waits for it: a
/// migration that copies or fills a table from a large one takes about a minute per 20
/// million rows here.
pub(crate) const MIGRATION_TIMEOUT: Duration = Duration::from_secs(3600);

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

    /// Runs one SQL statement that returns rows (a question of your own, as the book's),
    /// each value as text (`NULL` for none).
    pub fn query(&mut self, sql: &str) -> Result<Vec<Vec<String>>, StoreError> {
        match self {
            Store::Sqlite(s) => s.query(sql),
            Store::Mysql(m) => m.query(sql),
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
