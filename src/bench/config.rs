//! What to measure and how (the options of `switchboard bench`), checked before a run.

use crate::addr::Addr;
use crate::bench::payload::{Expect, Payload};
use crate::codec::{Framing, DEFAULT_MAX_FRAME};
use crate::transport::MAX_DATAGRAM;
use std::io;
use std::time::Duration;

/// What to measure and how: the options of `switchboard bench`.
#[derive(Debug, Clone)]
pub struct BenchConfig {
    /// The server.
    pub addr: Addr,
    /// Connections (for datagrams: sockets) open at once. Default 50.
    pub conns: usize,
    /// Requests in flight per connection in the closed loop (above 1: pipelining). Default 1.
    pub depth: usize,
    /// What each request carries. Default: 64 lower-case letters.
    pub payload: Payload,
    /// Open loop: requests per second in all, spread evenly over the connections. `None`:
    /// closed loop.
    pub rate: Option<f64>,
    /// How long the measured window lasts. Default 10 s.
    pub duration: Duration,
    /// How long to run before measuring (connections open, caches warm). Default 1 s.
    pub warmup: Duration,
    /// Threads that generate load. Default: one per core this process may use, or half of
    /// them when the server is on this machine (a loopback or Unix address), so the server
    /// keeps cores of its own: a load generator that takes every core measures itself.
    pub threads: usize,
    /// The server's framing.
    pub framing: Framing,
    /// What a correct reply is.
    pub expect: Expect,
    /// A reply owed for longer than this fails its connection (`timeout`); a datagram is
    /// counted lost. Default 5 s.
    pub timeout: Duration,
    /// After a connection fails, open another and go on (the failure is still counted).
    pub reconnect: bool,
    /// Run the load generator's threads on these CPUs only.
    pub cpus: Option<Vec<usize>>,
    /// How a `tls://` server is trusted (see [`crate::tls::client_config`]). `None`: no
    /// certificate is.
    pub tls: Option<std::sync::Arc<rustls::ClientConfig>>,
    /// TCP: the local addresses connections are made from, in turn (empty: the kernel's
    /// choice). Each gives about 28,000 ports to one server; [`run`](crate::bench::run()) spreads connections to a
    /// loopback IPv4 server over 127.0.0.x by itself when one address has too few.
    pub sources: Vec<std::net::IpAddr>,
}

/// Connections one source address is given to one server: the kernel's ephemeral ports
/// (32768-60999 by default) less a margin for other sockets.
pub const CONNS_PER_SOURCE: usize = 25_000;

/// Open files kept for other uses than connections (the store, the runtime, stdio).
pub(super) const SPARE_FILES: u64 = 64;

impl BenchConfig {
    /// The defaults of `switchboard bench`, against `addr`.
    pub fn new(addr: Addr) -> Self {
        BenchConfig {
            threads: default_threads(&addr),
            addr,
            conns: 50,
            depth: 1,
            payload: Payload::Letters(64),
            rate: None,
            duration: Duration::from_secs(10),
            warmup: Duration::from_secs(1),
            framing: Framing::Raw,
            expect: Expect::Upper,
            timeout: Duration::from_secs(5),
            reconnect: false,
            cpus: None,
            tls: None,
            sources: Vec::new(),
        }
    }

    /// Refuses a configuration that cannot run, saying what to change.
    pub(super) fn check(&self) -> Result<(), BenchError> {
        let invalid = |why: String| Err(BenchError::Invalid(why));
        if self.conns == 0 || self.depth == 0 || self.threads == 0 {
            return invalid("--conns, --depth and --threads must be at least 1".into());
        }
        if self.payload.is_empty() {
            return invalid("the message must not be empty (--size at least 1)".into());
        }
        if self.duration.is_zero() {
            return invalid("--duration must be above 0".into());
        }
        match self.rate {
            Some(r) if !(r.is_finite() && r > 0.0) => {
                return invalid(format!("--rate {r}: give a number of messages per second above 0"))
            }
            Some(r) if r / (self.conns as f64) > 1e6 => {
                return invalid(format!(
                    "--rate {r} over {} connections is over a million per connection per second: open more connections",
                    self.conns
                ))
            }
            _ => {}
        }
        if let Payload::Fixed(m) = &self.payload {
            if self.framing == Framing::Line && m.contains(&b'\n') {
                return invalid(
                    "a line-framed message cannot hold a newline (use --frame len)".into(),
                );
            }
        }
        let framed = self.payload.len() + if self.framing == Framing::Len { 4 } else { 1 };
        if !self.addr.is_stream() && framed > MAX_DATAGRAM {
            return invalid(format!(
                "a {}-byte message does not fit in one datagram (at most {MAX_DATAGRAM} bytes with its framing)",
                self.payload.len()
            ));
        }
        if framed > DEFAULT_MAX_FRAME {
            return invalid(format!(
                "a {}-byte message is over the 16 MiB that servers take by default",
                self.payload.len()
            ));
        }
        Ok(())
    }
}

/// One thread per core, or half the cores for a server on this machine.
pub(super) fn default_threads(addr: &Addr) -> usize {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let local = match addr {
        Addr::Tcp(sa) | Addr::Tls { addr: sa, .. } | Addr::Udp(sa) => sa.ip().is_loopback(),
        Addr::Unix(_) | Addr::UnixGram(_) => true,
    };
    if local {
        (cores / 2).max(1)
    } else {
        cores
    }
}

/// Why a run could not be made.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// The configuration cannot run.
    #[error("{0}")]
    Invalid(String),
    /// Nothing answered at the address before the run.
    #[error("cannot reach {addr}: {why} (is a server listening there? `switchboard serve {addr}` starts one)")]
    Unreachable {
        /// The server's address.
        addr: Addr,
        /// What failed.
        why: String,
    },
    /// The load generator's threads could not be started.
    #[error("cannot start the load generator")]
    Io(#[from] io::Error),
}
