//! What asks for builds: changes, buildsets and build requests (with their claims), each
//! read as a page of a [`Selection`].

use serde_json::Value;
use sqlx::any::AnyRow;
use sqlx::Row;

use super::{flag, json_column, Page, Selection, Table};
use crate::store::{BuildId, BuildRequestId, BuilderId, BuildsetId, MasterId, Store};
use crate::StoreError;

/// A row of `changes`.
#[derive(Debug, Clone, PartialEq)]
pub struct ChangeRow {
    pub id: i64,
    pub author: String,
    pub committer: Option<String>,
    pub comments: String,
    pub branch: Option<String>,
    pub revision: Option<String>,
    pub revlink: Option<String>,
    pub when_timestamp: i64,
    pub category: Option<String>,
    pub repository: String,
    pub codebase: String,
    pub project: String,
    /// `{"name": [value, source]}`.
    pub properties: Value,
    /// `["path", ...]`.
    pub files: Value,
}

/// A row of `buildsets`.
#[derive(Debug, Clone, PartialEq)]
pub struct BuildsetRow {
    pub id: BuildsetId,
    pub external_idstring: Option<String>,
    pub reason: Option<String>,
    pub submitted_at: i64,
    pub complete: bool,
    pub complete_at: Option<i64>,
    pub results: Option<i64>,
    pub parent_buildid: Option<BuildId>,
    pub parent_relationship: Option<String>,
}

/// A row of `buildrequests` with its claim.
#[derive(Debug, Clone, PartialEq)]
pub struct BuildRequestRow {
    pub id: BuildRequestId,
    pub buildsetid: BuildsetId,
    pub builderid: BuilderId,
    pub priority: i64,
    pub complete: bool,
    pub results: Option<i64>,
    pub submitted_at: i64,
    pub complete_at: Option<i64>,
    pub waited_for: bool,
    pub claimed_by_masterid: Option<MasterId>,
    pub claimed_at: Option<i64>,
}

fn change_from_row(row: &AnyRow) -> Result<ChangeRow, sqlx::Error> {
    Ok(ChangeRow {
        id: row.try_get("changeid")?,
        author: row.try_get("author")?,
        committer: row.try_get("committer")?,
        comments: row.try_get("comments")?,
        branch: row.try_get("branch")?,
        revision: row.try_get("revision")?,
        revlink: row.try_get("revlink")?,
        when_timestamp: row.try_get("when_timestamp")?,
        category: row.try_get("category")?,
        repository: row.try_get("repository")?,
        codebase: row.try_get("codebase")?,
        project: row.try_get("project")?,
        properties: json_column(row.try_get("properties")?),
        files: json_column(row.try_get("files")?),
    })
}

fn buildset_from_row(row: &AnyRow) -> Result<BuildsetRow, sqlx::Error> {
    Ok(BuildsetRow {
        id: row.try_get("id")?,
        external_idstring: row.try_get("external_idstring")?,
        reason: row.try_get("reason")?,
        submitted_at: row.try_get("submitted_at")?,
        complete: flag(row, "complete")?,
        complete_at: row.try_get("complete_at")?,
        results: row.try_get("results")?,
        parent_buildid: row.try_get("parent_buildid")?,
        parent_relationship: row.try_get("parent_relationship")?,
    })
}

fn buildrequest_from_row(row: &AnyRow) -> Result<BuildRequestRow, sqlx::Error> {
    Ok(BuildRequestRow {
        id: row.try_get("id")?,
        buildsetid: row.try_get("buildsetid")?,
        builderid: row.try_get("builderid")?,
        priority: row.try_get("priority")?,
        complete: flag(row, "complete")?,
        results: row.try_get("results")?,
        submitted_at: row.try_get("submitted_at")?,
        complete_at: row.try_get("complete_at")?,
        waited_for: flag(row, "waited_for")?,
        claimed_by_masterid: row.try_get("claimed_by")?,
        claimed_at: row.try_get("claimed_at")?,
    })
}

impl Store {
    pub async fn select_buildsets(
        &self,
        selection: &Selection,
    ) -> Result<Page<BuildsetRow>, StoreError> {
        self.select(
            "select_buildsets",
            Table::Buildsets,
            selection,
            buildset_from_row,
        )
        .await
    }

    pub async fn select_buildrequests(
        &self,
        selection: &Selection,
    ) -> Result<Page<BuildRequestRow>, StoreError> {
        self.select(
            "select_buildrequests",
            Table::BuildRequests,
            selection,
            buildrequest_from_row,
        )
        .await
    }

    pub async fn select_changes(
        &self,
        selection: &Selection,
    ) -> Result<Page<ChangeRow>, StoreError> {
        self.select("select_changes", Table::Changes, selection, change_from_row)
            .await
    }
}
