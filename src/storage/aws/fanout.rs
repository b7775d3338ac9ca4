//! Fan-out of the stream's notices to every replica: the replica holding the stream's
//! lease publishes what it reads to an SNS topic; every replica receives them through an
//! SQS queue of its own, subscribed to the topic, created at start-up and deleted when it
//! stops (the lease holder also deletes the queues of replicas that died).
//!
//! The lease holder publishes a heartbeat every [`HEARTBEAT`]. A replica that hears
//! nothing for [`SILENCE`] (the holder died and its lease has not expired yet, the topic
//! or its queue is broken) falls back to reading the store: it tells its hub to re-read
//! every space it follows, every second, until notices come again. Never silence.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use aws_sdk_sqs::types::{DeleteMessageBatchRequestEntry, QueueAttributeName};
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use super::items::{key, n, s};
use crate::domain::{SpaceId, UserId, now_millis};
use crate::storage::{Notice, RequestCounter};

/// How often the lease holder says it is alive when it has nothing else to say.
pub const HEARTBEAT: Duration = Duration::from_secs(5);
/// Silence after which a replica reads the store itself.
const SILENCE: Duration = Duration::from_secs(12);
/// How often a replica that hears nothing re-reads what it follows.
const FALLBACK_READS: Duration = Duration::from_secs(1);
/// How often a replica says, in the table, that its queue is still in use.
const REGISTRY_REFRESH: Duration = Duration::from_secs(60);
/// A replica not seen for this long is gone: its queue and subscription are deleted.
const REPLICA_GONE: Duration = Duration::from_secs(600);
/// Largest SNS message body this sends (SNS takes 256 KiB).
const MAX_MESSAGE_BYTES: usize = 200 * 1024;
/// Every this many seconds of silence, the fallback also rechecks memberships (a full
/// `Resync`); the other seconds it only re-reads commit logs (`Reread`).
const FALLBACK_RECHECK_EVERY: u64 = 10;

const REPLICA_PK: &str = "REPLICA";

/// What goes through the topic: a batch of notices, or (empty) a heartbeat.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct Envelope {
    from: String,
    #[serde(default)]
    notices: Vec<Wire>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "t")]
enum Wire {
    #[serde(rename = "c")]
    Committed { space: String, seq: u64 },
    #[serde(rename = "m")]
    Membership { space: String, user: String },
    #[serde(rename = "r")]
    Resync,
    #[serde(rename = "rr")]
    Reread,
}

impl Wire {
    fn of(notice: &Notice) -> Self {
        match notice {
            Notice::Committed { space_id, seq } => Wire::Committed {
                space: space_id.to_string(),
                seq: *seq,
            },
            Notice::MembershipChanged { space_id, user } => Wire::Membership {
                space: space_id.to_string(),
                user: user.as_str().to_owned(),
            },
            Notice::Resync => Wire::Resync,
            Notice::Reread => Wire::Reread,
        }
    }

    fn notice(self) -> Option<Notice> {
        Some(match self {
            Wire::Committed { space, seq } => Notice::Committed {
                space_id: space.parse::<SpaceId>().ok()?,
                seq,
            },
            Wire::Membership { space, user } => Notice::MembershipChanged {
                space_id: space.parse::<SpaceId>().ok()?,
                user: UserId::parse(&user).ok()?,
            },
            Wire::Resync => Notice::Resync,
            Wire::Reread => Notice::Reread,
        })
    }
}

/// The notices (and whether it was one at all) of a message body: our envelope, raw or
/// wrapped in SNS's own JSON (a subscription without raw delivery).
fn decode(body: &str) -> Option<Vec<Notice>> {
    #[derive(Deserialize)]
    struct SnsWrapper {
        #[serde(rename = "Message")]
        message: String,
    }
    let envelope: Envelope = serde_json::from_str(body).ok().or_else(|| {
        let wrapper: SnsWrapper = serde_json::from_str(body).ok()?;
        serde_json::from_str(&wrapper.message).ok()
    })?;
    Some(
        envelope
            .notices
            .into_iter()
            .filter_map(Wire::notice)
            .collect(),
    )
}

