//! The client: connects to a server, frames requests and knows where each reply ends.
//!
//! [`Client::request`] sends and receives at the same time (a poll loop), so a message larger
//! than the socket buffers cannot deadlock against a server that answers while it reads. Where a
//! reply ends: `line` and `len` replies carry their own end; a `raw` reply is complete once as
//! many bytes came back as were sent (true of `upper` and `echo`), or when the server has sent
//! nothing more for [`Client::set_quiet`] (100 ms by default). Over `udp://` and `unixgram://`,
//! a request is one datagram and its reply is the datagram that comes back.
//!
//! The rooms: `connection` (the [`Client`] and its requests), `transport` (a plain or TLS
//! socket beneath it), `error` (why a request failed), `repl` (the `>>: ` prompt and the pipe).

mod connection;
mod error;
mod repl;
mod transport;

pub use connection::Client;
pub use error::ClientError;
pub use repl::{interactive, pipe};
