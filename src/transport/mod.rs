//! Sockets: creating listeners with their options, and the stream type every model reads and
//! writes. Built on socket2, so every option the plan names (`SO_REUSEADDR`, the `listen`
//! backlog, `TCP_NODELAY`) is set before `bind`/`listen`, where it takes effect.

mod activation;
mod datagram;
mod listener;
mod stream;

pub use activation::{handed_over, inherited};
pub(crate) use activation::{take_ready_pipe, HANDOVER};
pub(crate) use datagram::client_socket_path;
pub use datagram::{datagram_peer_name, DatagramSocket, MAX_DATAGRAM};
pub(crate) use listener::HANDED_OVER;
pub use listener::{bind_beside, unix_peer_name, BindError, Listener};
pub use stream::Stream;

/// Options applied to a listening socket and the connections it accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SocketOptions {
    /// Length of the kernel's queue of connections not yet accepted (`listen(backlog)`). The
    /// plan's `listen(5)` makes the kernel drop connections under load; 1024 does not.
    pub backlog: i32,
    /// `SO_REUSEADDR`: rebind at once after a restart, while old connections sit in TIME_WAIT
    /// (the plan's `setsockopt`).
    pub reuse_addr: bool,
    /// `SO_REUSEPORT`: let several sockets bind the same port, the kernel spreading
    /// connections among them.
    pub reuse_port: bool,
    /// `TCP_NODELAY`: send small replies at once instead of waiting to batch them (Nagle),
    /// which would add up to 40 ms to a request/reply exchange.
    pub nodelay: bool,
}

impl Default for SocketOptions {
    fn default() -> Self {
        SocketOptions {
            backlog: 1024,
            reuse_addr: true,
            reuse_port: false,
            nodelay: true,
        }
    }
}
