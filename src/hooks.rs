//! What a model calls on a connection's way, and nothing else: a place for it
//! ([`reserve`](Hooks::reserve), [`release`](Hooks::release), [`has_room`](Hooks::has_room)), an
//! accept that failed ([`accept_failed`](Hooks::accept_failed)), the verdict on its peer
//! ([`admit`](Hooks::admit)), a session to serve it ([`session`](Hooks::session)), and its end
//! ([`closed`](Hooks::closed), or [`answered`](Hooks::answered) for a datagram). Behind them:
//! the limits, the access lists and trusted proxies, the counters and meters, the recording.
//! The server's other options are the model's own (`shared::Shared`).

use crate::access::{AccessList, TrustedProxies};
use crate::codec::Framing;
use crate::counters::Counters;
use crate::metrics::Meters;
use crate::service::{Peer, Service};
use crate::session::{CloseReason, MessageTap, Session, SessionStats, Timeouts};
use crate::store::{now_us, MessageBatcher, Recording, SessionRow};
use crate::sys::SharedMem;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The connection's way through the server: what every connection of a server goes through,
/// in every thread and (with the shared memory behind it) every process.
pub(crate) struct Hooks {
    pub(crate) service: Arc<dyn Service>,
    pub(crate) framing: Framing,
    pub(crate) max_frame: usize,
    /// The model's name, for the log.
    pub(crate) model: &'static str,
    pub(crate) counters: Arc<SharedMem<Counters>>,
    /// Where connections are recorded, if anywhere.
    pub(crate) recording: Option<Recording>,
    /// Who may connect.
    pub(crate) access: Arc<AccessList>,
    /// What the metrics endpoint adds to the counters, when there is one.
    pub(crate) meters: Option<Arc<SharedMem<Meters>>>,
    /// How long a connection may keep the server waiting.
    pub(crate) timeouts: Timeouts,
    /// `--max-conns`: connections open at once, across every thread and process.
    pub(crate) max_conns: u64,
    /// `--output-budget`: unsent reply bytes past which a connection is read no further.
    pub(crate) output_budget: usize,
    /// `--max-conns-per-ip`: the bound, and the connections open per address.
    pub(crate) per_ip: Option<(u32, Arc<SharedMem<PerIp>>)>,
    /// `--proxy-protocol`: every connection starts with a PROXY header naming its client,
    /// believed only from these proxies (`--proxy-from`); anyone else is refused unread.
    pub(crate) proxies: Option<Arc<TrustedProxies>>,
    /// `tls://`: every connection speaks TLS with this configuration.
    pub(crate) tls: Option<Arc<rustls::ServerConfig>>,
    /// Until when this process accepts nothing, in milliseconds of [`process_clock`]: its
    /// open files ran out. In this process's own memory, not the shared one: another worker
    /// of the server may still have files to spare.
    pub(crate) out_of_files_until: AtomicU64,
    /// Accepts that failed for want of files or memory since the last log line about it, and
    /// when that line was (ms of [`process_clock`], 0 for never): once a second at most.
    pub(crate) accept_failures: AtomicU64,
    pub(crate) accept_failure_logged: AtomicU64,
}

/// How long a process whose open files ran out leaves new clients in the backlog before it
/// tries again (meanwhile it serves the connections it has).
const OUT_OF_FILES_PAUSE: Duration = Duration::from_millis(100);

/// Milliseconds since this process first asked: a clock for deadlines kept in an atomic.
fn process_clock() -> u64 {
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis() as u64
}

/// While `--max-conns` are open, a model that stopped accepting looks again this often (a
/// place may free in another process, which cannot wake it).
pub(crate) const PLACE_RECHECK: Duration = Duration::from_millis(10);

/// The IP address of a stream peer named as the log names it (`tcp://IP:PORT`, `tls://...`).
fn peer_ip(addr: &str) -> Option<std::net::IpAddr> {
    let rest = addr
        .strip_prefix("tcp://")
        .or_else(|| addr.strip_prefix("tls://"))?;
    rest.parse::<std::net::SocketAddr>().ok().map(|sa| sa.ip())
}

