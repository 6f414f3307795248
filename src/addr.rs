//! Addresses: `tcp://HOST:PORT`, `tls://HOST:PORT`, `udp://HOST:PORT`, `unix:///path`,
//! `unixgram:///path`.
//!
//! One string names both the transport and where it lives, so every command takes the same
//! form for a server, a client and a load generator.

use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::str::FromStr;

/// The forms an address may take, quoted in every parse error.
pub const ACCEPTED_FORMS: &str =
    "tcp://HOST:PORT, tls://HOST:PORT, udp://HOST:PORT, unix:///PATH or unixgram:///PATH (e.g. tcp://127.0.0.1:8079, tcp://[::1]:0)";

/// Where a server listens or a client connects.
///
/// ```
/// use switchboard::Addr;
/// let a: Addr = "tcp://127.0.0.1:8079".parse().unwrap();
/// assert_eq!(a.to_string(), "tcp://127.0.0.1:8079");
/// let b: Addr = "tcp://[::1]:0".parse().unwrap();
/// assert!(b.is_stream());
/// let c: Addr = "unix:///tmp/sb.sock".parse().unwrap();
/// assert_eq!(c.to_string(), "unix:///tmp/sb.sock");
/// assert!("http://x".parse::<Addr>().is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Addr {
    /// A TCP stream socket (IPv4 or IPv6). Port 0 asks the kernel for a free port.
    Tcp(SocketAddr),
    /// TLS over TCP: `host` is the name as written, which a client checks the server's
    /// certificate against.
    Tls {
        /// Where the TCP socket is.
        addr: SocketAddr,
        /// The host as written (`localhost`, `127.0.0.1`).
        host: String,
    },
    /// A UDP datagram socket.
    Udp(SocketAddr),
    /// A Unix-domain stream socket at a filesystem path.
    Unix(PathBuf),
    /// A Unix-domain datagram socket at a filesystem path.
    UnixGram(PathBuf),
}

/// Why an address string was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AddrError {
    /// The scheme is missing or unknown.
    #[error("`{0}` is not an address: expected {ACCEPTED_FORMS}")]
    Form(String),
    /// The host or port could not be understood.
    #[error("`{input}`: {why}; expected {ACCEPTED_FORMS}")]
    Host {
        /// The address as given.
        input: String,
        /// What was wrong with it.
        why: String,
    },
    /// A Unix path was empty or relative.
    #[error("`{0}`: a Unix socket needs an absolute path, as in unix:///tmp/switchboard.sock")]
    Path(String),
    /// A Unix path longer than a socket address holds (`sun_path`: 107 bytes and a NUL).
    #[error("`{input}`: a Unix socket's path is at most {UNIX_PATH_MAX} bytes (this one is {len}); use a shorter one, as in unix:///tmp/switchboard.sock")]
    PathTooLong {
        /// The address as given.
        input: String,
        /// The path's length in bytes.
        len: usize,
    },
}

/// The longest path a Unix socket address holds on Linux (`sun_path` is 108 bytes with its NUL).
pub const UNIX_PATH_MAX: usize = 107;

impl Addr {
    /// True for the connection-oriented transports (TCP and Unix streams).
    pub fn is_stream(&self) -> bool {
        matches!(self, Addr::Tcp(_) | Addr::Tls { .. } | Addr::Unix(_))
    }

    /// The TCP socket address of a `tcp://` or `tls://` address.
    pub fn tcp(&self) -> Option<SocketAddr> {
        match self {
            Addr::Tcp(sa) | Addr::Tls { addr: sa, .. } => Some(*sa),
            _ => None,
        }
    }

    /// The scheme, as written before `://`.
    pub fn scheme(&self) -> &'static str {
        match self {
            Addr::Tcp(_) => "tcp",
            Addr::Tls { .. } => "tls",
            Addr::Udp(_) => "udp",
            Addr::Unix(_) => "unix",
            Addr::UnixGram(_) => "unixgram",
        }
    }
}

impl FromStr for Addr {
    type Err = AddrError;

