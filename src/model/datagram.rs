//! What the datagram-serving models share: answering one datagram, and the blocking receive
//! loop of `iterative`, `threads` and `pool`.
//!
//! A datagram is a whole message with its sender's address: there is no connection to accept
//! and nothing to drain. Its bytes go through the server's framing like a stream's would
//! (`raw`: the datagram is the message), and the replies go back to the sender in one datagram.

use super::ReadBuffer;
use crate::session::CloseReason;
use crate::shared::Shared;
use crate::sys;
use crate::transport::{datagram_peer_name, DatagramSocket, MAX_DATAGRAM};
use socket2::SockAddr;
use std::io::{self, ErrorKind};
use std::os::fd::AsRawFd;

/// Answers one datagram from `from`, sending the reply back on `socket`.
pub(super) fn answer(socket: &DatagramSocket, datagram: &[u8], from: &SockAddr, shared: &Shared) {
    // Refused: not answered (a datagram has no connection to close).
    let Some(peer) = shared.hooks.admit(datagram_peer_name(from), None) else {
        return;
    };
    let id = peer.id;
    let mut session = shared.hooks.session(peer);
    let mut outcome = session
        .receive(datagram)
        .and_then(|()| session.receive_eof());
    if outcome.is_ok() && !session.pending().is_empty() {
        if from.as_socket().is_none() && from.as_pathname().is_none() {
            tracing::debug!(id, "an unnamed unixgram sender cannot be answered");
        } else {
            match socket.send_to(session.pending(), from) {
                Ok(n) => session.advance(n),
                Err(e) => outcome = Err(CloseReason::from_io(&e)),
            }
        }
    }
    let reason = outcome.err().unwrap_or(CloseReason::Eof);
    shared.hooks.answered(&session, &reason);
}

/// Receives (with `recv`) every datagram waiting on a non-blocking socket, handing each to
/// `dispatch`; returns when the socket would block. A datagram too large for the buffer is
/// dropped with a warning rather than answered cut.
pub(super) fn receive_all(
    mut recv: impl FnMut(&mut [u8]) -> io::Result<(usize, SockAddr)>,
    buf: &mut [u8],
    mut dispatch: impl FnMut(&[u8], SockAddr),
) -> io::Result<()> {
    loop {
        match recv(buf) {
            Ok((n, from)) if n > buf.len() => {
                tracing::warn!(bytes = n, max = buf.len(), peer = %datagram_peer_name(&from), "datagram too large; dropped");
            }
            Ok((n, from)) => dispatch(&buf[..n], from),
            Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()),
            // A reply to an earlier sender that is gone shows up here as ECONNREFUSED: not ours.
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::Interrupted | ErrorKind::ConnectionRefused
                ) => {}
            Err(e) => return Err(e),
        }
    }
}

/// The blocking models' datagram loop: waits for datagrams or a stop, and hands each to
/// `dispatch` (answered inline, on a thread, or by a pool) until the stop.
pub(super) fn serve_blocking(
    socket: &DatagramSocket,
    shared: &Shared,
    mut dispatch: impl FnMut(&[u8], SockAddr),
) -> io::Result<()> {
    socket.set_nonblocking(true)?;
    let mut buf = ReadBuffer::new(MAX_DATAGRAM);
    let mut fds = [
        sys::pollin(socket.as_raw_fd()),
        sys::pollin(shared.lifecycle.waker_fd()),
    ];
    while !shared.lifecycle.is_stopping() {
        sys::poll(&mut fds, None)?;
        if fds[0].ready() {
            receive_all(|buf| socket.recv_from(buf), &mut buf, &mut dispatch)?;
        }
    }
    Ok(())
}
