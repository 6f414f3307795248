//! The rows a store holds and hands back, one type per table, shared by the server, `bench`,
//! `lab` and the commands that read them.

use std::time::{SystemTime, UNIX_EPOCH};

/// A `serve` process, as the `servers` table holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerRow {
    /// Unique per process: host, pid and start time.
    pub instance: String,
    /// The machine's host name.
    pub host: String,
    /// The process id.
    pub pid: u32,
    /// The model's name.
    pub model: String,
    /// The address served.
    pub address: String,
    /// The service's name.
    pub service: String,
    /// The framing's name.
    pub frame: String,
    /// When it started (µs since the epoch).
    pub started: i64,
}

#[cfg(test)]
impl ServerRow {
    /// An `epoll` server of `instance` that started at `started`, for the backends' tests.
    pub(crate) fn for_test(instance: &str, started: i64) -> ServerRow {
        ServerRow {
            instance: instance.into(),
            host: "test".into(),
            pid: 1,
            model: "epoll".into(),
            address: "tcp://127.0.0.1:9".into(),
            service: "upper".into(),
            frame: "line".into(),
            started,
        }
    }
}

/// One connection (or datagram), as the `sessions` table holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRow {
    /// The connection's id within its instance.
    pub id: u64,
    /// The peer's address.
    pub peer: String,
    /// `tcp`, `unix`, `udp` or `unixgram`.
    pub transport: String,
    /// When it opened and closed (µs since the epoch).
    pub opened: i64,
    /// See `opened`.
    pub closed: i64,
    /// Bytes received.
    pub bytes_in: u64,
    /// Bytes sent.
    pub bytes_out: u64,
    /// Requests decoded.
    pub msgs_in: u64,
    /// Replies queued.
    pub msgs_out: u64,
    /// `eof`, `reset`, `timeout`, `error`, `denied`, `untrusted`, `limited` or `shutdown`.
    pub reason: String,
}

/// One request and its reply, as the `messages` table holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageRow {
    /// The connection's id.
    pub session: u64,
    /// The message's number in its connection, from 1.
    pub seq: u64,
    /// When it was answered (µs since the epoch).
    pub at: i64,
    /// The request's bytes.
    pub request: Vec<u8>,
    /// The reply's bytes.
    pub reply: Vec<u8>,
}

/// What one load-generator run measured, as `bench --json` prints it and the `bench_runs`
/// table keeps it: the one type for a bench result, which `bench::Report` and
/// [`BenchRow`] each hold.
#[derive(Debug, Clone, PartialEq, Default, serde::Serialize)]
pub struct BenchResult {
    /// The server's address.
    pub address: String,
    /// The framing spoken.
    pub frame: String,
    /// Connections asked for.
    pub conns: u64,
    /// Bytes per request body.
    pub size: u64,
    /// Requests in flight per connection (closed loop).
    pub depth: u64,
    /// Open loop: the requests per second asked for; `null` in a closed loop.
    pub rate: Option<f64>,
    /// The measured window, in seconds.
    pub secs: f64,
    /// Correct replies per second.
    pub msgs_per_s: f64,
    /// Request payload megabytes (10^6) per second answered.
    pub mb_per_s: f64,
    /// Latency percentiles and maximum, in µs (open loop: from when each request was due).
    pub p50_us: u64,
    /// See `p50_us`.
    pub p90_us: u64,
    /// See `p50_us`.
    pub p99_us: u64,
    /// See `p50_us`.
    pub p999_us: u64,
    /// See `p50_us`.
    pub max_us: u64,
    /// Failed connections (and lost datagrams), all kinds.
    pub errors: u64,
    /// Replies that were not what the service owed.
    pub mismatches: u64,
}

/// One load-generator run, as the `bench_runs` table holds it: written by `switchboard bench`
/// and by each cell of `switchboard lab`.
#[derive(Debug, Clone, PartialEq, Default, serde::Serialize)]
pub struct BenchRow {
    /// Unique per run: host, pid and start time.
    pub run: String,
    /// The lab run this cell belongs to, if any.
    pub lab: Option<String>,
    /// When it started (µs since the epoch).
    pub started: i64,
    /// The server measured: its model in a lab, or `bench --label`.
    pub model: Option<String>,
    /// What the run measured.
    #[serde(flatten)]
    pub result: BenchResult,
    /// The server's CPU time per reply (lab only).
    pub cpu_us_per_msg: Option<f64>,
    /// The server's memory growth per open connection (lab only).
    pub rss_bytes_per_conn: Option<f64>,
}

/// Which recorded messages `switchboard messages` reads back.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MessageFilter {
    /// Only this server instance's.
    pub instance: Option<String>,
    /// Only this connection's (its id within its instance).
    pub session: Option<u64>,
    /// Only this peer's (as the log shows it, e.g. `tcp://127.0.0.1:50312`).
    pub peer: Option<String>,
    /// The newest this many.
    pub last: usize,
}

/// A recorded message with where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedMessage {
    /// The server instance that answered it.
    pub instance: String,
    /// The connection's peer; `None` while the connection is still open (its session row is
    /// written when it closes).
    pub peer: Option<String>,
    /// The message.
    pub message: MessageRow,
}

