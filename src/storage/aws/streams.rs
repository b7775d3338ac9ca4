//! The change feed on AWS: a DynamoDB Streams consumer.
//!
//! The stream is a trigger, not the data. A commit-log item (`S#space / L#seq`) appearing
//! becomes `Notice::Committed { space, seq }`, and any change to a member item becomes
//! `Notice::MembershipChanged`; the live hub then reads the commit log itself, consistently,
//! from the last seq it delivered. So a record that comes twice, late, out of order, or
//! that names a write which never happened (an emulator's phantom) delivers nothing that
//! the store does not confirm, and a lost record is made up by the next one. Where records
//! may have been lost unseen (the stream trimmed them before they were read, or a shard
//! was positioned at `LATEST` again after losing its iterator), the feed says
//! `Notice::Resync` and the hub re-reads every space it follows.
//!
//! Who reads: with a notices topic configured, only the replica holding the stream's
//! lease (`lease.rs`) reads the stream, and publishes what it finds to every replica
//! (`fanout.rs`); reads per shard stay the same however many replicas run. Without one,
//! every replica reads every shard (fine for one or two).
//!
//! Shards: discovered with `DescribeStream` (paged); a child is read only once its parent
//! has been read to its end (or has aged out of the stream), so per-item order holds.
//! A reader starts each shard where the lease's checkpoint says; shards without one that
//! are open when it starts are read from `LATEST`, shards that appear later from
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
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::fanout::{Fanout, HEARTBEAT};
use super::lease::{Checkpoints, StreamLease};
use crate::domain::{SpaceId, UserId};
use crate::storage::{ChangeFeed, Notice, RequestCounter};

/// How often the shard list is refreshed when no shard has ended.
const SHARD_REFRESH: Duration = Duration::from_secs(10);
/// Longest wait after repeated failures.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// How often the lease holder looks for the queues of replicas that died.
const COLLECT_EVERY: Duration = Duration::from_secs(300);
/// Failed reads in a row after which a shard's reader starts over (and a lease holder
/// gives the lease up for another replica to try).
const GIVE_UP_AFTER: u32 = 8;

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
    /// Lease mode: the lease, and the topic notices are fanned out through.
    shared: Option<(StreamLease, Arc<Fanout>)>,
    /// How far the stream has been read, as last handed to the lease (given back with
    /// it on the way out).
    last_checkpoints: tokio::sync::Mutex<Checkpoints>,
}

