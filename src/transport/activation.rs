//! systemd socket activation: a listening socket the system opened and handed over
//! (`LISTEN_PID`, `LISTEN_FDS`, the sockets from fd 3), served instead of one of our own. The
//! system keeps the port or socket file across restarts of the server, and can start the
//! server on the first connection.

use super::datagram::DatagramSocket;
use super::listener::{BindError, Listener};
use crate::addr::Addr;
use socket2::{Domain, Socket, Type};
use std::io;
use std::os::fd::OwnedFd;

/// The first fd a system passes (`SD_LISTEN_FDS_START`).
const FIRST_FD: i32 = 3;

/// The socket the system passed this process, if it passed one: `LISTEN_PID` names this
/// process and `LISTEN_FDS` is at least 1. The variables are removed once read, so nothing
/// this process starts takes them for its own. With several sockets, the first is served
/// (the others are left alone, with a warning).
pub fn inherited() -> Result<Option<Listener>, BindError> {
    let pid = std::env::var("LISTEN_PID").ok();
    let fds = std::env::var("LISTEN_FDS").ok();
    let ours = pid.and_then(|p| p.trim().parse::<u32>().ok()) == Some(std::process::id());
    let count = fds.and_then(|n| n.trim().parse::<i32>().ok()).unwrap_or(0);
    for var in ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"] {
        std::env::remove_var(var);
    }
    if !ours || count < 1 {
        return Ok(None);
    }
    if count > 1 {
        tracing::warn!(
            sockets = count,
            "the system passed several sockets: serving the first (fd 3)"
        );
    }
    let socket: Socket = crate::sys::take_inherited_fd(FIRST_FD)
        .map_err(passed_err)?
        .into();
    listener(socket, false).map(Some)
}

/// Set by a switchboard that hands its socket (fd 3) to a new copy of itself on SIGHUP; the
/// value is the fd of a pipe on which the new copy says it is serving.
pub(crate) const HANDOVER: &str = "SWITCHBOARD_HANDOVER";

/// The socket a switchboard handed this process on SIGHUP (see the `reload` module), if one did.
/// This process then owns the socket file of a Unix socket, and removes it at its exit.
pub fn handed_over() -> Result<Option<Listener>, BindError> {
    let Ok(ready) = std::env::var(HANDOVER) else {
        return Ok(None);
    };
    std::env::remove_var(HANDOVER);
    if let Ok(fd) = ready.trim().parse::<i32>() {
        if let Ok(fd) = crate::sys::take_inherited_fd(fd) {
            if let Ok(mut ready) = READY.lock() {
                *ready = Some(fd);
            }
        }
    }
    let socket: Socket = crate::sys::take_inherited_fd(FIRST_FD)
        .map_err(passed_err)?
        .into();
    listener(socket, true).map(Some)
}

/// What kind of socket was passed decides the listener; an `owned` Unix socket file is removed
/// when the listener is dropped.
fn listener(socket: Socket, owned: bool) -> Result<Listener, BindError> {
    let kind = socket.r#type().map_err(passed_err)?;
    let domain = socket.domain().map_err(passed_err)?;
    let local = socket.local_addr().map_err(passed_err)?;
    if kind == Type::DGRAM {
        return DatagramSocket::from_inherited(socket, owned).map(Listener::Datagram);
    }
    if kind != Type::STREAM {
        return Err(passed_err(io::Error::other(
            "it is neither a stream nor a datagram socket",
        )));
    }
    if !socket.is_listener().map_err(passed_err)? {
        return Err(passed_err(io::Error::other(
            "it is a connection, not a listening socket (the .socket unit needs Accept=no)",
        )));
    }
    if domain == Domain::UNIX {
        let path = local
            .as_pathname()
            .map(|p| p.to_path_buf())
            .ok_or_else(|| passed_err(io::Error::other("a Unix socket without a path")))?;
        // The system made the socket file and keeps it: it is removed here only when a
        // switchboard handed it over.
        return Ok(Listener::Unix {
            listener: socket.into(),
            path,
            owner: if owned { std::process::id() } else { 0 },
        });
    }
    Ok(Listener::Tcp(socket.into()))
}

fn passed_err(source: io::Error) -> BindError {
    BindError::Io {
        addr: Addr::Unix("/proc/self/fd/3".into()),
        source: io::Error::new(
            source.kind(),
            format!("the socket the system passed (fd 3) cannot be served: {source}"),
        ),
    }
}

/// The pipe a server handed its socket by a reload says "serving" on (see the `reload` module).
static READY: std::sync::Mutex<Option<OwnedFd>> = std::sync::Mutex::new(None);

/// The pipe to say "serving" on, if the socket was handed over: taken once.
pub(crate) fn take_ready_pipe() -> Option<OwnedFd> {
    READY.lock().ok().and_then(|mut ready| ready.take())
}