/// This replica's queue, subscribed to the topic.
#[derive(Clone)]
struct Inbox {
    url: String,
    subscription: String,
}

pub struct Fanout {
    sns: aws_sdk_sns::Client,
    sqs: aws_sdk_sqs::Client,
    dynamodb: aws_sdk_dynamodb::Client,
    table: String,
    topic: String,
    queue_prefix: String,
    replica: String,
    sender: broadcast::Sender<Notice>,
    requests: RequestCounter,
    inbox: tokio::sync::Mutex<Option<Inbox>>,
    /// How many queues this replica has made (a remade queue gets a new name).
    generation: std::sync::atomic::AtomicU32,
    /// A message came since the watchdog last looked.
    heard: AtomicBool,
}

pub struct FanoutConfig {
    pub topic: String,
    pub queue_prefix: String,
    pub replica: String,
    pub table: String,
}

impl Fanout {
    pub fn new(
        config: FanoutConfig,
        sns: aws_sdk_sns::Client,
        sqs: aws_sdk_sqs::Client,
        dynamodb: aws_sdk_dynamodb::Client,
        sender: broadcast::Sender<Notice>,
        requests: RequestCounter,
    ) -> Self {
        Self {
            sns,
            sqs,
            dynamodb,
            table: config.table,
            topic: config.topic,
            queue_prefix: config.queue_prefix,
            replica: config.replica,
            sender,
            requests,
            inbox: tokio::sync::Mutex::new(None),
            generation: std::sync::atomic::AtomicU32::new(0),
            heard: AtomicBool::new(false),
        }
    }

    fn queue_name(&self, generation: u32) -> String {
        // SQS names: up to 80 characters of [A-Za-z0-9_-]. A queue made again gets a new
        // name: SQS refuses a name deleted less than a minute ago.
        let name = format!("{}{}-{generation}", self.queue_prefix, self.replica);
        name.chars()
            .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'))
            .take(80)
            .collect()
    }

    /// Publishes notices read from the stream to every replica, collapsed (the highest
    /// seq per space, each membership change once) and in messages of at most
    /// [`MAX_MESSAGE_BYTES`]; `Err` when the topic did not take them.
    pub async fn publish(&self, notices: &[Notice]) -> anyhow::Result<()> {
        for message in messages(&collapse(notices)) {
            self.send(message).await?;
        }
        Ok(())
    }

    /// The lease holder's "still here".
    pub async fn heartbeat(&self) -> anyhow::Result<()> {
        self.send(Vec::new()).await
    }

    async fn send(&self, notices: Vec<Wire>) -> anyhow::Result<()> {
        let body = serde_json::to_string(&Envelope {
            from: self.replica.clone(),
            notices,
        })?;
        self.requests.count("sns", "Publish");
        self.sns
            .publish()
            .topic_arn(&self.topic)
            .message(body)
            .send()
            .await?;
        Ok(())
    }

