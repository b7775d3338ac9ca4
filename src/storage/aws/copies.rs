//! The copy queue on DynamoDB (ARCHITECTURE.md, "The AWS backend").
//!
//! A copy is an item of its space's partition, `C#<object key>#<store>`; while it is due
//! (pending, failed, removing, or claimed until its lease ends) it carries `due_at`, which
//! puts it in the sparse `copy-work` index under its store: workers find due copies there
//! and claim one with a conditional update on `due_at`. A space's replication job is its
//! `JOB` item, in the same index under `@jobs` while unfinished. The stores seen and the
//! scrub's lease are items of the `REPLICATION` partition.

use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue};

use super::items::{self, Attrs, Item, key, n, s};
use super::metadata::{DynamoMetadata, aws_error, unless_condition_failed};
use crate::domain::{
    CopyOutcome, CopyRecord, CopyStatus, CopyTask, Millis, NewCopy, ReplicationJob, SpaceId,
    StoreId,
};
use crate::storage::{CopyQueue, StoreError};

/// The sparse index of due copies (by store) and unfinished jobs (`@jobs`), by `due_at`.
pub const COPY_WORK_INDEX: &str = "copy-work";
const JOBS: &str = "@jobs";
const JOB_SK: &str = "JOB";
const REPLICATION_PK: &str = "REPLICATION";
const STORES_SK: &str = "STORES";
/// The element of the recorded stores that says the server default was on.
const DEFAULT_ON: &str = "@default";

pub fn copy_sk(blob_key: &str, store: &StoreId) -> String {
    format!("C#{blob_key}#{store}")
}

/// A copy's item as a commit or a backfill writes it.
pub fn copy_item(space: SpaceId, copy: &NewCopy, now: Millis) -> Attrs {
    let mut attrs = key(
        items::space_pk(space),
        copy_sk(&copy.content.blob_key, &copy.store),
    );
    items::put_content(&mut attrs, &copy.content);
    attrs.insert("space_id".into(), s(space.to_string()));
    attrs.insert("copy_store".into(), s(copy.store.as_str()));
    attrs.insert("status".into(), s(copy.status.as_str()));
    attrs.insert("attempts".into(), n(0));
    attrs.insert("committed_at".into(), n(copy.committed_at));
    attrs.insert("updated_at".into(), n(now));
    if copy.status != CopyStatus::Ok {
        attrs.insert("due_at".into(), n(now));
    }
    attrs
}

fn copy_from(item: &Attrs) -> Result<CopyRecord, StoreError> {
    let i = Item(item);
    let status = i.str("status")?;
    Ok(CopyRecord {
        space_id: i.parse("space_id")?,
        store: StoreId::from_stored(i.str("copy_store")?.to_owned()),
        content: i.content()?,
        status: CopyStatus::parse(status).ok_or_else(|| {
            StoreError::Other(anyhow::anyhow!("corrupt copy item: status {status:?}"))
        })?,
        attempts: i.num("attempts")?,
        last_error: i.opt_str("last_error")?.map(str::to_owned),
        committed_at: i.num("committed_at")?,
        updated_at: i.num("updated_at")?,
        due_at: i.opt_num("due_at")?,
    })
}

fn job_from(item: &Attrs) -> Result<ReplicationJob, StoreError> {
    let i = Item(item);
    let after_key = i.opt_str("verify_after_key")?.map(str::to_owned);
    let after_store = i
        .opt_str("verify_after_store")?
        .map(|s| StoreId::from_stored(s.to_owned()));
    Ok(ReplicationJob {
        space_id: i.parse("space_id")?,
        cursor_seq: i.num("cursor_seq")?,
        verify: i.bool("verify")?,
        verify_after: after_key.zip(after_store),
        started_at: i.num("started_at")?,
        done: i.bool("done")?,
    })
}

fn names(pairs: &[(&str, &str)]) -> Option<HashMap<String, String>> {
    Some(
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
    )
}

