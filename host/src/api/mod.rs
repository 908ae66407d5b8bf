//! The host's HTTP side: liveness, readiness and Prometheus metrics, for the platform team's
//! probes and scrapers. It binds to 127.0.0.1 unless told otherwise: nothing here is for the
//! open network.
//!
//! - `GET /healthz`: 200 while the process serves HTTP at all.
//! - `GET /readyz`: 200 with the tenants and their plugin versions when at least one tenant is
//!   served (and, under `edgepm run`, the MQTT ingest session is connected) and no part of the
//!   host reports a problem (`problems`: the store failing its transactions, a failed sync, low
//!   disk space), 503 otherwise; always lists recent plugin rejections and quarantines, the
//!   outbox depth and the free disk space.
//! - `GET /metrics`: Prometheus text format.
//! - `/api/v1/...`: equipment health as JSON ([`v1`], `docs/api.md`), when the host keeps a store.
//! - `/`: the equipment-health dashboard ([`dashboard`]), a client of `/api/v1`.

pub mod dashboard;
pub mod events;
pub mod v1;

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

/// What the endpoints look at.
#[derive(Clone)]
pub struct ApiState {
    pub host: Arc<PluginHost>,
    /// Whether readiness requires the MQTT ingest session (true under `edgepm run`).
    pub needs_mqtt: bool,
    /// A read-only connection to the store, for `/api/v1` (`None`: `edgepm process`, no store).
    pub store: Option<Arc<crate::store::SqliteStore>>,
    /// Where alert acknowledgements go to be written (the ingest loop); `None`: read-only.
    pub acks: Option<std::sync::mpsc::Sender<crate::store::AckRequest>>,
    /// Who may read `/api/v1`.
    pub access: ApiAccess,
    /// New predictions and alerts for `/api/v1/events`: made by [`start`] when there is a store.
    pub events: Option<events::Events>,
}

/// Who may read `/api/v1` (the probes `/healthz`, `/readyz`, `/metrics` are always open).
#[derive(Clone, Debug, PartialEq)]
pub enum ApiAccess {
    /// Anyone who can connect: the host listens on loopback only.
    Open,
    /// Requests with `Authorization: Bearer <token>`.
    Token(String),
    /// Nobody: bound to another address without a token (`[http] token` / `token_env`).
    Refused,
}

/// The routes.
pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .merge(v1::routes().route_layer(axum::middleware::from_fn_with_state(state.clone(), v1::guard)))
        .merge(dashboard::routes())
        .with_state(state)
}

/// The one HTTP start-up: binds `addr` and serves [`router`] on `runtime` until `shutdown`
/// completes (or the runtime stops). Returns the address bound (port 0 picks a free one).
pub fn start(
    runtime: &tokio::runtime::Handle,
    addr: std::net::SocketAddr,
    mut state: ApiState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<std::net::SocketAddr> {
    use anyhow::Context as _;
    // One stop signal for the server, the event watcher and every open event stream (a stream
    // left open would hold the graceful shutdown up).
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    runtime.spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    if let (Some(store), None) = (&state.store, &state.events) {
        state.events = Some(events::Events::start(runtime, store.clone(), stop_rx.clone()));
    }
    let mut stopped = stop_rx;
    let shutdown = async move {
        let _ = stopped.wait_for(|s| *s).await;
    };
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind(addr))
        .with_context(|| format!("binding the HTTP address {addr}"))?;
    let local = listener.local_addr()?;
    tracing::info!(addr = %local, "HTTP endpoints listening: /healthz /readyz /metrics /api/v1, dashboard at /");
    match &state.access {
        ApiAccess::Open => {}
        ApiAccess::Token(_) => {
            tracing::info!("/api/v1 requires the bearer token of [http] token / token_env")
        }
        ApiAccess::Refused => tracing::warn!(
            addr = %local,
            "/api/v1 is refused to everyone: the host listens beyond loopback without [http] token or token_env"
        ),
    }
    runtime.spawn(async move {
        if let Err(e) = serve(listener, state, shutdown).await {
            tracing::error!(error = %e, "HTTP server failed");
        }
    });
    Ok(local)
}

/// Serves [`router`] on `listener` until `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: ApiState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(state)).with_graceful_shutdown(shutdown).await
}

async fn metrics(State(state): State<ApiState>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], state.host.metrics().encode())
}

/// `{stage: {version, source}}` of the versions serving a tenant (`/readyz`, `/api/v1/tenants`).
pub(crate) fn plugin_versions(
    t: &crate::plugins::TenantPipeline,
) -> serde_json::Map<String, serde_json::Value> {
    Stage::ALL
        .into_iter()
        .map(|s| {
            let plugin = t.stage(s);
            (
                s.as_str().to_string(),
                json!({"version": plugin.version(), "source": plugin.compiled.version.source}),
            )
        })
        .collect()
}

async fn readyz(State(state): State<ApiState>) -> impl IntoResponse {
    let host = &state.host;
    let tenants: Vec<_> = host
        .tenant_names()
        .into_iter()
        .filter_map(|name| host.tenant(&name))
        .map(|p| json!({"name": p.name, "window_size": p.window_size, "plugins": plugin_versions(&p)}))
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
    let telemetry = &host.metrics().telemetry;
    let mqtt_connected = telemetry.mqtt_connected.get() == 1;
    let problems: serde_json::Map<String, serde_json::Value> = telemetry
        .health
        .problems()
        .into_iter()
        .map(|(part, reason)| (part.to_string(), reason.into()))
        .collect();
    let ready = !tenants.is_empty() && (mqtt_connected || !state.needs_mqtt) && problems.is_empty();
    let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    let body = json!({
        "ready": ready,
        "mqtt_connected": state.needs_mqtt.then_some(mqtt_connected),
        "outbox_depth": telemetry.outbox_depth.get(),
        "free_disk_bytes": state.needs_mqtt.then(|| telemetry.free_bytes.get()),
        "problems": problems,
        "tenants": tenants,
        "rejected_versions": host.rejected_versions(),
        "recent_problems": events,
    });
    (status, Json(body))
}
