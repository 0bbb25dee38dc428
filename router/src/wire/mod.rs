//! The WAMP wire format: values, messages, serializers and batched framing.
//!
//! Nothing here knows about sessions or sockets; the transports hand bytes in and take bytes
//! out, and the router works on [`Message`] values only.

mod message;
mod serializer;
mod value;

pub use message::{
    code, code_name, Id, Message, MessageError, Payload, PayloadParts, WireMessage, MAX_ID,
};
pub use serializer::{Codec, DecodeError, EncodeError, Serializer, SERIALIZER_COUNT};
pub use value::{BinaryForm, Dict, DictSer, ListSer, Value, ValueSeed, ValueSer};

/// Builds a [`Dict`] from `key => value` pairs.
#[macro_export]
macro_rules! dict {
    () => { $crate::wire::Dict::new() };
    ($($k:expr => $v:expr),+ $(,)?) => {{
        let mut d = $crate::wire::Dict::new();
        $( d.insert(::std::string::String::from($k), $crate::wire::Value::from($v)); )+
        d
    }};
}
