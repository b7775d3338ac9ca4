//! The AWS backend: metadata in one DynamoDB table, content in S3, the change feed from
//! the table's DynamoDB stream, storage events from the bucket's notifications via SQS.
//! Any number of replicas share the table, bucket and queue.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, SdkConfig};
use aws_credential_types::provider::ProvideCredentials;
use tokio::sync::broadcast;

use super::{RequestCounter, Storage};
use crate::config::StorageSettings;

mod blobs;
mod copies;
mod events;
mod fanout;
mod items;
mod lease;
mod metadata;
mod streams;

pub use blobs::{PENDING_TAG, S3Blobs};
pub use events::SqsEvents;
pub use metadata::DynamoMetadata;
pub use streams::StreamFeed;

/// How many notices a slow feed reader may fall behind before it is told it lagged.
const FEED_CAPACITY: usize = 4096;
/// How long finding the region and credentials may take before start-up gives up.
const CONFIG_TIMEOUT: Duration = Duration::from_secs(10);

/// Opens the AWS backend named by the settings. Fails at once, with the reason, when the
/// region or credentials are missing or the table cannot be reached.
pub async fn open(settings: &StorageSettings) -> anyhow::Result<Storage> {
    let bucket = settings
        .bucket
        .clone()
        .context("storage.bucket (FILESYNC_STORAGE__BUCKET) must be set for the aws backend")?;
    let config = load_config().await?;
    let requests = RequestCounter::default();

    let s3 = s3_client(&config, settings.s3_path_style);
    let dynamodb = aws_sdk_dynamodb::Client::new(&config);
    let streams = aws_sdk_dynamodbstreams::Client::new(&config);

    let (sender, _) = broadcast::channel(FEED_CAPACITY);
    let meta = Arc::new(DynamoMetadata::new(
        dynamodb.clone(),
        settings.table.clone(),
        sender.clone(),
        requests.clone(),
    ));
    use crate::storage::MetadataStore as _;
    meta.ping()
        .await
        .with_context(|| format!("cannot read the DynamoDB table {:?}", settings.table))?;
    let events = settings.events_queue_url.clone().map(|url| {
        Arc::new(SqsEvents::new(
            aws_sdk_sqs::Client::new(&config),
            url,
            bucket.clone(),
            requests.clone(),
        )) as Arc<dyn super::StorageEvents>
    });
    // With a notices topic, one replica at a time (the lease holder) reads the stream.
    let shared = settings.notices_topic_arn.clone().map(|topic| {
        let replica = uuid::Uuid::new_v4().simple().to_string();
        let lease = lease::StreamLease::new(
            dynamodb.clone(),
            settings.table.clone(),
            replica.clone(),
            settings.stream_lease,
            requests.clone(),
        );
        let fanout = fanout::Fanout::new(
            fanout::FanoutConfig {
                topic,
                queue_prefix: settings.replica_queue_prefix.clone(),
                replica,
                table: settings.table.clone(),
            },
            aws_sdk_sns::Client::new(&config),
            aws_sdk_sqs::Client::new(&config),
            dynamodb.clone(),
            sender.clone(),
            requests.clone(),
        );
        (lease, fanout)
    });
    let feed = StreamFeed::new(
        streams,
        dynamodb,
        settings.table.clone(),
        sender,
        settings.stream_poll_interval,
        requests.clone(),
        shared,
    );
    tracing::info!(table = %settings.table, bucket = %bucket, events = events.is_some(), fanout = settings.notices_topic_arn.is_some(), "opened the aws backend");
    Ok(Storage {
        meta: meta.clone(),
        copies: meta,
        blobs: Arc::new(
            S3Blobs::new(s3, bucket, requests.clone())
                .signing_with(&config)
                .copy_group(copy_group(&config, None)),
        ),
        feed: Arc::new(feed),
        events,
        requests,
        stores: Vec::new(),
    })
}

/// Which server-side copies can run inside S3: between stores reached through the same
/// endpoint with the same credentials.
pub fn copy_group(config: &SdkConfig, access_key_id: Option<&str>) -> String {
    format!(
        "{}|{}",
        config.endpoint_url().unwrap_or("aws"),
        access_key_id.unwrap_or("default-chain")
    )
}

