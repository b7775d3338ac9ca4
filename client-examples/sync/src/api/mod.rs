//! The Filesync API as this client uses it: GraphQL over HTTP (the same operations any
//! client has), transfers to and from the URLs the server hands out, and the `changes`
//! subscription ([`live`]).

pub mod live;
mod ops;
pub mod transfer;

use std::time::Duration;

use serde::Deserialize;
use serde_json::{Value, json};

use crate::paths::RelPath;
use crate::tree::RemoteFile;
pub use ops::{SpaceInfo, Ticket};

/// Why a call failed, in the terms the client acts on.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// No answer: the server is down, the network is, or it timed out.
    #[error("the server cannot be reached: {0}")]
    Unreachable(String),
    /// The token is missing, expired, revoked or signed with another key.
    #[error("the server refused the token: {0}")]
    Unauthenticated(String),
    #[error("not allowed: {0}")]
    Forbidden(String),
    #[error("not found: {0}")]
    NotFound(String),
    /// `baseVersion` is no longer current, or the name is taken.
    #[error("{message}")]
    Conflict {
        message: String,
        current_version: Option<i64>,
        file_id: Option<String>,
    },
    /// The cursor is older than the server keeps deletions for.
    #[error("the sync cursor has expired")]
    CursorExpired,
    #[error("rate limited")]
    RateLimited { retry_after: Option<Duration> },
    /// Any other answer with a code (`BAD_INPUT`, `PAYLOAD_TOO_LARGE`, `STORAGE_FULL`, ...).
    #[error("{code}: {message}")]
    Refused { code: String, message: String },
    /// An answer this client does not understand.
    #[error("unexpected answer from the server: {0}")]
    Protocol(String),
}

impl ApiError {
    pub fn code(&self) -> &str {
        match self {
            ApiError::Unreachable(_) => "UNREACHABLE",
            ApiError::Unauthenticated(_) => "UNAUTHENTICATED",
            ApiError::Forbidden(_) => "FORBIDDEN",
            ApiError::NotFound(_) => "NOT_FOUND",
            ApiError::Conflict { .. } => "CONFLICT",
            ApiError::CursorExpired => "CURSOR_EXPIRED",
            ApiError::RateLimited { .. } => "RATE_LIMITED",
            ApiError::Refused { code, .. } => code,
            ApiError::Protocol(_) => "PROTOCOL",
        }
    }

    /// Worth trying again later with the same request.
    pub fn is_transient(&self) -> bool {
        match self {
            ApiError::Unreachable(_) | ApiError::RateLimited { .. } => true,
            ApiError::Refused { code, .. } => {
                matches!(code.as_str(), "INTERNAL" | "SHUTTING_DOWN" | "STORAGE_FULL")
            }
            _ => false,
        }
    }

    /// An error the server put in a GraphQL `errors` entry.
    fn from_graphql(error: &Value) -> Self {
        let message = error["message"].as_str().unwrap_or("").to_owned();
        let ext = &error["extensions"];
        match ext["code"].as_str().unwrap_or("") {
            "UNAUTHENTICATED" => ApiError::Unauthenticated(message),
            "FORBIDDEN" => ApiError::Forbidden(message),
            "NOT_FOUND" => ApiError::NotFound(message),
            "CONFLICT" => ApiError::Conflict {
                message,
                current_version: ext["currentVersion"].as_i64(),
                file_id: ext["fileId"].as_str().map(str::to_owned),
            },
            "CURSOR_EXPIRED" => ApiError::CursorExpired,
            "RATE_LIMITED" => ApiError::RateLimited {
                retry_after: ext["retryAfterSeconds"]
                    .as_f64()
                    .map(Duration::from_secs_f64),
            },
            code => ApiError::Refused {
                code: if code.is_empty() { "UNKNOWN" } else { code }.to_owned(),
                message,
            },
        }
    }

    fn from_reqwest(e: reqwest::Error) -> Self {
        ApiError::Unreachable(describe(&e))
    }
}

