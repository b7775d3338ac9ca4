//! `MetadataStore` on one DynamoDB table. Every read that a later write depends on, and
//! every read a sync cursor depends on, is strongly consistent; the two global secondary
//! indexes (a user's spaces, pending uploads by expiry) serve only lists where a moment's
//! lag is harmless.

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::operation::update_item::builders::UpdateItemFluentBuilder;
use aws_sdk_dynamodb::types::{
    CancellationReason, Delete, KeysAndAttributes, Put, ReturnValuesOnConditionCheckFailure,
    TransactWriteItem, Update,
};
use rand::Rng;
use tokio::sync::broadcast;

use super::items::{self, Attrs, Item, key, n, s};
use crate::domain::{
    Change, FileId, FileRecord, Millis, NameKey, PendingUpload, Role, SpaceId, SpaceName,
    SpaceSettings, UploadId, UploadState, UserId, VersionRecord,
};
use crate::storage::{Member, MetadataStore, Notice, Publish, RequestCounter, Space, StoreError};

/// Attempts of a write that keeps losing the race for its space item (its seq or its owner
/// count) to other writers.
const MAX_SEQ_ATTEMPTS: u32 = 64;

pub struct DynamoMetadata {
    pub(super) client: Client,
    pub(super) table: String,
    /// Local notices: a subscriber on this replica hears of its own writes without waiting
    /// for the stream (which still delivers them, harmlessly, a second time).
    notices: broadcast::Sender<Notice>,
    pub(super) requests: RequestCounter,
}

impl DynamoMetadata {
    pub fn new(
        client: Client,
        table: String,
        notices: broadcast::Sender<Notice>,
        requests: RequestCounter,
    ) -> Self {
        Self {
            client,
            table,
            notices,
            requests,
        }
    }

