//! The change feed on AWS: a DynamoDB Streams consumer in every replica.
//!
//! The stream is a trigger, not the data. A commit-log item (`S#space / L#seq`) appearing
//! becomes `Notice::Committed { space, seq }`, and any change to a member item becomes
//! `Notice::MembershipChanged`; the live hub then reads the commit log itself, consistently,
//! from the last seq it delivered. So a record that comes twice, late, out of order, or
//! that names a write which never happened (an emulator's phantom) delivers nothing that
//! the store does not confirm, and a lost record is made up by the next one. Where records
//! may have been lost unseen (the stream trimmed them before they were read), the feed
//! says `Notice::Resync` and the hub re-reads every space it follows.
//!
//! Shards: discovered with `DescribeStream` (paged); a child is read only once its parent
//! has been read to its end (or has aged out of the stream), so per-item order holds.
//! Shards open at start-up are read from `LATEST`, shards that appear later from
//! `TRIM_HORIZON`. Once a shard has given a record, each poll asks for the records
//! `AFTER_SEQUENCE_NUMBER` of the last one: it never follows a stale or expired iterator.
//! Throttling and errors back off exponentially, per shard.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_dynamodbstreams::Client;
use aws_sdk_dynamodbstreams::error::SdkError;
use aws_sdk_dynamodbstreams::operation::get_records::GetRecordsError;
use aws_sdk_dynamodbstreams::types::{AttributeValue, Record, ShardIteratorType};
use futures::future::BoxFuture;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use crate::domain::{SpaceId, UserId};
use crate::storage::{ChangeFeed, Notice, RequestCounter};

/// How often the shard list is refreshed when no shard has ended.
const SHARD_REFRESH: Duration = Duration::from_secs(10);
/// Longest wait after repeated failures.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

pub struct StreamFeed {
    sender: broadcast::Sender<Notice>,
    consumer: Arc<Consumer>,
}

struct Consumer {
    streams: Client,
    dynamodb: aws_sdk_dynamodb::Client,
    table: String,
    sender: broadcast::Sender<Notice>,
    poll: Duration,
    requests: RequestCounter,
}

impl StreamFeed {
    pub fn new(
        streams: Client,
        dynamodb: aws_sdk_dynamodb::Client,
        table: String,
        sender: broadcast::Sender<Notice>,
        poll: Duration,
        requests: RequestCounter,
    ) -> Self {
        let consumer = Arc::new(Consumer {
            streams,
            dynamodb,
            table,
            sender: sender.clone(),
            poll,
            requests,
        });
        Self { sender, consumer }
    }
}

impl ChangeFeed for StreamFeed {
    fn subscribe(&self) -> broadcast::Receiver<Notice> {
        self.sender.subscribe()
    }

    fn run(&self, stop: CancellationToken) -> BoxFuture<'static, ()> {
        let consumer = self.consumer.clone();
        Box::pin(async move {
            tokio::select! {
                () = consumer.run() => {}
                () = stop.cancelled() => {}
            }
        })
    }
}

/// Where the next read of a shard starts.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Position {
    Latest,
    TrimHorizon,
    After(String),
}

#[derive(Debug)]
struct Shard {
    parent: Option<String>,
    position: Position,
    /// An iterator to follow, until the shard has given its first record.
    iterator: Option<String>,
    /// Read to its end: it is closed and every record was seen.
    done: bool,
    failures: u32,
    retry_at: tokio::time::Instant,
}

/// What one poll of a shard found.
enum Polled {
    Records(usize),
    Ended,
    Trimmed,
    Gone,
    Failed,
}

impl Consumer {
    async fn run(&self) {
        let mut failures = 0u32;
        loop {
            match self.follow_stream().await {
                Ok(()) => failures = 0,
                Err(e) => {
                    failures += 1;
                    tracing::warn!(error = ?e, "DynamoDB stream consumer failed; starting over");
                }
            }
            tokio::time::sleep(backoff(failures.max(1))).await;
            // Records may have been missed while the stream was not followed.
            let _ = self.sender.send(Notice::Resync);
        }
    }

    async fn stream_arn(&self) -> anyhow::Result<String> {
        self.requests.count("dynamodb", "DescribeTable");
        let table = self
            .dynamodb
            .describe_table()
            .table_name(&self.table)
            .send()
            .await?;
        table
            .table
            .and_then(|t| t.latest_stream_arn)
            .ok_or_else(|| anyhow::anyhow!("table {} has no stream; enable streams", self.table))
    }

