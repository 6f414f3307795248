//! A server's recording: the store it records into, opened here and nowhere else (once at
//! start, and once more in each forked worker, whose parent's writer thread it does not
//! have), the recorder its connections hand rows to, and a connection's messages batched.

use crate::store::handle::open;
use crate::store::recorder::{Recorder, RecorderOptions, SharedStats, Stopping, Writer};
use crate::store::rows::{now_us, MessageBatch, Record, ServerRow, SessionRow};
use crate::store::spool::replay_leftovers;
use crate::store::{StoreError, StoreUrl};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

/// Where a server's connections are recorded: its store, its instance, its recorder.
pub struct Recording {
    url: StoreUrl,
    options: RecorderOptions,
    instance: String,
    recorder: Recorder,
    /// Shared with forked workers, so the instance's totals add up theirs.
    stats: SharedStats,
    /// `--record messages`: every message answered, not only the sessions.
    messages: bool,
}

impl Recording {
    /// Opens the store at `url` for the server `server` describes: replays what an earlier
    /// server left in the spool, records this one's start, and starts the writer thread,
    /// counting into `stats` (shared with the server's other processes). `messages` records
    /// every message answered too.
    pub fn start(
        url: &StoreUrl,
        options: RecorderOptions,
        server: &ServerRow,
        messages: bool,
        stats: SharedStats,
        stopping: Stopping,
    ) -> Result<(Recording, Writer), StoreError> {
        let mut backend = open(url)?;
        if let Err(e) = replay_leftovers(&mut backend, &options.spool_dir) {
            tracing::warn!(error = %e, "cannot replay a spool left by an earlier server yet");
        }
        backend.start_server(server)?;
        let (recorder, writer) = Recorder::start(
            Box::new(backend),
            server.instance.clone(),
            options.clone(),
            stats.clone(),
            stopping,
        )
        .map_err(StoreError::Writer)?;
        let recording = Recording {
            url: url.clone(),
            options,
            instance: server.instance.clone(),
            recorder,
            stats,
            messages,
        };
        Ok((recording, writer))
    }

    /// The same recording for a forked worker: a connection and a writer thread of its own
    /// (a forked child has no threads but the one that forked), the same instance and totals.
    pub fn for_worker(&self, stopping: Stopping) -> Result<(Recording, Writer), StoreError> {
        let backend = open(&self.url)?;
        let (recorder, writer) = Recorder::start(
            Box::new(backend),
            self.instance.clone(),
            self.options.clone(),
            self.stats.clone(),
            stopping,
        )
        .map_err(StoreError::Writer)?;
        let recording = Recording {
            url: self.url.clone(),
            options: self.options.clone(),
            instance: self.instance.clone(),
            recorder,
            stats: self.stats.clone(),
            messages: self.messages,
        };
        Ok((recording, writer))
    }

    /// Hands a finished connection's row to the writer (waiting for room when the queue is
    /// full).
    pub fn session(&self, row: SessionRow) {
        self.recorder.record(Record::Session(row));
    }

    /// A batcher for the messages of session `id`, with `--record messages`.
    pub fn messages(&self, id: u64) -> Option<MessageBatcher> {
        self.messages.then(|| MessageBatcher {
            batch: MessageBatch::new(id),
            began: 0,
            recorder: self.recorder.clone(),
        })
    }

    /// Nanoseconds this process has waited for room in the queue (see [`Recorder::stalls`]).
    pub fn stalls(&self) -> Arc<AtomicU64> {
        self.recorder.stalls()
    }

    /// What the writer did, over every process of the server: for `/metrics`.
    pub fn stats(&self) -> SharedStats {
        self.stats.clone()
    }

    /// Writes out what is queued (`writer` is this recording's) and records the server's
    /// stop with its totals. Call it once nothing records any more.
    pub fn stop(&self, writer: Writer) -> Result<(), StoreError> {
        match writer.finish() {
            Some(mut backend) => backend.stop_server(&self.instance, now_us(), &self.stats),
            None => Ok(()),
        }
    }
}

/// A session's messages are handed to the recorder in batches of at most this many, ...
const BATCH_MESSAGES: usize = 64;
/// ... or of this many bytes, ...
const BATCH_BYTES: usize = 256 * 1024;
/// ... or once a message comes this long after the batch began; and whatever is left when
/// the connection closes.
const BATCH_AGE_US: i64 = 1_000_000;

/// Records a session's messages as they are answered: packed into one batch, handed over
/// whole, so a message costs the IO path a copy into a buffer, not two allocations and a
/// hand-over of its own. Dropped with its connection, it hands over what is left.
pub struct MessageBatcher {
    batch: MessageBatch,
    began: i64,
    recorder: Recorder,
}

impl MessageBatcher {
    /// Message `seq` was answered with `reply`.
    pub fn push(&mut self, seq: u64, request: &[u8], reply: &[u8]) {
        let at = now_us();
        if self.batch.is_empty() {
            self.began = at;
        }
        self.batch.push(seq, at, request, reply);
        if self.batch.len() >= BATCH_MESSAGES
            || self.batch.bytes() >= BATCH_BYTES
            || at - self.began >= BATCH_AGE_US
        {
            self.flush();
        }
    }

    fn flush(&mut self) {
        if !self.batch.is_empty() {
            let next = MessageBatch::new(self.batch.session());
            let full = std::mem::replace(&mut self.batch, next);
            self.recorder.record(Record::Messages(full));
        }
    }
}

impl Drop for MessageBatcher {
    fn drop(&mut self) {
        self.flush();
    }
}
