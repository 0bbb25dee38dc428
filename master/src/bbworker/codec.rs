//! The msgpack frames of Buildbot's worker protocol (`msgpack_experimental_v7`), decoded
//! into typed messages and encoded from them.
//!
//! Every binary WebSocket frame is one msgpack map with `op` and `seq_number`. Each side
//! numbers its own requests; the other side answers each with `{"op": "response",
//! "seq_number": N, "result": ..., "is_exception": true?}`. The dynamic parts (`args`,
//! `result`) are carried as [`serde_json::Value`]: the worker sends strings as msgpack `str`
//! and never sends binary data for the commands this bridge starts (a frame holding a `bin`,
//! a non-string map key or anything else that is not JSON-like is refused as malformed).

use serde_json::{json, Map, Value as Json};

/// A frame from the worker.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum FromWorker {
    /// The answer to one of our requests.
    Response {
        seq: u64,
        result: Json,
        is_exception: bool,
    },
    /// Progress of a command: `(key, value)` pairs such as `("stdout", [text, [...], [...]])`,
    /// `("rc", 0)`, `("elapsed", 1.5)`, `("failure_reason", "timeout")`.
    Update {
        seq: u64,
        command_id: String,
        args: Vec<(String, Json)>,
    },
    /// A command finished; `failure` is set when it failed to run at all.
    Complete {
        seq: u64,
        command_id: String,
        failure: Option<String>,
    },
    /// Any other request (the file-transfer ops, which belong to commands this bridge never
    /// starts): answered with an exception.
    Other { seq: u64, op: String },
}

/// Why a frame is not a valid message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum CodecError {
    #[error("not msgpack, or not a map with string keys of JSON-like values: {0}")]
    Decode(String),
    #[error("the message has no `{0}` of the right type")]
    Missing(&'static str),
}

fn field<'a>(m: &'a Map<String, Json>, key: &'static str) -> Result<&'a Json, CodecError> {
    m.get(key).ok_or(CodecError::Missing(key))
}

fn command_id(m: &Map<String, Json>) -> Result<String, CodecError> {
    match field(m, "command_id")? {
        Json::String(s) => Ok(s.clone()),
        Json::Number(n) => Ok(n.to_string()),
        _ => Err(CodecError::Missing("command_id")),
    }
}

/// Decodes one frame from the worker.
pub(crate) fn decode(frame: &[u8]) -> Result<FromWorker, CodecError> {
    let value: Json =
        rmp_serde::from_slice(frame).map_err(|e| CodecError::Decode(e.to_string()))?;
    let Json::Object(m) = value else {
        return Err(CodecError::Decode("the frame is not a map".into()));
    };
    let seq = field(&m, "seq_number")?
        .as_u64()
        .ok_or(CodecError::Missing("seq_number"))?;
    let op = field(&m, "op")?.as_str().ok_or(CodecError::Missing("op"))?;
    Ok(match op {
        "response" => FromWorker::Response {
            seq,
            result: m.get("result").cloned().unwrap_or(Json::Null),
            is_exception: m
                .get("is_exception")
                .is_some_and(|v| v != &Json::Bool(false)),
        },
        "update" => {
            let Json::Array(items) = field(&m, "args")? else {
                return Err(CodecError::Missing("args"));
            };
            let mut args = Vec::with_capacity(items.len());
            for item in items {
                match item.as_array().map(Vec::as_slice) {
                    Some([Json::String(k), v]) => args.push((k.clone(), v.clone())),
                    _ => return Err(CodecError::Missing("args")),
                }
            }
            FromWorker::Update {
                seq,
                command_id: command_id(&m)?,
                args,
            }
        }
        "complete" => FromWorker::Complete {
            seq,
            command_id: command_id(&m)?,
            failure: match m.get("args") {
                None | Some(Json::Null) => None,
                Some(Json::String(s)) => Some(s.clone()),
                Some(other) => Some(other.to_string()),
            },
        },
        other => FromWorker::Other {
            seq,
            op: other.to_owned(),
        },
    })
}

fn encode(value: &Json) -> Vec<u8> {
    // Serializing a JSON value with string keys cannot fail.
    rmp_serde::to_vec_named(value).unwrap_or_default()
}

/// A request to the worker: `op` with `seq_number` and the fields of `rest` (a JSON object).
pub(crate) fn request(op: &str, seq: u64, rest: Json) -> Vec<u8> {
    let mut m = match rest {
        Json::Object(m) => m,
        _ => Map::new(),
    };
    m.insert("op".into(), Json::from(op));
    m.insert("seq_number".into(), Json::from(seq));
    encode(&Json::Object(m))
}

