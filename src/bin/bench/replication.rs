//! `--replication`: how far the replica stores lag behind the commits under a steady
//! write load, how fast a backfill copies, and (on the AWS backend) what replicating a
//! version costs in requests.
//!
//! Embedded: two folder stores beside the data dir. AWS (the `FILESYNC_STORAGE__*`
//! variables name a stack, as for `--aws-cost`): one more bucket in the same S3, so
//! copies run as `CopyObject`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use hdrhistogram::Histogram;
use serde_json::{Value, json};

use super::cost::{Meter, breakdown, create_file, minus};
use super::{Args, Client, start_server_configured};

/// Versions measured per request count.
const COST_VERSIONS: usize = 10;

fn on_aws() -> bool {
    std::env::var("FILESYNC_STORAGE__BACKEND").as_deref() == Ok("aws")
}

pub async fn replication_runs(args: &Args, dir: &Path) -> anyhow::Result<String> {
    std::fs::create_dir_all(dir)?;
    let stores = stores(dir).await?;
    let store_count = stores.matches("[[replication.stores]]").count();
    let secret = hex::encode(rand::random::<[u8; 32]>());
    let env = [("FILESYNC_AUTH__JWT_SECRET", Some(secret.as_str()))];
    let config = write_config(dir, "replication.toml", &stores, "")?;
    let server = start_server_configured(args, &dir.join("server"), &env, Some(&config))?;
    let client = Client::for_secret(&server, secret.as_bytes())?;

    let mut report = format!(
        "Measured {} on {} cores, {} backend, {store_count} replica store(s) ({}); \
         `filesync serve` as built, the client in another process on the same cores.\n\n",
        chrono::Utc::now().format("%Y-%m-%d"),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        if on_aws() {
            "AWS (emulated)"
        } else {
            "embedded"
        },
        if on_aws() {
            "a second bucket in the same S3: copies are `CopyObject`"
        } else {
            "two folders: copies are streamed and fsynced"
        },
    );

    // Lag under a steady load: each copy's OK time against its version's commit time.
    report.push_str("| run | copies | lag p50 | lag p99 | lag max |\n|---|---:|---:|---:|---:|\n");
    for &rate in &args.replication_rate {
        report.push_str(&lag_run(&client, rate.max(1), args.duration, store_count).await?);
    }

    // Backfill: a space with replication off, then turned on.
    let backfill_files = args.replication_files.max(1);
    eprintln!("backfill of {backfill_files} files…");
    let space = new_space(&client, "backfill").await?;
    set_replication(&client, &space, "OFF").await?;
    let mut uploads = Vec::new();
    let numbers: Vec<usize> = (0..backfill_files).collect();
    for chunk in numbers.chunks(16) {
        let batch: Vec<_> = chunk
            .iter()
            .copied()
            .map(|i| {
                let (client, space) = (client.clone(), space.clone());
                tokio::spawn(
                    async move { create_file(&client, &space, &format!("b-{i}.txt")).await },
                )
            })
            .collect();
        for upload in batch {
            uploads.push(upload.await??);
        }
    }
    let started = Instant::now();
    set_replication(&client, &space, "ON").await?;
    settle(&client, &space, backfill_files, store_count).await?;
    let took = started.elapsed();
    let copies = backfill_files * store_count;
    report.push_str(&format!(
        "\nBackfill (replication turned on in a space of {backfill_files} small files): \
         {copies} copies verified in {:.1} s, {:.0} copies/s (`copy_concurrency` 4 per \
         store, one server).\n",
        took.as_secs_f64(),
        copies as f64 / took.as_secs_f64(),
    ));
    drop(server);

    if on_aws() {
        report.push_str(&aws_cost(args, dir, &stores, &secret).await?);
    }
    Ok(report)
}

