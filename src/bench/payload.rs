//! What the load generator sends and how it checks what comes back, sans-IO: request bodies,
//! the reply a service owes for each, and where a reply ends in each framing.

use crate::codec::{Codec, FrameError, Framing, DEFAULT_MAX_FRAME};
use bytes::{Bytes, BytesMut};

/// Letters of a generated body that carry its sequence number (base 26), so a reply can be
/// matched to its request even when datagrams are lost or come back out of order.
const SEQ_LETTERS: usize = 6;

/// The letters that carry sequence number `seq`, least significant first (base 26).
fn seq_letters(seq: u64) -> impl Iterator<Item = u8> {
    let mut digits = seq;
    std::iter::repeat_with(move || {
        let d = digits % 26;
        digits /= 26;
        b'a' + d as u8
    })
}

/// What each request carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Payload {
    /// This many lower-case letters, different for every message (so a stale or misrouted
    /// reply is caught), and upper-casable (so `upper` changes every byte).
    Letters(usize),
    /// The same bytes every time (`--message`).
    Fixed(Vec<u8>),
}

impl Payload {
    /// The body's length in bytes.
    pub fn len(&self) -> usize {
        match self {
            Payload::Letters(n) => *n,
            Payload::Fixed(m) => m.len(),
        }
    }

    /// True for an empty body.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Appends the body of message `seq` of connection `conn` to `out`.
    ///
    /// ```
    /// use switchboard::bench::Payload;
    /// let mut a = Vec::new();
    /// Payload::Letters(10).body(3, 0, &mut a);
    /// let mut b = Vec::new();
    /// Payload::Letters(10).body(3, 1, &mut b);
    /// assert!(a.iter().all(u8::is_ascii_lowercase));
    /// assert_ne!(a, b, "every message differs");
    /// ```
    pub fn body(&self, conn: u64, seq: u64, out: &mut Vec<u8>) {
        match self {
            Payload::Fixed(m) => out.extend_from_slice(m),
            Payload::Letters(n) => {
                let head = (*n).min(SEQ_LETTERS);
                out.reserve(*n);
                out.extend(seq_letters(seq).take(head));
                // Then the alphabet from the connection's letter on, byte `i` being
                // `(i + conn) mod 26`, a run at a time. (The load generator copies bodies out
                // of one alphabet made once instead: see `Messages`.)
                let shift = (conn % 26) as usize;
                let alphabet: [u8; 26] = std::array::from_fn(|k| b'a' + ((k + shift) % 26) as u8);
                let mut i = head;
                while i < *n {
                    let from = i % 26;
                    let run = (26 - from).min(*n - i);
                    out.extend_from_slice(&alphabet[from..from + run]);
                    i += run;
                }
            }
        }
    }

    /// The sequence number a reply to a generated body carries, modulo `26^letters`, and that
    /// modulus; `None` when the payload is fixed or the reply's first letters are not letters.
    pub(crate) fn seq_of(&self, reply: &[u8]) -> Option<(u64, u64)> {
        let Payload::Letters(n) = self else {
            return None;
        };
        let letters = (*n).min(SEQ_LETTERS);
        if letters == 0 || reply.len() < letters {
            return None;
        }
        let mut seq = 0u64;
        for &b in reply[..letters].iter().rev() {
            let l = b.to_ascii_lowercase();
            if !l.is_ascii_lowercase() {
                return None;
            }
            seq = seq * 26 + u64::from(l - b'a');
        }
        Some((seq, 26u64.pow(letters as u32)))
    }
}

/// A payload's requests and the replies owed for them, made once per load-generator thread.
/// A generated body is its sequence number's letters, then a stretch of one repeating alphabet
/// that starts where its connection's letter says: so the alphabet is made once, 26 letters
/// longer than a body, and any connection's request is one copy out of it and its reply one
/// comparison against the alphabet as owed back. (At 64 KiB and more, making each body anew
/// and checking it a block at a time cost the load generator more than the server spent.)
pub(crate) struct Messages {
    payload: Payload,
    expect: Expect,
    /// The repeating alphabet, 26 longer than a generated body (or the fixed body).
    letters: Vec<u8>,
    /// `letters` as a reply owes them back.
    owed: Vec<u8>,
}

impl Messages {
    pub(crate) fn new(payload: &Payload, expect: Expect) -> Messages {
        let letters: Vec<u8> = match payload {
            Payload::Letters(n) => (0..n + 26).map(|i| b'a' + (i % 26) as u8).collect(),
            Payload::Fixed(m) => m.clone(),
        };
        let owed = match expect {
            Expect::Upper => letters.to_ascii_uppercase(),
            Expect::Echo | Expect::Any => letters.clone(),
        };
        Messages {
            payload: payload.clone(),
            expect,
            letters,
            owed,
        }
    }