    /// Receives notices until `stop`, falling back to reading the store while none come;
    /// then deletes this replica's queue.
    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        let watchdog = tokio::spawn(self.clone().watch(stop.clone()));
        let mut failures = 0u32;
        while !stop.is_cancelled() {
            let received = tokio::select! {
                () = stop.cancelled() => break,
                received = self.receive() => received,
            };
            match received {
                Ok(()) => failures = 0,
                Err(e) => {
                    failures += 1;
                    tracing::warn!(error = ?e, "cannot receive notices; retrying (the store is read meanwhile)");
                    tokio::select! {
                        () = stop.cancelled() => break,
                        () = tokio::time::sleep(backoff(failures)) => {}
                    }
                }
            }
        }
        let _ = watchdog.await;
        self.close_inbox().await;
    }

    /// One long poll of this replica's queue (opening it first if needed).
    async fn receive(&self) -> anyhow::Result<()> {
        let inbox = self.inbox().await?;
        self.requests.count("sqs", "ReceiveMessage");
        let out = match self
            .sqs
            .receive_message()
            .queue_url(&inbox.url)
            .max_number_of_messages(10)
            .wait_time_seconds(20)
            .send()
            .await
        {
            Ok(out) => out,
            Err(e) => {
                if e.as_service_error()
                    .is_some_and(|e| e.is_queue_does_not_exist())
                {
                    // Deleted behind our back (or by a lease holder that took us for
                    // dead): make a new one; what was lost meanwhile is in the store.
                    *self.inbox.lock().await = None;
                    let _ = self.sender.send(Notice::Resync);
                }
                return Err(e.into());
            }
        };
        let messages = out.messages.unwrap_or_default();
        let mut receipts = Vec::new();
        for (i, message) in messages.into_iter().enumerate() {
            self.heard.store(true, Ordering::Relaxed);
            match message.body.as_deref().and_then(decode) {
                Some(notices) => {
                    for notice in notices {
                        let _ = self.sender.send(notice);
                    }
                }
                None => tracing::warn!("a message on the notices queue is not a notice"),
            }
            if let Some(receipt) = message.receipt_handle {
                receipts.push(
                    DeleteMessageBatchRequestEntry::builder()
                        .id(i.to_string())
                        .receipt_handle(receipt)
                        .build()?,
                );
            }
        }
        if !receipts.is_empty() {
            self.requests.count("sqs", "DeleteMessageBatch");
            self.sqs
                .delete_message_batch()
                .queue_url(&inbox.url)
                .set_entries(Some(receipts))
                .send()
                .await?;
        }
        Ok(())
    }

    /// While nothing is heard for [`SILENCE`], tells the hub to read the store every
    /// [`FALLBACK_READS`]; refreshes this replica's entry in the registry meanwhile.
    async fn watch(self: Arc<Self>, stop: CancellationToken) {
        let mut silent_for = Duration::ZERO;
        let mut since_refresh = Duration::ZERO;
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(FALLBACK_READS) => {}
            }
            if self.heard.swap(false, Ordering::Relaxed) {
                silent_for = Duration::ZERO;
            } else {
                silent_for += FALLBACK_READS;
            }
            if silent_for >= SILENCE {
                let seconds = (silent_for - SILENCE).as_secs();
                if seconds == 0 {
                    tracing::warn!(
                        "no notices from the stream's reader; reading the store every second"
                    );
                }
                self.requests.count("filesync", "NoticesFallback");
                let notice = if seconds.is_multiple_of(FALLBACK_RECHECK_EVERY) {
                    Notice::Resync
                } else {
                    Notice::Reread
                };
                let _ = self.sender.send(notice);
            }
            since_refresh += FALLBACK_READS;
            if since_refresh >= REGISTRY_REFRESH {
                since_refresh = Duration::ZERO;
                if let Some(inbox) = self.inbox.lock().await.clone()
                    && let Err(e) = self.register(&inbox).await
                {
                    tracing::warn!(error = ?e, "cannot refresh this replica in the registry");
                }
            }
        }
    }

    async fn inbox(&self) -> anyhow::Result<Inbox> {
        let mut inbox = self.inbox.lock().await;
        if let Some(open) = &*inbox {
            return Ok(open.clone());
        }
        let opened = self.open_inbox().await?;
        *inbox = Some(opened.clone());
        Ok(opened)
    }

    /// Creates this replica's queue, lets the topic write to it, subscribes it.
    async fn open_inbox(&self) -> anyhow::Result<Inbox> {
        self.requests.count("sqs", "CreateQueue");
        let url = self
            .sqs
            .create_queue()
            .queue_name(self.queue_name(self.generation.fetch_add(1, Ordering::Relaxed)))
            // Notices are only worth their first minutes; a queue nobody reads stays small.
            .attributes(QueueAttributeName::MessageRetentionPeriod, "300")
            .attributes(QueueAttributeName::VisibilityTimeout, "30")
            .send()
            .await?
            .queue_url
            .ok_or_else(|| anyhow::anyhow!("CreateQueue returned no URL"))?;
        self.requests.count("sqs", "GetQueueAttributes");
        let arn = self
            .sqs
            .get_queue_attributes()
            .queue_url(&url)
            .attribute_names(QueueAttributeName::QueueArn)
            .send()
            .await?
            .attributes
            .and_then(|mut a| a.remove(&QueueAttributeName::QueueArn))
            .ok_or_else(|| anyhow::anyhow!("the queue has no ARN"))?;
        let policy = serde_json::json!({
            "Version": "2012-10-17",
            "Statement": [{
                "Effect": "Allow",
                "Principal": { "Service": "sns.amazonaws.com" },
                "Action": "sqs:SendMessage",
                "Resource": arn,
                "Condition": { "ArnEquals": { "aws:SourceArn": self.topic } },
            }],
        });
        self.requests.count("sqs", "SetQueueAttributes");
        self.sqs
            .set_queue_attributes()
            .queue_url(&url)
            .attributes(QueueAttributeName::Policy, policy.to_string())
            .send()
            .await?;
        self.requests.count("sns", "Subscribe");
        let subscription = self
            .sns
            .subscribe()
            .topic_arn(&self.topic)
            .protocol("sqs")
            .endpoint(&arn)
            .attributes("RawMessageDelivery", "true")
            .return_subscription_arn(true)
            .send()
            .await?
            .subscription_arn
            .ok_or_else(|| anyhow::anyhow!("Subscribe returned no ARN"))?;
        let inbox = Inbox { url, subscription };
        self.register(&inbox).await?;
        tracing::info!(queue = %inbox.url, "receiving the stream's notices");
        Ok(inbox)
    }

    /// This replica in the registry of queues (`REPLICA / <id>`), seen now.
    async fn register(&self, inbox: &Inbox) -> anyhow::Result<()> {
        let mut item = key(REPLICA_PK.into(), self.replica.as_str());
        item.insert("queue_url".into(), s(&inbox.url));
        item.insert("subscription".into(), s(&inbox.subscription));
        item.insert("seen".into(), n(now_millis()));
        self.requests.dynamodb("PutItem");
        self.dynamodb
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .send()
            .await?;
        Ok(())
    }

    /// Unsubscribes and deletes this replica's queue (on the way out).
    async fn close_inbox(&self) {
        let Some(inbox) = self.inbox.lock().await.take() else {
            return;
        };
        self.remove(&self.replica, &inbox).await;
    }

    async fn remove(&self, replica: &str, inbox: &Inbox) {
        self.requests.count("sns", "Unsubscribe");
        let _ = self
            .sns
            .unsubscribe()
            .subscription_arn(&inbox.subscription)
            .send()
            .await;
        self.requests.count("sqs", "DeleteQueue");
        let _ = self.sqs.delete_queue().queue_url(&inbox.url).send().await;
        self.requests.dynamodb("DeleteItem");
        let _ = self
            .dynamodb
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(key(REPLICA_PK.into(), replica)))
            .send()
            .await;
    }

    /// The lease holder's chore: deletes the queues of replicas not seen for
    /// [`REPLICA_GONE`] (killed without a chance to delete their own).
    pub async fn collect_dead_replicas(&self) -> anyhow::Result<usize> {
        self.requests.dynamodb("Query");
        let out = self
            .dynamodb
            .query()
            .table_name(&self.table)
            .key_condition_expression("pk = :pk")
            .expression_attribute_values(":pk", s(REPLICA_PK))
            .send()
            .await?;
        let horizon = now_millis() - i64::try_from(REPLICA_GONE.as_millis()).unwrap_or(0);
        let mut removed = 0;
        for item in out.items.unwrap_or_default() {
            let item = super::items::Item(&item);
            let seen: i64 = item.opt_num("seen")?.unwrap_or(0);
            let replica = item.str("sk")?;
            if seen >= horizon || replica == self.replica {
                continue;
            }
            let inbox = Inbox {
                url: item.str("queue_url")?.to_owned(),
                subscription: item.str("subscription")?.to_owned(),
            };
            tracing::info!(replica, queue = %inbox.url, "deleting the queue of a replica gone for good");
            self.remove(replica, &inbox).await;
            removed += 1;
        }
        Ok(removed)
    }
}

