use std::fmt;
use std::str::FromStr;

use super::{FileId, FileName, Invalid, Metadata, Millis, Sha256, SpaceId, UploadId, UserId};

/// The life of an upload: `Pending` until committed, or abandoned (cancelled or expired).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UploadState {
    Pending,
    Committed,
    Abandoned,
}

impl UploadState {
    pub fn as_str(self) -> &'static str {
        match self {
            UploadState::Pending => "PENDING",
            UploadState::Committed => "COMMITTED",
            UploadState::Abandoned => "ABANDONED",
        }
    }
}

impl FromStr for UploadState {
    type Err = Invalid;

    fn from_str(s: &str) -> Result<Self, Invalid> {
        match s {
            "PENDING" => Ok(Self::Pending),
            "COMMITTED" => Ok(Self::Committed),
            "ABANDONED" => Ok(Self::Abandoned),
            other => Err(Invalid(format!("unknown upload state {other:?}"))),
        }
    }
}

impl fmt::Display for UploadState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A version being uploaded: everything `commitUpload` needs to publish it.
#[derive(Debug, Clone, PartialEq)]
pub struct PendingUpload {
    pub id: UploadId,
    /// SHA-256 of the secret upload token; the token itself is never stored.
    pub token_hash: [u8; 32],
    pub space_id: SpaceId,
    pub file_id: FileId,
    /// `None` creates a new file; `Some(n)` modifies a file whose current version is `n`.
    pub base_version: Option<u32>,
    pub name: FileName,
    pub size: u64,
    pub sha256: Sha256,
    pub content_type: Option<String>,
    pub metadata: Metadata,
    pub blob_key: String,
    pub author: UserId,
    pub created_at: Millis,
    pub expires_at: Millis,
    pub state: UploadState,
    /// The version this upload became, once committed.
    pub committed_version: Option<u32>,
}

impl PendingUpload {
    /// The version number this upload becomes if it commits.
    pub fn target_version(&self) -> u32 {
        self.base_version.map_or(1, |v| v + 1)
    }
}
