//! Several replicas on one AWS stack: a subscriber on replica B sees the writes made
//! through replica A, each once and in order, across a drop and resume. B hears of A's
//! writes only through the table's DynamoDB stream.

use std::sync::Arc;
use std::time::Duration;

use crate::helpers::{TestApp, on_aws, spawn_app, spawn_app_in};
use crate::ws_client::{TRANSPORT_WS, WsClient};

async fn versions_until(ws: &mut WsClient, last: i64) -> Vec<i64> {
    let mut versions = Vec::new();
    while versions.last() != Some(&last) {
        let event = ws.event().await.unwrap_or_else(|e| panic!("event: {e}"));
        if event["kind"] != "READY" {
            versions.push(event["version"].as_i64().expect("a change"));
        }
    }
    versions
}

#[tokio::test]
async fn a_subscriber_on_one_replica_sees_the_writes_made_through_another() {
    if !on_aws() {
        eprintln!("replicas share a store only on the AWS backend");
        return;
    }
    let a = Arc::new(spawn_app().await);
    // The same stack and token secret: a second replica, not a restart.
    let b = spawn_app_in(a.data_dir.clone(), |_| {}).await;
    let space = a.create_space("alice", "Team").await;
    let file = a.upload_id("alice", &space, "shared.txt", b"v1").await;

    let mut sub = b.ws_as("alice", TRANSPORT_WS).await;
    sub.subscribe_changes("s", &space, None).await;
    sub.until_ready().await;
    let writer = {
        let (a, file) = (a.clone(), file.clone());
        tokio::spawn(async move {
            for base in 1..=30 {
                let body = a
                    .update_metadata("alice", &file, base, "n", &base.to_string())
                    .await;
                assert!(body.get("errors").is_none(), "{body}");
            }
        })
    };

    let mut seen = Vec::new();
    let mut cursor = String::new();
    while seen.len() < 12 {
        let event = sub.event().await.unwrap();
        assert_eq!(event["kind"], "UPDATED");
        seen.push(event["version"].as_i64().unwrap());
        cursor = event["cursor"].as_str().unwrap().to_owned();
    }
    sub.hang_up().await;
    let mut sub = b.ws_as("alice", TRANSPORT_WS).await;
    sub.subscribe_changes("s", &space, Some(&cursor)).await;
    seen.extend(versions_until(&mut sub, 31).await);
    writer.await.unwrap();
    assert_eq!(
        seen,
        (2..=31).collect::<Vec<_>>(),
        "each version once, in order"
    );

    // And the other way round, live: a write through B reaches a subscriber on A.
    let mut on_a = a.ws_as("alice", TRANSPORT_WS).await;
    on_a.subscribe_changes("a", &space, None).await;
    on_a.until_ready().await;
    b.update_metadata("alice", &file, 31, "from", "b").await;
    assert_eq!(versions_until(&mut on_a, 32).await, vec![32]);
    assert_eq!(versions_until(&mut sub, 32).await, vec![32]);
}

/// How often a replica fell back to reading the store for want of notices.
async fn fallback_reads(app: &TestApp) -> u64 {
    let text = app
        .get(&format!("{}/metrics", app.base))
        .await
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|line| {
            line.strip_prefix(
                "filesync_backend_requests_total{service=\"filesync\",operation=\"NoticesFallback\"} ",
            )?
            .trim()
            .parse()
            .ok()
        })
        .unwrap_or(0)
}

/// `filesync_stream_get_records_total` of a replica, per shard.
async fn stream_reads(app: &TestApp) -> std::collections::BTreeMap<String, u64> {
    let text = app
        .get(&format!("{}/metrics", app.base))
        .await
        .text()
        .await
        .unwrap();
    text.lines()
        .filter_map(|line| {
            let rest = line.strip_prefix("filesync_stream_get_records_total{shard=\"")?;
            let (shard, count) = rest.split_once("\"} ")?;
            Some((shard.to_owned(), count.trim().parse().ok()?))
        })
        .collect()
}