    pub(super) async fn get(&self, key: Attrs) -> Result<Option<Attrs>, StoreError> {
        self.requests.dynamodb("GetItem");
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(key))
            .consistent_read(true)
            .send()
            .await
            .map_err(aws_error)?;
        Ok(out.item)
    }

    /// Sends a conditional `UpdateItem`; `false` when its condition did not hold.
    pub(super) async fn update_if(
        &self,
        request: UpdateItemFluentBuilder,
    ) -> Result<bool, StoreError> {
        self.requests.dynamodb("UpdateItem");
        Ok(unless_condition_failed(request.send().await)?.is_some())
    }

    /// Items of partition `pk` with sort keys in `[lo, hi]`, in order, at most `limit`,
    /// read consistently; pages through DynamoDB's 1 MB responses.
    pub(super) async fn range(
        &self,
        pk: String,
        lo: String,
        hi: String,
        limit: usize,
    ) -> Result<Vec<Attrs>, StoreError> {
        let mut found = Vec::new();
        let mut start: Option<Attrs> = None;
        loop {
            self.requests.dynamodb("Query");
            let out = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression("pk = :pk AND sk BETWEEN :lo AND :hi")
                .expression_attribute_values(":pk", s(pk.clone()))
                .expression_attribute_values(":lo", s(lo.clone()))
                .expression_attribute_values(":hi", s(hi.clone()))
                .consistent_read(true)
                .limit(i32::try_from(limit - found.len()).unwrap_or(i32::MAX))
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(aws_error)?;
            found.extend(out.items.unwrap_or_default());
            match out.last_evaluated_key {
                Some(last) if found.len() < limit => start = Some(last),
                _ => return Ok(found),
            }
        }
    }

    /// The space's seq-keyed items (`sk(seq)`) with `seq > after`, in seq order.
    async fn after_seq(
        &self,
        space: SpaceId,
        sk: fn(u64) -> String,
        after: u64,
        limit: usize,
    ) -> Result<Vec<Attrs>, StoreError> {
        let (lo, hi) = (sk(after.saturating_add(1)), sk(u64::MAX));
        self.range(items::space_pk(space), lo, hi, limit).await
    }

    async fn transact(&self, items: Vec<TransactWriteItem>) -> Result<(), Cancelled> {
        self.requests.dynamodb("TransactWriteItems");
        match self
            .client
            .transact_write_items()
            .set_transact_items(Some(items))
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(SdkError::ServiceError(e)) => match e.into_err() {
                TransactWriteItemsError::TransactionCanceledException(c) => Err(
                    Cancelled::Reasons(c.cancellation_reasons.unwrap_or_default()),
                ),
                other => Err(Cancelled::Failed(aws_error(other))),
            },
            Err(e) => Err(Cancelled::Failed(aws_error(e))),
        }
    }

    fn put(&self, item: Attrs, condition: Option<&str>, values: Attrs) -> TransactWriteItem {
        let put = Put::builder()
            .table_name(&self.table)
            .set_item(Some(item))
            .set_condition_expression(condition.map(str::to_owned))
            .set_expression_attribute_values((!values.is_empty()).then_some(values))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .build()
            .expect("table and item are set");
        TransactWriteItem::builder().put(put).build()
    }

    fn delete(&self, key: Attrs, condition: Option<&str>, values: Attrs) -> TransactWriteItem {
        let delete = Delete::builder()
            .table_name(&self.table)
            .set_key(Some(key))
            .set_condition_expression(condition.map(str::to_owned))
            .set_expression_attribute_values((!values.is_empty()).then_some(values))
            .build()
            .expect("table and key are set");
        TransactWriteItem::builder().delete(delete).build()
    }

    /// A conditional update; `#state` in an expression names the `state` attribute (a
    /// reserved word in DynamoDB expressions).
    fn update(&self, key: Attrs, expression: &str, condition: &str, values: Attrs) -> Update {
        let names = (expression.contains("#state") || condition.contains("#state"))
            .then(|| HashMap::from([("#state".to_owned(), "state".to_owned())]));
        Update::builder()
            .table_name(&self.table)
            .set_key(Some(key))
            .update_expression(expression)
            .condition_expression(condition)
            .set_expression_attribute_names(names)
            .set_expression_attribute_values(Some(values))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .build()
            .expect("table, key and expression are set")
    }

    fn notify(&self, notice: Notice) {
        let _ = self.notices.send(notice);
    }

    /// One attempt at publishing: reads the space's seq and the file, then writes
    /// everything in one transaction conditioned on both. `Ok(None)`: another writer took
    /// the seq first; try again.
    async fn try_publish(&self, change: &Publish) -> Result<Option<FileRecord>, StoreError> {
        let space = self
            .get(key(items::space_pk(change.space_id), items::SPACE_SK))
            .await?
            .ok_or(StoreError::NoSuchSpace)?;
        let prev_seq: u64 = Item(&space).num("seq")?;
        let members_epoch = items::members_epoch_of(&space)?;
        let current_item = self
            .get(key(items::file_pk(change.file_id), items::FILE_SK))
            .await?;
        let current = current_item.as_ref().map(items::file_from).transpose()?;
        // The key the file's live name item is under (files written before keys existed
        // are under their exact name, and their folders were never counted).
        let stored_key = current_item
            .as_ref()
            .map(|item| Item(item).opt_str("name_key"))
            .transpose()?
            .flatten()
            .map(str::to_owned);
        let counted = stored_key.is_some();
        let old_key: Option<String> = match (stored_key, &current) {
            (Some(key), Some(_)) => Some(key),
            (None, Some(file)) => Some(file.name.as_str().to_owned()),
            _ => None,
        };
        let (number, creator, created_at) = match (&current, change.base_version) {
            (None, None) => (1, change.actor.clone(), change.at),
            (Some(f), Some(base)) if f.version == base && f.space_id == change.space_id => {
                (base + 1, f.creator.clone(), f.created_at)
            }
            (current, _) => {
                // The upload may be what moved the file on: committed meanwhile by another
                // replica or its storage event. That is not a conflict but a done commit.
                if let Some(upload) = change.upload
                    && self
                        .upload(upload)
                        .await?
                        .is_some_and(|u| u.state != UploadState::Pending)
                {
                    return Err(StoreError::UploadNotPending);
                }
                return Err(StoreError::Conflict {
                    current: current.as_ref().map_or(0, |f| f.version),
                });
            }
        };
        let seq = prev_seq + 1;
        let file = FileRecord {
            id: change.file_id,
            space_id: change.space_id,
            name: change.name.clone(),
            version: number,
            content: change.content.clone(),
            metadata: change.metadata.clone(),
            creator: creator.clone(),
            created_at,
            updated_at: change.at,
            deleted: change.deleted,
            seq,
        };
        let version = VersionRecord {
            file_id: change.file_id,
            space_id: change.space_id,
            number,
            seq,
            kind: change.kind,
            name: change.name.clone(),
            content: change.content.clone(),
            metadata: change.metadata.clone(),
            deleted: change.deleted,
            author: change.actor.clone(),
            at: change.at,
        };

        let space_pk = items::space_pk(change.space_id);
        let file_id = s(change.file_id.to_string());
        let mut tx = Vec::with_capacity(9);
        // 0: the seq, conditioned on the value read: a writer that took it meanwhile makes
        // this transaction fail as a whole, so seqs have no gaps and no duplicates. And on
        // the membership epoch read, which the log entry records: a membership change
        // committed meanwhile makes this attempt read again, so a change never carries an
        // epoch older than a removal that came before it.
        let epoch_condition = if members_epoch == 0 {
            "seq = :prev AND (attribute_not_exists(members_epoch) OR members_epoch = :epoch)"
        } else {
            "seq = :prev AND members_epoch = :epoch"
        };
        tx.push(
            TransactWriteItem::builder()
                .update(self.update(
                    key(space_pk.clone(), items::SPACE_SK),
                    "SET seq = :next",
                    epoch_condition,
                    HashMap::from([
                        (":next".into(), n(seq)),
                        (":prev".into(), n(prev_seq)),
                        (":epoch".into(), n(members_epoch)),
                    ]),
                ))
                .build(),
        );
        // 1: the file's current state, conditioned on the base version.
        let file_condition = match change.base_version {
            None => ("attribute_not_exists(pk)", HashMap::new()),
            Some(base) => (
                "version = :base AND space_id = :space",
                HashMap::from([
                    (":base".into(), n(base)),
                    (":space".into(), s(change.space_id.to_string())),
                ]),
            ),
        };
        let new_key = change.name_key.as_str();
        let keyed = |mut item: items::Attrs| {
            item.insert("name_key".into(), s(new_key));
            item
        };
        tx.push(self.put(
            keyed(items::file_item(
                items::file_pk(change.file_id),
                items::FILE_SK.into(),
                &file,
            )),
            Some(file_condition.0),
            file_condition.1,
        ));
        // 2, 3: the version, in the file's history and in the space's commit log.
        let fresh = "attribute_not_exists(pk)";
        tx.push(self.put(items::version_item(&version), Some(fresh), HashMap::new()));
        tx.push(self.put(
            items::log_item(&version, &creator, created_at, members_epoch),
            Some(fresh),
            HashMap::new(),
        ));
        // 4, 5: the `changes` index holds each file once, at its latest seq.
        tx.push(self.put(
            keyed(items::file_item(
                space_pk.clone(),
                items::latest_sk(seq),
                &file,
            )),
            None,
            HashMap::new(),
        ));
        if let Some(old) = &current {
            tx.push(self.delete(
                key(space_pk.clone(), items::latest_sk(old.seq)),
                None,
                HashMap::new(),
            ));
        }
        // The name item: at most one live file per name key in a space.
        let name_index = tx.len();
        if !change.deleted {
            tx.push(self.put(
                keyed(items::file_item(
                    space_pk.clone(),
                    items::name_sk(new_key),
                    &file,
                )),
                Some("attribute_not_exists(pk) OR file_id = :file"),
                HashMap::from([(":file".into(), file_id.clone())]),
            ));
        }
        let old_live_key = current
            .as_ref()
            .filter(|f| !f.deleted)
            .and(old_key.as_deref());
        if let Some(old) = old_live_key
            && (change.deleted || old != new_key)
        {
            tx.push(self.delete(
                key(space_pk.clone(), items::name_sk(old)),
                Some("file_id = :file"),
                HashMap::from([(":file".into(), file_id.clone())]),
            ));
        }
        // Folders: none of the name's folders is a live file, and the name is no folder
        // of other live files, which each folder's count (`D#`) of live files under it
        // says; the counts move with the file.
        let new_folders: Vec<&str> = if change.deleted {
            Vec::new()
        } else {
            change.name_key.folders().collect()
        };
        let old_name_key = old_live_key.map(|k| NameKey::from_stored(k.to_owned()));
        let old_folders: Vec<&str> = old_name_key
            .iter()
            .filter(|_| counted)
            .flat_map(|k| k.folders())
            .collect();
        let mut folder_checks = Vec::new();
        for folder in &new_folders {
            if Some(*folder) == old_live_key {
                continue; // the file itself, leaving that name in this transaction
            }
            folder_checks.push((tx.len(), None));
            tx.push(self.condition_check(
                key(space_pk.clone(), items::name_sk(folder)),
                "attribute_not_exists(pk)",
                HashMap::new(),
            ));
        }
        let mut deltas: std::collections::BTreeMap<&str, i64> = std::collections::BTreeMap::new();
        for folder in &new_folders {
            *deltas.entry(folder).or_default() += 1;
        }
        for folder in &old_folders {
            *deltas.entry(folder).or_default() -= 1;
        }
        deltas.retain(|_, d| *d != 0);
        for (folder, delta) in &deltas {
            // A file renamed to one of its own folders: only itself may be under it.
            let must_hold_only_it = !change.deleted && *folder == new_key;
            if must_hold_only_it {
                folder_checks.push((tx.len(), Some(new_key.to_owned())));
            }
            tx.push(
                TransactWriteItem::builder()
                    .update(self.folder_update(
                        key(space_pk.clone(), items::folder_sk(folder)),
                        *delta,
                        must_hold_only_it,
                    ))
                    .build(),
            );
        }
        if !change.deleted && !deltas.contains_key(new_key) {
            folder_checks.push((tx.len(), Some(new_key.to_owned())));
            tx.push(self.condition_check(
                key(space_pk.clone(), items::folder_sk(new_key)),
                "attribute_not_exists(pk) OR files = :zero",
                HashMap::from([(":zero".into(), n(0))]),
            ));
        }
        // The upload, which must still be pending.
        let upload_index = tx.len();
        if let Some(upload) = change.upload {
            tx.push(
                TransactWriteItem::builder()
                    .update(self.update(
                        key(items::upload_pk(upload), items::UPLOAD_SK),
                        "SET #state = :committed, committed_version = :v \
                         REMOVE pending_shard, pending_expiry, pending_author",
                        "#state = :pending",
                        HashMap::from([
                            (":committed".into(), s("COMMITTED")),
                            (":pending".into(), s("PENDING")),
                            (":v".into(), n(number)),
                        ]),
                    ))
                    .build(),
            );
        }

        // The new content's copies, queued with the version that holds it (at most 9
        // items: the largest publish has 79 others, DynamoDB allows 100).
        for store in &change.copy_to {
            let copy = crate::domain::NewCopy::of(store.clone(), &change.content, change.at);
            tx.push(self.put(
                super::copies::copy_item(change.space_id, &copy, change.at),
                None,
                HashMap::new(),
            ));
        }
        debug_assert!(tx.len() <= 100, "a transaction of {} items", tx.len());

        let reasons = match self.transact(tx).await {
            Ok(()) => {
                self.notify(Notice::Committed {
                    space_id: change.space_id,
                    seq,
                });
                return Ok(Some(file));
            }
            Err(Cancelled::Failed(e)) => return Err(e),
            Err(Cancelled::Reasons(reasons)) => reasons,
        };
        let retryable = |code: &str| {
            matches!(
                code,
                "None"
                    | "ConditionalCheckFailed"
                    | "TransactionConflict"
                    | "ThrottlingError"
                    | "ProvisionedThroughputExceeded"
            )
        };
        if let Some(bad) = reasons
            .iter()
            .filter_map(|r| r.code())
            .find(|c| !retryable(c))
        {
            return Err(StoreError::Other(anyhow::anyhow!(
                "DynamoDB cancelled the publish: {bad}"
            )));
        }
        let failed = |i: usize| {
            reasons
                .get(i)
                .is_some_and(|r| r.code() == Some("ConditionalCheckFailed"))
        };
        if change.upload.is_some() && failed(upload_index) {
            return Err(StoreError::UploadNotPending);
        }
        if failed(1) {
            let current = match reasons[1].item() {
                Some(item) => Item(item).num("version")?,
                None => 0,
            };
            return Err(StoreError::Conflict { current });
        }
        for (index, folder) in &folder_checks {
            if !failed(*index) {
                continue;
            }
            let holder = match folder {
                // A live file is one of the name's folders: the check saw it.
                None => reasons[*index].item().map(items::file_from).transpose()?,
                // The name is a folder of live files: one of them.
                Some(folder) => self.one_file_under(change.space_id, folder).await?,
            };
            return match holder {
                Some(holder) => Err(StoreError::PathClash {
                    file_id: holder.id,
                    current: holder.version,
                }),
                None => Ok(None),
            };
        }
        if !change.deleted && failed(name_index) {
            let holder = reasons[name_index]
                .item()
                .map(items::file_from)
                .transpose()?;
            return match holder {
                Some(holder) => Err(StoreError::NameTaken {
                    file_id: holder.id,
                    current: holder.version,
                }),
                None => Ok(None),
            };
        }
        // The seq moved on, or a concurrent transaction held an item: read again.
        Ok(None)
    }
}