/// A reqwest error with its causes (reqwest's own message is often just "error sending
/// request").
pub(crate) fn describe(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

pub type Result<T> = std::result::Result<T, ApiError>;

/// A client of one server, with one token.
#[derive(Clone)]
pub struct Api {
    http: reqwest::Client,
    /// For transfers: no overall timeout (a large file takes long), only an idle one.
    transfers: reqwest::Client,
    base: String,
    token: String,
}

impl Api {
    /// A client of the server at `base` (`http://host:port`).
    pub fn new(base: &str, token: &str) -> Self {
        let agent = concat!("filesync-sync/", env!("CARGO_PKG_VERSION"));
        let http = reqwest::Client::builder()
            .user_agent(agent)
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(60))
            .build()
            .expect("an HTTP client");
        let transfers = reqwest::Client::builder()
            .user_agent(agent)
            .connect_timeout(Duration::from_secs(10))
            .read_timeout(Duration::from_secs(60))
            .build()
            .expect("an HTTP client");
        Self {
            http,
            transfers,
            base: base.trim_end_matches('/').to_owned(),
            token: token.to_owned(),
        }
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    pub fn token(&self) -> &str {
        &self.token
    }

    pub(crate) fn transfers(&self) -> &reqwest::Client {
        &self.transfers
    }

    /// One GraphQL request; `data` on success. A rate limit is waited out (a few times).
    pub async fn graphql(&self, query: &str, variables: Value) -> Result<Value> {
        let mut attempt = 0;
        loop {
            match self.graphql_once(query, &variables).await {
                Err(ApiError::RateLimited { retry_after }) if attempt < 5 => {
                    attempt += 1;
                    let wait = retry_after.unwrap_or(Duration::from_secs(1));
                    tokio::time::sleep(wait.min(Duration::from_secs(30))).await;
                }
                other => return other,
            }
        }
    }

    async fn graphql_once(&self, query: &str, variables: &Value) -> Result<Value> {
        let res = self
            .http
            .post(format!("{}/graphql", self.base))
            .bearer_auth(&self.token)
            .header(
                "accept",
                "application/graphql-response+json, application/json",
            )
            .json(&json!({ "query": query, "variables": variables }))
            .send()
            .await
            .map_err(ApiError::from_reqwest)?;
        let status = res.status();
        let retry_after = res
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .map(Duration::from_secs);
        let body = res.bytes().await.map_err(ApiError::from_reqwest)?;
        let parsed: Option<Value> = serde_json::from_slice(&body).ok();
        if let Some(error) = parsed.as_ref().and_then(|v| v["errors"].get(0)) {
            return Err(ApiError::from_graphql(error));
        }
        match status.as_u16() {
            200..=299 => {}
            401 => return Err(ApiError::Unauthenticated("the token was refused".into())),
            429 => return Err(ApiError::RateLimited { retry_after }),
            502..=504 => return Err(ApiError::Unreachable(format!("HTTP {status}"))),
            code => {
                return Err(ApiError::Refused {
                    code: format!("HTTP_{code}"),
                    message: String::from_utf8_lossy(&body).chars().take(200).collect(),
                });
            }
        }
        let mut value =
            parsed.ok_or_else(|| ApiError::Protocol("a body that is not JSON".into()))?;
        Ok(value["data"].take())
    }
}

/// A file as the server sends it.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireFile {
    id: String,
    name: String,
    version: i64,
    size: f64,
    sha256: String,
    deleted: bool,
    download_url: Option<String>,
}

impl WireFile {
    fn into_remote(self) -> Result<RemoteFile> {
        let path = RelPath::parse(&self.name).map_err(ApiError::Protocol)?;
        Ok(RemoteFile {
            id: self.id,
            path,
            version: self.version,
            sha256: self.sha256,
            size: self.size as u64,
            deleted: self.deleted,
            download_url: self.download_url,
        })
    }
}

/// The fields of a file this client reads.
pub(crate) const FILE_FIELDS: &str = "id name version size sha256 deleted downloadUrl";

pub(crate) fn parse_file(value: Value) -> Result<RemoteFile> {
    let wire: WireFile =
        serde_json::from_value(value).map_err(|e| ApiError::Protocol(e.to_string()))?;
    wire.into_remote()
}
