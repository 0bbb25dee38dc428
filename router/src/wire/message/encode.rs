//! A [`Message`] as the positional list the wire carries, for any serde format and binary
//! form ([`WireMessage`]).

use serde::ser::SerializeSeq;
use serde::{Serialize, Serializer as SerdeSerializer};

use super::{Message, Payload};
use crate::wire::value::{BinaryForm, DictSer, ListSer};

impl Message {
    /// A serializable view of the message for one binary form.
    pub fn wire(&self, form: BinaryForm) -> WireMessage<'_> {
        WireMessage { msg: self, form }
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
