//! One connection of a run: connect (TCP, TLS, Unix), drive the closed or open loop, close
//! in order; reconnect when the server closed it.

use crate::addr::Addr;
use crate::bench::datagram::{datagram_loop, DatagramSocket};
use crate::bench::payload::{Expect, Messages, Payload};
use crate::bench::run::StartLine;
use crate::bench::schedule::Schedule;
use crate::bench::stream::{closed_loop, open_loop, Conn};
use crate::bench::tally::Failure;
use crate::codec::{Codec, Framing};
use std::io;
use std::time::{Duration, Instant};
use tokio::net::{TcpStream, UnixStream};

/// What every connection of one thread shares for the run.
pub(crate) struct Plan {
    pub(crate) payload: Payload,
    /// The payload's requests and owed replies, made once for every connection of the thread.
    pub(crate) messages: Messages,
    pub(crate) framing: Framing,
    pub(crate) codec: Box<dyn Codec>,
    pub(crate) expect: Expect,
    pub(crate) depth: usize,
    pub(crate) timeout: Duration,
    pub(crate) tls: Option<std::sync::Arc<rustls::ClientConfig>>,
    pub(crate) sources: Vec<std::net::IpAddr>,
    /// Connects in flight at once on this thread: thousands of connections opened together
    /// would overflow the server's backlog and wait out SYN retransmits (seconds each).
    pub(crate) connecting: tokio::sync::Semaphore,
    /// Set when the run is over: each connection stops sending, says so (a FIN, and TLS's
    /// close_notify) and reads what is still on its way, so the server sees an orderly close
    /// rather than the reset a socket closed with unread replies sends.
    pub(crate) ending: tokio::sync::watch::Sender<bool>,
    /// When the load started, passed on by the thread's own loop once the start line says so.
    /// Woken from another thread, each connection would be a remote wake-up, which the
    /// scheduler takes one per 31 local tasks once replies are flowing: thousands of
    /// connections then sent their first request a second late. Woken from this thread, they
    /// all send before any reply is handled.
    pub(crate) go: tokio::sync::watch::Sender<Option<Instant>>,
}

/// How long a connection at the end of a run waits for the server's last replies and close.
pub(super) const CLOSING: Duration = Duration::from_secs(2);

impl Plan {
    /// When the load started, once it has.
    pub(crate) async fn started(&self) -> Option<Instant> {
        let mut go = self.go.subscribe();
        go.wait_for(Option::is_some).await.ok().and_then(|t| *t)
    }

    /// Completes once the run is over.
    pub(crate) async fn over(&self) {
        let _ = self.ending.subscribe().wait_for(|over| *over).await;
    }
}

impl Plan {
    /// The sequence number (and its modulus) a reply's body carries, where it can be read.
    pub(crate) fn carried_seq(&self, reply: &[u8]) -> Option<(u64, u64)> {
        match self.expect {
            Expect::Any => None,
            _ => self.payload.seq_of(reply),
        }
    }
}

