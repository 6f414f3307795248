//! The command line as a user meets it: real processes, their output and exit status.

mod common;

use common::*;
use std::io::Write;
use std::process::{Command, Output, Stdio};

fn switchboard(args: &[&str]) -> Output {
    Command::new(bin())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run switchboard")
}

fn switchboard_with_input(args: &[&str], input: &[u8]) -> Output {
    let mut child = Command::new(bin())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    child.wait_with_output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn help_explains_every_subcommand() {
    let out = switchboard(&["--help"]);
    assert!(out.status.success());
    let help = text(&out.stdout);
    for word in [
        "serve",
        "connect",
        "send",
        "sessions",
        "stats",
        "models",
        "tcp://HOST:PORT",
        "Exit status",
    ] {
        assert!(help.contains(word), "--help lacks {word}:\n{help}");
    }
    let serve = text(&switchboard(&["serve", "--help"]).stdout);
    for word in [
        "--model",
        "--frame",
        "--max-frame",
        "--backlog",
        "--drain",
        "iterative",
        "threads",
    ] {
        assert!(serve.contains(word), "serve --help lacks {word}:\n{serve}");
    }
}

#[test]
fn models_lists_every_model() {
    let out = switchboard(&["models"]);
    assert!(out.status.success());
    let list = text(&out.stdout);
    assert!(
        list.contains("iterative") && list.contains("threads"),
        "{list}"
    );
}

#[test]
fn a_bad_address_is_usage_error_naming_the_accepted_forms() {
    for bad in [
        "localhost:8079",
        "tcp://127.0.0.1",
        "ftp://x:1",
        "tcp://127.0.0.1:70000",
    ] {
        let out = switchboard(&["serve", bad]);
        assert_eq!(out.status.code(), Some(2), "{bad}");
        let err = text(&out.stderr);
        assert!(
            err.contains("tcp://HOST:PORT") && err.contains("unix:///PATH"),
            "{err}"
        );
    }
    let out = switchboard(&["send", "nowhere", "hi"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn bad_options_are_usage_errors() {
    for args in [
        &["serve", "--model", "nosuch"][..],
        &["serve", "--frame", "xml"],
        &["serve", "--max-frame", "0"],
        &["serve", "--max-frame", "12 parsecs"],
        &["serve", "--drain", "-1"],
        &["connect", "--timeout", "soon"],
        &["serve", "tcp://[::1:0"],
        &["serve", "tcp://127.0.0.1:0", "--allow-uid", "0"],
        &["serve", "udp://127.0.0.1:0", "--allow-uid", "0"],
        &["serve", "tcp://127.0.0.1:0", "--frame", "len", "--max-frame", "8GiB"],
        &[
            "serve",
            "unix:///tmp/a-unix-socket-path-that-is-far-too-long-for-a-sockaddr_un-to-hold-in-its-one-hundred-and-eight-bytes.sock",
        ],
    ] {
        let out = switchboard(args);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}",
            text(&out.stderr)
        );
    }
}

#[test]
fn a_proxy_protocol_that_believes_nobody_or_anybody_by_mistake_does_not_start() {
    let sock = std::env::temp_dir().join(format!("sb-proxy-{}.sock", std::process::id()));
    let unix = format!("unix://{}", sock.display());
    for (args, says) in [
        (
            &["serve", "tcp://127.0.0.1:0", "--proxy-protocol"][..],
            "--proxy-from 10.0.0.5",
        ),
        (&["serve", &unix, "--proxy-protocol"], "--proxy-from uid:0"),
        (
            &[
                "serve",
                &unix,
                "--proxy-protocol",
                "--proxy-from",
                "127.0.0.1",
            ],
            "uid:N",
        ),
        (
            &[
                "serve",
                "tcp://127.0.0.1:0",
                "--proxy-protocol",
                "--proxy-from",
                "uid:0",
            ],
            "address or network",
        ),
        (
            &["serve", "tcp://127.0.0.1:0", "--proxy-from", "127.0.0.1"],
            "needs --proxy-protocol",
        ),
        (
            &[
                "serve",
                "tcp://127.0.0.1:0",
                "--proxy-protocol",
                "--proxy-from",
                "lb.example",
            ],
            "uid:N",
        ),
    ] {
        let out = switchboard(args);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(says), "{args:?}: {err}");
    }
    assert!(!sock.exists(), "refused before binding");
}

#[test]
fn silent_clients_do_not_hold_up_a_scrape_and_only_allowed_peers_are_answered() {
    let mut s = ServerProcess::tcp(
        "epoll",
        &[
            "--no-store",
            "--metrics",
            "tcp://127.0.0.1:0",
            "--metrics-allow",
            "127.0.0.1",
        ],
    );
    let url = s
        .next_line()
        .strip_prefix("metrics on ")
        .unwrap()
        .to_string();
    let host = url
        .trim_start_matches("http://")
        .trim_end_matches("/metrics")
        .to_string();
    // 150 connections that send nothing: each used to hold the endpoint for 2 s in turn, so
    // a scrape behind them waited 5 minutes.
    let silent: Vec<std::net::TcpStream> = (0..150)
        .map(|_| std::net::TcpStream::connect(&host).unwrap())
        .collect();
    let body = scrape(&url); // waits at most the patience
    assert!(body.contains("switchboard_connections_open"), "{body}");
    assert!(
        body.contains("# TYPE process_cpu_seconds_total counter"),
        "the server's own CPU time: {body}"
    );
    // A silent connection is closed by the endpoint, not kept.
    let mut first = &silent[0];
    first.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut buf = [0u8; 64];
    assert_eq!(std::io::Read::read(&mut first, &mut buf).unwrap_or(0), 0);
    // A peer outside --metrics-allow: closed unread, nothing answered.
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    let from: std::net::SocketAddr = "127.0.0.2:0".parse().unwrap();
    socket.bind(&from.into()).unwrap();
    let to: std::net::SocketAddr = host.parse().unwrap();
    socket.connect(&to.into()).unwrap();
    let mut other: std::net::TcpStream = socket.into();
    other.set_read_timeout(Some(PATIENCE)).unwrap();
    let _ = other.write_all(b"GET /metrics HTTP/1.1\r\nHost: test\r\n\r\n");
    let mut response = Vec::new();
    let _ = std::io::Read::read_to_end(&mut other, &mut response);
    assert!(response.is_empty(), "{}", text(&response));
}

#[test]
fn a_reader_that_stops_reading_ends_the_command_quietly() {
    // As `switchboard models | head` does: the pipe's reading end is gone.
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = Command::new(bin())
        .arg("models")
        .stdout(writer)
        .stderr(std::process::Stdio::piped())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(out.stderr.is_empty(), "{}", text(&out.stderr));
}

#[test]
fn messages_on_a_store_without_any_says_how_to_record_them() {
    let dir = scratch("no-messages");
    let s = ServerProcess::start_in(&dir, "tcp://127.0.0.1:0", &[]); // sessions only
    let (status, _) = s.terminate();
    assert!(status.success());
    let store = format!("sqlite://{}/switchboard.db", dir.display());
    let out = switchboard(&["messages", "--store", &store]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("--record messages"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn a_taken_port_is_a_runtime_error() {
    let s = ServerProcess::tcp("threads", &[]);
    let out = switchboard(&["serve", &s.addr]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("already in use"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn send_prints_the_reply() {
    let s = ServerProcess::tcp("threads", &[]);
    let out = switchboard(&["send", &s.addr, "hello", "world"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "HELLO WORLD\n");

    for frame in ["line", "len"] {
        let s = ServerProcess::tcp("threads", &["--frame", frame]);
        let out = switchboard(&["send", &s.addr, "--frame", frame, "framed"]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        assert_eq!(text(&out.stdout), "FRAMED\n", "{frame}");
    }
}

#[test]
fn a_server_that_is_gone_is_a_clear_error() {
    let addr = {
        let s = ServerProcess::tcp("threads", &[]);
        s.addr.clone()
    }; // the server was killed: its port now refuses
    for args in [vec!["send", &addr, "hi"], vec!["connect", &addr]] {
        let out = switchboard(&args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let err = text(&out.stderr);
        assert!(
            err.contains("cannot connect to") && err.contains("refused"),
            "{err}"
        );
    }
}

#[test]
fn connect_reads_lines_from_a_pipe() {
    for frame in ["raw", "line", "len"] {
        let s = ServerProcess::tcp("threads", &["--frame", frame]);
        let out = switchboard_with_input(
            &["connect", &s.addr, "--frame", frame],
            b"hello\n\nw\xc3\xb6rld\r\nlast",
        );
        assert!(out.status.success(), "{frame}: {}", text(&out.stderr));
        assert_eq!(text(&out.stdout), "HELLO\nWöRLD\nLAST\n", "{frame}");
    }
}

#[test]
fn connect_is_the_seeds_prompt_on_a_terminal() {
    // A real pseudo-terminal, from Python's pty module, answers the prompt like a person.
    if Command::new("python3").arg("--version").output().is_err() {
        eprintln!("python3 not found: skipping the terminal check");
        return;
    }
    let s = ServerProcess::tcp("threads", &[]);
    let script = r#"
import os, pty, sys, time, select
pid, fd = pty.fork()
if pid == 0:
    os.execv(sys.argv[1], [sys.argv[1], "connect", sys.argv[2]])
seen = b""
def until(token, count=1, limit=20):
    global seen
    end = time.time() + limit
    while seen.count(token) < count and time.time() < end:
        r, _, _ = select.select([fd], [], [], 0.2)
        if r:
            try:
                seen += os.read(fd, 4096)
            except OSError:
                break
    return seen.count(token) >= count
# Like a person, type only once the prompt is shown: the terminal drops what came before.
ok = until(b">>: ", 1)
os.write(fd, b"hello tty\r")
ok = ok and until(b"HELLO TTY") and until(b">>: ", 2)
os.write(fd, b"   \r")
ok = ok and until(b">>: ", 3)
os.write(fd, b"again\r")
ok = ok and until(b"AGAIN") and until(b">>: ", 4)
os.write(fd, b"\x04")
_, status = os.waitpid(pid, 0)
sys.stdout.write(seen.decode("utf-8", "replace"))
sys.exit(0 if ok and os.WEXITSTATUS(status) == 0 else 1)
"#;
    let out = Command::new("python3")
        .args(["-c", script, bin(), &s.addr])
        .output()
        .unwrap();
    let screen = text(&out.stdout);
    assert!(out.status.success(), "{screen}\n{}", text(&out.stderr));
    assert!(screen.contains(">>: "), "{screen}");
    assert!(
        screen.contains("hello tty") && screen.contains("AGAIN"),
        "{screen}"
    );
    assert_eq!(
        screen.matches("HELLO TTY").count(),
        1,
        "the blank line is not sent: {screen}"
    );
}

#[test]
fn sigint_stops_like_sigterm() {
    let s = ServerProcess::tcp("threads", &[]);
    s.signal(libc::SIGINT);
    let mut s = s;
    let (status, summary) = s.wait_exit();
    assert!(status.success());
    assert!(summary.contains("served 0 connections"), "{summary}");
}

#[test]
fn a_second_signal_cuts_the_drain_short() {
    let s = ServerProcess::tcp("threads", &["--drain", "600"]);
    let mut open = s.connect();
    open.write_all(b"hi").unwrap();
    assert_eq!(read_n(&mut open, 2), b"HI"); // accepted and served: the drain must wait for it
    s.signal(libc::SIGTERM);
    s.wait_log("draining");
    s.signal(libc::SIGTERM);
    let mut s = s;
    let (status, _) = s.wait_exit(); // well before the 600 s drain
    assert!(status.success());
    assert!(
        s.log().contains("closing open connections now"),
        "{}",
        s.log()
    );
}

#[test]
fn the_pid_file_is_written_while_serving_and_removed_at_a_clean_exit() {
    let dir = scratch("pid-file");
    let pid_file = dir.join("sb.pid");
    let path = pid_file.display().to_string();
    let s = ServerProcess::tcp("epoll", &["--no-store", "--pid-file", &path]);
    let written = std::fs::read_to_string(&pid_file).expect("written once listening");
    assert_eq!(written.trim(), s.child.id().to_string());
    let (status, _) = s.terminate();
    assert!(status.success());
    assert!(!pid_file.exists(), "removed at a clean exit");
    // A link planted at the path is replaced, never followed: the file it names is untouched.
    let victim = dir.join("victim");
    std::fs::write(&victim, "precious\n").unwrap();
    std::os::unix::fs::symlink(&victim, &pid_file).unwrap();
    let s = ServerProcess::tcp("epoll", &["--no-store", "--pid-file", &path]);
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious\n");
    assert!(!std::fs::symlink_metadata(&pid_file)
        .unwrap()
        .file_type()
        .is_symlink());
    assert_eq!(
        std::fs::read_to_string(&pid_file).unwrap().trim(),
        s.child.id().to_string()
    );
    let (status, _) = s.terminate();
    assert!(status.success());
    let out = switchboard(&[
        "serve",
        "tcp://127.0.0.1:0",
        "--no-store",
        "--pid-file",
        "/nonexistent/dir/sb.pid",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("cannot write the pid file /nonexistent/dir/sb.pid"));
}

#[test]
fn metrics_take_a_tcp_address_and_serve_only_get_metrics() {
    let out = switchboard(&["serve", "--metrics", "unix:///tmp/m.sock"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("tcp://HOST:PORT"),
        "{}",
        text(&out.stderr)
    );
    let mut s = ServerProcess::tcp("threads", &["--no-store", "--metrics", "tcp://127.0.0.1:0"]);
    let url = s
        .next_line()
        .strip_prefix("metrics on ")
        .unwrap()
        .to_string();
    let body = scrape(&url);
    assert_eq!(sample(&body, "switchboard_connections_open"), 0.0);
    assert!(
        !body.contains("switchboard_store_"),
        "no store, no store metrics"
    );
    let host = url
        .trim_start_matches("http://")
        .trim_end_matches("/metrics");
    let mut c = std::net::TcpStream::connect(host).unwrap();
    c.write_all(b"GET / HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut response = String::new();
    std::io::Read::read_to_string(&mut c, &mut response).unwrap();
    assert!(response.starts_with("HTTP/1.1 404"), "{response}");
}
