//! `echo`: the request back as it came.

use super::{Action, Handler, Peer, Reply, Service};

/// Replies with the request, byte for byte.
#[derive(Debug, Clone, Copy, Default)]
pub struct Echo;

impl Service for Echo {
    fn name(&self) -> &str {
        "echo"
    }

    fn open(&self, _peer: &Peer) -> Box<dyn Handler> {
        Box::new(Echo)
    }
}

impl Handler for Echo {
    fn call(&mut self, request: &[u8], reply: &mut Reply<'_>) -> Action {
        reply.extend_from_slice(request);
        Action::Continue
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echoes_bytes_unchanged() {
        let mut out = Vec::new();
        Echo.call(b"Hi \xff\0", &mut Reply::new(&mut out));
        assert_eq!(out, b"Hi \xff\0");
    }
}
