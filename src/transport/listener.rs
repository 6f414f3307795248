//! Listening sockets: `socket`, `setsockopt`, `bind`, `listen` and `accept`.

use super::{DatagramSocket, SocketOptions, Stream};
use crate::addr::Addr;
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use std::io;
use std::net::TcpListener;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

/// Why a listener could not be set up, with what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    /// Something already listens there.
    #[error(
        "{addr} is already in use: stop the server that listens there or choose another address"
    )]
    InUse {
        /// The address asked for.
        addr: Addr,
    },
    /// A file that is not a socket is in the way of a Unix socket.
    #[error("{} exists and is not a socket: remove it or choose another path", .0.display())]
    NotASocket(PathBuf),
    /// A stream address where a datagram one was expected.
    #[error("{0} is a stream address; a datagram socket binds udp:// or unixgram://")]
    Stream(Addr),
    /// Any other failure of socket, bind or listen.
    #[error("cannot listen on {addr}: {source}")]
    Io {
        /// The address asked for.
        addr: Addr,
        /// What the system said.
        source: io::Error,
    },
}

/// What a server serves on: a listening stream socket (TCP or Unix), or a bound datagram
/// socket (UDP or Unix), which has no connections to accept.
#[derive(Debug)]
pub enum Listener {
    /// A TCP listener.
    Tcp(TcpListener),
    /// A Unix listener and the socket file it made, removed when the process that made it drops
    /// the listener (a forked child's copy leaves the file alone).
    Unix {
        /// The listener.
        listener: UnixListener,
        /// Its socket file.
        path: PathBuf,
        /// The process that created the file.
        owner: u32,
    },
    /// A datagram socket.
    Datagram(DatagramSocket),
}

impl BindError {
    /// The error an IO failure on `addr` means.
    pub(crate) fn from_io(addr: &Addr, source: io::Error) -> Self {
        if source.kind() == io::ErrorKind::AddrInUse {
            BindError::InUse { addr: addr.clone() }
        } else {
            BindError::Io {
                addr: addr.clone(),
                source,
            }
        }
    }
}

impl Listener {
    /// Creates, configures, binds and listens. Port 0 picks a free port (see
    /// [`local_addr`](Listener::local_addr)); a Unix socket file left by a dead server is
    /// replaced, one that a live server listens on is not.
    pub fn bind(addr: &Addr, opts: &SocketOptions) -> Result<Listener, BindError> {
        let io_err = |source: io::Error| BindError::from_io(addr, source);
        match addr {
            // TLS is the session's: the socket is a TCP listener like any other.
            Addr::Tcp(sa) | Addr::Tls { addr: sa, .. } => {
                let socket =
                    Socket::new(Domain::for_address(*sa), Type::STREAM, Some(Protocol::TCP))
                        .map_err(io_err)?;
                socket.set_reuse_address(opts.reuse_addr).map_err(io_err)?;
                socket.set_reuse_port(opts.reuse_port).map_err(io_err)?;
                socket.set_tcp_nodelay(opts.nodelay).map_err(io_err)?;
                socket.bind(&(*sa).into()).map_err(io_err)?;
                socket.listen(opts.backlog).map_err(io_err)?;
                Ok(Listener::Tcp(socket.into()))
            }
            Addr::Unix(path) => {
                remove_stale_socket(path, addr, |p| UnixStream::connect(p).map(drop))?;
                let socket = Socket::new(Domain::UNIX, Type::STREAM, None).map_err(io_err)?;
                socket
                    .bind(&SockAddr::unix(path).map_err(io_err)?)
                    .map_err(io_err)?;
                socket.listen(opts.backlog).map_err(io_err)?;
                Ok(Listener::Unix {
                    listener: socket.into(),
                    path: path.clone(),
                    owner: std::process::id(),
                })
            }
            Addr::Udp(_) | Addr::UnixGram(_) => {
                Ok(Listener::Datagram(DatagramSocket::bind(addr, opts)?))
            }
        }
    }

    /// The address actually bound, with the real port when port 0 was asked for.
    pub fn local_addr(&self) -> io::Result<Addr> {
        match self {
            Listener::Tcp(l) => Ok(Addr::Tcp(l.local_addr()?)),
            Listener::Unix { path, .. } => Ok(Addr::Unix(path.clone())),
            Listener::Datagram(d) => Ok(d.local_addr().clone()),
        }
    }

    /// Accepts one connection. On Linux the accepted socket is blocking even when the listener
    /// is not (accept(2) does not pass O_NONBLOCK on).
    pub fn accept(&self) -> io::Result<(Stream, String)> {
        match self {
            Listener::Tcp(l) => {
                let (s, peer) = l.accept()?;
                Ok((Stream::Tcp(s), format!("tcp://{peer}")))
            }
            Listener::Unix { listener, .. } => {
                let (s, peer) = listener.accept()?;
                Ok((Stream::Unix(s), unix_peer_name(peer.as_pathname())))
            }
            Listener::Datagram(_) => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a datagram socket has no connections to accept",
            )),
        }
    }

    /// Puts the listener in non-blocking mode: `accept` then fails with `WouldBlock` instead of
    /// waiting.
    pub fn set_nonblocking(&self, nonblocking: bool) -> io::Result<()> {
        match self {
            Listener::Tcp(l) => l.set_nonblocking(nonblocking),
            Listener::Unix { listener, .. } => listener.set_nonblocking(nonblocking),
            Listener::Datagram(d) => d.set_nonblocking(nonblocking),
        }
    }
}

