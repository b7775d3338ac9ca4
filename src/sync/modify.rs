//! Changes that need no new bytes: metadata/rename, delete (tombstone), restore.

use super::access::require_write;
use super::{Error, Result, SyncService, now};
use crate::domain::{
    ChangeKind, FileId, FileName, FileRecord, Metadata, MetadataEntry, Role, UserId,
};
use crate::storage::{Publish, StoreError};

/// What `updateFile` changes; `None` keeps the current value.
#[derive(Debug, Default)]
pub struct FileUpdate {
    pub name: Option<String>,
    pub metadata: Option<Vec<MetadataEntry>>,
}

/// How often an unconditional delete retries after losing a race.
const DELETE_ATTEMPTS: usize = 5;

impl SyncService {
    /// A new version with a new name and/or metadata, reusing the current content.
    pub async fn update_file(
        &self,
        user: &UserId,
        id: FileId,
        base_version: i32,
        update: FileUpdate,
    ) -> Result<FileRecord> {
        let base = parse_version(base_version, "baseVersion")?;
        let (file, role) = self.visible_file(user, id).await?;
        require_write(role)?;
        if file.deleted {
            return Err(Error::bad_input(
                "the file is deleted; restore a version of it first",
            ));
        }
        if update.name.is_none() && update.metadata.is_none() {
            return Err(Error::bad_input(
                "nothing to update: give a name or metadata",
            ));
        }
        let settings = self.settings_of(file.space_id).await?;
        let name = match update.name {
            Some(name) => {
                let name = FileName::parse(&name)?;
                if name != file.name
                    && let Some(refusal) = settings.extension_refusal(&name)
                {
                    return Err(super::spaces::refused(refusal));
                }
                name
            }
            None => file.name.clone(),
        };
        let metadata = match update.metadata {
            Some(entries) => Metadata::parse(entries)?,
            None => file.metadata.clone(),
        };
        self.publish(Publish {
            space_id: file.space_id,
            file_id: id,
            base_version: Some(base),
            kind: ChangeKind::Updated,
            name_key: settings.key(&name),
            name,
            content: file.content,
            metadata,
            deleted: false,
            actor: user.clone(),
            at: now(),
            upload: None,
            copy_to: Vec::new(),
        })
        .await
    }

    /// Writes a tombstone. Only the file's creator or an owner of its space may delete.
    /// Without `base_version` the delete applies to whatever version is current.
    pub async fn delete_file(
        &self,
        user: &UserId,
        id: FileId,
        base_version: Option<i32>,
    ) -> Result<FileRecord> {
        let base = base_version
            .map(|v| parse_version(v, "baseVersion"))
            .transpose()?;
        for _ in 0..DELETE_ATTEMPTS {
            let (file, role) = self.visible_file(user, id).await?;
            if role != Role::Owner && !(role.can_write() && file.creator == *user) {
                return Err(Error::forbidden(
                    "only the file's creator or an owner of the space may delete it",
                ));
            }
            if file.deleted && base.is_none_or(|b| b == file.version) {
                // Already a tombstone: deleting again changes nothing.
                return Ok(file);
            }
            let result = self
                .publish(Publish {
                    space_id: file.space_id,
                    file_id: id,
                    base_version: Some(base.unwrap_or(file.version)),
                    kind: ChangeKind::Deleted,
                    name_key: self.settings_of(file.space_id).await?.key(&file.name),
                    name: file.name.clone(),
                    content: file.content.clone(),
                    metadata: file.metadata.clone(),
                    deleted: true,
                    actor: user.clone(),
                    at: now(),
                    upload: None,
                    copy_to: Vec::new(),
                })
                .await;
            match result {
                Err(Error::Conflict { .. }) if base.is_none() => continue,
                other => return other,
            }
        }
        Err(Error::Internal(anyhow::anyhow!(
            "delete kept losing races after {DELETE_ATTEMPTS} attempts"
        )))
    }

    /// Makes an old version current again (also undeletes).
    pub async fn restore_version(
        &self,
        user: &UserId,
        id: FileId,
        version: i32,
        base_version: i32,
    ) -> Result<FileRecord> {
        let number = parse_version(version, "version")?;
        let base = parse_version(base_version, "baseVersion")?;
        let (file, role) = self.visible_file(user, id).await?;
        require_write(role)?;
        let old = self
            .inner
            .store
            .meta
            .version(id, number)
            .await?
            .ok_or(Error::NotFound("version"))?;
        if old.deleted {
            return Err(Error::bad_input(
                "that version is a tombstone; restore a version with content",
            ));
        }
        // What a restore brings back is checked as a rename (a name) or an upload (other
        // content) would be, against the space's settings now.
        let settings = self.settings_of(file.space_id).await?;
        let refusal = if old.content != file.content {
            settings.refusal(
                &old.name,
                old.content.content_type.as_deref(),
                old.content.size,
            )
        } else if old.name != file.name {
            settings.extension_refusal(&old.name)
        } else {
            None
        };
        if let Some(refusal) = refusal {
            return Err(super::spaces::refused(refusal));
        }
        self.publish(Publish {
            space_id: file.space_id,
            file_id: id,
            base_version: Some(base),
            kind: ChangeKind::Restored,
            name_key: settings.key(&old.name),
            name: old.name,
            content: old.content,
            metadata: old.metadata,
            deleted: false,
            actor: user.clone(),
            at: now(),
            upload: None,
            copy_to: Vec::new(),
        })
        .await
    }

    /// Publishes one change and logs it.
    pub(super) async fn publish(&self, change: Publish) -> Result<FileRecord> {
        let kind = change.kind;
        let actor = change.actor.clone();
        match self.inner.store.meta.publish(change).await {
            Ok(file) => {
                tracing::debug!(
                    file = %file.id, version = file.version, seq = file.seq,
                    kind = kind.as_str(), %actor, "change committed"
                );
                Ok(file)
            }
            Err(StoreError::UploadNotPending) => Err(Error::UploadExpired(
                "the upload is no longer pending".into(),
            )),
            Err(e) => Err(e.into()),
        }
    }
}

fn parse_version(v: i32, arg: &str) -> Result<u32> {
    u32::try_from(v)
        .ok()
        .filter(|v| *v >= 1)
        .ok_or_else(|| Error::bad_input(format!("{arg} must be a positive version number")))
}
