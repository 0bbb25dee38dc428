//! Reading a query string into a [`ResultSpec`], refusing what it cannot mean with a 400
//! that says which argument is wrong; and the form decoding it rests on.

use serde_json::Value;

use super::{Filter, Kind, Op, Resource, ResultSpec};
use crate::api::ApiError;

use Kind::{Bool, Int, List, Object, Text};

fn bad(msg: impl Into<String>) -> ApiError {
    ApiError::BadRequest(msg.into())
}

impl ResultSpec {
    /// Parses a query string for `resource`. Filters are refused on a single item.
    pub fn parse(
        query: Option<&str>,
        resource: &Resource,
        collection: bool,
    ) -> Result<ResultSpec, ApiError> {
        let pairs = form_pairs(query.unwrap_or(""))
            .ok_or_else(|| bad("malformed query string (bad percent-encoding)"))?;
        let mut spec = ResultSpec::default();
        let mut limit_seen = false;
        let mut offset_seen = false;
        // Filters by argument name, values in order, so `a=1&a=2` is one filter.
        let mut filter_args: Vec<(String, Vec<String>)> = Vec::new();
        for (key, value) in pairs {
            match key.as_str() {
                "field" => {
                    let fields = spec.fields.get_or_insert_with(Vec::new);
                    for name in value.split(',').filter(|s| !s.is_empty()) {
                        let (f, _) = resource
                            .field(name)
                            .ok_or_else(|| bad(format!("no such field '{name}'")))?;
                        if !fields.contains(&f) {
                            fields.push(f);
                        }
                    }
                }
                "order" => {
                    for key in value.split(',').filter(|s| !s.is_empty()) {
                        let (name, desc) = match key.strip_prefix('-') {
                            Some(n) => (n, true),
                            None => (key, false),
                        };
                        let (f, _) = resource
                            .field(name)
                            .ok_or_else(|| bad(format!("no such field '{name}'")))?;
                        spec.order.push((f, desc));
                    }
                }
                "property" if resource.field("properties").is_some() => {
                    if !spec.properties.contains(&value) {
                        spec.properties.push(value);
                    }
                }
                "limit" | "offset" => {
                    let n: usize = value.trim().parse().map_err(|_| {
                        bad(format!("invalid {key} '{value}': expected an integer >= 0"))
                    })?;
                    // The first one counts, as in Buildbot.
                    if key == "limit" && !limit_seen {
                        limit_seen = true;
                        spec.limit = Some(n);
                    } else if key == "offset" && !offset_seen {
                        offset_seen = true;
                        spec.offset = n;
                    }
                }
                _ => match filter_args.iter_mut().find(|(k, _)| *k == key) {
                    Some((_, values)) => values.push(value),
                    None => filter_args.push((key, vec![value])),
                },
            }
        }
        for (arg, raw_values) in filter_args {
            let (name, op) = match arg.rsplit_once("__") {
                Some((name, op)) => (
                    name,
                    Op::parse(op).ok_or_else(|| {
                        bad(format!(
                            "unknown filter operator '{op}' in '{arg}' \
                             (use eq, ne, lt, le, gt, ge or contains)"
                        ))
                    })?,
                ),
                None => (arg.as_str(), Op::Eq),
            };
            let (field, kind) = resource
                .field(name)
                .ok_or_else(|| bad(format!("unrecognized query parameter '{arg}'")))?;
            if !collection {
                return Err(bad(format!(
                    "this is not a collection: filter '{arg}' applies to collections only"
                )));
            }
            let values = raw_values
                .iter()
                .map(|v| filter_value(kind, op, v))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| bad(format!("invalid filter value for {arg}")))?;
            match (kind, op) {
                (Object, _) => return Err(bad(format!("field '{name}' cannot be filtered"))),
                (List, op) if op != Op::Contains => {
                    return Err(bad(format!(
                        "field '{name}' is a list: filter it with {name}__contains"
                    )))
                }
                (Int | Bool, Op::Contains) => {
                    return Err(bad(format!(
                        "contains applies to text and list fields, not '{name}'"
                    )))
                }
                _ => {}
            }
            if matches!(op, Op::Lt | Op::Le | Op::Gt | Op::Ge)
                && (values.len() != 1 || values[0].is_null())
            {
                return Err(bad(format!("{arg} takes exactly one value, not null")));
            }
            spec.filters.push(Filter { field, op, values });
        }
        Ok(spec)
    }
}

