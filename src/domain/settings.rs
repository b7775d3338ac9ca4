//! Per-space settings that owners change through the API: the largest file, and which
//! content types and file extensions the space accepts.

use serde::{Deserialize, Serialize};

use super::{FileName, Invalid};

/// A space's limits on the files it holds. Empty lists accept everything.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SpaceSettings {
    /// Largest file, in bytes (the server's own limit applies as well).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_file_size: Option<u64>,
    /// Media types (`image/png`) or whole top-level types (`image/*`), lower case.
    pub allowed_content_types: Vec<String>,
    /// Extensions of the last name segment, lower case, without the dot (`md`).
    pub allowed_extensions: Vec<String>,
    /// Names differ when only their case does (`README.md` beside `readme.md`), as on
    /// Linux; off (the default), names are unique ignoring case, so that every space
    /// maps onto a folder on Windows and macOS too. Set while the space has no files.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub case_sensitive_names: bool,
    /// Whether committed content is copied to the replica stores: `None` follows the
    /// server's `replication.default`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replication: Option<bool>,
}

/// Why a file may not be stored in a space.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    TooLarge { limit: u64 },
    ContentType(String),
    Extension(String),
}

impl SpaceSettings {
    pub const MAX_ENTRIES: usize = 64;
    const MAX_ENTRY_BYTES: usize = 100;

    /// Validates and normalises (lower case, no duplicates, extensions without a dot).
    pub fn parse(
        max_file_size: Option<u64>,
        content_types: Vec<String>,
        extensions: Vec<String>,
        case_sensitive_names: bool,
    ) -> Result<Self, Invalid> {
        if max_file_size == Some(0) {
            return Err(Invalid::new("maxFileSize must be at least 1 byte"));
        }
        if content_types.len() > Self::MAX_ENTRIES || extensions.len() > Self::MAX_ENTRIES {
            return Err(Invalid(format!(
                "at most {} content types and {} extensions are allowed",
                Self::MAX_ENTRIES,
                Self::MAX_ENTRIES
            )));
        }
        let mut types = Vec::new();
        for raw in content_types {
            let pattern = raw.trim().to_ascii_lowercase();
            let valid = pattern.len() <= Self::MAX_ENTRY_BYTES
                && pattern
                    .split_once('/')
                    .is_some_and(|(t, s)| is_token(t) && (s == "*" || is_token(s)));
            if !valid {
                return Err(Invalid(format!(
                    "{raw:?} is not a media type (\"image/png\") or a type range (\"image/*\")"
                )));
            }
            if !types.contains(&pattern) {
                types.push(pattern);
            }
        }
        let mut exts = Vec::new();
        for raw in extensions {
            let ext = raw.trim().trim_start_matches('.').to_lowercase();
            let valid = !ext.is_empty()
                && ext.len() <= 16
                && ext
                    .chars()
                    .all(|c| c.is_alphanumeric() || c == '_' || c == '-');
            if !valid {
                return Err(Invalid(format!(
                    "{raw:?} is not a file extension (letters and digits, as \"md\")"
                )));
            }
            if !exts.contains(&ext) {
                exts.push(ext);
            }
        }
        Ok(Self {
            max_file_size,
            allowed_content_types: types,
            allowed_extensions: exts,
            case_sensitive_names,
            replication: None,
        })
    }

    /// Why a file with this name, content type and size may not be in the space, if so.
    pub fn refusal(
        &self,
        name: &FileName,
        content_type: Option<&str>,
        size: u64,
    ) -> Option<Refusal> {
        if let Some(limit) = self.max_file_size
            && size > limit
        {
            return Some(Refusal::TooLarge { limit });
        }
        if let Some(refusal) = self.extension_refusal(name) {
            return Some(refusal);
        }
        if self.allowed_content_types.is_empty() {
            return None;
        }
        let essence = content_type.map(|ct| super::essence(ct).to_ascii_lowercase());
        let allowed = essence.as_deref().is_some_and(|ct| {
            self.allowed_content_types
                .iter()
                .any(|pattern| match pattern.strip_suffix("/*") {
                    Some(top) => ct.split_once('/').is_some_and(|(t, _)| t == top),
                    None => pattern == ct,
                })
        });
        (!allowed).then(|| {
            Refusal::ContentType(format!(
                "this space accepts only the content types {}; this file's is {}",
                self.allowed_content_types.join(", "),
                essence.as_deref().unwrap_or("not given")
            ))
        })
    }

