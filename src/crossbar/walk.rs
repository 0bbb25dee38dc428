//! Walking a configuration tree with JSON paths, collecting every issue instead of stopping at
//! the first, so one run tells the user everything to fix.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

/// Issues found in a configuration, each naming its JSON path.
#[derive(Debug, Default, Clone)]
pub struct Report {
    /// Keys or values that would change security or routing if ignored: the node won't start.
    pub errors: Vec<String>,
    /// Cosmetic keys switchyard ignores.
    pub warnings: Vec<String>,
}

impl Report {
    pub fn render_errors(&self) -> String {
        self.errors
            .iter()
            .map(|e| format!("  error: {e}"))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// A JSON object being read.
pub type Obj = Map<String, Value>;

pub struct Walker {
    report: Report,
    /// Relative file names (TLS keys) resolve against the node directory.
    pub cbdir: PathBuf,
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

impl Walker {
    pub fn new(cbdir: &Path) -> Walker {
        Walker {
            report: Report::default(),
            cbdir: cbdir.to_owned(),
        }
    }

    pub fn into_report(self) -> Report {
        self.report
    }

    pub fn error(&mut self, path: &str, message: &str) {
        self.report.errors.push(format!("{path}: {message}"));
    }

    pub fn warning(&mut self, path: &str, message: &str) {
        self.report.warnings.push(format!("{path}: {message}"));
    }

    /// Accounts for every key of `obj`: `honored` ones are fine, `cosmetic` ones get a warning,
    /// anything else is an error.
    pub fn keys(&mut self, obj: &Obj, path: &str, honored: &[&str], cosmetic: &[&str]) {
        for key in obj.keys() {
            let p = join(path, key);
            if honored.contains(&key.as_str()) {
                continue;
            }
            if cosmetic.contains(&key.as_str()) {
                self.warning(&p, "not implemented by switchyard; ignored (cosmetic)");
            } else {
                self.error(&p, "not supported by switchyard");
            }
        }
    }

    pub fn object(&mut self, v: &Value, path: &str) -> Option<Obj> {
        match v {
            Value::Object(o) => Some(o.clone()),
            other => {
                self.error(
                    if path.is_empty() { "(top level)" } else { path },
                    &format!("must be an object, not {}", type_name(other)),
                );
                None
            }
        }
    }

    pub fn array(&mut self, v: &Value, path: &str) -> Option<Vec<Value>> {
        match v {
            Value::Array(a) => Some(a.clone()),
            other => {
                self.error(path, &format!("must be a list, not {}", type_name(other)));
                None
            }
        }
    }

    /// A required string member.
    pub fn string_at(&mut self, obj: &Obj, path: &str, key: &str) -> Option<String> {
        match obj.get(key) {
            Some(Value::String(s)) => Some(s.clone()),
            Some(other) => {
                self.error(
                    &join(path, key),
                    &format!("must be a string, not {}", type_name(other)),
                );
                None
            }
            None => {
                self.error(&join(path, key), "missing");
                None
            }
        }
    }

    /// An optional string member.
    pub fn opt_string(&mut self, obj: &Obj, path: &str, key: &str) -> Option<String> {
        match obj.get(key) {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(other) => {
                self.error(
                    &join(path, key),
                    &format!("must be a string, not {}", type_name(other)),
                );
                None
            }
        }
    }

    /// An optional boolean member (default false).
    pub fn flag(&mut self, obj: &Obj, path: &str, key: &str) -> bool {
        match obj.get(key) {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(other) => {
                self.error(
                    &join(path, key),
                    &format!("must be true or false, not {}", type_name(other)),
                );
                false
            }
        }
    }

    /// An optional non-negative integer member.
    pub fn opt_u64(&mut self, obj: &Obj, path: &str, key: &str) -> Option<u64> {
        match obj.get(key) {
            None | Some(Value::Null) => None,
            Some(v) => match v.as_u64() {
                Some(n) => Some(n),
                None => {
                    self.error(&join(path, key), "must be a non-negative integer");
                    None
                }
            },
        }
    }

    pub fn resolve(&self, file: &str) -> PathBuf {
        let p = Path::new(file);
        if p.is_absolute() {
            p.to_owned()
        } else {
            self.cbdir.join(p)
        }
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}
