//! One captured frame, unwrapped layer by layer as the plan names the layers: link (Ethernet),
//! network (IP, or ARP), transport (TCP or UDP), application (the bytes the program sent).
//! Sans-IO: bytes in, a [`Packet`] out. A truncated, malformed or unknown frame decodes as far
//! as it goes and says where it stopped; nothing here panics.

use etherparse::{LaxNetSlice, LaxSlicedPacket, LinkSlice, TransportSlice};
use std::net::IpAddr;

/// A frame as decoded, each layer with the bytes it added.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Packet {
    /// When it was captured, µs since the Unix epoch.
    pub at_us: i64,
    /// The whole frame's length on the wire, in bytes.
    pub frame_len: usize,
    /// The data-link layer: Ethernet.
    pub link: Option<Link>,
    /// The network layer: IP, or ARP.
    pub network: Option<Network>,
    /// The transport layer: TCP or UDP.
    pub transport: Option<Transport>,
    /// The application's bytes, carried inside.
    pub payload: Vec<u8>,
    /// Where decoding stopped, when the frame was cut short, malformed or of a kind not
    /// decoded here.
    pub problem: Option<String>,
}

/// An Ethernet II header: 14 bytes.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Link {
    /// The sender's MAC address.
    pub source: String,
    /// The receiver's MAC address.
    pub destination: String,
    /// What the frame carries, by its EtherType: `IPv4`, `IPv6`, `ARP`, or the number.
    pub ether_type: String,
    /// True on loopback, whose frames have all-zero addresses: nothing leaves the machine.
    pub loopback: bool,
    /// Bytes this layer added.
    pub header_len: usize,
}

/// The network layer.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Network {
    /// An IPv4 or IPv6 header.
    Ip {
        /// 4 or 6.
        version: u8,
        /// The sender's address.
        source: IpAddr,
        /// The receiver's address.
        destination: IpAddr,
        /// Time to live (IPv4) or hop limit (IPv6): routers it may still cross.
        ttl: u8,
        /// What it carries: `TCP`, `UDP`, `ICMP`, or the number.
        protocol: String,
        /// The IP packet's length, header included.
        total_len: usize,
        /// Bytes this layer added.
        header_len: usize,
    },
    /// ARP: finding the MAC address that has an IP address on this network.
    Arp {
        /// `request` ("who has TARGET_IP?") or `reply` ("SENDER_IP is at SENDER_MAC").
        operation: String,
        /// The sender's MAC and IP addresses.
        sender_mac: String,
        /// See `sender_mac`.
        sender_ip: String,
        /// The target's MAC (zero in a request: what is asked for) and IP addresses.
        target_mac: String,
        /// See `target_mac`.
        target_ip: String,
        /// Bytes this layer took.
        header_len: usize,
    },
}

/// The transport layer.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Transport {
    /// A TCP segment.
    Tcp {
        /// The sender's port.
        source_port: u16,
        /// The receiver's port.
        destination_port: u16,
        /// The flags set, spelled out: `SYN`, `ACK`, `PSH`, `FIN`, `RST`, `URG`.
        flags: Vec<&'static str>,
        /// The sequence number, as on the wire.
        seq: u32,
        /// The acknowledgement number, as on the wire (meaningful with `ACK`).
        ack: u32,
        /// The receive window the sender offers, in bytes (before window scaling).
        window: u16,
        /// Bytes this layer added (20, and options such as timestamps).
        header_len: usize,
    },
    /// A UDP datagram.
    Udp {
        /// The sender's port.
        source_port: u16,
        /// The receiver's port.
        destination_port: u16,
        /// The datagram's length, header included.
        length: u16,
        /// Bytes this layer added: 8.
        header_len: usize,
    },
}

impl Transport {
    /// The sender's and receiver's ports.
    pub fn ports(&self) -> (u16, u16) {
        match self {
            Transport::Tcp {
                source_port,
                destination_port,
                ..
            }
            | Transport::Udp {
                source_port,
                destination_port,
                ..
            } => (*source_port, *destination_port),
        }
    }
}

impl Packet {
    /// True if the packet is TCP or UDP to or from `port`.
    pub fn has_port(&self, port: u16) -> bool {
        self.transport.as_ref().is_some_and(|t| {
            let (a, b) = t.ports();
            a == port || b == port
        })
    }

