use crate::domain::FileId;

/// Why a metadata operation failed. Everything but `Other` is an expected outcome the sync
/// layer turns into a client error; `Other` is an internal failure.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the file's current version is {current}")]
    Conflict { current: u32 },
    #[error("another live file has this name")]
    NameTaken { file_id: FileId, current: u32 },
    #[error("the upload is no longer pending")]
    UploadNotPending,
    #[error("the space would have no owner left")]
    LastOwner,
    #[error("no such space")]
    NoSuchSpace,
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

/// Why a blob operation failed.
#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    #[error("the body is larger than the declared size")]
    TooLarge,
    #[error("the range lies outside the object ({total_size} bytes)")]
    RangeNotSatisfiable { total_size: u64 },
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}
