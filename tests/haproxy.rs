//! Behind a real load balancer: Debian's HAProxy, started here with a config of its own, passes
//! connections to `switchboard serve --proxy-protocol --proxy-from HAPROXY` with `send-proxy-v2`
//! (health checks on), under every stream model over TCP and Unix sockets, and the client's own
//! address, not HAProxy's, is what switchboard logs, records and judges; a header forged by a
//! client beside HAProxy is not believed.
//! Without HAProxy the test says so and passes, unless `SWITCHBOARD_REQUIRE_HAPROXY` is set (as
//! `scripts/test.sh` sets it where HAProxy is).

mod common;

use common::*;
use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::process::{Child, Command, Stdio};

/// HAProxy in the foreground with `config`, stopped (by its PID) when dropped.
struct Haproxy(Child);

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn haproxy() -> Option<&'static str> {
    let bin = "haproxy";
    if Command::new(bin).arg("-v").output().is_ok() {
        return Some(bin);
    }
    assert!(
        std::env::var_os("SWITCHBOARD_REQUIRE_HAPROXY").is_none(),
        "haproxy is missing, and the test script requires it"
    );
    eprintln!("haproxy is missing: skipping");
    None
}

/// A loopback port free a moment ago, for HAProxy's frontend.
/// HAProxy with `config`, given `frontend` as its descriptor 3 (the config binds `fd@3`): the
/// socket is bound here, so no free port is raced for (a port another test's HAProxy could take
/// between a probe and HAProxy's own bind), and clients queue in its backlog until HAProxy
/// takes them, so nothing polls for it to listen.
fn start_haproxy(
    bin: &str,
    config: &std::path::Path,
    frontend: &TcpListener,
    log: std::fs::File,
) -> Haproxy {
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;
    let fd = frontend.as_raw_fd();
    let mut command = Command::new(bin);
    command
        .args(["-db", "-f"])
        .arg(config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log);
    // In the child, before exec: descriptor 3 is the frontend, and survives the exec.
    unsafe {
        command.pre_exec(move || {
            let kept = if fd == 3 {
                libc::fcntl(3, libc::F_SETFD, 0)
            } else {
                libc::dup2(fd, 3)
            };
            if kept < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    Haproxy(command.spawn().expect("start haproxy"))
}

/// The stream models, each behind HAProxy over TCP and over a Unix socket.
const MODELS: [&str; 12] = [
    "iterative",
    "threads",
    "pool",
    "fork",
    "prefork",
    "nonblocking",
    "select",
    "poll",
    "epoll",
    "sigio",
    "async",
    "uring",
];

/// HAProxy's own address towards the servers (`source` in its config): the one proxy trusted.
const HAPROXY_SOURCE: &str = "127.0.0.5";

/// HAProxy in front of a `switchboard serve --proxy-protocol` of `model` over `transport`,
/// trusting HAProxy alone: clients through it are seen by their own address (and judged by
/// it), while a client that connects straight to the server with a forged header is refused.
fn behind_haproxy(model: &str, transport: &str) {
    let Some(bin) = haproxy() else {
        return;
    };
    let uid = {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata("/proc/self").unwrap().uid()
    };
    let trusted = if transport == "unix" {
        format!("uid:{uid}")
    } else {
        HAPROXY_SOURCE.to_string()
    };
    let s = ServerProcess::stream(
        model,
        transport,
        &[
            "--frame",
            "line",
            "--proxy-protocol",
            "--proxy-from",
            &trusted,
            "--deny",
            "127.0.0.24",
        ],
    );
    let target = match s.unix_path() {
        Some(path) => format!("unix@{}", path.display()),
        None => format!("{} source {HAPROXY_SOURCE}", s.sockaddr()),
    };
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let config = s.dir.join("haproxy.cfg");
    std::fs::write(
        &config,
        format!(
            "defaults\n  mode tcp\n  timeout connect 2s\n  timeout client 30s\n  timeout server 30s\n\
             frontend clients\n  bind fd@3\n  default_backend switchboards\n\
             backend switchboards\n  server sb1 {target} send-proxy-v2 check inter 200ms\n"
        ),
    )
    .unwrap();
    let haproxy_log = s.dir.join("haproxy.log");
    let _haproxy = start_haproxy(
        bin,
        &config,
        &listener,
        std::fs::File::create(&haproxy_log).unwrap(),
    );
    let frontend: SocketAddr = listener.local_addr().unwrap();

    // Served through HAProxy, from a loopback address of the client's own.
    let mut c = connect_from("127.0.0.23", &frontend.to_string());
    c.write_all(b"through the balancer\n").unwrap();
    let mut reply = String::new();
    if let Err(e) = std::io::BufRead::read_line(&mut std::io::BufReader::new(&mut c), &mut reply) {
        panic!(
            "{model} over {transport} through HAProxy: {e}\nserver's log:\n{}\nHAProxy's log:\n{}",
            s.log(),
            std::fs::read_to_string(&haproxy_log).unwrap_or_default()
        );
    }
    assert_eq!(reply, "THROUGH THE BALANCER\n", "{model} over {transport}");
    drop(c);
    // The access lists judge the client the header names: this one is denied.
    let mut c = connect_from("127.0.0.24", &frontend.to_string());
    let _ = c.write_all(b"denied\n");
    assert!(closed_by_peer(&mut c));
    s.wait_log("denied by the access lists");
    // A client beside the balancer forges a header naming an address the lists admit: over
    // TCP it is not the balancer's address, so it is refused unread. (Over a Unix socket this
    // test runs as the balancer's user; the conformance suite forges from another user.)
    if transport == "tcp" {
        let server: SocketAddr = s.sockaddr().parse().unwrap();
        let mut forger = connect_from("127.0.0.23", &server.to_string());
        let _ = forger.write_all(b"PROXY TCP4 127.0.0.25 127.0.0.1 4000 8079\r\nforged\n");
        assert!(closed_by_peer(&mut forger), "a forged header was believed");
        s.wait_log("not a trusted proxy");
    }

    let dir = s.dir.clone();
    let log = s.log();
    let (status, summary) = s.terminate();
    assert!(status.success(), "{status:?}");
    // At least one: HAProxy may retry a connection the server closed before it sent a byte.
    assert!(summary.contains(" connections denied"), "{summary}");
    if transport == "tcp" {
        assert!(
            summary.contains("1 connections from untrusted proxies refused"),
            "{summary}"
        );
    }
    assert!(
        !log.contains("bad PROXY header"),
        "HAProxy's health checks speak the PROXY protocol too:\n{log}"
    );
    let sessions = ask_store(&dir, &["sessions", "--json"]);
    assert!(
        sessions.contains("\"peer\":\"tcp://127.0.0.23:"),
        "the client's own address is recorded: {sessions}"
    );
    assert!(
        sessions.contains("\"peer\":\"tcp://127.0.0.24:") && sessions.contains("\"denied\""),
        "the denied client too: {sessions}"
    );
}

#[test]
fn behind_haproxy_every_model_sees_the_clients_own_address_over_tcp() {
    for model in MODELS {
        behind_haproxy(model, "tcp");
    }
}

#[test]
fn behind_haproxy_every_model_sees_the_clients_own_address_over_unix() {
    for model in MODELS {
        behind_haproxy(model, "unix");
    }
}
