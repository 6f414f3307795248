//! What a load generator thread counts: latencies in HDR histograms, replies, mismatches and
//! errors by kind. One per thread, merged at the end and read for the progress line meanwhile.

use hdrhistogram::Histogram;
use std::collections::BTreeMap;
use std::io;
use std::time::{Duration, Instant};

/// The longest latency a histogram holds: past it, values are clamped.
const MAX_TRACKED_NS: u64 = 120_000_000_000;

/// Why a connection failed, as the report counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Failure {
    /// The server refused the connection (nothing listens there).
    Refused,
    /// Another failure to connect.
    Connect,
    /// The server reset the connection.
    Reset,
    /// The server closed the connection while replies were owed.
    Closed,
    /// No reply within the timeout.
    Timeout,
    /// A reply that is not a valid frame.
    Frame,
    /// A datagram whose reply never came.
    Lost,
    /// Another IO error.
    Io,
}

impl Failure {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Failure::Refused => "refused",
            Failure::Connect => "connect",
            Failure::Reset => "reset",
            Failure::Closed => "closed",
            Failure::Timeout => "timeout",
            Failure::Frame => "frame",
            Failure::Lost => "lost",
            Failure::Io => "io",
        }
    }

    /// The failure [`Failure::name`] names.
    pub(crate) fn from_name(name: &str) -> Option<Failure> {
        use Failure::*;
        [Refused, Connect, Reset, Closed, Timeout, Frame, Lost, Io]
            .into_iter()
            .find(|f| f.name() == name)
    }

    pub(crate) fn from_io(e: &io::Error) -> Failure {
        use io::ErrorKind::*;
        match e.kind() {
            ConnectionReset | ConnectionAborted | BrokenPipe => Failure::Reset,
            UnexpectedEof => Failure::Closed,
            TimedOut => Failure::Timeout,
            _ => Failure::Io,
        }
    }

    pub(crate) fn connecting(e: &io::Error) -> Failure {
        match e.kind() {
            io::ErrorKind::ConnectionRefused | io::ErrorKind::NotFound => Failure::Refused,
            _ => Failure::Connect,
        }
    }
}

pub(crate) fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_TRACKED_NS, 3).expect("valid histogram bounds")
}

/// A second's latencies: two significant digits (1%) is enough to see a stall, at a tenth of
/// the memory of the run's own histogram, one per second of the run.
pub(crate) fn second_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_TRACKED_NS, 2).expect("valid histogram bounds")
}

/// One second of the measured window: its replies, the failures and wrong replies in it,
/// and its latencies.
#[derive(Clone)]
pub(crate) struct Second {
    pub(crate) replies: u64,
    pub(crate) errors: u64,
    pub(crate) latency: Histogram<u64>,
}

impl Second {
    pub(crate) fn new() -> Second {
        Second {
            replies: 0,
            errors: 0,
            latency: second_histogram(),
        }
    }

    pub(crate) fn add(&mut self, other: &Second) {
        self.replies += other.replies;
        self.errors += other.errors;
        let _ = self.latency.add(&other.latency);
    }
}

/// One thread's counts. Latencies are nanoseconds; only replies that arrive inside the
/// measured window count.
pub(crate) struct Tally {
    window: (Instant, Instant),
    pub(crate) latency: Histogram<u64>,
    pub(crate) connect: Histogram<u64>,
    pub(crate) replies: u64,
    pub(crate) mismatches: u64,
    pub(crate) failures: BTreeMap<Failure, u64>,
    pub(crate) connected: u64,
    /// How long making every connection took (set once, for the whole run).
    pub(crate) connect_secs: f64,
    /// Requests sent before the window ended and still unanswered when it did.
    pub(crate) unanswered: u64,
    /// How long the oldest of them had waited by then, in nanoseconds.
    pub(crate) oldest_unanswered_ns: u64,
    /// Each connection's replies inside the window, once it has ended.
    pub(crate) replies_per_conn: Vec<u64>,
    /// Connections that had no reply in the window though a request of theirs had been
    /// waiting since its first half: a server that never served them.
    pub(crate) unserved: u64,
    /// Closed-loop connections whose first request went out only after the window had begun
    /// (the load generator itself was late), and how far into it the last one did (ns).
    pub(crate) late_starts: u64,
    pub(crate) latest_start_ns: u64,
    /// The window second by second (the timeline), as far as anything happened in it.
    pub(crate) seconds: Vec<Second>,
    /// The index of the window's last second (a part second counts as one).
    last_second: usize,
}

