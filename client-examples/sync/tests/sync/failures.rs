//! Failures get clear words and distinct exit codes, and lose nothing.

use crate::harness::{Client, converge, server, server_on, text};

/// The server down: `sync` exits 5 saying so; once it is back, the next run carries on.
#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_server_is_exit_5_and_the_next_run_carries_on() {
    let server = server().await;
    let space = server.create_space("alice").await;
    let a = Client::init(&server, "alice", &space).await;
    a.write("before.txt", "1");
    a.sync().await;
    let port = server.port();
    let data = server.stop().await;
    a.write("while-down.txt", "2");
    let out = a.run("sync", &[]).await;
    assert_eq!(out.status.code(), Some(5), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot be reached"));
    let server = server_on(data, Some(port)).await;
    a.sync().await;
    assert!(
        server
            .files("alice", &space)
            .await
            .contains_key("while-down.txt")
    );
}

/// A refused token is exit 3 and says how to get a new one; a lost membership is exit 4
/// and leaves the folder as it is.
#[tokio::test(flavor = "multi_thread")]
async fn a_refused_token_and_a_lost_membership_have_their_own_codes() {
    let server = server().await;
    let space = server.create_space("alice").await;
    server
        .set_member("alice", &space, "bob", Some("EDITOR"))
        .await;
    let b = Client::init(&server, "bob", &space).await;
    b.write("bobs.txt", "b");
    b.sync().await;
    let out = b.run("sync", &["--token", "not-a-token"]).await;
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("filesync token"));

    server.set_member("alice", &space, "bob", None).await;
    b.write("after.txt", "a");
    let out = b.run("sync", &[]).await;
    assert_eq!(out.status.code(), Some(4), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no access"));
    assert_eq!(b.read("bobs.txt"), b"b", "nothing here is touched");
    assert_eq!(b.read("after.txt"), b"a");
}

/// A file that cannot be written here is reported on its own (exit 6); the rest of the
/// pass goes on, and a later pass finishes once the cause is gone.
#[tokio::test(flavor = "multi_thread")]
async fn one_file_that_cannot_be_written_does_not_hold_back_the_rest() {
    let server = server().await;
    let space = server.create_space("alice").await;
    let a = Client::init(&server, "alice", &space).await;
    let b = Client::init(&server, "alice", &space).await;
    a.write("notes/today.txt", "today");
    a.write("other.txt", "other");
    a.sync().await;
    // In B, a file sits where the folder `notes` must go.
    b.write("notes", "a file, not a folder");
    let out = b.run("sync", &[]).await;
    assert_eq!(out.status.code(), Some(6), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("notes"), "{stderr}");
    assert_eq!(b.read("other.txt"), b"other", "the rest went on");
    assert_eq!(b.read("notes"), b"a file, not a folder", "nothing lost");
    let status = b.run("status", &[]).await;
    assert!(
        String::from_utf8_lossy(&status.stdout).contains("notes"),
        "{}",
        text(&status)
    );
    // The person moves their file; the next pass completes.
    std::fs::rename(b.path("notes"), b.path("notes.txt")).unwrap();
    converge(&[&a, &b]).await;
    assert_eq!(a.read("notes.txt"), b"a file, not a folder");
    assert_eq!(b.read("notes/today.txt"), b"today");
}

/// A full disk: what fits arrives, the rest is reported ("the disk is full", exit 6),
/// and no partial file shows under its real name. Runs the client in a mount namespace
/// of its own with a small tmpfs as the folder.
#[tokio::test(flavor = "multi_thread")]
async fn a_full_disk_is_reported_and_leaves_no_partial_file() {
    if std::process::Command::new("unshare")
        .args(["--mount", "--map-root-user", "true"])
        .status()
        .map(|s| !s.success())
        .unwrap_or(true)
    {
        eprintln!("skipped: no mount namespaces here");
        return;
    }
    let server = server().await;
    let space = server.create_space("alice").await;
    let a = Client::init(&server, "alice", &space).await;
    a.write("small.txt", "fits");
    a.write("big.bin", vec![1u8; 6 * 1024 * 1024]);
    a.sync().await;
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("folder");
    std::fs::create_dir(&folder).unwrap();
    let bin = crate::harness::BIN;
    let script = format!(
        "mount -t tmpfs -o size=3m tmpfs {f} && \
         {bin} init {f} --server {s} --space {space} --token {t} >/dev/null && \
         {bin} sync {f}; code=$?; ls -A {f}; ls {f}/.filesync/tmp; exit $code",
        f = folder.display(),
        s = server.base,
        t = server.token("alice"),
    );
    let out = tokio::process::Command::new("unshare")
        .args(["--mount", "--map-root-user", "sh", "-c", &script])
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(6), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("big.bin") && stderr.contains("disk is full"),
        "{stderr}"
    );
    assert!(stdout.contains("small.txt"), "what fits arrives: {stdout}");
    assert!(
        !stdout.lines().any(|l| l == "big.bin"),
        "no partial file under its real name: {stdout}"
    );
}

/// The folder vanishing under `watch` (an unmounted drive) ends the run; it is never
/// read as every file deleted.
#[tokio::test(flavor = "multi_thread")]
async fn a_vanished_folder_stops_watch_and_deletes_nothing() {
    let server = server().await;
    let space = server.create_space("alice").await;
    let a = Client::init(&server, "alice", &space).await;
    a.write("one.txt", "1");
    a.write("two.txt", "2");
    a.sync().await;
    let mut watch = a
        .command(&[
            "watch",
            a.dir.to_str().unwrap(),
            "--rescan",
            "1s",
            "--quiet",
        ])
        .spawn()
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    let aside = a.dir.with_file_name("moved-away");
    std::fs::rename(&a.dir, &aside).unwrap();
    let status = tokio::time::timeout(std::time::Duration::from_secs(20), watch.wait())
        .await
        .expect("watch stops")
        .unwrap();
    assert_eq!(status.code(), Some(1));
    assert_eq!(
        server.files("alice", &space).await.len(),
        2,
        "nothing deleted"
    );
}

/// A token given to a later run replaces the kept one once the server accepts it; one it
/// refuses does not.
#[tokio::test(flavor = "multi_thread")]
async fn a_new_token_is_kept_once_accepted() {
    let server = server().await;
    let space = server.create_space("alice").await;
    let a = Client::init(&server, "alice", &space).await;
    let out = a.run("sync", &["--token", "refused"]).await;
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    a.sync().await;
    let fresh = server.token("alice");
    let out = a.run("sync", &["--token", &fresh]).await;
    assert!(out.status.success(), "{}", text(&out));
    let kept = std::fs::read_to_string(a.path(".filesync/token")).unwrap();
    assert_eq!(kept, fresh);
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(a.path(".filesync/token"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
}
