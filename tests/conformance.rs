//! The conformance suite: every check is written once, as a function of the model, and run
//! against a real `switchboard serve` process for each model in the table at the bottom.

mod common;

use common::*;
use std::io::Write;
use std::process::Command;
use std::thread;
use std::time::Duration;

/// A model under test, and what it promises.
#[derive(Clone, Copy)]
pub struct Spec {
    name: &'static str,
    /// Serves many clients at once (all but `iterative`).
    concurrent: bool,
    /// Serves at most a fixed number at once (`pool`'s threads, `fork`'s children); the rest
    /// wait in the backlog until one leaves.
    bounded: bool,
    /// `tcp` or `unix`: every check runs over both.
    transport: &'static str,
    /// Options of the model's own (`--uring ...`), given to every server of the check.
    options: &'static [&'static str],
}

/// A server of the model under test, over its transport.
fn serve(m: Spec, args: &[&str]) -> ServerProcess {
    ServerProcess::stream(m.name, m.transport, &[m.options, args].concat())
}

fn replies_in_every_framing(m: Spec) {
    let s = serve(m, &["--frame", "raw"]);
    let mut c = s.connect();
    c.write_all(b"hello world").unwrap();
    assert_eq!(read_n(&mut c, 11), b"HELLO WORLD");

    let s = serve(m, &["--frame", "line"]);
    let mut c = s.connect();
    c.write_all(b"hello\n").unwrap();
    assert_eq!(recv_line(&mut c), b"HELLO");

    let s = serve(m, &["--frame", "len", "--service", "echo"]);
    let mut c = s.connect();
    send_len(&mut c, b"Hello");
    assert_eq!(recv_len(&mut c), b"Hello");
}

