//! `nonblocking`: one thread, non-blocking sockets, and a loop that tries every socket in turn.
//!
//! The plan's non-blocking IO lesson, before multiplexing: no call ever waits, so one thread
//! can serve many clients — but nothing tells the loop which socket is ready, so it asks each
//! one, again and again. That costs CPU while nothing happens: after a turn in which no socket
//! had anything, the loop yields, and after many idle turns in a row it sleeps a millisecond,
//! which keeps an idle server to a few percent of a core at the price of up to 1 ms of latency.
//! `select`, `poll` and `epoll` exist to remove exactly this cost.

use super::reactor::{self, Drain, Status, Table, Timers, READ_SIZE};
use super::ReadBuffer;
use crate::shared::Shared;
use crate::transport::Listener;
use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Idle turns after which the loop sleeps instead of yielding.
const SPIN_TURNS: u32 = 100;

/// Serves until a stop on one thread, then drains.
pub(crate) fn serve(listener: Listener, shared: &Arc<Shared>) -> io::Result<()> {
    listener.set_nonblocking(true)?;
    let mut table = Table::default();
    let mut buf = ReadBuffer::new(READ_SIZE);
    let mut drain = Drain::new(shared);
    let mut idle_turns = 0u32;
    let mut timers = Timers::default();
    loop {
        let accepting = !drain.stopping();
        if !accepting && (table.is_empty() || drain.expired()) {
            drain.cut(&mut table);
            return Ok(());
        }
        let mut progress = false;
        if accepting {
            while let Some(conn) = reactor::accept(&listener, shared)? {
                reactor::insert(&mut table, &mut timers, conn);
                progress = true;
            }
        }
        // Try every connection: each drive reads and writes what it can without waiting.
        let now = Instant::now();
        for token in table.tokens() {
            let Some(conn) = table.get_mut(token) else {
                continue;
            };
            let before = conn.activity();
            match conn.drive(&mut buf, now) {
                Status::Closed(reason) => {
                    reactor::close(&mut table, token, reason, shared);
                    progress = true;
                }
                Status::Open { .. } => {
                    progress |= conn.activity() != before;
                    timers.arm(token, conn);
                }
            }
        }
        timers.expire(&mut table, now, |table, token, reason| {
            reactor::close(table, token, reason, shared)
        });
        if progress {
            idle_turns = 0;
        } else if idle_turns < SPIN_TURNS {
            idle_turns += 1;
            std::thread::yield_now();
        } else {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}
