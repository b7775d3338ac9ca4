use crate::domain::FileId;

/// Why a metadata operation failed. Everything but `Other` is an expected outcome the sync
/// layer turns into a client error; `Other` is an internal failure.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the file's current version is {current}")]
    Conflict { current: u32 },
    #[error("another live file has this name")]
    NameTaken { file_id: FileId, current: u32 },
    /// Another live file is one of the name's folders (`a` for `a/b`), or in the folder
    /// the name would be (`a/b` for `a`).
    #[error("another live file is in the way of this name")]
    PathClash { file_id: FileId, current: u32 },
    #[error("the upload is no longer pending")]
    UploadNotPending,
    #[error("the space would have no owner left")]
    LastOwner,
    #[error("no such space")]
    NoSuchSpace,
    /// The store has no room left (a full disk): nothing was written.
    #[error("the store is full")]
    Full,
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

/// Why a blob operation failed.
///
/// The expected ones (the client's body failed, the disk is full) carry no backtrace: an
/// `anyhow` error captures one when `RUST_BACKTRACE` is set, and resolving the first one
/// costs hundreds of megabytes.
#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    #[error("the body is larger than the declared size")]
    TooLarge,
    #[error("the range lies outside the object ({total_size} bytes)")]
    RangeNotSatisfiable { total_size: u64 },
    /// The client's body ended early, failed or stalled: the client's doing.
    #[error("the upload body was interrupted: {0}")]
    BodyInterrupted(String),
    /// The store has no room (a full disk, a quota): the server's problem, not the
    /// client's; nothing partial is left behind.
    #[error("the store is full")]
    StorageFull,
    /// A part's bytes do not match the SHA-256 its URL pins: the part is not stored.
    #[error("the bytes do not match the pinned sha256")]
    ChecksumMismatch,
    /// The multipart upload is completed or aborted: it takes no more parts.
    #[error("no such multipart upload")]
    NoSuchUpload,
    /// Completing found other parts than the ones listed (a part sent again meanwhile).
    #[error("the parts changed while the upload was being completed")]
    PartsChanged,
    /// No store holds an intact copy of the object just now (replication).
    #[error("no intact copy of the content can be read just now")]
    Unavailable,
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

impl BlobError {
    /// A failed write of the store's own: `StorageFull` when there is no room.
    pub fn write(e: std::io::Error, what: &'static str) -> Self {
        use std::io::ErrorKind;
        match e.kind() {
            ErrorKind::StorageFull | ErrorKind::QuotaExceeded | ErrorKind::FileTooLarge => {
                BlobError::StorageFull
            }
            _ => BlobError::Other(anyhow::Error::new(e).context(what)),
        }
    }
}
