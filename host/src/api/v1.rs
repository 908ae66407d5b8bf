//! `/api/v1`: equipment health as JSON, on the store's read side (a read-only connection of its
//! own; queries run on blocking threads, never on the runtime). Documented for users in
//! `docs/api.md`. Bad parameters are answered 400, unknown devices 404, each with
//! `{"error": "..."}`.

use super::ApiState;
use crate::clock::{parse_rfc3339, rfc3339};
use crate::store::{AckOutcome, AckRequest, AlertFilter, AlertKey, DegradationQuery, SqliteStore};
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Arc;

/// Most points a prediction curve returns unless asked otherwise.
const DEFAULT_MAX_POINTS: u32 = 500;
/// Most alerts returned unless asked otherwise, and at most.
const DEFAULT_ALERTS: u32 = 100;
const MAX_ALERTS: u32 = 10_000;

/// An answer that is not a 200.
pub struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({"error": self.1}))).into_response()
    }
}

fn bad(message: impl Into<String>) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, message.into())
}

type Answer = Result<Json<Value>, ApiError>;

pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/api/v1/devices", get(devices))
        .route("/api/v1/devices/{tenant}/{device}", get(device))
        .route("/api/v1/devices/{tenant}/{device}/predictions", get(predictions))
        .route("/api/v1/alerts", get(alerts))
        .route("/api/v1/alerts/{tenant}/{device}/{ts_ms}/{idx}", get(alert))
        .route("/api/v1/alerts/{tenant}/{device}/{ts_ms}/{idx}/ack", post(acknowledge))
        .route("/api/v1/degradation", get(degradation))
        .route("/api/v1/tenants", get(tenants))
        .route("/api/v1/events", get(events))
        .route("/api/v1/reports", get(report_weeks))
        .route("/api/v1/reports/{week}", get(report))
}

/// Lets a request through per [`super::ApiAccess`]: 401 without the right bearer token, 403 when
/// the API is closed.
pub async fn guard(
    State(state): State<ApiState>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    match &state.access {
        super::ApiAccess::Open => next.run(request).await,
        super::ApiAccess::Token(token) => {
            let given = request
                .headers()
                .get(axum::http::header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "));
            match given {
                Some(g) if same(g.as_bytes(), token.as_bytes()) => next.run(request).await,
                _ => ApiError(StatusCode::UNAUTHORIZED, "Authorization: Bearer <token> required".into())
                    .into_response(),
            }
        }
        super::ApiAccess::Refused => ApiError(
            StatusCode::FORBIDDEN,
            "the API is closed: the host listens beyond loopback without [http] token or token_env".into(),
        )
        .into_response(),
    }
}

/// Equal, in a time that does not depend on where they differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |d, (x, y)| d | (x ^ y)) == 0
}

/// Runs a store query on a blocking thread.
async fn query<T: Send + 'static>(
    state: &ApiState,
    f: impl FnOnce(&SqliteStore) -> rusqlite::Result<T> + Send + 'static,
) -> Result<T, ApiError> {
    let store: Arc<SqliteStore> = state
        .store
        .clone()
        .ok_or_else(|| ApiError(StatusCode::SERVICE_UNAVAILABLE, "this host keeps no store".into()))?;
    tokio::task::spawn_blocking(move || f(&store))
        .await
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, format!("query task: {e}")))?
        .map_err(|e| {
            tracing::warn!(error = %e, "API query failed");
            ApiError(StatusCode::INTERNAL_SERVER_ERROR, format!("store: {e}"))
        })
}

/// A time parameter: RFC 3339 (`2025-04-05T10:30:00Z`) or milliseconds since the epoch.
fn time(name: &str, value: Option<&String>) -> Result<Option<i64>, ApiError> {
    match value {
        None => Ok(None),
        Some(v) => match v.parse::<i64>() {
            Ok(ms) => Ok(Some(ms)),
            Err(_) => parse_rfc3339(v)
                .map(Some)
                .map_err(|e| bad(format!("{name}={v:?}: not RFC 3339 nor milliseconds ({e})"))),
        },
    }
}

