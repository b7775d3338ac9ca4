//! The folder-sync client's benchmark: initial sync of many small files and of one
//! large file into an empty folder, beside `cp -r` of the same tree on the same disk in
//! the same run (the floor); the time from a change in one watched folder to the file
//! complete in another (p50, p99); the client's memory idle and while syncing.
//!
//! Run: `cargo bench -p filesync-sync --bench sync -- --write BENCHMARKS.md`
//! (a release build; `--smoke` runs it tiny, as the test command does in debug).

#[path = "../tests/sync/harness.rs"]
#[allow(dead_code)]
mod harness;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use clap::Parser;
use harness::{Client, server};
use rand::{Rng, SeedableRng};

#[derive(Parser)]
struct Args {
    /// How many small files (1 to 64 KiB each).
    #[arg(long, default_value_t = 10_000)]
    small: usize,
    /// The large file's size, in MiB.
    #[arg(long, default_value_t = 1024)]
    large_mib: usize,
    /// How many changes the latency run makes.
    #[arg(long, default_value_t = 100)]
    changes: usize,
    /// Transfers at a time (the client's `--parallel`).
    #[arg(long, default_value_t = 32)]
    parallel: usize,
    /// Tiny sizes, to check the harness runs (figures not worth recording).
    #[arg(long)]
    smoke: bool,
    /// Record the figures in this Markdown file (between the sync-client markers).
    #[arg(long)]
    write: Option<PathBuf>,
    /// Passed by `cargo bench`.
    #[arg(long, hide = true)]
    bench: bool,
}

const MARKS: (&str, &str) = ("<!-- sync-client:start -->", "<!-- sync-client:end -->");

#[tokio::main]
async fn main() {
    let mut args = Args::parse();
    if args.smoke {
        (args.small, args.large_mib, args.changes) = (50, 4, 5);
    }
    let mut report = String::new();
    let line = |report: &mut String, text: String| {
        println!("{text}");
        report.push_str(&text);
        report.push('\n');
    };
    // Scratch under target/ (a real disk, like the folders people sync; not a tmpfs).
    let work = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);

    // Many small files.
    let tree = work.path().join("small");
    let mut bytes = 0u64;
    for i in 0..args.small {
        let len = rng.random_range(1024..=64 * 1024);
        let mut data = vec![0u8; len];
        rng.fill(&mut data[..]);
        let path = tree.join(format!("d{:03}/f{i:05}.bin", i % 100));
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, data).unwrap();
        bytes += len as u64;
    }
    let parallel = args.parallel.to_string();
    let small = initial_sync(&tree, work.path(), "small", &parallel).await;
    line(
        &mut report,
        "| what | filesync-sync | `cp -r` (floor) | client peak RSS |".into(),
    );
    line(&mut report, "|---|---|---|---|".into());
    line(
        &mut report,
        format!(
            "| initial sync, {} small files ({:.0} MiB) | {:.2} s | {:.2} s | {:.1} MiB |",
            args.small,
            bytes as f64 / 1048576.0,
            small.sync.as_secs_f64(),
            small.copy.as_secs_f64(),
            small.peak_rss_kib as f64 / 1024.0
        ),
    );
    line(
        &mut report,
        format!(
            "| upload of the same files (the seeding folder's first sync) | {:.2} s | | |",
            small.upload.as_secs_f64()
        ),
    );

    // One large file.
    let tree = work.path().join("large");
    std::fs::create_dir_all(&tree).unwrap();
    {
        use std::io::Write;
        let mut file = std::fs::File::create(tree.join("large.bin")).unwrap();
        let mut chunk = vec![0u8; 1024 * 1024];
        for _ in 0..args.large_mib {
            rng.fill(&mut chunk[..]);
            file.write_all(&chunk).unwrap();
        }
    }
    let large = initial_sync(&tree, work.path(), "large", &parallel).await;
    line(
        &mut report,
        format!(
            "| initial sync, one {} MiB file | {:.2} s | {:.2} s | {:.1} MiB |",
            args.large_mib,
            large.sync.as_secs_f64(),
            large.copy.as_secs_f64(),
            large.peak_rss_kib as f64 / 1024.0
        ),
    );
    line(
        &mut report,
        format!(
            "| upload of the same file | {:.2} s | | |",
            large.upload.as_secs_f64()
        ),
    );

    // Change to complete, under watch.
    let (latencies, idle_kib) = watch_latency(args.changes).await;
    let pct = |p: f64| latencies[((latencies.len() as f64 - 1.0) * p).round() as usize];
    line(&mut report, String::new());
    line(
        &mut report,
        format!(
            "Under `watch`, a change in folder A complete in folder B, over {} changes: \
             p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms. The client's RSS while idle: {:.1} MiB.",
            latencies.len(),
            pct(0.5).as_secs_f64() * 1000.0,
            pct(0.99).as_secs_f64() * 1000.0,
            latencies.last().unwrap().as_secs_f64() * 1000.0,
            idle_kib as f64 / 1024.0
        ),
    );
    if let Some(path) = &args.write {
        // Relative to the workspace root, wherever cargo runs the bench from.
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../..")
            .join(path);
        write_report(&path, &report);
        println!("recorded in {}", path.display());
    }
}