impl Tally {
    pub(crate) fn new(window_start: Instant, window_end: Instant) -> Tally {
        Tally {
            window: (window_start, window_end),
            latency: histogram(),
            connect: histogram(),
            replies: 0,
            mismatches: 0,
            failures: BTreeMap::new(),
            connected: 0,
            connect_secs: 0.0,
            unanswered: 0,
            oldest_unanswered_ns: 0,
            replies_per_conn: Vec::new(),
            unserved: 0,
            late_starts: 0,
            latest_start_ns: 0,
            seconds: Vec::new(),
            last_second: last_second(window_start, window_end),
        }
    }

    /// The second of the window `at` falls in (the last one for the window's end itself).
    fn second(&mut self, at: Instant) -> Option<&mut Second> {
        if at < self.window.0 || at > self.window.1 {
            return None;
        }
        let i = ((at - self.window.0).as_secs() as usize).min(self.last_second);
        if self.seconds.len() <= i {
            self.seconds.resize_with(i + 1, Second::new);
        }
        Some(&mut self.seconds[i])
    }

    /// Sets the measured window, once the load's start is known.
    pub(crate) fn set_window(&mut self, start: Instant, end: Instant) {
        self.window = (start, end);
        self.last_second = last_second(start, end);
    }

    /// A correct reply arrived at `at` for a message sent (or due, in an open loop) at `since`;
    /// true when it counts (it came inside the window).
    pub(crate) fn reply(&mut self, since: Instant, at: Instant) -> bool {
        let counts = at >= self.window.0 && at < self.window.1;
        if counts {
            let latency = nanos(at.saturating_duration_since(since));
            self.replies += 1;
            self.latency.saturating_record(latency);
            if let Some(second) = self.second(at) {
                second.replies += 1;
                second.latency.saturating_record(latency);
            }
        }
        counts
    }

    /// The run is over with these requests (sent, or due, at each instant) still unanswered.
    /// Each sent before the window ended is counted, and its wait until then goes into the
    /// latencies as the least it waited, so a server that leaves requests unanswered moves
    /// the percentiles as it would for its users. The earliest counted, if any was.
    pub(crate) fn unanswered(
        &mut self,
        since: impl IntoIterator<Item = Instant>,
    ) -> Option<Instant> {
        let end = self.window.1;
        let mut earliest: Option<Instant> = None;
        for since in since.into_iter().filter(|&t| t < end) {
            let waited = nanos(end - since);
            self.unanswered += 1;
            self.oldest_unanswered_ns = self.oldest_unanswered_ns.max(waited);
            self.latency.saturating_record(waited);
            // In the timeline, the last second holds them: the end is when they were seen.
            if let Some(second) = self.second(end) {
                second.latency.saturating_record(waited);
            }
            earliest = Some(earliest.map_or(since, |e| e.min(since)));
        }
        earliest
    }

    /// A reply at `at`, after the window ended, to a request sent (or due) at `since`, before
    /// it ended: unanswered when the window ended, as [`Tally::unanswered`] counts it. Its
    /// `since` when that is what it was.
    pub(crate) fn late(&mut self, since: Instant, at: Instant) -> Option<Instant> {
        if at >= self.window.1 {
            self.unanswered([since])
        } else {
            None
        }
    }

    /// A closed-loop connection sent its first request at `at`. More than a tenth of the
    /// window after it began, the load generator was late (too many connections for its
    /// threads, or a busy machine): counted, so the report can say so rather than blame the
    /// server. (With no warm-up every connection begins a little after the window does.)
    pub(crate) fn first_request(&mut self, at: Instant) {
        let (start, end) = self.window;
        if at > start + end.saturating_duration_since(start) / 10 {
            self.late_starts += 1;
            self.latest_start_ns = self.latest_start_ns.max(nanos(at - self.window.0));
        }
    }