impl DynamoMetadata {
    fn condition_check(&self, key: Attrs, condition: &str, values: Attrs) -> TransactWriteItem {
        let check = aws_sdk_dynamodb::types::ConditionCheck::builder()
            .table_name(&self.table)
            .set_key(Some(key))
            .condition_expression(condition)
            .set_expression_attribute_values((!values.is_empty()).then_some(values))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .build()
            .expect("table, key and condition are set");
        TransactWriteItem::builder().condition_check(check).build()
    }

    /// Moves a folder's count of live files by `delta`; with `only_one`, the folder must
    /// hold exactly one (the file moving out of it onto the folder's own name).
    fn folder_update(&self, key: Attrs, delta: i64, only_one: bool) -> Update {
        let mut values = HashMap::from([(":d".to_owned(), n(delta))]);
        let mut update = Update::builder()
            .table_name(&self.table)
            .set_key(Some(key))
            .update_expression("ADD files :d");
        if only_one {
            values.insert(":one".into(), n(1));
            update = update.condition_expression("files = :one");
        }
        update
            .set_expression_attribute_values(Some(values))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .build()
            .expect("table, key and expression are set")
    }

    /// One live file whose key is under `folder`, if any.
    async fn one_file_under(
        &self,
        space: SpaceId,
        folder: &str,
    ) -> Result<Option<FileRecord>, StoreError> {
        let found = self
            .range(
                items::space_pk(space),
                items::name_sk(&format!("{folder}/")),
                items::name_sk(&format!("{folder}0")),
                1,
            )
            .await?;
        found.first().map(items::file_from).transpose()
    }
}

