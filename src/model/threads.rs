//! `threads`: a thread per connection, as socketserver's ThreadingMixIn.
//!
//! Each accepted connection gets its own thread running the blocking connection loop, so a
//! slow or silent client holds only its own thread. Threads are cheap enough for some thousands
//! of clients; past that, their stacks and the scheduler cost more than a reactor's.

use super::{blocking, datagram};
use crate::shared::Shared;
use crate::transport::Listener;
use std::io;
use std::sync::Arc;
use std::thread;

/// A connection thread needs little stack: its buffers are on the heap.
const STACK_SIZE: usize = 256 * 1024;

/// Serves each connection on a thread of its own until a stop, then waits for them to drain.
pub(crate) fn serve(listener: Listener, shared: &Arc<Shared>) -> io::Result<()> {
    if let Listener::Datagram(socket) = &listener {
        // As socketserver's ThreadingUDPServer: a thread per datagram. The scope waits for
        // the last ones at a stop.
        return thread::scope(|scope| {
            datagram::serve_blocking(socket, shared, |bytes, from| {
                let bytes = bytes.to_vec();
                let spawned = thread::Builder::new()
                    .stack_size(STACK_SIZE)
                    .spawn_scoped(scope, move || {
                        datagram::answer(socket, &bytes, &from, shared)
                    });
                if let Err(e) = spawned {
                    tracing::error!(error = %e, "cannot start a thread; datagram dropped");
                }
            })
        });
    }
    blocking::accept_loop(&listener, shared, |conn| {
        let conn_shared = shared.clone();
        let spawned = thread::Builder::new()
            .name("conn".into())
            .stack_size(STACK_SIZE)
            .spawn(move || blocking::serve_connection(conn, &conn_shared));
        if let Err(e) = spawned {
            // Out of threads: this connection is dropped (the client sees it closed), the
            // server goes on with the others.
            tracing::error!(error = %e, "cannot start a connection thread; closing the connection");
        }
    })?;
    drop(listener); // stop taking connections into the backlog while the others drain
    shared.lifecycle.wait_closed();
    Ok(())
}
