//! WAMP v2 messages: the typed form ([`Message`], its type codes, [`Payload`]); checking and
//! parsing from a decoded [`Value`] is in `decode.rs`, the wire layout in `encode.rs`.
//!
//! Parsing checks every field's type and the element count, and rejects IDs outside
//! `[1, 2^53]`, so the router below never sees a malformed message. Payloads (`Arguments`,
//! `ArgumentsKw`) sit behind an `Arc` so one publication can be handed to many sessions without
//! copying it.

mod decode;
mod encode;

use std::sync::Arc;

use super::value::{Dict, Value};

pub use decode::MessageError;
pub use encode::WireMessage;

/// A WAMP ID: session, publication, subscription, registration or request.
pub type Id = u64;

/// The largest valid WAMP ID (2^53).
pub const MAX_ID: Id = 1 << 53;

/// Message type codes.
pub mod code {
    pub const HELLO: u64 = 1;
    pub const WELCOME: u64 = 2;
    pub const ABORT: u64 = 3;
    pub const CHALLENGE: u64 = 4;
    pub const AUTHENTICATE: u64 = 5;
    pub const GOODBYE: u64 = 6;
    pub const ERROR: u64 = 8;
    pub const PUBLISH: u64 = 16;
    pub const PUBLISHED: u64 = 17;
    pub const SUBSCRIBE: u64 = 32;
    pub const SUBSCRIBED: u64 = 33;
    pub const UNSUBSCRIBE: u64 = 34;
    pub const UNSUBSCRIBED: u64 = 35;
    pub const EVENT: u64 = 36;
    pub const CALL: u64 = 48;
    pub const CANCEL: u64 = 49;
    pub const RESULT: u64 = 50;
    pub const REGISTER: u64 = 64;
    pub const REGISTERED: u64 = 65;
    pub const UNREGISTER: u64 = 66;
    pub const UNREGISTERED: u64 = 67;
    pub const INVOCATION: u64 = 68;
    pub const INTERRUPT: u64 = 69;
    pub const YIELD: u64 = 70;
}

/// Positional and keyword arguments of a message; empty payloads allocate nothing.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Payload(Option<Arc<PayloadParts>>);

#[derive(Debug, Default, PartialEq)]
pub struct PayloadParts {
    pub args: Vec<Value>,
    pub kwargs: Dict,
}

impl Payload {
    pub fn new(args: Vec<Value>, kwargs: Dict) -> Self {
        if args.is_empty() && kwargs.is_empty() {
            Payload(None)
        } else {
            Payload(Some(Arc::new(PayloadParts { args, kwargs })))
        }
    }

    pub fn args(&self) -> &[Value] {
        self.0.as_ref().map(|p| p.args.as_slice()).unwrap_or(&[])
    }

    pub fn kwargs(&self) -> Option<&Dict> {
        self.0.as_ref().map(|p| &p.kwargs).filter(|k| !k.is_empty())
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_none()
    }
}

/// One WAMP message.
#[derive(Clone, Debug, PartialEq)]
pub enum Message {
    Hello {
        realm: String,
        details: Dict,
    },
    Welcome {
        session: Id,
        details: Dict,
    },
    Abort {
        details: Dict,
        reason: String,
    },
    Challenge {
        method: String,
        extra: Dict,
    },
    Authenticate {
        signature: String,
        extra: Dict,
    },
    Goodbye {
        details: Dict,
        reason: String,
    },
    Error {
        request_type: u64,
        request: Id,
        details: Dict,
        error: String,
        payload: Payload,
    },
    Publish {
        request: Id,
        options: Dict,
        topic: String,
        payload: Payload,
    },
    Published {
        request: Id,
        publication: Id,
    },
    Subscribe {
        request: Id,
        options: Dict,
        topic: String,
    },
    Subscribed {
        request: Id,
        subscription: Id,
    },
    Unsubscribe {
        request: Id,
        subscription: Id,
    },
    /// `request` is 0 with `details` for a router-initiated revocation.
    Unsubscribed {
        request: Id,
        details: Option<Dict>,
    },
    Event {
        subscription: Id,
        publication: Id,
        details: Dict,
        payload: Payload,
    },
    Call {
        request: Id,
        options: Dict,
        procedure: String,
        payload: Payload,
    },
    Cancel {
        request: Id,
        options: Dict,
    },
    Result {
        request: Id,
        details: Dict,
        payload: Payload,
    },
    Register {
        request: Id,
        options: Dict,
        procedure: String,
    },
    Registered {
        request: Id,
        registration: Id,
    },
    Unregister {
        request: Id,
        registration: Id,
    },
    /// `request` is 0 with `details` for a router-initiated revocation.
    Unregistered {
        request: Id,
        details: Option<Dict>,
    },
    Invocation {
        request: Id,
        registration: Id,
        details: Dict,
        payload: Payload,
    },
    Interrupt {
        request: Id,
        options: Dict,
    },
    Yield {
        request: Id,
        options: Dict,
        payload: Payload,
    },
}

