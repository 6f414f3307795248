//! The server: a builder that binds, and `run`, which hands the listener to the chosen model
//! and returns a summary once a stop has drained.

use crate::addr::Addr;
use crate::codec::{Framing, DEFAULT_MAX_FRAME};
use crate::model::Model;
use crate::service::{Peer, Service, Upper};
use crate::session::MessageTap;
use crate::session::{CloseReason, Session, SessionStats};
use crate::shutdown::{Lifecycle, StopHandle};
use crate::store::{
    now_us, MessageRow, Record, Recorder, RecorderStats, ServerRow, SessionRow, SharedStats,
    StoreError, StoreUrl, Writer, QUEUE,
};
use crate::sys::SharedMem;
use crate::transport::{BindError, Listener, SocketOptions};
use std::fmt;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The default time open connections get to finish after a stop.
pub const DEFAULT_DRAIN: Duration = Duration::from_secs(5);

/// Why a server could not start or stopped serving.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The listening socket could not be set up.
    #[error(transparent)]
    Bind(#[from] BindError),
    /// The model does not serve this kind of address.
    #[error("model `{model}` does not serve {addr}; models that do: {serving}")]
    Unsupported {
        /// The model asked for.
        model: Model,
        /// The address asked for.
        addr: Addr,
        /// The models that serve that address.
        serving: String,
    },
    /// The model failed (its listener broke, or it could not start its threads).
    #[error("serving failed: {0}")]
    Io(#[from] io::Error),
    /// The store could not be opened.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Configures and binds a [`Server`].
///
/// ```
/// use switchboard::{Addr, Model, Server, codec::Framing, client::Client};
/// let server = Server::builder()
///     .addr("tcp://127.0.0.1:0".parse().unwrap())
///     .model(Model::Threads)
///     .framing(Framing::Line)
///     .bind()
///     .unwrap();
/// let addr = server.local_addr().unwrap();
/// let stop = server.stop_handle();
/// let running = std::thread::spawn(move || server.run());
///
/// let mut client = Client::connect(&addr, Framing::Line).unwrap();
/// assert_eq!(client.request(b"hello world").unwrap(), b"HELLO WORLD");
/// drop(client);
///
/// stop.stop();
/// let summary = running.join().unwrap().unwrap();
/// assert_eq!(summary.connections, 1);
/// ```
pub struct ServerBuilder {
    addr: Addr,
    model: Model,
    service: Arc<dyn Service>,
    framing: Framing,
    max_frame: usize,
    socket: SocketOptions,
    drain: Duration,
    workers: Option<usize>,
    max_children: usize,
    store: Option<StoreUrl>,
    record_messages: bool,
}

/// The default bound on `fork`'s children.
pub const DEFAULT_MAX_CHILDREN: usize = 256;

impl ServerBuilder {
    /// Where to listen. Default: `tcp://127.0.0.1:8079`, the plan's address.
    pub fn addr(mut self, addr: Addr) -> Self {
        self.addr = addr;
        self
    }

    /// How connections are served. Default: [`Model::default`], the fastest model here
    /// (`uring`, or `epoll` where the kernel refuses io_uring).
    pub fn model(mut self, model: Model) -> Self {
        self.model = model;
        self
    }

    /// What is served. Default: [`Upper`].
    pub fn service(mut self, service: impl Service) -> Self {
        self.service = Arc::new(service);
        self
    }

    /// What is served, already shared.
    pub fn service_arc(mut self, service: Arc<dyn Service>) -> Self {
        self.service = service;
        self
    }

    /// How messages are framed. Default: [`Framing::Raw`].
    pub fn framing(mut self, framing: Framing) -> Self {
        self.framing = framing;
        self
    }

    /// The longest frame accepted; a longer one closes its connection. Default: 16 MiB.
    pub fn max_frame(mut self, bytes: usize) -> Self {
        self.max_frame = bytes;
        self
    }

    /// Socket options for the listener and its connections.
    pub fn socket_options(mut self, options: SocketOptions) -> Self {
        self.socket = options;
        self
    }

    /// How long open connections may go on after a stop. Default: 5 s.
    pub fn drain(mut self, drain: Duration) -> Self {
        self.drain = drain;
        self
    }

    /// Threads or processes for the models that run several (`pool`, `epoll`, `async`);
    /// each model has its own default, which `switchboard models` shows.
    pub fn workers(mut self, workers: usize) -> Self {
        self.workers = Some(workers);
        self
    }

    /// The most child processes `fork` runs at once; past it, connections wait in the backlog.
    /// Default: 256.
    pub fn max_children(mut self, max: usize) -> Self {
        self.max_children = max;
        self
    }

    /// Records what is served in this store (see [`crate::store`]). Default: none.
    pub fn store(mut self, url: Option<StoreUrl>) -> Self {
        self.store = url;
        self
    }

    /// Records every request and reply too, not only each connection (`--record messages`).
    pub fn record_messages(mut self, on: bool) -> Self {
        self.record_messages = on;
        self
    }

    /// Binds the listening socket; serving starts with [`Server::run`].
    pub fn bind(self) -> Result<Server, ServeError> {
        if !self.model.serves(&self.addr) {
            return Err(ServeError::Unsupported {
                model: self.model,
                addr: self.addr.clone(),
                serving: Model::serving(&self.addr),
            });
        }
        let listener = Listener::bind(&self.addr, &self.socket)?;
        let (store, writer) = match &self.store {
            None => (None, None),
            Some(url) => {
                let mut backend = crate::store::open(url)?;
                if let Err(e) = backend.replay_leftover_spools() {
                    tracing::warn!(error = %e, "cannot replay a spool left by an earlier server yet");
                }
                let instance = instance_id();
                backend.start_server(&ServerRow {
                    instance: instance.clone(),
                    host: host_name(),
                    pid: std::process::id(),
                    model: self.model.name().into(),
                    address: listener.local_addr()?.to_string(),
                    service: self.service.name().into(),
                    frame: self.framing.name().into(),
                    started: now_us(),
                })?;
                let stats: SharedStats = Arc::new(SharedMem::<RecorderStats>::new()?);
                let (recorder, writer) =
                    Recorder::start(Box::new(backend), instance.clone(), QUEUE, stats.clone())?;
                let store = StoreHandle {
                    url: url.clone(),
                    instance,
                    recorder,
                    stats,
                    messages: self.record_messages,
                };
                (Some(store), Some(writer))
            }
        };
        let shared = Shared {
            service: self.service,
            framing: self.framing,
            max_frame: self.max_frame,
            model: self.model,
            nodelay: self.socket.nodelay,
            workers: self.workers,
            max_children: self.max_children,
            lifecycle: Arc::new(Lifecycle::new(self.drain)?),
            counters: Arc::new(SharedMem::new()?),
            store,
        };
        Ok(Server {
            listener,
            shared: Arc::new(shared),
            writer,
        })
    }
}

/// A bound server: [`run`](Server::run) serves until stopped.
pub struct Server {
    listener: Listener,
    shared: Arc<Shared>,
    writer: Option<Writer>,
}

impl Server {
    /// A builder with the defaults: `upper` over raw TCP on 127.0.0.1:8079.
    pub fn builder() -> ServerBuilder {
        ServerBuilder {
            addr: Addr::Tcp(([127, 0, 0, 1], 8079).into()),
            model: Model::default(),
            service: Arc::new(Upper),
            framing: Framing::default(),
            max_frame: DEFAULT_MAX_FRAME,
            socket: SocketOptions::default(),
            drain: DEFAULT_DRAIN,
            workers: None,
            max_children: DEFAULT_MAX_CHILDREN,
            store: None,
            record_messages: false,
        }
    }

    /// The address bound, with the real port when port 0 was asked for.
    pub fn local_addr(&self) -> io::Result<Addr> {
        self.listener.local_addr()
    }

    /// A handle that stops this server from any thread (or a signal handler's thread).
    pub fn stop_handle(&self) -> StopHandle {
        StopHandle(self.shared.lifecycle.clone())
    }

    /// Serves until a stop has drained, then returns what was served. The listening socket is
    /// closed once, here, when serving is over.
    pub fn run(self) -> Result<Summary, ServeError> {
        let started = Instant::now();
        crate::sys::raise_fd_limit();
        let lifecycle = self.shared.lifecycle.clone();
        let watchdog = lifecycle.spawn_watchdog()?;
        let served = self.shared.model.serve(self.listener, &self.shared);
        lifecycle.finish();
        let _ = watchdog.join();
        // Everything queued before the drain ended is written before the summary.
        if let (Some(writer), Some(store)) = (self.writer, &self.shared.store) {
            if let Some(mut backend) = writer.finish() {
                if let Err(e) = backend.stop_server(&store.instance, now_us(), &store.stats) {
                    tracing::error!(error = %e, "cannot record the server's stop");
                }
            }
        }
        served?;
        Ok(self.shared.counters.summary(started.elapsed()))
    }
}

/// What a server served, printed when it stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    /// Connections accepted.
    pub connections: u64,
    /// Connections that ended in an error (a bad frame, an IO error).
    pub errors: u64,
    /// Bytes received.
    pub bytes_in: u64,
    /// Bytes sent.
    pub bytes_out: u64,
    /// Requests answered.
    pub messages: u64,
    /// How long the server ran.
    pub elapsed: Duration,
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "served {} connections ({} errors), {} messages, {} bytes in, {} bytes out, in {:.1} s",
            self.connections,
            self.errors,
            self.messages,
            self.bytes_in,
            self.bytes_out,
            self.elapsed.as_secs_f64()
        )
    }
}

