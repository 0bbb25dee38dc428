//! WAMP v2 messages: the typed form, parsing from a decoded [`Value`] and serialization.
//!
//! Parsing checks every field's type and the element count, and rejects IDs outside
//! `[1, 2^53]`, so the router below never sees a malformed message. Payloads (`Arguments`,
//! `ArgumentsKw`) sit behind an `Arc` so one publication can be handed to many sessions without
//! copying it.

use std::sync::Arc;

use serde::ser::SerializeSeq;
use serde::{Serialize, Serializer as SerdeSerializer};

use super::value::{BinaryForm, Dict, DictSer, ListSer, Value};

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

/// Why a decoded value is not a valid WAMP message. The text goes into the ABORT the peer gets.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct MessageError(pub String);

fn err<T>(text: impl Into<String>) -> Result<T, MessageError> {
    Err(MessageError(text.into()))
}

/// A cursor over a message's elements that names the message and field in every error.
struct Fields {
    name: &'static str,
    items: std::vec::IntoIter<Value>,
    index: usize,
}

impl Fields {
    fn next(&mut self, field: &str) -> Result<Value, MessageError> {
        self.index += 1;
        match self.items.next() {
            Some(v) => Ok(v),
            None => err(format!(
                "{} is missing its {} (element {})",
                self.name, field, self.index
            )),
        }
    }

    fn id(&mut self, field: &str) -> Result<Id, MessageError> {
        let v = self.next(field)?;
        match v.as_u64() {
            Some(id) if (1..=MAX_ID).contains(&id) => Ok(id),
            Some(id) => err(format!(
                "{} {} {} is outside [1, 2^53]",
                self.name, field, id
            )),
            None => err(format!(
                "{} {} must be an integer, got {}",
                self.name,
                field,
                v.type_name()
            )),
        }
    }

    fn uint(&mut self, field: &str) -> Result<u64, MessageError> {
        let v = self.next(field)?;
        v.as_u64()
            .ok_or_else(|| MessageError(format!("{} {} must be an integer", self.name, field)))
    }

    fn string(&mut self, field: &str) -> Result<String, MessageError> {
        match self.next(field)? {
            Value::String(s) => Ok(s),
            other => err(format!(
                "{} {} must be a string, got {}",
                self.name,
                field,
                other.type_name()
            )),
        }
    }

    fn dict(&mut self, field: &str) -> Result<Dict, MessageError> {
        match self.next(field)? {
            Value::Dict(d) => Ok(d),
            other => err(format!(
                "{} {} must be a dict, got {}",
                self.name,
                field,
                other.type_name()
            )),
        }
    }

    /// Optional trailing `Arguments|list` and `ArgumentsKw|dict`, then nothing else.
    fn payload(&mut self) -> Result<Payload, MessageError> {
        let args = match self.items.next() {
            None => return Ok(Payload::default()),
            Some(Value::List(l)) => l,
            Some(other) => {
                return err(format!(
                    "{} Arguments must be a list, got {}",
                    self.name,
                    other.type_name()
                ))
            }
        };
        let kwargs = match self.items.next() {
            None => Dict::new(),
            Some(Value::Dict(d)) => d,
            Some(other) => {
                return err(format!(
                    "{} ArgumentsKw must be a dict, got {}",
                    self.name,
                    other.type_name()
                ))
            }
        };
        self.finish()?;
        Ok(Payload::new(args, kwargs))
    }