/// Slots of [`PerIp`]: 64 KiB of shared memory.
const PER_IP_SLOTS: usize = 16 * 1024;

/// Connections open per client address (`--max-conns-per-ip`), in memory shared across fork
/// so every process of the server counts into it. Counted in slots by a hash of the address:
/// two addresses that share one of the 16,384 slots (rare) share a bound, and neither alone
/// ever gets a lower one.
pub(crate) struct PerIp {
    slots: [std::sync::atomic::AtomicU32; PER_IP_SLOTS],
}

impl Default for PerIp {
    fn default() -> Self {
        PerIp {
            slots: std::array::from_fn(|_| std::sync::atomic::AtomicU32::new(0)),
        }
    }
}

impl PerIp {
    fn slot(&self, ip: std::net::IpAddr) -> &std::sync::atomic::AtomicU32 {
        use std::hash::{Hash, Hasher};
        // Fixed keys: the same slot in every process of the server. An IPv4 client of an IPv6
        // socket is counted as the IPv4 it is.
        let ip = match ip {
            std::net::IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, std::net::IpAddr::V4),
            v4 => v4,
        };
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        ip.hash(&mut hasher);
        &self.slots[hasher.finish() as usize % PER_IP_SLOTS]
    }

    /// Takes a place for one more connection from `ip`: false when `max` are open.
    fn take(&self, ip: std::net::IpAddr, max: u32) -> bool {
        self.slot(ip)
            .fetch_update(Relaxed, Relaxed, |n| (n < max).then_some(n + 1))
            .is_ok()
    }

    /// Gives back a place [`take`](PerIp::take) took.
    fn give_back(&self, ip: std::net::IpAddr) {
        let _ = self
            .slot(ip)
            .fetch_update(Relaxed, Relaxed, |n| n.checked_sub(1));
    }
}

/// A recorded session's messages go to its batcher as they are answered.
impl MessageTap for MessageBatcher {
    fn answered(&mut self, seq: u64, request: &[u8], reply: &[u8]) {
        self.push(seq, request, reply);
    }
}

impl Hooks {
    /// Takes a place for one more connection before accepting it: false while `--max-conns`
    /// are open, and then the model leaves new clients in the backlog. A place taken is given
    /// back by [`closed`](Hooks::closed), by a refusal, or with [`release`](Hooks::release)
    /// when no connection came.
    pub(crate) fn reserve(&self) -> bool {
        if self.out_of_files() {
            return false;
        }
        let max = self.max_conns;
        self.counters
            .places
            .fetch_update(Relaxed, Relaxed, |n| (n < max).then_some(n + 1))
            .is_ok()
    }

    /// Gives back a place [`reserve`](Hooks::reserve) took.
    pub(crate) fn release(&self) {
        self.counters.places.fetch_sub(1, Relaxed);
    }

    /// True while fewer than `--max-conns` connections are open: a reactor watches its listener.
    pub(crate) fn has_room(&self) -> bool {
        self.counters.places.load(Relaxed) < self.max_conns && !self.out_of_files()
    }

    /// True while this process pauses accepting because its open files ran out.
    fn out_of_files(&self) -> bool {
        let until = self.out_of_files_until.load(Relaxed);
        if until == 0 {
            return false;
        }
        if process_clock() < until {
            return true;
        }
        // Over: back to the one atomic load a turn, without reading the clock.
        let _ = self
            .out_of_files_until
            .compare_exchange(until, 0, Relaxed, Relaxed);
        false
    }

