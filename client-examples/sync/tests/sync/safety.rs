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

/// A synced folder is never synced inside another: `init` refuses to nest, and a
/// `.filesync` found anyway (a copied folder) is never uploaded, token and all.
#[tokio::test(flavor = "multi_thread")]
async fn a_nested_synced_folder_and_its_token_never_leave_the_disk() {
    let server = server().await;
    let space = server.create_space("alice").await;
    let a = Client::init(&server, "alice", &space).await;
    let inner = a.path("project");
    let out = a
        .run_with(&[
            "init",
            inner.to_str().unwrap(),
            "--server",
            &server.base,
            "--new-space",
            "Inner",
            "--token",
            &server.token("alice"),
        ])
        .await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is inside the synced folder"));
    // A synced folder copied in: its state stays here.
    a.write("copied/.filesync/token", "secret-token");
    a.write("copied/.filesync/state.db", "state");
    a.write("copied/notes.txt", "notes");
    a.sync().await;
    let files = server.files("alice", &space).await;
    assert_eq!(
        files.keys().collect::<Vec<_>>(),
        ["copied/notes.txt"],
        "{files:?}"
    );
}

/// A symbolic link to a folder outside is not followed, either way.
#[tokio::test(flavor = "multi_thread")]
async fn a_link_out_of_the_folder_is_never_followed() {
    let server = server().await;
    let space = server.create_space("alice").await;
    let a = Client::init(&server, "alice", &space).await;
    let b = Client::init(&server, "alice", &space).await;
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("private.key"), "private").unwrap();
    std::os::unix::fs::symlink(outside.path(), b.path("outside")).unwrap();
    b.sync().await;
    assert!(
        server.files("alice", &space).await.is_empty(),
        "nothing behind the link goes up"
    );
    // A file the space has under that name is not written through the link.
    a.write("outside/planted.txt", "planted");
    a.sync().await;
    let out = b.run("sync", &[]).await;
    assert_eq!(out.status.code(), Some(6), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("symbolic link"));
    assert!(
        !outside.path().join("planted.txt").exists(),
        "nothing written outside"
    );
    let status = b.run("status", &[]).await;
    assert!(String::from_utf8_lossy(&status.stdout).contains("1 symbolic links"));
}

/// Names are compared as the server compares them: `STRASSE.txt` made here clashes with
/// `Straße.txt` there (full case folding), and becomes a conflict copy rather than a
/// retry forever; a name in another Unicode form is given the server's form.
#[tokio::test(flavor = "multi_thread")]
async fn names_clash_and_normalise_as_the_server_has_them() {
    let server = server().await;
    let space = server.create_space("alice").await;
    let a = Client::init(&server, "alice", &space).await;
    let b = Client::init(&server, "alice", &space).await;
    a.write("Straße.txt", "from a");
    a.sync().await;
    b.write("STRASSE.txt", "from b");
    b.write("cafe\u{301}.txt", "decomposed");
    b.sync().await;
    converge(&[&a, &b]).await;
    let tree = a.tree();
    assert_eq!(a.read("Straße.txt"), b"from a");
    assert!(
        tree.keys()
            .any(|k| k.starts_with("STRASSE (conflict alice ")),
        "{tree:?}"
    );
    assert!(tree.contains_key("caf\u{e9}.txt"), "{tree:?}");
    assert!(
        !b.path("cafe\u{301}.txt").exists(),
        "renamed to the server's form here too"
    );
    let versions = server.files("alice", &space).await["caf\u{e9}.txt"].1;
    b.sync().await;
    assert_eq!(
        server.files("alice", &space).await["caf\u{e9}.txt"].1,
        versions,
        "no churn"
    );
}

/// A file moved there under a name this folder ignores is gone here (as if deleted);
/// an edit made here meanwhile survives as a new file.
#[tokio::test(flavor = "multi_thread")]
async fn a_file_moved_into_an_ignored_name_leaves_this_folder() {
    let server = server().await;
    let space = server.create_space("alice").await;
    let a = Client::init(&server, "alice", &space).await;
    let b = Client::init(&server, "alice", &space).await;
    // A's rules are its own (the ignore file ignores itself).
    a.write(".filesyncignore", "*.log\n/.filesyncignore\n");
    a.write("quiet.txt", "q");
    a.write("edited.txt", "e");
    a.sync().await;
    b.sync().await;
    std::fs::rename(b.path("quiet.txt"), b.path("quiet.log")).unwrap();
    std::fs::rename(b.path("edited.txt"), b.path("edited.log")).unwrap();
    b.sync().await;
    a.write("edited.txt", "edited in a meanwhile");
    a.sync().await;
    assert!(!a.path("quiet.txt").exists(), "gone here");
    assert_eq!(a.read("edited.txt"), b"edited in a meanwhile");
    let files = server.files("alice", &space).await;
    assert!(files.contains_key("quiet.log") && files.contains_key("edited.log"));
    assert!(
        files.contains_key("edited.txt"),
        "the edit went up as a new file: {files:?}"
    );
    // And nothing keeps retrying.
    let out = a.run("sync", &[]).await;
    assert!(out.status.success(), "{}", text(&out));
}