    /// The sending and receiving sockets (address and port), for TCP and UDP over IP.
    pub fn sockets(&self) -> Option<(std::net::SocketAddr, std::net::SocketAddr)> {
        match (&self.network, &self.transport) {
            (
                Some(Network::Ip {
                    source,
                    destination,
                    ..
                }),
                Some(t),
            ) => {
                let (sp, dp) = t.ports();
                Some((
                    std::net::SocketAddr::new(*source, sp),
                    std::net::SocketAddr::new(*destination, dp),
                ))
            }
            _ => None,
        }
    }

    /// True for an ARP packet.
    pub fn is_arp(&self) -> bool {
        matches!(self.network, Some(Network::Arp { .. }))
    }
}

/// Decodes an Ethernet frame captured at `at_us` (µs since the epoch), `frame_len` bytes long on
/// the wire (`frame` may hold fewer, when the capture cut it).
pub fn decode(frame: &[u8], frame_len: usize, at_us: i64) -> Packet {
    let mut packet = Packet {
        at_us,
        frame_len,
        link: None,
        network: None,
        transport: None,
        payload: Vec::new(),
        problem: None,
    };
    let sliced = match LaxSlicedPacket::from_ethernet(frame) {
        Ok(sliced) => sliced,
        Err(e) => {
            packet.problem = Some(format!("not a whole Ethernet header: {e}"));
            return packet;
        }
    };
    if let Some(LinkSlice::Ethernet2(eth)) = &sliced.link {
        let (source, destination) = (eth.source(), eth.destination());
        packet.link = Some(Link {
            source: mac(&source),
            destination: mac(&destination),
            ether_type: ether_type(eth.ether_type().0),
            loopback: source == [0; 6] && destination == [0; 6],
            header_len: eth.header_len(),
        });
    }
    match &sliced.net {
        Some(LaxNetSlice::Ipv4(ip)) => {
            let h = ip.header();
            packet.network = Some(Network::Ip {
                version: 4,
                source: IpAddr::V4(h.source_addr()),
                destination: IpAddr::V4(h.destination_addr()),
                ttl: h.ttl(),
                protocol: protocol(h.protocol().0),
                total_len: h.total_len() as usize,
                header_len: h.slice().len(),
            });
        }
        Some(LaxNetSlice::Ipv6(ip)) => {
            let h = ip.header();
            packet.network = Some(Network::Ip {
                version: 6,
                source: IpAddr::V6(h.source_addr()),
                destination: IpAddr::V6(h.destination_addr()),
                ttl: h.hop_limit(),
                protocol: protocol(ip.payload().ip_number.0),
                total_len: h.slice().len() + h.payload_length() as usize,
                header_len: frame_header_len(frame, &sliced, ip.payload().payload),
            });
        }
        Some(LaxNetSlice::Arp(arp)) => {
            let operation = match arp.operation().0 {
                1 => "request".to_string(),
                2 => "reply".to_string(),
                n => format!("operation {n}"),
            };
            packet.network = Some(Network::Arp {
                operation,
                sender_mac: mac(arp.sender_hw_addr()),
                sender_ip: ip_of(arp.sender_protocol_addr()),
                target_mac: mac(arp.target_hw_addr()),
                target_ip: ip_of(arp.target_protocol_addr()),
                header_len: arp.slice().len(),
            });
        }
        None => {}
    }
    match &sliced.transport {
        Some(TransportSlice::Tcp(tcp)) => {
            let named = [
                (tcp.syn(), "SYN"),
                (tcp.ack(), "ACK"),
                (tcp.psh(), "PSH"),
                (tcp.fin(), "FIN"),
                (tcp.rst(), "RST"),
                (tcp.urg(), "URG"),
            ];
            packet.transport = Some(Transport::Tcp {
                source_port: tcp.source_port(),
                destination_port: tcp.destination_port(),
                flags: named
                    .iter()
                    .filter(|(on, _)| *on)
                    .map(|(_, n)| *n)
                    .collect(),
                seq: tcp.sequence_number(),
                ack: tcp.acknowledgment_number(),
                window: tcp.window_size(),
                header_len: tcp.header_len(),
            });
            packet.payload = tcp.payload().to_vec();
        }
        Some(TransportSlice::Udp(udp)) => {
            packet.transport = Some(Transport::Udp {
                source_port: udp.source_port(),
                destination_port: udp.destination_port(),
                length: udp.length(),
                header_len: 8,
            });
            packet.payload = udp.payload().to_vec();
        }
        _ => {}
    }
    if let Some((e, layer)) = &sliced.stop_err {
        packet.problem = Some(format!("decoding stopped at the {layer:?} layer: {e}"));
    } else if packet.network.is_none() {
        if let Some(link) = &packet.link {
            packet.problem = Some(format!("carries {}, not decoded here", link.ether_type));
        }
    } else if packet.transport.is_none() && !packet.is_arp() {
        packet.problem = Some("carries a protocol not decoded here".to_string());
    }
    packet
}

