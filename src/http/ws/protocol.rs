//! The two GraphQL-over-websocket subprotocols, folded into one vocabulary.
//!
//! - `graphql-transport-ws` (the `graphql-ws` npm package, Apollo Client, urql):
//!   <https://github.com/enisdenjo/graphql-ws/blob/master/PROTOCOL.md>
//! - `graphql-ws`, the legacy protocol of `subscriptions-transport-ws`: `start`/`stop`
//!   instead of `subscribe`/`complete`, `data` instead of `next`, `ka` keep-alives.

use async_graphql::{Request, Response, ServerError};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Close codes. The 44xx ones are graphql-transport-ws's; the legacy protocol defines
/// none, so it gets the same.
pub mod close {
    pub const NORMAL: u16 = 1000;
    pub const GOING_AWAY: u16 = 1001;
    pub const BAD_REQUEST: u16 = 4400;
    pub const UNAUTHORIZED: u16 = 4401;
    pub const FORBIDDEN: u16 = 4403;
    pub const INIT_TIMEOUT: u16 = 4408;
    pub const SUBSCRIBER_EXISTS: u16 = 4409;
    pub const TOO_MANY_INITS: u16 = 4429;
    /// The user already holds as many websockets as allowed (WebSocket "policy violation").
    pub const TOO_MANY_CONNECTIONS: u16 = 1008;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    TransportWs,
    Legacy,
}

impl Protocol {
    /// Subprotocol names, the preferred one first.
    pub const NAMES: [&'static str; 2] = ["graphql-transport-ws", "graphql-ws"];

    /// The protocol the handshake chose; a client that named none gets the current one.
    pub fn negotiated(name: Option<&str>) -> Self {
        match name {
            Some("graphql-ws") => Protocol::Legacy,
            _ => Protocol::TransportWs,
        }
    }
}

/// What a client can say, in either protocol.
#[derive(Debug)]
pub enum ClientMessage {
    Init(Option<Value>),
    Subscribe {
        id: String,
        request: Box<Request>,
    },
    Stop {
        id: String,
    },
    Ping(Option<Value>),
    Pong,
    /// Legacy `connection_terminate`.
    Terminate,
}

#[derive(Deserialize)]
struct Incoming {
    #[serde(rename = "type")]
    kind: String,
    id: Option<String>,
    payload: Option<Value>,
}

/// Parses a text frame, or says why it is not a message of `protocol`.
pub fn parse(protocol: Protocol, text: &str) -> Result<ClientMessage, String> {
    let msg: Incoming =
        serde_json::from_str(text).map_err(|e| format!("Invalid message received: {e}"))?;
    let id = |msg: &Incoming| {
        msg.id
            .clone()
            .filter(|id| !id.is_empty())
            .ok_or_else(|| format!("Invalid message received: \"{}\" needs an id", msg.kind))
    };
    let legacy = protocol == Protocol::Legacy;
    match msg.kind.as_str() {
        "connection_init" => Ok(ClientMessage::Init(msg.payload)),
        "subscribe" | "start" if (msg.kind == "start") == legacy => {
            let id = id(&msg)?;
            let request = serde_json::from_value::<Request>(msg.payload.unwrap_or(Value::Null))
                .map_err(|e| format!("Invalid message received: bad payload for {id}: {e}"))?;
            Ok(ClientMessage::Subscribe {
                id,
                request: Box::new(request),
            })
        }
        "complete" | "stop" if (msg.kind == "stop") == legacy => {
            Ok(ClientMessage::Stop { id: id(&msg)? })
        }
        "ping" if !legacy => Ok(ClientMessage::Ping(msg.payload)),
        "pong" if !legacy => Ok(ClientMessage::Pong),
        "connection_terminate" if legacy => Ok(ClientMessage::Terminate),
        other => Err(format!("Invalid message received: unknown type {other:?}")),
    }
}

#[derive(Serialize)]
struct Outgoing<'a, P: Serialize> {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    payload: Option<P>,
}

