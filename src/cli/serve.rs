//! `switchboard serve`: serve a service until SIGINT or SIGTERM, then drain and print a summary.

use super::{parse_addr, parse_duration, parse_size, RecordArgs, DEFAULT_ADDR};
use anyhow::Context;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use switchboard::access::{
    parse_network, parse_proxy_source, AccessList, ProxySource, TrustedProxies,
};
use switchboard::codec::Framing;
use switchboard::pid_file::PidFile;
use switchboard::reload::Reloads;
use switchboard::service::{Builtin, Service};
use switchboard::store::OnStoreError;
use switchboard::transport::SocketOptions;
use switchboard::{Addr, Model, Server, ServerBuilder, Timeouts};

/// Serve a service until SIGINT or SIGTERM, then drain and print a summary.
#[derive(clap::Args)]
#[command(
    long_about = "Serve a service until SIGINT or SIGTERM, then drain and print a summary.\n\n\
    Started by systemd with socket activation (LISTEN_PID and LISTEN_FDS set), it serves the socket the system passed instead of binding ADDR.\n\n\
    SIGHUP reloads without refusing anyone: a new copy of the server (the same executable path and arguments, so a new binary there is picked up) takes over the listening socket, announces itself on stdout and in the --pid-file, and once it serves this one stops accepting and drains.",
    after_help = "Examples:\n  switchboard serve\n  switchboard serve tcp://0.0.0.0:9000 --model iterative\n  switchboard serve unix:///tmp/sb.sock --frame line --service echo\n  switchboard serve tls://0.0.0.0:8443 --tls-cert cert.pem --tls-key key.pem"
)]
pub struct Args {
    /// Where to listen.
    #[arg(default_value = DEFAULT_ADDR, value_parser = parse_addr)]
    addr: Addr,
    /// How connections are served (see `switchboard models`).
    #[arg(long, value_enum, default_value_t = Model::default())]
    model: Model,
    /// What is served.
    #[arg(long, value_enum, default_value_t = Builtin::default())]
    service: Builtin,
    /// How messages are framed: raw (bytes as they come), line (\n-delimited), len (u32 big-endian length prefix).
    #[arg(long, value_enum, default_value_t = Framing::default())]
    frame: Framing,
    /// Largest frame accepted; a longer one closes its connection. Bytes, or with a unit: 64KiB, 16MiB.
    #[arg(long, default_value = "16MiB", value_parser = parse_size)]
    max_frame: usize,
    /// Length of the kernel's queue of connections waiting to be accepted.
    #[arg(long, default_value_t = 1024)]
    backlog: i32,
    /// Threads or processes for the models that run several: pool (default 4 per core, at least 8), epoll (default 1), async and prefork (default one per core).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=4096))]
    workers: Option<u32>,
    /// The most child processes the fork model runs at once; past it, new connections wait in the backlog.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..))]
    max_children: u32,
    /// Set SO_REUSEPORT, so several servers can share the port.
    #[arg(long)]
    reuse_port: bool,
    /// io_uring features for --model uring, NAME=on|off comma-separated, over the default (every one on but sqpoll and send-zc): single-issuer, defer-taskrun, registered-ring, fixed-files, multishot-recv, incremental-buffers, batched-sends, sqpoll, send-zc (zero-copy sends of replies of 16 KiB or more over TCP; a peer on the same machine gets a copy made anyway, so it pays only with a network between). One the kernel refuses is logged once and gone without. Measure what each is worth: switchboard lab --ablation.
    #[arg(long, value_name = "NAME=on|off,...")]
    uring: Option<switchboard::model::UringFeatures>,
    /// How long open connections may take to finish after SIGINT/SIGTERM (a second signal cuts them at once): seconds, or with a unit (500ms, 1m).
    #[arg(long, default_value = "5", value_parser = parse_duration)]
    drain: Duration,
    /// The most connections open at once (across every worker); past it the server stops accepting and new clients wait in the kernel's backlog until a place frees.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    max_conns: u64,
    /// The most connections open at once from one client address (IP peers), across every worker; one more is closed unread, counted and recorded (reason limited), so a few slow clients cannot take every --max-conns place. Not with --proxy-protocol (limit per client at the balancer).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    max_conns_per_ip: Option<u32>,
    /// Stop reading a connection once this many bytes of its replies wait unsent, until they drain: the most a client that sends and never reads holds of the server's memory (beyond one frame and its reply), under every model. Bytes, or with a unit: 16KiB, 1MiB.
    #[arg(long, value_name = "SIZE", default_value = "64KiB", value_parser = parse_size)]
    output_budget: usize,
    /// Close a connection with no byte in either direction for this long (reason timeout); 0 never does. 500ms, 30s, 5m.
    #[arg(long, value_name = "DUR", default_value = "5m", value_parser = parse_duration)]
    idle_timeout: Duration,
    /// Close a connection whose frame was begun but not finished within this (slowloris); 0 never does. Bounds nothing under --frame raw, where every read is a whole frame.
    #[arg(long, value_name = "DUR", default_value = "30s", value_parser = parse_duration)]
    frame_timeout: Duration,
    /// Close a connection that does not take its replies for this long; 0 never does.
    #[arg(long, value_name = "DUR", default_value = "30s", value_parser = parse_duration)]
    send_timeout: Duration,
    /// tls://: the server's certificate chain (PEM).
    #[arg(long, value_name = "PEM", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// tls://: the certificate's private key (PEM: PKCS#8, RSA or EC).
    #[arg(long, value_name = "PEM", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// tls://: require a client certificate signed by the CA in this PEM file (mutual TLS).
    #[arg(long, value_name = "PEM", requires = "tls_cert")]
    tls_client_ca: Option<PathBuf>,
    /// Every connection starts with a PROXY protocol header (v1 or v2), as HAProxy's send-proxy and nginx's proxy_protocol send it: the client it names is the peer the log, the store and --allow/--deny see. Needs --proxy-from. A connection without a valid header is closed (reason error); a header naming no client (LOCAL, UNKNOWN: a health check) is judged by the proxy's own address.
    #[arg(long)]
    proxy_protocol: bool,
    /// With --proxy-protocol: a proxy whose PROXY headers are believed, by network or address (10.0.0.5, 10.0.0.0/24, ::1) or, on a Unix socket, by the user it runs as (uid:N); repeatable. A connection from anyone else is closed unread, counted and recorded (reason untrusted). --proxy-from 0.0.0.0/0 believes anyone who can connect, who may then claim any address past --allow and --deny.
    #[arg(long = "proxy-from", value_name = "CIDR|uid:N", value_parser = parse_proxy_source)]
    proxy_from: Vec<ProxySource>,
    /// Admit only peers in this network (CIDR such as 10.0.0.0/8 or fd00::/8, or one address); repeatable. With any --allow, only those.
    #[arg(long = "allow", value_name = "CIDR", value_parser = parse_network)]
    allow: Vec<ipnet::IpNet>,
    /// Refuse peers in this network; repeatable. Refused connections are closed before a byte is read, counted, recorded (reason denied) and logged once per address per 10 s.
    #[arg(long = "deny", value_name = "CIDR", value_parser = parse_network)]
    deny: Vec<ipnet::IpNet>,
    /// Unix sockets: admit only peers running as this user id (SO_PEERCRED); repeatable.
    #[arg(long = "allow-uid", value_name = "UID")]
    allow_uid: Vec<u32>,
    /// Serve GET /metrics in the Prometheus text format on this address (tcp://HOST:PORT; port 0 picks one, printed as `metrics on http://...`).
    #[arg(long, value_name = "ADDR", value_parser = parse_metrics_addr)]
    metrics: Option<std::net::SocketAddr>,
    /// Answer scrapes of --metrics only from this network (CIDR or one address); repeatable. Default: loopback only (127.0.0.0/8, ::1), so metrics bound to a public address stay private until your Prometheus is named here; 0.0.0.0/0 answers anyone.
    #[arg(long = "metrics-allow", value_name = "CIDR", value_parser = parse_network, requires = "metrics")]
    metrics_allow: Vec<ipnet::IpNet>,
    /// Write this process's id to this file once listening; removed at a clean exit.
    #[arg(long, value_name = "PATH")]
    pid_file: Option<PathBuf>,
    #[command(flatten)]
    record: RecordArgs,
    /// What to record: a row per connection (sessions), or every request and reply too (messages).
    #[arg(long = "record", value_enum, default_value_t = RecordWhat::Sessions)]
    what: RecordWhat,
    /// Bytes of records waiting for the store before serving waits for room (per process of the server). 64MiB, 1GiB.
    #[arg(long, value_name = "SIZE", default_value = "64MiB", value_parser = parse_size)]
    store_queue: usize,
    /// While the store cannot take records (database away, disk full, file locked or read-only): wait (records wait in the queue, then serving waits, until the store writes again; a stop spools what is left), spool (into --spool-dir, replayed once the store writes again), or drop (count them and serve on). Default: wait for sqlite://, spool for mysql://.
    #[arg(long, value_name = "WHAT", value_enum)]
    on_store_error: Option<OnError>,
    /// Where spools go, and where spools left by stopped servers are replayed from at start. Default: the working directory.
    #[arg(long, value_name = "DIR")]
    spool_dir: Option<PathBuf>,
}

