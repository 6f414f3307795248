//! The PROXY protocol (v1 text, v2 binary), as HAProxy and nginx send it in front of every
//! connection they pass on: who the client really is. Sans-IO: [`parse`] looks at the bytes a
//! connection has sent so far, and the `Session` of a server run with
//! `--proxy-protocol` reads its header with it before the first frame. The header's syntax is
//! the `ppp` crate's; this module only decides what a connection's bytes mean for the server.
//!
//! ```
//! use switchboard::proxy::{parse, Header};
//! let bytes = b"PROXY TCP4 192.0.2.7 198.51.100.1 51000 8079\r\nhello";
//! let Header { client, len } = parse(bytes).unwrap().unwrap();
//! assert_eq!(client.as_deref(), Some("tcp://192.0.2.7:51000"));
//! assert_eq!(&bytes[len..], b"hello");
//! ```

use ppp::{v1, v2, HeaderResult, PartialResult};
use std::net::SocketAddr;

/// The v2 header's first bytes, and v1's: a connection that starts otherwise has no header.
const V2_SIGNATURE: &[u8] = b"\r\n\r\n\0\r\nQUIT\n";
const V1_PREFIX: &[u8] = b"PROXY ";
/// The longest v1 header, by the specification; v2's is bounded by its length field.
const V1_MAX: usize = 107;

/// A complete PROXY header at the start of a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// The client's address as the server names peers (`tcp://IP:PORT`), or `None` when the
    /// proxy speaks for itself (v2 `LOCAL`, such as a health check; v1 `UNKNOWN`; an address
    /// family the server does not name): the connection's own address stands.
    pub client: Option<String>,
    /// The header's length in bytes: the connection's own bytes begin after it.
    pub len: usize,
}

/// Why bytes are not a PROXY header.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ProxyError(String);

impl ProxyError {
    /// The connection ended before its header was whole.
    pub fn closed_early() -> Self {
        ProxyError("the connection closed before its PROXY header was complete".into())
    }
}

/// Parses the start of a connection: `Ok(None)` while the header is incomplete (more bytes
/// may finish it), the header once whole, or an error as soon as the bytes cannot begin one.
pub fn parse(input: &[u8]) -> Result<Option<Header>, ProxyError> {
    let n = input.len().min(V2_SIGNATURE.len());
    if input[..n] == V2_SIGNATURE[..n] {
        return v2(input);
    }
    let n = input.len().min(V1_PREFIX.len());
    if input[..n] != V1_PREFIX[..n] {
        return Err(ProxyError(format!(
            "the connection did not start with a PROXY protocol header (it began {:?})",
            String::from_utf8_lossy(&input[..input.len().min(16)])
        )));
    }
    // v1 is a line: parsed once its end is here, so a half-sent address is not judged.
    match input.iter().position(|&b| b == b'\n') {
        None if input.len() >= V1_MAX => Err(ProxyError(format!(
            "PROXY v1 header longer than {V1_MAX} bytes"
        ))),
        None => Ok(None),
        Some(end) => match HeaderResult::parse(&input[..=end]) {
            HeaderResult::V1(Ok(header)) => Ok(Some(Header {
                client: v1_client(&header.addresses),
                len: end + 1,
            })),
            HeaderResult::V1(Err(e)) => Err(ProxyError(format!("bad PROXY v1 header: {e}"))),
            HeaderResult::V2(_) => Err(ProxyError("bad PROXY v1 header".into())),
        },
    }
}

fn v2(input: &[u8]) -> Result<Option<Header>, ProxyError> {
    let result = v2::Header::try_from(input);
    if result.is_incomplete() {
        return Ok(None);
    }
    let header = result.map_err(|e| ProxyError(format!("bad PROXY v2 header: {e}")))?;
    let client = match (header.command, header.addresses) {
        (v2::Command::Local, _) => None,
        (_, v2::Addresses::IPv4(a)) => {
            Some(tcp(SocketAddr::from((a.source_address, a.source_port))))
        }
        (_, v2::Addresses::IPv6(a)) => {
            Some(tcp(SocketAddr::from((a.source_address, a.source_port))))
        }
        (_, v2::Addresses::Unix(_) | v2::Addresses::Unspecified) => None,
    };
    Ok(Some(Header {
        client,
        len: header.len(),
    }))
}

