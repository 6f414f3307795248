//! A connection to a server: made (TCP, TLS, Unix, or a datagram socket), then a request
//! sent and its reply read, both at once.

use crate::addr::Addr;
use crate::client::error::{tls_or_io, ClientError};
use crate::client::transport::{would_block, TlsStream, Transport};
use crate::codec::{Codec, FrameError, Framing, DEFAULT_MAX_FRAME};
use crate::sys;
use crate::transport::{client_socket_path, Stream, MAX_DATAGRAM};
use bytes::BytesMut;
use socket2::{Domain, SockAddr, Socket, Type};
use std::io;
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

/// A connection to a server that sends requests and reads replies in one framing.
pub struct Client {
    transport: Transport,
    codec: Box<dyn Codec>,
    framing: Framing,
    input: BytesMut,
    timeout: Duration,
    quiet: Duration,
}

impl Client {
    /// Connects to an address; a `tls://` one trusts no certificate (see
    /// [`connect_tls`](Client::connect_tls)).
    pub fn connect(addr: &Addr, framing: Framing) -> Result<Client, ClientError> {
        Client::connect_tls(addr, framing, None)
    }

    /// Connects to an address, with this TLS configuration for a `tls://` one (see
    /// [`crate::tls::client_config`]).
    pub fn connect_tls(
        addr: &Addr,
        framing: Framing,
        tls: Option<std::sync::Arc<rustls::ClientConfig>>,
    ) -> Result<Client, ClientError> {
        let connect_err = |source| ClientError::Connect {
            addr: addr.clone(),
            source,
        };
        let transport = match addr {
            Addr::Tls { addr: sa, host } => {
                let s = TcpStream::connect(sa).map_err(connect_err)?;
                s.set_nodelay(true).map_err(connect_err)?;
                let config = match tls {
                    Some(config) => config,
                    None => crate::tls::client_config(None, false)?,
                };
                let conn = rustls::ClientConnection::new(config, crate::tls::server_name(host))
                    .map_err(ClientError::Tls)?;
                Transport::Tls(Box::new(TlsStream {
                    stream: Stream::Tcp(s),
                    conn,
                }))
            }
            Addr::Tcp(sa) => {
                let s = TcpStream::connect(sa).map_err(connect_err)?;
                s.set_nodelay(true).map_err(connect_err)?;
                Transport::Stream(Stream::Tcp(s))
            }
            Addr::Unix(path) => Transport::Stream(Stream::Unix(
                UnixStream::connect(path).map_err(connect_err)?,
            )),
            Addr::Udp(sa) => {
                let socket = Socket::new(Domain::for_address(*sa), Type::DGRAM, None)
                    .map_err(connect_err)?;
                socket.connect(&(*sa).into()).map_err(connect_err)?;
                Transport::Datagram {
                    socket,
                    own_path: None,
                }
            }
            Addr::UnixGram(path) => {
                // A Unix datagram client needs an address of its own for the reply to come to.
                let own = client_socket_path();
                let socket = Socket::new(Domain::UNIX, Type::DGRAM, None).map_err(connect_err)?;
                socket
                    .bind(&SockAddr::unix(&own).map_err(connect_err)?)
                    .map_err(connect_err)?;
                let transport = Transport::Datagram {
                    socket,
                    own_path: Some(own),
                };
                if let Transport::Datagram { socket, .. } = &transport {
                    socket
                        .connect(&SockAddr::unix(path).map_err(connect_err)?)
                        .map_err(connect_err)?;
                }
                transport
            }
        };
        transport.set_nonblocking().map_err(connect_err)?;
        Ok(Client {
            transport,
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
        if let Transport::Datagram { socket, .. } = &self.transport {
            return self.datagram_request(socket, &out);
        }
        let mut sent = 0;
        let mut raw_reply = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        let deadline = Instant::now() + self.timeout;
        loop {
            if sent == out.len() {
                if let Some(reply) = reply_so_far(
                    &mut *self.codec,
                    &mut self.input,
                    self.framing,
                    msg.len(),
                    &mut raw_reply,
                    false,
                )? {
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
            let interest = sys::Interest {
                read: true,
                write: sent < out.len() || self.transport.wants_write(),
            };
            let mut fd = sys::PollFd::new(self.transport.fd(), interest);
            if sys::poll(std::slice::from_mut(&mut fd), Some(wait))? == 0 {
                if wait < deadline - now {
                    return Ok(std::mem::take(&mut raw_reply)); // the raw reply went quiet
                }
                continue;
            }
            if sent < out.len() || self.transport.wants_write() {
                match self.transport.write(&out[sent..]) {
                    Ok(n) => sent += n,
                    Err(e) if would_block(&e) => {}
                    Err(e) => return Err(e.into()),
                }
            }
            match self.transport.read(&mut buf) {
                Ok(0) => {
                    return match reply_so_far(
                        &mut *self.codec,
                        &mut self.input,
                        self.framing,
                        msg.len(),
                        &mut raw_reply,
                        true,
                    )? {
                        Some(reply) => Ok(reply),
                        None => Err(ClientError::Closed),
                    }
                }
                Ok(n) => self.input.extend_from_slice(&buf[..n]),
                Err(e) if would_block(&e) => {}
                Err(e) => return Err(tls_or_io(e)),
            }
        }
    }

    /// One datagram out, one back: the reply is the whole datagram, decoded in the framing.
    fn datagram_request(&self, socket: &Socket, out: &[u8]) -> Result<Vec<u8>, ClientError> {
        socket.send(out)?;
        let mut fd = sys::pollin(socket.as_raw_fd());
        if sys::poll(std::slice::from_mut(&mut fd), Some(self.timeout))? == 0 {
            return Err(ClientError::Timeout(self.timeout));
        }
        let mut buf = vec![0u8; MAX_DATAGRAM];
        let (n, _) = sys::recv_datagram(socket, &mut buf)?;
        if n > buf.len() {
            return Err(FrameError::TooLong {
                len: n,
                max: buf.len(),
            }
            .into());
        }
        if self.framing == Framing::Raw {
            return Ok(buf[..n].to_vec());
        }
        let mut reply = BytesMut::from(&buf[..n]);
        let mut codec = self.framing.codec(DEFAULT_MAX_FRAME);
        codec
            .decode_eof(&mut reply)?
            .map(|f| f.to_vec())
            .ok_or(ClientError::Closed)
    }

    /// Shuts the writing side of a stream: the server sees end of stream, and its replies
    /// still arrive. (A datagram client has nothing to shut.)
    pub fn shutdown_write(&mut self) -> io::Result<()> {
        match &mut self.transport {
            Transport::Stream(stream) => stream.shutdown(std::net::Shutdown::Write),
            Transport::Tls(tls) => {
                // TLS's own end first (close_notify), then the socket's.
                tls.conn.send_close_notify();
                tls.flush()?;
                tls.stream.shutdown(std::net::Shutdown::Write)
            }
            Transport::Datagram { .. } => Ok(()),
        }
    }
}

/// The reply, if what was received completes one.
pub(super) fn reply_so_far(
    codec: &mut dyn Codec,
    input: &mut BytesMut,
    framing: Framing,
    sent: usize,
    raw: &mut Vec<u8>,
    eof: bool,
) -> Result<Option<Vec<u8>>, ClientError> {
    if framing == Framing::Raw {
        raw.extend_from_slice(&input.split());
        let done = raw.len() >= sent || (eof && !raw.is_empty());
        return Ok(done.then(|| std::mem::take(raw)));
    }
    let frame = if eof {
        codec.decode_eof(input)?
    } else {
        codec.decode(input)?
    };
    Ok(frame.map(|f| f.to_vec()))
}
