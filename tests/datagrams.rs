//! Datagram serving, written once and run for every model that serves `udp://` and
//! `unixgram://`: each datagram is one message, answered to its sender.

mod common;

use common::*;
use std::net::UdpSocket;
use std::os::unix::net::UnixDatagram;
use std::process::Command;
use std::thread;
use switchboard::client::Client;
use switchboard::codec::Framing;
use switchboard::Addr;

fn udp_server(model: &str, args: &[&str]) -> ServerProcess {
    let mut all = vec!["--model", model];
    all.extend_from_slice(args);
    ServerProcess::start("udp://127.0.0.1:0", &all)
}

fn udp_client(s: &ServerProcess) -> UdpSocket {
    let c = UdpSocket::bind("127.0.0.1:0").unwrap();
    c.connect(s.addr.strip_prefix("udp://").unwrap()).unwrap();
    c.set_read_timeout(Some(PATIENCE)).unwrap();
    c
}

fn answers_each_datagram(model: &str) {
    let s = udp_server(model, &[]);
    let c = udp_client(&s);
    let mut buf = [0u8; 1024];
    for msg in [&b"hello world"[..], b"second", b"\xff\x00binary"] {
        c.send(msg).unwrap();
        let n = c.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], upper(msg));
    }
    let (status, summary) = s.terminate();
    assert!(status.success());
    assert!(summary.contains("3 messages"), "{summary}");
}

fn the_plans_udp_client_gets_upper_case(model: &str) {
    if Command::new("python3").arg("--version").output().is_err() {
        eprintln!("python3 not found: skipping");
        return;
    }
    let s = udp_server(model, &[]);
    let (host, port) = s
        .addr
        .strip_prefix("udp://")
        .unwrap()
        .rsplit_once(':')
        .unwrap();
    let script = format!(
        r#"
import socket
phone=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)
phone.settimeout(20)
phone.sendto("hello world".encode("utf-8"),("{host}",{port}))
data,addr=phone.recvfrom(1024)
print(data.decode("utf-8"))
"#
    );
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "HELLO WORLD");
}

fn the_largest_ipv4_datagram(model: &str) {
    let s = udp_server(model, &[]);
    let c = udp_client(&s);
    let big: Vec<u8> = (0..65_507).map(|i| b'a' + (i % 26) as u8).collect();
    c.send(&big).unwrap();
    let mut buf = vec![0u8; 70_000];
    let n = c.recv(&mut buf).unwrap();
    assert_eq!(n, 65_507);
    assert!(buf[..n] == upper(&big)[..]);
}

fn many_senders_at_once(model: &str) {
    let s = udp_server(model, &["--frame", "line"]);
    let addr: Addr = s.addr.parse().unwrap();
    let senders: Vec<_> = (0..20)
        .map(|t| {
            let addr = addr.clone();
            thread::spawn(move || {
                let mut c = Client::connect(&addr, Framing::Line).unwrap();
                for i in 0..50 {
                    let msg = format!("sender {t} datagram {i}");
                    assert_eq!(c.request(msg.as_bytes()).unwrap(), upper(msg.as_bytes()));
                }
            })
        })
        .collect();
    for t in senders {
        t.join().unwrap();
    }
    let (status, summary) = s.terminate();
    assert!(status.success());
    assert!(
        summary.contains("served 1000 connections (0 errors), 1000 messages"),
        "{summary}"
    );
}

fn frames_inside_a_datagram(model: &str) {
    let s = udp_server(model, &["--frame", "line"]);
    let c = udp_client(&s);
    c.send(b"one\ntwo\nthree").unwrap();
    let mut buf = [0u8; 1024];
    let n = c.recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"ONE\nTWO\nTHREE\n");
}

fn serves_unixgram(model: &str) {
    let dir = scratch("unixgram");
    let path = dir.join("server.sock");
    let s = ServerProcess::start(
        &format!("unixgram://{}", path.display()),
        &["--model", model],
    );
    let me = dir.join("client.sock");
    let c = UnixDatagram::bind(&me).unwrap();
    c.set_read_timeout(Some(PATIENCE)).unwrap();
    c.send_to(b"over unixgram", &path).unwrap();
    let mut buf = [0u8; 64];
    let (n, _) = c.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"OVER UNIXGRAM");
    let mut client = Client::connect(&s.addr.parse().unwrap(), Framing::Raw).unwrap();
    assert_eq!(client.request(b"via client").unwrap(), b"VIA CLIENT");
    let (status, _) = s.terminate();
    assert!(status.success());
    assert!(!path.exists(), "the socket file is removed at shutdown");
}

fn denied_senders_get_no_answer(model: &str) {
    let s = udp_server(model, &["--deny", "127.0.0.0/8"]);
    let c = udp_client(&s);
    c.set_read_timeout(Some(std::time::Duration::from_millis(300)))
        .unwrap();
    c.send(b"anyone?").unwrap();
    let mut buf = [0u8; 64];
    assert!(c.recv(&mut buf).is_err(), "a denied sender was answered");
    s.wait_log("denied by the access lists");
    let (status, summary) = s.terminate();
    assert!(status.success());
    assert!(summary.contains("1 connections denied"), "{summary}");
}

macro_rules! datagram_models {
    ($($module:ident => $name:literal),* $(,)?) => {$(
        mod $module {
            #[test] fn answers_each_datagram() { super::answers_each_datagram($name) }
            #[test] fn the_plans_udp_client_gets_upper_case() { super::the_plans_udp_client_gets_upper_case($name) }
            #[test] fn the_largest_ipv4_datagram() { super::the_largest_ipv4_datagram($name) }
            #[test] fn many_senders_at_once() { super::many_senders_at_once($name) }
            #[test] fn frames_inside_a_datagram() { super::frames_inside_a_datagram($name) }
            #[test] fn serves_unixgram() { super::serves_unixgram($name) }
            #[test] fn denied_senders_get_no_answer() { super::denied_senders_get_no_answer($name) }
        }
    )*};
}

datagram_models! {
    iterative => "iterative",
    threads => "threads",
    pool => "pool",
    epoll => "epoll",
    sigio => "sigio",
    asynchronous => "async",
    uring => "uring",
}

#[test]
fn stream_only_models_refuse_datagrams_naming_those_that_serve_them() {
    for model in ["fork", "prefork", "nonblocking", "select", "poll"] {
        let out = Command::new(bin())
            .args(["serve", "udp://127.0.0.1:0", "--model", model])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{model}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("models that do: iterative, threads, pool, epoll, sigio, async"),
            "{err}"
        );
    }
}