fn v1_client(addresses: &v1::Addresses) -> Option<String> {
    match addresses {
        v1::Addresses::Tcp4(a) => Some(tcp(SocketAddr::from((a.source_address, a.source_port)))),
        v1::Addresses::Tcp6(a) => Some(tcp(SocketAddr::from((a.source_address, a.source_port)))),
        v1::Addresses::Unknown => None,
    }
}

fn tcp(sa: SocketAddr) -> String {
    format!("tcp://{sa}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A header naming `client`, as HAProxy's send-proxy (v1) or send-proxy-v2 (v2) sends it.
    fn header_for(client: SocketAddr, v2: bool) -> Vec<u8> {
        let server: SocketAddr = match client {
            SocketAddr::V4(_) => "127.0.0.1:8079".parse().unwrap(),
            SocketAddr::V6(_) => "[::1]:8079".parse().unwrap(),
        };
        if v2 {
            return v2_header(v2::Command::Proxy, (client, server));
        }
        v1::Addresses::from((client, server))
            .to_string()
            .into_bytes()
    }

    proptest! {
        #[test]
        fn any_client_in_either_version_is_named_and_its_bytes_follow(
            ip in any::<std::net::IpAddr>(),
            port in any::<u16>(),
            v2 in any::<bool>(),
            payload in prop::collection::vec(any::<u8>(), 0..64),
        ) {
            let client = SocketAddr::new(ip, port);
            let header = header_for(client, v2);
            let mut bytes = header.clone();
            bytes.extend_from_slice(&payload);
            let parsed = parse(&bytes).unwrap().unwrap();
            prop_assert_eq!(parsed.len, header.len());
            prop_assert_eq!(parsed.client, Some(format!("tcp://{client}")));
            for cut in 0..header.len() {
                prop_assert_eq!(parse(&header[..cut]), Ok(None));
            }
        }

        #[test]
        fn bytes_that_cannot_begin_a_header_never_wait(bytes in prop::collection::vec(any::<u8>(), 1..64)) {
            let could_begin = V2_SIGNATURE.starts_with(&bytes[..bytes.len().min(12)])
                || V1_PREFIX.starts_with(&bytes[..bytes.len().min(6)]);
            if !could_begin {
                prop_assert!(parse(&bytes).is_err());
            }
        }
    }

    fn v2_header(command: v2::Command, addresses: impl Into<v2::Addresses>) -> Vec<u8> {
        v2::Builder::with_addresses(v2::Version::Two | command, v2::Protocol::Stream, addresses)
            .build()
            .unwrap()
    }

    #[test]
    fn every_prefix_of_a_header_is_incomplete_and_the_whole_is_parsed() {
        let src: SocketAddr = "[2001:db8::7]:40000".parse().unwrap();
        let dst: SocketAddr = "[2001:db8::1]:8079".parse().unwrap();
        let headers = [
            b"PROXY TCP4 192.0.2.7 198.51.100.1 51000 8079\r\n".to_vec(),
            b"PROXY TCP6 2001:db8::7 2001:db8::1 40000 8079\r\n".to_vec(),
            v2_header(v2::Command::Proxy, (src, dst)),
        ];
        for header in headers {
            for cut in 0..header.len() {
                assert_eq!(parse(&header[..cut]), Ok(None), "{cut} bytes");
            }
            let mut bytes = header.clone();
            bytes.extend_from_slice(b"payload");
            let parsed = parse(&bytes).unwrap().unwrap();
            assert_eq!(parsed.len, header.len());
            assert!(parsed.client.unwrap().starts_with("tcp://"));
        }
    }

    #[test]
    fn the_proxys_own_connections_keep_their_address() {
        let src: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let local = v2_header(v2::Command::Local, (src, src));
        assert_eq!(parse(&local).unwrap().unwrap().client, None);
        let unknown = b"PROXY UNKNOWN\r\n";
        assert_eq!(parse(unknown).unwrap().unwrap().client, None);
    }

    #[test]
    fn anything_else_is_refused_at_once() {
        for bad in [
            &b"GET / HTTP/1.1\r\n"[..],
            b"hello",
            b"PROXY TCP4 not-an-address 1.2.3.4 1 2\r\n",
            b"PROXY TCP9 1.2.3.4 1.2.3.4 1 2\r\n",
            b"\r\n\r\n\0\r\nQUIT\n\x99\x11\x00\x0c",
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
        assert!(parse(&[b'P', b'R', b'O', b'X', b'Y', b' ', b'A'].repeat(20)).is_err());
    }
}
