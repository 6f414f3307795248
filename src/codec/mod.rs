//! Framing, sans-IO: how a byte stream is cut into messages and how replies are framed.
//!
//! A codec is a pure function of a buffer: [`Codec::frame`] finds where the first whole frame of
//! the bytes received so far lies, or asks for more; [`Codec::frame_eof`] says what the bytes
//! left at end of stream are. It only reads a slice, so a session answers frames straight out of
//! the bytes a model has just read, copying only a torn frame's start; [`Codec::decode`] is the
//! same in tokio-util's shape, taking the frame off a `BytesMut`. Replies are written in place:
//! [`Codec::begin`] opens a frame in the output, the service appends its reply, and
//! [`Codec::end`] closes it, so a reply is never copied twice.

mod len;
mod line;
mod raw;

pub use len::LenCodec;
pub use line::LineCodec;
pub use raw::RawCodec;

use bytes::{Bytes, BytesMut};
use std::ops::Range;

/// The default largest frame, 16 MiB.
pub const DEFAULT_MAX_FRAME: usize = 16 << 20;

/// How a stream is cut into messages. Chosen by `--frame`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, clap::ValueEnum)]
pub enum Framing {
    /// Bytes as they arrive: each read is one message, each reply is sent as is. This is what
    /// the plan's Python client speaks (`send`, then `recv(1024)`).
    #[default]
    Raw,
    /// Messages end with `\n`; the reply gets a `\n` too.
    Line,
    /// Each message is a 4-byte big-endian length, then that many bytes.
    Len,
}

impl Framing {
    /// A fresh codec of this framing that refuses frames longer than `max_frame` bytes.
    pub fn codec(self, max_frame: usize) -> Box<dyn Codec> {
        match self {
            Framing::Raw => Box::new(RawCodec),
            Framing::Line => Box::new(LineCodec::new(max_frame)),
            Framing::Len => Box::new(LenCodec::new(max_frame)),
        }
    }

    /// The name used on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Framing::Raw => "raw",
            Framing::Line => "line",
            Framing::Len => "len",
        }
    }
}

impl std::fmt::Display for Framing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Why the bytes of a stream are not a valid frame. Each one ends only its own connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// A frame is longer than the configured maximum (`--max-frame`).
    #[error("frame of {len} bytes is longer than the {max}-byte maximum (raise --max-frame)")]
    TooLong {
        /// The frame's length, or the bytes buffered so far when its end is not yet known.
        len: usize,
        /// The maximum in force.
        max: usize,
    },
    /// The stream ended inside a frame.
    #[error("stream ended inside a frame ({have} bytes of it received)")]
    Truncated {
        /// Bytes of the unfinished frame that were received.
        have: usize,
    },
}

/// Where the first whole frame of a buffer lies: what [`Codec::frame`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// The message: the frame's bytes without its framing.
    pub body: Range<usize>,
    /// The bytes the whole frame takes, framing included; never 0. The next frame starts here.
    pub len: usize,
}

impl Frame {
    /// All of `src` as one frame (a raw read, a last unterminated line), if it is not empty.
    fn all_of(src: &[u8]) -> Option<Frame> {
        (!src.is_empty()).then_some(Frame {
            body: 0..src.len(),
            len: src.len(),
        })
    }

    /// Takes this frame off the front of `src`: its body.
    fn take_from(self, src: &mut BytesMut) -> Bytes {
        src.split_to(self.len).freeze().slice(self.body)
    }
}

/// A framing, sans-IO: finds frames in a buffer and frames replies into one.
///
/// ```
/// use bytes::BytesMut;
/// use switchboard::codec::{Codec, LineCodec};
/// let mut codec = LineCodec::new(1024);
/// let frame = codec.frame(b"hello\nwor").unwrap().unwrap();
/// assert_eq!((frame.body, frame.len), (0..5, 6));
/// assert_eq!(codec.frame(b"wor").unwrap(), None); // "wor" waits for its newline
/// let mut input = BytesMut::from(&b"hello\nwor"[..]);
/// assert_eq!(codec.decode(&mut input).unwrap().as_deref(), Some(&b"hello"[..]));
/// let mut out = Vec::new();
/// codec.encode(b"HELLO", &mut out).unwrap();
/// assert_eq!(out, b"HELLO\n");
/// ```
pub trait Codec: Send {
    /// Where the first whole frame of `src` lies, or `None` when more bytes are needed. Call it
    /// again with the frame's bytes dropped from the front, or with more bytes appended to a
    /// `src` that starts where the last one did: a codec may remember how far it has looked.
    fn frame(&mut self, src: &[u8]) -> Result<Option<Frame>, FrameError>;

