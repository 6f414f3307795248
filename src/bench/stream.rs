//! One load-generating connection over a stream (TCP or Unix): the closed loop (a new request
//! as each reply comes back, `depth` in flight) and the open loop (requests on a fixed
//! schedule, each latency measured from when its request was due).

use crate::bench::connection::Plan;
use crate::bench::payload::ReplyDecoder;
use crate::bench::schedule::Schedule;
use crate::bench::tally::{Failure, Tally};
use bytes::BytesMut;
use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// One connection's view of the run.
pub(crate) struct Conn<'a> {
    pub(crate) plan: &'a Plan,
    pub(crate) tally: &'a Mutex<Tally>,
    /// This connection's number, which varies its payload.
    pub(crate) id: u64,
    /// The next message's sequence number (kept across reconnects).
    pub(crate) seq: Cell<u64>,
    /// Correct replies inside the window, across reconnects.
    pub(crate) replies: Cell<u64>,
    /// Since when its oldest request unanswered at the window's end had been waiting (none
    /// when it was waiting for nothing).
    pub(crate) waiting_since: Cell<Option<Instant>>,
}

impl<'a> Conn<'a> {
    /// Connection `id` of a run.
    pub(crate) fn new(plan: &'a Plan, tally: &'a Mutex<Tally>, id: u64) -> Conn<'a> {
        Conn {
            plan,
            tally,
            id,
            seq: Cell::new(0),
            replies: Cell::new(0),
            waiting_since: Cell::new(None),
        }
    }
}

/// However it ends (done, failed, or cut off when the run closes), a connection tells the
/// tally what it was served.
impl Drop for Conn<'_> {
    fn drop(&mut self) {
        let (replies, waiting_since) = (self.replies.get(), self.waiting_since.get());
        self.lock().served(replies, waiting_since);
    }
}

impl Conn<'_> {
    /// Frames the next request onto `out`, its body made in place (a large body copied once
    /// more would cost the load generator as much as making it); returns its sequence number.
    pub(crate) fn encode(&self, out: &mut Vec<u8>) -> u64 {
        let seq = self.seq.get();
        self.seq.set(seq + 1);
        let start = self.plan.codec.begin(out);
        self.plan.messages.body(self.id, seq, out);
        // The body was checked against the framing before the run, so framing cannot fail.
        let _ = self.plan.codec.end(out, start);
        seq
    }

    /// Checks reply `seq` against what the service owes for it.
    pub(crate) fn check(&self, seq: u64, reply: &[u8]) -> bool {
        self.plan.messages.accepts(self.id, seq, reply)
    }

    pub(crate) fn lock(&self) -> std::sync::MutexGuard<'_, Tally> {
        self.tally.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A correct reply to a request sent (or due) at `since`: counted in `tally` (this
    /// connection's, locked) and among this connection's own when it came in the window.
    pub(crate) fn replied(&self, tally: &mut Tally, since: Instant, at: Instant) {
        if tally.reply(since, at) {
            self.replies.set(self.replies.get() + 1);
        } else if let Some(since) = tally.late(since, at) {
            // Answered only after the window: it was waiting when the window ended.
            self.waited_since(since);
        }
    }

    /// The run ended with requests sent (or due) at `since` still unanswered.
    pub(crate) fn ended_waiting(&self, since: impl IntoIterator<Item = Instant>) {
        if let Some(since) = self.lock().unanswered(since) {
            self.waited_since(since);
        }
    }

    fn waited_since(&self, since: Instant) {
        let earliest = self.waiting_since.get().map_or(since, |e| e.min(since));
        self.waiting_since.set(Some(earliest));
    }

    /// A closed loop is about to send its first requests, at `at`: the first of the run
    /// (not a reconnect's) tells the tally when, so a late load generator is seen as such.
    pub(crate) fn starting(&self, at: Instant) {
        if self.seq.get() == 0 {
            self.lock().first_request(at);
        }
    }
}

/// Pins down the output of a connection's half that only ends by failing.
pub(crate) fn failing<F: std::future::Future<Output = Result<(), Failure>>>(f: F) -> F {
    f
}

async fn read_some<S: AsyncRead + Unpin>(
    stream: &mut S,
    input: &mut BytesMut,
    timeout: Duration,
) -> Result<(), Failure> {
    if input.capacity() - input.len() < 16 * 1024 {
        input.reserve(64 * 1024);
    }
    match tokio::time::timeout(timeout, stream.read_buf(input)).await {
        Err(_) => Err(Failure::Timeout),
        Ok(Ok(0)) => Err(Failure::Closed),
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(Failure::from_io(&e)),
    }
}

