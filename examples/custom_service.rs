//! A service of your own, served by any model: a word counter with state per connection.
//!
//! Each line gets back its word count and the running total for this connection; `quit`
//! closes the connection. The service never sees a socket, so the same code runs under
//! every model:
//!
//!     cargo run --example custom_service -- tcp://127.0.0.1:8080 threads
//!     printf 'hello world\nthree more words\n' | cargo run -- connect tcp://127.0.0.1:8080 --frame line

use switchboard::codec::Framing;
use switchboard::service::{Action, Handler, Peer, Reply, Service};
use switchboard::{Addr, Model, Server};

/// Shared by every connection: nothing but its name.
struct WordCount;

/// One connection's state.
struct Counter {
    total: usize,
}

impl Service for WordCount {
    fn name(&self) -> &str {
        "wordcount"
    }

    fn open(&self, peer: &Peer) -> Box<dyn Handler> {
        eprintln!("connection {} from {}", peer.id, peer.addr);
        Box::new(Counter { total: 0 })
    }
}

impl Handler for Counter {
    fn call(&mut self, request: &[u8], reply: &mut Reply<'_>) -> Action {
        if request == b"quit" {
            reply.extend_from_slice(b"bye");
            return Action::Close;
        }
        let words = request
            .split(u8::is_ascii_whitespace)
            .filter(|w| !w.is_empty())
            .count();
        self.total += words;
        reply.extend_from_slice(format!("{words} words, {} in all", self.total).as_bytes());
        Action::Continue
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let addr: Addr = args
        .next()
        .as_deref()
        .unwrap_or("tcp://127.0.0.1:8080")
        .parse()?;
    let model = match args.next() {
        Some(name) => <Model as clap::ValueEnum>::from_str(&name, true)?,
        None => Model::default(),
    };
    let server = Server::builder()
        .addr(addr)
        .model(model)
        .service(WordCount)
        .framing(Framing::Line)
        .bind()?;
    println!("listening on {} ({model})", server.local_addr()?);
    let summary = server.run()?;
    println!("{summary}");
    Ok(())
}
