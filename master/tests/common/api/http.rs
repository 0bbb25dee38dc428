//! The API on a real router listener, and a raw HTTP/1.1 client that sees exactly what a
//! client gets; no answer may carry a worker's password.

use std::net::SocketAddr;
use std::sync::Arc;

use serde_json::{json, Value};
use switchyard_master::api::{self, ApiState};
use switchyard_master::config::MasterConfig;
use switchyard_master::Store;
use switchyard_router::transport::{self, ListenerConfig};
use switchyard_router::{Router, RouterConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::fake_control::FakeControl;
use super::WORKER_PASSWORDS;

pub struct Server {
    pub addr: SocketAddr,
    router: Router,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.router.shutdown().trigger();
    }
}

pub async fn serve(store: &Store, config: Arc<MasterConfig>, control: Arc<FakeControl>) -> Server {
    let router = Router::new(RouterConfig::default());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let state = ApiState {
        store: store.clone(),
        config,
        control,
    };
    let lc = ListenerConfig {
        http_mounts: api::mounts(state),
        ..Default::default()
    };
    tokio::spawn(transport::serve(listener, router.clone(), lc));
    Server { addr, router }
}

#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The JSON body; fails the test if the answer is not JSON.
    pub fn json(&self) -> Value {
        assert_eq!(
            self.header("content-type"),
            Some("application/json"),
            "not a JSON answer: {self:?}"
        );
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("bad JSON ({e}): {}", self.text()))
    }

    /// The JSON body of an error answer with this status; returns its message.
    pub fn error(&self, status: u16) -> String {
        assert_eq!(self.status, status, "{}", self.text());
        let v = self.json();
        v["error"]
            .as_str()
            .unwrap_or_else(|| panic!("no error message in {v}"))
            .to_owned()
    }

    /// A JSON-RPC error answer with this status and code; returns its message.
    pub fn rpc_error(&self, status: u16, code: i64) -> String {
        assert_eq!(self.status, status, "{}", self.text());
        let v = self.json();
        assert_eq!(v["jsonrpc"], "2.0", "{v}");
        assert_eq!(v["error"]["code"], code, "{v}");
        assert!(v.get("result").is_none(), "{v}");
        v["error"]["message"].as_str().unwrap().to_owned()
    }
}

/// Sends raw bytes, reads the answer until the server closes.
pub async fn exchange(addr: SocketAddr, request: &[u8]) -> Resp {
    let mut s = TcpStream::connect(addr).await.unwrap();
    if let Err(e) = s.write_all(request).await {
        // The server may answer (413) and close before reading everything sent.
        eprintln!("write ended with {e}");
    }
    let mut raw = Vec::new();
    // A server refusing a body it did not read may reset the connection after answering:
    // keep what arrived.
    let mut buf = [0u8; 65536];
    loop {
        match s.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
            Err(e) if !raw.is_empty() => {
                eprintln!("read ended with {e} after {} bytes", raw.len());
                break;
            }
            Err(e) => panic!("no answer: {e}"),
        }
    }
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no HTTP head in {:?}", String::from_utf8_lossy(&raw)));
    let head = String::from_utf8(raw[..split].to_vec()).unwrap();
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    let chunked = headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    if chunked {
        body = dechunk(&body);
    }
    let resp = Resp {
        status,
        headers,
        body,
    };
    // No answer may ever carry a worker's password.
    let text = resp.text();
    for pw in WORKER_PASSWORDS {
        assert!(!text.contains(pw), "worker password in an answer: {text}");
    }
    resp
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let line_end = data.windows(2).position(|w| w == b"\r\n").unwrap();
        let size =
            usize::from_str_radix(std::str::from_utf8(&data[..line_end]).unwrap().trim(), 16)
                .unwrap();
        data = &data[line_end + 2..];
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}

pub fn base64(input: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// How a client authenticates.
#[derive(Clone, Copy)]
pub enum Auth<'a> {
    None,
    Basic(&'a str, &'a str),
    Bearer(&'a str),
}

#[derive(Clone, Copy)]
pub struct Client<'a> {
    pub addr: SocketAddr,
    pub auth: Auth<'a>,
}

impl<'a> Client<'a> {
    pub fn new(server: &Server, auth: Auth<'a>) -> Client<'a> {
        Client {
            addr: server.addr,
            auth,
        }
    }

    pub async fn send(
        &self,
        method: &str,
        path: &str,
        content_type: Option<&str>,
        body: &[u8],
    ) -> Resp {
        let mut req = format!(
            "{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\nContent-Length: {}\r\n",
            body.len()
        );
        match self.auth {
            Auth::None => {}
            Auth::Basic(u, p) => req.push_str(&format!(
                "Authorization: Basic {}\r\n",
                base64(format!("{u}:{p}").as_bytes())
            )),
            Auth::Bearer(t) => req.push_str(&format!("Authorization: Bearer {t}\r\n")),
        }
        if let Some(ct) = content_type {
            req.push_str(&format!("Content-Type: {ct}\r\n"));
        }
        req.push_str("\r\n");
        let mut bytes = req.into_bytes();
        bytes.extend_from_slice(body);
        exchange(self.addr, &bytes).await
    }

    pub async fn get(&self, path: &str) -> Resp {
        self.send("GET", path, None, b"").await
    }

    /// GET of a JSON answer that must be 200.
    pub async fn ok(&self, path: &str) -> Value {
        let r = self.get(path).await;
        assert_eq!(r.status, 200, "GET {path}: {}", r.text());
        r.json()
    }

    /// The rows of a 200 collection answer under `plural`, checking `meta.total`.
    pub async fn rows(&self, path: &str, plural: &str, total: usize) -> Vec<Value> {
        let v = self.ok(path).await;
        assert_eq!(v["meta"]["total"], total, "GET {path}: {v}");
        v[plural]
            .as_array()
            .unwrap_or_else(|| panic!("GET {path}: no {plural} in {v}"))
            .clone()
    }

    /// The one row of a single-item answer.
    pub async fn item(&self, path: &str, plural: &str) -> Value {
        let rows = self.rows(path, plural, 1).await;
        assert_eq!(rows.len(), 1, "GET {path}");
        rows[0].clone()
    }

    pub async fn rpc(&self, path: &str, method: &str, params: Value) -> Resp {
        let body = json!({ "jsonrpc": "2.0", "method": method, "params": params, "id": 7 });
        self.send(
            "POST",
            path,
            Some("application/json"),
            body.to_string().as_bytes(),
        )
        .await
    }

    /// A JSON-RPC call that must succeed; returns its result.
    pub async fn rpc_ok(&self, path: &str, method: &str, params: Value) -> Value {
        let r = self.rpc(path, method, params).await;
        assert_eq!(r.status, 200, "POST {path} {method}: {}", r.text());
        let v = r.json();
        assert_eq!(v["jsonrpc"], "2.0");
        assert_eq!(v["id"], 7);
        assert!(v.get("error").is_none(), "{v}");
        v["result"].clone()
    }
}
