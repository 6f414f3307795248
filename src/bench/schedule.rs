//! The open loop's schedule, sans-IO: when each request falls due, and from when its latency
//! counts.
//!
//! A request counts from when it was due if it could not go out then because the previous
//! write was still waiting on the server (a server that stops reading cannot hide its stall:
//! coordinated omission). A request that waited only for the load generator's own timer (tokio
//! wakes timers on a 1 ms tick) counts from when that timer fired: that lateness is the load
//! generator's, not the server's.

use std::time::{Duration, Instant};

/// One connection's schedule: a request every `interval` from `first`.
#[derive(Debug, Clone)]
pub(crate) struct Schedule {
    next: Instant,
    interval: Duration,
    /// When the last write finished: a request due before it was held up by that write.
    writer_free: Instant,
}

impl Schedule {
    pub(crate) fn new(first: Instant, interval: Duration) -> Schedule {
        Schedule {
            next: first,
            interval,
            writer_free: first,
        }
    }

    /// When the next request falls due.
    pub(crate) fn next(&self) -> Instant {
        self.next
    }

    /// The requests due by `now` (the timer fired at `now`), each with the time its latency
    /// counts from.
    pub(crate) fn due(&mut self, now: Instant) -> impl Iterator<Item = Instant> + '_ {
        std::iter::from_fn(move || {
            if self.next > now {
                return None;
            }
            let due = self.next;
            self.next += self.interval;
            Some(if due < self.writer_free { due } else { now })
        })
    }

    /// The write of the due requests finished at `at`.
    pub(crate) fn wrote(&mut self, at: Instant) {
        self.writer_free = at;
    }

    /// Starts again from `now` (after a reconnect), keeping the interval.
    pub(crate) fn restart(&mut self, now: Instant) {
        self.next = now;
        self.writer_free = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_late_timer_counts_from_when_it_fired() {
        let t0 = Instant::now();
        let ms = Duration::from_millis(1);
        let mut s = Schedule::new(t0, 10 * ms);
        // The timer fires 1 ms late, the writer idle: the request counts from the firing.
        let since: Vec<Instant> = s.due(t0 + ms).collect();
        assert_eq!(since, vec![t0 + ms]);
        assert_eq!(s.next(), t0 + 10 * ms);
    }

    #[test]
    fn a_blocked_write_counts_from_when_each_was_due() {
        let t0 = Instant::now();
        let ms = Duration::from_millis(1);
        let mut s = Schedule::new(t0, 10 * ms);
        assert_eq!(s.due(t0).count(), 1);
        // The write of that request waited 35 ms on a server that did not read.
        s.wrote(t0 + 35 * ms);
        let since: Vec<Instant> = s.due(t0 + 35 * ms).collect();
        assert_eq!(since, vec![t0 + 10 * ms, t0 + 20 * ms, t0 + 30 * ms]);
        assert_eq!(s.next(), t0 + 40 * ms);
    }
}
