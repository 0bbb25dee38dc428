//! Read queries for the REST data API: every table as rows, and for the tables that grow with
//! every build (buildsets, build requests, builds, steps, changes) a [`Selection`] the database
//! evaluates itself, so `?limit=10` over a million builds reads ten rows and one count.
//!
//! - `select`: what the database evaluates for those tables: each [`Table`]'s whitelist of
//!   columns, conditions, ordering and paging, and the SQL they become on either backend
//! - `cluster`: the small tables, read whole: masters, builders, workers, schedulers
//! - `requests`: what asks for builds: changes, buildsets, build requests
//! - `builds`: builds and steps, and a build's properties, a step's logs and log chunks
//!
//! Times are Unix seconds and flags 0/1 in the database; rows here turn flags into `bool`
//! and JSON columns into [`serde_json::Value`].

mod builds;
mod cluster;
mod requests;
mod select;

use serde_json::Value;
use sqlx::any::AnyRow;
use sqlx::Row;

pub use builds::{BuildRow, LogChunkRow, LogRow, PropertyRow, StepRow};
pub use cluster::{BuilderRow, MasterRow, SchedulerRow, WorkerRow};
pub use requests::{BuildRequestRow, BuildsetRow, ChangeRow};
pub use select::{Cmp, Condition, OrderKey, Page, Selection, Table};

/// A JSON text column; text that is not JSON is handed out as a string rather than lost.
fn json_column(text: String) -> Value {
    serde_json::from_str(&text).unwrap_or(Value::String(text))
}

fn flag(row: &AnyRow, col: &str) -> Result<bool, sqlx::Error> {
    Ok(row.try_get::<i64, _>(col)? != 0)
}
