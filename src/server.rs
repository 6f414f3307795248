//! The server: a builder that binds, and `run`, which hands the listener to the chosen model
//! and returns a summary once a stop has drained.

use crate::access::{AccessList, TrustedProxies};
use crate::addr::Addr;
use crate::codec::{Framing, DEFAULT_MAX_FRAME};
pub use crate::counters::Summary;
use crate::hooks::Hooks;
use crate::model::{Model, UringFeatures};
use crate::service::{Service, Upper};
use crate::session::Timeouts;
use crate::shared::Shared;
use crate::shutdown::{Lifecycle, StopHandle};
use crate::store::{
    host_name, now_us, unique_id, OnStoreError, RecorderOptions, RecorderStats, Recording,
    ServerRow, SharedStats, StoreError, StoreUrl, Writer, QUEUE_BYTES,
};
use crate::sys::SharedMem;
use crate::transport::{BindError, Listener, SocketOptions};
use std::io;
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
    /// An option that does not apply to this address.
    #[error("{0}")]
    Invalid(String),
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
    store_queue: usize,
    on_store_error: Option<OnStoreError>,
    spool_dir: Option<std::path::PathBuf>,
    listener: Option<Listener>,
    access: AccessList,
    metrics: Option<std::net::SocketAddr>,
    metrics_allow: Vec<ipnet::IpNet>,
    timeouts: Timeouts,
    max_conns: usize,
    output_budget: usize,
    max_conns_per_ip: Option<u32>,
    proxy_protocol: bool,
    proxy_from: TrustedProxies,
    tls: Option<Arc<rustls::ServerConfig>>,
    own_fd_tables: bool,
    uring: UringFeatures,
}

