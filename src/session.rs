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
use crate::proxy::{self, ProxyError};
use crate::service::{Action, Handler, Peer, Reply};
use std::fmt;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A session's input or output buffer larger than this is freed once it is empty (smaller ones
/// are kept for the next message): an idle connection holds at most this much of each.
pub const KEEP_BUFFER: usize = 1024;

/// The default output budget (`--output-budget`, [`Session::with_output_budget`]): once this
/// many reply bytes wait unsent, [`Session::wants_read`] is false and every model stops reading
/// from the peer until they drain, so a peer that does not read its replies holds about this
/// much of the server's memory, whatever the model. 64 KiB: as much as one read takes, so a
/// peer that reads is never slowed by it, and the kernel's socket buffers (megabytes once
/// autotuned) keep the line busy meanwhile.
pub const OUTPUT_BUDGET: usize = 64 * 1024;

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
    /// The peer kept the server waiting past one of its [`Timeouts`].
    Timeout(Expiry),
    /// The access lists refused the peer: closed before a byte was read (or, behind a proxy,
    /// before a byte after its PROXY header).
    Denied,
    /// `--proxy-protocol`: the connection did not start with a valid PROXY header.
    Proxy(ProxyError),
    /// `--proxy-protocol`: the peer is not a proxy named by `--proxy-from`, so no header of its
    /// is believed; closed before a byte was read.
    UntrustedProxy,
    /// The peer's address already had `--max-conns-per-ip` connections open; closed before a
    /// byte was read.
    PerIpLimit,
    /// TLS failed: a handshake the server refused, bytes that are not TLS, a bad record.
    Tls(String),
    /// Another IO error on this connection.
    Io(io::ErrorKind),
}

impl CloseReason {
    /// The reason's class, as the store records it: `eof`, `reset`, `timeout`, `error`,
    /// `denied`, `untrusted`, `limited` or `shutdown`.
    pub fn kind(&self) -> &'static str {
        match self {
            CloseReason::Eof | CloseReason::ServiceClosed => "eof",
            CloseReason::PeerReset => "reset",
            CloseReason::Timeout(_) => "timeout",
            CloseReason::Denied => "denied",
            CloseReason::UntrustedProxy => "untrusted",
            CloseReason::PerIpLimit => "limited",
            CloseReason::Shutdown => "shutdown",
            CloseReason::Frame(_)
            | CloseReason::Proxy(_)
            | CloseReason::Tls(_)
            | CloseReason::Io(_) => "error",
        }
    }

    /// True when the connection ended through a fault of the peer or the network, which the
    /// server's summary counts as an error.
    pub fn is_error(&self) -> bool {
        matches!(
            self,
            CloseReason::Frame(_)
                | CloseReason::Proxy(_)
                | CloseReason::Tls(_)
                | CloseReason::Io(_)
        )
    }

    /// The reason an IO error on a connection means.
    pub fn from_io(e: &io::Error) -> Self {
        use io::ErrorKind::*;
        match e.kind() {
            ConnectionReset | ConnectionAborted | BrokenPipe => CloseReason::PeerReset,
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
            CloseReason::Timeout(Expiry::Idle) => f.write_str("idle timeout (--idle-timeout)"),
            CloseReason::Timeout(Expiry::Frame) => {
                f.write_str("frame not finished in time (--frame-timeout)")
            }
            CloseReason::Timeout(Expiry::Send) => {
                f.write_str("replies not taken in time (--send-timeout)")
            }
            CloseReason::Denied => f.write_str("denied by the access lists"),
            CloseReason::PerIpLimit => {
                f.write_str("too many connections from this address (--max-conns-per-ip)")
            }
            CloseReason::UntrustedProxy => {
                f.write_str("not a trusted proxy (--proxy-from): its PROXY header is not believed")
            }
            CloseReason::Proxy(e) => write!(f, "bad PROXY header: {e}"),
            CloseReason::Tls(e) => write!(f, "TLS: {e}"),
            CloseReason::Io(kind) => write!(f, "io error: {kind}"),
        }
    }
}

/// Which of the [`Timeouts`] ran out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    /// No byte moved either way for `idle`.
    Idle,
    /// A frame was begun and not finished within `frame`.
    Frame,
    /// Replies waited for the peer to take them for `send`.
    Send,
}

/// How long a connection may keep the server waiting; `None` waits forever. Each model wakes
/// at [`Session::deadline`] and closes the connection if [`Session::expired`] says so.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// No byte in either direction for this long closes the connection (`--idle-timeout`).
    pub idle: Option<Duration>,
    /// A frame begun and not finished within this closes it (`--frame-timeout`, against
    /// slowloris); under `raw` framing every read is a whole frame, so it bounds nothing.
    pub frame: Option<Duration>,
    /// Replies the peer does not take for this long close it (`--send-timeout`).
    pub send: Option<Duration>,
}