/// A timeout of 0 means none.
fn nonzero(d: Duration) -> Option<Duration> {
    (!d.is_zero()).then_some(d)
}

/// `--metrics` takes a TCP address only: it is served over HTTP.
fn parse_metrics_addr(s: &str) -> Result<std::net::SocketAddr, String> {
    match parse_addr(s)? {
        Addr::Tcp(sa) => Ok(sa),
        other => Err(format!(
            "{other}: metrics are served over HTTP, on a tcp://HOST:PORT address"
        )),
    }
}

/// `--on-store-error`.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum OnError {
    /// Records wait in the queue, then serving waits, until the store writes again.
    Wait,
    /// Records go to a local spool, replayed once the store writes again.
    Spool,
    /// Records are counted as dropped; serving goes on.
    Drop,
}

impl From<OnError> for OnStoreError {
    fn from(e: OnError) -> Self {
        match e {
            OnError::Wait => OnStoreError::Wait,
            OnError::Spool => OnStoreError::Spool,
            OnError::Drop => OnStoreError::Drop,
        }
    }
}

/// What `serve --record` keeps.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum RecordWhat {
    /// A row per connection.
    Sessions,
    /// A row per connection, and every request and reply.
    Messages,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    // Handlers first: a signal that comes as soon as `listening on` is printed must stop the
    // server gracefully, not kill it.
    let signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP])
        .context("cannot install signal handlers")?;
    let signals_handle = signals.handle();
    let service = args.service.service();
    let (model, frame, pid_path) = (args.model, args.frame, args.pid_file.clone());
    let server = configure(args, service.clone())?.bind()?;
    let local = server.local_addr()?;
    // Written once listening, so whoever waits for the file can connect at once.
    let pid_file = match &pid_path {
        Some(path) => Some(PidFile::write(path)?),
        None => None,
    };
    println!("listening on {local}");
    if let Some(Addr::Tcp(sa)) = server.metrics_addr() {
        println!("metrics on http://{sa}/metrics");
    }
    io::stdout().flush()?;
    tracing::info!(addr = %local, model = %model, service = service.name(), frame = %frame, "serving");
    switchboard::reload::serving(); // a server that handed this one its socket now drains
    let reloads = Reloads::new(server.stop_handle(), server.listener_fd());
    watch_signals(signals, &server, reloads.clone());
    let summary = server.run();
    reloads.finish();
    let summary = summary?;
    signals_handle.close();
    drop(pid_file); // a clean exit: the file goes
                    // A closed stdout must not turn a clean stop into a failure.
    let _ = writeln!(io::stdout(), "{summary}");
    Ok(())
}

