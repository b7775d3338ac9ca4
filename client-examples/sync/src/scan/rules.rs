//! What is never synced: `.filesync/` (the state), a few files operating systems and
//! editors leave behind, and what `.filesyncignore` at the top of the folder lists
//! (gitignore syntax; `!pattern` re-includes what a built-in rule leaves out).

use std::path::{Path, PathBuf};

use ignore::gitignore::{Gitignore, GitignoreBuilder};
use sha2::{Digest, Sha256};

use crate::paths::RelPath;

/// The folder the state lives in, at the top of the synced folder.
pub const STATE_DIR: &str = ".filesync";

/// The ignore file, at the top of the synced folder.
pub const IGNORE_FILE: &str = ".filesyncignore";

/// Left out unless `.filesyncignore` says otherwise: Finder's and Explorer's metadata,
/// office suites' lock files, editors' swap and lock files, browsers' and desktops'
/// files still being written.
const BUILT_IN: &[&str] = &[
    ".DS_Store",
    "Thumbs.db",
    "desktop.ini",
    ".~lock.*#",
    "~$*",
    ".*.sw[px]",
    ".#*",
    "*.crdownload",
    ".goutputstream-*",
];

pub struct Rules {
    root: PathBuf,
    matcher: Gitignore,
    /// The SHA-256 of `.filesyncignore` (empty when there is none).
    pub digest: String,
}

impl Rules {
    /// The rules of the folder at `root`; a problem with the ignore file is returned
    /// beside rules built from what could be read.
    pub fn load(root: &Path) -> (Self, Option<String>) {
        let mut builder = GitignoreBuilder::new(root);
        for line in BUILT_IN {
            builder.add_line(None, line).expect("built-in rules parse");
        }
        let file = root.join(IGNORE_FILE);
        let mut problem = None;
        let digest = match std::fs::read(&file) {
            Ok(bytes) => {
                if let Some(e) = builder.add(&file) {
                    problem = Some(format!("{IGNORE_FILE}: {e}"));
                }
                hex::encode(Sha256::digest(&bytes))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => {
                problem = Some(format!("{IGNORE_FILE} cannot be read: {e}"));
                String::new()
            }
        };
        let matcher = builder.build().unwrap_or_else(|e| {
            problem = Some(format!("{IGNORE_FILE}: {e}"));
            Gitignore::empty()
        });
        let rules = Self {
            root: root.to_owned(),
            matcher,
            digest,
        };
        (rules, problem)
    }

    /// Whether `path` (a file, or a folder when `is_dir`) is left alone. As in git, what
    /// is under an ignored folder stays ignored (`!` cannot re-include it), so the scan,
    /// which does not walk into ignored folders, and the planner agree. A `.filesync`
    /// anywhere is a synced folder's state (a nested one's included): never synced.
    pub fn ignores(&self, path: &RelPath, is_dir: bool) -> bool {
        if path.has_component(STATE_DIR) {
            return true;
        }
        let mut folder = String::new();
        let parts: Vec<&str> = path.as_str().split('/').collect();
        for (i, part) in parts.iter().enumerate() {
            if i > 0 {
                folder.push('/');
            }
            folder.push_str(part);
            let last = i + 1 == parts.len();
            let local = self.root.join(&folder);
            if self
                .matcher
                .matched(&local, if last { is_dir } else { true })
                .is_ignore()
            {
                return true;
            }
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_state_built_ins_and_the_ignore_file_are_honoured() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(IGNORE_FILE),
            "build/\n*.log\n!keep.log\n!Thumbs.db\n!build/kept.o\n",
        )
        .unwrap();
        let (rules, problem) = Rules::load(dir.path());
        assert!(problem.is_none());
        let ignored = |p: &str| rules.ignores(&RelPath::parse(p).unwrap(), false);
        assert!(ignored(".filesync/state.db"));
        assert!(
            ignored("nested/.filesync/token"),
            "a nested synced folder's state"
        );
        assert!(ignored("a/.DS_Store"));
        assert!(ignored("build/out/x.o"));
        assert!(
            ignored("build/kept.o"),
            "as in git: no re-including under an ignored folder"
        );
        assert!(ignored("a/b.log"));
        assert!(!ignored("keep.log"));
        assert!(!ignored("Thumbs.db"), "a built-in rule can be overridden");
        assert!(!ignored("src/main.rs"));
        assert!(!ignored(IGNORE_FILE), "the ignore file itself is synced");
        assert_eq!(rules.digest.len(), 64);
    }
}