/// GetRecords calls per second on each shard, summed over `replicas`, during `window`.
async fn reads_per_shard_per_second(replicas: &[&TestApp], window: Duration) -> Vec<f64> {
    let mut before = std::collections::BTreeMap::<String, u64>::new();
    for app in replicas {
        for (shard, n) in stream_reads(app).await {
            *before.entry(shard).or_default() += n;
        }
    }
    tokio::time::sleep(window).await;
    let mut after = std::collections::BTreeMap::<String, u64>::new();
    for app in replicas {
        for (shard, n) in stream_reads(app).await {
            *after.entry(shard).or_default() += n;
        }
    }
    after
        .iter()
        .map(|(shard, n)| {
            (n - before.get(shard).copied().unwrap_or(0)) as f64 / window.as_secs_f64()
        })
        .collect()
}

/// "Any number of replicas": five replicas on one stack read each shard of the stream
/// as one replica would (the lease holder reads, the others hear of every write through
/// the notices topic), every subscriber on every replica gets every write once and in
/// order, and when the reader stops another takes over.
#[tokio::test]
async fn five_replicas_read_each_shard_as_one_and_all_hear_every_write() {
    if !on_aws() {
        eprintln!("replicas share a store only on the AWS backend");
        return;
    }
    let first = spawn_app().await;
    let mut replicas = vec![first];
    for _ in 1..5 {
        let next = spawn_app_in(replicas[0].data_dir.clone(), |_| {}).await;
        replicas.push(next);
    }
    let space = replicas[0].create_space("alice", "Team").await;
    let file = replicas[0]
        .upload_id("alice", &space, "shared.txt", b"v1")
        .await;
    let mut subscribers = Vec::new();
    for app in &replicas {
        let mut sub = app.ws_as("alice", TRANSPORT_WS).await;
        sub.subscribe_changes("s", &space, None).await;
        sub.until_ready().await;
        subscribers.push(sub);
    }
    // Writes through every replica in turn; each reaches every subscriber within two
    // seconds (the fan-out, not the fallback that reads the store after 12 s of silence).
    for base in 1..=10 {
        let writer = &replicas[base as usize % replicas.len()];
        let body = writer
            .update_metadata("alice", &file, base, "n", &base.to_string())
            .await;
        assert!(body.get("errors").is_none(), "{body}");
        for sub in &mut subscribers {
            let got = tokio::time::timeout(Duration::from_secs(2), versions_until(sub, base + 1))
                .await
                .expect("every replica hears of the write within 2 s");
            assert_eq!(got, vec![base + 1]);
        }
    }
    for app in &replicas {
        assert_eq!(
            fallback_reads(app).await,
            0,
            "no replica had to fall back to reading the store"
        );
    }

    let poll = filesync::config::StorageSettings::default().stream_poll_interval;
    let one_reader = 1.0 / poll.as_secs_f64();
    let all: Vec<&TestApp> = replicas.iter().collect();
    let rates = reads_per_shard_per_second(&all, Duration::from_secs(5)).await;
    eprintln!(
        "GetRecords per shard per second across 5 replicas: {rates:?} (one reader: {one_reader})"
    );
    assert!(!rates.is_empty(), "someone reads the stream");
    for rate in &rates {
        assert!(
            *rate <= one_reader * 1.5,
            "the stream is read as by one replica, not five: {rate:.1}/s per shard"
        );
    }

    // The reader stops; another replica takes the lease over and writes still reach
    // every remaining subscriber.
    let reader = {
        let mut reads = Vec::new();
        for app in &replicas {
            reads.push(stream_reads(app).await.values().sum::<u64>());
        }
        (0..replicas.len()).max_by_key(|i| reads[*i]).unwrap()
    };
    let stopped = replicas.remove(reader);
    subscribers.remove(reader);
    stopped.stop().await;
    let writer = &replicas[0];
    let body = writer
        .update_metadata("alice", &file, 11, "n", "after")
        .await;
    assert!(body.get("errors").is_none(), "{body}");
    for sub in &mut subscribers {
        assert_eq!(versions_until(sub, 12).await, vec![12]);
    }
    let remaining: Vec<&TestApp> = replicas.iter().collect();
    let rates = reads_per_shard_per_second(&remaining, Duration::from_secs(3)).await;
    assert!(
        rates.iter().any(|r| *r > 0.0),
        "another replica reads the stream"
    );
}
