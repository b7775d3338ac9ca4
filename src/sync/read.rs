//! Reads: single files, versions, listings and incremental sync.

use super::{Error, Result, SyncService, file_at_version};
use crate::domain::{Cursor, FileId, FileRecord, SpaceId, UserId, VersionRecord};

/// One page of a space's live files, ordered by name key (case-insensitively, unless the
/// space is case-sensitive), each with its key (its place in the order: a cursor).
pub struct FilePage {
    pub files: Vec<(String, FileRecord)>,
    pub has_next: bool,
}

/// One page of `changes`: each changed file once, in its latest state, in seq order.
pub struct ChangePage {
    pub files: Vec<FileRecord>,
    pub next_cursor: Cursor,
    pub has_more: bool,
}

impl SyncService {
    /// The file's latest committed state, or the given version; `None` when it does not
    /// exist or the caller may not see it.
    pub async fn file(
        &self,
        user: &UserId,
        id: FileId,
        version: Option<i32>,
    ) -> Result<Option<FileRecord>> {
        let (file, _) = match self.visible_file(user, id).await {
            Ok(found) => found,
            Err(Error::NotFound(_)) => return Ok(None),
            Err(e) => return Err(e),
        };
        let Some(number) = version else {
            return Ok(Some(file));
        };
        let Ok(number) = u32::try_from(number) else {
            return Err(Error::bad_input("version must be a positive number"));
        };
        let version = self.inner.store.meta.version(id, number).await?;
        Ok(version.map(|v| file_at_version(&file, &v)))
    }

    /// A page of a file's committed versions, oldest first, those numbered after
    /// `after`; whether more follow.
    pub async fn file_versions(
        &self,
        user: &UserId,
        id: FileId,
        first: Option<i32>,
        after: Option<i32>,
    ) -> Result<(Vec<VersionRecord>, bool)> {
        self.visible_file(user, id).await?;
        let limit = self.page_size(first, "first")?;
        let after = match after {
            None => 0,
            Some(v) => {
                u32::try_from(v).map_err(|_| Error::bad_input("after must be a version number"))?
            }
        };
        let mut versions = self.inner.store.meta.versions(id, after, limit + 1).await?;
        let more = versions.len() > limit;
        versions.truncate(limit);
        Ok((versions, more))
    }

    pub async fn files(
        &self,
        user: &UserId,
        space: SpaceId,
        prefix: Option<&str>,
        first: Option<i32>,
        after: Option<&str>,
    ) -> Result<FilePage> {
        self.role_in(user, space).await?;
        let limit = self.page_size(first, "first")?;
        let settings = self.settings_of(space).await?;
        // The prefix is compared as names are: normalised, and folded like their keys.
        let prefix = settings.prefix_key(prefix.unwrap_or(""));
        let mut files = self
            .inner
            .store
            .meta
            .list_files(space, prefix.as_str(), after, limit + 1)
            .await?;
        let has_next = files.len() > limit;
        files.truncate(limit);
        let files = files
            .into_iter()
            .map(|f| (settings.key(&f.name).as_str().to_owned(), f))
            .collect();
        Ok(FilePage { files, has_next })
    }

    /// Incremental sync: files changed after `since` (from the start when `None`).
    pub async fn changes(
        &self,
        user: &UserId,
        space: SpaceId,
        since: Option<&str>,
        limit: Option<i32>,
    ) -> Result<ChangePage> {
        self.role_in(user, space).await?;
        let since = match since {
            Some(cursor) => Cursor::decode_for(cursor, space)?.seq,
            None => 0,
        };
        let limit = self.page_size(limit, "limit")?;
        // The head first: every change up to it is committed before the listing starts,
        // so the listing shows each file changed up to the head, at its latest seq (or at
        // a later one). A store whose reads are not snapshots (DynamoDB) may show a
        // change above the head while missing one below it: the page stops at the head,
        // and its cursor never passes a change the client has not been given.
        let head = self.head_seq(space).await?;
        refuse_future_cursor(since, head)?;
        let mut files = self
            .inner
            .store
            .meta
            .changes(space, since, limit + 1)
            .await?;
        let mut has_more = files.len() > limit;
        files.truncate(limit);
        if let Some(past) = files.iter().position(|f| f.seq > head) {
            files.truncate(past);
            has_more = true;
        }
        let next = if has_more {
            files.last().map_or(since, |f| f.seq)
        } else {
            head
        };
        Ok(ChangePage {
            files,
            next_cursor: Cursor::new(space, next),
            has_more,
        })
    }

    /// The seq of the space's last change (0 before the first).
    pub(super) async fn head_seq(&self, space: SpaceId) -> Result<u64> {
        let space = self.inner.store.meta.space(space).await?;
        Ok(space.map_or(0, |s| s.seq))
    }

    pub(super) fn page_size(&self, asked: Option<i32>, arg: &str) -> Result<usize> {
        let max = self.inner.limits.max_page_size;
        match asked {
            None => Ok(self.inner.limits.default_page_size.min(max)),
            Some(n) if n >= 1 && (n as usize) <= max => Ok(n as usize),
            Some(_) => Err(Error::bad_input(format!(
                "{arg} must be between 1 and {max}"
            ))),
        }
    }
}

/// A cursor must come from its space's past; one from the future is forged.
pub(super) fn refuse_future_cursor(seq: u64, head: u64) -> Result<()> {
    if seq > head {
        return Err(Error::bad_input("the cursor is ahead of the space"));
    }
    Ok(())
}
