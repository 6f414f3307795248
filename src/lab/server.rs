//! A server the lab measures: a real `switchboard serve` child, or a reference command, in a
//! process group of its own (so its CPU time and memory can be read, and it can be stopped
//! with everything it started), optionally pinned to the server's cores.

use crate::addr::Addr;
use crate::model::{Model, UringFeature, UringFeatures};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a server may take to start listening.
const START: Duration = Duration::from_secs(30);

/// Every `switchboard serve` the lab starts serves its metrics on a port of its own, which it
/// prints after its address: the lab reads its open connections from them each second.
const METRICS: [&str; 2] = ["--metrics", "tcp://127.0.0.1:0"];

/// What the lab runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LabServer {
    /// `switchboard serve --model MODEL`.
    Model(Model),
    /// `switchboard serve tls://... --model MODEL` with this certificate and key, named
    /// `MODEL+tls`; the load generator speaks TLS to it (without checking the certificate: it
    /// is the lab's own server).
    Tls {
        /// The model.
        model: Model,
        /// Its name, `MODEL+tls`.
        name: String,
        /// The certificate chain (PEM).
        cert: std::path::PathBuf,
        /// Its private key (PEM).
        key: std::path::PathBuf,
    },
    /// `switchboard serve --model MODEL OPTIONS...`: a model set otherwise than by default, as
    /// `uring` without one of its io_uring features (`lab --ablation`).
    Variant {
        /// The model.
        model: Model,
        /// Its name in the tables and plots (`uring/no-multishot-recv`).
        name: String,
        /// What it is, for the page (`uring without multishot-recv`).
        summary: String,
        /// The options added to `switchboard serve`.
        options: Vec<String>,
    },
    /// Another server: `command`, with `{port}` replaced by a free loopback port.
    Reference {
        /// Its name in the tables and plots.
        name: String,
        /// The command line, run by `sh -c`.
        command: String,
    },
}

impl LabServer {
    /// The name in the tables and plots.
    pub fn name(&self) -> &str {
        match self {
            LabServer::Model(m) => m.name(),
            LabServer::Tls { name, .. }
            | LabServer::Variant { name, .. }
            | LabServer::Reference { name, .. } => name,
        }
    }

    /// `uring` with `feature` turned the other way from its default (off, or on for one
    /// [off by default](UringFeature::OFF_BY_DEFAULT)), named `uring/no-FEATURE`
    /// (`uring/sqpoll`).
    pub fn uring_without(feature: UringFeature) -> LabServer {
        let on = !UringFeatures::default().is_on(feature);
        let (name, summary) = if on {
            (format!("uring/{feature}"), format!("uring with {feature}"))
        } else {
            (
                format!("uring/no-{feature}"),
                format!("uring without {feature}"),
            )
        };
        LabServer::Variant {
            model: Model::Uring,
            name,
            summary,
            options: vec![
                "--uring".into(),
                format!("{feature}={}", if on { "on" } else { "off" }),
            ],
        }
    }

    /// `model` over TLS with this certificate and key.
    pub fn tls(model: Model, cert: &Path, key: &Path) -> LabServer {
        LabServer::Tls {
            model,
            name: format!("{model}+tls"),
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
        }
    }

    /// The model of a `switchboard serve` server.
    pub fn model(&self) -> Option<Model> {
        match self {
            LabServer::Model(model)
            | LabServer::Tls { model, .. }
            | LabServer::Variant { model, .. } => Some(*model),
            LabServer::Reference { .. } => None,
        }
    }

    /// A reference from `NAME=COMMAND` or `COMMAND` (named after its program).
    ///
    /// ```
    /// use switchboard::lab::LabServer;
    /// let r = LabServer::reference("c-epoll=/tmp/c-epoll {port}").unwrap();
    /// assert_eq!(r.name(), "c-epoll");
    /// let r = LabServer::reference("/usr/bin/nc -l {port}").unwrap();
    /// assert_eq!(r.name(), "nc");
    /// assert!(LabServer::reference("nc -l 9000").is_err());
    /// ```
    pub fn reference(spec: &str) -> Result<LabServer, String> {
        let (name, command) = match spec.split_once('=') {
            Some((name, command)) if !name.is_empty() && !name.contains(char::is_whitespace) => {
                (name.to_string(), command.to_string())
            }
            _ => {
                let program = spec.split_whitespace().next().unwrap_or("reference");
                let name = Path::new(program)
                    .file_name()
                    .map_or(program.to_string(), |n| n.to_string_lossy().into_owned());
                (name, spec.to_string())
            }
        };
        if !command.contains("{port}") {
            return Err(format!(
                "`{spec}`: a reference command must say where to listen with {{port}}, as in 'NAME=./server {{port}}'"
            ));
        }
        Ok(LabServer::Reference { name, command })
    }
}

