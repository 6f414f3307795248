//! The layers: one exchange with a real server captured on loopback and unwrapped layer by
//! layer (`switchboard trace`), what each layer adds said in bytes.

use super::{Class, Lesson, LessonError, Taught};
use crate::trace::decode::{Network, Transport};
use crate::trace::{self, Event};

pub(super) const LESSON: Lesson = Lesson {
    name: "layers",
    title: "the internet's layers: what the OS wraps around a message",
    summary: "one exchange captured and unwrapped layer by layer: Ethernet, IP, TCP, the application's bytes (needs root)",
    run,
};

fn run(c: &mut Class) -> Result<Taught, LessonError> {
    let served = c.serve("tcp://127.0.0.1:0", &["--no-store"])?;
    let traced = trace::send_tcp(served.sockaddr(), b"hello", "lo").map_err(|e| match e {
        trace::TraceError::Capture(e @ trace::CaptureError::NotPermitted { .. }) => {
            LessonError::Needs(format!("{e} (sudo switchboard lesson layers)"))
        }
        other => LessonError::Io(std::io::Error::other(other)),
    })?;
    drop(served);
    for line in trace::render(&traced.events).lines() {
        c.say(line);
    }
    let request = traced.events.iter().find_map(|e| match e {
        Event::Packet { packet, .. } if packet.payload == b"hello" => Some(packet),
        _ => None,
    });
    let Some(p) = request else {
        return Err(LessonError::Unexpected(
            "the request was not seen on the wire".into(),
        ));
    };
    let link = p.link.as_ref().map_or(0, |l| l.header_len);
    let ip = match &p.network {
        Some(Network::Ip { header_len, .. }) => *header_len,
        _ => 0,
    };
    let tcp = match &p.transport {
        Some(Transport::Tcp { header_len, .. }) => *header_len,
        _ => 0,
    };
    c.figure("frame_bytes", p.frame_len);
    c.figure("ethernet_header_bytes", link);
    c.figure("ip_header_bytes", ip);
    c.figure("tcp_header_bytes", tcp);
    c.figure("message_bytes", p.payload.len());
    c.figure("packets", traced.frames.len());
    Ok(Taught {
        shows: format!(
            "The application handed the kernel 5 bytes; on the wire they were a {}-byte frame: \
             the transport layer (TCP) added {tcp} bytes of ports, sequence numbers and flags, the \
             network layer (IP) {ip} bytes of addresses and a TTL, the link layer (Ethernet) {link} \
             bytes of MAC addresses. The handshake, the acknowledgements and the close are packets \
             of their own: {} in all for one message and its reply. `switchboard trace hosts` \
             shows the same between two hosts, with real MAC addresses and ARP.",
            p.frame_len,
            traced.frames.len()
        ),
        code: vec![
            "src/trace/decode.rs (each layer unwrapped)",
            "src/sys/packet.rs (the capture)",
        ],
    })
}
