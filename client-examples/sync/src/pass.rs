//! One sync pass: learn what changed on the server, scan the folder, plan, carry the
//! plan out, then move the cursor.
//!
//! The cursor moves in the same transaction that records what the changes it covers
//! left undone (a file that could not be written here, one being edited): those stay in
//! the state as pending remote changes, planned again on every pass until they land. So
//! a change is never skipped, and one file that cannot be synced does not hold every
//! other change back. A crash before that transaction leaves the old cursor: the next
//! pass fetches the same changes again, and the steps already carried out plan as
//! nothing to do.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use crate::api::ApiError;
use crate::exec::Executor;
use crate::failure::Failure;
use crate::folder::Folder;
use crate::paths::RelPath;
use crate::plan::{Input, Plan, plan};
use crate::report::Reporter;
use crate::scan::Scanner;
use crate::scan::rules::Rules;
use crate::tree::{BaseFile, FileId, RemoteFile, now_ns};

/// How much a pass may delete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MaxDelete {
    Percent(u32),
    Count(usize),
}

impl MaxDelete {
    pub fn parse(s: &str) -> Result<Self, String> {
        let bad = || format!("--max-delete takes a percentage (50%) or a count (20), not {s:?}");
        match s.strip_suffix('%') {
            Some(p) => p.trim().parse().map(MaxDelete::Percent).map_err(|_| bad()),
            None => s.trim().parse().map(MaxDelete::Count).map_err(|_| bad()),
        }
    }

    /// Whether deleting `deletes` of `total` files is allowed. A handful of deletions is
    /// always allowed: the guard is for a folder emptied by mistake (an unmounted drive,
    /// a wrong `rm -r`), not for a person deleting a file or three.
    fn allows(&self, deletes: usize, total: usize) -> bool {
        const ALWAYS: usize = 3;
        deletes <= ALWAYS
            || match *self {
                MaxDelete::Percent(p) => deletes * 100 <= total * p as usize,
                MaxDelete::Count(n) => deletes <= n,
            }
    }
}

impl std::fmt::Display for MaxDelete {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MaxDelete::Percent(p) => write!(f, "{p}%"),
            MaxDelete::Count(n) => write!(f, "{n}"),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Options {
    pub dry_run: bool,
    pub max_delete: MaxDelete,
    pub parallel: usize,
    /// A file modified more recently than this waits for a later pass.
    pub settle: Duration,
}

/// Where this pass learns the server's side from.
pub enum Remote {
    /// `changes` since the stored cursor (or a full listing when it expired).
    Fetch,
    /// Events a subscription delivered, and the cursor after the last of them.
    Events {
        files: Vec<RemoteFile>,
        cursor: Option<String>,
    },
}

/// Which part of the folder to look at.
pub enum Scope {
    Full,
    Paths(HashSet<RelPath>),
}

/// What a pass came to.
#[derive(Debug, Default)]
pub struct Report {
    pub plan: Plan,
    pub done: usize,
    pub problems: Vec<(String, String)>,
    /// Something is worth another pass soon (a file being written, a change under the
    /// plan).
    pub retry: bool,
    /// Paths left alone because they are being written, or held.
    pub changing: HashSet<RelPath>,
}

pub struct Syncer {
    pub folder: Folder,
    pub report: Reporter,
    pub options: Options,
    case_sensitive: bool,
    /// Deletions planned by recent passes, and when.
    recent_deletes: Vec<(std::time::Instant, usize)>,
}

impl Syncer {
    /// Reads the space's settings (how it compares names) before the first pass.
    pub async fn new(folder: Folder, report: Reporter, options: Options) -> Result<Self, Failure> {
        let space =
            folder.api.space(&folder.space).await?.ok_or_else(|| {
                Failure::NoAccess("you are no longer a member of this space".into())
            })?;
        folder.keep_token()?;
        Ok(Self {
            folder,
            report,
            options,
            case_sensitive: space.case_sensitive_names,
            recent_deletes: Vec::new(),
        })
    }

