//! A trace as text: each socket call on a line, each packet a block with its layers, the bytes
//! each added, and the lesson it illustrates. Sans-IO: a string out.

use crate::trace::decode::{Link, Network, Packet, Transport};
use crate::trace::lesson::Note;
use std::fmt::Write;

/// What happened, in time order: the program's socket calls and the packets they caused.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(tag = "event", rename_all = "lowercase")]
pub enum Event {
    /// A socket call of the exchange, and what it returned.
    Call {
        /// When it returned, µs since the epoch.
        at_us: i64,
        /// The call and its result, as `connect(127.0.0.1:8079) = ok`.
        call: String,
    },
    /// A packet on the wire.
    Packet {
        /// The packet, decoded.
        #[serde(flatten)]
        packet: Box<Packet>,
        /// What it shows.
        note: Note,
    },
}

impl Event {
    /// When it happened, µs since the epoch.
    pub fn at_us(&self) -> i64 {
        match self {
            Event::Call { at_us, .. } => *at_us,
            Event::Packet { packet, .. } => packet.at_us,
        }
    }
}

/// Payload bytes shown at most, per packet.
const SHOWN: usize = 64;

/// The whole trace as text, times relative to the first event.
pub fn render(events: &[Event]) -> String {
    let mut text = Text::default();
    events.iter().map(|e| text.event(e)).collect()
}

/// Text made one event at a time (as `trace watch` prints them): packets numbered, times
/// relative to the first event.
#[derive(Debug, Default)]
pub struct Text {
    start: Option<i64>,
    packets: usize,
}

impl Text {
    /// The next event, as lines of text.
    pub fn event(&mut self, event: &Event) -> String {
        let start = *self.start.get_or_insert(event.at_us());
        let ms = (event.at_us() - start) as f64 / 1000.0;
        let mut out = String::new();
        match event {
            Event::Call { call, .. } => {
                let _ = writeln!(out, "{ms:>9.3} ms  {call}");
            }
            Event::Packet { packet, note } => {
                self.packets += 1;
                block(&mut out, self.packets, ms, packet, note);
            }
        }
        out
    }
}

fn block(out: &mut String, n: usize, ms: f64, p: &Packet, note: &Note) {
    let _ = writeln!(
        out,
        "{ms:>9.3} ms  #{n} {}, {} bytes on the wire",
        endpoints(p),
        p.frame_len
    );
    if let Some(link) = &p.link {
        let _ = writeln!(out, "{}", layer("link", link.header_len, &link_line(link)));
    }
    if let Some(net) = &p.network {
        let (len, text) = network_line(net);
        let _ = writeln!(out, "{}", layer("network", len, &text));
    }
    if let Some(t) = &p.transport {
        let (len, text) = transport_line(t, note);
        let _ = writeln!(out, "{}", layer("transport", len, &text));
    }
    if p.transport.is_some() {
        let text = if p.payload.is_empty() {
            "(none)".to_string()
        } else {
            shown(&p.payload)
        };
        let _ = writeln!(out, "{}", layer("application", p.payload.len(), &text));
    }
    if let Some(problem) = &p.problem {
        let _ = writeln!(out, "               ! {problem}");
    }
    let _ = writeln!(out, "               = {}", note.lesson);
}

fn layer(name: &str, bytes: usize, text: &str) -> String {
    format!("               {name:<11} {bytes:>4} B  {text}")
}

fn endpoints(p: &Packet) -> String {
    if let Some((from, to)) = p.sockets() {
        return format!("{from} -> {to}");
    }
    match &p.network {
        Some(Network::Ip {
            source,
            destination,
            ..
        }) => format!("{source} -> {destination}"),
        Some(Network::Arp {
            sender_ip,
            target_ip,
            ..
        }) => {
            format!("ARP {sender_ip} -> {target_ip}")
        }
        None => "a frame".to_string(),
    }
}

fn link_line(link: &Link) -> String {
    let whose = if link.loopback {
        " (loopback's all-zero addresses: the frame never leaves this machine)"
    } else {
        ""
    };
    format!(
        "Ethernet {} -> {}{whose}, carrying {}",
        link.source, link.destination, link.ether_type
    )
}

fn network_line(net: &Network) -> (usize, String) {
    match net {
        Network::Ip {
            version,
            source,
            destination,
            ttl,
            protocol,
            total_len,
            header_len,
        } => {
            let hops = if *version == 4 { "TTL" } else { "hop limit" };
            (
                *header_len,
                format!(
                    "IPv{version} {source} -> {destination}, {hops} {ttl}, carrying {protocol}, {total_len} bytes with its header"
                ),
            )
        }
        Network::Arp {
            operation,
            sender_mac,
            sender_ip,
            target_mac,
            target_ip,
            header_len,
        } => {
            // A request asks the target's MAC (still unknown, all zeros); a reply tells the
            // sender's to the one that asked.
            let verb = match operation.as_str() {
                "request" => "asks",
                "reply" => "tells",
                _ => "to",
            };
            (
                *header_len,
                format!(
                    "ARP {operation}: {sender_ip} ({sender_mac}) {verb} {target_ip} ({target_mac})"
                ),
            )
        }
    }
}

fn transport_line(t: &Transport, note: &Note) -> (usize, String) {
    match t {
        Transport::Tcp {
            source_port,
            destination_port,
            flags,
            window,
            header_len,
            ..
        } => {
            let mut text = format!(
                "TCP port {source_port} -> {destination_port} [{}]",
                flags.join(" ")
            );
            if let Some(seq) = note.relative_seq {
                let _ = write!(text, " seq {seq}");
            }
            if let Some(ack) = note.relative_ack {
                let _ = write!(text, " ack {ack}");
            }
            let _ = write!(text, " window {window}");
            (*header_len, text)
        }
        Transport::Udp {
            source_port,
            destination_port,
            length,
            header_len,
        } => (
            *header_len,
            format!("UDP port {source_port} -> {destination_port}, {length} bytes with its header"),
        ),
    }
}

/// Bytes as a terminal may show them: printable text as it is, anything else escaped, never
/// a raw control byte; at most [`SHOWN`] of them.
pub fn shown(bytes: &[u8]) -> String {
    let mut s = String::from("\"");
    for &b in bytes.iter().take(SHOWN) {
        match b {
            b'\n' => s.push_str("\\n"),
            b'\r' => s.push_str("\\r"),
            b'\t' => s.push_str("\\t"),
            b'"' => s.push_str("\\\""),
            b'\\' => s.push_str("\\\\"),
            0x20..=0x7e => s.push(b as char),
            _ => {
                let _ = write!(s, "\\x{b:02x}");
            }
        }
    }
    s.push('"');
    if bytes.len() > SHOWN {
        let _ = write!(s, " ... ({} bytes in all)", bytes.len());
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_are_shown_without_a_raw_control_byte() {
        assert_eq!(shown(b"hello\n"), "\"hello\\n\"");
        assert_eq!(shown(&[0x1b, b'[', b'2', b'J']), "\"\\x1b[2J\"");
        assert_eq!(shown("é".as_bytes()), "\"\\xc3\\xa9\"");
        let long = vec![b'a'; 100];
        assert!(shown(&long).ends_with("(100 bytes in all)"));
    }
}