    /// Follows the table's current stream until it is gone.
    async fn follow_stream(&self) -> anyhow::Result<()> {
        let arn = self.stream_arn().await?;
        let mut shards: HashMap<String, Shard> = HashMap::new();
        self.refresh(&arn, &mut shards, Position::Latest).await?;
        tracing::info!(stream = %arn, shards = shards.len(), "following the table's stream");
        // Whatever was committed before the shards were positioned is in the store.
        let _ = self.sender.send(Notice::Resync);
        let mut refreshed = tokio::time::Instant::now();
        loop {
            let ready = ready_shards(&shards, tokio::time::Instant::now());
            let polls = ready.iter().map(|id| {
                let shard = &shards[id];
                self.poll_shard(&arn, id, shard.position.clone(), shard.iterator.clone())
            });
            let results = futures::future::join_all(polls).await;
            let mut busy = false;
            let mut ended = false;
            for (id, (polled, position, iterator)) in ready.into_iter().zip(results) {
                let shard = shards.get_mut(&id).expect("polled shards exist");
                shard.position = position;
                shard.iterator = iterator;
                match polled {
                    Polled::Records(n) => {
                        shard.failures = 0;
                        busy |= n > 0;
                    }
                    Polled::Ended | Polled::Gone => {
                        shard.done = true;
                        ended = true;
                    }
                    Polled::Trimmed => {
                        shard.position = Position::TrimHorizon;
                        shard.iterator = None;
                        let _ = self.sender.send(Notice::Resync);
                    }
                    Polled::Failed => {
                        shard.failures += 1;
                        shard.retry_at = tokio::time::Instant::now() + backoff(shard.failures);
                    }
                }
            }
            if ended || refreshed.elapsed() >= SHARD_REFRESH {
                self.refresh(&arn, &mut shards, Position::TrimHorizon)
                    .await?;
                refreshed = tokio::time::Instant::now();
                if shards.is_empty() {
                    anyhow::bail!("the stream {arn} has no shards left");
                }
            }
            if !busy {
                tokio::time::sleep(self.poll).await;
            }
        }
    }

    /// Adds the stream's new shards (starting at `start`) and forgets finished shards that
    /// have aged out of it.
    async fn refresh(
        &self,
        arn: &str,
        shards: &mut HashMap<String, Shard>,
        start: Position,
    ) -> anyhow::Result<()> {
        let mut listed = Vec::new();
        let mut after: Option<String> = None;
        loop {
            self.requests.count("dynamodbstreams", "DescribeStream");
            let out = self
                .streams
                .describe_stream()
                .stream_arn(arn)
                .set_exclusive_start_shard_id(after.take())
                .send()
                .await?;
            let description = out
                .stream_description
                .ok_or_else(|| anyhow::anyhow!("DescribeStream returned no description"))?;
            listed.extend(description.shards.unwrap_or_default());
            match description.last_evaluated_shard_id {
                Some(last) => after = Some(last),
                None => break,
            }
        }
        merge_listing(shards, listed, start, tokio::time::Instant::now());
        Ok(())
    }