/// A replica store's bucket (`replication.stores`, kind `s3`): its own region, endpoint
/// and credentials where given, else the backend's (the standard sources).
pub async fn open_replica_store(
    store: &crate::config::StoreSettings,
    part_size: u64,
    requests: RequestCounter,
) -> anyhow::Result<S3Blobs> {
    let bucket = store.bucket.clone().context("an s3 store needs a bucket")?;
    let timeouts = TimeoutConfig::builder()
        .connect_timeout(Duration::from_secs(5))
        // A part of a copy is up to `part_size` bytes, on a link that may be slow.
        .operation_attempt_timeout(Duration::from_secs(300))
        .build();
    let mut loader = aws_config::defaults(BehaviorVersion::latest()).timeout_config(timeouts);
    if let Some(region) = &store.region {
        loader = loader.region(aws_config::Region::new(region.clone()));
    }
    if let Some(endpoint) = &store.endpoint {
        loader = loader.endpoint_url(endpoint);
    }
    if let (Some(id), Some(secret)) = (&store.access_key_id, &store.secret_access_key) {
        loader = loader.credentials_provider(aws_credential_types::Credentials::new(
            id,
            secret.expose(),
            None,
            None,
            "filesync-replication-store",
        ));
    }
    let config = tokio::time::timeout(CONFIG_TIMEOUT, loader.load())
        .await
        .map_err(|_| anyhow::anyhow!("store {:?}: timed out looking for its region", store.id))?;
    anyhow::ensure!(
        config.region().is_some(),
        "store {:?}: no region (set its `region`, or AWS_REGION)",
        store.id
    );
    let group = copy_group(&config, store.access_key_id.as_deref());
    Ok(
        S3Blobs::new(s3_client(&config, store.path_style), bucket, requests)
            .signing_with(&config)
            .copy_group(group)
            .copy_part_size(part_size),
    )
}

/// The S3 client the backend uses.
pub fn s3_client(config: &SdkConfig, path_style: bool) -> aws_sdk_s3::Client {
    aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(config)
            .force_path_style(path_style)
            // Checksums only where S3 requires them: otherwise the SDK adds a CRC32 of
            // the (empty) body to presigned PUTs, and the client's upload then fails.
            .request_checksum_calculation(
                aws_sdk_s3::config::RequestChecksumCalculation::WhenRequired,
            )
            .response_checksum_validation(
                aws_sdk_s3::config::ResponseChecksumValidation::WhenRequired,
            )
            .build(),
    )
}

/// The SDK configuration from the standard sources (`AWS_REGION`, `AWS_ENDPOINT_URL`,
/// `AWS_ACCESS_KEY_ID`, profiles, web identity, container and instance roles), with a
/// clear error instead of a hang when the region or credentials cannot be found.
async fn load_config() -> anyhow::Result<SdkConfig> {
    // No request may hang a replica: bounded connects and attempts (the SQS long poll
    // waits 20 s), retried by the SDK's standard retry policy.
    let timeouts = TimeoutConfig::builder()
        .connect_timeout(Duration::from_secs(5))
        .operation_attempt_timeout(Duration::from_secs(30))
        .operation_timeout(Duration::from_secs(90))
        .build();
    let config = tokio::time::timeout(
        CONFIG_TIMEOUT,
        aws_config::defaults(BehaviorVersion::latest())
            .timeout_config(timeouts)
            .load(),
    )
    .await
    .map_err(|_| {
        anyhow::anyhow!(
            "timed out looking for the AWS region: set AWS_REGION (or a profile with a region)"
        )
    })?;
    anyhow::ensure!(
        config.region().is_some(),
        "the AWS region is not set: set AWS_REGION (or a profile with a region)"
    );
    let provider = config.credentials_provider().context(
        "no AWS credentials provider: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, \
         AWS_PROFILE, or run with an instance or container role",
    )?;
    let missing = || {
        "no AWS credentials found: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, \
         AWS_PROFILE, or run with an instance or container role"
    };
    tokio::time::timeout(CONFIG_TIMEOUT, provider.provide_credentials())
        .await
        .map_err(|_| anyhow::anyhow!(missing()))?
        .context(missing())?;
    Ok(config)
}
