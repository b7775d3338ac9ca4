//! The executor: carries a plan out and records each step in the state as soon as it
//! has landed, so that a crash between two steps leaves a state the next pass plans from
//! correctly. It never deletes, moves, replaces or uploads a local file that is not as
//! the plan saw it (such a file is left for the next pass, `retry`), and never follows a
//! symbolic link out of the folder. Renames on the server carry the `baseVersion` the
//! plan saw, so a file that moved on there is planned again.

mod local;
mod transfers;

pub use transfers::{part_name, prune_parts};

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::StreamExt;

use crate::api::{Api, ApiError};
use crate::paths::RelPath;
use crate::plan::{Action, Plan};
use crate::report::Reporter;
use crate::state::{State, StateError};
use crate::tree::{BaseFile, Fingerprint, RemoteFile, now_ns};
pub use local::{describe as describe_io, prune_empty_parents, rename_new, through_link};

/// What carrying a plan out came to.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Actions carried out.
    pub done: usize,
    /// Per path, why it was not synced.
    pub problems: Vec<(String, String)>,
    /// Some files changed under the plan, or the server moved on: another pass soon
    /// will finish the job.
    pub retry: bool,
    /// Why the pass stopped (the server, the token or the membership), if it did.
    pub fatal: Option<ApiError>,
}

/// Why one step failed.
#[derive(Debug)]
enum StepError {
    /// The file is not as the plan saw it, or the server moved on: plan again.
    Changed,
    /// This file cannot be synced now; the words say why.
    Problem(String),
    /// As `Problem`, but another pass soon may well succeed (a name another file is
    /// leaving in this same pass).
    Retry(String),
    /// The whole pass must stop.
    Fatal(ApiError),
    State(StateError),
}

impl From<StateError> for StepError {
    fn from(e: StateError) -> Self {
        // A full disk is this step's problem, as for the file it writes: the pass goes
        // on (a partial download that failed for lack of room is removed, so what it
        // held frees up), and a step done but not recorded plans as nothing to do.
        if e.is_disk_full() {
            return StepError::Problem(
                "the disk is full (the state in .filesync/ cannot be written); it is tried \
                 again on the next pass"
                    .into(),
            );
        }
        StepError::State(e)
    }
}

impl From<std::io::Error> for StepError {
    fn from(e: std::io::Error) -> Self {
        StepError::Problem(local::describe(&e))
    }
}

pub struct Executor<'a> {
    pub root: &'a Path,
    pub state: &'a State,
    pub api: &'a Api,
    pub space: &'a str,
    pub report: &'a Reporter,
    /// Transfers at a time.
    pub parallel: usize,
    /// A file modified more recently than this is not uploaded yet.
    pub settle: Duration,
}

struct Shared {
    outcome: Mutex<Outcome>,
    stop: AtomicBool,
    /// Whether the caller is still a member, once asked.
    member: tokio::sync::OnceCell<Result<bool, ApiError>>,
}

