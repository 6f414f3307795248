//! Models: how connections are served. Each model is one file with one entry point,
//! `serve(listener, shared)`, which accepts connections until a stop and drives each
//! connection's [`Session`](crate::Session). A model never knows which service or codec it
//! runs; a service never knows which model runs it.
//!
//! | model | IO | unit of concurrency | file |
//! | --- | --- | --- | --- |
//! | `iterative` | blocking | none: one client at a time | `iterative.rs` |
//! | `threads` | blocking | a thread per connection | `threads.rs` |
//! | `pool` | blocking | a fixed pool of threads | `pool.rs` |
//! | `fork` | blocking | a process per connection | `fork.rs` |
//! | `prefork` | multiplexing | worker processes, each an epoll loop | `prefork.rs` |
//! | `nonblocking` | non-blocking | an event loop that tries every socket | `nonblocking.rs` |
//! | `select` | multiplexing | an event loop over select(2) | `select.rs` |
//! | `poll` | multiplexing | an event loop over poll(2) | `poll.rs` |
//! | `epoll` | multiplexing | event loops over epoll(7), edge-triggered | `epoll.rs` |
//! | `sigio` | signal-driven | an event loop woken by the kernel's signals | `sigio.rs` |
//! | `async` | asynchronous (tokio) | a task per connection | `async.rs` |
//! | `uring` | asynchronous (io_uring) | completions on one ring | `uring.rs` |
//!
//! What the blocking models share (the accept loop and the per-connection loop) is in
//! `blocking.rs`; what the process models share (forking, reaping) in `process.rs`; what the reactors share (the connection table, driving a non-blocking
//! connection, the drain) is in `reactor.rs`.

#[path = "async.rs"]
mod async_;
mod blocking;
mod datagram;
mod epoll;
mod fork;
mod iterative;
mod nonblocking;
mod poll;
mod pool;
mod prefork;
mod process;
mod reactor;
mod read_buffer;
mod select;
mod sigio;
mod threads;
mod uring;
mod uring_features;

pub(crate) use read_buffer::ReadBuffer;
pub use uring_features::{UringFeature, UringFeatures};

use crate::addr::Addr;
use crate::shared::Shared;
use crate::transport::Listener;
use std::fmt;
use std::io;
use std::sync::Arc;

/// A concurrency and IO model, chosen by `serve --model`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum Model {
    /// The plan's own loops: accept one client, serve it until it leaves, accept the next. Others
    /// wait in the kernel's backlog meanwhile.
    Iterative,
    /// A thread per connection, as socketserver's ThreadingMixIn: simple, and fine up to some
    /// thousands of clients.
    Threads,
    /// A fixed pool of `--workers` threads fed by a bounded queue of connections.
    Pool,
    /// A child process per connection, as socketserver's ForkingMixIn; at most `--max-children`.
    Fork,
    /// A master and `--workers` worker processes (default one per core), each an epoll loop.
    Prefork,
    /// One thread trying every non-blocking socket in turn: the lesson before multiplexing.
    Nonblocking,
    /// One thread, multiplexed with select(2); at most FD_SETSIZE (1024) fds.
    Select,
    /// One thread, multiplexed with poll(2).
    Poll,
    /// `--workers` threads (default 1), each an edge-triggered epoll(7) loop.
    Epoll,
    /// One thread the kernel wakes with a real-time signal naming the socket that turned ready
    /// (F_SETSIG, O_ASYNC): signal-driven IO.
    Sigio,
    /// tokio tasks (coroutines) on `--workers` threads (default: one per core).
    Async,
    /// io_uring: accepts, receives and sends submitted in batches, one thread.
    Uring,
}

