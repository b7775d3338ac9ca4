//! Downloads (into `.filesync/tmp/`, verified, renamed into place) and uploads (the
//! three-phase ticket, with the file checked before and after its bytes are sent).

use std::path::PathBuf;
use std::sync::Arc;

use super::{Executor, StepError, local, remote_error};
use crate::api::transfer::{self, TransferError};
use crate::api::{ApiError, Ticket};
use crate::paths::RelPath;
use crate::scan::hash::recently_changed;
use crate::scan::rules::STATE_DIR;
use crate::state::SavedUpload;
use crate::tree::{BaseFile, EMPTY_SHA256, Fingerprint, RemoteFile, now_ns};

/// Where partial downloads live (inside the folder, so the final rename stays on one
/// file system; under `.filesync/`, so nothing syncs them).
pub fn tmp_dir(root: &std::path::Path) -> PathBuf {
    root.join(STATE_DIR).join("tmp")
}

/// The partial download of a version (named by version: an interrupted download of the
/// same version resumes).
pub fn part_name(id: &str, version: i64) -> String {
    format!("{id}.v{version}.part")
}

/// Removes partial downloads that no pending change will resume.
pub fn prune_parts(root: &std::path::Path, keep: &std::collections::HashSet<String>) {
    let Ok(entries) = std::fs::read_dir(tmp_dir(root)) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.ends_with(".part") && !keep.contains(&name) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// Runs blocking file system and state work without holding up the other transfers
/// (a runtime worker would otherwise wait on each fsync).
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(f),
        _ => f(),
    }
}