/// The server's totals. They live in memory shared across `fork`, so the process models'
/// workers count into the same totals as their parent.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    /// Connections accepted so far: the last connection's id.
    connections: AtomicU64,
    errors: AtomicU64,
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    messages: AtomicU64,
}

impl Counters {
    fn summary(&self, elapsed: Duration) -> Summary {
        Summary {
            connections: self.connections.load(Relaxed),
            errors: self.errors.load(Relaxed),
            bytes_in: self.bytes_in.load(Relaxed),
            bytes_out: self.bytes_out.load(Relaxed),
            messages: self.messages.load(Relaxed),
            elapsed,
        }
    }
}

/// What every connection of a server shares, handed to its model.
pub(crate) struct Shared {
    pub(crate) service: Arc<dyn Service>,
    pub(crate) framing: Framing,
    pub(crate) max_frame: usize,
    pub(crate) model: Model,
    pub(crate) nodelay: bool,
    /// `--workers`, if given; each model has its own default.
    pub(crate) workers: Option<usize>,
    /// `--max-children` for `fork`.
    pub(crate) max_children: usize,
    pub(crate) lifecycle: Arc<Lifecycle>,
    counters: Arc<SharedMem<Counters>>,
    /// Where connections are recorded, if anywhere.
    store: Option<StoreHandle>,
}