impl Timeouts {
    /// Waits forever: what a bare [`Session::new`] has.
    pub const NONE: Timeouts = Timeouts {
        idle: None,
        frame: None,
        send: None,
    };

    /// The server's defaults, safe on a public network: idle 5 min, frame 30 s, send 30 s.
    pub const DEFAULT: Timeouts = Timeouts {
        idle: Some(Duration::from_secs(300)),
        frame: Some(Duration::from_secs(30)),
        send: Some(Duration::from_secs(30)),
    };
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts::DEFAULT
    }
}

/// When each of a session's timeouts started counting.
#[derive(Debug, Clone, Copy)]
struct Clock {
    /// The last byte in or out.
    active: Instant,
    /// The first byte of the frame not yet finished, if one is.
    frame: Option<Instant>,
    /// Since replies have waited without a byte of them taken, if they are waiting.
    send: Option<Instant>,
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

/// A session's TLS connection (rustls, sans-IO like the session).
struct Tls {
    conn: rustls::ServerConnection,
    /// The close_notify is queued.
    closing: bool,
}

/// Opens the service once the PROXY header is read: for the peer it names (`true`: the client
/// the header named, to be judged by the access lists; `false`: the proxy spoke for itself, as
/// in a health check, and the peer is the connection's own, judged as any connection is). Its
/// handler, or why the connection closes instead ([`CloseReason::Denied`]).
pub type Opener = Box<dyn FnOnce(&Peer, bool) -> Result<Box<dyn Handler>, CloseReason> + Send>;

/// One connection's codec, service handler and buffers.
pub struct Session {
    peer: Peer,
    opened: Instant,
    codec: Box<dyn Codec>,
    /// `None` until the PROXY header has named the client (`opener` then opens it).
    handler: Option<Box<dyn Handler>>,
    opener: Option<Opener>,
    /// TLS, when the server speaks it: what is read is decrypted into `input`, what is
    /// answered encrypted into `output`.
    tls: Option<Box<Tls>>,
    /// The start of a frame not yet whole (or, behind a proxy, of its header).
    input: Vec<u8>,
    output: Vec<u8>,
    /// How much of `output` has been written.
    sent: usize,
    /// Reply bytes lent to the model ([`Session::take_pending`]) and not yet written: they
    /// were sent before anything in `output`, and count as unsent until they are written.
    lent: usize,
    /// Unsent reply bytes past which the session reads no more ([`OUTPUT_BUDGET`]).
    budget: usize,
    /// Set once the session will read no more: it closes when its output is drained.
    done: Option<CloseReason>,
    stats: SessionStats,
    tap: Option<Box<dyn MessageTap>>,
    timer: Option<ServiceTimer>,
    timeouts: Timeouts,
    clock: Clock,
    /// Time the server spent stalled (waiting for room to record), which the peer does not
    /// pay for in its timeouts, and how much of it the clocks have been moved for.
    stalls: Option<(Arc<AtomicU64>, u64)>,
}

/// Told how long the service took over each message (`serve --metrics`).
pub type ServiceTimer = Box<dyn FnMut(std::time::Duration) + Send>;

impl Session {
    /// A session that decodes with `codec` and answers with `handler`.
    pub fn new(codec: Box<dyn Codec>, handler: Box<dyn Handler>) -> Self {
        Session::build(codec, Some(handler), None)
    }

    /// A session behind a proxy (`--proxy-protocol`): the connection's first bytes must be a
    /// PROXY header (v1 or v2), whose client becomes the session's [`peer`](Session::peer);
    /// `opener` then opens the service for it. Bytes that are not a header close it.
    pub fn behind_proxy(codec: Box<dyn Codec>, opener: Opener) -> Self {
        Session::build(codec, None, Some(opener))
    }

    fn build(
        codec: Box<dyn Codec>,
        handler: Option<Box<dyn Handler>>,
        opener: Option<Opener>,
    ) -> Self {
        Session {
            peer: Peer::new(0, "unknown"),
            opened: Instant::now(),
            codec,
            handler,
            opener,
            tls: None,
            input: Vec::new(),
            output: Vec::new(),
            sent: 0,
            lent: 0,
            budget: OUTPUT_BUDGET,
            done: None,
            stats: SessionStats::default(),
            tap: None,
            timer: None,
            timeouts: Timeouts::NONE,
            clock: Clock {
                active: Instant::now(),
                frame: None,
                send: None,
            },
            stalls: None,
        }
    }

    /// Speaks TLS through `conn`: the bytes a model reads are decrypted before they are
    /// decoded, and the bytes [`pending`](Session::pending) are encrypted records.
    pub fn with_tls(mut self, mut conn: rustls::ServerConnection) -> Self {
        conn.set_buffer_limit(None); // the output budget bounds what is queued
        self.tls = Some(Box::new(Tls {
            conn,
            closing: false,
        }));
        self
    }

    /// A session that ends at once, for `reason` (it could not be set up).
    pub fn failed(mut self, reason: CloseReason) -> Self {
        self.done = Some(reason);
        self
    }

