//! File and space names. A file name is a relative path (`docs/plan.md`); it is what users
//! see, never what storage keys are made of.

use std::fmt;

use unicode_normalization::UnicodeNormalization;

use super::Invalid;

/// A validated, NFC-normalised relative path that every common file system can hold:
/// Windows' reserved names and characters, trailing dots and spaces, invisible and
/// bidirectional control characters, and look-alikes of the separators are refused (as
/// Dropbox does).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FileName(String);

/// A name as its space compares names: each segment in compatibility form (NFKC: `ﬁ` is
/// `fi`, `Ａ` is `A`) and, unless the space is case-sensitive, case-folded (`README.md` is
/// `readme.md`). Two live files of a space never share a key; the keys of a name's
/// folders are the prefixes of its key.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NameKey(String);

impl FileName {
    /// Longest name, in bytes of UTF-8, and longest key (what fits in every backend's
    /// keys: DynamoDB sort keys hold 1,024 bytes).
    pub const MAX_BYTES: usize = 1000;
    pub const MAX_SEGMENT_BYTES: usize = 255;
    /// Deepest folder nesting (a name has at most this many segments).
    pub const MAX_DEPTH: usize = 24;

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
        if let Some(c) = name.chars().find(|c| c.is_control() || is_invisible(*c)) {
            return Err(Invalid(format!(
                "name must not contain control, invisible or bidirectional characters (U+{:04X})",
                c as u32
            )));
        }
        if name.contains('\\') {
            return Err(Invalid::new("name must use '/' as its only separator"));
        }
        if name.starts_with('/') {
            return Err(Invalid::new("name must be relative (no leading '/')"));
        }
        let segments: Vec<&str> = name.split('/').collect();
        if segments.len() > Self::MAX_DEPTH {
            return Err(Invalid(format!(
                "name is nested deeper than {} folders",
                Self::MAX_DEPTH - 1
            )));
        }
        for segment in segments {
            check_segment(segment)?;
            // Its look-alikes must pass as well (`．．` is `..`, `／` is `/`).
            let compatible: String = segment.nfkc().collect();
            if compatible.contains('/') || compatible.contains('\\') {
                return Err(Invalid::new(
                    "name must not contain look-alikes of '/' or '\\'",
                ));
            }
            check_segment(&compatible)?;
        }
        let parsed = Self(name);
        if parsed.key(false).0.len() > Self::MAX_BYTES || parsed.key(true).0.len() > Self::MAX_BYTES
        {
            return Err(Invalid(format!(
                "name is longer than {} bytes once normalised",
                Self::MAX_BYTES
            )));
        }
        Ok(parsed)
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

    /// The key under which this name is unique in a space (see [`NameKey`]).
    pub fn key(&self, case_sensitive: bool) -> NameKey {
        NameKey::of(&self.0, case_sensitive)
    }
}

impl NameKey {
    /// The key of a name, or of a prefix of names (a prefix's key is a prefix of the
    /// keys of the names that start with it).
    pub fn of(name: &str, case_sensitive: bool) -> Self {
        let key: String = if case_sensitive {
            name.nfkc().collect()
        } else {
            // Unicode's compatibility caseless form (D146), then composed again.
            let folded = caseless::default_case_fold_str(&name.nfd().collect::<String>());
            let folded = caseless::default_case_fold_str(&folded.nfkd().collect::<String>());
            folded.nfkd().collect::<String>().nfc().collect()
        };
        Self(key)
    }

