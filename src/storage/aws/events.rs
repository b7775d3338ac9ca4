//! Storage events on AWS: the bucket's `ObjectCreated` notifications, read from SQS.
//!
//! A message is acknowledged (deleted) only once the sync layer has dealt with it; one it
//! could not deal with becomes visible again after the queue's visibility timeout, and
//! after the redrive policy's `maxReceiveCount` receives SQS moves it to the dead-letter
//! queue. Object keys in S3 events are URL-encoded (`+` for a space); they are decoded
//! here.

use async_trait::async_trait;
use aws_sdk_sqs::Client;
use serde::Deserialize;

use crate::storage::{BlobError, RequestCounter, StorageEvent, StorageEvents};

/// Long-poll wait of one receive (SQS's maximum).
const WAIT_SECONDS: i32 = 20;

pub struct SqsEvents {
    client: Client,
    queue_url: String,
    bucket: String,
    requests: RequestCounter,
}

impl SqsEvents {
    pub fn new(
        client: Client,
        queue_url: String,
        bucket: String,
        requests: RequestCounter,
    ) -> Self {
        Self {
            client,
            queue_url,
            bucket,
            requests,
        }
    }
}

fn sqs_error(e: impl std::error::Error + Send + Sync + 'static) -> BlobError {
    BlobError::Other(anyhow::Error::new(e).context("SQS request failed"))
}

#[async_trait]
impl StorageEvents for SqsEvents {
    async fn receive(&self) -> Result<Vec<StorageEvent>, BlobError> {
        self.requests.count("sqs", "ReceiveMessage");
        let out = self
            .client
            .receive_message()
            .queue_url(&self.queue_url)
            .max_number_of_messages(10)
            .wait_time_seconds(WAIT_SECONDS)
            .send()
            .await
            .map_err(sqs_error)?;
        Ok(out
            .messages
            .unwrap_or_default()
            .into_iter()
            .filter_map(|m| {
                let receipt = m.receipt_handle?;
                let parsed = parse_message(m.body.as_deref().unwrap_or(""), &self.bucket);
                Some(StorageEvent {
                    understood: parsed.is_some(),
                    keys: parsed.unwrap_or_default(),
                    receipt,
                })
            })
            .collect())
    }

    async fn acknowledge(&self, receipt: &str) -> Result<(), BlobError> {
        self.requests.count("sqs", "DeleteMessage");
        self.client
            .delete_message()
            .queue_url(&self.queue_url)
            .receipt_handle(receipt)
            .send()
            .await
            .map_err(sqs_error)?;
        Ok(())
    }
}

#[derive(Deserialize)]
struct Notification {
    #[serde(rename = "Records", default)]
    records: Vec<EventRecord>,
    /// `s3:TestEvent` when a notification configuration is created.
    #[serde(rename = "Event")]
    event: Option<String>,
}

#[derive(Deserialize)]
struct EventRecord {
    #[serde(rename = "eventName", default)]
    event_name: String,
    s3: S3Entity,
}

#[derive(Deserialize)]
struct S3Entity {
    bucket: BucketEntity,
    object: ObjectEntity,
}

#[derive(Deserialize)]
struct BucketEntity {
    name: String,
}

#[derive(Deserialize)]
struct ObjectEntity {
    key: String,
}

/// The decoded keys of the objects created in `bucket` that a message announces; `None`
/// when the message is not an S3 event notification.
pub fn parse_message(body: &str, bucket: &str) -> Option<Vec<String>> {
    let notification: Notification = serde_json::from_str(body).ok()?;
    if notification.event.as_deref() == Some("s3:TestEvent") {
        return Some(Vec::new());
    }
    if notification.records.is_empty() {
        return None;
    }
    notification
        .records
        .into_iter()
        .filter(|r| r.event_name.starts_with("ObjectCreated:") && r.s3.bucket.name == bucket)
        .map(|r| url_decode(&r.s3.object.key))
        .collect()
}

/// Decodes an S3 event key: `%XX` escapes and `+` for a space. `None` if malformed.
fn url_decode(encoded: &str) -> Option<String> {
    let bytes = encoded.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes.get(i + 1..i + 3)?;
                out.push(u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(bucket: &str, key: &str, name: &str) -> String {
        serde_json::json!({"Records": [{
            "eventName": name,
            "s3": {"bucket": {"name": bucket}, "object": {"key": key, "size": 3}}
        }]})
        .to_string()
    }

    #[test]
    fn keys_are_url_decoded() {
        let body = event("b", "a%2Fb+c%C3%A9", "ObjectCreated:Put");
        assert_eq!(parse_message(&body, "b"), Some(vec!["a/b cé".to_owned()]));
    }

    #[test]
    fn other_buckets_events_and_test_events_name_no_object() {
        assert_eq!(
            parse_message(&event("other", "k", "ObjectCreated:Put"), "b"),
            Some(vec![])
        );
        assert_eq!(
            parse_message(&event("b", "k", "ObjectRemoved:Delete"), "b"),
            Some(vec![])
        );
        let test = r#"{"Service":"Amazon S3","Event":"s3:TestEvent","Bucket":"b"}"#;
        assert_eq!(parse_message(test, "b"), Some(vec![]));
    }

    #[test]
    fn malformed_messages_are_not_understood() {
        assert_eq!(parse_message("not json", "b"), None);
        assert_eq!(parse_message("{}", "b"), None);
        assert_eq!(
            parse_message(&event("b", "bad%zz", "ObjectCreated:Put"), "b"),
            None
        );
        assert_eq!(
            parse_message(&event("b", "%C3", "ObjectCreated:Put"), "b"),
            None
        );
    }
}
