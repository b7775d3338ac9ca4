//! `filesync-bench`: measures the embedded backend over real HTTP from a separate
//! process. It starts `filesync serve` as a child process, drives it with concurrent
//! clients, prints the figures and (with `--write`) records them in BENCHMARKS.md. With
//! `--aws-cost`, it counts the AWS backend's requests per operation instead (`cost`); with
//! `--uploads`, it times large multipart uploads beside `dd` (`uploads`).
//!
//! Run: `cargo run --release --bin filesync-bench -- --write BENCHMARKS.md`

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use filesync::auth::{Authenticator, load_or_create_secret};
use filesync::config::Settings;
use filesync::domain::{
    ChangeKind, Content, FileId, FileName, Metadata, Sha256, SpaceId, SpaceName, UserId,
};
use filesync::storage::{self, OpenContext, Publish, url_signing::UrlSigner};
use hdrhistogram::Histogram;
use serde_json::{Value, json};
use sha2::Digest;

mod cost;
mod live;
mod replication;
mod uploads;

#[derive(Parser)]
#[command(about = "Benchmark the embedded backend over HTTP, or count the AWS backend's requests")]
struct Args {
    /// Measured time per update run.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Unmeasured time before each update run.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    warmup: Duration,
    /// Concurrent clients of the update runs.
    #[arg(long, value_delimiter = ',', default_value = "16,64")]
    clients: Vec<usize>,
    /// Update runs per client count; the run with the median throughput is reported.
    #[arg(long, default_value_t = 3)]
    repeat: usize,
    /// Files in the space that is paged through.
    #[arg(long, default_value_t = 100_000)]
    changes: usize,
    /// Page size of the paging run.
    #[arg(long, default_value_t = 1000)]
    page: usize,
    /// The server binary (default: `filesync` next to this one).
    #[arg(long)]
    server: Option<PathBuf>,
    /// Run in this (new) data dir and keep it afterwards, for inspection.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Subscriber counts of the propagation runs.
    #[arg(long, value_delimiter = ',', default_value = "1,100,1000")]
    subscribers: Vec<usize>,
    /// Mutations per propagation run.
    #[arg(long, default_value_t = 1000)]
    mutations: usize,
    /// Idle subscription counts of the memory runs.
    #[arg(long, value_delimiter = ',', default_value = "1000,10000")]
    idle: Vec<usize>,
    /// Record the figures in this Markdown file (between the benchmark markers).
    #[arg(long)]
    write: Option<PathBuf>,
    /// Instead of the embedded runs: count the AWS backend's requests per operation, on
    /// the stack the `FILESYNC_STORAGE__*` variables name (see BENCHMARKS.md).
    #[arg(long)]
    aws_cost: bool,
    /// Instead of the other runs: large multipart uploads, beside `dd` (see BENCHMARKS.md).
    #[arg(long)]
    uploads: bool,
    /// Instead of the other runs: replication's lag under a steady write load, its
    /// backfill rate, and on the AWS backend its requests per version (see BENCHMARKS.md).
    #[arg(long)]
    replication: bool,
    /// Uploads per second of the replication lag runs (one run each).
    #[arg(long, value_delimiter = ',', default_value = "20,100")]
    replication_rate: Vec<u32>,
    /// Files of the replication backfill run.
    #[arg(long, default_value_t = 300)]
    replication_files: usize,
    /// Sizes of the upload runs (`100MB`, `1GiB`, ...).
    #[arg(long, value_delimiter = ',', value_parser = uploads::parse_size,
          default_value = "100MB,1000MB,1GiB")]
    upload_sizes: Vec<(String, u64)>,
}

