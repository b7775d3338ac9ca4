//! `--aws-cost`: what each API operation costs on the AWS backend, in requests to
//! DynamoDB, S3 and SQS, as the server itself counts them
//! (`filesync_backend_requests_total` at `/metrics`). A count, not a timing: it is the
//! same against the emulator as against AWS.
//!
//! The server runs on the stack named by the `FILESYNC_STORAGE__*` variables (as
//! `scripts/aws-emulator deploy` prints them). Each operation is repeated and the counts
//! averaged; the background work (stream polling, the queue's long poll, the sweeper) is
//! measured on its own, while nothing else happens, and left out of the per-operation
//! figures.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, bail};
use futures::StreamExt;
use serde_json::{Value, json};
use sha2::Digest;
use tokio_tungstenite::tungstenite::Message;

use super::live::{Socket, open_subscriptions};
use super::{Args, Client, Server, start_server_with};

/// Each operation is measured this many times.
const REPEAT: usize = 10;
/// The multipart upload measured (small: moto keeps objects in memory), and how often.
const MULTIPART_SIZE: u64 = 32 << 20;
const MULTIPART_REPEAT: usize = 3;
/// How long the idle server is watched for its background requests.
const IDLE: Duration = Duration::from_secs(20);

/// Requests by `(service, operation)`.
pub(super) type Counts = BTreeMap<(String, String), f64>;

/// Background requests, which run whatever the clients do: left out of per-operation counts.
fn background(service: &str, operation: &str) -> bool {
    matches!(
        (service, operation),
        ("dynamodbstreams", _) | ("dynamodb", "DescribeTable") | ("sqs", "ReceiveMessage")
    )
}