/// Reads a filter value as the field's type; `None` if it is not one.
fn filter_value(kind: Kind, op: Op, raw: &str) -> Option<Value> {
    let raw_trim = raw.trim();
    match kind {
        Int if matches!(raw_trim, "null" | "None") => Some(Value::Null),
        Int => raw_trim.parse::<i64>().ok().map(Value::from),
        Bool => match raw_trim.to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => Some(Value::Bool(true)),
            "false" | "0" | "no" | "off" => Some(Value::Bool(false)),
            _ => None,
        },
        // List elements are ids or names.
        List if op == Op::Contains => Some(
            raw_trim
                .parse::<i64>()
                .map(Value::from)
                .unwrap_or_else(|_| Value::String(raw.to_owned())),
        ),
        Text | List | Object => Some(Value::String(raw.to_owned())),
    }
}

/// `application/x-www-form-urlencoded` pairs (query strings and form bodies), in order;
/// `None` if a percent-escape is malformed or the result is not UTF-8.
pub fn form_pairs(text: &str) -> Option<Vec<(String, String)>> {
    text.split('&')
        .filter(|part| !part.is_empty())
        .map(|part| {
            let (k, v) = part.split_once('=').unwrap_or((part, ""));
            Some((percent_decode(k)?, percent_decode(v)?))
        })
        .collect()
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes.get(i + 1..i + 3)?;
                let hex = std::str::from_utf8(hex).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::query::{BUILDS, MASTERS};
    use serde_json::json;

    fn parse(q: &str) -> Result<ResultSpec, String> {
        ResultSpec::parse(Some(q), &BUILDS, true).map_err(|e| e.to_string())
    }

    #[test]
    fn parses_buildbot_arguments() {
        let s = parse("field=buildid,number&field=results&order=-buildid&order=number&limit=5&offset=2&builderid=3&builderid=4&results__ne=null&state_string__contains=a%20b+c").unwrap();
        assert_eq!(s.fields, Some(vec!["buildid", "number", "results"]));
        assert_eq!(s.order, vec![("buildid", true), ("number", false)]);
        assert_eq!((s.limit, s.offset), (Some(5), 2));
        assert_eq!(
            s.filters,
            vec![
                Filter {
                    field: "builderid",
                    op: Op::Eq,
                    values: vec![json!(3), json!(4)]
                },
                Filter {
                    field: "results",
                    op: Op::Ne,
                    values: vec![Value::Null]
                },
                Filter {
                    field: "state_string",
                    op: Op::Contains,
                    values: vec![json!("a b c")]
                },
            ]
        );
    }

    #[test]
    fn property_arguments_apply_where_there_are_properties() {
        let q = "property=owners&property=*&property=owners";
        let s = ResultSpec::parse(Some(q), &BUILDS, true).unwrap();
        assert_eq!(s.properties, vec!["owners".to_owned(), "*".to_owned()]);
        let e = ResultSpec::parse(Some("property=x"), &MASTERS, true).unwrap_err();
        assert!(e
            .to_string()
            .contains("unrecognized query parameter 'property'"));
    }

    #[test]
    fn bad_arguments_say_what_is_wrong() {
        for (q, want) in [
            ("field=nope", "no such field 'nope'"),
            ("order=-nope", "no such field 'nope'"),
            ("limit=ten", "invalid limit"),
            ("limit=-1", "invalid limit"),
            ("offset=x", "invalid offset"),
            ("buildid__like=3", "unknown filter operator 'like'"),
            ("frobnicate=1", "unrecognized query parameter 'frobnicate'"),
            ("buildid=abc", "invalid filter value for buildid"),
            ("complete=maybe", "invalid filter value for complete"),
            ("buildid__lt=null", "takes exactly one value"),
            ("buildid__contains=3", "contains applies to text"),
            ("x=%zz", "malformed query string"),
        ] {
            let err = parse(q).unwrap_err();
            assert!(err.contains(want), "{q}: {err:?} lacks {want:?}");
        }
        let single = ResultSpec::parse(Some("buildid=1"), &BUILDS, false).unwrap_err();
        assert!(single.to_string().contains("not a collection"));
    }

    #[test]
    fn form_pairs_decode() {
        assert_eq!(
            form_pairs("a=1&b=x+y%2Bz&c&=&d=%C3%A9").unwrap(),
            vec![
                ("a".into(), "1".into()),
                ("b".into(), "x y+z".into()),
                ("c".into(), "".into()),
                ("".into(), "".into()),
                ("d".into(), "é".into()),
            ]
        );
        assert_eq!(form_pairs("a=%4"), None);
        assert_eq!(form_pairs("a=%ff"), None);
    }
}
