//! Counts of the requests a backend makes to the services behind it (DynamoDB, S3, SQS,
//! DynamoDB Streams), by service and operation: exported at `/metrics` and read by the
//! benchmark to report the cost of each API operation.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

#[derive(Clone, Default)]
pub struct RequestCounter {
    counts: Arc<Mutex<BTreeMap<(&'static str, &'static str), u64>>>,
    /// `GetRecords` calls per stream shard, oldest shard first.
    stream_reads: Arc<Mutex<indexmap::IndexMap<String, u64>>>,
}

/// Shards whose reads are counted (see [`RequestCounter::stream_read`]).
const STREAM_SHARDS_KEPT: usize = 64;

impl RequestCounter {
    pub fn count(&self, service: &'static str, operation: &'static str) {
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        *counts.entry((service, operation)).or_default() += 1;
    }

    pub fn dynamodb(&self, operation: &'static str) {
        self.count("dynamodb", operation);
    }

    pub fn s3(&self, operation: &'static str) {
        self.count("s3", operation);
    }

    /// A publish that lost the race for its space's seq and tried again.
    pub fn seq_retry(&self) {
        self.count("filesync", "SeqRetry");
    }

    /// A `GetRecords` call on a shard of the table's stream. Shards come and go (one
    /// lives about four hours): only the most recently read [`STREAM_SHARDS_KEPT`] are
    /// counted, so the counts stay bounded.
    pub fn stream_read(&self, shard: &str) {
        let mut reads = self.stream_reads.lock().unwrap_or_else(|e| e.into_inner());
        match reads.get_mut(shard) {
            Some(n) => *n += 1,
            None => {
                if reads.len() >= STREAM_SHARDS_KEPT {
                    reads.shift_remove_index(0);
                }
                reads.insert(shard.to_owned(), 1);
            }
        }
    }

    /// `(shard, GetRecords calls)`, in order.
    pub fn stream_reads(&self) -> Vec<(String, u64)> {
        let reads = self.stream_reads.lock().unwrap_or_else(|e| e.into_inner());
        reads.iter().map(|(s, n)| (s.clone(), *n)).collect()
    }

    /// `(service, operation, count)`, in order.
    pub fn snapshot(&self) -> Vec<(&'static str, &'static str, u64)> {
        let counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        counts.iter().map(|((s, o), c)| (*s, *o, *c)).collect()
    }
}