impl StreamFeed {
    pub fn new(
        streams: Client,
        dynamodb: aws_sdk_dynamodb::Client,
        table: String,
        sender: broadcast::Sender<Notice>,
        poll: Duration,
        requests: RequestCounter,
        shared: Option<(StreamLease, Fanout)>,
    ) -> Self {
        let consumer = Arc::new(Consumer {
            streams,
            dynamodb,
            table,
            sender: sender.clone(),
            poll,
            requests,
            shared: shared.map(|(lease, fanout)| (lease, Arc::new(fanout))),
            last_checkpoints: tokio::sync::Mutex::new(Checkpoints::new()),
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
            match &consumer.shared {
                None => {
                    tokio::select! {
                        () = consumer.read_alone() => {}
                        () = stop.cancelled() => {}
                    }
                }
                Some((_, fanout)) => {
                    let inbox = tokio::spawn(fanout.clone().run(stop.clone()));
                    consumer.read_when_leader(&stop).await;
                    let _ = inbox.await;
                }
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
    retry_at: Instant,
}

/// Whether records may have been skipped unseen by a poll: one that took a fresh
/// `LATEST` iterator (a shard's first position, or a new one after the last was lost to
/// an error or an expiry before the shard gave a record) never reads what was written
/// before it. Readers must then read the store (`Resync`), after the new position.
fn skipped_records(position: &Position, fresh_iterator: bool) -> bool {
    *position == Position::Latest && fresh_iterator
}

/// What one poll of a shard found.
enum Polled {
    Records(usize),
    Ended,
    Trimmed,
    Gone,
    Failed,
}

/// The outcome of one poll: what it found, where the next one starts, and the notices of
/// the records it read.
struct Poll {
    polled: Polled,
    position: Position,
    iterator: Option<String>,
    notices: Vec<Notice>,
    /// It took a fresh `LATEST` iterator: see [`skipped_records`].
    fresh_latest: bool,
}

impl Consumer {
    /// Without a lease: reads every shard, for ever, starting over after a failure.
    async fn read_alone(&self) {
        let mut failures = 0u32;
        loop {
            match self.follow_stream(Checkpoints::new(), None).await {
                Ok(_) => failures = 0,
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

    /// With a lease: reads the stream while this replica holds the lease; otherwise tries
    /// to take it every third of its duration. Gives it up when `stop` comes.
    async fn read_when_leader(&self, stop: &CancellationToken) {
        let Some((lease, _)) = &self.shared else {
            return;
        };
        let mut failures = 0u32;
        while !stop.is_cancelled() {
            let taken = match lease.acquire().await {
                Ok(taken) => taken,
                Err(e) => {
                    tracing::warn!(error = ?e, "cannot read the stream's lease");
                    None
                }
            };
            if let Some(checkpoints) = taken {
                tracing::info!("holding the stream's lease: reading the table's stream");
                let outcome = tokio::select! {
                    outcome = self.follow_stream(checkpoints, Some(lease)) => Some(outcome),
                    () = stop.cancelled() => None,
                };
                match outcome {
                    None => {
                        // On the way out: give the lease to the next replica at once.
                        let checkpoints = self.last_checkpoints.lock().await.clone();
                        lease.release(&checkpoints).await;
                        return;
                    }
                    Some(Ok(())) => {
                        failures = 0;
                        tracing::info!("lost the stream's lease to another replica");
                    }
                    Some(Err(e)) => {
                        failures += 1;
                        tracing::warn!(error = ?e, "DynamoDB stream consumer failed; giving the lease up");
                        // Another replica may fare better; this one waits a lease out.
                        let checkpoints = self.last_checkpoints.lock().await.clone();
                        lease.release(&checkpoints).await;
                        tokio::select! {
                            () = stop.cancelled() => return,
                            () = tokio::time::sleep(lease.duration().max(backoff(failures))) => {}
                        }
                    }
                }
                continue;
            }
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(lease.duration() / 3) => {}
            }
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

    /// Announces what the stream said: to this replica's hub, and through the topic to
    /// every replica when holding the lease. The topic is tried until it takes them (the
    /// shards' positions move on only after), or the lease is gone.
    async fn announce(
        &self,
        notices: Vec<Notice>,
        lease: Option<&StreamLease>,
    ) -> anyhow::Result<()> {
        if notices.is_empty() {
            return Ok(());
        }
        for notice in &notices {
            let _ = self.sender.send(notice.clone());
        }
        let (Some(_), Some((_, fanout))) = (lease, &self.shared) else {
            return Ok(());
        };
        let mut failures = 0;
        while let Err(e) = fanout.publish(&notices).await {
            failures += 1;
            anyhow::ensure!(failures < 8, "cannot publish notices: {e:?}");
            tracing::warn!(error = ?e, "cannot publish notices; retrying");
            tokio::time::sleep(backoff(failures)).await;
        }
        Ok(())
    }

    /// Follows the table's current stream, from `checkpoints`, until it fails, or (with a
    /// lease) until another replica holds the lease: then `Ok`.
    async fn follow_stream(
        &self,
        checkpoints: Checkpoints,
        lease: Option<&StreamLease>,
    ) -> anyhow::Result<()> {
        let arn = self.stream_arn().await?;
        let mut shards: HashMap<String, Shard> = HashMap::new();
        self.refresh(&arn, &mut shards, Position::Latest, &checkpoints)
            .await?;
        tracing::info!(stream = %arn, shards = shards.len(), "following the table's stream");
        let mut refreshed = Instant::now();
        let mut renewed = Instant::now();
        let mut heard = Instant::now();
        let mut collected: Option<Instant> = None;
        loop {
            let ready = ready_shards(&shards, Instant::now());
            let polls = ready.iter().map(|id| {
                let shard = &shards[id];
                self.poll_shard(&arn, id, shard.position.clone(), shard.iterator.clone())
            });
            let results = futures::future::join_all(polls).await;
            let mut busy = false;
            let mut ended = false;
            let mut notices = Vec::new();
            let mut moves = Vec::new();
            for (id, poll) in ready.into_iter().zip(results) {
                if skipped_records(&shards[&id].position, poll.fresh_latest) {
                    // Whatever was committed before this position is in the store only.
                    notices.push(Notice::Resync);
                }
                notices.extend(poll.notices);
                moves.push((id, poll.polled, poll.position, poll.iterator));
            }
            // The notices go out before any shard moves past their records: a reader that
            // dies in between leaves checkpoints from which they are read again.
            let had_notices = !notices.is_empty();
            self.announce(notices, lease).await?;
            for (id, polled, position, iterator) in moves {
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
                        self.announce(vec![Notice::Resync], lease).await?;
                    }
                    Polled::Failed => {
                        shard.failures += 1;
                        shard.retry_at = Instant::now() + backoff(shard.failures);
                        anyhow::ensure!(
                            shard.failures < GIVE_UP_AFTER,
                            "shard {id} failed {GIVE_UP_AFTER} reads in a row"
                        );
                    }
                }
            }
            if ended || refreshed.elapsed() >= SHARD_REFRESH {
                self.refresh(
                    &arn,
                    &mut shards,
                    Position::TrimHorizon,
                    &Checkpoints::new(),
                )
                .await?;
                refreshed = Instant::now();
                if shards.is_empty() {
                    anyhow::bail!("the stream {arn} has no shards left");
                }
            }
            if let (Some(lease), Some((_, fanout))) = (lease, &self.shared) {
                let positions = checkpoints_of(&shards);
                *self.last_checkpoints.lock().await = positions.clone();
                if renewed.elapsed() >= lease.duration() / 3 {
                    if !lease.renew(&positions).await? {
                        return Ok(());
                    }
                    renewed = Instant::now();
                }
                // A heartbeat says "I am reading", not only "I am alive": none while a shard
                // keeps failing, so that the others read the store instead.
                let reading = shards.values().all(|s| s.done || s.failures < 3);
                if had_notices {
                    heard = Instant::now();
                } else if reading && heard.elapsed() >= HEARTBEAT {
                    if let Err(e) = fanout.heartbeat().await {
                        tracing::warn!(error = ?e, "cannot publish the stream reader's heartbeat");
                    }
                    heard = Instant::now();
                }
                if collected.is_none_or(|at| at.elapsed() >= COLLECT_EVERY) {
                    collected = Some(Instant::now());
                    if let Err(e) = fanout.collect_dead_replicas().await {
                        tracing::warn!(error = ?e, "cannot collect the queues of dead replicas");
                    }
                }
            }
            if !busy {
                tokio::time::sleep(self.poll).await;
            }
        }
    }

    /// Adds the stream's new shards (starting at their checkpoint, or at `start`) and
    /// forgets finished shards that have aged out of it.
    async fn refresh(
        &self,
        arn: &str,
        shards: &mut HashMap<String, Shard>,
        start: Position,
        checkpoints: &Checkpoints,
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
        merge_listing(shards, listed, start, checkpoints, Instant::now());
        Ok(())
    }

    /// One read of a shard: the outcome, where the next read starts, and the notices of
    /// the records read.
    async fn poll_shard(
        &self,
        arn: &str,
        shard: &str,
        position: Position,
        iterator: Option<String>,
    ) -> Poll {
        let mut fresh_latest = false;
        let done = |polled, position, iterator, fresh_latest| Poll {
            polled,
            position,
            iterator,
            notices: Vec::new(),
            fresh_latest,
        };
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
                        Some(it) => {
                            fresh_latest = position == Position::Latest;
                            it
                        }
                        None => return done(Polled::Ended, position, None, false),
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
                        return done(polled, position, None, false);
                    }
                }
            }
            (_, Some(iterator)) => iterator,
        };
        self.requests.count("dynamodbstreams", "GetRecords");
        self.requests.stream_read(shard);
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
                let notices = records.iter().filter_map(notice_of).collect();
                let last = records
                    .iter()
                    .rev()
                    .find_map(|r| r.dynamodb.as_ref()?.sequence_number.clone());
                let (polled, position, iterator) = match (last, out.next_shard_iterator) {
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
                };
                Poll {
                    polled,
                    position,
                    iterator,
                    notices,
                    fresh_latest,
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
                done(polled, position, None, fresh_latest)
            }
            Err(e) => {
                tracing::debug!(error = ?e, shard, "GetRecords failed");
                done(Polled::Failed, position, None, fresh_latest)
            }
        }
    }
}

/// How far each shard has been read (and announced): the lease's checkpoints.
fn checkpoints_of(shards: &HashMap<String, Shard>) -> Checkpoints {
    shards
        .iter()
        .filter(|(_, shard)| !shard.done)
        .filter_map(|(id, shard)| match &shard.position {
            Position::After(seq) => Some((id.clone(), seq.clone())),
            _ => None,
        })
        .collect()
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

/// Merges a `DescribeStream` listing into the known shards: new ones start at their
/// checkpoint, if any, else at `start`; finished ones the stream no longer lists are
/// forgotten. On the first listing, shards already closed with no checkpoint are history
/// (the store has all of it) and are not read.
fn merge_listing(
    shards: &mut HashMap<String, Shard>,
    listed: Vec<aws_sdk_dynamodbstreams::types::Shard>,
    start: Position,
    checkpoints: &Checkpoints,
    now: Instant,
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
        let checkpoint = checkpoints.get(&id).cloned();
        shards.insert(
            id,
            Shard {
                parent: shard.parent_shard_id,
                done: first && closed && checkpoint.is_none(),
                position: checkpoint.map_or_else(|| start.clone(), Position::After),
                iterator: None,
                failures: 0,
                retry_at: now,
            },
        );
    }
    // A shard whose parent is still to be read follows on from it: from its beginning.
    let unfinished: std::collections::HashSet<String> = shards
        .iter()
        .filter(|(_, s)| !s.done)
        .map(|(id, _)| id.clone())
        .collect();
    for shard in shards.values_mut() {
        if shard.position == Position::Latest
            && shard
                .parent
                .as_ref()
                .is_some_and(|p| unfinished.contains(p))
        {
            shard.position = Position::TrimHorizon;
        }
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
            &Checkpoints::new(),
            now,
        );
        assert_eq!(shards["p"].position, Position::Latest);
        assert_eq!(ready(&shards, now), ["p"]);

        let split = vec![
            listed("p", None, true),
            listed("c1", Some("p"), false),
            listed("c2", Some("p"), false),
        ];
        merge_listing(
            &mut shards,
            split,
            Position::TrimHorizon,
            &Checkpoints::new(),
            now,
        );
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
        merge_listing(
            &mut shards,
            aged,
            Position::TrimHorizon,
            &Checkpoints::new(),
            now,
        );
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
        merge_listing(
            &mut shards,
            listing,
            Position::Latest,
            &Checkpoints::new(),
            now,
        );
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
            &Checkpoints::new(),
            now,
        );
        shards.get_mut("s").unwrap().retry_at = now + Duration::from_secs(1);
        assert!(ready(&shards, now).is_empty());
        assert_eq!(ready(&shards, now + Duration::from_secs(1)), ["s"]);
        assert_eq!(backoff(1), Duration::from_millis(200));
        assert_eq!(backoff(30), MAX_BACKOFF);
    }

    /// A reader taking over the lease starts each shard where its predecessor left it,
    /// closed shards included: nothing between the two readers is skipped.
    #[test]
    fn a_new_lease_holder_starts_at_the_checkpoints() {
        let now = tokio::time::Instant::now();
        let mut shards = HashMap::new();
        let checkpoints = Checkpoints::from([("old".to_owned(), "150".to_owned())]);
        let listing = vec![listed("old", None, true), listed("new", Some("old"), false)];
        merge_listing(&mut shards, listing, Position::Latest, &checkpoints, now);
        assert_eq!(shards["old"].position, Position::After("150".into()));
        assert!(!shards["old"].done, "read to its end first");
        assert_eq!(ready(&shards, now), ["old"]);
        assert_eq!(checkpoints_of(&shards), checkpoints);
    }

    /// Every fresh LATEST iterator (a shard's first position, or a new one after the last
    /// was lost to an error or an expiry) skips what was written before it: readers are
    /// told to read the store. Other positions skip nothing.
    #[test]
    fn a_fresh_latest_position_asks_for_a_resync() {
        assert!(skipped_records(&Position::Latest, true));
        assert!(
            !skipped_records(&Position::Latest, false),
            "following an iterator"
        );
        assert!(!skipped_records(&Position::TrimHorizon, true));
        assert!(!skipped_records(&Position::After("7".into()), true));
    }

    /// A child of a shard still being read (a takeover mid-split) starts from its
    /// beginning, not at LATEST, and shards read to their end are not checkpointed.
    #[test]
    fn children_of_an_unfinished_parent_start_at_their_beginning() {
        let now = tokio::time::Instant::now();
        let mut shards = HashMap::new();
        let checkpoints = Checkpoints::from([("p".to_owned(), "150".to_owned())]);
        let listing = vec![listed("p", None, true), listed("c", Some("p"), false)];
        merge_listing(&mut shards, listing, Position::Latest, &checkpoints, now);
        assert_eq!(shards["c"].position, Position::TrimHorizon);
        shards.get_mut("p").unwrap().done = true;
        assert!(
            checkpoints_of(&shards).is_empty(),
            "a finished shard needs no checkpoint"
        );
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
