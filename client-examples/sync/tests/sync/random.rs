//! Hundreds of random operations on two folders, interleaved with syncs and with syncs
//! killed (`kill -9`) midway; replayable from its seed (`SYNC_SEED`, printed on
//! failure; `SYNC_OPS` sets how many). After quiescence the folders are identical, and
//! every content a folder held when a completed sync began is somewhere: in a folder,
//! or in the space's history.

use std::collections::HashSet;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::harness::{Client, server, text};

const DIRS: [&str; 4] = ["", "a/", "a/b/", "c/"];
const NAMES: [&str; 6] = ["x.txt", "X.txt", "y", "z.md", "é.txt", "w"];
const SYNC: [&str; 4] = ["--settle", "0s", "--max-delete", "100%"];

fn random_path(rng: &mut StdRng) -> String {
    format!(
        "{}{}",
        DIRS[rng.random_range(0..DIRS.len())],
        NAMES[rng.random_range(0..NAMES.len())]
    )
}

fn files(c: &Client) -> Vec<String> {
    c.tree().into_keys().collect()
}

async fn sync(c: &Client) {
    let out = c.run("sync", &SYNC).await;
    if std::env::var_os("SYNC_LOG").is_some() {
        eprintln!("sync {}: {}", c.dir.display(), text(&out));
    }
    assert!(out.status.success(), "{}", text(&out));
}

async fn run(seed: u64, ops: usize) {
    let mut rng = StdRng::seed_from_u64(seed);
    let server = server().await;
    let space = server.create_space("alice").await;
    server
        .set_member("alice", &space, "bob", Some("OWNER"))
        .await;
    let clients = [
        Client::init(&server, "alice", &space).await,
        Client::init(&server, "bob", &space).await,
    ];
    let mut kept: HashSet<String> = HashSet::new();
    for n in 0..ops {
        let c = &clients[rng.random_range(0..2)];
        let existing = files(c);
        let op = rng.random_range(0..20);
        if std::env::var_os("SYNC_LOG").is_some() && op < 13 {
            eprintln!("op {n} on {}: {op}", c.dir.display());
        }
        match op {
            0..=4 => {
                let path = random_path(&mut rng);
                if !c.path(&path).exists() {
                    let len = rng.random_range(0..4096);
                    c.write(&path, format!("{seed}/{n}/").repeat(len / 8 + 1));
                }
            }
            5..=8 if !existing.is_empty() => {
                let path = &existing[rng.random_range(0..existing.len())];
                c.write(path, format!("edit {seed}/{n}"));
            }
            9..=10 if !existing.is_empty() => {
                let path = &existing[rng.random_range(0..existing.len())];
                std::fs::remove_file(c.path(path)).unwrap();
            }
            11..=12 if !existing.is_empty() => {
                let from = &existing[rng.random_range(0..existing.len())];
                let to = random_path(&mut rng);
                if !c.path(&to).exists() {
                    std::fs::create_dir_all(c.path(&to).parent().unwrap()).unwrap();
                    std::fs::rename(c.path(from), c.path(&to)).unwrap();
                }
            }
            13..=17 => {
                kept.extend(c.tree().into_values());
                sync(c).await;
            }
            18..=19 => {
                let mut child = c
                    .command(&["sync", c.dir.to_str().unwrap(), "--quiet", "--settle", "0s"])
                    .spawn()
                    .unwrap();
                let delay = Duration::from_millis(rng.random_range(0..250));
                if std::env::var_os("SYNC_LOG").is_some() {
                    eprintln!("sync {} killed after {delay:?}", c.dir.display());
                }
                tokio::select! {
                    _ = child.wait() => {}
                    () = tokio::time::sleep(delay) => {
                        child.start_kill().unwrap();
                        let _ = child.wait().await;
                    }
                }
            }
            _ => {}
        }
    }
    // Quiescence.
    for c in clients.iter().chain(&clients).chain(&clients) {
        kept.extend(c.tree().into_values());
        sync(c).await;
    }
    let (a, b) = (clients[0].tree(), clients[1].tree());
    assert_eq!(a, b, "seed {seed}: the folders differ");
    assert_eq!(
        server.contents("alice", &space).await,
        a,
        "seed {seed}: the space differs"
    );
    let history = server.history("alice", &space).await;
    let now: HashSet<&String> = a.values().collect();
    for sha in &kept {
        assert!(
            history.contains(sha) || now.contains(sha),
            "seed {seed}: content {sha} was in a folder when a sync began and is lost"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn random_operations_syncs_and_crashes_on_two_folders_converge_and_lose_nothing() {
    let seed = std::env::var("SYNC_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random::<u64>);
    let ops = std::env::var("SYNC_OPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(300);
    eprintln!("SYNC_SEED={seed} SYNC_OPS={ops}");
    run(seed, ops).await;
}
