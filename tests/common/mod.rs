//! Test helpers, by what they help: a real server process (`server`), a connection to it and
//! its framing (`conn`), its store (`store`), its metrics (`metrics`), TLS (`tls`), a browser (`browser`). Every wait
//! here is bounded, so a broken server fails a test instead of hanging it.

#![allow(dead_code)] // each test binary uses its own part of these helpers

mod browser;
mod conn;
mod metrics;
mod server;
mod store;
mod tls;

// Each test binary uses its own part of these.
#[allow(unused_imports)]
pub use {browser::*, conn::*, metrics::*, server::*, store::*, tls::*};
