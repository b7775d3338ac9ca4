//! The browser app (`client-examples/web`, built) served from a folder at `/app/`, when
//! `server.web_app` names one; and the development sign-in it offers on the embedded
//! backend when `auth.dev_sign_in` is on.

use std::path::{Component, Path, PathBuf};

use axum::Json;
use axum::extract::State;
use axum::http::header::{CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, HOST, ORIGIN};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use serde_json::json;

use super::AppState;
use super::errors::error_response;
use crate::domain::UserId;

/// The app's own scripts and styles only; it talks to this server (GraphQL, websocket,
/// the embedded blob endpoint) and, on the AWS backend, to S3's presigned URLs, whose
/// origin depends on the bucket: `connect-src` stays open to `https:` for them.
const APP_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self' data: blob:; connect-src 'self' ws: wss: https:; \
     base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// `/app` without the slash: relative asset paths need it.
pub(super) async fn app_root() -> Redirect {
    Redirect::permanent("/app/")
}

/// A file of the app's folder: `/app/` is its `index.html`.
pub(super) async fn app_file(State(dir): State<PathBuf>, uri: Uri) -> Response {
    let rest = uri.path().strip_prefix("/app/").unwrap_or("");
    let rest = if rest.is_empty() { "index.html" } else { rest };
    let Some(path) = inside(&dir, rest) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let body = match tokio::fs::read(&path).await {
        Ok(body) => body,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return StatusCode::NOT_FOUND.into_response();
        }
        // A directory, or unreadable: nothing to serve.
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "cannot read a web app file");
            return StatusCode::NOT_FOUND.into_response();
        }
    };
    (
        [
            (CONTENT_TYPE, content_type(&path)),
            // Revalidated on each load, so a rebuilt app is picked up at once.
            (CACHE_CONTROL, "no-cache"),
            (CONTENT_SECURITY_POLICY, APP_CSP),
        ],
        body,
    )
        .into_response()
}

/// `rest` under `dir`, if it is a plain relative path (no `..`, no root, no dot files).
fn inside(dir: &Path, rest: &str) -> Option<PathBuf> {
    let rel = Path::new(rest);
    let plain = rel.components().all(|c| match c {
        Component::Normal(name) => !name.to_string_lossy().starts_with('.'),
        _ => false,
    });
    (plain && !rest.contains('\\')).then(|| dir.join(rel))
}

fn content_type(path: &Path) -> &'static str {
    match path.extension().and_then(|e| e.to_str()).unwrap_or("") {
        "html" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "json" | "map" => "application/json",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "ico" => "image/x-icon",
        "webmanifest" => "application/manifest+json",
        _ => "application/octet-stream",
    }
}

/// `GET /auth/dev-sign-in`: whether the development sign-in is on (it answers 404 when
/// off, like any unknown path).
pub(super) async fn dev_sign_in_enabled() -> Json<serde_json::Value> {
    Json(json!({ "enabled": true }))
}

#[derive(Deserialize)]
pub(super) struct SignIn {
    user: String,
}

/// `POST /auth/dev-sign-in {"user": "alice"}`: a token for that user, whoever asks.
/// Development only: on the embedded backend, listening on loopback, when enabled.
pub(super) async fn dev_sign_in(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Json<SignIn>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let Some(ttl) = state.dev_sign_in else {
        return StatusCode::NOT_FOUND.into_response();
    };
    if let Err(why) = local_request(&headers) {
        return error_response(StatusCode::FORBIDDEN, "FORBIDDEN", why);
    }
    let Ok(Json(body)) = body else {
        return error_response(
            StatusCode::BAD_REQUEST,
            "BAD_INPUT",
            "send a JSON body {\"user\": \"<user id>\"}",
        );
    };
    let user = match UserId::parse(body.user.trim()) {
        Ok(user) => user,
        Err(e) => return error_response(StatusCode::BAD_REQUEST, "BAD_INPUT", &e.to_string()),
    };
    match state.auth.issue(&user, ttl) {
        Ok(token) => {
            tracing::info!(%user, "development sign-in");
            Json(json!({ "user": user.as_str(), "token": token })).into_response()
        }
        Err(e) => {
            tracing::error!(error = %e, "development sign-in cannot mint a token");
            error_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                "INTERNAL",
                "the server cannot mint tokens",
            )
        }
    }
}

/// The development sign-in answers pages of this server only: the `Host` must be a
/// loopback name (a DNS-rebound name pointing at 127.0.0.1 is not), and a browser's
/// `Origin`, when sent, must be that same host.
fn local_request(headers: &HeaderMap) -> Result<(), &'static str> {
    let host = headers
        .get(HOST)
        .and_then(|h| h.to_str().ok())
        .ok_or("the development sign-in needs a Host header")?;
    let name = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => host.split(':').next().unwrap_or(""),
    };
    let loopback = name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    if !loopback {
        return Err("the development sign-in answers only at a loopback address");
    }
    if let Some(origin) = headers.get(ORIGIN) {
        let same = origin
            .to_str()
            .ok()
            .and_then(|o| o.split_once("://"))
            .is_some_and(|(_, rest)| rest.eq_ignore_ascii_case(host));
        if !same {
            return Err("the development sign-in answers only this server's own pages");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_paths_inside_the_folder_are_served() {
        let dir = Path::new("/srv/app");
        assert_eq!(
            inside(dir, "assets/app.js"),
            Some(PathBuf::from("/srv/app/assets/app.js"))
        );
        for bad in [
            "../secret",
            "a/../../b",
            "/etc/passwd",
            ".env",
            "a/.git/config",
            "a\\..\\b",
        ] {
            assert_eq!(inside(dir, bad), None, "{bad}");
        }
    }

    #[test]
    fn the_development_sign_in_answers_its_own_pages_on_loopback_only() {
        let headers = |host: &str, origin: Option<&str>| {
            let mut h = HeaderMap::new();
            h.insert(HOST, host.parse().unwrap());
            if let Some(o) = origin {
                h.insert(ORIGIN, o.parse().unwrap());
            }
            h
        };
        for (host, origin) in [
            ("127.0.0.1:8080", None),
            ("localhost:8080", Some("http://localhost:8080")),
            ("[::1]:8080", Some("http://[::1]:8080")),
        ] {
            assert_eq!(local_request(&headers(host, origin)), Ok(()), "{host}");
        }
        for (host, origin) in [
            ("evil.example:8080", None),
            ("127.0.0.1.nip.io:8080", None),
            ("127.0.0.1:8080", Some("https://evil.example")),
            ("127.0.0.1:8080", Some("null")),
        ] {
            assert!(
                local_request(&headers(host, origin)).is_err(),
                "{host} {origin:?}"
            );
        }
    }
}
