//! # switchboard
//!
//! Serve any service under any concurrency model, over TCP and Unix sockets.
//!
//! The one idea: **services and codecs never touch a socket; models own all IO.** A connection
//! is a [`Session`] (a [`codec`] plus a [`service`] handler); a [`Model`] only moves bytes
//! between sockets and sessions. So any service runs under any model, chosen by one value.
//!
//! ```
//! use switchboard::{Model, Server, client::Client, codec::Framing, service::Echo};
//! let server = Server::builder()
//!     .addr("tcp://127.0.0.1:0".parse().unwrap())
//!     .model(Model::Iterative)
//!     .service(Echo)
//!     .framing(Framing::Len)
//!     .bind()
//!     .unwrap();
//! let addr = server.local_addr().unwrap();
//! let stop = server.stop_handle();
//! let running = std::thread::spawn(move || server.run());
//! let mut client = Client::connect(&addr, Framing::Len).unwrap();
//! assert_eq!(client.request(b"any \0 bytes").unwrap(), b"any \0 bytes");
//! drop(client);
//! stop.stop();
//! println!("{}", running.join().unwrap().unwrap());
//! ```
//!
//! Layers point one way: the command line → [`Server`] → [`model`] → [`Session`] →
//! [`codec`] and [`service`].

#![warn(missing_docs)]

pub mod access;
pub mod addr;
pub mod bench;
pub mod client;
pub mod codec;
mod counters;
mod hooks;
pub mod lab;
pub mod lesson;
mod metrics;
pub mod model;
pub mod pid_file;
pub mod proxy;
pub mod reload;
pub mod server;
pub mod service;
pub mod session;
mod shared;
pub mod shutdown;
pub mod store;
mod sys;
pub use sys::RawStderr;
pub mod tls;
pub mod trace;
pub mod transport;

pub use addr::Addr;
pub use model::Model;
pub use server::{ServeError, Server, ServerBuilder, Summary};
pub use session::{CloseReason, Expiry, Session, Timeouts};
pub use shutdown::StopHandle;

/// The book's Rust examples compile (`cargo test --doc`).
#[cfg(doctest)]
#[doc = include_str!("../docs/book/src/library.md")]
struct BookExamples;