impl DynamoMetadata {
    /// Up to `limit` items of `queue` in the `copy-work` index due at `now` (all of
    /// them: `None`).
    async fn due(
        &self,
        queue: &str,
        now: Option<Millis>,
        limit: usize,
    ) -> Result<Vec<Attrs>, StoreError> {
        let mut found = Vec::new();
        let mut start: Option<Attrs> = None;
        loop {
            self.requests.dynamodb("Query");
            let mut query = self
                .client
                .query()
                .table_name(&self.table)
                .index_name(COPY_WORK_INDEX)
                .expression_attribute_values(":q", s(queue))
                .limit(i32::try_from(limit - found.len()).unwrap_or(i32::MAX))
                .set_exclusive_start_key(start.take());
            query = match now {
                Some(now) => query
                    .key_condition_expression("copy_store = :q AND due_at <= :now")
                    .expression_attribute_values(":now", n(now)),
                None => query.key_condition_expression("copy_store = :q"),
            };
            let out = query.send().await.map_err(aws_error)?;
            found.extend(out.items.unwrap_or_default());
            match out.last_evaluated_key {
                Some(last) if !last.is_empty() && found.len() < limit => start = Some(last),
                _ => return Ok(found),
            }
        }
    }

    /// Writes a claim on an item found due: conditioned on it still being due (another
    /// server may have claimed it since the index was read). The item as claimed.
    async fn claim_item(
        &self,
        item: &Attrs,
        claim: &str,
        now: Millis,
        lease_until: Millis,
    ) -> Result<Option<Attrs>, StoreError> {
        let (Some(pk), Some(sk)) = (item.get("pk"), item.get("sk")) else {
            return Ok(None);
        };
        self.requests.dynamodb("UpdateItem");
        let out = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", pk.clone())
            .key("sk", sk.clone())
            .update_expression("SET claim = :c, due_at = :until")
            .condition_expression("due_at <= :now")
            .expression_attribute_values(":c", s(claim))
            .expression_attribute_values(":until", n(lease_until))
            .expression_attribute_values(":now", n(now))
            .return_values(ReturnValue::AllNew)
            .send()
            .await;
        Ok(unless_condition_failed(out)?.and_then(|out| out.attributes))
    }

    async fn recorded_stores(&self) -> Result<Vec<String>, StoreError> {
        let item = self.get(key(REPLICATION_PK.into(), STORES_SK)).await?;
        Ok(match item.as_ref().and_then(|i| i.get("stores")) {
            Some(AttributeValue::Ss(ids)) => ids.clone(),
            _ => Vec::new(),
        })
    }

    fn copy_key(task: &CopyTask) -> Attrs {
        key(
            items::space_pk(task.record.space_id),
            copy_sk(&task.record.content.blob_key, &task.record.store),
        )
    }
}

#[async_trait]
impl CopyQueue for DynamoMetadata {
    async fn claim_copies(
        &self,
        store: &StoreId,
        now: Millis,
        lease_until: Millis,
        limit: usize,
    ) -> Result<Vec<CopyTask>, StoreError> {
        let claim = uuid::Uuid::new_v4().simple().to_string();
        let mut tasks = Vec::new();
        for item in self.due(store.as_str(), Some(now), limit).await? {
            if let Some(claimed) = self.claim_item(&item, &claim, now, lease_until).await? {
                tasks.push(CopyTask {
                    record: copy_from(&claimed)?,
                    claim: claim.clone(),
                    lease_until,
                });
            }
        }
        Ok(tasks)
    }

    async fn renew_copy(&self, task: &CopyTask, lease_until: Millis) -> Result<bool, StoreError> {
        self.update_if(
            self.client
                .update_item()
                .table_name(&self.table)
                .set_key(Some(Self::copy_key(task)))
                .update_expression("SET due_at = :until")
                .condition_expression("claim = :c")
                .expression_attribute_values(":c", s(&task.claim))
                .expression_attribute_values(":until", n(lease_until)),
        )
        .await
    }

