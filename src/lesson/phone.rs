//! The phone: the plan's server, one socket call at a time, each said with what it returned,
//! and the plan's client talking to it.

use super::{Class, Lesson, LessonError, Taught};
use socket2::{Domain, Socket, Type};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::time::Duration;

pub(super) const LESSON: Lesson = Lesson {
    name: "phone",
    title: "socket programming: the phone",
    summary: "the plan's server call by call (socket, setsockopt, bind, listen, accept, recv, send, close) and its client",
    run,
};

fn run(c: &mut Class) -> Result<Taught, LessonError> {
    let phone = Socket::new(Domain::IPV4, Type::STREAM, None)?;
    c.say(format!(
        "server: socket(AF_INET, SOCK_STREAM) = fd {}: buy a phone",
        phone.as_raw_fd()
    ));
    phone.set_reuse_address(true)?;
    c.say("server: setsockopt(SOL_SOCKET, SO_REUSEADDR, 1): a restart may rebind the port at once");
    let any: SocketAddr = "127.0.0.1:0".parse().expect("an address");
    phone.bind(&any.into())?;
    let local = phone
        .local_addr()?
        .as_socket()
        .ok_or_else(|| LessonError::Unexpected("no IPv4 address bound".into()))?;
    c.say(format!(
        "server: bind(('127.0.0.1', 0)): bound to {local}: insert the SIM (port 0: the kernel picks a free one)"
    ));
    phone.listen(5)?;
    c.say("server: listen(5): switch it on; the kernel now answers calls and queues up to 5 not yet taken");
    c.figure("port", local.port());

    // The plan's client, in a thread of its own: connect, two messages, then hang up.
    let client = std::thread::spawn(move || -> std::io::Result<Vec<String>> {
        let mut conn = TcpStream::connect(local)?;
        conn.set_read_timeout(Some(Duration::from_secs(5)))?;
        let mut replies = Vec::new();
        for msg in ["hello", "world"] {
            conn.write_all(msg.as_bytes())?;
            let mut buf = [0u8; 1024];
            let n = conn.read(&mut buf)?;
            replies.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
        Ok(replies)
    });

    let (conn, peer) = phone.accept()?;
    let peer = peer.as_socket().map_or("?".into(), |p| p.to_string());
    c.say(format!(
        "server: accept() = fd {}, from {peer}: a call; a new socket for it, the listening one stays open",
        conn.as_raw_fd()
    ));
    c.figure("client", &peer);
    let mut buf = [0u8; 1024];
    loop {
        c.check()?;
        let n = (&conn).read(&mut buf)?;
        if n == 0 {
            c.say("server: recv(1024) = b'': the client hung up, so the communication loop ends (the plan's spun forever here)");
            break;
        }
        let got = String::from_utf8_lossy(&buf[..n]).into_owned();
        c.say(format!("server: recv(1024) = {got:?} ({n} bytes)"));
        buf[..n].make_ascii_uppercase();
        (&conn).write_all(&buf[..n])?;
        c.say(format!(
            "server: sendall({:?}): every byte sent",
            String::from_utf8_lossy(&buf[..n])
        ));
    }
    let replies = client
        .join()
        .map_err(|_| LessonError::Unexpected("the client panicked".into()))??;
    c.say(format!("client: got {replies:?}, then close()"));
    c.figure("replies", &replies);
    if replies != ["HELLO", "WORLD"] {
        return Err(LessonError::Unexpected(format!("replies {replies:?}")));
    }
    drop(conn);
    c.say("server: close() the call's socket: hang up");
    drop(phone);
    c.say("server: close() the listening socket, once, when serving is over: switch the phone off");
    Ok(Taught {
        shows: "A server is a handful of calls: socket, bind and listen make a phone that rings; \
                accept answers one call with a socket of its own; recv and send talk until recv \
                returns nothing, which means the caller hung up. switchboard's iterative model is \
                this server, forever and without the plan's bugs."
            .into(),
        code: vec![
            "src/transport/listener.rs (socket, setsockopt, bind, listen)",
            "src/model/blocking.rs (accept, the communication loop)",
            "examples/seed_server.rs (the plan's server step by step)",
        ],
    })
}
