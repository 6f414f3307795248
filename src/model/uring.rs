//! `uring`: io_uring, the asynchronous IO model: accept, receive and send are submissions the
//! kernel completes on its own, and one `io_uring_enter` hands over every submission queued
//! since the last and collects what completed.
//!
//! Where `epoll` asks "which sockets are ready?" and then makes a read and a write call for
//! each, here the reads and writes themselves are queued: for a hundred busy connections, one
//! system call per round instead of two per message. Submissions stay armed where they can: a
//! few accepts wait on the listener, each holding a place under `--max-conns` (so the kernel
//! never accepts past it), and each connection has one multishot receive that fills buffers
//! from a ring the kernel picks from (provided buffers, filled a piece at a time), handed back
//! as soon as the session has the bytes. Completions are handled a batch at a time, and only
//! then does each connection that completed something send: its replies to the whole batch,
//! handed to the ring whole ([`Session::take_pending`]), not copied. A connection whose replies
//! back up past the session's budget has its receive cancelled until they drain:
//! backpressure, as in the other models. Timeouts are a heap of deadlines (as in the reactors)
//! bounding the ring's wait; a connection that runs out is shut down, which ends its
//! submissions. Each io_uring feature can be turned off (`--uring`, [`UringFeature`]).

use super::datagram;
use super::reactor::{self, Drain, Table, Timed, Timers};
use super::UringFeature;
use crate::session::{CloseReason, Session};
use crate::shared::Shared;
use crate::sys::uring::{Completion, Uring};
use crate::transport::{unix_peer_name, DatagramSocket, Listener, Stream, MAX_DATAGRAM};
use std::io;
use std::net::Shutdown;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;
use std::time::Instant;

const WAKER: u64 = u64::MAX - 1;
const CANCEL: u64 = u64::MAX - 2;
/// Submissions the ring holds at once; more are handed to the kernel early.
const ENTRIES: u32 = 1024;
/// Accepts waiting on the listener at once: a burst of connections is taken this many a round.
const ACCEPTS: usize = 16;
/// The accepts' tokens: `ACCEPT + i` for accept slot `i`, where the ring keeps its peer's
/// address.
const ACCEPT: u64 = u64::MAX - 64;

/// The accept slot a token names, if it names one.
fn accept_slot(token: u64) -> Option<usize> {
    token
        .checked_sub(ACCEPT)
        .map(|i| i as usize)
        .filter(|&i| i < ACCEPTS)
}

/// A connection's two kinds of submission, in the low bit of its token.
const RECV: u64 = 0;
const SEND: u64 = 1;

fn token(slot: usize, op: u64) -> u64 {
    (slot as u64) << 1 | op
}

/// One connection: its socket, its session, and its submissions in flight. It closes only
/// when none is, since their completions name its slot.
struct Conn {
    stream: Stream,
    session: Session,
    /// The multishot receive is armed.
    receiving: bool,
    /// A cancel of that receive was asked for.
    cancelling: bool,
    /// A send is in flight (from the slot's send buffer).
    sending: bool,
    /// A short send left the rest of its buffer to send.
    rest: bool,
    /// Among the batch's [`touched`](Serving::touched) connections.
    touched: bool,
    /// Why it will close once its last replies are sent (a bad frame, a failed call).
    closing: Option<CloseReason>,
    /// Its deadline in the [`Timers`], if any.
    armed: Option<Instant>,
}

impl Timed for Conn {
    fn timer(&mut self) -> (&Session, &mut Option<Instant>, u64) {
        (&self.session, &mut self.armed, self.session.peer().id)
    }
}

