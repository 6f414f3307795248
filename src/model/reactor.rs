//! What the single-threaded reactors share (`nonblocking`, `select`, `poll`, `epoll`): the
//! connection table, driving one connection's non-blocking reads and writes, accepting, closing,
//! the timeouts, and the drain after a stop. Each reactor file only says how it learns which
//! socket is ready.

use crate::hooks::PLACE_RECHECK;
use crate::session::{CloseReason, Session};
use crate::shared::Shared;
use crate::transport::{Listener, Stream};
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io::{self, ErrorKind, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::time::{Duration, Instant};

/// Bytes asked of each `read`; one buffer serves every connection of a reactor.
pub(super) const READ_SIZE: usize = 64 * 1024;

/// Reads and writes one connection gets per turn, so a peer that sends without pause cannot
/// starve the others.
const TURN: usize = 16;

/// One connection of a reactor: its socket and session (which knows who it is with).
pub(super) struct Conn {
    pub(super) stream: Stream,
    session: Session,
    /// Read until the socket would block, not only until a short read: the poller said the
    /// peer closed or reset (no new readiness will come to report it), or readiness comes as
    /// signals, which say that something happened, not what is left.
    read_to_empty: bool,
    /// The deadline this connection has in the [`Timers`], if any.
    armed: Option<Instant>,
}

/// Where a connection stands after its turn.
pub(super) enum Status {
    /// Still open. `again`: its turn ended with work left (bytes may wait in the socket), so an
    /// edge-triggered reactor must drive it again without waiting for a new event.
    Open { again: bool },
    /// Done: close it for this reason.
    Closed(CloseReason),
}

impl Conn {
    /// Reads what the socket holds and writes what the session queued, until both would block,
    /// the session ends, or the turn is used up.
    ///
    /// A read that fills less than the buffer emptied the socket, so it is not followed by a
    /// read that would only say EAGAIN: one read and one write per message, as in C.
    ///
    /// `now` is when the reactor's turn began: the clock is read once a turn, as the sessions'
    /// timeouts (seconds) need no finer time, rather than twice a message.
    pub(super) fn drive(&mut self, buf: &mut [u8], now: Instant) -> Status {
        for _ in 0..TURN {
            // The socket may hold more: the last read filled the buffer, or backpressure
            // stopped us reading.
            let mut unread = false;
            // No more than the session's output budget has room for: a peer that does not
            // read its replies is read no further than the budget.
            let allowance = self.session.read_allowance().min(buf.len());
            if allowance > 0 {
                let received = match (&self.stream).read(&mut buf[..allowance]) {
                    Ok(0) => self.session.receive_eof(),
                    Ok(n) => {
                        unread = n == allowance || self.read_to_empty;
                        self.session.receive_at(&buf[..n], now)
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => Ok(()),
                    Err(e) if e.kind() == ErrorKind::Interrupted => {
                        unread = true;
                        Ok(())
                    }
                    Err(e) => return Status::Closed(CloseReason::from_io(&e)),
                };
                if let Err(reason) = received {
                    let _ = self.write_pending(now); // replies queued before the bad frame, best effort
                    return Status::Closed(reason);
                }
            } else if self.session.finished().is_none() {
                unread = true;
            }
            if let Err(e) = self.write_pending(now) {
                return Status::Closed(CloseReason::from_io(&e));
            }
            if let Some(reason) = self.session.finished() {
                return Status::Closed(reason.clone());
            }
            if !(unread && self.session.wants_read()) {
                return Status::Open { again: false };
            }
        }
        Status::Open { again: true }
    }

    /// Writes queued replies until they are all out or the socket's buffer is full.
    fn write_pending(&mut self, now: Instant) -> io::Result<()> {
        while !self.session.pending().is_empty() {
            match (&self.stream).write(self.session.pending()) {
                Ok(n) => self.session.advance_at(n, now),
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// From now on each turn reads until the socket would block (see `read_to_empty`): the
    /// poller reported the peer's close, or readiness comes as signals.
    pub(super) fn read_to_empty(&mut self) {
        self.read_to_empty = true;
    }

    /// Bytes moved so far, in and out: a change means the connection made progress.
    pub(super) fn activity(&self) -> u64 {
        let stats = self.session.stats();
        stats.bytes_in + stats.bytes_out
    }

    /// True while the session takes input: a level-triggered reactor asks for readability.
    pub(super) fn wants_read(&self) -> bool {
        self.session.wants_read()
    }

    /// True while replies wait: a level-triggered reactor asks for writability.
    pub(super) fn wants_write(&self) -> bool {
        !self.session.pending().is_empty()
    }

    /// Logs the close and counts it; dropping the connection closes the socket.
    pub(super) fn close(self, reason: &CloseReason, shared: &Shared) {
        shared.hooks.closed(&self.session, reason);
    }
}

impl Timed for Conn {
    fn timer(&mut self) -> (&Session, &mut Option<Instant>, u64) {
        (&self.session, &mut self.armed, self.session.peer().id)
    }
}

impl AsRawFd for Conn {
    fn as_raw_fd(&self) -> RawFd {
        self.stream.as_raw_fd()
    }
}

/// A reactor's connections, indexed by a small number (the token a poller hands back). Freed
/// slots are reused, so the table stays as long as the most connections open at once.
pub(super) struct Table<T = Conn> {
    slots: Vec<Option<T>>,
    free: Vec<usize>,
    len: usize,
}

impl<T> Default for Table<T> {
    fn default() -> Self {
        Table {
            slots: Vec::new(),
            free: Vec::new(),
            len: 0,
        }
    }
}

impl<T> Table<T> {
    pub(super) fn insert(&mut self, conn: T) -> usize {
        self.len += 1;
        match self.free.pop() {
            Some(i) => {
                self.slots[i] = Some(conn);
                i
            }
            None => {
                self.slots.push(Some(conn));
                self.slots.len() - 1
            }
        }
    }

    pub(super) fn get_mut(&mut self, token: usize) -> Option<&mut T> {
        self.slots.get_mut(token).and_then(Option::as_mut)
    }

    pub(super) fn remove(&mut self, token: usize) -> Option<T> {
        let conn = self.slots.get_mut(token)?.take()?;
        self.free.push(token);
        self.len -= 1;
        Some(conn)
    }

    pub(super) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The tokens in use.
    pub(super) fn tokens(&self) -> Vec<usize> {
        (0..self.slots.len())
            .filter(|&i| self.slots[i].is_some())
            .collect()
    }

    /// Every open connection with its token.
    pub(super) fn iter(&self) -> impl Iterator<Item = (usize, &T)> {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(i, c)| c.as_ref().map(|c| (i, c)))
    }
}

/// Takes one connection from a non-blocking listener's backlog, under a `--max-conns` place,
/// as a non-blocking stream with its peer's name. `Ok(None)`: nothing is waiting, or no room
/// (also while accepting pauses after running out of files). One that reset before it was
/// taken costs only itself: the next is taken.
pub(super) fn take_waiting(
    listener: &Listener,
    shared: &Shared,
) -> io::Result<Option<(Stream, String)>> {
    loop {
        match shared.hooks.accept_with_place(|| listener.accept()) {
            Ok(Some((stream, addr))) => {
                stream.set_nonblocking(true)?;
                return Ok(Some((stream, addr)));
            }
            Ok(None) => return Ok(None),
            Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(None),
            Err(e) => shared.hooks.accept_failed(e)?,
        }
    }
}

/// Accepts one connection if one is waiting and `--max-conns` leaves room, non-blocking and
/// ready for a reactor. `Ok(None)`: nothing is waiting, or no room.
pub(super) fn accept(listener: &Listener, shared: &Shared) -> io::Result<Option<Conn>> {
    loop {
        let Some((stream, addr)) = take_waiting(listener, shared)? else {
            return Ok(None);
        };
        // Refused: dropping the stream closes it unread; the next one waiting is taken.
        let Some(peer) = shared.hooks.admit(addr, Some(stream.as_raw_fd())) else {
            continue;
        };
        let _ = stream.set_nodelay(shared.nodelay);
        return Ok(Some(Conn {
            stream,
            session: shared.hooks.session(peer),
            read_to_empty: false,
            armed: None,
        }));
    }
}

/// A connection a reactor times: its session, the deadline armed for it, and its id (tokens
/// are reused; ids are not).
pub(super) trait Timed {
    fn timer(&mut self) -> (&Session, &mut Option<Instant>, u64);
}

/// The connections' deadlines, earliest first: a reactor waits no longer than the first, and
/// looks only at the connections whose deadline came, never at every connection each turn.
///
/// Each connection has one live entry, armed at its session's deadline. The deadline moves
/// later as bytes move, and the entry is not touched for that: when it comes due, the
/// connection is closed if the session says a timeout ran out, else armed again at the new
/// deadline. Only a deadline that moves earlier (a frame begun, replies waiting) adds an
/// entry; the old one is skipped when it comes, as are those of closed connections.
#[derive(Default)]
pub(super) struct Timers {
    heap: BinaryHeap<Reverse<(Instant, usize, u64)>>,
}

impl Timers {
    /// After a connection's turn (or its accept): arms its deadline if it is earlier than the
    /// one armed.
    pub(super) fn arm<C: Timed>(&mut self, token: usize, conn: &mut C) {
        let (session, armed, id) = conn.timer();
        if let Some(deadline) = session.deadline() {
            if armed.is_none_or(|a| deadline < a) {
                *armed = Some(deadline);
                self.heap.push(Reverse((deadline, token, id)));
            }
        }
    }

    /// How long a reactor may wait: until the first deadline, or `other` if sooner.
    pub(super) fn wait(&self, other: Option<Duration>) -> Option<Duration> {
        let first = self
            .heap
            .peek()
            .map(|Reverse((at, ..))| at.saturating_duration_since(Instant::now()));
        match (first, other) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Hands every connection whose timeout ran out by `now` (the turn's clock reading) to
    /// `close`, with the reason; arms the others whose entry came due at their later deadline.
    pub(super) fn expire<C: Timed>(
        &mut self,
        table: &mut Table<C>,
        now: Instant,
        mut close: impl FnMut(&mut Table<C>, usize, CloseReason),
    ) {
        while let Some(&Reverse((at, token, id))) = self.heap.peek() {
            if at > now {
                break;
            }
            self.heap.pop();
            let Some(conn) = table.get_mut(token) else {
                continue;
            };
            let (session, armed, conn_id) = conn.timer();
            if conn_id != id || *armed != Some(at) {
                continue; // a closed connection's, or one armed again earlier
            }
            *armed = None;
            match session.expired(now) {
                Some(reason) => close(table, token, reason),
                None => self.arm(token, conn),
            }
        }
        // Entries of closed connections wait for their time; many short connections would
        // pile them up, so past twice the live ones the heap keeps only those.
        if self.heap.len() > 2 * table.len + 64 {
            let live =
                std::mem::take(&mut self.heap)
                    .into_iter()
                    .filter(|Reverse((at, token, id))| {
                        table.get_mut(*token).is_some_and(|c| {
                            let (_, armed, conn_id) = c.timer();
                            conn_id == *id && *armed == Some(*at)
                        })
                    });
            self.heap = live.collect();
        }
    }
}

/// How long a reactor waits for events: no longer than its timers and drain allow, and, when
/// `--max-conns` are open and it stopped watching its listener, no longer than it takes to
/// look for a free place again.
pub(super) fn wait_time(timers: &Timers, drain: &Drain, full: bool) -> Option<Duration> {
    let wait = timers.wait(drain.timeout());
    if full {
        Some(wait.map_or(PLACE_RECHECK, |w| w.min(PLACE_RECHECK)))
    } else {
        wait
    }
}

/// Puts a new connection in the table, its first deadline armed; returns its token.
pub(super) fn insert(table: &mut Table, timers: &mut Timers, conn: Conn) -> usize {
    let token = table.insert(conn);
    if let Some(conn) = table.get_mut(token) {
        timers.arm(token, conn);
    }
    token
}

/// Closes the connection at `token`, for `reason`.
pub(super) fn close(table: &mut Table, token: usize, reason: CloseReason, shared: &Shared) {
    if let Some(conn) = table.remove(token) {
        conn.close(&reason, shared);
    }
}

/// A reactor's stop: once asked, it stops accepting, serves the open connections until they
/// close or the drain time is up, then cuts the rest.
pub(super) struct Drain<'a> {
    shared: &'a Shared,
    deadline: Option<Instant>,
}

impl<'a> Drain<'a> {
    pub(super) fn new(shared: &'a Shared) -> Self {
        Drain {
            shared,
            deadline: None,
        }
    }

    /// True once a stop was asked for; notes the deadline the first time (and again after a
    /// second stop, which moves it to now).
    pub(super) fn stopping(&mut self) -> bool {
        self.shared.lifecycle.take_signals(); // a prefork worker's SIGTERM
        if self.shared.lifecycle.is_stopping() {
            self.deadline = self.shared.lifecycle.deadline();
        }
        self.deadline.is_some()
    }

    /// How long a reactor may wait for events: forever while serving, until the deadline while
    /// draining.
    pub(super) fn timeout(&self) -> Option<Duration> {
        self.deadline
            .map(|d| d.saturating_duration_since(Instant::now()))
    }

    /// True when the drain time is up.
    pub(super) fn expired(&self) -> bool {
        self.deadline.is_some_and(|d| Instant::now() >= d)
    }

    /// Closes every connection still open, as cut by the shutdown.
    pub(super) fn cut(&self, table: &mut Table) {
        for token in table.tokens() {
            if let Some(conn) = table.remove(token) {
                conn.close(&CloseReason::Shutdown, self.shared);
            }
        }
    }
}
