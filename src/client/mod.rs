//! The client: connects to a server, frames requests and knows where each reply ends.
//!
//! [`Client::request`] sends and receives at the same time (a poll loop), so a message larger
//! than the socket buffers cannot deadlock against a server that answers while it reads. Where a
//! reply ends: `line` and `len` replies carry their own end; a `raw` reply is complete once as
//! many bytes came back as were sent (true of `upper` and `echo`), or when the server has sent
//! nothing more for [`Client::set_quiet`] (100 ms by default).

mod repl;

pub use repl::{interactive, pipe};

use crate::addr::Addr;
use crate::codec::{Codec, FrameError, Framing, DEFAULT_MAX_FRAME};
use crate::sys;
use crate::transport::Stream;
use bytes::BytesMut;
use std::io::{self, ErrorKind, Read, Write};
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No connection could be made.
    #[error("cannot connect to {addr}: {source} (is a server listening there? `switchboard serve {addr}` starts one)")]
    Connect {
        /// Where the connection was tried.
        addr: Addr,
        /// What the system said.
        source: io::Error,
    },
    /// The client speaks to stream addresses only.
    #[error("{0} is a datagram address; the client connects to tcp:// and unix:// addresses")]
    Datagram(Addr),
    /// The server closed the connection before the reply was complete.
    #[error("the server closed the connection before replying")]
    Closed,
    /// No reply came in time.
    #[error("no reply within {0:?}")]
    Timeout(Duration),
    /// The reply is not a valid frame (or is too long).
    #[error("bad reply: {0}")]
    Frame(#[from] FrameError),
    /// The connection failed.
    #[error("connection failed: {0}")]
    Io(#[from] io::Error),
}

/// A connection to a server that sends requests and reads replies in one framing.
pub struct Client {
    stream: Stream,
    codec: Box<dyn Codec>,
    framing: Framing,
    input: BytesMut,
    timeout: Duration,
    quiet: Duration,
}

impl Client {
    /// Connects to a stream address.
    pub fn connect(addr: &Addr, framing: Framing) -> Result<Client, ClientError> {
        let connect_err = |source| ClientError::Connect {
            addr: addr.clone(),
            source,
        };
        let stream = match addr {
            Addr::Tcp(sa) => {
                let s = TcpStream::connect(sa).map_err(connect_err)?;
                s.set_nodelay(true).map_err(connect_err)?;
                Stream::Tcp(s)
            }
            Addr::Unix(path) => Stream::Unix(UnixStream::connect(path).map_err(connect_err)?),
            Addr::Udp(_) | Addr::UnixGram(_) => return Err(ClientError::Datagram(addr.clone())),
        };
        stream.set_nonblocking(true).map_err(connect_err)?;
        Ok(Client {
            stream,
            codec: framing.codec(DEFAULT_MAX_FRAME),
            framing,
            input: BytesMut::new(),
            timeout: Duration::from_secs(10),
            quiet: Duration::from_millis(100),
        })
    }

    /// How long to wait for a reply before [`ClientError::Timeout`]. Default: 10 s.
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    /// In `raw` framing, how long a silence ends a reply shorter than its request.
    pub fn set_quiet(&mut self, quiet: Duration) {
        self.quiet = quiet;
    }

    /// Sends one request and returns its reply.
    pub fn request(&mut self, msg: &[u8]) -> Result<Vec<u8>, ClientError> {
        let mut out = Vec::with_capacity(msg.len() + 4);
        self.codec.encode(msg, &mut out)?;
        let mut sent = 0;
        let mut raw_reply = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        let deadline = Instant::now() + self.timeout;
        loop {
            if sent == out.len() {
                if let Some(reply) = self.reply_so_far(msg.len(), &mut raw_reply, false)? {
                    return Ok(reply);
                }
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(ClientError::Timeout(self.timeout));
            }
            // Once a raw reply has begun, a silence of `quiet` ends it.
            let wait = if self.framing == Framing::Raw && !raw_reply.is_empty() && sent == out.len()
            {
                self.quiet.min(deadline - now)
            } else {
                deadline - now
            };
            let mut fd = sys::pollin(self.stream.as_raw_fd());
            if sent < out.len() {
                fd.events |= libc::POLLOUT;
            }
            if sys::poll(std::slice::from_mut(&mut fd), Some(wait))? == 0 {
                if wait < deadline - now {
                    return Ok(std::mem::take(&mut raw_reply)); // the raw reply went quiet
                }
                continue;
            }
            if sent < out.len() {
                match (&self.stream).write(&out[sent..]) {
                    Ok(n) => sent += n,
                    Err(e) if would_block(&e) => {}
                    Err(e) => return Err(e.into()),
                }
            }
            match (&self.stream).read(&mut buf) {
                Ok(0) => {
                    return match self.reply_so_far(msg.len(), &mut raw_reply, true)? {
                        Some(reply) => Ok(reply),
                        None => Err(ClientError::Closed),
                    }
                }
                Ok(n) => self.input.extend_from_slice(&buf[..n]),
                Err(e) if would_block(&e) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// The reply, if what was received completes one.
    fn reply_so_far(
        &mut self,
        sent: usize,
        raw: &mut Vec<u8>,
        eof: bool,
    ) -> Result<Option<Vec<u8>>, ClientError> {
        if self.framing == Framing::Raw {
            raw.extend_from_slice(&self.input.split());
            let done = raw.len() >= sent || (eof && !raw.is_empty());
            return Ok(done.then(|| std::mem::take(raw)));
        }
        let frame = if eof {
            self.codec.decode_eof(&mut self.input)?
        } else {
            self.codec.decode(&mut self.input)?
        };
        Ok(frame.map(|f| f.to_vec()))
    }

    /// Shuts the writing side: the server sees end of stream, and its replies still arrive.
    pub fn shutdown_write(&self) -> io::Result<()> {
        self.stream.shutdown(std::net::Shutdown::Write)
    }
}

fn would_block(e: &io::Error) -> bool {
    matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted)
}
