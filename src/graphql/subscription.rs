//! The subscription root: live changes of a space or of one file, resumable from a cursor.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;

use async_graphql::parser::types::Field;
use async_graphql::registry::Registry;
use async_graphql::{
    Context, ContextSelectionSet, ID, Object, OutputType, Positioned, ServerResult,
    Subscription as GqlSubscription, Value,
};
use chrono::{DateTime, Utc};
use futures::{Stream, StreamExt};

use super::error::IntoGql;
use super::scalars::Cursor;
use super::types::{ChangeKind, File, datetime};
use super::{error::to_gql, parse_id, service, viewer};
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
    ) -> async_graphql::Result<impl Stream<Item = async_graphql::Result<ChangeEvent>> + use<>> {
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
        Ok(events(stream, render_key(ctx)))
    }

    /// The changes of one file, as `changes` with `fileIds: [id]`.
    async fn file_changed(
        &self,
        ctx: &Context<'_>,
        id: ID,
        since: Option<Cursor>,
    ) -> async_graphql::Result<impl Stream<Item = async_graphql::Result<ChangeEvent>> + use<>> {
        let stream = service(ctx)
            .subscribe_file(
                viewer(ctx)?,
                parse_id(&id)?,
                since.as_ref().map(|c| c.0.as_str()),
            )
            .await
            .gql()?;
        Ok(events(stream, render_key(ctx)))
    }
}

fn events(
    stream: LiveStream,
    render_key: u128,
) -> impl Stream<Item = async_graphql::Result<ChangeEvent>> {
    stream.map(move |event| {
        event
            .map(|event| ChangeEvent {
                fields: ChangeEventFields(event),
                render_key,
            })
            .map_err(to_gql)
    })
}

/// What identifies how this subscription renders an event: its selection set, the
/// fragments it may spread, and the variables when the selection uses any (not the root
/// field's arguments: subscribers resuming from different cursors still share).
fn render_key(ctx: &Context<'_>) -> u128 {
    use std::hash::{Hash, Hasher};
    let selection = format!("{:?}", ctx.item.node.selection_set);
    let fragments: BTreeMap<_, _> = ctx.query_env.fragments.iter().collect();
    let fragments = format!("{fragments:?}");
    let variables = if selection.contains("Variable(") || fragments.contains("Variable(") {
        format!("{:?}", ctx.query_env.variables)
    } else {
        String::new()
    };
    let half = |seed: u64| {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (seed, &selection, &fragments, &variables).hash(&mut h);
        u128::from(h.finish())
    };
    (half(1) << 64) | half(2)
}

/// One event of a live subscription: a committed change, or the `READY` marker.
///
/// A change reaches every subscriber of its space as one shared value, and most
/// subscriptions ask for the same fields: the first subscriber to render it with a given
/// selection remembers the result on the change (when rendering raised no error), and
/// the others reuse it rather than resolving every field again.
pub struct ChangeEvent {
    fields: ChangeEventFields,
    render_key: u128,
}

impl OutputType for ChangeEvent {
    fn type_name() -> Cow<'static, str> {
        ChangeEventFields::type_name()
    }

    fn create_type_info(registry: &mut Registry) -> String {
        ChangeEventFields::create_type_info(registry)
    }

    async fn resolve(
        &self,
        ctx: &ContextSelectionSet<'_>,
        field: &Positioned<Field>,
    ) -> ServerResult<Value> {
        let LiveEvent::Change(shared) = &self.fields.0 else {
            return OutputType::resolve(&self.fields, ctx, field).await;
        };
        if let Some(value) = shared.rendering::<Value>(self.render_key) {
            return Ok((*value).clone());
        }
        let errors = || ctx.query_env.errors.lock().map_or(usize::MAX, |e| e.len());
        let before = errors();
        let value = OutputType::resolve(&self.fields, ctx, field).await?;
        if errors() == before {
            shared.remember(self.render_key, Arc::new(value.clone()));
        }
        Ok(value)
    }
}

/// The fields of [`ChangeEvent`].
pub struct ChangeEventFields(LiveEvent);

#[Object(name = "ChangeEvent", serial)]
impl ChangeEventFields {
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

impl ChangeEventFields {
    fn change(&self) -> Option<&domain::Change> {
        match &self.0 {
            LiveEvent::Ready(_) => None,
            LiveEvent::Change(c) => Some(c),
        }
    }
}
