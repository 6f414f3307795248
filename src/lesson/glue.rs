//! Messages glue together (the plan's "sticky packets"): TCP carries a stream of bytes, not
//! messages, so two quick sends can arrive as one `recv` and one large send as several. A
//! framing says where each message ends.

use super::{Class, Lesson, LessonError, Taught};
use crate::codec::Framing;
use bytes::BytesMut;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

pub(super) const LESSON: Lesson = Lesson {
    name: "glue",
    title: "socket programming: messages glue together",
    summary: "two quick sends arrive as one recv, a large one as several; the line and len framings fix it",
    run,
};

/// The large message: far more than one `recv` of the plan's 1024 bytes, or of one segment.
const LARGE: usize = 1 << 20;

fn run(c: &mut Class) -> Result<Taught, LessonError> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let mut client = TcpStream::connect(addr)?;
    let (mut server, _) = listener.accept()?;
    server.set_read_timeout(Some(Duration::from_secs(5)))?;

    // Two messages sent one right after the other, read after a moment.
    client.write_all(b"hello")?;
    client.write_all(b"world")?;
    c.say("client: send(b'hello'), then send(b'world'), two messages");
    std::thread::sleep(Duration::from_millis(100));
    let mut buf = vec![0u8; 1024];
    let n = server.read(&mut buf)?;
    let got = String::from_utf8_lossy(&buf[..n]).into_owned();
    c.say(format!(
        "server: recv(1024) = {got:?}: one recv, both messages, glued"
    ));
    c.figure("two_sends_first_recv", &got);
    if got != "helloworld" {
        return Err(LessonError::Unexpected(format!(
            "the first recv got {got:?}, not both messages"
        )));
    }
    c.check()?;

    // One large message, read 1024 bytes at a time as the plan reads.
    let large = vec![b'x'; LARGE];
    let sender = std::thread::spawn(move || client.write_all(&large).map(|()| client));
    let (mut received, mut recvs) = (0, 0);
    while received < LARGE {
        let n = server.read(&mut buf)?;
        if n == 0 {
            break;
        }
        received += n;
        recvs += 1;
    }
    let mut client = sender
        .join()
        .map_err(|_| LessonError::Unexpected("the sender panicked".into()))??;
    c.say(format!(
        "client: sendall() of one message of {LARGE} bytes; server: {recvs} recv(1024) calls to read it"
    ));
    c.figure("large_message_bytes", LARGE);
    c.figure("large_message_recvs", recvs);
    c.check()?;

    // The fix: a framing. Each message ends with a newline (line) or starts with its length
    // (len); the receiver cuts the stream where the framing says, however it arrived.
    client.write_all(b"hello\n")?;
    client.write_all(b"world\n")?;
    std::thread::sleep(Duration::from_millis(100));
    let n = server.read(&mut buf)?;
    let frames = cut(Framing::Line, &buf[..n]);
    c.say(format!(
        "with line framing: send(b'hello\\n'), send(b'world\\n'); recv got {n} bytes, cut at each newline into {frames:?}"
    ));
    let mut framed = Vec::new();
    for msg in [&b"hello"[..], &b"world"[..]] {
        framed.extend_from_slice(&(msg.len() as u32).to_be_bytes());
        framed.extend_from_slice(msg);
    }
    client.write_all(&framed)?;
    std::thread::sleep(Duration::from_millis(100));
    let n = server.read(&mut buf)?;
    let len_frames = cut(Framing::Len, &buf[..n]);
    c.say(format!(
        "with len framing: each message after its length in 4 bytes; recv got {n} bytes, cut into {len_frames:?}"
    ));
    c.figure("line_frames", &frames);
    c.figure("len_frames", &len_frames);
    Ok(Taught {
        shows: format!(
            "TCP delivers a stream of bytes, not messages: the two sends came out of one recv, and \
             one send of {LARGE} bytes took {recvs} recvs. Only a framing tells the receiver where a \
             message ends: a newline after each (line), or its length before it (len). switchboard's \
             codecs cut the stream that way whatever pieces it arrives in; raw is the plan's own, \
             unframed."
        ),
        code: vec![
            "src/codec/line.rs",
            "src/codec/len.rs",
            "src/codec/raw.rs (the plan's bytes as they come)",
        ],
    })
}

/// The messages `framing` finds in `bytes`.
fn cut(framing: Framing, bytes: &[u8]) -> Vec<String> {
    let mut codec = framing.codec(crate::codec::DEFAULT_MAX_FRAME);
    let mut src = BytesMut::from(bytes);
    let mut out = Vec::new();
    while let Ok(Some(frame)) = codec.decode(&mut src) {
        out.push(String::from_utf8_lossy(&frame).into_owned());
    }
    out
}
