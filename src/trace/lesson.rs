//! What each packet of an exchange illustrates, in the plan's words, and TCP's sequence and
//! acknowledgement numbers made relative to each direction's first (as Wireshark shows them).
//! Sans-IO: packets in order in, a [`Note`] for each out.

use crate::trace::decode::{Network, Packet, Transport};
use std::collections::HashMap;
use std::net::IpAddr;

/// One direction of a TCP connection: from an address and port to another.
type Direction = (IpAddr, u16, IpAddr, u16);

/// What one packet shows.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Note {
    /// TCP's sequence number less the first of its direction (the SYN's): 0 at the SYN, then
    /// the bytes sent before this segment's.
    pub relative_seq: Option<u32>,
    /// TCP's acknowledgement number less the first of the other direction: the bytes received
    /// so far (plus one for the SYN, and one for a FIN).
    pub relative_ack: Option<u32>,
    /// The lesson it illustrates, in one line.
    pub lesson: String,
}

/// The exchange so far: each direction's first sequence number, and how far each
/// connection's handshake has come.
#[derive(Debug, Default)]
pub struct Conversation {
    first_seq: HashMap<Direction, u32>,
    /// Connections (by the direction of their SYN) whose SYN-ACK was seen, not yet their ACK.
    answered: HashMap<Direction, ()>,
}

impl Conversation {
    /// Notes `packet`, the next of the capture.
    pub fn note(&mut self, packet: &Packet) -> Note {
        let (relative_seq, relative_ack) = self.relative(packet);
        Note {
            relative_seq,
            relative_ack,
            lesson: self.lesson(packet, relative_ack),
        }
    }

    fn relative(&mut self, packet: &Packet) -> (Option<u32>, Option<u32>) {
        let (
            Some(dir),
            Some(Transport::Tcp {
                seq, ack, flags, ..
            }),
        ) = (direction(packet), packet.transport.as_ref())
        else {
            return (None, None);
        };
        if flags.contains(&"SYN") {
            self.first_seq.insert(dir, *seq);
        }
        let rel_seq = self.first_seq.get(&dir).map(|f| seq.wrapping_sub(*f));
        let back = (dir.2, dir.3, dir.0, dir.1);
        let rel_ack = match (flags.contains(&"ACK"), self.first_seq.get(&back)) {
            (true, Some(f)) => Some(ack.wrapping_sub(*f)),
            _ => None,
        };
        (rel_seq, rel_ack)
    }

    fn lesson(&mut self, packet: &Packet, rel_ack: Option<u32>) -> String {
        if let Some(Network::Arp {
            operation,
            sender_mac,
            sender_ip,
            target_ip,
            ..
        }) = &packet.network
        {
            return match operation.as_str() {
                "request" => format!(
                    "ARP request, to everyone on the network: who has {target_ip}? tell {sender_ip} (IP names the host; the frame needs its MAC)"
                ),
                "reply" => format!("ARP reply: {sender_ip} is at {sender_mac}"),
                other => format!("ARP {other}"),
            };
        }
        let n = packet.payload.len();
        let (dir, transport) = match (direction(packet), packet.transport.as_ref()) {
            (Some(dir), Some(t)) => (dir, t),
            _ => return "not TCP or UDP: shown as captured".to_string(),
        };
        let flags = match transport {
            Transport::Udp { .. } => {
                return format!(
                    "a UDP datagram of {n} bytes: no connection, no handshake, no acknowledgement"
                )
            }
            Transport::Tcp { flags, .. } => flags,
        };
        let has = |f: &str| flags.contains(&f);
        let back = (dir.2, dir.3, dir.0, dir.1);
        if has("RST") {
            "RST: the connection is reset at once (closed with bytes unread, or nobody listens on that port)".to_string()
        } else if has("SYN") && !has("ACK") {
            "connect(): the three-way handshake, 1 of 3 — SYN, \"let us talk\", with this side's first sequence number".to_string()
        } else if has("SYN") {
            self.answered.insert(back, ());
            "the three-way handshake, 2 of 3 — SYN-ACK: the server agrees, and sends its own first sequence number".to_string()
        } else if self.answered.remove(&dir).is_some() && n == 0 && !has("FIN") {
            "the three-way handshake, 3 of 3 — ACK: the connection is open; accept() returns it on the server".to_string()
        } else if has("FIN") {
            "close(): FIN, \"I have nothing more to send\" — one direction closes, the other may still send".to_string()
        } else if n > 0 {
            format!(
                "the application's {n} bytes, in one segment (PSH: hand them to the program now)"
            )
        } else {
            match rel_ack {
                Some(a) => format!("ACK: the other side has every byte before byte {a} (the SYN and a FIN count as one each)"),
                None => "ACK".to_string(),
            }
        }
    }
}

fn direction(packet: &Packet) -> Option<Direction> {
    let (from, to) = packet.sockets()?;
    Some((from.ip(), from.port(), to.ip(), to.port()))
}