pub async fn cost_runs(args: &Args, dir: &Path) -> anyhow::Result<String> {
    if std::env::var("FILESYNC_STORAGE__BACKEND").as_deref() != Ok("aws") {
        bail!(
            "--aws-cost runs the server on the AWS backend: export the AWS variables and a \
             stack's configuration first (eval \"$(scripts/aws-emulator start)\"; \
             eval \"$(scripts/aws-emulator deploy cost)\")"
        );
    }
    let secret = hex::encode(rand::random::<[u8; 32]>());
    let mut report = format!(
        "Counted {} by the server itself (`filesync_backend_requests_total`), each figure \
         the mean of {REPEAT} operations; against the emulator, which answers the same \
         requests AWS would be sent.\n\n\
         | operation | requests | by operation |\n|---|---:|---|\n",
        chrono::Utc::now().format("%Y-%m-%d"),
    );

    // Without the events queue, so that a storage event cannot land in another's count.
    let server = start_server_with(
        args,
        &dir.join("ops"),
        &[
            ("FILESYNC_AUTH__JWT_SECRET", Some(secret.as_str())),
            ("FILESYNC_STORAGE__EVENTS_QUEUE_URL", None),
            ("FILESYNC_UPLOADS__SWEEP_INTERVAL", Some("1h")),
        ],
    )?;
    let client = Client::for_secret(&server, secret.as_bytes())?;
    let space = client
        .gql("mutation { createSpace(name: \"cost\") { id } }", json!({}))
        .await?["createSpace"]["id"]
        .as_str()
        .context("space id")?
        .to_owned();
    let mut rows: Vec<(&str, Counts)> = Vec::new();

    let meter = Meter::start(&server).await?;
    for n in 0..REPEAT {
        client
            .gql(
                "mutation($n: String!) { createSpace(name: $n) { id } }",
                json!({ "n": format!("s{n}") }),
            )
            .await?;
    }
    rows.push(("`createSpace`", meter.mean(&server).await?));

    let meter = Meter::start(&server).await?;
    let mut tickets = Vec::new();
    for n in 0..REPEAT {
        tickets.push(begin(&client, &space, &format!("f{n}.txt")).await?);
    }
    let begin_cost = meter.mean(&server).await?;
    rows.push(("`beginUpload` (new file)", begin_cost.clone()));
    for ticket in &tickets {
        put_bytes(&client, ticket).await?;
    }

    let meter = Meter::start(&server).await?;
    let mut files = Vec::new();
    for ticket in &tickets {
        files.push(commit(&client, ticket).await?);
    }
    rows.push(("`commitUpload` (bytes in S3)", meter.mean(&server).await?));

    let meter = Meter::start(&server).await?;
    for file in &files {
        update(&client, file, 1).await?;
    }
    let update_cost = meter.mean(&server).await?;
    rows.push(("`updateFile` (metadata)", update_cost.clone()));

    let meter = Meter::start(&server).await?;
    for _ in 0..REPEAT {
        client
            .gql(
                "query($s: ID!) { changes(spaceId: $s, limit: 100) { files { id version downloadUrl } hasMore } }",
                json!({ "s": space }),
            )
            .await?;
    }
    rows.push((
        "`changes` page (10 files, with download URLs)",
        meter.mean(&server).await?,
    ));

    let meter = Meter::start(&server).await?;
    for file in &files {
        client
            .gql(
                "mutation($id: ID!) { deleteFile(id: $id, baseVersion: 2) { version } }",
                json!({ "id": file }),
            )
            .await?;
    }
    rows.push(("`deleteFile`", meter.mean(&server).await?));

    // A multipart upload, begin to commit, as the server counts it: its parts go from
    // the client to S3 (one `UploadPart` each), which the server never sees.
    let prepared = super::uploads::Prepared::new(MULTIPART_SIZE)?;
    let meter = Meter::start(&server).await?;
    for n in 0..MULTIPART_REPEAT {
        super::uploads::upload(&client, &space, &format!("large-{n}.bin"), &prepared).await?;
    }
    let multipart = meter.per(&server, MULTIPART_REPEAT).await?;
    rows.push((
        "multipart upload of 32 MiB (4 parts; plus the client's 4 `UploadPart`)",
        multipart,
    ));

    // Event delivery: the same update with 1 and with 10 subscribers of the space; what
    // it costs beyond an update nobody follows is the delivery (in each replica).
    let live_file = create_file(&client, &space, "live.txt").await?;
    let mut version = 1;
    for (subscribers, label) in [
        (1, "delivering a change to 1 subscriber"),
        (10, "delivering a change to 10 subscribers"),
    ] {
        let mut sockets =
            open_subscriptions(&server, &client, &space, subscribers, SUBSCRIPTION).await?;
        let meter = Meter::start(&server).await?;
        for _ in 0..REPEAT {
            update(&client, &live_file, version).await?;
            version += 1;
            for socket in &mut sockets {
                until_version(socket, version).await?;
            }
        }
        rows.push((label, minus(&meter.mean(&server).await?, &update_cost)));
    }
    let idle = idle_counts(&server).await?;
    drop(server);

    // The storage event that publishes an upload nobody commits.
    let server = start_server_with(
        args,
        &dir.join("events"),
        &[
            ("FILESYNC_AUTH__JWT_SECRET", Some(secret.as_str())),
            ("FILESYNC_UPLOADS__SWEEP_INTERVAL", Some("1h")),
        ],
    )?;
    let client = Client::for_secret(&server, secret.as_bytes())?;
    let meter = Meter::start(&server).await?;
    for n in 0..REPEAT {
        let published = transactions(&server).await?;
        let ticket = begin(&client, &space, &format!("event-{n}.txt")).await?;
        put_bytes(&client, &ticket).await?;
        wait_for_transaction(&server, published).await?;
    }
    rows.push((
        "storage event publishing an upload (beyond its `beginUpload`)",
        minus(&meter.mean(&server).await?, &begin_cost),
    ));
    drop(server);

    for (name, counts) in &rows {
        report.push_str(&format!(
            "| {name} | {:.1} | {} |\n",
            counts.values().sum::<f64>(),
            breakdown(counts)
        ));
    }
    report.push_str(
        "\nA multipart upload costs the server about the same whatever its size (one \
         `ListParts` per 1,000 parts, a membership and upload read per 100 part URLs, and \
         one streamed `GetObject` to hash the object whole); per GiB in parts of 8 MiB the \
         client adds 128 `UploadPart` requests.\n",
    );
    report.push_str(&format!(
        "\nBackground, per replica, while idle (per minute): {}. The sweeper adds one \
         `Query` per shard of the pending-uploads index (8) per `uploads.sweep_interval`.\n",
        breakdown(&idle)
    ));
    Ok(report)
}

