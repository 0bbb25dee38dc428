//! Buildbot's query arguments on data API paths (its `ResultSpec`): `field` projects,
//! `order` sorts (`-` for descending; several keys allowed), `limit` and `offset` page, and
//! filters `name=value` (equality; repeated, any of the values) and `name__op=value` with op
//! one of `eq`, `ne`, `lt`, `le`, `gt`, `ge`, `contains`. `field` and `order` may repeat or
//! take comma-separated lists.
//!
//! Filter values are read as the field's type: integers, booleans (`true`/`false`, `1`/`0`,
//! `yes`/`no`, `on`/`off`), text as given; `null` matches a missing value in an integer
//! field. Comparisons follow Python's, as in Buildbot: `null` equals only `null`, and an
//! ordering comparison with `null` is false. `contains` is a substring test on text and a
//! membership test on lists.
//!
//! An unknown field, operator or argument, a value of the wrong type, or a bad `limit` or
//! `offset` is a 400 that says which. [`ResultSpec::pushdown`] hands what the database can
//! do to the store (see `store::query`); [`ResultSpec::apply`] does the rest on rows.

use std::cmp::Ordering;

use serde_json::{Map, Value};

use super::ApiError;
use crate::store::{Cmp, Selection, Table};

/// Most rows read to filter or sort in Rust when the database cannot do it: a query over a
/// huge table must then be narrowed by a filter the database evaluates (see `pushdown`).
pub const MAX_SCAN: usize = 10_000;

/// How a field's filter values are read and compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Int,
    Bool,
    Text,
    /// A JSON list: `contains` only.
    List,
    /// A JSON object: not filterable.
    Object,
}

/// A data API resource type: its plural (the answer's key) and its fields.
#[derive(Debug)]
pub struct Resource {
    pub plural: &'static str,
    pub fields: &'static [(&'static str, Kind)],
}

impl Resource {
    fn field(&self, name: &str) -> Option<(&'static str, Kind)> {
        self.fields.iter().copied().find(|(n, _)| *n == name)
    }
}

use Kind::{Bool, Int, List, Object, Text};

pub const MASTERS: Resource = Resource {
    plural: "masters",
    fields: &[
        ("masterid", Int),
        ("name", Text),
        ("active", Bool),
        ("last_active", Int),
        ("state", Text),
    ],
};

pub const BUILDERS: Resource = Resource {
    plural: "builders",
    fields: &[
        ("builderid", Int),
        ("name", Text),
        ("description", Text),
        ("masterids", List),
        ("tags", List),
        ("projectid", Int),
        ("description_format", Text),
        ("description_html", Text),
    ],
};

pub const WORKERS: Resource = Resource {
    plural: "workers",
    fields: &[
        ("workerid", Int),
        ("name", Text),
        ("paused", Bool),
        ("graceful", Bool),
        ("connected_to", List),
        ("configured_on", List),
        ("workerinfo", Object),
        ("pause_reason", Text),
    ],
};

pub const BUILDSETS: Resource = Resource {
    plural: "buildsets",
    fields: &[
        ("bsid", Int),
        ("external_idstring", Text),
        ("reason", Text),
        ("submitted_at", Int),
        ("complete", Bool),
        ("complete_at", Int),
        ("results", Int),
        ("parent_buildid", Int),
        ("parent_relationship", Text),
        ("rebuilt_buildid", Int),
        ("sourcestamps", List),
    ],
};

pub const BUILDREQUESTS: Resource = Resource {
    plural: "buildrequests",
    fields: &[
        ("buildrequestid", Int),
        ("buildsetid", Int),
        ("builderid", Int),
        ("priority", Int),
        ("claimed", Bool),
        ("claimed_at", Int),
        ("claimed_by_masterid", Int),
        ("complete", Bool),
        ("results", Int),
        ("submitted_at", Int),
        ("complete_at", Int),
        ("waited_for", Bool),
        ("properties", Object),
    ],
};

pub const BUILDS: Resource = Resource {
    plural: "builds",
    fields: &[
        ("buildid", Int),
        ("number", Int),
        ("builderid", Int),
        ("buildrequestid", Int),
        ("workerid", Int),
        ("masterid", Int),
        ("started_at", Int),
        ("complete", Bool),
        ("complete_at", Int),
        ("locks_duration_s", Int),
        ("state_string", Text),
        ("results", Int),
        ("properties", Object),
    ],
};

