//! Two hosts on a network of their own, for the lesson loopback cannot give: real MAC
//! addresses, ARP finding one from an IP address, a subnet. Each host is a network namespace;
//! a veth pair is the cable between them. Nothing else is connected: no default route, no
//! link to this machine's interfaces, so nothing leaves them. Everything made is removed when
//! [`Hosts`] is dropped, also after an error or a panic. Needs root (`ip netns`).

use std::io;
use std::process::{Command, Output};

/// The subnet the two hosts share.
pub const SUBNET: &str = "10.77.0.0/24";
/// The server host's address.
pub const SERVER_IP: &str = "10.77.0.1";
/// The client host's address.
pub const CLIENT_IP: &str = "10.77.0.2";

/// Two network namespaces joined by a veth pair, removed when dropped.
#[derive(Debug)]
pub struct Hosts {
    /// The server host's namespace.
    pub server: String,
    /// The client host's namespace.
    pub client: String,
    /// The client's end of the cable, as its host names it (where to capture).
    pub client_link: String,
    made: Vec<String>,
}

impl Hosts {
    /// Makes the two hosts, named after this process so two runs never meet.
    pub fn create() -> io::Result<Hosts> {
        let pid = std::process::id();
        let mut hosts = Hosts {
            server: format!("sb-trace-server-{pid}"),
            client: format!("sb-trace-client-{pid}"),
            // Interface names hold 15 bytes at most.
            client_link: format!("sbc{}", pid % 100_000_000),
            made: Vec::new(),
        };
        let server_link = format!("sbs{}", pid % 100_000_000);
        for ns in [hosts.server.clone(), hosts.client.clone()] {
            ip(&["netns", "add", &ns])?;
            hosts.made.push(ns);
        }
        let (server, client, client_link) = (
            hosts.server.clone(),
            hosts.client.clone(),
            hosts.client_link.clone(),
        );
        ip(&[
            "link",
            "add",
            &server_link,
            "netns",
            &server,
            "type",
            "veth",
            "peer",
            "name",
            &client_link,
            "netns",
            &client,
        ])?;
        for (ns, link, addr) in [
            (&server, &server_link, SERVER_IP),
            (&client, &client_link, CLIENT_IP),
        ] {
            ip(&["-n", ns, "addr", "add", &format!("{addr}/24"), "dev", link])?;
            ip(&["-n", ns, "link", "set", link, "up"])?;
            ip(&["-n", ns, "link", "set", "lo", "up"])?;
        }
        Ok(hosts)
    }

    /// `command` run inside the host `ns` (one of [`Hosts::server`], [`Hosts::client`]).
    pub fn command_in(&self, ns: &str, program: &std::path::Path) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", ns]).arg(program);
        c
    }
}

impl Drop for Hosts {
    fn drop(&mut self) {
        // Removing a namespace removes its end of the cable, and with it the other end.
        for ns in self.made.drain(..).rev() {
            let _ = ip(&["netns", "delete", &ns]);
        }
    }
}

/// Runs `ip ARGS`, an error with what it said if it fails.
fn ip(args: &[&str]) -> io::Result<Output> {
    let out = Command::new("ip").args(args).output().map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("cannot run `ip` (iproute2): {e}; it makes the two hosts"),
        )
    })?;
    if !out.status.success() {
        return Err(io::Error::other(format!(
            "`ip {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(out)
}
