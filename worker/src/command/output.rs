//! A command's output, from its pipes to the caller: one pump per pipe coalesces what it
//! reads into UTF-8 chunks, and the forwarder hands them to the [`OutputSink`] in order,
//! enforcing `max_output`.
//!
//! ```text
//! child stdout ─ pump ─┐                                           ┌─ progressive YIELD
//!                      ├─ chunk channel (CHUNK_QUEUE) ─ forwarder ─┤  (OutputSink)
//! child stderr ─ pump ─┘                                           └─ output limit → kill
//! ```
//!
//! A pump reads at most [`FLUSH_BYTES`] before it must hand the chunk over; while the channel
//! is full it does not read, so the pipe fills and the child blocks on write: a slow caller
//! slows the command down instead of growing memory.

use std::future::Future;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// A pump hands its buffer over once it holds this much...
pub(crate) const FLUSH_BYTES: usize = 16 * 1024;
/// ...or this long after its first unflushed byte.
pub(crate) const FLUSH_DELAY: Duration = Duration::from_millis(50);
/// Chunks in flight between the pumps and the forwarder.
pub(super) const CHUNK_QUEUE: usize = 4;

/// Which pipe a chunk of output came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// Where forwarded output goes (progressive results on the call).
pub(crate) trait OutputSink: Send + 'static {
    fn send(&mut self, stream: Stream, data: String) -> impl Future<Output = ()> + Send;
}

/// Sleeps until `at`, or forever if there is no deadline.
pub(super) async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// One chunk of a stream's output.
pub(super) struct Chunk {
    stream: Stream,
    text: String,
}

/// How many bytes at the end of `b` are an incomplete UTF-8 sequence (kept for the next
/// chunk, so a character split across reads is not mangled).
pub(crate) fn incomplete_utf8_tail(b: &[u8]) -> usize {
    for i in 1..=b.len().min(3) {
        let byte = b[b.len() - i];
        if byte & 0xC0 == 0x80 {
            continue; // a continuation byte: look further back for the lead byte
        }
        let needed = match byte {
            0xF0..=0xF7 => 4,
            0xE0..=0xEF => 3,
            0xC0..=0xDF => 2,
            _ => 1,
        };
        return if needed > i { i } else { 0 };
    }
    0
}

/// Reads one pipe, coalescing: a chunk goes out when [`FLUSH_BYTES`] are buffered or
/// [`FLUSH_DELAY`] after the first unflushed byte, and at EOF.
pub(super) async fn pump(
    mut pipe: impl AsyncRead + Unpin,
    stream: Stream,
    tx: mpsc::Sender<Chunk>,
) {
    let mut buf: Vec<u8> = Vec::with_capacity(FLUSH_BYTES);
    let mut first_at: Option<Instant> = None;
    let mut read_buf = vec![0u8; FLUSH_BYTES];
    loop {
        let room = FLUSH_BYTES.saturating_sub(buf.len()).max(1);
        let flush = tokio::select! {
            r = pipe.read(&mut read_buf[..room]) => match r {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    buf.extend_from_slice(&read_buf[..n]);
                    first_at.get_or_insert_with(Instant::now);
                    buf.len() >= FLUSH_BYTES
                }
            },
            _ = sleep_until_opt(first_at.map(|t| t + FLUSH_DELAY)) => true,
        };
        if flush {
            let keep = incomplete_utf8_tail(&buf);
            let cut = buf.len() - keep;
            // Only an incomplete character buffered: wait for the rest of it.
            first_at = None;
            if cut == 0 {
                continue;
            }
            let text = String::from_utf8_lossy(&buf[..cut]).into_owned();
            buf.drain(..cut);
            if tx.send(Chunk { stream, text }).await.is_err() {
                return;
            }
        }
    }
    if !buf.is_empty() {
        let text = String::from_utf8_lossy(&buf).into_owned();
        let _ = tx.send(Chunk { stream, text }).await;
    }
}

/// Forwards chunks in order to `sink` until the pumps are done. Beyond `max` bytes it
/// cancels `limit` and discards the rest (still draining, so the pumps never block).
pub(super) async fn forward<O: OutputSink>(
    mut rx: mpsc::Receiver<Chunk>,
    mut sink: O,
    max: u64,
    limit: CancellationToken,
) {
    let mut total: u64 = 0;
    while let Some(mut chunk) = rx.recv().await {
        if limit.is_cancelled() {
            continue;
        }
        let len = chunk.text.len() as u64;
        if total + len > max {
            let mut cut = (max - total) as usize;
            while !chunk.text.is_char_boundary(cut) {
                cut -= 1;
            }
            chunk.text.truncate(cut);
            if !chunk.text.is_empty() {
                sink.send(chunk.stream, chunk.text).await;
            }
            total = max;
            limit.cancel();
            continue;
        }
        total += len;
        sink.send(chunk.stream, chunk.text).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utf8_tails() {
        assert_eq!(incomplete_utf8_tail(b"abc"), 0);
        let e = "é".as_bytes(); // 2 bytes
        assert_eq!(incomplete_utf8_tail(&e[..1]), 1);
        assert_eq!(incomplete_utf8_tail(e), 0);
        let euro = "€".as_bytes(); // 3 bytes
        assert_eq!(incomplete_utf8_tail(&[b'a', euro[0], euro[1]]), 2);
        assert_eq!(incomplete_utf8_tail(euro), 0);
        let emoji = "😀".as_bytes(); // 4 bytes
        assert_eq!(incomplete_utf8_tail(&emoji[..3]), 3);
        assert_eq!(incomplete_utf8_tail(emoji), 0);
        // Invalid bytes are not held back (lossy decoding replaces them).
        assert_eq!(incomplete_utf8_tail(&[0xff]), 0);
        assert_eq!(incomplete_utf8_tail(&[0x80, 0x80, 0x80, 0x80]), 0);
    }
}