impl Executor<'_> {
    pub(super) async fn download(
        &self,
        remote: &RemoteFile,
        to: &RelPath,
        replace: Option<Fingerprint>,
    ) -> Result<(), StepError> {
        let tmp = tmp_dir(self.root);
        std::fs::create_dir_all(&tmp)?;
        let part = tmp.join(part_name(&remote.id, remote.version));
        let sha256 = if remote.size == 0 {
            std::fs::File::create(&part)?.sync_all()?;
            EMPTY_SHA256.to_owned()
        } else {
            self.fetch(remote, &part).await?
        };
        if sha256 != remote.sha256 || std::fs::metadata(&part)?.len() != remote.size {
            let _ = std::fs::remove_file(&part);
            return Err(StepError::Problem(
                "the downloaded bytes do not match the server's checksum; it is tried again \
                 on the next pass"
                    .into(),
            ));
        }
        let target = to.to_local(self.root);
        blocking(|| {
            let downloaded = local::fingerprint(&part)?;
            match replace {
                None => local::rename_new(&part, &target).map_err(super::changed_if_taken)?,
                Some(expect) => match local::check(&target, &expect)? {
                    local::Found::Expected | local::Found::Missing => {
                        local::make_parent(&target)?;
                        std::fs::rename(&part, &target)?;
                    }
                    local::Found::Other => return Err(StepError::Changed),
                },
            }
            // The rename must be durable before the state says the file is there: a
            // lost rename would otherwise read as a deletion.
            if let Some(dir) = target.parent() {
                local::sync_dir(dir)?;
            }
            // Written to since the rename? Then record what was downloaded, and the
            // next scan reads the file again.
            let placed = local::fingerprint(&target)?;
            let fp = if placed.same_file(&downloaded) {
                placed
            } else {
                downloaded
            };
            self.record(remote, to, fp)?;
            Ok(())
        })?;
        self.report.line(format_args!("downloaded {to}"));
        Ok(())
    }

    /// The bytes of `remote` into `part`; a refused URL (expired) is replaced once.
    async fn fetch(
        &self,
        remote: &RemoteFile,
        part: &std::path::Path,
    ) -> Result<String, StepError> {
        let progress = self
            .report
            .transfer("down", remote.path.as_str(), remote.size);
        let on_bytes = |n| progress.set(n);
        let mut url = match &remote.download_url {
            Some(url) => url.clone(),
            None => self.fresh_url(remote).await?,
        };
        for attempt in 0..2 {
            match transfer::download(self.api, &url, part, remote.size, &on_bytes).await {
                Ok(sha) => return Ok(sha),
                Err(TransferError::Refused { .. }) if attempt == 0 => {
                    url = self.fresh_url(remote).await?;
                }
                Err(TransferError::Local(e)) => {
                    // Out of space: the partial file cannot grow, and holds space the
                    // state needs to record what happened.
                    if matches!(e.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT)) {
                        let _ = std::fs::remove_file(part);
                    }
                    return Err(StepError::from(e));
                }
                Err(e) => return Err(transfer_error(e)),
            }
        }
        unreachable!("the loop returns")
    }

    async fn fresh_url(&self, remote: &RemoteFile) -> Result<String, StepError> {
        match self.api.download_url(&remote.id, remote.version).await {
            Ok(url) => Ok(url),
            // The version is gone (the file was deleted and purged): plan again; or the
            // caller is no longer a member.
            Err(ApiError::NotFound(why)) => match self.api.space(self.space).await {
                Ok(Some(_)) => Err(StepError::Changed),
                Ok(None) => Err(StepError::Fatal(ApiError::Forbidden(why))),
                Err(e) => Err(remote_error(e)),
            },
            Err(e) => Err(remote_error(e)),
        }
    }

    pub(super) async fn upload(
        &self,
        id: Option<&str>,
        base_version: Option<i64>,
        path: &RelPath,
        sha256: &str,
        expect: &Fingerprint,
    ) -> Result<(), StepError> {
        let local = path.to_local(self.root);
        let before = match std::fs::symlink_metadata(&local) {
            Ok(meta) if meta.is_file() => Fingerprint::of(&meta),
            Ok(_) => return Err(StepError::Changed),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(StepError::Changed),
            Err(e) => return Err(e.into()),
        };
        if !before.same_file(expect) || recently_changed(&before, self.settle) {
            return Err(StepError::Changed);
        }
        let ticket = match self.resumable_upload(id, base_version, path, sha256, before.size)? {
            Some(ticket) => ticket,
            None => {
                let ticket = self
                    .begin(id, base_version, path, sha256, before.size)
                    .await?;
                if ticket.is_multipart() {
                    // Kept until committed or given up, so that a crash or an interruption
                    // costs only the parts not yet sent.
                    let saved = SavedUpload {
                        sha256: sha256.to_owned(),
                        size: before.size,
                        file_id: id.map(str::to_owned),
                        base_version,
                        ticket: serde_json::to_string(&ticket)
                            .map_err(|e| StepError::Problem(e.to_string()))?,
                    };
                    blocking(|| self.state.save_upload(path, &saved))?;
                }
                ticket
            }
        };
        let progress = Arc::new(self.report.transfer("up", path.as_str(), before.size));
        let on_bytes = {
            let progress = progress.clone();
            Arc::new(move |n| progress.set(n))
        };
        let sent = if ticket.is_multipart() {
            match transfer::upload_multipart(self.api, &ticket, &local, before.size, on_bytes).await
            {
                Ok(0) => Ok(()),
                Ok(had) => {
                    self.report.line(format_args!(
                        "resumed {path}: {had} of {} parts were already on the server",
                        ticket.part_count.unwrap_or(0)
                    ));
                    Ok(())
                }
                Err(e) => Err(e),
            }
        } else {
            transfer::upload(self.api, &ticket, &local, before.size, on_bytes).await
        };
        drop(progress);
        // Changed while its bytes were read? If they still matched the hash (the server
        // checks), what was published is the file as it was hashed: recorded below with
        // the fingerprint it had then, so the next scan sees the later change as an edit.
        let changed_meanwhile = local::fingerprint(&local).ok() != Some(before);
        if let Err(e) = sent {
            let resumable = ticket.is_multipart()
                && !changed_meanwhile
                && matches!(
                    e,
                    TransferError::Interrupted(_) | TransferError::Api(ApiError::Unreachable(_))
                );
            // An interrupted multipart upload is kept for the next pass, which sends
            // only the parts still missing.
            if !resumable {
                self.give_up(path, &ticket).await;
            }
            return Err(if changed_meanwhile {
                StepError::Changed
            } else {
                transfer_error(e)
            });
        }
        let file = match self.api.commit_upload(&ticket).await {
            Ok(file) => file,
            Err(e @ ApiError::Unreachable(_)) if ticket.is_multipart() => {
                return Err(remote_error(e));
            }
            Err(e) => {
                self.give_up(path, &ticket).await;
                return Err(match e {
                    ApiError::Refused { code, .. }
                        if code == "CHECKSUM_MISMATCH" || code == "UPLOAD_INCOMPLETE" =>
                    {
                        StepError::Changed
                    }
                    e => remote_error(e),
                });
            }
        };
        if ticket.is_multipart() {
            blocking(|| self.state.drop_upload(path))?;
        }
        // The base records where the file is here (the server may spell the name
        // another way) and what was hashed.
        blocking(|| {
            self.state.put_base(&BaseFile {
                id: file.id.clone(),
                path: path.clone(),
                version: file.version,
                sha256: file.sha256.clone(),
                size: file.size,
                local: before,
                recorded_ns: now_ns(),
            })
        })?;
        let verb = if id.is_some() {
            "uploaded"
        } else {
            "uploaded new"
        };
        self.report.line(format_args!("{verb} {path}"));
        if changed_meanwhile {
            return Err(StepError::Changed);
        }
        Ok(())
    }
}

