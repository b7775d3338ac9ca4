//! `--uploads`: large multipart uploads into the embedded backend from this (separate)
//! process, parts four at a time, against `dd` writing as much to the same disk in the
//! same run; and the server's resident memory while the bytes go through it. Also the
//! multipart upload that `--aws-cost` counts.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use futures::StreamExt;
use serde_json::{Value, json};
use sha2::Digest;

use super::live::rss_bytes;
use super::{Args, Client, start_server};

/// Runs of each measurement (and of `dd`); the median is reported.
const RUNS: usize = 3;
/// Parts in flight at once.
pub const PARALLEL_PARTS: usize = 4;
/// Part URLs asked for at a time (the server's default limit).
const URL_BATCH: usize = 100;
const MIB: f64 = 1024.0 * 1024.0;

/// Content to upload with its digests, computed before anything is timed.
pub struct Prepared {
    pub content: Bytes,
    sha256: String,
    part_size: u64,
    part_digests: Vec<String>,
}

impl Prepared {
    /// `size` bytes of incompressible content, cut as the server will cut them.
    pub fn new(size: u64) -> anyhow::Result<Self> {
        let (part_size, _) = filesync::domain::Multipart::plan(size)?;
        let mut content = vec![0u8; usize::try_from(size)?];
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        for chunk in content.chunks_mut(8) {
            // xorshift64*: fast, and nothing a disk or a link could compress.
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            let word = state.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes();
            chunk.copy_from_slice(&word[..chunk.len()]);
        }
        let part_digests = content
            .chunks(usize::try_from(part_size)?)
            .map(|part| hex::encode(sha2::Sha256::digest(part)))
            .collect();
        Ok(Self {
            sha256: hex::encode(sha2::Sha256::digest(&content)),
            content: Bytes::from(content),
            part_size,
            part_digests,
        })
    }

    fn part(&self, n: usize) -> Bytes {
        let start = (n - 1) * self.part_size as usize;
        let end = (start + self.part_size as usize).min(self.content.len());
        self.content.slice(start..end)
    }
}

/// A whole multipart upload, as a client does it: begin, part URLs in batches, the parts
/// `PARALLEL_PARTS` at a time, commit (again while the server verifies). The file's id,
/// and how long the commit took.
pub async fn upload(
    client: &Client,
    space: &str,
    name: &str,
    prepared: &Prepared,
) -> anyhow::Result<(String, Duration)> {
    let ticket = client
        .gql(
            "mutation($i: BeginUploadInput!) { beginUpload(input: $i) {
                uploadId uploadToken partSize partCount } }",
            json!({ "i": { "spaceId": space, "name": name, "size": prepared.content.len(),
                    "sha256": prepared.sha256, "method": "MULTIPART" } }),
        )
        .await?["beginUpload"]
        .clone();
    anyhow::ensure!(
        ticket["partSize"].as_u64() == Some(prepared.part_size),
        "the server cut the parts otherwise: {ticket}"
    );
    let keys = json!({ "u": ticket["uploadId"], "t": ticket["uploadToken"] });
    let count = prepared.part_digests.len();
    let mut urls = Vec::with_capacity(count);
    for batch in (1..=count).collect::<Vec<_>>().chunks(URL_BATCH) {
        let parts: Vec<Value> = batch
            .iter()
            .map(|&n| json!({ "partNumber": n, "sha256": prepared.part_digests[n - 1] }))
            .collect();
        let mut vars = keys.clone();
        vars["p"] = json!(parts);
        let data = client
            .gql(
                "mutation($u: ID!, $t: String!, $p: [UploadPartInput!]!) {
                    uploadPartUrls(uploadId: $u, uploadToken: $t, parts: $p) {
                        partNumber url headers { name value } } }",
                vars,
            )
            .await?;
        urls.extend(
            data["uploadPartUrls"]
                .as_array()
                .context("part URLs")?
                .iter()
                .cloned(),
        );
    }
    let mut sends = futures::stream::iter(urls.into_iter().map(|url| async move {
        let n = url["partNumber"].as_u64().context("part number")? as usize;
        let mut put = client
            .http
            .put(url["url"].as_str().context("url")?)
            .body(prepared.part(n));
        for h in url["headers"].as_array().context("headers")? {
            put = put.header(
                h["name"].as_str().context("header name")?,
                h["value"].as_str().context("header value")?,
            );
        }
        let res = put.send().await?;
        anyhow::ensure!(
            res.status().is_success(),
            "part {n}: {} {}",
            res.status(),
            res.text().await.unwrap_or_default()
        );
        Ok(())
    }))
    .buffer_unordered(PARALLEL_PARTS);
    while let Some(sent) = sends.next().await {
        sent?;
    }
    let committing = Instant::now();
    loop {
        let body: Value = client
            .http
            .post(&client.url)
            .bearer_auth(&client.token)
            .json(&json!({
                "query": "mutation($u: ID!, $t: String!) { commitUpload(uploadId: $u, uploadToken: $t) { id sha256 } }",
                "variables": keys,
            }))
            .send()
            .await?
            .json()
            .await?;
        if body["errors"][0]["extensions"]["code"] == "UPLOAD_VERIFYING" {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        }
        if let Some(errors) = body.get("errors") {
            bail!("commitUpload: {errors}");
        }
        let file = &body["data"]["commitUpload"];
        anyhow::ensure!(file["sha256"] == prepared.sha256.as_str(), "{file}");
        return Ok((
            file["id"].as_str().context("file id")?.to_owned(),
            committing.elapsed(),
        ));
    }
}

