//! Services, sans-IO: the application. Bytes in, bytes out, state per connection.
//!
//! A service never sees a socket, a thread or a model: [`Service::open`] is called once per
//! connection and returns that connection's [`Handler`]; the handler gets each request the codec
//! decodes and appends its reply. The same service runs unchanged under every model.
//!
//! Write your own by implementing both traits (see `examples/custom_service.rs`):
//!
//! ```
//! use switchboard::service::{Action, Handler, Peer, Reply, Service};
//!
//! /// Numbers each reply: "1: hello", "2: again", ... counting per connection.
//! struct Numbered;
//! struct Count(u64);
//!
//! impl Service for Numbered {
//!     fn name(&self) -> &str { "numbered" }
//!     fn open(&self, _peer: &Peer) -> Box<dyn Handler> { Box::new(Count(0)) }
//! }
//! impl Handler for Count {
//!     fn call(&mut self, request: &[u8], reply: &mut Reply<'_>) -> Action {
//!         self.0 += 1;
//!         reply.extend_from_slice(format!("{}: ", self.0).as_bytes());
//!         reply.extend_from_slice(request);
//!         Action::Continue
//!     }
//! }
//!
//! let mut h = Numbered.open(&Peer::new(1, "tcp://127.0.0.1:5000"));
//! let mut out = Vec::new();
//! h.call(b"hi", &mut Reply::new(&mut out));
//! assert_eq!(out, b"1: hi");
//! ```

mod echo;
mod upper;

pub use echo::Echo;
pub use upper::Upper;

use std::sync::Arc;

/// An application served over connections. Shared by every connection, so it is `Sync`; what
/// belongs to one connection lives in the [`Handler`] that [`open`](Service::open) returns.
pub trait Service: Send + Sync + 'static {
    /// A short name for logs and the store.
    fn name(&self) -> &str;

    /// A connection was accepted: returns the handler that serves it until it closes.
    fn open(&self, peer: &Peer) -> Box<dyn Handler>;
}

/// One connection's side of a service: called with each request, in order.
pub trait Handler: Send {
    /// Answers one request (one decoded frame) by appending to `reply`. An empty reply is
    /// still framed and sent (an empty line, a zero-length frame), except in `raw` framing,
    /// where it sends nothing.
    fn call(&mut self, request: &[u8], reply: &mut Reply<'_>) -> Action;
}

/// What the connection does after a request is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Keep serving this connection.
    Continue,
    /// Send what is queued, then close this connection.
    Close,
}

/// Who a connection is with: given to [`Service::open`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// The connection's number in this server, from 1.
    pub id: u64,
    /// The peer's address, as in `tcp://127.0.0.1:50312` (`unix://` for an unnamed Unix peer).
    pub addr: String,
}

impl Peer {
    /// A peer with this id and address.
    pub fn new(id: u64, addr: impl Into<String>) -> Self {
        Peer {
            id,
            addr: addr.into(),
        }
    }
}

/// Where a handler writes its reply: it can only append, never touch what is already queued.
#[derive(Debug)]
pub struct Reply<'a> {
    out: &'a mut Vec<u8>,
}

impl<'a> Reply<'a> {
    /// A reply appended to `out`.
    pub fn new(out: &'a mut Vec<u8>) -> Self {
        Reply { out }
    }

    /// Appends bytes to the reply.
    pub fn extend_from_slice(&mut self, bytes: &[u8]) {
        self.out.extend_from_slice(bytes);
    }

    /// Appends bytes one at a time, as made (a copy and a change in one pass, as `upper` does).
    pub fn extend(&mut self, bytes: impl IntoIterator<Item = u8>) {
        self.out.extend(bytes);
    }

    /// Appends bytes and returns them, to be changed in place.
    pub fn append(&mut self, bytes: &[u8]) -> &mut [u8] {
        let start = self.out.len();
        self.out.extend_from_slice(bytes);
        &mut self.out[start..]
    }
}

impl std::io::Write for Reply<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.out.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The services built into the `switchboard` command, chosen by `--service`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Builtin {
    /// The plan's service: ASCII a-z upper-cased, every other byte unchanged.
    #[default]
    Upper,
    /// Every message back as it came.
    Echo,
}

impl Builtin {
    /// The service itself.
    pub fn service(self) -> Arc<dyn Service> {
        match self {
            Builtin::Upper => Arc::new(Upper),
            Builtin::Echo => Arc::new(Echo),
        }
    }
}