    async fn finish_copy(
        &self,
        task: &CopyTask,
        outcome: CopyOutcome,
        now: Millis,
    ) -> Result<bool, StoreError> {
        let key = Self::copy_key(task);
        let claim = s(&task.claim);
        match outcome {
            CopyOutcome::Removed => {
                self.requests.dynamodb("DeleteItem");
                let deleted = self
                    .client
                    .delete_item()
                    .table_name(&self.table)
                    .set_key(Some(key))
                    .condition_expression("claim = :c")
                    .expression_attribute_values(":c", claim)
                    .send()
                    .await;
                Ok(unless_condition_failed(deleted)?.is_some())
            }
            CopyOutcome::Copied => {
                self.update_if(
                    self.client
                        .update_item()
                        .table_name(&self.table)
                        .set_key(Some(key))
                        .update_expression(
                            "SET #status = :ok, updated_at = :now \
                             REMOVE due_at, claim, last_error",
                        )
                        .condition_expression("claim = :c AND #status <> :removing")
                        .set_expression_attribute_names(names(&[("#status", "status")]))
                        .expression_attribute_values(":c", claim)
                        .expression_attribute_values(":ok", s(CopyStatus::Ok.as_str()))
                        .expression_attribute_values(":removing", s(CopyStatus::Removing.as_str()))
                        .expression_attribute_values(":now", n(now)),
                )
                .await
            }
            CopyOutcome::Failed { error, retry_at } => {
                self.update_if(
                    self.client
                        .update_item()
                        .table_name(&self.table)
                        .set_key(Some(key))
                        .update_expression(
                            "SET #status = :failed, updated_at = :now, last_error = :e, \
                               due_at = :retry, attempts = attempts + :one \
                             REMOVE claim",
                        )
                        .condition_expression("claim = :c AND #status <> :removing")
                        .set_expression_attribute_names(names(&[("#status", "status")]))
                        .expression_attribute_values(":c", claim)
                        .expression_attribute_values(":failed", s(CopyStatus::Failed.as_str()))
                        .expression_attribute_values(":removing", s(CopyStatus::Removing.as_str()))
                        .expression_attribute_values(":now", n(now))
                        .expression_attribute_values(":e", s(error))
                        .expression_attribute_values(":retry", n(retry_at))
                        .expression_attribute_values(":one", n(1)),
                )
                .await
            }
        }
    }

    async fn requeue_copy(
        &self,
        space: SpaceId,
        blob_key: &str,
        store: &StoreId,
        reason: &str,
        now: Millis,
    ) -> Result<bool, StoreError> {
        self.update_if(
            self.client
                .update_item()
                .table_name(&self.table)
                .set_key(Some(key(items::space_pk(space), copy_sk(blob_key, store))))
                .update_expression(
                    "SET #status = :pending, attempts = :zero, last_error = :e, \
                       due_at = :now, updated_at = :now",
                )
                .condition_expression(
                    "attribute_exists(pk) AND #status IN (:ok, :failed) \
                     AND attribute_not_exists(claim)",
                )
                .set_expression_attribute_names(names(&[("#status", "status")]))
                .expression_attribute_values(":pending", s(CopyStatus::Pending.as_str()))
                .expression_attribute_values(":ok", s(CopyStatus::Ok.as_str()))
                .expression_attribute_values(":failed", s(CopyStatus::Failed.as_str()))
                .expression_attribute_values(":zero", n(0))
                .expression_attribute_values(":e", s(reason))
                .expression_attribute_values(":now", n(now)),
        )
        .await
    }

    async fn ensure_copies(
        &self,
        space: SpaceId,
        copies: &[NewCopy],
        now: Millis,
    ) -> Result<usize, StoreError> {
        let mut added = 0;
        for copy in copies {
            self.requests.dynamodb("PutItem");
            let put = self
                .client
                .put_item()
                .table_name(&self.table)
                .set_item(Some(copy_item(space, copy, now)))
                .condition_expression("attribute_not_exists(pk)")
                .send()
                .await;
            if unless_condition_failed(put)?.is_some() {
                added += 1;
            }
        }
        Ok(added)
    }