/// Messages of one connection, packed into one buffer and handed to the recorder whole: one
/// queue hand-over and no allocation per message, however many it holds.
///
/// ```
/// use switchboard::store::MessageBatch;
/// let mut batch = MessageBatch::new(7);
/// batch.push(1, 1_000, b"hi", b"HI");
/// batch.push(2, 2_000, b"", b"");
/// let got: Vec<_> = batch.iter().map(|m| (m.seq, m.request, m.reply)).collect();
/// assert_eq!(got, vec![(1, &b"hi"[..], &b"HI"[..]), (2, &b""[..], &b""[..])]);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MessageBatch {
    session: u64,
    /// Per message: sequence number, time, and where its request and reply end in `bytes`.
    entries: Vec<(u64, i64, usize, usize)>,
    bytes: Vec<u8>,
}

/// One message of a [`MessageBatch`], borrowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MessageRef<'a> {
    /// The connection's id.
    pub session: u64,
    /// The message's number in its connection, from 1.
    pub seq: u64,
    /// When it was answered (µs since the epoch).
    pub at: i64,
    /// The request's bytes.
    pub request: &'a [u8],
    /// The reply's bytes.
    pub reply: &'a [u8],
}

impl MessageBatch {
    /// An empty batch of connection `session`'s messages.
    pub fn new(session: u64) -> Self {
        MessageBatch {
            session,
            ..Default::default()
        }
    }

    /// Appends message `seq`, answered at `at`.
    pub fn push(&mut self, seq: u64, at: i64, request: &[u8], reply: &[u8]) {
        self.bytes.extend_from_slice(request);
        let request_end = self.bytes.len();
        self.bytes.extend_from_slice(reply);
        self.entries.push((seq, at, request_end, self.bytes.len()));
    }

    /// The connection whose messages these are.
    pub fn session(&self) -> u64 {
        self.session
    }

    /// Messages held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when it holds no message.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Bytes of requests and replies held.
    pub fn bytes(&self) -> usize {
        self.bytes.len()
    }

    /// The messages, in the order pushed.
    pub fn iter(&self) -> impl Iterator<Item = MessageRef<'_>> {
        let mut start = 0;
        self.entries
            .iter()
            .map(move |&(seq, at, request_end, reply_end)| {
                let m = MessageRef {
                    session: self.session,
                    seq,
                    at,
                    request: &self.bytes[start..request_end],
                    reply: &self.bytes[request_end..reply_end],
                };
                start = reply_end;
                m
            })
    }
}

/// What the recorder queues for the writer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// A connection closed.
    Session(SessionRow),
    /// A message was answered (`--record messages`), one by one (as a spool replays them).
    Message(MessageRow),
    /// Messages of one connection, packed (as the server records them).
    Messages(MessageBatch),
}

impl Record {
    /// About how much memory the record holds while it is queued.
    pub fn bytes(&self) -> usize {
        let own = std::mem::size_of::<Record>();
        match self {
            Record::Session(s) => own + s.peer.len() + s.transport.len() + s.reason.len(),
            Record::Message(m) => own + m.request.len() + m.reply.len(),
            Record::Messages(b) => own + b.bytes() + b.len() * 32,
        }
    }

    /// Rows this record becomes.
    pub fn rows(&self) -> u64 {
        match self {
            Record::Session(_) | Record::Message(_) => 1,
            Record::Messages(b) => b.len() as u64,
        }
    }
}

/// Every message in `records`, single or packed, in order.
pub(crate) fn messages_in(records: &[Record]) -> impl Iterator<Item = MessageRef<'_>> {
    records.iter().flat_map(|r| {
        let (single, packed) = match r {
            Record::Message(m) => (
                Some(MessageRef {
                    session: m.session,
                    seq: m.seq,
                    at: m.at,
                    request: &m.request,
                    reply: &m.reply,
                }),
                None,
            ),
            Record::Messages(b) => (None, Some(b.iter())),
            Record::Session(_) => (None, None),
        };
        single.into_iter().chain(packed.into_iter().flatten())
    })
}

/// Microseconds since the Unix epoch, now.
pub fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

/// A per-instance aggregate, for `switchboard stats`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct InstanceStats {
    /// The instance.
    pub instance: String,
    /// Its model.
    pub model: String,
    /// Its address.
    pub address: String,
    /// Sessions recorded.
    pub sessions: u64,
    /// Bytes in and out over them.
    pub bytes_in: u64,
    /// See `bytes_in`.
    pub bytes_out: u64,
    /// Messages over them.
    pub messages: u64,
    /// Sessions per close reason, as `reason=count` pairs.
    pub reasons: Vec<(String, u64)>,
    /// Records the writer wrote, of them those that went through the local spool, the times
    /// a model waited for room, and records dropped (as the instance reported when it stopped;
    /// empty while it runs).
    pub written: Option<u64>,
    /// See `written`.
    pub spooled: Option<u64>,
    /// See `written`.
    pub waited: Option<u64>,
    /// See `written`.
    pub dropped: Option<u64>,
}

/// A process unique id for a run or an instance: host, pid and start time.
pub fn unique_id() -> String {
    format!("{}:{}:{:x}", host_name(), std::process::id(), now_us())
}

/// This machine's host name, as the `servers` table names it.
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "localhost".into())
}
