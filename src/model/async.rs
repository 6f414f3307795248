//! `async`: tokio tasks, the coroutines of the plan, on a multi-thread runtime.
//!
//! Each connection is a task: a coroutine that reads and writes as if blocking, but yields to
//! the runtime wherever it would wait, so a few `--workers` threads (default: one per core)
//! serve any number of connections. Under the hood it is an epoll reactor; the task is what
//! makes its code read like the `threads` model's.

use super::{datagram, ReadBuffer};
use crate::hooks::PLACE_RECHECK;
use crate::session::{CloseReason, Session};
use crate::shared::Shared;
use crate::transport::{unix_peer_name, DatagramSocket, Listener, MAX_DATAGRAM};
use std::io;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::task::JoinSet;

/// Bytes asked of each read.
const READ_SIZE: usize = 64 * 1024;

/// Tasks a busy worker runs between two looks at the IO driver for new readiness. tokio's
/// default, 61, looks again long before a worker has run what the last look woke: past the 256
/// its own queue holds, woken tasks wait in the shared queue, which a worker with work of its
/// own takes one task from only about every 200 µs, so at 1,000 connections some waited 150 ms
/// while others were served every few. At 1,024, the most events the driver hands over per
/// look, every task a look woke runs before the next look, in turn, as in the `epoll` reactor.
const EVENT_INTERVAL: u32 = 1024;

thread_local! {
    /// The read buffer of a runtime thread, lent to each task as it reads: a task waiting for
    /// its peer holds no buffer of its own (64 KiB each would be most of an idle connection's
    /// memory).
    static READ_BUF: std::cell::RefCell<ReadBuffer> = std::cell::RefCell::new(ReadBuffer::new(READ_SIZE));
}

/// A stream a task can wait on until it is readable, then read without waiting, into the
/// thread's buffer.
trait Ready: AsyncWrite + Unpin {
    fn readable(&self) -> impl std::future::Future<Output = io::Result<()>> + Send;
    fn try_read(&self, buf: &mut [u8]) -> io::Result<usize>;
}

impl Ready for tokio::net::TcpStream {
    fn readable(&self) -> impl std::future::Future<Output = io::Result<()>> + Send {
        tokio::net::TcpStream::readable(self)
    }
    fn try_read(&self, buf: &mut [u8]) -> io::Result<usize> {
        tokio::net::TcpStream::try_read(self, buf)
    }
}

impl Ready for tokio::net::UnixStream {
    fn readable(&self) -> impl std::future::Future<Output = io::Result<()>> + Send {
        tokio::net::UnixStream::readable(self)
    }
    fn try_read(&self, buf: &mut [u8]) -> io::Result<usize> {
        tokio::net::UnixStream::try_read(self, buf)
    }
}

/// Serves until a stop on a tokio runtime, then drains.
pub(crate) fn serve(listener: Listener, shared: &Arc<Shared>) -> io::Result<()> {
    let workers = shared
        .workers
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers.max(1))
        .event_interval(EVENT_INTERVAL)
        .thread_name("async")
        .enable_all()
        .build()?;
    listener.set_nonblocking(true)?;
    runtime.block_on(async {
        let mut tasks = JoinSet::new();
        match listener {
            Listener::Tcp(ref l) => {
                let l = tokio::net::TcpListener::from_std(l.try_clone()?)?;
                let accept = || async {
                    let (stream, peer) = l.accept().await?;
                    let _ = stream.set_nodelay(shared.nodelay);
                    Ok((stream, format!("tcp://{peer}")))
                };
                accept_loop(accept, shared, &mut tasks).await?
            }
            Listener::Unix {
                listener: ref l, ..
            } => {
                let l = tokio::net::UnixListener::from_std(l.try_clone()?)?;
                let accept = || async {
                    let (stream, peer) = l.accept().await?;
                    Ok((stream, unix_peer_name(peer.as_pathname())))
                };
                accept_loop(accept, shared, &mut tasks).await?
            }
            Listener::Datagram(ref socket) => return datagrams(socket, shared).await,
        }
        drop(listener); // stop taking connections into the backlog while the others drain
        drain(&mut tasks, shared).await;
        Ok(())
    })
}

/// Accepts until a stop, a task per connection; reaps finished tasks as it goes.
async fn accept_loop<S, A, F>(
    accept: F,
    shared: &Arc<Shared>,
    tasks: &mut JoinSet<()>,
) -> io::Result<()>
where
    S: Ready + AsRawFd + Send + 'static,
    F: Fn() -> A,
    A: std::future::Future<Output = io::Result<(S, String)>>,
{
    let stop = shared.lifecycle.waker_stream()?;
    stop.set_nonblocking(true)?;
    let stop = tokio::net::UnixStream::from_std(stop)?;
    loop {
        // A place under `--max-conns` first; while none is free, clients wait in the backlog.
        let room = shared.hooks.reserve();
        tokio::select! {
            _ = stop.readable() => {
                if room {
                    shared.hooks.release();
                }
                return Ok(());
            }
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {
                if room {
                    shared.hooks.release();
                }
            }
            _ = tokio::time::sleep(PLACE_RECHECK), if !room => {}
            accepted = accept(), if room => match accepted {
                Ok((stream, peer)) => {
                    // Refused: dropping the stream closes it unread (and frees its place).
                    if let Some(peer) = shared.hooks.admit(peer, Some(stream.as_raw_fd())) {
                        let session = shared.hooks.session(peer);
                        tasks.spawn(connection(stream, Live { session, shared: shared.clone(), reason: None }));
                    }
                }
                Err(e) => {
                    shared.hooks.release();
                    shared.hooks.accept_failed(e)?
                }
            },
        }
    }
}