/// The same notices, each said once: the highest seq per space, each membership change
/// once, a `Resync` (or `Reread`) first.
fn collapse(notices: &[Notice]) -> Vec<Notice> {
    let mut out: Vec<Notice> = Vec::new();
    let mut latest: std::collections::HashMap<SpaceId, usize> = std::collections::HashMap::new();
    for notice in notices {
        match notice {
            Notice::Committed { space_id, seq } => match latest.get(space_id) {
                Some(&i) => {
                    if let Notice::Committed { seq: known, .. } = &mut out[i] {
                        *known = (*known).max(*seq);
                    }
                }
                None => {
                    latest.insert(*space_id, out.len());
                    out.push(notice.clone());
                }
            },
            other if out.contains(other) => {}
            other => out.push(other.clone()),
        }
    }
    out.sort_by_key(|n| !matches!(n, Notice::Resync | Notice::Reread));
    out
}

/// `notices` as message bodies of at most [`MAX_MESSAGE_BYTES`] each.
fn messages(notices: &[Notice]) -> Vec<Vec<Wire>> {
    let mut messages = vec![Vec::new()];
    let mut size = 0;
    for notice in notices {
        let wire = Wire::of(notice);
        let len = serde_json::to_string(&wire).map_or(0, |s| s.len()) + 1;
        if size + len > MAX_MESSAGE_BYTES && !messages.last().is_some_and(Vec::is_empty) {
            messages.push(Vec::new());
            size = 0;
        }
        size += len;
        messages.last_mut().expect("one at least").push(wire);
    }
    messages
}

