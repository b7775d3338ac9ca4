use crate::domain::{CursorError, FileId, Invalid};
use crate::storage::{BlobError, StoreError};

/// What a use case reports to its caller. Each variant is one stable client-facing code
/// (see `graphql::error`); `Internal` carries a cause that is logged, never shown.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    BadInput(String),
    #[error("{message}")]
    Conflict {
        message: String,
        current_version: u32,
        file_id: Option<FileId>,
    },
    #[error("{0}")]
    UploadIncomplete(String),
    /// A multipart upload's commit found parts missing (or of the wrong size).
    #[error("{count} of the upload's parts are missing; send them, then commit again")]
    PartsMissing { missing: Vec<u32>, count: usize },
    /// The server is still hashing a multipart upload's whole content.
    #[error("the upload's content is being verified; commit again in a moment")]
    Verifying { retry_after_ms: u64 },
    #[error("the uploaded bytes do not match the declared sha256")]
    ChecksumMismatch,
    #[error("{0}")]
    UploadExpired(String),
    #[error("{0}")]
    PayloadTooLarge(String),
    #[error("the cursor is older than the retained history; resync from scratch")]
    CursorExpired,
    #[error(
        "this subscription fell more than {0} events behind and was closed; \
         subscribe again with the cursor of the last event received"
    )]
    SlowSubscriber(usize),
    #[error("the server is shutting down; subscribe again with the cursor of the last event")]
    ShuttingDown,
    /// A per-user limit is reached; the message says which and what frees it.
    #[error("{0}")]
    RateLimited(String),
    /// No store holds an intact copy of the content just now: the server's problem
    /// (repairs are queued), not the client's.
    #[error("the content cannot be read just now: no intact copy is reachable; try again later")]
    ContentUnavailable,
    /// The server's store has no room left: nothing was written; try again later.
    #[error("the server's storage is full; nothing was stored, try again later")]
    StorageFull,
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

impl Error {
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::Forbidden(message.into())
    }

    pub fn bad_input(message: impl Into<String>) -> Self {
        Self::BadInput(message.into())
    }

    pub fn conflict(current_version: u32) -> Self {
        Self::Conflict {
            message: format!("the file has changed: its current version is {current_version}"),
            current_version,
            file_id: None,
        }
    }

    /// The stable code clients see in `extensions.code`.
    pub fn code(&self) -> &'static str {
        match self {
            Error::NotFound(_) => "NOT_FOUND",
            Error::Forbidden(_) => "FORBIDDEN",
            Error::BadInput(_) => "BAD_INPUT",
            Error::Conflict { .. } => "CONFLICT",
            Error::UploadIncomplete(_) | Error::PartsMissing { .. } => "UPLOAD_INCOMPLETE",
            Error::Verifying { .. } => "UPLOAD_VERIFYING",
            Error::ChecksumMismatch => "CHECKSUM_MISMATCH",
            Error::UploadExpired(_) => "UPLOAD_EXPIRED",
            Error::PayloadTooLarge(_) => "PAYLOAD_TOO_LARGE",
            Error::CursorExpired => "CURSOR_EXPIRED",
            Error::SlowSubscriber(_) => "SLOW_SUBSCRIBER",
            Error::ShuttingDown => "SHUTTING_DOWN",
            Error::RateLimited(_) => "RATE_LIMITED",
            Error::StorageFull => "STORAGE_FULL",
            Error::ContentUnavailable => "CONTENT_UNAVAILABLE",
            Error::Internal(_) => "INTERNAL",
        }
    }
}

impl From<StoreError> for Error {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict { current } => Error::conflict(current),
            StoreError::NameTaken { file_id, current } => Error::Conflict {
                message: "another file already has this name (names are compared \
                          ignoring case and look-alike characters)"
                    .into(),
                current_version: current,
                file_id: Some(file_id),
            },
            StoreError::PathClash { file_id, current } => Error::Conflict {
                message: "another file is in the way: a file cannot be a folder of other \
                          files, nor be inside a file"
                    .into(),
                current_version: current,
                file_id: Some(file_id),
            },
            StoreError::LastOwner => Error::bad_input("a space must keep at least one owner"),
            StoreError::NoSuchSpace => Error::NotFound("space"),
            StoreError::Full => Error::StorageFull,
            StoreError::UploadNotPending => {
                Error::Internal(anyhow::anyhow!("upload state changed during commit"))
            }
            StoreError::Other(e) => Error::Internal(e),
        }
    }
}

impl From<BlobError> for Error {
    fn from(e: BlobError) -> Self {
        match e {
            BlobError::TooLarge => {
                Error::PayloadTooLarge("the body is larger than the declared size".into())
            }
            BlobError::RangeNotSatisfiable { total_size } => Error::bad_input(format!(
                "the range lies outside the object ({total_size} bytes)"
            )),
            BlobError::BodyInterrupted(why) => Error::UploadIncomplete(format!(
                "the upload body was interrupted ({why}); nothing was stored"
            )),
            BlobError::StorageFull => Error::StorageFull,
            BlobError::ChecksumMismatch => Error::ChecksumMismatch,
            BlobError::NoSuchUpload => Error::UploadExpired(
                "the upload takes no more parts: it is committed, cancelled or expired".into(),
            ),
            BlobError::PartsChanged => Error::UploadIncomplete(
                "a part was sent again while the upload was being committed; commit again".into(),
            ),
            BlobError::Unavailable => Error::ContentUnavailable,
            BlobError::Other(e) => Error::Internal(e),
        }
    }
}

impl From<Invalid> for Error {
    fn from(e: Invalid) -> Self {
        Error::BadInput(e.0)
    }
}

impl From<CursorError> for Error {
    fn from(e: CursorError) -> Self {
        Error::BadInput(e.to_string())
    }
}
