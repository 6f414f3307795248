//! The loops: the plan's communication loop spins when its client leaves (recv returns b''
//! forever, and the loop never checks); the fixed one ends there, and the connection loop
//! around it answers the next client.

use super::{Class, Lesson, LessonError, Taught};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

pub(super) const LESSON: Lesson = Lesson {
    name: "loops",
    title: "socket programming: the communication loop and the connection loop",
    summary: "the plan's loop spinning on recv() == b'' after its client leaves (counted), then the fixed loops serving the next client",
    run,
};

/// How long the plan's loop is let spin.
const SPIN: Duration = Duration::from_millis(200);

fn run(c: &mut Class) -> Result<Taught, LessonError> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;

    // The plan's communication loop: recv, send the upper-cased bytes back, again, with no
    // check that recv returned nothing.
    let mut client = TcpStream::connect(addr)?;
    client.write_all(b"hi")?;
    let (mut conn, _) = listener.accept()?;
    let mut buf = [0u8; 1024];
    let n = conn.read(&mut buf)?;
    conn.write_all(&buf[..n].to_ascii_uppercase())?;
    let mut reply = [0u8; 2];
    client.read_exact(&mut reply)?;
    drop(client);
    c.say("client 1: sends b'hi', gets b'HI', hangs up");
    let (began, mut empty) = (Instant::now(), 0u64);
    while began.elapsed() < SPIN {
        let n = conn.read(&mut buf)?;
        let _ = conn.write(&buf[..n]); // send(b''): nothing to send, no error either
        if n == 0 {
            empty += 1;
        }
    }
    c.say(format!(
        "the plan's server: in {} ms, recv(1024) returned b'' {empty} times and the loop went round again each time: it would spin like this forever, a core at 100%",
        SPIN.as_millis()
    ));
    c.figure("empty_recvs_in_spin", empty);
    c.figure("spin_ms", SPIN.as_millis() as u64);
    drop(conn);
    c.check()?;

    // The fixed loops: end the communication loop at b'', and go back to accept.
    let client2 = std::thread::spawn(move || -> std::io::Result<String> {
        let mut c2 = TcpStream::connect(addr)?;
        c2.set_read_timeout(Some(Duration::from_secs(5)))?;
        c2.write_all(b"next")?;
        let mut buf = [0u8; 4];
        c2.read_exact(&mut buf)?;
        Ok(String::from_utf8_lossy(&buf).into_owned())
    });
    let (mut conn, peer) = listener.accept()?;
    c.say(format!(
        "the fixed server: the communication loop ended at b''; the connection loop called accept() again: {peer}"
    ));
    let mut rounds = 0;
    loop {
        let n = conn.read(&mut buf)?;
        rounds += 1;
        if n == 0 {
            break;
        }
        conn.write_all(&buf[..n].to_ascii_uppercase())?;
    }
    let got = client2
        .join()
        .map_err(|_| LessonError::Unexpected("client 2 panicked".into()))??;
    c.say(format!(
        "client 2: got {got:?}; when it hung up, the loop saw b'' once and ended ({rounds} recvs in all)"
    ));
    c.figure("fixed_loop_recvs", rounds);
    if empty < 2 || got != "NEXT" {
        return Err(LessonError::Unexpected(format!(
            "the spin counted {empty} empty recvs; client 2 got {got:?}"
        )));
    }
    Ok(Taught {
        shows: format!(
            "recv returns b'' only when the peer has hung up, and then every time it is called: \
             the plan's loop, which never checks, went round {empty} times in {} ms with nothing to \
             do. The fix is one line: stop the communication loop at b'', close the connection, and \
             let the connection loop accept the next client.",
            SPIN.as_millis()
        ),
        code: vec![
            "src/model/blocking.rs (the communication loop ends at end of stream)",
            "examples/seed_server.rs (the two loops, fixed)",
        ],
    })
}
