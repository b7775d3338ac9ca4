//! The planner: the three trees in, the actions that bring them together out. A pure
//! function: no I/O, no clock (the time for conflict names comes in), the same plan for
//! the same trees.
//!
//! The rules, per file:
//! - A side changed since the base and the other did not: the change is carried over
//!   (content, name, deletion).
//! - Both changed the content, to different bytes: a conflict. The remote version keeps
//!   the name; the local one becomes `name (conflict USER DATE TIME).ext` and is uploaded
//!   as a new file. Nothing is lost on either side.
//! - A deletion never beats a change: a file changed on one side since the base is kept
//!   (downloaded again, or uploaded as a new file) whatever the other side deleted.
//! - Names: a rename on one side is carried over; when both renamed, the remote name
//!   wins. A local name that another file holds on the server (or would, once this pass
//!   is done; compared as the space compares names) is given to a conflict copy.
//! - A local file whose name moved but whose bytes did not (same inode, or the only
//!   missing file with those bytes) is a rename: `updateFile(name)`, not a delete and an
//!   upload.
//! - Busy paths (a file being written, a deletion not yet confirmed) are left for a
//!   later pass, and so is every file whose plan would touch them.

mod decide;
#[cfg(test)]
mod tests;

use std::collections::{HashMap, HashSet};

use crate::paths::RelPath;
use crate::tree::{BaseFile, FileId, Fingerprint, LocalFile, RemoteFile};

/// What the planner looks at.
pub struct Input<'a> {
    pub base: &'a HashMap<FileId, BaseFile>,
    /// The remote tree: every file the server has told of, base files included.
    pub remote: &'a HashMap<FileId, RemoteFile>,
    pub local: &'a HashMap<RelPath, LocalFile>,
    /// Paths not to act on in this pass.
    pub busy: &'a HashSet<RelPath>,
    /// Base paths missing locally whose deletion is not to be synced yet (a watcher's
    /// event may be half of a rename); a rename found for them goes ahead.
    pub held: &'a HashSet<RelPath>,
    /// Paths `.filesyncignore` (and the built-in rules) leave alone.
    pub ignored: &'a dyn Fn(&RelPath) -> bool,
    /// How the space compares names (see [`RelPath::clash_key`]).
    pub case_sensitive: bool,
    /// Who conflict copies are named after, and when.
    pub user: &'a str,
    pub now: chrono::NaiveDateTime,
}

/// One step of a plan. Each says what it expects to find, and the executor checks that
/// before it acts: a file that changed since it was scanned is left for the next pass.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Removes a local file the server deleted (unchanged here since the base).
    DeleteLocal {
        id: FileId,
        path: RelPath,
        expect: Fingerprint,
    },
    /// Moves a local file out of the way, to a conflict copy's name.
    SetAside {
        from: RelPath,
        to: RelPath,
        expect: Fingerprint,
    },
    /// Moves a local file to where the server has it. `record`: the remote state the
    /// move agrees with; `None` when content still has to follow (only the base's name
    /// moves).
    MoveLocal {
        id: FileId,
        from: RelPath,
        to: RelPath,
        expect: Fingerprint,
        record: Option<RemoteFile>,
    },
    /// Fetches a remote version into `to`. `replace`: the file expected there now (its
    /// content is the base's, or it was moved there by this plan).
    Download {
        remote: RemoteFile,
        to: RelPath,
        replace: Option<Fingerprint>,
    },
    /// Uploads a local file: a new version of `id` based on `base_version`, or a new file
    /// (`id: None`); its name on the server becomes `path`.
    Upload {
        id: Option<FileId>,
        base_version: Option<i64>,
        path: RelPath,
        sha256: String,
        expect: Fingerprint,
    },
    /// Renames the file on the server (content unchanged). `local`: how the file at `to`
    /// looks, when the plan knows (after a download in the same plan, the base has it).
    RenameRemote {
        id: FileId,
        base_version: i64,
        to: RelPath,
        local: Option<Fingerprint>,
    },
    /// Deletes the file on the server (unchanged there since the base).
    DeleteRemote {
        id: FileId,
        base_version: i64,
        path: RelPath,
    },
    /// Both sides already agree: records it.
    Record {
        remote: RemoteFile,
        local: Fingerprint,
    },
    /// Both sides deleted the file, or it lives on under another id: drops its base.
    Forget { id: FileId },
}

impl Action {
    /// The path a person would recognise the action by.
    pub fn path(&self) -> &RelPath {
        match self {
            Action::DeleteLocal { path, .. }
            | Action::Upload { path, .. }
            | Action::DeleteRemote { path, .. } => path,
            Action::SetAside { from, .. } => from,
            Action::MoveLocal { to, .. }
            | Action::Download { to, .. }
            | Action::RenameRemote { to, .. } => to,
            Action::Record { remote, .. } => &remote.path,
            Action::Forget { .. } => {
                static NONE: std::sync::OnceLock<RelPath> = std::sync::OnceLock::new();
                NONE.get_or_init(|| RelPath::parse("-").expect("a path"))
            }
        }
    }

    /// Whether the action changes nothing but the state.
    pub fn is_bookkeeping(&self) -> bool {
        matches!(self, Action::Record { .. } | Action::Forget { .. })
    }
}

/// A plan, in the order it is carried out.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// First, one after another: local deletions, conflict copies set aside, local moves
    /// (ordered so that no move lands on a file still to move away).
    pub local: Vec<Action>,
    /// Then, per file, its remaining steps in order; files side by side.
    pub files: Vec<Vec<Action>>,
    /// How many files the plan deletes, on either side.
    pub deletes: usize,
    /// How many files were left alone because a path they touch is busy.
    pub waiting: usize,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.local.is_empty() && self.files.iter().all(|steps| steps.is_empty())
    }

    /// Every action, in order.
    pub fn actions(&self) -> impl Iterator<Item = &Action> {
        self.local.iter().chain(self.files.iter().flatten())
    }
}

/// Plans a pass over `input`.
pub fn plan(input: &Input) -> Plan {
    if input.base.keys().all(|id| input.remote.contains_key(id)) {
        return decide::Planner::new(input).plan();
    }
    // A base file the server said nothing of is as the base has it.
    let mut remote = input.remote.clone();
    for b in input.base.values() {
        remote.entry(b.id.clone()).or_insert_with(|| b.as_remote());
    }
    let whole = Input {
        remote: &remote,
        ..*input
    };
    decide::Planner::new(&whole).plan()
}
