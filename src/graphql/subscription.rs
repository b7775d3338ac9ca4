//! The subscription root: live changes of a space or of one file, resumable from a cursor.

use async_graphql::{Context, ID, Object, Subscription as GqlSubscription};
use chrono::{DateTime, Utc};
use futures::StreamExt;
use futures::stream::BoxStream;

use super::error::IntoGql;
use super::scalars::Cursor;
use super::types::{ChangeKind, File, datetime};
use super::{error::to_gql, live, parse_id, service, viewer};
use crate::domain;
use crate::sync::{LiveEvent, LiveStream};

pub struct Subscription;

#[GqlSubscription]
impl Subscription {
    /// Every committed change of a space, in seq order, each once. With `since`: first
    /// every change after that cursor, then live ones; without: live ones from now. One
    /// `READY` event (carrying the head cursor) comes once the replay is done and the live
    /// listener is attached: from then on nothing is missed. With `fileIds`, only changes
    /// of those files are sent (READY still comes). The subscription ends with an error
    /// when the caller is removed from the space (`FORBIDDEN`) or falls too far behind
    /// (`SLOW_SUBSCRIBER`); a server shutting down closes the websocket with 1001. Either
    /// way, subscribe again with the cursor of the last event received.
    async fn changes(
        &self,
        ctx: &Context<'_>,
        space_id: ID,
        since: Option<Cursor>,
        file_ids: Option<Vec<ID>>,
    ) -> async_graphql::Result<BoxStream<'static, async_graphql::Result<ChangeEvent>>> {
        let files = file_ids
            .map(|ids| {
                ids.iter()
                    .map(parse_id)
                    .collect::<async_graphql::Result<_>>()
            })
            .transpose()?;
        let stream = service(ctx)
            .subscribe_changes(
                viewer(ctx)?,
                parse_id(&space_id)?,
                since.as_ref().map(|c| c.0.as_str()),
                files,
            )
            .await
            .gql()?;
        Ok(live::hand_over(ctx, stream))
    }

    /// The changes of one file, as `changes` with `fileIds: [id]`.
    async fn file_changed(
        &self,
        ctx: &Context<'_>,
        id: ID,
        since: Option<Cursor>,
    ) -> async_graphql::Result<BoxStream<'static, async_graphql::Result<ChangeEvent>>> {
        let stream = service(ctx)
            .subscribe_file(
                viewer(ctx)?,
                parse_id(&id)?,
                since.as_ref().map(|c| c.0.as_str()),
            )
            .await
            .gql()?;
        Ok(live::hand_over(ctx, stream))
    }
}

/// The events of a subscription as async-graphql resolves them, one subscriber at a
/// time: for requests that do not come through the websocket's fast path (see `live`).
pub(super) fn events(stream: LiveStream) -> BoxStream<'static, async_graphql::Result<ChangeEvent>> {
    stream
        .map(|event| event.map(ChangeEvent).map_err(to_gql))
        .boxed()
}

/// One event of a live subscription: a committed change, or the `READY` marker.
pub struct ChangeEvent(pub(super) LiveEvent);

#[Object(serial)]
impl ChangeEvent {
    /// Resume from here: the cursor of this change (for `READY`, of the last change seen).
    async fn cursor(&self) -> Cursor {
        match &self.0 {
            LiveEvent::Ready(cursor) => (*cursor).into(),
            LiveEvent::Change(c) => domain::Cursor::new(c.file.space_id, c.file.seq).into(),
        }
    }
    async fn kind(&self) -> ChangeKind {
        match &self.0 {
            LiveEvent::Ready(_) => ChangeKind::Ready,
            LiveEvent::Change(c) => c.kind.into(),
        }
    }
    async fn space_id(&self) -> ID {
        match &self.0 {
            LiveEvent::Ready(cursor) => ID(cursor.space.to_string()),
            LiveEvent::Change(c) => ID(c.file.space_id.to_string()),
        }
    }
    /// Null for `READY`.
    async fn file_id(&self) -> Option<ID> {
        self.change().map(|c| ID(c.file.id.to_string()))
    }
    /// The version this change made. Null for `READY`.
    async fn version(&self) -> Option<u32> {
        self.change().map(|c| c.file.version)
    }
    /// The file as this change left it (a tombstone for `DELETED`). Null for `READY`.
    async fn file(&self) -> Option<File> {
        self.change().map(|c| File(c.file.clone()))
    }
    /// Who made the change. Null for `READY`.
    async fn actor(&self) -> Option<ID> {
        self.change().map(|c| ID(c.actor.to_string()))
    }
    /// When the change was committed (for `READY`, when it was sent).
    async fn at(&self) -> DateTime<Utc> {
        match &self.0 {
            LiveEvent::Ready(_) => Utc::now(),
            LiveEvent::Change(c) => datetime(c.file.updated_at),
        }
    }
}

impl ChangeEvent {
    fn change(&self) -> Option<&domain::Change> {
        match &self.0 {
            LiveEvent::Ready(_) => None,
            LiveEvent::Change(c) => Some(c),
        }
    }
}
