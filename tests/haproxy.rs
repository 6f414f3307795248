//! Behind a real load balancer: Debian's HAProxy, started here with a config of its own, passes
//! connections to `switchboard serve --proxy-protocol` with `send-proxy-v2` (health checks on),
//! and the client's own address, not HAProxy's, is what switchboard logs, records and judges.
//! Without HAProxy the test says so and passes, unless `SWITCHBOARD_REQUIRE_HAPROXY` is set (as
//! `scripts/test.sh` sets it where HAProxy is).

mod common;

use common::*;
use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

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
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A client connected from its own loopback address `source` to `to`.
fn connect_from(source: &str, to: SocketAddr) -> TestConn {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    let source: SocketAddr = format!("{source}:0").parse().unwrap();
    socket.bind(&source.into()).unwrap();
    socket.connect(&to.into()).unwrap();
    let stream: TcpStream = socket.into();
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    stream.set_write_timeout(Some(PATIENCE)).unwrap();
    TestConn::Tcp(stream)
}

#[test]
fn behind_haproxy_the_clients_own_address_is_seen() {
    let Some(bin) = haproxy() else {
        return;
    };
    let s = ServerProcess::start(
        "tcp://127.0.0.1:0",
        &[
            "--model",
            "epoll",
            "--frame",
            "line",
            "--proxy-protocol",
            "--deny",
            "127.0.0.24",
        ],
    );
    let port = free_port();
    let config = s.dir.join("haproxy.cfg");
    std::fs::write(
        &config,
        format!(
            "defaults\n  mode tcp\n  timeout connect 2s\n  timeout client 30s\n  timeout server 30s\n\
             frontend clients\n  bind 127.0.0.1:{port}\n  default_backend switchboards\n\
             backend switchboards\n  server sb1 {} send-proxy-v2 check inter 200ms\n",
            s.sockaddr()
        ),
    )
    .unwrap();
    let _haproxy = Haproxy(
        Command::new(bin)
            .args(["-db", "-f"])
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(s.dir.join("haproxy.log")).unwrap())
            .spawn()
            .expect("start haproxy"),
    );
    let frontend: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let deadline = Instant::now() + PATIENCE;
    while TcpStream::connect(frontend).is_err() {
        assert!(
            Instant::now() < deadline,
            "haproxy did not listen: {}",
            std::fs::read_to_string(s.dir.join("haproxy.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    // Served through HAProxy, from a loopback address of the client's own.
    let mut c = connect_from("127.0.0.23", frontend);
    c.write_all(b"through the balancer\n").unwrap();
    assert_eq!(recv_line(&mut c), b"THROUGH THE BALANCER");
    drop(c);
    // The access lists judge the client the header names: this one is denied.
    let mut c = connect_from("127.0.0.24", frontend);
    let _ = c.write_all(b"denied\n");
    assert!(closed_by_peer(&mut c));
    s.wait_log("denied by the access lists");

    let dir = s.dir.clone();
    let log = s.log();
    let (status, summary) = s.terminate();
    assert!(status.success(), "{status:?}");
    assert!(summary.contains("1 connections denied"), "{summary}");
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