/// Uploads at `rate` per second for `duration`; each copy's lag, as a table row.
async fn lag_run(
    client: &Client,
    rate: u32,
    duration: Duration,
    store_count: usize,
) -> anyhow::Result<String> {
    let total = (u64::from(rate) * duration.as_secs().max(1)) as usize;
    eprintln!("replication lag: {total} uploads at {rate}/s…");
    let space = new_space(client, &format!("lag-{rate}")).await?;
    let started = Instant::now();
    let mut uploads = Vec::new();
    for i in 0..total {
        let due = Duration::from_secs_f64(i as f64 / f64::from(rate));
        tokio::time::sleep_until((started + due).into()).await;
        let (client, space) = (client.clone(), space.clone());
        uploads.push(tokio::spawn(async move {
            create_file(&client, &space, &format!("lag-{i}.txt")).await
        }));
    }
    let mut files = Vec::new();
    for upload in uploads {
        files.push(upload.await??);
    }
    settle(client, &space, files.len(), store_count).await?;
    let mut lag = Histogram::<u64>::new(3)?;
    for file in &files {
        let data = client
            .gql(
                "query($id: ID!) { file(id: $id) { updatedAt replicas { primary status updatedAt } } }",
                json!({ "id": file }),
            )
            .await?;
        let committed = millis(&data["file"]["updatedAt"])?;
        for replica in data["file"]["replicas"].as_array().context("replicas")? {
            if replica["primary"] == true {
                continue;
            }
            if replica["status"] != "OK" {
                bail!("a copy is not OK: {replica}");
            }
            lag.record((millis(&replica["updatedAt"])? - committed).max(0) as u64)?;
        }
    }
    Ok(format!(
        "| {rate} small uploads/s for {} s | {} | {} ms | {} ms | {} ms |\n",
        duration.as_secs().max(1),
        lag.len(),
        lag.value_at_quantile(0.5),
        lag.value_at_quantile(0.99),
        lag.max(),
    ))
}

/// Requests per version with replication off and on, on a server whose replication does
/// nothing in the background (no scrub, no polling) so that only the copies count.
async fn aws_cost(args: &Args, dir: &Path, stores: &str, secret: &str) -> anyhow::Result<String> {
    eprintln!("requests per replicated version…");
    let quiet = "poll_interval = \"1h\"\ndegraded_refresh = \"1h\"\njob_grace = \"3h\"\n";
    let config = write_config(dir, "cost.toml", stores, quiet)?;
    let config = config_with_scrub_off(&config)?;
    let env = [
        ("FILESYNC_AUTH__JWT_SECRET", Some(secret)),
        ("FILESYNC_STORAGE__EVENTS_QUEUE_URL", None),
        ("FILESYNC_UPLOADS__SWEEP_INTERVAL", Some("1h")),
    ];
    let server = start_server_configured(args, &dir.join("cost"), &env, Some(&config))?;
    let client = Client::for_secret(&server, secret.as_bytes())?;
    let mut per = Vec::new();
    for mode in ["OFF", "ON"] {
        let space = new_space(&client, mode).await?;
        set_replication(&client, &space, mode).await?;
        let meter = Meter::start(&server).await?;
        for i in 0..COST_VERSIONS {
            create_file(&client, &space, &format!("{mode}-{i}.txt")).await?;
        }
        per.push(meter.per_settled(&server, COST_VERSIONS).await?);
    }
    let extra = minus(&per[1], &per[0]);
    let extra: super::cost::Counts = extra.into_iter().filter(|(_, v)| v.abs() >= 0.05).collect();
    Ok(format!(
        "\nRequests per version (the mean of {COST_VERSIONS} uploads of a new file, begin to \
         commit, and the copies they set off), as the server counts them:\n\n\
         | | requests | by operation |\n|---|---:|---|\n\
         | replication off | {:.1} | {} |\n| replication on (1 store) | {:.1} | {} |\n\
         | **replication's share** | **{:.1}** | {} |\n",
        per[0].values().sum::<f64>(),
        breakdown(&per[0]),
        per[1].values().sum::<f64>(),
        breakdown(&per[1]),
        extra.values().sum::<f64>(),
        breakdown(&extra),
    ))
}