impl Executor<'_> {
    pub async fn run(&self, plan: &Plan) -> Outcome {
        let shared = Shared {
            outcome: Mutex::new(Outcome::default()),
            stop: AtomicBool::new(false),
            member: tokio::sync::OnceCell::new(),
        };
        for action in &plan.local {
            if shared.stop.load(Ordering::Relaxed) {
                break;
            }
            self.step(action, &shared).await;
        }
        // Renames and deletions on the server first: they free names that new files in
        // the same plan may take.
        let (frees, rest): (Vec<_>, Vec<_>) = plan.files.iter().partition(|steps| {
            matches!(
                steps.first(),
                Some(Action::RenameRemote { .. } | Action::DeleteRemote { .. })
            )
        });
        for group in [frees, rest] {
            futures::stream::iter(group)
                .for_each_concurrent(self.parallel.max(1), |steps| {
                    let shared = &shared;
                    async move {
                        for action in steps {
                            if shared.stop.load(Ordering::Relaxed)
                                || !self.step(action, shared).await
                            {
                                break;
                            }
                        }
                    }
                })
                .await;
        }
        shared.outcome.into_inner().expect("outcome")
    }

    /// One action; `false` when the file's later steps must wait.
    async fn step(&self, action: &Action, shared: &Shared) -> bool {
        let result = match self.act(action).await {
            Err(
                StepError::Fatal(ApiError::Forbidden(why))
                | StepError::Fatal(ApiError::NotFound(why)),
            ) => {
                // A file may be off limits while the space is not: ask once.
                match self.still_member(shared).await {
                    Ok(true) => Err(StepError::Problem(format!("the server refused: {why}"))),
                    Ok(false) => Err(StepError::Fatal(ApiError::Forbidden(
                        "you are no longer a member of this space".into(),
                    ))),
                    Err(e) => Err(StepError::Fatal(e)),
                }
            }
            other => other,
        };
        let mut outcome = shared.outcome.lock().expect("outcome");
        match result {
            Ok(()) => {
                outcome.done += 1;
                true
            }
            Err(StepError::Changed) => {
                outcome.retry = true;
                false
            }
            Err(StepError::Problem(why)) => {
                self.report.problem(action.path().as_str(), &why);
                outcome.problems.push((action.path().to_string(), why));
                false
            }
            Err(StepError::Retry(why)) => {
                self.report.problem(action.path().as_str(), &why);
                outcome.retry = true;
                outcome.problems.push((action.path().to_string(), why));
                false
            }
            Err(StepError::Fatal(e)) => {
                shared.stop.store(true, Ordering::Relaxed);
                outcome.fatal.get_or_insert(e);
                false
            }
            Err(StepError::State(e)) => {
                shared.stop.store(true, Ordering::Relaxed);
                outcome
                    .fatal
                    .get_or_insert(ApiError::Protocol(e.to_string()));
                false
            }
        }
    }

    async fn still_member(&self, shared: &Shared) -> Result<bool, ApiError> {
        let answer = shared
            .member
            .get_or_init(|| async { self.api.space(self.space).await.map(|s| s.is_some()) })
            .await;
        match answer {
            Ok(member) => Ok(*member),
            Err(e) => Err(ApiError::Unreachable(e.to_string())),
        }
    }

    fn local(&self, path: &RelPath) -> PathBuf {
        path.to_local(self.root)
    }

    /// Refuses paths that lead through a symbolic link (out of the folder).
    fn guard(&self, paths: &[&RelPath]) -> Result<(), StepError> {
        match paths.iter().find(|p| through_link(self.root, p)) {
            Some(p) => Err(StepError::Problem(format!(
                "a symbolic link or a file is in the way of {p}: it is left alone"
            ))),
            None => Ok(()),
        }
    }

    async fn act(&self, action: &Action) -> Result<(), StepError> {
        match action {
            Action::SetAside { from, to, .. } | Action::MoveLocal { from, to, .. } => {
                self.guard(&[from, to])?
            }
            Action::DeleteLocal { path, .. }
            | Action::Download { to: path, .. }
            | Action::Upload { path, .. }
            | Action::DeleteRemote { path, .. } => self.guard(&[path])?,
            _ => {}
        }
        match action {
            Action::DeleteLocal { id, path, expect } => {
                let local = self.local(path);
                match local::check(&local, expect)? {
                    local::Found::Expected => std::fs::remove_file(&local)?,
                    local::Found::Missing => {}
                    local::Found::Other => return Err(StepError::Changed),
                }
                prune_empty_parents(self.root, path);
                self.state.forget(id)?;
                self.report
                    .line(format_args!("deleted {path} (deleted on the server)"));
            }
            Action::SetAside { from, to, expect } => {
                let source = self.local(from);
                if !matches!(local::check(&source, expect)?, local::Found::Expected) {
                    return Err(StepError::Changed);
                }
                local::rename_new(&source, &self.local(to)).map_err(changed_if_taken)?;
                self.state.add_conflict(to, from, now_ns())?;
                self.report.line(format_args!(
                    "conflict: your version of {from} is kept as {to}"
                ));
            }
            Action::MoveLocal {
                id,
                from,
                to,
                expect,
                record,
            } => {
                let source = self.local(from);
                if !matches!(local::check(&source, expect)?, local::Found::Expected) {
                    return Err(StepError::Changed);
                }
                let target = self.local(to);
                local::rename_new(&source, &target).map_err(changed_if_taken)?;
                prune_empty_parents(self.root, from);
                let fp = local::fingerprint(&target)?;
                match record {
                    Some(r) => self.record(r, to, fp)?,
                    None => {
                        if let Some(mut b) = self.state.base_file(id)? {
                            // The content is still to follow: a fingerprint that matches
                            // nothing makes the next scan read the file.
                            b.path = to.clone();
                            b.local = Fingerprint::default();
                            self.state.put_base(&b)?;
                        }
                    }
                }
                self.report.line(format_args!("moved {from} -> {to}"));
            }
            Action::Download {
                remote,
                to,
                replace,
            } => self.download(remote, to, *replace).await?,
            Action::Upload {
                id,
                base_version,
                path,
                sha256,
                expect,
            } => {
                self.upload(id.as_deref(), *base_version, path, sha256, expect)
                    .await?
            }
            Action::RenameRemote {
                id,
                base_version,
                to,
                local,
            } => {
                let fp = match local {
                    Some(fp) => *fp,
                    None => self
                        .state
                        .base_file(id)?
                        .map(|b| b.local)
                        .unwrap_or_default(),
                };
                let file = self
                    .api
                    .rename(id, *base_version, to)
                    .await
                    .map_err(remote_error)?;
                self.record(&file, to, fp)?;
                self.report
                    .line(format_args!("renamed on the server: {to}"));
            }
            Action::DeleteRemote {
                id,
                base_version,
                path,
            } => {
                // Back since the scan? Then it is not deleted. Only a file known to be
                // missing is deleted on the server, never one that cannot be looked at.
                match std::fs::symlink_metadata(self.local(path)) {
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Ok(_) => return Err(StepError::Changed),
                    Err(e) => return Err(e.into()),
                }
                match self.api.delete(id, *base_version).await {
                    Ok(_) | Err(ApiError::NotFound(_)) => self.state.forget(id)?,
                    Err(ApiError::Forbidden(why))
                        if self.api.space(self.space).await.is_ok_and(|s| s.is_some()) =>
                    {
                        // Not ours to delete: it comes back on the next pass.
                        self.state.forget_to_pending(id)?;
                        return Err(StepError::Problem(format!(
                            "not deleted on the server ({why}); only its creator or an \
                             owner may delete it, so it is restored here"
                        )));
                    }
                    Err(e) => return Err(remote_error(e)),
                }
                self.report
                    .line(format_args!("deleted on the server: {path}"));
            }
            Action::Record { remote, local } => self.record(remote, &remote.path, *local)?,
            Action::Forget { id } => self.state.forget(id)?,
        }
        Ok(())
    }

    /// Records that the file at `path` (looking like `fp`) holds `remote`'s version.
    fn record(
        &self,
        remote: &RemoteFile,
        path: &RelPath,
        fp: Fingerprint,
    ) -> Result<(), StateError> {
        self.state.put_base(&BaseFile {
            id: remote.id.clone(),
            path: path.clone(),
            version: remote.version,
            sha256: remote.sha256.clone(),
            size: remote.size,
            local: fp,
            recorded_ns: now_ns(),
        })
    }
}

/// A name taken at the last moment is a change under the plan.
fn changed_if_taken(e: std::io::Error) -> StepError {
    if e.kind() == std::io::ErrorKind::AlreadyExists {
        StepError::Changed
    } else {
        StepError::from(e)
    }
}

/// What a server error means for one step.
fn remote_error(e: ApiError) -> StepError {
    match e {
        ApiError::Conflict { .. } => StepError::Changed,
        ApiError::Unauthenticated(_)
        | ApiError::Unreachable(_)
        | ApiError::Forbidden(_)
        | ApiError::NotFound(_)
        | ApiError::CursorExpired => StepError::Fatal(e),
        ApiError::Refused { ref code, .. } if code == "STORAGE_FULL" || code == "INTERNAL" => {
            StepError::Problem(format!("the server failed ({e}); it is tried again later"))
        }
        // Deleted there since the plan was made: plan again.
        ApiError::Refused {
            ref code,
            ref message,
        } if code == "BAD_INPUT" && message.contains("is deleted") => StepError::Changed,
        ApiError::Refused { ref code, .. } if code == "UPLOAD_EXPIRED" => StepError::Changed,
        e => StepError::Problem(format!("the server refused it: {e}")),
    }
}
