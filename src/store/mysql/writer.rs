//! Writing to MySQL/MariaDB: the recorder's batches (bulk on MariaDB, multi-row statements
//! on MySQL), server starts and stops, bench runs.

use crate::store::error::StoreError;
use crate::store::handle::{Backend, Written};
use crate::store::mysql::Mysql;
use crate::store::queries::INSERT_SESSION_SPAN;
use crate::store::recorder::RecorderStats;
use crate::store::rows::{messages_in, BenchRow, MessageRef, Record, ServerRow};
use crate::store::schema::BENCH_COLUMNS;
use crate::store::spans::session_spans;
use mysql::prelude::Queryable;
use mysql::{Params, Transaction, Value};
use std::sync::atomic::Ordering::Relaxed;

/// Rows per multi-row INSERT or per bulk command, at most.
const ROWS_PER_INSERT: usize = 512;

impl Mysql {
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

    /// Records a load-generator run.
    pub fn record_bench(&mut self, r: &BenchRow) -> Result<(), StoreError> {
        let url = self.url.clone();
        let values: Vec<Value> = vec![
            r.run.clone().into(),
            r.lab.clone().into(),
            r.started.into(),
            r.result.address.clone().into(),
            r.model.clone().into(),
            r.result.frame.clone().into(),
            r.result.conns.into(),
            r.result.size.into(),
            r.result.depth.into(),
            r.result.rate.into(),
            r.result.secs.into(),
            r.result.msgs_per_s.into(),
            r.result.mb_per_s.into(),
            r.result.p50_us.into(),
            r.result.p90_us.into(),
            r.result.p99_us.into(),
            r.result.p999_us.into(),
            r.result.max_us.into(),
            r.result.errors.into(),
            r.result.mismatches.into(),
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

    /// Writes a batch straight to the database, in one transaction ([`insert_rows`] says how).
    pub(super) fn write_db(&mut self, instance: &str, batch: &[Record]) -> Result<(), StoreError> {
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
        let sessions = session_values(instance, batch);
        let messages: Vec<MessageRef<'_>> = messages_in(batch).collect();
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
            insert_messages(&mut tx, bulk, instance, &messages).map_err(err)?;
        }
        tx.commit().map_err(err)
    }
}

/// The `sessions` rows of a batch, in order.
fn session_values(instance: &str, batch: &[Record]) -> Vec<[Value; 11]> {
    batch
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
        .collect()
}

/// Inserts a batch's messages (in one transaction with its sessions).
fn insert_messages(
    tx: &mut Transaction<'_>,
    bulk: bool,
    instance: &str,
    messages: &[MessageRef<'_>],
) -> mysql::Result<()> {
    let message_rows = messages.iter().map(|m| {
        [
            m.session.into(),
            m.seq.into(),
            m.at.into(),
            m.request.into(),
            m.reply.into(),
        ]
    });
    // The instance, the same in every row, is a variable of the connection rather
    // than a parameter of each row: the server checks and converts a string
    // parameter's characters row by row, a third of its work per message. For the
    // same reason the requests and replies are sent as binary strings: their bytes go
    // into BLOBs unexamined (`perf`: their conversion fell from 7.5% of MariaDB's samples to 2%).
    tx.exec_drop(
        "SET @switchboard_instance = ?, character_set_client = binary",
        (instance,),
    )?;
    insert_rows(
        tx,
        bulk,
        "INSERT IGNORE INTO messages (instance, session, seq, at, request, reply) VALUES",
        "(@switchboard_instance, ?, ?, ?, ?, ?)",
        message_rows,
    )?;
    // Back to the character set the connection began with (the handshake sets both).
    tx.query_drop("SET character_set_client = @@character_set_connection")?;
    Ok(())
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

/// Inserts `rows` with the statement `head` followed by `marks` (one row's placeholders).
///
/// On MariaDB (`bulk`) the statement is of one row, prepared once and executed for up to
/// [`ROWS_PER_INSERT`] rows at a time in one `COM_STMT_BULK_EXECUTE` command (MariaDB 10.2.7 and
/// later): the server sets the statement up once per command rather than once per row, about
/// a sixth less of its CPU per recorded message than the multi-row statements below (the book's dated runs,
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
pub(super) fn statement_sizes(mut rows: usize) -> impl Iterator<Item = usize> {
    std::iter::from_fn(move || {
        (rows > 0).then(|| {
            let size = 1 << rows.min(ROWS_PER_INSERT).ilog2();
            rows -= size;
            size
        })
    })
}
