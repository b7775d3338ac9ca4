//! Live subscriptions: how long a change takes to reach every subscriber, and how much
//! server memory an idle subscription holds. Subscribers are real websocket clients
//! (graphql-transport-ws), one connection each, in this process.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use serde_json::json;
use tokio::sync::Notify;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use super::{Args, Client, Server, client_for, create_files, file_field, ms, start_server};

/// What each latency subscriber asks for: a typical sync client's selection.
const SUBSCRIPTION: &str = "subscription($s: ID!) { changes(spaceId: $s) { cursor kind fileId version at file { name version size sha256 updatedAt } } }";
const UPDATE: &str = "mutation($id: ID!, $b: Int!) { updateFile(id: $id, baseVersion: $b, input: { metadata: [{ key: \"n\", value: \"v\" }] }) { version } }";
/// Connections opened at once while setting up subscribers.
const CONNECT_CONCURRENCY: usize = 64;

pub async fn latency_runs(
    args: &Args,
    dir: &std::path::Path,
    report: &mut String,
) -> anyhow::Result<()> {
    report.push_str(&format!(
        "\nPropagation runs: {} mutations one after another, each sent once the previous one \
         reached every subscriber; latency is from sending the mutation to a subscriber \
         receiving its event.\n\n\
         | subscribers | deliveries | p50 | p99 | max | last subscriber p50 | last subscriber p99 | mutation p50 | mutation p99 |\n\
         |---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
        args.mutations
    ));
    for &n in &args.subscribers {
        let dir = dir.join(format!("latency-{n}"));
        let server = start_server(args, &dir)?;
        let client = client_for(&server, &dir)?;
        eprintln!("propagation to {n} subscribers…");
        let r = latency_run(&server, &client, n, args.mutations).await?;
        report.push_str(&format!(
            "| {n} | {} | {:.2} ms | {:.2} ms | {:.2} ms | {:.2} ms | {:.2} ms | {:.2} ms | {:.2} ms |\n",
            r.deliveries.len(),
            ms(r.deliveries.value_at_quantile(0.5)),
            ms(r.deliveries.value_at_quantile(0.99)),
            ms(r.deliveries.max()),
            ms(r.last.value_at_quantile(0.5)),
            ms(r.last.value_at_quantile(0.99)),
            ms(r.mutation.value_at_quantile(0.5)),
            ms(r.mutation.value_at_quantile(0.99)),
        ));
    }
    Ok(())
}

struct LatencyResult {
    /// Every (mutation, subscriber) delivery.
    deliveries: Histogram<u64>,
    /// Per mutation: until the last subscriber had it.
    last: Histogram<u64>,
    /// The mutation's own response time.
    mutation: Histogram<u64>,
}

/// Shared between the driver and the subscribers: when each version was sent and how
/// many subscribers have it.
struct Tally {
    epoch: Instant,
    sent_at: Vec<AtomicU64>,
    received: Vec<AtomicUsize>,
    subscribers: usize,
    all_in: Notify,
}

async fn latency_run(
    server: &Server,
    client: &Client,
    subscribers: usize,
    mutations: usize,
) -> anyhow::Result<LatencyResult> {
    let file = create_files(client, 1).await?.remove(0);
    let space = space_of(client, &file).await?;
    let tally = Arc::new(Tally {
        epoch: Instant::now(),
        sent_at: (0..mutations + 2).map(|_| AtomicU64::new(0)).collect(),
        received: (0..mutations + 2).map(|_| AtomicUsize::new(0)).collect(),
        subscribers,
        all_in: Notify::new(),
    });
    let sockets = open_subscriptions(server, client, &space, subscribers, SUBSCRIPTION).await?;
    let mut readers = Vec::new();
    for socket in sockets {
        let tally = tally.clone();
        readers.push(tokio::spawn(read_events(socket, tally, mutations + 1)));
    }

    let mut last = Histogram::<u64>::new(3)?;
    let mut mutation = Histogram::<u64>::new(3)?;
    for base in 1..=mutations as i64 {
        let version = (base + 1) as usize;
        let all_in = tally.all_in.notified();
        tokio::pin!(all_in);
        all_in.as_mut().enable();
        let sent = Instant::now();
        tally.sent_at[version].store(nanos(tally.epoch, sent), Ordering::SeqCst);
        let body = client.gql(UPDATE, json!({ "id": file, "b": base })).await?;
        mutation.record(sent.elapsed().as_micros() as u64)?;
        anyhow::ensure!(body["updateFile"]["version"] == json!(version), "{body}");
        while tally.received[version].load(Ordering::SeqCst) < subscribers {
            if tokio::time::timeout(Duration::from_secs(10), all_in.as_mut())
                .await
                .is_err()
            {
                bail!("version {version} did not reach every subscriber within 10 s");
            }
            all_in.set(tally.all_in.notified());
            all_in.as_mut().enable();
        }
        last.record(sent.elapsed().as_micros() as u64)?;
    }
    let mut deliveries = Histogram::<u64>::new(3)?;
    for reader in readers {
        for micros in reader.await?? {
            deliveries.record(micros)?;
        }
    }
    Ok(LatencyResult {
        deliveries,
        last,
        mutation,
    })
}

