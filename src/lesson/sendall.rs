//! send is not sendall: a send may take only part of what it is given (as much as the socket's
//! buffer has room for); sendall sends again until every byte is gone.

use super::{Class, Lesson, LessonError, Taught};
use socket2::SockRef;
use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

pub(super) const LESSON: Lesson = Lesson {
    name: "sendall",
    title: "socket programming: send is not sendall",
    summary: "against a peer that does not read, send returns less than it was given; sendall loops until all is sent",
    run,
};

const MESSAGE: usize = 1 << 20;

fn run(c: &mut Class) -> Result<Taught, LessonError> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    // Small buffers on both sides, so a megabyte cannot fit in them at once.
    SockRef::from(&listener).set_recv_buffer_size(16 * 1024)?;
    let client = TcpStream::connect(listener.local_addr()?)?;
    let (server, _) = listener.accept()?;
    SockRef::from(&client).set_send_buffer_size(16 * 1024)?;
    client.set_nonblocking(true)?;
    let message = vec![b'x'; MESSAGE];

    let first = match (&client).write(&message) {
        Ok(n) => n,
        Err(e) if e.kind() == ErrorKind::WouldBlock => 0,
        Err(e) => return Err(e.into()),
    };
    c.say(format!(
        "client: send({MESSAGE} bytes) = {first}: the peer reads nothing yet, so only what fits in the socket buffers went"
    ));
    c.figure("first_send_bytes", first);
    if first >= MESSAGE {
        return Err(LessonError::Unexpected("send took it all".into()));
    }
    let (again, said) = match (&client).write(&message[first..]) {
        Ok(n) => (n, format!("{n}")),
        Err(e) if e.kind() == ErrorKind::WouldBlock => (0, "-1 (EAGAIN: no room at all)".into()),
        Err(e) => return Err(e.into()),
    };
    c.say(format!(
        "client: send(the rest) = {said}: the buffers are full until the peer reads"
    ));
    c.check()?;

    // The peer starts reading after a moment; sendall sends until every byte is gone.
    let reader = std::thread::spawn(move || -> std::io::Result<usize> {
        std::thread::sleep(Duration::from_millis(200));
        let (mut total, mut buf) = (0, vec![0u8; 64 * 1024]);
        let mut server = server;
        while total < MESSAGE {
            match server.read(&mut buf)? {
                0 => break,
                n => total += n,
            }
        }
        Ok(total)
    });
    let (mut sent, mut calls, mut waits) = (first + again, 0, 0);
    let began = Instant::now();
    while sent < MESSAGE && began.elapsed() < Duration::from_secs(20) {
        c.check()?;
        match (&client).write(&message[sent..]) {
            Ok(n) => {
                sent += n;
                calls += 1;
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                waits += 1;
                // Wait for room rather than spin: what sendall does inside.
                let mut fds = [libc::pollfd {
                    fd: std::os::fd::AsRawFd::as_raw_fd(&client),
                    events: libc::POLLOUT,
                    revents: 0,
                }];
                // SAFETY: one live pollfd, its count given.
                unsafe { libc::poll(fds.as_mut_ptr(), 1, 1000) };
            }
            Err(e) => return Err(e.into()),
        }
    }
    let read = reader
        .join()
        .map_err(|_| LessonError::Unexpected("the reader panicked".into()))??;
    c.say(format!(
        "client: sendall(the rest): {calls} more sends, {waits} waits for room, until all {MESSAGE} bytes were sent; the peer read them all"
    ));
    c.figure("sends_in_all", calls + 2);
    c.figure("sendall_waits", waits);
    if sent != MESSAGE || read != MESSAGE {
        return Err(LessonError::Unexpected(format!(
            "sent {sent} of {MESSAGE}, the peer read {read}"
        )));
    }
    Ok(Taught {
        shows: format!(
            "send takes what fits in the socket's buffers and says how much: {first} of {MESSAGE} \
             bytes here. The rest is the caller's to send; sendall is the loop that sends it, \
             waiting for room each time the peer has not read yet ({} sends in all). A server that \
             uses send alone loses the end of long replies. switchboard writes every reply whole: \
             write_all in the blocking models, and the event loops keep what is unsent and send it \
             when the socket says there is room.",
            calls + 2
        ),
        code: vec![
            "src/model/blocking.rs (write_all: sendall)",
            "src/model/reactor.rs (write_pending: what is left waits for room)",
        ],
    })
}
