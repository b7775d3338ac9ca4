//! The copy queue on SQLite (`copies`, `replication_jobs`, `replication_stores` and
//! `leases`, schema 9). One process owns a data dir, so claims protect against its own
//! workers only; they work the same way as on DynamoDB all the same.

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, Row, params};

use super::db::Db;
use super::rows::internal;
use crate::domain::{
    Content, CopyOutcome, CopyRecord, CopyStatus, CopyTask, Millis, NewCopy, ReplicationJob,
    Sha256, SpaceId, StoreId,
};
use crate::storage::{CopyQueue, StoreError};

const COPY_COLUMNS: &str = "space_id, store, blob_key, size, sha256, content_type, status, \
    attempts, last_error, committed_at, updated_at, due_at";
const JOB_COLUMNS: &str =
    "space_id, cursor_seq, verify, verify_after_key, verify_after_store, started_at, done";
/// The row of `replication_stores` that says the server default was on.
const DEFAULT_ON: &str = "@default";

fn copy_row(row: &Row<'_>) -> rusqlite::Result<CopyRecord> {
    let space: String = row.get(0)?;
    let status: String = row.get(6)?;
    let sha: Vec<u8> = row.get(4)?;
    let bad = |what: &str| {
        rusqlite::Error::FromSqlConversionFailure(
            0,
            rusqlite::types::Type::Text,
            format!("corrupt copy row: {what}").into(),
        )
    };
    Ok(CopyRecord {
        space_id: space.parse().map_err(|_| bad("space id"))?,
        store: StoreId::from_stored(row.get(1)?),
        content: Content {
            blob_key: row.get(2)?,
            size: row.get::<_, i64>(3)? as u64,
            sha256: Sha256(sha.try_into().map_err(|_| bad("sha256"))?),
            content_type: row.get(5)?,
        },
        status: CopyStatus::parse(&status).ok_or_else(|| bad("status"))?,
        attempts: row.get(7)?,
        last_error: row.get(8)?,
        committed_at: row.get(9)?,
        updated_at: row.get(10)?,
        due_at: row.get(11)?,
    })
}

fn job_row(row: &Row<'_>) -> rusqlite::Result<ReplicationJob> {
    let space: String = row.get(0)?;
    let key: Option<String> = row.get(3)?;
    let store: Option<String> = row.get(4)?;
    Ok(ReplicationJob {
        space_id: space.parse().map_err(|_| {
            rusqlite::Error::FromSqlConversionFailure(
                0,
                rusqlite::types::Type::Text,
                "corrupt job row".into(),
            )
        })?,
        cursor_seq: row.get::<_, i64>(1)? as u64,
        verify: row.get(2)?,
        verify_after: key.zip(store.map(StoreId::from_stored)),
        started_at: row.get(5)?,
        done: row.get(6)?,
    })
}

/// Queues copies in the publish's own savepoint (see `metadata::publish`), or for a
/// backfill: a copy the queue holds already is left as it is.
pub(super) fn insert_copies(
    conn: &Connection,
    space: SpaceId,
    copies: &[NewCopy],
    now: Millis,
) -> Result<usize, StoreError> {
    let mut stmt = conn
        .prepare_cached(&format!(
            "INSERT INTO copies ({COPY_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 0, NULL, ?8, ?9, ?10)
             ON CONFLICT DO NOTHING"
        ))
        .map_err(internal)?;
    let mut added = 0;
    for copy in copies {
        let due = (copy.status != CopyStatus::Ok).then_some(now);
        added += stmt
            .execute(params![
                space.to_string(),
                copy.store.as_str(),
                copy.content.blob_key,
                copy.content.size as i64,
                copy.content.sha256.0,
                copy.content.content_type,
                copy.status.as_str(),
                copy.committed_at,
                now,
                due,
            ])
            .map_err(internal)?;
    }
    Ok(added)
}

