//! Test helpers: a real `switchboard serve` process on a free port, and framing helpers for
//! raw sockets. Every wait here is bounded, so a broken server fails a test instead of hanging it.

#![allow(dead_code)] // each test binary uses its own part of these helpers

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// How long any single wait in a test may take before the test fails.
pub const PATIENCE: Duration = Duration::from_secs(20);

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_switchboard")
}

/// Runs `command` with at most `n` open files (its soft and hard `RLIMIT_NOFILE`).
pub fn limit_open_files(command: &mut Command, n: u64) {
    use std::os::unix::process::CommandExt;
    unsafe {
        command.pre_exec(move || {
            let limit = libc::rlimit {
                rlim_cur: n,
                rlim_max: n,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        });
    }
}

/// A directory of this test process's own, for Unix sockets and logs. The first call also
/// removes what test processes that are gone left behind, so runs do not pile up in /tmp.
pub fn scratch(name: &str) -> PathBuf {
    static N: AtomicU32 = AtomicU32::new(0);
    static SWEPT: std::sync::Once = std::sync::Once::new();
    SWEPT.call_once(remove_dead_scratch);
    let dir = std::env::temp_dir().join(format!(
        "sb-test-{}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed),
        name
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Removes `sb-test-PID-*` directories whose process no longer runs.
fn remove_dead_scratch() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix("sb-test-"))
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// A running `switchboard serve`, killed when dropped if it is still running.
pub struct ServerProcess {
    pub child: Child,
    pub addr: String,
    stdout: BufReader<ChildStdout>,
    pub log: PathBuf,
    /// The server's working directory.
    pub dir: PathBuf,
}

impl ServerProcess {
    /// Starts `switchboard serve ADDR ARGS...` and waits for its `listening on` line.
    pub fn start(addr: &str, args: &[&str]) -> ServerProcess {
        ServerProcess::start_in(&scratch("server"), addr, args)
    }

    /// Like [`start`](ServerProcess::start), working in `dir`.
    pub fn start_in(dir: &std::path::Path, addr: &str, args: &[&str]) -> ServerProcess {
        ServerProcess::start_with(dir, addr, args, None)
    }

    /// Like [`start_in`](ServerProcess::start_in), the server allowed at most `open_files`
    /// open files (soft and hard limit), when given.
    pub fn start_with(
        dir: &std::path::Path,
        addr: &str,
        args: &[&str],
        open_files: Option<u64>,
    ) -> ServerProcess {
        ServerProcess::start_exe(std::path::Path::new(bin()), dir, addr, args, open_files)
    }

    /// Like [`start_with`](ServerProcess::start_with), running the executable at `exe`.
    pub fn start_exe(
        exe: &std::path::Path,
        dir: &std::path::Path,
        addr: &str,
        args: &[&str],
        open_files: Option<u64>,
    ) -> ServerProcess {
        let dir = dir.to_path_buf();
        let log = dir.join(format!(
            "server-{}.log",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        let mut command = Command::new(exe);
        command
            .current_dir(&dir) // the default store, switchboard.db, lands here
            .arg("serve")
            .arg(addr)
            .args(args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap());
        if let Some(n) = open_files {
            limit_open_files(&mut command, n);
        }
        let mut child = command.spawn().expect("spawn switchboard serve");
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        let addr = match line.trim().strip_prefix("listening on ") {
            Some(a) => a.to_string(),
            None => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "server did not start: stdout {line:?}, log: {}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
        };
        ServerProcess {
            child,
            addr,
            stdout,
            log,
            dir,
        }
    }

    /// The next line the server printed on stdout (after `listening on`).
    pub fn next_line(&mut self) -> String {
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        line.trim().to_string()
    }

    /// A TCP server of `model` on a free loopback port.
    pub fn tcp(model: &str, args: &[&str]) -> ServerProcess {
        let mut all = vec!["--model", model];
        all.extend_from_slice(args);
        ServerProcess::start("tcp://127.0.0.1:0", &all)
    }

    /// The `HOST:PORT` of a TCP server.
    pub fn sockaddr(&self) -> &str {
        self.addr.strip_prefix("tcp://").expect("a tcp server")
    }

    /// A TCP or Unix server of `model`, as `transport` says, with a socket of its own.
    pub fn stream(model: &str, transport: &str, args: &[&str]) -> ServerProcess {
        let mut all = vec!["--model", model];
        all.extend_from_slice(args);
        match transport {
            "tcp" => ServerProcess::start("tcp://127.0.0.1:0", &all),
            "unix" => {
                let path = scratch("unix").join("sb.sock");
                ServerProcess::start(&format!("unix://{}", path.display()), &all)
            }
            other => panic!("no transport {other}"),
        }
    }

    /// Connects over the server's transport; reads and writes time out after the patience.
    pub fn connect(&self) -> TestConn {
        dial(&self.addr).expect("connect to the server")
    }

    /// The socket file of a Unix server.
    pub fn unix_path(&self) -> Option<PathBuf> {
        self.addr.strip_prefix("unix://").map(PathBuf::from)
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child's pid, which we have not reaped yet.
        assert_eq!(unsafe { libc::kill(self.child.id() as i32, sig) }, 0);
    }

    /// Sends SIGTERM and waits for the exit; returns the status and the rest of stdout.
    pub fn terminate(mut self) -> (ExitStatus, String) {
        self.signal(libc::SIGTERM);
        self.wait_exit()
    }

    /// Waits (bounded) for the process to exit; returns the status and the rest of stdout.
    pub fn wait_exit(&mut self) -> (ExitStatus, String) {
        let deadline = Instant::now() + PATIENCE;
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(Instant::now() < deadline, "server did not exit in time");
            std::thread::sleep(Duration::from_millis(20));
        };
        let mut rest = String::new();
        self.stdout.read_to_string(&mut rest).unwrap();
        (status, rest)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits (bounded) until the log contains `needle`.
    pub fn wait_log(&self, needle: &str) -> String {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let log = self.log();
            if log.contains(needle) {
                return log;
            }
            assert!(
                Instant::now() < deadline,
                "log never said {needle:?}:\n{log}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Connects to a `tcp://` or `unix://` address; reads and writes time out after the patience.
pub fn dial(addr: &str) -> std::io::Result<TestConn> {
    let conn = match addr.strip_prefix("unix://") {
        Some(path) => TestConn::Unix(UnixStream::connect(path)?),
        None => TestConn::Tcp(TcpStream::connect(addr.trim_start_matches("tcp://"))?),
    };
    conn.set_timeouts(Some(PATIENCE));
    Ok(conn)
}

/// A connection to a test server over TCP or a Unix socket, for checks that run over both.
pub enum TestConn {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl TestConn {
    pub fn set_timeouts(&self, t: Option<Duration>) {
        match self {
            TestConn::Tcp(s) => {
                s.set_read_timeout(t).unwrap();
                s.set_write_timeout(t).unwrap();
            }
            TestConn::Unix(s) => {
                s.set_read_timeout(t).unwrap();
                s.set_write_timeout(t).unwrap();
            }
        }
    }

    pub fn set_write_timeout(&self, t: Option<Duration>) {
        match self {
            TestConn::Tcp(s) => s.set_write_timeout(t).unwrap(),
            TestConn::Unix(s) => s.set_write_timeout(t).unwrap(),
        }
    }

    pub fn try_clone(&self) -> TestConn {
        match self {
            TestConn::Tcp(s) => TestConn::Tcp(s.try_clone().unwrap()),
            TestConn::Unix(s) => TestConn::Unix(s.try_clone().unwrap()),
        }
    }

    /// Shuts the writing side: the server sees end of stream.
    pub fn shut_write(&self) {
        match self {
            TestConn::Tcp(s) => s.shutdown(Shutdown::Write).unwrap(),
            TestConn::Unix(s) => s.shutdown(Shutdown::Write).unwrap(),
        }
    }

    /// Ends the connection abruptly: TCP sends a reset (SO_LINGER 0); a Unix socket has no
    /// reset, and simply closes.
    pub fn abort(self) {
        if let TestConn::Tcp(s) = &self {
            socket2::SockRef::from(s)
                .set_linger(Some(Duration::ZERO))
                .unwrap();
        }
    }
}

impl Read for TestConn {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            TestConn::Tcp(s) => s.read(buf),
            TestConn::Unix(s) => s.read(buf),
        }
    }
}

impl Write for TestConn {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            TestConn::Tcp(s) => s.write(buf),
            TestConn::Unix(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Reads exactly `n` bytes.
pub fn read_n(conn: &mut impl Read, n: usize) -> Vec<u8> {
    let mut buf = vec![0; n];
    conn.read_exact(&mut buf).expect("read the whole reply");
    buf
}

/// Sends a `len` frame.
pub fn send_len(conn: &mut impl Write, body: &[u8]) {
    conn.write_all(&(body.len() as u32).to_be_bytes()).unwrap();
    conn.write_all(body).unwrap();
}

/// Reads one `len` frame.
pub fn recv_len(conn: &mut impl Read) -> Vec<u8> {
    let header = read_n(conn, 4);
    let n = u32::from_be_bytes(header.try_into().unwrap()) as usize;
    read_n(conn, n)
}

/// Reads one `\n`-terminated line (without the `\n`).
pub fn recv_line(conn: &mut impl Read) -> Vec<u8> {
    let mut line = Vec::new();
    let mut byte = [0u8];
    loop {
        conn.read_exact(&mut byte).expect("read a line");
        if byte[0] == b'\n' {
            return line;
        }
        line.push(byte[0]);
    }
}

/// Reads until end of stream.
pub fn read_to_end(conn: &mut impl Read) -> Vec<u8> {
    let mut all = Vec::new();
    conn.read_to_end(&mut all).expect("read to end of stream");
    all
}

/// True when the peer has closed (EOF or reset) within the patience.
pub fn closed_by_peer(conn: &mut impl Read) -> bool {
    let mut buf = [0u8; 64];
    loop {
        match conn.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
    }
}

pub fn upper(b: &[u8]) -> Vec<u8> {
    b.to_ascii_uppercase()
}

/// Raises this test process's soft limit on open files to its hard limit, for tests that hold
/// many connections.
pub fn raise_fd_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read and write a live rlimit struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

/// Runs `switchboard ARGS...` and returns its stdout, failing the test on a failure.
pub fn switchboard_ok(args: &[&str]) -> String {
    let out = Command::new(bin()).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "switchboard {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("stdout is UTF-8")
}

/// `switchboard messages` with every option against a store at `url`: a server records binary,
/// UTF-8 and control bytes over two connections, and they read back in order, escaped in the
/// table and byte for byte in the JSON.
pub fn check_messages_command(url: &str) {
    use base64::Engine;
    let s = ServerProcess::tcp(
        "epoll",
        &["--store", url, "--record", "messages", "--frame", "len"],
    );
    let first: [&[u8]; 3] = [
        b"hello",
        "h\u{e9}llo \u{4e16}\u{754c}".as_bytes(),
        b"\x00\x01\xff\n\x1b[31m",
    ];
    let mut a = s.connect();
    for m in first {
        send_len(&mut a, m);
        assert_eq!(recv_len(&mut a), upper(m));
    }
    let mut b = s.connect();
    send_len(&mut b, b"second");
    assert_eq!(recv_len(&mut b), b"SECOND");
    drop((a, b));
    let addr = s.addr.clone();
    let (status, _) = s.terminate();
    assert!(status.success());

    let stats: Vec<serde_json::Value> = switchboard_ok(&["stats", "--store", url, "--json"])
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    // The newest with this address (stats lists by start): a database with history may hold
    // an older server that had the same port.
    let instance = stats
        .iter()
        .rfind(|s| s["address"] == addr.as_str())
        .expect("the server's instance")["instance"]
        .as_str()
        .unwrap()
        .to_string();
    let json = |extra: &[&str]| -> Vec<serde_json::Value> {
        let mut args = vec![
            "messages",
            "--store",
            url,
            "--instance",
            &instance,
            "--json",
        ];
        args.extend_from_slice(extra);
        switchboard_ok(&args)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    let b64 = base64::engine::general_purpose::STANDARD;
    let all = json(&[]);
    assert_eq!(all.len(), 4, "{all:?}");
    let sent: Vec<&[u8]> = first.iter().copied().chain([&b"second"[..]]).collect();
    for (row, request) in all.iter().zip(&sent) {
        assert_eq!(
            b64.decode(row["request"].as_str().unwrap()).unwrap(),
            *request
        );
        assert_eq!(
            b64.decode(row["reply"].as_str().unwrap()).unwrap(),
            upper(request)
        );
        assert_eq!(row["instance"], instance.as_str());
        match std::str::from_utf8(request) {
            Ok(text) => assert_eq!(row["request_text"], text),
            Err(_) => assert!(row["request_text"].is_null(), "{row}"),
        }
    }
    let seqs: Vec<u64> = all.iter().map(|r| r["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, [1, 2, 3, 1], "in order");
    let session_a = all[0]["session"].as_u64().unwrap();
    let peer_a = all[0]["peer"].as_str().unwrap().to_string();
    assert!(peer_a.starts_with("tcp://127.0.0.1:"), "{peer_a}");

    let by_session = json(&["--session", &session_a.to_string()]);
    assert_eq!(by_session.len(), 3);
    assert!(by_session.iter().all(|r| r["session"] == session_a));
    let by_peer = json(&["--peer", &peer_a]);
    assert_eq!(by_peer, by_session);
    let last = json(&["--last", "2"]);
    assert_eq!(last, all[2..].to_vec(), "the newest two, oldest first");

    // The table: text as it is, the rest escaped, no raw control byte.
    let table = switchboard_ok(&["messages", "--store", url, "--instance", &instance]);
    assert!(table.contains("hello -> HELLO"), "{table}");
    assert!(
        table.contains("h\u{e9}llo \u{4e16}\u{754c} -> H\u{e9}LLO \u{4e16}\u{754c}"),
        "{table}"
    );
    assert!(
        table.contains("\\u{0}\\u{1}\\xff\\n\\u{1b}[31m -> \\u{0}\\u{1}\\xff\\n\\u{1b}[31M"),
        "{table}"
    );
    assert!(
        table.bytes().all(|b| b >= 0x20 || b == b'\n'),
        "a raw control byte reached the terminal: {table:?}"
    );
    assert_eq!(
        table.lines().count(),
        5,
        "a header and four messages: {table}"
    );
}

/// `GET /metrics` from a server's metrics address (`http://HOST:PORT/metrics`): the body.
pub fn scrape(url: &str) -> String {
    let host = url
        .strip_prefix("http://")
        .and_then(|r| r.strip_suffix("/metrics"))
        .expect("a metrics URL");
    let mut conn = TcpStream::connect(host).expect("connect to the metrics endpoint");
    conn.set_read_timeout(Some(PATIENCE)).unwrap();
    conn.write_all(b"GET /metrics HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut response = String::new();
    conn.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").expect("an HTTP response");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    body.to_string()
}

/// The value of one sample line (`name{labels} value`) in a metrics body.
pub fn sample(body: &str, series: &str) -> f64 {
    body.lines()
        .find_map(|l| {
            l.strip_prefix(series)?
                .strip_prefix(' ')?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("no {series} in:\n{body}"))
}

/// Runs `promtool check metrics` over a metrics body, when promtool is installed (required
/// where `SWITCHBOARD_REQUIRE_PROMTOOL` is set, as the test script sets it).
pub fn promtool_accepts(body: &str) {
    let child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let Ok(mut child) = child else {
        assert!(
            std::env::var_os("SWITCHBOARD_REQUIRE_PROMTOOL").is_none(),
            "promtool is missing, and the test script requires it"
        );
        return;
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(body.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `switchboard ARGS... --store sqlite://DIR/switchboard.db`: what the default store of a server
/// run in `dir` recorded (`sessions --json`, `stats`, ...).
pub fn ask_store(dir: &std::path::Path, args: &[&str]) -> String {
    let store = format!("sqlite://{}/switchboard.db", dir.display());
    let mut all = args.to_vec();
    all.extend_from_slice(&["--store", &store]);
    switchboard_ok(&all)
}

/// `switchboard serve tls://127.0.0.1:0 --model MODEL --frame line` with the certificate of
/// `t`, in `dir`, and `extra` options.
pub fn serve_tls(
    dir: &std::path::Path,
    t: &TlsFiles,
    model: &str,
    extra: &[&str],
) -> ServerProcess {
    let (cert, key) = (t.cert.display().to_string(), t.key.display().to_string());
    let mut args = vec![
        "--model",
        model,
        "--frame",
        "line",
        "--tls-cert",
        &cert,
        "--tls-key",
        &key,
    ];
    args.extend_from_slice(extra);
    ServerProcess::start_in(dir, "tls://127.0.0.1:0", &args)
}

/// Certificates for the TLS tests, made by `openssl`: a CA, a server certificate it signed for
/// `localhost` and 127.0.0.1, and a client certificate it signed (for mutual TLS).
pub struct TlsFiles {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

/// Makes [`TlsFiles`] in `dir`, or `None` (said) where openssl is missing, unless
/// `SWITCHBOARD_REQUIRE_OPENSSL` is set (as the test script sets it where openssl is).
pub fn tls_files(dir: &std::path::Path) -> Option<TlsFiles> {
    if Command::new("openssl").arg("version").output().is_err() {
        assert!(
            std::env::var_os("SWITCHBOARD_REQUIRE_OPENSSL").is_none(),
            "openssl is missing, and the test script requires it"
        );
        eprintln!("openssl is missing: skipping");
        return None;
    }
    let openssl = |args: &[&str]| {
        let out = Command::new("openssl")
            .current_dir(dir)
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let mut ca = vec![
        "req",
        "-x509",
        "-days",
        "2",
        "-subj",
        "/CN=switchboard test CA",
    ];
    ca.extend_from_slice(&ec);
    ca.extend_from_slice(&["-keyout", "ca.key", "-out", "ca.pem"]);
    openssl(&ca);
    for (name, ext) in [
        (
            "server",
            "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth",
        ),
        ("client", "extendedKeyUsage=clientAuth"),
    ] {
        let mut req = vec!["req", "-new", "-subj"];
        let subject = format!("/CN={name}");
        req.push(&subject);
        req.extend_from_slice(&ec);
        let (key, csr) = (format!("{name}.key"), format!("{name}.csr"));
        req.extend_from_slice(&["-keyout", &key, "-out", &csr]);
        openssl(&req);
        std::fs::write(dir.join(format!("{name}.ext")), ext).unwrap();
        let (pem, extfile) = (format!("{name}.pem"), format!("{name}.ext"));
        openssl(&[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            &extfile,
            "-out",
            &pem,
        ]);
    }
    Some(TlsFiles {
        ca: dir.join("ca.pem"),
        cert: dir.join("server.pem"),
        key: dir.join("server.key"),
        client_cert: dir.join("client.pem"),
        client_key: dir.join("client.key"),
    })
}

/// The proportional set size, in bytes, of `pid` and every process under it.
pub fn pss(pid: u32) -> usize {
    let mut total = 0;
    let mut pids = vec![pid];
    while let Some(pid) = pids.pop() {
        let Ok(rollup) = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")) else {
            continue; // gone meanwhile
        };
        let kib: usize = rollup
            .lines()
            .find_map(|l| l.strip_prefix("Pss:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0);
        total += kib * 1024;
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
            continue;
        };
        for task in tasks.flatten() {
            let children =
                std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
            pids.extend(
                children
                    .split_whitespace()
                    .filter_map(|c| c.parse::<u32>().ok()),
            );
        }
    }
    total
}