impl AsRawFd for Listener {
    fn as_raw_fd(&self) -> RawFd {
        match self {
            Listener::Tcp(l) => l.as_raw_fd(),
            Listener::Unix { listener, .. } => listener.as_raw_fd(),
            Listener::Datagram(d) => d.as_raw_fd(),
        }
    }
}

/// Set once this process handed its socket to a successor (SIGHUP): the socket file is the
/// successor's now, and stays when this process's listener is dropped.
pub(crate) static HANDED_OVER: std::sync::atomic::AtomicBool =
    std::sync::atomic::AtomicBool::new(false);

/// True when this process still owns a socket file created by `owner`.
pub(crate) fn owns_socket_file(owner: u32) -> bool {
    owner == std::process::id() && !HANDED_OVER.load(std::sync::atomic::Ordering::SeqCst)
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Listener::Unix { path, owner, .. } = self {
            if owns_socket_file(*owner) {
                let _ = std::fs::remove_file(path);
            }
        }
    }
}

/// How a Unix peer is named in logs: its path, or `unix://` for an unnamed client socket (the
/// usual case).
pub fn unix_peer_name(path: Option<&Path>) -> String {
    match path {
        Some(p) => format!("unix://{}", p.display()),
        None => "unix://".to_string(),
    }
}

/// A socket file that nothing listens on (a crashed server's) is removed so the address can be
/// bound again; a live one, or a file that is not a socket, is left alone and is an error.
pub(super) fn remove_stale_socket(
    path: &Path,
    addr: &Addr,
    probe: impl Fn(&Path) -> io::Result<()>,
) -> Result<(), BindError> {
    use std::os::unix::fs::FileTypeExt;
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return Ok(());
    };
    if !meta.file_type().is_socket() {
        return Err(BindError::NotASocket(path.to_path_buf()));
    }
    match probe(path) {
        Ok(()) => Err(BindError::InUse { addr: addr.clone() }),
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => std::fs::remove_file(path)
            .map_err(|source| BindError::Io {
                addr: addr.clone(),
                source,
            }),
        Err(source) => Err(BindError::Io {
            addr: addr.clone(),
            source,
        }),
    }
}

/// A TCP listener on `sa` that another process may bind beside (`SO_REUSEPORT`): the metrics
/// port, which a server started by a reload binds while the old one still holds it.
pub fn bind_beside(sa: std::net::SocketAddr) -> Result<std::net::TcpListener, BindError> {
    use socket2::{Domain, Protocol, Socket, Type};
    let bind = || -> io::Result<std::net::TcpListener> {
        let s = Socket::new(Domain::for_address(sa), Type::STREAM, Some(Protocol::TCP))?;
        s.set_reuse_address(true)?;
        s.set_reuse_port(true)?;
        s.bind(&sa.into())?;
        s.listen(128)?;
        Ok(s.into())
    };
    bind().map_err(|source| BindError::from_io(&Addr::Tcp(sa), source))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_zero_reports_the_real_port() {
        let l = Listener::bind(
            &"tcp://127.0.0.1:0".parse().unwrap(),
            &SocketOptions::default(),
        )
        .unwrap();
        match l.local_addr().unwrap() {
            Addr::Tcp(sa) => assert_ne!(sa.port(), 0),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_taken_port_is_in_use() {
        let opts = SocketOptions::default();
        let l = Listener::bind(&"tcp://127.0.0.1:0".parse().unwrap(), &opts).unwrap();
        let err = Listener::bind(&l.local_addr().unwrap(), &opts).unwrap_err();
        assert!(matches!(err, BindError::InUse { .. }), "{err}");
    }

    #[test]
    fn stale_unix_socket_is_replaced_live_one_is_not() {
        let dir = std::env::temp_dir().join(format!("sb-listener-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("s.sock");
        let addr = Addr::Unix(path.clone());
        let opts = SocketOptions::default();
        drop(UnixListener::bind(&path).unwrap()); // leaves a socket file nobody listens on
        assert!(path.exists());
        let live = Listener::bind(&addr, &opts).unwrap();
        assert!(matches!(
            Listener::bind(&addr, &opts),
            Err(BindError::InUse { .. })
        ));
        drop(live);
        assert!(!path.exists(), "the owner removes its socket file");
        std::fs::write(&path, b"not a socket").unwrap();
        assert!(matches!(
            Listener::bind(&addr, &opts),
            Err(BindError::NotASocket(_))
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
