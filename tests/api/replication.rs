//! Replication across stores (DESIGN.md §8): every committed version is copied to every
//! replica store and verified; a store that refuses writes is retried until it takes
//! them; the scrub restores what goes missing or corrupt behind the server's back; a read
//! falls over when the primary lacks an object, which is then repaired; a new store is
//! backfilled.
//!
//! Stores: on the embedded backend two folders; on AWS a second bucket in moto (reached
//! with the backend's own endpoint and credentials: copies run inside S3 as `CopyObject`)
//! and a bucket in s3s-fs (its own endpoint and credentials: copies are streamed).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use filesync::config::{ReplicationSettings, Settings, StoreKind, StoreSettings};
use serde_json::{Value, json};
use tempfile::TempDir;

use crate::helpers::{TestApp, on_aws, sha256_hex, spawn_app_in, spawn_app_with};

/// One test's replica stores.
pub struct Stores {
    dir: TempDir,
    pub settings: Vec<StoreSettings>,
    s3: Option<Vec<(aws_sdk_s3::Client, String)>>,
}

impl Stores {
    pub async fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        if !on_aws() {
            let settings = (0..2)
                .map(|i| StoreSettings {
                    id: format!("folder-{i}"),
                    kind: StoreKind::Folder,
                    path: Some(dir.path().join(format!("store-{i}"))),
                    bucket: None,
                    region: None,
                    endpoint: None,
                    path_style: false,
                    access_key_id: None,
                    secret_access_key: None,
                })
                .collect();
            return Self {
                dir,
                settings,
                s3: None,
            };
        }
        let suffix = &uuid::Uuid::new_v4().simple().to_string()[..12];
        let moto_config = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
        let moto = filesync::storage::aws::s3_client(&moto_config, true);
        let strict_endpoint = std::env::var("TEST_STRICT_S3_ENDPOINT")
            .expect("TEST_STRICT_S3_ENDPOINT (scripts/aws-emulator start)");
        let strict_config = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .endpoint_url(&strict_endpoint)
            .load()
            .await;
        let strict = filesync::storage::aws::s3_client(&strict_config, true);
        let buckets = [format!("rep-moto-{suffix}"), format!("rep-strict-{suffix}")];
        let clients = [moto, strict];
        for (client, bucket) in clients.iter().zip(&buckets) {
            client
                .create_bucket()
                .bucket(bucket)
                .send()
                .await
                .expect("CreateBucket");
        }
        let key = std::env::var("AWS_ACCESS_KEY_ID").unwrap();
        let secret = std::env::var("AWS_SECRET_ACCESS_KEY").unwrap();
        let settings = vec![
            StoreSettings {
                id: "moto".into(),
                kind: StoreKind::S3,
                path: None,
                bucket: Some(buckets[0].clone()),
                region: None,
                endpoint: None,
                path_style: true,
                access_key_id: None,
                secret_access_key: None,
            },
            StoreSettings {
                id: "strict".into(),
                kind: StoreKind::S3,
                path: None,
                bucket: Some(buckets[1].clone()),
                region: Some("us-east-1".into()),
                endpoint: Some(strict_endpoint),
                path_style: true,
                access_key_id: Some(key),
                secret_access_key: Some(filesync::config::Secret::new(secret)),
            },
        ];
        Self {
            dir,
            settings,
            s3: Some(clients.into_iter().zip(buckets).collect()),
        }
    }

    pub fn id(&self, i: usize) -> &str {
        &self.settings[i].id
    }

    /// Replication to these stores, with the short timings of a test.
    pub fn configure(&self, settings: &mut Settings, stores: &[usize]) {
        let r = &mut settings.replication;
        fast(r);
        r.stores = stores.iter().map(|i| self.settings[*i].clone()).collect();
    }

    /// Where store `i` keeps its objects.
    fn place(&self, i: usize) -> Place {
        match &self.s3 {
            None => Place::Folder(self.dir.path().join(format!("store-{i}/blobs"))),
            Some(s3) => Place::Bucket(s3[i].0.clone(), s3[i].1.clone()),
        }
    }

    pub async fn object(&self, i: usize, key: &str) -> Option<Vec<u8>> {
        self.place(i).read(key).await
    }

    pub async fn remove(&self, i: usize, key: &str) {
        self.place(i).remove(key).await
    }

    pub async fn corrupt(&self, i: usize, key: &str) {
        self.place(i).corrupt(key).await
    }

    /// Makes store `i` refuse every write (its folder replaced by a file; its bucket
    /// deleted) until [`Stores::mend`].
    pub async fn break_store(&self, i: usize) {
        match &self.s3 {
            None => {
                let blobs = self.dir.path().join(format!("store-{i}/blobs"));
                std::fs::rename(&blobs, blobs.with_extension("off")).unwrap();
                std::fs::write(&blobs, b"not a folder").unwrap();
            }
            Some(s3) => {
                let (client, bucket) = &s3[i];
                client
                    .delete_bucket()
                    .bucket(bucket)
                    .send()
                    .await
                    .expect("DeleteBucket");
            }
        }
    }

    pub async fn mend(&self, i: usize) {
        match &self.s3 {
            None => {
                let blobs = self.dir.path().join(format!("store-{i}/blobs"));
                std::fs::remove_file(&blobs).unwrap();
                std::fs::rename(blobs.with_extension("off"), &blobs).unwrap();
            }
            Some(s3) => {
                let (client, bucket) = &s3[i];
                client
                    .create_bucket()
                    .bucket(bucket)
                    .send()
                    .await
                    .expect("CreateBucket");
            }
        }
    }
}

