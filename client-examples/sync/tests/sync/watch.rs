//! `watch`: changes flow both ways while it runs; what changed while it was down, and
//! what its filesystem watcher missed, is found by its scans.

use std::time::Duration;

use crate::harness::{Client, server, text};

/// Waits (up to 20 s) until `check` holds.
async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !check() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn watch(client: &Client, extra: &[&str]) -> tokio::process::Child {
    let mut args = vec!["watch", client.dir.to_str().unwrap(), "--quiet"];
    args.extend_from_slice(extra);
    client.command(&args).spawn().unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn changes_flow_both_ways_while_watching_and_after_a_restart() {
    let server = server().await;
    let space = server.create_space("alice").await;
    let a = Client::init(&server, "alice", &space).await;
    let b = Client::init(&server, "alice", &space).await;
    let mut wa = watch(&a, &[]);
    let mut wb = watch(&b, &[]);

    a.write("docs/hello.txt", "hello");
    eventually("a new file in B", || b.path("docs/hello.txt").exists()).await;
    eventually("its bytes", || {
        std::fs::read(b.path("docs/hello.txt")).ok().as_deref() == Some(b"hello")
    })
    .await;
    b.write("docs/hello.txt", "hello from b");
    eventually("an edit in A", || {
        a.read("docs/hello.txt") == b"hello from b"
    })
    .await;
    std::fs::rename(a.path("docs/hello.txt"), a.path("hello.txt")).unwrap();
    eventually("a rename in B", || {
        b.path("hello.txt").exists() && !b.path("docs/hello.txt").exists()
    })
    .await;
    std::fs::remove_file(b.path("hello.txt")).unwrap();
    eventually("a deletion in A", || !a.path("hello.txt").exists()).await;

    // B goes down; both sides change meanwhile.
    wb.kill().await.unwrap();
    a.write("while-b-was-down.txt", "from a");
    b.write("made-offline.txt", "from b");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut wb = watch(&b, &[]);
    eventually("A's change in B after the restart", || {
        b.path("while-b-was-down.txt").exists()
    })
    .await;
    eventually("B's offline change in A", || {
        a.path("made-offline.txt").exists()
    })
    .await;

    for w in [&mut wa, &mut wb] {
        assert!(w.try_wait().unwrap().is_none(), "watch keeps running");
        w.kill().await.unwrap();
    }
    assert_eq!(a.tree(), b.tree());
}

/// A change the filesystem watcher cannot see (made through a hard link outside the
/// folder: inotify reports events by the path used) is found by the periodic rescan.
#[tokio::test(flavor = "multi_thread")]
async fn a_change_the_watcher_misses_is_found_by_the_rescan() {
    let server = server().await;
    let space = server.create_space("alice").await;
    let a = Client::init(&server, "alice", &space).await;
    let b = Client::init(&server, "alice", &space).await;
    a.write("linked.txt", "one");
    a.sync().await;
    let outside = a.dir.parent().unwrap().join("outside-link");
    std::fs::hard_link(a.path("linked.txt"), &outside).unwrap();
    let mut wa = watch(&a, &["--rescan", "2s"]);
    let mut wb = watch(&b, &[]);
    eventually("the file in B", || b.path("linked.txt").exists()).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    std::fs::write(&outside, "two, written behind the watcher's back").unwrap();
    eventually("the hidden change in B", || {
        std::fs::read(b.path("linked.txt")).ok().as_deref()
            == Some(b"two, written behind the watcher's back")
    })
    .await;
    wa.kill().await.unwrap();
    wb.kill().await.unwrap();
}

/// Watch survives the server going away and coming back, and resumes from its cursor.
#[tokio::test(flavor = "multi_thread")]
async fn watch_waits_out_a_server_restart() {
    let server = server().await;
    let space = server.create_space("alice").await;
    let a = Client::init(&server, "alice", &space).await;
    let b = Client::init(&server, "alice", &space).await;
    let mut wb = watch(&b, &[]);
    a.write("first.txt", "1");
    a.sync().await;
    eventually("the first file", || b.path("first.txt").exists()).await;
    let port = server.port();
    let data = server.stop().await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let server = crate::harness::server_on(data, Some(port)).await;
    a.write("second.txt", "2");
    a.sync().await;
    eventually("a change after the restart", || {
        b.path("second.txt").exists()
    })
    .await;
    assert!(wb.try_wait().unwrap().is_none());
    wb.kill().await.unwrap();
    drop(server);
}

/// A token refused while watching ends the run with exit 3.
#[tokio::test(flavor = "multi_thread")]
async fn watch_ends_with_exit_3_when_the_token_is_refused() {
    let server = server().await;
    let space = server.create_space("alice").await;
    let a = Client::init(&server, "alice", &space).await;
    let out = tokio::time::timeout(
        Duration::from_secs(20),
        a.command(&["watch", a.dir.to_str().unwrap(), "--token", "bad"])
            .output(),
    )
    .await
    .expect("watch ends")
    .unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
}
