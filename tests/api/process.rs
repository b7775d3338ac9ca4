//! The real `filesync` binary as a child process, for tests that kill it (`kill -9`)
//! rather than stop it.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use filesync::config::Settings;

const BIN: &str = env!("CARGO_BIN_EXE_filesync");

pub struct ServerProcess {
    child: Child,
    pub base: String,
}

impl ServerProcess {
    /// Starts `filesync serve` on `data_dir` (port 0) with `env`, and waits until it
    /// listens.
    pub async fn start(data_dir: &Path, env: &[(String, String)]) -> Self {
        Self::start_with(data_dir, env, None).await
    }

    /// [`ServerProcess::start`], with a configuration file (`--config`).
    pub async fn start_with(
        data_dir: &Path,
        env: &[(String, String)],
        config: Option<&Path>,
    ) -> Self {
        let mut command = Command::new(BIN);
        command.arg("serve");
        if let Some(config) = config {
            command.arg("--config").arg(config);
        }
        command
            .args(["--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .env("FILESYNC_LOG__FORMAT", "json")
            .stdout(Stdio::piped())
            .stderr(if std::env::var_os("TEST_LOG").is_some() {
                Stdio::inherit()
            } else {
                Stdio::null()
            });
        let mut child = command.spawn().expect("start filesync");
        let stdout = child.stdout.take().unwrap();
        let line = tokio::task::spawn_blocking(move || {
            let mut lines = BufReader::new(stdout).lines();
            let line = lines.next();
            // Keep reading, so the server never blocks on a full pipe.
            std::thread::spawn(move || lines.for_each(drop));
            line
        });
        let line = tokio::time::timeout(Duration::from_secs(60), line)
            .await
            .expect("the server starts within a minute")
            .unwrap()
            .expect("a line")
            .unwrap();
        let base = line
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line: {line}"))
            .to_owned();
        Self { child, base }
    }

    /// `filesync serve` in a user and mount namespace of its own (`unshare`), with a fresh
    /// data dir on a tmpfs of `size` (such as "3m") that only it sees: a disk that fills
    /// up. The returned dir (empty outside) holds the token secret the test uses.
    pub async fn start_on_tmpfs(size: &str) -> (Self, std::sync::Arc<tempfile::TempDir>) {
        let dir = std::sync::Arc::new(tempfile::tempdir().unwrap());
        let secret = hex::encode(rand::random::<[u8; 32]>());
        // The test mints tokens with the data dir's secret file; the server gets the same
        // secret as configuration (its own data dir is the tmpfs mounted over it).
        std::fs::write(
            dir.path().join("jwt-secret"),
            hex::encode(secret.as_bytes()),
        )
        .unwrap();
        let script = format!(
            "mount -t tmpfs -o size={size},mode=0700 filesync-test {dir} && exec {BIN} serve --listen 127.0.0.1:0 --data-dir {dir}",
            dir = dir.path().display()
        );
        let mut child = Command::new("unshare")
            .args(["--user", "--map-root-user", "--mount", "sh", "-c", &script])
            .env("FILESYNC_AUTH__JWT_SECRET", &secret)
            .env("FILESYNC_LOG__FORMAT", "json")
            .stdout(Stdio::piped())
            .stderr(if std::env::var_os("TEST_LOG").is_some() {
                Stdio::inherit()
            } else {
                Stdio::null()
            })
            .spawn()
            .expect("unshare (util-linux) starts");
        let stdout = child.stdout.take().unwrap();
        let line = tokio::task::spawn_blocking(move || {
            let mut lines = BufReader::new(stdout).lines();
            let line = lines.next();
            std::thread::spawn(move || lines.for_each(drop));
            line
        });
        let line = tokio::time::timeout(Duration::from_secs(60), line)
            .await
            .expect("the server starts within a minute")
            .unwrap()
            .expect("the server in its namespace starts (unshare needs user namespaces)")
            .unwrap();
        let base = line.strip_prefix("listening on ").unwrap().to_owned();
        (Self { child, base }, dir)
    }

    /// `path` as the server process sees it (through its own mount namespace).
    pub fn root_view(&self, path: &Path) -> std::path::PathBuf {
        Path::new(&format!("/proc/{}/root", self.child.id())).join(path.strip_prefix("/").unwrap())
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `kill -9`: no shutdown, nothing flushed, no lease released.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// The environment that points a server process at the AWS stack that `settings` (as
/// `helpers::use_aws_stack` set them) name.
pub fn aws_env(settings: &Settings) -> Vec<(String, String)> {
    let s = &settings.storage;
    let mut env = vec![
        ("FILESYNC_STORAGE__BACKEND".into(), "aws".into()),
        ("FILESYNC_STORAGE__TABLE".into(), s.table.clone()),
        ("FILESYNC_STORAGE__BUCKET".into(), s.bucket.clone().unwrap()),
        ("FILESYNC_STORAGE__S3_PATH_STYLE".into(), "true".into()),
        (
            "FILESYNC_STORAGE__REPLICA_QUEUE_PREFIX".into(),
            s.replica_queue_prefix.clone(),
        ),
        (
            "FILESYNC_AUTH__JWT_SECRET".into(),
            settings
                .auth
                .jwt_secret
                .as_ref()
                .unwrap()
                .expose()
                .to_owned(),
        ),
    ];
    if let Some(url) = &s.events_queue_url {
        env.push(("FILESYNC_STORAGE__EVENTS_QUEUE_URL".into(), url.clone()));
    }
    if let Some(topic) = &s.notices_topic_arn {
        env.push(("FILESYNC_STORAGE__NOTICES_TOPIC_ARN".into(), topic.clone()));
    }
    env
}