    /// Decides what an accept error means: the end of the server (only a broken listener), a
    /// pause (no open files or memory left: for [`OUT_OF_FILES_PAUSE`] this process accepts
    /// nothing, and as for a full `--max-conns` clients wait in the backlog while the
    /// connections it has are served), or nothing (a client that left before its accept).
    pub(crate) fn accept_failed(&self, e: std::io::Error) -> std::io::Result<()> {
        use std::io::ErrorKind::*;
        match e.kind() {
            WouldBlock | Interrupted | ConnectionAborted => Ok(()),
            InvalidInput | NotConnected => Err(e), // the listener is broken
            _ => {
                // Logged once a second at most while it lasts, with how often it happened.
                let failed = self.accept_failures.fetch_add(1, Relaxed) + 1;
                let now = process_clock();
                let logged = self.accept_failure_logged.load(Relaxed);
                if (logged == 0 || now >= logged + 1000)
                    && self
                        .accept_failure_logged
                        .compare_exchange(logged, now.max(1), Relaxed, Relaxed)
                        .is_ok()
                {
                    self.accept_failures.fetch_sub(failed, Relaxed);
                    tracing::warn!(error = %e, failures = failed, "accept failed (this many times since the last such line); accepting again in 100 ms, serving the open connections meanwhile");
                }
                let until = now + OUT_OF_FILES_PAUSE.as_millis() as u64;
                self.out_of_files_until.store(until, Relaxed);
                Ok(())
            }
        }
    }

    /// Takes a place and accepts a stream through `accept`, or says why not: `Ok(None)` when
    /// there is no room or nothing waiting (the place is given back).
    pub(crate) fn accept_with_place<T>(
        &self,
        accept: impl FnOnce() -> std::io::Result<T>,
    ) -> std::io::Result<Option<T>> {
        if !self.reserve() {
            return Ok(None);
        }
        accept().map(Some).inspect_err(|_| self.release())
    }

    /// A connection was accepted: numbers it and counts it.
    fn accepted(&self, addr: String) -> Peer {
        Peer::new(self.counters.connections.fetch_add(1, Relaxed) + 1, addr)
    }

    /// A connection (or datagram) was accepted from `addr`, its socket `fd` for a Unix peer's
    /// credentials: the peer to serve, or `None` when it is refused (the access lists, or
    /// `--proxy-from` behind a proxy). A refusal is counted, recorded (reason `denied` or
    /// `untrusted`) and logged at most once per address per interval; the caller closes the
    /// connection without reading a byte. A stream's place under `--max-conns` is given back
    /// when it is refused.
    pub(crate) fn admit(&self, addr: String, fd: Option<RawFd>) -> Option<Peer> {
        let verdict = self
            .judge(&addr, fd)
            .and_then(|()| self.take_per_ip(&addr, fd));
        let peer = self.accepted(addr);
        let Err(reason) = verdict else {
            return Some(peer);
        };
        if fd.is_some() {
            self.release();
        }
        if let Some(meters) = &self.meters {
            meters.closed(&reason, Duration::ZERO);
        }
        self.record(&peer, SessionStats::default(), &reason, Instant::now());
        self.refused(&peer, &reason);
        None
    }

    /// Judges a connection's own peer at accept. Behind a proxy, only a proxy named by
    /// `--proxy-from` may connect at all; the networks then judge the client its header names
    /// (in the session), or this address when the header names none. A Unix peer's user is
    /// the socket's own, so `--allow-uid` judges it here either way.
    fn judge(&self, addr: &str, fd: Option<RawFd>) -> Result<(), CloseReason> {
        match &self.proxies {
            Some(proxies) if !proxies.trusts(addr, fd) => Err(CloseReason::UntrustedProxy),
            Some(_) if !addr.starts_with("unix:") => Ok(()),
            _ if self.access.admits(addr, fd) => Ok(()),
            _ => Err(CloseReason::Denied),
        }
    }

    /// Takes a place for a stream from `addr` under `--max-conns-per-ip`, given back when it
    /// closes ([`closed`](Hooks::closed)); Unix peers and datagrams have none to take.
    fn take_per_ip(&self, addr: &str, fd: Option<RawFd>) -> Result<(), CloseReason> {
        match (&self.per_ip, peer_ip(addr), fd) {
            (Some((max, open)), Some(ip), Some(_)) if !open.take(ip, *max) => {
                Err(CloseReason::PerIpLimit)
            }
            _ => Ok(()),
        }
    }

