//! Models: how connections are served. Each model is one file with one entry point,
//! `serve(listener, shared)`, which accepts connections until a stop and drives each
//! connection's [`Session`](crate::Session). A model never knows which service or codec it
//! runs; a service never knows which model runs it.
//!
//! | model | IO | unit of concurrency | file |
//! | --- | --- | --- | --- |
//! | `iterative` | blocking | none: one client at a time | `iterative.rs` |
//! | `threads` | blocking | a thread per connection | `threads.rs` |
//!
//! What the blocking models share (the accept loop and the per-connection loop) is in
//! `blocking.rs`.

mod blocking;
mod iterative;
mod threads;

use crate::addr::Addr;
use crate::server::Shared;
use crate::transport::Listener;
use std::fmt;
use std::io;
use std::sync::Arc;

/// A concurrency and IO model, chosen by `serve --model`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, clap::ValueEnum)]
pub enum Model {
    /// The plan's own loops: accept one client, serve it until it leaves, accept the next. Others
    /// wait in the kernel's backlog meanwhile.
    Iterative,
    /// A thread per connection, as socketserver's ThreadingMixIn: simple, and fine up to some
    /// thousands of clients.
    #[default]
    Threads,
}

impl Model {
    /// Every model, in the order `models` lists them.
    pub const ALL: &'static [Model] = &[Model::Iterative, Model::Threads];

    /// The name used on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Model::Iterative => "iterative",
            Model::Threads => "threads",
        }
    }

    /// One line on what the model is, for `switchboard models`.
    pub fn summary(self) -> &'static str {
        match self {
            Model::Iterative => "blocking IO, one client at a time (the plan's connection loop)",
            Model::Threads => {
                "blocking IO, a thread per connection (socketserver's ThreadingMixIn)"
            }
        }
    }

    /// True if this model serves this kind of address.
    pub fn serves(self, addr: &Addr) -> bool {
        addr.is_stream()
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
        }
    }
}

impl fmt::Display for Model {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
