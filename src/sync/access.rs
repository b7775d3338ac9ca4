//! Who may do what. A non-member learns nothing about a space: every lookup on its behalf
//! answers "not found", whether or not the space or file exists.

use super::{Error, Result, SyncService};
use crate::domain::{FileId, FileRecord, Role, SpaceId, UserId};

impl SyncService {
    /// The caller's role in `space`; `NOT_FOUND` for non-members.
    pub(super) async fn role_in(&self, user: &UserId, space: SpaceId) -> Result<Role> {
        self.inner
            .store
            .meta
            .role(space, user)
            .await?
            .ok_or(Error::NotFound("space"))
    }

    /// Requires at least `EDITOR` in `space`.
    pub(super) async fn require_writer(&self, user: &UserId, space: SpaceId) -> Result<Role> {
        let role = self.role_in(user, space).await?;
        require_write(role)?;
        Ok(role)
    }

    /// The file and the caller's role in its space; `NOT_FOUND` for non-members.
    pub(super) async fn visible_file(
        &self,
        user: &UserId,
        id: FileId,
    ) -> Result<(FileRecord, Role)> {
        match self.inner.store.meta.file_for(id, user).await? {
            Some((file, Some(role))) => Ok((file, role)),
            _ => Err(Error::NotFound("file")),
        }
    }
}

/// Requires a role that may create and modify files.
pub(super) fn require_write(role: Role) -> Result<()> {
    if !role.can_write() {
        return Err(Error::forbidden(format!(
            "a {role} may not change files in this space"
        )));
    }
    Ok(())
}
