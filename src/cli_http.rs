//! One HTTP/1.1 request from the command line (`mesh status`, `shutdown`) to a running node,
//! in clear text or over TLS.
//!
//! Blocking std sockets with timeouts on every step; over TLS the node's certificate is
//! verified for the host of `addr` (a DNS name, or an IP address matched against the
//! certificate's IP SANs) against the given trust anchors.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;

/// Sends `request` (a whole HTTP/1.1 request with `Connection: close`) to `addr` and returns
/// the whole response. `tls`: speak TLS with these trust anchors.
pub fn exchange(
    addr: &str,
    tls: Option<Arc<rustls::ClientConfig>>,
    request: &str,
    read_timeout: Duration,
) -> io::Result<String> {
    let sock: SocketAddr = addr
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| io::Error::other("no address"))?;
    let mut tcp = TcpStream::connect_timeout(&sock, Duration::from_secs(5))?;
    tcp.set_read_timeout(Some(read_timeout))?;
    tcp.set_write_timeout(Some(Duration::from_secs(5)))?;
    let mut out = Vec::new();
    match tls {
        None => {
            tcp.write_all(request.as_bytes())?;
            tcp.read_to_end(&mut out)?;
        }
        Some(config) => {
            let host = host_of(addr);
            let name = ServerName::try_from(host.to_owned()).map_err(|_| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("{host:?} is not a valid TLS server name"),
                )
            })?;
            let conn = rustls::ClientConnection::new(config, name).map_err(io::Error::other)?;
            let mut stream = rustls::StreamOwned::new(conn, tcp);
            stream.write_all(request.as_bytes())?;
            stream.flush()?;
            // A server closing without close_notify after a complete response is fine here.
            if let Err(e) = stream.read_to_end(&mut out) {
                if e.kind() != io::ErrorKind::UnexpectedEof || out.is_empty() {
                    return Err(e);
                }
            }
        }
    }
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// The host part of `host:port` (brackets of an IPv6 literal removed).
fn host_of(addr: &str) -> &str {
    let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
    host.strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host)
}

#[cfg(test)]
mod tests {
    #[test]
    fn host_of_strips_the_port() {
        assert_eq!(super::host_of("127.0.0.1:8080"), "127.0.0.1");
        assert_eq!(super::host_of("[::1]:8080"), "::1");
        assert_eq!(super::host_of("node.example:443"), "node.example");
    }
}
