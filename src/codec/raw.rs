//! `raw`: no framing; whatever bytes arrived are the message.

use super::{Codec, Frame, FrameError};

/// Bytes as they arrive. A message is whatever one read returned, so a sender's writes may be
/// split or glued on the way; this is the plan's `recv(1024)` protocol, kept for its Python
/// client. Frames are never too long: each is at most one read.
#[derive(Debug, Clone, Copy, Default)]
pub struct RawCodec;

impl Codec for RawCodec {
    fn frame(&mut self, src: &[u8]) -> Result<Option<Frame>, FrameError> {
        Ok(Frame::all_of(src))
    }

    fn frame_eof(&mut self, src: &[u8]) -> Result<Option<Frame>, FrameError> {
        self.frame(src)
    }

    fn begin(&self, dst: &mut Vec<u8>) -> usize {
        dst.len()
    }

    fn end(&self, _dst: &mut Vec<u8>, _start: usize) -> Result<(), FrameError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;

    #[test]
    fn takes_everything_buffered() {
        let mut src = BytesMut::from(&b"ab\ncd"[..]);
        assert_eq!(RawCodec.decode(&mut src).unwrap().unwrap(), &b"ab\ncd"[..]);
        assert!(src.is_empty());
        assert_eq!(RawCodec.decode(&mut src).unwrap(), None);
        assert_eq!(RawCodec.decode_eof(&mut src).unwrap(), None);
    }

    #[test]
    fn encodes_as_is() {
        let mut out = b"x".to_vec();
        RawCodec.encode(b"HI", &mut out).unwrap();
        assert_eq!(out, b"xHI");
    }
}