pub(super) type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Reads events until the last version arrives; the latency of each. Per event the work
/// is one small parse and two atomics.
async fn read_events(
    mut socket: Socket,
    tally: Arc<Tally>,
    last_version: usize,
) -> anyhow::Result<Vec<u64>> {
    let mut samples = Vec::with_capacity(last_version);
    while let Some(frame) = socket.next().await {
        let Message::Text(text) = frame? else {
            continue;
        };
        let received = Instant::now();
        let Some(version) = event_version(&text) else {
            if text.contains("\"ping\"") {
                socket
                    .send(Message::Text(r#"{"type":"pong"}"#.into()))
                    .await?;
            }
            continue;
        };
        let sent = tally
            .sent_at
            .get(version)
            .map_or(0, |s| s.load(Ordering::SeqCst));
        if sent > 0 {
            samples.push(nanos(tally.epoch, received).saturating_sub(sent) / 1000);
        }
        let count = tally.received[version].fetch_add(1, Ordering::SeqCst) + 1;
        if count == tally.subscribers {
            tally.all_in.notify_waiters();
        }
        if version >= last_version {
            return Ok(samples);
        }
    }
    bail!("the server closed a subscriber's websocket")
}

/// The event's version, found without parsing the whole message: the subscription
/// selects `version` before any nested one, and the client should cost as little CPU as
/// possible, since it shares the machine with the server.
fn event_version(text: &str) -> Option<usize> {
    if !text.contains(r#""type":"next""#) {
        return None;
    }
    let rest = &text[text.find(r#""version":"#)? + 10..];
    let digits = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    rest[..digits].parse().ok()
}

fn nanos(epoch: Instant, at: Instant) -> u64 {
    at.duration_since(epoch).as_nanos() as u64
}

pub async fn memory_runs(
    args: &Args,
    dir: &std::path::Path,
    report: &mut String,
) -> anyhow::Result<()> {
    report.push_str(
        "\nIdle subscriptions: the server's resident memory (VmRSS) before opening that many \
         websockets, once each is initialised (`connection_ack`), and once each has one \
         `changes` subscription that has received READY.\n\n\
         | idle subscriptions | RSS before | RSS after | per connection | per subscription | per subscription, total |\n\
         |---:|---:|---:|---:|---:|---:|\n",
    );
    for &n in &args.idle {
        let dir = dir.join(format!("idle-{n}"));
        let server = start_server(args, &dir)?;
        let client = client_for(&server, &dir)?;
        eprintln!("{n} idle subscriptions…");
        let file = create_files(&client, 1).await?.remove(0);
        let space = space_of(&client, &file).await?;
        // Warm the server's allocator and caches with a few subscriptions first.
        drop(open_subscriptions(&server, &client, &space, 64, SUBSCRIPTION).await?);
        tokio::time::sleep(Duration::from_secs(1)).await;
        let before = rss_bytes(&server)?;
        let sockets = open_connections(&server, &client, n).await?;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let connected = rss_bytes(&server)?;
        let sockets = subscribe_all(sockets, &space, SUBSCRIPTION).await?;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let after = rss_bytes(&server)?;
        let per = |from: u64, to: u64| to.saturating_sub(from) as f64 / n as f64 / 1024.0;
        report.push_str(&format!(
            "| {n} | {:.1} MiB | {:.1} MiB | {:.1} KiB | {:.1} KiB | {:.1} KiB |\n",
            before as f64 / 1048576.0,
            after as f64 / 1048576.0,
            per(before, connected),
            per(connected, after),
            per(before, after),
        ));
        drop(sockets);
    }
    Ok(())
}

pub fn rss_bytes(server: &Server) -> anyhow::Result<u64> {
    rss_of(server.child.id())
}

/// A process's resident memory (VmRSS), in bytes.
pub fn rss_of(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .context("no VmRSS")?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()?;
    Ok(kib * 1024)
}

async fn space_of(client: &Client, file: &str) -> anyhow::Result<String> {
    let space = file_field(client, file, "spaceId").await?;
    Ok(space.as_str().context("space id")?.to_owned())
}

/// `n` websockets, each initialised and subscribed, each past READY.
pub(super) async fn open_subscriptions(
    server: &Server,
    client: &Client,
    space: &str,
    n: usize,
    query: &str,
) -> anyhow::Result<Vec<Socket>> {
    let sockets = open_connections(server, client, n).await?;
    subscribe_all(sockets, space, query).await
}

/// `n` websockets, each initialised (`connection_ack` received).
async fn open_connections(
    server: &Server,
    client: &Client,
    n: usize,
) -> anyhow::Result<Vec<Socket>> {
    let url = format!("{}/graphql/ws", server.base.replacen("http", "ws", 1));
    let opened = futures::stream::iter(0..n)
        .map(|_| connect_one(&url, &client.token))
        .buffer_unordered(CONNECT_CONCURRENCY)
        .collect::<Vec<_>>()
        .await;
    opened.into_iter().collect()
}

/// Subscribes on every socket; each past READY.
async fn subscribe_all(
    sockets: Vec<Socket>,
    space: &str,
    query: &str,
) -> anyhow::Result<Vec<Socket>> {
    let subscribed = futures::stream::iter(sockets)
        .map(|socket| subscribe_one(socket, space, query))
        .buffer_unordered(CONNECT_CONCURRENCY)
        .collect::<Vec<_>>()
        .await;
    subscribed.into_iter().collect()
}

async fn connect_one(url: &str, token: &str) -> anyhow::Result<Socket> {
    let mut request = url.into_client_request()?;
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        HeaderValue::from_static("graphql-transport-ws"),
    );
    let (mut socket, _) =
        tokio_tungstenite::connect_async_with_config(request, Some(client_config()), false).await?;
    let init = json!({ "type": "connection_init", "payload": { "token": token } });
    socket.send(Message::Text(init.to_string().into())).await?;
    while let Some(frame) = socket.next().await {
        if let Message::Text(text) = frame? {
            if text.contains("connection_ack") {
                return Ok(socket);
            }
            bail!("unexpected message while connecting: {text}");
        }
    }
    bail!("the server closed the websocket while connecting")
}

async fn subscribe_one(mut socket: Socket, space: &str, query: &str) -> anyhow::Result<Socket> {
    let subscribe = json!({ "type": "subscribe", "id": "1",
        "payload": { "query": query, "variables": { "s": space } } });
    socket
        .send(Message::Text(subscribe.to_string().into()))
        .await?;
    while let Some(frame) = socket.next().await {
        if let Message::Text(text) = frame? {
            if text.contains("\"READY\"") {
                return Ok(socket);
            }
            if !text.contains("\"ping\"") {
                bail!("unexpected message while subscribing: {text}");
            }
        }
    }
    bail!("the server closed the websocket while subscribing")
}

/// The subscribers' websocket settings. tungstenite zero-fills its whole read buffer on
/// each read, and the default of 128 KiB per read would make the clients, which share
/// the machine's two cores with the server, slower than the server they measure.
fn client_config() -> WebSocketConfig {
    WebSocketConfig::default().read_buffer_size(4096)
}
