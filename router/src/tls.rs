//! TLS from PEM files, for both ends of a connection.
//!
//! - [`server_config`]: a listener's certificate chain and private key (what
//!   [`crate::transport::ListenerConfig::tls`] takes);
//! - [`client_config`]: trust anchors (CA certificates) for verifying a server's certificate,
//!   used by mesh links dialing `wss://` peers and by [`crate::client`];
//! - [`connect`]: TCP connect plus a TLS handshake, verifying the server's certificate against
//!   the host it was dialed by (a DNS name, or an IP address matched against IP SANs);
//!   [`connect_ws`] does that for a `wss://` URL and a plain TCP connect for `ws://`.
//!
//! rustls with the `ring` provider (the workspace enables no other, so rustls picks it). Every
//! error names the file or host it is about, so a bad configuration is reported precisely.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_tungstenite::tungstenite::http::Uri;
use tokio_util::either::Either;

/// Why a TLS configuration could not be built from its files.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {}: {source}", path.display())]
    Read { path: PathBuf, source: io::Error },
    #[error("{}: not a PEM certificate file ({message})", path.display())]
    BadCertificates { path: PathBuf, message: String },
    #[error("{}: no PEM certificate in it", path.display())]
    NoCertificate { path: PathBuf },
    #[error("{}: no PEM private key in it ({message})", path.display())]
    NoKey { path: PathBuf, message: String },
    #[error("{}: not a usable CA certificate: {message}", path.display())]
    BadAnchor { path: PathBuf, message: String },
    #[error("{} and {} do not make a TLS configuration: {source}", cert.display(), key.display())]
    Mismatch {
        cert: PathBuf,
        key: PathBuf,
        source: rustls::Error,
    },
}

/// Reads every certificate of a PEM file (at least one).
pub fn read_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::BadCertificates {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            path: path.to_owned(),
        });
    }
    Ok(certs)
}

/// Reads the first private key (PKCS#8, PKCS#1 or SEC1) of a PEM file.
pub fn read_private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let bytes = std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| TlsError::NoKey {
        path: path.to_owned(),
        message: e.to_string(),
    })
}

/// A server configuration from a certificate chain (leaf first) and its private key.
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let chain = read_certificates(cert)?;
    let private = read_private_key(key)?;
    rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(chain, private)
        .map(Arc::new)
        .map_err(|source| TlsError::Mismatch {
            cert: cert.to_owned(),
            key: key.to_owned(),
            source,
        })
}

/// A client configuration trusting exactly the CA certificates in `ca` (a PEM file holding
/// one or more).
pub fn client_config(ca: &Path) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    for c in read_certificates(ca)? {
        roots.add(c).map_err(|e| TlsError::BadAnchor {
            path: ca.to_owned(),
            message: e.to_string(),
        })?;
    }
    Ok(Arc::new(
        rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    ))
}

/// Why [`connect`] or [`connect_ws`] failed: the URL, the TCP connection, or the TLS
/// handshake on top of it.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("bad URL: {0}")]
    Url(String),
    #[error("{0}")]
    Tcp(io::Error),
    #[error("wss:// needs CA certificates to verify the server with, and none are configured")]
    NoTrustAnchors,
    #[error("{0:?} is not a valid TLS server name")]
    ServerName(String),
    #[error("TLS: {}{}", .0, plain_hint(.0))]
    Tls(io::Error),
}

/// A hint for the handshake failures a peer that does not speak TLS causes.
fn plain_hint(e: &io::Error) -> &'static str {
    let corrupt = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        .is_some_and(|r| matches!(r, rustls::Error::InvalidMessage(_)));
    if corrupt || e.kind() == io::ErrorKind::UnexpectedEof {
        " (does the peer serve TLS on that port, or plain ws://?)"
    } else {
        ""
    }
}

/// The host of a URL authority as rustls wants it: brackets of an IPv6 literal removed.
fn bare_host(host: &str) -> &str {
    host.strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host)
}

/// Connects to `host:port` over TCP (Nagle off if `nodelay`) and TLS, verifying the server's
/// certificate for `host` against `config`'s trust anchors.
pub async fn connect(
    config: Arc<rustls::ClientConfig>,
    host: &str,
    port: u16,
    nodelay: bool,
) -> Result<TlsStream<TcpStream>, ConnectError> {
    let host = bare_host(host);
    let name = ServerName::try_from(host.to_owned())
        .map_err(|_| ConnectError::ServerName(host.to_owned()))?;
    let tcp = TcpStream::connect((host, port))
        .await
        .map_err(ConnectError::Tcp)?;
    if nodelay {
        let _ = tcp.set_nodelay(true);
    }
    tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .map_err(ConnectError::Tls)
}

/// A connection for a WebSocket URL: plain TCP for `ws://`, TLS for `wss://`.
pub type MaybeTls = Either<TcpStream, TlsStream<TcpStream>>;

/// Connects to the host and port of a `ws://` or `wss://` URL (default ports 80 and 443); for
/// `wss://`, over TLS verified with `tls` (required); Nagle off if `nodelay`. The WebSocket
/// upgrade is the caller's (e.g. `tokio_tungstenite::client_async_with_config`).
pub async fn connect_ws(
    uri: &Uri,
    tls: Option<Arc<rustls::ClientConfig>>,
    nodelay: bool,
) -> Result<MaybeTls, ConnectError> {
    let secure = match uri.scheme_str() {
        Some("ws") => false,
        Some("wss") => true,
        _ => {
            return Err(ConnectError::Url(format!(
                "{uri} is neither ws:// nor wss://"
            )))
        }
    };
    let host = uri
        .host()
        .filter(|h| !h.is_empty())
        .ok_or_else(|| ConnectError::Url(format!("{uri} has no host")))?;
    let port = uri.port_u16().unwrap_or(if secure { 443 } else { 80 });
    if secure {
        let config = tls.ok_or(ConnectError::NoTrustAnchors)?;
        Ok(Either::Right(connect(config, host, port, nodelay).await?))
    } else {
        let tcp = TcpStream::connect((bare_host(host), port))
            .await
            .map_err(ConnectError::Tcp)?;
        if nodelay {
            let _ = tcp.set_nodelay(true);
        }
        Ok(Either::Left(tcp))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(name: &str, contents: &str) -> PathBuf {
        let p =
            std::env::temp_dir().join(format!("switchyard-tls-unit-{}-{name}", std::process::id()));
        std::fs::write(&p, contents).unwrap();
        p
    }

    #[test]
    fn errors_name_the_file() {
        let missing = Path::new("/nonexistent/switchyard/chain.pem");
        let e = server_config(missing, missing).unwrap_err();
        assert!(
            e.to_string().contains("/nonexistent/switchyard/chain.pem"),
            "{e}"
        );
        let empty = temp("empty.pem", "not a certificate\n");
        let e = client_config(&empty).unwrap_err();
        assert!(matches!(e, TlsError::NoCertificate { .. }), "{e}");
        assert!(e.to_string().contains("empty.pem"), "{e}");
        let e = read_private_key(&empty).unwrap_err();
        assert!(e.to_string().contains("no PEM private key"), "{e}");
        let _ = std::fs::remove_file(empty);
    }

    #[test]
    fn ipv6_brackets_are_removed() {
        assert_eq!(bare_host("[::1]"), "::1");
        assert_eq!(bare_host("example.com"), "example.com");
    }
}