fn backoff(failures: u32) -> Duration {
    (Duration::from_millis(200) * 2u32.saturating_pow(failures.min(5))).min(Duration::from_secs(5))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// However many notices a poll finds, each message stays under SNS's limit, and
    /// repeats are said once.
    #[test]
    fn notices_are_collapsed_and_cut_into_messages_that_fit() {
        let space = SpaceId::new();
        let long_user = "\"".repeat(250);
        let mut notices = Vec::new();
        for i in 0..3000u64 {
            notices.push(Notice::Committed {
                space_id: space,
                seq: i,
            });
            notices.push(Notice::MembershipChanged {
                space_id: SpaceId::new(),
                user: UserId::parse(&format!("{long_user}{}", i % 9)).unwrap(),
            });
        }
        notices.push(Notice::Resync);
        let collapsed = collapse(&notices);
        assert_eq!(collapsed[0], Notice::Resync, "a resync goes first");
        let commits: Vec<_> = collapsed
            .iter()
            .filter(|n| matches!(n, Notice::Committed { .. }))
            .collect();
        assert_eq!(
            commits,
            [&Notice::Committed {
                space_id: space,
                seq: 2999
            }]
        );
        assert_eq!(collapsed.len(), 3002);
        let bodies = messages(&collapsed);
        assert!(bodies.len() > 1, "cut in several messages");
        for body in bodies.iter() {
            let json = serde_json::to_string(&Envelope {
                from: "r".into(),
                notices: body.clone(),
            })
            .unwrap();
            assert!(json.len() <= 210 * 1024, "{} bytes", json.len());
        }
        assert_eq!(bodies.iter().map(Vec::len).sum::<usize>(), collapsed.len());
    }

    #[test]
    fn notices_go_through_the_topic_unchanged() {
        let space = SpaceId::new();
        let notices = vec![
            Notice::Committed {
                space_id: space,
                seq: 42,
            },
            Notice::MembershipChanged {
                space_id: space,
                user: UserId::parse("bob").unwrap(),
            },
            Notice::Resync,
        ];
        let body = serde_json::to_string(&Envelope {
            from: "r1".into(),
            notices: notices.iter().map(Wire::of).collect(),
        })
        .unwrap();
        assert_eq!(decode(&body), Some(notices.clone()));
        // Without raw delivery, SNS wraps the body in its own JSON.
        let wrapped = serde_json::json!({ "Type": "Notification", "Message": body }).to_string();
        assert_eq!(decode(&wrapped), Some(notices));
        assert_eq!(decode("{\"from\":\"r1\"}"), Some(vec![]), "a heartbeat");
        assert_eq!(decode("not json"), None);
    }
}
