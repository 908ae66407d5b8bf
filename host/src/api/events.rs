//! `GET /api/v1/events`: server-sent events for new predictions and alerts, so a dashboard
//! updates without reloading. One task per host watches the store (a read-only connection,
//! every [`POLL`]) for rows committed since it last looked and hands them to every open stream;
//! while nobody listens it reads nothing (a stream gets what is committed from its first look
//! on, within [`POLL`] of connecting). Events:
//! `prediction` (`{tenant, device, ts_ms, timestamp, probability, is_failure, model}`), `alert`
//! (an alert as `/api/v1/alerts` shows it) and `lagged` (`{missed}`: a client too slow to keep up
//! lost that many events and should re-read the API). Streams end when the host stops.

use crate::store::SqliteStore;
use axum::response::sse::{Event, KeepAlive, Sse};
use serde_json::Value;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{broadcast, watch};

/// How often the store is looked at.
pub const POLL: Duration = Duration::from_millis(250);
/// Events kept for a slow client before it lags.
const BACKLOG: usize = 1024;
/// Rows read per look.
const BATCH: u32 = 500;

/// The events of one host: subscribe for a stream.
#[derive(Clone)]
pub struct Events {
    tx: broadcast::Sender<(&'static str, Arc<str>)>,
    stopped: watch::Receiver<bool>,
}

impl Events {
    /// Starts watching `store` on `runtime` until `stopped` turns true.
    pub fn start(
        runtime: &tokio::runtime::Handle,
        store: Arc<SqliteStore>,
        stopped: watch::Receiver<bool>,
    ) -> Events {
        let (tx, _) = broadcast::channel(BACKLOG);
        let events = Events { tx: tx.clone(), stopped: stopped.clone() };
        runtime.spawn(watch_store(store, tx, stopped));
        events
    }

    /// An SSE response streaming every event from now on.
    pub fn stream(&self) -> Sse<impl futures_util::Stream<Item = Result<Event, Infallible>> + use<>> {
        let state = (self.tx.subscribe(), self.stopped.clone());
        let stream = futures_util::stream::unfold(state, |(mut rx, mut stopped)| async move {
            if *stopped.borrow() {
                return None;
            }
            let next = tokio::select! {
                next = rx.recv() => next,
                _ = stopped.changed() => return None,
            };
            let event = match next {
                Ok((kind, data)) => Event::default().event(kind).data(&*data),
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    Event::default().event("lagged").data(format!("{{\"missed\": {n}}}"))
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            };
            Some((Ok(event), (rx, stopped)))
        });
        Sse::new(stream).keep_alive(KeepAlive::default())
    }
}

async fn watch_store(
    store: Arc<SqliteStore>,
    tx: broadcast::Sender<(&'static str, Arc<str>)>,
    mut stopped: watch::Receiver<bool>,
) {
    let (mut predictions, mut alerts): (Option<i64>, Option<i64>) = (None, None);
    loop {
        if tx.receiver_count() == 0 {
            // Nobody listening: no reads; the next listener's first look starts from the newest
            // rows (`None`).
            (predictions, alerts) = (None, None);
        } else {
            read_new(&store, &tx, &mut predictions, &mut alerts).await;
        }
        tokio::select! {
            _ = tokio::time::sleep(POLL) => {}
            _ = stopped.changed() => return,
        }
        if *stopped.borrow() {
            return;
        }
    }
}

/// Sends the rows committed after the cursors (`None`: only moves them to the newest rows).
async fn read_new(
    store: &Arc<SqliteStore>,
    tx: &broadcast::Sender<(&'static str, Arc<str>)>,
    predictions: &mut Option<i64>,
    alerts: &mut Option<i64>,
) {
    let (from_p, from_a, store) = (*predictions, *alerts, store.clone());
    let read = tokio::task::spawn_blocking(move || {
        let p = store.predictions_after(from_p, BATCH)?;
        let a = store.alerts_after(from_a, BATCH)?;
        Ok::<_, rusqlite::Error>((p, a))
    })
    .await;
    match read {
        Ok(Ok(((last_p, new_p), (last_a, new_a)))) => {
            *predictions = Some(last_p);
            *alerts = Some(last_a);
            for p in new_p {
                let _ = tx.send(("prediction", json_text(p)));
            }
            for a in new_a {
                if let Ok(v) = serde_json::to_value(a) {
                    let _ = tx.send(("alert", json_text(v)));
                }
            }
        }
        Ok(Err(e)) => tracing::warn!(error = %e, "Event stream: reading the store failed; trying again"),
        Err(e) => tracing::warn!(error = %e, "Event stream: the store read did not finish"),
    }
}

/// JSON text of `v` with every `ts_ms` also as RFC 3339 `timestamp`, as the API answers.
fn json_text(v: Value) -> Arc<str> {
    super::v1::with_time(v).to_string().into()
}