pub const STEPS: Resource = Resource {
    plural: "steps",
    fields: &[
        ("stepid", Int),
        ("number", Int),
        ("name", Text),
        ("buildid", Int),
        ("started_at", Int),
        ("complete", Bool),
        ("complete_at", Int),
        ("state_string", Text),
        ("results", Int),
        ("urls", List),
        ("hidden", Bool),
        ("locks_acquired_at", Int),
    ],
};

pub const LOGS: Resource = Resource {
    plural: "logs",
    fields: &[
        ("logid", Int),
        ("name", Text),
        ("slug", Text),
        ("stepid", Int),
        ("complete", Bool),
        ("num_lines", Int),
        ("type", Text),
    ],
};

pub const LOGCHUNKS: Resource = Resource {
    plural: "logchunks",
    fields: &[("logid", Int), ("firstline", Int), ("content", Text)],
};

pub const CHANGES: Resource = Resource {
    plural: "changes",
    fields: &[
        ("changeid", Int),
        ("author", Text),
        ("committer", Text),
        ("comments", Text),
        ("branch", Text),
        ("revision", Text),
        ("revlink", Text),
        ("when_timestamp", Int),
        ("category", Text),
        ("repository", Text),
        ("codebase", Text),
        ("project", Text),
        ("properties", Object),
        ("files", List),
        ("parent_changeids", List),
        ("sourcestamp", Object),
    ],
};

pub const SCHEDULERS: Resource = Resource {
    plural: "schedulers",
    fields: &[
        ("schedulerid", Int),
        ("name", Text),
        ("enabled", Bool),
        ("master", Object),
    ],
};

pub const FORCESCHEDULERS: Resource = Resource {
    plural: "forceschedulers",
    fields: &[
        ("name", Text),
        ("label", Text),
        ("button_name", Text),
        ("builder_names", List),
        ("all_fields", List),
        ("enabled", Bool),
    ],
};

/// Properties are one object of `name: [value, source]`: no field of it can be selected.
pub const PROPERTIES: Resource = Resource {
    plural: "properties",
    fields: &[],
};

/// Every resource type above, for `application.spec`.
pub const ALL: &[&Resource] = &[
    &MASTERS,
    &BUILDERS,
    &WORKERS,
    &BUILDSETS,
    &BUILDREQUESTS,
    &BUILDS,
    &STEPS,
    &LOGS,
    &LOGCHUNKS,
    &CHANGES,
    &SCHEDULERS,
    &FORCESCHEDULERS,
];

/// A filter operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    Contains,
}

impl Op {
    fn parse(s: &str) -> Option<Op> {
        Some(match s {
            "eq" => Op::Eq,
            "ne" => Op::Ne,
            "lt" => Op::Lt,
            "le" => Op::Le,
            "gt" => Op::Gt,
            "ge" => Op::Ge,
            "contains" => Op::Contains,
            _ => return None,
        })
    }

    fn cmp(self) -> Option<Cmp> {
        Some(match self {
            Op::Eq => Cmp::Eq,
            Op::Ne => Cmp::Ne,
            Op::Lt => Cmp::Lt,
            Op::Le => Cmp::Le,
            Op::Gt => Cmp::Gt,
            Op::Ge => Cmp::Ge,
            Op::Contains => return None,
        })
    }
}

/// `field op values`: several values mean any of them (`eq`, `contains`) or none (`ne`).
#[derive(Debug, Clone, PartialEq)]
pub struct Filter {
    pub field: &'static str,
    pub op: Op,
    pub values: Vec<Value>,
}

/// The parsed query arguments of one request.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ResultSpec {
    /// Keep only these fields (`None`: all).
    pub fields: Option<Vec<&'static str>>,
    /// Sort keys, `true` for descending.
    pub order: Vec<(&'static str, bool)>,
    pub limit: Option<usize>,
    pub offset: usize,
    pub filters: Vec<Filter>,
    /// `property=NAME` (repeatable, `*` for all): the builds' properties to include, as
    /// Buildbot's `properties` field.
    pub properties: Vec<String>,
}

