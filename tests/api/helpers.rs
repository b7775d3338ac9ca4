//! The test harness: `spawn_app` starts the server through the same `App::build` path as
//! `filesync serve`, on port 0 with a fresh data dir; `TestApp` has one method per thing
//! a client does.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use filesync::auth::{Authenticator, load_or_create_secret};
use filesync::config::Settings;
use filesync::domain::UserId;
use filesync::startup::App;
use serde_json::{Value, json};
use sha2::Digest;
use tempfile::TempDir;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub struct TestApp {
    pub base: String,
    pub client: reqwest::Client,
    /// Kept alive (and deleted on drop) with the app; shared with restarted apps.
    pub data_dir: Arc<TempDir>,
    auth: Authenticator,
    stop: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<anyhow::Result<()>>>,
}

/// Starts a server on a fresh data dir.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// Starts a server on a fresh data dir, after `configure` adjusts the settings.
pub async fn spawn_app_with(configure: impl FnOnce(&mut Settings)) -> TestApp {
    spawn_app_in(Arc::new(tempfile::tempdir().expect("temp dir")), configure).await
}

/// Starts a server on an existing data dir (a restart).
pub async fn spawn_app_in(
    data_dir: Arc<TempDir>,
    configure: impl FnOnce(&mut Settings),
) -> TestApp {
    if std::env::var_os("TEST_LOG").is_some() {
        filesync::telemetry::init(&Default::default());
    }
    let mut settings = Settings::default();
    settings.server.listen = "127.0.0.1:0".parse().unwrap();
    settings.storage.data_dir = data_dir.path().to_owned();
    if on_aws() {
        use_aws_stack(&mut settings, data_dir.path());
    }
    configure(&mut settings);
    let secret = load_or_create_secret(&settings.storage.data_dir).expect("secret");
    let auth = Authenticator::new(&secret, Duration::from_secs(5));
    let app = App::build(settings).await.expect("app builds");
    let base = format!("http://{}", app.local_addr());
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until_stopped(async {
        let _ = stopped.await;
    }));
    TestApp {
        base,
        client: reqwest::Client::new(),
        data_dir,
        auth,
        stop: Some(stop),
        server: Some(server),
    }
}

impl TestApp {
    /// A client of a server this test started as a child process (see `process.rs`),
    /// whose data dir (and so token secret) is `data_dir`.
    pub fn external(base: String, data_dir: Arc<TempDir>) -> TestApp {
        let secret = load_or_create_secret(data_dir.path()).expect("secret");
        TestApp {
            base,
            client: reqwest::Client::new(),
            data_dir,
            auth: Authenticator::new(&secret, Duration::from_secs(5)),
            stop: None,
            server: None,
        }
    }
}

/// Whether the API suite runs against the AWS backend (`TEST_BACKEND=aws`, with
/// the emulator's `AWS_*` variables, as `scripts/test` sets them) rather than the embedded
/// one.
pub fn on_aws() -> bool {
    std::env::var("TEST_BACKEND").is_ok_and(|b| b == "aws")
}

/// Points `settings` at a CloudFormation stack of its own, deployed into the emulator by
/// the operators' own script on first use of `data_dir` (a restarted app reuses it), and
/// at a shared token secret, as every replica on AWS needs.
pub fn use_aws_stack(settings: &mut Settings, data_dir: &std::path::Path) {
    crate::aws_stack::use_stack(&mut settings.storage, data_dir);
    let secret_file = data_dir.join("jwt-secret");
    if !secret_file.exists() {
        // A secret of printable bytes, so that it can be given as `auth.jwt_secret`; the
        // data dir's secret file holds the same bytes for the tests that forge tokens.
        let secret = hex::encode(rand::random::<[u8; 32]>());
        std::fs::write(&secret_file, hex::encode(secret.as_bytes())).unwrap();
    }
    let secret = load_or_create_secret(data_dir).unwrap();
    settings.auth.jwt_secret = Some(filesync::config::Secret::new(
        String::from_utf8(secret).expect("a printable secret"),
    ));
}

/// For tests of what an upload or download URL itself refuses (size, checksum, type,
/// signature, expiry, an abandoned upload): the embedded blob endpoint enforces it, and
/// this suite checks it. On AWS, S3 enforces it; moto checks neither signatures nor
/// checksums, so the storage contract suite checks the AWS backend's URLs against the
/// strict S3 server s3s-fs instead (`tests/storage/strict_s3.rs`).
pub fn url_checks_belong_to_s3() -> bool {
    if on_aws() {
        eprintln!("on AWS this is S3's check: see tests/storage/strict_s3.rs (s3s-fs)");
    }
    on_aws()
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(bytes))
}

