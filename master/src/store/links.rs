//! The links between builds, buildsets and changes that Buildbot's web UI follows
//! (`builds/<id>/changes`, `changes/<id>/builds`, a buildset's rebuilt build): small id
//! lookups, bounded by [`MAX_LINKS`].

use sqlx::Row;

use super::Store;
use crate::StoreError;

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

    /// The builds made for a change (newest first, at most [`MAX_LINKS`]).
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
}