    fn from_str(input: &str) -> Result<Self, AddrError> {
        let (scheme, rest) = input
            .split_once("://")
            .ok_or_else(|| AddrError::Form(input.to_string()))?;
        match scheme {
            "tcp" => Ok(Addr::Tcp(parse_host_port(input, rest)?)),
            "tls" => Ok(Addr::Tls {
                addr: parse_host_port(input, rest)?,
                host: rest
                    .rsplit_once(':')
                    .map_or(rest, |(host, _)| host)
                    .trim_matches(|c| c == '[' || c == ']')
                    .to_string(),
            }),
            "udp" => Ok(Addr::Udp(parse_host_port(input, rest)?)),
            "unix" => Ok(Addr::Unix(parse_path(input, rest)?)),
            "unixgram" => Ok(Addr::UnixGram(parse_path(input, rest)?)),
            _ => Err(AddrError::Form(input.to_string())),
        }
    }
}

/// Parses `HOST:PORT`, resolving a name such as `localhost` to its first address.
fn parse_host_port(input: &str, rest: &str) -> Result<SocketAddr, AddrError> {
    let host_err = |why: &str| AddrError::Host {
        input: input.to_string(),
        why: why.to_string(),
    };
    if let Ok(sa) = rest.parse::<SocketAddr>() {
        return Ok(sa);
    }
    let (host, port) = rest
        .rsplit_once(':')
        .ok_or_else(|| host_err("missing :PORT"))?;
    if host.is_empty() {
        return Err(host_err("missing HOST"));
    }
    let port: u16 = port
        .parse()
        .map_err(|_| host_err("the port must be a number from 0 to 65535"))?;
    if host.contains(':') && !host.starts_with('[') {
        return Err(host_err("an IPv6 host goes in brackets, as in [::1]"));
    }
    if host.starts_with('[') != host.ends_with(']') {
        return Err(host_err(
            "an IPv6 host's brackets are not closed, as in [::1]",
        ));
    }
    (host.trim_matches(|c| c == '[' || c == ']'), port)
        .to_socket_addrs()
        .map_err(|e| host_err(&format!("cannot resolve host `{host}` ({e})")))?
        .next()
        .ok_or_else(|| host_err(&format!("host `{host}` has no address")))
}

fn parse_path(input: &str, rest: &str) -> Result<PathBuf, AddrError> {
    if !rest.starts_with('/') {
        return Err(AddrError::Path(input.to_string()));
    }
    if rest.len() > UNIX_PATH_MAX {
        return Err(AddrError::PathTooLong {
            input: input.to_string(),
            len: rest.len(),
        });
    }
    Ok(PathBuf::from(rest))
}

impl fmt::Display for Addr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Addr::Tcp(sa) | Addr::Udp(sa) | Addr::Tls { addr: sa, .. } => {
                write!(f, "{}://{sa}", self.scheme())
            }
            Addr::Unix(p) | Addr::UnixGram(p) => write!(f, "{}://{}", self.scheme(), p.display()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_every_form() {
        for s in [
            "tcp://127.0.0.1:8079",
            "tcp://[::1]:0",
            "tls://127.0.0.1:8443",
            "tls://[::1]:8443",
            "udp://127.0.0.1:9",
            "unix:///tmp/a.sock",
            "unixgram:///tmp/b.sock",
        ] {
            assert_eq!(s.parse::<Addr>().unwrap().to_string(), s);
        }
    }

    #[test]
    fn resolves_localhost() {
        let a: Addr = "tcp://localhost:80".parse().unwrap();
        match a {
            Addr::Tcp(sa) => assert!(sa.ip().is_loopback()),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn tls_keeps_the_host_as_written() {
        match "tls://localhost:8443".parse::<Addr>().unwrap() {
            Addr::Tls { addr, host } => {
                assert!(addr.ip().is_loopback());
                assert_eq!(host, "localhost");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn refuses_bad_forms_with_the_accepted_ones() {
        for s in [
            "127.0.0.1:8079",
            "http://x:1",
            "tcp://127.0.0.1",
            "tcp://:80",
            "tcp://1.2.3.4:99999",
            "tcp://::1:80",
            "tcp://[::1:0",
            "tcp://::1]:0",
            "unix://relative.sock",
        ] {
            let e = s.parse::<Addr>().unwrap_err().to_string();
            assert!(e.contains(s), "{e}");
        }
        let e = "nope".parse::<Addr>().unwrap_err().to_string();
        assert!(e.contains("tcp://HOST:PORT"), "{e}");
        let long = format!("unix:///tmp/{}", "s".repeat(110));
        let e = long.parse::<Addr>().unwrap_err().to_string();
        assert!(e.contains("at most 107 bytes"), "{e}");
    }
}