struct Initial {
    upload: Duration,
    sync: Duration,
    copy: Duration,
    peak_rss_kib: u64,
}

/// Uploads `tree` through a first folder, then times a second, empty folder's first
/// `sync`, and `cp -r` of the tree.
async fn initial_sync(tree: &Path, work: &Path, name: &str, parallel: &str) -> Initial {
    let server = server().await;
    let space = server.create_space("alice").await;
    let a = Client::init(&server, "alice", &space).await;
    copy(tree, &a.dir);
    let started = Instant::now();
    let out = a
        .run(
            "sync",
            &["--quiet", "--settle", "0s", "--parallel", parallel],
        )
        .await;
    assert!(out.status.success(), "{}", harness::text(&out));
    let upload = started.elapsed();

    flush();
    let target = work.join(format!("{name}-cp"));
    let started = Instant::now();
    let status = std::process::Command::new("cp")
        .arg("-r")
        .arg(tree)
        .arg(&target)
        .status()
        .unwrap();
    assert!(status.success());
    let copy = started.elapsed();

    flush();
    let b = Client::init(&server, "alice", &space).await;
    let started = Instant::now();
    let mut child = b
        .command(&[
            "sync",
            b.dir.to_str().unwrap(),
            "--quiet",
            "--parallel",
            parallel,
        ])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id().unwrap();
    let mut peak = 0;
    let status = loop {
        peak = peak.max(rss_kib(pid, "VmHWM"));
        tokio::select! {
            status = child.wait() => break status.unwrap(),
            () = tokio::time::sleep(Duration::from_millis(20)) => {}
        }
    };
    let sync = started.elapsed();
    assert!(status.success());
    assert_eq!(
        harness::tree(tree),
        b.tree(),
        "the synced folder is the tree"
    );
    Initial {
        upload,
        sync,
        copy,
        peak_rss_kib: peak,
    }
}

/// Latencies (sorted) from a write in A to the bytes in B, both watching; and B's idle
/// RSS.
async fn watch_latency(changes: usize) -> (Vec<Duration>, u64) {
    let server = server().await;
    let space = server.create_space("alice").await;
    let a = Client::init(&server, "alice", &space).await;
    let b = Client::init(&server, "alice", &space).await;
    let spawn = |c: &Client| {
        c.command(&["watch", c.dir.to_str().unwrap(), "--quiet"])
            .stdout(Stdio::null())
            .spawn()
            .unwrap()
    };
    let (mut wa, mut wb) = (spawn(&a), spawn(&b));
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle = rss_kib(wb.id().unwrap(), "VmRSS");
    let mut latencies = Vec::new();
    for i in 0..changes {
        let content = format!("change {i}");
        let rel = format!("changes/{:03}.txt", i % 20);
        let started = Instant::now();
        a.write(&rel, &content);
        let deadline = started + Duration::from_secs(30);
        loop {
            if std::fs::read(b.path(&rel)).ok().as_deref() == Some(content.as_bytes()) {
                break;
            }
            assert!(Instant::now() < deadline, "change {i} never arrived");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        latencies.push(started.elapsed());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    wa.kill().await.unwrap();
    wb.kill().await.unwrap();
    latencies.sort();
    (latencies, idle)
}

fn copy(from: &Path, to: &Path) {
    let status = std::process::Command::new("cp")
        .arg("-rT")
        .arg(from)
        .arg(to)
        .status()
        .unwrap();
    assert!(status.success());
}

/// Writes dirty pages back, so one measurement does not pay for the last one's.
fn flush() {
    let _ = std::process::Command::new("sync").status();
}

fn rss_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// Replaces the text between the markers (appending them if absent).
fn write_report(path: &Path, report: &str) {
    let (start, end) = MARKS;
    let doc = std::fs::read_to_string(path).unwrap_or_default();
    let section = format!("{start}\n{report}{end}");
    let doc = match (doc.find(start), doc.find(end)) {
        (Some(a), Some(b)) if a < b => format!("{}{section}{}", &doc[..a], &doc[b + end.len()..]),
        _ => format!("{doc}\n{section}\n"),
    };
    std::fs::write(path, doc).unwrap();
}