/// The default bound on connections open at once (`--max-conns`).
pub const DEFAULT_MAX_CONNS: usize = 10_000;

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

    /// The io_uring features the `uring` model may use. Default: every one but `sqpoll` (see
    /// [`UringFeature`](crate::model::UringFeature)); one the kernel refuses is logged once and
    /// gone without.
    pub fn uring_features(mut self, features: UringFeatures) -> Self {
        self.uring = features;
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

    /// Bytes of records queued for the store before the server waits for room
    /// (`--store-queue`), in each process of the server. Default:
    /// [`crate::store::QUEUE_BYTES`], 64 MiB.
    pub fn store_queue(mut self, bytes: usize) -> Self {
        self.store_queue = bytes;
        self
    }

    /// What to do with records while the store cannot take them (`--on-store-error`).
    /// Default: wait for SQLite, spool for MySQL/MariaDB (see [`OnStoreError`]).
    pub fn on_store_error(mut self, policy: Option<OnStoreError>) -> Self {
        self.on_store_error = policy;
        self
    }

    /// Where spools go (`--spool-dir`), and where leftover spools are replayed from at start.
    /// Default: the working directory.
    pub fn spool_dir(mut self, dir: Option<std::path::PathBuf>) -> Self {
        self.spool_dir = dir;
        self
    }

    /// Serves `GET /metrics` (Prometheus text format) on this TCP address while the server
    /// runs (`--metrics`). Default: none.
    pub fn metrics(mut self, addr: Option<std::net::SocketAddr>) -> Self {
        self.metrics = addr;
        self
    }

    /// The networks whose scrapers the metrics endpoint answers (`--metrics-allow`); anyone
    /// else is closed unread. Default (none given): loopback only, so metrics bound to a public
    /// address are not public until the operator names their Prometheus.
    pub fn metrics_allow(mut self, networks: Vec<ipnet::IpNet>) -> Self {
        self.metrics_allow = networks;
        self
    }

    /// How long a connection may keep the server waiting (`--idle-timeout`, `--frame-timeout`,
    /// `--send-timeout`). Default: [`Timeouts::DEFAULT`].
    pub fn timeouts(mut self, timeouts: Timeouts) -> Self {
        self.timeouts = timeouts;
        self
    }

    /// The most connections open at once, across every thread and process of the server
    /// (`--max-conns`); past it the server stops accepting, so new clients wait in the kernel's
    /// backlog until a place frees. Default: 10,000.
    pub fn max_conns(mut self, max: usize) -> Self {
        self.max_conns = max;
        self
    }

    /// The most connections open at once from one client address (`--max-conns-per-ip`),
    /// across every thread and process; one more is closed unread (reason `limited`). IP peers
    /// only; not with [`proxy_protocol`](ServerBuilder::proxy_protocol), where every connection
    /// comes from the balancer (limit per client there). Default: none.
    pub fn max_conns_per_ip(mut self, max: Option<u32>) -> Self {
        self.max_conns_per_ip = max;
        self
    }

    /// Unsent reply bytes past which a connection is read no further, until they drain
    /// (`--output-budget`): what a client that sends and never reads can hold of the server's
    /// memory, beyond one frame and its reply, under every model. Default:
    /// [`OUTPUT_BUDGET`](crate::session::OUTPUT_BUDGET), 64 KiB.
    pub fn output_budget(mut self, bytes: usize) -> Self {
        self.output_budget = bytes;
        self
    }

    /// Expects every connection to start with a PROXY protocol header, v1 or v2, as a load
    /// balancer sends it (`--proxy-protocol`): the client it names is the peer the log, the
    /// store, the service and the access lists see. Only the proxies named by
    /// [`proxy_from`](ServerBuilder::proxy_from) may connect (a connection from anyone else is
    /// closed unread, reason `untrusted`), and [`bind`](ServerBuilder::bind) refuses to start
    /// without one. A connection without a valid header is closed (reason `error`); a header
    /// that names no client (a health check) leaves the connection judged by its own address.
    /// Stream addresses only. Default: off.
    pub fn proxy_protocol(mut self, on: bool) -> Self {
        self.proxy_protocol = on;
        self
    }

    /// The proxies whose PROXY headers are believed under
    /// [`proxy_protocol`](ServerBuilder::proxy_protocol) (`--proxy-from`). Default: none.
    pub fn proxy_from(mut self, proxies: TrustedProxies) -> Self {
        self.proxy_from = proxies;
        self
    }

    /// Speaks TLS on a `tls://` address with this configuration (see
    /// [`crate::tls::server_config`]). Required by, and only for, `tls://`. Default: none.
    pub fn tls(mut self, config: Option<Arc<rustls::ServerConfig>>) -> Self {
        self.tls = config;
        self
    }

    /// `epoll`: gives each reactor thread a file table of its own (`unshare(CLONE_FILES)`), so
    /// Linux skips the reference count it takes on the file at every `recv` and `send` of a
    /// multi-threaded process (`perf`: `fdget` and `fput` fell from 2.3% of `epoll`'s samples to
    /// 1.1%). Only for a service that
    /// opens no file or socket for another thread to use: what a reactor thread opens is in
    /// its table alone, and the same number in another thread's table is another file.
    /// Default: off; `switchboard serve` turns it on (its services open none).
    pub fn own_fd_tables(mut self, on: bool) -> Self {
        self.own_fd_tables = on;
        self
    }

    /// Who may connect (`--allow`, `--deny`, `--allow-uid`). Default: anyone.
    pub fn access(mut self, access: AccessList) -> Self {
        self.access = access;
        self
    }

    /// Serves a socket that is already listening (or bound, for datagrams) instead of binding
    /// [`addr`](ServerBuilder::addr): one the system passed ([`crate::transport::inherited`],
    /// socket activation), or one of the caller's own.
    pub fn listener(mut self, listener: Listener) -> Self {
        self.listener = Some(listener);
        self
    }

    /// Binds the listening socket (or takes the one given); serving starts with
    /// [`Server::run`].
    pub fn bind(mut self) -> Result<Server, ServeError> {
        let addr = match &self.listener {
            Some(l) => l.local_addr()?,
            None => self.addr.clone(),
        };
        self.check(&addr)?;
        let listener = match self.listener.take() {
            Some(l) => l,
            None => Listener::bind(&self.addr, &self.socket)?,
        };
        let lifecycle = Arc::new(Lifecycle::new(self.drain)?);
        let (store, writer) = match &self.store {
            None => (None, None),
            Some(url) => {
                let (store, writer) = self.open_store(url, &listener, &lifecycle)?;
                (Some(store), Some(writer))
            }
        };
        // The metrics endpoint, bound now so a taken port is an error at start; SO_REUSEPORT,
        // so a server started by a reload binds it beside this one.
        let metrics = match self.metrics {
            Some(sa) => Some(crate::transport::bind_beside(sa)?),
            None => None,
        };
        let meters = match metrics {
            Some(_) => Some(Arc::new(SharedMem::<crate::metrics::Meters>::new()?)),
            None => None,
        };
        let metrics_allow = std::mem::take(&mut self.metrics_allow);
        let model = self.model;
        let shared = self.shared(lifecycle, store, meters.clone())?;
        let mut metrics_addr = None;
        if let (Some(listener), Some(meters)) = (metrics, meters) {
            let bound = listener.local_addr()?;
            metrics_addr = Some(Addr::Tcp(bound));
            let store = shared.hooks.recording.as_ref().map(Recording::stats);
            let allow = metrics_access(metrics_allow, bound);
            crate::metrics::serve(
                listener,
                shared.hooks.counters.clone(),
                meters,
                store,
                allow,
            )?;
        }
        Ok(Server {
            listener,
            model,
            shared: Arc::new(shared),
            writer,
            metrics_addr,
        })
    }

    /// Refuses what cannot be served as asked at `addr`, each with what to do instead.
    fn check(&self, addr: &Addr) -> Result<(), ServeError> {
        if !self.model.serves(addr) {
            return Err(ServeError::Unsupported {
                model: self.model,
                serving: Model::serving(addr),
                addr: addr.clone(),
            });
        }
        let invalid = |why: String| Err(ServeError::Invalid(why));
        match (addr, &self.tls) {
            (Addr::Tls { .. }, None) => {
                return invalid(format!(
                    "{addr} needs a certificate and its key: --tls-cert PEM --tls-key PEM"
                ))
            }
            (Addr::Tls { .. }, Some(_)) | (_, None) => {}
            (Addr::Tcp(_), Some(_)) if self.listener.is_some() => {} // passed by the system
            (_, Some(_)) => {
                return invalid(format!(
                    "--tls-cert and --tls-key serve tls:// addresses, not {addr}"
                ))
            }
        }
        if self.access.names_users() && !matches!(addr, Addr::Unix(_)) {
            return invalid(format!(
                "--allow-uid judges the user of a Unix stream peer (SO_PEERCRED), which {addr} does not have: judge its peers with --allow and --deny"
            ));
        }
        if self.framing == Framing::Len && self.max_frame > u32::MAX as usize {
            return invalid(format!(
                "--max-frame {} is past what the len framing's 32-bit prefix can say (4 GiB - 1 byte): give 4GiB or less",
                self.max_frame
            ));
        }
        if self.framing != Framing::Raw && !addr.is_stream() {
            tracing::warn!(frame = %self.framing, %addr, "a datagram is already one message: each must itself hold whole frames of this framing (raw is the usual choice for datagrams)");
        }
        if self.proxy_protocol && self.max_conns_per_ip.is_some() {
            return invalid(
                "--max-conns-per-ip counts connections by their own address, which behind --proxy-protocol is always the balancer's: limit connections per client at the balancer (HAProxy: src_conn_cur)".into(),
            );
        }
        if self.proxy_protocol {
            check_proxies(addr, &self.proxy_from)?;
        } else if !self.proxy_from.is_empty() {
            return invalid(
                "--proxy-from names the proxies whose PROXY headers are believed: it needs --proxy-protocol".into(),
            );
        }
        Ok(())
    }

    /// Opens the store at `url` and starts recording into it: the server's row names the
    /// listener's address, the model, the service and the framing.
    fn open_store(
        &self,
        url: &StoreUrl,
        listener: &Listener,
        lifecycle: &Arc<Lifecycle>,
    ) -> Result<(Recording, Writer), ServeError> {
        let mut options = RecorderOptions::for_store(url);
        options.bytes = self.store_queue;
        options.on_error = self.on_store_error.unwrap_or(options.on_error);
        if let Some(dir) = &self.spool_dir {
            options.spool_dir = dir.clone();
        }
        let server = ServerRow {
            instance: unique_id(),
            host: host_name(),
            pid: std::process::id(),
            model: self.model.name().into(),
            address: listener.local_addr()?.to_string(),
            service: self.service.name().into(),
            frame: self.framing.name().into(),
            started: now_us(),
        };
        let stats: SharedStats = Arc::new(SharedMem::<RecorderStats>::new()?);
        let stopping = lifecycle.clone();
        let stopping = Box::new(move || stopping.is_stopping());
        let recording =
            Recording::start(url, options, &server, self.record_messages, stats, stopping)?;
        Ok(recording)
    }

    /// What every connection of the server will share.
    fn shared(
        self,
        lifecycle: Arc<Lifecycle>,
        recording: Option<Recording>,
        meters: Option<Arc<SharedMem<crate::metrics::Meters>>>,
    ) -> Result<Shared, ServeError> {
        let hooks = Hooks {
            service: self.service,
            framing: self.framing,
            max_frame: self.max_frame,
            model: self.model.name(),
            counters: Arc::new(SharedMem::new()?),
            recording,
            access: Arc::new(self.access),
            meters,
            timeouts: self.timeouts,
            max_conns: self.max_conns.max(1) as u64,
            output_budget: self.output_budget.max(1),
            per_ip: match self.max_conns_per_ip {
                Some(max) => Some((max.max(1), Arc::new(SharedMem::new()?))),
                None => None,
            },
            proxies: self.proxy_protocol.then(|| Arc::new(self.proxy_from)),
            tls: self.tls,
            out_of_files_until: Default::default(),
            accept_failures: Default::default(),
            accept_failure_logged: Default::default(),
        };
        Ok(Shared {
            hooks,
            lifecycle,
            nodelay: self.socket.nodelay,
            workers: self.workers,
            max_children: self.max_children,
            own_fd_tables: self.own_fd_tables,
            uring: self.uring,
        })
    }
}