fn number<T: std::str::FromStr>(name: &str, value: Option<&String>) -> Result<Option<T>, ApiError> {
    value.map(|v| v.parse::<T>().map_err(|_| bad(format!("{name}={v:?} is not a valid number")))).transpose()
}

/// Refuses parameters the endpoint does not take (a typo would otherwise be silently ignored).
fn only(params: &HashMap<String, String>, known: &[&str]) -> Result<(), ApiError> {
    match params.keys().find(|k| !known.contains(&k.as_str())) {
        Some(k) => Err(bad(format!("unknown parameter {k:?} (this endpoint takes {})", known.join(", ")))),
        None => Ok(()),
    }
}

pub(super) fn with_time(mut v: Value) -> Value {
    // Every `ts_ms` also as RFC 3339 `timestamp`, the form the published predictions use.
    match &mut v {
        Value::Object(m) => {
            if let Some(ts) = m.get("ts_ms").and_then(Value::as_i64) {
                m.insert("timestamp".into(), rfc3339(ts).into());
            }
            for (_, x) in m.iter_mut() {
                *x = with_time(std::mem::take(x));
            }
        }
        Value::Array(a) => {
            for x in a.iter_mut() {
                *x = with_time(std::mem::take(x));
            }
        }
        _ => {}
    }
    v
}

fn to_json(value: impl serde::Serialize) -> Answer {
    serde_json::to_value(value)
        .map(|v| Json(with_time(v)))
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
}

async fn devices(State(state): State<ApiState>, Query(p): Query<HashMap<String, String>>) -> Answer {
    only(&p, &["tenant"])?;
    let tenant = p.get("tenant").cloned();
    let devices = query(&state, move |s| s.devices(tenant.as_deref(), None)).await?;
    to_json(json!({ "devices": devices }))
}

async fn device(State(state): State<ApiState>, Path((tenant, device)): Path<(String, String)>) -> Answer {
    let (t, d) = (tenant.clone(), device.clone());
    let mut found = query(&state, move |s| s.devices(Some(&t), Some(&d))).await?;
    match found.pop() {
        Some(view) => to_json(view),
        None => Err(ApiError(StatusCode::NOT_FOUND, format!("no device {device:?} of tenant {tenant:?}"))),
    }
}

async fn predictions(
    State(state): State<ApiState>,
    Path((tenant, device)): Path<(String, String)>,
    Query(p): Query<HashMap<String, String>>,
) -> Answer {
    only(&p, &["from", "to", "max_points"])?;
    let to = time("to", p.get("to"))?.unwrap_or_else(crate::clock::now_ms);
    let from = time("from", p.get("from"))?.unwrap_or(to - 7 * 86_400_000);
    if from > to {
        return Err(bad(format!("from ({}) is after to ({})", rfc3339(from), rfc3339(to))));
    }
    let max_points = number::<u32>("max_points", p.get("max_points"))?.unwrap_or(DEFAULT_MAX_POINTS);
    if !(1..=100_000).contains(&max_points) {
        return Err(bad("max_points must be between 1 and 100000"));
    }
    let (t, d) = (tenant.clone(), device.clone());
    let series = query(&state, move |s| {
        if !s.has_device(&t, &d)? {
            return Ok(None);
        }
        s.prediction_series(&t, &d, from, to, max_points).map(Some)
    })
    .await?;
    match series {
        Some(series) => to_json(json!({"tenant": tenant, "device": device, "series": series})),
        None => Err(ApiError(StatusCode::NOT_FOUND, format!("no device {device:?} of tenant {tenant:?}"))),
    }
}

async fn alerts(State(state): State<ApiState>, Query(p): Query<HashMap<String, String>>) -> Answer {
    only(&p, &["tenant", "device", "severity", "acknowledged", "from", "to", "limit"])?;
    let acknowledged = match p.get("acknowledged").map(String::as_str) {
        None => None,
        Some("true") => Some(true),
        Some("false") => Some(false),
        Some(other) => return Err(bad(format!("acknowledged={other:?}: true or false"))),
    };
    let severity = p.get("severity").cloned();
    if let Some(s) = &severity
        && !matches!(s.as_str(), "info" | "warning" | "critical")
    {
        return Err(bad(format!("severity={s:?}: one of info, warning, critical")));
    }
    let limit = number::<u32>("limit", p.get("limit"))?.unwrap_or(DEFAULT_ALERTS);
    if !(1..=MAX_ALERTS).contains(&limit) {
        return Err(bad(format!("limit must be between 1 and {MAX_ALERTS}")));
    }
    let filter = AlertFilter {
        tenant: p.get("tenant").cloned(),
        device: p.get("device").cloned(),
        severity,
        from_ms: time("from", p.get("from"))?,
        to_ms: time("to", p.get("to"))?,
        acknowledged,
        idx: None,
        limit,
        oldest_first: false,
    };
    let alerts = query(&state, move |s| s.alerts(&filter)).await?;
    to_json(json!({ "alerts": alerts }))
}

