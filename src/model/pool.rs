//! `pool`: a fixed pool of `--workers` threads fed by a bounded queue of accepted connections.
//!
//! Threads without their unbounded growth: the pool's size caps the threads, and the queue's
//! size caps the connections accepted but not yet served. When both are full the accept loop
//! waits, and new connections wait in the kernel's backlog: never dropped silently. A worker
//! serves one connection at a time, so `--workers` is also how many clients are served at once.

use super::{blocking, datagram};
use crate::shared::Shared;
use crate::transport::Listener;
use socket2::SockAddr;
use std::io;
use std::sync::mpsc::{self, SyncSender};
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
    if let Listener::Datagram(socket) = &listener {
        return run_pool(
            workers,
            |(bytes, from): (Vec<u8>, SockAddr)| datagram::answer(socket, &bytes, &from, shared),
            |queue| {
                datagram::serve_blocking(socket, shared, |bytes, from| {
                    let _ = queue.send((bytes.to_vec(), from)); // waits while the pool is busy
                })
            },
        );
    }
    run_pool(
        workers,
        |conn| blocking::serve_connection(conn, shared),
        |queue| {
            blocking::accept_loop(&listener, shared, |conn| {
                // Blocks while the queue is full: the next connections wait in the kernel's backlog.
                let _ = queue.send(conn);
            })
        },
    )?;
    drop(listener);
    Ok(())
}

/// Runs `workers` threads that each `work` on the jobs `feed` queues, until `feed` returns;
/// then they finish what is queued and end.
fn run_pool<T: Send>(
    workers: usize,
    work: impl Fn(T) + Sync,
    feed: impl FnOnce(&SyncSender<T>) -> io::Result<()>,
) -> io::Result<()> {
    // As many waiting as there are workers: enough to keep them busy, small enough that a job
    // does not sit long without being served.
    let (queue, waiting) = mpsc::sync_channel::<T>(workers);
    let waiting = Mutex::new(waiting);
    thread::scope(|scope| {
        for _ in 0..workers {
            thread::Builder::new()
                .name("pool".into())
                .spawn_scoped(scope, || loop {
                    let next = waiting.lock().unwrap_or_else(|e| e.into_inner()).recv();
                    match next {
                        Ok(job) => work(job),
                        Err(_) => return, // the queue closed and is empty
                    }
                })?;
        }
        let fed = feed(&queue);
        drop(queue);
        fed
    })
}