    async fn remove_copies(
        &self,
        space: SpaceId,
        blob_key: &str,
        now: Millis,
    ) -> Result<(), StoreError> {
        for copy in self.copies_of(space, blob_key).await? {
            // The primary's object is the content's own, removed by whoever removes it.
            if copy.store.is_primary() {
                continue;
            }
            // A copy being made is removed once its claim has run out: its worker either
            // stopped (its next renewal fails) or deletes what it wrote.
            let due = copy.due_at.map_or(now, |d| d.max(now));
            self.requests.dynamodb("UpdateItem");
            self.client
                .update_item()
                .table_name(&self.table)
                .set_key(Some(key(
                    items::space_pk(space),
                    copy_sk(blob_key, &copy.store),
                )))
                .update_expression(
                    "SET #status = :removing, due_at = :due, updated_at = :now REMOVE claim",
                )
                .condition_expression("attribute_exists(pk)")
                .set_expression_attribute_names(names(&[("#status", "status")]))
                .expression_attribute_values(":removing", s(CopyStatus::Removing.as_str()))
                .expression_attribute_values(":due", n(due))
                .expression_attribute_values(":now", n(now))
                .send()
                .await
                .map_err(aws_error)?;
        }
        Ok(())
    }

    async fn copies_of(
        &self,
        space: SpaceId,
        blob_key: &str,
    ) -> Result<Vec<CopyRecord>, StoreError> {
        let prefix = format!("C#{blob_key}#");
        let hi = format!("C#{blob_key}$");
        self.range(items::space_pk(space), prefix, hi, 100)
            .await?
            .iter()
            .map(copy_from)
            .collect()
    }

    async fn copies_page(
        &self,
        space: SpaceId,
        after: Option<(String, StoreId)>,
        limit: usize,
    ) -> Result<Vec<CopyRecord>, StoreError> {
        // BETWEEN is inclusive: the copy `after` names is read again and dropped.
        let lo = after
            .as_ref()
            .map_or_else(|| "C#".to_owned(), |(k, s)| copy_sk(k, s));
        let items = self
            .range(items::space_pk(space), lo.clone(), "C$".into(), limit + 1)
            .await?;
        items
            .iter()
            .filter(|item| after.is_none() || Item(item).str("sk").ok() != Some(lo.as_str()))
            .take(limit)
            .map(copy_from)
            .collect()
    }

    async fn unsettled_copies(
        &self,
        store: &StoreId,
        limit: usize,
    ) -> Result<Vec<CopyRecord>, StoreError> {
        self.due(store.as_str(), None, limit)
            .await?
            .iter()
            .map(copy_from)
            .collect()
    }

    async fn spaces_page(
        &self,
        cursor: Option<String>,
        limit: usize,
    ) -> Result<(Vec<SpaceId>, Option<String>), StoreError> {
        // No index lists every space: a scan, paged, that keeps the space items. Used by
        // backfills (rare) and the scrub (which walks slowly by design).
        let start = cursor.and_then(|c| {
            let (pk, sk) = c.split_once('\u{0}')?;
            Some(key(pk.to_owned(), sk))
        });
        self.requests.dynamodb("Scan");
        let out = self
            .client
            .scan()
            .table_name(&self.table)
            .filter_expression("sk = :space")
            .expression_attribute_values(":space", s(items::SPACE_SK))
            .projection_expression("pk, sk")
            .limit(i32::try_from(limit.max(100)).unwrap_or(i32::MAX))
            .set_exclusive_start_key(start)
            .send()
            .await
            .map_err(aws_error)?;
        let spaces = out
            .items
            .unwrap_or_default()
            .iter()
            .filter_map(|item| match item.get("pk") {
                Some(AttributeValue::S(pk)) => pk.strip_prefix("S#")?.parse().ok(),
                _ => None,
            })
            .collect();
        // The scan's position: the key of the last item it read, whatever it was.
        let next = out
            .last_evaluated_key
            .and_then(|last| match last.get("pk") {
                Some(AttributeValue::S(pk)) => Some(format!("{pk}\u{0}{}", sk_of(&last))),
                _ => None,
            });
        Ok((spaces, next))
    }