/// An IPv6 header's length with its extension headers: where its payload starts in the frame,
/// less where the IP header starts.
fn frame_header_len(frame: &[u8], sliced: &LaxSlicedPacket<'_>, payload: &[u8]) -> usize {
    let link = match &sliced.link {
        Some(LinkSlice::Ethernet2(eth)) => eth.header_len(),
        _ => 0,
    };
    let start = payload.as_ptr() as usize - frame.as_ptr() as usize;
    start.saturating_sub(link)
}

/// `aa:bb:cc:dd:ee:ff`.
fn mac(bytes: &[u8]) -> String {
    let parts: Vec<String> = bytes.iter().map(|b| format!("{b:02x}")).collect();
    parts.join(":")
}

/// An IPv4 address from ARP's 4 bytes; anything else in hex.
fn ip_of(bytes: &[u8]) -> String {
    match <[u8; 4]>::try_from(bytes) {
        Ok(v4) => std::net::Ipv4Addr::from(v4).to_string(),
        Err(_) => mac(bytes),
    }
}

fn ether_type(t: u16) -> String {
    match t {
        0x0800 => "IPv4".into(),
        0x86dd => "IPv6".into(),
        0x0806 => "ARP".into(),
        n => format!("0x{n:04x}"),
    }
}

fn protocol(p: u8) -> String {
    match p {
        6 => "TCP".into(),
        17 => "UDP".into(),
        1 => "ICMP".into(),
        58 => "ICMPv6".into(),
        n => format!("protocol {n}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::PacketBuilder;

    fn tcp_frame(payload: &[u8]) -> Vec<u8> {
        let builder = PacketBuilder::ethernet2([0; 6], [0; 6])
            .ipv4([127, 0, 0, 1], [127, 0, 0, 1], 64)
            .tcp(50000, 8079, 1000, 65535)
            .syn()
            .ack(7);
        let mut out = Vec::new();
        builder.write(&mut out, payload).unwrap();
        out
    }

    #[test]
    fn a_tcp_frame_unwraps_layer_by_layer_with_each_layers_bytes() {
        let frame = tcp_frame(b"hello");
        let p = decode(&frame, frame.len(), 0);
        let link = p.link.as_ref().unwrap();
        assert!(link.loopback);
        assert_eq!((link.header_len, link.ether_type.as_str()), (14, "IPv4"));
        match p.network.as_ref().unwrap() {
            Network::Ip {
                version,
                ttl,
                protocol,
                header_len,
                total_len,
                ..
            } => {
                assert_eq!((*version, *ttl, protocol.as_str()), (4, 64, "TCP"));
                assert_eq!((*header_len, *total_len), (20, 45));
            }
            other => panic!("{other:?}"),
        }
        match p.transport.as_ref().unwrap() {
            Transport::Tcp {
                flags,
                seq,
                header_len,
                ..
            } => {
                assert_eq!(flags, &["SYN", "ACK"]);
                assert_eq!((*seq, *header_len), (1000, 20));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(p.payload, b"hello");
        assert_eq!(p.problem, None);
        assert_eq!(p.frame_len, 14 + 20 + 20 + 5);
    }

    #[test]
    fn a_cut_frame_decodes_as_far_as_it_goes_and_says_where_it_stopped() {
        let frame = tcp_frame(b"hello");
        for cut in 0..frame.len() {
            let p = decode(&frame[..cut], frame.len(), 0);
            if cut < 14 {
                assert!(
                    p.link.is_none() && p.problem.is_some(),
                    "cut at {cut}: {p:?}"
                );
            }
            if (14..34).contains(&cut) {
                assert!(
                    p.transport.is_none() && p.problem.is_some(),
                    "cut at {cut}: {p:?}"
                );
            }
        }
    }

    #[test]
    fn an_unknown_ether_type_is_named_not_decoded() {
        let mut frame = tcp_frame(b"x");
        frame[12..14].copy_from_slice(&[0x88, 0xcc]); // LLDP
        let p = decode(&frame, frame.len(), 0);
        assert_eq!(p.link.as_ref().unwrap().ether_type, "0x88cc");
        assert!(p.problem.unwrap().contains("not decoded"));
    }
}
