//! Memory as a bound, never a time: clients that send without pause and never read their
//! replies hold at most about `--output-budget` each of the server's memory, under every model.
//! The server's proportional set size (its processes' `Pss`, so forked workers count once) is
//! read from `/proc` before and after the flood; each model's figure per connection is printed
//! (`cargo test --release --test memory -- --nocapture`).

mod common;

use common::*;
use std::io::{ErrorKind, Write};
use std::net::TcpStream;
use std::time::Duration;

/// Non-reading clients per server.
const CLIENTS: usize = 50;
/// The default `--output-budget`.
const BUDGET: usize = 64 * 1024;
/// What one client may send at most: far past every buffer on the way, so a server that never
/// stops reading shows it in its memory, and the flood ends by itself either way.
const CAP: usize = 32 << 20;

/// A client echoing `bytes` in 64 KiB exchanges, so the server's buffers that are fixed (not
/// per connection) are in use before the count starts. It stays open: a server with no
/// connection left gives a burst's memory back.
fn warm_up(c: &mut TestConn, bytes: usize) {
    let chunk = vec![b'w'; 64 * 1024];
    for _ in 0..bytes / chunk.len() {
        c.write_all(&chunk).unwrap();
        assert_eq!(read_n(c, chunk.len()), upper(&chunk));
    }
}

/// Sends from every client, without ever reading, until no client can send more for a while
/// (the server stopped reading them all) or each sent `CAP`. Bounded by the cap and a number
/// of rounds.
fn flood(clients: &mut [TcpStream]) -> usize {
    let chunk = vec![b'x'; 64 * 1024];
    let mut sent = vec![0usize; clients.len()];
    let mut still = 0;
    for _ in 0..20_000 {
        let mut progress = 0;
        for (c, sent) in clients.iter_mut().zip(&mut sent) {
            if *sent >= CAP {
                continue;
            }
            match c.write(&chunk) {
                Ok(n) => {
                    *sent += n;
                    progress += n;
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(e) => panic!("the server closed a client that only sends: {e}"),
            }
        }
        if progress > 0 {
            still = 0;
            continue;
        }
        still += 1;
        if still == 20 {
            break;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    sent.iter().sum()
}

/// The growth of the server's memory per non-reading client, in bytes, checked against
/// `limit` per client (plus a fixed 4 MiB for allocator arenas and the like).
fn held_per_client(model: &str, args: &[&str], limit: usize) -> usize {
    let s = ServerProcess::stream(model, "tcp", args);
    // uring's ring of receive buffers (16 MiB) is in use once that much has passed through.
    let mut warm = s.connect();
    warm_up(&mut warm, 40 << 20);
    let mut clients: Vec<TcpStream> = (0..CLIENTS)
        .map(|_| TcpStream::connect(s.sockaddr()).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(300)); // accepted, and their threads started
    let before = pss(s.pid());
    for c in &clients {
        c.set_nonblocking(true).unwrap();
    }
    let sent = flood(&mut clients);
    let after = pss(s.pid());
    let per_client = after.saturating_sub(before) / CLIENTS;
    eprintln!(
        "{model:<12} {args:?}: {} KiB held per non-reading client ({} KiB sent each)",
        per_client / 1024,
        sent / CLIENTS / 1024
    );
    assert!(
        after.saturating_sub(before) <= CLIENTS * limit + (4 << 20),
        "{model}: {} KiB per client, past {} KiB",
        per_client / 1024,
        limit / 1024
    );
    drop(clients);
    drop(warm);
    per_client
}

macro_rules! every_model {
    ($($test:ident => $model:literal),* $(,)?) => {$(
        #[test]
        fn $test() {
            // The budget, the reply being built past it (one read's worth), and what the
            // allocator keeps around them.
            held_per_client($model, &["--no-store"], 4 * BUDGET);
        }
    )*};
}

every_model! {
    iterative => "iterative",
    threads => "threads",
    pool => "pool",
    fork => "fork",
    prefork => "prefork",
    nonblocking => "nonblocking",
    select => "select",
    poll => "poll",
    epoll => "epoll",
    sigio => "sigio",
    asynchronous => "async",
    uring => "uring",
}

#[test]
fn uring_without_multishot_receives_holds_to_the_budget_too() {
    // One receive at a time, each into a 256 KiB buffer: the receive's own length must bound
    // it to what the budget has room for.
    let args = ["--no-store", "--uring", "multishot-recv=off"];
    held_per_client("uring", &args, 4 * BUDGET);
}

#[test]
fn the_budget_is_the_operators_to_choose() {
    let held = held_per_client(
        "epoll",
        &["--no-store", "--output-budget", "512KiB"],
        4 * 512 * 1024,
    );
    assert!(
        held >= 256 * 1024,
        "a 512 KiB budget held only {} KiB per client",
        held / 1024
    );
}

/// A burst of large messages over many connections at once: once they have all closed, the
/// memory the burst needed goes back, to within a few MiB of before it (an allocator keeps a
/// little). Bounded: the figure is read until it is down or 5 s have passed.
fn a_burst_leaves_no_memory_behind(model: &str) {
    const CONNS: usize = 200;
    const MESSAGE: usize = 300_000;
    let s = ServerProcess::stream(model, "tcp", &["--no-store"]);
    warm_up(&mut s.connect(), 1 << 20);
    std::thread::sleep(Duration::from_millis(200));
    let before = pss(s.pid());
    let message: Vec<u8> = (0..MESSAGE).map(|i| b'a' + (i % 26) as u8).collect();
    std::thread::scope(|scope| {
        for _ in 0..20 {
            scope.spawn(|| {
                for _ in 0..2 {
                    let mut conns: Vec<TestConn> = (0..CONNS / 20).map(|_| s.connect()).collect();
                    for c in &mut conns {
                        c.write_all(&message).unwrap();
                    }
                    for c in &mut conns {
                        assert_eq!(read_n(c, MESSAGE), upper(&message));
                    }
                }
            });
        }
    });
    let mut after = pss(s.pid());
    for _ in 0..50 {
        if after <= before + (2 << 20) {
            break; // down: the last closes are through
        }
        std::thread::sleep(Duration::from_millis(100));
        after = pss(s.pid());
    }
    eprintln!(
        "{model:<12}: {} MiB before the burst, {} MiB after it",
        before >> 20,
        after >> 20
    );
    assert!(
        after <= before + (8 << 20),
        "{model} kept {} MiB after the burst ({} MiB before it)",
        after >> 20,
        before >> 20
    );
}

#[test]
fn uring_gives_a_bursts_memory_back() {
    a_burst_leaves_no_memory_behind("uring");
}

#[test]
fn epoll_gives_a_bursts_memory_back() {
    a_burst_leaves_no_memory_behind("epoll");
}