    async fn put_job(&self, job: &ReplicationJob) -> Result<(), StoreError> {
        let mut item = key(items::space_pk(job.space_id), JOB_SK);
        item.insert("space_id".into(), s(job.space_id.to_string()));
        item.insert("cursor_seq".into(), n(job.cursor_seq));
        item.insert("verify".into(), AttributeValue::Bool(job.verify));
        item.insert("started_at".into(), n(job.started_at));
        item.insert("done".into(), AttributeValue::Bool(job.done));
        if !job.done {
            item.insert("copy_store".into(), s(JOBS));
            item.insert("due_at".into(), n(0));
        }
        self.requests.dynamodb("PutItem");
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .send()
            .await
            .map_err(aws_error)?;
        Ok(())
    }

    async fn job(&self, space: SpaceId) -> Result<Option<ReplicationJob>, StoreError> {
        self.get(key(items::space_pk(space), JOB_SK))
            .await?
            .as_ref()
            .map(job_from)
            .transpose()
    }

    async fn claim_job(
        &self,
        now: Millis,
        lease_until: Millis,
    ) -> Result<Option<(ReplicationJob, String)>, StoreError> {
        let claim = uuid::Uuid::new_v4().simple().to_string();
        for item in self.due(JOBS, Some(now), 5).await? {
            if let Some(claimed) = self.claim_item(&item, &claim, now, lease_until).await? {
                return Ok(Some((job_from(&claimed)?, claim)));
            }
        }
        Ok(None)
    }

