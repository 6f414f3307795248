//! `iterative`: the plan's connection loop around its communication loop, one client at a time.
//!
//! The simplest server there is, and the one to learn from: it accepts a client and serves it
//! until it leaves before accepting the next. Every other client waits in the kernel's backlog
//! meanwhile, so one slow client stalls everyone; the other models exist to fix that.

use super::{blocking, datagram};
use crate::shared::Shared;
use crate::transport::Listener;
use std::io;
use std::sync::Arc;

/// Serves one connection (or datagram) at a time until a stop.
pub(crate) fn serve(listener: Listener, shared: &Arc<Shared>) -> io::Result<()> {
    if let Listener::Datagram(socket) = &listener {
        return datagram::serve_blocking(socket, shared, |bytes, from| {
            datagram::answer(socket, bytes, &from, shared)
        });
    }
    blocking::accept_loop(&listener, shared, |conn| {
        blocking::serve_connection(conn, shared)
    })
}
