//! Predictions, alerts and dead letters published with QoS 1 on the publishing session
//! (`<client_id>-out`, a clean session). A publication is delivered when the broker acknowledged
//! its own packet: [`publish_session`] is the only task that hands publications to the MQTT
//! client, and it drives the client's event loop itself, so it can match each request to the
//! packet id rumqttc gave it (`Outgoing::Publish(pkid)`, emitted in request order) and each
//! `PubAck(pkid)` to that request. When the connection drops, everything not yet acknowledged
//! fails (and is retried by the driver) and nothing of the old connection — buffered
//! acknowledgements, packet ids, requests rumqttc would carry over — reaches the next one: an
//! acknowledgement can only settle the publication it belongs to.

use super::{Delivery, Outcome, Sink};
use crate::ingest::mqtt::Backoff;
use crate::shutdown::{Shutdown, Stage};
use crate::store::{MessageKind, OutboxItem};
use rumqttc::{AsyncClient, Event, EventLoop, Outgoing, Packet, QoS};
use std::collections::{HashMap, VecDeque};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{info, warn};

/// How long the broker may take to acknowledge a publication.
pub const ACK_TIMEOUT: Duration = Duration::from_secs(10);
/// Publications handed to the client and not yet given a packet id, at most (below the client's
/// request channel capacity, so handing one over never waits).
const UNSENT_MAX: usize = 2048;
/// Capacity of the client's request channel ([`crate::ingest::mqtt::client`]).
pub const CLIENT_CAPACITY: usize = 4096;

/// One publication for the session, and where its result goes.
pub struct PublishRequest {
    pub topic: String,
    pub payload: Vec<u8>,
    pub done: oneshot::Sender<Result<(), String>>,
}

/// The sink's side of the publishing session.
pub struct MqttSink {
    requests: mpsc::Sender<PublishRequest>,
    connected: watch::Receiver<bool>,
    /// Larger publications (topic and payload) are dead-lettered (`[mqtt] max_publish_bytes`).
    max_publish_bytes: usize,
}

impl MqttSink {
    /// A sink publishing through the session that reads `requests` and reports `connected`.
    pub fn new(
        requests: mpsc::Sender<PublishRequest>,
        connected: watch::Receiver<bool>,
        max_publish_bytes: usize,
    ) -> MqttSink {
        MqttSink { requests, connected, max_publish_bytes }
    }
}

/// What a publication's result channel said, as an outcome.
enum Pending {
    Now(Outcome),
    Ack(oneshot::Receiver<Result<(), String>>),
}

impl Sink for MqttSink {
    fn name(&self) -> &'static str {
        "mqtt"
    }
    fn kind(&self) -> MessageKind {
        MessageKind::Publication
    }
    /// Eight batches of 512 under way: at 10k readings/s, waiting for each batch's
    /// acknowledgements before sending the next held predictions back tens of milliseconds.
    fn concurrency(&self) -> usize {
        8
    }
    fn ready(&self) -> bool {
        *self.connected.borrow()
    }
    fn readiness(&self) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + 'static>> {
        let mut connected = self.connected.clone();
        Box::pin(async move {
            let _ = connected.changed().await;
        })
    }

    fn deliver(&mut self, batch: &[OutboxItem]) -> Delivery {
        let max = self.max_publish_bytes;
        let pending: Vec<Pending> = batch
            .iter()
            .map(|item| {
                let bytes = item.target.len() + item.payload.len();
                if bytes > max {
                    return Pending::Now(Outcome::Permanent(format!(
                        "{bytes} bytes, more than max_publish_bytes = {max}"
                    )));
                }
                let (done, ack) = oneshot::channel();
                let request =
                    PublishRequest { topic: item.target.clone(), payload: item.payload.clone(), done };
                match self.requests.try_send(request) {
                    Ok(()) => Pending::Ack(ack),
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        Pending::Now(Outcome::retry("the publishing session's queue is full"))
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => {
                        Pending::Now(Outcome::retry("the publishing session has stopped"))
                    }
                }
            })
            .collect();
        Box::pin(async move {
            let deadline = tokio::time::Instant::now() + ACK_TIMEOUT;
            let mut outcomes = Vec::with_capacity(pending.len());
            for p in pending {
                outcomes.push(match p {
                    Pending::Now(o) => o,
                    Pending::Ack(ack) => match tokio::time::timeout_at(deadline, ack).await {
                        Ok(Ok(Ok(()))) => Outcome::Delivered,
                        Ok(Ok(Err(e))) => Outcome::retry(e),
                        Ok(Err(_)) => Outcome::retry("the publishing session has stopped"),
                        Err(_) => {
                            Outcome::retry(format!("no acknowledgement within {} s", ACK_TIMEOUT.as_secs()))
                        }
                    },
                });
            }
            outcomes
        })
    }
}

