//! The stream's lease: which replica reads the table's DynamoDB stream, and where it got
//! to. One item in the table (`LEASE / STREAM`), taken and renewed with conditional
//! writes, as the Kinesis Client Library does for its shards.
//!
//! The holder renews it every third of its duration, recording how far it has read each
//! shard (the last sequence number whose notices it has already published). A replica
//! that takes over after the holder died starts from there, so no record is skipped; the
//! few read twice announce nothing new. Two replicas may both believe they hold it for
//! a moment only if their clocks disagree by more than the lease: both then read the
//! stream, which costs reads, never correctness.

use std::collections::BTreeMap;
use std::time::Duration;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::ReturnValue;

use super::items::{Attrs, Item, key, n, s};
use super::metadata::{aws_error, unless_condition_failed};
use crate::domain::now_millis;
use crate::storage::{RequestCounter, StoreError};

const LEASE_PK: &str = "LEASE";
const LEASE_SK: &str = "STREAM";

/// Shard id to the sequence number of the last record read and announced.
pub type Checkpoints = BTreeMap<String, String>;

pub struct StreamLease {
    client: Client,
    table: String,
    /// This replica.
    owner: String,
    duration: Duration,
    requests: RequestCounter,
}

impl StreamLease {
    pub fn new(
        client: Client,
        table: String,
        owner: String,
        duration: Duration,
        requests: RequestCounter,
    ) -> Self {
        Self {
            client,
            table,
            owner,
            duration,
            requests,
        }
    }

    pub fn duration(&self) -> Duration {
        self.duration
    }

    fn expiry(&self) -> i64 {
        now_millis() + i64::try_from(self.duration.as_millis()).unwrap_or(i64::MAX / 2)
    }

    /// Takes the lease if nobody holds it, its holder let it expire, or it is ours
    /// already: the checkpoints its last holder left. `None` while another replica holds
    /// it.
    pub async fn acquire(&self) -> Result<Option<Checkpoints>, StoreError> {
        // A read first: most attempts find the lease held, and a read costs less than a
        // conditional write that fails.
        self.requests.dynamodb("GetItem");
        let current = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(key(LEASE_PK.into(), LEASE_SK)))
            .consistent_read(true)
            .send()
            .await
            .map_err(aws_error)?
            .item;
        if let Some(item) = &current {
            let item = Item(item);
            let held_by_other = item.opt_str("owner")?.is_some_and(|o| o != self.owner);
            let live = item.opt_num::<i64>("expires_at")?.unwrap_or(0) > now_millis();
            if held_by_other && live {
                return Ok(None);
            }
        }
        self.requests.dynamodb("UpdateItem");
        let out = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(LEASE_PK.into(), LEASE_SK)))
            .update_expression("SET #owner = :me, expires_at = :expires")
            .condition_expression(
                "attribute_not_exists(#owner) OR #owner = :me OR expires_at < :now",
            )
            .expression_attribute_names("#owner", "owner")
            .expression_attribute_values(":me", s(&self.owner))
            .expression_attribute_values(":expires", n(self.expiry()))
            .expression_attribute_values(":now", n(now_millis()))
            .return_values(ReturnValue::AllNew)
            .send()
            .await;
        match unless_condition_failed(out)? {
            Some(out) => Ok(Some(checkpoints_of(out.attributes.as_ref())?)),
            None => Ok(None),
        }
    }

    /// Extends the lease and records `checkpoints`; `false` when another replica holds it
    /// now (this one must stop reading the stream).
    pub async fn renew(&self, checkpoints: &Checkpoints) -> Result<bool, StoreError> {
        let json = serde_json::to_string(checkpoints).map_err(|e| StoreError::Other(e.into()))?;
        self.requests.dynamodb("UpdateItem");
        let renewed = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(LEASE_PK.into(), LEASE_SK)))
            .update_expression("SET expires_at = :expires, checkpoints = :checkpoints")
            .condition_expression("#owner = :me")
            .expression_attribute_names("#owner", "owner")
            .expression_attribute_values(":me", s(&self.owner))
            .expression_attribute_values(":expires", n(self.expiry()))
            .expression_attribute_values(":checkpoints", s(json))
            .send()
            .await;
        Ok(unless_condition_failed(renewed)?.is_some())
    }

    /// Gives the lease up with `checkpoints`, so that another replica takes over at once.
    pub async fn release(&self, checkpoints: &Checkpoints) {
        let json = serde_json::to_string(checkpoints).unwrap_or_else(|_| "{}".into());
        self.requests.dynamodb("UpdateItem");
        let released = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(LEASE_PK.into(), LEASE_SK)))
            .update_expression("SET checkpoints = :checkpoints, expires_at = :zero REMOVE #owner")
            .condition_expression("#owner = :me")
            .expression_attribute_names("#owner", "owner")
            .expression_attribute_values(":me", s(&self.owner))
            .expression_attribute_values(":checkpoints", s(json))
            .expression_attribute_values(":zero", n(0))
            .send()
            .await;
        if let Err(e) = released {
            tracing::debug!(error = ?e, "could not release the stream lease; it expires");
        }
    }
}

fn checkpoints_of(item: Option<&Attrs>) -> Result<Checkpoints, StoreError> {
    let Some(item) = item else {
        return Ok(Checkpoints::new());
    };
    match Item(item).opt_str("checkpoints")? {
        None => Ok(Checkpoints::new()),
        Some(json) => serde_json::from_str(json)
            .map_err(|e| StoreError::Other(anyhow::Error::new(e).context("lease checkpoints"))),
    }
}