/// The `[[replication.stores]]` tables of this run.
async fn stores(dir: &Path) -> anyhow::Result<String> {
    if !on_aws() {
        return Ok((0..2)
            .map(|i| {
                format!(
                    "[[replication.stores]]\nid = \"folder-{i}\"\nkind = \"folder\"\npath = {:?}\n\n",
                    dir.join(format!("store-{i}"))
                )
            })
            .collect());
    }
    let bucket = format!(
        "bench-replica-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    );
    create_bucket(&bucket).await?;
    Ok(format!(
        "[[replication.stores]]\nid = \"replica\"\nkind = \"s3\"\nbucket = \"{bucket}\"\npath_style = true\n\n"
    ))
}

#[cfg(feature = "aws")]
async fn create_bucket(bucket: &str) -> anyhow::Result<()> {
    let config = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    filesync::storage::aws::s3_client(&config, true)
        .create_bucket()
        .bucket(bucket)
        .send()
        .await
        .context("cannot create the replica bucket")?;
    Ok(())
}

#[cfg(not(feature = "aws"))]
async fn create_bucket(_bucket: &str) -> anyhow::Result<()> {
    bail!("the AWS run needs a build with `--features aws`")
}

fn write_config(dir: &Path, name: &str, stores: &str, extra: &str) -> anyhow::Result<PathBuf> {
    let path = dir.join(name);
    std::fs::write(
        &path,
        format!("[replication]\ndefault = true\n{extra}\n{stores}"),
    )?;
    Ok(path)
}

fn config_with_scrub_off(path: &Path) -> anyhow::Result<PathBuf> {
    let text = std::fs::read_to_string(path)?;
    // `[replication.scrub]` must come before the stores' array of tables.
    let (head, stores) = text
        .split_once("[[replication.stores]]")
        .unwrap_or((&text, ""));
    std::fs::write(
        path,
        format!("{head}[replication.scrub]\nenabled = false\n\n[[replication.stores]]{stores}"),
    )?;
    Ok(path.to_owned())
}

async fn new_space(client: &Client, name: &str) -> anyhow::Result<String> {
    Ok(client
        .gql(
            "mutation($n: String!) { createSpace(name: $n) { id } }",
            json!({ "n": name }),
        )
        .await?["createSpace"]["id"]
        .as_str()
        .context("space id")?
        .to_owned())
}

async fn set_replication(client: &Client, space: &str, mode: &str) -> anyhow::Result<()> {
    client
        .gql(
            "mutation($s: ID!, $m: ReplicationMode) { updateSpaceSettings(spaceId: $s, input: { replication: $m }) { id } }",
            json!({ "s": space, "m": mode }),
        )
        .await?;
    Ok(())
}

/// Waits until every replica store holds `files` OK copies of the space's objects.
async fn settle(client: &Client, space: &str, files: usize, stores: usize) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let status = client
            .gql(
                "query($s: ID!) { replicationStatus(spaceId: $s) { stores { primary ok } } }",
                json!({ "s": space }),
            )
            .await?;
        let done = status["replicationStatus"]["stores"]
            .as_array()
            .context("stores")?
            .iter()
            .filter(|s| s["primary"] == false && s["ok"].as_u64() == Some(files as u64))
            .count();
        if done == stores {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("replication did not settle: {status}");
        }
        // Each poll reads every copy record of the space: gently on the emulator (one
        // Python process, which the copies wait for too).
        let pause = if on_aws() { 500 } else { 50 };
        tokio::time::sleep(Duration::from_millis(pause)).await;
    }
}

fn millis(value: &Value) -> anyhow::Result<i64> {
    let text = value.as_str().context("a DateTime")?;
    Ok(chrono::DateTime::parse_from_rfc3339(text)?.timestamp_millis())
}