    /// Trusted constructor for keys read back from the store.
    pub fn from_stored(key: String) -> Self {
        Self(key)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The keys of the folders a name is in: `a` and `a/b` for `a/b/c`.
    pub fn folders(&self) -> impl Iterator<Item = &str> {
        self.0.match_indices('/').map(|(at, _)| &self.0[..at])
    }
}

impl fmt::Display for NameKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One segment's rules: not empty, not `.` or `..`, not too long, no character or name
/// Windows refuses, no trailing dot or space.
fn check_segment(segment: &str) -> Result<(), Invalid> {
    match segment {
        "" => return Err(Invalid::new("name must not contain empty segments")),
        "." | ".." => {
            return Err(Invalid::new("name must not contain '.' or '..' segments"));
        }
        s if s.len() > FileName::MAX_SEGMENT_BYTES => {
            return Err(Invalid(format!(
                "a name segment is longer than {} bytes",
                FileName::MAX_SEGMENT_BYTES
            )));
        }
        _ => {}
    }
    if let Some(c) = segment
        .chars()
        .find(|c| matches!(c, '<' | '>' | ':' | '"' | '|' | '?' | '*'))
    {
        return Err(Invalid(format!(
            "name must not contain {c:?} (Windows cannot hold it)"
        )));
    }
    if segment.ends_with('.') || segment.ends_with(' ') {
        return Err(Invalid::new(
            "a name segment must not end with a dot or a space",
        ));
    }
    let stem = segment.split('.').next().unwrap_or_default().trim_end();
    let reserved = ["CON", "PRN", "AUX", "NUL"]
        .iter()
        .any(|r| stem.eq_ignore_ascii_case(r))
        || (stem.len() == 4
            && stem.is_ascii()
            && (stem[..3].eq_ignore_ascii_case("COM") || stem[..3].eq_ignore_ascii_case("LPT"))
            && matches!(stem.as_bytes()[3], b'1'..=b'9'));
    if reserved {
        return Err(Invalid(format!(
            "{segment:?} is a reserved name on Windows"
        )));
    }
    Ok(())
}

/// Characters that show as nothing, or reorder what follows: zero-width spaces, bidirectional
/// marks, embeddings, overrides and isolates, line and paragraph separators, soft
/// hyphens, fillers, tags. (The zero-width joiner and non-joiner stay: emoji and some
/// scripts need them.)
fn is_invisible(c: char) -> bool {
    matches!(
        c as u32,
        0x00AD
            | 0x034F
            | 0x061C
            | 0x115F
            | 0x1160
            | 0x17B4
            | 0x17B5
            | 0x180B..=0x180F
            | 0x200B
            | 0x200E
            | 0x200F
            | 0x2028..=0x202E
            | 0x2060..=0x206F
            | 0x3164
            | 0xFEFF
            | 0xFFA0
            | 0xFFF0..=0xFFFB
            | 0x1D173..=0x1D17A
            | 0xE0000..=0xE0FFF
    )
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

    /// Names every common file system can hold, as Dropbox enforces.
    #[test]
    fn refuses_names_a_folder_cannot_hold() {
        for bad in [
            "a.txt.",
            "a.txt ",
            "dir./a",
            "zero\u{200B}width",
            "evil\u{202E}txt.exe",
            "line\u{2028}sep",
            "bom\u{FEFF}",
            "what?.txt",
            "a:b",
            "CON",
            "con.txt",
            "docs/LPT1.md",
            "full\u{FF0F}width-slash",
            "\u{FF0E}\u{FF0E}",
            "fancy\u{FF1A}colon",
        ] {
            assert!(FileName::parse(bad).is_err(), "{bad:?} should be refused");
        }
        for good in [
            "COM0.txt",
            "console.txt",
            "a b/c d.txt",
            "\u{1F468}\u{200D}\u{1F469}.png",
            "caf\u{e9}.txt",
        ] {
            assert!(FileName::parse(good).is_ok(), "{good:?} should be fine");
        }
        assert!(FileName::parse(&["a"; 24].join("/")).is_ok());
        assert!(FileName::parse(&["a"; 25].join("/")).is_err(), "too deep");
        assert!(
            FileName::parse(&"a".repeat(1000)).is_err(),
            "a segment too long"
        );
        let long = vec!["b".repeat(200); 5].join("/");
        assert!(
            long.len() <= 1004 && FileName::parse(&long).is_err(),
            "over 1,000 bytes"
        );
    }

    /// Names unique ignoring case (and look-alikes) unless the space is case-sensitive.
    #[test]
    fn keys_fold_case_and_look_alikes() {
        let key = |n: &str, cs: bool| FileName::parse(n).unwrap().key(cs);
        assert_eq!(key("README.md", false), key("readme.md", false));
        assert_ne!(key("README.md", true), key("readme.md", true));
        assert_eq!(
            key("\u{FB01}le.txt", true),
            key("file.txt", true),
            "a ligature"
        );
        assert_eq!(
            key("\u{FF21}.txt", false),
            key("a.txt", false),
            "full width"
        );
        assert_eq!(
            key("Stra\u{DF}e", false),
            key("STRASSE", false),
            "full case folding"
        );
        assert_eq!(key("cafe\u{301}", false), key("CAF\u{C9}", false));
        let k = key("Docs/Plans/Q1.md", false);
        assert_eq!(k.folders().collect::<Vec<_>>(), ["docs", "docs/plans"]);
    }
}
