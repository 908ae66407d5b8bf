//! The host's HTTP side: liveness, readiness and Prometheus metrics, for the platform team's
//! probes and scrapers. It binds to 127.0.0.1 unless told otherwise: nothing here is for the
//! open network.
//!
//! - `GET /healthz`: 200 while the process serves HTTP at all.
//! - `GET /readyz`: 200 with the tenants and their plugin versions when at least one tenant is
//!   served, 503 otherwise; always lists recent plugin rejections and quarantines.
//! - `GET /metrics`: Prometheus text format.

use crate::plugins::{PluginEventKind, PluginHost};
use crate::types::Stage;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Json};
use axum::routing::get;
use serde_json::json;
use std::future::Future;
use std::sync::Arc;

/// Plugin events listed by `/readyz`.
const EVENTS_SHOWN: usize = 20;

/// The routes, over a plugin host.
pub fn router(host: Arc<PluginHost>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(host)
}

/// Serves [`router`] on `listener` until `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    host: Arc<PluginHost>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(host)).with_graceful_shutdown(shutdown).await
}

async fn metrics(State(host): State<Arc<PluginHost>>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], host.metrics().encode())
}

async fn readyz(State(host): State<Arc<PluginHost>>) -> impl IntoResponse {
    let tenants: Vec<_> = host
        .tenant_names()
        .into_iter()
        .filter_map(|name| host.tenant(&name))
        .map(|p| {
            let versions: serde_json::Map<String, serde_json::Value> = Stage::ALL
                .into_iter()
                .map(|s| {
                    let plugin = p.stage(s);
                    (
                        s.as_str().to_string(),
                        json!({"version": plugin.version(), "source": plugin.compiled.version.source}),
                    )
                })
                .collect();
            json!({"name": p.name, "window_size": p.window_size, "plugins": versions})
        })
        .collect();
    let events: Vec<_> = host
        .events()
        .into_iter()
        .filter(|e| e.kind != PluginEventKind::Loaded)
        .rev()
        .take(EVENTS_SHOWN)
        .map(|e| {
            json!({
                "tenant": e.tenant,
                "stage": e.stage.map(Stage::as_str),
                "kind": format!("{:?}", e.kind).to_lowercase(),
                "version": e.version,
                "message": e.message,
            })
        })
        .collect();
    let ready = !tenants.is_empty();
    let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    let body = json!({
        "ready": ready,
        "tenants": tenants,
        "rejected_versions": host.rejected_versions(),
        "recent_problems": events,
    });
    (status, Json(body))
}