/// One connection for the whole run: connects, drives the loop, and on a failure counts it
/// and, with `reconnect`, connects again.
///
/// The first attempt settles the connection at the start line (made or failed); once made,
/// it waits there for the load to start. `rate` is the open loop's (offset, interval).
pub(super) async fn connection(
    conn: &Conn<'_>,
    addr: &Addr,
    rate: Option<(Duration, Duration)>,
    reconnect: bool,
    start: &StartLine,
) {
    let mut settled = false;
    let mut settle = || {
        if !std::mem::replace(&mut settled, true) {
            start
                .settled
                .fetch_add(1, std::sync::atomic::Ordering::Release);
        }
    };
    let mut schedule: Option<Schedule> = None;
    loop {
        // A place among the connects in flight, given back once this one is made or failed.
        let permit = conn.plan.connecting.acquire().await.ok();
        let began = Instant::now();
        let made = make(conn, addr).await;
        drop(permit);
        settle();
        let result = match made {
            Err(failure) => Err(failure),
            Ok(made) => {
                conn.lock().connected(began.elapsed());
                // Made: it waits at the start line; the open loop's schedule starts from it.
                let Some(t0) = conn.plan.started().await else {
                    return;
                };
                if schedule.is_none() {
                    schedule = rate.map(|(offset, interval)| Schedule::new(t0 + offset, interval));
                }
                match made {
                    Made::Tcp(s) => {
                        let _ = s.set_nodelay(true);
                        drive(s, conn, schedule.as_mut()).await
                    }
                    Made::Tls(s) => {
                        let _ = s.get_ref().0.set_nodelay(true);
                        drive(s, conn, schedule.as_mut()).await
                    }
                    Made::Unix(s) => drive(s, conn, schedule.as_mut()).await,
                    Made::Datagram(s) => datagram_loop(&s, conn, schedule.as_mut()).await,
                }
            }
        };
        let Err(failure) = result else { return };
        conn.lock().fail(failure, Instant::now());
        if !reconnect {
            return;
        }
        // A refusing server is not hammered; another failure reconnects at once.
        if failure == Failure::Refused {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if let Some(schedule) = &mut schedule {
            schedule.restart(Instant::now());
        }
    }
}

/// Connects to `addr` (and handshakes, over TLS) within the plan's timeout.
async fn make(conn: &Conn<'_>, addr: &Addr) -> Result<Made, Failure> {
    match addr {
        Addr::Tcp(sa) => connect(tcp_connect(conn, *sa), conn.plan.timeout)
            .await
            .map(Made::Tcp),
        Addr::Tls { addr: sa, host } => {
            let handshake = async {
                let s = TcpStream::connect(sa).await?;
                let config = match &conn.plan.tls {
                    Some(config) => config.clone(),
                    None => crate::tls::client_config(None, false).map_err(io::Error::other)?,
                };
                tokio_rustls::TlsConnector::from(config)
                    .connect(crate::tls::server_name(host), s)
                    .await
            };
            connect(handshake, conn.plan.timeout)
                .await
                .map(|s| Made::Tls(Box::new(s)))
        }
        Addr::Unix(path) => connect(UnixStream::connect(path), conn.plan.timeout)
            .await
            .map(Made::Unix),
        Addr::Udp(_) | Addr::UnixGram(_) => {
            connect(DatagramSocket::connect(addr), conn.plan.timeout)
                .await
                .map(Made::Datagram)
        }
    }
}

/// A connection made, of whichever kind the address asks for.
pub(super) enum Made {
    Tcp(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
    Unix(UnixStream),
    Datagram(DatagramSocket),
}

/// A TCP connection to `server`, from this connection's source address if there are several.
pub(super) async fn tcp_connect(
    conn: &Conn<'_>,
    server: std::net::SocketAddr,
) -> io::Result<TcpStream> {
    let sources = &conn.plan.sources;
    if sources.is_empty() {
        return TcpStream::connect(server).await;
    }
    let source = sources[conn.id as usize % sources.len()];
    let socket = match source {
        std::net::IpAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        std::net::IpAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    // The port is chosen at connect, by the whole address pair, as without a bind: so
    // loopback's TIME_WAIT sockets of earlier runs can be reused rather than exhaust the ports.
    crate::sys::bind_address_no_port(std::os::fd::AsRawFd::as_raw_fd(&socket));
    socket.bind((source, 0).into())?;
    socket.connect(server).await
}

pub(super) async fn connect<S>(
    connecting: impl std::future::Future<Output = io::Result<S>>,
    timeout: Duration,
) -> Result<S, Failure> {
    match tokio::time::timeout(timeout, connecting).await {
        Ok(Ok(s)) => Ok(s),
        Ok(Err(e)) => Err(Failure::connecting(&e)),
        Err(_) => Err(Failure::Timeout),
    }
}

pub(super) async fn drive<S>(
    mut stream: S,
    conn: &Conn<'_>,
    schedule: Option<&mut Schedule>,
) -> Result<(), Failure>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    match schedule {
        None => {
            closed_loop(&mut stream, conn).await?;
            close(&mut stream).await;
            Ok(())
        }
        Some(schedule) => open_loop(stream, conn, schedule).await,
    }
}

/// The run is over: says so (shuts the writing side: a FIN, and TLS's close_notify first) and
/// reads, uncounted, what the server still sends until it closes too, so neither side leaves
/// unread bytes that would turn the close into a reset.
pub(crate) async fn close<S>(stream: &mut S)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let _ = stream.shutdown().await;
    let mut sink = vec![0u8; 16 * 1024];
    let drained = async { while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {} };
    let _ = tokio::time::timeout(CLOSING, drained).await;
}
