//! `pool`: a fixed pool of `--workers` threads fed by a bounded queue of accepted connections.
//!
//! Threads without their unbounded growth: the pool's size caps the threads, and the queue's
//! size caps the connections accepted but not yet served. When both are full the accept loop
//! waits, and new connections wait in the kernel's backlog: never dropped silently. A worker
//! serves one connection at a time, so `--workers` is also how many clients are served at once.

use super::blocking::{self, Accepted};
use crate::server::Shared;
use crate::transport::Listener;
use std::io;
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex};
use std::thread;

/// The default pool: 4 threads per core, at least 8, since most of a worker's time is spent
/// waiting on its client.
pub(crate) fn default_workers() -> usize {
    thread::available_parallelism()
        .map_or(8, |n| n.get() * 4)
        .max(8)
}

/// Serves until a stop with a fixed pool of threads, then drains.
pub(crate) fn serve(listener: Listener, shared: &Arc<Shared>) -> io::Result<()> {
    let workers = shared.workers.unwrap_or_else(default_workers).max(1);
    // As many waiting as there are workers: enough to keep them busy, small enough that a
    // connection does not sit accepted long without being served.
    let (queue, waiting) = mpsc::sync_channel::<Accepted>(workers);
    let waiting = Arc::new(Mutex::new(waiting));
    let threads: Vec<_> = (0..workers)
        .map(|_| {
            let (waiting, shared) = (waiting.clone(), shared.clone());
            thread::Builder::new()
                .name("pool".into())
                .spawn(move || work(&waiting, &shared))
        })
        .collect::<io::Result<_>>()?;
    blocking::accept_loop(&listener, shared, |conn| {
        // Blocks while the queue is full: the next connections wait in the kernel's backlog.
        let _ = queue.send(conn);
    })?;
    drop(listener);
    drop(queue); // workers finish what is queued, then see the queue closed
    for t in threads {
        let _ = t.join();
    }
    Ok(())
}

/// A worker: takes the next connection off the queue and serves it, until the queue closes.
fn work(waiting: &Mutex<Receiver<Accepted>>, shared: &Shared) {
    loop {
        let next = waiting.lock().unwrap_or_else(|e| e.into_inner()).recv();
        match next {
            Ok(conn) => blocking::serve_connection(conn, shared),
            Err(_) => return,
        }
    }
}
