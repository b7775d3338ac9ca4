//! The websocket's fast path for live events.
//!
//! async-graphql runs a subscription as one stream per subscriber that resolves each event
//! field by field, and it keeps the whole request (document, variables, data) for as long
//! as the subscription lives. A change that reaches a thousand subscribers asking for the
//! same fields would be resolved and serialised a thousand times, and a thousand idle
//! subscriptions would hold a thousand copies of their request.
//!
//! So the websocket layer puts a [`LiveSlot`] into the data of each operation. A
//! subscription resolver that finds it empty leaves its [`LiveStream`] there and gives
//! async-graphql an empty stream: the execution ends and drops the request, and the
//! websocket layer takes the [`LiveOperation`] from the slot and polls it instead. That
//! renders an event by running the subscription's selection as a query of a small schema
//! whose one root field is the event, once per distinct selection ([`RenderPlan`]): the
//! text is remembered on the shared change, and every other subscription with the same
//! selection sends it as it is.
//!
//! A rendering must not depend on who subscribed, since others reuse it. The render schema
//! has no viewer in its data: a field that needed one would fail, not leak one member's view
//! to another.

use std::collections::{BTreeMap, HashMap};
use std::pin::Pin;
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context as TaskContext, Poll, ready};

use async_graphql::parser::types::{
    DocumentOperations, ExecutableDocument, Field, OperationDefinition, OperationType, Selection,
    SelectionSet,
};
use async_graphql::{
    Context, EmptyMutation, EmptySubscription, Name, Object, PathSegment, Pos, Positioned, Request,
    Schema, ServerError, ValidationMode, Value, Variables,
};
use futures::future::BoxFuture;
use futures::stream::BoxStream;
use futures::{Stream, StreamExt};

use super::error::{fill_codes, to_gql};
use super::subscription::{ChangeEvent, events};
use crate::sync::{Error, LiveEvent, LiveStream, SyncService, lock};

/// Distinct selections past which plans no subscription uses any more are swept.
const PLAN_SWEEP_AT: usize = 64;

/// Where a subscription resolver leaves its live stream for the websocket layer, which
/// puts an `Arc<LiveSlot>` into the data of each operation it runs. It takes one stream
/// only, for the whole operation: a subscription with two root fields hands one over, and
/// the other, however late its resolver finishes, is resolved by async-graphql.
#[derive(Default)]
pub struct LiveSlot(Mutex<SlotState>);

#[derive(Default)]
enum SlotState {
    /// No resolver has handed a stream over yet.
    #[default]
    Empty,
    Held(LiveOperation),
    /// The websocket layer has the stream: the slot takes no other.
    Taken,
}

impl LiveSlot {
    /// The live operation a resolver left here, if any.
    pub fn take(&self) -> Option<LiveOperation> {
        let mut state = lock(&self.0);
        match std::mem::take(&mut *state) {
            SlotState::Held(operation) => {
                *state = SlotState::Taken;
                Some(operation)
            }
            other => {
                *state = other;
                None
            }
        }
    }
}

/// Hands `stream` over to the websocket layer when the request carries an empty slot, and
/// returns an empty stream to async-graphql; otherwise (another transport, or a second
/// root field of the same subscription) async-graphql resolves its events.
pub(super) fn hand_over(
    ctx: &Context<'_>,
    stream: LiveStream,
) -> BoxStream<'static, async_graphql::Result<ChangeEvent>> {
    let (Some(slot), Some(renderer)) = (
        ctx.data_opt::<Arc<LiveSlot>>(),
        ctx.data_opt::<LiveRenderer>(),
    ) else {
        return events(stream);
    };
    let mut state = lock(&slot.0);
    if !matches!(*state, SlotState::Empty) {
        return events(stream);
    }
    *state = SlotState::Held(LiveOperation {
        events: stream,
        plan: renderer.plan(ctx),
        rendering: None,
    });
    futures::stream::empty().boxed()
}

/// A live event ready for the wire.
pub enum Rendered {
    /// The payload of a `next` message: a serialised GraphQL response.
    Next(Arc<str>),
    /// The subscription ends with these errors (each with its code).
    Failed(Vec<ServerError>),
}

/// A subscription handed over by its resolver: its events, rendered.
pub struct LiveOperation {
    events: LiveStream,
    plan: Arc<RenderPlan>,
    /// The rendering under way, when the event's text was not remembered yet.
    rendering: Option<BoxFuture<'static, Rendered>>,
}

impl Stream for LiveOperation {
    type Item = Rendered;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Option<Rendered>> {
        let this = &mut *self;
        if this.rendering.is_none() {
            let event = match ready!(this.events.poll_next_unpin(cx)) {
                None => return Poll::Ready(None),
                Some(Err(e)) => return Poll::Ready(Some(this.plan.ended(e))),
                Some(Ok(event)) => event,
            };
            if let LiveEvent::Change(shared) = &event
                && let Some(text) = shared.rendering(this.plan.key)
            {
                return Poll::Ready(Some(Rendered::Next(text)));
            }
            this.rendering = Some(Box::pin(this.plan.clone().render(event)));
        }
        let Some(rendering) = this.rendering.as_mut() else {
            return Poll::Ready(None);
        };
        let rendered = ready!(rendering.as_mut().poll(cx));
        this.rendering = None;
        Poll::Ready(Some(rendered))
    }
}

/// Renders live events for the fast path. One per schema, in its data.
pub struct LiveRenderer {
    schema: Schema<EventRoot, EmptyMutation, EmptySubscription>,
    plans: Mutex<Plans>,
}

