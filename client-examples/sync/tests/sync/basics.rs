//! Two folders of one space converge, whatever is done to either.

use crate::harness::{Client, converge, server, sha256, text};

/// Create, modify, delete and rename, nested folders, empty files and Unicode names:
/// both folders end up identical, byte for byte, and equal to the space.
#[tokio::test(flavor = "multi_thread")]
async fn two_folders_converge_through_every_kind_of_change() {
    let server = server().await;
    let space = server.create_space("alice").await;
    let a = Client::init(&server, "alice", &space).await;
    let b = Client::init(&server, "alice", &space).await;

    a.write("readme.txt", "hello");
    a.write("docs/deep/nested/plan.md", "# plan");
    a.write("empty", "");
    a.write("unicode/日本語 ñ é.txt", "ünïcödé");
    a.write("photos/2026/beach.jpg", vec![7u8; 300_000]);
    converge(&[&a, &b]).await;
    assert_eq!(b.read("unicode/日本語 ñ é.txt"), "ünïcödé".as_bytes());
    assert_eq!(b.read("empty"), b"");

    // Changes on both sides, to different files.
    b.write("readme.txt", "hello, world");
    std::fs::remove_file(a.path("empty")).unwrap();
    std::fs::rename(a.path("docs/deep/nested/plan.md"), a.path("docs/plan.md")).unwrap();
    b.write("new/from-b.txt", "b");
    converge(&[&a, &b]).await;
    assert_eq!(a.read("readme.txt"), b"hello, world");
    assert!(
        !b.path("empty").exists(),
        "a deletion reaches the other folder"
    );
    assert!(b.path("docs/plan.md").exists());
    assert!(
        !b.path("docs/deep").exists(),
        "folders emptied by a move go too"
    );

    // The rename was a rename, not a delete and a new file.
    let files = server.files("alice", &space).await;
    let (_, version) = &files["docs/plan.md"];
    assert_eq!(
        *version, 2,
        "a rename is a new version of the same file: {files:?}"
    );
    let expected: Vec<&str> = vec![
        "docs/plan.md",
        "new/from-b.txt",
        "photos/2026/beach.jpg",
        "readme.txt",
        "unicode/日本語 ñ é.txt",
    ];
    assert_eq!(
        files.keys().map(String::as_str).collect::<Vec<_>>(),
        expected
    );
    assert_eq!(a.tree().len(), 5);
}

/// A thousand small files and a 200 MB file arrive whole.
#[tokio::test(flavor = "multi_thread")]
async fn many_small_files_and_a_large_one_arrive_whole() {
    let server = server().await;
    let space = server.create_space("alice").await;
    let a = Client::init(&server, "alice", &space).await;
    let b = Client::init(&server, "alice", &space).await;
    for i in 0..1000 {
        a.write(
            &format!("small/{:02}/{i}.txt", i % 17),
            format!("file {i}").repeat(i % 50 + 1),
        );
    }
    let large: Vec<u8> = (0..200u32 * 1024 * 1024 / 4)
        .flat_map(|i| i.to_le_bytes())
        .collect();
    a.write("large.bin", &large);
    converge(&[&a, &b]).await;
    assert_eq!(b.tree().len(), 1001);
    assert_eq!(sha256(&b.read("large.bin")), sha256(&large));
}

/// The same file edited on both sides: the server's version keeps the name, the local
/// one becomes a conflict copy and is uploaded too; both folders agree.
#[tokio::test(flavor = "multi_thread")]
async fn a_file_edited_on_both_sides_keeps_both_contents() {
    let server = server().await;
    let space = server.create_space("alice").await;
    server
        .set_member("alice", &space, "bob", Some("EDITOR"))
        .await;
    let a = Client::init(&server, "alice", &space).await;
    let b = Client::init(&server, "bob", &space).await;
    a.write("report.txt", "v1");
    converge(&[&a, &b]).await;

    a.write("report.txt", "alice's edit");
    b.write("report.txt", "bob's edit");
    a.sync().await;
    let out = b.sync().await;
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("conflict"),
        "the conflict is reported: {}",
        text(&out)
    );
    converge(&[&a, &b]).await;
    let tree = a.tree();
    assert_eq!(tree.len(), 2, "{tree:?}");
    assert_eq!(
        a.read("report.txt"),
        b"alice's edit",
        "the server's version keeps the name"
    );
    let copy = tree
        .keys()
        .find(|k| k.starts_with("report (conflict bob "))
        .unwrap_or_else(|| panic!("a conflict copy named after bob: {tree:?}"));
    assert!(copy.ends_with(").txt"));
    assert_eq!(a.read(copy), b"bob's edit");
    let listed = b.run("conflicts", &[]).await;
    assert!(String::from_utf8_lossy(&listed.stdout).contains(copy.as_str()));
}

/// Offline edits on both sides, then syncs: as if made one after the other; a deletion
/// against a modification leaves the modification.
#[tokio::test(flavor = "multi_thread")]
async fn offline_edits_merge_and_a_change_beats_a_deletion() {
    let server = server().await;
    let space = server.create_space("alice").await;
    let a = Client::init(&server, "alice", &space).await;
    let b = Client::init(&server, "alice", &space).await;
    for name in [
        "keep.txt",
        "edited-here.txt",
        "deleted-there.txt",
        "moved.txt",
    ] {
        a.write(name, name);
    }
    converge(&[&a, &b]).await;

    // Offline: A edits one file and deletes another; B deletes the one A edited and
    // edits the one A deleted, renames one, adds one.
    a.write("edited-here.txt", "edited by a");
    std::fs::remove_file(a.path("deleted-there.txt")).unwrap();
    std::fs::remove_file(b.path("edited-here.txt")).unwrap();
    b.write("deleted-there.txt", "edited by b");
    std::fs::rename(b.path("moved.txt"), b.path("sub/moved.txt")).unwrap_or_else(|_| {
        std::fs::create_dir_all(b.path("sub")).unwrap();
        std::fs::rename(b.path("moved.txt"), b.path("sub/moved.txt")).unwrap();
    });
    b.write("added.txt", "added by b");
    a.sync().await;
    b.sync().await;
    converge(&[&a, &b]).await;
    assert_eq!(
        a.read("edited-here.txt"),
        b"edited by a",
        "the edit beats B's delete"
    );
    assert_eq!(
        a.read("deleted-there.txt"),
        b"edited by b",
        "the edit beats A's delete"
    );
    assert_eq!(a.read("sub/moved.txt"), b"moved.txt");
    assert_eq!(a.read("added.txt"), b"added by b");
    assert_eq!(a.tree().len(), 5, "{:?}", a.tree());
}
