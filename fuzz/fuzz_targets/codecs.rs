//! Every codec, fed any bytes cut into any pieces: it never panics, and the frames it finds do
//! not depend on where the reads were cut.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use switchboard::codec::{FrameError, Framing};

/// The frames `stream` decodes into, fed in the pieces `cuts` says, then the end of stream.
fn decode(
    framing: Framing,
    max: usize,
    stream: &[u8],
    cuts: &[u8],
) -> Result<Vec<Vec<u8>>, FrameError> {
    let mut codec = framing.codec(max);
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    let mut at = 0;
    for &cut in cuts {
        let end = (at + cut as usize).min(stream.len());
        buf.extend_from_slice(&stream[at..end]);
        at = end;
        while let Some(f) = codec.decode(&mut buf)? {
            frames.push(f.to_vec());
        }
    }
    buf.extend_from_slice(&stream[at..]);
    while let Some(f) = codec.decode(&mut buf)? {
        frames.push(f.to_vec());
    }
    while let Some(f) = codec.decode_eof(&mut buf)? {
        frames.push(f.to_vec());
    }
    Ok(frames)
}

fuzz_target!(|data: &[u8]| {
    let Some((&head, rest)) = data.split_first() else {
        return;
    };
    let framing = [Framing::Raw, Framing::Line, Framing::Len][head as usize % 3];
    let max = 1 + (head as usize >> 2) * 16; // small maxima reach the too-long paths
    let (cuts, stream) = rest.split_at(rest.len().min(8));
    let whole = decode(framing, max, stream, &[]);
    let pieces = decode(framing, max, stream, cuts);
    // Raw frames are reads, so only their bytes, not their boundaries, survive a new cut.
    if framing == Framing::Raw {
        let join = |r: Result<Vec<Vec<u8>>, FrameError>| r.map(|f| f.concat());
        assert_eq!(join(whole), join(pieces));
    } else {
        match (whole, pieces) {
            (Ok(a), Ok(b)) => assert_eq!(a, b),
            // An oversize frame may be seen sooner in small pieces: an error either way.
            (Err(_), Err(_)) => {}
            (a, b) => assert_eq!(a.is_ok(), b.is_ok(), "{a:?} / {b:?}"),
        }
    }
});