enum Cancelled {
    Reasons(Vec<CancellationReason>),
    Failed(StoreError),
}

pub(super) fn aws_error(e: impl std::error::Error + Send + Sync + 'static) -> StoreError {
    StoreError::Other(anyhow::Error::new(e).context("DynamoDB request failed"))
}

/// A conditional write's outcome: `Some` when it was written, `None` when its condition
/// did not hold; any other failure is an error.
pub(super) fn unless_condition_failed<T, E, R>(
    result: Result<T, SdkError<E, R>>,
) -> Result<Option<T>, StoreError>
where
    E: aws_sdk_dynamodb::error::ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    match result {
        Ok(out) => Ok(Some(out)),
        Err(e)
            if e.as_service_error().and_then(|e| e.code())
                == Some("ConditionalCheckFailedException") =>
        {
            Ok(None)
        }
        Err(e) => Err(aws_error(e)),
    }
}

#[async_trait]
impl MetadataStore for DynamoMetadata {
    async fn create_space(
        &self,
        id: SpaceId,
        name: SpaceName,
        owner: UserId,
        at: Millis,
    ) -> Result<Space, StoreError> {
        let space = Space {
            id,
            name,
            created_by: owner.clone(),
            created_at: at,
            seq: 0,
        };
        let fresh = Some("attribute_not_exists(pk)");
        let tx = vec![
            self.put(items::space_item(&space, 1), fresh, HashMap::new()),
            self.put(
                items::member_item(id, at, &owner, Role::Owner),
                fresh,
                HashMap::new(),
            ),
        ];
        match self.transact(tx).await {
            Ok(()) => Ok(space),
            Err(Cancelled::Failed(e)) => Err(e),
            Err(Cancelled::Reasons(_)) => Err(StoreError::Other(anyhow::anyhow!(
                "space {id} already exists"
            ))),
        }
    }