    /// The key under which `name` is unique in the space.
    pub fn key(&self, name: &super::FileName) -> super::NameKey {
        name.key(self.case_sensitive_names)
    }

    /// The key of a prefix of names (`files(prefix:)`), compared as names are.
    pub fn prefix_key(&self, prefix: &str) -> super::NameKey {
        use unicode_normalization::UnicodeNormalization;
        let prefix: String = prefix.nfc().collect();
        super::NameKey::of(&prefix, self.case_sensitive_names)
    }

    /// Why a file with this name may not be in the space (its extension), if so.
    pub fn extension_refusal(&self, name: &FileName) -> Option<Refusal> {
        if self.allowed_extensions.is_empty() {
            return None;
        }
        let ext = name.extension();
        let allowed = ext
            .as_ref()
            .is_some_and(|e| self.allowed_extensions.contains(e));
        (!allowed).then(|| {
            Refusal::Extension(format!(
                "this space accepts only the extensions {}; {:?} has {}",
                self.allowed_extensions.join(", "),
                name.as_str(),
                ext.map_or("none".to_owned(), |e| format!("\"{e}\""))
            ))
        })
    }
}

fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$&-^_.+".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(n: &str) -> FileName {
        FileName::parse(n).unwrap()
    }

    #[test]
    fn settings_are_normalised_and_validated() {
        let s = SpaceSettings::parse(
            Some(10),
            vec!["Image/*".into(), "text/plain".into(), "image/*".into()],
            vec![".MD".into(), "txt".into()],
            false,
        )
        .unwrap();
        assert_eq!(s.allowed_content_types, ["image/*", "text/plain"]);
        assert_eq!(s.allowed_extensions, ["md", "txt"]);
        for (types, exts) in [
            (vec!["image".to_owned()], vec![]),
            (vec!["*/*".to_owned()], vec![]),
            (vec!["text/plain; charset=utf-8".to_owned()], vec![]),
            (vec![], vec!["".to_owned()]),
            (vec![], vec!["a.b".to_owned()]),
            (vec![], vec!["x".repeat(17)]),
        ] {
            assert!(
                SpaceSettings::parse(None, types.clone(), exts.clone(), false).is_err(),
                "{types:?} {exts:?}"
            );
        }
        assert!(SpaceSettings::parse(Some(0), vec![], vec![], false).is_err());
        assert!(SpaceSettings::parse(None, vec!["a/b".into(); 65], vec![], false).is_err());
    }

    #[test]
    fn files_are_checked_against_every_limit() {
        let s = SpaceSettings::parse(
            Some(100),
            vec!["image/*".into(), "text/plain".into()],
            vec!["png".into(), "txt".into()],
            false,
        )
        .unwrap();
        assert_eq!(s.refusal(&name("a/b.png"), Some("image/png"), 100), None);
        assert_eq!(
            s.refusal(&name("b.TXT"), Some("Text/Plain; charset=utf-8"), 1),
            None
        );
        assert_eq!(
            s.refusal(&name("a.png"), Some("image/png"), 101),
            Some(Refusal::TooLarge { limit: 100 })
        );
        assert!(matches!(
            s.refusal(&name("a.png"), Some("application/pdf"), 1),
            Some(Refusal::ContentType(_))
        ));
        assert!(matches!(
            s.refusal(&name("a.png"), None, 1),
            Some(Refusal::ContentType(_))
        ));
        assert!(matches!(
            s.refusal(&name("a.exe"), Some("image/png"), 1),
            Some(Refusal::Extension(_))
        ));
        assert!(matches!(
            s.refusal(&name("png"), Some("image/png"), 1),
            Some(Refusal::Extension(_))
        ));
        assert_eq!(
            SpaceSettings::default().refusal(&name("a"), None, u64::MAX),
            None
        );
    }
}