    /// A peer refused for `reason`: counted, and logged at most once per address per interval
    /// across every process of the server.
    fn refused(&self, peer: &Peer, reason: &CloseReason) {
        let untrusted = *reason == CloseReason::UntrustedProxy;
        let counter = match reason {
            CloseReason::UntrustedProxy => &self.counters.untrusted,
            CloseReason::PerIpLimit => &self.counters.limited,
            _ => &self.counters.denied,
        };
        counter.fetch_add(1, Relaxed);
        // The address without its port: a flood from one host is one line per interval.
        let host = match peer.addr.rsplit_once(':') {
            Some((host, port)) if port.chars().all(|c| c.is_ascii_digit()) => host,
            _ => peer.addr.as_str(),
        };
        if !self.counters.refusal_due(host) {
            return;
        }
        if *reason == CloseReason::PerIpLimit {
            tracing::warn!(peer = %peer.addr, model = %self.model, "too many connections from this address (--max-conns-per-ip): closed unread; further refusals of this address are not logged for 10 s");
        } else if untrusted {
            tracing::warn!(peer = %peer.addr, model = %self.model, "not a trusted proxy (--proxy-from): closed unread, its PROXY header not believed; further refusals of this address are not logged for 10 s");
        } else {
            tracing::warn!(peer = %peer.addr, model = %self.model, "denied by the access lists (--allow, --deny, --allow-uid); further refusals of this address are not logged for 10 s");
        }
    }

    /// A fresh session for a connection with `peer`; behind a proxy, one that reads the PROXY
    /// header first and judges the client it names by the access lists.
    pub(crate) fn session(&self, mut peer: Peer) -> Session {
        if self.tls.is_some() {
            // Named by the scheme it speaks, so the store tells TLS sessions apart.
            if let Some(rest) = peer.addr.strip_prefix("tcp://") {
                peer.addr = format!("tls://{rest}");
            }
        }
        let codec = self.framing.codec(self.max_frame);
        let id = peer.id;
        let mut session = if self.proxies.is_some() {
            let (service, access) = (self.service.clone(), self.access.clone());
            // The proxy's own verdict, for a header that names no client (a health check).
            let own = peer.addr.starts_with("unix:") || access.admits(&peer.addr, None);
            Session::behind_proxy(
                codec,
                Box::new(move |client, named| {
                    let admitted = if named {
                        access.admits(&client.addr, None)
                    } else {
                        own
                    };
                    if !admitted {
                        return Err(CloseReason::Denied);
                    }
                    Ok(service.open(client))
                }),
            )
        } else {
            Session::new(codec, self.service.open(&peer))
        }
        .with_peer(peer)
        .with_timeouts(self.timeouts)
        .with_output_budget(self.output_budget);
        if let Some(config) = &self.tls {
            session = match rustls::ServerConnection::new(config.clone()) {
                Ok(conn) => session.with_tls(conn),
                Err(e) => session.failed(CloseReason::Tls(e.to_string())),
            };
        }
        if let Some(meters) = &self.meters {
            let meters = meters.clone();
            session = session.with_service_timer(Box::new(move |d| meters.served(d)));
        }
        let Some(recording) = &self.recording else {
            return session;
        };
        // Time spent waiting for the store is the server's, not the peer's.
        session = session.with_stall_clock(recording.stalls());
        match recording.messages(id) {
            Some(batcher) => session.with_tap(Box::new(batcher)),
            None => session,
        }
    }

    /// Hands a finished connection's row to the store, if the server records.
    fn record(&self, peer: &Peer, stats: SessionStats, reason: &CloseReason, opened: Instant) {
        if let Some(recording) = &self.recording {
            let closed = now_us();
            recording.session(SessionRow {
                id: peer.id,
                peer: peer.addr.clone(),
                transport: peer.addr.split("://").next().unwrap_or("").to_string(),
                opened: closed - opened.elapsed().as_micros() as i64,
                closed,
                bytes_in: stats.bytes_in,
                bytes_out: stats.bytes_out,
                msgs_in: stats.msgs_in,
                msgs_out: stats.msgs_out,
                reason: reason.kind().to_string(),
            });
        }
    }

