//! The recorder: a queue bounded in records and in bytes that models hand records to, and a
//! writer thread that batches it into the store, so the IO path never waits on the database
//! unless the queue is full.
//!
//! When the store cannot take records (a database away, a disk full, a file locked or
//! read-only), nothing is dropped unless the operator said so ([`OnStoreError`]): by default
//! the records wait in the queue while the writer tries again, and once the queue is full the
//! models wait too (the server slows, then stops serving, until the store writes again), or
//! they go to a local spool ([`super::spool`]). The writer logs an outage once when it begins
//! and once when it ends, and the metrics show it (`switchboard_store_failing`).

use super::spool::Spooled;
use super::{Backend, Record};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::{self, JoinHandle, Thread};
use std::time::{Duration, Instant};

/// Records queued before a model waits for room.
pub const QUEUE: usize = 64 * 1024;
/// Bytes of records queued before a model waits for room (`--store-queue`): about 0.5 s of
/// messages recorded at 100,000 a second, far more than a store that keeps up ever holds.
pub const QUEUE_BYTES: usize = 64 << 20;
/// Records written per transaction, at most.
const BATCH: usize = 4096;
/// The longest wait between tries of a store that fails.
const RETRY_MAX: Duration = Duration::from_secs(1);
/// After a short transaction (fewer records than the 4,096 it takes at most, or than the queue
/// holds), the writer lets records gather this long before it looks again; a model that finds
/// the queue full, and the server's stop, cut the pause short. A busy server then pays one commit
/// per many connections' batches, and a database on the same cores works in a few long bursts
/// rather than many short ones, which left those cores idle: recording into such a MariaDB kept
/// 0.57x-0.63x of the throughput of not recording with a 10 ms pause, 0.71x or more with this one
/// (the book's dated runs, "The writer's pause"), for 12-18 MB of queued records at over 100,000 messages a
/// second.
pub const LINGER: Duration = Duration::from_millis(250);

/// What the writer does with records the store cannot take (`--on-store-error`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnStoreError {
    /// Keep them and try again until the store takes them; the queue fills, then the models
    /// wait for room. A server stopped meanwhile spools what is left (the default for SQLite).
    Wait,
    /// Write them to a local spool, replayed once the store writes again (the default for
    /// MySQL/MariaDB, where the database is another machine that may be away).
    Spool,
    /// Drop them, counted (`dropped`): the operator prefers serving on to a complete record.
    Drop,
}

/// How a recorder queues and what it does when the store fails.
#[derive(Debug, Clone)]
pub struct RecorderOptions {
    /// Records queued before a model waits for room.
    pub records: usize,
    /// Bytes of records queued before a model waits for room.
    pub bytes: usize,
    /// What to do with records the store cannot take.
    pub on_error: OnStoreError,
    /// Where spools go ([`OnStoreError::Spool`], and what a stop leaves under `Wait`).
    pub spool_dir: PathBuf,
}

impl RecorderOptions {
    /// The defaults for a store: [`QUEUE`] records, [`QUEUE_BYTES`] bytes, waiting on SQLite
    /// and spooling on MySQL, spools in the working directory.
    pub fn for_store(url: &super::StoreUrl) -> Self {
        RecorderOptions {
            records: QUEUE,
            bytes: QUEUE_BYTES,
            on_error: match url {
                super::StoreUrl::Sqlite(_) => OnStoreError::Wait,
                super::StoreUrl::Mysql(_) => OnStoreError::Spool,
            },
            spool_dir: PathBuf::from("."),
        }
    }
}

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
    /// 1 while the store refuses records (an outage), else 0.
    pub failing: AtomicU64,
    /// Bytes of the records queued and not yet written.
    pub bytes: AtomicU64,
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

/// The bytes of the records queued, against their budget: a model that would pass it waits,
/// as for a full queue. One record larger than the budget passes when nothing else is queued.
struct Room {
    held: Mutex<usize>,
    freed: Condvar,
    budget: usize,
}

impl Room {
    /// Takes `n` bytes of room, waiting while they do not fit; `waiting` is called once if so.
    fn take(&self, n: usize, waiting: impl FnOnce()) {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        if *held > 0 && *held + n > self.budget {
            waiting();
            while *held > 0 && *held + n > self.budget {
                held = self
                    .freed
                    .wait_timeout(held, Duration::from_millis(100))
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
            }
        }
        *held += n;
    }

    /// Gives back `n` bytes of room.
    fn give_back(&self, n: usize) {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        *held = held.saturating_sub(n);
        self.freed.notify_all();
    }
}

