//! How the planner decides: match local files to base files, decide per file, settle
//! names two files claim, then write the actions down in order.

use std::collections::{HashMap, HashSet};

use super::{Action, Input, Plan};
use crate::paths::RelPath;
use crate::tree::{BaseFile, LocalFile, RemoteFile};

/// Where a file's name in this pass comes from; on a clash, the higher wins.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Source {
    /// A local rename or a new local file.
    Local,
    /// Neither side moved it.
    Base,
    /// A remote rename or a new remote file.
    Remote,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Content {
    Same,
    Down,
    Up,
}

enum Decision<'a> {
    /// Nothing this pass; `paths` stay as they are.
    Hold {
        paths: Vec<&'a RelPath>,
        waiting: bool,
    },
    Forget(&'a BaseFile),
    DeleteLocal {
        b: &'a BaseFile,
        l: &'a LocalFile,
    },
    DeleteRemote {
        b: &'a BaseFile,
    },
    Sync {
        b: Option<&'a BaseFile>,
        r: &'a RemoteFile,
        l: Option<&'a LocalFile>,
        content: Content,
        target: RelPath,
        source: Source,
    },
    /// Both changed the content: `r` keeps its name, `l` goes to `copy`.
    Conflict {
        r: &'a RemoteFile,
        l: &'a LocalFile,
        copy: Option<RelPath>,
    },
    UploadNew {
        l: &'a LocalFile,
        target: RelPath,
        forget: Option<&'a BaseFile>,
    },
}

impl Decision<'_> {
    /// The name this decision leaves the file under, and who says so.
    fn claim(&self) -> Option<(&RelPath, Source)> {
        match self {
            Decision::Sync { target, source, .. } => Some((target, *source)),
            Decision::Conflict { r, .. } => Some((&r.path, Source::Remote)),
            Decision::UploadNew { target, .. } => Some((target, Source::Local)),
            _ => None,
        }
    }
}

pub(super) struct Planner<'a> {
    input: &'a Input<'a>,
    /// The local file of each base file, matched by name or as a rename.
    local_of: HashMap<&'a str, &'a LocalFile>,
    claimed_local: HashSet<&'a RelPath>,
    decisions: Vec<Decision<'a>>,
}

impl<'a> Planner<'a> {
    pub(super) fn new(input: &'a Input<'a>) -> Self {
        Self {
            input,
            local_of: HashMap::new(),
            claimed_local: HashSet::new(),
            decisions: Vec::new(),
        }
    }

    pub(super) fn plan(mut self) -> Plan {
        self.match_local();
        let input = self.input;
        let mut bases: Vec<&BaseFile> = input.base.values().collect();
        bases.sort_by(|a, b| a.id.cmp(&b.id));
        for b in bases {
            let r = &input.remote[&b.id];
            let decision = self.decide_known(b, r);
            self.decisions.push(decision);
        }
        let mut news: Vec<&RemoteFile> = input
            .remote
            .values()
            .filter(|r| !input.base.contains_key(&r.id))
            .collect();
        news.sort_by(|a, b| a.id.cmp(&b.id));
        for r in news {
            if let Some(decision) = self.decide_remote_new(r) {
                self.decisions.push(decision);
            }
        }
        let mut fresh: Vec<&LocalFile> = input
            .local
            .values()
            .filter(|l| !self.claimed_local.contains(&l.path))
            .collect();
        fresh.sort_by(|a, b| a.path.cmp(&b.path));
        for l in fresh {
            self.decisions.push(Decision::UploadNew {
                l,
                target: l.path.clone(),
                forget: None,
            });
        }
        self.settle_clashes();
        self.write_down()
    }

