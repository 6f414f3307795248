//! One load-generating "connection" over datagrams (UDP or Unix): a connected socket whose
//! every request is one datagram and every reply the datagram that comes back. Datagrams may be
//! lost (a full socket buffer drops them) or answered out of order (`threads` answers each in a
//! thread of its own), so replies are matched by the sequence number their body carries, and a
//! request unanswered for the timeout is counted lost.

use crate::addr::Addr;
use crate::bench::payload::ReplyDecoder;
use crate::bench::schedule::Schedule;
use crate::bench::stream::{failing, Conn};
use crate::bench::tally::Failure;
use crate::transport::{client_socket_path, MAX_DATAGRAM};
use std::cell::RefCell;
use std::collections::VecDeque;
use std::io;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tokio::net::{UdpSocket, UnixDatagram};

/// A connected datagram socket.
pub(crate) enum DatagramSocket {
    Udp(UdpSocket),
    /// A Unix datagram client needs a socket file of its own for replies; removed on drop.
    Unix(UnixDatagram, PathBuf),
}

impl DatagramSocket {
    pub(crate) async fn connect(addr: &Addr) -> io::Result<DatagramSocket> {
        match addr {
            Addr::Udp(sa) => {
                let any: std::net::SocketAddr = if sa.is_ipv4() {
                    ([0, 0, 0, 0], 0).into()
                } else {
                    (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
                };
                let s = UdpSocket::bind(any).await?;
                s.connect(sa).await?;
                Ok(DatagramSocket::Udp(s))
            }
            Addr::UnixGram(path) => {
                let own = client_socket_path();
                let s = UnixDatagram::bind(&own)?;
                let socket = DatagramSocket::Unix(s, own);
                if let DatagramSocket::Unix(s, _) = &socket {
                    s.connect(path)?;
                }
                Ok(socket)
            }
            other => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{other} is not a datagram address"),
            )),
        }
    }

    async fn send(&self, buf: &[u8]) -> io::Result<usize> {
        match self {
            DatagramSocket::Udp(s) => s.send(buf).await,
            DatagramSocket::Unix(s, _) => s.send(buf).await,
        }
    }

    async fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            DatagramSocket::Udp(s) => s.recv(buf).await,
            DatagramSocket::Unix(s, _) => s.recv(buf).await,
        }
    }
}

impl Drop for DatagramSocket {
    fn drop(&mut self) {
        if let DatagramSocket::Unix(_, path) = self {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Requests sent and not yet answered: (sequence number, when sent or due).
#[derive(Default)]
struct Flight(VecDeque<(u64, Instant)>);

impl Flight {
    /// Takes the request `reply` answers: the one whose sequence number its body carries, or
    /// the oldest when bodies carry none.
    fn take(&mut self, conn: &Conn<'_>, reply: &[u8]) -> Option<(u64, Instant)> {
        let at = match conn.plan.carried_seq(reply) {
            Some((seq, modulus)) => self.0.iter().position(|(s, _)| s % modulus == seq)?,
            None => 0,
        };
        self.0.remove(at)
    }

    /// Drops the requests unanswered for `timeout`; returns how many.
    fn expire(&mut self, timeout: Duration) -> usize {
        let before = self.0.len();
        self.0.retain(|(_, t)| t.elapsed() < timeout);
        before - self.0.len()
    }
}

/// Runs one datagram client: closed loop (`depth` in flight, a lost one replaced) or, with a
/// schedule, open loop.
///
/// Longer than a screen on purpose: its sending and receiving halves share the datagrams in
/// flight and the encoder, and read best side by side.
pub(crate) async fn datagram_loop(
    socket: &DatagramSocket,
    conn: &Conn<'_>,
    mut schedule: Option<&mut Schedule>,
) -> Result<(), Failure> {
    let open = schedule.is_some();
    let plan = conn.plan;
    let flight = RefCell::new(Flight::default());
    let send_one = |out: &mut Vec<u8>, since: Instant| {
        out.clear();
        let seq = conn.encode(out);
        flight.borrow_mut().0.push_back((seq, since));
    };
    let io_failure = |e: io::Error| match e.kind() {
        io::ErrorKind::ConnectionRefused => Failure::Refused,
        _ => Failure::from_io(&e),
    };
    let send = failing(async {
        let mut out = Vec::new();
        let Some(schedule) = schedule.as_deref_mut() else {
            conn.starting(Instant::now());
            for _ in 0..plan.depth {
                send_one(&mut out, Instant::now());
                socket.send(&out).await.map_err(io_failure)?;
            }
            return Ok(());
        };
        loop {
            tokio::time::sleep_until(schedule.next().into()).await;
            let due: Vec<Instant> = schedule.due(Instant::now()).collect();
            for since in due {
                send_one(&mut out, since);
                socket.send(&out).await.map_err(io_failure)?;
                schedule.wrote(Instant::now());
            }
        }
    });
    let receive = failing(async {
        let mut buf = vec![0u8; MAX_DATAGRAM];
        let mut out = Vec::new();
        // Look for lost datagrams a few times per timeout.
        let tick = (plan.timeout / 4).max(Duration::from_millis(1));
        loop {
            let n = match tokio::time::timeout(tick, socket.recv(&mut buf)).await {
                Ok(r) => r.map_err(io_failure)?,
                Err(_) => {
                    let lost = flight.borrow_mut().expire(plan.timeout);
                    let now = Instant::now();
                    for _ in 0..lost {
                        conn.lock().fail(Failure::Lost, now);
                        if !open {
                            // The closed loop keeps `depth` in flight.
                            send_one(&mut out, now);
                            socket.send(&out).await.map_err(io_failure)?;
                        }
                    }
                    continue;
                }
            };
            let now = Instant::now();
            let reply = ReplyDecoder::datagram(plan.framing, &buf[..n]);
            let owed = match &reply {
                Ok(body) => flight.borrow_mut().take(conn, body),
                Err(_) => None,
            };
            let answered = owed.is_some();
            {
                let mut tally = conn.lock();
                match (&reply, owed) {
                    (Ok(body), Some((seq, since))) if conn.check(seq, body) => {
                        conn.replied(&mut tally, since, now)
                    }
                    (Err(_), _) => tally.fail(Failure::Frame, now),
                    _ => tally.mismatch(now),
                }
            }
            if !open && answered {
                send_one(&mut out, now);
                socket.send(&out).await.map_err(io_failure)?;
            }
        }
    });
    tokio::select! {
        done = async { tokio::try_join!(send, receive) } => done.map(drop),
        () = plan.over() => {
            conn.ended_waiting(flight.borrow().0.iter().map(|&(_, since)| since));
            Ok(())
        }
    }
}
