//! `kill -9` of the client at many points of a download and of an upload: no partial
//! file ever shows under its real name, nothing half-written reaches the server, and
//! the next run converges.

use std::collections::HashSet;
use std::time::Duration;

use rand::{Rng, SeedableRng};

use crate::harness::{Client, converge, server, server_with, text};

/// Runs `sync` on `client` and kills it (SIGKILL) after `delay`.
async fn sync_killed_after(client: &Client, delay: Duration) {
    let mut child = client
        .command(&["sync", client.dir.to_str().unwrap(), "--quiet"])
        .spawn()
        .unwrap();
    tokio::select! {
        _ = child.wait() => {}
        () = tokio::time::sleep(delay) => {
            child.start_kill().unwrap();
            let _ = child.wait().await;
        }
    }
}

fn random_bytes(rng: &mut rand::rngs::StdRng, len: usize) -> Vec<u8> {
    let mut bytes = vec![0u8; len];
    rng.fill(&mut bytes[..]);
    bytes
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_mid_download_and_mid_upload_loses_nothing_and_shows_nothing_partial() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let server = server().await;
    let space = server.create_space("alice").await;
    let a = Client::init(&server, "alice", &space).await;
    a.write("large.bin", random_bytes(&mut rng, 48 * 1024 * 1024));
    for i in 0..120 {
        let len = rng.random_range(0..64 * 1024);
        a.write(
            &format!("small/{}/{i}.dat", i % 7),
            random_bytes(&mut rng, len),
        );
    }
    // Uploads killed at many points.
    let wanted = a.tree();
    for delay_ms in [20, 60, 120, 200, 300, 450, 600, 800, 1100, 1500] {
        sync_killed_after(&a, Duration::from_millis(delay_ms)).await;
        let on_server = server.contents("alice", &space).await;
        for (name, sha) in &on_server {
            assert_eq!(
                wanted.get(name),
                Some(sha),
                "after a kill at {delay_ms} ms, {name} on the server is not what the folder holds"
            );
        }
    }
    a.sync().await;
    assert_eq!(
        server.contents("alice", &space).await,
        wanted,
        "every file once, whole"
    );

    // Downloads killed at many points.
    let b = Client::init(&server, "alice", &space).await;
    let shas: HashSet<&String> = wanted.values().collect();
    for delay_ms in [10, 40, 80, 150, 250, 350, 500, 700, 900, 1200, 1600] {
        sync_killed_after(&b, Duration::from_millis(delay_ms)).await;
        for (name, sha) in b.tree() {
            assert!(
                shas.contains(&sha) && wanted.get(&name) == Some(&sha),
                "after a kill at {delay_ms} ms, {name} is visible but not whole"
            );
        }
    }
    converge(&[&a, &b]).await;
    assert_eq!(b.tree(), wanted);
}

/// The parts of the multipart upload a killed client left in its state database: how
/// many the server holds, and how many there are.
async fn stored_parts(server: &crate::harness::Server, client: &Client) -> Option<(usize, usize)> {
    let db = rusqlite::Connection::open(client.dir.join(".filesync/state.db")).ok()?;
    let ticket: String = db
        .query_row("SELECT ticket FROM uploads", [], |r| r.get(0))
        .ok()?;
    let ticket: serde_json::Value = serde_json::from_str(&ticket).unwrap();
    let status = server
        .gql(
            "alice",
            "query($u: ID!, $t: String!) { uploadStatus(uploadId: $u, uploadToken: $t) {
                state partCount missingParts } }",
            serde_json::json!({ "u": ticket["uploadId"], "t": ticket["uploadToken"] }),
        )
        .await;
    let status = &status["uploadStatus"];
    let count = status["partCount"].as_u64()? as usize;
    Some((count - status["missingParts"].as_array()?.len(), count))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_multipart_upload_resumes_without_sending_the_stored_parts_again() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    // Parts above 1 MiB: a 96 MiB file is twelve parts of 8 MiB.
    let server = server_with(|s| s.uploads.multipart_threshold = 1 << 20).await;
    let space = server.create_space("alice").await;
    let a = Client::init(&server, "alice", &space).await;
    let bytes = random_bytes(&mut rng, 96 * 1024 * 1024);
    a.write("video.bin", &bytes);
    // Killed at growing delays until a kill lands between parts (each run resumes what
    // the one before stored).
    let mut stored = None;
    for delay_ms in (4..200).map(|i| i * 25) {
        sync_killed_after(&a, Duration::from_millis(delay_ms)).await;
        assert!(
            server.contents("alice", &space).await.is_empty(),
            "published before a kill at {delay_ms} ms landed between two parts"
        );
        match stored_parts(&server, &a).await {
            Some((had, count)) if had > 0 && had < count => {
                stored = Some(had);
                break;
            }
            _ => {}
        }
    }
    let had = stored.expect("no kill landed between two parts");
    let out = a.sync().await;
    let said =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    let resumed = said
        .lines()
        .find_map(|l| l.strip_prefix("resumed video.bin: "))
        .unwrap_or_else(|| panic!("no resume reported: {}", text(&out)));
    let again: usize = resumed.split(' ').next().unwrap().parse().unwrap();
    // Parts in flight when the client died may have landed since: never fewer.
    assert!(again >= had, "{again} parts reused, {had} were stored");
    let contents = server.contents("alice", &space).await;
    assert_eq!(
        contents.get("video.bin"),
        Some(&crate::harness::sha256(&bytes))
    );
    assert!(
        stored_parts(&server, &a).await.is_none(),
        "the upload is forgotten"
    );
}