#[derive(Default)]
struct Plans {
    by_key: HashMap<u128, Weak<RenderPlan>>,
    sweep_at: usize,
}

impl LiveRenderer {
    pub fn new(service: SyncService) -> Self {
        // The documents it runs were validated against the real schema already; Fast
        // mode also lets them keep variable definitions only the root field used.
        let schema = Schema::build(EventRoot, EmptyMutation, EmptySubscription)
            .data(service)
            .validation_mode(ValidationMode::Fast)
            .finish();
        Self {
            schema,
            plans: Mutex::new(Plans {
                by_key: HashMap::new(),
                sweep_at: PLAN_SWEEP_AT,
            }),
        }
    }

    /// How to render the events of the subscription at `ctx`, shared by every live
    /// subscription with the same selection.
    fn plan(&self, ctx: &Context<'_>) -> Arc<RenderPlan> {
        let key = render_key(ctx);
        let mut plans = lock(&self.plans);
        if let Some(plan) = plans.by_key.get(&key).and_then(Weak::upgrade) {
            return plan;
        }
        if plans.by_key.len() >= plans.sweep_at {
            plans.by_key.retain(|_, plan| plan.strong_count() > 0);
            plans.sweep_at = PLAN_SWEEP_AT.max(2 * plans.by_key.len());
        }
        let plan = Arc::new(RenderPlan::new(ctx, key, self.schema.clone()));
        plans.by_key.insert(key, Arc::downgrade(&plan));
        plan
    }
}

/// The render schema's root: its one field is the event being rendered.
pub struct EventRoot;

#[Object]
impl EventRoot {
    async fn event(&self, ctx: &Context<'_>) -> ChangeEvent {
        ChangeEvent(ctx.data_unchecked::<LiveEvent>().clone())
    }
}

/// A subscription's selection as a query of the render schema:
/// `query($vars…) { <response key>: event { <selection> } }` plus its fragments.
struct RenderPlan {
    key: u128,
    schema: Schema<EventRoot, EmptyMutation, EmptySubscription>,
    document: ExecutableDocument,
    variables: Variables,
    response_key: Name,
    position: Pos,
}

impl RenderPlan {
    fn new(
        ctx: &Context<'_>,
        key: u128,
        schema: Schema<EventRoot, EmptyMutation, EmptySubscription>,
    ) -> Self {
        let field = ctx.item;
        let position = field.pos;
        let at = |node| Positioned::new(node, position);
        let response_key = field.node.response_key().node.clone();
        let root = Field {
            alias: Some(at(response_key.clone())),
            name: at(Name::new("event")),
            arguments: Vec::new(),
            directives: Vec::new(),
            selection_set: field.node.selection_set.clone(),
        };
        let operation = OperationDefinition {
            ty: OperationType::Query,
            variable_definitions: ctx.query_env.operation.node.variable_definitions.clone(),
            directives: Vec::new(),
            selection_set: Positioned::new(
                SelectionSet {
                    items: vec![Positioned::new(
                        Selection::Field(Positioned::new(root, position)),
                        position,
                    )],
                },
                position,
            ),
        };
        Self {
            key,
            schema,
            document: ExecutableDocument {
                operations: DocumentOperations::Single(Positioned::new(operation, position)),
                fragments: ctx.query_env.fragments.clone(),
            },
            variables: ctx.query_env.variables.clone(),
            response_key,
            position,
        }
    }

    /// Renders one event, and remembers the text on a shared change when nothing failed.
    async fn render(self: Arc<Self>, event: LiveEvent) -> Rendered {
        let shared = match &event {
            LiveEvent::Change(change) => Some(change.clone()),
            LiveEvent::Ready(_) => None,
        };
        let mut request = Request::new(String::new())
            .variables(self.variables.clone())
            .data(event);
        request.set_parsed_query(self.document.clone());
        let mut response = self.schema.execute(request).await;
        fill_codes(&mut response);
        if response.data == Value::Null && !response.errors.is_empty() {
            return Rendered::Failed(response.errors);
        }
        let text: Arc<str> = match serde_json::to_string(&response) {
            Ok(text) => text.into(),
            Err(e) => return self.ended(Error::Internal(e.into())),
        };
        if response.errors.is_empty()
            && let Some(shared) = shared
        {
            shared.remember(self.key, text.clone());
        }
        Rendered::Next(text)
    }

    /// The error a subscription ends with, placed at its root field.
    fn ended(&self, error: Error) -> Rendered {
        let mut error = to_gql(error).into_server_error(self.position);
        error.path = vec![PathSegment::Field(self.response_key.to_string())];
        Rendered::Failed(vec![error])
    }
}

/// What identifies how a subscription renders an event: its response key, its selection
/// set, the fragments it may spread, and the variables when the selection uses any (not
/// the root field's arguments: subscribers resuming from different cursors still share).
/// Source positions are part of the selection: clients sending the same query text share.
fn render_key(ctx: &Context<'_>) -> u128 {
    use std::hash::{Hash, Hasher};
    let field = &ctx.item.node;
    let selection = format!("{:?}", field.selection_set);
    let fragments: BTreeMap<_, _> = ctx.query_env.fragments.iter().collect();
    let fragments = format!("{fragments:?}");
    let variables = if selection.contains("Variable(") || fragments.contains("Variable(") {
        format!("{:?}", ctx.query_env.variables)
    } else {
        String::new()
    };
    let response_key = field.response_key().node.as_str();
    let half = |seed: u64| {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (seed, response_key, &selection, &fragments, &variables).hash(&mut h);
        u128::from(h.finish())
    };
    (half(1) << 64) | half(2)
}