#[async_trait]
impl CopyQueue for Db {
    async fn claim_copies(
        &self,
        store: &StoreId,
        now: Millis,
        lease_until: Millis,
        limit: usize,
    ) -> Result<Vec<CopyTask>, StoreError> {
        let store = store.as_str().to_owned();
        self.writer
            .write(move |conn, _| {
                let claim = uuid::Uuid::new_v4().simple().to_string();
                let records = conn
                    .prepare_cached(&format!(
                        "UPDATE copies SET claim = ?1, due_at = ?2
                         WHERE (space_id, blob_key, store) IN (
                           SELECT space_id, blob_key, store FROM copies
                           WHERE store = ?3 AND due_at <= ?4 ORDER BY due_at LIMIT ?5)
                         RETURNING {COPY_COLUMNS}"
                    ))
                    .and_then(|mut s| {
                        s.query_map(
                            params![claim, lease_until, store, now, limit as i64],
                            copy_row,
                        )?
                        .collect::<Result<Vec<_>, _>>()
                    })
                    .map_err(internal)?;
                Ok(records
                    .into_iter()
                    .map(|record| CopyTask {
                        record,
                        claim: claim.clone(),
                        lease_until,
                    })
                    .collect())
            })
            .await
    }

    async fn renew_copy(&self, task: &CopyTask, lease_until: Millis) -> Result<bool, StoreError> {
        let (space, key, store, claim) = task_key(task);
        self.writer
            .write(move |conn, _| {
                conn.prepare_cached(
                    "UPDATE copies SET due_at = ?5
                     WHERE space_id = ?1 AND blob_key = ?2 AND store = ?3 AND claim = ?4",
                )
                .and_then(|mut s| s.execute(params![space, key, store, claim, lease_until]))
                .map(|n| n > 0)
                .map_err(internal)
            })
            .await
    }

    async fn finish_copy(
        &self,
        task: &CopyTask,
        outcome: CopyOutcome,
        now: Millis,
    ) -> Result<bool, StoreError> {
        let (space, key, store, claim) = task_key(task);
        self.writer
            .write(move |conn, _| {
                let changed = match outcome {
                    CopyOutcome::Copied => conn
                        .prepare_cached(
                            "UPDATE copies SET status = 'OK', due_at = NULL, claim = NULL,
                               last_error = NULL, updated_at = ?5
                             WHERE space_id = ?1 AND blob_key = ?2 AND store = ?3
                               AND claim = ?4 AND status != 'REMOVING'",
                        )
                        .and_then(|mut s| s.execute(params![space, key, store, claim, now])),
                    CopyOutcome::Failed { error, retry_at } => conn
                        .prepare_cached(
                            "UPDATE copies SET status = 'FAILED', attempts = attempts + 1,
                               last_error = ?5, due_at = ?6, claim = NULL, updated_at = ?7
                             WHERE space_id = ?1 AND blob_key = ?2 AND store = ?3
                               AND claim = ?4 AND status != 'REMOVING'",
                        )
                        .and_then(|mut s| {
                            s.execute(params![space, key, store, claim, error, retry_at, now])
                        }),
                    CopyOutcome::Removed => conn
                        .prepare_cached(
                            "DELETE FROM copies WHERE space_id = ?1 AND blob_key = ?2
                               AND store = ?3 AND claim = ?4",
                        )
                        .and_then(|mut s| s.execute(params![space, key, store, claim])),
                };
                changed.map(|n| n > 0).map_err(internal)
            })
            .await
    }

    async fn requeue_copy(
        &self,
        space: SpaceId,
        blob_key: &str,
        store: &StoreId,
        reason: &str,
        now: Millis,
    ) -> Result<bool, StoreError> {
        let (key, store, reason) = (blob_key.to_owned(), store.to_string(), reason.to_owned());
        self.writer
            .write(move |conn, _| {
                conn.prepare_cached(
                    "UPDATE copies SET status = 'PENDING', attempts = 0, last_error = ?4,
                       due_at = ?5, updated_at = ?5
                     WHERE space_id = ?1 AND blob_key = ?2 AND store = ?3
                       AND status IN ('OK', 'FAILED') AND claim IS NULL",
                )
                .and_then(|mut s| s.execute(params![space.to_string(), key, store, reason, now]))
                .map(|n| n > 0)
                .map_err(internal)
            })
            .await
    }