    /// A connection closed: one log line and the server's counters; its place is free. One
    /// refused after its PROXY header is counted and logged as any refusal is.
    pub(crate) fn closed(&self, session: &Session, reason: &CloseReason) {
        let (peer, stats, opened) = (session.peer(), session.stats(), session.opened());
        self.release();
        if let (Some((_, open)), Some(ip)) = (&self.per_ip, peer_ip(&peer.addr)) {
            open.give_back(ip);
        }
        self.count(stats, reason, opened);
        self.record(peer, stats, reason, opened);
        if matches!(reason, CloseReason::Denied | CloseReason::UntrustedProxy) {
            return self.refused(peer, reason);
        }
        let ms = opened.elapsed().as_millis() as u64;
        if reason.is_error() {
            tracing::warn!(id = peer.id, peer = %peer.addr, model = %self.model, bytes_in = stats.bytes_in,
                bytes_out = stats.bytes_out, ms, reason = %reason, "closed");
        } else {
            tracing::info!(id = peer.id, peer = %peer.addr, model = %self.model, bytes_in = stats.bytes_in,
                bytes_out = stats.bytes_out, ms, reason = %reason, "closed");
        }
    }

    /// A datagram was answered: counted like a connection of one message, logged at debug
    /// level (a line per datagram would drown the log), or as a warning when it failed.
    pub(crate) fn answered(&self, session: &Session, reason: &CloseReason) {
        let (peer, stats, opened) = (session.peer(), session.stats(), session.opened());
        self.count(stats, reason, opened);
        self.record(peer, stats, reason, opened);
        if reason.is_error() {
            tracing::warn!(id = peer.id, peer = %peer.addr, model = %self.model, bytes_in = stats.bytes_in, reason = %reason, "datagram not answered");
        } else {
            tracing::debug!(id = peer.id, peer = %peer.addr, model = %self.model, bytes_in = stats.bytes_in,
                bytes_out = stats.bytes_out, us = opened.elapsed().as_micros() as u64, "datagram answered");
        }
    }

    fn count(&self, stats: SessionStats, reason: &CloseReason, opened: Instant) {
        let c = &self.counters;
        c.bytes_in.fetch_add(stats.bytes_in, Relaxed);
        c.bytes_out.fetch_add(stats.bytes_out, Relaxed);
        c.messages.fetch_add(stats.msgs_in, Relaxed);
        if reason.is_error() {
            c.errors.fetch_add(1, Relaxed);
        }
        if let CloseReason::Timeout(_) = reason {
            c.timeouts.fetch_add(1, Relaxed);
        }
        // Last: a scrape that sees this close sees everything the connection counted.
        if let Some(meters) = &self.meters {
            meters.closed(reason, opened.elapsed());
        }
    }
}

impl Hooks {
    /// The same hooks for a forked worker: the same options, counters and shared memory, and
    /// `recording` (the worker's own writer, or none). What is this process's own (the pause
    /// for want of files) starts afresh.
    pub(crate) fn for_worker(&self, recording: Option<Recording>) -> Hooks {
        Hooks {
            service: self.service.clone(),
            framing: self.framing,
            max_frame: self.max_frame,
            model: self.model,
            counters: self.counters.clone(),
            recording,
            access: self.access.clone(),
            meters: self.meters.clone(),
            timeouts: self.timeouts,
            max_conns: self.max_conns,
            output_budget: self.output_budget,
            per_ip: self.per_ip.clone(),
            proxies: self.proxies.clone(),
            tls: self.tls.clone(),
            out_of_files_until: Default::default(),
            accept_failures: Default::default(),
            accept_failure_logged: Default::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_address_is_logged_once_per_interval() {
        let c = Counters::default();
        assert!(c.refusal_due("tcp://10.0.0.1"));
        assert!(
            !c.refusal_due("tcp://10.0.0.1"),
            "again within the interval"
        );
        assert!(
            c.refusal_due("tcp://10.0.0.2"),
            "another address has its own line"
        );
    }
}
