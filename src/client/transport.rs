//! What a connection runs over: a plain socket or a TLS session on one, each non-blocking.

use crate::client::error::TlsFailure;
use crate::transport::Stream;
use socket2::Socket;
use std::io::{self, ErrorKind, Read, Write};
use std::os::fd::AsRawFd;
use std::path::PathBuf;

/// A TLS connection driven by hand over a non-blocking socket: rustls is sans-IO, so the
/// client moves its records to and from the socket as the server's session does.
pub(super) struct TlsStream {
    pub(super) stream: Stream,
    pub(super) conn: rustls::ClientConnection,
}

impl TlsStream {
    /// Writes the records rustls has queued until they are out or the socket is full.
    pub(super) fn flush(&mut self) -> io::Result<()> {
        while self.conn.wants_write() {
            match self.conn.write_tls(&mut &self.stream) {
                Ok(_) => {}
                Err(e) if would_block(&e) => return Ok(()),
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Encrypts what of `data` rustls takes, and sends what it can.
    pub(super) fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = if data.is_empty() || self.conn.is_handshaking() {
            0 // the request waits for the handshake
        } else {
            self.conn.writer().write(data)?
        };
        self.flush()?;
        Ok(n)
    }

    /// Reads records off the socket and returns what they decrypt to: `WouldBlock` until
    /// some plaintext is here, 0 at the end of the stream.
    pub(super) fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match self.conn.reader().read(buf) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == ErrorKind::UnexpectedEof => return Ok(0),
                Err(e) => return Err(e),
            }
            let got = self.conn.read_tls(&mut &self.stream)?; // WouldBlock goes to the caller
            if got == 0 {
                return Ok(0);
            }
            self.conn
                .process_new_packets()
                .map_err(|e| io::Error::new(ErrorKind::InvalidData, TlsFailure(e)))?;
            self.flush()?; // the handshake's answers
        }
    }
}

/// What a client talks over.
pub(super) enum Transport {
    Stream(Stream),
    Tls(Box<TlsStream>),
    /// A connected datagram socket, and the socket file a Unix one had to bind.
    Datagram {
        socket: Socket,
        own_path: Option<PathBuf>,
    },
}

impl Transport {
    pub(super) fn set_nonblocking(&self) -> io::Result<()> {
        match self {
            Transport::Stream(s) => s.set_nonblocking(true),
            Transport::Tls(tls) => tls.stream.set_nonblocking(true),
            Transport::Datagram { socket, .. } => socket.set_nonblocking(true),
        }
    }

    pub(super) fn fd(&self) -> std::os::fd::RawFd {
        match self {
            Transport::Stream(s) => s.as_raw_fd(),
            Transport::Tls(tls) => tls.stream.as_raw_fd(),
            Transport::Datagram { socket, .. } => socket.as_raw_fd(),
        }
    }

    /// TLS records wait to be sent (the handshake, before any request).
    pub(super) fn wants_write(&self) -> bool {
        matches!(self, Transport::Tls(tls) if tls.conn.wants_write() || tls.conn.is_handshaking())
    }

    pub(super) fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        match self {
            Transport::Stream(s) => (&*s).write(data),
            Transport::Tls(tls) => tls.write(data),
            Transport::Datagram { socket, .. } => socket.send(data),
        }
    }

    pub(super) fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Transport::Stream(s) => (&*s).read(buf),
            Transport::Tls(tls) => tls.read(buf),
            Transport::Datagram { socket, .. } => (&*socket).read(buf),
        }
    }
}

impl Drop for Transport {
    fn drop(&mut self) {
        if let Transport::Datagram {
            own_path: Some(path),
            ..
        } = self
        {
            let _ = std::fs::remove_file(path);
        }
    }
}

pub(super) fn would_block(e: &io::Error) -> bool {
    matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted)
}