/// What the database does for a query, and what is left for Rust.
#[derive(Debug)]
pub struct Pushdown {
    pub selection: Selection,
    /// Applied to the rows the store returns.
    pub rest: ResultSpec,
    /// Whether the store paged (its `total` is the answer's); otherwise at most
    /// `MAX_SCAN + 1` matching rows were read and `rest` filters, sorts and pages them.
    pub paged: bool,
}

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

    /// Filters, sorts, pages and projects `rows`; returns them and the count before paging.
    pub fn apply(&self, rows: Vec<Value>) -> (Vec<Value>, usize) {
        let mut rows: Vec<Value> = rows
            .into_iter()
            .filter(|row| self.filters.iter().all(|f| f.matches(row)))
            .collect();
        if !self.order.is_empty() {
            // Stable: rows come in id order, which breaks ties as the database does.
            rows.sort_by(|a, b| {
                self.order
                    .iter()
                    .map(|(field, desc)| {
                        let o = sort_cmp(&a[*field], &b[*field]);
                        if *desc {
                            o.reverse()
                        } else {
                            o
                        }
                    })
                    .find(|o| *o != Ordering::Equal)
                    .unwrap_or(Ordering::Equal)
            });
        }
        let total = rows.len();
        let rows = rows
            .into_iter()
            .skip(self.offset)
            .take(self.limit.unwrap_or(usize::MAX))
            .map(|r| self.project(r))
            .collect();
        (rows, total)
    }

    /// Keeps the selected fields of one row.
    pub fn project(&self, row: Value) -> Value {
        match (&self.fields, row) {
            (Some(fields), Value::Object(mut map)) => {
                let kept: Map<String, Value> = fields
                    .iter()
                    .filter_map(|f| map.remove(*f).map(|v| (f.to_string(), v)))
                    .collect();
                Value::Object(kept)
            }
            (_, row) => row,
        }
    }

    /// Splits the query between the database and Rust for a table that can be huge: every
    /// filter the database can evaluate goes to it; if that is all of them and it can also
    /// sort, it sorts and pages too (the cheap case: `?limit=10`, `?builderid=3&order=-number`).
    /// Otherwise it returns at most `MAX_SCAN + 1` rows and Rust does the rest. `extra`
    /// are conditions of the path (`/builders/3/builds`).
    pub fn pushdown(&self, table: Table, extra: Vec<crate::store::Condition>) -> Pushdown {
        let mut conditions = extra;
        let mut rest_filters = Vec::new();
        for f in &self.filters {
            match f
                .op
                .cmp()
                .and_then(|c| table.condition(f.field, c, &f.values))
            {
                Some(c) => conditions.push(c),
                None => rest_filters.push(f.clone()),
            }
        }
        let order: Option<Vec<_>> = self
            .order
            .iter()
            .map(|(f, desc)| table.order_key(f, *desc))
            .collect();
        match order {
            Some(order) if rest_filters.is_empty() => Pushdown {
                selection: Selection {
                    conditions,
                    order,
                    limit: self.limit.map(|l| l.min(i64::MAX as usize) as i64),
                    offset: self.offset.min(i64::MAX as usize) as i64,
                },
                rest: ResultSpec {
                    fields: self.fields.clone(),
                    ..ResultSpec::default()
                },
                paged: true,
            },
            _ => Pushdown {
                selection: Selection {
                    conditions,
                    order: Vec::new(),
                    limit: Some(MAX_SCAN as i64 + 1),
                    offset: 0,
                },
                rest: ResultSpec {
                    filters: rest_filters,
                    ..self.clone()
                },
                paged: false,
            },
        }
    }
}