/// Longest `by` and `note` of an acknowledgement, in characters.
const ACK_BY_MAX: usize = 100;
const ACK_NOTE_MAX: usize = 2000;

async fn alert(State(state): State<ApiState>, Path(key): Path<(String, String, i64, i64)>) -> Answer {
    let key = AlertKey { tenant: key.0, device: key.1, ts_ms: key.2, idx: key.3 };
    let id = format!("{}/{}/{}/{}", key.tenant, key.device, key.ts_ms, key.idx);
    match query(&state, move |s| s.alert(&key)).await? {
        Some(a) => to_json(a),
        None => Err(ApiError(StatusCode::NOT_FOUND, format!("no alert {id}"))),
    }
}

/// `POST .../ack` with `{"by": "...", "note": "..."}`: records who acknowledged the alert. The
/// write goes through the ingest loop, the store's only writer; the answer is the alert as
/// stored afterwards (409 if it had been acknowledged before: the first acknowledgement stands).
async fn acknowledge(
    State(state): State<ApiState>,
    Path(key): Path<(String, String, i64, i64)>,
    body: axum::body::Bytes,
) -> Answer {
    let v: Value = serde_json::from_slice(&body).map_err(|e| bad(format!("the body is not JSON: {e}")))?;
    let Some(fields) = v.as_object() else { return Err(bad("the body must be a JSON object")) };
    if let Some(k) = fields.keys().find(|k| !matches!(k.as_str(), "by" | "note")) {
        return Err(bad(format!("unknown field {k:?} (by, note)")));
    }
    let by = fields.get("by").and_then(Value::as_str).map(str::trim).unwrap_or_default().to_string();
    let note = match fields.get("note") {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(n)) => n.clone(),
        Some(_) => return Err(bad("note must be a string")),
    };
    if by.is_empty() || by.chars().count() > ACK_BY_MAX || by.chars().any(char::is_control) {
        return Err(bad(format!("by: who acknowledges, 1-{ACK_BY_MAX} characters, one line")));
    }
    if note.chars().count() > ACK_NOTE_MAX {
        return Err(bad(format!("note: at most {ACK_NOTE_MAX} characters")));
    }
    let Some(acks) = state.acks.clone() else {
        return Err(ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            "this host does not record acknowledgements".into(),
        ));
    };
    let key = AlertKey { tenant: key.0, device: key.1, ts_ms: key.2, idx: key.3 };
    let id = format!("{}/{}/{}/{}", key.tenant, key.device, key.ts_ms, key.idx);
    let (reply, answer) = tokio::sync::oneshot::channel();
    let stopped = || ApiError(StatusCode::SERVICE_UNAVAILABLE, "the host is stopping".into());
    acks.send(AckRequest { key: key.clone(), by, note, reply }).map_err(|_| stopped())?;
    // The loop answers between two batches; a store failing its transactions holds it longer.
    let outcome = tokio::time::timeout(std::time::Duration::from_secs(10), answer)
        .await
        .map_err(|_| ApiError(StatusCode::SERVICE_UNAVAILABLE, "the store is busy: try again".into()))?
        .map_err(|_| stopped())?
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, format!("store: {e}")))?;
    let stored = query(&state, move |s| s.alert(&key)).await?;
    match (outcome, stored) {
        (AckOutcome::NoSuchAlert, _) | (_, None) => {
            Err(ApiError(StatusCode::NOT_FOUND, format!("no alert {id}")))
        }
        (AckOutcome::Acknowledged, Some(a)) => to_json(a),
        (AckOutcome::AlreadyAcknowledged, Some(a)) => {
            let by = a.acknowledged.as_ref().map(|k| k.by.clone()).unwrap_or_default();
            Err(ApiError(StatusCode::CONFLICT, format!("alert {id} was acknowledged before, by {by}")))
        }
    }
}

