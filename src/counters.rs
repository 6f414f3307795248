//! What every worker of a server counts and reports: the totals, in memory shared across
//! `fork` so the process models' workers count into the same ones, and the summary a server
//! prints when it stops. Below the models and the metrics, which read them.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// The server's totals. They live in memory shared across `fork`, so the process models'
/// workers count into the same totals as their parent.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    /// Connections accepted so far: the last connection's id.
    pub(crate) connections: AtomicU64,
    pub(crate) errors: AtomicU64,
    pub(crate) bytes_in: AtomicU64,
    pub(crate) bytes_out: AtomicU64,
    pub(crate) messages: AtomicU64,
    /// Connections refused by the access lists (numbered with the others, not served).
    pub(crate) denied: AtomicU64,
    /// Connections refused under `--proxy-protocol` because their peer is not a proxy named
    /// by `--proxy-from` (numbered with the others, not served).
    pub(crate) untrusted: AtomicU64,
    /// Connections refused because their address had `--max-conns-per-ip` open.
    pub(crate) limited: AtomicU64,
    /// Connections closed by one of their timeouts.
    pub(crate) timeouts: AtomicU64,
    /// Places taken under `--max-conns`: connections open, and accepts about to happen.
    pub(crate) places: AtomicU64,
    /// `sigio`: times the kernel's queue of readiness signals overflowed, and every
    /// connection was checked instead.
    pub(crate) signal_overflows: AtomicU64,
    /// When a refused address was last logged: slots of (address hash << 32 | seconds), so
    /// every process of a server logs a flood from one address once per interval. Two
    /// addresses sharing a slot may, rarely, hide each other's line for an interval.
    pub(crate) refusals_logged: [AtomicU64; 32],
}

/// The counters at one instant, for the metrics endpoint.
pub(crate) struct CountersNow {
    /// Connections accepted, admitted or denied.
    pub(crate) connections_seen: u64,
    pub(crate) denied: u64,
    pub(crate) errors: u64,
    pub(crate) messages: u64,
    pub(crate) bytes_in: u64,
    pub(crate) bytes_out: u64,
}

impl Counters {
    /// True when a refusal of `host` should be logged now: none was in the last interval, in
    /// any process of the server. Claims the slot, so only one caller logs.
    pub(crate) fn refusal_due(&self, host: &str) -> bool {
        use std::hash::{Hash, Hasher};
        // Fixed keys: the same hash in every process of the server.
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        host.hash(&mut hasher);
        let hash = hasher.finish() & 0xffff_ffff;
        let now = (crate::store::now_us() as u64 / 1_000_000) & 0xffff_ffff;
        let slot = &self.refusals_logged[hash as usize % self.refusals_logged.len()];
        let seen = slot.load(Relaxed);
        let recent = seen >> 32 == hash && now.wrapping_sub(seen & 0xffff_ffff) < REFUSAL_LOG_EVERY;
        !recent
            && slot
                .compare_exchange(seen, (hash << 32) | now, Relaxed, Relaxed)
                .is_ok()
    }

    pub(crate) fn snapshot(&self) -> CountersNow {
        CountersNow {
            connections_seen: self.connections.load(Relaxed),
            denied: self.denied.load(Relaxed),
            errors: self.errors.load(Relaxed),
            messages: self.messages.load(Relaxed),
            bytes_in: self.bytes_in.load(Relaxed),
            bytes_out: self.bytes_out.load(Relaxed),
        }
    }

    pub(crate) fn summary(&self, elapsed: Duration) -> Summary {
        let denied = self.denied.load(Relaxed);
        let untrusted = self.untrusted.load(Relaxed);
        let limited = self.limited.load(Relaxed);
        Summary {
            connections: self.connections.load(Relaxed) - denied - untrusted - limited,
            denied,
            untrusted,
            limited,
            timeouts: self.timeouts.load(Relaxed),
            errors: self.errors.load(Relaxed),
            bytes_in: self.bytes_in.load(Relaxed),
            bytes_out: self.bytes_out.load(Relaxed),
            messages: self.messages.load(Relaxed),
            signal_overflows: self.signal_overflows.load(Relaxed),
            elapsed,
        }
    }
}

/// How often a refused address is logged at most, in seconds.
const REFUSAL_LOG_EVERY: u64 = 10;

/// What a server served, printed when it stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    /// Connections served.
    pub connections: u64,
    /// Connections the access lists refused.
    pub denied: u64,
    /// Connections refused under `--proxy-protocol` because their peer is not a proxy named by
    /// `--proxy-from`.
    pub untrusted: u64,
    /// Connections refused because their address had `--max-conns-per-ip` open.
    pub limited: u64,
    /// Connections closed by `--idle-timeout`, `--frame-timeout` or `--send-timeout`.
    pub timeouts: u64,
    /// Connections that ended in an error (a bad frame, an IO error).
    pub errors: u64,
    /// Bytes received.
    pub bytes_in: u64,
    /// Bytes sent.
    pub bytes_out: u64,
    /// Requests answered.
    pub messages: u64,
    /// `sigio`: times the queue of readiness signals overflowed (`RLIMIT_SIGPENDING`), so
    /// every connection was checked instead.
    pub signal_overflows: u64,
    /// How long the server ran.
    pub elapsed: Duration,
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "served {} connections ({} errors), {} messages, {} bytes in, {} bytes out, in {:.1} s",
            self.connections,
            self.errors,
            self.messages,
            self.bytes_in,
            self.bytes_out,
            self.elapsed.as_secs_f64()
        )?;
        if self.timeouts > 0 {
            write!(f, "; {} connections timed out", self.timeouts)?;
        }
        if self.denied > 0 {
            write!(f, "; {} connections denied", self.denied)?;
        }
        if self.limited > 0 {
            write!(
                f,
                "; {} connections over --max-conns-per-ip refused",
                self.limited
            )?;
        }
        if self.untrusted > 0 {
            write!(
                f,
                "; {} connections from untrusted proxies refused",
                self.untrusted
            )?;
        }
        if self.signal_overflows > 0 {
            write!(
                f,
                "; the signal queue overflowed {} times (every connection checked each time)",
                self.signal_overflows
            )?;
        }
        Ok(())
    }
}
