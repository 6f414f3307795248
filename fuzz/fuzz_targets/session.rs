//! A session of the `upper` service under any framing, fed any bytes in any pieces with its
//! replies drained in any steps: it never panics and never replies more than it was sent.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchboard::codec::Framing;
use switchboard::service::{Peer, Service, Upper};
use switchboard::Session;

fuzz_target!(|data: &[u8]| {
    let Some((&head, rest)) = data.split_first() else {
        return;
    };
    let framing = [Framing::Raw, Framing::Line, Framing::Len][head as usize % 3];
    let mut s = Session::new(
        framing.codec(1 + head as usize * 8),
        Upper.open(&Peer::new(1, "fuzz")),
    );
    let mut sent = 0usize;
    for chunk in rest.chunks(1 + head as usize % 7) {
        if !s.wants_read() {
            break;
        }
        if s.receive(chunk).is_err() {
            return; // a bad frame ends the session: fine, as long as it did not panic
        }
        // Drain part of the output, as a socket that takes only some of it would.
        let n = s.pending().len().min(chunk.len() * 3 + 1);
        sent += n;
        s.advance(n);
    }
    if s.receive_eof().is_ok() {
        let n = s.pending().len();
        sent += n;
        s.advance(n);
    }
    // Upper-casing keeps lengths; framing adds at most 4 bytes per frame, and there is at most
    // one frame per byte received (an empty line is a frame of its own).
    let stats = s.stats();
    assert_eq!(stats.bytes_out as usize, sent);
    assert!(stats.bytes_out <= stats.bytes_in * 5 + 5, "{stats:?}");
});
