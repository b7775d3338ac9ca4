//! `/graphql/ws`: GraphQL subscriptions (and queries and mutations) over a websocket, in
//! both subprotocols clients speak (see `protocol`).
//!
//! One task per connection runs a small loop over four sources: frames from the client,
//! results of its operations, the keep-alive timer and the server's shutdown. Nothing is
//! queued on the way out: a result is written before the next is taken, and a client that
//! does not read for `subscriptions.send_timeout` is dropped. Its subscriptions then stop
//! taking changes, and the hub closes any that fill their bounded buffer in the meantime,
//! so a stuck client holds a fixed amount of memory and never slows the others.

use std::time::Duration;

use async_graphql::{Response, Value};
use axum::extract::State;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::response::Response as HttpResponse;
use futures::stream::{BoxStream, SplitSink};
use futures::{SinkExt, StreamExt};
use tokio::time::{Instant, MissedTickBehavior};
use tokio_stream::StreamMap;

use super::AppState;
use super::graphql::fill_codes;
use crate::config::SubscriptionSettings;
use crate::domain::UserId;
use crate::graphql::Viewer;

pub mod protocol;

use protocol::{ClientMessage, Protocol, close};

/// Bytes read from the socket at a time. Client messages are small (a subscription
/// document; a larger frame grows the buffer to fit). tungstenite zero-fills the whole
/// buffer on each read, so it is resident memory of every connection: its default of
/// 128 KiB would dwarf everything else, and 1 KiB measured 3 KiB less per idle
/// subscription than 4 KiB (BENCHMARKS.md).
const READ_BUFFER: usize = 1024;
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

type Operation = BoxStream<'static, Option<Response>>;

/// Why the loop stopped.
enum Exit {
    /// Close the socket with this code and reason.
    Close(u16, String),
    /// The client went away or stopped reading: just drop the socket.
    Drop,
}

struct Connection {
    sink: SplitSink<WebSocket, Message>,
    protocol: Protocol,
    state: AppState,
    user: Option<UserId>,
    /// Running operations by client-chosen id. Each stream ends with `None`.
    operations: StreamMap<String, Operation>,
}

impl Connection {
    async fn serve(socket: WebSocket, protocol: Protocol, state: AppState) {
        let settings = state.subscriptions.clone();
        let (sink, mut source) = socket.split();
        let connections = state.metrics.ws_connections.clone();
        connections.inc();
        let mut conn = Connection {
            sink,
            protocol,
            state,
            user: None,
            operations: StreamMap::new(),
        };
        let exit = conn.run(&mut source, &settings).await;
        if let Exit::Close(code, reason) = exit {
            let _ = conn.close(code, reason, settings.send_timeout).await;
        }
        connections.dec();
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
                            Ok(message) => self.handle(message).await,
                            Err(why) => Err(Exit::Close(close::BAD_REQUEST, why)),
                        }
                    }
                    Some(Ok(Message::Binary(_))) => Err(Exit::Close(
                        close::BAD_REQUEST,
                        "Invalid message received: binary frames are not supported".into(),
                    )),
                    // tungstenite answers pings itself.
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => Ok(()),
                    Some(Ok(Message::Close(_)) | Err(_)) | None => Err(Exit::Drop),
                },
                Some((id, result)) = self.operations.next(), if !self.operations.is_empty() => {
                    self.deliver(id, result).await
                }
                _ = keep_alive.tick(), if self.user.is_some() => {
                    self.send(protocol::keep_alive(self.protocol)).await
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
                match self.state.auth.verify_connection_init(payload.as_ref()) {
                    Ok(user) => {
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

    /// Starts an operation as the connection's user; its results end with `None`.
    fn execute(&self, mut request: async_graphql::Request) -> Operation {
        self.state.query_cache.prepare(&mut request);
        let viewer = Viewer(self.user.clone().ok_or(crate::auth::AuthError::Missing));
        self.state
            .schema
            .execute_stream(request.data(viewer))
            .map(Some)
            .chain(futures::stream::once(async { None }))
            .boxed()
    }

    /// Sends one result of operation `id`, or its completion (`None`). A result with no
    /// data and errors ends the operation: it goes out as `error`, and no `complete`
    /// follows.
    async fn deliver(&mut self, id: String, result: Option<Response>) -> Result<(), Exit> {
        let Some(mut response) = result else {
            return self.send(protocol::complete(&id)).await;
        };
        fill_codes(&mut response);
        if response.data == Value::Null && !response.errors.is_empty() {
            self.operations.remove(&id);
            return self.send(protocol::error(&id, &response.errors)).await;
        }
        self.send(protocol::next(self.protocol, &id, &response))
            .await
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
/// take it within `timeout`.
async fn send_within(
    sink: &mut SplitSink<WebSocket, Message>,
    message: Message,
    timeout: Duration,
) -> Result<(), Exit> {
    match tokio::time::timeout(timeout, sink.send(message)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) | Err(_) => Err(Exit::Drop),
    }
}