    fn finish(&mut self) -> Result<(), MessageError> {
        if self.items.len() > 0 {
            return err(format!(
                "{} has {} unexpected trailing element(s)",
                self.name,
                self.items.len()
            ));
        }
        Ok(())
    }
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
    /// Builds a message from a decoded value, checking its layout.
    pub fn from_value(value: Value) -> Result<Message, MessageError> {
        let items = match value {
            Value::List(items) => items,
            other => {
                return err(format!(
                    "a WAMP message must be a list, got {}",
                    other.type_name()
                ))
            }
        };
        let mut items = items.into_iter();
        let code = match items.next() {
            Some(v) => match v.as_u64() {
                Some(c) => c,
                None => return err("the message type must be an integer"),
            },
            None => return err("empty message"),
        };
        let name = code_name(code);
        if name == "UNKNOWN" {
            return err(format!("unknown message type {code}"));
        }
        let mut f = Fields {
            name,
            items,
            index: 0,
        };
        let msg = match code {
            code::HELLO => {
                let realm = f.string("Realm")?;
                let details = f.dict("Details")?;
                f.finish()?;
                Message::Hello { realm, details }
            }
            code::WELCOME => {
                let session = f.id("Session")?;
                let details = f.dict("Details")?;
                f.finish()?;
                Message::Welcome { session, details }
            }
            code::ABORT => {
                let details = f.dict("Details")?;
                let reason = f.string("Reason")?;
                // ABORT may carry a payload; the router only keeps the reason and details.
                let _ = f.payload()?;
                Message::Abort { details, reason }
            }
            code::CHALLENGE => {
                let method = f.string("AuthMethod")?;
                let extra = f.dict("Extra")?;
                f.finish()?;
                Message::Challenge { method, extra }
            }
            code::AUTHENTICATE => {
                let signature = f.string("Signature")?;
                let extra = f.dict("Extra")?;
                f.finish()?;
                Message::Authenticate { signature, extra }
            }
            code::GOODBYE => {
                let details = f.dict("Details")?;
                let reason = f.string("Reason")?;
                f.finish()?;
                Message::Goodbye { details, reason }
            }
            code::ERROR => {
                let request_type = f.uint("ReqType")?;
                let request = f.id("Request")?;
                let details = f.dict("Details")?;
                let error = f.string("Error")?;
                let payload = f.payload()?;
                Message::Error {
                    request_type,
                    request,
                    details,
                    error,
                    payload,
                }
            }
            code::PUBLISH => {
                let request = f.id("Request")?;
                let options = f.dict("Options")?;
                let topic = f.string("Topic")?;
                let payload = f.payload()?;
                Message::Publish {
                    request,
                    options,
                    topic,
                    payload,
                }
            }
            code::PUBLISHED => {
                let request = f.id("Request")?;
                let publication = f.id("Publication")?;
                f.finish()?;
                Message::Published {
                    request,
                    publication,
                }
            }
            code::SUBSCRIBE => {
                let request = f.id("Request")?;
                let options = f.dict("Options")?;
                let topic = f.string("Topic")?;
                f.finish()?;
                Message::Subscribe {
                    request,
                    options,
                    topic,
                }
            }
            code::SUBSCRIBED => {
                let request = f.id("Request")?;
                let subscription = f.id("Subscription")?;
                f.finish()?;
                Message::Subscribed {
                    request,
                    subscription,
                }
            }
            code::UNSUBSCRIBE => {
                let request = f.id("Request")?;
                let subscription = f.id("Subscription")?;
                f.finish()?;
                Message::Unsubscribe {
                    request,
                    subscription,
                }
            }
            code::UNSUBSCRIBED => {
                let request = f.uint("Request")?;
                let details = match f.items.next() {
                    None => None,
                    Some(Value::Dict(d)) => Some(d),
                    Some(_) => return err("UNSUBSCRIBED Details must be a dict"),
                };
                f.finish()?;
                Message::Unsubscribed { request, details }
            }
            code::EVENT => {
                let subscription = f.id("Subscription")?;
                let publication = f.id("Publication")?;
                let details = f.dict("Details")?;
                let payload = f.payload()?;
                Message::Event {
                    subscription,
                    publication,
                    details,
                    payload,
                }
            }
            code::CALL => {
                let request = f.id("Request")?;
                let options = f.dict("Options")?;
                let procedure = f.string("Procedure")?;
                let payload = f.payload()?;
                Message::Call {
                    request,
                    options,
                    procedure,
                    payload,
                }
            }
            code::CANCEL => {
                let request = f.id("CallRequest")?;
                let options = f.dict("Options")?;
                f.finish()?;
                Message::Cancel { request, options }
            }
            code::RESULT => {
                let request = f.id("CallRequest")?;
                let details = f.dict("Details")?;
                let payload = f.payload()?;
                Message::Result {
                    request,
                    details,
                    payload,
                }
            }
            code::REGISTER => {
                let request = f.id("Request")?;
                let options = f.dict("Options")?;
                let procedure = f.string("Procedure")?;
                f.finish()?;
                Message::Register {
                    request,
                    options,
                    procedure,
                }
            }
            code::REGISTERED => {
                let request = f.id("Request")?;
                let registration = f.id("Registration")?;
                f.finish()?;
                Message::Registered {
                    request,
                    registration,
                }
            }
            code::UNREGISTER => {
                let request = f.id("Request")?;
                let registration = f.id("Registration")?;
                f.finish()?;
                Message::Unregister {
                    request,
                    registration,
                }
            }
            code::UNREGISTERED => {
                let request = f.uint("Request")?;
                let details = match f.items.next() {
                    None => None,
                    Some(Value::Dict(d)) => Some(d),
                    Some(_) => return err("UNREGISTERED Details must be a dict"),
                };
                f.finish()?;
                Message::Unregistered { request, details }
            }
            code::INVOCATION => {
                let request = f.id("Request")?;
                let registration = f.id("Registration")?;
                let details = f.dict("Details")?;
                let payload = f.payload()?;
                Message::Invocation {
                    request,
                    registration,
                    details,
                    payload,
                }
            }
            code::INTERRUPT => {
                let request = f.id("Request")?;
                let options = f.dict("Options")?;
                f.finish()?;
                Message::Interrupt { request, options }
            }
            code::YIELD => {
                let request = f.id("InvocationRequest")?;
                let options = f.dict("Options")?;
                let payload = f.payload()?;
                Message::Yield {
                    request,
                    options,
                    payload,
                }
            }
            _ => unreachable!("code_name filtered unknown codes"),
        };
        Ok(msg)
    }

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

