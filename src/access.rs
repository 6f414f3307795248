//! Who may connect: `--allow` and `--deny` lists of networks (IPv4 and IPv6), checked on a
//! connection's address right after accept, before a byte is read; and `--allow-uid` for Unix
//! sockets, checked on the peer's credentials (`SO_PEERCRED`).
//!
//! With only `--deny`, everything else is allowed; with any `--allow`, only those. An address
//! both allowed and denied is denied: the narrower intent wins.
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
        // An IPv4 client of an IPv6 socket arrives as ::ffff:a.b.c.d: judged as the IPv4 it is.
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        if self.deny.iter().any(|net| net.contains(&ip)) {
            return false;
        }
        self.allow.is_empty() || self.allow.iter().any(|net| net.contains(&ip))
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
    fn uids_restrict_unix_peers_only_when_given() {
        assert!(list(&[], &[], &[]).admits_uid(1000));
        assert!(list(&[], &[], &[0]).admits_uid(0));
        assert!(!list(&[], &[], &[0]).admits_uid(1000));
    }
}
