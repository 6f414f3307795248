//! `len`: each message is a 4-byte big-endian length, then that many bytes.

use super::{Codec, Frame, FrameError};

const HEADER: usize = 4;

/// Length-prefixed messages: a `u32` big-endian byte count, then the bytes. Any byte may be in a
/// message, and a frame's size is known from its first four bytes, so an oversize frame is
/// refused before its body is read.
#[derive(Debug, Clone)]
pub struct LenCodec {
    max_frame: usize,
}

impl LenCodec {
    /// A length codec that refuses frames longer than `max_frame` bytes (without the header).
    pub fn new(max_frame: usize) -> Self {
        LenCodec { max_frame }
    }
}

impl Codec for LenCodec {
    fn frame(&mut self, src: &[u8]) -> Result<Option<Frame>, FrameError> {
        let Some(header) = src.get(..HEADER) else {
            return Ok(None);
        };
        let len = u32::from_be_bytes(header.try_into().expect("4 bytes")) as usize;
        if len > self.max_frame {
            return Err(FrameError::TooLong {
                len,
                max: self.max_frame,
            });
        }
        Ok((src.len() >= HEADER + len).then_some(Frame {
            body: HEADER..HEADER + len,
            len: HEADER + len,
        }))
    }

    fn frame_eof(&mut self, src: &[u8]) -> Result<Option<Frame>, FrameError> {
        match self.frame(src)? {
            Some(frame) => Ok(Some(frame)),
            None if src.is_empty() => Ok(None),
            None => Err(FrameError::Truncated { have: src.len() }),
        }
    }

    fn begin(&self, dst: &mut Vec<u8>) -> usize {
        let start = dst.len();
        dst.extend_from_slice(&[0; HEADER]);
        start
    }

    fn end(&self, dst: &mut Vec<u8>, start: usize) -> Result<(), FrameError> {
        let len = dst.len() - start - HEADER;
        let header = u32::try_from(len).map_err(|_| FrameError::TooLong {
            len,
            max: u32::MAX as usize,
        })?;
        dst[start..start + HEADER].copy_from_slice(&header.to_be_bytes());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;

    #[test]
    fn decodes_a_frame_split_anywhere() {
        let mut c = LenCodec::new(100);
        let mut src = BytesMut::from(&[0u8, 0, 0][..]);
        assert_eq!(c.decode(&mut src).unwrap(), None);
        src.extend_from_slice(&[3, b'a', b'b']);
        assert_eq!(c.decode(&mut src).unwrap(), None);
        src.extend_from_slice(b"c\0\0\0\0");
        assert_eq!(c.decode(&mut src).unwrap().unwrap(), &b"abc"[..]);
        assert_eq!(c.decode(&mut src).unwrap().unwrap(), &b""[..]);
        assert!(src.is_empty());
    }

    #[test]
    fn refuses_an_oversize_header_at_once() {
        let mut c = LenCodec::new(10);
        let mut src = BytesMut::from(&[0u8, 0, 0, 11][..]);
        assert_eq!(
            c.decode(&mut src),
            Err(FrameError::TooLong { len: 11, max: 10 })
        );
    }

    #[test]
    fn a_torn_frame_at_eof_is_an_error() {
        let mut c = LenCodec::new(10);
        let mut src = BytesMut::from(&[0u8, 0, 0, 5, b'x'][..]);
        assert_eq!(
            c.decode_eof(&mut src),
            Err(FrameError::Truncated { have: 5 })
        );
        let mut src = BytesMut::new();
        assert_eq!(c.decode_eof(&mut src), Ok(None));
    }

    #[test]
    fn encodes_header_then_body() {
        let mut out = Vec::new();
        LenCodec::new(10).encode(b"HI", &mut out).unwrap();
        assert_eq!(out, [0, 0, 0, 2, b'H', b'I']);
    }
}
