//! TLS through rustls: loading a server's certificate and key (and the CA that signs its
//! clients, for mutual TLS), and a client's trust (a CA file, the system's roots are not used,
//! or `--insecure`).
//!
//! rustls is itself sans-IO, so a server's TLS lives in the [`Session`](crate::Session): it
//! decrypts what a model reads and encrypts what the model writes, and every stream model
//! serves `tls://` without a line of TLS code. The cryptography is `ring`'s.

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A certificate, key or CA file that cannot be used, and why.
#[derive(Debug, thiserror::Error)]
#[error("{option} {}: {why}", file.display())]
pub struct TlsError {
    /// The option that named the file (`--tls-cert`, `--tls-key`, `--tls-client-ca`, `--ca`).
    pub option: &'static str,
    /// The file.
    pub file: PathBuf,
    /// What is wrong with it.
    pub why: String,
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn certificates(
    option: &'static str,
    file: &Path,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let err = |why: String| TlsError {
        option,
        file: file.to_path_buf(),
        why,
    };
    let certs = CertificateDer::pem_file_iter(file)
        .map_err(|e| err(pem_error(e)))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| err(pem_error(e)))?;
    if certs.is_empty() {
        return Err(err(
            "no certificate in it (expected PEM: -----BEGIN CERTIFICATE-----)".into(),
        ));
    }
    Ok(certs)
}

fn pem_error(e: rustls::pki_types::pem::Error) -> String {
    match e {
        rustls::pki_types::pem::Error::Io(e) => format!("cannot read it ({e})"),
        other => format!("not valid PEM ({other:?})"),
    }
}

fn roots(option: &'static str, file: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in certificates(option, file)? {
        roots.add(cert).map_err(|e| TlsError {
            option,
            file: file.to_path_buf(),
            why: format!("not a usable CA certificate ({e})"),
        })?;
    }
    Ok(roots)
}

/// A server's TLS: TLS 1.2 and 1.3 with the certificate chain in `cert` and the private key in
/// `key` (PEM); with `client_ca`, every client must present a certificate that CA signed.
pub fn server_config(
    cert: &Path,
    key: &Path,
    client_ca: Option<&Path>,
) -> Result<Arc<ServerConfig>, TlsError> {
    let chain = certificates("--tls-cert", cert)?;
    let key_err = |why: String| TlsError {
        option: "--tls-key",
        file: key.to_path_buf(),
        why,
    };
    let private = PrivateKeyDer::from_pem_file(key).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => key_err(
            "no private key in it (expected PEM: -----BEGIN PRIVATE KEY-----, RSA or EC)".into(),
        ),
        e => key_err(pem_error(e)),
    })?;
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| key_err(e.to_string()))?;
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots("--tls-client-ca", ca)?),
                provider(),
            )
            .build()
            .map_err(|e| TlsError {
                option: "--tls-client-ca",
                file: ca.to_path_buf(),
                why: e.to_string(),
            })?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let config = builder.with_single_cert(chain, private).map_err(|e| {
        key_err(format!(
            "does not go with the certificate in {} ({e})",
            cert.display()
        ))
    })?;
    Ok(Arc::new(config))
}

/// A client's TLS: trusting the CA certificates in `ca`, or with `insecure` any certificate at
/// all (for a test server's self-signed one: the connection is encrypted, but to whom is not
/// checked).
pub fn client_config(ca: Option<&Path>, insecure: bool) -> Result<Arc<ClientConfig>, TlsError> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("ring supports the default versions");
    let config = if insecure {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider())))
            .with_no_client_auth()
    } else {
        let Some(ca) = ca else {
            // Nothing trusted: the handshake fails, and the client's error says what to pass.
            return Ok(Arc::new(
                builder
                    .with_root_certificates(RootCertStore::empty())
                    .with_no_client_auth(),
            ));
        };
        let webpki = rustls::client::WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots("--ca", ca)?),
            provider(),
        )
        .build()
        .map_err(|e| TlsError {
            option: "--ca",
            file: ca.to_path_buf(),
            why: e.to_string(),
        })?;
        let pinned = certificates("--ca", ca)?;
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(CaOrPinned { webpki, pinned }))
            .with_no_client_auth()
    };
    Ok(Arc::new(config))
}

/// `--ca`: a server certificate signed by a CA in the file is trusted, as any client trusts
/// one; and so is a certificate that is exactly one in the file, for the names it holds
/// (pinned), as curl, Python's `ssl` and `openssl s_client` trust the usual self-signed
/// certificate that `openssl req -x509` makes (which calls itself a CA, and so is refused as
/// a server's own by the CA rules alone: `CaUsedAsEndEntity`).
#[derive(Debug)]
struct CaOrPinned {
    webpki: Arc<rustls::client::WebPkiServerVerifier>,
    pinned: Vec<CertificateDer<'static>>,
}

impl ServerCertVerifier for CaOrPinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let by_ca = self.webpki.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        );
        match by_ca {
            Err(_)
                if self
                    .pinned
                    .iter()
                    .any(|p| p.as_ref() == end_entity.as_ref()) =>
            {
                let cert = rustls::server::ParsedCertificate::try_from(end_entity)?;
                rustls::client::verify_server_name(&cert, server_name)?;
                Ok(ServerCertVerified::assertion())
            }
            verdict => verdict,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }
}

/// The name a client checks the server's certificate against: the host as written in the
/// address (`localhost`, or an IP address).
pub fn server_name(host: &str) -> ServerName<'static> {
    let host = host.trim_matches(|c| c == '[' || c == ']');
    ServerName::try_from(host.to_string())
        .unwrap_or_else(|_| ServerName::try_from("invalid.invalid").expect("a valid DNS name"))
}

/// `--insecure`: accepts any certificate, while still checking that the server holds its key.
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
