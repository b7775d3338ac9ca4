//! The `changes` subscription over websocket (`graphql-transport-ws`): every change
//! after a cursor, then live ones, then a `READY` once caught up.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use super::{Api, ApiError, FILE_FIELDS, parse_file};
use crate::tree::RemoteFile;

/// One message of the subscription.
#[derive(Debug)]
pub enum LiveEvent {
    /// A committed change; `file` is the file's state after it.
    Change {
        cursor: String,
        file: Option<RemoteFile>,
    },
    /// Caught up: from here on every change arrives live. `cursor` is the head.
    Ready { cursor: String },
}

/// A running subscription; dropping it closes the socket.
pub struct Subscription {
    events: mpsc::Receiver<Result<LiveEvent, ApiError>>,
    task: tokio::task::JoinHandle<()>,
}

impl Subscription {
    /// The next event; `None` once the subscription ended (an error came first).
    pub async fn next(&mut self) -> Option<Result<LiveEvent, ApiError>> {
        self.events.recv().await
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// How long a connection may stay silent before it counts as dropped (the server sends
/// a keep-alive every 15 s by default).
const SILENCE: Duration = Duration::from_secs(60);

/// Subscribes to the space's changes after `since`.
pub async fn subscribe(
    api: &Api,
    space: &str,
    since: Option<&str>,
) -> Result<Subscription, ApiError> {
    let url = format!("{}/graphql/ws", api.base().replacen("http", "ws", 1));
    let mut request = url
        .as_str()
        .into_client_request()
        .map_err(|e| ApiError::Protocol(format!("{url}: {e}")))?;
    request.headers_mut().insert(
        "sec-websocket-protocol",
        "graphql-transport-ws".parse().expect("a header value"),
    );
    let (mut socket, _) = tokio::time::timeout(
        Duration::from_secs(15),
        tokio_tungstenite::connect_async(request),
    )
    .await
    .map_err(|_| ApiError::Unreachable("the websocket did not open in 15 s".into()))?
    .map_err(|e| match e {
        tokio_tungstenite::tungstenite::Error::Http(res) if res.status() == 401 => {
            ApiError::Unauthenticated("the websocket was refused".into())
        }
        e => ApiError::Unreachable(super::describe(&e)),
    })?;
    let send = |v: Value| Message::Text(v.to_string().into());
    let init = json!({ "type": "connection_init", "payload": { "token": api.token() } });
    socket
        .send(send(init))
        .await
        .map_err(|e| ApiError::Unreachable(e.to_string()))?;
    // Wait for the acknowledgement (or the close that says why not).
    loop {
        let message = tokio::time::timeout(Duration::from_secs(15), socket.next())
            .await
            .map_err(|_| ApiError::Unreachable("no connection_ack in 15 s".into()))?;
        match message {
            Some(Ok(Message::Text(text))) => {
                let v: Value = serde_json::from_str(&text).unwrap_or_default();
                match v["type"].as_str() {
                    Some("connection_ack") => break,
                    Some("ping") => {
                        let _ = socket.send(send(json!({ "type": "pong" }))).await;
                    }
                    _ => {}
                }
            }
            Some(Ok(Message::Close(frame))) => {
                return Err(closed(frame.map(|f| (f.code, f.reason.to_string()))));
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(ApiError::Unreachable(e.to_string())),
            None => return Err(ApiError::Unreachable("the websocket closed".into())),
        }
    }
    let query = format!(
        "subscription($s: ID!, $since: Cursor) {{ changes(spaceId: $s, since: $since) {{
            cursor kind file {{ {FILE_FIELDS} }} }} }}"
    );
    let subscribe = json!({
        "type": "subscribe", "id": "1",
        "payload": { "query": query, "variables": { "s": space, "since": since } },
    });
    socket
        .send(send(subscribe))
        .await
        .map_err(|e| ApiError::Unreachable(e.to_string()))?;
    let (tx, events) = mpsc::channel(1024);
    let task = tokio::spawn(async move {
        let outcome = pump(&mut socket, &tx).await;
        if let Err(e) = outcome {
            let _ = tx.send(Err(e)).await;
        }
        let _ = socket.close(None).await;
    });
    Ok(Subscription { events, task })
}

/// Reads the socket until it ends; events go to `tx`.
async fn pump(
    socket: &mut tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
    tx: &mpsc::Sender<Result<LiveEvent, ApiError>>,
) -> Result<(), ApiError> {
    loop {
        let message = tokio::time::timeout(SILENCE, socket.next())
            .await
            .map_err(|_| ApiError::Unreachable("the websocket went silent".into()))?;
        let text = match message {
            Some(Ok(Message::Text(text))) => text,
            Some(Ok(Message::Close(frame))) => {
                return Err(closed(frame.map(|f| (f.code, f.reason.to_string()))));
            }
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Err(ApiError::Unreachable(e.to_string())),
            None => return Err(ApiError::Unreachable("the websocket closed".into())),
        };
        let mut v: Value = serde_json::from_str(&text)
            .map_err(|e| ApiError::Protocol(format!("a message that is not JSON: {e}")))?;
        match v["type"].as_str() {
            Some("next") => {
                if let Some(error) = v["payload"]["errors"].get(0) {
                    return Err(ApiError::from_graphql(error));
                }
                let event = event(v["payload"]["data"]["changes"].take())?;
                if tx.send(Ok(event)).await.is_err() {
                    return Ok(());
                }
            }
            Some("error") => {
                let error = v["payload"].get(0).cloned().unwrap_or_default();
                return Err(ApiError::from_graphql(&error));
            }
            Some("complete") => {
                return Err(ApiError::Unreachable(
                    "the server ended the subscription".into(),
                ));
            }
            Some("ping") => {
                let pong = Message::Text(json!({ "type": "pong" }).to_string().into());
                socket
                    .send(pong)
                    .await
                    .map_err(|e| ApiError::Unreachable(e.to_string()))?;
            }
            _ => {}
        }
    }
}

fn event(mut change: Value) -> Result<LiveEvent, ApiError> {
    let cursor = change["cursor"]
        .as_str()
        .ok_or_else(|| ApiError::Protocol("an event without a cursor".into()))?
        .to_owned();
    if change["kind"] == "READY" {
        return Ok(LiveEvent::Ready { cursor });
    }
    let file = match change["file"].take() {
        Value::Null => None,
        file => Some(parse_file(file)?),
    };
    Ok(LiveEvent::Change { cursor, file })
}

/// What a close frame means for this client.
fn closed(frame: Option<(CloseCode, String)>) -> ApiError {
    match frame {
        Some((code, reason)) => match u16::from(code) {
            4401 => ApiError::Unauthenticated(reason),
            4403 => ApiError::Forbidden(reason),
            _ => ApiError::Unreachable(format!("the websocket closed ({code}: {reason})")),
        },
        None => ApiError::Unreachable("the websocket closed".into()),
    }
}
