//! A test's connection to a server over TCP or a Unix socket, and the framing helpers for it.

#![allow(dead_code)] // each test binary uses its own part of these helpers

use super::*;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::unix::net::UnixStream;
use std::time::Duration;

/// Connects to a `tcp://` or `unix://` address; reads and writes time out after the patience.
pub fn dial(addr: &str) -> std::io::Result<TestConn> {
    let conn = match addr.strip_prefix("unix://") {
        Some(path) => TestConn::Unix(UnixStream::connect(path)?),
        None => TestConn::Tcp(TcpStream::connect(addr.trim_start_matches("tcp://"))?),
    };
    conn.set_timeouts(Some(PATIENCE));
    Ok(conn)
}

/// A connection to a test server over TCP or a Unix socket, for checks that run over both.
pub enum TestConn {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl TestConn {
    pub fn set_timeouts(&self, t: Option<Duration>) {
        match self {
            TestConn::Tcp(s) => {
                s.set_read_timeout(t).unwrap();
                s.set_write_timeout(t).unwrap();
            }
            TestConn::Unix(s) => {
                s.set_read_timeout(t).unwrap();
                s.set_write_timeout(t).unwrap();
            }
        }
    }

    pub fn set_write_timeout(&self, t: Option<Duration>) {
        match self {
            TestConn::Tcp(s) => s.set_write_timeout(t).unwrap(),
            TestConn::Unix(s) => s.set_write_timeout(t).unwrap(),
        }
    }

    pub fn try_clone(&self) -> TestConn {
        match self {
            TestConn::Tcp(s) => TestConn::Tcp(s.try_clone().unwrap()),
            TestConn::Unix(s) => TestConn::Unix(s.try_clone().unwrap()),
        }
    }

    /// Shuts the writing side: the server sees end of stream.
    pub fn shut_write(&self) {
        match self {
            TestConn::Tcp(s) => s.shutdown(Shutdown::Write).unwrap(),
            TestConn::Unix(s) => s.shutdown(Shutdown::Write).unwrap(),
        }
    }

    /// Ends the connection abruptly: TCP sends a reset (SO_LINGER 0); a Unix socket has no
    /// reset, and simply closes.
    pub fn abort(self) {
        if let TestConn::Tcp(s) = &self {
            socket2::SockRef::from(s)
                .set_linger(Some(Duration::ZERO))
                .unwrap();
        }
    }
}

impl Read for TestConn {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            TestConn::Tcp(s) => s.read(buf),
            TestConn::Unix(s) => s.read(buf),
        }
    }
}

impl Write for TestConn {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            TestConn::Tcp(s) => s.write(buf),
            TestConn::Unix(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Reads exactly `n` bytes.
pub fn read_n(conn: &mut impl Read, n: usize) -> Vec<u8> {
    let mut buf = vec![0; n];
    conn.read_exact(&mut buf).expect("read the whole reply");
    buf
}

/// Sends a `len` frame.
pub fn send_len(conn: &mut impl Write, body: &[u8]) {
    conn.write_all(&(body.len() as u32).to_be_bytes()).unwrap();
    conn.write_all(body).unwrap();
}

/// Reads one `len` frame.
pub fn recv_len(conn: &mut impl Read) -> Vec<u8> {
    let header = read_n(conn, 4);
    let n = u32::from_be_bytes(header.try_into().unwrap()) as usize;
    read_n(conn, n)
}

/// Reads one `\n`-terminated line (without the `\n`).
pub fn recv_line(conn: &mut impl Read) -> Vec<u8> {
    let mut line = Vec::new();
    let mut byte = [0u8];
    loop {
        conn.read_exact(&mut byte).expect("read a line");
        if byte[0] == b'\n' {
            return line;
        }
        line.push(byte[0]);
    }
}

/// Reads until end of stream.
pub fn read_to_end(conn: &mut impl Read) -> Vec<u8> {
    let mut all = Vec::new();
    conn.read_to_end(&mut all).expect("read to end of stream");
    all
}

/// True when the peer has closed (EOF or reset) within the patience.
pub fn closed_by_peer(conn: &mut impl Read) -> bool {
    let mut buf = [0u8; 64];
    loop {
        match conn.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
    }
}

pub fn upper(b: &[u8]) -> Vec<u8> {
    b.to_ascii_uppercase()
}

/// A TCP client bound to its own loopback address `source` (127.0.0.2, ...), connected to `to`
/// (`IP:PORT`): a peer the server sees at another address than the test's.
pub fn connect_from(source: &str, to: &str) -> TestConn {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    let source: std::net::SocketAddr = format!("{source}:0").parse().unwrap();
    socket.bind(&source.into()).unwrap();
    let to: std::net::SocketAddr = to.parse().unwrap();
    socket.connect(&to.into()).unwrap();
    let c = TestConn::Tcp(socket.into());
    c.set_timeouts(Some(PATIENCE));
    c
}
