//! `poll`: a single-threaded reactor over poll(2).
//!
//! The multiplexing lesson in its portable form: each turn builds the list of every socket with
//! what it waits for (read while the session takes input, write while replies are queued),
//! and one `poll` says which are ready. Level-triggered, so a socket with bytes left is simply
//! reported again. Its cost grows with the number of connections, ready or not.

use super::reactor::{self, close, Drain, Status, Table, Timers, READ_SIZE};
use super::ReadBuffer;
use crate::shared::Shared;
use crate::sys;
use crate::transport::Listener;
use std::io;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::Instant;

/// Serves until a stop on one thread, then drains.
pub(crate) fn serve(listener: Listener, shared: &Arc<Shared>) -> io::Result<()> {
    listener.set_nonblocking(true)?;
    let mut table = Table::default();
    let mut buf = ReadBuffer::new(READ_SIZE);
    let mut drain = Drain::new(shared);
    let mut fds: Vec<sys::PollFd> = Vec::new();
    let mut tokens: Vec<usize> = Vec::new();
    let mut timers = Timers::default();
    loop {
        let accepting = !drain.stopping();
        if !accepting && (table.is_empty() || drain.expired()) {
            drain.cut(&mut table);
            return Ok(());
        }
        // Setup of this turn: the listener and waker first, then each connection.
        fds.clear();
        tokens.clear();
        // While `--max-conns` are open the listener is left out (-1), its clients in the backlog.
        let listening = accepting && shared.hooks.has_room();
        if accepting {
            fds.push(sys::pollin(if listening {
                listener.as_raw_fd()
            } else {
                -1
            }));
            fds.push(sys::pollin(shared.lifecycle.waker_fd()));
        }
        for (token, conn) in table.iter() {
            let interest = sys::Interest {
                read: conn.wants_read(),
                write: conn.wants_write(),
            };
            fds.push(sys::PollFd::new(conn.as_raw_fd(), interest));
            tokens.push(token);
        }
        sys::poll(
            &mut fds,
            reactor::wait_time(&timers, &drain, accepting && !listening),
        )?;
        let now = Instant::now();
        let conns = if accepting { &fds[2..] } else { &fds[..] };
        // Readable or writable connections: one drive each.
        for (pfd, &token) in conns.iter().zip(&tokens) {
            if !pfd.ready() {
                continue;
            }
            let Some(conn) = table.get_mut(token) else {
                continue;
            };
            match conn.drive(&mut buf, now) {
                Status::Open { .. } => timers.arm(token, conn),
                Status::Closed(reason) => close(&mut table, token, reason, shared),
            }
        }
        timers.expire(&mut table, now, |table, token, reason| {
            close(table, token, reason, shared)
        });
        // Accept last, so a new connection's token cannot be mistaken for a closed one's.
        if listening && fds[0].ready() {
            while let Some(conn) = reactor::accept(&listener, shared)? {
                reactor::insert(&mut table, &mut timers, conn);
            }
        }
    }
}
