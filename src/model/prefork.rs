//! `prefork`: a master and `--workers` worker processes (default: one per core), the nginx shape.
//!
//! Processes for isolation, event loops for scale: each worker is a process running the `epoll`
//! reactor over the listening socket it inherited. All share that one socket, each worker's
//! epoll watching it with `EPOLLEXCLUSIVE` so a connection wakes one worker. One shared socket
//! rather than an `SO_REUSEPORT` socket per worker: it serves Unix sockets as well as TCP, and
//! when a worker dies the connections waiting in the backlog are still there for the others
//! (a dying `SO_REUSEPORT` socket takes its queue with it).
//!
//! The master only supervises: it restarts a worker that dies, passes SIGTERM on for a
//! graceful stop, and its summary adds up the workers' (they count into shared memory).

use super::epoll;
use super::process::Children;
use crate::shared::Shared;
use crate::sys;
use crate::transport::Listener;
use std::io;
use std::sync::Arc;

/// Starts the workers, keeps them running until a stop, then stops them.
pub(crate) fn serve(listener: Listener, shared: &Arc<Shared>) -> io::Result<()> {
    listener.set_nonblocking(true)?;
    let workers = shared
        .workers
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .max(1);
    let mut children = Children::new()?;
    let start_worker = |children: &mut Children| {
        children.spawn(|| {
            let (worker, writer) = match shared.for_worker() {
                Ok(worker) => worker,
                Err(e) => {
                    tracing::error!(error = %e, "worker cannot start");
                    return 1;
                }
            };
            sys::route_stop_signals(Some(worker.lifecycle.waker_write_fd()), None);
            let code = match epoll::run(&listener, &worker, true) {
                Ok(()) => 0,
                Err(e) => {
                    tracing::error!(error = %e, "worker failed");
                    1
                }
            };
            worker.finish(writer);
            code
        })
    };
    for _ in 0..workers {
        start_worker(&mut children)?;
    }
    while !shared.lifecycle.is_stopping() {
        let mut fds = [
            sys::pollin(shared.lifecycle.waker_fd()),
            sys::pollin(children.fd()),
        ];
        sys::poll(&mut fds, None)?;
        for (pid, _) in children.reap() {
            if !shared.lifecycle.is_stopping() {
                tracing::warn!(pid, "worker ended; starting another");
                start_worker(&mut children)?;
            }
        }
    }
    let result = children.stop(&shared.lifecycle, true);
    drop(listener); // after the workers: it was theirs until they ended
    result
}
