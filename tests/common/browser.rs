//! Helpers for the browser tests (tests/ui.rs, tests/buildbot_www.rs): a bounded run of
//! the Node.js driver, and PNG dimensions for the screenshots it leaves.

use std::process::{Child, Command};
use std::time::{Duration, Instant};

use super::masters::free_port;

/// A child process killed (and reaped) when dropped.
pub struct Killed(Option<Child>);

impl Drop for Killed {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Runs `cmd` to completion within `limit`; returns whether it succeeded and its output.
pub fn run_bounded(cmd: &mut Command, limit: Duration) -> (bool, String) {
    let out_path = std::env::temp_dir().join(format!(
        "switchyard-browser-client-{}-{}.log",
        std::process::id(),
        free_port()
    ));
    let out = std::fs::File::create(&out_path).unwrap();
    let child = cmd
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
    let mut child = Killed(Some(child));
    let started = Instant::now();
    let status = loop {
        if let Some(s) = child.0.as_mut().unwrap().try_wait().unwrap() {
            break Some(s);
        }
        if started.elapsed() > limit {
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    drop(child);
    let text = std::fs::read_to_string(&out_path).unwrap_or_default();
    let _ = std::fs::remove_file(&out_path);
    match status {
        Some(s) => (s.success(), text),
        None => (
            false,
            format!("{text}\n[still running after {limit:?}; killed]"),
        ),
    }
}

/// Width and height from a PNG's IHDR chunk, if `data` is a PNG.
pub fn png_size(data: &[u8]) -> Option<(u32, u32)> {
    const SIGNATURE: [u8; 8] = [0x89, b'P', b'N', b'G', b'\r', b'\n', 0x1a, b'\n'];
    if data.len() < 33 || data[..8] != SIGNATURE || &data[12..16] != b"IHDR" {
        return None;
    }
    let w = u32::from_be_bytes(data[16..20].try_into().ok()?);
    let h = u32::from_be_bytes(data[20..24].try_into().ok()?);
    Some((w, h))
}
