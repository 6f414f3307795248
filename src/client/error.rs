//! Why a request failed, in words that say what to check.

use crate::addr::Addr;
use crate::codec::FrameError;
use std::io;
use std::time::Duration;

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No connection could be made.
    #[error("cannot connect to {addr}: {source} (is a server listening there? `switchboard serve {addr}` starts one)")]
    Connect {
        /// Where the connection was tried.
        addr: Addr,
        /// What the system said.
        source: io::Error,
    },
    /// The server closed the connection before the reply was complete.
    #[error("the server closed the connection before replying")]
    Closed,
    /// No reply came in time.
    #[error("no reply within {0:?}")]
    Timeout(Duration),
    /// The reply is not a valid frame (or is too long).
    #[error("bad reply: {0}")]
    Frame(#[from] FrameError),
    /// The connection failed.
    #[error("connection failed: {0}")]
    Io(#[from] io::Error),
    /// The TLS handshake or a record failed.
    #[error("TLS: {0}{hint}", hint = tls_hint(.0))]
    Tls(rustls::Error),
    /// A CA file could not be used.
    #[error(transparent)]
    TlsConfig(#[from] crate::tls::TlsError),
}

/// What to do about a certificate the client does not trust.
pub(super) fn tls_hint(e: &rustls::Error) -> &'static str {
    use rustls::{CertificateError, OtherError};
    match e {
        rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(other)))
            if other.to_string().contains("CaUsedAsEndEntity") =>
        {
            " (the server's certificate is a CA's, as `openssl req -x509` makes by default: make it with -addext basicConstraints=critical,CA:FALSE, or sign a server certificate with it; --insecure skips the check)"
        }
        rustls::Error::InvalidCertificate(_) => {
            " (pass --ca FILE with the CA that signed the server's certificate, or --insecure for a test server's self-signed one)"
        }
        _ => "",
    }
}

/// A rustls error carried through `io::Error`, to be told apart from the socket's.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(super) struct TlsFailure(pub(super) rustls::Error);

pub(super) fn tls_or_io(e: io::Error) -> ClientError {
    match e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<TlsFailure>())
    {
        Some(TlsFailure(tls)) => ClientError::Tls(tls.clone()),
        None => e.into(),
    }
}
