//! `POST /change_hook/base`: a change in Buildbot's `base` dialect, handed to
//! [`crate::control::Control::add_change`].
//!
//! The body is `application/x-www-form-urlencoded` (as `curl -d` and most scripts post it)
//! or `application/json`, with fields `author` (required; `who` is accepted too),
//! `committer`, `comments`, `branch`, `revision`, `revlink`, `when_timestamp` (Unix seconds;
//! `when` too), `category`, `repository`, `codebase`, `project`, `properties` (a JSON
//! object: JSON-encoded text in a form) and `files` (a JSON list of paths: JSON-encoded text
//! in a form). Form bodies take the first value of a repeated field.
//!
//! Differences from Buildbot, on purpose: the hook needs credentials like the control calls
//! (Buildbot's is open unless the web server protects it), and it answers
//! `{"changeids": [id], "buildsets": [bsid, ...]}` where Buildbot answers 200 with an empty
//! body. Only the `base` dialect exists; others are 404.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::Response;
use axum::Extension;
use bytes::Bytes;
use serde_json::{json, Map, Value};

use super::query::form_pairs;
use super::{auth, json_response, ApiError, ApiState, Peer};
use crate::control::NewChange;

pub async fn change_hook(
    State(st): State<Arc<ApiState>>,
    Path(dialect): Path<String>,
    peer: Option<Extension<Peer>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    if let Err(e) = auth::for_control(&headers, &st.config.api) {
        auth::log_refusal(peer.map(|p| p.0 .0), "/change_hook", &e);
        return Err(e.into());
    }
    if dialect != "base" {
        return Err(ApiError::NotFound(format!(
            "no change hook dialect {dialect:?} (this master has: base)"
        )));
    }
    let fields = fields(&headers, &body)?;
    let change = new_change(&fields)?;
    let outcome = st.control.add_change(change).await?;
    let buildsets: Vec<i64> = outcome.buildsets.iter().map(|b| b.buildset).collect();
    Ok(json_response(
        StatusCode::OK,
        &json!({ "changeids": [outcome.changeid], "buildsets": buildsets }),
    ))
}

/// How a field arrived: form text must be decoded, JSON is already typed.
enum Fields {
    Form(Vec<(String, String)>),
    Json(Map<String, Value>),
}

fn fields(headers: &HeaderMap, body: &[u8]) -> Result<Fields, ApiError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/x-www-form-urlencoded");
    let mime = content_type.split(';').next().unwrap_or("").trim();
    if mime.eq_ignore_ascii_case("application/json") {
        match serde_json::from_slice(body) {
            Ok(Value::Object(map)) => Ok(Fields::Json(map)),
            Ok(_) => Err(ApiError::BadRequest(
                "the JSON body must be an object".into(),
            )),
            Err(e) => Err(ApiError::BadRequest(format!("JSON parse error: {e}"))),
        }
    } else if mime.eq_ignore_ascii_case("application/x-www-form-urlencoded") {
        let text = std::str::from_utf8(body)
            .map_err(|_| ApiError::BadRequest("the form body is not UTF-8".into()))?;
        form_pairs(text)
            .map(Fields::Form)
            .ok_or_else(|| ApiError::BadRequest("malformed form body".into()))
    } else {
        Err(ApiError::UnsupportedMediaType(format!(
            "unsupported content type {mime:?}: send application/x-www-form-urlencoded or \
             application/json"
        )))
    }
}

impl Fields {
    /// A field as JSON: form text stays text.
    fn get(&self, name: &str) -> Option<Value> {
        match self {
            Fields::Form(pairs) => pairs
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| Value::String(v.clone())),
            Fields::Json(map) => map.get(name).cloned(),
        }
    }

    /// A text field; JSON numbers and booleans are written out (a revision may be a number).
    fn text(&self, name: &str) -> Result<Option<String>, ApiError> {
        match self.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(v @ (Value::Number(_) | Value::Bool(_))) => Ok(Some(v.to_string())),
            Some(_) => Err(ApiError::BadRequest(format!("'{name}' must be text"))),
        }
    }

    /// A structured field: JSON as is, or JSON-encoded text (always, in a form).
    fn structured(&self, name: &str) -> Result<Option<Value>, ApiError> {
        match self.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
            Some(Value::String(s)) => serde_json::from_str(&s)
                .map(Some)
                .map_err(|e| ApiError::BadRequest(format!("'{name}' is not valid JSON: {e}"))),
            Some(v) => Ok(Some(v)),
        }
    }
}