/// Serves until a stop, then drains.
pub(crate) fn serve(listener: Listener, shared: &Arc<Shared>) -> io::Result<()> {
    let mut ring = Uring::new(ENTRIES, shared.uring)?;
    if let Listener::Datagram(socket) = &listener {
        return serve_datagrams(&mut ring, socket, shared);
    }
    ring.provide_buffers()?;
    listener.set_nonblocking(true)?;
    ring.poll_readable(shared.lifecycle.waker_fd(), WAKER)?;
    let mut s = Serving {
        ring,
        table: Table::default(),
        timers: Timers::default(),
        listener: &listener,
        shared,
        free: (0..ACCEPTS).rev().collect(),
        touched: Vec::new(),
        busy: false,
        accepting: true,
        swept: false,
        cut: false,
    };
    let batched = s.ring.features().is_on(UringFeature::BatchedSends);
    tracing::debug!(features = %s.ring.features(), "uring serving");
    let mut drain = Drain::new(shared);
    let mut done = Vec::new();
    loop {
        if drain.stopping() && s.stop_turn(&drain)? {
            return Ok(());
        }
        while s.accepting && !s.free.is_empty() && shared.hooks.reserve() {
            let i = s.free.pop().expect("not empty");
            s.ring.accept(listener.as_raw_fd(), i, ACCEPT + i as u64)?;
        }
        let full = s.accepting && s.free.len() == ACCEPTS;
        let wait = reactor::wait_time(&s.timers, &drain, full);
        s.ring.submit_and_wait(if s.cut { None } else { wait })?;
        done.clear();
        s.ring.completions(&mut done);
        let now = Instant::now(); // once a batch of completions, not twice a message
        for c in &done {
            match accept_slot(c.token) {
                Some(i) => s.accept_completed(i, c)?,
                None => s.conn_completed(c, now),
            }
            if !batched {
                s.settle()?;
            }
        }
        s.settle()?;
        s.expire(now);
        if s.table.is_empty() && std::mem::take(&mut s.busy) {
            s.ring.release_memory(); // the burst is over: its memory goes back
        }
    }
}

/// What one ring serving a stream listener keeps from turn to turn.
struct Serving<'a> {
    ring: Uring,
    table: Table<Conn>,
    timers: Timers,
    listener: &'a Listener,
    shared: &'a Arc<Shared>,
    /// The accept slots not in flight; each in flight holds a place under --max-conns.
    free: Vec<usize>,
    /// The connections that completed something this batch, to [`settle`](Serving::settle).
    touched: Vec<usize>,
    /// Connections were served since the memory was last given back.
    busy: bool,
    accepting: bool,
    /// The listener's backlog was taken once the accepts were cancelled ([`sweep`]).
    swept: bool,
    /// The drain ran out: every connection was shut down, and closes as `shutdown`.
    cut: bool,
}

impl Serving<'_> {
    /// A turn of the stop: the accepts cancelled, then the backlog swept, then (once the
    /// drain runs out) every connection shut down. True once nothing is left to serve.
    fn stop_turn(&mut self, drain: &Drain) -> io::Result<bool> {
        let accepts = ACCEPTS - self.free.len();
        if self.accepting {
            self.accepting = false;
            self.ring.cancel_fd(self.listener.as_raw_fd(), CANCEL)?;
        }
        if accepts == 0 && !self.swept {
            self.swept = true;
            let (ring, table, timers) = (&mut self.ring, &mut self.table, &mut self.timers);
            sweep(ring, table, timers, self.listener, self.shared)?;
        }
        if self.table.is_empty() && accepts == 0 {
            return Ok(true);
        }
        if drain.expired() && !self.cut {
            // Ends every receive with end of stream; each connection then closes.
            self.cut = true;
            for (_, conn) in self.table.iter() {
                let _ = conn.stream.shutdown(Shutdown::Both);
            }
        }
        Ok(false)
    }

    /// Accept slot `i` completed: a connection to serve, or a place to give back.
    fn accept_completed(&mut self, i: usize, c: &Completion) -> io::Result<()> {
        self.free.push(i);
        match c.io() {
            Ok(_) => {
                let fd = Uring::accepted_fd(c.result);
                let (stream, addr) = stream_of(self.listener, fd, self.ring.accepted_from(i));
                let (ring, table, timers) = (&mut self.ring, &mut self.table, &mut self.timers);
                accepted(ring, table, timers, stream, addr, self.shared)
            }
            Err(e) => {
                self.shared.hooks.release();
                if e.raw_os_error() != Some(libc::ECANCELED) {
                    self.shared.hooks.accept_failed(e)?;
                }
                Ok(())
            }
        }
    }

    /// A connection's receive or send completed: the session takes it. What the connection
    /// does next waits for the end of the batch ([`settle`](Serving::settle)), so that the
    /// replies to every receive of the batch leave in one send.
    fn conn_completed(&mut self, c: &Completion, now: Instant) {
        if matches!(c.token, WAKER | CANCEL) {
            return; // the stop is seen at the top of the loop
        }
        let (slot, op) = ((c.token >> 1) as usize, c.token & 1);
        // A short send leaves the rest of its buffer to go before anything newer.
        let rest = op == SEND && self.ring.sent(slot, c.io().ok());
        self.busy = true;
        if let Some(conn) = self.table.get_mut(slot) {
            completed(&mut self.ring, conn, op, c, now);
            conn.rest |= rest;
            if !conn.touched {
                conn.touched = true;
                self.touched.push(slot);
            }
        }
        if let Some(bid) = c.buffer {
            // The session has copied the bytes.
            self.ring.give_back(bid, c.io().unwrap_or(0), c.buffer_more);
        }
    }

    /// The end of a batch: each connection that completed something submits what it needs
    /// next, or closes.
    fn settle(&mut self) -> io::Result<()> {
        for slot in std::mem::take(&mut self.touched) {
            let Some(conn) = self.table.get_mut(slot) else {
                continue;
            };
            conn.touched = false;
            match next(&mut self.ring, conn, slot)? {
                Some(reason) => {
                    let conn = self.table.remove(slot).expect("present above");
                    self.ring.unregister(slot); // the ring's table holds the socket open too
                    let reason = if self.cut {
                        CloseReason::Shutdown
                    } else {
                        reason
                    };
                    self.shared.hooks.closed(&conn.session, &reason);
                }
                None if conn.closing.is_none() => self.timers.arm(slot, conn),
                None => {}
            }
        }
        Ok(())
    }

    /// Out of time: shut down, so its receive ends and it closes as any other would.
    fn expire(&mut self, now: Instant) {
        let (shared, ring) = (self.shared, &mut self.ring);
        self.timers
            .expire(&mut self.table, now, |table, slot, reason| {
                let Some(conn) = table.get_mut(slot) else {
                    return;
                };
                conn.session.discard_pending();
                conn.closing.get_or_insert(reason.clone());
                let _ = conn.stream.shutdown(Shutdown::Both);
                if !conn.receiving && !conn.sending {
                    let conn = table.remove(slot).expect("present above");
                    ring.unregister(slot);
                    shared.hooks.closed(&conn.session, &reason);
                }
            });
    }
}

