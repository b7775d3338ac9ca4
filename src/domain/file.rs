//! Files, their versions and the content they point at.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::{FileId, FileName, Invalid, Millis, SpaceId, UserId};

/// A SHA-256 digest; written as 64 hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Sha256(pub [u8; 32]);

impl Sha256 {
    pub fn parse(hex_digits: &str) -> Result<Self, Invalid> {
        let mut out = [0u8; 32];
        if hex_digits.len() != 64 || hex::decode_to_slice(hex_digits, &mut out).is_err() {
            return Err(Invalid::new("sha256 must be 64 hexadecimal digits"));
        }
        Ok(Self(out))
    }

    pub fn to_hex(&self) -> String {
        // Written out by hand: this runs for every file of every page, and the `hex`
        // crate's char-by-char iterator showed up in profiles.
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut out = Vec::with_capacity(64);
        for b in self.0 {
            out.push(DIGITS[usize::from(b >> 4)]);
            out.push(DIGITS[usize::from(b & 0xf)]);
        }
        String::from_utf8(out).expect("hex digits are ASCII")
    }

    pub fn to_base64(&self) -> String {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(self.0)
    }
}

impl fmt::Debug for Sha256 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Sha256({})", self.to_hex())
    }
}

impl fmt::Display for Sha256 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// A byte count that JSON clients can hold exactly (up to 2^53 - 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Size(u64);

impl Size {
    pub const MAX: u64 = (1 << 53) - 1;

    pub fn new(bytes: u64) -> Result<Self, Invalid> {
        if bytes > Self::MAX {
            return Err(Invalid::new("size must be at most 2^53 - 1 bytes"));
        }
        Ok(Self(bytes))
    }

    pub fn get(self) -> u64 {
        self.0
    }
}

/// One user metadata entry.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct MetadataEntry {
    pub key: String,
    pub value: String,
}

/// A small key/value map attached to a file version, kept sorted by key.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Metadata(Vec<MetadataEntry>);

impl Metadata {
    pub const MAX_ENTRIES: usize = 64;
    pub const MAX_KEY_BYTES: usize = 128;
    pub const MAX_VALUE_BYTES: usize = 2048;
    /// All keys and values together: metadata is a small map, and every listing of files
    /// or versions reads it whole, so a record stays small (a page of 1,000 under 10 MB).
    pub const MAX_TOTAL_BYTES: usize = 8 * 1024;

    pub fn parse(entries: Vec<MetadataEntry>) -> Result<Self, Invalid> {
        if entries.len() > Self::MAX_ENTRIES {
            return Err(Invalid(format!(
                "at most {} metadata entries are allowed",
                Self::MAX_ENTRIES
            )));
        }
        let mut entries = entries;
        for e in &entries {
            if e.key.is_empty() || e.key.len() > Self::MAX_KEY_BYTES {
                return Err(Invalid(format!(
                    "metadata keys must be 1 to {} bytes",
                    Self::MAX_KEY_BYTES
                )));
            }
            if e.value.len() > Self::MAX_VALUE_BYTES {
                return Err(Invalid(format!(
                    "metadata values must be at most {} bytes",
                    Self::MAX_VALUE_BYTES
                )));
            }
            if e.key.chars().chain(e.value.chars()).any(char::is_control) {
                return Err(Invalid::new("metadata must not contain control characters"));
            }
        }
        let total: usize = entries.iter().map(|e| e.key.len() + e.value.len()).sum();
        if total > Self::MAX_TOTAL_BYTES {
            return Err(Invalid(format!(
                "metadata keys and values must total at most {} bytes",
                Self::MAX_TOTAL_BYTES
            )));
        }
        entries.sort();
        if entries.windows(2).any(|w| w[0].key == w[1].key) {
            return Err(Invalid::new("metadata keys must be unique"));
        }
        Ok(Self(entries))
    }

    pub fn entries(&self) -> &[MetadataEntry] {
        &self.0
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(&self.0).expect("metadata serialises")
    }

    /// Trusted constructor for metadata read back from the store.
    pub fn from_json(json: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(json).map(Self)
    }
}

