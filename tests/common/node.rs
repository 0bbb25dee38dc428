//! The Crossbar fixture node directory (tests/fixtures/crossbar/.crossbar) run by the real
//! binary: copied to a temporary directory with every port set to 0 and a certificate made
//! for the run, then `switchyard start --cbdir`.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::tls::TestCert;

/// The value `${SWITCHYARD_TEST_MASTER_TICKET}` in the fixture resolves to.
pub const MASTER_TICKET: &str = "master-ticket-from-env";

/// A running fixture node, killed (and its directory removed) on drop.
pub struct FixtureNode {
    child: std::process::Child,
    /// One address per transport, in config order: universal, web (TLS), websocket.
    pub addrs: Vec<SocketAddr>,
    pub dir: PathBuf,
    pub cert: TestCert,
}

impl Drop for FixtureNode {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A fresh directory under the system temp dir.
pub fn temp_dir(name: &str) -> PathBuf {
    use std::time::{SystemTime, UNIX_EPOCH};
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let d = std::env::temp_dir().join(format!("switchyard-{name}-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Rewrites every endpoint port to 0 so parallel tests never collide.
fn zero_ports(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Object(o) => {
            if o.get("type").and_then(|t| t.as_str()) == Some("tcp") && o.contains_key("port") {
                o.insert("port".into(), 0.into());
            }
            o.values_mut().for_each(zero_ports);
        }
        serde_json::Value::Array(a) => a.iter_mut().for_each(zero_ports),
        _ => {}
    }
}

impl FixtureNode {
    pub fn start() -> FixtureNode {
        let fixture =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/crossbar/.crossbar");
        let dir = temp_dir("fixture");
        let text = std::fs::read_to_string(fixture.join("config.json")).unwrap();
        let mut tree: serde_json::Value = serde_json::from_str(&text).unwrap();
        zero_ports(&mut tree);
        std::fs::write(dir.join("config.json"), tree.to_string()).unwrap();
        let cert = TestCert::generate();
        std::fs::create_dir_all(dir.join("tls")).unwrap();
        std::fs::write(dir.join("tls/server.crt"), &cert.cert_pem).unwrap();
        std::fs::write(dir.join("tls/server.key"), &cert.key_pem).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_switchyard"))
            .args(["start", "--cbdir"])
            .arg(&dir)
            .env("SWITCHYARD_TEST_MASTER_TICKET", MASTER_TICKET)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut addrs = Vec::new();
        for _ in 0..3 {
            let mut line = String::new();
            out.read_line(&mut line).unwrap();
            addrs.push(
                line.trim()
                    .strip_prefix("switchyard listening on ")
                    .unwrap_or_else(|| panic!("unexpected line {line:?}"))
                    .parse()
                    .unwrap(),
            );
        }
        FixtureNode {
            child,
            addrs,
            dir,
            cert,
        }
    }
}