const MARKS: (&str, &str) = (
    "<!-- embedded-benchmark:start -->",
    "<!-- embedded-benchmark:end -->",
);
const COST_MARKS: (&str, &str) = ("<!-- aws-cost:start -->", "<!-- aws-cost:end -->");
const UPLOAD_MARKS: (&str, &str) = ("<!-- uploads:start -->", "<!-- uploads:end -->");
const REPLICATION_MARKS: (&str, &str) = ("<!-- replication:start -->", "<!-- replication:end -->");
const REPLICATION_AWS_MARKS: (&str, &str) = (
    "<!-- replication-aws:start -->",
    "<!-- replication-aws:end -->",
);
const UPDATE: &str = "mutation($id: ID!, $b: Int!, $v: String!) { updateFile(id: $id, baseVersion: $b, input: { metadata: [{ key: \"n\", value: $v }] }) { version } }";
const CHANGES: &str = "query($s: ID!, $c: Cursor, $l: Int) { changes(spaceId: $s, since: $c, limit: $l) { files { id name version size sha256 deleted cursor } nextCursor hasMore } }";
const CHANGES_WITH_URLS: &str = "query($s: ID!, $c: Cursor, $l: Int) { changes(spaceId: $s, since: $c, limit: $l) { files { id name version size sha256 deleted cursor downloadUrl } nextCursor hasMore } }";

// glibc's allocator showed up as a large share of request CPU; mimalloc is leaner.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run(args))
}

struct Server {
    child: Child,
    base: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let dir = match &args.data_dir {
        Some(dir) => dir.clone(),
        None => std::env::temp_dir().join(format!("filesync-bench-{}", uuid::Uuid::new_v4())),
    };
    let (result, marks) = if args.aws_cost {
        (cost::cost_runs(&args, &dir).await, COST_MARKS)
    } else if args.uploads {
        (uploads::upload_runs(&args, &dir).await, UPLOAD_MARKS)
    } else if args.replication {
        let marks = if std::env::var("FILESYNC_STORAGE__BACKEND").as_deref() == Ok("aws") {
            REPLICATION_AWS_MARKS
        } else {
            REPLICATION_MARKS
        };
        (replication::replication_runs(&args, &dir).await, marks)
    } else {
        (bench(&args, &dir).await, MARKS)
    };
    if args.data_dir.is_none() {
        let _ = std::fs::remove_dir_all(&dir);
    }
    let report = result?;
    println!("{report}");
    if let Some(path) = &args.write {
        write_report(path, &report, marks)?;
        println!("written to {}", path.display());
    }
    Ok(())
}

/// Each measurement gets its own server and data dir: seeding 100,000 files just before
/// the update runs made them compete with that data's checkpoint and writeback.
async fn bench(args: &Args, dir: &Path) -> anyhow::Result<String> {
    let mut report = String::new();
    report.push_str(&format!(
        "Measured {} on {} cores; server: `filesync serve` (release build, embedded \
         backend, synchronous=FULL), load: `filesync-bench` in a separate process on the \
         same cores.\n\n",
        chrono::Utc::now().format("%Y-%m-%d"),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
    ));
    update_runs(args, &dir.join("updates"), &mut report).await?;
    paging_runs(args, &dir.join("paging"), &mut report).await?;
    live::latency_runs(args, &dir.join("live"), &mut report).await?;
    live::memory_runs(args, &dir.join("live"), &mut report).await?;
    Ok(report)
}

/// A client of a server started on `dir`, as user `bench`.
fn client_for(server: &Server, dir: &Path) -> anyhow::Result<Client> {
    Client::for_secret(server, &load_or_create_secret(dir)?)
}

async fn update_runs(args: &Args, dir: &Path, report: &mut String) -> anyhow::Result<()> {
    let server = start_server(args, dir)?;
    let client = client_for(&server, dir)?;
    report.push_str(&format!(
        "Update runs: {} s each after {} s of warm-up, {} per client count; the run with the \
         median throughput is shown.\n\n",
        args.duration.as_secs(),
        args.warmup.as_secs(),
        args.repeat.max(1)
    ));
    report.push_str("| run | clients | requests | throughput | p50 | p99 | max |\n");
    report.push_str("|---|---:|---:|---:|---:|---:|---:|\n");
    let max_clients = args.clients.iter().copied().max().unwrap_or(1);
    let files = create_files(&client, max_clients).await?;
    for &n in &args.clients {
        let mut runs = Vec::new();
        for i in 1..=args.repeat.max(1) {
            eprintln!("updates with {n} clients, run {i}/{}…", args.repeat.max(1));
            runs.push(update_run(&client, &files[..n], args.warmup, args.duration).await?);
        }
        let spread = runs
            .iter()
            .map(|r| format!("{:.0}", r.throughput))
            .collect::<Vec<_>>()
            .join(", ");
        runs.sort_by(|a, b| a.throughput.total_cmp(&b.throughput));
        let r = runs.swap_remove(runs.len() / 2);
        eprintln!("  throughput of the runs: {spread}/s");
        report.push_str(&format!(
            "| updateFile (durable) | {n} | {} | {:.0}/s | {:.2} ms | {:.2} ms | {:.2} ms |\n",
            r.requests,
            r.throughput,
            ms(r.latency.value_at_quantile(0.5)),
            ms(r.latency.value_at_quantile(0.99)),
            ms(r.latency.max()),
        ));
    }
    Ok(())
}

