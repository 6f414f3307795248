//! `sigio`: signal-driven IO, the fourth of the plan's five IO models.
//!
//! The kernel does the watching: every socket is armed (`F_SETOWN_EX`, `F_SETSIG`, `O_ASYNC`,
//! in `sys/sigio.rs`) so that when it turns ready (a client waiting on the listener, bytes
//! arriving, room to write again, the peer gone) the kernel queues a real-time signal for this
//! thread that names the socket. The thread sleeps in `sigtimedwait` until one comes, then
//! reads and writes that socket without blocking. A signal says that something happened, not
//! what is left, so a socket is read until it would block, as `epoll`'s edge-triggered loop
//! reads it.
//!
//! Why real servers rarely choose it: each event is a signal, taken by a system call of its
//! own (one `epoll_wait` returns hundreds); the real-time queue is bounded
//! (`RLIMIT_SIGPENDING`), and when it overflows the kernel sends a plain `SIGIO` that names no
//! socket, so every connection must be checked (counted in the summary); and signals belong to
//! a thread or a process, shared with everything else that uses them. Datagram sockets suit
//! it best: a signal, a datagram, an answer.

use super::datagram;
use super::reactor::{self, close, Drain, Status, Table, Timers, READ_SIZE};
use super::ReadBuffer;
use crate::shared::Shared;
use crate::sys::{Ready, SignalDriven};
use crate::transport::{DatagramSocket, Listener, MAX_DATAGRAM};
use std::collections::HashMap;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Serves until a stop on one thread, then drains.
pub(crate) fn serve(listener: Listener, shared: &Arc<Shared>) -> io::Result<()> {
    let signals = SignalDriven::for_this_thread()?;
    signals.arm(shared.lifecycle.waker_fd())?;
    if let Listener::Datagram(socket) = &listener {
        return serve_datagrams(socket, shared, &signals);
    }
    signals.arm(listener.as_raw_fd())?;
    let mut s = Serving {
        table: Table::default(),
        by_fd: HashMap::new(),
        timers: Timers::default(),
        buf: ReadBuffer::new(READ_SIZE),
        again: Vec::new(),
        shared,
    };
    let mut drain = Drain::new(shared);
    let mut ready = Vec::new();
    // The listener may hold clients no signal will announce: those that came before it was
    // armed, and those left in the backlog while --max-conns was full.
    let mut backlog = true;
    loop {
        let accepting = !drain.stopping();
        if !accepting && (s.table.is_empty() || drain.expired()) {
            drain.cut(&mut s.table);
            return Ok(());
        }
        if accepting && backlog {
            s.accept_all(&listener, &signals)?;
            backlog = !shared.hooks.has_room(); // full: look again in a moment
        }
        let timeout = if s.again.is_empty() {
            reactor::wait_time(&s.timers, &drain, accepting && backlog)
        } else {
            Some(Duration::ZERO) // turns that ran out go on at once
        };
        ready.clear();
        signals.wait(timeout, &mut ready)?;
        let now = Instant::now();
        let mut due = std::mem::take(&mut s.again);
        for &r in &ready {
            match r {
                Ready::Fd(fd) if fd == listener.as_raw_fd() => backlog = true,
                Ready::Fd(fd) => {
                    // The waker, or a socket closed since it signalled, names no connection.
                    if let Some(&token) = s.by_fd.get(&fd) {
                        due.push(token);
                    }
                }
                Ready::Overflow => {
                    // Signals were lost: any socket may be ready, and the listener too.
                    shared.hooks.counters.signal_overflows.fetch_add(1, Relaxed);
                    due = s.table.tokens();
                    backlog = true;
                }
            }
        }
        due.sort_unstable();
        due.dedup();
        for token in due {
            s.drive(token, now);
        }
        s.expire(now);
    }
}

/// What the stream loop keeps from turn to turn.
struct Serving<'a> {
    table: Table,
    /// Which connection a signal's descriptor names.
    by_fd: HashMap<RawFd, usize>,
    timers: Timers,
    buf: ReadBuffer,
    /// Connections whose turn ran out with work left: no signal will come for it.
    again: Vec<usize>,
    shared: &'a Shared,
}

impl Serving<'_> {
    /// Accepts every client waiting while `--max-conns` leaves room, arms each, and serves
    /// what it sent before it was armed (no signal announces that).
    fn accept_all(&mut self, listener: &Listener, signals: &SignalDriven) -> io::Result<()> {
        while let Some(mut conn) = reactor::accept(listener, self.shared)? {
            // Two signals taken in one turn (bytes, then the peer's FIN) drive it once: each
            // turn reads until the socket would block, or the FIN would go unnoticed.
            conn.read_to_empty();
            let fd = conn.as_raw_fd();
            signals.arm(fd)?;
            let token = reactor::insert(&mut self.table, &mut self.timers, conn);
            self.by_fd.insert(fd, token);
            self.drive(token, Instant::now());
        }
        Ok(())
    }

    /// One turn of a connection; closes it when it is done.
    fn drive(&mut self, token: usize, now: Instant) {
        let Some(conn) = self.table.get_mut(token) else {
            return;
        };
        match conn.drive(&mut self.buf, now) {
            Status::Open { again } => {
                self.timers.arm(token, conn);
                if again {
                    self.again.push(token);
                }
            }
            Status::Closed(reason) => {
                self.by_fd.remove(&conn.as_raw_fd());
                close(&mut self.table, token, reason, self.shared);
            }
        }
    }

    /// Closes the connections whose timeout ran out.
    fn expire(&mut self, now: Instant) {
        let (by_fd, shared) = (&mut self.by_fd, self.shared);
        self.timers
            .expire(&mut self.table, now, |table, token, reason| {
                if let Some(conn) = table.get_mut(token) {
                    by_fd.remove(&conn.as_raw_fd());
                }
                close(table, token, reason, shared)
            });
    }
}

/// Datagrams: a signal when datagrams arrive; each is answered until the socket would block.
fn serve_datagrams(
    socket: &DatagramSocket,
    shared: &Shared,
    signals: &SignalDriven,
) -> io::Result<()> {
    signals.arm(socket.as_raw_fd())?;
    let mut buf = ReadBuffer::new(MAX_DATAGRAM);
    let mut ready = Vec::new();
    // Whatever came before the socket was armed is read first.
    let mut readable = true;
    while !Drain::new(shared).stopping() {
        if readable {
            let recv = |buf: &mut [u8]| socket.recv_from(buf);
            datagram::receive_all(recv, &mut buf, |bytes, from| {
                datagram::answer(socket, bytes, &from, shared)
            })?;
        }
        ready.clear();
        signals.wait(None, &mut ready)?;
        readable = ready.iter().any(|r| match *r {
            Ready::Fd(fd) => fd == socket.as_raw_fd(),
            Ready::Overflow => {
                shared.hooks.counters.signal_overflows.fetch_add(1, Relaxed);
                true
            }
        });
    }
    Ok(())
}
