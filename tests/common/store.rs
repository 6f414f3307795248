//! Asking a test server's store what it recorded, through the commands a user has.

#![allow(dead_code)] // each test binary uses its own part of these helpers

use super::*;
use std::process::Command;

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

/// `switchboard ARGS... --store sqlite://DIR/switchboard.db`: what the default store of a server
/// run in `dir` recorded (`sessions --json`, `stats`, ...).
pub fn ask_store(dir: &std::path::Path, args: &[&str]) -> String {
    let store = format!("sqlite://{}/switchboard.db", dir.display());
    let mut all = args.to_vec();
    all.extend_from_slice(&["--store", &store]);
    switchboard_ok(&all)
}
