//! The commands, as the command line runs them.

use std::path::Path;
use std::time::Duration;

use filesync_sync::failure::Failure;
use filesync_sync::folder::{self, SpaceChoice, TokenSource};
use filesync_sync::pass::{Options, Remote, Report, Scope, Syncer};
use filesync_sync::plan::{Action, Plan};
use filesync_sync::report::Reporter;
use filesync_sync::watch::{WatchOptions, watch as watch_folder};

use crate::Result;

pub async fn init(dir: &Path, server: &str, space: &SpaceChoice, token: &TokenSource) -> Result {
    let folder = folder::init(dir, server, space, token).await?;
    let name = folder.state.get("space_name")?.unwrap_or_default();
    println!(
        "{} is now a synced folder of the space {name} (id {}), as {}.\n\
         Next: `filesync-sync sync {}` once, or `filesync-sync watch {}` to keep it in sync.\n\
         Others join with `filesync-sync init DIR --server URL --space {}` once an owner has \
         added them.",
        folder.root.display(),
        folder.space,
        folder.user,
        dir.display(),
        dir.display(),
        folder.space,
    );
    Ok(())
}

/// Passes until nothing is left to do (or only what cannot be done now).
pub async fn sync(dir: &Path, options: Options, quiet: bool, token: &TokenSource) -> Result {
    let folder = folder::open(dir, token)?;
    let report = Reporter::new(quiet);
    let dry_run = options.dry_run;
    let mut syncer = Syncer::new(folder, report.clone(), options).await?;
    let mut last = Report::default();
    let mut done = 0;
    for attempt in 0..5 {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_millis(300 << attempt.min(3))).await;
        }
        last = syncer
            .pass(Remote::Fetch, Scope::Full, &Default::default())
            .await?;
        done += last.done;
        if dry_run {
            print_plan(&last.plan);
            return Ok(());
        }
        if !last.retry {
            break;
        }
    }
    if !last.problems.is_empty() {
        return Err(Failure::Incomplete(last.problems.len()));
    }
    if last.retry {
        report.problem(
            "",
            "some files were still changing (being written, or changed on the server during \
             the pass); run sync again to finish",
        );
        return Err(Failure::Incomplete(last.plan.waiting.max(1)));
    }
    let files = syncer.folder.state.base()?.len();
    report.line(if done == 0 {
        format!("in sync: {files} files")
    } else {
        format!("in sync: {files} files ({done} changes made)")
    });
    Ok(())
}

pub async fn watch(
    dir: &Path,
    options: Options,
    quiet: bool,
    rescan: Duration,
    token: &TokenSource,
) -> Result {
    if options.dry_run {
        return Err(Failure::Usage(
            "watch changes files as they change; use `sync --dry-run` to see a plan".into(),
        ));
    }
    let folder = folder::open(dir, token)?;
    let syncer = Syncer::new(folder, Reporter::new(quiet), options).await?;
    let options = WatchOptions {
        rescan,
        ..WatchOptions::default()
    };
    watch_folder(syncer, options, stop_signal()).await
}

