//! TLS for the tests: certificates made by `openssl`, and a server that speaks `tls://`.

#![allow(dead_code)] // each test binary uses its own part of these helpers

use super::*;
use std::path::PathBuf;
use std::process::Command;

/// `switchboard serve tls://127.0.0.1:0 --model MODEL --frame line` with the certificate of
/// `t`, in `dir`, and `extra` options.
pub fn serve_tls(
    dir: &std::path::Path,
    t: &TlsFiles,
    model: &str,
    extra: &[&str],
) -> ServerProcess {
    let (cert, key) = (t.cert.display().to_string(), t.key.display().to_string());
    let mut args = vec![
        "--model",
        model,
        "--frame",
        "line",
        "--tls-cert",
        &cert,
        "--tls-key",
        &key,
    ];
    args.extend_from_slice(extra);
    ServerProcess::start_in(dir, "tls://127.0.0.1:0", &args)
}

/// Certificates for the TLS tests, made by `openssl`: a CA, a server certificate it signed for
/// `localhost` and 127.0.0.1, and a client certificate it signed (for mutual TLS).
pub struct TlsFiles {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

/// Makes [`TlsFiles`] in `dir`, or `None` (said) where openssl is missing, unless
/// `SWITCHBOARD_REQUIRE_OPENSSL` is set (as the test script sets it where openssl is).
pub fn tls_files(dir: &std::path::Path) -> Option<TlsFiles> {
    if Command::new("openssl").arg("version").output().is_err() {
        assert!(
            std::env::var_os("SWITCHBOARD_REQUIRE_OPENSSL").is_none(),
            "openssl is missing, and the test script requires it"
        );
        eprintln!("openssl is missing: skipping");
        return None;
    }
    let openssl = |args: &[&str]| {
        let out = Command::new("openssl")
            .current_dir(dir)
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let mut ca = vec![
        "req",
        "-x509",
        "-days",
        "2",
        "-subj",
        "/CN=switchboard test CA",
    ];
    ca.extend_from_slice(&ec);
    ca.extend_from_slice(&["-keyout", "ca.key", "-out", "ca.pem"]);
    openssl(&ca);
    for (name, ext) in [
        (
            "server",
            "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth",
        ),
        ("client", "extendedKeyUsage=clientAuth"),
    ] {
        let mut req = vec!["req", "-new", "-subj"];
        let subject = format!("/CN={name}");
        req.push(&subject);
        req.extend_from_slice(&ec);
        let (key, csr) = (format!("{name}.key"), format!("{name}.csr"));
        req.extend_from_slice(&["-keyout", &key, "-out", &csr]);
        openssl(&req);
        std::fs::write(dir.join(format!("{name}.ext")), ext).unwrap();
        let (pem, extfile) = (format!("{name}.pem"), format!("{name}.ext"));
        openssl(&[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            &extfile,
            "-out",
            &pem,
        ]);
    }
    Some(TlsFiles {
        ca: dir.join("ca.pem"),
        cert: dir.join("server.pem"),
        key: dir.join("server.key"),
        client_cert: dir.join("client.pem"),
        client_key: dir.join("client.key"),
    })
}