    async fn ensure_copies(
        &self,
        space: SpaceId,
        copies: &[NewCopy],
        now: Millis,
    ) -> Result<usize, StoreError> {
        let copies = copies.to_vec();
        self.writer
            .write(move |conn, _| insert_copies(conn, space, &copies, now))
            .await
    }

    async fn remove_copies(
        &self,
        space: SpaceId,
        blob_key: &str,
        now: Millis,
    ) -> Result<(), StoreError> {
        let key = blob_key.to_owned();
        self.writer
            .write(move |conn, _| {
                // A copy being made is removed once its claim has run out: its worker
                // either stopped (its next renewal fails) or deletes what it wrote.
                conn.prepare_cached(
                    "UPDATE copies SET status = 'REMOVING', claim = NULL, updated_at = ?3,
                       due_at = CASE WHEN claim IS NOT NULL AND due_at > ?3 THEN due_at ELSE ?3 END
                     WHERE space_id = ?1 AND blob_key = ?2 AND store != 'primary'",
                )
                .and_then(|mut s| s.execute(params![space.to_string(), key, now]))
                .map_err(internal)?;
                Ok(())
            })
            .await
    }

    async fn copies_of(
        &self,
        space: SpaceId,
        blob_key: &str,
    ) -> Result<Vec<CopyRecord>, StoreError> {
        let key = blob_key.to_owned();
        self.lookup(move |conn| {
            conn.prepare_cached(&format!(
                "SELECT {COPY_COLUMNS} FROM copies WHERE space_id = ?1 AND blob_key = ?2
                 ORDER BY store"
            ))
            .and_then(|mut s| {
                s.query_map(params![space.to_string(), key], copy_row)?
                    .collect()
            })
            .map_err(internal)
        })
    }

    async fn copies_page(
        &self,
        space: SpaceId,
        after: Option<(String, StoreId)>,
        limit: usize,
    ) -> Result<Vec<CopyRecord>, StoreError> {
        self.read(move |conn| {
            let (key, store) = after.map(|(k, s)| (k, s.to_string())).unwrap_or_default();
            conn.prepare_cached(&format!(
                "SELECT {COPY_COLUMNS} FROM copies
                 WHERE space_id = ?1 AND (blob_key, store) > (?2, ?3)
                 ORDER BY blob_key, store LIMIT ?4"
            ))
            .and_then(|mut s| {
                s.query_map(
                    params![space.to_string(), key, store, limit as i64],
                    copy_row,
                )?
                .collect()
            })
            .map_err(internal)
        })
        .await
    }

    async fn unsettled_copies(
        &self,
        store: &StoreId,
        limit: usize,
    ) -> Result<Vec<CopyRecord>, StoreError> {
        let store = store.to_string();
        self.read(move |conn| {
            conn.prepare_cached(&format!(
                "SELECT {COPY_COLUMNS} FROM copies WHERE store = ?1 AND due_at IS NOT NULL
                 LIMIT ?2"
            ))
            .and_then(|mut s| {
                s.query_map(params![store, limit as i64], copy_row)?
                    .collect()
            })
            .map_err(internal)
        })
        .await
    }

