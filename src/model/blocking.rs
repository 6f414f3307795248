//! What the blocking models share: the accept loop, and the loop that serves one connection
//! with blocking reads and whole writes.

use super::ReadBuffer;
use crate::hooks::PLACE_RECHECK;
use crate::service::Peer;
use crate::session::{CloseReason, Expiry, Session};
use crate::shared::Shared;
use crate::shutdown::Registration;
use crate::sys;
use crate::transport::{Listener, Stream};
use std::io::{self, ErrorKind, Read, Write};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Bytes asked of each `read`.
const READ_SIZE: usize = 64 * 1024;

/// An accepted connection, registered for the drain before any thread runs it, so a stop
/// never misses a connection that was just handed over.
pub(super) struct Accepted {
    stream: Arc<Stream>,
    peer: Peer,
    registration: Registration,
}

/// Accepts connections until a stop, handing each to `serve`. The listener is non-blocking and
/// polled together with the stop waker, so a stop wakes it at once. While `--max-conns` are
/// open it is not watched: new clients wait in the backlog.
pub(super) fn accept_loop(
    listener: &Listener,
    shared: &Shared,
    mut serve: impl FnMut(Accepted),
) -> io::Result<()> {
    listener.set_nonblocking(true)?;
    while !shared.lifecycle.is_stopping() {
        let room = shared.hooks.has_room();
        let mut fds = [
            sys::pollin(shared.lifecycle.waker_fd()),
            sys::pollin(if room { listener.as_raw_fd() } else { -1 }), // -1: not watched
        ];
        sys::poll(&mut fds, (!room).then_some(PLACE_RECHECK))?;
        if !fds[1].ready() {
            continue;
        }
        match shared.hooks.accept_with_place(|| listener.accept()) {
            Ok(None) => {} // taken by another process meanwhile
            Ok(Some((stream, addr))) => {
                // Linux accept(2) gives a blocking socket whatever the listener's mode.
                let _ = stream.set_nodelay(shared.nodelay);
                let Some(peer) = shared.hooks.admit(addr, Some(stream.as_raw_fd())) else {
                    continue; // refused: dropping the stream closes it unread
                };
                let stream = Arc::new(stream);
                let registration = shared.lifecycle.register(peer.id, &stream);
                serve(Accepted {
                    stream,
                    peer,
                    registration,
                });
            }
            Err(e) => shared.hooks.accept_failed(e)?,
        }
    }
    Ok(())
}

/// Serves one accepted connection to its end, on the calling thread. Logs one line when it
/// closes.
pub(super) fn serve_connection(conn: Accepted, shared: &Shared) {
    let Accepted {
        stream,
        peer,
        registration: _registration,
    } = conn;
    serve_stream(&stream, peer, shared, || shared.lifecycle.is_forced());
}

/// The connection loop: read, answer, write every reply whole, until the peer leaves, errs,
/// times out, or the drain cuts it (`cut` says whether it did). Logs one line when it closes.
///
/// The timeouts are the socket's own: a write that makes no progress for `--send-timeout`
/// fails (`SO_SNDTIMEO`), and a read waits at most until the session's deadline
/// (`SO_RCVTIMEO`, see [`ReadTimeout`]).
pub(super) fn serve_stream(stream: &Stream, peer: Peer, shared: &Shared, cut: impl Fn() -> bool) {
    let _span = tracing::debug_span!("conn", id = peer.id, peer = %peer.addr).entered();
    let mut session = shared.hooks.session(peer);
    let mut buf = ReadBuffer::new(READ_SIZE);
    let _ = stream.set_write_timeout(shared.hooks.timeouts.send);
    let mut read_timeout = ReadTimeout(None);
    let reason = loop {
        if let Some(reason) = session.finished() {
            break reason.clone();
        }
        read_timeout.arm(stream, &session);
        // Every reply was written before this read: the allowance is the whole budget.
        let allowance = session.read_allowance().min(buf.len()).max(1);
        let received = match (&*stream).read(&mut buf[..allowance]) {
            Ok(0) => session.receive_eof(),
            Ok(n) => session.receive(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == ErrorKind::WouldBlock => match session.expired(Instant::now()) {
                Some(reason) => break reason,
                None => {
                    read_timeout = ReadTimeout(None); // woke early: wait the rest
                    continue;
                }
            },
            Err(e) => break CloseReason::from_io(&e),
        };
        // Replies queued before a bad frame still go out (sendall, never a lone send).
        if let Err(e) = (&*stream).write_all(session.pending()) {
            break match e.kind() {
                ErrorKind::WouldBlock => CloseReason::Timeout(Expiry::Send),
                _ => CloseReason::from_io(&e),
            };
        }
        session.advance(session.pending().len());
        if let Err(reason) = received {
            break reason;
        }
    };
    // A connection that the drain cut reports that, not the EOF or EPIPE the cut caused.
    let reason = if cut() && !matches!(reason, CloseReason::Frame(_)) {
        CloseReason::Shutdown
    } else {
        reason
    };
    shared.hooks.closed(&session, &reason);
}

/// The read timeout set on a blocking socket, kept near the session's deadline with few
/// `setsockopt` calls: it is changed only when the wait it gives is later than the deadline by
/// more than an eighth, or shorter than half the time left (then the read would wake early
/// for nothing). A timeout may so fire up to an eighth late, never early.
struct ReadTimeout(Option<Duration>);

impl ReadTimeout {
    fn arm(&mut self, stream: &Stream, session: &Session) {
        let left = session.deadline().map(|d| {
            d.saturating_duration_since(Instant::now())
                .max(Duration::from_millis(1)) // zero would mean no timeout
        });
        let close_enough = match (left, self.0) {
            (None, None) => true,
            (Some(left), Some(set)) => set <= left + left / 8 && set >= left / 2,
            _ => false,
        };
        if !close_enough {
            let _ = stream.set_read_timeout(left);
            self.0 = left;
        }
    }
}
