//! Builds the application from settings and runs it until a shutdown signal.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower_http::limit::RequestBodyLimitLayer;

use crate::auth::{self, Authenticator};
use crate::config::Settings;
use crate::graphql::{self, QueryCache};
use crate::http::{self, AppState, metrics::Metrics};
use crate::storage::{self, OpenContext, url_signing::UrlSigner};
use crate::sync::{Limits, SyncService};

/// A bound, ready-to-run server.
pub struct App {
    listener: TcpListener,
    addr: SocketAddr,
    router: axum::Router,
    service: SyncService,
    settings: Settings,
    draining: Arc<AtomicBool>,
    shutdown: CancellationToken,
    connections: TaskTracker,
}

impl App {
    /// Binds the listener (port 0 picks a free one), opens storage and wires everything.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let dev_sign_in = dev_sign_in(&settings)?;
        let listener = TcpListener::bind(settings.server.listen)
            .await
            .with_context(|| format!("cannot listen on {}", settings.server.listen))?;
        let addr = listener.local_addr()?;
        let token_secret = auth::token_secret(&settings)?;
        // The embedded backend signs its URLs with a key derived from the secret. Without
        // one (AWS with a JWKS only), S3 signs the URLs and this key goes unused.
        let url_secret = token_secret
            .clone()
            .unwrap_or_else(|| rand::random::<[u8; 32]>().to_vec());
        let url_signer = UrlSigner::derive(&url_secret);
        settings.check_replication()?;
        let ctx = || OpenContext {
            public_url: settings.public_url(addr),
            url_signer: url_signer.clone(),
        };
        let mut storage = storage::open(&settings.storage, ctx()).await?;
        // The replica stores' requests are counted with the backend's.
        let registered = storage.copies.registered_stores().await?;
        storage.stores = storage::open_stores(
            &settings.replication,
            &storage.requests,
            &ctx(),
            &registered,
        )
        .await?;
        let service = SyncService::new(storage, Limits::from_settings(&settings));
        service.prepare_replication(registered);
        let draining = Arc::new(AtomicBool::new(false));
        let shutdown = CancellationToken::new();
        let connections = TaskTracker::new();
        let state = AppState {
            schema: graphql::build_schema(service.clone(), &settings.graphql),
            service: service.clone(),
            query_cache: Arc::new(QueryCache::new(
                settings.graphql.max_aliases,
                settings.graphql.max_depth,
                settings.graphql.introspection,
            )),
            auth: Arc::new(
                Authenticator::from_settings(&settings.auth, token_secret.as_deref()).await?,
            ),
            limits: Arc::new(http::limits::Limits::new(settings.limits.clone())),
            url_signer,
            metrics: Arc::new(Metrics::with_replication(&service.replication_stats())),
            draining: draining.clone(),
            max_request_bytes: settings.server.max_request_bytes,
            subscriptions: settings.subscriptions.clone(),
            shutdown: shutdown.clone(),
            connections: connections.clone(),
            dev_sign_in,
        };
        if let Some(dir) = &settings.server.web_app {
            anyhow::ensure!(
                dir.join("index.html").is_file(),
                "server.web_app: {} has no index.html (build the app first: \
                 cd client-examples/web && npm ci && npm run build)",
                dir.display()
            );
        }
        let body_limit = usize::try_from(settings.server.max_request_bytes).unwrap_or(usize::MAX);
        let router = http::router(
            state,
            settings.server.graphiql,
            settings.server.web_app.clone(),
            RequestBodyLimitLayer::new(body_limit),
            http::cors(&settings.server.cors_allowed_origins)?,
        );
        Ok(Self {
            listener,
            addr,
            router,
            service,
            settings,
            draining,
            shutdown,
            connections,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Serves until `shutdown` resolves, then stops accepting, lets in-flight requests
    /// finish and websockets close with 1001 (together up to `server.shutdown_grace`) and
    /// stops the background tasks.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let stop = CancellationToken::new();
        let sweeper = tokio::spawn(
            self.service
                .clone()
                .run_sweeper(self.settings.uploads.sweep_interval, stop.clone()),
        );
        let hub = tokio::spawn(self.service.clone().run_live_hub(stop.clone()));
        let feed = tokio::spawn(self.service.storage().feed.run(stop.clone()));
        let events = tokio::spawn(self.service.clone().run_storage_events(stop.clone()));
        let replication = tokio::spawn(self.service.clone().run_replication(stop.clone()));
        let grace = self.settings.server.shutdown_grace;
        let draining = self.draining.clone();
        let signalled = self.shutdown.clone();
        let on_signal = signalled.clone();
        let server = axum::serve(self.listener, self.router).with_graceful_shutdown(async move {
            shutdown.await;
            draining.store(true, Ordering::Relaxed);
            tracing::info!("shutting down: finishing in-flight requests, closing websockets");
            on_signal.cancel();
        });
        let connections = self.connections.clone();
        let server = async move {
            let served = server.await.context("server failed");
            connections.close();
            connections.wait().await;
            served
        };
        tokio::pin!(server);
        let result = tokio::select! {
            result = &mut server => result,
            _ = async { signalled.cancelled().await; tokio::time::sleep(grace).await } => {
                tracing::warn!("in-flight requests did not finish within {grace:?}; stopping");
                Ok(())
            }
        };
        stop.cancel();
        let _ = sweeper.await;
        let _ = hub.await;
        let _ = feed.await;
        let _ = events.await;
        let _ = replication.await;
        tracing::info!("stopped");
        result
    }
}

/// Resolves on ctrl-c or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
}

/// The development sign-in's token lifetime when it is on and allowed: only on the
/// embedded backend, listening on loopback (anyone who reaches it can be anyone).
fn dev_sign_in(settings: &Settings) -> anyhow::Result<Option<std::time::Duration>> {
    if !settings.auth.dev_sign_in {
        return Ok(None);
    }
    anyhow::ensure!(
        settings.storage.backend == crate::config::Backend::Embedded,
        "auth.dev_sign_in works only on the embedded backend"
    );
    anyhow::ensure!(
        settings.server.listen.ip().is_loopback(),
        "auth.dev_sign_in lets anyone sign in as anyone: it needs a loopback \
         server.listen address (such as 127.0.0.1), not {}",
        settings.server.listen
    );
    anyhow::ensure!(
        !settings
            .server
            .cors_allowed_origins
            .iter()
            .any(|o| o == "*"),
        "auth.dev_sign_in with server.cors_allowed_origins = [\"*\"] would let any web \
         page mint tokens"
    );
    tracing::warn!("development sign-in is on: anyone reaching this server can be anyone");
    Ok(Some(settings.auth.token_ttl))
}