/// Drives the publishing session until the shutdown's [`Stage::Output`]: hands the sink's publications to the client while
/// connected, settles each on its own acknowledgement, reconnects with back-off (with jitter).
pub async fn publish_session(
    mut eventloop: EventLoop,
    client: AsyncClient,
    mut requests: mpsc::Receiver<PublishRequest>,
    connected: watch::Sender<bool>,
    shutdown: Shutdown,
) {
    let stop = shutdown.wait(Stage::Output);
    tokio::pin!(stop);
    let mut backoff = Backoff::new();
    let mut up = false;
    // Handed to the client, waiting for their packet id (in the order handed over).
    let mut unsent: VecDeque<oneshot::Sender<Result<(), String>>> = VecDeque::new();
    // Sent, waiting for the acknowledgement of their packet id.
    let mut in_flight: HashMap<u16, oneshot::Sender<Result<(), String>>> = HashMap::new();
    let mut open = true;
    'session: loop {
        // The poll is never cancelled by a request (a cancelled poll may drop a packet rumqttc
        // already counts as sent): requests are handed over while it is pending.
        let event = {
            let poll = eventloop.poll();
            tokio::pin!(poll);
            loop {
                tokio::select! {
                    biased;
                    _ = &mut stop => break 'session,
                    e = &mut poll => break e,
                    r = requests.recv(), if open && up && unsent.len() < UNSENT_MAX => match r {
                        Some(PublishRequest { topic, payload, done }) => {
                            match client.try_publish(topic, QoS::AtLeastOnce, false, payload) {
                                Ok(()) => unsent.push_back(done),
                                Err(e) => { let _ = done.send(Err(format!("publishing: {e}"))); }
                            }
                        }
                        None => open = false,
                    },
                }
            }
        };
        match event {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                backoff.reset();
                up = true;
                connected.send_replace(true);
                info!("MQTT publishing session connected");
            }
            Ok(Event::Outgoing(Outgoing::Publish(pkid))) => {
                if let Some(done) = unsent.pop_front()
                    && let Some(earlier) = in_flight.insert(pkid, done)
                {
                    let _ = earlier.send(Err(format!("packet id {pkid} reused before its acknowledgement")));
                }
            }
            Ok(Event::Incoming(Packet::PubAck(ack))) => {
                if let Some(done) = in_flight.remove(&ack.pkid) {
                    let _ = done.send(Ok(()));
                }
            }
            Ok(_) => {}
            Err(e) => {
                up = false;
                connected.send_replace(false);
                let reason = format!("connection lost before the broker acknowledged: {e}");
                for done in unsent.drain(..).chain(in_flight.drain().map(|(_, d)| d)) {
                    let _ = done.send(Err(reason.clone()));
                }
                // A clean session: nothing of this connection may reach the next. rumqttc keeps
                // events it buffered (acknowledgements read before the error, packet ids of
                // publications it failed to write) and would hand them out after the next
                // ConnAck, where they would settle the wrong publications.
                eventloop.state.events.clear();
                eventloop.state.collision = None;
                eventloop.pending.clear();
                let wait = backoff.next();
                warn!(error = %e, retry_in_ms = wait.as_millis() as u64, "MQTT publishing session lost");
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = &mut stop => break 'session,
                }
            }
        }
    }
    connected.send_replace(false);
    for done in unsent.drain(..).chain(in_flight.drain().map(|(_, d)| d)) {
        let _ = done.send(Err("the publishing session stopped".to_string()));
    }
}
