//! Parsing a decoded [`Value`] into a [`Message`]: every field's type, the element count and
//! the ID range checked, each error naming the message and the field.

use super::{code, code_name, Id, Message, Payload, MAX_ID};
use crate::wire::value::{Dict, Value};

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
}
