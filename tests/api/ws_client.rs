//! A raw websocket client for `/graphql/ws`, speaking either subprotocol by hand, so that
//! tests see exactly the frames the server sends.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::helpers::TestApp;

pub const TRANSPORT_WS: &str = "graphql-transport-ws";
pub const LEGACY: &str = "graphql-ws";

/// How long a test waits for a frame that must come.
const PATIENCE: Duration = Duration::from_secs(15);

/// The selection every event test asks for.
pub const EVENT_FIELDS: &str =
    "cursor kind spaceId fileId version actor at file { id name version deleted cursor }";

pub struct WsClient {
    socket: WebSocketStream<MaybeTlsStream<TcpStream>>,
    pub protocol: &'static str,
    /// Keep-alive frames seen (server `ping`, or legacy `ka`).
    pub keep_alives: usize,
}

/// What came instead of a message: the socket closed (with its code and reason).
#[derive(Debug)]
pub struct Closed(pub Option<u16>, pub String);

impl TestApp {
    pub fn ws_url(&self) -> String {
        format!("{}/graphql/ws", self.base.replacen("http", "ws", 1))
    }

    /// Opens a websocket in `protocol`, without `connection_init`.
    pub async fn ws_connect(&self, protocol: &'static str) -> WsClient {
        self.ws_connect_with(protocol, None).await
    }

    /// Opens a websocket whose socket receive buffer is `receive_buffer` bytes (so that a
    /// client that does not read pushes back on the server within a few frames).
    pub async fn ws_connect_with(
        &self,
        protocol: &'static str,
        receive_buffer: Option<u32>,
    ) -> WsClient {
        let mut request = self.ws_url().into_client_request().unwrap();
        request
            .headers_mut()
            .insert("Sec-WebSocket-Protocol", HeaderValue::from_static(protocol));
        let addr: std::net::SocketAddr = self.base["http://".len()..].parse().unwrap();
        let tcp = TcpSocket::new_v4().unwrap();
        if let Some(bytes) = receive_buffer {
            tcp.set_recv_buffer_size(bytes).unwrap();
        }
        let stream = tcp.connect(addr).await.expect("tcp connect");
        let (socket, response) =
            tokio_tungstenite::client_async(request, MaybeTlsStream::Plain(stream))
                .await
                .expect("websocket handshake");
        assert_eq!(
            response.headers()["sec-websocket-protocol"],
            protocol,
            "the server speaks the protocol asked for"
        );
        WsClient {
            socket,
            protocol,
            keep_alives: 0,
        }
    }

    /// Opens a websocket as `user` and waits for `connection_ack`.
    pub async fn ws_as(&self, user: &str, protocol: &'static str) -> WsClient {
        self.ws_init(self.ws_connect(protocol).await, user).await
    }

    /// Sends `connection_init` as `user` on `ws` and waits for `connection_ack`.
    pub async fn ws_init(&self, mut ws: WsClient, user: &str) -> WsClient {
        ws.send(json!({
            "type": "connection_init",
            "payload": { "authorization": format!("Bearer {}", self.token(user)) },
        }))
        .await;
        let ack = ws.recv().await.expect("connection_ack");
        assert_eq!(ack["type"], "connection_ack", "{ack}");
        ws
    }
}

impl WsClient {
    pub async fn send(&mut self, message: Value) {
        self.socket
            .send(Message::Text(message.to_string().into()))
            .await
            .expect("send");
    }

    /// The next protocol message, answering and skipping keep-alives.
    pub async fn recv(&mut self) -> Result<Value, Closed> {
        // One deadline for the whole wait: keep-alive pings must not extend it.
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let frame = tokio::time::timeout_at(deadline, self.socket.next())
                .await
                .expect("the server sends something in time");
            let text = match frame {
                Some(Ok(Message::Text(text))) => text,
                Some(Ok(Message::Close(frame))) => {
                    return Err(match frame {
                        Some(f) => Closed(Some(f.code.into()), f.reason.to_string()),
                        None => Closed(None, String::new()),
                    });
                }
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Err(Closed(None, e.to_string())),
                None => return Err(Closed(None, "eof".into())),
            };
            let message: Value = serde_json::from_str(&text).expect("json message");
            match message["type"].as_str() {
                Some("ping") => {
                    self.keep_alives += 1;
                    self.send(json!({ "type": "pong" })).await;
                }
                Some("ka") => self.keep_alives += 1,
                _ => return Ok(message),
            }
        }
    }

    /// Waits for the server to close the socket; its close code.
    pub async fn closed(&mut self) -> Closed {
        loop {
            match self.recv().await {
                Ok(_) => continue,
                Err(closed) => return closed,
            }
        }
    }

    /// Starts operation `id`.
    pub async fn subscribe(&mut self, id: &str, query: &str, variables: Value) {
        let kind = if self.protocol == LEGACY {
            "start"
        } else {
            "subscribe"
        };
        self.send(json!({
            "type": kind, "id": id,
            "payload": { "query": query, "variables": variables },
        }))
        .await;
    }

    /// `subscription changes` on `space` from `since`.
    pub async fn subscribe_changes(&mut self, id: &str, space: &str, since: Option<&str>) {
        self.subscribe(
            id,
            &format!(
                "subscription($s: ID!, $c: Cursor) {{ changes(spaceId: $s, since: $c) {{ {EVENT_FIELDS} }} }}"
            ),
            json!({ "s": space, "c": since }),
        )
        .await;
    }

    /// The next event of a subscription (the payload's only root field), or the message
    /// that ended it (`error` or `complete`) as `Err`.
    pub async fn event(&mut self) -> Result<Value, Value> {
        let message = self.recv().await.expect("a message, not a close");
        match message["type"].as_str() {
            Some("next" | "data") => {
                let data = &message["payload"]["data"];
                assert!(
                    message["payload"].get("errors").is_none(),
                    "no errors in events: {message}"
                );
                let root = data.as_object().and_then(|o| o.values().next()).cloned();
                Ok(root.unwrap_or_else(|| panic!("an event: {message}")))
            }
            _ => Err(message),
        }
    }

    /// Events up to and including `READY`.
    pub async fn until_ready(&mut self) -> Vec<Value> {
        let mut events = Vec::new();
        loop {
            let event = self.event().await.expect("events until READY");
            let ready = event["kind"] == "READY";
            events.push(event);
            if ready {
                return events;
            }
        }
    }

    /// Closes with 1000 and waits for the server's answer: the close code it echoes
    /// (`None` if the connection just ended).
    pub async fn close_and_wait_for_echo(mut self) -> Option<u16> {
        use tokio_tungstenite::tungstenite::protocol::{CloseFrame, frame::coding::CloseCode};
        let frame = CloseFrame {
            code: CloseCode::Normal,
            reason: "bye".into(),
        };
        self.socket
            .send(Message::Close(Some(frame)))
            .await
            .expect("close sent");
        loop {
            match tokio::time::timeout(PATIENCE, self.socket.next()).await {
                Ok(Some(Ok(Message::Close(frame)))) => return frame.map(|f| f.code.into()),
                Ok(Some(Ok(_))) => continue,
                Ok(Some(Err(_)) | None) | Err(_) => return None,
            }
        }
    }

    /// Closes from the client side.
    pub async fn hang_up(mut self) {
        let _ = self.socket.close(None).await;
    }
}
