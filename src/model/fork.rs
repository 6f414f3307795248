//! `fork`: a child process per connection, as socketserver's ForkingMixIn.
//!
//! The multi-process lesson: the parent accepts, forks, and goes back to accepting; the child
//! serves that one connection with the blocking loop and exits. A crash in a child costs only
//! its connection. Processes cost far more than threads to start, so this suits few, long
//! connections. `--max-children` bounds them: past it, the parent accepts no more until a
//! child ends, and new connections wait in the kernel's backlog (as they do past
//! `--max-conns`). Children are reaped as they
//! end (a SIGCHLD pipe wakes the parent's `poll`), so none is left a zombie.

use super::blocking;
use super::process::Children;
use crate::hooks::PLACE_RECHECK;
use crate::shared::Shared;
use crate::sys;
use crate::transport::Listener;
use std::io;
use std::os::fd::AsRawFd;
use std::sync::Arc;

/// Serves until a stop, forking a child per connection, then drains the children.
pub(crate) fn serve(listener: Listener, shared: &Arc<Shared>) -> io::Result<()> {
    listener.set_nonblocking(true)?;
    let mut children = Children::new()?;
    let max_children = shared.max_children.max(1);
    while !shared.lifecycle.is_stopping() {
        let below_max = children.len() < max_children;
        let room = shared.hooks.has_room();
        let mut fds = [
            sys::pollin(shared.lifecycle.waker_fd()),
            sys::pollin(children.fd()),
            sys::pollin(if below_max && room {
                listener.as_raw_fd()
            } else {
                -1 // not watched
            }),
        ];
        sys::poll(&mut fds, (!room).then_some(PLACE_RECHECK))?;
        if fds[1].ready() {
            children.reap();
        }
        if !fds[2].ready() {
            continue;
        }
        let (stream, addr) = match shared.hooks.accept_with_place(|| listener.accept()) {
            Ok(Some(accepted)) => accepted,
            Ok(None) => continue,
            Err(e) => {
                shared.hooks.accept_failed(e)?;
                continue;
            }
        };
        let _ = stream.set_nodelay(shared.nodelay);
        let Some(peer) = shared.hooks.admit(addr, Some(stream.as_raw_fd())) else {
            continue; // refused: closed unread, no child forked
        };
        let forked = children.spawn(|| {
            // The child: its copy of the listener would keep the port bound after the
            // server is gone, so it goes first. SIGTERM from the parent cuts the connection.
            sys::close_inherited(listener.as_raw_fd());
            sys::route_stop_signals(None, Some(stream.as_raw_fd()));
            let (child, writer) = match shared.for_worker() {
                Ok(child) => child,
                Err(e) => {
                    tracing::error!(error = %e, "child cannot start; closing the connection");
                    return 1;
                }
            };
            blocking::serve_stream(&stream, peer, &child, || sys::stop_signals() > 0);
            child.finish(writer); // its record is written before it exits
            0
        });
        if let Err(e) = forked {
            tracing::error!(error = %e, "cannot fork; closing the connection");
        }
        // The parent's copy of the connection closes here; the child's serves it.
    }
    drop(listener);
    children.stop(&shared.lifecycle, false)
}
