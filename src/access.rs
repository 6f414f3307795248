//! Who may connect: `--allow` and `--deny` lists of networks (IPv4 and IPv6), checked on a
//! connection's address right after accept, before a byte is read; and `--allow-uid` for Unix
//! sockets, checked on the peer's credentials (`SO_PEERCRED`).
//!
//! With only `--deny`, everything else is allowed; with any `--allow`, only those. An address
//! both allowed and denied is denied: the narrower intent wins.
//!
//! Behind a load balancer (`--proxy-protocol`), [`TrustedProxies`] (`--proxy-from`) says whose
//! PROXY header is believed: a connection from anyone else is closed unread, so a client cannot
//! name itself an address the lists admit.
//!
//! ```
//! use switchboard::access::AccessList;
//! let list = AccessList::new(vec!["10.0.0.0/8".parse().unwrap()], vec!["10.0.0.7/32".parse().unwrap()], vec![]);
//! assert!(list.admits_ip("10.1.2.3".parse().unwrap()));
//! assert!(!list.admits_ip("10.0.0.7".parse().unwrap()));
//! assert!(!list.admits_ip("192.168.1.1".parse().unwrap()));
//! ```

use ipnet::IpNet;
use std::net::IpAddr;
use std::os::fd::RawFd;

/// The networks and users a server admits.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AccessList {
    allow: Vec<IpNet>,
    deny: Vec<IpNet>,
    allow_uids: Vec<u32>,
}

impl AccessList {
    /// A list from `--allow` networks, `--deny` networks and `--allow-uid` users.
    pub fn new(allow: Vec<IpNet>, deny: Vec<IpNet>, allow_uids: Vec<u32>) -> Self {
        AccessList {
            allow,
            deny,
            allow_uids,
        }
    }

    /// True when nothing is restricted.
    pub fn is_open(&self) -> bool {
        self.allow.is_empty() && self.deny.is_empty() && self.allow_uids.is_empty()
    }

    /// True when an IP peer at `ip` may connect.
    pub fn admits_ip(&self, ip: IpAddr) -> bool {
        let ip = unmapped(ip);
        if self.deny.iter().any(|net| net.contains(&ip)) {
            return false;
        }
        self.allow.is_empty() || self.allow.iter().any(|net| net.contains(&ip))
    }

    /// True when users are named (`--allow-uid`), which only Unix stream peers have.
    pub fn names_users(&self) -> bool {
        !self.allow_uids.is_empty()
    }

    /// True when the Unix peer running as `uid` may connect.
    pub fn admits_uid(&self, uid: u32) -> bool {
        self.allow_uids.is_empty() || self.allow_uids.contains(&uid)
    }

    /// Judges a peer by its address as the log shows it (`tcp://IP:PORT`, `udp://IP:PORT`,
    /// `unix://...`) and, for a Unix stream, its socket `fd`.
    pub(crate) fn admits(&self, peer: &str, fd: Option<RawFd>) -> bool {
        if self.is_open() {
            return true;
        }
        let (scheme, rest) = peer.split_once("://").unwrap_or(("", peer));
        match scheme {
            "tcp" | "tls" | "udp" => rest
                .parse::<std::net::SocketAddr>()
                .map(|sa| self.admits_ip(sa.ip()))
                .unwrap_or(false),
            "unix" if !self.allow_uids.is_empty() => fd
                .and_then(|fd| crate::sys::peer_uid(fd).ok())
                .is_some_and(|uid| self.admits_uid(uid)),
            _ => true,
        }
    }
}

/// One source whose PROXY header is believed (`--proxy-from`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxySource {
    /// Proxies connecting over IP from this network.
    Net(IpNet),
    /// Proxies connecting over a Unix socket as this user id (`SO_PEERCRED`): a Unix peer has
    /// no address to judge.
    Uid(u32),
}

/// The proxies whose PROXY headers a server believes (`--proxy-from`); nobody else may connect
/// to a server run with `--proxy-protocol`.
///
/// ```
/// use switchboard::access::{parse_proxy_source, TrustedProxies};
/// let lb = TrustedProxies::new(vec![parse_proxy_source("10.0.0.5").unwrap()]);
/// assert!(lb.trusts_ip("10.0.0.5".parse().unwrap()));
/// assert!(!lb.trusts_ip("10.0.0.6".parse().unwrap()));
/// assert!(!lb.trusts_uid(0), "no user is named");
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies {
    sources: Vec<ProxySource>,
}

impl TrustedProxies {
    /// The proxies at `sources`.
    pub fn new(sources: Vec<ProxySource>) -> Self {
        TrustedProxies { sources }
    }

    /// True when no proxy is named: then no header is believed.
    pub fn is_empty(&self) -> bool {
        self.sources.is_empty()
    }

    /// True when a user id is among the sources: some Unix peer may be trusted.
    pub fn names_a_user(&self) -> bool {
        self.sources
            .iter()
            .any(|s| matches!(s, ProxySource::Uid(_)))
    }

    /// True when a network is among the sources: some IP peer may be trusted.
    pub fn names_a_network(&self) -> bool {
        self.sources
            .iter()
            .any(|s| matches!(s, ProxySource::Net(_)))
    }

    /// True when a proxy connecting from `ip` is believed.
    pub fn trusts_ip(&self, ip: IpAddr) -> bool {
        let ip = unmapped(ip);
        self.sources
            .iter()
            .any(|s| matches!(s, ProxySource::Net(net) if net.contains(&ip)))
    }