/// Where a version's bytes are and what they are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Content {
    /// Storage key; server-made, never derived from a user-supplied name.
    pub blob_key: String,
    pub size: u64,
    pub sha256: Sha256,
    pub content_type: Option<String>,
}

/// What a committed change did to a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    Created,
    Updated,
    Deleted,
    Restored,
}

impl ChangeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeKind::Created => "CREATED",
            ChangeKind::Updated => "UPDATED",
            ChangeKind::Deleted => "DELETED",
            ChangeKind::Restored => "RESTORED",
        }
    }
}

impl FromStr for ChangeKind {
    type Err = Invalid;

    fn from_str(s: &str) -> Result<Self, Invalid> {
        match s {
            "CREATED" => Ok(Self::Created),
            "UPDATED" => Ok(Self::Updated),
            "DELETED" => Ok(Self::Deleted),
            "RESTORED" => Ok(Self::Restored),
            other => Err(Invalid(format!("unknown change kind {other:?}"))),
        }
    }
}

/// The current, committed state of a file (possibly a tombstone).
#[derive(Debug, Clone, PartialEq)]
pub struct FileRecord {
    pub id: FileId,
    pub space_id: SpaceId,
    pub name: FileName,
    pub version: u32,
    pub content: Content,
    pub metadata: Metadata,
    pub creator: UserId,
    pub created_at: Millis,
    pub updated_at: Millis,
    pub deleted: bool,
    /// The space seq of the file's last change.
    pub seq: u64,
}

/// One entry of a space's commit log: what a change did, who did it, and the file as the
/// change left it (`file.version`, `file.seq` and `file.updated_at` are the change's own).
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    pub kind: ChangeKind,
    pub actor: UserId,
    pub file: FileRecord,
    /// The space's membership epoch when the change was committed (see
    /// `MetadataStore::membership`): a subscriber whose membership was confirmed at a
    /// lower epoch is checked again before it is sent this change.
    pub members_epoch: u64,
}

/// How many changes at the start of `log` follow seq `after` without a gap (`after + 1`,
/// `after + 2`, ...). A space's seqs have no gaps, so a read of its commit log that shows
/// one missed a change (a read that is not a snapshot): what comes after is not used.
pub fn contiguous_len(after: u64, log: &[Change]) -> usize {
    log.iter()
        .zip(after.saturating_add(1)..)
        .take_while(|(c, seq)| c.file.seq == *seq)
        .count()
}

/// One immutable, committed version of a file. Each is one change of its space.
#[derive(Debug, Clone, PartialEq)]
pub struct VersionRecord {
    pub file_id: FileId,
    pub space_id: SpaceId,
    pub number: u32,
    pub seq: u64,
    pub kind: ChangeKind,
    pub name: FileName,
    pub content: Content,
    pub metadata: Metadata,
    pub deleted: bool,
    pub author: UserId,
    pub at: Millis,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_parses_hex_only() {
        let hex = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        assert_eq!(Sha256::parse(hex).unwrap().to_hex(), hex);
        assert_eq!(
            Sha256::parse(&hex.to_uppercase()).unwrap().to_hex(),
            hex,
            "upper-case hex is accepted and normalised"
        );
        assert!(Sha256::parse("xyz").is_err());
        assert!(Sha256::parse(&hex[..62]).is_err());
    }

    #[test]
    fn metadata_is_sorted_unique_and_bounded() {
        let e = |k: &str, v: &str| MetadataEntry {
            key: k.into(),
            value: v.into(),
        };
        let m = Metadata::parse(vec![e("b", "2"), e("a", "1")]).unwrap();
        assert_eq!(m.entries()[0].key, "a");
        assert!(Metadata::parse(vec![e("a", "1"), e("a", "2")]).is_err());
        assert!(Metadata::parse(vec![e("", "1")]).is_err());
        assert!(Metadata::parse((0..65).map(|i| e(&i.to_string(), "")).collect()).is_err());
        assert_eq!(Metadata::from_json(&m.to_json()).unwrap(), m);
    }

    #[test]
    fn sizes_fit_json_numbers() {
        assert!(Size::new(Size::MAX).is_ok());
        assert!(Size::new(Size::MAX + 1).is_err());
    }
}
