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
//!
//! The rooms: [`handle`](Store) opens a store of either kind and hands out one handle;
//! `rows` holds the row types that the server, `bench`, `lab` and the commands share; each
//! backend (`sqlite/`, `mysql/`) is a schema (opening and migrating), a writer and a reader;
//! `recording` is a server's store, opened there and only there, `recorder` queues and
//! batches what the server records, `spool` keeps it on disk while a database is away; `queries`, `spans` and `reading` are the SQL and the paged reading both
//! backends share.

mod error;
mod handle;
mod mysql;
pub mod queries;
mod reading;
mod recorder;
mod recording;
mod rows;
mod schema;
mod spans;
pub mod spool;
mod sqlite;
#[cfg(test)]
pub(crate) mod test_data;
#[cfg(test)]
mod tests;
mod url;

pub use error::StoreError;
pub use handle::{open, open_to_read, Backend, Store, Written};
pub use mysql::Mysql;
pub use queries::QUESTIONS;
pub use recorder::{
    OnStoreError, Recorder, RecorderOptions, RecorderStats, SharedStats, Stopping, Writer, LINGER,
    QUEUE, QUEUE_BYTES,
};
pub use recording::{MessageBatcher, Recording};
pub use rows::{
    host_name, now_us, unique_id, BenchResult, BenchRow, InstanceStats, MessageBatch,
    MessageFilter, MessageRef, MessageRow, Record, RecordedMessage, ServerRow, SessionRow,
};
pub use sqlite::Sqlite;
pub use url::{StoreUrl, DEFAULT_STORE};
