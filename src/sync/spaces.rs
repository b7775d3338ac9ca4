//! Spaces and their members.

use super::{Error, Result, SyncService, now};
use futures::StreamExt;

use crate::domain::{
    FileName, PendingUpload, Refusal, Role, SpaceId, SpaceName, SpaceSettings, UploadId, UserId,
};
use crate::storage::{BlobInfo, Member, Space};

/// The most uploads one `Space.uploads` page inspects (one blob store `HEAD` each).
const MAX_INSPECTED: usize = 100;

impl SyncService {
    /// Creates a space owned by `user`.
    pub async fn create_space(&self, user: &UserId, name: &str) -> Result<Space> {
        let name = SpaceName::parse(name)?;
        let space = self
            .inner
            .store
            .meta
            .create_space(SpaceId::new(), name, user.clone(), now())
            .await?;
        tracing::info!(space = %space.id, owner = %user, "space created");
        Ok(space)
    }

    /// A page of the spaces `user` belongs to (by creation), with the user's role in
    /// each: at most `first` (default 100), those after the space `after`.
    pub async fn spaces(
        &self,
        user: &UserId,
        first: Option<i32>,
        after: Option<SpaceId>,
    ) -> Result<Vec<(Space, Role)>> {
        let limit = self.page_size(first, "first")?;
        Ok(self.inner.store.meta.spaces_of(user, after, limit).await?)
    }

    /// A space and the caller's role; `None` for non-members.
    pub async fn space(&self, user: &UserId, id: SpaceId) -> Result<Option<(Space, Role)>> {
        let Some(role) = self.inner.store.meta.role(id, user).await? else {
            return Ok(None);
        };
        let space = self.inner.store.meta.space(id).await?;
        Ok(space.map(|s| (s, role)))
    }

    /// A page of a space's members, by user id: at most `first` (default 100), those
    /// after `after`.
    pub async fn members(
        &self,
        user: &UserId,
        space: SpaceId,
        first: Option<i32>,
        after: Option<&str>,
    ) -> Result<Vec<Member>> {
        self.role_in(user, space).await?;
        let limit = self.page_size(first, "first")?;
        let after = after.map(UserId::parse).transpose()?;
        Ok(self
            .inner
            .store
            .meta
            .members(space, after.as_ref(), limit)
            .await?)
    }

    /// The owners' inspector: a page of the space's uploads in every state, newest first,
    /// each beside what the blob store holds under its key right now (`None`: nothing
    /// yet, or removed).
    pub async fn uploads(
        &self,
        user: &UserId,
        space: SpaceId,
        first: Option<i32>,
        after: Option<UploadId>,
    ) -> Result<Vec<(PendingUpload, Option<BlobInfo>)>> {
        if self.role_in(user, space).await? != Role::Owner {
            return Err(Error::forbidden(
                "only an owner may inspect a space's uploads",
            ));
        }
        let limit = self.page_size(first, "first")?;
        // Each upload costs a look at the blob store: pages stay small.
        if limit > MAX_INSPECTED {
            return Err(Error::bad_input(format!(
                "`first` may be at most {MAX_INSPECTED} for uploads"
            )));
        }
        let uploads = self
            .inner
            .store
            .meta
            .uploads_of_space(space, after, limit)
            .await?;
        let keys: Vec<String> = uploads.iter().map(|u| u.blob_key.clone()).collect();
        let objects: Vec<_> = futures::stream::iter(keys)
            .map(|key| {
                let blobs = self.inner.store.blobs.clone();
                async move { blobs.head(&key).await }
            })
            .buffered(16)
            .collect()
            .await;
        uploads
            .into_iter()
            .zip(objects)
            .map(|(u, o)| Ok((u, o?)))
            .collect()
    }

    /// Adds, changes or (role `None`) removes a member. Owners only. Returns the space and
    /// the caller's role afterwards (`None` if the caller removed themselves).
    pub async fn set_member(
        &self,
        user: &UserId,
        space: SpaceId,
        member: &str,
        role: Option<Role>,
    ) -> Result<(Space, Option<Role>)> {
        let member = UserId::parse(member)?;
        if self.role_in(user, space).await? != Role::Owner {
            return Err(Error::forbidden("only an owner may change members"));
        }
        self.inner
            .store
            .meta
            .set_member(space, member.clone(), role)
            .await?;
        tracing::info!(%space, %member, role = ?role, by = %user, "membership changed");
        let space = self
            .inner
            .store
            .meta
            .space(space)
            .await?
            .ok_or(Error::NotFound("space"))?;
        let my_role = self.inner.store.meta.role(space.id, user).await?;
        Ok((space, my_role))
    }

    /// The space's settings, for its members.
    pub async fn space_settings(&self, user: &UserId, space: SpaceId) -> Result<SpaceSettings> {
        self.role_in(user, space).await?;
        self.settings_of(space).await
    }

    /// Replaces the space's settings. Owners only. They apply to uploads begun or
    /// committed from now on, and to renames; files already there stay.
    pub async fn update_space_settings(
        &self,
        user: &UserId,
        space: SpaceId,
        settings: SpaceSettings,
    ) -> Result<(Space, Role)> {
        let role = self.role_in(user, space).await?;
        if role != Role::Owner {
            return Err(Error::forbidden(
                "only an owner may change the space's settings",
            ));
        }
        if let Some(limit) = settings.max_file_size
            && limit > self.inner.limits.max_file_size
        {
            return Err(Error::bad_input(format!(
                "maxFileSize may not exceed the server's limit of {} bytes",
                self.inner.limits.max_file_size
            )));
        }
        let meta = &self.inner.store.meta;
        let before = self.settings_of(space).await?;
        let renames = settings.case_sensitive_names != before.case_sensitive_names;
        if !meta
            .set_space_settings(space, settings.clone(), renames)
            .await?
        {
            return Err(Error::bad_input(
                "caseSensitiveNames can change only before the space's first file",
            ));
        }
        tracing::info!(%space, by = %user, ?settings, "space settings changed");
        self.replication_setting_changed(space, &before, &settings)
            .await?;
        let space = meta.space(space).await?.ok_or(Error::NotFound("space"))?;
        Ok((space, role))
    }

    pub(super) async fn settings_of(&self, space: SpaceId) -> Result<SpaceSettings> {
        self.inner
            .store
            .meta
            .space_settings(space)
            .await?
            .ok_or(Error::NotFound("space"))
    }

    /// Refuses a file the space's settings do not accept; the settings otherwise.
    pub(super) async fn check_space_accepts(
        &self,
        space: SpaceId,
        name: &FileName,
        content_type: Option<&str>,
        size: u64,
    ) -> Result<SpaceSettings> {
        let settings = self.settings_of(space).await?;
        match settings.refusal(name, content_type, size) {
            None => Ok(settings),
            Some(refusal) => Err(refused(refusal)),
        }
    }
}

/// The error for a file a space's settings refuse.
pub(super) fn refused(refusal: Refusal) -> Error {
    match refusal {
        Refusal::TooLarge { limit } => {
            Error::PayloadTooLarge(format!("files in this space are limited to {limit} bytes"))
        }
        Refusal::ContentType(why) | Refusal::Extension(why) => Error::BadInput(why),
    }
}