impl Model {
    /// Every model, in the order `models` lists them.
    pub const ALL: &'static [Model] = &[
        Model::Iterative,
        Model::Threads,
        Model::Pool,
        Model::Fork,
        Model::Prefork,
        Model::Nonblocking,
        Model::Select,
        Model::Poll,
        Model::Epoll,
        Model::Sigio,
        Model::Async,
        Model::Uring,
    ];

    /// The name used on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Model::Iterative => "iterative",
            Model::Threads => "threads",
            Model::Pool => "pool",
            Model::Fork => "fork",
            Model::Prefork => "prefork",
            Model::Nonblocking => "nonblocking",
            Model::Select => "select",
            Model::Poll => "poll",
            Model::Epoll => "epoll",
            Model::Sigio => "sigio",
            Model::Async => "async",
            Model::Uring => "uring",
        }
    }

    /// One line on what the model is, for `switchboard models`.
    pub fn summary(self) -> &'static str {
        match self {
            Model::Iterative => "blocking IO, one client at a time (the plan's connection loop)",
            Model::Threads => {
                "blocking IO, a thread per connection (socketserver's ThreadingMixIn)"
            }
            Model::Pool => "blocking IO, a fixed pool of threads and a bounded queue",
            Model::Fork => "blocking IO, a process per connection (socketserver's ForkingMixIn)",
            Model::Prefork => "multiplexing, worker processes each running an epoll loop",
            Model::Nonblocking => "non-blocking IO, one thread trying every socket in turn",
            Model::Select => "multiplexing, one event loop over select(2)",
            Model::Poll => "multiplexing, one event loop over poll(2)",
            Model::Epoll => "multiplexing, edge-triggered epoll(7) loops",
            Model::Sigio => {
                "signal-driven IO: a signal names each ready socket (rare: a system call per event)"
            }
            Model::Async => "asynchronous, tokio tasks (coroutines)",
            Model::Uring => "asynchronous, io_uring submissions and completions",
        }
    }

    /// The IO model it teaches: `blocking`, `non-blocking`, `multiplexing`, `signal-driven` or
    /// `asynchronous`.
    pub fn io_class(self) -> &'static str {
        match self {
            Model::Iterative | Model::Threads | Model::Pool | Model::Fork => "blocking",
            Model::Nonblocking => "non-blocking",
            Model::Select | Model::Poll | Model::Epoll | Model::Prefork => "multiplexing",
            Model::Sigio => "signal-driven",
            Model::Async | Model::Uring => "asynchronous",
        }
    }

    /// What serves one client: `none` (one at a time), `thread`, `process`, `event loop`,
    /// `signal`, `task` or `completion`.
    pub fn unit(self) -> &'static str {
        match self {
            Model::Iterative => "none",
            Model::Threads | Model::Pool => "thread",
            Model::Fork => "process",
            Model::Prefork => "process + event loop",
            Model::Nonblocking | Model::Select | Model::Poll | Model::Epoll => "event loop",
            Model::Sigio => "signal",
            Model::Async => "task",
            Model::Uring => "completion",
        }
    }

    /// The address schemes it serves.
    pub fn transports(self) -> &'static str {
        if self.serves_datagrams() {
            "tcp unix udp unixgram"
        } else {
            "tcp unix"
        }
    }

    /// Whether it can run on this machine, and if not, why: only `uring` can be refused (by an
    /// old kernel, `kernel.io_uring_disabled`, or a seccomp filter).
    pub fn available(self) -> Result<(), String> {
        match self {
            Model::Uring => crate::sys::uring::Uring::new(8, UringFeatures::none())
                .map(drop)
                .map_err(|e| e.to_string()),
            _ => Ok(()),
        }
    }

    /// True if this model serves this kind of address: every model serves streams; the
    /// datagram models (see [`Model::serves_datagrams`]) serve datagrams too.
    pub fn serves(self, addr: &Addr) -> bool {
        addr.is_stream() || self.serves_datagrams()
    }

    /// True for the models that serve `udp://` and `unixgram://`.
    pub fn serves_datagrams(self) -> bool {
        matches!(
            self,
            Model::Iterative
                | Model::Threads
                | Model::Pool
                | Model::Epoll
                | Model::Sigio
                | Model::Async
                | Model::Uring
        )
    }

    /// The names of the models that serve `addr`, for an error message.
    pub fn serving(addr: &Addr) -> String {
        let names: Vec<&str> = Model::ALL
            .iter()
            .filter(|m| m.serves(addr))
            .map(|m| m.name())
            .collect();
        if names.is_empty() {
            format!(
                "none yet ({} addresses are not served in this version)",
                addr.scheme()
            )
        } else {
            names.join(", ")
        }
    }

    /// Serves connections from `listener` until a stop, and returns once they have drained.
    pub(crate) fn serve(self, listener: Listener, shared: &Arc<Shared>) -> io::Result<()> {
        match self {
            Model::Iterative => iterative::serve(listener, shared),
            Model::Threads => threads::serve(listener, shared),
            Model::Pool => pool::serve(listener, shared),
            Model::Fork => fork::serve(listener, shared),
            Model::Prefork => prefork::serve(listener, shared),
            Model::Nonblocking => nonblocking::serve(listener, shared),
            Model::Select => select::serve(listener, shared),
            Model::Poll => poll::serve(listener, shared),
            Model::Epoll => epoll::serve(listener, shared),
            Model::Sigio => sigio::serve(listener, shared),
            Model::Async => async_::serve(listener, shared),
            Model::Uring => uring::serve(listener, shared),
        }
    }
}

/// The default: the fastest model that passes everything on this machine. Measured side by
/// side (see the book's Performance), `uring` and `epoll` lead, `uring` by a few percent of
/// CPU per message; where the kernel refuses io_uring (old, or disabled, as in many containers)
/// the default is `epoll`.
impl Default for Model {
    fn default() -> Self {
        static PREFERRED: std::sync::OnceLock<Model> = std::sync::OnceLock::new();
        *PREFERRED.get_or_init(|| match Model::Uring.available() {
            Ok(()) => Model::Uring,
            Err(_) => Model::Epoll,
        })
    }
}

impl fmt::Display for Model {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
