//! `upper`: the plan's service, the request upper-cased.

use super::{Action, Handler, Peer, Reply, Service};

/// ASCII `a`-`z` become `A`-`Z`; every other byte, UTF-8 and binary included, passes unchanged,
/// so a reply is always as long as its request.
#[derive(Debug, Clone, Copy, Default)]
pub struct Upper;

impl Service for Upper {
    fn name(&self) -> &str {
        "upper"
    }

    fn open(&self, _peer: &Peer) -> Box<dyn Handler> {
        Box::new(Upper)
    }
}

impl Handler for Upper {
    fn call(&mut self, request: &[u8], reply: &mut Reply<'_>) -> Action {
        reply.extend(request.iter().map(u8::to_ascii_uppercase));
        Action::Continue
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upper_cases_ascii_only() {
        let mut out = Vec::new();
        let input = "hello wörld ß\0\u{ff}".as_bytes();
        Upper.call(input, &mut Reply::new(&mut out));
        assert_eq!(out, "HELLO WöRLD ß\0\u{ff}".as_bytes());
        let binary: Vec<u8> = (0..=255).collect();
        out.clear();
        Upper.call(&binary, &mut Reply::new(&mut out));
        let expected: Vec<u8> = binary.iter().map(u8::to_ascii_uppercase).collect();
        assert_eq!(out, expected);
    }
}
