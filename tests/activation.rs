//! Socket activation: `systemd-socket-activate` (Debian's systemd) listens, starts `switchboard
//! serve` on the first connection with the socket passed as fd 3, and switchboard serves it:
//! TCP, a Unix socket and UDP. Without the tool these tests say so and pass, unless
//! `SWITCHBOARD_REQUIRE_ACTIVATION` is set (as `scripts/test.sh` sets it where the tool is).

mod common;

use common::*;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpStream, UdpSocket};
use std::os::unix::net::UnixStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn activator() -> Option<&'static str> {
    let tool = "systemd-socket-activate";
    if Command::new(tool).arg("--version").output().is_ok() {
        return Some(tool);
    }
    assert!(
        std::env::var_os("SWITCHBOARD_REQUIRE_ACTIVATION").is_none(),
        "systemd-socket-activate is missing, and the test script requires it"
    );
    eprintln!("systemd-socket-activate is missing: skipping");
    None
}

/// `systemd-socket-activate ARGS... switchboard serve --no-store ...`: it listens at once and
/// starts switchboard on the first connection or datagram.
fn activate(tool: &str, listen: &[&str], dir: &std::path::Path) -> Child {
    Command::new(tool)
        .args(listen)
        .args([
            "-E",
            "RUST_LOG=info",
            bin(),
            "serve",
            "--no-store",
            "--model",
            "epoll",
        ])
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start systemd-socket-activate")
}

/// Retries `f` until it works, within the patience.
fn eventually<T>(mut f: impl FnMut() -> std::io::Result<T>) -> T {
    let deadline = Instant::now() + PATIENCE;
    loop {
        match f() {
            Ok(v) => return v,
            Err(e) => assert!(Instant::now() < deadline, "never ready: {e}"),
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The server's first line, once the first connection has started it.
fn listening_line(child: &mut Child) -> String {
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    line.trim().to_string()
}

/// Stops the server (the activator ran it in its own process) and checks its clean exit.
fn stop(mut child: Child) {
    // SAFETY: kill(2) on our own child's pid, which we have not reaped yet.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
    let deadline = Instant::now() + PATIENCE;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "the server did not stop");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status}");
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn a_passed_tcp_socket_is_served() {
    let Some(tool) = activator() else { return };
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut child = activate(tool, &["-l", &listen], &scratch("activate-tcp"));
    let mut conn = eventually(|| TcpStream::connect(&listen));
    conn.set_read_timeout(Some(PATIENCE)).unwrap();
    assert_eq!(
        listening_line(&mut child),
        format!("listening on tcp://{listen}")
    );
    conn.write_all(b"hello").unwrap();
    assert_eq!(read_n(&mut conn, 5), b"HELLO");
    drop(conn);
    stop(child);
}

#[test]
fn a_passed_unix_socket_is_served_and_left_for_the_system() {
    let Some(tool) = activator() else { return };
    let dir = scratch("activate-unix");
    let path = dir.join("sb.sock");
    let path_text = path.display().to_string();
    let mut child = activate(tool, &["-l", &path_text], &dir);
    let mut conn = eventually(|| UnixStream::connect(&path));
    conn.set_read_timeout(Some(PATIENCE)).unwrap();
    assert_eq!(
        listening_line(&mut child),
        format!("listening on unix://{path_text}")
    );
    conn.write_all(b"unix").unwrap();
    let mut reply = [0u8; 4];
    conn.read_exact(&mut reply).unwrap();
    assert_eq!(&reply, b"UNIX");
    drop(conn);
    stop(child);
    assert!(
        path.exists(),
        "the socket file is the system's: not removed"
    );
}

#[test]
fn a_passed_udp_socket_is_served() {
    let Some(tool) = activator() else { return };
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut child = activate(tool, &["-d", "-l", &listen], &scratch("activate-udp"));
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    client
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    // The first datagram starts the server; resend until one is answered.
    let mut buf = [0u8; 64];
    let n = eventually(|| {
        client.send_to(b"ping", &listen)?;
        client.recv(&mut buf)
    });
    assert_eq!(&buf[..n], b"PING");
    assert_eq!(
        listening_line(&mut child),
        format!("listening on udp://{listen}")
    );
    stop(child);
}
