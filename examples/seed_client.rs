//! The plan's interactive client, step by step, with std::net alone.
//!
//! Prompts `>>: `, skips empty input, sends each line and prints the reply:
//!
//!     cargo run --example seed_client [127.0.0.1:8079]
//!
//! `switchboard connect` is this client with line editing, history, every framing and
//! transport, and a pipe mode for scripts.

use std::io::{self, BufRead, Read, Write};
use std::net::TcpStream;

fn main() -> io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8079".into());

    // 1-2. Buy a phone and dial: socket() and connect() in one call.
    let mut phone = TcpStream::connect(&addr)
        .map_err(|e| io::Error::new(e.kind(), format!("cannot connect to {addr}: {e}")))?;

    // 3. Talk: the communication loop.
    let stdin = io::stdin();
    let mut lines = stdin.lock().lines();
    loop {
        print!(">>: ");
        io::stdout().flush()?;
        let Some(line) = lines.next() else {
            break; // end of input: hang up (the plan's client had no way out)
        };
        let msg = line?;
        let msg = msg.trim();
        if msg.is_empty() {
            continue;
        }
        // sendall: every byte goes, however small the socket buffer.
        phone.write_all(msg.as_bytes())?;
        // Raw TCP has no message boundaries: one recv(1024) may return part of the reply, or
        // (had we sent twice) two replies glued. This server answers with as many bytes as it
        // got, so read until that many came back.
        let mut reply = vec![0u8; msg.len()];
        let mut got = 0;
        while got < reply.len() {
            match phone.read(&mut reply[got..])? {
                0 => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the server hung up",
                    ))
                }
                n => got += n,
            }
        }
        println!("{}", String::from_utf8_lossy(&reply));
    }

    // 4. Hang up: close() happens when `phone` is dropped.
    Ok(())
}