impl TestApp {
    /// A valid bearer token for `user`.
    pub fn token(&self, user: &str) -> String {
        self.auth
            .issue(&UserId::parse(user).unwrap(), Duration::from_secs(3600))
            .unwrap()
    }

    /// Stops the server gracefully and waits for it; the data dir stays.
    pub async fn stop(mut self) -> Arc<TempDir> {
        self.shutdown().await;
        self.data_dir.clone()
    }

    async fn shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(server) = self.server.take() {
            server
                .await
                .expect("server task")
                .expect("server stops cleanly");
        }
    }

    pub fn blob_dir(&self) -> PathBuf {
        self.data_dir.path().join("blobs")
    }

    /// Whether the object of an upload is in storage.
    pub async fn blob_exists(&self, space: &str, upload: &str) -> bool {
        match self.s3().await {
            None => self.blob_dir().join(format!("{space}/{upload}")).exists(),
            Some((s3, bucket)) => s3
                .head_object()
                .bucket(bucket)
                .key(format!("{space}/{upload}"))
                .send()
                .await
                .is_ok(),
        }
    }

    /// How many multipart uploads the store holds for a space: folders under
    /// `multipart/` on the embedded backend (for any space), `ListMultipartUploads` on AWS.
    pub async fn multipart_uploads_left(&self, space: &str) -> usize {
        match self.s3().await {
            None => std::fs::read_dir(self.data_dir.path().join("multipart"))
                .map(|dir| dir.count())
                .unwrap_or(0),
            Some((s3, bucket)) => s3
                .list_multipart_uploads()
                .bucket(bucket)
                .prefix(format!("{space}/"))
                .send()
                .await
                .expect("ListMultipartUploads")
                .uploads()
                .len(),
        }
    }

    /// Stores bytes for a pending upload that its commit will refuse (they do not match
    /// the declared checksum): through the upload URL on the embedded backend; straight
    /// into the bucket, without a checksum, on AWS (moto would take wrong bytes with the
    /// declared checksum and commit them; S3 refuses them at the URL).
    pub async fn store_uncommittable(&self, space: &str, ticket: &Ticket, bytes: &[u8]) {
        match self.s3().await {
            None => {
                self.put_bytes(ticket, bytes.to_vec()).await;
            }
            Some((s3, bucket)) => {
                s3.put_object()
                    .bucket(bucket)
                    .key(format!("{space}/{}", ticket.upload_id()))
                    .body(bytes.to_vec().into())
                    .send()
                    .await
                    .expect("PutObject");
            }
        }
    }

    /// The tags of an upload's object (`key=value`), on AWS; `None` on the embedded
    /// backend, which keeps no tags, or when there is no such object.
    pub async fn object_tags(&self, space: &str, upload: &str) -> Option<Vec<String>> {
        let (s3, bucket) = self.s3().await?;
        let out = s3
            .get_object_tagging()
            .bucket(bucket)
            .key(format!("{space}/{upload}"))
            .send()
            .await
            .ok()?;
        Some(
            out.tag_set()
                .iter()
                .map(|t| format!("{}={}", t.key(), t.value()))
                .collect(),
        )
    }

    /// On AWS, writes an upload's object straight into the bucket, tagged as the upload
    /// URL tags it (as a second PUT through that URL would), bypassing the URL's
    /// conditions.
    pub async fn put_pending_object(&self, space: &str, upload: &str, bytes: &[u8]) {
        let (s3, bucket) = self.s3().await.expect("on AWS");
        s3.put_object()
            .bucket(bucket)
            .key(format!("{space}/{upload}"))
            .tagging("Status=Pending")
            .body(bytes.to_vec().into())
            .send()
            .await
            .expect("PutObject");
    }

    /// The object a presigned download URL (path style) points at, on AWS: its size,
    /// stored SHA-256 (hex) and tags.
    pub async fn object_of_url(&self, url: &str) -> Option<StoredObject> {
        let (s3, bucket) = self.s3().await?;
        let path = url.split('?').next()?;
        let key = path.split_once(&format!("/{bucket}/"))?.1.to_owned();
        let head = s3
            .head_object()
            .bucket(&bucket)
            .key(&key)
            .checksum_mode(aws_sdk_s3::types::ChecksumMode::Enabled)
            .send()
            .await
            .ok()?;
        use base64::Engine;
        let sha256 = head
            .checksum_sha256()
            .and_then(|b64| base64::engine::general_purpose::STANDARD.decode(b64).ok())
            .map(hex::encode);
        let tags = s3
            .get_object_tagging()
            .bucket(&bucket)
            .key(&key)
            .send()
            .await
            .ok()?
            .tag_set()
            .iter()
            .map(|t| format!("{}={}", t.key(), t.value()))
            .collect();
        Some(StoredObject {
            size: head.content_length().unwrap_or(0) as u64,
            sha256,
            tags,
        })
    }

    /// An S3 client on the app's bucket, on AWS.
    pub async fn s3(&self) -> Option<(aws_sdk_s3::Client, String)> {
        let stack = std::fs::read(self.data_dir.path().join("aws-stack.json")).ok()?;
        let stack: Value = serde_json::from_slice(&stack).unwrap();
        let config = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
        let s3 = filesync::storage::aws::s3_client(&config, true);
        Some((s3, stack["FILESYNC_STORAGE__BUCKET"].as_str()?.to_owned()))
    }

    /// A raw GraphQL round trip as `user` (no Authorization header when `None`).
    pub async fn gql_as(&self, user: Option<&str>, query: &str, variables: Value) -> Value {
        let mut req = self
            .client
            .post(format!("{}/graphql", self.base))
            .json(&json!({ "query": query, "variables": variables }));
        if let Some(user) = user {
            req = req.bearer_auth(self.token(user));
        }
        let res = req.send().await.expect("request");
        assert_eq!(res.status(), 200, "GraphQL answers 200");
        res.json().await.expect("json body")
    }

    /// `data` of a request that must succeed.
    pub async fn gql(&self, user: &str, query: &str, variables: Value) -> Value {
        let body = self.gql_as(Some(user), query, variables).await;
        assert!(
            body.get("errors").is_none(),
            "unexpected errors: {body:#}\nquery: {query}"
        );
        body["data"].clone()
    }

    /// The first error of a request that must fail: `(code, whole error)`.
    pub async fn gql_err(
        &self,
        user: Option<&str>,
        query: &str,
        variables: Value,
    ) -> (String, Value) {
        let body = self.gql_as(user, query, variables).await;
        let error = body["errors"][0].clone();
        assert!(!error.is_null(), "expected an error, got {body:#}");
        let code = error["extensions"]["code"]
            .as_str()
            .unwrap_or_else(|| panic!("error without code: {error:#}"))
            .to_owned();
        (code, error)
    }

    pub async fn create_space(&self, user: &str, name: &str) -> String {
        let data = self
            .gql(
                user,
                "mutation($name: String!) { createSpace(name: $name) { id } }",
                json!({ "name": name }),
            )
            .await;
        data["createSpace"]["id"].as_str().unwrap().to_owned()
    }

    pub async fn set_member(&self, owner: &str, space: &str, user: &str, role: Option<&str>) {
        self.gql(
            owner,
            "mutation($s: ID!, $u: ID!, $r: Role) { setMember(spaceId: $s, userId: $u, role: $r) { id } }",
            json!({ "s": space, "u": user, "r": role }),
        )
        .await;
    }

    /// `beginUpload` for `bytes` with `extra` input fields merged in; the raw response.
    pub async fn begin_upload_raw(&self, user: &str, input: Value) -> Value {
        self.gql_as(
            Some(user),
            "mutation($input: BeginUploadInput!) { beginUpload(input: $input) {
                uploadId uploadToken fileId version url method headers { name value }
                formFields { name value } expiresAt } }",
            json!({ "input": input }),
        )
        .await
    }

    pub async fn begin_upload(
        &self,
        user: &str,
        space: &str,
        name: &str,
        bytes: &[u8],
        extra: Value,
    ) -> Ticket {
        let mut input = json!({
            "spaceId": space, "name": name, "size": bytes.len(),
            "sha256": sha256_hex(bytes), "contentType": "application/octet-stream",
        });
        if let (Some(input), Some(extra)) = (input.as_object_mut(), extra.as_object()) {
            input.extend(extra.clone());
        }
        let body = self.begin_upload_raw(user, input).await;
        assert!(body.get("errors").is_none(), "beginUpload failed: {body:#}");
        Ticket(body["data"]["beginUpload"].clone())
    }

    /// Sends bytes to a ticket's URL with the headers it asks for.
    pub async fn put_bytes(&self, ticket: &Ticket, bytes: Vec<u8>) -> reqwest::Response {
        let mut req = self.client.put(ticket.url()).body(bytes);
        for h in ticket.0["headers"].as_array().unwrap() {
            req = req.header(h["name"].as_str().unwrap(), h["value"].as_str().unwrap());
        }
        req.send().await.expect("PUT")
    }

    pub async fn commit_raw(&self, user: &str, ticket: &Ticket) -> Value {
        self.gql_as(
            Some(user),
            &format!(
                "mutation($id: ID!, $t: String!) {{ commitUpload(uploadId: $id, uploadToken: $t) {{ {FILE_FIELDS} }} }}"
            ),
            json!({ "id": ticket.upload_id(), "t": ticket.token() }),
        )
        .await
    }

    pub async fn commit(&self, user: &str, ticket: &Ticket) -> Value {
        let body = self.commit_raw(user, ticket).await;
        assert!(
            body.get("errors").is_none(),
            "commitUpload failed: {body:#}"
        );
        body["data"]["commitUpload"].clone()
    }

    /// The whole three-phase upload; returns the committed file.
    /// [`TestApp::upload`], returning only the new file's id.
    pub async fn upload_id(&self, user: &str, space: &str, name: &str, bytes: &[u8]) -> String {
        let file = self.upload(user, space, name, bytes).await;
        file["id"].as_str().expect("a file id").to_owned()
    }

    pub async fn upload(&self, user: &str, space: &str, name: &str, bytes: &[u8]) -> Value {
        let ticket = self.begin_upload(user, space, name, bytes, json!({})).await;
        let res = self.put_bytes(&ticket, bytes.to_vec()).await;
        assert_eq!(res.status(), 200, "PUT: {}", res.text().await.unwrap());
        self.commit(user, &ticket).await
    }

    pub async fn file(&self, user: &str, id: &str) -> Value {
        self.gql(
            user,
            &format!("query($id: ID!) {{ file(id: $id) {{ {FILE_FIELDS} }} }}"),
            json!({ "id": id }),
        )
        .await["file"]
            .clone()
    }

    pub async fn update_metadata(
        &self,
        user: &str,
        id: &str,
        base: i64,
        key: &str,
        value: &str,
    ) -> Value {
        self.gql_as(
            Some(user),
            &format!(
                "mutation($id: ID!, $b: Int!, $k: String!, $v: String!) {{
                    updateFile(id: $id, baseVersion: $b, input: {{ metadata: [{{ key: $k, value: $v }}] }}) {{ {FILE_FIELDS} }} }}"
            ),
            json!({ "id": id, "b": base, "k": key, "v": value }),
        )
        .await
    }

    /// One `changes` page.
    pub async fn changes(
        &self,
        user: &str,
        space: &str,
        since: Option<&str>,
        limit: Option<i64>,
    ) -> Value {
        self.gql(
            user,
            "query($s: ID!, $c: Cursor, $l: Int) { changes(spaceId: $s, since: $c, limit: $l) {
                files { id name version deleted cursor } nextCursor hasMore } }",
            json!({ "s": space, "c": since, "l": limit }),
        )
        .await["changes"]
            .clone()
    }

    /// `cancelUpload` of a ticket; the raw response.
    pub async fn cancel_raw(&self, user: &str, ticket: &Ticket) -> Value {
        self.gql_as(
            Some(user),
            "mutation($id: ID!, $t: String!) { cancelUpload(uploadId: $id, uploadToken: $t) }",
            json!({ "id": ticket.upload_id(), "t": ticket.token() }),
        )
        .await
    }

    pub async fn get(&self, url: &str) -> reqwest::Response {
        self.client.get(url).send().await.expect("GET")
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// An object in the bucket, as S3 describes it.
#[derive(Debug)]
pub struct StoredObject {
    pub size: u64,
    pub sha256: Option<String>,
    pub tags: Vec<String>,
}

pub const FILE_FIELDS: &str = "id spaceId name version size sha256 contentType creator deleted cursor downloadUrl metadata { key value }";

/// A `beginUpload` result.
pub struct Ticket(pub Value);

impl Ticket {
    pub fn url(&self) -> &str {
        self.0["url"].as_str().unwrap()
    }
    pub fn upload_id(&self) -> &str {
        self.0["uploadId"].as_str().unwrap()
    }
    pub fn token(&self) -> &str {
        self.0["uploadToken"].as_str().unwrap()
    }
    pub fn file_id(&self) -> &str {
        self.0["fileId"].as_str().unwrap()
    }
}

/// The code of a JSON error body of a non-GraphQL endpoint.
pub async fn http_error_code(res: reqwest::Response) -> String {
    let body: Value = res.json().await.expect("json error body");
    body["errors"][0]["extensions"]["code"]
        .as_str()
        .unwrap_or_else(|| panic!("no code in {body}"))
        .to_owned()
}