    /// Who the session is with: the connection's peer, or behind a proxy the client its
    /// header named.
    pub fn with_peer(mut self, peer: Peer) -> Self {
        self.peer = peer;
        self
    }

    /// Who the session is with (see [`with_peer`](Session::with_peer)).
    pub fn peer(&self) -> &Peer {
        &self.peer
    }

    /// When the session began.
    pub fn opened(&self) -> Instant {
        self.opened
    }

    /// Reads no more once `bytes` of replies wait unsent (at least 1; default
    /// [`OUTPUT_BUDGET`]): the most of the server's memory a peer that does not read can hold,
    /// beyond one frame and its reply.
    pub fn with_output_budget(mut self, bytes: usize) -> Self {
        self.budget = bytes.max(1);
        self
    }

    /// Does not count against the peer's timeouts the time that `stalls` (nanoseconds, counted
    /// by whoever made the server wait, such as a store's full queue) grows by: a server held
    /// up by its store resumes its connections where they stood.
    pub fn with_stall_clock(mut self, stalls: Arc<AtomicU64>) -> Self {
        let seen = stalls.load(Relaxed);
        self.stalls = Some((stalls, seen));
        self
    }

    /// Stall time not yet added to the clocks.
    fn unpaid_stall(&self) -> Duration {
        self.stalls
            .as_ref()
            .map_or(Duration::ZERO, |(stalls, seen)| {
                Duration::from_nanos(stalls.load(Relaxed).saturating_sub(*seen))
            })
    }

    /// Moves the clocks later by the stall time since they were last moved.
    fn catch_up(&mut self) {
        let Some((stalls, seen)) = self.stalls.as_mut() else {
            return;
        };
        let now = stalls.load(Relaxed);
        if now <= *seen {
            return;
        }
        let d = Duration::from_nanos(now - *seen);
        *seen = now;
        let c = &mut self.clock;
        c.active += d;
        c.frame = c.frame.map(|t| t + d);
        c.send = c.send.map(|t| t + d);
    }

    /// Closes the session when the peer keeps it waiting past `timeouts`.
    pub fn with_timeouts(mut self, timeouts: Timeouts) -> Self {
        self.timeouts = timeouts;
        self
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
        self.receive_at(data, Instant::now())
    }

    /// [`receive`](Session::receive), the bytes read at `now`: a reactor reads the clock once
    /// a turn, not at every read and write of every connection it drives.
    pub fn receive_at(&mut self, data: &[u8], now: Instant) -> Result<(), CloseReason> {
        self.catch_up();
        self.stats.bytes_in += data.len() as u64;
        if self.done.is_some() || data.is_empty() {
            return Ok(()); // after the service closed, what follows is not read
        }
        self.clock.active = now;
        let mark = self.output.len();
        let result = match self.take_in(data, now) {
            Ok(Some(fresh)) => self.answer_all(fresh, now),
            Ok(None) => Ok(()),
            Err(e) => Err(e),
        };
        // Replies, and TLS's own records (its handshake, an alert before a close), go out.
        self.seal(mark);
        if self.input.is_empty() && self.input.capacity() > KEEP_BUFFER {
            self.input = Vec::new(); // idle: the memory goes back
        }
        if self.clock.send.is_none() && !self.pending().is_empty() {
            self.clock.send = Some(now);
        }
        result
    }

