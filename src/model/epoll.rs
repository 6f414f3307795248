//! `epoll`: an edge-triggered epoll(7) reactor, one thread per `--workers` (default 1).
//!
//! The multiplexing lesson at its Linux best. Each connection is registered once, for reading
//! and writing, edge-triggered: the kernel reports a socket when it *becomes* ready, so the
//! reactor never re-registers interest as it switches between reading and writing (no
//! `epoll_ctl` per message), and a connection whose turn ended with bytes left is driven again
//! from a list of its own rather than waiting for an edge that will not come.
//!
//! Each reactor runs on a thread of its own, which `switchboard serve` gives a file table of its
//! own (`unshare(CLONE_FILES)`, `ServerBuilder::own_fd_tables`): the connections it
//! accepts are its alone, and Linux skips the reference count it otherwise takes on the file at
//! every `recv` and `send` of a multi-threaded process, as a single-threaded C server gets for
//! free.
//!
//! With several workers, each runs this loop with its own epoll over the one shared listener,
//! registered with `EPOLLEXCLUSIVE` so a new connection wakes one worker, not all. A shared
//! listener, rather than an `SO_REUSEPORT` socket each, serves Unix sockets too and loses no
//! queued connection if a worker stops.

use super::datagram;
use super::reactor::{self, Drain, Status, Table, Timers, READ_SIZE};
use super::ReadBuffer;
use crate::shared::Shared;
use crate::sys::{Epoll, Events, Interest, Trigger};
use crate::transport::{DatagramSocket, Listener, MAX_DATAGRAM};
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;
use std::thread;
use std::time::Instant;

const LISTENER: u64 = u64::MAX;
const WAKER: u64 = u64::MAX - 1;
/// Connections accepted per readiness of the listener: with several workers, a few each keeps
/// one worker from taking every connection of a burst.
const ACCEPT_BATCH: usize = 8;

/// Serves until a stop on `--workers` reactor threads, then drains.
pub(crate) fn serve(listener: Listener, shared: &Arc<Shared>) -> io::Result<()> {
    listener.set_nonblocking(true)?;
    let listener = Arc::new(listener);
    let workers = shared.workers.unwrap_or(1).max(1);
    // Every reactor on a thread of its own, even a single one: each takes a file table of its
    // own (see `run`), which must not outlive the server on the caller's thread.
    let reactors: Vec<_> = (0..workers)
        .map(|_| {
            let (listener, shared) = (listener.clone(), shared.clone());
            thread::Builder::new()
                .name("epoll".into())
                .spawn(move || run(&listener, &shared, workers > 1))
        })
        .collect::<io::Result<_>>()?;
    let mut result = Ok(());
    for reactor in reactors {
        let ended = reactor
            .join()
            .map_err(|_| io::Error::other("an epoll worker panicked"))
            .and_then(|r| r);
        result = result.and(ended);
    }
    result
}

/// A worker's epoll, watching the listening (or datagram) socket `fd` and the stop waker.
fn setup(fd: RawFd, shared: &Shared, exclusive: bool) -> io::Result<Epoll> {
    let epoll = Epoll::new()?;
    watch_listener(&epoll, fd, exclusive)?;
    epoll.add(
        shared.lifecycle.waker_fd(),
        Interest::READ,
        Trigger::Level,
        WAKER,
    )?;
    Ok(epoll)
}

/// Watches the listening socket: level-triggered, and `exclusive` when workers share it, so
/// one wakes per event.
fn watch_listener(epoll: &Epoll, fd: RawFd, exclusive: bool) -> io::Result<()> {
    let trigger = if exclusive {
        Trigger::Exclusive
    } else {
        Trigger::Level
    };
    epoll.add(fd, Interest::READ, trigger, LISTENER)
}