async fn write_all<S: AsyncWrite + Unpin>(
    stream: &mut S,
    out: &mut Vec<u8>,
) -> Result<(), Failure> {
    let r = stream.write_all(out).await;
    out.clear();
    r.map_err(|e| Failure::from_io(&e))
}

/// Closed loop: `depth` requests in flight; each reply is checked and answered with the next
/// request, sent in one write with the others its read brought. Runs until the run is over.
pub(crate) async fn closed_loop<S>(stream: &mut S, conn: &Conn<'_>) -> Result<(), Failure>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let plan = conn.plan;
    let mut decoder = ReplyDecoder::new(plan.framing, plan.payload.len());
    let mut input = BytesMut::with_capacity(64 * 1024);
    let mut out = Vec::new();
    // (sequence number, when it was sent) of each request in flight, oldest first.
    let mut flight: VecDeque<(u64, Instant)> = VecDeque::with_capacity(plan.depth);
    let now = Instant::now();
    conn.starting(now);
    for _ in 0..plan.depth {
        flight.push_back((conn.encode(&mut out), now));
    }
    write_all(stream, &mut out).await?;
    loop {
        tokio::select! {
            // The run's end first: what is still in flight then is unanswered.
            biased;
            () = plan.over() => {
                conn.ended_waiting(flight.iter().map(|&(_, sent)| sent));
                return Ok(());
            }
            read = read_some(stream, &mut input, plan.timeout) => read?,
        }
        answer(conn, &mut decoder, &mut input, &mut flight, &mut out)?;
        if !out.is_empty() {
            write_all(stream, &mut out).await?;
        }
    }
}

/// Checks every whole reply in `input` and frames a new request for each onto `out`.
fn answer(
    conn: &Conn<'_>,
    decoder: &mut ReplyDecoder,
    input: &mut BytesMut,
    flight: &mut VecDeque<(u64, Instant)>,
    out: &mut Vec<u8>,
) -> Result<(), Failure> {
    let now = Instant::now();
    let mut tally = conn.lock();
    while let Some(reply) = decoder.next(input).map_err(|_| Failure::Frame)? {
        let Some((seq, sent)) = flight.pop_front() else {
            tally.mismatch(now); // a reply to nothing we asked
            continue;
        };
        if conn.check(seq, &reply) {
            conn.replied(&mut tally, sent, now);
        } else {
            tally.mismatch(now);
        }
        flight.push_back((conn.encode(out), now));
    }
    Ok(())
}

/// Open loop: requests go out on this connection's schedule whatever the replies do; a
/// request that could not go out on time because the server did not read still counts from
/// when it was due, so a stall shows in the percentiles instead of hiding (coordinated
/// omission; see [`Schedule`]).
pub(crate) async fn open_loop<S>(
    stream: S,
    conn: &Conn<'_>,
    schedule: &mut Schedule,
) -> Result<(), Failure>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let plan = conn.plan;
    let (mut reader, mut writer) = tokio::io::split(stream);
    // (sequence number, when its latency counts from) of each request not yet answered.
    let flight: RefCell<VecDeque<(u64, Instant)>> = Default::default();
    let send = failing(async {
        let mut out = Vec::new();
        loop {
            tokio::time::sleep_until(schedule.next().into()).await;
            for since in schedule.due(Instant::now()) {
                let seq = conn.encode(&mut out);
                flight.borrow_mut().push_back((seq, since));
            }
            write_all(&mut writer, &mut out).await?;
            schedule.wrote(Instant::now());
        }
    });
    let receive = failing(async {
        let mut decoder = ReplyDecoder::new(plan.framing, plan.payload.len());
        let mut input = BytesMut::with_capacity(64 * 1024);
        loop {
            match read_some(&mut reader, &mut input, plan.timeout).await {
                // Quiet is fine while nothing is owed; a reply owed for longer is a timeout.
                Err(Failure::Timeout) => match flight.borrow().front() {
                    Some((_, due)) if due.elapsed() >= plan.timeout => {
                        return Err(Failure::Timeout)
                    }
                    _ => continue,
                },
                other => other?,
            }
            let now = Instant::now();
            let mut tally = conn.lock();
            while let Some(reply) = decoder.next(&mut input).map_err(|_| Failure::Frame)? {
                let owed = flight.borrow_mut().pop_front();
                match owed {
                    Some((seq, due)) if conn.check(seq, &reply) => {
                        conn.replied(&mut tally, due, now)
                    }
                    _ => tally.mismatch(now),
                }
            }
        }
    });
    tokio::select! {
        done = async { tokio::try_join!(send, receive) } => done.map(drop)?,
        () = plan.over() => conn.ended_waiting(flight.borrow().iter().map(|&(_, due)| due)),
    }
    let mut stream = reader.unsplit(writer);
    super::connection::close(&mut stream).await;
    Ok(())
}