    /// Like [`frame`](Codec::frame), at end of stream: the bytes left are the last frame if
    /// the framing allows an unterminated one, and an error if they are a torn frame.
    fn frame_eof(&mut self, src: &[u8]) -> Result<Option<Frame>, FrameError>;

    /// Takes one whole frame off the front of `src`, or returns `None` when more bytes are
    /// needed. Bytes that are not yet a frame stay in `src`.
    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Bytes>, FrameError> {
        Ok(self.frame(src)?.map(|f| f.take_from(src)))
    }

    /// Like [`decode`](Codec::decode), at end of stream (see [`frame_eof`](Codec::frame_eof)).
    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<Bytes>, FrameError> {
        Ok(self.frame_eof(src)?.map(|f| f.take_from(src)))
    }

    /// Opens a frame at the end of `dst` and returns where it starts, for [`end`](Codec::end).
    fn begin(&self, dst: &mut Vec<u8>) -> usize;

    /// Closes the frame opened at `start`: everything appended since is its body.
    fn end(&self, dst: &mut Vec<u8>, start: usize) -> Result<(), FrameError>;

    /// Frames `body` onto the end of `dst`.
    fn encode(&self, body: &[u8], dst: &mut Vec<u8>) -> Result<(), FrameError> {
        let start = self.begin(dst);
        dst.extend_from_slice(body);
        self.end(dst, start)
    }
}

#[cfg(test)]
mod split_tests {
    //! Any way of cutting a stream into reads decodes the same frames.
    use super::*;
    use proptest::prelude::*;

    fn decode_all(
        framing: Framing,
        stream: &[u8],
        cuts: &[usize],
    ) -> Result<Vec<Vec<u8>>, FrameError> {
        let mut codec = framing.codec(1 << 20);
        let mut buf = BytesMut::new();
        let mut frames = Vec::new();
        let mut at = 0;
        let mut ends: Vec<usize> = cuts.iter().map(|c| c % (stream.len() + 1)).collect();
        ends.push(stream.len());
        ends.sort_unstable();
        for end in ends {
            buf.extend_from_slice(&stream[at..end]);
            at = end;
            while let Some(f) = codec.decode(&mut buf)? {
                frames.push(f.to_vec());
            }
        }
        while let Some(f) = codec.decode_eof(&mut buf)? {
            frames.push(f.to_vec());
        }
        Ok(frames)
    }

    fn encode_all(framing: Framing, msgs: &[Vec<u8>]) -> Vec<u8> {
        let codec = framing.codec(1 << 20);
        let mut out = Vec::new();
        for m in msgs {
            codec.encode(m, &mut out).unwrap();
        }
        out
    }

    proptest! {
        #[test]
        fn len_frames_survive_any_split(msgs in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..300), 0..20),
                                        cuts in prop::collection::vec(any::<usize>(), 0..30)) {
            let stream = encode_all(Framing::Len, &msgs);
            prop_assert_eq!(decode_all(Framing::Len, &stream, &cuts).unwrap(), msgs);
        }

        #[test]
        fn line_frames_survive_any_split(msgs in prop::collection::vec("[^\n]{0,80}", 0..20),
                                         cuts in prop::collection::vec(any::<usize>(), 0..30)) {
            let msgs: Vec<Vec<u8>> = msgs.into_iter().map(String::into_bytes).collect();
            let stream = encode_all(Framing::Line, &msgs);
            prop_assert_eq!(decode_all(Framing::Line, &stream, &cuts).unwrap(), msgs);
        }

        #[test]
        fn raw_keeps_every_byte_in_order(stream in prop::collection::vec(any::<u8>(), 0..2000),
                                         cuts in prop::collection::vec(any::<usize>(), 0..30)) {
            let joined: Vec<u8> = decode_all(Framing::Raw, &stream, &cuts).unwrap().concat();
            prop_assert_eq!(joined, stream);
        }
    }
}
