//! Evaluating a parsed [`ResultSpec`]: what the database can do goes to the store as a
//! [`Selection`] ([`ResultSpec::pushdown`]); the rest runs over JSON rows here, with Python's
//! comparison semantics ([`ResultSpec::apply`], [`Filter::matches`]).

use std::cmp::Ordering;

use serde_json::{Map, Value};

use super::{Filter, Op, Pushdown, ResultSpec, MAX_SCAN};
use crate::store::{Selection, Table};

impl ResultSpec {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::query::{BUILDERS, BUILDS, WORKERS};
    use serde_json::json;

    fn parse(q: &str) -> Result<ResultSpec, String> {
        ResultSpec::parse(Some(q), &BUILDS, true).map_err(|e| e.to_string())
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
}
