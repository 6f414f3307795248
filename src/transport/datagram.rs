//! Datagram sockets, UDP and Unix: each datagram is one message, answered to its sender.

use super::listener::{remove_stale_socket, BindError};
use super::SocketOptions;
use crate::addr::Addr;
use crate::sys;
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;

/// The largest datagram received whole: the UDP maximum over IPv4 (65,507 bytes) fits.
pub const MAX_DATAGRAM: usize = 64 * 1024;

/// A bound datagram socket: `udp://` or `unixgram://`.
#[derive(Debug)]
pub struct DatagramSocket {
    socket: Socket,
    addr: Addr,
    /// The process that created a Unix socket file, which removes it on drop.
    owner: Option<u32>,
}

impl DatagramSocket {
    /// Creates and binds a datagram socket. Port 0 picks a free port; a `unixgram://` socket
    /// file left by a dead server is replaced, one in use is not.
    pub fn bind(addr: &Addr, opts: &SocketOptions) -> Result<DatagramSocket, BindError> {
        let io_err = |source: io::Error| BindError::from_io(addr, source);
        let (socket, owner) = match addr {
            Addr::Udp(sa) => {
                let socket =
                    Socket::new(Domain::for_address(*sa), Type::DGRAM, Some(Protocol::UDP))
                        .map_err(io_err)?;
                socket.set_reuse_address(opts.reuse_addr).map_err(io_err)?;
                socket.set_reuse_port(opts.reuse_port).map_err(io_err)?;
                socket.bind(&(*sa).into()).map_err(io_err)?;
                (socket, None)
            }
            Addr::UnixGram(path) => {
                remove_stale_socket(path, addr, |p| UnixDatagram::unbound()?.connect(p))?;
                let socket = Socket::new(Domain::UNIX, Type::DGRAM, None).map_err(io_err)?;
                socket
                    .bind(&SockAddr::unix(path).map_err(io_err)?)
                    .map_err(io_err)?;
                (socket, Some(std::process::id()))
            }
            Addr::Tcp(_) | Addr::Tls { .. } | Addr::Unix(_) => {
                return Err(BindError::Stream(addr.clone()))
            }
        };
        let addr = match socket.local_addr().map_err(io_err)?.as_socket() {
            Some(sa) => Addr::Udp(sa),
            None => addr.clone(),
        };
        Ok(DatagramSocket {
            socket,
            addr,
            owner,
        })
    }

    /// A bound datagram socket the system passed (socket activation); its socket file, if
    /// any, is the system's and is never removed here.
    pub(crate) fn from_inherited(socket: Socket, owned: bool) -> Result<DatagramSocket, BindError> {
        let local = socket.local_addr().map_err(|source| BindError::Io {
            addr: Addr::Unix("/proc/self/fd/3".into()),
            source,
        })?;
        let addr = match (local.as_socket(), local.as_pathname()) {
            (Some(sa), _) => Addr::Udp(sa),
            (None, Some(path)) => Addr::UnixGram(path.to_path_buf()),
            (None, None) => Addr::UnixGram("/proc/self/fd/3".into()),
        };
        Ok(DatagramSocket {
            socket,
            addr,
            owner: owned.then(std::process::id),
        })
    }

    /// The address bound, with the real port when port 0 was asked for.
    pub fn local_addr(&self) -> &Addr {
        &self.addr
    }

    /// Receives one datagram into `buf`; returns its whole length (more than `buf.len()` when
    /// it did not fit and was cut) and its sender.
    pub fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SockAddr)> {
        sys::recv_datagram(&self.socket, buf)
    }

    /// Sends one datagram to `to`.
    pub fn send_to(&self, buf: &[u8], to: &SockAddr) -> io::Result<usize> {
        self.socket.send_to(buf, to)
    }

    /// Sets or clears non-blocking mode.
    pub fn set_nonblocking(&self, nonblocking: bool) -> io::Result<()> {
        self.socket.set_nonblocking(nonblocking)
    }

    /// A second handle to the same socket (for a runtime that wants to own one).
    pub fn try_clone_socket(&self) -> io::Result<Socket> {
        self.socket.try_clone()
    }

    /// True for a Unix datagram socket.
    pub fn is_unix(&self) -> bool {
        matches!(self.addr, Addr::UnixGram(_))
    }
}

/// How a datagram's sender is named in logs: `udp://IP:PORT`, `unixgram:///path`, or
/// `unixgram://` for an unnamed Unix sender (which cannot be answered).
pub fn datagram_peer_name(from: &SockAddr) -> String {
    if let Some(sa) = from.as_socket() {
        format!("udp://{sa}")
    } else {
        match from.as_pathname() {
            Some(p) => format!("unixgram://{}", p.display()),
            None => "unixgram://".to_string(),
        }
    }
}

impl AsRawFd for DatagramSocket {
    fn as_raw_fd(&self) -> RawFd {
        self.socket.as_raw_fd()
    }
}

impl Drop for DatagramSocket {
    fn drop(&mut self) {
        if let (Some(owner), Addr::UnixGram(path)) = (self.owner, &self.addr) {
            if super::listener::owns_socket_file(owner) {
                let _ = std::fs::remove_file(path);
            }
        }
    }
}

/// A path, for the Unix datagram client's own address.
pub(crate) fn client_socket_path() -> PathBuf {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    std::env::temp_dir().join(format!(
        "switchboard-client-{}-{}.sock",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ))
}