fn the_seeds_python_client_gets_upper_case(m: Spec) {
    if Command::new("python3").arg("--version").output().is_err() {
        eprintln!("python3 not found: skipping the seed client check");
        return;
    }
    let s = serve(m, &[]);
    // The plan's client, as it wrote it; only the address differs (and the family, over Unix).
    let (family, address) = match s.unix_path() {
        Some(path) => ("AF_UNIX", format!("{:?}", path.display().to_string())),
        None => {
            let (host, port) = s.sockaddr().rsplit_once(':').unwrap();
            ("AF_INET", format!("(\"{host}\",{port})"))
        }
    };
    let script = format!(
        r#"
import socket
phone=socket.socket(socket.{family},socket.SOCK_STREAM)
phone.connect({address})
phone.send("hello world".encode("utf_8"))
data=phone.recv(1024)
print(data.decode("utf-8"))
phone.close()
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

fn two_hundred_messages_on_one_connection(m: Spec) {
    let s = serve(m, &["--frame", "line"]);
    let mut c = s.connect();
    for i in 0..200 {
        c.write_all(format!("message {i}\n").as_bytes()).unwrap();
        assert_eq!(recv_line(&mut c), format!("MESSAGE {i}").as_bytes());
    }
}

fn a_hundred_clients(m: Spec) {
    let s = serve(m, &["--frame", "len"]);
    let talk = |mut c: TestConn, id: usize| {
        for j in 0..10 {
            let msg = format!("client {id} message {j}");
            send_len(&mut c, msg.as_bytes());
            assert_eq!(recv_len(&mut c), upper(msg.as_bytes()));
        }
    };
    if m.concurrent {
        // All hundred are connected before any is served: they are served at once.
        let conns: Vec<TestConn> = (0..100).map(|_| s.connect()).collect();
        let threads: Vec<_> = conns
            .into_iter()
            .enumerate()
            .map(|(id, c)| thread::spawn(move || talk(c, id)))
            .collect();
        for t in threads {
            t.join().unwrap();
        }
    } else {
        for id in 0..100 {
            talk(s.connect(), id);
        }
    }
    let (status, summary) = s.terminate();
    assert!(status.success());
    assert!(
        summary.contains("served 100 connections (0 errors), 1000 messages"),
        "{summary}"
    );
}

fn a_4_mib_message_sent_while_reading(m: Spec) {
    let big: Vec<u8> = (0..4 << 20).map(|i| b'a' + (i % 26) as u8).collect();
    for framing in ["raw", "len"] {
        let s = serve(m, &["--frame", framing]);
        let mut c = s.connect();
        let mut writer = c.try_clone();
        let body = big.clone();
        let sender = thread::spawn(move || {
            if framing == "len" {
                send_len(&mut writer, &body);
            } else {
                writer.write_all(&body).unwrap();
            }
        });
        let reply = if framing == "len" {
            recv_len(&mut c)
        } else {
            read_n(&mut c, big.len())
        };
        sender.join().unwrap();
        assert!(reply == upper(&big), "{framing}: the 4 MiB reply differs");
    }
}

fn binary_nul_and_utf8_pass_through(m: Spec) {
    let mut body: Vec<u8> = (0..=255).collect();
    body.extend_from_slice("héllo wörld ✓ 你好\0\u{7f}".as_bytes());
    body.extend_from_slice(b"\xff\xfe invalid utf-8 \xc3");
    let s = serve(m, &["--frame", "len"]);
    let mut c = s.connect();
    send_len(&mut c, &body);
    assert_eq!(recv_len(&mut c), upper(&body));

    let s = serve(m, &["--frame", "raw"]);
    let mut c = s.connect();
    c.write_all(&body).unwrap();
    assert_eq!(read_n(&mut c, body.len()), upper(&body));
}

fn half_close_still_gets_every_reply(m: Spec) {
    let s = serve(m, &["--frame", "line"]);
    let mut c = s.connect();
    c.write_all(b"one\ntwo\nthree").unwrap(); // the last line has no \n: end of stream ends it
    c.shut_write();
    assert_eq!(read_to_end(&mut c), b"ONE\nTWO\nTHREE\n");
}

fn a_reset_mid_message_costs_only_that_connection(m: Spec) {
    let s = serve(m, &["--frame", "len"]);
    let mut bystander = if m.concurrent {
        Some(s.connect())
    } else {
        None
    };
    let mut c = s.connect();
    c.write_all(&100u32.to_be_bytes()).unwrap();
    c.write_all(b"only ten..").unwrap();
    c.abort();
    // TCP: a reset; a Unix socket has none, and its close ends the stream inside the frame.
    s.wait_log(if m.transport == "tcp" {
        "reset by peer"
    } else {
        "stream ended inside a frame"
    });
    if let Some(b) = bystander.as_mut() {
        send_len(b, b"still here");
        assert_eq!(recv_len(b), b"STILL HERE");
    }
    let mut after = s.connect();
    send_len(&mut after, b"next");
    assert_eq!(recv_len(&mut after), b"NEXT");
}

fn silent_clients_hold_only_themselves(m: Spec) {
    let s = serve(m, &["--frame", "raw"]);
    // A client that sends and never reads: the server's replies fill the socket buffers.
    // A write that makes no progress for half a second says they are full (a longer wait
    // proves no more, and this test runs for every model twice).
    let mut flooder = s.connect();
    flooder.set_write_timeout(Some(Duration::from_millis(500)));
    let chunk = vec![b'x'; 1 << 20];
    for _ in 0..64 {
        if flooder.write_all(&chunk).is_err() {
            break; // the buffers are full: the server is blocked writing to it
        }
    }
    let idle = s.connect(); // connects, never sends
    if m.concurrent {
        let mut c = s.connect();
        c.write_all(b"served meanwhile").unwrap();
        assert_eq!(read_n(&mut c, 16), b"SERVED MEANWHILE");
    }
    drop(flooder);
    drop(idle);
    let mut c = s.connect();
    c.write_all(b"served after").unwrap();
    assert_eq!(read_n(&mut c, 12), b"SERVED AFTER");
}

fn a_thousand_clients(m: Spec) {
    raise_fd_limit();
    let s = serve(m, &["--frame", "line"]);
    let n = 1000;
    if !m.concurrent {
        for i in 0..n {
            let mut c = s.connect();
            c.write_all(format!("client {i}\n").as_bytes()).unwrap();
            assert_eq!(recv_line(&mut c), format!("CLIENT {i}").as_bytes());
        }
    } else {
        // All connected at once; the kernel's backlog holds what the server has not accepted.
        let mut conns: Vec<TestConn> = (0..n).map(|_| s.connect()).collect();
        if m.bounded {
            // Served as places free up: each one is answered, then leaves.
            for (i, mut c) in conns.into_iter().enumerate() {
                c.write_all(format!("client {i}\n").as_bytes()).unwrap();
                assert_eq!(recv_line(&mut c), format!("CLIENT {i}").as_bytes());
            }
        } else {
            // Every request is sent before any reply is read: all are served at once.
            for (i, c) in conns.iter_mut().enumerate() {
                c.write_all(format!("client {i}\n").as_bytes()).unwrap();
            }
            for (i, c) in conns.iter_mut().enumerate() {
                assert_eq!(recv_line(c), format!("CLIENT {i}").as_bytes());
            }
        }
    }
    let (status, summary) = s.terminate();
    assert!(status.success());
    assert!(
        summary.contains("served 1000 connections (0 errors), 1000 messages"),
        "{summary}"
    );
}

fn line_frames_split_and_glued(m: Spec) {
    let s = serve(m, &["--frame", "line"]);
    let mut c = s.connect();
    for part in [&b"hel"[..], b"lo\nwor", b"ld\nglued\ntogether\n"] {
        c.write_all(part).unwrap();
        thread::sleep(Duration::from_millis(30)); // lets each part arrive as a read of its own
    }
    for expected in ["HELLO", "WORLD", "GLUED", "TOGETHER"] {
        assert_eq!(recv_line(&mut c), expected.as_bytes());
    }
}

fn oversize_frames_close_only_their_connection(m: Spec) {
    for framing in ["len", "line"] {
        let s = serve(m, &["--frame", framing, "--max-frame", "1KiB"]);
        let mut c = s.connect();
        if framing == "len" {
            c.write_all(&2048u32.to_be_bytes()).unwrap();
            c.write_all(b"some of it").unwrap();
        } else {
            c.write_all(&[b'a'; 2048]).unwrap();
        }
        assert!(
            closed_by_peer(&mut c),
            "{framing}: the server must close an oversize frame"
        );
        s.wait_log("longer than the 1024-byte maximum");
        let mut next = s.connect();
        if framing == "len" {
            send_len(&mut next, b"fits");
            assert_eq!(recv_len(&mut next), b"FITS");
        } else {
            next.write_all(b"fits\n").unwrap();
            assert_eq!(recv_line(&mut next), b"FITS");
        }
        drop(next);
        let (status, summary) = s.terminate();
        assert!(status.success());
        assert!(
            summary.contains("served 2 connections (1 errors)"),
            "{summary}"
        );
    }
}

fn sigterm_drains_and_exits_zero(m: Spec) {
    let s = serve(m, &["--frame", "line", "--drain", "10"]);
    let mut open = s.connect();
    open.write_all(b"before\n").unwrap();
    assert_eq!(recv_line(&mut open), b"BEFORE");
    s.signal(libc::SIGTERM);
    s.wait_log("draining");
    // The open connection is still served during the drain, and its close ends the server.
    open.write_all(b"during\n").unwrap();
    assert_eq!(recv_line(&mut open), b"DURING");
    drop(open);
    let mut s = s;
    let (status, summary) = s.wait_exit();
    assert!(status.success(), "{status:?}");
    assert!(
        summary.contains("served 1 connections (0 errors), 2 messages"),
        "{summary}"
    );
    assert!(!s.log().contains("server shutdown"), "nobody was cut");
    if let Some(path) = s.unix_path() {
        assert!(!path.exists(), "the socket file is removed at shutdown");
    }
}

fn the_drain_cuts_connections_that_outlive_it(m: Spec) {
    let s = serve(m, &["--drain", "0.3"]);
    let mut idle = s.connect();
    idle.write_all(b"hi").unwrap();
    assert_eq!(read_n(&mut idle, 2), b"HI");
    s.signal(libc::SIGTERM);
    let mut s = s;
    let (status, summary) = s.wait_exit();
    assert!(status.success(), "{status:?}");
    assert!(summary.contains("served 1 connections"), "{summary}");
    assert!(s.log().contains("reason=server shutdown"), "{}", s.log());
    assert!(closed_by_peer(&mut idle));
}

fn the_access_lists_refuse_before_reading_and_admit_the_rest(m: Spec) {
    // Refused: every loopback address over TCP, every user but a made-up one over Unix.
    let refuse: &[&str] = match m.transport {
        "tcp" => &["--deny", "127.0.0.0/8", "--deny", "::1"],
        _ => &["--allow-uid", "4242"],
    };
    let s = serve(m, refuse);
    for _ in 0..3 {
        let mut c = s.connect();
        let _ = c.write_all(b"hello"); // may already see the close
        let mut buf = [0u8; 16];
        let got = std::io::Read::read(&mut c, &mut buf);
        assert!(
            matches!(got, Ok(0) | Err(_)),
            "a refused peer got a reply: {got:?}"
        );
    }
    let log = s.wait_log("denied by the access lists");
    assert_eq!(
        log.matches("denied by the access lists").count(),
        1,
        "a flood is logged once per address per interval:\n{log}"
    );
    let dir = s.dir.clone();
    let (status, summary) = s.terminate();
    assert!(status.success());
    assert!(
        summary.contains("served 0 connections") && summary.contains("3 connections denied"),
        "{summary}"
    );
    let stats = ask_store(&dir, &["stats", "--json"]);
    assert!(
        stats.contains("\"denied\":3"),
        "recorded as denied: {stats}"
    );

    // Admitted: an allow list that names the peer.
    // SAFETY: getuid(2) has no preconditions and cannot fail.
    let uid = unsafe { libc::getuid() }.to_string();
    let admit: Vec<&str> = match m.transport {
        "tcp" => vec!["--allow", "10.0.0.0/8", "--allow", "127.0.0.1"],
        _ => vec!["--allow-uid", "4242", "--allow-uid", &uid],
    };
    let s = serve(m, &admit);
    let mut c = s.connect();
    c.write_all(b"hello").unwrap();
    assert_eq!(read_n(&mut c, 5), b"HELLO");
    drop(c);
    let (status, summary) = s.terminate();
    assert!(status.success());
    assert!(
        summary.contains("served 1 connections") && !summary.contains("denied"),
        "{summary}"
    );
}

fn metrics_count_what_was_served(m: Spec) {
    let mut s = serve(m, &["--frame", "line", "--metrics", "tcp://127.0.0.1:0"]);
    let url = s
        .next_line()
        .strip_prefix("metrics on ")
        .expect("the metrics address on stdout")
        .to_string();
    for i in 0..3 {
        let mut c = s.connect();
        for j in 0..2 {
            c.write_all(format!("conn {i} msg {j}\n").as_bytes())
                .unwrap();
            assert_eq!(recv_line(&mut c), format!("CONN {i} MSG {j}").as_bytes());
        }
    }
    // The closes are counted as the server sees them: wait for all three.
    let deadline = std::time::Instant::now() + PATIENCE;
    let body = loop {
        let body = scrape(&url);
        if sample(&body, "switchboard_closes_total{reason=\"eof\"}") == 3.0 {
            break body;
        }
        assert!(std::time::Instant::now() < deadline, "{body}");
        thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(sample(&body, "switchboard_connections_accepted_total"), 3.0);
    assert_eq!(sample(&body, "switchboard_connections_open"), 0.0);
    assert_eq!(sample(&body, "switchboard_messages_total"), 6.0);
    assert_eq!(sample(&body, "switchboard_service_seconds_count"), 6.0);
    assert_eq!(
        sample(&body, "switchboard_connection_duration_seconds_count"),
        3.0
    );
    let bytes: f64 = (0..3)
        .map(|i| {
            (0..2)
                .map(|j| format!("conn {i} msg {j}\n").len() as f64)
                .sum::<f64>()
        })
        .sum();
    assert_eq!(sample(&body, "switchboard_received_bytes_total"), bytes);
    assert_eq!(sample(&body, "switchboard_sent_bytes_total"), bytes);
    assert!(
        body.contains("switchboard_store_written_total"),
        "the store's recorder too"
    );
    promtool_accepts(&body);
    let (status, _) = s.terminate();
    assert!(status.success());
}

fn timeouts_close_idle_slow_and_unread_connections(m: Spec) {
    let s = serve(
        m,
        &[
            "--frame",
            "line",
            "--idle-timeout",
            "400ms",
            "--frame-timeout",
            "400ms",
            "--send-timeout",
            "400ms",
        ],
    );
    // Idle: answered, then nothing either way.
    let mut idle = s.connect();
    idle.write_all(b"hi\n").unwrap();
    assert_eq!(recv_line(&mut idle), b"HI");
    assert!(closed_by_peer(&mut idle));
    s.wait_log("reason=idle timeout");

    // Slowloris: a frame begun, never finished, while bytes keep coming (so it is not idle).
    let mut slow = s.connect();
    let mut closed = false;
    for _ in 0..50 {
        if slow.write_all(b"x").is_err() {
            closed = true;
            break;
        }
        thread::sleep(Duration::from_millis(100));
    }
    assert!(
        closed || closed_by_peer(&mut slow),
        "the slow frame was cut"
    );
    s.wait_log("reason=frame not finished in time");

    // A client that sends and never reads: once the socket buffers and the session's budget are
    // full, the server's replies wait, then the connection is cut.
    let mut deaf = s.connect();
    deaf.set_write_timeout(Some(Duration::from_secs(2)));
    let line = [b"z".repeat(64 * 1024), b"\n".to_vec()].concat();
    let mut sent = 0usize;
    while sent < 256 << 20 && deaf.write_all(&line).is_ok() {
        sent += line.len();
    }
    assert!(
        sent < 256 << 20,
        "the server kept reading from a peer that does not read"
    );
    s.wait_log("reason=replies not taken in time");

    // The server goes on serving everyone else.
    let mut c = s.connect();
    c.write_all(b"still here\n").unwrap();
    assert_eq!(recv_line(&mut c), b"STILL HERE");
    drop(c);
    let dir = s.dir.clone();
    let (status, summary) = s.terminate();
    assert!(status.success(), "{status:?}");
    assert!(
        summary.contains("(0 errors)"),
        "a timeout is not an error: {summary}"
    );
    let sessions = ask_store(&dir, &["sessions", "--json"]);
    assert_eq!(
        sessions.matches("\"reason\":\"timeout\"").count(),
        3,
        "recorded with reason timeout: {sessions}"
    );
    // One rule for every model: a frame the timeout cut was never a message.
    let slow = sessions
        .lines()
        .find(|l| l.contains("\"id\":2,"))
        .expect("the slow client's session");
    assert!(
        slow.contains("\"msgs_in\":0,") && slow.contains("\"bytes_out\":0,"),
        "the cut frame was counted as a message: {slow}"
    );
}

fn max_conns_leaves_the_rest_in_the_backlog(m: Spec) {
    if !m.concurrent {
        return; // one at a time already
    }
    let s = serve(m, &["--frame", "line", "--max-conns", "2"]);
    let mut held: Vec<_> = (0..2)
        .map(|i| {
            let mut c = s.connect();
            c.write_all(format!("held {i}\n").as_bytes()).unwrap();
            assert_eq!(recv_line(&mut c), format!("HELD {i}").as_bytes());
            c
        })
        .collect();
    // The third connects (the kernel's backlog takes it) but is not served while two are open.
    let mut waiting = s.connect();
    waiting.write_all(b"third\n").unwrap();
    waiting.set_timeouts(Some(Duration::from_millis(500)));
    let mut buf = [0u8; 8];
    let early = std::io::Read::read(&mut waiting, &mut buf);
    assert!(
        matches!(&early, Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut)),
        "served past --max-conns: {early:?}"
    );
    // A place frees: it is served, nothing was dropped.
    drop(held.pop());
    waiting.set_timeouts(Some(PATIENCE));
    assert_eq!(recv_line(&mut waiting), b"THIRD");
    drop((held, waiting));
    let (status, summary) = s.terminate();
    assert!(status.success(), "{status:?}");
    assert!(
        summary.contains("served 3 connections (0 errors), 3 messages"),
        "{summary}"
    );
}

/// `--proxy-from` naming the test itself as the proxy: loopback over TCP, its user over Unix.
fn this_test_as_the_proxy(m: Spec) -> String {
    if m.transport == "unix" {
        use std::os::unix::fs::MetadataExt;
        format!("uid:{}", std::fs::metadata("/proc/self").unwrap().uid())
    } else {
        "127.0.0.1".into()
    }
}

fn max_conns_per_ip_keeps_places_for_everyone_else(m: Spec) {
    if !m.concurrent || m.transport != "tcp" {
        return; // one at a time already; a Unix peer has no address
    }
    let s = serve(
        m,
        &[
            "--frame",
            "line",
            "--max-conns",
            "20",
            "--max-conns-per-ip",
            "2",
        ],
    );
    let talk = |c: &mut TestConn, what: &str| {
        c.write_all(format!("{what}\n").as_bytes()).unwrap();
        assert_eq!(recv_line(c), what.to_uppercase().as_bytes());
    };
    // Two slow clients from one address hold their places (served, so counted open) ...
    let mut held: Vec<TestConn> = (0..2).map(|_| s.connect()).collect();
    for c in &mut held {
        talk(c, "held");
    }
    // ... a third from it is closed unread, while another address is served.
    let mut third = s.connect();
    let _ = third.write_all(b"third\n");
    assert!(
        closed_by_peer(&mut third),
        "a third connection from one address"
    );
    s.wait_log("too many connections from this address");
    let mut other = connect_from("127.0.0.2", s.sockaddr());
    talk(&mut other, "another address");
    // One of the two leaves: the address may connect again.
    drop(held.pop());
    let mut served = false;
    for _ in 0..100 {
        // The server counts the close once it sees it: bounded tries until it has.
        let mut c = s.connect();
        let _ = c.write_all(b"again\n");
        let mut line = Vec::new();
        let _ =
            std::io::BufRead::read_until(&mut std::io::BufReader::new(&mut c), b'\n', &mut line);
        if line == b"AGAIN\n" {
            served = true;
            break;
        }
        thread::sleep(Duration::from_millis(20));
    }
    assert!(served, "a place freed for the address");
    drop((held, other));
    let (status, summary) = s.terminate();
    assert!(status.success(), "{status:?}");
    assert!(
        summary.contains("connections over --max-conns-per-ip refused"),
        "{summary}"
    );
}

/// A server of `m` behind a proxy (`--proxy-protocol --proxy-from PROXY`, line framing), with
/// `lists` (`--allow`, `--deny`) beside.
fn serve_behind(m: Spec, proxy: &str, lists: &[&str]) -> ServerProcess {
    let mut args = vec!["--frame", "line", "--proxy-protocol", "--proxy-from", proxy];
    args.extend_from_slice(lists);
    serve(m, &args)
}

fn behind_a_proxy_the_header_names_the_client(m: Spec) {
    let s = serve_behind(
        m,
        &this_test_as_the_proxy(m),
        &["--deny", "198.51.100.0/24"],
    );
    // v1 from a client the lists admit.
    let mut c = s.connect();
    c.write_all(b"PROXY TCP4 192.0.2.7 127.0.0.1 51000 8079\r\nhello\n")
        .unwrap();
    assert_eq!(recv_line(&mut c), b"HELLO");
    drop(c);
    // v2, binary, from an IPv6 client, the header split over two writes.
    let mut c = s.connect();
    let v2 = proxy_v2("[2001:db8::9]:40000");
    c.write_all(&v2[..10]).unwrap();
    thread::sleep(Duration::from_millis(50));
    c.write_all(&v2[10..]).unwrap();
    c.write_all(b"six\n").unwrap();
    assert_eq!(recv_line(&mut c), b"SIX");
    drop(c);
    // A client the lists deny, named by the header: closed before its request is answered.
    let mut c = s.connect();
    let _ = c.write_all(b"PROXY TCP4 198.51.100.3 127.0.0.1 51000 8079\r\nno\n");
    assert!(closed_by_peer(&mut c));
    // No header: closed, an error, and the server serves on.
    let mut c = s.connect();
    let _ = c.write_all(b"hello\n");
    assert!(closed_by_peer(&mut c));
    s.wait_log("bad PROXY header");
    let mut c = s.connect();
    c.write_all(b"PROXY UNKNOWN\r\nok\n").unwrap();
    assert_eq!(recv_line(&mut c), b"OK");
    drop(c);
    let dir = s.dir.clone();
    let (status, summary) = s.terminate();
    assert!(status.success(), "{status:?}");
    assert!(
        summary.contains("served 4 connections (1 errors)")
            && summary.contains("1 connections denied"),
        "{summary}"
    );
    let sessions = ask_store(&dir, &["sessions", "--json"]);
    for peer in [
        "tcp://192.0.2.7:51000",
        "tcp://[2001:db8::9]:40000",
        "tcp://198.51.100.3:51000",
    ] {
        assert!(sessions.contains(peer), "{peer} recorded: {sessions}");
    }
}

fn only_a_trusted_proxy_is_believed(m: Spec) {
    // The server trusts another proxy than this test (an address or a user it is not).
    let other = if m.transport == "unix" {
        "uid:65533"
    } else {
        "127.0.0.2"
    };
    let s = serve_behind(m, other, &["--allow", "10.0.0.0/8"]);
    // Forged headers from an untrusted peer: a client the lists admit, the proxy speaking for
    // itself (v1 UNKNOWN, v2 LOCAL): each closed unread.
    let mut local = proxy_v2("10.1.2.3:40000");
    local[12] = 0x20; // version 2, LOCAL
    for forged in [
        b"PROXY TCP4 10.1.2.3 127.0.0.1 51000 8079\r\nforged\n".to_vec(),
        b"PROXY UNKNOWN\r\nforged\n".to_vec(),
        local,
    ] {
        let mut c = s.connect();
        let _ = c.write_all(&forged);
        assert!(closed_by_peer(&mut c), "a forged header was answered");
    }
    s.wait_log("not a trusted proxy");
    let dir = s.dir.clone();
    let (status, summary) = s.terminate();
    assert!(status.success(), "{status:?}");
    assert!(
        summary.contains("served 0 connections")
            && summary.contains("3 connections from untrusted proxies refused"),
        "{summary}"
    );
    let sessions = ask_store(&dir, &["sessions", "--json"]);
    assert_eq!(sessions.matches("\"untrusted\"").count(), 3, "{sessions}");

    // A trusted proxy's health check (a header naming no client) is judged by the proxy's
    // own address, which --allow 10.0.0.0/8 refuses over TCP; a client the header names and
    // the lists admit is served.
    let s = serve_behind(m, &this_test_as_the_proxy(m), &["--allow", "10.0.0.0/8"]);
    let mut c = s.connect();
    c.write_all(b"PROXY TCP4 10.1.2.3 127.0.0.1 51000 8079\r\nadmitted\n")
        .unwrap();
    assert_eq!(recv_line(&mut c), b"ADMITTED");
    drop(c);
    let mut c = s.connect();
    let _ = c.write_all(b"PROXY UNKNOWN\r\nown address\n");
    if m.transport == "tcp" {
        assert!(closed_by_peer(&mut c), "127.0.0.1 is not in 10.0.0.0/8");
    } else {
        // A Unix peer has no address for the networks to judge; its user was judged at accept.
        assert_eq!(recv_line(&mut c), b"OWN ADDRESS");
    }
}

fn tls_is_served_to_python_and_openssl(m: Spec) {
    if m.transport != "tcp" {
        return; // tls:// is TLS over TCP
    }
    let dir = scratch("tls");
    let Some(t) = tls_files(&dir) else {
        return;
    };
    let s = serve_tls(&dir, &t, m.name, m.options);
    let port = s.addr.rsplit(':').next().unwrap().to_string();
    let python = |line: &str| {
        let script = format!(
            r#"
import socket, ssl
ctx = ssl.create_default_context(cafile={ca:?})
with ctx.wrap_socket(socket.create_connection(("127.0.0.1", {port})), server_hostname="localhost") as s:
    s.sendall(b"{line}\n")
    reply = b""
    while not reply.endswith(b"\n"):
        chunk = s.recv(100)
        if not chunk:
            break
        reply += chunk
    print(reply.decode(), end="")
"#,
            ca = t.ca.display().to_string()
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
        String::from_utf8(out.stdout).unwrap()
    };
    assert_eq!(python("hello from python"), "HELLO FROM PYTHON\n");

    // openssl s_client, as a person would try a TLS server by hand.
    let mut client = Command::new("openssl")
        .args(["s_client", "-quiet", "-verify_return_error", "-connect"])
        .arg(format!("127.0.0.1:{port}"))
        .arg("-CAfile")
        .arg(&t.ca)
        .args(["-servername", "localhost"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    client
        .stdin
        .as_mut()
        .unwrap()
        .write_all(b"from openssl\n")
        .unwrap();
    let mut reply = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(client.stdout.take().unwrap()),
        &mut reply,
    )
    .unwrap();
    let _ = client.kill();
    let _ = client.wait();
    assert_eq!(reply, "FROM OPENSSL\n");

    // Garbage on the TLS port: that connection is closed, the server serves on.
    let mut garbage = std::net::TcpStream::connect(format!("127.0.0.1:{port}")).unwrap();
    garbage.set_read_timeout(Some(PATIENCE)).unwrap();
    garbage.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
    assert!(closed_by_peer(&mut garbage));
    drop(garbage);
    assert_eq!(python("still served"), "STILL SERVED\n");

    let (status, summary) = s.terminate();
    assert!(status.success(), "{status:?}");
    assert!(
        summary.contains("served 4 connections (1 errors), 3 messages"),
        "{summary}"
    );
}

fn sighup_reloads_without_refusing_anyone(m: Spec) {
    let pid_file = scratch("reload").join("sb.pid");
    let mut s = serve(
        m,
        &[
            "--frame",
            "line",
            "--drain",
            "10",
            "--pid-file",
            pid_file.to_str().unwrap(),
        ],
    );
    let old = s.child.id();
    // Clients open, use and close connections without pause while the reload happens.
    use std::sync::atomic::{AtomicBool, AtomicU32, Ordering::SeqCst};
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let served = std::sync::Arc::new(AtomicU32::new(0));
    let load = {
        let (addr, stop, served) = (s.addr.clone(), stop.clone(), served.clone());
        thread::spawn(move || {
            let mut failed = Vec::new();
            while !stop.load(SeqCst) && served.load(SeqCst) < 20_000 {
                let n = served.load(SeqCst);
                let attempt = dial(&addr).and_then(|mut c| {
                    c.write_all(format!("request {n}\n").as_bytes())?;
                    Ok(recv_line(&mut c))
                });
                match attempt {
                    Ok(reply) if reply == format!("REQUEST {n}").as_bytes() => {
                        served.fetch_add(1, SeqCst);
                    }
                    other => failed.push(format!("{other:?}")),
                }
            }
            failed
        })
    };
    // Waits (bounded) until the load has served `n` more requests.
    let served_more = |n: u32| {
        let (from, deadline) = (served.load(SeqCst), std::time::Instant::now() + PATIENCE);
        while served.load(SeqCst) < from + n {
            assert!(std::time::Instant::now() < deadline, "the load stalled");
            thread::sleep(Duration::from_millis(10));
        }
    };
    served_more(3);
    s.signal(libc::SIGHUP);
    // The new server announces itself on the same stdout and in the pid file.
    assert_eq!(s.next_line(), format!("listening on {}", s.addr));
    let new: i32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_ne!(new as u32, old, "the pid file names the new server");
    // The old one drains and exits cleanly (its summary is on the stdout it shares with the
    // new one, which keeps it open); the load goes on against the new one.
    let status = s.child.wait().unwrap();
    assert!(status.success(), "{status:?}");
    let summary = s.next_line();
    assert!(
        summary.starts_with("served ") && summary.contains("(0 errors)"),
        "{summary}"
    );
    served_more(3);
    stop.store(true, SeqCst);
    let failed = load.join().unwrap();
    let served = served.load(SeqCst);
    assert!(
        failed.is_empty(),
        "refused or lost during the reload: {failed:?}"
    );
    let mut c = dial(&s.addr).unwrap();
    c.write_all(b"after\n").unwrap();
    assert_eq!(recv_line(&mut c), b"AFTER");
    drop(c);
    // SAFETY: kill(2) on the server our server started; it has not been waited for by us.
    assert_eq!(unsafe { libc::kill(new, libc::SIGTERM) }, 0);
    let deadline = std::time::Instant::now() + PATIENCE;
    while std::path::Path::new(&format!("/proc/{new}")).exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "the new server did not stop"
        );
        thread::sleep(Duration::from_millis(20));
    }
    assert!(
        !pid_file.exists(),
        "the new server removes its pid file at exit"
    );
    if let Some(path) = s.unix_path() {
        assert!(!path.exists(), "and its socket file");
    }
    // The store shows the hand-over: two instances, every connection recorded once.
    let stats = ask_store(&s.dir, &["stats"]);
    let all = format!("all 2 instances: {} sessions", served + 1);
    assert!(stats.contains(&all), "{all}: {stats}");
}

/// A PROXY v2 header naming `client` (to 127.0.0.1:8079), as HAProxy's send-proxy-v2 sends.
fn proxy_v2(client: &str) -> Vec<u8> {
    let client: std::net::SocketAddr = client.parse().unwrap();
    let mut h = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    h.push(0x21); // version 2, PROXY
    match client {
        std::net::SocketAddr::V4(a) => {
            h.extend_from_slice(&[0x11, 0, 12]);
            h.extend_from_slice(&a.ip().octets());
            h.extend_from_slice(&[127, 0, 0, 1]);
        }
        std::net::SocketAddr::V6(a) => {
            h.extend_from_slice(&[0x21, 0, 36]);
            h.extend_from_slice(&a.ip().octets());
            h.extend_from_slice(&std::net::Ipv6Addr::LOCALHOST.octets());
        }
    }
    h.extend_from_slice(&client.port().to_be_bytes());
    h.extend_from_slice(&8079u16.to_be_bytes());
    h
}

/// The checks, one test each, for a model over a transport: the one list of them, the checks
/// of the IO itself ([`io_checks`]) and those of what comes before or around it.
macro_rules! checks {
    ($name:literal, $concurrent:expr, $bounded:expr, $transport:literal) => {
        checks!(@spec $name, $concurrent, $bounded, $transport, &[]);
        io_checks!();
        checks!(@each
            the_seeds_python_client_gets_upper_case,
            binary_nul_and_utf8_pass_through,
            sigterm_drains_and_exits_zero,
            max_conns_leaves_the_rest_in_the_backlog,
            max_conns_per_ip_keeps_places_for_everyone_else,
            behind_a_proxy_the_header_names_the_client,
            only_a_trusted_proxy_is_believed,
            sighup_reloads_without_refusing_anyone,
            metrics_count_what_was_served,
            the_access_lists_refuse_before_reading_and_admit_the_rest,
        );
    };
    (@spec $name:literal, $concurrent:expr, $bounded:expr, $transport:literal, $options:expr) => {
        const M: super::super::Spec = super::super::Spec {
            name: $name,
            concurrent: $concurrent,
            bounded: $bounded,
            transport: $transport,
            options: $options,
        };
    };
    (@each $($check:ident,)*) => {$(
        #[test]
        fn $check() {
            super::super::$check(M)
        }
    )*};
}

/// The checks of the IO itself: reading, writing, framing, closing, timing out.
macro_rules! io_checks {
    () => {
        checks!(@each
            replies_in_every_framing,
            two_hundred_messages_on_one_connection,
            a_hundred_clients,
            a_4_mib_message_sent_while_reading,
            half_close_still_gets_every_reply,
            a_reset_mid_message_costs_only_that_connection,
            silent_clients_hold_only_themselves,
            a_thousand_clients,
            line_frames_split_and_glued,
            oversize_frames_close_only_their_connection,
            the_drain_cuts_connections_that_outlive_it,
            timeouts_close_idle_slow_and_unread_connections,
            tls_is_served_to_python_and_openssl,
        );
    };
}

/// One module per model and transport, one test per check: a new model adds one line here.
macro_rules! conformance {
    ($($module:ident => $name:literal, concurrent: $concurrent:expr, bounded: $bounded:expr),* $(,)?) => {$(
        mod $module {
            mod tcp { checks!($name, $concurrent, $bounded, "tcp"); }
            mod unix { checks!($name, $concurrent, $bounded, "unix"); }
        }
    )*};
}

conformance! {
    iterative => "iterative", concurrent: false, bounded: false,
    threads => "threads", concurrent: true, bounded: false,
    pool => "pool", concurrent: true, bounded: true,
    fork => "fork", concurrent: true, bounded: true,
    prefork => "prefork", concurrent: true, bounded: false,
    nonblocking => "nonblocking", concurrent: true, bounded: false,
    select => "select", concurrent: true, bounded: false,
    poll => "poll", concurrent: true, bounded: false,
    epoll => "epoll", concurrent: true, bounded: false,
    sigio => "sigio", concurrent: true, bounded: false,
    asynchronous => "async", concurrent: true, bounded: false,
    uring => "uring", concurrent: true, bounded: false,
}

/// `uring` with each of its io_uring features off in turn, and with each of those off by
/// default (`sqpoll`, `send-zc`) on: every check of the IO itself holds whatever the model goes without (over TCP; the
/// features do not differ by transport). The checks of what comes before or around the IO
/// (access lists, PROXY headers, metrics, reloads) run once, above, with every feature on.
macro_rules! uring_features {
    ($($module:ident => $features:literal),* $(,)?) => {$(
        mod $module {
            mod tcp {
                checks!(@spec "uring", true, false, "tcp", &["--uring", $features]);
                io_checks!();
            }
        }
    )*};
}

uring_features! {
    uring_without_single_issuer => "single-issuer=off",
    uring_without_defer_taskrun => "defer-taskrun=off",
    uring_without_registered_ring => "registered-ring=off",
    uring_without_fixed_files => "fixed-files=off",
    uring_without_multishot_recv => "multishot-recv=off",
    uring_without_incremental_buffers => "incremental-buffers=off",
    uring_without_batched_sends => "batched-sends=off",
    uring_with_sqpoll => "sqpoll=on",
    uring_with_send_zc => "send-zc=on",
}
