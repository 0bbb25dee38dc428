//! Reading an HTTP request body within the listener's limits: a size cap, and the
//! `http_body_timeout` deadline the HTTP server stamps on every request.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;

/// When a request's body must have arrived: set by the HTTP server on every request it
/// hands to a service (a request extension), read by [`read_body`].
#[derive(Clone, Copy, Debug)]
pub struct BodyDeadline {
    pub at: tokio::time::Instant,
    /// The configured limit, for the error message.
    pub limit: Duration,
}

/// Why a body was not read.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("request body larger than {0} bytes")]
    TooLarge(usize),
    #[error("request body not received within {} ms (limits.http_body_timeout_ms)", .0.as_millis())]
    TimedOut(Duration),
    #[error("the request body could not be read: {0}")]
    Failed(String),
}

impl BodyError {
    /// The HTTP status answering this error.
    pub fn status(&self) -> hyper::StatusCode {
        match self {
            BodyError::TooLarge(_) => hyper::StatusCode::PAYLOAD_TOO_LARGE,
            BodyError::TimedOut(_) => hyper::StatusCode::REQUEST_TIMEOUT,
            BodyError::Failed(_) => hyper::StatusCode::BAD_REQUEST,
        }
    }
}

/// Reads a whole request body of at most `max` bytes, by the request's [`BodyDeadline`]
/// (none set: no deadline of its own; the server's request timeout still applies).
pub async fn read_body(
    parts: &hyper::http::request::Parts,
    body: Incoming,
    max: usize,
) -> Result<Bytes, BodyError> {
    let collect = async {
        match Limited::new(body, max).collect().await {
            Ok(c) => Ok(c.to_bytes()),
            Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(BodyError::TooLarge(max)),
            Err(e) => Err(BodyError::Failed(e.to_string())),
        }
    };
    match parts.extensions.get::<BodyDeadline>() {
        Some(d) => tokio::time::timeout_at(d.at, collect)
            .await
            .unwrap_or(Err(BodyError::TimedOut(d.limit))),
        None => collect.await,
    }
}