async fn paging_runs(args: &Args, dir: &Path, report: &mut String) -> anyhow::Result<()> {
    eprintln!("seeding {} files for the paging run…", args.changes);
    let space = seed(dir, args.changes).await?;
    let server = start_server(args, dir)?;
    let client = client_for(&server, dir)?;
    report.push_str(
        "\n| paging run | files | page size | pages | time (median of 3) |\n|---|---:|---:|---:|---:|\n",
    );
    for (label, query) in [
        (
            "`changes` (id, name, version, size, sha256, deleted, cursor)",
            CHANGES,
        ),
        ("same plus `downloadUrl`", CHANGES_WITH_URLS),
    ] {
        eprintln!("paging: {label}…");
        let mut times = Vec::new();
        let mut pages = 0;
        for _ in 0..3 {
            let (elapsed, n) =
                page_through(&client, &space, args.page, query, args.changes).await?;
            times.push(elapsed);
            pages = n;
        }
        times.sort();
        report.push_str(&format!(
            "| {label} | {} | {} | {pages} | {:.3} s |\n",
            args.changes,
            args.page,
            times[1].as_secs_f64()
        ));
    }
    Ok(())
}

/// Publishes `n` files into a new space through the storage layer (the paging run
/// measures reads; creating 100,000 files over HTTP would only slow the set-up).
async fn seed(dir: &Path, n: usize) -> anyhow::Result<String> {
    let mut settings = Settings::default();
    settings.storage.data_dir = dir.to_owned();
    let secret = load_or_create_secret(dir)?;
    let storage = storage::open(
        &settings.storage,
        OpenContext {
            public_url: "http://127.0.0.1".into(),
            url_signer: UrlSigner::derive(&secret),
        },
    )
    .await?;
    let owner = UserId::parse("bench")?;
    let space = SpaceId::new();
    storage
        .meta
        .create_space(space, SpaceName::parse("paging")?, owner.clone(), now())
        .await?;
    let bytes = b"benchmark content\n";
    let key = format!("{space}/{}", uuid::Uuid::new_v4());
    let body = futures::stream::iter([Ok(bytes::Bytes::from_static(bytes))]);
    storage
        .blobs
        .put(&key, Box::pin(body), bytes.len() as u64)
        .await?;
    let content = Content {
        blob_key: key,
        size: bytes.len() as u64,
        sha256: Sha256(sha2::Sha256::digest(bytes).into()),
        content_type: Some("text/plain".into()),
    };
    for chunk in (0..n).collect::<Vec<_>>().chunks(2000) {
        let publishes = chunk.iter().map(|i| {
            let name = FileName::parse(&format!("dir{:03}/file{i:06}.txt", i % 997)).expect("name");
            storage.meta.publish(Publish {
                space_id: space,
                file_id: FileId::new(),
                base_version: None,
                kind: ChangeKind::Created,
                name_key: name.key(false),
                name,
                content: content.clone(),
                metadata: Metadata::default(),
                deleted: false,
                actor: owner.clone(),
                at: now(),
                upload: None,
                copy_to: Vec::new(),
            })
        });
        for r in futures::future::join_all(publishes).await {
            r?;
        }
    }
    Ok(space.to_string())
}

fn now() -> i64 {
    filesync::domain::now_millis()
}

fn start_server(args: &Args, dir: &Path) -> anyhow::Result<Server> {
    start_server_with(args, dir, &[])
}

/// Starts the server with these environment variables set (`Some`) or removed (`None`).
fn start_server_with(
    args: &Args,
    dir: &Path,
    env: &[(&str, Option<&str>)],
) -> anyhow::Result<Server> {
    start_server_configured(args, dir, env, None)
}

