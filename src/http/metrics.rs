//! Prometheus metrics at `/metrics`: requests by route, method and status, and their
//! latency. Routes are templates (`/blob/{space}/{upload}`), never raw paths, so label
//! cardinality stays bounded.

use std::sync::atomic::Ordering;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::header::CONTENT_TYPE;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use super::AppState;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: String,
    route: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BackendLabels {
    service: &'static str,
    operation: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ShardLabels {
    shard: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Family<RouteLabels, Histogram>,
    /// Open websocket connections (kept by the connections themselves).
    pub ws_connections: Gauge,
    // Read from the live hub's own counters at each scrape.
    live_subscriptions: Gauge,
    live_delivered: Counter,
    live_store_reads: Counter,
    live_ended: Family<ReasonLabels, Counter>,
    // Read from the storage backend's request counter at each scrape.
    backend_requests: Family<BackendLabels, Counter>,
    stream_reads: Family<ShardLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("filesync");
        let requests = Family::<RequestLabels, Counter>::default();
        let latency = Family::<RouteLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.0005, 2.0, 16))
        });
        registry.register(
            "http_requests",
            "HTTP requests by method, route and status",
            requests.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "HTTP request latency by route",
            latency.clone(),
        );
        let ws_connections = Gauge::default();
        registry.register(
            "websocket_connections",
            "Open websocket connections",
            ws_connections.clone(),
        );
        let live_subscriptions = Gauge::default();
        registry.register(
            "live_subscriptions",
            "Live subscriptions attached to the hub",
            live_subscriptions.clone(),
        );
        let live_delivered = Counter::default();
        registry.register(
            "live_changes_delivered",
            "Changes handed by the hub to a subscriber",
            live_delivered.clone(),
        );
        let live_store_reads = Counter::default();
        registry.register(
            "live_commit_log_reads",
            "Commit-log reads by the hub (shared by every subscriber of a space)",
            live_store_reads.clone(),
        );
        let live_ended = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "live_subscriptions_ended",
            "Subscriptions the hub ended: lagged (buffer full) or forbidden (member removed)",
            live_ended.clone(),
        );
        let backend_requests = Family::<BackendLabels, Counter>::default();
        registry.register(
            "backend_requests",
            "Requests to the services behind the storage backend (AWS), by operation",
            backend_requests.clone(),
        );
        let stream_reads = Family::<ShardLabels, Counter>::default();
        registry.register(
            "stream_get_records",
            "GetRecords calls this replica made on each shard of the table's stream (AWS)",
            stream_reads.clone(),
        );
        Self {
            stream_reads,
            registry,
            requests,
            latency,
            ws_connections,
            live_subscriptions,
            live_delivered,
            live_store_reads,
            live_ended,
            backend_requests,
        }
    }
}

impl Metrics {
    /// The metrics, with replication's (which the sync service keeps) registered too.
    pub fn with_replication(stats: &crate::sync::ReplicationStats) -> Self {
        let mut metrics = Self::default();
        let registry = &mut metrics.registry;
        registry.register(
            "replication_copies",
            "Copies finished by this server, by store and result (copied, failed, removed)",
            stats.copies.clone(),
        );
        registry.register(
            "replication_copied_bytes",
            "Bytes copied into each store by this server",
            stats.bytes.clone(),
        );
        registry.register(
            "replication_lag_seconds",
            "From a version's commit to its copy being verified in a store",
            stats.lag.clone(),
        );
        registry.register(
            "replication_found_bad",
            "Copies found missing or corrupt (by the scrub, a repair or a read), by store",
            stats.found_bad.clone(),
        );
        registry.register(
            "replication_checked",
            "Copies checked against their checksum by the scrub and repairs, by store",
            stats.checked.clone(),
        );
        registry.register(
            "replication_degraded_objects",
            "Objects the primary store lacks; their reads go to a replica store",
            stats.degraded_objects.clone(),
        );
        registry.register(
            "replication_store_down",
            "1 while this server takes the store as down (straight failures)",
            stats.store_down.clone(),
        );
        metrics
    }
}

pub(super) async fn track(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", |p| p.as_str())
        .to_owned();
    let method = req.method().as_str().to_owned();
    let started = Instant::now();
    let response = next.run(req).await;
    let metrics = &state.metrics;
    metrics
        .latency
        .get_or_create(&RouteLabels {
            route: route.clone(),
        })
        .observe(started.elapsed().as_secs_f64());
    metrics
        .requests
        .get_or_create(&RequestLabels {
            method,
            route,
            status: response.status().as_u16(),
        })
        .inc();
    response
}

pub(super) async fn render(State(state): State<AppState>) -> Response {
    let metrics = &state.metrics;
    let live = state.service.live_stats();
    let load = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
    let set = |counter: &Counter, value: u64| counter.inner().store(value, Ordering::Relaxed);
    let attached = i64::try_from(state.service.live_subscriptions()).unwrap_or(i64::MAX);
    metrics.live_subscriptions.set(attached);
    set(&metrics.live_delivered, load(&live.delivered));
    set(&metrics.live_store_reads, load(&live.store_reads));
    for (reason, count) in [("lagged", &live.lagged), ("forbidden", &live.forbidden)] {
        set(
            &metrics.live_ended.get_or_create(&ReasonLabels { reason }),
            load(count),
        );
    }
    for (service, operation, count) in state.service.storage().requests.snapshot() {
        set(
            &metrics
                .backend_requests
                .get_or_create(&BackendLabels { service, operation }),
            count,
        );
    }
    for (shard, count) in state.service.storage().requests.stream_reads() {
        set(
            &metrics.stream_reads.get_or_create(&ShardLabels { shard }),
            count,
        );
    }
    let mut body = String::new();
    if let Err(e) = prometheus_client::encoding::text::encode(&mut body, &metrics.registry) {
        tracing::error!(error = %e, "cannot encode metrics");
    }
    (
        [(
            CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        body,
    )
        .into_response()
}