    async fn space(&self, id: SpaceId) -> Result<Option<Space>, StoreError> {
        self.get(key(items::space_pk(id), items::SPACE_SK))
            .await?
            .as_ref()
            .map(items::space_from)
            .transpose()
    }

    async fn space_settings(&self, space: SpaceId) -> Result<Option<SpaceSettings>, StoreError> {
        let Some(item) = self
            .get(key(items::space_pk(space), items::SPACE_SK))
            .await?
        else {
            return Ok(None);
        };
        match item.get("settings") {
            Some(aws_sdk_dynamodb::types::AttributeValue::S(json)) => serde_json::from_str(json)
                .map(Some)
                .map_err(|e| StoreError::Other(anyhow::Error::new(e).context("space settings"))),
            _ => Ok(Some(SpaceSettings::default())),
        }
    }

    async fn set_space_settings(
        &self,
        space: SpaceId,
        settings: SpaceSettings,
        before_first_change: bool,
    ) -> Result<bool, StoreError> {
        let json = serde_json::to_string(&settings).map_err(|e| StoreError::Other(e.into()))?;
        let mut update = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(items::space_pk(space), items::SPACE_SK)))
            .update_expression("SET settings = :settings")
            .expression_attribute_values(":settings", s(&json));
        update = if before_first_change {
            update
                .condition_expression("attribute_exists(pk) AND seq = :zero")
                .expression_attribute_values(":zero", n(0))
        } else {
            update.condition_expression("attribute_exists(pk)")
        };
        if self.update_if(update).await? {
            return Ok(true);
        }
        match self.space(space).await? {
            None => Err(StoreError::NoSuchSpace),
            Some(_) => Ok(false),
        }
    }

    async fn spaces_of(
        &self,
        user: &UserId,
        after: Option<SpaceId>,
        limit: usize,
    ) -> Result<Vec<(Space, Role)>, StoreError> {
        // The index gives the memberships in order of space creation; the spaces
        // themselves (whose seq moves) are read consistently in batches. A page starts
        // after the membership of `after` (its index key is made of the space's creation
        // time and id).
        let mut start = match after {
            None => None,
            Some(after) => match self.space(after).await? {
                None => return Ok(Vec::new()),
                Some(space) => {
                    let mut start = key(items::space_pk(after), items::member_sk(user));
                    start.insert("member_user".into(), s(user.as_str()));
                    start.insert(
                        "space_order".into(),
                        s(items::space_order(after, space.created_at)),
                    );
                    Some(start)
                }
            },
        };
        let mut memberships: Vec<(SpaceId, Role)> = Vec::new();
        while memberships.len() < limit {
            self.requests.dynamodb("Query");
            let out = self
                .client
                .query()
                .table_name(&self.table)
                .index_name(items::USER_SPACES_INDEX)
                .key_condition_expression("member_user = :u")
                .expression_attribute_values(":u", s(user.as_str()))
                .limit(i32::try_from(limit - memberships.len()).unwrap_or(i32::MAX))
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(aws_error)?;
            for item in out.items.unwrap_or_default() {
                memberships.push((Item(&item).parse("space_id")?, items::role_from(&item)?));
            }
            match out.last_evaluated_key {
                Some(last) => start = Some(last),
                None => break,
            }
        }
        let mut spaces: HashMap<SpaceId, Space> = HashMap::new();
        for chunk in memberships.chunks(100) {
            let mut keys: Vec<Attrs> = chunk
                .iter()
                .map(|(id, _)| key(items::space_pk(*id), items::SPACE_SK))
                .collect();
            while !keys.is_empty() {
                self.requests.dynamodb("BatchGetItem");
                let request = KeysAndAttributes::builder()
                    .set_keys(Some(std::mem::take(&mut keys)))
                    .consistent_read(true)
                    .build()
                    .map_err(aws_error)?;
                let out = self
                    .client
                    .batch_get_item()
                    .request_items(&self.table, request)
                    .send()
                    .await
                    .map_err(aws_error)?;
                for item in out
                    .responses
                    .and_then(|mut r| r.remove(&self.table))
                    .unwrap_or_default()
                {
                    let space = items::space_from(&item)?;
                    spaces.insert(space.id, space);
                }
                if let Some(rest) = out.unprocessed_keys.and_then(|mut u| u.remove(&self.table)) {
                    keys = rest.keys;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
        Ok(memberships
            .into_iter()
            .filter_map(|(id, role)| spaces.remove(&id).map(|space| (space, role)))
            .collect())
    }

    async fn role(&self, space: SpaceId, user: &UserId) -> Result<Option<Role>, StoreError> {
        self.get(key(items::space_pk(space), items::member_sk(user)))
            .await?
            .as_ref()
            .map(items::role_from)
            .transpose()
    }

    async fn membership(
        &self,
        space: SpaceId,
        user: &UserId,
    ) -> Result<(Option<Role>, Option<u64>), StoreError> {
        // The epoch first, then the role: the role read is then no older than the epoch.
        let Some(space_item) = self
            .get(key(items::space_pk(space), items::SPACE_SK))
            .await?
        else {
            return Ok((None, None));
        };
        let epoch = items::members_epoch_of(&space_item)?;
        Ok((self.role(space, user).await?, Some(epoch)))
    }

    async fn members(
        &self,
        space: SpaceId,
        after: Option<&UserId>,
        limit: usize,
    ) -> Result<Vec<Member>, StoreError> {
        let lo = after.map_or_else(|| "M#".to_owned(), items::member_sk);
        let found = self
            .range(items::space_pk(space), lo, "M$".into(), limit + 1)
            .await?;
        let mut members = Vec::with_capacity(found.len());
        for item in &found {
            let user = items::member_user_from(item)?;
            if Some(&user) == after {
                continue;
            }
            members.push(Member {
                user,
                role: items::role_from(item)?,
            });
        }
        members.truncate(limit);
        Ok(members)
    }

    async fn set_member(
        &self,
        space: SpaceId,
        user: UserId,
        role: Option<Role>,
    ) -> Result<(), StoreError> {
        for attempt in 0..MAX_SEQ_ATTEMPTS {
            let space_item = self
                .get(key(items::space_pk(space), items::SPACE_SK))
                .await?
                .ok_or(StoreError::NoSuchSpace)?;
            let owners: u32 = Item(&space_item).num("owners")?;
            let created_at: Millis = Item(&space_item).num("created_at")?;
            let current = self.role(space, &user).await?;
            if current == role {
                return Ok(());
            }
            let was_owner = current == Some(Role::Owner);
            let is_owner = role == Some(Role::Owner);
            if was_owner && !is_owner && owners <= 1 {
                return Err(StoreError::LastOwner);
            }
            let member_key = key(items::space_pk(space), items::member_sk(&user));
            // The member item is conditioned on the role read, the owner count on the
            // count read: a concurrent change makes this attempt fail and read again.
            let (condition, mut values) = match current {
                None => ("attribute_not_exists(pk)", HashMap::new()),
                Some(r) => (
                    "#role = :was",
                    HashMap::from([(":was".to_owned(), s(r.as_str()))]),
                ),
            };
            let member = match role {
                Some(role) => {
                    let mut put = Put::builder()
                        .table_name(&self.table)
                        .set_item(Some(items::member_item(space, created_at, &user, role)))
                        .condition_expression(condition);
                    if current.is_some() {
                        put = put.expression_attribute_names("#role", "role");
                    }
                    TransactWriteItem::builder()
                        .put(
                            put.set_expression_attribute_values(
                                (!values.is_empty()).then(|| std::mem::take(&mut values)),
                            )
                            .build()
                            .map_err(aws_error)?,
                        )
                        .build()
                }
                None => TransactWriteItem::builder()
                    .delete(
                        Delete::builder()
                            .table_name(&self.table)
                            .set_key(Some(member_key))
                            .condition_expression(condition)
                            .expression_attribute_names("#role", "role")
                            .set_expression_attribute_values(Some(std::mem::take(&mut values)))
                            .build()
                            .map_err(aws_error)?,
                    )
                    .build(),
            };
            let delta: i64 = i64::from(is_owner) - i64::from(was_owner);
            // The owner count, and the membership epoch every change records.
            let owners_update = TransactWriteItem::builder()
                .update(self.update(
                    key(items::space_pk(space), items::SPACE_SK),
                    "SET owners = :new, members_epoch = if_not_exists(members_epoch, :zero) + :one",
                    "owners = :old",
                    HashMap::from([
                        (":new".into(), n(i64::from(owners) + delta)),
                        (":old".into(), n(owners)),
                        (":zero".into(), n(0)),
                        (":one".into(), n(1)),
                    ]),
                ))
                .build();
            match self.transact(vec![member, owners_update]).await {
                Ok(()) => {
                    self.notify(Notice::MembershipChanged {
                        space_id: space,
                        user,
                    });
                    return Ok(());
                }
                Err(Cancelled::Failed(e)) => return Err(e),
                Err(Cancelled::Reasons(_)) => backoff(attempt).await,
            }
        }
        Err(StoreError::Other(anyhow::anyhow!(
            "space {space}: lost the race to change its members {MAX_SEQ_ATTEMPTS} times"
        )))
    }

    async fn file(&self, id: FileId) -> Result<Option<FileRecord>, StoreError> {
        self.get(key(items::file_pk(id), items::FILE_SK))
            .await?
            .as_ref()
            .map(items::file_from)
            .transpose()
    }

    async fn file_for(
        &self,
        id: FileId,
        user: &UserId,
    ) -> Result<Option<(FileRecord, Option<Role>)>, StoreError> {
        let Some(file) = self.file(id).await? else {
            return Ok(None);
        };
        let role = self.role(file.space_id, user).await?;
        Ok(Some((file, role)))
    }

    async fn version(&self, id: FileId, number: u32) -> Result<Option<VersionRecord>, StoreError> {
        self.get(key(items::file_pk(id), items::version_sk(number)))
            .await?
            .as_ref()
            .map(items::version_from)
            .transpose()
    }

    async fn versions(
        &self,
        id: FileId,
        after: u32,
        limit: usize,
    ) -> Result<Vec<VersionRecord>, StoreError> {
        let first = items::version_sk(after.saturating_add(1));
        self.range(items::file_pk(id), first, "V$".into(), limit)
            .await?
            .iter()
            .map(items::version_from)
            .collect()
    }

    async fn list_files(
        &self,
        space: SpaceId,
        key_prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<FileRecord>, StoreError> {
        // Sort keys compare as UTF-8 bytes, as name keys do: a prefix is a key range.
        let lower = match after {
            Some(after) if after >= key_prefix => after,
            _ => key_prefix,
        };
        let upper = crate::storage::prefix_upper_bound(key_prefix)
            .map_or_else(|| "N$".to_owned(), |u| items::name_sk(&u));
        let found = self
            .range(
                items::space_pk(space),
                items::name_sk(lower),
                upper,
                limit + 1,
            )
            .await?;
        let mut files = Vec::with_capacity(found.len());
        for item in &found {
            let key = Item(item).str("sk")?.strip_prefix("N#").unwrap_or_default();
            if after == Some(key) || !key.starts_with(key_prefix) {
                continue;
            }
            files.push(items::file_from(item)?);
        }
        files.truncate(limit);
        Ok(files)
    }

    async fn file_keyed(
        &self,
        space: SpaceId,
        name_key: &NameKey,
    ) -> Result<Option<FileRecord>, StoreError> {
        self.get(key(
            items::space_pk(space),
            items::name_sk(name_key.as_str()),
        ))
        .await?
        .as_ref()
        .map(items::file_from)
        .transpose()
    }

    async fn changes(
        &self,
        space: SpaceId,
        after_seq: u64,
        limit: usize,
    ) -> Result<Vec<FileRecord>, StoreError> {
        self.after_seq(space, items::latest_sk, after_seq, limit)
            .await?
            .iter()
            .map(items::file_from)
            .collect()
    }

    async fn commit_log(
        &self,
        space: SpaceId,
        after_seq: u64,
        limit: usize,
    ) -> Result<Vec<Change>, StoreError> {
        // A Query is read-committed, not a snapshot: it can show seq n+1 and miss seq n,
        // committed just before it, whose item it passed a moment too early. Every seq
        // up to the last one shown is committed, so the page is cut at its first hole,
        // and a hole right at its start is read again.
        for attempt in 0..HOLE_ATTEMPTS {
            let mut page: Vec<Change> = self
                .after_seq(space, items::log_sk, after_seq, limit)
                .await?
                .iter()
                .map(items::change_from)
                .collect::<Result<_, _>>()?;
            let contiguous = crate::domain::contiguous_len(after_seq, &page);
            if contiguous > 0 || page.is_empty() || attempt + 1 == HOLE_ATTEMPTS {
                page.truncate(contiguous);
                return Ok(page);
            }
            tracing::debug!(%space, after_seq, "the commit log shows a hole; reading again");
            backoff(attempt + 3).await;
        }
        unreachable!("the last attempt returns")
    }

    async fn create_upload(&self, upload: PendingUpload) -> Result<(), StoreError> {
        self.requests.dynamodb("PutItem");
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(items::upload_item(&upload)))
            .condition_expression("attribute_not_exists(pk)")
            .send()
            .await
            .map_err(aws_error)?;
        Ok(())
    }

    async fn upload(&self, id: UploadId) -> Result<Option<PendingUpload>, StoreError> {
        self.get(key(items::upload_pk(id), items::UPLOAD_SK))
            .await?
            .as_ref()
            .map(items::upload_from)
            .transpose()
    }

    async fn pending_uploads_of(&self, user: &UserId, now: Millis) -> Result<usize, StoreError> {
        // The index is eventually consistent: a count that lags by an upload or two is
        // good enough for an abuse limit.
        let mut count = 0usize;
        let mut start = None;
        loop {
            self.requests.dynamodb("Query");
            let out = self
                .client
                .query()
                .table_name(&self.table)
                .index_name(items::PENDING_BY_AUTHOR_INDEX)
                .key_condition_expression("pending_author = :u AND pending_expiry > :now")
                .expression_attribute_values(":u", s(user.as_str()))
                .expression_attribute_values(":now", n(now))
                .select(aws_sdk_dynamodb::types::Select::Count)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(aws_error)?;
            count += usize::try_from(out.count).unwrap_or(0);
            match out.last_evaluated_key {
                Some(key) if !key.is_empty() => start = Some(key),
                _ => return Ok(count),
            }
        }
    }

    async fn uploads_of_space(
        &self,
        space: SpaceId,
        after: Option<UploadId>,
        limit: usize,
    ) -> Result<Vec<PendingUpload>, StoreError> {
        // The space's uploads in the `space-uploads` index, newest first; `after`
        // continues past that upload's place in it.
        let mut start = match after {
            None => None,
            Some(after) => match self.upload(after).await? {
                Some(u) if u.space_id == space => {
                    let mut start = key(items::upload_pk(u.id), items::UPLOAD_SK);
                    start.insert("upload_space".into(), s(space.to_string()));
                    start.insert("upload_order".into(), s(items::upload_order(&u)));
                    Some(start)
                }
                _ => return Ok(Vec::new()),
            },
        };
        let mut uploads = Vec::new();
        while uploads.len() < limit {
            self.requests.dynamodb("Query");
            let out = self
                .client
                .query()
                .table_name(&self.table)
                .index_name(items::SPACE_UPLOADS_INDEX)
                .key_condition_expression("upload_space = :s")
                .expression_attribute_values(":s", s(space.to_string()))
                .scan_index_forward(false)
                .limit(i32::try_from(limit - uploads.len()).unwrap_or(i32::MAX))
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(aws_error)?;
            for item in out.items.unwrap_or_default() {
                uploads.push(items::upload_from(&item)?);
            }
            match out.last_evaluated_key {
                Some(last) if !last.is_empty() => start = Some(last),
                _ => break,
            }
        }
        Ok(uploads)
    }

    async fn abandon_upload(&self, id: UploadId, purge_at: Millis) -> Result<bool, StoreError> {
        // The upload stays in the sweeper's index (`pending_shard`, `pending_expiry` =
        // when its content is due for removal) until its purge is recorded; it leaves the
        // per-author count at once.
        self.update_if(
            self.client
                .update_item()
                .table_name(&self.table)
                .set_key(Some(key(items::upload_pk(id), items::UPLOAD_SK)))
                .update_expression(
                    "SET #state = :abandoned, pending_expiry = :purge REMOVE pending_author",
                )
                .condition_expression("#state = :pending")
                .expression_attribute_names("#state", "state")
                .expression_attribute_values(":abandoned", s("ABANDONED"))
                .expression_attribute_values(":pending", s("PENDING"))
                .expression_attribute_values(":purge", n(purge_at)),
        )
        .await
    }

    async fn uploads_to_sweep(
        &self,
        now: Millis,
        limit: usize,
    ) -> Result<Vec<PendingUpload>, StoreError> {
        let mut due = Vec::new();
        for shard in 0..items::PENDING_SHARDS {
            self.requests.dynamodb("Query");
            let out = self
                .client
                .query()
                .table_name(&self.table)
                .index_name(items::PENDING_INDEX)
                .key_condition_expression("pending_shard = :shard AND pending_expiry < :now")
                .expression_attribute_values(":shard", s(format!("P{shard}")))
                .expression_attribute_values(":now", n(now))
                .limit(i32::try_from(limit).unwrap_or(i32::MAX))
                .send()
                .await
                .map_err(aws_error)?;
            for item in out.items.unwrap_or_default() {
                due.push(items::upload_from(&item)?);
            }
        }
        // The index lags the table a little: a commit may not have left it yet.
        due.retain(|u| u.state != UploadState::Committed);
        due.sort_by_key(|u| u.expires_at);
        due.truncate(limit);
        Ok(due)
    }

    async fn upload_purged(&self, id: UploadId) -> Result<(), StoreError> {
        self.update_if(
            self.client
                .update_item()
                .table_name(&self.table)
                .set_key(Some(key(items::upload_pk(id), items::UPLOAD_SK)))
                .update_expression("REMOVE pending_shard, pending_expiry")
                .condition_expression("#state = :abandoned")
                .expression_attribute_names("#state", "state")
                .expression_attribute_values(":abandoned", s("ABANDONED")),
        )
        .await
        .map(drop)
    }

    async fn publish(&self, change: Publish) -> Result<FileRecord, StoreError> {
        for attempt in 0..MAX_SEQ_ATTEMPTS {
            if let Some(file) = self.try_publish(&change).await? {
                return Ok(file);
            }
            self.requests.seq_retry();
            backoff(attempt).await;
        }
        Err(StoreError::Other(anyhow::anyhow!(
            "space {} is too busy: lost the race for its next seq {MAX_SEQ_ATTEMPTS} times",
            change.space_id
        )))
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.get(key("PING".into(), "PING")).await.map(drop)
    }
}

/// Reads of the commit log that start at a hole before the page is returned short.
const HOLE_ATTEMPTS: u32 = 5;

/// Jittered exponential backoff between attempts, capped at about 100 ms.
async fn backoff(attempt: u32) {
    let cap = 2u64.saturating_pow(attempt.min(7)).min(100);
    let wait = rand::rng().random_range(0..=cap);
    tokio::time::sleep(Duration::from_millis(wait)).await;
}
