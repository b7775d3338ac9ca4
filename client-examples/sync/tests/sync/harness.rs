//! A real server on port 0 (the same `App::build` path as `filesync serve`) and clients
//! that run the real `filesync-sync` binary on real folders.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::Arc;
use std::time::Duration;

use filesync::auth::{Authenticator, load_or_create_secret};
use filesync::config::Settings;
use filesync::domain::UserId;
use filesync::startup::App;
use serde_json::{Value, json};
use tempfile::TempDir;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub const BIN: &str = env!("CARGO_BIN_EXE_filesync-sync");

pub struct Server {
    pub base: String,
    pub data: Arc<TempDir>,
    auth: Authenticator,
    http: reqwest::Client,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<anyhow::Result<()>>>,
}

/// A server on a fresh data dir.
pub async fn server() -> Server {
    server_on(Arc::new(tempfile::tempdir().unwrap()), None).await
}

/// A server on a fresh data dir, after `configure` adjusts its settings.
pub async fn server_with(configure: impl FnOnce(&mut Settings)) -> Server {
    server_configured(Arc::new(tempfile::tempdir().unwrap()), None, configure).await
}

/// A server on `data` (a restart), on `port` if given.
pub async fn server_on(data: Arc<TempDir>, port: Option<u16>) -> Server {
    server_configured(data, port, |_| {}).await
}

async fn server_configured(
    data: Arc<TempDir>,
    port: Option<u16>,
    configure: impl FnOnce(&mut Settings),
) -> Server {
    let mut settings = Settings::default();
    settings.server.listen = format!("127.0.0.1:{}", port.unwrap_or(0)).parse().unwrap();
    settings.storage.data_dir = data.path().to_owned();
    // The clients of a test are one user's many files: no rate limit in the way.
    settings.limits.mutations_per_second = 100_000.0;
    settings.limits.mutation_burst = 100_000;
    configure(&mut settings);
    let secret = load_or_create_secret(&settings.storage.data_dir).unwrap();
    let auth = Authenticator::new(&secret, Duration::from_secs(5));
    let app = App::build(settings).await.expect("the server starts");
    let base = format!("http://{}", app.local_addr());
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(app.run_until_stopped(async {
        let _ = stopped.await;
    }));
    Server {
        base,
        data,
        auth,
        http: reqwest::Client::new(),
        stop: Some(stop),
        task: Some(task),
    }
}

impl Server {
    pub fn token(&self, user: &str) -> String {
        self.auth
            .issue(&UserId::parse(user).unwrap(), Duration::from_secs(3600))
            .unwrap()
    }

    pub fn port(&self) -> u16 {
        self.base.rsplit(':').next().unwrap().parse().unwrap()
    }

    /// Stops the server (its data dir stays).
    pub async fn stop(mut self) -> Arc<TempDir> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
        self.data.clone()
    }

    pub async fn gql(&self, user: &str, query: &str, variables: Value) -> Value {
        let res: Value = self
            .http
            .post(format!("{}/graphql", self.base))
            .bearer_auth(self.token(user))
            .json(&json!({ "query": query, "variables": variables }))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert!(res.get("errors").is_none(), "{res}");
        res["data"].clone()
    }

    pub async fn create_space(&self, user: &str) -> String {
        let data = self
            .gql(
                user,
                "mutation { createSpace(name: \"Team\") { id } }",
                json!({}),
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

    /// Every content the server ever committed in the space (all versions of all
    /// files, deleted ones included), as SHA-256s.
    pub async fn history(&self, user: &str, space: &str) -> std::collections::HashSet<String> {
        let mut shas = std::collections::HashSet::new();
        let mut since = Value::Null;
        loop {
            let page = self
                .gql(
                    user,
                    "query($s: ID!, $c: Cursor) { changes(spaceId: $s, since: $c, limit: 500) {
                        files { id } nextCursor hasMore } }",
                    json!({ "s": space, "c": since }),
                )
                .await;
            for f in page["changes"]["files"].as_array().unwrap() {
                let versions = self
                    .gql(
                        user,
                        "query($id: ID!) { fileVersions(id: $id, first: 1000) { sha256 deleted } }",
                        json!({ "id": f["id"] }),
                    )
                    .await;
                for v in versions["fileVersions"].as_array().unwrap() {
                    shas.insert(v["sha256"].as_str().unwrap().to_owned());
                }
            }
            since = page["changes"]["nextCursor"].clone();
            if !page["changes"]["hasMore"].as_bool().unwrap() {
                return shas;
            }
        }
    }

    /// The live files of the space: name -> SHA-256.
    pub async fn contents(&self, user: &str, space: &str) -> BTreeMap<String, String> {
        let data = self
            .gql(
                user,
                "query($s: ID!) { files(spaceId: $s, first: 1000) { nodes { name sha256 } } }",
                json!({ "s": space }),
            )
            .await;
        data["files"]["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| {
                let name = f["name"].as_str().unwrap().to_owned();
                (name, f["sha256"].as_str().unwrap().to_owned())
            })
            .collect()
    }

    /// The live files of the space: name -> (id, version).
    pub async fn files(&self, user: &str, space: &str) -> BTreeMap<String, (String, i64)> {
        let data = self
            .gql(
                user,
                "query($s: ID!) { files(spaceId: $s, first: 1000) { nodes { id name version } } }",
                json!({ "s": space }),
            )
            .await;
        data["files"]["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| {
                let name = f["name"].as_str().unwrap().to_owned();
                let id = f["id"].as_str().unwrap().to_owned();
                (name, (id, f["version"].as_i64().unwrap()))
            })
            .collect()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// A synced folder and the binary run on it.