pub fn fast(r: &mut ReplicationSettings) {
    r.poll_interval = Duration::from_millis(100);
    r.retry_initial = Duration::from_millis(200);
    r.retry_max = Duration::from_secs(1);
    r.claim_lease = Duration::from_secs(3);
    r.degraded_refresh = Duration::from_millis(200);
    r.job_grace = Duration::from_millis(500);
    r.part_size = 8 << 20;
    r.scrub.pass_interval = Duration::from_millis(300);
    r.scrub.objects_per_second = 1000.0;
    r.scrub.bytes_per_second = 1 << 30;
}

/// Where a store (a replica, or the primary) keeps its objects, for a test to change
/// them behind the server's back.
enum Place {
    Folder(PathBuf),
    Bucket(aws_sdk_s3::Client, String),
}

impl Place {
    /// The primary store of `app`.
    async fn primary(app: &TestApp) -> Self {
        match app.s3().await {
            None => Place::Folder(app.blob_dir()),
            Some((client, bucket)) => Place::Bucket(client, bucket),
        }
    }

    async fn read(&self, key: &str) -> Option<Vec<u8>> {
        match self {
            Place::Folder(dir) => std::fs::read(dir.join(key)).ok(),
            Place::Bucket(client, bucket) => {
                let out = client
                    .get_object()
                    .bucket(bucket)
                    .key(key)
                    .send()
                    .await
                    .ok()?;
                Some(out.body.collect().await.ok()?.into_bytes().to_vec())
            }
        }
    }

    async fn remove(&self, key: &str) {
        match self {
            Place::Folder(dir) => std::fs::remove_file(dir.join(key)).unwrap(),
            Place::Bucket(client, bucket) => {
                client
                    .delete_object()
                    .bucket(bucket)
                    .key(key)
                    .send()
                    .await
                    .unwrap();
            }
        }
    }

    /// Other bytes of the same length: written over the file itself in a folder (same
    /// inode: a check of size and inode alone would not notice); put without a checksum
    /// in a bucket.
    async fn corrupt(&self, key: &str) {
        let flipped: Vec<u8> = self
            .read(key)
            .await
            .unwrap()
            .iter()
            .map(|b| b ^ 0x5a)
            .collect();
        match self {
            Place::Folder(dir) => {
                use std::io::Write;
                let mut file = std::fs::OpenOptions::new()
                    .write(true)
                    .open(dir.join(key))
                    .unwrap();
                file.write_all(&flipped).unwrap();
                file.sync_all().unwrap();
            }
            Place::Bucket(client, bucket) => {
                client
                    .put_object()
                    .bucket(bucket)
                    .key(key)
                    .body(flipped.into())
                    .send()
                    .await
                    .expect("PutObject");
            }
        }
    }
}

/// The primary store's object.
pub async fn primary_object(app: &TestApp, key: &str) -> Option<Vec<u8>> {
    Place::primary(app).await.read(key).await
}

async fn remove_primary(app: &TestApp, key: &str) {
    Place::primary(app).await.remove(key).await
}

async fn corrupt_primary(app: &TestApp, key: &str) {
    Place::primary(app).await.corrupt(key).await
}

/// A committed upload: the file's id and its object's key.
pub struct Uploaded {
    pub file: String,
    pub key: String,
    pub bytes: Vec<u8>,
}

pub async fn upload(app: &TestApp, space: &str, name: &str, bytes: Vec<u8>) -> Uploaded {
    let ticket = app
        .begin_upload("alice", space, name, &bytes, json!({}))
        .await;
    let res = app.put_bytes(&ticket, bytes.clone()).await;
    assert_eq!(res.status(), 200, "PUT: {}", res.text().await.unwrap());
    let file = app.commit("alice", &ticket).await;
    Uploaded {
        file: file["id"].as_str().unwrap().to_owned(),
        key: format!("{space}/{}", ticket.upload_id()),
        bytes,
    }
}

