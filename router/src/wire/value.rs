//! The dynamic value carried in WAMP messages, independent of the serializer.
//!
//! WAMP payloads are JSON-like trees, with one twist: binary strings. MsgPack and CBOR carry
//! them natively; JSON carries them as a string that starts with `"\u0000"` followed by the
//! base64 of the bytes. [`Value::Bytes`] is the one in-memory form, so a payload published by a
//! JSON session reaches a MsgPack subscriber as a real `bin`, and the other way round.
//!
//! Serde's `is_human_readable` cannot tell the formats apart (ciborium reports `true`), so the
//! format is passed explicitly: [`ValueSer`] for encoding and [`ValueSeed`] for decoding.

use std::collections::BTreeMap;
use std::fmt;

use base64::Engine as _;
use bytes::Bytes;
use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Serialize, Serializer as SerdeSerializer};

/// A WAMP dictionary: string keys (the spec requires them) in a stable order.
pub type Dict = BTreeMap<String, Value>;

/// One node of a WAMP payload or details dictionary.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    /// Every integer that fits an `i64`.
    Int(i64),
    /// Only integers above `i64::MAX` (MsgPack and CBOR can carry them).
    UInt(u64),
    Float(f64),
    String(String),
    Bytes(Bytes),
    List(Vec<Value>),
    Dict(Dict),
}

impl Value {
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    /// A non-negative integer (IDs, counts, timeouts). Floats with no fraction are accepted
    /// because some JavaScript serializers write `5.0` for `5`.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Value::Int(i) if i >= 0 => Some(i as u64),
            Value::UInt(u) => Some(u),
            Value::Float(f) if f >= 0.0 && f.fract() == 0.0 && f <= 9.007_199_254_740_992e15 => {
                Some(f as u64)
            }
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Value::Bool(b) => Some(*b),
            _ => None,
        }
    }

    pub fn as_dict(&self) -> Option<&Dict> {
        match self {
            Value::Dict(d) => Some(d),
            _ => None,
        }
    }

    pub fn as_list(&self) -> Option<&[Value]> {
        match self {
            Value::List(l) => Some(l),
            _ => None,
        }
    }

    /// A short name of the value's type, for error messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bool(_) => "bool",
            Value::Int(_) | Value::UInt(_) => "integer",
            Value::Float(_) => "float",
            Value::String(_) => "string",
            Value::Bytes(_) => "bytes",
            Value::List(_) => "list",
            Value::Dict(_) => "dict",
        }
    }
}

impl From<&str> for Value {
    fn from(s: &str) -> Self {
        Value::String(s.to_owned())
    }
}
impl From<String> for Value {
    fn from(s: String) -> Self {
        Value::String(s)
    }
}
impl From<bool> for Value {
    fn from(b: bool) -> Self {
        Value::Bool(b)
    }
}
impl From<u64> for Value {
    fn from(u: u64) -> Self {
        if u <= i64::MAX as u64 {
            Value::Int(u as i64)
        } else {
            Value::UInt(u)
        }
    }
}
impl From<i64> for Value {
    fn from(i: i64) -> Self {
        Value::Int(i)
    }
}
impl From<Dict> for Value {
    fn from(d: Dict) -> Self {
        Value::Dict(d)
    }
}
impl From<Vec<Value>> for Value {
    fn from(l: Vec<Value>) -> Self {
        Value::List(l)
    }
}
impl From<Bytes> for Value {
    fn from(b: Bytes) -> Self {
        Value::Bytes(b)
    }
}

/// Whether the target format is JSON (binary as `"\0"` + base64) or a binary format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BinaryForm {
    /// JSON: bytes travel as a string with a NUL prefix and base64 body.
    Base64String,
    /// MsgPack `bin` / CBOR byte string.
    Native,
}

/// Serializes a [`Value`] for a given [`BinaryForm`].
pub struct ValueSer<'a>(pub &'a Value, pub BinaryForm);