    async fn spaces_page(
        &self,
        cursor: Option<String>,
        limit: usize,
    ) -> Result<(Vec<SpaceId>, Option<String>), StoreError> {
        self.read(move |conn| {
            let ids: Vec<String> = conn
                .prepare_cached("SELECT id FROM spaces WHERE id > ?1 ORDER BY id LIMIT ?2")
                .and_then(|mut s| {
                    s.query_map(params![cursor.unwrap_or_default(), limit as i64], |r| {
                        r.get(0)
                    })?
                    .collect()
                })
                .map_err(internal)?;
            let next = (ids.len() == limit).then(|| ids.last().cloned()).flatten();
            let spaces = ids
                .iter()
                .map(|id| id.parse())
                .collect::<Result<Vec<SpaceId>, _>>()
                .map_err(|_| StoreError::Other(anyhow::anyhow!("corrupt space id")))?;
            Ok((spaces, next))
        })
        .await
    }

    async fn put_job(&self, job: &ReplicationJob) -> Result<(), StoreError> {
        let job = job.clone();
        self.writer
            .write(move |conn, _| {
                conn.prepare_cached(&format!(
                    "INSERT OR REPLACE INTO replication_jobs ({JOB_COLUMNS}, claim, lease_until)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, NULL, NULL)"
                ))
                .and_then(|mut s| {
                    let (key, store) = job
                        .verify_after
                        .clone()
                        .map(|(k, s)| (Some(k), Some(s.to_string())))
                        .unwrap_or_default();
                    s.execute(params![
                        job.space_id.to_string(),
                        job.cursor_seq as i64,
                        job.verify,
                        key,
                        store,
                        job.started_at,
                        job.done
                    ])
                })
                .map_err(internal)?;
                Ok(())
            })
            .await
    }

    async fn job(&self, space: SpaceId) -> Result<Option<ReplicationJob>, StoreError> {
        self.lookup(move |conn| {
            conn.prepare_cached(&format!(
                "SELECT {JOB_COLUMNS} FROM replication_jobs WHERE space_id = ?1"
            ))
            .and_then(|mut s| s.query_row([space.to_string()], job_row).optional())
            .map_err(internal)
        })
    }

    async fn claim_job(
        &self,
        now: Millis,
        lease_until: Millis,
    ) -> Result<Option<(ReplicationJob, String)>, StoreError> {
        self.writer
            .write(move |conn, _| {
                let claim = uuid::Uuid::new_v4().simple().to_string();
                let job = conn
                    .prepare_cached(&format!(
                        "UPDATE replication_jobs SET claim = ?1, lease_until = ?2
                         WHERE space_id = (SELECT space_id FROM replication_jobs
                           WHERE done = 0 AND (lease_until IS NULL OR lease_until <= ?3)
                           ORDER BY started_at LIMIT 1)
                         RETURNING {JOB_COLUMNS}"
                    ))
                    .and_then(|mut s| {
                        s.query_row(params![claim, lease_until, now], job_row)
                            .optional()
                    })
                    .map_err(internal)?;
                Ok(job.map(|job| (job, claim)))
            })
            .await
    }

    async fn advance_job(
        &self,
        job: &ReplicationJob,
        claim: &str,
        lease_until: Millis,
    ) -> Result<bool, StoreError> {
        let (job, claim) = (job.clone(), claim.to_owned());
        self.writer
            .write(move |conn, _| {
                let (key, store) = job
                    .verify_after
                    .clone()
                    .map(|(k, s)| (Some(k), Some(s.to_string())))
                    .unwrap_or_default();
                conn.prepare_cached(
                    "UPDATE replication_jobs SET cursor_seq = ?3, verify_after_key = ?4,
                       verify_after_store = ?5, done = ?6,
                       lease_until = ?7, claim = CASE WHEN ?6 THEN NULL ELSE claim END
                     WHERE space_id = ?1 AND claim = ?2",
                )
                .and_then(|mut s| {
                    s.execute(params![
                        job.space_id.to_string(),
                        claim,
                        job.cursor_seq as i64,
                        key,
                        store,
                        job.done,
                        lease_until
                    ])
                })
                .map(|n| n > 0)
                .map_err(internal)
            })
            .await
    }

