//! Assembling a service's router with the endpoints every port serves, and serving it.

use crate::auth::Authenticator;
use crate::metrics::{self, Metrics};
use crate::{ApiError, ServiceName};
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use mesh_store::Store;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;

/// Whether this process accepts work. Starts false; drops to false again on drain, so a
/// load balancer stops routing here before connections close.
/// Components may also publish a detail under `checks` in `/readyz` (the policy set in
/// force and its last load error, say) without changing readiness.
#[derive(Clone, Default)]
pub struct Readiness {
    ready: Arc<AtomicBool>,
    details: Arc<Mutex<BTreeMap<String, Value>>>,
}

impl Readiness {
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::SeqCst);
    }
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }
    pub fn set_detail(&self, check: &str, detail: Value) {
        if let Ok(mut details) = self.details.lock() {
            details.insert(check.to_string(), detail);
        }
    }
    fn details(&self) -> BTreeMap<String, Value> {
        self.details.lock().map(|d| d.clone()).unwrap_or_default()
    }
}

/// What every service's handlers need besides their own core.
#[derive(Clone)]
pub struct ServiceContext {
    pub name: ServiceName,
    pub store: Store,
    pub auth: Arc<Authenticator>,
    pub metrics: Arc<Metrics>,
    pub readiness: Readiness,
}

impl ServiceContext {
    pub fn new(name: ServiceName, store: Store, readiness: Readiness) -> Self {
        Self {
            name,
            auth: Arc::new(Authenticator::new(store.clone(), name)),
            metrics: Arc::new(Metrics::new(name)),
            store,
            readiness,
        }
    }
}

/// How long `/readyz` waits for the store before calling it unready.
const STORE_PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Adds `/healthz`, `/readyz`, `/metrics`, `/openapi.json`, JSON 404/405 fallbacks and
/// request metrics to a service's API routes.
pub fn finish_router(ctx: &ServiceContext, api: Router, openapi: Value) -> Router {
    let openapi = Arc::new(openapi);
    let common = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .route(
            "/openapi.json",
            get(move || {
                let doc = openapi.clone();
                async move { Json(doc.as_ref().clone()) }
            }),
        )
        .with_state(ctx.clone());
    api.merge(common)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            ctx.metrics.clone(),
            metrics::track,
        ))
}

async fn healthz(State(ctx): State<ServiceContext>) -> Json<Value> {
    Json(json!({"status": "ok", "service": ctx.name.as_str()}))
}

async fn readyz(State(ctx): State<ServiceContext>) -> Response {
    let store = tokio::time::timeout(STORE_PROBE_TIMEOUT, ctx.store.provenance.head()).await;
    let store_ok = matches!(store, Ok(Ok(_)));
    let ready = ctx.readiness.is_ready() && store_ok;
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let mut checks = serde_json::Map::new();
    checks.insert(
        "store".into(),
        json!({"backend": ctx.store.backend, "ok": store_ok}),
    );
    checks.extend(ctx.readiness.details());
    let body = json!({
        "status": if ready { "ready" } else if !ctx.readiness.is_ready() { "draining" } else { "degraded" },
        "service": ctx.name.as_str(),
        "checks": checks,
    });
    (status, Json(body)).into_response()
}

async fn metrics_text(State(ctx): State<ServiceContext>) -> Response {
    let head = ctx.store.provenance.head().await.ok();
    let gauges: Vec<(&str, &str, f64)> = head
        .map(|h| {
            vec![(
                "mesh_provenance_events",
                "Events in the provenance log.",
                h.count as f64,
            )]
        })
        .unwrap_or_default();
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        ctx.metrics.render(ctx.readiness.is_ready(), &gauges),
    )
        .into_response()
}

async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError::not_found(format!("no route for {}", uri.path()))
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this route does not accept that method",
    )
}

/// Serves `router` on `listener` until `shutdown` resolves, then lets in-flight
/// requests finish.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use axum::serve::ListenerExt;
    let listener = listener.tap_io(|tcp| {
        // Small JSON requests and replies: never wait for Nagle.
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
}

/// Resolves on SIGTERM or Ctrl-C: what every mesh process drains on. The handlers are
/// installed when this is called, not when the future is first polled, so a signal
/// that arrives right after start-up is not lost to the default action (exit).
pub fn shutdown_signal() -> std::pin::Pin<Box<dyn Future<Output = ()> + Send>> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            (Ok(mut term), Ok(mut int)) => Box::pin(async move {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
            }),
            _ => Box::pin(async {
                let _ = tokio::signal::ctrl_c().await;
            }),
        }
    }
    #[cfg(not(unix))]
    {
        Box::pin(async {
            let _ = tokio::signal::ctrl_c().await;
        })
    }
}
