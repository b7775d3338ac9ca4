//! `/graphql/ws`: GraphQL subscriptions (and queries and mutations) over a websocket, in
//! both subprotocols clients speak (see `protocol`).
//!
//! One task per connection runs a small loop over four sources: frames from the client,
//! results of its operations, the keep-alive timer and the server's shutdown. Nothing is
//! queued on the way out: a result is written before the next is taken, and a client that
//! does not read for `subscriptions.send_timeout` is dropped. Its subscriptions then stop
//! taking changes, and the hub closes any that fill their bounded buffer in the meantime,
//! so a stuck client holds a fixed amount of memory and never slows the others.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use async_graphql::{Response, Value};
use axum::extract::State;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::response::Response as HttpResponse;
use futures::stream::{BoxStream, SplitSink};
use futures::{FutureExt, SinkExt, Stream, StreamExt};
use tokio::time::{Instant, MissedTickBehavior};
use tokio_stream::StreamMap;

use super::AppState;
use super::graphql::is_mutation;
use super::limits::{SocketGuard, rate_limited};
use crate::config::SubscriptionSettings;
use crate::domain::UserId;
use crate::graphql::Viewer;
use crate::graphql::error::fill_codes;
use crate::graphql::live::{LiveOperation, LiveSlot, Rendered};

pub mod protocol;

use protocol::{ClientMessage, Protocol, close};

/// Bytes read from the socket at a time. Client messages are small (a subscription
/// document; a larger one takes a few reads, and the buffer grows to fit a frame). This
/// buffer is resident memory of every connection: tungstenite's default of 128 KiB would
/// dwarf everything else (BENCHMARKS.md).
const READ_BUFFER: usize = 512;
/// Bytes a connection may have written but not yet flushed to the socket.
const MAX_WRITE_BUFFER: usize = 4 * 1024 * 1024;
/// Longest close reason a close frame carries (the websocket limit is 123 bytes).
const MAX_CLOSE_REASON: usize = 120;

/// The websocket handshake on `/graphql/ws`.
pub(super) async fn upgrade(State(state): State<AppState>, ws: WebSocketUpgrade) -> HttpResponse {
    let ws = ws.protocols(Protocol::NAMES);
    let protocol = Protocol::negotiated(ws.selected_protocol().and_then(|p| p.to_str().ok()));
    let max_message = usize::try_from(state.max_request_bytes).unwrap_or(usize::MAX);
    ws.read_buffer_size(READ_BUFFER)
        .write_buffer_size(0)
        .max_write_buffer_size(MAX_WRITE_BUFFER)
        .max_message_size(max_message)
        .max_frame_size(max_message)
        .on_upgrade(move |socket| {
            let tracker = state.connections.clone();
            tracker.track_future(Connection::serve(socket, protocol, state))
        })
}

/// One running operation: async-graphql's execution of it, then, when a subscription
/// resolver handed its events over (see `graphql::live`), those events, already rendered.
struct Operation {
    executing: Option<BoxStream<'static, Response>>,
    /// Where a resolver leaves its live events; gone once the execution has ended.
    slot: Option<Arc<LiveSlot>>,
    live: Option<LiveOperation>,
    completed: bool,
}

impl Operation {
    /// An operation refused before it ran: it ends with `error`.
    fn failed(error: async_graphql::ServerError) -> Self {
        let response = Response::from_errors(vec![error]);
        Operation {
            executing: Some(futures::stream::once(async move { response }).boxed()),
            slot: None,
            live: None,
            completed: false,
        }
    }
}

/// What an operation has for the client.
enum Outgoing {
    Response(Response),
    Rendered(Rendered),
    /// The operation has nothing more.
    Complete,
}

impl Stream for Operation {
    type Item = Outgoing;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Option<Outgoing>> {
        let this = &mut *self;
        if let Some(response) = poll_part(&mut this.executing, cx) {
            return Poll::Ready(Some(Outgoing::Response(response)));
        }
        if this.live.is_none() {
            this.live = this.slot.as_ref().and_then(|slot| slot.take());
            if this.executing.is_none() {
                this.slot = None;
            }
        }
        if let Some(rendered) = poll_part(&mut this.live, cx) {
            return Poll::Ready(Some(Outgoing::Rendered(rendered)));
        }
        if this.executing.is_some() || this.live.is_some() {
            Poll::Pending
        } else if this.completed {
            Poll::Ready(None)
        } else {
            this.completed = true;
            Poll::Ready(Some(Outgoing::Complete))
        }
    }
}

/// The next item of one part of an operation, if it has one ready; a part that ended is
/// dropped.
fn poll_part<S: Stream + Unpin>(part: &mut Option<S>, cx: &mut TaskContext<'_>) -> Option<S::Item> {
    match part.as_mut()?.poll_next_unpin(cx) {
        Poll::Ready(Some(item)) => Some(item),
        Poll::Ready(None) => {
            *part = None;
            None
        }
        Poll::Pending => None,
    }
}

/// Why the loop stopped.
enum Exit {
    /// Close the socket with this code and reason.
    Close(u16, String),
    /// The client closed the socket: echo its close frame (RFC 6455 §5.5.1), then drop it.
    Closed,
    /// The client went away or stopped reading: just drop the socket.
    Drop,
}

