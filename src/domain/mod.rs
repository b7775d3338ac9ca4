//! The vocabulary of Filesync: identifiers, names, files, versions, changes and cursors.
//!
//! Everything here is plain data with its validation ("parse, don't validate"): a value of
//! one of these types is known to be well-formed. No I/O happens in this module.

mod cursor;
mod file;
mod ids;
mod media;
mod name;
mod replication;
mod role;
mod settings;
mod upload;

pub use cursor::{Cursor, CursorError};
pub use file::{
    Change, ChangeKind, Content, FileRecord, Metadata, MetadataEntry, Sha256, Size, VersionRecord,
    contiguous_len,
};
pub use ids::{FileId, SpaceId, UploadId, UserId};
pub use media::{
    DEFAULT_CONTENT_TYPE, essence, normalize_content_type, served_as_attachment, served_type,
};
pub use name::{FileName, NameKey, SpaceName};
pub use replication::{
    CopyOutcome, CopyRecord, CopyStatus, CopyTask, NewCopy, ReplicationJob, StoreId,
};
pub use role::Role;
pub use settings::{Refusal, SpaceSettings};
pub use upload::{
    MAX_PART_SIZE, MAX_PARTS, MAX_SINGLE_UPLOAD, MIN_PART_SIZE, Multipart, PendingUpload,
    UploadMethod, UploadState,
};

/// A domain value that failed validation; the message is safe to show to the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Invalid(pub String);

impl Invalid {
    pub fn new(message: impl Into<String>) -> Self {
        Self(message.into())
    }
}

/// Milliseconds since the Unix epoch, the store's clock unit.
pub type Millis = i64;

/// The wall clock as [`Millis`].
pub fn now_millis() -> Millis {
    chrono::Utc::now().timestamp_millis()
}