    /// A serializable view of the message for one binary form.
    pub fn wire(&self, form: BinaryForm) -> WireMessage<'_> {
        WireMessage { msg: self, form }
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

/// Serializes a [`Message`] as the positional list the wire carries.
pub struct WireMessage<'a> {
    msg: &'a Message,
    form: BinaryForm,
}

impl Serialize for WireMessage<'_> {
    fn serialize<S: SerdeSerializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let form = self.form;
        let payload_len = |p: &Payload| match (p.args().is_empty(), p.kwargs().is_some()) {
            (true, false) => 0,
            (false, false) => 1,
            _ => 2,
        };
        // Element count first, so length-prefixed formats (MsgPack, CBOR) write a fixed header.
        let len = 1 + match self.msg {
            Message::Hello { .. }
            | Message::Welcome { .. }
            | Message::Abort { .. }
            | Message::Challenge { .. }
            | Message::Authenticate { .. }
            | Message::Goodbye { .. }
            | Message::Published { .. }
            | Message::Subscribed { .. }
            | Message::Unsubscribe { .. }
            | Message::Cancel { .. }
            | Message::Registered { .. }
            | Message::Unregister { .. }
            | Message::Interrupt { .. } => 2,
            Message::Unsubscribed { details, .. } | Message::Unregistered { details, .. } => {
                1 + usize::from(details.is_some())
            }
            Message::Subscribe { .. } | Message::Register { .. } => 3,
            Message::Error { payload, .. } => 4 + payload_len(payload),
            Message::Publish { payload, .. }
            | Message::Event { payload, .. }
            | Message::Call { payload, .. }
            | Message::Invocation { payload, .. } => 3 + payload_len(payload),
            Message::Result { payload, .. } | Message::Yield { payload, .. } => {
                2 + payload_len(payload)
            }
        };
        let mut seq = s.serialize_seq(Some(len))?;
        seq.serialize_element(&self.msg.code())?;
        macro_rules! dict {
            ($d:expr) => {
                seq.serialize_element(&DictSer($d, form))?
            };
        }
        macro_rules! payload {
            ($p:expr) => {{
                let n = payload_len($p);
                if n >= 1 {
                    seq.serialize_element(&ListSer($p.args(), form))?;
                }
                if n == 2 {
                    seq.serialize_element(&DictSer($p.kwargs().expect("n == 2"), form))?;
                }
            }};
        }
        match self.msg {
            Message::Hello { realm, details } => {
                seq.serialize_element(realm)?;
                dict!(details);
            }
            Message::Welcome { session, details } => {
                seq.serialize_element(session)?;
                dict!(details);
            }
            Message::Abort { details, reason } | Message::Goodbye { details, reason } => {
                dict!(details);
                seq.serialize_element(reason)?;
            }
            Message::Challenge { method, extra } => {
                seq.serialize_element(method)?;
                dict!(extra);
            }
            Message::Authenticate { signature, extra } => {
                seq.serialize_element(signature)?;
                dict!(extra);
            }
            Message::Error {
                request_type,
                request,
                details,
                error,
                payload,
            } => {
                seq.serialize_element(request_type)?;
                seq.serialize_element(request)?;
                dict!(details);
                seq.serialize_element(error)?;
                payload!(payload);
            }
            Message::Publish {
                request,
                options,
                topic,
                payload,
            } => {
                seq.serialize_element(request)?;
                dict!(options);
                seq.serialize_element(topic)?;
                payload!(payload);
            }
            Message::Published {
                request,
                publication,
            } => {
                seq.serialize_element(request)?;
                seq.serialize_element(publication)?;
            }
            Message::Subscribe {
                request,
                options,
                topic,
            } => {
                seq.serialize_element(request)?;
                dict!(options);
                seq.serialize_element(topic)?;
            }
            Message::Subscribed {
                request,
                subscription,
            }
            | Message::Unsubscribe {
                request,
                subscription,
            } => {
                seq.serialize_element(request)?;
                seq.serialize_element(subscription)?;
            }
            Message::Unsubscribed { request, details }
            | Message::Unregistered { request, details } => {
                seq.serialize_element(request)?;
                if let Some(d) = details {
                    dict!(d);
                }
            }
            Message::Event {
                subscription,
                publication,
                details,
                payload,
            } => {
                seq.serialize_element(subscription)?;
                seq.serialize_element(publication)?;
                dict!(details);
                payload!(payload);
            }
            Message::Call {
                request,
                options,
                procedure,
                payload,
            } => {
                seq.serialize_element(request)?;
                dict!(options);
                seq.serialize_element(procedure)?;
                payload!(payload);
            }
            Message::Cancel { request, options } | Message::Interrupt { request, options } => {
                seq.serialize_element(request)?;
                dict!(options);
            }
            Message::Result {
                request,
                details,
                payload,
            } => {
                seq.serialize_element(request)?;
                dict!(details);
                payload!(payload);
            }
            Message::Yield {
                request,
                options,
                payload,
            } => {
                seq.serialize_element(request)?;
                dict!(options);
                payload!(payload);
            }
            Message::Register {
                request,
                options,
                procedure,
            } => {
                seq.serialize_element(request)?;
                dict!(options);
                seq.serialize_element(procedure)?;
            }
            Message::Registered {
                request,
                registration,
            }
            | Message::Unregister {
                request,
                registration,
            } => {
                seq.serialize_element(request)?;
                seq.serialize_element(registration)?;
            }
            Message::Invocation {
                request,
                registration,
                details,
                payload,
            } => {
                seq.serialize_element(request)?;
                seq.serialize_element(registration)?;
                dict!(details);
                payload!(payload);
            }
        }
        seq.end()
    }
}