    /// One pass; `hold` lists paths not to act on (deletions not yet confirmed).
    pub async fn pass(
        &mut self,
        remote: Remote,
        scope: Scope,
        hold: &HashSet<RelPath>,
    ) -> Result<Report, Failure> {
        let folder = &self.folder;
        let state = &folder.state;
        let (rules, rules_problem) = Rules::load(&folder.root);
        let mut base = state.base()?;
        let pending = state.pending()?;
        let fetched_by_fetch = matches!(remote, Remote::Fetch);
        let (fetched, cursor) = match remote {
            Remote::Fetch => {
                let known: HashMap<FileId, RemoteFile> = base
                    .values()
                    .map(BaseFile::as_remote)
                    .chain(pending.iter().cloned())
                    .map(|r| (r.id.clone(), r))
                    .collect();
                self.fetch(&rules, &known).await?
            }
            Remote::Events { files, cursor } => (files, cursor),
        };
        // Per file, the newest state heard of (events replayed after a reconnect may
        // arrive after newer ones).
        let mut remote: HashMap<FileId, RemoteFile> = base
            .values()
            .map(|b| (b.id.clone(), b.as_remote()))
            .collect();
        for r in pending.iter().chain(&fetched) {
            if remote
                .get(&r.id)
                .is_none_or(|known| known.version <= r.version)
            {
                remote.insert(r.id.clone(), r.clone());
            }
        }

        let scanner = Scanner {
            root: &folder.root,
            rules: &rules,
            state,
            base: &base,
            settle: self.options.settle,
            threads: std::thread::available_parallelism().map_or(2, |n| n.get()),
            normalize_names: !self.options.dry_run,
        };
        let scan = match &scope {
            Scope::Full => scanner.full()?,
            Scope::Paths(paths) => scanner.paths(paths)?,
        };
        for (id, fp) in &scan.refreshed {
            if let Some(b) = base.get_mut(id) {
                b.local = *fp;
                b.recorded_ns = now_ns();
                if !self.options.dry_run {
                    state.put_base(b)?;
                }
            }
        }
        let ignored = |p: &RelPath| rules.ignores(p, false);
        let plan = plan(&Input {
            base: &base,
            remote: &remote,
            local: &scan.files,
            busy: &scan.busy,
            held: hold,
            ignored: &ignored,
            case_sensitive: self.case_sensitive,
            user: &folder.user,
            now: chrono::Local::now().naive_local(),
        });
        let mut report = Report {
            retry: plan.waiting > 0 || !scan.changing.is_empty(),
            changing: scan.changing.iter().chain(hold).cloned().collect(),
            problems: scan.problems.clone(),
            ..Report::default()
        };
        report
            .problems
            .extend(rules_problem.map(|p| (String::new(), p)));
        // Deletions are counted over the last minutes too: `watch` applies a mass
        // deletion a few files per pass, and each pass alone would look harmless.
        let window = std::time::Duration::from_secs(600);
        self.recent_deletes.retain(|(at, _)| at.elapsed() < window);
        let recent: usize = self.recent_deletes.iter().map(|(_, n)| n).sum();
        let deletes = plan.deletes + if plan.deletes > 0 { recent } else { 0 };
        let total = base.len() + recent;
        if !self.options.max_delete.allows(deletes, total) {
            return Err(Failure::TooManyDeletes {
                deletes,
                total,
                limit: self.options.max_delete.to_string(),
            });
        }
        if self.options.dry_run {
            report.plan = plan;
            return Ok(report);
        }
        let outcome = Executor {
            root: &folder.root,
            state,
            api: &folder.api,
            space: &folder.space,
            report: &self.report,
            parallel: self.options.parallel,
            settle: self.options.settle,
        }
        .run(&plan)
        .await;
        if plan.deletes > 0 {
            self.recent_deletes
                .push((std::time::Instant::now(), plan.deletes));
        }
        report.done = outcome.done;
        report.retry |= outcome.retry;
        report.problems.extend(outcome.problems);
        report.plan = plan;

        // What the fetched changes left undone stays pending; the cursor moves with it.
        base = state.base()?;
        // Only a file's newest row counts.
        let mut latest: HashMap<&FileId, &RemoteFile> = HashMap::new();
        for r in pending.iter().chain(&fetched) {
            if latest
                .get(&r.id)
                .is_none_or(|known| known.version <= r.version)
            {
                latest.insert(&r.id, r);
            }
        }
        let (mut unapplied, mut settled) = (Vec::new(), Vec::new());
        for (id, r) in latest {
            if applied(r, &base, &ignored) {
                settled.push(id.clone());
            } else {
                unapplied.push(r.clone());
            }
        }
        // The ignore rules a listing was made for are recorded with its cursor.
        let digest = fetched_by_fetch.then_some(rules.digest.as_str());
        state.advance(cursor.as_deref(), &unapplied, &settled, digest)?;
        if matches!(scope, Scope::Full) {
            let keep: HashSet<String> = unapplied
                .iter()
                .map(|r| crate::exec::part_name(&r.id, r.version))
                .collect();
            crate::exec::prune_parts(&folder.root, &keep);
        }
        state.set_problems(&report.problems, now_ns())?;
        if matches!(scope, Scope::Full) {
            state.set("links_skipped", &scan.links.to_string())?;
        }
        state.set("last_pass_ns", &now_ns().to_string())?;
        if let Some(fatal) = outcome.fatal {
            return Err(fatal.into());
        }
        Ok(report)
    }

