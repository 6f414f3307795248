//! The exchange a trace watches, made one socket call at a time, each noted as it starts so
//! the packets it causes follow it: TCP's `connect`, `send`, `recv`, `close`; UDP's `sendto`
//! and `recvfrom`.

use crate::trace::render::Event;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How long a reply may take.
const PATIENCE: Duration = Duration::from_secs(3);
/// After the last byte of a reply, how long more may come before it is taken as whole.
const QUIET: Duration = Duration::from_millis(200);

fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

/// The calls made so far.
struct Calls(Vec<Event>);

impl Calls {
    /// Notes a call as it starts; `result` says how it ended.
    fn made<T>(
        &mut self,
        call: String,
        f: impl FnOnce() -> io::Result<T>,
        result: impl FnOnce(&T) -> String,
    ) -> io::Result<T> {
        let at_us = now_us();
        let outcome = f();
        let said = match &outcome {
            Ok(v) => result(v),
            Err(e) => format!("error: {e}"),
        };
        self.0.push(Event::Call {
            at_us,
            call: format!("{call} -> {said}"),
        });
        outcome
    }
}

/// Sends `message` to the TCP server at `addr`, reads its reply, and closes: the calls made,
/// each with its result, and the reply.
pub fn tcp(addr: SocketAddr, message: &[u8]) -> io::Result<(Vec<Event>, Vec<u8>)> {
    let mut calls = Calls(Vec::new());
    let mut stream = calls.made(
        format!("connect({addr})"),
        || TcpStream::connect_timeout(&addr, PATIENCE),
        |s| match s.local_addr() {
            Ok(local) => format!("connected, from {local}"),
            Err(_) => "connected".into(),
        },
    )?;
    let _ = stream.set_nodelay(true);
    let n = message.len();
    calls.made(
        format!("send({n} bytes)"),
        || stream.write_all(message),
        |_| format!("{n}"),
    )?;
    let reply = calls.made(
        "recv()".into(),
        || read_reply(&mut stream, n),
        |r| format!("{} bytes", r.len()),
    )?;
    calls.made(
        "close()".into(),
        || stream.shutdown(Shutdown::Write),
        |_| "ok".into(),
    )?;
    // The peer's FIN, then ours acknowledged: the close's packets, before the socket goes.
    let _ = read_reply(&mut stream, usize::MAX);
    drop(stream);
    Ok((calls.0, reply))
}

/// Sends `message` in one datagram to the UDP server at `addr` and reads the one that answers.
pub fn udp(addr: SocketAddr, message: &[u8]) -> io::Result<(Vec<Event>, Vec<u8>)> {
    let mut calls = Calls(Vec::new());
    let any: SocketAddr = if addr.is_ipv4() {
        "0.0.0.0:0".parse().expect("an address")
    } else {
        "[::]:0".parse().expect("an address")
    };
    let socket = calls.made(
        "socket(SOCK_DGRAM), bind()".into(),
        || UdpSocket::bind(any),
        |s| match s.local_addr() {
            Ok(local) => format!("bound to port {}", local.port()),
            Err(_) => "bound".into(),
        },
    )?;
    socket.set_read_timeout(Some(PATIENCE))?;
    let n = message.len();
    calls.made(
        format!("sendto({n} bytes, {addr})"),
        || socket.send_to(message, addr),
        |sent| format!("{sent}"),
    )?;
    let mut buf = vec![0u8; 65_536];
    let (got, _) = calls.made(
        "recvfrom()".into(),
        || socket.recv_from(&mut buf),
        |(got, from)| format!("{got} bytes from {from}"),
    )?;
    buf.truncate(got);
    calls.made(
        "close()".into(),
        || {
            drop(socket);
            Ok(())
        },
        |_| "ok: no packet, UDP has no connection to close".into(),
    )?;
    Ok((calls.0, buf))
}

/// Reads until `want` bytes came, the peer closed, or nothing more came for [`QUIET`].
fn read_reply(stream: &mut TcpStream, want: usize) -> io::Result<Vec<u8>> {
    let mut reply = Vec::new();
    let mut buf = [0u8; 65_536];
    let deadline = Instant::now() + PATIENCE;
    stream.set_read_timeout(Some(QUIET))?;
    while reply.len() < want && Instant::now() < deadline {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => reply.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                if !reply.is_empty() || want == usize::MAX {
                    break;
                }
            }
            Err(e) => return Err(e),
        }
    }
    Ok(reply)
}