/// Takes what waits in the listener's backlog once this ring's accepts are cancelled (a reload
/// hands the listener to a successor). The kernel wakes one accept per new connection
/// (io_uring accepts wait exclusively); one woken here just as it was cancelled leaves its
/// connection queued with no accept of the successor's woken for it, until another connection
/// comes. So this server serves it, as it serves the rest of its drain.
fn sweep(
    ring: &mut Uring,
    table: &mut Table<Conn>,
    timers: &mut Timers,
    listener: &Listener,
    shared: &Shared,
) -> io::Result<()> {
    while let Some((stream, addr)) = reactor::take_waiting(listener, shared)? {
        accepted(ring, table, timers, stream, addr, shared)?;
    }
    Ok(())
}

/// The stream an accept completed with, and its peer's name: `from`, the address the accept
/// wrote (still right for a peer that has reset since, which `getpeername` no longer names).
fn stream_of(
    listener: &Listener,
    fd: OwnedFd,
    from: Option<socket2::SockAddr>,
) -> (Stream, String) {
    match listener {
        Listener::Tcp(_) => {
            let s = std::net::TcpStream::from(fd);
            let addr = from
                .and_then(|a| a.as_socket())
                .or_else(|| s.peer_addr().ok());
            let name = addr.map_or_else(|| "tcp://".into(), |a| format!("tcp://{a}"));
            (Stream::Tcp(s), name)
        }
        _ => {
            let s = std::os::unix::net::UnixStream::from(fd);
            let addr = s.peer_addr().ok();
            let name = unix_peer_name(addr.as_ref().and_then(|a| a.as_pathname()));
            (Stream::Unix(s), name)
        }
    }
}

/// A new connection: into the table, its receive armed.
fn accepted(
    ring: &mut Uring,
    table: &mut Table<Conn>,
    timers: &mut Timers,
    stream: Stream,
    addr: String,
    shared: &Shared,
) -> io::Result<()> {
    if let Stream::Tcp(s) = &stream {
        let _ = s.set_nodelay(shared.nodelay);
    }
    let fd = stream.as_raw_fd();
    let Some(peer) = shared.hooks.admit(addr, Some(fd)) else {
        return Ok(()); // refused: dropping the stream closes it unread
    };
    let session = shared.hooks.session(peer);
    let allowance = session.read_allowance();
    let slot = table.insert(Conn {
        session,
        receiving: true,
        cancelling: false,
        sending: false,
        rest: false,
        touched: false,
        closing: None,
        armed: None,
        stream,
    });
    if let Some(conn) = table.get_mut(slot) {
        timers.arm(slot, conn);
    }
    ring.register(slot, fd);
    ring.recv_multi(slot, fd, token(slot, RECV), allowance)
}