    /// Changes since the cursor; a full listing when the cursor expired or the ignore
    /// rules changed (a file they used to leave out may now be wanted). The rules are
    /// recorded with the cursor, so a pass that does not finish lists again.
    async fn fetch(
        &self,
        rules: &Rules,
        known: &HashMap<FileId, RemoteFile>,
    ) -> Result<(Vec<RemoteFile>, Option<String>), Failure> {
        let folder = &self.folder;
        let cursor = folder.state.get("cursor")?;
        let rules_changed = folder.state.get("ignore_digest")?.as_deref() != Some(&rules.digest);
        if cursor.is_some() && !rules_changed {
            match self.changes(cursor.as_deref()).await {
                Err(ApiError::CursorExpired) => {
                    self.report
                        .line("the server no longer has changes that old: comparing listings");
                }
                other => return Ok(other?),
            }
        }
        if cursor.is_none() {
            Ok(self.changes(None).await?)
        } else {
            self.listing(known).await
        }
    }

    async fn changes(
        &self,
        since: Option<&str>,
    ) -> Result<(Vec<RemoteFile>, Option<String>), ApiError> {
        let api = &self.folder.api;
        let mut files = Vec::new();
        let mut cursor = since.map(str::to_owned);
        loop {
            let page = api.changes(&self.folder.space, cursor.as_deref()).await?;
            files.extend(page.files);
            cursor = Some(page.next_cursor);
            if !page.has_more {
                return Ok((files, cursor));
            }
        }
    }

    /// Every live file, and a tombstone for each known file no longer listed. The head
    /// cursor is read first: what changes during the listing comes again after it.
    async fn listing(
        &self,
        known: &HashMap<FileId, RemoteFile>,
    ) -> Result<(Vec<RemoteFile>, Option<String>), Failure> {
        let api = &self.folder.api;
        let head = api
            .space(&self.folder.space)
            .await?
            .ok_or_else(|| Failure::NoAccess("you are no longer a member of this space".into()))?
            .head_cursor;
        let mut files = Vec::new();
        let mut after = None;
        loop {
            let page = api.files(&self.folder.space, after.as_deref()).await?;
            files.extend(page.files);
            match page.end_cursor {
                Some(end) => after = Some(end),
                None => break,
            }
        }
        let listed: HashSet<&str> = files.iter().map(|f| f.id.as_str()).collect();
        let mut gone: Vec<RemoteFile> = known
            .values()
            .filter(|r| !listed.contains(r.id.as_str()))
            .map(|r| RemoteFile {
                deleted: true,
                ..r.clone()
            })
            .collect();
        files.append(&mut gone);
        Ok((files, Some(head)))
    }
}

/// Whether the folder holds what the server said of the file (or never will, by rule).
fn applied(
    r: &RemoteFile,
    base: &HashMap<FileId, BaseFile>,
    ignored: &dyn Fn(&RelPath) -> bool,
) -> bool {
    match base.get(&r.id) {
        // A file this folder leaves alone stays as it was.
        Some(b) if ignored(&b.path) => true,
        // Moved under an ignored name: applied once the file is gone from the base.
        Some(b) => !r.deleted && !ignored(&r.path) && b.version >= r.version,
        None => r.deleted || ignored(&r.path),
    }
}