/// A server's store: its URL, its instance id, and the recorder models hand records to.
pub(crate) struct StoreHandle {
    url: StoreUrl,
    instance: String,
    recorder: Recorder,
    /// Shared with forked workers, so the instance's totals add up theirs.
    stats: SharedStats,
    messages: bool,
}

/// A process unique id: host, pid and start time.
fn instance_id() -> String {
    format!("{}:{}:{:x}", host_name(), std::process::id(), now_us())
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "localhost".into())
}

/// Records a session's messages as they are answered.
struct MessageRecorder {
    session: u64,
    recorder: Recorder,
}

impl MessageTap for MessageRecorder {
    fn answered(&mut self, seq: u64, request: &[u8], reply: &[u8]) {
        self.recorder.record(Record::Message(MessageRow {
            session: self.session,
            seq,
            at: now_us(),
            request: request.to_vec(),
            reply: reply.to_vec(),
        }));
    }
}

impl Shared {
    /// A connection was accepted: numbers it and counts it.
    pub(crate) fn accepted(&self, addr: String) -> Peer {
        Peer::new(self.counters.connections.fetch_add(1, Relaxed) + 1, addr)
    }

    /// The same server for a forked worker: the same service, options and counters, with a stop
    /// of its own (its parent's waker is shared by every process, so it cannot be the worker's).
    pub(crate) fn for_worker(&self) -> Result<(Shared, Option<Writer>), ServeError> {
        // The parent's store writer is a thread, which a forked child does not have: the
        // worker writes through a connection of its own, counting into the shared totals.
        let (store, writer) = match &self.store {
            None => (None, None),
            Some(parent) => {
                let backend = crate::store::open(&parent.url)?;
                let (recorder, writer) = Recorder::start(
                    Box::new(backend),
                    parent.instance.clone(),
                    QUEUE,
                    parent.stats.clone(),
                )?;
                let store = StoreHandle {
                    url: parent.url.clone(),
                    instance: parent.instance.clone(),
                    recorder,
                    stats: parent.stats.clone(),
                    messages: parent.messages,
                };
                (Some(store), Some(writer))
            }
        };
        let worker = Shared {
            service: self.service.clone(),
            framing: self.framing,
            max_frame: self.max_frame,
            model: self.model,
            nodelay: self.nodelay,
            workers: self.workers,
            max_children: self.max_children,
            lifecycle: Arc::new(Lifecycle::new(self.lifecycle.drain())?),
            counters: self.counters.clone(),
            store,
        };
        Ok((worker, writer))
    }