    /// How many letters carry the sequence number, and where in `letters` the rest is copied
    /// from for connection `conn`.
    fn stretch(&self, conn: u64) -> (usize, usize) {
        match self.payload {
            Payload::Letters(n) => {
                let head = n.min(SEQ_LETTERS);
                (head, head + (conn % 26) as usize)
            }
            Payload::Fixed(_) => (0, 0),
        }
    }

    /// Appends the body of message `seq` of connection `conn` to `out`: the bytes
    /// [`Payload::body`] makes.
    pub(crate) fn body(&self, conn: u64, seq: u64, out: &mut Vec<u8>) {
        let (head, from) = self.stretch(conn);
        let n = self.payload.len();
        out.extend(seq_letters(seq).take(head));
        out.extend_from_slice(&self.letters[from..from + n - head]);
    }

    /// True when `reply` is what the service owes for message `seq` of connection `conn`.
    pub(crate) fn accepts(&self, conn: u64, seq: u64, reply: &[u8]) -> bool {
        if self.expect == Expect::Any {
            return true;
        }
        let (head, from) = self.stretch(conn);
        let n = self.payload.len();
        if reply.len() != n {
            return false;
        }
        let mut first = [0u8; SEQ_LETTERS];
        for (slot, letter) in first.iter_mut().zip(seq_letters(seq)).take(head) {
            *slot = letter;
        }
        self.expect.accepts(&first[..head], &reply[..head])
            && reply[head..] == self.owed[from..from + n - head]
    }
}

/// What a correct reply is, chosen by `bench --expect`.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Default,
    clap::ValueEnum,
    serde::Serialize,
    serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Expect {
    /// The request with ASCII a-z upper-cased (the `upper` service).
    #[default]
    Upper,
    /// The request unchanged (the `echo` service).
    Echo,
    /// Anything: replies are counted, not checked.
    Any,
}

impl Expect {
    /// True when `reply` is a correct answer to `request`.
    ///
    /// ```
    /// use switchboard::bench::Expect;
    /// assert!(Expect::Upper.accepts(b"hi 1", b"HI 1"));
    /// assert!(!Expect::Upper.accepts(b"hi", b"hi"));
    /// assert!(Expect::Any.accepts(b"hi", b"whatever"));
    /// ```
    pub fn accepts(self, request: &[u8], reply: &[u8]) -> bool {
        match self {
            Expect::Upper => {
                // A block at a time: upper-casing a block and comparing it whole runs at the
                // speed of memory, where a byte at a time held the load generator to about
                // 200 MB/s.
                const BLOCK: usize = 256;
                request.len() == reply.len()
                    && request
                        .chunks(BLOCK)
                        .zip(reply.chunks(BLOCK))
                        .all(|(q, r)| {
                            let mut upper = [0u8; BLOCK];
                            let upper = &mut upper[..q.len()];
                            upper.copy_from_slice(q);
                            upper.make_ascii_uppercase();
                            upper == r
                        })
            }
            Expect::Echo => request == reply,
            Expect::Any => true,
        }
    }

    /// The name used on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Expect::Upper => "upper",
            Expect::Echo => "echo",
            Expect::Any => "any",
        }
    }
}

/// Where each reply ends in a stream: `line` and `len` replies carry their end; a `raw` reply
/// is as long as its request (true of `upper` and `echo`).
pub(crate) struct ReplyDecoder {
    codec: Option<Box<dyn Codec>>,
    raw_len: usize,
}

impl ReplyDecoder {
    pub(crate) fn new(framing: Framing, request_len: usize) -> Self {
        ReplyDecoder {
            codec: (framing != Framing::Raw).then(|| framing.codec(DEFAULT_MAX_FRAME)),
            raw_len: request_len,
        }
    }

    /// Takes the next whole reply body off the front of `input`.
    pub(crate) fn next(&mut self, input: &mut BytesMut) -> Result<Option<Bytes>, FrameError> {
        match &mut self.codec {
            Some(codec) => codec.decode(input),
            None if input.len() >= self.raw_len => Ok(Some(input.split_to(self.raw_len).freeze())),
            None => Ok(None),
        }
    }

