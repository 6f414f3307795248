//! A connection's protocol state, sans-IO: codec + service handler + buffers.
//!
//! A model reads bytes from a socket and hands them to [`Session::receive`]; the session decodes
//! every whole frame, calls the service and frames each reply into its output. The model writes
//! [`Session::pending`] out and reports what went with [`Session::advance`]. The session never
//! touches a socket, so every model drives the same session and a test can drive it by hand.
//!
//! ```
//! use switchboard::{codec::Framing, service::{Peer, Service, Upper}, Session};
//! let mut s = Session::new(Framing::Line.codec(1024), Upper.open(&Peer::new(1, "test")));
//! s.receive(b"hello\nwor").unwrap();
//! assert_eq!(s.pending(), b"HELLO\n");
//! s.advance(6);
//! s.receive(b"ld\n").unwrap();
//! assert_eq!(s.pending(), b"WORLD\n");
//! ```

use crate::codec::{Codec, FrameError};
use crate::service::{Action, Handler, Reply};
use bytes::BytesMut;
use std::fmt;
use std::io;

/// Replies queued past this many bytes make [`Session::wants_read`] false: a model stops
/// reading from a peer that does not read its replies, so it holds only this much of our memory.
pub const OUTPUT_BUDGET: usize = 1 << 20;

/// Why a connection ended. The log line, the summary and the store all use this one enum.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloseReason {
    /// The peer closed its side after every request was answered.
    Eof,
    /// The peer reset or aborted the connection (ECONNRESET, EPIPE).
    PeerReset,
    /// The peer sent bytes that are not a valid frame.
    Frame(FrameError),
    /// The service asked to close.
    ServiceClosed,
    /// The server was stopping and the connection outlived the drain time.
    Shutdown,
    /// The connection was idle past its timeout.
    Timeout,
    /// The access lists refused the peer: closed before a byte was read.
    Denied,
    /// Another IO error on this connection.
    Io(io::ErrorKind),
}

impl CloseReason {
    /// The reason's class, as the store records it: `eof`, `reset`, `timeout`, `error`,
    /// `denied` or `shutdown`.
    pub fn kind(&self) -> &'static str {
        match self {
            CloseReason::Eof | CloseReason::ServiceClosed => "eof",
            CloseReason::PeerReset => "reset",
            CloseReason::Timeout => "timeout",
            CloseReason::Denied => "denied",
            CloseReason::Shutdown => "shutdown",
            CloseReason::Frame(_) | CloseReason::Io(_) => "error",
        }
    }

    /// True when the connection ended through a fault of the peer or the network, which the
    /// server's summary counts as an error.
    pub fn is_error(&self) -> bool {
        matches!(self, CloseReason::Frame(_) | CloseReason::Io(_))
    }

    /// The reason an IO error on a connection means.
    pub fn from_io(e: &io::Error) -> Self {
        use io::ErrorKind::*;
        match e.kind() {
            ConnectionReset | ConnectionAborted | BrokenPipe => CloseReason::PeerReset,
            TimedOut | WouldBlock => CloseReason::Timeout,
            kind => CloseReason::Io(kind),
        }
    }
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CloseReason::Eof => f.write_str("eof"),
            CloseReason::PeerReset => f.write_str("reset by peer"),
            CloseReason::Frame(e) => write!(f, "bad frame: {e}"),
            CloseReason::ServiceClosed => f.write_str("closed by service"),
            CloseReason::Shutdown => f.write_str("server shutdown"),
            CloseReason::Timeout => f.write_str("timeout"),
            CloseReason::Denied => f.write_str("denied by the access lists"),
            CloseReason::Io(kind) => write!(f, "io error: {kind}"),
        }
    }
}

/// What one connection moved.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SessionStats {
    /// Bytes received from the peer.
    pub bytes_in: u64,
    /// Bytes written to the peer.
    pub bytes_out: u64,
    /// Requests decoded.
    pub msgs_in: u64,
    /// Replies queued.
    pub msgs_out: u64,
}

/// Sees each request and its reply as a session answers it (`--record messages`).
pub trait MessageTap: Send {
    /// Request number `seq` (from 1) was answered with `reply` (the body, without framing).
    fn answered(&mut self, seq: u64, request: &[u8], reply: &[u8]);
}

/// One connection's codec, service handler and buffers.
pub struct Session {
    codec: Box<dyn Codec>,
    handler: Box<dyn Handler>,
    input: BytesMut,
    output: Vec<u8>,
    /// How much of `output` has been written.
    sent: usize,
    /// Set once the session will read no more: it closes when its output is drained.
    done: Option<CloseReason>,
    stats: SessionStats,
    tap: Option<Box<dyn MessageTap>>,
    timer: Option<ServiceTimer>,
}

/// Told how long the service took over each message (`serve --metrics`).
pub type ServiceTimer = Box<dyn FnMut(std::time::Duration) + Send>;

impl Session {
    /// A session that decodes with `codec` and answers with `handler`.
    pub fn new(codec: Box<dyn Codec>, handler: Box<dyn Handler>) -> Self {
        Session {
            codec,
            handler,
            input: BytesMut::new(),
            output: Vec::new(),
            sent: 0,
            done: None,
            stats: SessionStats::default(),
            tap: None,
            timer: None,
        }
    }

    /// Tells `timer` how long the service took over each message.
    pub fn with_service_timer(mut self, timer: ServiceTimer) -> Self {
        self.timer = Some(timer);
        self
    }

    /// Shows every request and reply of this session to `tap`.
    pub fn with_tap(mut self, tap: Box<dyn MessageTap>) -> Self {
        self.tap = Some(tap);
        self
    }

