//! HTTP: the router, the GraphQL endpoint, the embedded backend's blob endpoint, health,
//! metrics and the layers every request passes through.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use axum::Router;
use axum::extract::{MatchedPath, Request};
use axum::http::{HeaderName, HeaderValue, Method};
use axum::routing::{get, put};
use tower::util::option_layer;
use tower_http::cors::{AllowHeaders, AllowOrigin, CorsLayer};
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::trace::TraceLayer;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::Authenticator;
use crate::config::SubscriptionSettings;
use crate::graphql::{FilesyncSchema, QueryCache};
use crate::storage::url_signing::UrlSigner;
use crate::sync::SyncService;

mod blob;
mod errors;
mod graphql;
mod health;
pub mod limits;
pub mod metrics;
mod web_app;
mod ws;

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    pub service: SyncService,
    pub schema: FilesyncSchema,
    pub query_cache: Arc<QueryCache>,
    pub auth: Arc<Authenticator>,
    pub limits: Arc<limits::Limits>,
    pub url_signer: UrlSigner,
    pub metrics: Arc<metrics::Metrics>,
    /// Set once shutdown begins: `/readyz` then fails so load balancers drain us.
    pub draining: Arc<AtomicBool>,
    pub max_request_bytes: u64,
    pub subscriptions: SubscriptionSettings,
    /// Cancelled when shutdown begins: websockets close with 1001.
    pub shutdown: CancellationToken,
    /// Open websocket connections, so that shutdown can wait for their close frames.
    pub connections: TaskTracker,
    /// The lifetime of tokens minted by the development sign-in; `None`: it is off.
    pub dev_sign_in: Option<Duration>,
}

/// The CORS policy for `origins` (`None` when empty: no CORS headers at all).
pub fn cors(origins: &[String]) -> anyhow::Result<Option<CorsLayer>> {
    if origins.is_empty() {
        return Ok(None);
    }
    let allowed = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        let list = origins
            .iter()
            .map(|origin| {
                anyhow::ensure!(
                    origin.starts_with("https://") || origin.starts_with("http://"),
                    "server.cors_allowed_origins: {origin:?} is not an origin (scheme://host[:port])"
                );
                HeaderValue::from_str(origin.trim_end_matches('/')).map_err(anyhow::Error::from)
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        AllowOrigin::list(list)
    };
    Ok(Some(
        CorsLayer::new()
            .allow_origin(allowed)
            .allow_methods([Method::GET, Method::POST, Method::PUT])
            .allow_headers(AllowHeaders::mirror_request())
            .expose_headers([
                HeaderName::from_static("x-request-id"),
                HeaderName::from_static("retry-after"),
                HeaderName::from_static("content-range"),
                HeaderName::from_static("accept-ranges"),
                HeaderName::from_static("content-disposition"),
            ])
            .max_age(Duration::from_secs(600)),
    ))
}

pub fn router(
    state: AppState,
    graphiql: bool,
    web_app: Option<std::path::PathBuf>,
    body_limit: RequestBodyLimitLayer,
    cors: Option<CorsLayer>,
) -> Router {
    let request_id = HeaderName::from_static("x-request-id");
    let mut router = Router::new()
        .route(
            "/graphql",
            get(graphql::graphql_get)
                .post(graphql::graphql_post)
                .fallback(graphql::graphql_other_method)
                .layer(body_limit)
                .layer(axum::middleware::map_response_with_state(
                    state.clone(),
                    graphql::coded_body_limit,
                )),
        )
        .route("/graphql/ws", get(ws::upgrade))
        .route(
            "/blob/{space}/{upload}",
            put(blob::put_blob)
                .post(blob::post_blob)
                .get(blob::get_blob),
        )
        .route("/blob/{space}/{upload}/part/{number}", put(blob::put_part))
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(metrics::render));
    if state.dev_sign_in.is_some() {
        router = router.route(
            "/auth/dev-sign-in",
            get(web_app::dev_sign_in_enabled).post(web_app::dev_sign_in),
        );
    }
    if let Some(dir) = web_app {
        router = router.route("/app", get(web_app::app_root)).merge(
            Router::new()
                .route("/app/", get(web_app::app_file))
                .route("/app/{*rest}", get(web_app::app_file))
                .with_state(dir),
        );
    }
    if graphiql {
        router = router
            .route("/graphiql", get(graphql::graphiql))
            .route("/graphiql/assets/{name}", get(graphql::graphiql_asset));
    }
    router
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            metrics::track,
        ))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(|req: &Request| {
                    let route = req
                        .extensions()
                        .get::<MatchedPath>()
                        .map_or("unmatched", |p| p.as_str());
                    let id = req
                        .headers()
                        .get("x-request-id")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("-");
                    tracing::info_span!("request", method = %req.method(), route, request_id = id)
                })
                .on_request(())
                .on_response(
                    |res: &axum::response::Response, latency: Duration, _: &tracing::Span| {
                        tracing::info!(
                            status = res.status().as_u16(),
                            latency_ms = latency.as_secs_f64() * 1000.0,
                            "response"
                        );
                    },
                ),
        )
        .layer(PropagateRequestIdLayer::new(request_id.clone()))
        .layer(SetRequestIdLayer::new(request_id, MakeRequestUuid))
        .layer(SetResponseHeaderLayer::if_not_present(
            HeaderName::from_static("x-content-type-options"),
            HeaderValue::from_static("nosniff"),
        ))
        .layer(SetResponseHeaderLayer::if_not_present(
            HeaderName::from_static("referrer-policy"),
            HeaderValue::from_static("no-referrer"),
        ))
        .layer(SetResponseHeaderLayer::if_not_present(
            HeaderName::from_static("x-frame-options"),
            HeaderValue::from_static("DENY"),
        ))
        // An API answers JSON and bytes, never a page: nothing may run, load or frame it.
        // (GraphiQL sets its own policy.)
        .layer(SetResponseHeaderLayer::if_not_present(
            HeaderName::from_static("content-security-policy"),
            HeaderValue::from_static("default-src 'none'; frame-ancestors 'none'"),
        ))
        // Responses carry signed URLs and private metadata: no shared cache may keep them.
        .layer(SetResponseHeaderLayer::if_not_present(
            HeaderName::from_static("cache-control"),
            HeaderValue::from_static("no-store"),
        ))
        .layer(option_layer(cors))
        .with_state(state)
}