    fn match_local(&mut self) {
        let input = self.input;
        let mut bases: Vec<&'a BaseFile> = input.base.values().collect();
        bases.sort_by(|a, b| a.id.cmp(&b.id));
        let mut missing = Vec::new();
        for b in bases {
            match input.local.get(&b.path) {
                Some(l) => {
                    self.local_of.insert(&b.id, l);
                    self.claimed_local.insert(&l.path);
                }
                None => missing.push(b),
            }
        }
        let mut unclaimed: Vec<&'a LocalFile> = input
            .local
            .values()
            .filter(|l| !self.claimed_local.contains(&l.path))
            .collect();
        unclaimed.sort_by(|a, b| a.path.cmp(&b.path));
        // A rename keeps the inode; the bytes must be the base's too.
        let by_inode: HashMap<u64, &'a BaseFile> = missing
            .iter()
            .filter(|b| b.local.inode != 0)
            .map(|b| (b.local.inode, *b))
            .collect();
        for l in &unclaimed {
            if let Some(b) = by_inode.get(&l.fingerprint.inode)
                && l.fingerprint.inode != 0
                && l.sha256 == b.sha256
                && !self.local_of.contains_key(b.id.as_str())
            {
                self.local_of.insert(&b.id, l);
                self.claimed_local.insert(&l.path);
            }
        }
        // Otherwise (a copy and a delete, another file system): the only missing file
        // with these bytes, and the only new one.
        let mut gone: HashMap<&str, Vec<&'a BaseFile>> = HashMap::new();
        for b in missing {
            if !self.local_of.contains_key(b.id.as_str()) {
                gone.entry(&b.sha256).or_default().push(b);
            }
        }
        let mut appeared: HashMap<&str, Vec<&'a LocalFile>> = HashMap::new();
        for l in unclaimed {
            if !self.claimed_local.contains(&l.path) {
                appeared.entry(&l.sha256).or_default().push(l);
            }
        }
        for (sha, bs) in gone {
            if let ([b], Some([l])) = (bs.as_slice(), appeared.get(sha).map(Vec::as_slice)) {
                self.local_of.insert(&b.id, l);
                self.claimed_local.insert(&l.path);
            }
        }
    }

    fn busy(&self, path: &RelPath) -> bool {
        self.input.busy.contains(path)
    }

    fn ignored(&self, path: &RelPath) -> bool {
        (self.input.ignored)(path)
    }