    /// Bytes read from the peer: answers every whole frame among them. An error means the
    /// connection must close now (a bad frame); replies already queued may still be sent.
    pub fn receive(&mut self, data: &[u8]) -> Result<(), CloseReason> {
        self.stats.bytes_in += data.len() as u64;
        if self.done.is_some() {
            return Ok(()); // the service closed: what follows is not read
        }
        self.input.extend_from_slice(data);
        while let Some(frame) = self
            .codec
            .decode(&mut self.input)
            .map_err(CloseReason::Frame)?
        {
            if self.answer(&frame)? == Action::Close {
                self.done = Some(CloseReason::ServiceClosed);
                break;
            }
        }
        Ok(())
    }

    /// The peer shut its side: answers what is left, then the session ends once its output is
    /// written (half-close: the peer still reads every reply).
    pub fn receive_eof(&mut self) -> Result<(), CloseReason> {
        if self.done.is_some() {
            return Ok(());
        }
        while let Some(frame) = self
            .codec
            .decode_eof(&mut self.input)
            .map_err(CloseReason::Frame)?
        {
            if self.answer(&frame)? == Action::Close {
                break;
            }
        }
        self.done = Some(CloseReason::Eof);
        Ok(())
    }

    fn answer(&mut self, request: &[u8]) -> Result<Action, CloseReason> {
        self.stats.msgs_in += 1;
        let start = self.codec.begin(&mut self.output);
        let body = self.output.len();
        let started = self.timer.as_ref().map(|_| std::time::Instant::now());
        let action = self
            .handler
            .call(request, &mut Reply::new(&mut self.output));
        if let (Some(timer), Some(started)) = (self.timer.as_mut(), started) {
            timer(started.elapsed());
        }
        if let Some(tap) = self.tap.as_mut() {
            tap.answered(self.stats.msgs_in, request, &self.output[body..]);
        }
        self.codec
            .end(&mut self.output, start)
            .map_err(CloseReason::Frame)?;
        self.stats.msgs_out += 1;
        Ok(action)
    }

    /// Reply bytes waiting to be written.
    pub fn pending(&self) -> &[u8] {
        &self.output[self.sent..]
    }

    /// `n` bytes of [`pending`](Session::pending) were written.
    pub fn advance(&mut self, n: usize) {
        self.sent += n;
        self.stats.bytes_out += n as u64;
        debug_assert!(self.sent <= self.output.len());
        if self.sent == self.output.len() {
            self.output.clear();
            self.sent = 0;
        }
    }

    /// Drops the replies not yet written, when the connection can no longer take them.
    pub fn discard_pending(&mut self) {
        self.output.clear();
        self.sent = 0;
    }

    /// True while the session takes more input: it has not ended and its queued replies are
    /// within [`OUTPUT_BUDGET`].
    pub fn wants_read(&self) -> bool {
        self.done.is_none() && self.output.len() - self.sent < OUTPUT_BUDGET
    }

    /// The reason to close now: the session ended and every reply was written.
    pub fn finished(&self) -> Option<&CloseReason> {
        self.done
            .as_ref()
            .filter(|_| self.sent == self.output.len())
    }

    /// What this connection has moved so far.
    pub fn stats(&self) -> SessionStats {
        self.stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::Framing;
    use crate::service::{Peer, Service, Upper};

    fn session(framing: Framing) -> Session {
        Session::new(framing.codec(8), Upper.open(&Peer::new(1, "test")))
    }

    #[test]
    fn answers_each_frame_and_counts() {
        let mut s = session(Framing::Line);
        s.receive(b"a\nb\nc").unwrap();
        assert_eq!(s.pending(), b"A\nB\n");
        s.advance(4);
        s.receive_eof().unwrap();
        assert_eq!(s.pending(), b"C\n");
        assert_eq!(s.finished(), None, "replies still queued");
        s.advance(2);
        assert_eq!(s.finished(), Some(&CloseReason::Eof));
        let st = s.stats();
        assert_eq!(
            (st.bytes_in, st.bytes_out, st.msgs_in, st.msgs_out),
            (5, 6, 3, 3)
        );
    }

    #[test]
    fn an_oversize_frame_is_a_close_reason() {
        let mut s = session(Framing::Len);
        let e = s.receive(&[0, 0, 1, 0]).unwrap_err();
        assert_eq!(e.kind(), "error");
        assert!(e.to_string().contains("--max-frame"), "{e}");
    }

    #[test]
    fn stops_reading_past_the_output_budget() {
        let mut s = Session::new(Framing::Raw.codec(0), Upper.open(&Peer::new(1, "t")));
        let chunk = vec![b'x'; 64 * 1024];
        let mut fed = 0;
        while s.wants_read() {
            s.receive(&chunk).unwrap();
            fed += chunk.len();
            assert!(fed <= OUTPUT_BUDGET + chunk.len());
        }
        s.advance(s.pending().len());
        assert!(s.wants_read());
    }

    #[test]
    fn a_closing_service_ends_the_session_after_its_reply() {
        struct Once;
        impl Handler for Once {
            fn call(&mut self, r: &[u8], reply: &mut Reply<'_>) -> Action {
                reply.extend_from_slice(r);
                Action::Close
            }
        }
        let mut s = Session::new(Framing::Line.codec(8), Box::new(Once));
        s.receive(b"bye\nignored\n").unwrap();
        assert_eq!(s.pending(), b"bye\n");
        assert!(!s.wants_read());
        s.advance(4);
        assert_eq!(s.finished(), Some(&CloseReason::ServiceClosed));
    }
}