impl Executor<'_> {
    /// `beginUpload`, with its refusals as steps.
    async fn begin(
        &self,
        id: Option<&str>,
        base_version: Option<i64>,
        path: &RelPath,
        sha256: &str,
        size: u64,
    ) -> Result<Ticket, StepError> {
        match self
            .api
            .begin_upload(self.space, id, path, size, sha256, base_version)
            .await
        {
            Ok(ticket) => Ok(ticket),
            // A new file whose name the server gives another: the next pass learns of
            // that file and keeps this one as a conflict copy (or the names are such
            // that only a person can settle it).
            Err(ApiError::Conflict { message, .. }) if id.is_none() => {
                Err(StepError::Retry(format!(
                    "not uploaded: the server has another file or folder under this name \
                 ({message})"
                )))
            }
            Err(e) => Err(remote_error(e)),
        }
    }

    /// The multipart upload an earlier run left for this very upload (same content,
    /// file and base), if any; one left for anything else is given up.
    fn resumable_upload(
        &self,
        id: Option<&str>,
        base_version: Option<i64>,
        path: &RelPath,
        sha256: &str,
        size: u64,
    ) -> Result<Option<Ticket>, StepError> {
        let Some(saved) = blocking(|| self.state.saved_upload(path))? else {
            return Ok(None);
        };
        let ticket: Option<Ticket> = serde_json::from_str(&saved.ticket).ok();
        let same = saved.sha256 == sha256
            && saved.size == size
            && saved.file_id.as_deref() == id
            && saved.base_version == base_version;
        match ticket {
            Some(ticket) if same => Ok(Some(ticket)),
            stale => {
                blocking(|| self.state.drop_upload(path))?;
                if let Some(ticket) = stale {
                    let api = self.api.clone();
                    // Best effort: the server's sweeper removes what a cancel misses.
                    tokio::spawn(async move { api.cancel_upload(&ticket).await });
                }
                Ok(None)
            }
        }
    }

    /// Cancels an upload and forgets it.
    async fn give_up(&self, path: &RelPath, ticket: &Ticket) {
        self.api.cancel_upload(ticket).await;
        if ticket.is_multipart() {
            let _ = blocking(|| self.state.drop_upload(path));
        }
    }
}

fn transfer_error(e: TransferError) -> StepError {
    match e {
        // The upload is gone or over (expired, swept, cancelled), or a part's bytes
        // changed since they were hashed: plan again.
        TransferError::Api(ApiError::NotFound(_)) => StepError::Changed,
        TransferError::Api(ApiError::Refused { code, .. })
            if matches!(code.as_str(), "UPLOAD_EXPIRED" | "CHECKSUM_MISMATCH") =>
        {
            StepError::Changed
        }
        TransferError::Api(e) => remote_error(e),
        TransferError::Interrupted(why) => StepError::Fatal(ApiError::Unreachable(why)),
        TransferError::Local(e) => StepError::from(e),
        TransferError::Refused {
            status: 507,
            message,
            ..
        } => StepError::Problem(format!(
            "the server's storage is full ({message}); it is tried again later"
        )),
        // The storage is busy or failing (S3's 503 SlowDown): this file later, the
        // rest now.
        TransferError::Refused {
            status: 500..=599,
            message,
            ..
        } => StepError::Retry(format!("the storage failed ({message}); tried again")),
        // The bytes did not match, the ticket expired, or the commit inside the PUT
        // found the file moved on: plan again.
        TransferError::Refused { code, .. }
            if matches!(
                code.as_deref(),
                Some(
                    "CHECKSUM_MISMATCH"
                        | "BadDigest"
                        | "CONFLICT"
                        | "UPLOAD_EXPIRED"
                        | "UPLOAD_INCOMPLETE"
                )
            ) =>
        {
            StepError::Changed
        }
        e => StepError::Problem(e.to_string()),
    }
}