async fn degradation(State(state): State<ApiState>, Query(p): Query<HashMap<String, String>>) -> Answer {
    only(&p, &["percent", "days", "feature", "min_windows", "as_of"])?;
    let d = DegradationQuery::default();
    let q = DegradationQuery {
        percent: number("percent", p.get("percent"))?.unwrap_or(d.percent),
        days: number("days", p.get("days"))?.unwrap_or(d.days),
        feature: p.get("feature").cloned().unwrap_or(d.feature),
        min_windows: number("min_windows", p.get("min_windows"))?.unwrap_or(d.min_windows),
        as_of_ms: time("as_of", p.get("as_of"))?,
    };
    if !(q.percent.is_finite() && q.days.is_finite() && q.days > 0.0) {
        return Err(bad("percent must be a number and days more than 0"));
    }
    let answer = query(&state, move |s| s.degradation(&q)).await?;
    to_json(answer)
}

async fn tenants(State(state): State<ApiState>) -> Answer {
    let host = &state.host;
    let tenants: Vec<Value> = host
        .tenant_names()
        .into_iter()
        .filter_map(|name| host.tenant(&name))
        .map(|t| {
            json!({"name": t.name, "window_size": t.window_size, "model": t.config.model,
                   "plugins": super::plugin_versions(&t)})
        })
        .collect();
    Ok(Json(json!({ "tenants": tenants })))
}

/// Most weeks `/api/v1/reports` lists (the newest).
const WEEKS_LISTED: usize = 104;

/// The weeks the stored predictions span, newest first: what a report can be made of.
async fn report_weeks(State(state): State<ApiState>) -> Answer {
    use crate::report::IsoWeek;
    let span = query(&state, |s| s.prediction_span()).await?;
    let mut weeks = Vec::new();
    if let Some((oldest, newest)) = span {
        let mut start = IsoWeek::containing(newest).start_ms();
        let first = IsoWeek::containing(oldest).start_ms();
        while start >= first && weeks.len() < WEEKS_LISTED {
            let week = IsoWeek::containing(start);
            weeks.push(json!({"week": week.to_string(), "from_ms": start, "to_ms": week.end_ms(),
                              "href": format!("/api/v1/reports/{week}")}));
            start -= 7 * 86_400_000;
        }
    }
    Ok(Json(json!({ "weeks": weeks })))
}

/// The weekly report of `{week}` (`2025-W14`, `.pdf` optional) as a PDF download.
async fn report(State(state): State<ApiState>, Path(week): Path<String>) -> Result<Response, ApiError> {
    let week: crate::report::IsoWeek = week.strip_suffix(".pdf").unwrap_or(&week).parse().map_err(bad)?;
    let store = state
        .store
        .clone()
        .ok_or_else(|| ApiError(StatusCode::SERVICE_UNAVAILABLE, "this host keeps no store".into()))?;
    let pdf = tokio::task::spawn_blocking(move || {
        crate::report::WeekReport::gather(&store, week, crate::clock::now_ms())
            .map_err(anyhow::Error::from)
            .and_then(|r| r.render())
    })
    .await
    .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, format!("report task: {e}")))?
    .map_err(|e| {
        tracing::warn!(error = %e, %week, "weekly report failed");
        ApiError(StatusCode::INTERNAL_SERVER_ERROR, format!("report: {e:#}"))
    })?;
    let disposition = format!("attachment; filename=\"edgepm-report-{week}.pdf\"");
    Ok((
        [
            (axum::http::header::CONTENT_TYPE, "application/pdf".to_string()),
            (axum::http::header::CONTENT_DISPOSITION, disposition),
        ],
        pdf,
    )
        .into_response())
}

async fn events(State(state): State<ApiState>) -> Response {
    match &state.events {
        Some(events) => events.stream().into_response(),
        None => ApiError(StatusCode::SERVICE_UNAVAILABLE, "this host keeps no store".into()).into_response(),
    }
}