    /// A connection is done: it had `replies` in the window, and when the window ended its
    /// oldest request unanswered had been waiting since `waiting_since`. With no reply, it
    /// was unserved if that wait began in the window's first half (or before): the server
    /// had half the window and more to answer it. A request sent later that is still waiting
    /// is left to `--max-wait`: its connection may have started late, through no fault of
    /// the server's.
    pub(crate) fn served(&mut self, replies: u64, waiting_since: Option<Instant>) {
        self.replies_per_conn.push(replies);
        let (start, end) = self.window;
        let half_way = start + (end.saturating_duration_since(start)) / 2;
        if replies == 0 && waiting_since.is_some_and(|since| since <= half_way) {
            self.unserved += 1;
        }
    }

    /// A reply that is not what the service owed.
    pub(crate) fn mismatch(&mut self, at: Instant) {
        if at < self.window.1 {
            self.mismatches += 1;
            if let Some(second) = self.second(at) {
                second.errors += 1;
            }
        }
    }

    /// A connection failed (or, for `Lost`, a datagram got no reply).
    pub(crate) fn fail(&mut self, failure: Failure, at: Instant) {
        if at < self.window.1 {
            *self.failures.entry(failure).or_default() += 1;
            if let Some(second) = self.second(at) {
                second.errors += 1;
            }
        }
    }

    /// Adds another tally's timeline to this one, second by second.
    pub(crate) fn add_seconds(&mut self, seconds: &[Second]) {
        if self.seconds.len() < seconds.len() {
            self.seconds.resize_with(seconds.len(), Second::new);
        }
        for (mine, theirs) in self.seconds.iter_mut().zip(seconds) {
            mine.add(theirs);
        }
    }

    pub(crate) fn connected(&mut self, took: Duration) {
        self.connected += 1;
        self.connect.saturating_record(nanos(took));
    }

    pub(crate) fn errors(&self) -> u64 {
        self.failures.values().sum()
    }

    pub(crate) fn add(&mut self, other: &Tally) {
        // Same bounds on both sides, so adding cannot fail.
        let _ = self.latency.add(&other.latency);
        let _ = self.connect.add(&other.connect);
        self.replies += other.replies;
        self.mismatches += other.mismatches;
        self.connected += other.connected;
        self.connect_secs = self.connect_secs.max(other.connect_secs);
        self.unanswered += other.unanswered;
        self.oldest_unanswered_ns = self.oldest_unanswered_ns.max(other.oldest_unanswered_ns);
        self.replies_per_conn
            .extend_from_slice(&other.replies_per_conn);
        self.unserved += other.unserved;
        self.late_starts += other.late_starts;
        self.latest_start_ns = self.latest_start_ns.max(other.latest_start_ns);
        self.add_seconds(&other.seconds);
        for (k, v) in &other.failures {
            *self.failures.entry(*k).or_default() += v;
        }
    }
}

/// The index of the last second of a window from `start` to `end`.
fn last_second(start: Instant, end: Instant) -> usize {
    let secs = end.saturating_duration_since(start).as_secs_f64().ceil();
    secs.max(1.0) as usize - 1
}

