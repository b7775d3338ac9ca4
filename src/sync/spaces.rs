//! Spaces and their members.

use super::{Error, Result, SyncService, now};
use crate::domain::{Role, SpaceId, SpaceName, UserId};
use crate::storage::{Member, Space};

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

    /// The spaces `user` belongs to, with the user's role in each.
    pub async fn spaces(&self, user: &UserId) -> Result<Vec<(Space, Role)>> {
        Ok(self.inner.store.meta.spaces_of(user).await?)
    }

    /// A space and the caller's role; `None` for non-members.
    pub async fn space(&self, user: &UserId, id: SpaceId) -> Result<Option<(Space, Role)>> {
        let Some(role) = self.inner.store.meta.role(id, user).await? else {
            return Ok(None);
        };
        let space = self.inner.store.meta.space(id).await?;
        Ok(space.map(|s| (s, role)))
    }

    pub async fn members(&self, user: &UserId, space: SpaceId) -> Result<Vec<Member>> {
        self.role_in(user, space).await?;
        Ok(self.inner.store.meta.members(space).await?)
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
}
