//! The recorder: a bounded queue that models hand records to, and a writer thread that batches
//! it into the store, so the IO path never waits on the database unless the queue is full.

use super::{Backend, Record};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread::{self, JoinHandle, Thread};
use std::time::Duration;

/// Records queued before a model waits for room.
pub const QUEUE: usize = 64 * 1024;
/// Records written per transaction, at most.
const BATCH: usize = 4096;
/// Tries of a failing batch before its records are counted as dropped.
const TRIES: u32 = 5;
/// After a short transaction (fewer records than the 4,096 it takes at most, or than the queue
/// holds), the writer lets records gather this long before it looks again; a model that finds
/// the queue full, and the server's stop, cut the pause short. A busy server then pays one commit
/// per many connections' batches, and a database on the same cores works in a few long bursts
/// rather than many short ones, which left those cores idle: recording into such a MariaDB kept
/// 0.57x-0.63x of the throughput of not recording with a 10 ms pause, 0.71x or more with this one
/// (README, "The writer's pause"), for 12-18 MB of queued records at over 100,000 messages a
/// second.
pub const LINGER: Duration = Duration::from_millis(250);

/// What the recorder did, for `stats` and the `servers` row.
#[derive(Debug, Default)]
pub struct RecorderStats {
    /// Records written to the store (or to its local spool).
    pub written: AtomicU64,
    /// Of those, records that went to the local spool while the database was away.
    pub spooled: AtomicU64,
    /// Times a model found the queue full and waited for room.
    pub waited: AtomicU64,
    /// Records that could not be written.
    pub dropped: AtomicU64,
    /// Records handed to the queue, and taken off it by the writer: their difference is the
    /// queue's depth.
    pub queued: AtomicU64,
    /// See `queued`.
    pub taken: AtomicU64,
}

/// Where a recorder counts: its own memory, or memory shared with forked workers.
pub type SharedStats = Arc<dyn std::ops::Deref<Target = RecorderStats> + Send + Sync>;

/// What the queue carries: records, then the writer's signal to end.
enum Queued {
    Record(Record),
    End,
}

/// Hands records to the writer thread. Cloned into every place that records.
#[derive(Clone)]
pub struct Recorder {
    queue: SyncSender<Queued>,
    stats: SharedStats,
    /// The writer's thread, to wake from its pause when the queue is full.
    writer: Thread,
}

/// The writer thread; [`finish`](Writer::finish) waits until the queue is written out.
pub struct Writer {
    queue: SyncSender<Queued>,
    thread: JoinHandle<Box<dyn Backend>>,
}

impl Recorder {
    /// Starts a writer thread over `backend`, counting into `stats`, with a queue of
    /// `capacity` records. Returns the handle that records and the writer to finish.
    pub fn start(
        backend: Box<dyn Backend>,
        instance: String,
        capacity: usize,
        stats: SharedStats,
    ) -> std::io::Result<(Recorder, Writer)> {
        let (queue, waiting) = mpsc::sync_channel(capacity.max(1));
        let counters = stats.clone();
        let thread = crate::sys::spawn_settled(
            thread::Builder::new().name("store-writer".into()),
            move || write_all(backend, &instance, waiting, capacity, &counters),
        )?;
        let recorder = Recorder {
            queue: queue.clone(),
            stats,
            writer: thread.thread().clone(),
        };
        Ok((recorder, Writer { queue, thread }))
    }

    /// Queues a record. When the queue is full, waits for room (counted as `waited`): a store
    /// slower than the traffic slows serving instead of losing records.
    pub fn record(&self, record: Record) {
        self.stats.queued.fetch_add(1, Relaxed);
        match self.queue.try_send(Queued::Record(record)) {
            Ok(()) => {}
            Err(TrySendError::Full(record)) => {
                self.stats.waited.fetch_add(1, Relaxed);
                // The writer may be in its pause: the queue wants draining now.
                self.writer.unpark();
                if self.queue.send(record).is_err() {
                    self.stats.dropped.fetch_add(1, Relaxed);
                }
            }
            Err(TrySendError::Disconnected(_)) => {
                self.stats.dropped.fetch_add(1, Relaxed);
            }
        }
    }
}

impl Writer {
    /// Writes out every record queued so far, ends the writer and returns its backend. Call it
    /// once nothing records any more (the server has drained).
    pub fn finish(self) -> Option<Box<dyn Backend>> {
        let _ = self.queue.send(Queued::End);
        // Cut a pause short: the end is written now, not a [`LINGER`] later.
        self.thread.thread().unpark();
        self.thread.join().ok()
    }
}

/// The writer: takes what is queued in batches, one transaction each, until every sender is
/// gone and the queue is empty.
fn write_all(
    mut backend: Box<dyn Backend>,
    instance: &str,
    waiting: Receiver<Queued>,
    capacity: usize,
    stats: &RecorderStats,
) -> Box<dyn Backend> {
    let mut batch = Vec::with_capacity(BATCH);
    let mut waited = stats.waited.load(Relaxed);
    let mut ended = false;
    while !ended {
        match waiting.recv() {
            Ok(Queued::Record(record)) => batch.push(record),
            Ok(Queued::End) | Err(_) => ended = true,
        }
        while !ended && batch.len() < BATCH {
            match waiting.try_recv() {
                Ok(Queued::Record(record)) => batch.push(record),
                Ok(Queued::End) => ended = true,
                Err(_) => break,
            }
        }
        if batch.is_empty() {
            continue;
        }
        stats.taken.fetch_add(batch.len() as u64, Relaxed);
        let rows: u64 = batch.iter().map(Record::rows).sum();
        let mut tries = 0;
        loop {
            match backend.write(instance, &batch) {
                Ok(written) => {
                    stats.written.fetch_add(rows, Relaxed);
                    stats.spooled.fetch_add(written.spooled, Relaxed);
                    break;
                }
                Err(e) if tries + 1 < TRIES => {
                    tries += 1;
                    tracing::warn!(error = %e, records = batch.len(), "store write failed; retrying");
                    thread::sleep(Duration::from_millis(100 << tries));
                }
                Err(e) => {
                    tracing::error!(error = %e, records = rows, "store write failed; records dropped");
                    stats.dropped.fetch_add(rows, Relaxed);
                    break;
                }
            }
        }
        let short = batch.len() < BATCH.min(capacity);
        batch.clear();
        // A model that waited for room since the last look wants the queue drained now.
        let someone_waited = std::mem::replace(&mut waited, stats.waited.load(Relaxed)) != waited;
        if short && !ended && !someone_waited {
            thread::park_timeout(LINGER);
        }
    }
    backend
}