impl Filter {
    pub fn matches(&self, row: &Value) -> bool {
        let actual = row.get(self.field).unwrap_or(&Value::Null);
        let eq = |v: &Value| compare(actual, v) == Some(Ordering::Equal);
        match self.op {
            Op::Eq => self.values.iter().any(eq),
            Op::Ne => !self.values.iter().any(eq),
            // The value is never null (see `parse`): a null field compares as false.
            Op::Lt => compare(actual, &self.values[0]) == Some(Ordering::Less),
            Op::Le => matches!(
                compare(actual, &self.values[0]),
                Some(Ordering::Less | Ordering::Equal)
            ),
            Op::Gt => compare(actual, &self.values[0]) == Some(Ordering::Greater),
            Op::Ge => matches!(
                compare(actual, &self.values[0]),
                Some(Ordering::Greater | Ordering::Equal)
            ),
            Op::Contains => self.values.iter().any(|v| match (actual, v) {
                (Value::String(s), Value::String(needle)) => s.contains(needle.as_str()),
                (Value::Array(items), v) => items.iter().any(|i| loose_eq(i, v)),
                _ => false,
            }),
        }
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

/// Compares like values (numbers, strings, booleans; `null` only equals `null`).
fn compare(a: &Value, b: &Value) -> Option<Ordering> {
    match (a, b) {
        (Value::Null, Value::Null) => Some(Ordering::Equal),
        (Value::Number(x), Value::Number(y)) => match (x.as_i64(), y.as_i64()) {
            (Some(x), Some(y)) => Some(x.cmp(&y)),
            _ => x.as_f64()?.partial_cmp(&y.as_f64()?),
        },
        (Value::String(x), Value::String(y)) => Some(x.cmp(y)),
        (Value::Bool(x), Value::Bool(y)) => Some(x.cmp(y)),
        _ => None,
    }
}

/// Equality for list membership. Beyond Buildbot (which tests `value in list`), a list of
/// references contains an id one of them holds: `connected_to__contains=1` matches
/// `[{"masterid": 1}]`.
fn loose_eq(item: &Value, v: &Value) -> bool {
    if compare(item, v) == Some(Ordering::Equal) {
        return true;
    }
    match item {
        Value::Object(map) => map.values().any(|x| compare(x, v) == Some(Ordering::Equal)),
        _ => false,
    }
}

/// Sort order: `null` first, then like values compared, unlike ones by type.
fn sort_cmp(a: &Value, b: &Value) -> Ordering {
    fn rank(v: &Value) -> u8 {
        match v {
            Value::Null => 0,
            Value::Bool(_) => 1,
            Value::Number(_) => 2,
            Value::String(_) => 3,
            Value::Array(_) => 4,
            Value::Object(_) => 5,
        }
    }
    compare(a, b).unwrap_or_else(|| rank(a).cmp(&rank(b)))
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
    fn applies_filters_order_paging_and_projection() {
        let rows = vec![
            json!({"buildid": 1, "results": 0, "state_string": "done", "complete": true}),
            json!({"buildid": 2, "results": null, "state_string": "building", "complete": false}),
            json!({"buildid": 3, "results": 2, "state_string": "failed", "complete": true}),
            json!({"buildid": 4, "results": 0, "state_string": "done", "complete": true}),
        ];
        let s = parse("results__ne=2&order=-results&order=-buildid&limit=2&field=buildid").unwrap();
        let (out, total) = s.apply(rows.clone());
        // null != 2 holds; descending puts null last.
        assert_eq!(total, 3);
        assert_eq!(out, vec![json!({"buildid": 4}), json!({"buildid": 1})]);

        let s = parse("results__lt=1").unwrap();
        assert_eq!(s.apply(rows.clone()).1, 2, "null < 1 is false");
        let s = parse("results=null&complete=false").unwrap();
        assert_eq!(s.apply(rows.clone()).0[0]["buildid"], 2);
        let s = parse("state_string__contains=ail&state_string__contains=uild").unwrap();
        assert_eq!(s.apply(rows.clone()).1, 2);
        let s = parse("offset=3&order=buildid").unwrap();
        assert_eq!(
            s.apply(rows).0,
            vec![json!({"buildid": 4, "results": 0, "state_string": "done", "complete": true})]
        );
    }

    #[test]
    fn list_fields_take_contains() {
        let s = ResultSpec::parse(Some("masterids__contains=2"), &BUILDERS, true).unwrap();
        let rows = vec![
            json!({"builderid": 1, "masterids": [1]}),
            json!({"builderid": 2, "masterids": [1, 2]}),
        ];
        assert_eq!(s.apply(rows).0[0]["builderid"], 2);
        let s = ResultSpec::parse(Some("connected_to__contains=7"), &WORKERS, true).unwrap();
        let rows = vec![json!({"workerid": 1, "connected_to": [{"masterid": 7}]})];
        assert_eq!(s.apply(rows).1, 1);
        assert!(ResultSpec::parse(Some("masterids=2"), &BUILDERS, true).is_err());
    }

    #[test]
    fn pushdown_pages_in_the_database_only_when_it_can_do_everything() {
        let p = parse("builderid=3&complete=true&order=-buildid&limit=10&offset=5")
            .unwrap()
            .pushdown(Table::Builds, Vec::new());
        assert!(p.paged);
        assert_eq!(p.selection.conditions.len(), 2);
        assert_eq!((p.selection.limit, p.selection.offset), (Some(10), 5));
        assert!(p.rest.filters.is_empty() && p.rest.order.is_empty());

        let p = parse("builderid=3&state_string__contains=x&limit=10")
            .unwrap()
            .pushdown(Table::Builds, Vec::new());
        assert!(!p.paged);
        assert_eq!(
            p.selection.conditions.len(),
            1,
            "builderid still goes to SQL"
        );
        assert_eq!(p.selection.limit, Some(MAX_SCAN as i64 + 1));
        assert_eq!(p.rest.filters.len(), 1);
        assert_eq!(p.rest.limit, Some(10));

        let p = parse("order=state_string")
            .unwrap()
            .pushdown(Table::Builds, Vec::new());
        assert!(!p.paged, "text ordering stays in Rust");
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