/// A running server, stopped (with its whole process group) when dropped.
pub(crate) struct Running {
    child: Child,
    pub(crate) addr: Addr,
    /// Where a `switchboard serve` server answers `GET /metrics`.
    pub(crate) metrics: Option<std::net::SocketAddr>,
}

impl Running {
    /// Starts `server` on a free loopback port, on `cpus` if given; returns once it listens.
    pub(crate) fn start(
        server: &LabServer,
        exe: &Path,
        serve_args: &[String],
        cpus: Option<&[usize]>,
    ) -> Result<Running, String> {
        // A model says where it listens; a reference is given a port and polled until it accepts.
        let (mut command, port) = match server {
            LabServer::Model(model) => {
                let mut c = Command::new(exe);
                c.args(["serve", "tcp://127.0.0.1:0", "--model", model.name()])
                    .args(serve_args)
                    .args(METRICS)
                    .env("RUST_LOG", "error")
                    .stdout(Stdio::piped());
                (c, None)
            }
            LabServer::Variant { model, options, .. } => {
                let mut c = Command::new(exe);
                c.args(["serve", "tcp://127.0.0.1:0", "--model", model.name()])
                    .args(options)
                    .args(serve_args)
                    .args(METRICS)
                    .env("RUST_LOG", "error")
                    .stdout(Stdio::piped());
                (c, None)
            }
            LabServer::Tls {
                model, cert, key, ..
            } => {
                let mut c = Command::new(exe);
                c.args(["serve", "tls://127.0.0.1:0", "--model", model.name()])
                    .arg("--tls-cert")
                    .arg(cert)
                    .arg("--tls-key")
                    .arg(key)
                    .args(serve_args)
                    .args(METRICS)
                    .env("RUST_LOG", "error")
                    .stdout(Stdio::piped());
                (c, None)
            }
            LabServer::Reference { command, .. } => {
                let port = free_port().map_err(|e| format!("no free port: {e}"))?;
                let mut c = Command::new("sh");
                c.arg("-c")
                    .arg(format!(
                        "exec {}",
                        command.replace("{port}", &port.to_string())
                    ))
                    .stdout(Stdio::null());
                (c, Some(port))
            }
        };
        command.stdin(Stdio::null()).stderr(Stdio::null());
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        if let Some(cpus) = cpus {
            crate::sys::pin_command(&mut command, cpus.to_vec());
        }
        let mut child = command
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", server.name()))?;
        let ready = match port {
            None => listening_lines(&mut child),
            Some(port) => accepting(&mut child, port).map(|addr| (addr, None)),
        };
        let mut running = Running {
            child,
            addr: Addr::Tcp(([127, 0, 0, 1], 0).into()),
            metrics: None,
        };
        match ready {
            Ok((addr, metrics)) => {
                running.addr = addr;
                running.metrics = metrics;
                Ok(running)
            }
            Err(why) => Err(format!("{} did not start: {why}", server.name())),
        }
    }

    /// The process group every process of the server is in.
    pub(crate) fn pgid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = crate::sys::signal_group(self.pgid(), crate::sys::Signal::Term);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // Whatever outlived the drain (or ignored SIGTERM) goes now, the whole group.
        let _ = crate::sys::signal_group(self.pgid(), crate::sys::Signal::Kill);
        let _ = self.child.wait();
    }
}

/// Reads `listening on ADDR` and `metrics on http://HOST:PORT/metrics` from a `switchboard
/// serve` child, within the start time.
fn listening_lines(child: &mut Child) -> Result<(Addr, Option<std::net::SocketAddr>), String> {
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        for _ in 0..2 {
            let line = lines.next().and_then(Result::ok).unwrap_or_default();
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let line = rx
        .recv_timeout(START)
        .map_err(|_| "it did not print `listening on` within 30 s".to_string())?;
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .ok_or_else(|| format!("it printed {line:?} instead of `listening on ADDR`"))?
        .parse()
        .map_err(|e| format!("{e}"))?;
    let metrics = rx.recv_timeout(START).ok().and_then(|line| {
        line.trim()
            .strip_prefix("metrics on http://")?
            .strip_suffix("/metrics")?
            .parse()
            .ok()
    });
    Ok((addr, metrics))
}

/// Waits until the reference accepts a connection on `port`.
fn accepting(child: &mut Child, port: u16) -> Result<Addr, String> {
    let addr: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
    let deadline = Instant::now() + START;
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("it exited ({status})"));
        }
        if std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(Addr::Tcp(addr));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(format!("nothing accepted on port {port} within 30 s"))
}

/// A loopback port free right now (the kernel's pick, released at once).
fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}