/// The upload runs: for each size, a fresh server and data dir, the upload timed from
/// `beginUpload` to the commit's answer, and `dd` of as many bytes on the same disk.
pub async fn upload_runs(args: &Args, dir: &Path) -> anyhow::Result<String> {
    let mut report = format!(
        "Measured {} on {} cores; server: `filesync serve` (release build, embedded \
         backend), client: `filesync-bench --uploads` in a separate process on the same \
         cores, over loopback, {PARALLEL_PARTS} parts in flight (part digests computed \
         before the clock starts). Time from `beginUpload` to the answer of \
         `commitUpload` (every part hashed and fsynced as it lands, the whole object \
         hashed at the commit); `dd if=/dev/zero bs=1M conv=fsync` of the same size into \
         the same data dir, just before. Each the median of {RUNS} runs. Memory: the \
         server's VmRSS sampled every 50 ms, its peak over its value before the uploads.\n\n\
         | size | parts | upload | of which the commit | throughput | `dd` | `dd` throughput | upload / `dd` | server RSS growth |\n\
         |---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
        chrono::Utc::now().format("%Y-%m-%d"),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
    );
    for (label, size) in &args.upload_sizes {
        eprintln!("upload of {label}…");
        let run_dir = dir.join(format!("upload-{size}"));
        let prepared = Prepared::new(*size)?;
        let server = start_server(args, &run_dir)?;
        let client = super::client_for(&server, &run_dir)?;
        let space = client
            .gql(
                "mutation { createSpace(name: \"large\") { id } }",
                json!({}),
            )
            .await?["createSpace"]["id"]
            .as_str()
            .context("space id")?
            .to_owned();
        let mut dds = (0..RUNS)
            .map(|_| dd(&run_dir, *size))
            .collect::<anyhow::Result<Vec<_>>>()?;
        dds.sort();
        let dd = dds[RUNS / 2];
        let _ = std::process::Command::new("sync").status();
        tokio::time::sleep(Duration::from_millis(500)).await;
        let before = rss_bytes(&server)?;
        let peak = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(before));
        let sampler = {
            let peak = peak.clone();
            let pid = server.child.id();
            tokio::spawn(async move {
                loop {
                    if let Ok(rss) = super::live::rss_of(pid) {
                        peak.fetch_max(rss, std::sync::atomic::Ordering::Relaxed);
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            })
        };
        let mut times = Vec::new();
        for run in 0..RUNS {
            let started = Instant::now();
            let (_, commit) =
                upload(&client, &space, &format!("{label}-{run}.bin"), &prepared).await?;
            times.push((started.elapsed(), commit));
        }
        times.sort();
        let (took, commit) = times[RUNS / 2];
        sampler.abort();
        let growth = peak.load(std::sync::atomic::Ordering::Relaxed) - before;
        let rate = |d: Duration| *size as f64 / MIB / d.as_secs_f64();
        report.push_str(&format!(
            "| {label} | {} | {:.2} s | {:.2} s | {:.0} MiB/s | {:.2} s | {:.0} MiB/s | {:.0} % | {:.1} MiB |\n",
            prepared.part_digests.len(),
            took.as_secs_f64(),
            commit.as_secs_f64(),
            rate(took),
            dd.as_secs_f64(),
            rate(dd),
            100.0 * dd.as_secs_f64() / took.as_secs_f64(),
            growth as f64 / MIB,
        ));
        drop(server);
        let _ = std::fs::remove_dir_all(&run_dir);
    }
    Ok(report)
}

/// `dd` writing `size` bytes (whole MiB, rounded up) into `dir`, fsynced: the disk's own
/// pace for what an upload stores.
fn dd(dir: &Path, size: u64) -> anyhow::Result<Duration> {
    let target = dir.join("dd.bin");
    let started = Instant::now();
    let status = std::process::Command::new("dd")
        .arg("if=/dev/zero")
        .arg(format!("of={}", target.display()))
        .args(["bs=1M", "conv=fsync", "status=none"])
        .arg(format!("count={}", size.div_ceil(1 << 20)))
        .status()
        .context("cannot run dd")?;
    let took = started.elapsed();
    anyhow::ensure!(status.success(), "dd failed");
    std::fs::remove_file(&target)?;
    Ok(took)
}

/// Sizes as `label=bytes` or plain bytes (`100MB`, `1GiB` and the like).
pub fn parse_size(s: &str) -> Result<(String, u64), String> {
    let bytes = |s: &str| -> Result<u64, String> {
        let s = s.trim();
        let (num, unit) = s
            .find(|c: char| !c.is_ascii_digit())
            .map_or((s, ""), |i| s.split_at(i));
        let n: u64 = num.parse().map_err(|_| format!("bad size {s:?}"))?;
        let unit = match unit.trim() {
            "" | "B" => 1,
            "KB" => 1_000,
            "MB" => 1_000_000,
            "GB" => 1_000_000_000,
            "KiB" => 1 << 10,
            "MiB" => 1 << 20,
            "GiB" => 1 << 30,
            other => return Err(format!("unknown unit {other:?}")),
        };
        Ok(n * unit)
    };
    Ok((s.to_owned(), bytes(s)?))
}