    async fn stores_to_backfill(
        &self,
        stores: &[StoreId],
        retired: &[StoreId],
        default_on: bool,
    ) -> Result<(Vec<StoreId>, bool), StoreError> {
        let (stores, retired) = (stores.to_vec(), retired.to_vec());
        self.writer
            .write(move |conn, _| {
                let now = crate::domain::now_millis();
                for id in &retired {
                    conn.execute(
                        "DELETE FROM replication_stores WHERE id = ?1",
                        [id.as_str()],
                    )
                    .map_err(internal)?;
                }
                let mut ids: Vec<&str> = stores.iter().map(StoreId::as_str).collect();
                if default_on {
                    ids.push(DEFAULT_ON);
                } else {
                    conn.execute("DELETE FROM replication_stores WHERE id = ?1", [DEFAULT_ON])
                        .map_err(internal)?;
                }
                let mut pending = Vec::new();
                for id in ids {
                    conn.execute(
                        "INSERT OR IGNORE INTO replication_stores (id, added_at) VALUES (?1, ?2)",
                        params![id, now],
                    )
                    .map_err(internal)?;
                    let done: bool = conn
                        .query_row(
                            "SELECT backfilled FROM replication_stores WHERE id = ?1",
                            [id],
                            |r| r.get(0),
                        )
                        .map_err(internal)?;
                    if !done {
                        pending.push(id.to_owned());
                    }
                }
                let default_pending = pending.iter().any(|p| p == DEFAULT_ON);
                let stores = pending
                    .into_iter()
                    .filter(|p| p != DEFAULT_ON)
                    .map(StoreId::from_stored)
                    .collect();
                Ok((stores, default_pending))
            })
            .await
    }

    async fn stores_backfilled(
        &self,
        stores: &[StoreId],
        default_on: bool,
    ) -> Result<(), StoreError> {
        let stores = stores.to_vec();
        self.writer
            .write(move |conn, _| {
                let mut ids: Vec<&str> = stores.iter().map(StoreId::as_str).collect();
                if default_on {
                    ids.push(DEFAULT_ON);
                }
                for id in ids {
                    conn.execute(
                        "UPDATE replication_stores SET backfilled = 1 WHERE id = ?1",
                        [id],
                    )
                    .map_err(internal)?;
                }
                Ok(())
            })
            .await
    }

    async fn registered_stores(&self) -> Result<Vec<StoreId>, StoreError> {
        self.lookup(|conn| {
            conn.prepare_cached("SELECT id FROM replication_stores WHERE id != ?1 ORDER BY id")
                .and_then(|mut s| {
                    s.query_map([DEFAULT_ON], |r| r.get::<_, String>(0))?
                        .collect::<Result<Vec<_>, _>>()
                })
                .map(|ids| ids.into_iter().map(StoreId::from_stored).collect())
                .map_err(internal)
        })
    }

    async fn take_lease(
        &self,
        name: &str,
        owner: &str,
        now: Millis,
        until: Millis,
        payload: Option<&str>,
    ) -> Result<Option<Option<String>>, StoreError> {
        let (name, owner, payload) = (
            name.to_owned(),
            owner.to_owned(),
            payload.map(str::to_owned),
        );
        self.writer
            .write(move |conn, _| {
                conn.prepare_cached(
                    "INSERT INTO leases (name, owner, until, payload) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT (name) DO UPDATE SET owner = excluded.owner,
                       until = excluded.until,
                       payload = COALESCE(excluded.payload, leases.payload)
                     WHERE leases.owner = excluded.owner OR leases.until <= ?5
                     RETURNING payload",
                )
                .and_then(|mut s| {
                    s.query_row(params![name, owner, until, payload, now], |r| r.get(0))
                        .optional()
                })
                .map_err(internal)
            })
            .await
    }
}

fn task_key(task: &CopyTask) -> (String, String, String, String) {
    (
        task.record.space_id.to_string(),
        task.record.content.blob_key.clone(),
        task.record.store.to_string(),
        task.claim.clone(),
    )
}
