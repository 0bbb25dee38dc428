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
//!
//! - `resources`: each resource type's fields and their kinds
//! - `parse`: the query string read into a [`ResultSpec`] (and form decoding, which the change
//!   hook shares)
//! - `apply`: a [`ResultSpec`] split between the database and Rust, and evaluated on rows

mod apply;
mod parse;
mod resources;

use serde_json::Value;

use crate::store::{Cmp, Selection};

pub use parse::form_pairs;
pub use resources::{
    Kind, Resource, ALL, BUILDERS, BUILDREQUESTS, BUILDS, BUILDSETS, CHANGES, FORCESCHEDULERS,
    LOGCHUNKS, LOGS, MASTERS, PROPERTIES, SCHEDULERS, STEPS, WORKERS,
};

/// Most rows read to filter or sort in Rust when the database cannot do it: a query over a
/// huge table must then be narrowed by a filter the database evaluates (see `pushdown`).
pub const MAX_SCAN: usize = 10_000;

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
