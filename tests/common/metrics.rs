//! Scraping a test server's metrics endpoint and checking what it says.

#![allow(dead_code)] // each test binary uses its own part of these helpers

use super::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};

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
