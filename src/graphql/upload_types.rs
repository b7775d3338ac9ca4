//! The GraphQL face of multipart uploads: part URLs and an upload's status.

use async_graphql::{Enum, ID, InputObject, SimpleObject};
use chrono::{DateTime, Utc};

use super::scalars::Size;
use super::types::{HttpField, VersionState, datetime, http_fields};
use crate::domain;
use crate::sync;

/// How the client sends an upload's bytes.
#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
pub enum UploadMethod {
    /// One PUT of the whole content to the ticket's URL (at most 5 GiB).
    Put,
    /// One `multipart/form-data` POST to the ticket's URL, as a browser form sends it:
    /// the ticket's `formFields` in order, then the file as the field `file` (at most
    /// 5 GiB). The policy in the fields pins the key, the length, the type and the
    /// SHA-256.
    Post,
    /// Parts of `partSize` bytes, in any order and in parallel, to the URLs
    /// `uploadPartUrls` gives; `commitUpload` then completes the object.
    Multipart,
}

impl From<UploadMethod> for domain::UploadMethod {
    fn from(m: UploadMethod) -> Self {
        match m {
            UploadMethod::Put => domain::UploadMethod::Put,
            UploadMethod::Post => domain::UploadMethod::Post,
            UploadMethod::Multipart => domain::UploadMethod::Multipart,
        }
    }
}

impl From<domain::UploadMethod> for UploadMethod {
    fn from(m: domain::UploadMethod) -> Self {
        match m {
            domain::UploadMethod::Put => UploadMethod::Put,
            domain::UploadMethod::Post => UploadMethod::Post,
            domain::UploadMethod::Multipart => UploadMethod::Multipart,
        }
    }
}

/// A part the client is about to send.
#[derive(InputObject)]
pub struct UploadPartInput {
    /// 1 to the ticket's `partCount`.
    pub part_number: u32,
    /// Hex SHA-256 of the part's bytes: the URL pins it, and the store refuses other
    /// bytes.
    pub sha256: String,
}

/// Where to send one part: `method` to `url` with `headers` exactly, `size` bytes.
#[derive(SimpleObject)]
pub struct UploadPartUrl {
    pub part_number: u32,
    /// The part's length, pinned by the URL.
    pub size: Size,
    pub url: String,
    pub method: String,
    pub headers: Vec<HttpField>,
    pub expires_at: DateTime<Utc>,
}

impl From<sync::PartUrl> for UploadPartUrl {
    fn from(p: sync::PartUrl) -> Self {
        Self {
            part_number: p.number,
            size: Size(p.size),
            url: p.request.url,
            method: p.request.method.to_owned(),
            headers: http_fields(p.request.headers),
            expires_at: datetime(p.expires_at),
        }
    }
}

/// A part the store holds.
#[derive(SimpleObject)]
pub struct UploadedPart {
    pub part_number: u32,
    pub size: Size,
    /// Hex SHA-256 of the part, where the store says.
    pub sha256: Option<String>,
}

/// An upload as it stands: for a multipart one, the parts stored so far, so a client
/// that crashed or reloaded sends only the missing ones.
#[derive(SimpleObject)]
pub struct UploadStatus {
    pub upload_id: ID,
    pub file_id: ID,
    /// The version the upload becomes (or became) when committed.
    pub version: u32,
    pub state: VersionState,
    pub method: UploadMethod,
    pub size: Size,
    /// The declared SHA-256 (hex).
    pub sha256: String,
    pub part_size: Option<Size>,
    pub part_count: Option<u32>,
    /// When the upload and its token expire.
    pub expires_at: DateTime<Utc>,
    /// The server is hashing the whole content (a commit is under way).
    pub verifying: bool,
    /// The parts stored, by number (empty unless pending and multipart).
    pub parts: Vec<UploadedPart>,
    /// The part numbers still to send (empty unless pending and multipart).
    pub missing_parts: Vec<u32>,
}

impl From<sync::UploadStatus> for UploadStatus {
    fn from(s: sync::UploadStatus) -> Self {
        let u = s.upload;
        Self {
            upload_id: ID(u.id.to_string()),
            file_id: ID(u.file_id.to_string()),
            version: u.committed_version.unwrap_or_else(|| u.target_version()),
            state: u.state.into(),
            method: u.method.into(),
            size: Size(u.size),
            sha256: u.sha256.to_hex(),
            part_size: u.multipart.as_ref().map(|m| Size(m.part_size)),
            part_count: u.multipart.as_ref().map(|m| m.part_count),
            expires_at: datetime(u.expires_at),
            verifying: s.verifying,
            parts: s
                .parts
                .into_iter()
                .map(|p| UploadedPart {
                    part_number: p.number,
                    size: Size(p.size),
                    sha256: p.sha256.map(|h| h.to_hex()),
                })
                .collect(),
            missing_parts: s.missing,
        }
    }
}
