//! The PROXY header parser on any bytes, and a session behind a proxy fed them in any pieces:
//! neither panics; a header found is within the input and is found again in exactly its own
//! bytes; and a session never answers before its header is whole.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchboard::codec::Framing;
use switchboard::proxy;
use switchboard::service::{Service, Upper};
use switchboard::Session;

fuzz_target!(|data: &[u8]| {
    if let Ok(Some(header)) = proxy::parse(data) {
        assert!(header.len <= data.len());
        assert_eq!(proxy::parse(&data[..header.len]), Ok(Some(header.clone())));
        if let Some(client) = &header.client {
            assert!(client.starts_with("tcp://"), "{client}");
        }
    }
    let Some((&head, rest)) = data.split_first() else {
        return;
    };
    let mut s = Session::behind_proxy(
        Framing::Line.codec(64),
        Box::new(|peer, _| Ok(Upper.open(peer))),
    );
    let mut fed = 0;
    for chunk in rest.chunks(1 + head as usize % 11) {
        if s.receive(chunk).is_err() {
            return;
        }
        fed += chunk.len();
        if !s.pending().is_empty() {
            let header = proxy::parse(&rest[..fed]);
            assert!(matches!(header, Ok(Some(_))), "answered without a header");
        }
        let n = s.pending().len();
        s.advance(n);
    }
    let _ = s.receive_eof();
});
