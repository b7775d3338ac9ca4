//! Mapping between SQLite rows and domain records.

use std::str::FromStr;

use rusqlite::Row;
use rusqlite::types::Type;

use crate::domain::{
    Change, Content, FileName, FileRecord, Metadata, Multipart, PendingUpload, Sha256, SpaceName,
    UserId, VersionRecord,
};
use crate::storage::{Space, StoreError};

pub(super) const SPACE_COLUMNS: &str = "id, name, created_by, created_at, seq";
pub(super) const FILE_COLUMNS: &str = "id, space_id, name, version, blob_key, size, sha256, \
     content_type, metadata, creator, created_at, updated_at, deleted, seq";
pub(super) const VERSION_COLUMNS: &str = "file_id, space_id, number, seq, kind, name, blob_key, \
     size, sha256, content_type, metadata, deleted, author, at";
/// A commit-log entry: the version joined with its file's creation, as `rows::change` reads it.
pub(super) const CHANGE_COLUMNS: &str = "v.file_id, v.space_id, v.name, v.number, v.blob_key, \
     v.size, v.sha256, v.content_type, v.metadata, f.creator, f.created_at, v.at, v.deleted, \
     v.seq, v.kind, v.author, v.members_epoch";
pub(super) const UPLOAD_COLUMNS: &str = "id, token_hash, space_id, file_id, base_version, name, \
     size, sha256, content_type, metadata, blob_key, author, created_at, expires_at, state, \
     committed_version, method, part_size, part_count, multipart_id";

fn bad(idx: usize, e: impl std::error::Error + Send + Sync + 'static) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(idx, Type::Text, Box::new(e))
}

fn parsed<T>(row: &Row, idx: usize) -> rusqlite::Result<T>
where
    T: FromStr,
    T::Err: std::error::Error + Send + Sync + 'static,
{
    let s: String = row.get(idx)?;
    s.parse().map_err(|e| bad(idx, e))
}

fn user(row: &Row, idx: usize) -> rusqlite::Result<UserId> {
    let s: String = row.get(idx)?;
    UserId::parse(&s).map_err(|e| bad(idx, e))
}

fn sha(row: &Row, idx: usize) -> rusqlite::Result<Sha256> {
    let bytes: [u8; 32] = row.get(idx)?;
    Ok(Sha256(bytes))
}

fn metadata(row: &Row, idx: usize) -> rusqlite::Result<Metadata> {
    let s: String = row.get(idx)?;
    Metadata::from_json(&s).map_err(|e| bad(idx, e))
}

fn u64_at(row: &Row, idx: usize) -> rusqlite::Result<u64> {
    let v: i64 = row.get(idx)?;
    u64::try_from(v).map_err(|e| bad(idx, e))
}

/// `blob_key, size, sha256, content_type`, in that order from column `first`.
fn content(row: &Row, first: usize) -> rusqlite::Result<Content> {
    Ok(Content {
        blob_key: row.get(first)?,
        size: u64_at(row, first + 1)?,
        sha256: sha(row, first + 2)?,
        content_type: row.get(first + 3)?,
    })
}

pub(super) fn space(row: &Row) -> rusqlite::Result<Space> {
    Ok(Space {
        id: parsed(row, 0)?,
        name: SpaceName::from_stored(row.get(1)?),
        created_by: user(row, 2)?,
        created_at: row.get(3)?,
        seq: u64_at(row, 4)?,
    })
}

pub(super) fn file(row: &Row) -> rusqlite::Result<FileRecord> {
    Ok(FileRecord {
        id: parsed(row, 0)?,
        space_id: parsed(row, 1)?,
        name: FileName::from_stored(row.get(2)?),
        version: row.get(3)?,
        content: content(row, 4)?,
        metadata: metadata(row, 8)?,
        creator: user(row, 9)?,
        created_at: row.get(10)?,
        updated_at: row.get(11)?,
        deleted: row.get(12)?,
        seq: u64_at(row, 13)?,
    })
}

pub(super) fn version(row: &Row) -> rusqlite::Result<VersionRecord> {
    Ok(VersionRecord {
        file_id: parsed(row, 0)?,
        space_id: parsed(row, 1)?,
        number: row.get(2)?,
        seq: u64_at(row, 3)?,
        kind: parsed(row, 4)?,
        name: FileName::from_stored(row.get(5)?),
        content: content(row, 6)?,
        metadata: metadata(row, 10)?,
        deleted: row.get(11)?,
        author: user(row, 12)?,
        at: row.get(13)?,
    })
}

/// Reads [`CHANGE_COLUMNS`]: the first fourteen line up with [`FILE_COLUMNS`].
pub(super) fn change(row: &Row) -> rusqlite::Result<Change> {
    Ok(Change {
        file: file(row)?,
        kind: parsed(row, 14)?,
        actor: user(row, 15)?,
        members_epoch: u64_at(row, 16)?,
    })
}

pub(super) fn upload(row: &Row) -> rusqlite::Result<PendingUpload> {
    Ok(PendingUpload {
        id: parsed(row, 0)?,
        token_hash: row.get(1)?,
        space_id: parsed(row, 2)?,
        file_id: parsed(row, 3)?,
        base_version: row.get(4)?,
        name: FileName::from_stored(row.get(5)?),
        size: u64_at(row, 6)?,
        sha256: sha(row, 7)?,
        content_type: row.get(8)?,
        metadata: metadata(row, 9)?,
        blob_key: row.get(10)?,
        author: user(row, 11)?,
        created_at: row.get(12)?,
        expires_at: row.get(13)?,
        state: parsed(row, 14)?,
        committed_version: row.get(15)?,
        method: parsed(row, 16)?,
        multipart: match row.get::<_, Option<String>>(19)? {
            Some(store_id) => Some(Multipart {
                part_size: u64_at(row, 17)?,
                part_count: row.get(18)?,
                store_id,
            }),
            None => None,
        },
    })
}

/// A SQLite failure: `Full` when the disk is, internal otherwise.
pub(super) fn internal(e: rusqlite::Error) -> StoreError {
    if is_disk_full(&e) {
        return StoreError::Full;
    }
    StoreError::Other(anyhow::Error::new(e).context("sqlite"))
}

pub(super) fn is_disk_full(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::DiskFull)
}