    /// Takes bytes from the wire: the PROXY header off them, then through TLS into the input.
    /// The bytes still to decode after the input (`data` itself without TLS or a proxy), or
    /// `None` while the PROXY header is incomplete (the input holds its start, not frames).
    fn take_in<'a>(
        &mut self,
        data: &'a [u8],
        now: Instant,
    ) -> Result<Option<&'a [u8]>, CloseReason> {
        if self.opener.is_some() {
            self.input.extend_from_slice(data);
            if !self.read_proxy_header()? {
                self.clock.frame.get_or_insert(now); // a header begun: --frame-timeout bounds it
                return Ok(None);
            }
            if self.tls.is_some() {
                let rest = std::mem::take(&mut self.input); // the first of TLS's bytes
                self.decrypt(&rest, now)?;
            }
            return Ok(Some(&[]));
        }
        if self.tls.is_some() {
            self.decrypt(data, now)?;
            return Ok(Some(&[]));
        }
        Ok(Some(data))
    }

    /// TLS: hands `data` to rustls and appends what it decrypts to the input. While the
    /// handshake is not done, `--frame-timeout` bounds it as it bounds a frame.
    fn decrypt(&mut self, mut data: &[u8], now: Instant) -> Result<(), CloseReason> {
        let Some(tls) = self.tls.as_mut() else {
            return Ok(());
        };
        while !data.is_empty() {
            match tls.conn.read_tls(&mut data) {
                Ok(0) => return Err(CloseReason::Tls("rustls took no bytes".into())),
                Ok(_) => {}
                Err(e) => return Err(CloseReason::Io(e.kind())),
            }
            let state = tls
                .conn
                .process_new_packets()
                .map_err(|e| CloseReason::Tls(e.to_string()))?;
            let n = state.plaintext_bytes_to_read();
            if n > 0 {
                let start = self.input.len();
                self.input.resize(start + n, 0);
                std::io::Read::read_exact(&mut tls.conn.reader(), &mut self.input[start..])
                    .map_err(|e| CloseReason::Io(e.kind()))?;
            }
        }
        if tls.conn.is_handshaking() {
            self.clock.frame.get_or_insert(now);
        }
        Ok(())
    }

    /// TLS: encrypts the replies queued since `mark` in place, and appends what else rustls has
    /// to send (handshake records, alerts, the close_notify once the session is done). A no-op
    /// without TLS.
    fn seal(&mut self, mark: usize) {
        let Some(tls) = self.tls.as_mut() else {
            return;
        };
        if self.output.len() > mark {
            // No buffer limit is set: rustls takes every byte.
            let _ = std::io::Write::write_all(&mut tls.conn.writer(), &self.output[mark..]);
            self.output.truncate(mark);
        }
        if self.done.is_some() && !tls.closing {
            tls.closing = true;
            tls.conn.send_close_notify();
        }
        while tls.conn.wants_write() {
            if tls.conn.write_tls(&mut self.output).is_err() {
                break;
            }
        }
    }

    /// Answers every whole frame of the input followed by `fresh`, and keeps the start of a
    /// frame left over. With nothing held (the usual case) the frames are answered straight out
    /// of `fresh`, the bytes the model read, and only a torn frame's start is copied.
    fn answer_all(&mut self, fresh: &[u8], now: Instant) -> Result<(), CloseReason> {
        let answered = self.stats.msgs_in;
        if self.input.is_empty() {
            let used = self.answer_frames(fresh, false)?;
            self.input.extend_from_slice(&fresh[used..]);
        } else {
            self.input.extend_from_slice(fresh);
            self.answer_input(false)?;
        }
        if self.tls.as_ref().is_some_and(|t| t.conn.is_handshaking()) {
            return Ok(()); // the handshake's clock runs on
        }
        // The bytes left begin a frame: now, unless they continue the one begun before.
        self.clock.frame = match self.clock.frame {
            _ if self.input.is_empty() => None,
            Some(began) if self.stats.msgs_in == answered => Some(began),
            _ => Some(now),
        };
        Ok(())
    }

    /// The peer shut its side: answers what is left, then the session ends once its output is
    /// written (half-close: the peer still reads every reply).
    pub fn receive_eof(&mut self) -> Result<(), CloseReason> {
        self.catch_up();
        if self.done.is_some() {
            return Ok(());
        }
        if self.opener.is_some() {
            return Err(CloseReason::Proxy(ProxyError::closed_early()));
        }
        let mark = self.output.len();
        let result = self.answer_input(true);
        if result.is_ok() {
            self.done.get_or_insert(CloseReason::Eof); // a bad last frame closes as the error
        }
        self.clock.frame = None;
        self.seal(mark);
        if self.clock.send.is_none() && !self.pending().is_empty() {
            self.clock.send = Some(Instant::now());
        }
        result
    }

    /// Answers every whole frame of the input (at end of stream, if `eof`) and drops them.
    fn answer_input(&mut self, eof: bool) -> Result<(), CloseReason> {
        let input = std::mem::take(&mut self.input); // lent out while the service answers
        let result = self.answer_frames(&input, eof);
        self.input = input;
        if let Ok(used) = result {
            self.input.drain(..used);
        }
        result.map(drop)
    }

    /// Answers every whole frame at the front of `src`, until the service closes: how many
    /// bytes the answered frames took.
    fn answer_frames(&mut self, src: &[u8], eof: bool) -> Result<usize, CloseReason> {
        let mut used = 0;
        while self.done.is_none() {
            let rest = &src[used..];
            let found = match eof {
                false => self.codec.frame(rest),
                true => self.codec.frame_eof(rest),
            };
            let Some(frame) = found.map_err(CloseReason::Frame)? else {
                break;
            };
            used += frame.len.max(1); // never 0; max(1) so a wrong codec cannot spin here
            if self.answer(&rest[frame.body])? == Action::Close {
                self.done = Some(CloseReason::ServiceClosed);
            }
        }
        Ok(used)
    }

    /// Behind a proxy: takes the PROXY header off the input once it is whole, and opens the
    /// service for the client it names. False while it is incomplete.
    fn read_proxy_header(&mut self) -> Result<bool, CloseReason> {
        let Some(header) = proxy::parse(&self.input).map_err(CloseReason::Proxy)? else {
            return Ok(false);
        };
        self.input.drain(..header.len);
        let Some(opener) = self.opener.take() else {
            return Ok(true);
        };
        let named = header.client.is_some();
        if let Some(client) = header.client {
            self.peer.addr = client;
        }
        self.handler = Some(opener(&self.peer, named)?);
        Ok(true)
    }

    fn answer(&mut self, request: &[u8]) -> Result<Action, CloseReason> {
        let Some(handler) = self.handler.as_mut() else {
            return Ok(Action::Close); // never: frames are decoded once the service is open
        };
        self.stats.msgs_in += 1;
        let start = self.codec.begin(&mut self.output);
        let body = self.output.len();
        let started = self.timer.as_ref().map(|_| std::time::Instant::now());
        let action = handler.call(request, &mut Reply::new(&mut self.output));
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

    /// Reply bytes waiting to be written (those [lent](Session::take_pending) are not among
    /// them: they go first).
    pub fn pending(&self) -> &[u8] {
        &self.output[self.sent..]
    }

    /// Takes the output buffer with the replies waiting in it, for a model that writes from a
    /// buffer of its own whose bytes must stay put until the write completes (io_uring: the
    /// kernel reads them after the call returned). The bytes are handed over, not copied, when
    /// none of them was written yet. They still count as unsent (the output budget, the send
    /// timeout, [`finished`](Session::finished)) until [`advance_at`](Session::advance_at)
    /// says they went, before any reply queued since. With no reply waiting, the buffer comes
    /// back empty, for the model to keep ([`offer_output`](Session::offer_output)); while bytes
    /// taken before are unwritten, nothing is taken (an empty buffer without memory).
    pub fn take_pending(&mut self) -> Vec<u8> {
        if self.lent > 0 {
            return Vec::new();
        }
        if self.sent > 0 {
            self.output.drain(..self.sent);
            self.sent = 0;
        }
        self.lent = self.output.len();
        std::mem::take(&mut self.output)
    }

    /// Gives the session an empty buffer to write its next replies into, when it holds none:
    /// `spare` is called only then. A model that takes replies whole
    /// ([`take_pending`](Session::take_pending)) hands back the buffers it sent from, so that
    /// replies are written into memory in use, not into memory allocated and freed per message
    /// (at 100 x 64 KiB the allocator gave such memory back to the system and took it again,
    /// about 70,000 page faults a second).
    pub fn offer_output(&mut self, spare: impl FnOnce() -> Vec<u8>) {
        if self.output.capacity() == 0 {
            self.output = spare();
            self.output.clear();
        }
    }

    /// `n` bytes of [`pending`](Session::pending) were written.
    pub fn advance(&mut self, n: usize) {
        self.advance_at(n, Instant::now());
    }

    /// [`advance`](Session::advance), the bytes written at `now` (see
    /// [`receive_at`](Session::receive_at)): those [lent](Session::take_pending) first, then
    /// the pending ones. Bytes written after the replies were
    /// [discarded](Session::discard_pending) count only as bytes out.
    pub fn advance_at(&mut self, n: usize, now: Instant) {
        if n == 0 {
            return;
        }
        self.catch_up();
        self.stats.bytes_out += n as u64;
        self.clock.active = now;
        let lent = n.min(self.lent);
        self.lent -= lent;
        self.sent = (self.sent + n - lent).min(self.output.len());
        if self.sent == self.output.len() {
            if self.output.capacity() > KEEP_BUFFER {
                self.output = Vec::new();
            } else {
                self.output.clear();
            }
            self.sent = 0;
        } else if self.sent > KEEP_BUFFER && self.sent >= self.output.len() / 2 {
            // Written bytes are dropped from the front once they are half the buffer: a slow
            // reader's replies then never hold more than twice what is unsent.
            self.output.drain(..self.sent);
            self.sent = 0;
        }
        self.clock.send = (self.unsent() > 0).then_some(now);
    }

    /// Reply bytes not yet written, lent ones included.
    fn unsent(&self) -> usize {
        self.lent + self.output.len() - self.sent
    }

    /// When the connection must next be looked at, if ever: the earliest instant at which one
    /// of its [`Timeouts`] could run out. A model waits no longer than this, then asks
    /// [`expired`](Session::expired); the deadline only moves later as bytes move, except when
    /// a frame is begun or replies start waiting.
    pub fn deadline(&self) -> Option<Instant> {
        let t = &self.timeouts;
        let c = &self.clock;
        let idle = t.idle.map(|d| c.active + d);
        // While replies wait, a model may not read (it writes first, or the budget is full):
        // the peer is not to blame for an unfinished frame then, the send timeout covers it.
        let frame = match (t.frame, c.frame) {
            (Some(d), Some(began)) if c.send.is_none() => Some(began + d),
            _ => None,
        };
        let send = t.send.zip(c.send).map(|(d, since)| since + d);
        let stalled = self.unpaid_stall();
        [idle, frame, send]
            .into_iter()
            .flatten()
            .min()
            .map(|d| d + stalled)
    }

    /// The timeout that ran out by `now`, if one did: the connection is to close for it.
    pub fn expired(&self, now: Instant) -> Option<CloseReason> {
        let now = now.checked_sub(self.unpaid_stall()).unwrap_or(now);
        let t = &self.timeouts;
        let c = &self.clock;
        let past = |limit: Option<Duration>, since: Option<Instant>| {
            limit.zip(since).is_some_and(|(d, since)| now >= since + d)
        };
        let expiry = if past(t.frame, c.frame) && c.send.is_none() {
            Expiry::Frame
        } else if past(t.send, c.send) {
            Expiry::Send
        } else if past(t.idle, Some(c.active)) {
            Expiry::Idle
        } else {
            return None;
        };
        Some(CloseReason::Timeout(expiry))
    }

    /// Drops the replies not yet written, when the connection can no longer take them.
    pub fn discard_pending(&mut self) {
        self.output.clear();
        self.sent = 0;
        self.lent = 0;
        self.clock.send = None;
    }

    /// True while the session takes more input: it has not ended and its unsent replies are
    /// within its output budget ([`with_output_budget`](Session::with_output_budget)).
    pub fn wants_read(&self) -> bool {
        self.read_allowance() > 0
    }

    /// True when the session wants input and every reply is written: a model whose reads cost
    /// something to start again (`uring` arms a receive limited to the room left) waits for
    /// this once it stopped, so it arms one receive of the whole budget per drained batch of
    /// replies rather than many small ones while they drain (at 100 x 64 KiB, re-arming as
    /// soon as any room freed cost `uring` 6-20% of its throughput; waiting for this, none).
    pub fn may_resume_reading(&self) -> bool {
        self.wants_read() && self.unsent() == 0
    }

    /// How many bytes a model may read for this session now: the room left in its output
    /// budget, 0 once it has ended. A model that reads no more than this at a time keeps a
    /// non-reading peer's replies within the budget (plus what one frame's reply adds).
    pub fn read_allowance(&self) -> usize {
        match self.done {
            Some(_) => 0,
            None => self.budget.saturating_sub(self.unsent()),
        }
    }

    /// The reason to close now: the session ended and every reply was written.
    pub fn finished(&self) -> Option<&CloseReason> {
        self.done.as_ref().filter(|_| self.unsent() == 0)
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
        let budget = 48 * 1024;
        let mut s = Session::new(Framing::Raw.codec(0), Upper.open(&Peer::new(1, "t")))
            .with_output_budget(budget);
        let chunk = vec![b'x'; 16 * 1024];
        let mut fed = 0;
        while s.wants_read() {
            // As a model does: no read larger than the allowance.
            let n = s.read_allowance().min(chunk.len());
            s.receive(&chunk[..n]).unwrap();
            fed += n;
            assert!(s.pending().len() <= budget, "{fed} fed");
        }
        assert_eq!(s.pending().len(), budget);
        assert_eq!(s.read_allowance(), 0);
        // A slow reader: a little taken at a time, and the replies written drop off the front.
        for _ in 0..40 {
            s.advance(1000);
            let n = s.read_allowance().min(chunk.len());
            s.receive(&chunk[..n]).unwrap();
            assert!(s.pending().len() <= budget);
            assert!(s.output.len() <= 2 * budget, "{} kept", s.output.len());
        }
        s.advance(s.pending().len());
        assert_eq!(s.read_allowance(), budget);
    }

    #[test]
    fn lent_replies_count_as_unsent_until_written() {
        let mut s = session(Framing::Line).with_output_budget(8);
        s.offer_output(|| Vec::with_capacity(64));
        s.receive(b"ab\ncd\n").unwrap();
        let lent = s.take_pending();
        assert_eq!(lent, b"AB\nCD\n", "handed over whole");
        assert_eq!(lent.capacity(), 64, "written into the buffer offered");
        assert_eq!(s.pending(), b"");
        assert_eq!(s.read_allowance(), 2, "lent bytes fill the budget");
        assert!(
            s.clock.send.is_some(),
            "the send timeout runs for lent bytes"
        );
        s.receive(b"e\n").unwrap();
        assert_eq!(s.pending(), b"E\n", "queued behind the lent bytes");
        assert!(s.take_pending().is_empty(), "one loan at a time");
        s.advance(4);
        assert!(!s.may_resume_reading(), "2 lent bytes still out");
        s.receive_eof().unwrap();
        s.advance(2);
        assert_eq!(s.finished(), None, "E\\n still pending");
        assert_eq!(s.take_pending(), b"E\n");
        s.advance(2);
        assert_eq!(s.finished(), Some(&CloseReason::Eof));
        assert_eq!(s.stats().bytes_out, 8);
        // Written after a discard: counted out, nothing else moves.
        let mut s = session(Framing::Line);
        s.receive(b"ab\n").unwrap();
        let _ = s.take_pending();
        s.discard_pending();
        s.advance(3);
        assert_eq!((s.pending(), s.read_allowance()), (&b""[..], OUTPUT_BUDGET));
    }

    #[test]
    fn an_offered_output_buffer_is_used_once_and_given_back_unused() {
        let mut s = session(Framing::Line);
        s.offer_output(|| Vec::with_capacity(32));
        s.offer_output(|| unreachable!("the session has a buffer"));
        s.receive(b"ab").unwrap(); // half a frame: no reply
        let back = s.take_pending();
        assert!(back.is_empty());
        assert_eq!(back.capacity(), 32, "the unused buffer comes back");
        assert_eq!(s.output.capacity(), 0, "and the session holds none");
        // A reply written in part before it is taken: only the rest is lent.
        s.receive(b"\ncd\n").unwrap();
        s.advance(1);
        assert_eq!(s.take_pending(), b"B\nCD\n");
    }

    fn timed(framing: Framing) -> Session {
        let secs = |s| Some(Duration::from_secs(s));
        session(framing).with_timeouts(Timeouts {
            idle: secs(100),
            frame: secs(10),
            send: secs(20),
        })
    }

    #[test]
    fn an_idle_session_expires_at_its_idle_timeout() {
        let s = timed(Framing::Line);
        let deadline = s.deadline().unwrap();
        let opened = deadline - Duration::from_secs(100);
        assert_eq!(s.expired(deadline - Duration::from_millis(1)), None);
        assert_eq!(
            s.expired(deadline),
            Some(CloseReason::Timeout(Expiry::Idle))
        );
        assert!(opened <= Instant::now());
    }

    #[test]
    fn a_begun_frame_must_finish_within_the_frame_timeout() {
        let mut s = timed(Framing::Line);
        s.receive(b"a\nhal").unwrap();
        s.advance(2);
        let deadline = s.deadline().unwrap();
        let at = |secs| deadline - Duration::from_secs(10) + Duration::from_secs(secs);
        assert_eq!(s.expired(at(9)), None);
        assert_eq!(s.expired(at(10)), Some(CloseReason::Timeout(Expiry::Frame)));
        // More of the same frame does not restart its clock; finishing it stops it.
        s.receive(b"f").unwrap();
        assert_eq!(s.deadline(), Some(deadline));
        s.receive(b"\n").unwrap();
        s.advance(5);
        assert!(s.deadline().unwrap() >= deadline + Duration::from_secs(80));
    }

    #[test]
    fn raw_framing_never_leaves_a_frame_begun() {
        let mut s = timed(Framing::Raw);
        s.receive(b"partial").unwrap();
        s.advance(7);
        let deadline = s.deadline().unwrap();
        assert_eq!(
            s.expired(deadline),
            Some(CloseReason::Timeout(Expiry::Idle))
        );
    }

    #[test]
    fn replies_not_taken_expire_at_the_send_timeout() {
        let mut s = timed(Framing::Line);
        s.receive(b"abc\n").unwrap();
        let deadline = s.deadline().unwrap();
        assert_eq!(
            s.expired(deadline),
            Some(CloseReason::Timeout(Expiry::Send))
        );
        s.advance(1); // progress restarts the send clock
        assert!(s.deadline().unwrap() >= deadline);
        s.advance(3);
        assert_eq!(s.expired(deadline), None, "all taken: only idle remains");
    }

    #[test]
    fn time_the_server_stalled_is_not_the_peers_to_pay() {
        let stalls = Arc::new(AtomicU64::new(0));
        let mut s = timed(Framing::Line).with_stall_clock(stalls.clone());
        s.receive(b"hal").unwrap();
        let deadline = s.deadline().unwrap();
        // The server waits 25 s for its store: the frame's 10 s and the idle 100 s move on.
        stalls.fetch_add(25_000_000_000, Relaxed);
        assert_eq!(s.deadline(), Some(deadline + Duration::from_secs(25)));
        assert_eq!(s.expired(deadline), None);
        assert_eq!(
            s.expired(deadline + Duration::from_secs(25)),
            Some(CloseReason::Timeout(Expiry::Frame))
        );
        s.receive(b"f\n").unwrap(); // the clocks move for it once, then run as before
        s.advance(s.pending().len());
        assert!(s.deadline().unwrap() >= deadline + Duration::from_secs(90));
    }

    #[test]
    fn without_timeouts_nothing_expires() {
        let mut s = session(Framing::Line);
        s.receive(b"half").unwrap();
        assert_eq!(s.deadline(), None);
        assert_eq!(
            s.expired(Instant::now() + Duration::from_secs(1 << 30)),
            None
        );
    }

    /// A session behind a proxy at 127.0.0.1 that refuses peers whose address holds `deny`,
    /// the header's client when it names one and the proxy's own otherwise.
    fn proxied(deny: &'static str) -> Session {
        Session::behind_proxy(
            Framing::Line.codec(64),
            Box::new(move |peer, _named| {
                if peer.addr.contains(deny) {
                    return Err(CloseReason::Denied);
                }
                Ok(Upper.open(peer))
            }),
        )
        .with_peer(Peer::new(7, "tcp://127.0.0.1:40000"))
    }

    #[test]
    fn behind_a_proxy_the_header_names_the_peer_then_frames_follow() {
        let mut s = proxied("nobody");
        let bytes = b"PROXY TCP4 192.0.2.7 198.51.100.1 51000 8079\r\nhi\nthere\n";
        for chunk in bytes.chunks(5) {
            s.receive(chunk).unwrap();
        }
        assert_eq!(s.peer().addr, "tcp://192.0.2.7:51000");
        assert_eq!(s.peer().id, 7);
        assert_eq!(s.pending(), b"HI\nTHERE\n");
    }

    #[test]
    fn a_header_begun_is_bounded_by_the_frame_timeout() {
        let mut s = proxied("nobody").with_timeouts(Timeouts {
            idle: None,
            frame: Some(Duration::from_secs(5)),
            send: None,
        });
        s.receive(b"PROXY TCP4 192.0").unwrap();
        let deadline = s.deadline().expect("the header's frame clock runs");
        assert_eq!(
            s.expired(deadline),
            Some(CloseReason::Timeout(Expiry::Frame))
        );
    }

    #[test]
    fn behind_a_proxy_anything_but_a_header_closes() {
        let mut s = proxied("nobody");
        let e = s.receive(b"hello\n").unwrap_err();
        assert_eq!(e.kind(), "error");
        assert!(e.to_string().contains("PROXY"), "{e}");
        assert!(s.pending().is_empty(), "nothing answered");

        let mut s = proxied("nobody");
        s.receive(b"PROXY TCP4 1.2").unwrap();
        assert!(matches!(s.receive_eof(), Err(CloseReason::Proxy(_))));
    }

    #[test]
    fn the_client_a_header_names_is_judged_not_the_proxy() {
        let mut s = proxied("192.0.2.");
        let e = s
            .receive(b"PROXY TCP4 192.0.2.7 198.51.100.1 51000 8079\r\nhi\n")
            .unwrap_err();
        assert_eq!(e, CloseReason::Denied);
        let mut s = proxied("127.0.0.1");
        s.receive(b"PROXY TCP4 192.0.2.7 198.51.100.1 51000 8079\r\nhi\n")
            .unwrap();
        assert_eq!(
            s.pending(),
            b"HI\n",
            "the proxy's own address is not the client's"
        );
        // The proxy speaking for itself (a health check): its own address is the peer.
        let mut s = proxied("127.0.0.1");
        let e = s.receive(b"PROXY UNKNOWN\r\nhi\n").unwrap_err();
        assert_eq!(e, CloseReason::Denied);
        assert_eq!(s.peer().addr, "tcp://127.0.0.1:40000");
        assert!(s.pending().is_empty());
    }

    #[test]
    fn an_idle_session_keeps_small_buffers_only() {
        let mut s = session(Framing::Raw);
        s.receive(&vec![b'a'; 64 * 1024]).unwrap();
        assert!(
            s.input.capacity() <= KEEP_BUFFER,
            "input freed once answered"
        );
        let n = s.pending().len();
        s.advance(n);
        assert!(s.output.capacity() <= KEEP_BUFFER, "output freed once sent");
        s.receive(b"small").unwrap();
        s.advance(5);
        assert!(
            s.output.capacity() > 0,
            "a small buffer is kept for the next reply"
        );
    }

    proptest::proptest! {
        /// Frames answered straight out of a read and frames pieced together in the input
        /// get the same replies, each as soon as its last byte is read, however the stream is
        /// cut into reads.
        #[test]
        fn replies_do_not_depend_on_where_reads_are_cut(
            len_framing: bool,
            msgs in proptest::collection::vec("[a-z\\r]{0,40}", 0..20),
            cuts in proptest::collection::vec(0usize..100, 0..30),
        ) {
            let framing = if len_framing { Framing::Len } else { Framing::Line };
            let codec = framing.codec(64);
            // Where each request ends in the stream, and where its reply ends in the replies.
            let (mut stream, mut expected, mut ends) = (Vec::new(), Vec::new(), Vec::new());
            for m in &msgs {
                codec.encode(m.as_bytes(), &mut stream).unwrap();
                codec.encode(m.to_uppercase().as_bytes(), &mut expected).unwrap();
                ends.push((stream.len(), expected.len()));
            }
            let mut s = Session::new(framing.codec(64), Upper.open(&Peer::new(1, "t")));
            let mut replies = Vec::new();
            let mut at = 0;
            for cut in cuts.iter().chain([&stream.len()]) {
                let end = (at + cut).min(stream.len());
                s.receive(&stream[at..end]).unwrap();
                at = end;
                replies.extend_from_slice(s.pending());
                s.advance(s.pending().len());
                let due = ends.iter().take_while(|(req, _)| *req <= end).last().map_or(0, |e| e.1);
                proptest::prop_assert_eq!(&replies, &expected[..due]);
            }
            s.receive_eof().unwrap();
            proptest::prop_assert_eq!(s.pending(), b"");
            proptest::prop_assert_eq!(s.stats().msgs_in, msgs.len() as u64);
        }
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
