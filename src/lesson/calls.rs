//! The rest of the plan's socket calls, each shown working: `connect_ex` on a closed port,
//! `getsockname` and `getpeername`, rebinding a port just used with and without
//! `SO_REUSEADDR`, `settimeout` firing, `setblocking(False)` and EAGAIN, `makefile` and lines.

use super::{Class, Lesson, LessonError, Taught};
use socket2::{Domain, SockAddr, Socket, Type};
use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

pub(super) const LESSON: Lesson = Lesson {
    name: "calls",
    title: "socket programming: the other socket calls",
    summary: "connect_ex, getsockname/getpeername, SO_REUSEADDR, settimeout, setblocking, makefile: each shown working",
    run,
};

fn run(c: &mut Class) -> Result<Taught, LessonError> {
    connect_ex(c)?;
    c.check()?;
    names(c)?;
    c.check()?;
    reuse_addr(c)?;
    c.check()?;
    timeout_and_nonblocking(c)?;
    c.check()?;
    makefile(c)?;
    Ok(Taught {
        shows: "connect_ex returns the error number where connect raises; getsockname and \
                getpeername name the two ends; a port a server just closed stays taken (TIME_WAIT) \
                unless the next socket sets SO_REUSEADDR before bind (and the old one had too, \
                as the plan's server sets it); a timeout turns a wait into an \
                error after that long; a non-blocking socket answers EAGAIN instead of waiting; \
                makefile reads a socket line by line. switchboard sets SO_REUSEADDR on every \
                listener, and its event loops run non-blocking sockets."
            .into(),
        code: vec![
            "src/transport/listener.rs (SO_REUSEADDR, backlog)",
            "src/client/connection.rs (connect, timeouts, what failed said in words)",
            "src/model/reactor.rs (non-blocking sockets and EAGAIN)",
        ],
    })
}

fn connect_ex(c: &mut Class) -> Result<(), LessonError> {
    // A port nobody listens on: bound, then closed, so it is free and closed.
    let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None)?;
    let errno = match socket.connect(&SockAddr::from(addr)) {
        Ok(()) => 0,
        Err(e) => e.raw_os_error().unwrap_or(-1),
    };
    c.say(format!(
        "connect_ex(('127.0.0.1', {port})) = {errno} (ECONNREFUSED: nobody listens there; connect would have raised it)"
    ));
    c.figure("connect_ex_errno", errno);
    if errno != libc::ECONNREFUSED {
        return Err(LessonError::Unexpected(format!("connect_ex gave {errno}")));
    }
    Ok(())
}

fn names(c: &mut Class) -> Result<(), LessonError> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let client = TcpStream::connect(listener.local_addr()?)?;
    let (server, _) = listener.accept()?;
    c.say(format!(
        "client: getsockname() = {}, getpeername() = {}; server: getsockname() = {}, getpeername() = {}",
        client.local_addr()?,
        client.peer_addr()?,
        server.local_addr()?,
        server.peer_addr()?
    ));
    if client.local_addr()? != server.peer_addr()? {
        return Err(LessonError::Unexpected("the two ends disagree".into()));
    }
    Ok(())
}

/// Binds `port` on a new socket, with or without SO_REUSEADDR: the error number, 0 if bound.
fn bind_again(port: u16, reuse: bool) -> std::io::Result<i32> {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None)?;
    socket.set_reuse_address(reuse)?;
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    Ok(match socket.bind(&addr.into()) {
        Ok(()) => 0,
        Err(e) => e.raw_os_error().unwrap_or(-1),
    })
}

fn reuse_addr(c: &mut Class) -> Result<(), LessonError> {
    // A server that set SO_REUSEADDR, as the plan's does; a client; the server hangs up first,
    // so its end of the connection waits in TIME_WAIT (a minute), holding the port.
    let server = Socket::new(Domain::IPV4, Type::STREAM, None)?;
    server.set_reuse_address(true)?;
    let any: SocketAddr = "127.0.0.1:0".parse().expect("an address");
    server.bind(&any.into())?;
    server.listen(5)?;
    let addr = server.local_addr()?.as_socket().expect("IPv4");
    let mut client = TcpStream::connect(addr)?;
    let (conn, _) = server.accept()?;
    drop(conn);
    let _ = client.read(&mut [0u8; 1]); // the server's FIN
    drop(client);
    drop(server);
    std::thread::sleep(Duration::from_millis(50));
    let without = bind_again(addr.port(), false)?;
    c.say(format!(
        "a server on port {} hung up first and closed; a new socket binds it without SO_REUSEADDR: {without} ({})",
        addr.port(),
        if without == libc::EADDRINUSE { "EADDRINUSE: the old connection still holds the port, in TIME_WAIT" } else { "bound" }
    ));
    let with = bind_again(addr.port(), true)?;
    c.say(format!(
        "the same with SO_REUSEADDR set before bind(): {with} ({})",
        if with == 0 {
            "bound: a restarted server listens again at once"
        } else {
            "refused"
        }
    ));
    c.figure("rebind_without_reuseaddr_errno", without);
    c.figure("rebind_with_reuseaddr_errno", with);
    if without != libc::EADDRINUSE || with != 0 {
        return Err(LessonError::Unexpected(format!(
            "rebinding gave {without} without SO_REUSEADDR and {with} with it"
        )));
    }
    Ok(())
}

fn timeout_and_nonblocking(c: &mut Class) -> Result<(), LessonError> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let mut client = TcpStream::connect(listener.local_addr()?)?;
    let _server = listener.accept()?; // connected, and silent
    client.set_read_timeout(Some(Duration::from_millis(200)))?;
    let began = Instant::now();
    let timed_out = matches!(
        client.read(&mut [0u8; 16]),
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)
    );
    let waited = began.elapsed();
    c.say(format!(
        "settimeout(0.2); recv(16) on a silent connection: timed out after {:.2} s",
        waited.as_secs_f64()
    ));
    c.figure("settimeout_fired_after_s", waited.as_secs_f64());
    client.set_read_timeout(None)?;
    client.set_nonblocking(true)?;
    let errno = match client.read(&mut [0u8; 16]) {
        Ok(_) => 0,
        Err(e) => e.raw_os_error().unwrap_or(-1),
    };
    c.say(format!(
        "setblocking(False); recv(16) with nothing to read = {errno} (EAGAIN: come back later, at once, instead of waiting)"
    ));
    c.figure("nonblocking_recv_errno", errno);
    if !timed_out || errno != libc::EAGAIN {
        return Err(LessonError::Unexpected(format!(
            "the timeout fired: {timed_out}; the non-blocking recv gave {errno}"
        )));
    }
    Ok(())
}

fn makefile(c: &mut Class) -> Result<(), LessonError> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let client = TcpStream::connect(listener.local_addr()?)?;
    let (mut server, _) = listener.accept()?;
    server.write_all(b"one\ntwo\nthree\n")?;
    drop(server);
    let lines: Vec<String> = BufReader::new(client).lines().collect::<Result<_, _>>()?;
    c.say(format!(
        "the server sends b'one\\ntwo\\nthree\\n' in one send; makefile().readline() on the client reads {lines:?}"
    ));
    c.figure("makefile_lines", &lines);
    Ok(())
}