struct Connection {
    sink: SplitSink<WebSocket, Message>,
    protocol: Protocol,
    state: AppState,
    user: Option<UserId>,
    /// Counts this socket against its user's limit, from `connection_ack` until closed.
    _registered: Option<SocketGuard>,
    /// Running operations by client-chosen id.
    operations: StreamMap<String, Operation>,
}

impl Connection {
    /// The connection's task. Everything is set up before the returned future, so that
    /// it holds only what the connection keeps (it is resident memory of every one).
    fn serve(
        socket: WebSocket,
        protocol: Protocol,
        state: AppState,
    ) -> impl Future<Output = ()> + Send + 'static {
        let settings = state.subscriptions.clone();
        let (sink, mut source) = socket.split();
        let connections = state.metrics.ws_connections.clone();
        connections.inc();
        let mut conn = Connection {
            sink,
            protocol,
            state,
            user: None,
            _registered: None,
            // Room for one: most connections run a single subscription.
            operations: StreamMap::with_capacity(1),
        };
        async move {
            match conn.run(&mut source, &settings).await {
                Exit::Close(code, reason) => {
                    let _ = Box::pin(conn.close(code, reason, settings.send_timeout)).await;
                }
                Exit::Closed => {
                    // The reply tungstenite queued when it read the client's close frame
                    // goes out when the sink is closed (flushed).
                    let _ = tokio::time::timeout(settings.send_timeout, conn.sink.close()).await;
                }
                Exit::Drop => {}
            }
            connections.dec();
        }
    }

    async fn run(
        &mut self,
        source: &mut futures::stream::SplitStream<WebSocket>,
        settings: &SubscriptionSettings,
    ) -> Exit {
        let init_deadline = tokio::time::sleep(settings.init_timeout);
        let mut keep_alive =
            tokio::time::interval_at(Instant::now() + settings.keep_alive, settings.keep_alive);
        keep_alive.set_missed_tick_behavior(MissedTickBehavior::Delay);
        // Made once, not per turn of the loop: a fresh `cancelled()` future would register
        // with the token, shared by every connection, on every message.
        let shutdown = self.state.shutdown.clone();
        let shutdown = shutdown.cancelled();
        tokio::pin!(init_deadline, shutdown);
        // The handlers below are boxed: inline, their futures would be part of this one,
        // which every connection keeps resident for its whole life.
        loop {
            let step = tokio::select! {
                biased;
                () = &mut shutdown => {
                    return Exit::Close(close::GOING_AWAY, "server shutting down".into());
                }
                () = &mut init_deadline, if self.user.is_none() => {
                    return Exit::Close(
                        close::INIT_TIMEOUT,
                        "Connection initialisation timeout".into(),
                    );
                }
                frame = source.next() => match frame {
                    Some(Ok(Message::Text(text))) => {
                        match protocol::parse(self.protocol, text.as_str()) {
                            Ok(message) => Box::pin(self.handle(message)).await,
                            Err(why) => Err(Exit::Close(close::BAD_REQUEST, why)),
                        }
                    }
                    Some(Ok(Message::Binary(_))) => Err(Exit::Close(
                        close::BAD_REQUEST,
                        "Invalid message received: binary frames are not supported".into(),
                    )),
                    // tungstenite answers pings itself.
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => Ok(()),
                    Some(Ok(Message::Close(_))) => Err(Exit::Closed),
                    Some(Err(_)) | None => Err(Exit::Drop),
                },
                Some((id, result)) = self.operations.next(), if !self.operations.is_empty() => {
                    Box::pin(self.deliver(id, result)).await
                }
                _ = keep_alive.tick(), if self.user.is_some() => {
                    Box::pin(self.send(protocol::keep_alive(self.protocol))).await
                }
            };
            if let Err(exit) = step {
                return exit;
            }
        }
    }

    async fn handle(&mut self, message: ClientMessage) -> Result<(), Exit> {
        match message {
            ClientMessage::Init(_) if self.user.is_some() => Err(Exit::Close(
                close::TOO_MANY_INITS,
                "Too many initialisation requests".into(),
            )),
            ClientMessage::Init(payload) => {
                match self
                    .state
                    .auth
                    .verify_connection_init(payload.as_ref())
                    .await
                {
                    Ok(user) => {
                        let Some(registered) = self.state.limits.websocket(&user) else {
                            let why = "too many open websockets for this user";
                            if self.protocol == Protocol::Legacy {
                                self.send(protocol::connection_error(why, "RATE_LIMITED"))
                                    .await?;
                            }
                            return Err(Exit::Close(close::TOO_MANY_CONNECTIONS, why.into()));
                        };
                        self._registered = Some(registered);
                        self.user = Some(user);
                        self.send(protocol::ack()).await?;
                        if self.protocol == Protocol::Legacy {
                            self.send(protocol::keep_alive(self.protocol)).await?;
                        }
                        Ok(())
                    }
                    Err(e) => {
                        if self.protocol == Protocol::Legacy {
                            self.send(protocol::connection_error(
                                &e.to_string(),
                                "UNAUTHENTICATED",
                            ))
                            .await?;
                        }
                        Err(Exit::Close(close::FORBIDDEN, format!("Forbidden: {e}")))
                    }
                }
            }
            ClientMessage::Subscribe { .. } if self.user.is_none() => {
                Err(Exit::Close(close::UNAUTHORIZED, "Unauthorized".into()))
            }
            ClientMessage::Subscribe { id, request } => {
                if self.operations.contains_key(&id) {
                    if self.protocol == Protocol::TransportWs {
                        return Err(Exit::Close(
                            close::SUBSCRIBER_EXISTS,
                            format!("Subscriber for {id} already exists"),
                        ));
                    }
                    // Legacy clients restart an operation by reusing its id.
                    self.operations.remove(&id);
                }
                let limit = self.state.limits.subscriptions_per_connection();
                if self.operations.len() >= limit {
                    let error = rate_limited(
                        &format!("at most {limit} operations may run at once on one websocket"),
                        Duration::from_secs(1),
                    );
                    return self.send(protocol::error(&id, &[error])).await;
                }
                let operation = self.execute(*request);
                self.operations.insert(id, operation);
                Ok(())
            }
            ClientMessage::Stop { id } => {
                let was_running = self.operations.remove(&id).is_some();
                if was_running && self.protocol == Protocol::Legacy {
                    self.send(protocol::complete(&id)).await?;
                }
                Ok(())
            }
            ClientMessage::Ping(payload) => self.send(protocol::pong(payload)).await,
            ClientMessage::Pong => Ok(()),
            ClientMessage::Terminate => Err(Exit::Close(close::NORMAL, String::new())),
        }
    }

    /// Starts an operation as the connection's user.
    fn execute(&self, mut request: async_graphql::Request) -> Operation {
        if let Err(error) = self.state.query_cache.prepare(&mut request) {
            return Operation::failed(error);
        }
        if let Some(user) = &self.user
            && is_mutation(&mut request)
            && let Err(wait) = self.state.limits.mutation(user)
        {
            return Operation::failed(rate_limited("too many mutations; slow down", wait));
        }
        let viewer = Viewer(self.user.clone().ok_or(crate::auth::AuthError::Missing));
        let slot = Arc::new(LiveSlot::default());
        let query = request.query.clone();
        let operation = request.operation_name.clone();
        let request = request.data(viewer).data(slot.clone());
        let executing = self
            .state
            .schema
            .execute_stream(request)
            .map(move |mut response| {
                crate::graphql::mend_response(&query, operation.as_deref(), &mut response);
                response
            });
        Operation {
            executing: Some(executing.boxed()),
            slot: Some(slot),
            live: None,
            completed: false,
        }
    }

    /// Sends what operation `id` has for the client. A result with no data and errors
    /// ends the operation: it goes out as `error`, and no `complete` follows.
    async fn deliver(&mut self, id: String, outgoing: Outgoing) -> Result<(), Exit> {
        let errors = match outgoing {
            Outgoing::Complete => return self.send(protocol::complete(&id)).await,
            Outgoing::Rendered(Rendered::Next(payload)) => {
                return self
                    .send(protocol::next_rendered(self.protocol, &id, &payload))
                    .await;
            }
            Outgoing::Rendered(Rendered::Failed(errors)) => errors,
            Outgoing::Response(mut response) => {
                fill_codes(&mut response);
                if response.data != Value::Null || response.errors.is_empty() {
                    return self
                        .send(protocol::next(self.protocol, &id, &response))
                        .await;
                }
                response.errors
            }
        };
        self.operations.remove(&id);
        self.send(protocol::error(&id, &errors)).await
    }

    async fn send(&mut self, text: String) -> Result<(), Exit> {
        let timeout = self.state.subscriptions.send_timeout;
        send_within(&mut self.sink, Message::Text(text.into()), timeout).await
    }

    async fn close(
        &mut self,
        code: u16,
        mut reason: String,
        timeout: Duration,
    ) -> Result<(), Exit> {
        if reason.len() > MAX_CLOSE_REASON {
            let mut end = MAX_CLOSE_REASON;
            while !reason.is_char_boundary(end) {
                end -= 1;
            }
            reason.truncate(end);
        }
        let frame = CloseFrame {
            code,
            reason: reason.into(),
        };
        send_within(&mut self.sink, Message::Close(Some(frame)), timeout).await
    }
}

/// Writes one frame, giving up (and dropping the connection) when the client does not
/// take it within `timeout`. The timer is only armed when the socket cannot take the frame
/// at once, which is rare: arming one per frame was a visible cost of fan-out.
async fn send_within(
    sink: &mut SplitSink<WebSocket, Message>,
    message: Message,
    timeout: Duration,
) -> Result<(), Exit> {
    let mut send = std::pin::pin!(sink.send(message));
    let sent = match (&mut send).now_or_never() {
        Some(sent) => sent,
        None => match tokio::time::timeout(timeout, send).await {
            Ok(sent) => sent,
            Err(_) => return Err(Exit::Drop),
        },
    };
    sent.map_err(|_| Exit::Drop)
}