/// Who the metrics endpoint bound at `bound` answers: the networks given, or loopback only
/// (said at start when the address is not loopback: naming the scrapers is the operator's call).
fn metrics_access(allow: Vec<ipnet::IpNet>, bound: std::net::SocketAddr) -> AccessList {
    if !allow.is_empty() {
        return AccessList::new(allow, vec![], vec![]);
    }
    if !bound.ip().is_loopback() {
        tracing::warn!(metrics = %bound, "metrics answer loopback scrapers only: name your Prometheus with --metrics-allow CIDR (0.0.0.0/0 for anyone)");
    }
    let loopback = ["127.0.0.0/8", "::1/128"].map(|n| n.parse().expect("a network"));
    AccessList::new(loopback.to_vec(), vec![], vec![])
}

/// Refuses a `--proxy-protocol` that would believe nobody, or whose proxies could never
/// connect to `addr`: every connection would be refused, which is never what was meant.
fn check_proxies(addr: &Addr, proxies: &TrustedProxies) -> Result<(), ServeError> {
    if !addr.is_stream() {
        return Err(ServeError::Invalid(format!(
            "--proxy-protocol applies to stream addresses (tcp://, unix://), not {addr}: a datagram carries no PROXY header"
        )));
    }
    let unix = matches!(addr, Addr::Unix(_));
    if proxies.is_empty() {
        let example = if unix { "uid:0" } else { "10.0.0.5" };
        return Err(ServeError::Invalid(format!(
            "--proxy-protocol believes the client a PROXY header names, so it needs the proxies whose headers are to be believed: \
             add --proxy-from with your load balancer's {} (--proxy-from {example}); \
             --proxy-from 0.0.0.0/0 would let anyone who can connect claim any address",
            if unix { "user id" } else { "address or network" }
        )));
    }
    if unix && !proxies.names_a_user() {
        return Err(ServeError::Invalid(format!(
            "{addr} is a Unix socket, whose peers have no address: name the proxy by the user it runs as (--proxy-from uid:N)"
        )));
    }
    if !unix && !proxies.names_a_network() {
        return Err(ServeError::Invalid(format!(
            "{addr} is served over IP: name the proxy by its address or network (--proxy-from 10.0.0.5, --proxy-from 10.0.0.0/24); uid:N names proxies on Unix sockets"
        )));
    }
    Ok(())
}