const SUBSCRIPTION: &str = "subscription($s: ID!) { changes(spaceId: $s) { kind version } }";

/// Counts the requests made from its start, background work left out.
pub(super) struct Meter(Counts);

impl Meter {
    /// Starts once the server has settled: what earlier operations set off (a storage
    /// event, the first sweep) must not be counted here.
    pub(super) async fn start(server: &Server) -> anyhow::Result<Self> {
        let foreground = |mut counts: Counts| {
            counts.retain(|(service, operation), _| !background(service, operation));
            counts
        };
        let mut last = foreground(counts(server).await?);
        let mut quiet = 0;
        for _ in 0..300 {
            tokio::time::sleep(Duration::from_millis(250)).await;
            let now = foreground(counts(server).await?);
            quiet = if now == last { quiet + 1 } else { 0 };
            if quiet == 8 {
                return Ok(Self(now));
            }
            last = now;
        }
        bail!("the server never settled")
    }

    /// The requests since the start, per operation of `n`, counted once the server has
    /// settled again (background work set off by the operations included).
    pub(super) async fn per_settled(self, server: &Server, n: usize) -> anyhow::Result<Counts> {
        let settled = Meter::start(server).await?;
        let mut mean = minus(&settled.0, &self.0);
        for value in mean.values_mut() {
            *value /= n as f64;
        }
        Ok(mean)
    }

    /// The requests since the start, per operation of `REPEAT`.
    async fn mean(self, server: &Server) -> anyhow::Result<Counts> {
        self.per(server, REPEAT).await
    }

    /// The requests since the start, per operation of `n`.
    async fn per(self, server: &Server, n: usize) -> anyhow::Result<Counts> {
        let mut mean = minus(&counts(server).await?, &self.0);
        mean.retain(|(service, operation), _| !background(service, operation));
        for value in mean.values_mut() {
            *value /= n as f64;
        }
        Ok(mean)
    }
}

/// What the idle server asks for in a minute.
async fn idle_counts(server: &Server) -> anyhow::Result<Counts> {
    let before = counts(server).await?;
    tokio::time::sleep(IDLE).await;
    let mut idle = minus(&counts(server).await?, &before);
    for value in idle.values_mut() {
        *value *= 60.0 / IDLE.as_secs_f64();
    }
    Ok(idle)
}

pub(super) fn minus(after: &Counts, before: &Counts) -> Counts {
    after
        .iter()
        .map(|(key, value)| (key.clone(), value - before.get(key).unwrap_or(&0.0)))
        .filter(|(_, value)| value.abs() > 0.01)
        .collect()
}