/// Answers datagrams until a stop, on the runtime's thread that receives them.
async fn datagrams(socket: &DatagramSocket, shared: &Arc<Shared>) -> io::Result<()> {
    let stop = shared.lifecycle.waker_stream()?;
    stop.set_nonblocking(true)?;
    let stop = tokio::net::UnixStream::from_std(stop)?;
    let clone = socket.try_clone_socket()?;
    let watched = if socket.is_unix() {
        Watched::Unix(tokio::net::UnixDatagram::from_std(clone.into())?)
    } else {
        Watched::Udp(tokio::net::UdpSocket::from_std(clone.into())?)
    };
    let mut buf = ReadBuffer::new(MAX_DATAGRAM);
    loop {
        tokio::select! {
            _ = stop.readable() => return Ok(()),
            ready = watched.readable() => ready?,
        }
        let recv = |buf: &mut [u8]| watched.try_read(|| socket.recv_from(buf));
        datagram::receive_all(recv, &mut buf, |bytes, from| {
            datagram::answer(socket, bytes, &from, shared)
        })?;
    }
}

/// The runtime's handle of a datagram socket: it says when the socket is readable, and must
/// see each read's "would block" to know when it stops being so.
enum Watched {
    Udp(tokio::net::UdpSocket),
    Unix(tokio::net::UnixDatagram),
}

impl Watched {
    async fn readable(&self) -> io::Result<()> {
        match self {
            Watched::Udp(s) => s.readable().await,
            Watched::Unix(s) => s.readable().await,
        }
    }

    fn try_read<R>(&self, read: impl FnOnce() -> io::Result<R>) -> io::Result<R> {
        match self {
            Watched::Udp(s) => s.try_io(tokio::io::Interest::READABLE, read),
            Watched::Unix(s) => s.try_io(tokio::io::Interest::READABLE, read),
        }
    }
}

/// Lets open connections finish until the deadline, then cancels the rest (each logs its cut).
async fn drain(tasks: &mut JoinSet<()>, shared: &Shared) {
    let deadline = shared.lifecycle.deadline().unwrap_or_else(Instant::now);
    let finish = async { while tasks.join_next().await.is_some() {} };
    if tokio::time::timeout_at(deadline.into(), finish)
        .await
        .is_err()
    {
        tasks.abort_all();
        while tasks.join_next().await.is_some() {}
    }
}

/// One connection's coroutine: write what is queued, else read and answer, until the peer
/// leaves, errs or keeps it waiting past a timeout.
///
/// One timer per connection, armed at the session's deadline and moved only when that comes
/// earlier (a frame begun, replies waiting): when it fires, the session says whether a timeout
/// ran out or the deadline moved on.
async fn connection<S: Ready>(mut stream: S, mut live: Live) {
    let far = || tokio::time::Instant::now() + Duration::from_secs(86_400 * 365);
    let timer = tokio::time::sleep_until(far());
    tokio::pin!(timer);
    let mut armed = None;
    // A bad frame: the replies queued before it still go out, then the connection closes.
    let mut closing = None;
    let reason = loop {
        let session = &mut live.session;
        if let Some(reason) = session.finished() {
            break reason.clone();
        }
        if session.pending().is_empty() {
            if let Some(reason) = closing.take() {
                break reason;
            }
        }
        if let Some(deadline) = session.deadline() {
            if armed.is_none_or(|a| deadline < a) {
                armed = Some(deadline);
                timer.as_mut().reset(deadline.into());
            }
        }
        // Ok(true): the timer fired.
        let step = if !session.pending().is_empty() {
            tokio::select! {
                written = stream.write(session.pending()) => written.map(|n| {
                    session.advance(n);
                    false
                }),
                () = &mut timer => Ok(true),
            }
        } else {
            tokio::select! {
                ready = stream.readable() => ready.and_then(|()| {
                    READ_BUF.with_borrow_mut(|buf| {
                        // Nothing is pending here: the allowance is the whole output budget.
                        let allowance = session.read_allowance().min(buf.len()).max(1);
                        match stream.try_read(&mut buf[..allowance]) {
                        Ok(n) => {
                            let received = match n {
                                0 => session.receive_eof(),
                                n => session.receive(&buf[..n]),
                            };
                            closing = received.err();
                            Ok(false)
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(false),
                        Err(e) => Err(e),
                    }})
                }),
                () = &mut timer => Ok(true),
            }
        };
        match step {
            Ok(false) => {}
            Ok(true) => {
                if let Some(reason) = session.expired(Instant::now()) {
                    break reason;
                }
                armed = None; // not yet: armed again at the deadline as it is now
                timer.as_mut().reset(far());
            }
            Err(e) => break CloseReason::from_io(&e),
        }
    };
    live.reason = Some(reason);
}

/// A connection's session, logged when it is dropped: at its end, or when the drain cancels
/// its task (then as cut by the shutdown).
struct Live {
    session: Session,
    shared: Arc<Shared>,
    reason: Option<CloseReason>,
}

impl Drop for Live {
    fn drop(&mut self) {
        let reason = self.reason.take().unwrap_or(CloseReason::Shutdown);
        self.shared.hooks.closed(&self.session, &reason);
    }
}