    /// True when a proxy connecting over a Unix socket as `uid` is believed.
    pub fn trusts_uid(&self, uid: u32) -> bool {
        self.sources.contains(&ProxySource::Uid(uid))
    }

    /// Judges the connection's own peer, named as the log names it, with its socket `fd` for
    /// a Unix peer's credentials.
    pub(crate) fn trusts(&self, peer: &str, fd: Option<RawFd>) -> bool {
        let (scheme, rest) = peer.split_once("://").unwrap_or(("", peer));
        match scheme {
            "tcp" | "tls" => rest
                .parse::<std::net::SocketAddr>()
                .is_ok_and(|sa| self.trusts_ip(sa.ip())),
            "unix" => fd
                .and_then(|fd| crate::sys::peer_uid(fd).ok())
                .is_some_and(|uid| self.trusts_uid(uid)),
            _ => false,
        }
    }
}

/// Parses `--proxy-from`: a network or an address as for `--allow`, or `uid:N` for a proxy
/// that connects over a Unix socket as user N.
pub fn parse_proxy_source(s: &str) -> Result<ProxySource, String> {
    let s = s.trim();
    if let Some(uid) = s.strip_prefix("uid:") {
        return uid.parse().map(ProxySource::Uid).map_err(|_| {
            format!("`{s}` is not a user: give uid:N with N a numeric user id (uid:0, uid:1000)")
        });
    }
    parse_network(s)
        .map(ProxySource::Net)
        .map_err(|e| format!("{e}; or, for a proxy on a Unix socket, the user it runs as: uid:N"))
}

/// An IPv4 client of an IPv6 socket arrives as ::ffff:a.b.c.d: judged as the IPv4 it is.
fn unmapped(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// Parses `--allow`/`--deny`: a network (`10.0.0.0/8`, `fd00::/8`) or one address (`::1`).
pub fn parse_network(s: &str) -> Result<IpNet, String> {
    let s = s.trim();
    s.parse::<IpNet>()
        .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
        .map_err(|_| format!("`{s}` is not a network: give CIDR (10.0.0.0/8, fd00::/8) or an address (127.0.0.1, ::1)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(allow: &[&str], deny: &[&str], uids: &[u32]) -> AccessList {
        let nets = |v: &[&str]| v.iter().map(|s| parse_network(s).unwrap()).collect();
        AccessList::new(nets(allow), nets(deny), uids.to_vec())
    }

    #[test]
    fn deny_alone_allows_the_rest_and_allow_allows_only_those() {
        let deny = list(&[], &["127.0.0.2", "::1"], &[]);
        assert!(deny.admits("tcp://127.0.0.1:5000", None));
        assert!(!deny.admits("tcp://127.0.0.2:5000", None));
        assert!(!deny.admits("tcp://[::1]:5000", None));
        let allow = list(&["192.168.0.0/16"], &[], &[]);
        assert!(allow.admits("udp://192.168.3.4:53", None));
        assert!(!allow.admits("tcp://127.0.0.1:1", None));
        assert!(
            allow.admits("unix://", None),
            "addresses judge IP peers only"
        );
    }

    #[test]
    fn mapped_ipv4_is_judged_as_ipv4() {
        let l = list(&["127.0.0.0/8"], &[], &[]);
        assert!(l.admits("tcp://[::ffff:127.0.0.1]:80", None));
    }

    #[test]
    fn networks_and_addresses_parse_and_nonsense_does_not() {
        assert_eq!(
            parse_network("10.0.0.0/8").unwrap().to_string(),
            "10.0.0.0/8"
        );
        assert_eq!(parse_network("::1").unwrap().to_string(), "::1/128");
        assert!(parse_network("10.0.0.0/33").is_err());
        assert!(parse_network("localhost").unwrap_err().contains("CIDR"));
    }

    #[test]
    fn only_the_named_proxies_are_trusted() {
        let parse = |v: &[&str]| {
            TrustedProxies::new(v.iter().map(|s| parse_proxy_source(s).unwrap()).collect())
        };
        let lb = parse(&["10.0.0.0/24", "::1", "uid:33"]);
        assert!(lb.trusts("tcp://10.0.0.9:4000", None));
        assert!(lb.trusts("tcp://[::ffff:10.0.0.9]:4000", None), "mapped");
        assert!(lb.trusts("tcp://[::1]:4000", None));
        assert!(!lb.trusts("tcp://10.0.1.9:4000", None));
        assert!(!lb.trusts("unix://", None), "no credentials, no trust");
        assert!(lb.trusts_uid(33) && !lb.trusts_uid(0));
        assert!(lb.names_a_user() && lb.names_a_network());
        assert!(
            !parse(&[]).trusts("tcp://127.0.0.1:1", None),
            "nobody by default"
        );
        assert!(parse_proxy_source("uid:root")
            .unwrap_err()
            .contains("numeric"));
        assert!(parse_proxy_source("lb.example")
            .unwrap_err()
            .contains("uid:N"));
    }

    #[test]
    fn uids_restrict_unix_peers_only_when_given() {
        assert!(list(&[], &[], &[]).admits_uid(1000));
        assert!(list(&[], &[], &[0]).admits_uid(0));
        assert!(!list(&[], &[], &[0]).admits_uid(1000));
    }
}