    /// One read of a shard: the outcome, and where the next read starts.
    async fn poll_shard(
        &self,
        arn: &str,
        shard: &str,
        position: Position,
        iterator: Option<String>,
    ) -> (Polled, Position, Option<String>) {
        let iterator = match (&position, iterator) {
            (Position::After(_), _) | (_, None) => {
                let (kind, seq) = match &position {
                    Position::Latest => (ShardIteratorType::Latest, None),
                    Position::TrimHorizon => (ShardIteratorType::TrimHorizon, None),
                    Position::After(seq) => {
                        (ShardIteratorType::AfterSequenceNumber, Some(seq.clone()))
                    }
                };
                self.requests.count("dynamodbstreams", "GetShardIterator");
                match self
                    .streams
                    .get_shard_iterator()
                    .stream_arn(arn)
                    .shard_id(shard)
                    .shard_iterator_type(kind)
                    .set_sequence_number(seq)
                    .send()
                    .await
                {
                    Ok(out) => match out.shard_iterator {
                        Some(it) => it,
                        None => return (Polled::Ended, position, None),
                    },
                    Err(e) => {
                        let polled = match e.as_service_error() {
                            Some(e) if e.is_trimmed_data_access_exception() => Polled::Trimmed,
                            Some(e) if e.is_resource_not_found_exception() => Polled::Gone,
                            _ => {
                                tracing::debug!(error = ?e, shard, "GetShardIterator failed");
                                Polled::Failed
                            }
                        };
                        return (polled, position, None);
                    }
                }
            }
            (_, Some(iterator)) => iterator,
        };
        self.requests.count("dynamodbstreams", "GetRecords");
        match self
            .streams
            .get_records()
            .shard_iterator(iterator)
            .limit(1000)
            .send()
            .await
        {
            Ok(out) => {
                let records = out.records.unwrap_or_default();
                for record in &records {
                    if let Some(notice) = notice_of(record) {
                        let _ = self.sender.send(notice);
                    }
                }
                let last = records
                    .iter()
                    .rev()
                    .find_map(|r| r.dynamodb.as_ref()?.sequence_number.clone());
                let next = out.next_shard_iterator;
                match (last, next) {
                    (_, None) => (Polled::Ended, position, None),
                    (Some(seq), Some(_)) => {
                        (Polled::Records(records.len()), Position::After(seq), None)
                    }
                    (None, Some(next)) => {
                        let keep = match position {
                            Position::After(_) => None,
                            _ => Some(next),
                        };
                        (Polled::Records(0), position, keep)
                    }
                }
            }
            Err(SdkError::ServiceError(e)) => {
                let polled = match e.err() {
                    GetRecordsError::TrimmedDataAccessException(_) => Polled::Trimmed,
                    GetRecordsError::ResourceNotFoundException(_) => Polled::Gone,
                    // The iterator is re-made from the position on the next poll.
                    GetRecordsError::ExpiredIteratorException(_) => Polled::Records(0),
                    other => {
                        tracing::debug!(error = ?other, shard, "GetRecords failed");
                        Polled::Failed
                    }
                };
                (polled, position, None)
            }
            Err(e) => {
                tracing::debug!(error = ?e, shard, "GetRecords failed");
                (Polled::Failed, position, None)
            }
        }
    }
}

/// The shards to poll now: not read to their end, not backing off, and whose parent (if
/// the stream still has it) has been read to its end, so that an item's records are
/// read in order across a split.
fn ready_shards(shards: &HashMap<String, Shard>, now: tokio::time::Instant) -> Vec<String> {
    shards
        .iter()
        .filter(|(_, s)| !s.done && s.retry_at <= now)
        .filter(|(_, s)| {
            s.parent
                .as_ref()
                .and_then(|p| shards.get(p))
                .is_none_or(|p| p.done)
        })
        .map(|(id, _)| id.clone())
        .collect()
}

/// Merges a `DescribeStream` listing into the known shards: new ones start at `start`,
/// and finished ones the stream no longer lists are forgotten. On the first listing,
/// shards already closed are history (the store has all of it) and are not read.
fn merge_listing(
    shards: &mut HashMap<String, Shard>,
    listed: Vec<aws_sdk_dynamodbstreams::types::Shard>,
    start: Position,
    now: tokio::time::Instant,
) {
    let first = shards.is_empty();
    let present: std::collections::HashSet<String> =
        listed.iter().filter_map(|s| s.shard_id.clone()).collect();
    shards.retain(|id, s| !s.done || present.contains(id));
    for shard in listed {
        let Some(id) = shard.shard_id else { continue };
        if shards.contains_key(&id) {
            continue;
        }
        let closed = shard
            .sequence_number_range
            .as_ref()
            .is_some_and(|r| r.ending_sequence_number.is_some());
        shards.insert(
            id,
            Shard {
                parent: shard.parent_shard_id,
                position: start.clone(),
                iterator: None,
                done: first && closed,
                failures: 0,
                retry_at: now,
            },
        );
    }
}

/// What a stream record announces, read from its keys alone.
fn notice_of(record: &Record) -> Option<Notice> {
    let keys = record.dynamodb.as_ref()?.keys.as_ref()?;
    let text = |name: &str| match keys.get(name) {
        Some(AttributeValue::S(v)) => Some(v.as_str()),
        _ => None,
    };
    let space: SpaceId = text("pk")?.strip_prefix("S#")?.parse().ok()?;
    let sk = text("sk")?;
    if let Some(seq) = sk.strip_prefix("L#") {
        return Some(Notice::Committed {
            space_id: space,
            seq: seq.parse().ok()?,
        });
    }
    let user = UserId::parse(sk.strip_prefix("M#")?).ok()?;
    Some(Notice::MembershipChanged {
        space_id: space,
        user,
    })
}

/// Exponential backoff from 100 ms up to [`MAX_BACKOFF`].
fn backoff(failures: u32) -> Duration {
    (Duration::from_millis(100) * 2u32.saturating_pow(failures.min(10))).min(MAX_BACKOFF)
}