/// [`start_server_with`], with a configuration file.
fn start_server_configured(
    args: &Args,
    dir: &Path,
    env: &[(&str, Option<&str>)],
    config: Option<&Path>,
) -> anyhow::Result<Server> {
    // Write back what earlier runs left dirty (seeding 100,000 files leaves a lot), so
    // that its writeback does not stall this run's fsyncs.
    let _ = Command::new("sync").status();
    let bin = match &args.server {
        Some(bin) => bin.clone(),
        None => std::env::current_exe()?
            .parent()
            .context("no exe dir")?
            .join("filesync"),
    };
    let mut command = Command::new(&bin);
    for (name, value) in env {
        match value {
            Some(value) => command.env(name, value),
            None => command.env_remove(name),
        };
    }
    command.arg("serve");
    if let Some(config) = config {
        command.arg("--config").arg(config);
    }
    let mut child = command
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir)
        .env("FILESYNC_LOG__FILTER", "warn")
        // The load is one user: thousands of mutations per second, and (in the memory
        // runs) 10,000 websockets.
        .env("FILESYNC_LIMITS__MUTATIONS_PER_SECOND", "0")
        .env("FILESYNC_LIMITS__WEBSOCKETS_PER_USER", "1000000")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("cannot start {}", bin.display()))?;
    let mut line = String::new();
    BufReader::new(child.stdout.take().context("no stdout")?).read_line(&mut line)?;
    let Some(base) = line.trim().strip_prefix("listening on ") else {
        bail!("unexpected server output: {line:?}");
    };
    Ok(Server {
        base: base.to_owned(),
        child,
    })
}

#[derive(Clone)]
struct Client {
    http: reqwest::Client,
    url: String,
    token: String,
}

impl Client {
    /// A client of `server`, as user `bench`, with a token signed with `secret`.
    fn for_secret(server: &Server, secret: &[u8]) -> anyhow::Result<Self> {
        let auth = Authenticator::new(secret, Duration::from_secs(30));
        Ok(Client {
            http: reqwest::Client::builder()
                .pool_max_idle_per_host(256)
                .build()?,
            url: format!("{}/graphql", server.base),
            token: auth.issue(&UserId::parse("bench")?, Duration::from_secs(3600))?,
        })
    }

    async fn gql(&self, query: &str, variables: Value) -> anyhow::Result<Value> {
        let body: Value = self
            .http
            .post(&self.url)
            .bearer_auth(&self.token)
            .json(&json!({ "query": query, "variables": variables }))
            .send()
            .await?
            .json()
            .await?;
        if let Some(errors) = body.get("errors") {
            bail!("GraphQL errors: {errors}");
        }
        Ok(body["data"].clone())
    }
}

/// One file per client, each at version 1.
async fn create_files(client: &Client, n: usize) -> anyhow::Result<Vec<String>> {
    let space = client
        .gql(
            "mutation { createSpace(name: \"updates\") { id } }",
            json!({}),
        )
        .await?["createSpace"]["id"]
        .as_str()
        .context("space id")?
        .to_owned();
    let mut ids = Vec::new();
    for i in 0..n {
        let bytes = format!("file {i}");
        let ticket = client
            .gql(
                "mutation($i: BeginUploadInput!) { beginUpload(input: $i) { url fileId headers { name value } } }",
                json!({ "i": { "spaceId": space, "name": format!("f{i}.txt"), "size": bytes.len(),
                        "sha256": hex::encode(sha2::Sha256::digest(bytes.as_bytes())) } }),
            )
            .await?;
        let t = &ticket["beginUpload"];
        let mut put = client
            .http
            .put(t["url"].as_str().context("url")?)
            .body(bytes);
        // The ticket's headers (the pinned Content-Type) go with the bytes.
        for h in t["headers"].as_array().context("headers")? {
            put = put.header(
                h["name"].as_str().context("header name")?,
                h["value"].as_str().context("header value")?,
            );
        }
        let res = put.send().await?;
        anyhow::ensure!(res.status().is_success(), "upload failed: {}", res.status());
        ids.push(t["fileId"].as_str().context("file id")?.to_owned());
    }
    Ok(ids)
}

struct RunResult {
    requests: u64,
    throughput: f64,
    latency: Histogram<u64>,
}