pub(super) fn breakdown(counts: &Counts) -> String {
    if counts.is_empty() {
        return "none".to_owned();
    }
    counts
        .iter()
        .map(|((service, operation), n)| {
            let n = if (n - n.round()).abs() < 0.05 {
                format!("{n:.0}")
            } else {
                format!("{n:.1}")
            };
            let service = match service.as_str() {
                "dynamodb" => "DynamoDB",
                "dynamodbstreams" => "Streams",
                "s3" => "S3",
                "sqs" => "SQS",
                other => other,
            };
            format!("{n} {service} {operation}")
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The server's request counters.
pub(super) async fn counts(server: &Server) -> anyhow::Result<Counts> {
    let text = reqwest::get(format!("{}/metrics", server.base))
        .await?
        .text()
        .await?;
    let mut counts = Counts::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("filesync_backend_requests_total{") else {
            continue;
        };
        let (labels, value) = rest.split_once("} ").context("metric line")?;
        let label = |name: &str| {
            labels
                .split(',')
                .find_map(|l| l.strip_prefix(&format!("{name}=\"")))
                .and_then(|v| v.strip_suffix('"'))
                .map(str::to_owned)
        };
        let key = (
            label("service").context("service")?,
            label("operation").context("operation")?,
        );
        counts.insert(key, value.trim().parse()?);
    }
    Ok(counts)
}

pub(super) async fn begin(client: &Client, space: &str, name: &str) -> anyhow::Result<Value> {
    let bytes = name.as_bytes();
    let data = client
        .gql(
            "mutation($i: BeginUploadInput!) { beginUpload(input: $i) { uploadId uploadToken fileId url method headers { name value } } }",
            json!({ "i": { "spaceId": space, "name": name, "size": bytes.len(),
                    "contentType": "text/plain",
                    "sha256": hex::encode(sha2::Sha256::digest(bytes)) } }),
        )
        .await?;
    let mut ticket = data["beginUpload"].clone();
    ticket["name"] = json!(name);
    Ok(ticket)
}

/// The client's request straight to S3, with the headers the ticket names (its body is
/// the file's name).
pub(super) async fn put_bytes(client: &Client, ticket: &Value) -> anyhow::Result<()> {
    let url = ticket["url"].as_str().context("url")?;
    let name = ticket_name(ticket)?;
    let mut request = client.http.put(url);
    for header in ticket["headers"].as_array().context("headers")? {
        request = request.header(
            header["name"].as_str().context("name")?,
            header["value"].as_str().context("value")?,
        );
    }
    let response = request.body(name).send().await?;
    anyhow::ensure!(
        response.status().is_success(),
        "upload failed: {}",
        response.status()
    );
    Ok(())
}

/// The name a ticket was begun with, which is also the file's body.
fn ticket_name(ticket: &Value) -> anyhow::Result<String> {
    ticket["name"]
        .as_str()
        .map(str::to_owned)
        .context("ticket name")
}

pub(super) async fn commit(client: &Client, ticket: &Value) -> anyhow::Result<String> {
    client
        .gql(
            "mutation($u: ID!, $t: String!) { commitUpload(uploadId: $u, uploadToken: $t) { id } }",
            json!({ "u": ticket["uploadId"], "t": ticket["uploadToken"] }),
        )
        .await?;
    Ok(ticket["fileId"].as_str().context("file id")?.to_owned())
}

pub(super) async fn create_file(
    client: &Client,
    space: &str,
    name: &str,
) -> anyhow::Result<String> {
    let ticket = begin(client, space, name).await?;
    put_bytes(client, &ticket).await?;
    commit(client, &ticket).await
}

async fn update(client: &Client, file: &str, base: i64) -> anyhow::Result<()> {
    client
        .gql(
            "mutation($id: ID!, $b: Int!) { updateFile(id: $id, baseVersion: $b, input: { metadata: [{ key: \"n\", value: \"v\" }] }) { version } }",
            json!({ "id": file, "b": base }),
        )
        .await?;
    Ok(())
}

/// Reads a subscriber's socket until the event of `version`.
async fn until_version(socket: &mut Socket, version: i64) -> anyhow::Result<()> {
    let wanted = format!("\"version\":{version}");
    while let Some(frame) = tokio::time::timeout(Duration::from_secs(30), socket.next())
        .await
        .context("no event within 30 s")?
    {
        if let Message::Text(text) = frame?
            && text.contains(&wanted)
        {
            return Ok(());
        }
    }
    bail!("the server closed a subscriber's websocket")
}

/// Publishes so far (each is one `TransactWriteItems`).
async fn transactions(server: &Server) -> anyhow::Result<f64> {
    let key = ("dynamodb".to_owned(), "TransactWriteItems".to_owned());
    Ok(counts(server).await?.get(&key).copied().unwrap_or(0.0))
}

/// Waits until the storage event has published the upload, watching only the server's
/// counters (a query would add requests of its own).
async fn wait_for_transaction(server: &Server, before: f64) -> anyhow::Result<()> {
    for _ in 0..300 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if transactions(server).await? > before {
            return Ok(());
        }
    }
    bail!("the storage event did not publish the upload within 30 s")
}
