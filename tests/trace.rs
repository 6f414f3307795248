//! `switchboard trace` against a real `switchboard serve`, capturing real packets on loopback:
//! the handshake, the bytes both ways and the close, over TCP and UDP, IPv4 and IPv6; the
//! pcap file read back by tcpdump; a running server watched; the refusal without
//! CAP_NET_RAW. Capturing needs root (or CAP_NET_RAW): elsewhere these tests say they skip,
//! unless `SWITCHBOARD_REQUIRE_CAPTURE` is set, as the test script sets it where it is root.

mod common;

use common::*;
use serde_json::Value;
use std::process::{Command, Stdio};
use std::time::Duration;

/// True when this process may capture; false (a skip, said) where it may not and the test
/// script does not require it.
fn may_capture() -> bool {
    // SAFETY: geteuid takes nothing and cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    if !root {
        assert!(
            std::env::var_os("SWITCHBOARD_REQUIRE_CAPTURE").is_none(),
            "capturing needs root here, and the test script requires it"
        );
        eprintln!("skipped: capturing packets needs root (CAP_NET_RAW)");
    }
    root
}

/// Runs `switchboard trace ARGS --json`: its exit status, its events, its stderr.
fn trace_json(args: &[&str]) -> (std::process::ExitStatus, Vec<Value>, String) {
    let out = Command::new(bin())
        .arg("trace")
        .args(args)
        .arg("--json")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    let events = serde_json::from_slice::<Vec<Value>>(&out.stdout).unwrap_or_default();
    (out.status, events, stderr)
}

fn packets(events: &[Value]) -> Vec<&Value> {
    events.iter().filter(|e| e["event"] == "packet").collect()
}

fn flags(packet: &Value) -> Vec<String> {
    packet["transport"]["flags"]
        .as_array()
        .map(|a| a.iter().map(|f| f.as_str().unwrap().to_string()).collect())
        .unwrap_or_default()
}

fn payload(packet: &Value) -> Vec<u8> {
    packet["payload"]
        .as_array()
        .map(|a| a.iter().map(|b| b.as_u64().unwrap() as u8).collect())
        .unwrap_or_default()
}

/// `tcpdump -r`'s lines for a pcap file, when tcpdump is installed (required where
/// `SWITCHBOARD_REQUIRE_TCPDUMP` is set, as the test script sets it).
fn tcpdump(path: &std::path::Path) -> Option<Vec<String>> {
    let out = Command::new("tcpdump")
        .args(["-nn", "-r"])
        .arg(path)
        .stderr(Stdio::null())
        .output();
    let Ok(out) = out else {
        assert!(
            std::env::var_os("SWITCHBOARD_REQUIRE_TCPDUMP").is_none(),
            "tcpdump is missing, and the test script requires it"
        );
        return None;
    };
    assert!(
        out.status.success(),
        "tcpdump could not read {}",
        path.display()
    );
    Some(
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(String::from)
            .collect(),
    )
}

#[test]
fn a_tcp_exchange_shows_the_handshake_the_bytes_both_ways_and_the_close() {
    if !may_capture() {
        return;
    }
    for listen in ["tcp://127.0.0.1:0", "tcp://[::1]:0"] {
        let dir = scratch("trace-tcp");
        let s = ServerProcess::start_in(&dir, listen, &["--model", "epoll", "--no-store"]);
        let pcap = dir.join("exchange.pcap");
        let (status, events, stderr) =
            trace_json(&["send", &s.addr, "hello", "--pcap", pcap.to_str().unwrap()]);
        assert!(status.success(), "{stderr}");
        let calls: Vec<&str> = events
            .iter()
            .filter_map(|e| e["call"].as_str())
            .map(|c| c.split('(').next().unwrap())
            .collect();
        assert_eq!(calls, ["connect", "send", "recv", "close"], "{events:?}");
        let ps = packets(&events);
        let first: Vec<Vec<String>> = ps.iter().take(3).map(|p| flags(p)).collect();
        assert_eq!(
            first,
            [vec!["SYN"], vec!["SYN", "ACK"], vec!["ACK"]],
            "the three-way handshake over {listen}"
        );
        assert!(ps[0]["note"]["lesson"].as_str().unwrap().contains("1 of 3"));
        let version = if listen.contains('[') { 6 } else { 4 };
        assert!(ps.iter().all(|p| p["network"]["version"] == version));
        let port = s.addr.rsplit(':').next().unwrap().parse::<u64>().unwrap();
        let sent = ps
            .iter()
            .find(|p| payload(p) == b"hello")
            .expect("the request on the wire");
        assert_eq!(sent["transport"]["destination_port"], port);
        let replied = ps
            .iter()
            .find(|p| payload(p) == b"HELLO")
            .expect("the reply on the wire");
        assert_eq!(replied["transport"]["source_port"], port);
        let fins = ps
            .iter()
            .filter(|p| flags(p).contains(&"FIN".into()))
            .count();
        assert_eq!(fins, 2, "each side closes its direction");
        // The frame of the request: Ethernet, IP, TCP with its options, the 5 bytes.
        let link = sent["link"]["header_len"].as_u64().unwrap();
        let net = sent["network"]["header_len"].as_u64().unwrap();
        let tcp = sent["transport"]["header_len"].as_u64().unwrap();
        assert_eq!(sent["frame_len"].as_u64().unwrap(), link + net + tcp + 5);
        assert_eq!((link, net), (14, if version == 4 { 20 } else { 40 }));
        if let Some(lines) = tcpdump(&pcap) {
            assert_eq!(lines.len(), ps.len(), "{lines:?}");
            assert!(lines[0].contains("Flags [S]"), "{lines:?}");
            assert!(lines[1].contains("Flags [S.]"), "{lines:?}");
            let fins = lines.iter().filter(|l| l.contains("Flags [F.]")).count();
            assert_eq!(fins, 2, "{lines:?}");
        }
    }
}

