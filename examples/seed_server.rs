//! The plan's upper-case server, step by step, with std::net alone — and without its bugs.
//!
//! The plan explains a server as a phone: buy a phone (`socket`), insert the SIM (`bind`),
//! switch it on (`listen`), wait for a call (`accept`), talk (`recv`/`send`), hang up (`close`).
//! This is that server with its connection loop and communication loop, fixed where the plan's
//! code goes wrong. Serves one client at a time, forever (Ctrl-C stops it):
//!
//!     cargo run --example seed_server            # listens on 127.0.0.1:8079
//!     cargo run --example seed_client            # in another terminal
//!
//! `switchboard serve --model iterative` is this same server, with every framing, service and
//! transport; `--model threads` serves many clients at once.

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};

fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8079".into());

    // 1-3. Buy a phone, insert the SIM, switch it on: socket(), bind(), listen().
    // std does all three in `bind`, and on Unix it sets SO_REUSEADDR first, as the plan's
    // setsockopt does, so a restart can rebind while old connections sit in TIME_WAIT.
    let phone = TcpListener::bind(&addr)?;
    println!("starting.... listening on {}", phone.local_addr()?);

    // The connection loop: serve forever. Unlike the plan's last server, the listening socket
    // is not closed inside this loop: it stays open for the next call.
    loop {
        // 4. Wait for a call: accept() blocks until a client connects.
        let (conn, addr) = match phone.accept() {
            Ok(call) => call,
            Err(e) => {
                // A client that gave up before we answered costs only its own call.
                eprintln!("accept failed: {e}");
                continue;
            }
        };
        println!("call from {addr}");
        match talk(conn) {
            Ok(()) => println!("{addr} hung up"),
            // A reset or abort ends only this call; the plan's server died here.
            Err(e) => println!("{addr} lost: {e}"),
        }
        // 6. Hang up: `conn` was dropped at the end of `talk`, which closes it.
    }
    // 7. Switch off: the listener closes when `phone` is dropped, once, when serving is over.
}

/// 5. The communication loop: receive, upper-case, send back, until the client hangs up.
fn talk(mut conn: TcpStream) -> std::io::Result<()> {
    let mut buf = [0u8; 1024];
    loop {
        let n = match conn.read(&mut buf) {
            // recv() returning b"" means the client closed: the plan's loop spun forever here.
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        buf[..n].make_ascii_uppercase();
        // sendall, not send: `write` may write only part of the reply; `write_all` loops until
        // every byte is written.
        conn.write_all(&buf[..n])?;
    }
}