fn bytes_of(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31) ^ seed)
        .collect()
}

const REPLICAS: &str = "query($id: ID!) { file(id: $id) { replicas { store primary status attempts lastError updatedAt } } }";

pub async fn replicas(app: &TestApp, file: &str) -> Vec<Value> {
    let data = app.gql("alice", REPLICAS, json!({ "id": file })).await;
    data["file"]["replicas"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

const STATUS: &str = "query($s: ID!) { replicationStatus(spaceId: $s) { spaceId replicated stores { store primary configured pending failed ok removing oldestPendingAt lagSeconds } job { kind done startedAt } } }";

pub async fn status(app: &TestApp, space: &str) -> Value {
    app.gql("alice", STATUS, json!({ "s": space })).await["replicationStatus"].clone()
}

/// Polls until `done` says yes, for at most `secs` seconds.
pub async fn eventually<F, Fut>(what: &str, secs: u64, mut done: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        match done().await {
            Ok(()) => return,
            Err(why) if tokio::time::Instant::now() > deadline => {
                panic!("{what}: not within {secs} s: {why}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// Waits until every store's copy of `file` is OK.
pub async fn all_ok(app: &TestApp, file: &str, stores: usize) {
    eventually("every copy OK", 60, || async {
        let replicas = replicas(app, file).await;
        let ok = replicas.iter().filter(|r| r["status"] == "OK").count();
        if ok == stores + 1 {
            Ok(())
        } else {
            Err(format!("{replicas:?}"))
        }
    })
    .await
}

async fn app_with(stores: &Stores, which: &[usize], tweak: impl FnOnce(&mut Settings)) -> TestApp {
    spawn_app_with(|s| {
        stores.configure(s, which);
        s.replication.default = true;
        tweak(s);
    })
    .await
}

#[tokio::test]
async fn commits_are_copied_and_verified_in_every_store() {
    let stores = Stores::new().await;
    let app = app_with(&stores, &[0, 1], |_| {}).await;
    let space = app.create_space("alice", "Replicated").await;
    let files = [
        upload(&app, &space, "a.bin", bytes_of(70_000, 1)).await,
        upload(&app, &space, "empty.bin", Vec::new()).await,
        upload(&app, &space, "b.bin", bytes_of(1 << 20, 2)).await,
    ];
    for f in &files {
        all_ok(&app, &f.file, 2).await;
        for i in 0..2 {
            let copy = stores.object(i, &f.key).await.expect("copied");
            assert_eq!(
                sha256_hex(&copy),
                sha256_hex(&f.bytes),
                "{} in {}",
                f.key,
                stores.id(i)
            );
        }
        let replicas = replicas(&app, &f.file).await;
        let names: Vec<&str> = replicas
            .iter()
            .map(|r| r["store"].as_str().unwrap())
            .collect();
        assert_eq!(names.len(), 3);
        assert!(names.contains(&"primary") && names.contains(&stores.id(0)));
        assert!(
            replicas
                .iter()
                .all(|r| r["attempts"] == 0 && r["lastError"].is_null())
        );
    }
    // A rename copies nothing new.
    app.gql(
        "alice",
        "mutation($id: ID!) { updateFile(id: $id, baseVersion: 1, input: { name: \"c.bin\" }) { version } }",
        json!({ "id": files[0].file }),
    )
    .await;
    let status = status(&app, &space).await;
    assert_eq!(status["replicated"], true);
    for store in status["stores"].as_array().unwrap() {
        assert_eq!(
            (
                store["ok"].as_u64(),
                store["pending"].as_u64(),
                store["failed"].as_u64()
            ),
            (Some(3), Some(0), Some(0)),
            "{store}"
        );
        assert_eq!(store["lagSeconds"], 0.0);
        assert_eq!(store["configured"], true);
    }

    // Owners only: an editor is refused, a stranger learns nothing.
    app.set_member("alice", &space, "bob", Some("EDITOR")).await;
    let refused = app
        .gql_as(Some("bob"), REPLICAS, json!({ "id": files[0].file }))
        .await;
    assert_eq!(
        refused["errors"][0]["extensions"]["code"], "FORBIDDEN",
        "{refused}"
    );
    for (user, code) in [("bob", "FORBIDDEN"), ("mallory", "NOT_FOUND")] {
        let body = app.gql_as(Some(user), STATUS, json!({ "s": space })).await;
        assert_eq!(body["errors"][0]["extensions"]["code"], code, "{body}");
        let body = app
            .gql_as(
                Some(user),
                "mutation($s: ID!) { repairSpace(spaceId: $s) { replicated } }",
                json!({ "s": space }),
            )
            .await;
        assert_eq!(body["errors"][0]["extensions"]["code"], code, "{body}");
    }
}

#[tokio::test]
async fn a_store_that_refuses_writes_fails_then_recovers_by_itself() {
    let stores = Stores::new().await;
    let app = app_with(&stores, &[0, 1], |_| {}).await;
    let space = app.create_space("alice", "Flaky").await;
    stores.break_store(0).await;
    // The commit does not wait for the dead store, nor does the healthy one.
    let f = upload(&app, &space, "doc.bin", bytes_of(50_000, 3)).await;
    let dead = stores.id(0).to_owned();
    let healthy = stores.id(1).to_owned();
    eventually(
        "FAILED with attempts in the dead store, OK in the other",
        60,
        || async {
            let replicas = replicas(&app, &f.file).await;
            let of = |id: &str| {
                replicas
                    .iter()
                    .find(|r| r["store"] == id)
                    .cloned()
                    .unwrap_or_default()
            };
            let (d, h) = (of(&dead), of(&healthy));
            let failed = d["status"] == "FAILED"
                && d["attempts"].as_u64() >= Some(2)
                && d["lastError"].as_str().is_some_and(|e| !e.is_empty());
            if failed && h["status"] == "OK" {
                Ok(())
            } else {
                Err(format!("{replicas:?}"))
            }
        },
    )
    .await;
    let status = status(&app, &space).await;
    let dead_status = status["stores"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["store"] == dead.as_str())
        .unwrap()
        .clone();
    assert_eq!(dead_status["failed"], 1, "{dead_status}");
    assert!(dead_status["oldestPendingAt"].is_string(), "{dead_status}");
    assert!(dead_status["lagSeconds"].as_f64().unwrap() > 0.0);

    // Back: the copy lands without anyone asking.
    stores.mend(0).await;
    all_ok(&app, &f.file, 2).await;
    let copy = stores
        .object(0, &f.key)
        .await
        .expect("copied once the store is back");
    assert_eq!(copy, f.bytes);
}

#[tokio::test]
async fn the_scrub_restores_copies_removed_or_corrupted_behind_the_servers_back() {
    let stores = Stores::new().await;
    let app = app_with(&stores, &[0, 1], |_| {}).await;
    let space = app.create_space("alice", "Scrubbed").await;
    let a = upload(&app, &space, "a.bin", bytes_of(40_000, 4)).await;
    let b = upload(&app, &space, "b.bin", bytes_of(60_000, 5)).await;
    all_ok(&app, &a.file, 2).await;
    all_ok(&app, &b.file, 2).await;
    stores.remove(0, &a.key).await;
    stores.corrupt(1, &b.key).await;
    eventually("both copies restored", 60, || async {
        let restored = stores.object(0, &a.key).await.as_deref() == Some(&a.bytes[..])
            && stores.object(1, &b.key).await.as_deref() == Some(&b.bytes[..]);
        if restored {
            Ok(())
        } else {
            Err("not yet".into())
        }
    })
    .await;
    all_ok(&app, &a.file, 2).await;
    all_ok(&app, &b.file, 2).await;
}

#[tokio::test]
async fn a_missing_or_corrupt_primary_object_falls_over_and_is_repaired() {
    let stores = Stores::new().await;
    // On the embedded backend the read itself finds the damage (no scrub); on AWS reads
    // go straight to S3, and the scrub finds it.
    let app = app_with(&stores, &[0, 1], |s| s.replication.scrub.enabled = on_aws()).await;
    let space = app.create_space("alice", "Failover").await;
    let gone = upload(&app, &space, "gone.bin", bytes_of(30_000, 6)).await;
    let bad = upload(&app, &space, "bad.bin", bytes_of(20 << 20, 7)).await;
    let small_bad = upload(&app, &space, "small.bin", bytes_of(5_000, 8)).await;
    for f in [&gone, &bad, &small_bad] {
        all_ok(&app, &f.file, 2).await;
    }
    remove_primary(&app, &gone.key).await;
    corrupt_primary(&app, &bad.key).await;
    corrupt_primary(&app, &small_bad.key).await;

    for f in [&gone, &small_bad, &bad] {
        eventually("the download gives the version's bytes", 60, || async {
            let url = app.file("alice", &f.file).await["downloadUrl"]
                .as_str()
                .unwrap()
                .to_owned();
            let res = app.get(&url).await;
            if res.status() != 200 {
                return Err(format!("status {}", res.status()));
            }
            // A large corrupt read ends in an error before its last bytes: never a
            // complete body of other bytes.
            match res.bytes().await {
                Ok(body) if body[..] == f.bytes[..] => Ok(()),
                // On AWS the client reads from S3 itself: until the scrub finds the
                // damage, the client's own check of the SHA-256 is what catches it.
                Ok(_) if on_aws() => Err("not found by the scrub yet".into()),
                Ok(body) => panic!("{} bytes of other content served for {}", body.len(), f.key),
                Err(e) => Err(format!("body cut off: {e}")),
            }
        })
        .await;
    }
    for f in [&gone, &bad, &small_bad] {
        eventually("the primary is repaired", 60, || async {
            if primary_object(&app, &f.key).await.as_deref() == Some(&f.bytes[..]) {
                Ok(())
            } else {
                Err("not yet".into())
            }
        })
        .await;
        all_ok(&app, &f.file, 2).await;
        // A repaired object is committed content: never tagged for the lifecycle rule.
        let (space, upload) = f.key.split_once('/').unwrap();
        if let Some(tags) = app.object_tags(space, upload).await {
            assert!(tags.is_empty(), "{tags:?}");
        }
    }
}

#[tokio::test]
async fn adding_a_store_backfills_every_version() {
    let stores = Stores::new().await;
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let app = spawn_app_in(dir.clone(), |s| {
        stores.configure(s, &[0]);
        s.replication.default = true;
    })
    .await;
    let space = app.create_space("alice", "Backfilled").await;
    let mut all = Vec::new();
    for i in 0..3 {
        all.push(
            upload(
                &app,
                &space,
                &format!("f{i}.bin"),
                bytes_of(10_000 + i, i as u8),
            )
            .await,
        );
    }
    // A second version of the first file: both versions' objects count.
    let v2 = bytes_of(12_345, 9);
    let ticket = app
        .begin_upload(
            "alice",
            &space,
            "f0.bin",
            &v2,
            json!({ "fileId": all[0].file, "baseVersion": 1 }),
        )
        .await;
    app.put_bytes(&ticket, v2.clone()).await;
    app.commit("alice", &ticket).await;
    all.push(Uploaded {
        file: all[0].file.clone(),
        key: format!("{space}/{}", ticket.upload_id()),
        bytes: v2,
    });
    eventually("the first store has everything", 60, || async {
        for f in &all {
            if stores.object(0, &f.key).await.is_none() {
                return Err(f.key.clone());
            }
        }
        Ok(())
    })
    .await;
    let dir = app.stop().await;

    let app = spawn_app_in(dir, |s| {
        stores.configure(s, &[0, 1]);
        s.replication.default = true;
    })
    .await;
    eventually("the new store is backfilled", 60, || async {
        for f in &all {
            match stores.object(1, &f.key).await {
                Some(bytes) if bytes == f.bytes => {}
                _ => return Err(f.key.clone()),
            }
        }
        Ok(())
    })
    .await;
    let status = status(&app, &space).await;
    let new = status["stores"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["store"] == stores.id(1))
        .unwrap()
        .clone();
    eventually("counted OK", 30, || async {
        let s = super::replication::status(&app, &space).await;
        let new = s["stores"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["store"] == stores.id(1))
            .unwrap()
            .clone();
        if new["ok"] == 4 {
            Ok(())
        } else {
            Err(format!("{new}"))
        }
    })
    .await;
    assert_eq!(new["configured"], true);
    assert_eq!(status["job"]["kind"], "BACKFILL");
}

#[tokio::test]
async fn turning_replication_on_backfills_the_space_and_off_stops_copying() {
    let stores = Stores::new().await;
    let app = spawn_app_with(|s| stores.configure(s, &[0])).await;
    let space = app.create_space("alice", "Opt-in").await;
    let before = upload(&app, &space, "before.bin", bytes_of(8_000, 10)).await;
    assert!(
        replicas(&app, &before.file).await.is_empty(),
        "the default is off"
    );
    assert_eq!(status(&app, &space).await["replicated"], false);

    let settings = "mutation($s: ID!, $m: ReplicationMode) { updateSpaceSettings(spaceId: $s, input: { replication: $m }) { settings { replication } } }";
    let on = app
        .gql("alice", settings, json!({ "s": space, "m": "ON" }))
        .await;
    assert_eq!(on["updateSpaceSettings"]["settings"]["replication"], "ON");
    all_ok(&app, &before.file, 1).await;
    assert_eq!(stores.object(0, &before.key).await.unwrap(), before.bytes);

    let off = app
        .gql("alice", settings, json!({ "s": space, "m": "OFF" }))
        .await;
    assert_eq!(off["updateSpaceSettings"]["settings"]["replication"], "OFF");
    let after = upload(&app, &space, "after.bin", bytes_of(8_000, 11)).await;
    assert!(replicas(&app, &after.file).await.is_empty());
    // Left out, the setting stays.
    let kept = app
        .gql("alice", settings, json!({ "s": space, "m": null }))
        .await;
    assert_eq!(
        kept["updateSpaceSettings"]["settings"]["replication"],
        "OFF"
    );
}

#[tokio::test]
async fn cancelled_uploads_are_never_copied() {
    let stores = Stores::new().await;
    let app = app_with(&stores, &[0], |_| {}).await;
    let space = app.create_space("alice", "Cancelled").await;
    let bytes = bytes_of(9_000, 12);
    let ticket = app
        .begin_upload("alice", &space, "c.bin", &bytes, json!({}))
        .await;
    // Bytes that are stored but never committed (they are not the declared ones).
    app.store_uncommittable(&space, &ticket, &bytes_of(9_000, 99))
        .await;
    let body = app.cancel_raw("alice", &ticket).await;
    assert!(body.get("errors").is_none(), "{body}");
    let kept = upload(&app, &space, "kept.bin", bytes_of(9_000, 13)).await;
    all_ok(&app, &kept.file, 1).await;
    let key = format!("{space}/{}", ticket.upload_id());
    assert!(stores.object(0, &key).await.is_none());
    let status = status(&app, &space).await;
    for store in status["stores"].as_array().unwrap() {
        assert_eq!(store["ok"], 1, "only the committed one: {store}");
    }
}

#[tokio::test]
async fn a_repair_checks_every_copy_and_restores_what_is_bad() {
    let stores = Stores::new().await;
    let app = app_with(&stores, &[0, 1], |s| s.replication.scrub.enabled = false).await;
    let space = app.create_space("alice", "Repaired").await;
    let a = upload(&app, &space, "a.bin", bytes_of(25_000, 14)).await;
    all_ok(&app, &a.file, 2).await;
    stores.corrupt(0, &a.key).await;
    remove_primary(&app, &a.key).await;
    let started = app
        .gql(
            "alice",
            "mutation($s: ID!) { repairSpace(spaceId: $s) { job { kind done } } }",
            json!({ "s": space }),
        )
        .await;
    assert_eq!(started["repairSpace"]["job"]["kind"], "REPAIR", "{started}");
    eventually("repaired", 60, || async {
        let ok = stores.object(0, &a.key).await.as_deref() == Some(&a.bytes[..])
            && primary_object(&app, &a.key).await.as_deref() == Some(&a.bytes[..]);
        let done = status(&app, &space).await["job"]["done"] == true;
        if ok && done {
            Ok(())
        } else {
            Err("not yet".into())
        }
    })
    .await;
}

/// A GraphQL call as alice to a server that may be killed meanwhile.
async fn try_gql(app: &TestApp, query: &str, variables: Value) -> Option<Value> {
    let res = app
        .client
        .post(format!("{}/graphql", app.base))
        .bearer_auth(app.token("alice"))
        .json(&json!({ "query": query, "variables": variables }))
        .send()
        .await
        .ok()?;
    res.json().await.ok()
}

/// [`upload`], for a server that may be killed meanwhile: `None` unless committed.
async fn try_upload(app: &TestApp, space: &str, name: &str, bytes: Vec<u8>) -> Option<Uploaded> {
    let begun = try_gql(
        app,
        "mutation($i: BeginUploadInput!) { beginUpload(input: $i) { uploadId uploadToken url headers { name value } } }",
        json!({ "i": {
            "spaceId": space, "name": name, "size": bytes.len(),
            "sha256": sha256_hex(&bytes), "contentType": "application/octet-stream",
        }}),
    )
    .await?;
    let ticket = crate::helpers::Ticket(begun.get("data")?.get("beginUpload")?.clone());
    if ticket.0.is_null() {
        eprintln!("beginUpload: {begun}");
        return None;
    }
    let mut put = app.client.put(ticket.url()).body(bytes.clone());
    for h in ticket.0["headers"].as_array()? {
        put = put.header(h["name"].as_str()?, h["value"].as_str()?);
    }
    let sent = put.send().await.ok()?;
    if !sent.status().is_success() {
        eprintln!("PUT: {}", sent.status());
        return None;
    }
    let committed = try_gql(
        app,
        "mutation($id: ID!, $t: String!) { commitUpload(uploadId: $id, uploadToken: $t) { id } }",
        json!({ "id": ticket.upload_id(), "t": ticket.token() }),
    )
    .await?;
    if committed.get("errors").is_some() {
        eprintln!("commitUpload: {committed}");
    }
    let file = committed
        .get("data")?
        .get("commitUpload")?
        .get("id")?
        .as_str()?
        .to_owned();
    Some(Uploaded {
        file,
        key: format!("{space}/{}", ticket.upload_id()),
        bytes,
    })
}

/// The configuration file of a server process replicating to `stores`.
fn config_file(
    dir: &std::path::Path,
    stores: &Stores,
    tweak: impl FnOnce(&mut ReplicationSettings),
) -> PathBuf {
    #[derive(serde::Serialize)]
    struct File {
        replication: ReplicationSettings,
    }
    let mut settings = Settings::default();
    stores.configure(&mut settings, &[0, 1]);
    settings.replication.default = true;
    tweak(&mut settings.replication);
    let path = dir.join("replication.toml");
    std::fs::write(
        &path,
        toml::to_string(&File {
            replication: settings.replication,
        })
        .unwrap(),
    )
    .unwrap();
    path
}

/// The environment of a server process on this run's backend, with its data dir.
fn process_env(dir: &std::path::Path) -> Vec<(String, String)> {
    if !on_aws() {
        return Vec::new();
    }
    let mut settings = Settings::default();
    crate::helpers::use_aws_stack(&mut settings, dir);
    crate::process::aws_env(&settings)
}

#[tokio::test]
async fn kill_9_while_copying_loses_no_copy_and_no_status() {
    use rand::{Rng, SeedableRng};
    let seed: u64 = std::env::var("CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    eprintln!("CRASH_SEED={seed}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let rounds: usize = std::env::var("CRASH_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let stores = Stores::new().await;
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let env = process_env(dir.path());
    // One copy at a time, of objects of megabytes: a kill lands mid-copy.
    let config = config_file(dir.path(), &stores, |r| {
        r.copy_concurrency = 1;
        r.scrub.enabled = false;
    });
    let start = || crate::process::ServerProcess::start_with(dir.path(), &env, Some(&config));
    let mut server = start().await;
    let app = TestApp::external(server.base.clone(), dir.clone());
    let space = app.create_space("alice", "Crashed").await;
    let mut acked: Vec<Uploaded> = Vec::new();
    for round in 0..rounds {
        let app = Arc::new(TestApp::external(server.base.clone(), dir.clone()));
        let writer = {
            let (app, space) = (app.clone(), space.clone());
            let sizes: Vec<usize> = (0..40).map(|_| rng.random_range(1..4) << 20).collect();
            tokio::spawn(async move {
                let mut done = Vec::new();
                for (i, size) in sizes.into_iter().enumerate() {
                    let bytes = bytes_of(size, (round * 10 + i) as u8);
                    match try_upload(&app, &space, &format!("r{round}-{i}.bin"), bytes).await {
                        Some(u) => done.push(u),
                        None => break,
                    }
                }
                done
            })
        };
        tokio::time::sleep(Duration::from_millis(rng.random_range(100..800))).await;
        server.kill9();
        acked.extend(writer.await.unwrap());
        server = start().await;
        let restarted = TestApp::external(server.base.clone(), dir.clone());
        let unsettled: u64 = status(&restarted, &space).await["stores"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["pending"].as_u64().unwrap() + s["failed"].as_u64().unwrap())
            .sum();
        eprintln!(
            "round {round}: {} acknowledged uploads, {unsettled} copies unsettled at the kill",
            acked.len()
        );
    }
    let app = TestApp::external(server.base.clone(), dir.clone());
    for f in &acked {
        all_ok(&app, &f.file, 2).await;
        for i in 0..2 {
            let copy = stores.object(i, &f.key).await;
            assert_eq!(
                copy.as_deref().map(sha256_hex),
                Some(sha256_hex(&f.bytes)),
                "{} in {}",
                f.key,
                stores.id(i)
            );
        }
    }
    // Commits whose answer the kill cut off are copied too, and count.
    eventually("nothing unsettled", 60, || async {
        let status = status(&app, &space).await;
        for store in status["stores"].as_array().unwrap() {
            let unsettled = (store["pending"].as_u64(), store["failed"].as_u64());
            if unsettled != (Some(0), Some(0)) || store["ok"].as_u64().unwrap() < acked.len() as u64
            {
                return Err(format!("{store}"));
            }
        }
        Ok(())
    })
    .await;
}

#[tokio::test]
async fn two_servers_never_copy_one_object_twice() {
    if !on_aws() {
        eprintln!("servers share a store only on the AWS backend");
        return;
    }
    let stores = Stores::new().await;
    let stack = Arc::new(tempfile::tempdir().unwrap());
    let env = process_env(stack.path());
    let config = config_file(stack.path(), &stores, |r| r.scrub.enabled = false);
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = crate::process::ServerProcess::start_with(dir_a.path(), &env, Some(&config)).await;
    let b = crate::process::ServerProcess::start_with(dir_b.path(), &env, Some(&config)).await;
    let app_a = TestApp::external(a.base.clone(), stack.clone());
    let app_b = TestApp::external(b.base.clone(), stack.clone());
    let space = app_a.create_space("alice", "Shared").await;
    let mut files = Vec::new();
    for i in 0..12 {
        let app = if i % 2 == 0 { &app_a } else { &app_b };
        files.push(upload(app, &space, &format!("f{i}.bin"), bytes_of(30_000, i as u8)).await);
    }
    for f in &files {
        all_ok(&app_a, &f.file, 2).await;
    }
    // Each copy was made by one server, once: the requests that write a replica's object
    // (CopyObject into the moto bucket, PutObject into s3s-fs), counted by both servers,
    // add up to one per object and store. Uploads go from the client to S3 (uncounted).
    let mut writes = std::collections::HashMap::<String, u64>::new();
    for app in [&app_a, &app_b] {
        let metrics = app
            .get(&format!("{}/metrics", app.base))
            .await
            .text()
            .await
            .unwrap();
        for line in metrics
            .lines()
            .filter(|l| l.starts_with("filesync_backend_requests_total{"))
        {
            for op in ["CopyObject", "PutObject"] {
                if line.contains(&format!("operation=\"{op}\"")) && line.contains("service=\"s3\"")
                {
                    let n: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
                    *writes.entry(op.to_owned()).or_default() += n as u64;
                }
            }
        }
    }
    assert_eq!(writes.get("CopyObject"), Some(&12), "{writes:?}");
    assert_eq!(writes.get("PutObject"), Some(&12), "{writes:?}");
}

#[tokio::test]
async fn a_server_without_a_store_still_queues_its_copies_until_it_is_retired() {
    let stores = Stores::new().await;
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let both = spawn_app_in(dir.clone(), |s| {
        stores.configure(s, &[0, 1]);
        s.replication.default = true;
    })
    .await;
    let space = both.create_space("alice", "Rolling").await;
    let first = upload(&both, &space, "first.bin", bytes_of(5_000, 20)).await;
    all_ok(&both, &first.file, 2).await;
    let dir = both.stop().await;

    // A server configured with the first store only (a rolling change): its commits are
    // queued for the second store too, which another server copies later.
    let one = spawn_app_in(dir.clone(), |s| {
        stores.configure(s, &[0]);
        s.replication.default = true;
    })
    .await;
    let second = upload(&one, &space, "second.bin", bytes_of(5_000, 21)).await;
    let listed: Vec<String> = replicas(&one, &second.file)
        .await
        .iter()
        .map(|r| r["store"].as_str().unwrap().to_owned())
        .collect();
    assert!(listed.contains(&stores.id(1).to_owned()), "{listed:?}");
    let dir = one.stop().await;

    // Retired: no more copies queued for it.
    let retired = spawn_app_in(dir, |s| {
        stores.configure(s, &[0]);
        s.replication.default = true;
        s.replication.retired_stores = vec![stores.id(1).to_owned()];
    })
    .await;
    let third = upload(&retired, &space, "third.bin", bytes_of(5_000, 22)).await;
    all_ok(&retired, &third.file, 1).await;
    assert_eq!(replicas(&retired, &third.file).await.len(), 2);
}

#[tokio::test]
async fn a_folder_store_that_lost_its_marker_is_refused_rather_than_filled_anew() {
    if on_aws() {
        eprintln!("folder stores are the embedded backend's");
        return;
    }
    let stores = Stores::new().await;
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let configure = |s: &mut Settings| {
        stores.configure(s, &[0]);
        s.replication.default = true;
    };
    let app = spawn_app_in(dir.clone(), configure).await;
    let space = app.create_space("alice", "Disk").await;
    let f = upload(&app, &space, "f.bin", bytes_of(5_000, 23)).await;
    all_ok(&app, &f.file, 1).await;
    let dir = app.stop().await;
    // The disk is not mounted: an empty folder where the store was.
    let folder = stores.settings[0].path.clone().unwrap();
    std::fs::remove_dir_all(&folder).unwrap();
    std::fs::create_dir(&folder).unwrap();
    let mut settings = Settings::default();
    settings.server.listen = "127.0.0.1:0".parse().unwrap();
    settings.storage.data_dir = dir.path().to_owned();
    configure(&mut settings);
    let refused = filesync::startup::App::build(settings)
        .await
        .err()
        .expect("refused");
    assert!(
        format!("{refused:#}").contains("is its disk mounted"),
        "{refused:#}"
    );
    assert!(
        !folder.join("FILESYNC-STORE").exists(),
        "nothing written there"
    );
}