/// Hands records to the writer thread. Cloned into every place that records.
#[derive(Clone)]
pub struct Recorder {
    queue: SyncSender<Queued>,
    room: Arc<Room>,
    /// Nanoseconds the models of this process have waited for room, in all.
    stalls: Arc<AtomicU64>,
    stats: SharedStats,
    /// The writer's thread, to wake from its pause when the queue is full.
    writer: Thread,
}

/// The writer thread; [`finish`](Writer::finish) waits until the queue is written out.
pub struct Writer {
    queue: SyncSender<Queued>,
    thread: JoinHandle<Option<Box<dyn Backend>>>,
}

/// Tells the writer that the server is stopping: a store that fails then has what is left
/// spooled rather than waited for, so a stop is never held up by it.
pub type Stopping = Box<dyn Fn() -> bool + Send>;

impl Recorder {
    /// Starts a writer thread over `backend`, counting into `stats`, queueing and handling
    /// failures as `options` say. Returns the handle that records and the writer to finish.
    pub fn start(
        backend: Box<dyn Backend>,
        instance: String,
        options: RecorderOptions,
        stats: SharedStats,
        stopping: Stopping,
    ) -> std::io::Result<(Recorder, Writer)> {
        let (queue, waiting) = mpsc::sync_channel(options.records.max(1));
        let room = Arc::new(Room {
            held: Mutex::new(0),
            freed: Condvar::new(),
            budget: options.bytes.max(1),
        });
        let backend: Box<dyn Backend> = match options.on_error {
            OnStoreError::Spool => Box::new(Spooled::new(backend, &options.spool_dir)),
            OnStoreError::Wait | OnStoreError::Drop => backend,
        };
        let mut writer = StoreWriter {
            backend: Some(backend),
            spooling: options.on_error == OnStoreError::Spool,
            instance,
            options,
            stats: stats.clone(),
            room: room.clone(),
            stopping,
            outage: None,
        };
        let thread = crate::sys::spawn_settled(
            thread::Builder::new().name("store-writer".into()),
            move || writer.run(waiting),
        )?;
        let recorder = Recorder {
            queue: queue.clone(),
            room,
            stalls: Arc::default(),
            stats,
            writer: thread.thread().clone(),
        };
        Ok((recorder, Writer { queue, thread }))
    }

    /// Queues a record. When the queue is full (in records or in bytes), waits for room
    /// (counted as `waited`): a store slower than the traffic, or one that fails, slows serving
    /// instead of losing records.
    pub fn record(&self, record: Record) {
        let bytes = record.bytes();
        self.stats.queued.fetch_add(1, Relaxed);
        let mut waiting = None;
        self.room.take(bytes, || {
            waiting = Some(Instant::now());
            self.stats.waited.fetch_add(1, Relaxed);
            self.writer.unpark(); // the writer may be in its pause: the queue wants draining now
        });
        self.stats.bytes.fetch_add(bytes as u64, Relaxed);
        match self.queue.try_send(Queued::Record(record)) {
            Ok(()) => {}
            Err(TrySendError::Full(record)) => {
                waiting.get_or_insert_with(Instant::now);
                self.stats.waited.fetch_add(1, Relaxed);
                self.writer.unpark();
                if self.queue.send(record).is_err() {
                    self.stats.dropped.fetch_add(1, Relaxed);
                }
            }
            Err(TrySendError::Disconnected(_)) => {
                self.stats.dropped.fetch_add(1, Relaxed);
            }
        }
        if let Some(since) = waiting {
            self.stalls
                .fetch_add(since.elapsed().as_nanos() as u64, Relaxed);
        }
    }

    /// Nanoseconds this process's models have waited for room, in all: time the server, not
    /// a peer, held things up (see `Session::with_stall_clock`).
    pub fn stalls(&self) -> Arc<AtomicU64> {
        self.stalls.clone()
    }
}

impl Writer {
    /// Writes out every record queued so far, ends the writer and returns its backend. Call it
    /// once nothing records any more (the server has drained).
    pub fn finish(self) -> Option<Box<dyn Backend>> {
        let _ = self.queue.send(Queued::End);
        // Cut a pause short: the end is written now, not a [`LINGER`] later.
        self.thread.thread().unpark();
        self.thread.join().ok().flatten()
    }
}