    async fn advance_job(
        &self,
        job: &ReplicationJob,
        claim: &str,
        lease_until: Millis,
    ) -> Result<bool, StoreError> {
        let mut update = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(items::space_pk(job.space_id), JOB_SK)))
            .condition_expression("claim = :c")
            .expression_attribute_values(":c", s(claim))
            .expression_attribute_values(":seq", n(job.cursor_seq));
        let mut set = vec!["cursor_seq = :seq"];
        let mut remove = Vec::new();
        match &job.verify_after {
            Some((k, store)) => {
                set.push("verify_after_key = :k, verify_after_store = :s");
                update = update
                    .expression_attribute_values(":k", s(k))
                    .expression_attribute_values(":s", s(store.as_str()));
            }
            None => remove.push("verify_after_key, verify_after_store"),
        }
        if job.done {
            set.push("done = :true");
            remove.push("claim, copy_store, due_at");
            update = update.expression_attribute_values(":true", AttributeValue::Bool(true));
        } else {
            set.push("due_at = :until");
            update = update.expression_attribute_values(":until", n(lease_until));
        }
        let mut expression = format!("SET {}", set.join(", "));
        if !remove.is_empty() {
            expression.push_str(&format!(" REMOVE {}", remove.join(", ")));
        }
        self.update_if(update.update_expression(expression)).await
    }

    async fn stores_to_backfill(
        &self,
        stores: &[StoreId],
        retired: &[StoreId],
        default_on: bool,
    ) -> Result<(Vec<StoreId>, bool), StoreError> {
        // Sets, added to and taken from: servers configured differently never undo each
        // other's records (only retirement and the default's flag take away).
        let mut ids: Vec<String> = stores.iter().map(|s| s.to_string()).collect();
        if default_on {
            ids.push(DEFAULT_ON.to_owned());
        }
        let mut gone: Vec<String> = retired.iter().map(|s| s.to_string()).collect();
        if !default_on {
            gone.push(DEFAULT_ON.to_owned());
        }
        let mut expression = Vec::new();
        let mut update = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(REPLICATION_PK.into(), STORES_SK)))
            .return_values(ReturnValue::AllNew);
        if !ids.is_empty() {
            expression.push("ADD stores :ids".to_owned());
            update = update.expression_attribute_values(":ids", AttributeValue::Ss(ids.clone()));
        }
        if !gone.is_empty() {
            expression.push("DELETE backfilled :gone".to_owned());
            update = update.expression_attribute_values(":gone", AttributeValue::Ss(gone));
        }
        update = update.update_expression(expression.join(" "));
        self.requests.dynamodb("UpdateItem");
        let out = update.send().await.map_err(aws_error)?;
        // A retired store leaves the recorded stores too (one attribute is named once per
        // update expression: a second update).
        let retired_ids: Vec<String> = retired.iter().map(|s| s.to_string()).collect();
        if !retired_ids.is_empty() {
            self.update_if(
                self.client
                    .update_item()
                    .table_name(&self.table)
                    .set_key(Some(key(REPLICATION_PK.into(), STORES_SK)))
                    .update_expression("DELETE stores :gone")
                    .expression_attribute_values(":gone", AttributeValue::Ss(retired_ids)),
            )
            .await?;
        }
        let backfilled: Vec<String> =
            match out.attributes.as_ref().and_then(|a| a.get("backfilled")) {
                Some(AttributeValue::Ss(done)) => done.clone(),
                _ => Vec::new(),
            };
        let pending: Vec<&String> = ids.iter().filter(|id| !backfilled.contains(id)).collect();
        let default_pending = pending.iter().any(|p| *p == DEFAULT_ON);
        Ok((
            pending
                .into_iter()
                .filter(|p| *p != DEFAULT_ON)
                .map(|p| StoreId::from_stored(p.clone()))
                .collect(),
            default_pending,
        ))
    }

    async fn stores_backfilled(
        &self,
        stores: &[StoreId],
        default_on: bool,
    ) -> Result<(), StoreError> {
        let mut ids: Vec<String> = stores.iter().map(|s| s.to_string()).collect();
        if default_on {
            ids.push(DEFAULT_ON.to_owned());
        }
        if ids.is_empty() {
            return Ok(());
        }
        self.update_if(
            self.client
                .update_item()
                .table_name(&self.table)
                .set_key(Some(key(REPLICATION_PK.into(), STORES_SK)))
                .update_expression("ADD backfilled :ids")
                .expression_attribute_values(":ids", AttributeValue::Ss(ids)),
        )
        .await?;
        Ok(())
    }

    async fn registered_stores(&self) -> Result<Vec<StoreId>, StoreError> {
        Ok(self
            .recorded_stores()
            .await?
            .into_iter()
            .filter(|s| s != DEFAULT_ON)
            .map(StoreId::from_stored)
            .collect())
    }

    async fn take_lease(
        &self,
        name: &str,
        owner: &str,
        now: Millis,
        until: Millis,
        payload: Option<&str>,
    ) -> Result<Option<Option<String>>, StoreError> {
        let mut update = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(REPLICATION_PK.into(), format!("LEASE#{name}"))))
            .condition_expression("attribute_not_exists(pk) OR #owner = :o OR #until <= :now")
            .set_expression_attribute_names(names(&[("#owner", "owner"), ("#until", "until")]))
            .expression_attribute_values(":o", s(owner))
            .expression_attribute_values(":u", n(until))
            .expression_attribute_values(":now", n(now))
            .return_values(ReturnValue::AllNew);
        update = match payload {
            Some(p) => update
                .update_expression("SET #owner = :o, #until = :u, payload = :p")
                .expression_attribute_values(":p", s(p)),
            None => update.update_expression("SET #owner = :o, #until = :u"),
        };
        self.requests.dynamodb("UpdateItem");
        Ok(unless_condition_failed(update.send().await)?.map(|out| {
            out.attributes
                .and_then(|a| a.get("payload").and_then(|p| p.as_s().ok().cloned()))
        }))
    }
}

fn sk_of(item: &Attrs) -> String {
    match item.get("sk") {
        Some(AttributeValue::S(sk)) => sk.clone(),
        _ => String::new(),
    }
}
