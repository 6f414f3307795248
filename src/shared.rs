//! What a model is handed: the [`Hooks`] a connection goes through, the server's stop, and
//! the options that shape the model itself (workers, children, file tables, `TCP_NODELAY`).

use crate::hooks::Hooks;
use crate::shutdown::Lifecycle;
use crate::store::Writer;
use std::sync::Arc;

/// Why a forked worker could not start: its store or its stop.
#[derive(Debug, thiserror::Error)]
pub(crate) enum WorkerError {
    /// The store could not be opened.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// Its stop could not be set up.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// What every connection of a server shares, handed to its model.
pub(crate) struct Shared {
    /// What a model calls on a connection's way.
    pub(crate) hooks: Hooks,
    /// The server's stop: when to stop accepting, and when the drain is over.
    pub(crate) lifecycle: Arc<Lifecycle>,
    pub(crate) nodelay: bool,
    /// `--workers`, if given; each model has its own default.
    pub(crate) workers: Option<usize>,
    /// `--max-children` for `fork`.
    pub(crate) max_children: usize,
    /// `epoll`'s reactor threads each take a file table of their own (see
    /// `ServerBuilder::own_fd_tables`).
    pub(crate) own_fd_tables: bool,
    /// The io_uring features `uring` may use (`--uring`).
    pub(crate) uring: crate::model::UringFeatures,
}

impl Shared {
    /// The same server for a forked worker: the same service, options and counters, with a stop
    /// of its own (its parent's waker is shared by every process, so it cannot be the worker's).
    pub(crate) fn for_worker(&self) -> Result<(Shared, Option<Writer>), WorkerError> {
        let lifecycle = Arc::new(Lifecycle::new(self.lifecycle.drain())?);
        let (recording, writer) = match &self.hooks.recording {
            None => (None, None),
            Some(parent) => {
                let stopping = lifecycle.clone();
                let (recording, writer) =
                    parent.for_worker(Box::new(move || stopping.is_stopping()))?;
                (Some(recording), Some(writer))
            }
        };
        let worker = Shared {
            hooks: self.hooks.for_worker(recording),
            lifecycle,
            nodelay: self.nodelay,
            workers: self.workers,
            max_children: self.max_children,
            own_fd_tables: self.own_fd_tables,
            uring: self.uring,
        };
        Ok((worker, writer))
    }

    /// A forked worker is done: its records are written out before it exits.
    pub(crate) fn finish(self, writer: Option<Writer>) {
        drop(self); // the last recorders, so the writer sees them gone
        if let Some(writer) = writer {
            writer.finish();
        }
    }
}
