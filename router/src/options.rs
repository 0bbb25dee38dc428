//! Typed reads of a request's Options dict (PUBLISH, CALL, ...): a value of the wrong type is
//! `wamp.error.invalid_argument`, naming the key.

use crate::uri::errors;
use crate::wire::{Dict, Value};
use crate::WampError;

/// The error for option `key` not being `expected` (e.g. "a boolean").
pub(crate) fn bad_option(key: &str, expected: &str) -> WampError {
    WampError::new(
        errors::INVALID_ARGUMENT,
        format!("option '{key}' must be {expected}"),
    )
}

/// Reads a boolean option; anything but a bool is an error.
pub(crate) fn bool_option(options: &Dict, key: &str) -> Result<Option<bool>, WampError> {
    match options.get(key) {
        None => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(bad_option(key, "a boolean")),
    }
}
