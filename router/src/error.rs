//! [`WampError`]: a WAMP-level error (an error URI and a message), what routing code answers
//! with ERROR or ABORT. Data, not a Rust failure: the session carries on.

use crate::wire;

/// A WAMP-level error: an error URI and a message, sent to the peer as ERROR or ABORT.
/// These are data, not Rust failures: the session carries on.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{uri}: {message}")]
pub struct WampError {
    pub uri: String,
    pub message: String,
}

impl WampError {
    pub fn new(uri: &str, message: impl Into<String>) -> Self {
        WampError {
            uri: uri.to_owned(),
            message: message.into(),
        }
    }

    /// The ERROR message answering `request_type`/`request`.
    pub fn to_message(&self, request_type: u64, request: wire::Id) -> wire::Message {
        wire::Message::error(request_type, request, &self.uri, Some(self.message.clone()))
    }
}