pub struct Client {
    pub dir: PathBuf,
    _tmp: TempDir,
}

impl Client {
    /// `init` of a fresh folder of `space` as `user`.
    pub async fn init(server: &Server, user: &str, space: &str) -> Client {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("folder");
        let client = Client { dir, _tmp: tmp };
        let out = client
            .run_with(&[
                "init",
                client.dir.to_str().unwrap(),
                "--server",
                &server.base,
                "--space",
                space,
                "--token",
                &server.token(user),
            ])
            .await;
        assert!(out.status.success(), "init: {}", text(&out));
        client
    }

    pub fn command(&self, args: &[&str]) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(BIN);
        cmd.args(args)
            .env_remove("FILESYNC_TOKEN")
            .env("RUST_BACKTRACE", "0")
            .kill_on_drop(true)
            .stdin(std::process::Stdio::null());
        cmd
    }

    pub async fn run_with(&self, args: &[&str]) -> Output {
        self.command(args).output().await.unwrap()
    }

    /// `filesync-sync <verb> DIR <args>`.
    pub async fn run(&self, verb: &str, args: &[&str]) -> Output {
        let mut all = vec![verb, self.dir.to_str().unwrap()];
        all.extend_from_slice(args);
        self.run_with(&all).await
    }

    /// A `sync` that must succeed.
    pub async fn sync(&self) -> Output {
        let out = self.run("sync", &[]).await;
        if std::env::var_os("SYNC_LOG").is_some() {
            eprintln!("sync {}: {}", self.dir.display(), text(&out));
        }
        assert!(
            out.status.success(),
            "sync of {} failed: {}",
            self.dir.display(),
            text(&out)
        );
        out
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.join(rel)
    }

    pub fn write(&self, rel: &str, bytes: impl AsRef<[u8]>) {
        let path = self.path(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, bytes).unwrap();
    }

    pub fn read(&self, rel: &str) -> Vec<u8> {
        std::fs::read(self.path(rel)).unwrap()
    }

    /// The folder's files (not `.filesync/`), by path, with their bytes' SHA-256.
    pub fn tree(&self) -> BTreeMap<String, String> {
        tree(&self.dir)
    }
}

pub fn tree(root: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let rel = path
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            if rel == ".filesync" {
                continue;
            }
            if path.is_dir() {
                stack.push(path);
            } else {
                out.insert(rel, sha256(&std::fs::read(&path).unwrap()));
            }
        }
    }
    out
}

pub fn sha256(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

pub fn text(out: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}--- stderr\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Syncs the clients in turn until a round changes nothing, then checks they agree.
pub async fn converge(clients: &[&Client]) {
    for _ in 0..2 {
        for c in clients {
            c.sync().await;
        }
    }
    let first = clients[0].tree();
    for c in &clients[1..] {
        assert_eq!(
            c.tree(),
            first,
            "{} and {} differ",
            clients[0].dir.display(),
            c.dir.display()
        );
    }
}