/// The name of a message type code, for logs and errors.
pub fn code_name(code: u64) -> &'static str {
    match code {
        code::HELLO => "HELLO",
        code::WELCOME => "WELCOME",
        code::ABORT => "ABORT",
        code::CHALLENGE => "CHALLENGE",
        code::AUTHENTICATE => "AUTHENTICATE",
        code::GOODBYE => "GOODBYE",
        code::ERROR => "ERROR",
        code::PUBLISH => "PUBLISH",
        code::PUBLISHED => "PUBLISHED",
        code::SUBSCRIBE => "SUBSCRIBE",
        code::SUBSCRIBED => "SUBSCRIBED",
        code::UNSUBSCRIBE => "UNSUBSCRIBE",
        code::UNSUBSCRIBED => "UNSUBSCRIBED",
        code::EVENT => "EVENT",
        code::CALL => "CALL",
        code::CANCEL => "CANCEL",
        code::RESULT => "RESULT",
        code::REGISTER => "REGISTER",
        code::REGISTERED => "REGISTERED",
        code::UNREGISTER => "UNREGISTER",
        code::UNREGISTERED => "UNREGISTERED",
        code::INVOCATION => "INVOCATION",
        code::INTERRUPT => "INTERRUPT",
        code::YIELD => "YIELD",
        _ => "UNKNOWN",
    }
}

impl Message {
    /// The message type code.
    pub fn code(&self) -> u64 {
        match self {
            Message::Hello { .. } => code::HELLO,
            Message::Welcome { .. } => code::WELCOME,
            Message::Abort { .. } => code::ABORT,
            Message::Challenge { .. } => code::CHALLENGE,
            Message::Authenticate { .. } => code::AUTHENTICATE,
            Message::Goodbye { .. } => code::GOODBYE,
            Message::Error { .. } => code::ERROR,
            Message::Publish { .. } => code::PUBLISH,
            Message::Published { .. } => code::PUBLISHED,
            Message::Subscribe { .. } => code::SUBSCRIBE,
            Message::Subscribed { .. } => code::SUBSCRIBED,
            Message::Unsubscribe { .. } => code::UNSUBSCRIBE,
            Message::Unsubscribed { .. } => code::UNSUBSCRIBED,
            Message::Event { .. } => code::EVENT,
            Message::Call { .. } => code::CALL,
            Message::Cancel { .. } => code::CANCEL,
            Message::Result { .. } => code::RESULT,
            Message::Register { .. } => code::REGISTER,
            Message::Registered { .. } => code::REGISTERED,
            Message::Unregister { .. } => code::UNREGISTER,
            Message::Unregistered { .. } => code::UNREGISTERED,
            Message::Invocation { .. } => code::INVOCATION,
            Message::Interrupt { .. } => code::INTERRUPT,
            Message::Yield { .. } => code::YIELD,
        }
    }

    pub fn name(&self) -> &'static str {
        code_name(self.code())
    }

    /// An ERROR answering `request_type`/`request` with `error` and an optional message text.
    pub fn error(request_type: u64, request: Id, error: &str, text: Option<String>) -> Message {
        let payload = match text {
            Some(t) => Payload::new(vec![Value::String(t)], Dict::new()),
            None => Payload::default(),
        };
        Message::Error {
            request_type,
            request,
            details: Dict::new(),
            error: error.to_owned(),
            payload,
        }
    }

    /// An ABORT with `reason` and a human-readable `message` in Details, as Crossbar sends it.
    pub fn abort(reason: &str, message: impl Into<String>) -> Message {
        let mut details = Dict::new();
        details.insert("message".into(), Value::String(message.into()));
        Message::Abort {
            details,
            reason: reason.to_owned(),
        }
    }
}
