//! TLS beyond the conformance suite's check of every model: mutual TLS, certificate and key
//! files that cannot be used, switchboard's own clients (`connect`, `send`, `bench`) over
//! `tls://`, and handshakes that never finish.

mod common;

use common::*;
use std::io::Write;
use std::process::Command;
use std::time::Instant;

/// `switchboard ARGS...`: its exit code, stdout and stderr.
fn switchboard(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(bin()).args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn mutual_tls_serves_only_clients_with_a_certificate_the_ca_signed() {
    let dir = scratch("mtls");
    let Some(t) = tls_files(&dir) else {
        return;
    };
    let ca = t.ca.display().to_string();
    let s = serve_tls(&dir, &t, "epoll", &["--tls-client-ca", &ca]);
    let port = s.addr.rsplit(':').next().unwrap().to_string();
    let python = |with_cert: bool| {
        let load = if with_cert {
            format!(
                "ctx.load_cert_chain({:?}, {:?})",
                t.client_cert.display().to_string(),
                t.client_key.display().to_string()
            )
        } else {
            String::new()
        };
        let script = format!(
            r#"
import socket, ssl
ctx = ssl.create_default_context(cafile={ca:?})
{load}
try:
    with ctx.wrap_socket(socket.create_connection(("127.0.0.1", {port})), server_hostname="localhost") as s:
        s.sendall(b"mutual\n")
        print(s.recv(100).decode(), end="")
except (ssl.SSLError, ConnectionError) as e:
    print("refused:", e)
"#
        );
        let out = Command::new("python3")
            .arg("-c")
            .arg(script)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert_eq!(python(true), "MUTUAL\n");
    let refused = python(false);
    assert!(
        refused.starts_with("refused:") || refused.is_empty(),
        "served without a client certificate: {refused:?}"
    );
    s.wait_log("TLS:");
    assert_eq!(python(true), "MUTUAL\n", "and serves on");
    let (status, summary) = s.terminate();
    assert!(status.success());
    assert!(
        summary.contains("served 3 connections (1 errors)"),
        "{summary}"
    );
}

#[test]
fn certificate_and_key_files_that_cannot_be_used_are_named_at_start() {
    let dir = scratch("badtls");
    let Some(t) = tls_files(&dir) else {
        return;
    };
    let garbage = dir.join("garbage.pem");
    std::fs::write(&garbage, "not a certificate\n").unwrap();
    let missing = dir.join("missing.pem");
    let (cert, key) = (t.cert.display().to_string(), t.key.display().to_string());
    let (garbage, missing) = (garbage.display().to_string(), missing.display().to_string());
    let client_key = t.client_key.display().to_string();
    for (args, file, says) in [
        (
            vec!["--tls-cert", &missing, "--tls-key", &key],
            &missing,
            "cannot read",
        ),
        (
            vec!["--tls-cert", &garbage, "--tls-key", &key],
            &garbage,
            "no certificate",
        ),
        (
            vec!["--tls-cert", &cert, "--tls-key", &garbage],
            &garbage,
            "no private key",
        ),
        (
            vec!["--tls-cert", &cert, "--tls-key", &client_key],
            &client_key,
            "does not go with",
        ),
        (
            vec![
                "--tls-cert",
                &cert,
                "--tls-key",
                &key,
                "--tls-client-ca",
                &garbage,
            ],
            &garbage,
            "no certificate",
        ),
    ] {
        let mut all = vec!["serve", "tls://127.0.0.1:0", "--no-store"];
        all.extend_from_slice(&args);
        let (code, _, err) = switchboard(&all);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(
            err.contains(file.as_str()) && err.contains(says),
            "{args:?}: {err}"
        );
    }
    // tls:// without a certificate, and a certificate without tls://.
    let (code, _, err) = switchboard(&["serve", "tls://127.0.0.1:0", "--no-store"]);
    assert_eq!(code, 2);
    assert!(err.contains("--tls-cert"), "{err}");
    let (code, _, err) = switchboard(&[
        "serve",
        "tcp://127.0.0.1:0",
        "--no-store",
        "--tls-cert",
        &cert,
        "--tls-key",
        &key,
    ]);
    assert_eq!(code, 2);
    assert!(err.contains("tls://"), "{err}");
    let (code, _, err) = switchboard(&["send", "tls://127.0.0.1:9", "x", "--ca", &missing]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains(&missing), "{err}");
}

#[test]
fn connect_send_and_bench_speak_tls() {
    let dir = scratch("tlsclients");
    let Some(t) = tls_files(&dir) else {
        return;
    };
    let s = serve_tls(&dir, &t, "epoll", &[]);
    let port = s.addr.rsplit(':').next().unwrap().to_string();
    let addr = format!("tls://localhost:{port}");
    let ca = t.ca.display().to_string();

    let (code, out, err) =
        switchboard(&["send", &addr, "over tls", "--frame", "line", "--ca", &ca]);
    assert_eq!((code, out.as_str()), (0, "OVER TLS\n"), "{err}");
    // Not trusted: a clear error that says what to pass.
    let (code, _, err) = switchboard(&["send", &addr, "x", "--frame", "line"]);
    assert_eq!(code, 1);
    assert!(err.contains("--ca") && err.contains("--insecure"), "{err}");
    // --insecure works, and says loudly what it gives up.
    let (code, out, err) = switchboard(&["send", &addr, "risky", "--frame", "line", "--insecure"]);
    assert_eq!((code, out.as_str()), (0, "RISKY\n"), "{err}");
    assert!(err.contains("warning: --insecure"), "{err}");

    // connect, as the plan's interactive client, from a pipe.
    let mut child = Command::new(bin())
        .args(["connect", &addr, "--frame", "line", "--ca", &ca])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"one\ntwo\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout), "ONE\nTWO\n");

    // bench: every reply checked, none failed.
    let (code, out, err) = switchboard(&[
        "bench",
        &addr,
        "--ca",
        &ca,
        "--frame",
        "line",
        "--conns",
        "4",
        "--duration",
        "1s",
        "--warmup",
        "200ms",
        "--json",
        "--no-store",
    ]);
    assert_eq!(code, 0, "{out}{err}");
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(report["msgs"].as_u64().unwrap() > 0, "{report}");
    assert_eq!(report["errors"].as_u64(), Some(0), "{report}");
    let (status, _) = s.terminate();
    assert!(status.success());
}

#[test]
fn a_handshake_that_never_finishes_is_cut_by_the_frame_timeout() {
    let dir = scratch("tlsstall");
    let Some(t) = tls_files(&dir) else {
        return;
    };
    let s = serve_tls(&dir, &t, "epoll", &["--frame-timeout", "500ms"]);
    let port = s.addr.rsplit(':').next().unwrap().to_string();
    // A ClientHello's first bytes (a handshake record header), then nothing.
    let mut stalled = std::net::TcpStream::connect(format!("127.0.0.1:{port}")).unwrap();
    stalled.set_read_timeout(Some(PATIENCE)).unwrap();
    stalled
        .write_all(&[0x16, 0x03, 0x01, 0x00, 0xc8, 0x01])
        .unwrap();
    let began = Instant::now();
    assert!(closed_by_peer(&mut stalled));
    assert!(began.elapsed() < PATIENCE);
    s.wait_log("reason=frame not finished in time");
    // Meanwhile and after, others are served.
    let (code, out, _) = switchboard(&[
        "send",
        &format!("tls://localhost:{port}"),
        "next",
        "--frame",
        "line",
        "--ca",
        &t.ca.display().to_string(),
    ]);
    assert_eq!((code, out.as_str()), (0, "NEXT\n"));
    let (status, _) = s.terminate();
    assert!(status.success());
}

#[test]
fn the_usual_self_signed_certificate_given_with_ca_is_trusted() {
    let dir = scratch("tls-self-signed");
    if tls_files(&dir).is_none() {
        return; // no openssl
    }
    // What `openssl req -x509` makes by default: a certificate that calls itself a CA.
    let out = Command::new("openssl")
        .current_dir(&dir)
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
        ])
        .args(["-nodes", "-days", "2", "-subj", "/CN=localhost"])
        .args(["-addext", "subjectAltName=DNS:localhost"])
        .args(["-keyout", "self.key", "-out", "self.pem"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let t = TlsFiles {
        ca: dir.join("self.pem"),
        cert: dir.join("self.pem"),
        key: dir.join("self.key"),
        client_cert: dir.join("self.pem"),
        client_key: dir.join("self.key"),
    };
    let s = serve_tls(&dir, &t, "epoll", &[]);
    let port = s.addr.rsplit(':').next().unwrap().to_string();
    let ca = t.ca.display().to_string();
    let (code, out, err) = switchboard(&[
        "send",
        &format!("tls://localhost:{port}"),
        "pinned",
        "--frame",
        "line",
        "--ca",
        &ca,
    ]);
    assert_eq!((code, out.as_str()), (0, "PINNED\n"), "{err}");
    // Pinned for the names it holds (localhost), not for any name (127.0.0.1).
    let (code, _, err) = switchboard(&[
        "send",
        &format!("tls://127.0.0.1:{port}"),
        "x",
        "--frame",
        "line",
        "--ca",
        &ca,
    ]);
    assert_eq!(code, 1, "{err}");
    let (status, _) = s.terminate();
    assert!(status.success());
}