#[cfg(test)]
mod tests {
    use aws_sdk_dynamodbstreams::types::{SequenceNumberRange, Shard as Listed, StreamRecord};

    use super::*;

    fn listed(id: &str, parent: Option<&str>, closed: bool) -> Listed {
        let range = SequenceNumberRange::builder().starting_sequence_number("100");
        let range = if closed {
            range.ending_sequence_number("200")
        } else {
            range
        };
        Listed::builder()
            .shard_id(id)
            .set_parent_shard_id(parent.map(str::to_owned))
            .sequence_number_range(range.build())
            .build()
    }

    fn ready(shards: &HashMap<String, Shard>, now: tokio::time::Instant) -> Vec<String> {
        let mut ready = ready_shards(shards, now);
        ready.sort();
        ready
    }

    /// A shard splits: its children wait until it has been read to its end, start from
    /// their beginning, and the parent is forgotten once the stream drops it.
    #[test]
    fn children_of_a_split_are_read_after_their_parent() {
        let now = tokio::time::Instant::now();
        let mut shards = HashMap::new();
        merge_listing(
            &mut shards,
            vec![listed("p", None, false)],
            Position::Latest,
            now,
        );
        assert_eq!(shards["p"].position, Position::Latest);
        assert_eq!(ready(&shards, now), ["p"]);

        let split = vec![
            listed("p", None, true),
            listed("c1", Some("p"), false),
            listed("c2", Some("p"), false),
        ];
        merge_listing(&mut shards, split, Position::TrimHorizon, now);
        assert_eq!(shards["c1"].position, Position::TrimHorizon);
        assert!(
            !shards["p"].done,
            "a parent is done once read to its end, not once closed"
        );
        assert_eq!(ready(&shards, now), ["p"], "children wait for their parent");

        shards.get_mut("p").unwrap().done = true;
        assert_eq!(ready(&shards, now), ["c1", "c2"]);

        let aged = vec![
            listed("c1", Some("p"), false),
            listed("c2", Some("p"), false),
        ];
        merge_listing(&mut shards, aged, Position::TrimHorizon, now);
        assert!(
            !shards.contains_key("p"),
            "a finished shard the stream dropped is forgotten"
        );
        assert_eq!(
            ready(&shards, now),
            ["c1", "c2"],
            "an absent parent holds nothing up"
        );
    }

    #[test]
    fn at_start_up_closed_shards_are_history() {
        let now = tokio::time::Instant::now();
        let mut shards = HashMap::new();
        let listing = vec![listed("old", None, true), listed("new", Some("old"), false)];
        merge_listing(&mut shards, listing, Position::Latest, now);
        assert!(shards["old"].done);
        assert_eq!(ready(&shards, now), ["new"]);
    }

    #[test]
    fn a_shard_backing_off_waits() {
        let now = tokio::time::Instant::now();
        let mut shards = HashMap::new();
        merge_listing(
            &mut shards,
            vec![listed("s", None, false)],
            Position::Latest,
            now,
        );
        shards.get_mut("s").unwrap().retry_at = now + Duration::from_secs(1);
        assert!(ready(&shards, now).is_empty());
        assert_eq!(ready(&shards, now + Duration::from_secs(1)), ["s"]);
        assert_eq!(backoff(1), Duration::from_millis(200));
        assert_eq!(backoff(30), MAX_BACKOFF);
    }

    #[test]
    fn records_announce_commits_and_membership_changes_only() {
        let space = SpaceId::new();
        let record = |sk: &str| {
            let keys = HashMap::from([
                ("pk".to_owned(), AttributeValue::S(format!("S#{space}"))),
                ("sk".to_owned(), AttributeValue::S(sk.to_owned())),
            ]);
            Record::builder()
                .dynamodb(StreamRecord::builder().set_keys(Some(keys)).build())
                .build()
        };
        assert_eq!(
            notice_of(&record("L#00000000000000000042")),
            Some(Notice::Committed {
                space_id: space,
                seq: 42
            })
        );
        assert_eq!(
            notice_of(&record("M#bob")),
            Some(Notice::MembershipChanged {
                space_id: space,
                user: UserId::parse("bob").unwrap()
            })
        );
        for other in [
            "SPACE",
            "X#00000000000000000042",
            "N#a.txt",
            "L#not-a-number",
        ] {
            assert_eq!(notice_of(&record(other)), None, "{other}");
        }
    }
}