/// Each client updates its own file in a loop, always with the right `baseVersion`.
async fn update_run(
    client: &Client,
    files: &[String],
    warmup: Duration,
    duration: Duration,
) -> anyhow::Result<RunResult> {
    let start = Instant::now();
    let measure_from = start + warmup;
    let end = measure_from + duration;
    let tasks: Vec<_> = files
        .iter()
        .map(|id| {
            let (client, id) = (client.clone(), id.clone());
            tokio::spawn(async move {
                let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("bounds");
                let mut count = 0u64;
                let mut base = file_field(&client, &id, "version")
                    .await?
                    .as_i64()
                    .context("version")?;
                loop {
                    let sent = Instant::now();
                    if sent >= end {
                        break;
                    }
                    let data = client
                        .gql(
                            UPDATE,
                            json!({ "id": id, "b": base, "v": base.to_string() }),
                        )
                        .await?;
                    let took = sent.elapsed();
                    base = data["updateFile"]["version"].as_i64().context("version")?;
                    if sent >= measure_from {
                        hist.record(took.as_micros() as u64).ok();
                        count += 1;
                    }
                }
                anyhow::Ok((hist, count))
            })
        })
        .collect();
    let mut latency = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let mut requests = 0;
    for t in tasks {
        let (hist, count) = t.await??;
        latency.add(hist)?;
        requests += count;
    }
    Ok(RunResult {
        requests,
        throughput: requests as f64 / duration.as_secs_f64(),
        latency,
    })
}

/// One scalar field of file `id`, as JSON.
async fn file_field(client: &Client, id: &str, field: &str) -> anyhow::Result<Value> {
    let mut data = client
        .gql(
            &format!("query($id: ID!) {{ file(id: $id) {{ {field} }} }}"),
            json!({ "id": id }),
        )
        .await?;
    Ok(data["file"][field].take())
}

/// What a sync client keeps of a `changes` page (deserialised into types, as a real
/// client would, rather than into a generic JSON tree).
#[derive(serde::Deserialize)]
struct PageResponse {
    data: Option<PageData>,
    errors: Option<Value>,
}

#[derive(serde::Deserialize)]
struct PageData {
    changes: ChangePage,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct ChangePage {
    files: Vec<ChangedFile>,
    next_cursor: String,
    has_more: bool,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)] // read by the client, not by the benchmark
struct ChangedFile {
    id: String,
    name: String,
    version: u32,
    size: u64,
    sha256: String,
    deleted: bool,
    cursor: String,
    download_url: Option<String>,
}

/// Pages through the whole space; returns the time and the number of pages.
async fn page_through(
    client: &Client,
    space: &str,
    page: usize,
    query: &str,
    expected: usize,
) -> anyhow::Result<(Duration, usize)> {
    let started = Instant::now();
    let mut since: Option<String> = None;
    let (mut files, mut pages) = (0, 0);
    loop {
        let body = client
            .http
            .post(&client.url)
            .bearer_auth(&client.token)
            .json(&json!({ "query": query, "variables": { "s": space, "c": since, "l": page } }))
            .send()
            .await?
            .bytes()
            .await?;
        let response: PageResponse = serde_json::from_slice(&body)?;
        if let Some(errors) = response.errors {
            bail!("GraphQL errors: {errors}");
        }
        let changes = response.data.context("no data")?.changes;
        files += changes.files.len();
        pages += 1;
        since = Some(changes.next_cursor);
        if !changes.has_more {
            break;
        }
    }
    let elapsed = started.elapsed();
    anyhow::ensure!(
        files == expected,
        "paged {files} files, expected {expected}"
    );
    Ok((elapsed, pages))
}

fn ms(micros: u64) -> f64 {
    micros as f64 / 1000.0
}

/// Replaces the text between the markers (appending them if absent).
fn write_report(path: &Path, report: &str, (start, end): (&str, &str)) -> anyhow::Result<()> {
    let doc = std::fs::read_to_string(path).unwrap_or_default();
    let section = format!("{start}\n{report}{end}");
    let doc = match (doc.find(start), doc.find(end)) {
        (Some(a), Some(b)) if a < b => {
            format!("{}{section}{}", &doc[..a], &doc[b + end.len()..])
        }
        _ => format!("{doc}\n{section}\n"),
    };
    std::fs::write(path, doc)?;
    Ok(())
}