fn encode<P: Serialize>(kind: &'static str, id: Option<&str>, payload: Option<P>) -> String {
    serde_json::to_string(&Outgoing { kind, id, payload })
        .unwrap_or_else(|_| format!(r#"{{"type":"{kind}"}}"#))
}

pub fn ack() -> String {
    encode::<()>("connection_ack", None, None)
}

/// The keep-alive: `ping` (answered with `pong` by the client), or the legacy `ka`.
pub fn keep_alive(protocol: Protocol) -> String {
    match protocol {
        Protocol::TransportWs => encode::<()>("ping", None, None),
        Protocol::Legacy => encode::<()>("ka", None, None),
    }
}

pub fn pong(payload: Option<Value>) -> String {
    encode("pong", None, payload)
}

/// One result of an operation.
pub fn next(protocol: Protocol, id: &str, response: &Response) -> String {
    encode(next_kind(protocol), Some(id), Some(response))
}

/// `next` with a payload already serialised (a rendered live event).
pub fn next_rendered(protocol: Protocol, id: &str, payload: &str) -> String {
    let kind = next_kind(protocol);
    let id = serde_json::to_string(id).unwrap_or_else(|_| "\"\"".into());
    format!(r#"{{"type":"{kind}","id":{id},"payload":{payload}}}"#)
}

fn next_kind(protocol: Protocol) -> &'static str {
    match protocol {
        Protocol::TransportWs => "next",
        Protocol::Legacy => "data",
    }
}

/// Errors that end an operation (no `complete` follows).
pub fn error(id: &str, errors: &[ServerError]) -> String {
    encode("error", Some(id), Some(errors))
}

pub fn complete(id: &str) -> String {
    encode::<()>("complete", Some(id), None)
}

/// Legacy: why `connection_init` was refused.
pub fn connection_error(message: &str, code: &str) -> String {
    encode(
        "connection_error",
        None,
        Some(serde_json::json!({ "message": message, "extensions": { "code": code } })),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_protocol_speaks_its_own_verbs() {
        let start = r#"{"type":"start","id":"1","payload":{"query":"{ me { id } }"}}"#;
        let subscribe = r#"{"type":"subscribe","id":"1","payload":{"query":"{ me { id } }"}}"#;
        assert!(matches!(
            parse(Protocol::Legacy, start),
            Ok(ClientMessage::Subscribe { .. })
        ));
        assert!(matches!(
            parse(Protocol::TransportWs, subscribe),
            Ok(ClientMessage::Subscribe { .. })
        ));
        assert!(parse(Protocol::TransportWs, start).is_err());
        assert!(parse(Protocol::Legacy, subscribe).is_err());
        assert!(parse(Protocol::Legacy, r#"{"type":"ping"}"#).is_err());
        assert!(matches!(
            parse(Protocol::Legacy, r#"{"type":"stop","id":"1"}"#),
            Ok(ClientMessage::Stop { .. })
        ));
    }

    #[test]
    fn malformed_messages_are_refused_with_a_reason() {
        for bad in [
            "not json",
            r#"{"id":"1"}"#,
            r#"{"type":"subscribe","payload":{"query":"{ me { id } }"}}"#,
            r#"{"type":"subscribe","id":"","payload":{"query":"{ me { id } }"}}"#,
            r#"{"type":"subscribe","id":"1","payload":{"query":7}}"#,
            r#"{"type":"next","id":"1"}"#,
        ] {
            let why = parse(Protocol::TransportWs, bad).unwrap_err();
            assert!(why.starts_with("Invalid message received"), "{bad}: {why}");
        }
    }

    #[test]
    fn a_rendered_payload_is_framed_as_a_response_would_be() {
        let response = Response::new(
            async_graphql::Value::from_json(serde_json::json!({ "changes": { "cursor": "c\"1" } }))
                .unwrap(),
        );
        let payload = serde_json::to_string(&response).unwrap();
        for protocol in [Protocol::TransportWs, Protocol::Legacy] {
            for id in ["1", "a \"quoted\" id"] {
                let framed: Value =
                    serde_json::from_str(&next_rendered(protocol, id, &payload)).unwrap();
                let encoded: Value = serde_json::from_str(&next(protocol, id, &response)).unwrap();
                assert_eq!(framed, encoded);
            }
        }
    }
}
