//! `line`: messages end with `\n`.

use super::{Codec, Frame, FrameError};

/// `\n`-delimited messages. The frame excludes its `\n` (a `\r` before it is kept, and so is
/// echoed back); a reply gets one `\n`. At end of stream, unterminated bytes are a last line.
#[derive(Debug, Clone)]
pub struct LineCodec {
    max_frame: usize,
    /// How far the buffer has been searched for `\n`, so a long line is scanned once, not at
    /// every read.
    scanned: usize,
}

impl LineCodec {
    /// A line codec that refuses lines longer than `max_frame` bytes (without the `\n`).
    pub fn new(max_frame: usize) -> Self {
        LineCodec {
            max_frame,
            scanned: 0,
        }
    }
}

impl Codec for LineCodec {
    fn frame(&mut self, src: &[u8]) -> Result<Option<Frame>, FrameError> {
        if self.scanned > src.len() {
            self.scanned = 0; // not the buffer looked at before: look at all of it
        }
        match memchr::memchr(b'\n', &src[self.scanned..]) {
            Some(i) => {
                let len = self.scanned + i;
                self.scanned = 0;
                if len > self.max_frame {
                    return Err(FrameError::TooLong {
                        len,
                        max: self.max_frame,
                    });
                }
                Ok(Some(Frame {
                    body: 0..len,
                    len: len + 1,
                }))
            }
            None if src.len() > self.max_frame => Err(FrameError::TooLong {
                len: src.len(),
                max: self.max_frame,
            }),
            None => {
                self.scanned = src.len();
                Ok(None)
            }
        }
    }

    fn frame_eof(&mut self, src: &[u8]) -> Result<Option<Frame>, FrameError> {
        if let Some(line) = self.frame(src)? {
            return Ok(Some(line));
        }
        self.scanned = 0;
        Ok(Frame::all_of(src))
    }

    fn begin(&self, dst: &mut Vec<u8>) -> usize {
        dst.len()
    }

    fn end(&self, dst: &mut Vec<u8>, _start: usize) -> Result<(), FrameError> {
        dst.push(b'\n');
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;

    #[test]
    fn splits_glued_lines_and_waits_for_split_ones() {
        let mut c = LineCodec::new(100);
        let mut src = BytesMut::from(&b"one\ntwo\r\nthr"[..]);
        assert_eq!(c.decode(&mut src).unwrap().unwrap(), &b"one"[..]);
        assert_eq!(c.decode(&mut src).unwrap().unwrap(), &b"two\r"[..]);
        assert_eq!(c.decode(&mut src).unwrap(), None);
        src.extend_from_slice(b"ee\n");
        assert_eq!(c.decode(&mut src).unwrap().unwrap(), &b"three"[..]);
        assert!(src.is_empty());
    }

    #[test]
    fn empty_lines_are_frames() {
        let mut c = LineCodec::new(100);
        let mut src = BytesMut::from(&b"\n\n"[..]);
        assert_eq!(c.decode(&mut src).unwrap().unwrap(), &b""[..]);
        assert_eq!(c.decode(&mut src).unwrap().unwrap(), &b""[..]);
    }

    #[test]
    fn unterminated_tail_is_the_last_line() {
        let mut c = LineCodec::new(100);
        let mut src = BytesMut::from(&b"a\nlast"[..]);
        assert_eq!(c.decode_eof(&mut src).unwrap().unwrap(), &b"a"[..]);
        assert_eq!(c.decode_eof(&mut src).unwrap().unwrap(), &b"last"[..]);
        assert_eq!(c.decode_eof(&mut src).unwrap(), None);
    }

    #[test]
    fn refuses_a_line_past_the_maximum_before_its_end_arrives() {
        let mut c = LineCodec::new(4);
        let mut src = BytesMut::from(&b"abcd\n"[..]);
        assert_eq!(c.decode(&mut src).unwrap().unwrap(), &b"abcd"[..]);
        src.extend_from_slice(b"abcde");
        assert_eq!(
            c.decode(&mut src),
            Err(FrameError::TooLong { len: 5, max: 4 })
        );
        let mut c = LineCodec::new(4);
        let mut src = BytesMut::from(&b"abcdef\n"[..]);
        assert!(matches!(
            c.decode(&mut src),
            Err(FrameError::TooLong { len: 6, .. })
        ));
    }

    #[test]
    fn reply_gets_a_newline() {
        let mut out = Vec::new();
        LineCodec::new(9).encode(b"HI", &mut out).unwrap();
        assert_eq!(out, b"HI\n");
    }
}
