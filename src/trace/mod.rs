//! `switchboard trace`: one exchange on the wire, layer by layer — the plan's lesson on the
//! internet's layers, shown with real packets on the learner's own machine.
//!
//! The rooms: `capture` (a packet socket's frames to or from one port, in a thread; a pcap
//! file), `decode` (a frame unwrapped: Ethernet, IP or ARP, TCP or UDP, the application's
//! bytes; sans-IO), `lesson` (what each packet illustrates, TCP's numbers made relative;
//! sans-IO), `exchange` (the socket calls made one at a time), `render` (the text), `hosts`
//! (two network namespaces joined by a cable, for real MAC addresses and ARP).
//!
//! ```no_run
//! let addr: std::net::SocketAddr = "127.0.0.1:8079".parse().unwrap();
//! let trace = switchboard::trace::send_tcp(addr, b"hello", "lo").unwrap();
//! print!("{}", switchboard::trace::render(&trace.events));
//! ```

pub mod capture;
pub mod decode;
pub mod exchange;
pub mod hosts;
pub mod lesson;
pub mod render;

pub use capture::{Capture, CaptureError, Filter, Frame};
pub use decode::{decode, Packet};
pub use lesson::{Conversation, Note};
pub use render::{render, Event};

use std::net::SocketAddr;
use std::time::Duration;

/// An exchange as captured: its socket calls and packets in time order, and the frames as
/// they were on the wire (for a pcap file).
#[derive(Debug, Clone)]
pub struct Trace {
    /// Calls and packets, in order.
    pub events: Vec<Event>,
    /// The frames, whole.
    pub frames: Vec<Frame>,
    /// The reply the server sent.
    pub reply: Vec<u8>,
}

/// Why a trace could not be made.
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    /// The capture could not start.
    #[error(transparent)]
    Capture(#[from] CaptureError),
    /// The exchange itself failed.
    #[error("the exchange with {addr} failed: {source}")]
    Exchange {
        /// The server.
        addr: SocketAddr,
        /// What failed.
        source: std::io::Error,
    },
}

/// How long the capture goes on after the exchange, for its last packets (the final ACK).
const AFTER: Duration = Duration::from_millis(200);

/// Sends `message` to the TCP server at `addr` and reads its reply, capturing on `interface`
/// (and ARP with it, on any interface but loopback, which has none).
pub fn send_tcp(addr: SocketAddr, message: &[u8], interface: &str) -> Result<Trace, TraceError> {
    let arp = interface != "lo";
    traced(addr, interface, arp, || exchange::tcp(addr, message))
}

/// Sends `message` in a datagram to the UDP server at `addr` and reads the reply, capturing on
/// `interface`.
pub fn send_udp(addr: SocketAddr, message: &[u8], interface: &str) -> Result<Trace, TraceError> {
    let arp = interface != "lo";
    traced(addr, interface, arp, || exchange::udp(addr, message))
}

/// Runs `exchange` with a capture of `addr`'s port (and ARP, with `arp`) around it.
fn traced(
    addr: SocketAddr,
    interface: &str,
    arp: bool,
    exchange: impl FnOnce() -> std::io::Result<(Vec<Event>, Vec<u8>)>,
) -> Result<Trace, TraceError> {
    let filter = Filter {
        port: addr.port(),
        arp,
    };
    let capture = Capture::start(interface, filter)?;
    let done = exchange();
    std::thread::sleep(AFTER);
    let frames = capture.stop().map_err(CaptureError::Io)?;
    let (calls, reply) = done.map_err(|source| TraceError::Exchange { addr, source })?;
    let mut events = calls;
    events.extend(annotate(&frames));
    events.sort_by_key(Event::at_us);
    Ok(Trace {
        events,
        frames,
        reply,
    })
}

/// The frames decoded, each with what it shows.
pub fn annotate(frames: &[Frame]) -> Vec<Event> {
    let mut conversation = Conversation::default();
    frames
        .iter()
        .map(|f| {
            let packet = decode(&f.bytes, f.len, f.at_us);
            let note = conversation.note(&packet);
            Event::Packet {
                packet: Box::new(packet),
                note,
            }
        })
        .collect()
}
