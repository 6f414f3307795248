//! The load generator behind `switchboard bench`: many connections against any server, every
//! reply checked, latencies in HDR histograms.
//!
//! **Closed loop** (the default): each connection keeps `depth` requests in flight and sends
//! the next as each reply comes back, so it measures how fast the server answers as much as it
//! can take. **Open loop** (`rate`): requests go out on a fixed schedule whatever the replies
//! do, and each latency is measured from when its request was *due*, so a server that stalls
//! shows the stall in its percentiles instead of slowing the load down to hide it (coordinated
//! omission, as wrk2 corrects it).
//!
//! Connections are spread over `threads` threads, each running a single-threaded tokio
//! runtime of its own (no work stealing, no locks shared between threads); counts are merged
//! at the end. Only replies that arrive inside the measured window (after the warm-up) count.
//!
//! ```no_run
//! use switchboard::bench::{self, BenchConfig};
//! let mut config = BenchConfig::new("tcp://127.0.0.1:8079".parse().unwrap());
//! config.conns = 100;
//! config.duration = std::time::Duration::from_secs(5);
//! let report = bench::run(&config, &mut ()).unwrap();
//! println!("{:.0} msgs/s, p99 {} µs", report.result.msgs_per_s, report.result.p99_us);
//! ```
//!
//! The rooms: `config` (what to measure), `run` (the threads and the window), `connection`
//! (one connection's life), `stream` and `datagram` (the closed and open loops over each),
//! `payload` (requests and the replies owed), `schedule` (the open loop's clock), `tally`
//! (counts and histograms), `report` (what a run measured), `shard` (more connections than
//! one process may hold, over several processes), `merge` (runs from many machines as one).

mod config;
mod connection;
mod datagram;
mod merge;
mod observer;
mod payload;
mod report;
mod run;
mod schedule;
pub mod shard;
mod stream;
mod tally;

pub use config::{BenchConfig, BenchError};
pub use merge::merge;
pub use observer::{Observer, Progress};
pub use payload::{Expect, Payload};
pub use report::{thousands, Report, Second};
pub use run::{conns_per_process, run};