    /// A file both sides knew.
    fn decide_known(&self, b: &'a BaseFile, r: &'a RemoteFile) -> Decision<'a> {
        let l = self.local_of.get(b.id.as_str()).copied();
        let mut paths = vec![&b.path, &r.path];
        paths.extend(l.map(|l| &l.path));
        if paths.iter().any(|p| self.busy(p)) {
            return Decision::Hold {
                paths,
                waiting: true,
            };
        }
        // A file under an ignored name is not seen locally; that is no deletion.
        if self.ignored(&b.path) {
            return Decision::Hold {
                paths: l.map(|l| vec![&l.path]).unwrap_or_default(),
                waiting: false,
            };
        }
        // Moved there under an ignored name: for this folder it is gone, as if deleted
        // (and a local change to it survives as a new file).
        let gone = r.deleted || self.ignored(&r.path);
        if gone {
            return match l {
                None => Decision::Forget(b),
                Some(l) if l.sha256 == b.sha256 && l.path == b.path => {
                    Decision::DeleteLocal { b, l }
                }
                // Changed here since the base: the change survives, as a new file.
                Some(l) => Decision::UploadNew {
                    l,
                    target: l.path.clone(),
                    forget: Some(b),
                },
            };
        }
        if l.is_none() && self.input.held.contains(&b.path) {
            return Decision::Hold {
                paths: vec![&b.path],
                waiting: true,
            };
        }
        let Some(l) = l else {
            return if r.version == b.version {
                Decision::DeleteRemote { b }
            } else {
                // Changed there since the base: the change survives.
                Decision::Sync {
                    b: Some(b),
                    r,
                    l: None,
                    content: Content::Down,
                    target: r.path.clone(),
                    source: Source::Remote,
                }
            };
        };
        let content = match (l.sha256 != b.sha256, r.sha256 != b.sha256) {
            (false, false) => Content::Same,
            (true, false) => Content::Up,
            (false, true) => Content::Down,
            (true, true) if l.sha256 == r.sha256 => Content::Same,
            (true, true) => return Decision::Conflict { r, l, copy: None },
        };
        let (target, source) = if r.path != b.path {
            (r.path.clone(), Source::Remote)
        } else if l.path != b.path {
            (l.path.clone(), Source::Local)
        } else {
            (b.path.clone(), Source::Base)
        };
        Decision::Sync {
            b: Some(b),
            r,
            l: Some(l),
            content,
            target,
            source,
        }
    }

    /// A file the base does not know of that the server has.
    fn decide_remote_new(&mut self, r: &'a RemoteFile) -> Option<Decision<'a>> {
        if r.deleted || self.ignored(&r.path) {
            return None;
        }
        if self.busy(&r.path) {
            return Some(Decision::Hold {
                paths: vec![&r.path],
                waiting: true,
            });
        }
        let l = self
            .input
            .local
            .get(&r.path)
            .filter(|l| !self.claimed_local.contains(&l.path));
        let Some(l) = l else {
            return Some(Decision::Sync {
                b: None,
                r,
                l: None,
                content: Content::Down,
                target: r.path.clone(),
                source: Source::Remote,
            });
        };
        self.claimed_local.insert(&l.path);
        Some(if l.sha256 == r.sha256 {
            Decision::Sync {
                b: None,
                r,
                l: Some(l),
                content: Content::Same,
                target: r.path.clone(),
                source: Source::Remote,
            }
        } else {
            Decision::Conflict { r, l, copy: None }
        })
    }

    /// Two files ending under one name (as the space compares names): the one the server
    /// already has there wins; a local newcomer becomes a conflict copy.
    fn settle_clashes(&mut self) {
        let case_sensitive = self.input.case_sensitive;
        let key = |p: &RelPath| p.clash_key(case_sensitive);
        let mut claims: HashMap<String, Vec<(Source, usize)>> = HashMap::new();
        for (i, d) in self.decisions.iter().enumerate() {
            match d {
                Decision::Hold { paths, .. } => {
                    for p in paths {
                        claims.entry(key(p)).or_default().push((Source::Base, i));
                    }
                }
                d => {
                    if let Some((path, source)) = d.claim() {
                        claims.entry(key(path)).or_default().push((source, i));
                    }
                }
            }
        }
        let mut losers = Vec::new();
        for mut claimants in claims.values().cloned() {
            if claimants.len() < 2 {
                continue;
            }
            // The strongest first; among equals, the first decided (ids, then paths).
            claimants.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
            losers.extend(claimants.into_iter().skip(1));
        }
        losers.sort_by_key(|&(_, i)| i);
        losers.dedup_by_key(|&mut (_, i)| i);
        let mut occupied: HashSet<String> = claims.into_keys().collect();
        let input = self.input;
        occupied.extend(input.local.keys().map(key));
        occupied.extend(
            input
                .remote
                .values()
                .filter(|r| !r.deleted)
                .map(|r| key(&r.path)),
        );
        let copy_of = |path: &RelPath, occupied: &mut HashSet<String>| {
            let copy = path.conflict_copy(input.user, input.now, |c| occupied.contains(&key(c)));
            occupied.insert(key(&copy));
            copy
        };
        for (source, i) in losers {
            let d = &mut self.decisions[i];
            match (source, d) {
                (Source::Local, Decision::Sync { target, .. })
                | (Source::Local, Decision::UploadNew { target, .. }) => {
                    *target = copy_of(target, &mut occupied);
                }
                (_, d) => {
                    let paths = match d {
                        Decision::Sync { l, .. } => l.iter().map(|l| &l.path).collect(),
                        Decision::Conflict { l, .. } => vec![&l.path],
                        _ => Vec::new(),
                    };
                    *d = Decision::Hold {
                        paths,
                        waiting: true,
                    };
                }
            }
        }
        for d in &mut self.decisions {
            if let Decision::Conflict { l, copy, .. } = d {
                *copy = Some(copy_of(&l.path, &mut occupied));
            }
        }
    }

    fn write_down(self) -> Plan {
        let mut plan = Plan::default();
        let (mut deletes, mut asides, mut moves) = (Vec::new(), Vec::new(), Vec::new());
        for d in self.decisions {
            match d {
                Decision::Hold { waiting, .. } => plan.waiting += usize::from(waiting),
                Decision::Forget(b) => plan.files.push(vec![Action::Forget { id: b.id.clone() }]),
                Decision::DeleteLocal { b, l } => {
                    plan.deletes += 1;
                    deletes.push(Action::DeleteLocal {
                        id: b.id.clone(),
                        path: l.path.clone(),
                        expect: l.fingerprint,
                    });
                }
                Decision::DeleteRemote { b } => {
                    plan.deletes += 1;
                    plan.files.push(vec![Action::DeleteRemote {
                        id: b.id.clone(),
                        base_version: b.version,
                        path: b.path.clone(),
                    }]);
                }
                Decision::Conflict { r, l, copy } => {
                    let copy = copy.expect("copies are named before the plan is written");
                    asides.push(Action::SetAside {
                        from: l.path.clone(),
                        to: copy.clone(),
                        expect: l.fingerprint,
                    });
                    plan.files.push(vec![upload_new(l, copy)]);
                    plan.files.push(vec![Action::Download {
                        remote: r.clone(),
                        to: r.path.clone(),
                        replace: None,
                    }]);
                }
                Decision::UploadNew { l, target, forget } => {
                    let mut steps = Vec::new();
                    if let Some(b) = forget {
                        steps.push(Action::Forget { id: b.id.clone() });
                    }
                    if target != l.path {
                        asides.push(Action::SetAside {
                            from: l.path.clone(),
                            to: target.clone(),
                            expect: l.fingerprint,
                        });
                    }
                    steps.push(upload_new(l, target));
                    plan.files.push(steps);
                }
                Decision::Sync {
                    b,
                    r,
                    l,
                    content,
                    target,
                    ..
                } => {
                    let steps = sync_steps(b, r, l, content, &target, &mut moves);
                    if !steps.is_empty() {
                        plan.files.push(steps);
                    }
                }
            }
        }
        plan.local = deletes;
        plan.local.extend(asides);
        plan.local.extend(order_moves(moves));
        plan
    }
}

