//! The guards: `--max-delete`, `--dry-run`, `.filesyncignore`, and what a user may not do
//! on the server.

use crate::harness::{Client, converge, server, text};

/// A pass that would delete more than `--max-delete` stops before changing anything.
#[tokio::test(flavor = "multi_thread")]
async fn a_mass_deletion_stops_with_a_clear_message_until_allowed() {
    let server = server().await;
    let space = server.create_space("alice").await;
    let a = Client::init(&server, "alice", &space).await;
    for i in 0..10 {
        a.write(&format!("f{i}.txt"), format!("{i}"));
    }
    a.sync().await;
    for i in 0..6 {
        std::fs::remove_file(a.path(&format!("f{i}.txt"))).unwrap();
    }
    let out = a.run("sync", &[]).await;
    assert_eq!(out.status.code(), Some(7), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("would delete 6 of 10"), "{stderr}");
    assert!(
        stderr.contains("--max-delete"),
        "it says what to do: {stderr}"
    );
    assert_eq!(
        server.files("alice", &space).await.len(),
        10,
        "nothing deleted"
    );
    // A count works too, and so does allowing it.
    let out = a.run("sync", &["--max-delete", "5"]).await;
    assert_eq!(out.status.code(), Some(7), "{}", text(&out));
    let out = a.run("sync", &["--max-delete", "100%"]).await;
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(server.files("alice", &space).await.len(), 4);
    // Bob's folder applies the deletions: they were allowed where they were made... but
    // deleting 6 of 10 is as alarming here, so the same guard applies.
    let b = Client::init(&server, "alice", &space).await;
    b.sync().await;
    assert_eq!(b.tree().len(), 4);
}

/// `--dry-run` prints the plan and changes nothing, here or on the server.
#[tokio::test(flavor = "multi_thread")]
async fn a_dry_run_prints_the_plan_and_changes_nothing() {
    let server = server().await;
    let space = server.create_space("alice").await;
    let a = Client::init(&server, "alice", &space).await;
    let b = Client::init(&server, "alice", &space).await;
    a.write("from-a.txt", "a");
    a.sync().await;
    b.write("from-b.txt", "b");
    let out = b.run("sync", &["--dry-run", "--settle", "0s"]).await;
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("download") && stdout.contains("from-a.txt"),
        "{stdout}"
    );
    assert!(
        stdout.contains("upload new") && stdout.contains("from-b.txt"),
        "{stdout}"
    );
    assert!(!b.path("from-a.txt").exists());
    assert_eq!(server.files("alice", &space).await.len(), 1);
    // And the real pass does what was printed.
    b.sync().await;
    assert!(b.path("from-a.txt").exists());
    assert_eq!(server.files("alice", &space).await.len(), 2);
}

/// `.filesyncignore` keeps files out both ways; removing a rule brings back what it
/// left out (the client compares a full listing when its rules change).
#[tokio::test(flavor = "multi_thread")]
async fn ignored_files_stay_out_until_the_rule_goes() {
    let server = server().await;
    let space = server.create_space("alice").await;
    let a = Client::init(&server, "alice", &space).await;
    let b = Client::init(&server, "alice", &space).await;
    b.write("logs/today.log", "log");
    b.write("keep.txt", "keep");
    b.sync().await;
    a.write(".filesyncignore", "logs/\n*.tmp\n");
    a.write("scratch.tmp", "temporary");
    a.write(".DS_Store", "finder");
    a.sync().await;
    assert!(
        !a.path("logs/today.log").exists(),
        "an ignored remote file is not fetched"
    );
    let files = server.files("alice", &space).await;
    assert!(!files.contains_key("scratch.tmp") && !files.contains_key(".DS_Store"));
    assert!(
        files.contains_key(".filesyncignore"),
        "the rules themselves are shared"
    );
    // B gets the rules: its ignored file stays where it is, on both sides.
    b.sync().await;
    assert!(b.path("logs/today.log").exists());
    assert!(
        server
            .files("alice", &space)
            .await
            .contains_key("logs/today.log")
    );
    // The rule goes: the file comes.
    a.write(".filesyncignore", "*.tmp\n");
    a.sync().await;
    assert_eq!(a.read("logs/today.log"), b"log");
    // What is still ignored stays A's alone.
    std::fs::remove_file(a.path("scratch.tmp")).unwrap();
    std::fs::remove_file(a.path(".DS_Store")).unwrap();
    converge(&[&a, &b]).await;
}

/// A viewer's folder follows the space; their local changes are reported, never pushed,
/// and never lost.
#[tokio::test(flavor = "multi_thread")]
async fn a_viewer_receives_and_keeps_their_own_edits_locally() {
    let server = server().await;
    let space = server.create_space("alice").await;
    server
        .set_member("alice", &space, "vera", Some("VIEWER"))
        .await;
    let a = Client::init(&server, "alice", &space).await;
    let v = Client::init(&server, "vera", &space).await;
    a.write("shared.txt", "from alice");
    a.sync().await;
    v.sync().await;
    assert_eq!(v.read("shared.txt"), b"from alice");
    v.write("mine.txt", "vera's note");
    let out = v.run("sync", &[]).await;
    assert_eq!(out.status.code(), Some(6), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("mine.txt"));
    assert_eq!(v.read("mine.txt"), b"vera's note", "kept locally");
    // A deletion she may not make comes back rather than vanishing from the space.
    std::fs::remove_file(v.path("shared.txt")).unwrap();
    let out = v.run("sync", &[]).await;
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("restored"),
        "{}",
        text(&out)
    );
    let _ = v.run("sync", &[]).await;
    assert!(
        server
            .files("alice", &space)
            .await
            .contains_key("shared.txt")
    );
    assert_eq!(v.read("shared.txt"), b"from alice", "restored");
}
