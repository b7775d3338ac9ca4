//! Settings: defaults, then an optional TOML file, then `FILESYNC_*` environment variables
//! (nested keys joined by `__`, e.g. `FILESYNC_SERVER__LISTEN=0.0.0.0:8080`), then flags.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    pub server: ServerSettings,
    pub storage: StorageSettings,
    pub auth: AuthSettings,
    pub uploads: UploadSettings,
    pub graphql: GraphqlSettings,
    pub subscriptions: SubscriptionSettings,
    pub limits: LimitSettings,
    pub log: LogSettings,
    pub replication: ReplicationSettings,
}

/// Abuse limits, per user, applied by each replica to the requests it serves.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitSettings {
    /// Mutations a user may make per second, sustained (0: no limit).
    pub mutations_per_second: f64,
    /// Mutations a user may make at once before the sustained rate applies.
    pub mutation_burst: usize,
    /// Websockets one user may hold open.
    pub websockets_per_user: usize,
    /// Operations one websocket may run at once.
    pub subscriptions_per_connection: usize,
}

impl Default for LimitSettings {
    fn default() -> Self {
        Self {
            mutations_per_second: 100.0,
            mutation_burst: 500,
            websockets_per_user: 32,
            subscriptions_per_connection: 100,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerSettings {
    /// Address to listen on; port 0 picks a free port.
    pub listen: SocketAddr,
    /// Base URL clients reach the server at, used in signed blob URLs. Defaults to
    /// `http://<listen address>`; set it when the server runs behind a proxy.
    pub public_url: Option<String>,
    /// Largest accepted HTTP request body on `/graphql` (inline uploads included).
    pub max_request_bytes: u64,
    /// How long in-flight requests may take to finish after a shutdown signal.
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
    /// Serve GraphiQL at `/graphiql`.
    pub graphiql: bool,
    /// Browser origins allowed to call the API from another origin (CORS), such as
    /// `https://app.example.com`; `["*"]` allows any. Empty (the default): no CORS headers,
    /// so browsers allow same-origin calls only.
    pub cors_allowed_origins: Vec<String>,
    /// A folder holding the built browser app (`client-examples/web/dist`), served at
    /// `/app/`. Unset (the default): no app.
    pub web_app: Option<PathBuf>,
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            listen: ([127, 0, 0, 1], 8080).into(),
            public_url: None,
            max_request_bytes: 16 * 1024 * 1024,
            shutdown_grace: Duration::from_secs(10),
            graphiql: true,
            cors_allowed_origins: Vec::new(),
            web_app: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// SQLite + a local folder, in `data_dir`.
    Embedded,
    /// S3 + DynamoDB + DynamoDB Streams.
    Aws,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageSettings {
    pub backend: Backend,
    /// Where the embedded backend keeps its database, blobs and signing key.
    pub data_dir: PathBuf,
    /// AWS backend: the S3 bucket that holds content.
    pub bucket: Option<String>,
    /// AWS backend: the DynamoDB table that holds metadata (streams on, TTL on `ttl`).
    pub table: String,
    /// AWS backend: the SQS queue that receives the bucket's `ObjectCreated` events; without
    /// it, uploads are published only by `commitUpload`.
    pub events_queue_url: Option<String>,
    /// AWS backend: address buckets in the path (`endpoint/bucket/key`) rather than the host
    /// name; needed by most S3 emulators.
    pub s3_path_style: bool,
    /// AWS backend: how often each shard of the table's stream is polled when it is quiet.
    #[serde(with = "humantime_serde")]
    pub stream_poll_interval: Duration,
    /// AWS backend: the SNS topic through which one replica, holding the stream's lease,
    /// fans the stream's notices out to every other (the stack's `NoticesTopicArn`).
    /// Unset, every replica reads the stream itself: fine for one or two replicas
    /// (DynamoDB Streams throttles past about two readers per shard).
    pub notices_topic_arn: Option<String>,
    /// AWS backend, with `notices_topic_arn`: the name prefix of the SQS queue each
    /// replica creates for itself, subscribed to the topic, and deletes when it stops (the
    /// stack's `ReplicaQueuePrefix`; its IAM policy allows queues of that prefix only).
    pub replica_queue_prefix: String,
    /// AWS backend, with `notices_topic_arn`: how long the stream's lease lasts unless
    /// its holder renews it; a replica that died is replaced as the stream's reader
    /// after at most this long (meanwhile the others read the store every second).
    #[serde(with = "humantime_serde")]
    pub stream_lease: Duration,
}

impl Default for StorageSettings {
    fn default() -> Self {
        Self {
            backend: Backend::Embedded,
            data_dir: PathBuf::from("filesync-data"),
            bucket: None,
            table: "filesync".to_owned(),
            events_queue_url: None,
            s3_path_style: false,
            stream_poll_interval: Duration::from_millis(250),
            notices_topic_arn: None,
            replica_queue_prefix: "filesync-replica-".to_owned(),
            stream_lease: Duration::from_secs(10),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthSettings {
    /// HS256 secret for bearer tokens. When unset, the embedded backend generates one
    /// and keeps it in `<data_dir>/jwt-secret`.
    pub jwt_secret: Option<Secret>,
    /// The identity provider's public keys, for RS256/ES256 tokens: a JWKS file path or
    /// an `https://` URL (for Cognito:
    /// `https://cognito-idp.<region>.amazonaws.com/<pool id>/.well-known/jwks.json`).
    pub jwks: Option<String>,
    /// Required `iss` of every token, when set.
    pub issuer: Option<String>,
    /// Accepted audiences: a token's `aud` (or, when it has none, Cognito's `client_id`)
    /// must name one. Empty: not checked.
    pub audience: Vec<String>,
    /// Accepted algorithms (of HS256, RS256, ES256). Empty: HS256 when there is a
    /// secret, RS256 and ES256 when there is a JWKS.
    pub algorithms: Vec<String>,
    /// The claim that names the user.
    pub user_claim: String,
    /// An unknown `kid` fetches the JWKS again, but not more often than this.
    #[serde(with = "humantime_serde")]
    pub jwks_min_refresh: Duration,
    /// A JWKS older than this is fetched again on next use.
    #[serde(with = "humantime_serde")]
    pub jwks_max_age: Duration,
    /// Lifetime of tokens minted by `filesync token` when `--ttl` is not given.
    #[serde(with = "humantime_serde")]
    pub token_ttl: Duration,
    /// Clock skew tolerated on `exp` and `nbf`.
    #[serde(with = "humantime_serde")]
    pub leeway: Duration,
    /// Longest a token may still be valid for: one whose `exp` lies further ahead (a
    /// token for ever, say `exp` in the year 9999) is refused, as is minting one.
    #[serde(with = "humantime_serde")]
    pub max_token_lifetime: Duration,
    /// Development only: `POST /auth/dev-sign-in {"user": "alice"}` mints a token for
    /// any user who asks (the browser app offers it). Refused at startup unless the
    /// backend is embedded and the server listens on a loopback address.
    pub dev_sign_in: bool,
}

impl Default for AuthSettings {
    fn default() -> Self {
        Self {
            jwt_secret: None,
            jwks: None,
            issuer: None,
            audience: Vec::new(),
            algorithms: Vec::new(),
            user_claim: "sub".to_owned(),
            jwks_min_refresh: Duration::from_secs(30),
            jwks_max_age: Duration::from_secs(3600),
            token_ttl: Duration::from_secs(24 * 3600),
            leeway: Duration::from_secs(30),
            max_token_lifetime: Duration::from_secs(30 * 24 * 3600),
            dev_sign_in: false,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UploadSettings {
    /// How long an upload URL stays valid.
    #[serde(with = "humantime_serde")]
    pub url_ttl: Duration,
    /// How long a pending upload may wait for its commit before it is abandoned.
    #[serde(with = "humantime_serde")]
    pub pending_ttl: Duration,
    /// How often the sweeper looks for expired pending uploads.
    #[serde(with = "humantime_serde")]
    pub sweep_interval: Duration,
    /// Largest file accepted, in bytes.
    pub max_file_size: u64,
    /// Largest file accepted inline through the GraphQL multipart `uploadFile`.
    pub inline_max_bytes: u64,
    /// Uploads one user may have begun and not yet committed, cancelled or let expire.
    pub max_pending_per_user: usize,
    /// How long download URLs stay valid.
    #[serde(with = "humantime_serde")]
    pub download_ttl: Duration,
    /// Embedded backend: an upload body that sends nothing for this long is cut off
    /// (the upload stays pending; nothing partial is kept).
    #[serde(with = "humantime_serde")]
    pub body_idle_timeout: Duration,
    /// Embedded backend: the longest one upload body may take, however it trickles.
    #[serde(with = "humantime_serde")]
    pub body_deadline: Duration,
    /// `beginUpload` without a `method` gives a multipart ticket above this many bytes
    /// (and a single PUT up to it).
    pub multipart_threshold: u64,
    /// Part URLs one `uploadPartUrls` call may ask for.
    pub max_part_urls: usize,
    /// How long `commitUpload` of a multipart upload waits for the server to hash the
    /// whole content before it answers `UPLOAD_VERIFYING` (commit again later).
    #[serde(with = "humantime_serde")]
    pub commit_wait: Duration,
}

impl Default for UploadSettings {
    fn default() -> Self {
        Self {
            url_ttl: Duration::from_secs(3600),
            pending_ttl: Duration::from_secs(24 * 3600),
            sweep_interval: Duration::from_secs(60),
            max_file_size: 64 * 1024 * 1024 * 1024,
            inline_max_bytes: 8 * 1024 * 1024,
            max_pending_per_user: 1000,
            download_ttl: Duration::from_secs(900),
            body_idle_timeout: Duration::from_secs(30),
            body_deadline: Duration::from_secs(6 * 3600),
            multipart_threshold: 64 * 1024 * 1024,
            max_part_urls: 100,
            commit_wait: Duration::from_secs(20),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GraphqlSettings {
    pub max_depth: usize,
    pub max_complexity: usize,
    /// Aliased fields one document may hold.
    pub max_aliases: usize,
    /// Whether the schema answers introspection queries (`__schema`, `__type`); turn it
    /// off in production if clients should not discover the API themselves.
    pub introspection: bool,
    /// Largest `first` / `limit` a client may ask for.
    pub max_page_size: usize,
    /// Page size when the client does not say.
    pub default_page_size: usize,
}

impl Default for GraphqlSettings {
    fn default() -> Self {
        Self {
            max_depth: 12,
            max_complexity: 20_000,
            max_aliases: 30,
            introspection: true,
            max_page_size: 1000,
            default_page_size: 100,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SubscriptionSettings {
    /// Events a subscriber may have waiting before it counts as too slow and is closed
    /// with `SLOW_SUBSCRIBER` (it then resumes from its last cursor).
    pub buffer: usize,
    /// How often the server pings an idle websocket (`ping`, or `ka` on the legacy
    /// protocol), which also keeps proxies and load balancers from closing it.
    #[serde(with = "humantime_serde")]
    pub keep_alive: Duration,
    /// How long a new websocket may take to send `connection_init`.
    #[serde(with = "humantime_serde")]
    pub init_timeout: Duration,
    /// How long one message may wait for a client that does not read before its
    /// websocket is dropped.
    #[serde(with = "humantime_serde")]
    pub send_timeout: Duration,
    /// Replays (subscriptions catching up from an old cursor) of one user that hold a
    /// page of changes at once; more wait their turn. Bounds a user's replay memory
    /// (a page is at most 256 changes of about 10 KB).
    pub replays_per_user: usize,
}

impl Default for SubscriptionSettings {
    fn default() -> Self {
        Self {
            buffer: 256,
            replays_per_user: 4,
            keep_alive: Duration::from_secs(15),
            init_timeout: Duration::from_secs(10),
            send_timeout: Duration::from_secs(10),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Pretty on a terminal, JSON otherwise.
    Auto,
    Pretty,
    Json,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogSettings {
    pub format: LogFormat,
    /// A `tracing` filter; `RUST_LOG` wins when set.
    pub filter: String,
}

impl Default for LogSettings {
    fn default() -> Self {
        Self {
            format: LogFormat::Auto,
            filter: "info".into(),
        }
    }
}

/// Replication of committed content to more stores (DESIGN.md §8, ARCHITECTURE.md
/// "Replication").
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReplicationSettings {
    /// Whether spaces replicate unless their owners turn it off (`settings.replication`).
    pub default: bool,
    /// How long a claimed copy is a worker's before another may take it over (renewed
    /// while the copy runs).
    #[serde(with = "humantime_serde")]
    pub claim_lease: Duration,
    /// How often each store's worker looks for due copies when nothing woke it.
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
    /// Copies one server runs at once, per store.
    pub copy_concurrency: usize,
    /// The first retry of a failed copy; each further one waits twice as long.
    #[serde(with = "humantime_serde")]
    pub retry_initial: Duration,
    #[serde(with = "humantime_serde")]
    pub retry_max: Duration,
    /// Copy inside S3 (`CopyObject`) when both stores share the endpoint and credentials.
    pub server_copy: bool,
    /// Objects larger than this are streamed to an S3 store in parts of this size (each
    /// part held in memory once, for its checksum); smaller ones in one request.
    pub part_size: u64,
    /// How often each server re-reads which objects its primary store lacks, and which
    /// stores the other servers replicate to.
    #[serde(with = "humantime_serde")]
    pub degraded_refresh: Duration,
    /// A backfill or repair walks the space's log once more this long after it started,
    /// for commits that were under way when it began; it is done only then.
    #[serde(with = "humantime_serde")]
    pub job_grace: Duration,
    /// Embedded backend: whole downloads up to this size are hashed before they are
    /// served, so a corrupt primary object is never served and falls over to a copy.
    pub verify_reads_below: u64,
    pub scrub: ScrubSettings,
    /// At most 8. Ids are forever: never reuse one for another bucket or folder.
    pub stores: Vec<StoreSettings>,
    /// Ids of stores taken out for good: no copies are queued for them any more (every
    /// server queues copies for the stores any server recorded, until retired here).
    pub retired_stores: Vec<String>,
}

impl Default for ReplicationSettings {
    fn default() -> Self {
        Self {
            default: false,
            claim_lease: Duration::from_secs(60),
            poll_interval: Duration::from_secs(1),
            copy_concurrency: 4,
            retry_initial: Duration::from_secs(2),
            retry_max: Duration::from_secs(15 * 60),
            server_copy: true,
            part_size: 16 * 1024 * 1024,
            degraded_refresh: Duration::from_secs(5),
            job_grace: Duration::from_secs(120),
            verify_reads_below: 8 * 1024 * 1024,
            scrub: ScrubSettings::default(),
            stores: Vec::new(),
            retired_stores: Vec::new(),
        }
    }
}

/// The background check of every store's objects against their checksums.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ScrubSettings {
    pub enabled: bool,
    /// Objects checked per second, by the whole cluster (one server scrubs at a time).
    pub objects_per_second: f64,
    /// Bytes read per second by checks that hash the object (folders; S3 objects whose
    /// store keeps no SHA-256 of the whole).
    pub bytes_per_second: u64,
    /// The pause between two full passes.
    #[serde(with = "humantime_serde")]
    pub pass_interval: Duration,
}

impl Default for ScrubSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            objects_per_second: 20.0,
            bytes_per_second: 32 * 1024 * 1024,
            pass_interval: Duration::from_secs(3600),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    /// An S3 bucket, at any endpoint (another provider or region).
    S3,
    /// A local folder (embedded backend only): another disk, say.
    Folder,
}

/// One replica store.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreSettings {
    pub id: String,
    pub kind: StoreKind,
    /// `folder`: where the objects go.
    #[serde(default)]
    pub path: Option<PathBuf>,
    /// `s3`: the bucket, and where it is; unset, the backend's own endpoint and region.
    #[serde(default)]
    pub bucket: Option<String>,
    #[serde(default)]
    pub region: Option<String>,
    #[serde(default)]
    pub endpoint: Option<String>,
    #[serde(default)]
    pub path_style: bool,
    /// `s3`: static credentials; unset, the backend's own (the default chain).
    #[serde(default)]
    pub access_key_id: Option<String>,
    #[serde(default)]
    pub secret_access_key: Option<Secret>,
}

/// `path` with its existing part resolved (symlinks, `..`) and the rest appended: what
/// it will be once made.
fn real_path(path: &Path) -> anyhow::Result<PathBuf> {
    let absolute = std::path::absolute(path)?;
    let mut existing = absolute.as_path();
    let mut rest = Vec::new();
    loop {
        match existing.canonicalize() {
            Ok(real) => {
                return Ok(rest
                    .iter()
                    .rev()
                    .fold(real, |p: PathBuf, part| p.join(part)));
            }
            Err(_) => match (existing.parent(), existing.file_name()) {
                (Some(parent), Some(name)) => {
                    rest.push(name.to_owned());
                    existing = parent;
                }
                _ => return Ok(absolute),
            },
        }
    }
}

/// A secret that never shows up in logs or `Debug` output.
#[derive(Clone, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl Settings {
    /// Defaults, then `file` (if any), then the `FILESYNC_*` environment.
    pub fn load(file: Option<&Path>) -> anyhow::Result<Self> {
        let mut figment = Figment::from(Serialized::defaults(Settings::default()));
        if let Some(file) = file {
            anyhow::ensure!(file.exists(), "config file {} not found", file.display());
            figment = figment.merge(Toml::file(file));
        }
        figment = figment.merge(Env::prefixed("FILESYNC_").split("__"));
        let settings: Settings = figment
            .extract()
            .map_err(|e| anyhow::anyhow!("invalid configuration: {e}"))?;
        let max = u64::from(crate::domain::MAX_PARTS) * crate::domain::MAX_PART_SIZE;
        anyhow::ensure!(
            settings.uploads.max_file_size <= max,
            "invalid configuration: uploads.max_file_size is above {max} bytes \
             (10,000 parts of 5 GiB, S3's limit)"
        );
        anyhow::ensure!(
            (1..=1000).contains(&settings.uploads.max_part_urls),
            "invalid configuration: uploads.max_part_urls must be 1 to 1000"
        );
        settings.check_replication()?;
        Ok(settings)
    }

    /// Refuses a replication configuration that cannot work, before anything starts.
    pub fn check_replication(&self) -> anyhow::Result<()> {
        let r = &self.replication;
        anyhow::ensure!(
            r.stores.len() <= 8,
            "invalid configuration: at most 8 replication.stores"
        );
        anyhow::ensure!(
            r.copy_concurrency >= 1 && r.claim_lease >= Duration::from_secs(1),
            "invalid configuration: replication.copy_concurrency must be at least 1 and \
             replication.claim_lease at least 1s"
        );
        // Memory: each copy streamed to S3 holds a part; each whole download checked
        // before it is served is held too (within a shared budget).
        anyhow::ensure!(
            r.part_size >= crate::domain::MIN_PART_SIZE && r.part_size <= 512 << 20,
            "invalid configuration: replication.part_size must be 8 MiB to 512 MiB"
        );
        anyhow::ensure!(
            r.copy_concurrency <= 64,
            "invalid configuration: replication.copy_concurrency must be at most 64"
        );
        anyhow::ensure!(
            r.verify_reads_below <= 64 << 20,
            "invalid configuration: replication.verify_reads_below must be at most 64 MiB"
        );
        anyhow::ensure!(
            r.job_grace >= r.degraded_refresh * 2,
            "invalid configuration: replication.job_grace must be at least twice \
             replication.degraded_refresh (servers learn of new stores that often)"
        );
        for id in &r.retired_stores {
            crate::domain::StoreId::parse(id).map_err(|e| {
                anyhow::anyhow!("invalid configuration: replication.retired_stores: {e}")
            })?;
            anyhow::ensure!(
                !r.stores.iter().any(|s| &s.id == id),
                "invalid configuration: store {id:?} is both configured and retired"
            );
        }
        let mut seen = std::collections::HashSet::new();
        for store in &r.stores {
            crate::domain::StoreId::parse(&store.id)
                .map_err(|e| anyhow::anyhow!("invalid configuration: replication.stores: {e}"))?;
            anyhow::ensure!(
                seen.insert(&store.id),
                "invalid configuration: replication store id {:?} appears twice",
                store.id
            );
            match store.kind {
                StoreKind::Folder => {
                    anyhow::ensure!(
                        self.storage.backend == Backend::Embedded,
                        "replication store {:?}: folder stores work only on the embedded backend",
                        store.id
                    );
                    let path = store.path.as_ref().ok_or_else(|| {
                        anyhow::anyhow!(
                            "replication store {:?}: a folder store needs a path",
                            store.id
                        )
                    })?;
                    // A copy in the data dir itself is no copy at all.
                    let (path, data) = (real_path(path)?, real_path(&self.storage.data_dir)?);
                    anyhow::ensure!(
                        !path.starts_with(&data) && !data.starts_with(&path),
                        "replication store {:?}: its folder overlaps the data dir",
                        store.id
                    );
                }
                StoreKind::S3 => {
                    anyhow::ensure!(
                        cfg!(feature = "aws"),
                        "replication store {:?}: s3 stores need a build with `--features aws`",
                        store.id
                    );
                    anyhow::ensure!(
                        store.bucket.is_some(),
                        "replication store {:?}: an s3 store needs a bucket",
                        store.id
                    );
                    anyhow::ensure!(
                        store.access_key_id.is_some() == store.secret_access_key.is_some(),
                        "replication store {:?}: give both access_key_id and secret_access_key, \
                         or neither",
                        store.id
                    );
                }
            }
        }
        Ok(())
    }

    /// The base URL of signed blob URLs for a server bound to `addr`.
    pub fn public_url(&self, addr: SocketAddr) -> String {
        match &self.server.public_url {
            Some(url) => url.trim_end_matches('/').to_owned(),
            None => format!("http://{addr}"),
        }
    }
}

#[cfg(test)]
#[allow(clippy::result_large_err)] // figment::Jail's closures return its large error
mod tests {
    use super::*;

    #[test]
    fn file_then_env_override_defaults() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "f.toml",
                "[server]\nlisten = \"0.0.0.0:9000\"\n[uploads]\npending_ttl = \"2h\"\n",
            )?;
            jail.set_env("FILESYNC_UPLOADS__URL_TTL", "5m");
            jail.set_env("FILESYNC_AUTH__JWT_SECRET", "hunter2");
            let s = Settings::load(Some(Path::new("f.toml"))).expect("loads");
            assert_eq!(s.server.listen.port(), 9000);
            assert_eq!(s.uploads.pending_ttl, Duration::from_secs(7200));
            assert_eq!(s.uploads.url_ttl, Duration::from_secs(300));
            assert_eq!(s.storage.data_dir, PathBuf::from("filesync-data"));
            assert!(
                !format!("{s:?}").contains("hunter2"),
                "secrets are redacted"
            );
            Ok(())
        });
    }

    #[test]
    fn the_example_file_is_valid_and_shows_the_defaults() {
        // Inside a Jail: the other tests set FILESYNC_* variables, which are process-wide.
        figment::Jail::expect_with(|_| {
            let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("filesync.example.toml");
            let from_file = Settings::load(Some(&path)).expect("example loads");
            // Compared through TOML so every field is covered without PartialEq everywhere.
            assert_eq!(
                toml::to_string(&from_file).unwrap(),
                toml::to_string(&Settings::default()).unwrap()
            );
            Ok(())
        });
    }

    #[test]
    fn unknown_keys_are_errors() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("f.toml", "[server]\nlisen = \"0.0.0.0:9000\"\n")?;
            let err = Settings::load(Some(Path::new("f.toml"))).unwrap_err();
            assert!(err.to_string().contains("lisen"), "{err}");
            Ok(())
        });
    }
}