impl Serialize for ValueSer<'_> {
    fn serialize<S: SerdeSerializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            // `none`, not `unit`: cbor4ii writes unit as an empty array.
            Value::Null => s.serialize_none(),
            Value::Bool(b) => s.serialize_bool(*b),
            Value::Int(i) => s.serialize_i64(*i),
            Value::UInt(u) => s.serialize_u64(*u),
            Value::Float(f) => s.serialize_f64(*f),
            Value::String(v) => s.serialize_str(v),
            Value::Bytes(b) => match self.1 {
                BinaryForm::Native => s.serialize_bytes(b),
                BinaryForm::Base64String => {
                    let mut text = String::with_capacity(1 + b.len() * 4 / 3 + 4);
                    text.push('\0');
                    base64::engine::general_purpose::STANDARD.encode_string(b, &mut text);
                    s.serialize_str(&text)
                }
            },
            Value::List(l) => ListSer(l, self.1).serialize(s),
            Value::Dict(d) => DictSer(d, self.1).serialize(s),
        }
    }
}

/// Serializes a list of values.
pub struct ListSer<'a>(pub &'a [Value], pub BinaryForm);

impl Serialize for ListSer<'_> {
    fn serialize<S: SerdeSerializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.0.len()))?;
        for v in self.0 {
            seq.serialize_element(&ValueSer(v, self.1))?;
        }
        seq.end()
    }
}

/// Serializes a dictionary.
pub struct DictSer<'a>(pub &'a Dict, pub BinaryForm);

impl Serialize for DictSer<'_> {
    fn serialize<S: SerdeSerializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in self.0 {
            map.serialize_entry(k, &ValueSer(v, self.1))?;
        }
        map.end()
    }
}

/// Deserializes a [`Value`], turning JSON's `"\0"`+base64 strings into bytes when asked.
#[derive(Clone, Copy)]
pub struct ValueSeed(pub BinaryForm);

impl<'de> DeserializeSeed<'de> for ValueSeed {
    type Value = Value;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(ValueVisitor(self.0))
    }
}

struct ValueVisitor(BinaryForm);

impl<'de> Visitor<'de> for ValueVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a WAMP value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Int(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_i128<E: de::Error>(self, v: i128) -> Result<Value, E> {
        if let Ok(i) = i64::try_from(v) {
            Ok(Value::Int(i))
        } else if let Ok(u) = u64::try_from(v) {
            Ok(Value::UInt(u))
        } else {
            Err(E::custom("integer out of the 64-bit range"))
        }
    }
    fn visit_u128<E: de::Error>(self, v: u128) -> Result<Value, E> {
        u64::try_from(v)
            .map(Value::from)
            .map_err(|_| E::custom("integer out of the 64-bit range"))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Value::Float(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(self.string(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(self.string(v))
    }
    fn visit_bytes<E>(self, v: &[u8]) -> Result<Value, E> {
        Ok(Value::Bytes(Bytes::copy_from_slice(v)))
    }
    fn visit_byte_buf<E>(self, v: Vec<u8>) -> Result<Value, E> {
        Ok(Value::Bytes(Bytes::from(v)))
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_some<D: de::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        ValueSeed(self.0).deserialize(d)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        // Cap the pre-allocation: a hostile length prefix must not reserve gigabytes.
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1024));
        while let Some(v) = seq.next_element_seed(ValueSeed(self.0))? {
            out.push(v);
        }
        Ok(Value::List(out))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Dict::new();
        while let Some(key) = map.next_key::<String>()? {
            let v = map.next_value_seed(ValueSeed(self.0))?;
            out.insert(key, v);
        }
        Ok(Value::Dict(out))
    }
}

impl ValueVisitor {
    fn string(&self, s: String) -> Value {
        if self.0 == BinaryForm::Base64String {
            if let Some(b64) = s.strip_prefix('\0') {
                if let Ok(raw) = base64::engine::general_purpose::STANDARD.decode(b64) {
                    return Value::Bytes(Bytes::from(raw));
                }
            }
        }
        Value::String(s)
    }
}
