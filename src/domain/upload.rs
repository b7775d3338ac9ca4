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
    /// How the bytes are sent.
    pub method: UploadMethod,
    /// A multipart upload's parts, and the object store's id for it.
    pub multipart: Option<Multipart>,
}

/// How an upload's bytes reach the object store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UploadMethod {
    /// One presigned PUT of the whole content (at most [`MAX_SINGLE_UPLOAD`] bytes).
    Put,
    /// One presigned POST of a `multipart/form-data` form (a browser form), as large.
    Post,
    /// Parts sent separately, in any order and in parallel, then completed by the server.
    Multipart,
}

impl UploadMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            UploadMethod::Put => "PUT",
            UploadMethod::Post => "POST",
            UploadMethod::Multipart => "MULTIPART",
        }
    }
}

impl FromStr for UploadMethod {
    type Err = Invalid;

    fn from_str(s: &str) -> Result<Self, Invalid> {
        match s {
            "PUT" => Ok(Self::Put),
            "POST" => Ok(Self::Post),
            "MULTIPART" => Ok(Self::Multipart),
            other => Err(Invalid(format!("unknown upload method {other:?}"))),
        }
    }
}

/// The largest object one PUT or POST may store (S3's limit for a single request).
pub const MAX_SINGLE_UPLOAD: u64 = 5 << 30;
/// The smallest part a multipart upload is cut into (S3's minimum is 5 MiB; parts of
/// 8 MiB keep the request count of a GiB at 128).
pub const MIN_PART_SIZE: u64 = 8 << 20;
/// S3's limits on a multipart upload.
pub const MAX_PART_SIZE: u64 = 5 << 30;
pub const MAX_PARTS: u32 = 10_000;

/// How a multipart upload is cut: parts of `part_size` bytes, the last one shorter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Multipart {
    pub part_size: u64,
    pub part_count: u32,
    /// The object store's id of the multipart upload (S3's `UploadId`).
    pub store_id: String,
}

impl Multipart {
    /// The parts of an object of `size` bytes: at least [`MIN_PART_SIZE`] and at least
    /// `size / 10,000`, rounded up to a MiB, so no upload needs more than 10,000 parts.
    pub fn plan(size: u64) -> Result<(u64, u32), Invalid> {
        const MIB: u64 = 1 << 20;
        if size == 0 {
            return Err(Invalid(
                "an empty file has no parts: upload it with PUT".into(),
            ));
        }
        let part_size = size
            .div_ceil(u64::from(MAX_PARTS))
            .max(MIN_PART_SIZE)
            .div_ceil(MIB)
            * MIB;
        if part_size > MAX_PART_SIZE {
            return Err(Invalid(format!(
                "{size} bytes need parts above the 5 GiB limit"
            )));
        }
        let part_count = u32::try_from(size.div_ceil(part_size)).expect("at most 10,000 parts");
        Ok((part_size, part_count))
    }

    /// Part `n`'s offset and length in an object of `size` bytes; `None` for a number
    /// outside 1..=part_count.
    pub fn part_range(&self, size: u64, n: u32) -> Option<(u64, u64)> {
        if n == 0 || n > self.part_count {
            return None;
        }
        let offset = u64::from(n - 1) * self.part_size;
        Some((offset, self.part_size.min(size - offset)))
    }
}

impl PendingUpload {
    /// The version number this upload becomes if it commits.
    pub fn target_version(&self) -> u32 {
        self.base_version.map_or(1, |v| v + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    #[test]
    fn parts_are_at_least_8_mib_and_never_more_than_10000() {
        assert_eq!(Multipart::plan(1), Ok((8 * MIB, 1)));
        assert_eq!(Multipart::plan(8 * MIB), Ok((8 * MIB, 1)));
        assert_eq!(Multipart::plan(8 * MIB + 1), Ok((8 * MIB, 2)));
        assert_eq!(Multipart::plan(10_000 * 8 * MIB), Ok((8 * MIB, 10_000)));
        // One byte more needs bigger parts, rounded up to a MiB.
        assert_eq!(Multipart::plan(10_000 * 8 * MIB + 1), Ok((9 * MIB, 8_889)));
        assert_eq!(Multipart::plan(64 << 30), Ok((8 * MIB, 8_192)));
        // 100 GiB: 10.24 MiB parts, rounded up to 11 MiB.
        assert_eq!(Multipart::plan(100 << 30), Ok((11 * MIB, 9_310)));
        assert!(Multipart::plan(0).is_err());
        assert!(Multipart::plan(10_000 * MAX_PART_SIZE).is_ok());
        assert!(Multipart::plan(10_000 * MAX_PART_SIZE + 1).is_err());
    }

    #[test]
    fn part_ranges_cover_the_object_once() {
        let size = 20 * MIB + 3;
        let (part_size, part_count) = Multipart::plan(size).unwrap();
        let m = Multipart {
            part_size,
            part_count,
            store_id: String::new(),
        };
        assert_eq!(m.part_range(size, 0), None);
        assert_eq!(m.part_range(size, 1), Some((0, 8 * MIB)));
        assert_eq!(m.part_range(size, 3), Some((16 * MIB, 4 * MIB + 3)));
        assert_eq!(m.part_range(size, 4), None);
    }
}