fn upload_new(l: &LocalFile, path: RelPath) -> Action {
    Action::Upload {
        id: None,
        base_version: None,
        path,
        sha256: l.sha256.clone(),
        expect: l.fingerprint,
    }
}

fn sync_steps(
    b: Option<&BaseFile>,
    r: &RemoteFile,
    l: Option<&LocalFile>,
    content: Content,
    target: &RelPath,
    moves: &mut Vec<Action>,
) -> Vec<Action> {
    if let Some(l) = l
        && l.path != *target
    {
        moves.push(Action::MoveLocal {
            id: r.id.clone(),
            from: l.path.clone(),
            to: target.clone(),
            expect: l.fingerprint,
            record: (content == Content::Same && r.path == *target).then(|| r.clone()),
        });
    }
    let rename = |local| Action::RenameRemote {
        id: r.id.clone(),
        base_version: r.version,
        to: target.clone(),
        local,
    };
    let mut steps = Vec::new();
    match content {
        Content::Down => {
            steps.push(Action::Download {
                remote: r.clone(),
                to: target.clone(),
                replace: l.map(|l| l.fingerprint),
            });
            if r.path != *target {
                steps.push(rename(None));
            }
        }
        Content::Up => {
            let l = l.expect("an upload has a local file");
            steps.push(Action::Upload {
                id: Some(r.id.clone()),
                base_version: Some(r.version),
                path: target.clone(),
                sha256: l.sha256.clone(),
                expect: l.fingerprint,
            });
        }
        Content::Same => {
            let l = l.expect("same content has a local file");
            if r.path != *target {
                steps.push(rename(Some(l.fingerprint)));
            } else if l.path == *target
                && b.is_none_or(|b| {
                    b.version != r.version || b.sha256 != r.sha256 || b.path != r.path
                })
            {
                steps.push(Action::Record {
                    remote: r.clone(),
                    local: l.fingerprint,
                });
            }
        }
    }
    steps
}

/// Orders local moves so that none lands on a file that is still to move away; a cycle
/// (two files swapping names) goes through a temporary name.
fn order_moves(mut pending: Vec<Action>) -> Vec<Action> {
    let from = |a: &Action| match a {
        Action::MoveLocal { from, .. } => from.clone(),
        _ => unreachable!("only moves"),
    };
    let to = |a: &Action| match a {
        Action::MoveLocal { to, .. } => to.clone(),
        _ => unreachable!("only moves"),
    };
    let mut ordered = Vec::new();
    while !pending.is_empty() {
        let sources: HashSet<RelPath> = pending.iter().map(from).collect();
        let (ready, blocked): (Vec<_>, Vec<_>) =
            pending.into_iter().partition(|m| !sources.contains(&to(m)));
        if !ready.is_empty() {
            ordered.extend(ready);
            pending = blocked;
            continue;
        }
        // Every remaining move waits on another: a cycle. Park the first one.
        let mut blocked = blocked.into_iter();
        let Some(Action::MoveLocal {
            id,
            from,
            to,
            expect,
            record,
        }) = blocked.next()
        else {
            unreachable!("a blocked move");
        };
        let parked = RelPath::parse(&format!("{from}.filesync-moving")).expect("a path");
        ordered.push(Action::MoveLocal {
            id: id.clone(),
            from,
            to: parked.clone(),
            expect,
            record: None,
        });
        pending = blocked.collect();
        pending.push(Action::MoveLocal {
            id,
            from: parked,
            to,
            expect,
            record,
        });
    }
    ordered
}
