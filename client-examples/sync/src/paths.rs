//! A file's place in the space and in the folder, and the names of conflict copies.

use std::fmt;
use std::path::{Path, PathBuf};

use unicode_normalization::UnicodeNormalization;

/// A file's name as the server holds it and its path inside the synced folder: UTF-8
/// components joined by `/`, none empty, `.` or `..`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RelPath(String);

impl RelPath {
    /// A name from the server (or a test).
    pub fn parse(name: &str) -> Result<Self, String> {
        if name.is_empty()
            || name
                .split('/')
                .any(|c| c.is_empty() || c == "." || c == "..")
        {
            return Err(format!("{name:?} is not a relative path"));
        }
        if name.contains('\0') {
            return Err(format!("{name:?} contains a NUL byte"));
        }
        Ok(Self(name.to_owned()))
    }

    /// The path of `path` (inside `root`) as the server would name it; an error says why
    /// the file cannot be synced.
    pub fn from_local(root: &Path, path: &Path) -> Result<Self, String> {
        let relative = path
            .strip_prefix(root)
            .map_err(|_| format!("{} is outside the folder", path.display()))?;
        let mut parts = Vec::new();
        for component in relative.components() {
            match component {
                std::path::Component::Normal(part) => parts.push(
                    part.to_str()
                        .ok_or("the name is not valid UTF-8, which the server cannot hold")?,
                ),
                _ => return Err(format!("{} is not a plain path", relative.display())),
            }
        }
        Self::parse(&parts.join("/"))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Where the file lives under `root`.
    pub fn to_local(&self, root: &Path) -> PathBuf {
        let mut path = root.to_path_buf();
        path.extend(self.0.split('/'));
        path
    }

    /// The last component.
    pub fn file_name(&self) -> &str {
        self.0.rsplit('/').next().unwrap_or(&self.0)
    }

    /// The folder the file is in (`""` at the top).
    pub fn parent(&self) -> &str {
        self.0.rsplit_once('/').map_or("", |(dir, _)| dir)
    }

    /// Whether `self` is `dir` itself or inside it (everything is inside `""`, the top).
    pub fn is_within(&self, dir: &str) -> bool {
        dir.is_empty()
            || self.0 == dir
            || (self.0.len() > dir.len()
                && self.0.starts_with(dir)
                && self.0.as_bytes()[dir.len()] == b'/')
    }

    /// Whether any component is `name` (a nested synced folder's `.filesync`).
    pub fn has_component(&self, name: &str) -> bool {
        self.0.split('/').any(|c| c == name)
    }

    /// Whether the name is as the server stores names (Unicode NFC).
    pub fn is_nfc(&self) -> bool {
        unicode_normalization::is_nfc(&self.0)
    }

    /// The name in NFC, as the server would store it.
    pub fn to_nfc(&self) -> RelPath {
        RelPath(self.0.nfc().collect())
    }

    /// The key under which names clash, computed as the server computes it: the
    /// compatibility form in a case-sensitive space, otherwise Unicode's compatibility
    /// caseless form (`Straße` clashes with `STRASSE`, `ﬁle` with `file`), so a clash the
    /// server would refuse is seen before an upload is tried.
    pub fn clash_key(&self, case_sensitive: bool) -> String {
        if case_sensitive {
            self.0.nfkc().collect()
        } else {
            let folded = caseless::default_case_fold_str(&self.0.nfd().collect::<String>());
            let folded = caseless::default_case_fold_str(&folded.nfkd().collect::<String>());
            folded.nfkd().collect::<String>().nfc().collect()
        }
    }

    /// The name of the conflict copy of this file made by `user` at `when`:
    /// `report (conflict alice 2026-11-25 172300).pdf`; `taken` says whether a candidate
    /// is in use, and a number is added until one is free.
    pub fn conflict_copy(
        &self,
        user: &str,
        when: chrono::NaiveDateTime,
        taken: impl Fn(&RelPath) -> bool,
    ) -> RelPath {
        let name = self.file_name();
        // The extension is what follows the last dot, unless the dot starts the name.
        let (stem, ext) = match name.rfind('.') {
            Some(i) if i > 0 => name.split_at(i),
            _ => (name, ""),
        };
        let user: String = user
            .chars()
            .map(|c| {
                if c.is_alphanumeric() || "._@-".contains(c) {
                    c
                } else {
                    '_'
                }
            })
            .take(40)
            .collect();
        let stamp = when.format("%Y-%m-%d %H%M%S");
        for n in 1.. {
            let suffix = if n == 1 {
                format!(" (conflict {user} {stamp})")
            } else {
                format!(" (conflict {user} {stamp} {n})")
            };
            // A component holds at most 255 bytes on most file systems.
            let room = 255usize.saturating_sub(suffix.len() + ext.len());
            let mut cut = stem.len().min(room);
            while !stem.is_char_boundary(cut) {
                cut -= 1;
            }
            let file = format!("{}{suffix}{ext}", &stem[..cut]);
            let candidate = match self.parent() {
                "" => RelPath(file),
                dir => RelPath(format!("{dir}/{file}")),
            };
            if !taken(&candidate) {
                return candidate;
            }
        }
        unreachable!("some number is free")
    }
}

impl fmt::Display for RelPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for RelPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> RelPath {
        RelPath::parse(s).unwrap()
    }

    #[test]
    fn paths_parse_and_map_to_the_folder() {
        for bad in ["", "/a", "a/", "a//b", "../a", "a/./b", "a\0b"] {
            assert!(RelPath::parse(bad).is_err(), "{bad:?}");
        }
        let root = Path::new("/tmp/f");
        assert_eq!(p("a/b.txt").to_local(root), Path::new("/tmp/f/a/b.txt"));
        assert_eq!(
            RelPath::from_local(root, Path::new("/tmp/f/a/b.txt")).unwrap(),
            p("a/b.txt")
        );
        assert_eq!(p("a/b/c").parent(), "a/b");
        assert_eq!(p("c").parent(), "");
        assert!(p("a/b").is_within("a"));
        assert!(!p("ab/c").is_within("a"));
    }

    #[test]
    fn conflict_copies_keep_the_extension_and_find_a_free_name() {
        let when = chrono::NaiveDate::from_ymd_opt(2026, 11, 25)
            .unwrap()
            .and_hms_opt(17, 23, 0)
            .unwrap();
        let none = |_: &RelPath| false;
        assert_eq!(
            p("docs/report.pdf").conflict_copy("alice", when, none),
            p("docs/report (conflict alice 2026-11-25 172300).pdf")
        );
        assert_eq!(
            p(".bashrc").conflict_copy("a|b/c", when, none),
            p(".bashrc (conflict a_b_c 2026-11-25 172300)")
        );
        let first = p("x.txt").conflict_copy("bob", when, none);
        assert_eq!(
            p("x.txt").conflict_copy("bob", when, |c| *c == first),
            p("x (conflict bob 2026-11-25 172300 2).txt")
        );
        let long = "é".repeat(200);
        let copy = p(&format!("{long}.txt")).conflict_copy("bob", when, none);
        assert!(copy.file_name().len() <= 255);
        assert!(copy.as_str().ends_with(" 172300).txt"));
    }

    #[test]
    fn clash_keys_fold_case_unless_the_space_is_case_sensitive() {
        assert_eq!(
            p("A/Ｂ.TXT").clash_key(false),
            p("a/b.txt").clash_key(false)
        );
        assert_ne!(p("A.txt").clash_key(true), p("a.txt").clash_key(true));
    }
}