    /// A fresh session for a connection.
    pub(crate) fn session(&self, peer: &Peer) -> Session {
        let session = Session::new(self.framing.codec(self.max_frame), self.service.open(peer));
        match &self.store {
            Some(store) if store.messages => session.with_tap(Box::new(MessageRecorder {
                session: peer.id,
                recorder: store.recorder.clone(),
            })),
            _ => session,
        }
    }

    /// Hands a finished connection's row to the recorder.
    fn record(&self, peer: &Peer, stats: SessionStats, reason: &CloseReason, opened: Instant) {
        if let Some(store) = &self.store {
            let closed = now_us();
            store.recorder.record(Record::Session(SessionRow {
                id: peer.id,
                peer: peer.addr.clone(),
                transport: peer.addr.split("://").next().unwrap_or("").to_string(),
                opened: closed - opened.elapsed().as_micros() as i64,
                closed,
                bytes_in: stats.bytes_in,
                bytes_out: stats.bytes_out,
                msgs_in: stats.msgs_in,
                msgs_out: stats.msgs_out,
                reason: reason.kind().to_string(),
            }));
        }
    }

    /// A forked worker is done: its records are written out before it exits.
    pub(crate) fn finish(self, writer: Option<Writer>) {
        drop(self); // the last recorders, so the writer sees them gone
        if let Some(writer) = writer {
            writer.finish();
        }
    }

    /// A connection closed: one log line and the server's counters.
    pub(crate) fn closed(
        &self,
        peer: &Peer,
        stats: SessionStats,
        reason: &CloseReason,
        opened: Instant,
    ) {
        self.count(stats, reason);
        self.record(peer, stats, reason, opened);
        let ms = opened.elapsed().as_millis() as u64;
        if reason.is_error() {
            tracing::warn!(id = peer.id, peer = %peer.addr, model = %self.model, bytes_in = stats.bytes_in,
                bytes_out = stats.bytes_out, ms, reason = %reason, "closed");
        } else {
            tracing::info!(id = peer.id, peer = %peer.addr, model = %self.model, bytes_in = stats.bytes_in,
                bytes_out = stats.bytes_out, ms, reason = %reason, "closed");
        }
    }

    /// A datagram was answered: counted like a connection of one message, logged at debug
    /// level (a line per datagram would drown the log), or as a warning when it failed.
    pub(crate) fn answered(
        &self,
        peer: &Peer,
        stats: SessionStats,
        reason: &CloseReason,
        opened: Instant,
    ) {
        self.count(stats, reason);
        self.record(peer, stats, reason, opened);
        if reason.is_error() {
            tracing::warn!(id = peer.id, peer = %peer.addr, model = %self.model, bytes_in = stats.bytes_in, reason = %reason, "datagram not answered");
        } else {
            tracing::debug!(id = peer.id, peer = %peer.addr, model = %self.model, bytes_in = stats.bytes_in,
                bytes_out = stats.bytes_out, us = opened.elapsed().as_micros() as u64, "datagram answered");
        }
    }

    fn count(&self, stats: SessionStats, reason: &CloseReason) {
        let c = &self.counters;
        c.bytes_in.fetch_add(stats.bytes_in, Relaxed);
        c.bytes_out.fetch_add(stats.bytes_out, Relaxed);
        c.messages.fetch_add(stats.msgs_in, Relaxed);
        if reason.is_error() {
            c.errors.fetch_add(1, Relaxed);
        }
    }
}