/// Our answer to one of the worker's requests.
pub(crate) fn response(seq: u64, error: Option<&str>) -> Vec<u8> {
    let value = match error {
        None => json!({"op": "response", "seq_number": seq, "result": null}),
        Some(e) => {
            json!({"op": "response", "seq_number": seq, "result": e, "is_exception": true})
        }
    };
    encode(&value)
}

/// The text of a `stdout`/`stderr` update value: `[text, [newline indexes], [times]]` from
/// buildbot-worker's line splitter, or a bare string.
pub(crate) fn output_text(v: &Json) -> Option<&str> {
    match v {
        Json::String(s) => Some(s),
        Json::Array(a) => a.first().and_then(Json::as_str),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pack(v: Json) -> Vec<u8> {
        rmp_serde::to_vec_named(&v).unwrap()
    }

    #[test]
    fn decodes_the_worker_messages() {
        let upd = pack(json!({"op": "update", "seq_number": 3, "command_id": "7",
            "args": [["stdout", ["a\nb\n", [1, 3], [0.5, 0.5]]], ["rc", 0]]}));
        match decode(&upd).unwrap() {
            FromWorker::Update {
                seq,
                command_id,
                args,
            } => {
                assert_eq!((seq, command_id.as_str()), (3, "7"));
                assert_eq!(output_text(&args[0].1), Some("a\nb\n"));
                assert_eq!(args[1], ("rc".to_string(), json!(0)));
            }
            other => panic!("{other:?}"),
        }
        let c = pack(json!({"op": "complete", "seq_number": 4, "command_id": "7", "args": null}));
        assert_eq!(
            decode(&c).unwrap(),
            FromWorker::Complete {
                seq: 4,
                command_id: "7".into(),
                failure: None
            }
        );
        let r = pack(json!({"op": "response", "seq_number": 0, "result": "boom",
            "is_exception": true}));
        assert!(matches!(
            decode(&r).unwrap(),
            FromWorker::Response {
                seq: 0,
                is_exception: true,
                ..
            }
        ));
        let o = pack(json!({"op": "update_read_file", "seq_number": 9, "command_id": "1"}));
        assert!(matches!(
            decode(&o).unwrap(),
            FromWorker::Other { seq: 9, .. }
        ));
    }

    #[test]
    fn refuses_malformed_frames() {
        assert!(matches!(decode(b"\xc1"), Err(CodecError::Decode(_))));
        assert!(matches!(
            decode(&pack(json!([1, 2]))),
            Err(CodecError::Decode(_))
        ));
        assert_eq!(
            decode(&pack(json!({"op": "update"}))),
            Err(CodecError::Missing("seq_number"))
        );
        assert_eq!(
            decode(&pack(
                json!({"op": "update", "seq_number": 1, "command_id": "1",
                "args": [["stdout"]]})
            )),
            Err(CodecError::Missing("args"))
        );
        // A binary string is not JSON-like.
        // {"op": bin "x"}: fixmap(1), fixstr(2) "op", bin8(1) "x".
        assert!(matches!(
            decode(b"\x81\xa2op\xc4\x01x"),
            Err(CodecError::Decode(_))
        ));
    }

    #[test]
    fn random_and_truncated_frames_never_panic() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(13);
        let valid = pack(json!({"op": "update", "seq_number": 3, "command_id": "7",
            "args": [["stdout", ["a\nb\n", [1, 3], [0.5, 0.5]]], ["rc", 0]]}));
        for i in 0..valid.len() {
            let _ = decode(&valid[..i]);
        }
        for _ in 0..5000 {
            let n = rng.random_range(0..64);
            let mut frame: Vec<u8> = (0..n).map(|_| rng.random()).collect();
            let _ = decode(&frame);
            // Valid frames with one byte flipped.
            frame = valid.clone();
            let at = rng.random_range(0..frame.len());
            frame[at] = rng.random();
            let _ = decode(&frame);
        }
    }

    #[test]
    fn encodes_requests_and_responses() {
        let r: Json = rmp_serde::from_slice(&request(
            "interrupt_command",
            5,
            json!({"command_id": "2", "why": "x"}),
        ))
        .unwrap();
        assert_eq!(
            r,
            json!({"op": "interrupt_command", "seq_number": 5, "command_id": "2", "why": "x"})
        );
        let ok: Json = rmp_serde::from_slice(&response(3, None)).unwrap();
        assert_eq!(
            ok,
            json!({"op": "response", "seq_number": 3, "result": null})
        );
        let err: Json = rmp_serde::from_slice(&response(3, Some("no"))).unwrap();
        assert_eq!(err["is_exception"], json!(true));
    }
}
