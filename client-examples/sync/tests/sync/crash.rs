//! `kill -9` of the client at many points of a download and of an upload: no partial
//! file ever shows under its real name, nothing half-written reaches the server, and
//! the next run converges.

use std::collections::HashSet;
use std::time::Duration;

use rand::{Rng, SeedableRng};

use crate::harness::{Client, converge, server};

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