/// One reactor: setup, then accept, readable/writable (one drive each, edge-triggered), close.
pub(super) fn run(listener: &Listener, shared: &Shared, exclusive: bool) -> io::Result<()> {
    if let Listener::Datagram(socket) = listener {
        return run_datagrams(socket, shared, exclusive);
    }
    if shared.own_fd_tables {
        crate::sys::own_fd_table(); // the connections are this thread's alone
    }
    let epoll = setup(listener.as_raw_fd(), shared, exclusive)?;
    let mut table = Table::default();
    let mut events = Events::with_capacity(1024);
    let mut buf = ReadBuffer::new(READ_SIZE);
    // Connections whose turn ran out: driven again next round, without waiting for an edge.
    let (mut again, mut again_now): (Vec<usize>, Vec<usize>) = (Vec::new(), Vec::new());
    let mut drain = Drain::new(shared);
    let mut timers = Timers::default();
    // Accepting until a stop; listening while `--max-conns` leaves room.
    let (mut accepting, mut listening) = (true, true);
    loop {
        if drain.stopping() {
            if accepting {
                accepting = false;
                stop_watching(&epoll, listener, shared, listening)?;
            }
            if table.is_empty() {
                return Ok(());
            }
            if drain.expired() {
                drain.cut(&mut table);
                return Ok(());
            }
        }
        // Full: the listener stays readable, so it is not watched until a place frees.
        if accepting && listening != shared.hooks.has_room() {
            listening = !listening;
            if listening {
                watch_listener(&epoll, listener.as_raw_fd(), exclusive)?;
            } else {
                epoll.delete(listener.as_raw_fd())?;
            }
        }
        let timeout = if again.is_empty() {
            reactor::wait_time(&timers, &drain, accepting && !listening)
        } else {
            Some(Default::default())
        };
        epoll.wait(&mut events, timeout)?;
        let now = Instant::now();
        let mut drive_now = |table: &mut Table, timers: &mut Timers, token| {
            drive(table, token, &mut buf, now, &mut again, timers, shared)
        };
        // Turns that ran out last round go first, then what the kernel reported.
        for token in std::mem::take(&mut again_now) {
            drive_now(&mut table, &mut timers, token);
        }
        for (token, readiness) in events.iter() {
            match token {
                LISTENER => accept_batch(&epoll, listener, shared, &mut table, &mut timers)?,
                WAKER => {} // the stop is seen at the top of the loop
                token => {
                    // A token whose connection closed this round may name a new one by now:
                    // driving it early costs one read that says EAGAIN.
                    let token = token as usize;
                    if readiness.hung_up {
                        if let Some(conn) = table.get_mut(token) {
                            conn.read_to_empty(); // the peer closed: no new readiness will say so
                        }
                    }
                    drive_now(&mut table, &mut timers, token);
                }
            }
        }
        timers.expire(&mut table, now, |table, token, reason| {
            reactor::close(table, token, reason, shared)
        });
        std::mem::swap(&mut again, &mut again_now);
    }
}

/// A stop: the listener (if it is watched) and the waker, which stays readable, are no
/// longer watched.
fn stop_watching(
    epoll: &Epoll,
    listener: &Listener,
    shared: &Shared,
    listening: bool,
) -> io::Result<()> {
    if listening {
        epoll.delete(listener.as_raw_fd())?;
    }
    epoll.delete(shared.lifecycle.waker_fd())
}

/// Accepts up to [`ACCEPT_BATCH`] connections and watches each, edge-triggered.
fn accept_batch(
    epoll: &Epoll,
    listener: &Listener,
    shared: &Shared,
    table: &mut Table,
    timers: &mut Timers,
) -> io::Result<()> {
    for _ in 0..ACCEPT_BATCH {
        let Some(conn) = reactor::accept(listener, shared)? else {
            break;
        };
        let fd = conn.as_raw_fd();
        let token = reactor::insert(table, timers, conn);
        // Data that came before the registration is reported by it.
        epoll.add(fd, Interest::BOTH, Trigger::Edge, token as u64)?;
    }
    Ok(())
}

/// One turn of a ready connection; closes it when it is done.
fn drive(
    table: &mut Table,
    token: usize,
    buf: &mut [u8],
    now: Instant,
    again: &mut Vec<usize>,
    timers: &mut Timers,
    shared: &Shared,
) {
    let Some(conn) = table.get_mut(token) else {
        return;
    };
    let status = conn.drive(buf, now);
    if let Status::Open { .. } = status {
        timers.arm(token, conn);
    }
    match status {
        Status::Open { again: true } => again.push(token),
        Status::Open { again: false } => {}
        // Closing the fd removes it from the epoll.
        Status::Closed(reason) => reactor::close(table, token, reason, shared),
    }
}

/// One reactor over a datagram socket: each readiness, every waiting datagram is answered.
/// Level-triggered and shared among workers with `EPOLLEXCLUSIVE`, like the listener.
fn run_datagrams(socket: &DatagramSocket, shared: &Shared, exclusive: bool) -> io::Result<()> {
    let epoll = setup(socket.as_raw_fd(), shared, exclusive)?;
    let mut events = Events::with_capacity(2);
    let mut buf = ReadBuffer::new(MAX_DATAGRAM);
    while !Drain::new(shared).stopping() {
        epoll.wait(&mut events, None)?;
        if events.iter().any(|(token, _)| token == LISTENER) {
            let recv = |buf: &mut [u8]| socket.recv_from(buf);
            datagram::receive_all(recv, &mut buf, |bytes, from| {
                datagram::answer(socket, bytes, &from, shared)
            })?;
        }
    }
    Ok(())
}