/// The writer thread's state.
struct StoreWriter {
    /// The store (or the spool in front of it); taken at the end.
    backend: Option<Box<dyn Backend>>,
    /// The backend spools what the store cannot take.
    spooling: bool,
    instance: String,
    options: RecorderOptions,
    stats: SharedStats,
    room: Arc<Room>,
    stopping: Stopping,
    /// Since when the store has refused records, and how many batches met it so.
    outage: Option<(Instant, u64)>,
}

impl StoreWriter {
    /// Takes what is queued in batches, one transaction each, until every sender is gone and
    /// the queue is empty; returns the backend.
    fn run(&mut self, waiting: Receiver<Queued>) -> Option<Box<dyn Backend>> {
        let mut batch = Vec::with_capacity(BATCH);
        let mut waited = self.stats.waited.load(Relaxed);
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
            self.stats.taken.fetch_add(batch.len() as u64, Relaxed);
            self.write(&batch);
            let bytes: usize = batch.iter().map(Record::bytes).sum();
            self.stats.bytes.fetch_sub(bytes as u64, Relaxed);
            self.room.give_back(bytes);
            let short = batch.len() < BATCH.min(self.options.records);
            batch.clear();
            // A model that waited for room since the last look wants the queue drained now.
            let now = self.stats.waited.load(Relaxed);
            let someone_waited = std::mem::replace(&mut waited, now) != now;
            if short && !ended && !someone_waited {
                thread::park_timeout(LINGER);
            }
        }
        if let Some((since, _)) = self.outage {
            tracing::error!(
                secs = since.elapsed().as_secs(),
                "stopped while the store still failed"
            );
        }
        self.backend.take()
    }

    /// Writes one batch, however long the store takes to take it: tried again (after 0.1 s,
    /// then twice as long each time, up to a second) unless the operator chose to drop it. A
    /// stop during an outage spools what is left; only a spool that fails too, at a stop,
    /// drops records, with an error that counts them.
    fn write(&mut self, batch: &[Record]) {
        let rows: u64 = batch.iter().map(Record::rows).sum();
        let mut pause = Duration::from_millis(100);
        loop {
            let Some(backend) = self.backend.as_mut() else {
                return; // never: the backend is taken only at the end
            };
            let error = match backend.write(&self.instance, batch) {
                Ok(written) => {
                    self.stats.written.fetch_add(rows, Relaxed);
                    self.stats.spooled.fetch_add(written.spooled, Relaxed);
                    self.recovered();
                    return;
                }
                Err(e) => e,
            };
            self.failed(&error);
            let stopping = (self.stopping)();
            match self.options.on_error {
                OnStoreError::Drop => {}
                _ if stopping && !self.spooling => {
                    tracing::warn!(dir = %self.options.spool_dir.display(), "stopping while the store fails: what is left goes to a spool, replayed by the next server started there");
                    let dir = &self.options.spool_dir;
                    self.backend = self
                        .backend
                        .take()
                        .map(|store| Box::new(Spooled::new(store, dir)) as Box<dyn Backend>);
                    self.spooling = true;
                    continue;
                }
                _ if stopping => {
                    tracing::error!(error = %error, records = rows, "neither the store nor the spool can take records, and the server is stopping: records dropped");
                }
                _ => {
                    thread::park_timeout(pause);
                    pause = (pause * 2).min(RETRY_MAX);
                    continue;
                }
            }
            self.stats.dropped.fetch_add(rows, Relaxed);
            return;
        }
    }

    /// The store refused a batch: the first refusal of an outage is logged, and counted in
    /// the metrics until the store takes records again.
    fn failed(&mut self, error: &super::StoreError) {
        let (_, batches) = self.outage.get_or_insert_with(|| {
            self.stats.failing.store(1, Relaxed);
            let what = match (self.options.on_error, self.spooling) {
                (OnStoreError::Drop, _) => "records are dropped until it can (--on-store-error drop)",
                (_, true) => "nor can the spool: records wait in the queue, then serving waits, until one of them can",
                (_, false) => "records wait in the queue (--store-queue), then serving waits, until it can; tried again every second",
            };
            tracing::warn!(error = %error, "the store cannot take records: {what}");
            (Instant::now(), 0)
        });
        *batches += 1;
    }

    /// The store took a batch: an outage, if there was one, is over.
    fn recovered(&mut self) {
        if let Some((since, batches)) = self.outage.take() {
            self.stats.failing.store(0, Relaxed);
            tracing::info!(
                secs = since.elapsed().as_secs_f64(),
                tries = batches,
                "the store takes records again"
            );
        }
    }
}