/// The server the options describe, serving the socket a reload handed over or the system
/// passed (socket activation) if there is one, instead of binding ADDR.
fn configure(args: Args, service: Arc<dyn Service>) -> anyhow::Result<ServerBuilder> {
    let mut builder = Server::builder();
    switchboard::reload::remember_executable();
    if let Some(listener) = switchboard::transport::handed_over()? {
        tracing::info!(addr = %listener.local_addr()?, "serving the socket the previous server handed over (SIGHUP reload)");
        builder = builder.listener(listener);
    } else if let Some(listener) = switchboard::transport::inherited()? {
        tracing::info!(addr = %listener.local_addr()?, "serving the socket the system passed (socket activation); ADDR is not bound");
        builder = builder.listener(listener);
    }
    if let Some(n) = args.workers {
        builder = builder.workers(n as usize);
    }
    if let Some(features) = args.uring {
        if args.model != Model::Uring {
            anyhow::bail!("--uring sets the io_uring features of --model uring; this server runs --model {}: leave --uring out, or add --model uring", args.model);
        }
        builder = builder.uring_features(features);
    }
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(switchboard::tls::server_config(
            cert,
            key,
            args.tls_client_ca.as_deref(),
        )?),
        _ => None,
    };
    Ok(builder
        .tls(tls)
        .addr(args.addr)
        .model(args.model)
        .service_arc(service)
        .framing(args.frame)
        .max_frame(args.max_frame)
        .socket_options(SocketOptions {
            backlog: args.backlog,
            reuse_port: args.reuse_port,
            ..SocketOptions::default()
        })
        .drain(args.drain)
        .max_children(args.max_children as usize)
        .store(args.record.url())
        .record_messages(args.what == RecordWhat::Messages)
        .store_queue(args.store_queue)
        .on_store_error(args.on_store_error.map(OnStoreError::from))
        .spool_dir(args.spool_dir)
        .access(AccessList::new(args.allow, args.deny, args.allow_uid))
        .max_conns(args.max_conns as usize)
        .output_budget(args.output_budget)
        .max_conns_per_ip(args.max_conns_per_ip)
        .proxy_protocol(args.proxy_protocol)
        .proxy_from(TrustedProxies::new(args.proxy_from))
        .timeouts(Timeouts {
            idle: nonzero(args.idle_timeout),
            frame: nonzero(args.frame_timeout),
            send: nonzero(args.send_timeout),
        })
        .metrics(args.metrics)
        .metrics_allow(args.metrics_allow)
        .own_fd_tables(true)) // upper and echo open no file a thread would share
}

/// Answers signals in a thread of their own: SIGHUP reloads ([`Reloads`]), SIGINT and
/// SIGTERM stop gracefully, and again stop at once. Returns once the thread runs: a process
/// model must not fork while a thread is still starting (the child would inherit std's
/// thread-start lock, held).
fn watch_signals(mut signals: signal_hook::iterator::Signals, server: &Server, reloads: Reloads) {
    let stop = server.stop_handle();
    let (started, settled) = std::sync::mpsc::sync_channel(1);
    std::thread::spawn(move || {
        let _ = started.send(());
        for signal in signals.forever() {
            if signal == SIGHUP {
                reloads.reload();
                continue;
            }
            let name = if signal == SIGINT {
                "SIGINT"
            } else {
                "SIGTERM"
            };
            if stop.is_stopping() {
                tracing::info!("{name} again: closing open connections now");
            } else {
                tracing::info!("{name}: no longer accepting; draining open connections");
            }
            stop.stop();
        }
    });
    let _ = settled.recv();
}
