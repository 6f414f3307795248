//! The backlog: `listen(5)` lets the kernel finish the handshake for a few clients the server
//! has not accepted yet; past them, a new client's SYN is dropped, and it tries again a second
//! later. A large backlog takes the whole burst.

use super::{Class, Lesson, LessonError, Taught};
use socket2::{Domain, Socket, Type};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

pub(super) const LESSON: Lesson = Lesson {
    name: "backlog",
    title: "socket programming: listen(5) under a burst",
    summary: "a burst of connections against listen(5) and against a large backlog: how many wait, how many are dropped and retried, what it costs",
    run,
};

/// Clients in the burst.
const BURST: usize = 40;
/// How long the server is busy before it accepts.
const BUSY: Duration = Duration::from_millis(300);
/// A connect slower than this was retried (the first SYN retransmission comes after 1 s).
const RETRIED: Duration = Duration::from_millis(900);

fn run(c: &mut Class) -> Result<Taught, LessonError> {
    let mut results = Vec::new();
    for backlog in [5, 1024] {
        c.check()?;
        let times = burst(backlog)?;
        let quick = times.iter().filter(|t| **t < RETRIED).count();
        let slowest = times.iter().max().copied().unwrap_or_default();
        c.say(format!(
            "listen({backlog}), the server busy for {} ms, then accepting: of {BURST} clients connecting at once, {quick} connected at once (the kernel completed their handshakes and queued them), {} had their SYN dropped and connected only when they sent it again; the slowest took {} ms",
            BUSY.as_millis(),
            BURST - quick,
            slowest.as_millis()
        ));
        c.figure(&format!("listen_{backlog}_connected_at_once"), quick);
        c.figure(&format!("listen_{backlog}_retried"), BURST - quick);
        c.figure(
            &format!("listen_{backlog}_slowest_connect_ms"),
            slowest.as_millis() as u64,
        );
        results.push((backlog, quick, slowest));
    }
    let (small, large) = (results[0], results[1]);
    if small.1 >= BURST || large.1 < BURST {
        return Err(LessonError::Unexpected(format!("bursts {results:?}")));
    }
    Ok(Taught {
        shows: format!(
            "The backlog is the queue of connections the kernel has finished but the server has \
             not accepted. With listen(5) only {} of {BURST} fit while the server was busy; the \
             others' SYNs were dropped, and each client waited for its own retransmission, a \
             second or more ({} ms for the slowest), for nothing but a short queue. With a backlog \
             of 1024 all {BURST} connected at once. switchboard listens with 1024 by default \
             (--backlog).",
            small.1,
            small.2.as_millis()
        ),
        code: vec!["src/transport/listener.rs (listen with --backlog, default 1024)"],
    })
}

/// How long each client of a burst took to connect to a server listening with `backlog`,
/// busy for [`BUSY`] before it accepts.
fn burst(backlog: i32) -> std::io::Result<Vec<Duration>> {
    let server = Socket::new(Domain::IPV4, Type::STREAM, None)?;
    let any: SocketAddr = "127.0.0.1:0".parse().expect("an address");
    server.bind(&any.into())?;
    server.listen(backlog)?;
    let addr = server.local_addr()?.as_socket().expect("IPv4");
    let clients: Vec<_> = (0..BURST)
        .map(|_| {
            std::thread::spawn(move || -> std::io::Result<(Duration, TcpStream)> {
                let began = Instant::now();
                let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(10))?;
                Ok((began.elapsed(), stream))
            })
        })
        .collect();
    // The server, busy for a moment, then accepting until every client has connected.
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let accepting = {
        let done = done.clone();
        std::thread::spawn(move || -> std::io::Result<Vec<Socket>> {
            std::thread::sleep(BUSY);
            server.set_nonblocking(true)?;
            let mut accepted = Vec::new();
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                match server.accept() {
                    Ok((conn, _)) => accepted.push(conn),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(5))
                    }
                    Err(e) => return Err(e),
                }
            }
            Ok(accepted)
        })
    };
    let mut times = Vec::new();
    for client in clients {
        let joined = client
            .join()
            .map_err(|_| std::io::Error::other("a client panicked"));
        match joined {
            Ok(Ok((took, _stream))) => times.push(took),
            Ok(Err(e)) | Err(e) => {
                done.store(true, std::sync::atomic::Ordering::Relaxed);
                let _ = accepting.join();
                return Err(e);
            }
        }
    }
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = accepting.join();
    Ok(times)
}