/// A bound server: [`run`](Server::run) serves until stopped.
pub struct Server {
    listener: Listener,
    model: Model,
    shared: Arc<Shared>,
    writer: Option<Writer>,
    metrics_addr: Option<Addr>,
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
            store_queue: QUEUE_BYTES,
            on_store_error: None,
            spool_dir: None,
            listener: None,
            access: AccessList::default(),
            metrics: None,
            metrics_allow: Vec::new(),
            timeouts: Timeouts::DEFAULT,
            max_conns: DEFAULT_MAX_CONNS,
            output_budget: crate::session::OUTPUT_BUDGET,
            max_conns_per_ip: None,
            proxy_protocol: false,
            proxy_from: TrustedProxies::default(),
            tls: None,
            own_fd_tables: false,
            uring: UringFeatures::default(),
        }
    }

    /// The address bound, with the real port when port 0 was asked for.
    pub fn local_addr(&self) -> io::Result<Addr> {
        Ok(match self.listener.local_addr()? {
            Addr::Tcp(sa) if self.shared.hooks.tls.is_some() => Addr::Tls {
                addr: sa,
                host: sa.ip().to_string(),
            },
            addr => addr,
        })
    }

    /// The listening (or datagram) socket's fd, valid until [`run`](Server::run) returns: what
    /// a reload hands to the new server ([`crate::reload`]).
    pub fn listener_fd(&self) -> std::os::fd::RawFd {
        std::os::fd::AsRawFd::as_raw_fd(&self.listener)
    }

    /// Where `GET /metrics` is served, with the real port, if it is.
    pub fn metrics_addr(&self) -> Option<&Addr> {
        self.metrics_addr.as_ref()
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
        let served = self.model.serve(self.listener, &self.shared);
        lifecycle.finish();
        let _ = watchdog.join();
        // Everything queued before the drain ended is written before the summary.
        if let (Some(writer), Some(recording)) = (self.writer, &self.shared.hooks.recording) {
            if let Err(e) = recording.stop(writer) {
                tracing::error!(error = %e, "cannot record the server's stop");
            }
        }
        served?;
        Ok(self.shared.hooks.counters.summary(started.elapsed()))
    }
}