#[test]
fn a_udp_exchange_is_two_datagrams_without_a_handshake() {
    if !may_capture() {
        return;
    }
    for listen in ["udp://127.0.0.1:0", "udp://[::1]:0"] {
        let s = ServerProcess::start(listen, &["--model", "epoll", "--no-store"]);
        let (status, events, stderr) = trace_json(&["send", &s.addr, "hi"]);
        assert!(status.success(), "{stderr}");
        let ps = packets(&events);
        assert_eq!(ps.len(), 2, "{events:?}");
        assert_eq!(payload(ps[0]), b"hi");
        assert_eq!(payload(ps[1]), b"HI");
        for p in &ps {
            assert_eq!(p["transport"]["kind"], "udp");
            assert_eq!(p["transport"]["length"], 8 + 2);
        }
    }
}

#[test]
fn watch_shows_a_running_servers_traffic() {
    if !may_capture() {
        return;
    }
    let s = ServerProcess::start("tcp://127.0.0.1:0", &["--model", "threads", "--no-store"]);
    let watch = Command::new(bin())
        .args([
            "trace",
            "watch",
            &s.addr,
            "--count",
            "3",
            "--duration",
            "20s",
            "--json",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Connections until the watch has seen three packets (it starts capturing at once, but
    // this cannot know when it has).
    let pid = watch.id() as i32;
    let mut attempts = 0;
    while attempts < 100 && std::fs::metadata(format!("/proc/{pid}")).is_ok() {
        if let Ok(mut c) = std::net::TcpStream::connect(s.sockaddr()) {
            use std::io::Write;
            let _ = c.write_all(b"x");
        }
        std::thread::sleep(Duration::from_millis(100));
        attempts += 1;
        // A finished watch stays a zombie until waited for: look at its state.
        let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        if state.contains(") Z") {
            break;
        }
    }
    let out = watch.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert!(lines.iter().all(|p| p["event"] == "packet"));
}

#[test]
fn without_cap_net_raw_it_says_what_to_do_and_writes_nothing() {
    if !may_capture() {
        return;
    }
    let dir = scratch("trace-cap");
    let s = ServerProcess::start_in(&dir, "tcp://127.0.0.1:0", &["--no-store"]);
    let pcap = dir.join("never.pcap");
    // The capability taken from the bounding set: root without CAP_NET_RAW.
    let out = Command::new("setpriv")
        .args(["--bounding-set", "-net_raw", "--"])
        .arg(bin())
        .args(["trace", "send", &s.addr, "hello", "--pcap"])
        .arg(&pcap)
        .output()
        .expect("setpriv (util-linux)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("CAP_NET_RAW") && stderr.contains("setcap"),
        "{stderr}"
    );
    assert!(!pcap.exists(), "nothing half-done");
}

#[test]
fn an_address_that_never_becomes_packets_is_a_usage_error() {
    let out = Command::new(bin())
        .args(["trace", "send", "unix:///tmp/nowhere.sock", "x"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("tcp:// or udp://"));
}

fn netns_list() -> String {
    let out = Command::new("ip").args(["netns", "list"]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).to_string()
}

#[test]
fn two_hosts_find_each_other_by_arp_and_leave_nothing_behind() {
    if !may_capture() {
        return;
    }
    let before = netns_list();
    let out = Command::new(bin())
        .args(["trace", "hosts", "hello", "--port", "9079", "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let events: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    let ps = packets(&events);
    let arp: Vec<&str> = ps
        .iter()
        .filter(|p| p["network"]["kind"] == "arp")
        .map(|p| p["network"]["operation"].as_str().unwrap())
        .collect();
    assert_eq!(
        arp,
        ["request", "reply"],
        "ARP finds the server's MAC first"
    );
    let request = ps.iter().find(|p| p["network"]["kind"] == "arp").unwrap();
    assert_eq!(
        request["link"]["destination"], "ff:ff:ff:ff:ff:ff",
        "asked of everyone"
    );
    assert_eq!(request["network"]["target_ip"], "10.77.0.1");
    let ip: Vec<&&Value> = ps.iter().filter(|p| p["network"]["kind"] == "ip").collect();
    assert!(ip.iter().all(|p| p["link"]["loopback"] == false));
    assert!(ip.iter().all(|p| p["network"]["ttl"] == 64));
    assert!(ip.iter().any(|p| payload(p) == b"hello"));
    assert!(ip.iter().any(|p| payload(p) == b"HELLO"));
    assert_eq!(netns_list(), before, "the two hosts are gone");
}

#[test]
fn connect_traces_the_plans_client_talking() {
    if !may_capture() {
        return;
    }
    let s = ServerProcess::start("tcp://127.0.0.1:0", &["--no-store", "--frame", "line"]);
    let mut child = Command::new(bin())
        .args(["trace", "connect", &s.addr, "--frame", "line", "--json"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(b"one\ntwo\n").unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let json = &text[text.find('[').expect("the packets, after the replies")..];
    let events: Vec<Value> = serde_json::from_str(json.trim()).unwrap();
    let sent: Vec<Vec<u8>> = packets(&events)
        .iter()
        .map(|p| payload(p))
        .filter(|p| !p.is_empty())
        .collect();
    assert_eq!(
        sent,
        [
            b"one\n".to_vec(),
            b"ONE\n".to_vec(),
            b"two\n".to_vec(),
            b"TWO\n".to_vec()
        ]
    );
}
