//! File and space names. A file name is a relative path (`docs/plan.md`); it is what users
//! see, never what storage keys are made of.

use std::fmt;

use unicode_normalization::UnicodeNormalization;

use super::Invalid;

/// A validated, NFC-normalised relative path.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FileName(String);

impl FileName {
    pub const MAX_BYTES: usize = 1024;
    pub const MAX_SEGMENT_BYTES: usize = 255;

    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        let name: String = raw.nfc().collect();
        if name.is_empty() {
            return Err(Invalid::new("name must not be empty"));
        }
        if name.len() > Self::MAX_BYTES {
            return Err(Invalid(format!(
                "name is longer than {} bytes",
                Self::MAX_BYTES
            )));
        }
        if name.chars().any(char::is_control) {
            return Err(Invalid::new("name must not contain control characters"));
        }
        if name.contains('\\') {
            return Err(Invalid::new("name must use '/' as its only separator"));
        }
        if name.starts_with('/') {
            return Err(Invalid::new("name must be relative (no leading '/')"));
        }
        for segment in name.split('/') {
            match segment {
                "" => return Err(Invalid::new("name must not contain empty segments")),
                "." | ".." => {
                    return Err(Invalid::new("name must not contain '.' or '..' segments"));
                }
                s if s.len() > Self::MAX_SEGMENT_BYTES => {
                    return Err(Invalid(format!(
                        "a name segment is longer than {} bytes",
                        Self::MAX_SEGMENT_BYTES
                    )));
                }
                _ => {}
            }
        }
        Ok(Self(name))
    }

    /// Trusted constructor for names read back from the store.
    pub fn from_stored(name: String) -> Self {
        Self(name)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The extension of the last segment, lower-cased (`"md"` for `docs/Plan.MD`).
    pub fn extension(&self) -> Option<String> {
        let last = self.0.rsplit('/').next()?;
        let (stem, ext) = last.rsplit_once('.')?;
        (!stem.is_empty() && !ext.is_empty()).then(|| ext.to_lowercase())
    }
}

impl fmt::Display for FileName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A space's display name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpaceName(String);

impl SpaceName {
    pub const MAX_BYTES: usize = 256;

    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        let name: String = raw.trim().nfc().collect();
        if name.is_empty() {
            return Err(Invalid::new("space name must not be empty"));
        }
        if name.len() > Self::MAX_BYTES {
            return Err(Invalid(format!(
                "space name is longer than {} bytes",
                Self::MAX_BYTES
            )));
        }
        if name.chars().any(char::is_control) {
            return Err(Invalid::new(
                "space name must not contain control characters",
            ));
        }
        Ok(Self(name))
    }

    pub fn from_stored(name: String) -> Self {
        Self(name)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_paths() {
        assert_eq!(
            FileName::parse("docs/plan.md").unwrap().as_str(),
            "docs/plan.md"
        );
        assert_eq!(FileName::parse("a").unwrap().extension(), None);
        assert_eq!(
            FileName::parse("x/Report.PDF")
                .unwrap()
                .extension()
                .as_deref(),
            Some("pdf")
        );
        assert_eq!(FileName::parse(".bashrc").unwrap().extension(), None);
    }

    #[test]
    fn normalises_to_nfc() {
        let decomposed = "cafe\u{301}.txt";
        assert_eq!(
            FileName::parse(decomposed).unwrap().as_str(),
            "caf\u{e9}.txt"
        );
    }

    #[test]
    fn refuses_dangerous_names() {
        for bad in [
            "",
            "/etc/passwd",
            "a//b",
            "a/",
            "../x",
            "a/./b",
            "a/..",
            "tab\there",
            "nul\0",
            "back\\slash",
        ] {
            assert!(FileName::parse(bad).is_err(), "{bad:?} should be refused");
        }
        assert!(FileName::parse(&"a".repeat(256)).is_err());
        assert!(FileName::parse(&["a"; 600].join("/")).is_err());
        assert!(FileName::parse(&"a".repeat(255)).is_ok());
    }
}
