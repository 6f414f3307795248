//! What a run tells its caller while it runs: the window's edges and progress.

use std::time::Duration;

/// How far a run has come, for a progress line.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Progress {
    /// Connections made so far (while connecting; afterwards all that were).
    pub connected: u64,
    /// True once every connection is made (or has failed once) and the load has begun.
    pub started: bool,
    /// Since the load started (warm-up included); zero while connecting.
    pub elapsed: Duration,
    /// The load's whole length (warm-up included).
    pub total: Duration,
    /// True once the warm-up is over.
    pub measuring: bool,
    /// Replies counted so far.
    pub replies: u64,
    /// Replies per second so far in the measured window.
    pub msgs_per_s: f64,
    /// The 99th percentile latency so far, in µs.
    pub p99_us: u64,
    /// Failures and mismatches so far.
    pub errors: u64,
}

/// Told what happens during a run, on the thread that called [`run`](crate::bench::run()): the lab reads a
/// server's CPU time and memory at the edges of the measured window.
pub trait Observer {
    /// Every connection is made (or has failed once); the load begins when this returns, so
    /// an observer may hold it back (the processes of one bench start together).
    fn all_connected(&mut self) {}
    /// The warm-up is over: the measured window begins.
    fn window_started(&mut self) {}
    /// A few times a second.
    fn progress(&mut self, _progress: &Progress) {}
    /// The measured window is over; connections are still open.
    fn window_ended(&mut self) {}
}

/// Nothing to observe.
impl Observer for () {}