/// Feeds a completed receive or send into the connection's session, as of `now`.
fn completed(ring: &mut Uring, conn: &mut Conn, op: u64, c: &Completion, now: Instant) {
    let outcome = if op == RECV {
        if !c.more {
            conn.receiving = false;
            conn.cancelling = false;
        }
        match (c.io(), c.buffer) {
            // Closing for a reason of its own (a timeout, a bad frame): what comes in now, and
            // the end of stream its shutdown causes, are not answered, as in every model.
            _ if conn.closing.is_some() => Ok(()),
            (Ok(0), _) => conn.session.receive_eof(),
            (Ok(n), Some(bid)) => {
                conn.session.offer_output(|| ring.spare()); // replies into a sent buffer
                conn.session.receive_at(ring.buffer(bid, n), now)
            }
            (Ok(_), None) => Ok(()),
            // Out of provided buffers, or our own cancel: armed again when it may read.
            (Err(e), _)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::ENOBUFS) | Some(libc::ECANCELED)
                ) =>
            {
                Ok(())
            }
            (Err(e), _) => Err(CloseReason::from_io(&e)),
        }
    } else {
        conn.sending = false;
        c.io()
            .map(|n| conn.session.advance_at(n, now))
            .map_err(|e| CloseReason::from_io(&e))
    };
    if let Err(reason) = outcome {
        if c.result < 0 {
            conn.session.discard_pending(); // the socket failed: nothing more goes out
        }
        conn.closing.get_or_insert(reason);
    }
}

/// Queues what the connection needs next: the rest of a short send or a send of its replies
/// (handed to the ring whole, not copied), its receive armed again (or cancelled, past the
/// output budget); returns why to close it once nothing is in flight.
fn next(ring: &mut Uring, conn: &mut Conn, slot: usize) -> io::Result<Option<CloseReason>> {
    let fd = conn.stream.as_raw_fd();
    if std::mem::take(&mut conn.rest) {
        ring.send_rest(slot, fd, token(slot, SEND))?;
        conn.sending = true;
    } else if !conn.sending {
        let replies = conn.session.take_pending();
        if replies.is_empty() {
            ring.keep_spare(replies); // a buffer offered and not written to
        } else {
            let tcp = matches!(conn.stream, Stream::Tcp(_));
            ring.send(slot, fd, replies, token(slot, SEND), tcp)?;
            conn.sending = true;
        }
    }
    let ending = conn
        .closing
        .clone()
        .or_else(|| conn.session.finished().cloned());
    let wants_read = ending.is_none() && conn.session.wants_read();
    if conn.receiving && !wants_read && !conn.cancelling {
        ring.cancel(token(slot, RECV), CANCEL)?;
        conn.cancelling = true;
    } else if !conn.receiving && wants_read && conn.session.may_resume_reading() {
        ring.recv_multi(slot, fd, token(slot, RECV), conn.session.read_allowance())?;
        conn.receiving = true;
    }
    Ok(ending.filter(|_| !conn.receiving && !conn.sending))
}

/// Datagrams: one receive in flight on the socket; each datagram is answered as it completes
/// and the receive queued again.
fn serve_datagrams(ring: &mut Uring, socket: &DatagramSocket, shared: &Shared) -> io::Result<()> {
    const SOCKET: u64 = 0;
    ring.poll_readable(shared.lifecycle.waker_fd(), WAKER)?;
    ring.recv_msg(0, MAX_DATAGRAM, socket.as_raw_fd(), SOCKET)?;
    let mut done = Vec::new();
    let mut drain = Drain::new(shared);
    while !drain.stopping() {
        ring.submit_and_wait(None)?;
        done.clear();
        ring.completions(&mut done);
        for c in done.iter().filter(|c| c.token == SOCKET) {
            match c.io() {
                Ok(n) if n > MAX_DATAGRAM => {
                    tracing::warn!(bytes = n, "datagram too large; dropped")
                }
                Ok(n) => {
                    datagram::answer(socket, ring.received(0, n), &ring.received_from(0), shared)
                }
                Err(e) => tracing::debug!(error = %e, "datagram receive failed"),
            }
            ring.recv_msg(0, MAX_DATAGRAM, socket.as_raw_fd(), SOCKET)?;
        }
    }
    Ok(())
}
