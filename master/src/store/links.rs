//! The links between builds, buildsets and changes that Buildbot's web UI follows
//! (`builds/<id>/changes`, `changes/<id>/builds`, a buildset's rebuilt build): small id
//! lookups, bounded by [`MAX_LINKS`]; and the properties of many builds at once (the UI's
//! `property=` on build lists).

use serde_json::Value;
use sqlx::Row;

use super::{PropertyRow, Store};
use crate::StoreError;

/// Builds per query of [`Store::builds_properties`].
const IDS_PER_QUERY: usize = 500;

/// Most ids one lookup returns.
pub const MAX_LINKS: i64 = 1000;

impl Store {
    /// The change that a build's buildset was made for, if any.
    pub async fn build_changeid(&self, build: i64) -> Result<Option<i64>, StoreError> {
        self.retrying("build_changeid", || async {
            let row = sqlx::query(
                "SELECT bs.changeid AS changeid FROM builds b \
                 JOIN buildrequests br ON br.id = b.buildrequestid \
                 JOIN buildsets bs ON bs.id = br.buildsetid WHERE b.id = $1",
            )
            .bind(build)
            .fetch_optional(&self.pool)
            .await?;
            Ok(match row {
                Some(r) => r.try_get::<Option<i64>, _>("changeid")?,
                None => None,
            })
        })
        .await
    }

    /// The builds made for a change (newest first, at most `MAX_LINKS`).
    pub async fn change_buildids(&self, change: i64) -> Result<Vec<i64>, StoreError> {
        self.retrying("change_buildids", || async {
            let rows = sqlx::query(
                "SELECT b.id AS id FROM builds b \
                 JOIN buildrequests br ON br.id = b.buildrequestid \
                 JOIN buildsets bs ON bs.id = br.buildsetid \
                 WHERE bs.changeid = $1 ORDER BY b.id DESC LIMIT $2",
            )
            .bind(change)
            .bind(MAX_LINKS)
            .fetch_all(&self.pool)
            .await?;
            Ok(rows
                .iter()
                .map(|r| r.try_get::<i64, _>("id"))
                .collect::<Result<_, _>>()?)
        })
        .await
    }

    /// The properties of each of `builds` (`(buildid, property)` pairs).
    pub async fn builds_properties(
        &self,
        builds: &[i64],
    ) -> Result<Vec<(i64, PropertyRow)>, StoreError> {
        let mut out = Vec::new();
        for chunk in builds.chunks(IDS_PER_QUERY) {
            let marks: Vec<String> = (1..=chunk.len()).map(|i| format!("${i}")).collect();
            let sql = format!(
                "SELECT buildid, name, value, source FROM build_properties \
                 WHERE buildid IN ({}) ORDER BY buildid, name",
                marks.join(", ")
            );
            let rows = self
                .retrying("builds_properties", || async {
                    let mut q = sqlx::query(&sql);
                    for id in chunk {
                        q = q.bind(*id);
                    }
                    Ok(q.fetch_all(&self.pool).await?)
                })
                .await?;
            for r in rows {
                let text: String = r.try_get("value").map_err(StoreError::from)?;
                out.push((
                    r.try_get("buildid").map_err(StoreError::from)?,
                    PropertyRow {
                        name: r.try_get("name").map_err(StoreError::from)?,
                        value: serde_json::from_str(&text).unwrap_or(Value::String(text)),
                        source: r.try_get("source").map_err(StoreError::from)?,
                    },
                ));
            }
        }
        Ok(out)
    }

    /// `(buildset, rebuilt build)` of the rebuilds among `buildsets` (the buildset property
    /// `rebuild_of` the engine sets), or of the newest `MAX_LINKS` rebuilds when
    /// `buildsets` is `None`.
    pub async fn rebuilt_builds(
        &self,
        buildsets: Option<&[i64]>,
    ) -> Result<Vec<(i64, i64)>, StoreError> {
        let ids = buildsets.unwrap_or(&[]);
        let marks: Vec<String> = (1..=ids.len()).map(|i| format!("${i}")).collect();
        let sql = match buildsets {
            Some(_) if ids.is_empty() => return Ok(Vec::new()),
            Some(_) => format!(
                "SELECT buildsetid, property_value FROM buildset_properties \
                 WHERE property_name = 'rebuild_of' AND buildsetid IN ({})",
                marks.join(", ")
            ),
            None => "SELECT buildsetid, property_value FROM buildset_properties \
                     WHERE property_name = 'rebuild_of' ORDER BY buildsetid DESC LIMIT $1"
                .to_owned(),
        };
        let rows = self
            .retrying("rebuilt_builds", || async {
                let mut q = sqlx::query(&sql);
                if buildsets.is_none() {
                    q = q.bind(MAX_LINKS);
                }
                for id in ids {
                    q = q.bind(*id);
                }
                Ok(q.fetch_all(&self.pool).await?)
            })
            .await?;
        let mut out = Vec::new();
        for r in rows {
            let bsid: i64 = r.try_get("buildsetid").map_err(StoreError::from)?;
            let text: String = r.try_get("property_value").map_err(StoreError::from)?;
            // Stored as `[value, source]`.
            if let Ok(Value::Array(pair)) = serde_json::from_str::<Value>(&text) {
                if let Some(build) = pair.first().and_then(Value::as_i64) {
                    out.push((bsid, build));
                }
            }
        }
        Ok(out)
    }
}
