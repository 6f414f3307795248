//! `uring`: io_uring, the asynchronous IO model: accept, receive and send are submissions the
//! kernel completes on its own, and one `io_uring_enter` hands over every submission queued
//! since the last and collects what completed.
//!
//! Where `epoll` asks "which sockets are ready?" and then makes a read and a write call for
//! each, here the reads and writes themselves are queued: for a hundred busy connections, one
//! system call per round instead of two per message. One multishot accept stays armed for
//! every new connection. Each connection alternates one receive and the sends of its replies,
//! so a peer that does not read is not read from either (backpressure for free).

use super::datagram;
use super::reactor::{Drain, Table};
use crate::server::Shared;
use crate::service::Peer;
use crate::session::{CloseReason, Session};
use crate::sys::uring::{Completion, Uring};
use crate::transport::{unix_peer_name, DatagramSocket, Listener, Stream, MAX_DATAGRAM};
use std::io;
use std::net::Shutdown;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;
use std::time::Instant;

const ACCEPT: u64 = u64::MAX;
const WAKER: u64 = u64::MAX - 1;
const CANCEL: u64 = u64::MAX - 2;
/// Submissions the ring holds at once; more are handed to the kernel early.
const ENTRIES: u32 = 1024;

/// A connection's two kinds of submission, in the low bit of its token.
const RECV: u64 = 0;
const SEND: u64 = 1;

fn token(slot: usize, op: u64) -> u64 {
    (slot as u64) << 1 | op
}

/// One connection: its socket, session, and whether a submission on it is in flight (then its
/// slot's buffers are the kernel's and it may not close yet).
struct Conn {
    stream: Stream,
    session: Session,
    peer: Peer,
    opened: Instant,
    busy: bool,
    /// Why it will close once its last replies are sent (a bad frame, a failed call).
    closing: Option<CloseReason>,
}

/// Serves until a stop, then drains.
pub(crate) fn serve(listener: Listener, shared: &Arc<Shared>) -> io::Result<()> {
    let mut ring = Uring::new(ENTRIES)?;
    if let Listener::Datagram(socket) = &listener {
        return serve_datagrams(&mut ring, socket, shared);
    }
    listener.set_nonblocking(true)?;
    ring.accept_multi(listener.as_raw_fd(), ACCEPT)?;
    ring.poll_readable(shared.lifecycle.waker_fd(), WAKER)?;
    let mut table: Table<Conn> = Table::default();
    let mut done = Vec::new();
    let mut drain = Drain::new(shared);
    let (mut accepting, mut cut) = (true, false);
    loop {
        if drain.stopping() {
            if accepting {
                accepting = false;
                ring.cancel(ACCEPT, CANCEL)?;
            }
            if table.is_empty() {
                return Ok(());
            }
            if drain.expired() && !cut {
                // Wakes every pending receive with end of stream; each connection then closes.
                cut = true;
                for (_, conn) in table.iter() {
                    let _ = conn.stream.shutdown(Shutdown::Both);
                }
            }
        }
        ring.submit_and_wait(if cut { None } else { drain.timeout() })?;
        done.clear();
        ring.completions(&mut done);
        for c in &done {
            match c.token {
                ACCEPT => {
                    match c.io() {
                        Ok(_) => accepted(
                            &mut ring,
                            &mut table,
                            &listener,
                            Uring::accepted_fd(c.result),
                            shared,
                        )?,
                        Err(e) => super::blocking::accept_failed(e)?,
                    }
                    if !c.more && accepting {
                        ring.accept_multi(listener.as_raw_fd(), ACCEPT)?; // the kernel ended it
                    }
                }
                WAKER | CANCEL => {} // the stop is seen at the top of the loop
                token => completed(&mut ring, &mut table, token, c, cut, shared)?,
            }
        }
    }
}

/// A new connection: into the table, and its first receive queued.
fn accepted(
    ring: &mut Uring,
    table: &mut Table<Conn>,
    listener: &Listener,
    fd: OwnedFd,
    shared: &Shared,
) -> io::Result<()> {
    let (stream, addr) = match listener {
        Listener::Tcp(_) => {
            let s = std::net::TcpStream::from(fd);
            let _ = s.set_nodelay(shared.nodelay);
            let addr = s
                .peer_addr()
                .map_or_else(|_| "tcp://".into(), |a| format!("tcp://{a}"));
            (Stream::Tcp(s), addr)
        }
        _ => {
            let s = std::os::unix::net::UnixStream::from(fd);
            let addr = s.peer_addr().ok();
            (
                Stream::Unix(s),
                unix_peer_name(addr.as_ref().and_then(|a| a.as_pathname())),
            )
        }
    };
    let peer = shared.accepted(addr);
    let conn = Conn {
        session: shared.session(&peer),
        peer,
        opened: Instant::now(),
        busy: true,
        closing: None,
        stream,
    };
    let fd = conn.stream.as_raw_fd();
    let slot = table.insert(conn);
    ring.recv(slot, fd, token(slot, RECV))
}

/// A connection's receive or send completed: feed the session, then queue what comes next.
fn completed(
    ring: &mut Uring,
    table: &mut Table<Conn>,
    token: u64,
    c: &Completion,
    cut: bool,
    shared: &Shared,
) -> io::Result<()> {
    let slot = (token >> 1) as usize;
    let Some(conn) = table.get_mut(slot) else {
        return Ok(());
    };
    conn.busy = false;
    let outcome = match (token & 1, c.io()) {
        (_, Err(e)) => Err(CloseReason::from_io(&e)),
        (RECV, Ok(0)) => conn.session.receive_eof(),
        (RECV, Ok(n)) => conn.session.receive(ring.received(slot, n)),
        (_, Ok(n)) => {
            conn.session.advance(n);
            Ok(())
        }
    };
    if let Err(reason) = outcome {
        conn.closing.get_or_insert(reason);
    }
    // Next: send what is queued (even after a bad frame, not after a failed call), else close
    // or receive again.
    let fd = conn.stream.as_raw_fd();
    if !conn.session.pending().is_empty() && c.result >= 0 {
        ring.send(slot, fd, conn.session.pending(), self::token(slot, SEND))?;
        conn.busy = true;
        return Ok(());
    }
    match conn
        .closing
        .clone()
        .or_else(|| conn.session.finished().cloned())
    {
        None => {
            ring.recv(slot, fd, self::token(slot, RECV))?;
            conn.busy = true;
        }
        Some(reason) => {
            let conn = table.remove(slot).expect("present above");
            let reason = if cut { CloseReason::Shutdown } else { reason };
            conn_close(conn, &reason, shared);
        }
    }
    Ok(())
}

fn conn_close(conn: Conn, reason: &CloseReason, shared: &Shared) {
    shared.closed(&conn.peer, conn.session.stats(), reason, conn.opened);
}

/// Datagrams: one receive in flight on the socket; each datagram is answered as it completes
/// and the receive queued again.
fn serve_datagrams(ring: &mut Uring, socket: &DatagramSocket, shared: &Shared) -> io::Result<()> {
    const SOCKET: u64 = 0;
    ring.poll_readable(shared.lifecycle.waker_fd(), WAKER)?;
    ring.recv_msg(0, socket.as_raw_fd(), SOCKET)?;
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
            ring.recv_msg(0, socket.as_raw_fd(), SOCKET)?;
        }
    }
    Ok(())
}