/// Ctrl-C or SIGTERM.
async fn stop_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).expect("a SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}

pub async fn status(dir: &Path, token: &TokenSource) -> Result {
    let folder = folder::open_shared(dir, token)?;
    let state = folder.state.clone();
    let get = |key: &str| state.get(key).map(Option::unwrap_or_default);
    println!("folder     {}", folder.root.display());
    println!("server     {}", get("server")?);
    println!("space      {} ({})", get("space_name")?, folder.space);
    println!("user       {}", folder.user);
    let last = get("last_pass_ns")?.parse::<i64>().ok();
    let last = last
        .and_then(|ns| chrono::DateTime::from_timestamp_nanos(ns).into())
        .map(|t: chrono::DateTime<chrono::Utc>| {
            t.with_timezone(&chrono::Local)
                .format("%Y-%m-%d %H:%M:%S")
                .to_string()
        });
    println!("last pass  {}", last.as_deref().unwrap_or("never"));
    println!("in sync    {} files", state.base()?.len());
    let pending = state.pending()?.len();
    if pending > 0 {
        println!("pending    {pending} server changes not yet applied here");
    }
    let conflicts = existing_conflicts(&folder)?;
    if !conflicts.is_empty() {
        println!(
            "conflicts  {} conflict copies (`filesync-sync conflicts {}`)",
            conflicts.len(),
            dir.display()
        );
    }
    let links = get("links_skipped")?.parse::<usize>().unwrap_or(0);
    if links > 0 {
        println!("skipped    {links} symbolic links (links are not synced)");
    }
    let problems = state.problems()?;
    if !problems.is_empty() {
        println!("problems (last pass):");
        for (path, why) in &problems {
            println!("  {path}: {why}");
        }
    }
    // What a pass would do now.
    let options = Options {
        dry_run: true,
        max_delete: filesync_sync::pass::MaxDelete::Percent(100),
        parallel: 1,
        settle: Duration::ZERO,
    };
    match Syncer::new(folder, Reporter::new(true), options).await {
        Ok(mut syncer) => {
            match syncer
                .pass(Remote::Fetch, Scope::Full, &Default::default())
                .await
            {
                Ok(report) => print_summary(&report.plan),
                Err(e) => println!("waiting    unknown ({e})"),
            }
        }
        Err(e) => println!("waiting    unknown ({e})"),
    }
    Ok(())
}

pub fn conflicts(dir: &Path) -> Result {
    let folder = folder::open_shared(dir, &TokenSource::default())?;
    let conflicts = existing_conflicts(&folder)?;
    if conflicts.is_empty() {
        println!("no conflict copies");
    }
    for (copy, original, at) in conflicts {
        let when = chrono::DateTime::from_timestamp_nanos(at)
            .with_timezone(&chrono::Local)
            .format("%Y-%m-%d %H:%M");
        println!("{copy}\n    your version of {original}, set aside {when}");
    }
    Ok(())
}

/// Conflict copies still in the folder; those gone (merged, deleted) are forgotten.
fn existing_conflicts(folder: &folder::Folder) -> Result<Vec<(String, String, i64)>> {
    let mut kept = Vec::new();
    for (copy, original, at) in folder.state.conflicts()? {
        let exists = filesync_sync::paths::RelPath::parse(&copy)
            .map(|p| p.to_local(&folder.root).exists())
            .unwrap_or(false);
        if exists {
            kept.push((copy, original, at));
        } else {
            folder.state.drop_conflict(&copy)?;
        }
    }
    Ok(kept)
}

fn print_plan(plan: &Plan) {
    for action in plan.actions() {
        let line = match action {
            Action::DeleteLocal { path, .. } => format!("delete here        {path}"),
            Action::SetAside { from, to, .. } => {
                format!("conflict           {from}: yours kept as {to}")
            }
            Action::MoveLocal { from, to, .. } => format!("move here          {from} -> {to}"),
            Action::Download { remote, to, .. } => {
                format!("download           {to} (version {})", remote.version)
            }
            Action::Upload { id: None, path, .. } => format!("upload new         {path}"),
            Action::Upload { path, .. } => format!("upload             {path}"),
            Action::RenameRemote { to, .. } => format!("rename on server   -> {to}"),
            Action::DeleteRemote { path, .. } => format!("delete on server   {path}"),
            Action::Record { .. } | Action::Forget { .. } => continue,
        };
        println!("{line}");
    }
    print_summary(plan);
}

fn print_summary(plan: &Plan) {
    let count = |f: fn(&Action) -> bool| plan.actions().filter(|a| f(a)).count();
    let downloads = count(|a| matches!(a, Action::Download { .. }));
    let uploads = count(|a| matches!(a, Action::Upload { .. }));
    let moves = count(|a| matches!(a, Action::MoveLocal { .. } | Action::RenameRemote { .. }));
    let conflicts = count(|a| matches!(a, Action::SetAside { .. }));
    if downloads + uploads + moves + conflicts + plan.deletes == 0 {
        println!("waiting    nothing: in sync");
        return;
    }
    println!(
        "waiting    {downloads} to download, {uploads} to upload, {moves} to move or rename, \
         {} to delete, {conflicts} conflicts",
        plan.deletes
    );
    if plan.waiting > 0 {
        println!("           {} files are being written", plan.waiting);
    }
}