fn new_change(f: &Fields) -> Result<NewChange, ApiError> {
    let author = match f.text("author")? {
        Some(a) if !a.trim().is_empty() => a,
        _ => f
            .text("who")?
            .filter(|a| !a.trim().is_empty())
            .ok_or_else(|| ApiError::BadRequest("'author' is required".into()))?,
    };
    let when = match f.get("when_timestamp").or_else(|| f.get("when")) {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) => Some(
            n.as_i64()
                .or_else(|| n.as_f64().map(|x| x as i64))
                .ok_or_else(|| ApiError::BadRequest("'when_timestamp' out of range".into()))?,
        ),
        Some(Value::String(s)) if s.trim().is_empty() => None,
        Some(Value::String(s)) => Some(parse_time(&s)?),
        Some(_) => {
            return Err(ApiError::BadRequest(
                "'when_timestamp' must be Unix seconds".into(),
            ))
        }
    };
    let properties: BTreeMap<String, Value> = match f.structured("properties")? {
        None => BTreeMap::new(),
        Some(Value::Object(map)) => map.into_iter().collect(),
        Some(_) => {
            return Err(ApiError::BadRequest(
                "'properties' must be a JSON object".into(),
            ))
        }
    };
    let files: Vec<String> = match f.structured("files")? {
        None => Vec::new(),
        Some(Value::Array(items)) => items
            .into_iter()
            .map(|v| match v {
                Value::String(s) => Some(s),
                _ => None,
            })
            .collect::<Option<_>>()
            .ok_or_else(|| ApiError::BadRequest("'files' must be a JSON list of paths".into()))?,
        Some(_) => {
            return Err(ApiError::BadRequest(
                "'files' must be a JSON list of paths".into(),
            ))
        }
    };
    Ok(NewChange {
        author,
        committer: f.text("committer")?,
        comments: f.text("comments")?.unwrap_or_default(),
        branch: f.text("branch")?,
        revision: f.text("revision")?,
        revlink: f.text("revlink")?,
        when_timestamp: when,
        category: f.text("category")?,
        repository: f.text("repository")?.unwrap_or_default(),
        codebase: f.text("codebase")?.unwrap_or_default(),
        project: f.text("project")?.unwrap_or_default(),
        properties,
        files,
    })
}

/// Unix seconds, whole or fractional (Buildbot takes a float).
fn parse_time(s: &str) -> Result<i64, ApiError> {
    let s = s.trim();
    s.parse::<i64>()
        .ok()
        .or_else(|| {
            s.parse::<f64>()
                .ok()
                .filter(|x| x.is_finite() && x.abs() < 1e15)
                .map(|x| x as i64)
        })
        .ok_or_else(|| ApiError::BadRequest(format!("'when_timestamp' {s:?} is not Unix seconds")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form(body: &str) -> Fields {
        Fields::Form(form_pairs(body).unwrap())
    }

    #[test]
    fn form_fields_make_a_change() {
        let c = new_change(&form(
            "author=alice&comments=fix+it&branch=main&revision=abc&when_timestamp=1700000000.5\
             &repository=https%3A%2F%2Fx%2Fr.git&properties=%7B%22a%22%3A1%7D&files=%5B%22f.c%22%5D",
        ))
        .unwrap();
        assert_eq!(c.author, "alice");
        assert_eq!(c.comments, "fix it");
        assert_eq!(c.branch.as_deref(), Some("main"));
        assert_eq!(c.when_timestamp, Some(1_700_000_000));
        assert_eq!(c.repository, "https://x/r.git");
        assert_eq!(c.properties["a"], json!(1));
        assert_eq!(c.files, ["f.c"]);
        assert_eq!(c.project, "");
    }

    #[test]
    fn bad_fields_are_named() {
        for (body, want) in [
            ("comments=x", "'author' is required"),
            ("author=", "'author' is required"),
            (
                "author=a&properties=%5B1%5D",
                "'properties' must be a JSON object",
            ),
            (
                "author=a&properties=%7Bnope",
                "'properties' is not valid JSON",
            ),
            ("author=a&files=%5B1%5D", "'files' must be a JSON list"),
            ("author=a&when_timestamp=yesterday", "is not Unix seconds"),
        ] {
            let err = new_change(&form(body)).unwrap_err().to_string();
            assert!(err.contains(want), "{body}: {err}");
        }
        let json = Fields::Json(
            serde_json::from_str(
                r#"{"who": "bob", "revision": 42, "files": ["a"], "properties": {"p": [1]}}"#,
            )
            .unwrap(),
        );
        let c = new_change(&json).unwrap();
        assert_eq!(
            (c.author.as_str(), c.revision.as_deref()),
            ("bob", Some("42"))
        );
        assert_eq!(c.properties["p"], json!([1]));
    }
}