fn nanos(d: Duration) -> u64 {
    (d.as_nanos() as u64).clamp(1, MAX_TRACKED_NS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_only_inside_the_window() {
        let t0 = Instant::now();
        let (start, end) = (t0 + Duration::from_secs(1), t0 + Duration::from_secs(2));
        let mut t = Tally::new(start, end);
        t.reply(t0, t0 + Duration::from_millis(500)); // warm-up
        t.reply(start, start + Duration::from_micros(250));
        t.reply(end, end + Duration::from_micros(1)); // after the end
        t.fail(Failure::Reset, start);
        t.fail(Failure::Reset, end);
        assert_eq!(t.replies, 1);
        assert_eq!(t.errors(), 1);
        let p50 = t.latency.value_at_quantile(0.5);
        assert!((249_000..=251_000).contains(&p50), "{p50}");
    }

    #[test]
    fn unanswered_requests_count_their_wait_until_the_end() {
        let t0 = Instant::now();
        let (start, end) = (t0 + Duration::from_secs(1), t0 + Duration::from_secs(4));
        let mut t = Tally::new(start, end);
        assert!(t.reply(start, start + Duration::from_millis(1)));
        // One waiting since before the window (3.5 s by its end), one since 1 ms before its
        // end, one sent after it (not counted).
        let asked = [
            t0 + Duration::from_millis(500),
            end - Duration::from_millis(1),
            end + Duration::from_millis(1),
        ];
        assert_eq!(t.unanswered(asked), Some(asked[0]));
        assert_eq!(t.unanswered([end]), None);
        // Answered after the end: it was unanswered when the window ended. A warm-up reply
        // is not.
        let sent = end - Duration::from_millis(2);
        assert_eq!(t.late(sent, end + Duration::from_millis(1)), Some(sent));
        assert_eq!(t.late(t0, start), None);
        assert_eq!(t.unanswered, 3);
        assert_eq!(t.oldest_unanswered_ns, 3_500_000_000);
        assert_eq!(t.latency.len(), 4);
        let max = t.latency.max();
        assert!((3_499_000_000..=3_502_000_000).contains(&max), "{max}");
    }

    #[test]
    fn the_timeline_adds_up_to_the_run() {
        let t0 = Instant::now();
        let (start, end) = (
            t0 + Duration::from_secs(1),
            t0 + Duration::from_millis(3500),
        );
        let mut t = Tally::new(start, end);
        for ms in [0, 10, 999, 1_000, 2_400, 2_499] {
            let at = start + Duration::from_millis(ms);
            t.reply(at - Duration::from_micros(100), at);
        }
        t.reply(t0, t0 + Duration::from_millis(500)); // warm-up: in neither
        t.fail(Failure::Reset, start + Duration::from_millis(1_500));
        t.unanswered([start]);
        let mut other = Tally::new(start, end);
        other.reply(start, start + Duration::from_millis(5));
        t.add(&other);
        // 2.5 s: three seconds, the last a half.
        let replies: Vec<u64> = t.seconds.iter().map(|s| s.replies).collect();
        assert_eq!(replies, vec![4, 1, 2]);
        assert_eq!(replies.iter().sum::<u64>(), t.replies);
        assert_eq!(t.seconds.iter().map(|s| s.errors).sum::<u64>(), t.errors());
        // The request unanswered since the start waited 2.5 s, seen in the last second.
        assert!(t.seconds[2].latency.max() >= 2_480_000_000);
        assert!(t.seconds[0].latency.max() < 10_000_000);
    }

    #[test]
    fn a_connection_is_unserved_only_when_it_waited_from_the_first_half_and_got_nothing() {
        let t0 = Instant::now();
        let (start, end) = (
            t0 + Duration::from_millis(500),
            t0 + Duration::from_millis(1500),
        );
        let mut t = Tally::new(start, end);
        t.served(10, Some(t0)); // served, then left waiting: not unserved
        t.served(0, None); // an open loop's connection with nothing due in the window
        t.served(0, Some(t0)); // waiting since before the window: unserved
        t.served(0, Some(start + Duration::from_millis(500))); // since half way: unserved
                                                               // Its first request went out 42 ms before the end (a late load generator): the
                                                               // server had no fair chance, and --max-wait judges that wait instead.
        t.served(0, Some(end - Duration::from_millis(42)));
        let mut other = Tally::new(start, end);
        other.served(0, Some(t0));
        t.add(&other);
        assert_eq!(t.replies_per_conn, vec![10, 0, 0, 0, 0, 0]);
        assert_eq!(t.unserved, 3);
    }

    #[test]
    fn first_requests_after_the_window_began_are_the_load_generators_lateness() {
        let t0 = Instant::now();
        let (start, end) = (
            t0 + Duration::from_millis(500),
            t0 + Duration::from_millis(1500),
        );
        let mut t = Tally::new(start, end);
        t.first_request(t0 + Duration::from_millis(1)); // in the warm-up: on time
        t.first_request(start); // as the window opens: on time
        t.first_request(start + Duration::from_millis(20)); // as with no warm-up: on time
        t.first_request(start + Duration::from_millis(958));
        let mut other = Tally::new(start, end);
        other.first_request(start + Duration::from_millis(150));
        t.add(&other);
        assert_eq!(t.late_starts, 2);
        assert_eq!(t.latest_start_ns, 958_000_000);
    }
}
