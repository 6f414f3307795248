//! `select`: a single-threaded reactor over select(2), the oldest multiplexer.
//!
//! The same turn as `poll`, with select's limits in plain view: its fd sets are bitmaps of
//! `FD_SETSIZE` (1024) bits, rebuilt and scanned every turn. A connection whose fd does not fit
//! is refused with a logged error rather than written past the bitmap's end (which would
//! corrupt memory); use `poll` or `epoll` for more connections.

use super::reactor::{self, close, Drain, Status, Table, Timers, READ_SIZE};
use super::ReadBuffer;
use crate::session::CloseReason;
use crate::shared::Shared;
use crate::sys::{self, FdSet};
use crate::transport::Listener;
use std::io;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::Instant;

/// Serves until a stop on one thread, then drains.
pub(crate) fn serve(listener: Listener, shared: &Arc<Shared>) -> io::Result<()> {
    listener.set_nonblocking(true)?;
    let (listen_fd, waker_fd) = (listener.as_raw_fd(), shared.lifecycle.waker_fd());
    if listen_fd.max(waker_fd) >= FdSet::CAPACITY {
        return Err(io::Error::other(format!(
            "select cannot watch fd {} (FD_SETSIZE is {}): use --model poll or epoll",
            listen_fd.max(waker_fd),
            FdSet::CAPACITY
        )));
    }
    let mut table = Table::default();
    let mut buf = ReadBuffer::new(READ_SIZE);
    let mut drain = Drain::new(shared);
    let mut timers = Timers::default();
    loop {
        let accepting = !drain.stopping();
        if !accepting && (table.is_empty() || drain.expired()) {
            drain.cut(&mut table);
            return Ok(());
        }
        // Setup of this turn: both fd sets, rebuilt from scratch as select overwrites them.
        let (mut read, mut write) = (FdSet::new(), FdSet::new());
        let mut nfds = 0;
        // While `--max-conns` are open the listener is left out, its clients in the backlog.
        let listening = accepting && shared.hooks.has_room();
        if listening {
            read.insert(listen_fd);
        }
        if accepting {
            read.insert(waker_fd);
            nfds = listen_fd.max(waker_fd) + 1;
        }
        for (_, conn) in table.iter() {
            let fd = conn.as_raw_fd();
            if conn.wants_read() {
                read.insert(fd);
            }
            if conn.wants_write() {
                write.insert(fd);
            }
            nfds = nfds.max(fd + 1);
        }
        let wait = reactor::wait_time(&timers, &drain, accepting && !listening);
        sys::select(nfds, &mut read, &mut write, wait)?;
        let now = Instant::now();
        // Readable or writable connections: one drive each.
        for token in table.tokens() {
            let Some(conn) = table.get_mut(token) else {
                continue;
            };
            let fd = conn.as_raw_fd();
            if !read.contains(fd) && !write.contains(fd) {
                continue;
            }
            match conn.drive(&mut buf, now) {
                Status::Open { .. } => timers.arm(token, conn),
                Status::Closed(reason) => close(&mut table, token, reason, shared),
            }
        }
        timers.expire(&mut table, now, |table, token, reason| {
            close(table, token, reason, shared)
        });
        if listening && read.contains(listen_fd) {
            while let Some(conn) = reactor::accept(&listener, shared)? {
                if conn.as_raw_fd() >= FdSet::CAPACITY {
                    let why = io::Error::other(format!(
                        "fd {} is past select's FD_SETSIZE ({}): use --model poll or epoll for this many connections",
                        conn.as_raw_fd(),
                        FdSet::CAPACITY
                    ));
                    tracing::error!(error = %why, "refusing a connection");
                    conn.close(&CloseReason::Io(io::ErrorKind::OutOfMemory), shared);
                    continue;
                }
                reactor::insert(&mut table, &mut timers, conn);
            }
        }
    }
}