    /// The reply body a whole datagram carries.
    pub(crate) fn datagram(framing: Framing, datagram: &[u8]) -> Result<Bytes, FrameError> {
        if framing == Framing::Raw {
            return Ok(Bytes::copy_from_slice(datagram));
        }
        let mut buf = BytesMut::from(datagram);
        framing
            .codec(DEFAULT_MAX_FRAME)
            .decode_eof(&mut buf)?
            .ok_or(FrameError::Truncated { have: 0 })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_body_is_the_sequence_number_then_the_connections_alphabet() {
        for n in [0, 1, 5, 6, 7, 31, 32, 33, 58, 59, 1000, 65_536, 1 << 20] {
            for conn in [0, 3, 25, 26, 77] {
                let mut body = b"before".to_vec();
                Payload::Letters(n).body(conn, 12345, &mut body);
                assert_eq!(&body[..6], b"before");
                let body = &body[6..];
                assert_eq!(body.len(), n);
                let head = n.min(SEQ_LETTERS);
                for (i, &b) in body.iter().enumerate().skip(head) {
                    assert_eq!(
                        b,
                        b'a' + ((i + conn as usize) % 26) as u8,
                        "n {n} conn {conn} byte {i}"
                    );
                }
                assert!(body[..head].iter().all(u8::is_ascii_lowercase));
            }
        }
    }

    #[test]
    fn messages_make_the_same_bodies_and_accept_only_the_owed_reply() {
        for payload in [
            Payload::Letters(0),
            Payload::Letters(4),
            Payload::Letters(6),
            Payload::Letters(33),
            Payload::Letters(65_536),
            Payload::Fixed(b"hello, World\n".to_vec()),
        ] {
            let upper = Messages::new(&payload, Expect::Upper);
            let echo = Messages::new(&payload, Expect::Echo);
            let any = Messages::new(&payload, Expect::Any);
            for conn in [0, 1, 25, 26, 101] {
                for seq in [0, 1, 27, 26u64.pow(6) + 5] {
                    let mut want = Vec::new();
                    payload.body(conn, seq, &mut want);
                    let mut got = b"x".to_vec();
                    upper.body(conn, seq, &mut got);
                    assert_eq!(&got[1..], &want[..], "{payload:?} conn {conn} seq {seq}");
                    let owed = want.to_ascii_uppercase();
                    assert!(upper.accepts(conn, seq, &owed));
                    assert!(echo.accepts(conn, seq, &want));
                    assert!(any.accepts(conn, seq, b"anything"));
                    let mut longer = owed.clone();
                    longer.push(b'X');
                    assert!(!upper.accepts(conn, seq, &longer));
                    // Any byte wrong, in the sequence letters or after them, is caught.
                    for at in [0, 5, 6, owed.len() / 2, owed.len().saturating_sub(1)] {
                        if owed.get(at).is_some_and(u8::is_ascii_uppercase) {
                            let mut wrong = owed.clone();
                            wrong[at] = wrong[at].to_ascii_lowercase();
                            assert!(!upper.accepts(conn, seq, &wrong), "{payload:?} byte {at}");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn generated_bodies_carry_their_sequence_number() {
        let p = Payload::Letters(64);
        for seq in [0, 1, 25, 26, 12345, 26u64.pow(6) + 7] {
            let mut body = Vec::new();
            p.body(9, seq, &mut body);
            assert_eq!(body.len(), 64);
            body.make_ascii_uppercase(); // as the upper service returns it
            let (got, modulus) = p.seq_of(&body).unwrap();
            assert_eq!(got, seq % modulus);
        }
        let mut short = Vec::new();
        Payload::Letters(1).body(0, 27, &mut short);
        assert_eq!(Payload::Letters(1).seq_of(&short), Some((1, 26)));
        assert_eq!(Payload::Fixed(b"abc".to_vec()).seq_of(b"ABC"), None);
        assert_eq!(p.seq_of(b"12345678"), None);
    }

    #[test]
    fn replies_end_where_their_framing_says() {
        let mut raw = ReplyDecoder::new(Framing::Raw, 3);
        let mut input = BytesMut::from(&b"ABCDE"[..]);
        assert_eq!(raw.next(&mut input).unwrap().as_deref(), Some(&b"ABC"[..]));
        assert_eq!(raw.next(&mut input).unwrap(), None);
        let mut line = ReplyDecoder::new(Framing::Line, 3);
        let mut input = BytesMut::from(&b"ABC\nDE"[..]);
        assert_eq!(line.next(&mut input).unwrap().as_deref(), Some(&b"ABC"[..]));
        assert_eq!(line.next(&mut input).unwrap(), None);
        assert_eq!(
            ReplyDecoder::datagram(Framing::Len, &[0, 0, 0, 2, b'O', b'K']).unwrap(),
            &b"OK"[..]
        );
    }

    #[test]
    fn expect_checks_length_and_bytes() {
        assert!(!Expect::Upper.accepts(b"abc", b"AB"));
        assert!(Expect::Upper.accepts(b"a\xff\n", b"A\xff\n"));
        assert!(Expect::Echo.accepts(b"abc", b"abc"));
        assert!(!Expect::Echo.accepts(b"abc", b"ABC"));
    }
}
