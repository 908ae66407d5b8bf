//! The floor of the publish → prediction latency benchmark on this machine: an MQTT client that
//! does nothing but answer. It subscribes to the telemetry like the host (QoS 1, acknowledged at
//! once), and for every `hop`-th reading of a device publishes a prediction-shaped message
//! (`device`, `timestamp` = the reading's time) — no decoding beyond the timestamp, no store, no
//! plugins, no model. Driven by `edgepm simulate --measure-latency` exactly as the host is, its
//! p50/p99 are what the broker, the simulator and the scheduler of the shared cores cost by
//! themselves (run by `scripts/bench/telemetry.sh` next to the host's latency runs).
//!
//! `cargo run --release --example latency_floor -- mqtt://127.0.0.1:1883 [hop]`

use rumqttc::{Event, Packet, QoS};
use std::collections::HashMap;

#[derive(serde::Deserialize)]
struct Ts {
    ts: i64,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let url = args.next().unwrap_or_else(|| "mqtt://127.0.0.1:1883".to_string());
    let hop: u64 = args.next().map(|h| h.parse()).transpose()?.unwrap_or(8).max(1);
    let config = edgepm::ingest::mqtt::MqttConfig::new(url);
    let mut options = config.options("edgepm-latency-floor", true)?;
    options.set_manual_acks(true);
    let (client, mut eventloop) = edgepm::ingest::mqtt::client(options, 65_536);
    client.subscribe(edgepm::topics::TELEMETRY_FILTER, QoS::AtLeastOnce).await?;
    let mut seen: HashMap<String, u64> = HashMap::new();
    eprintln!("latency floor: answering every {hop}th reading of each device");
    loop {
        match eventloop.poll().await {
            Ok(Event::Incoming(Packet::Publish(p))) => {
                client.ack(&p).await?;
                let Some(device_topic) = p.topic.strip_suffix("/telemetry") else { continue };
                let n = seen.entry(device_topic.to_string()).or_default();
                *n += 1;
                if !n.is_multiple_of(hop) {
                    continue;
                }
                let Ok(Ts { ts }) = serde_json::from_slice::<Ts>(&p.payload) else { continue };
                let device = device_topic.rsplit('/').next().unwrap_or_default();
                let body = serde_json::json!({
                    "device": device,
                    "timestamp": edgepm::clock::rfc3339(ts),
                    "is_failure": false,
                    "probability": 0.0,
                });
                client
                    .publish(format!("{device_topic}/prediction"), QoS::AtLeastOnce, false, body.to_string())
                    .await?;
            }
            Ok(_) => {}
            Err(e) => {
                eprintln!("latency floor: {e}; reconnecting");
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
        }
    }
}
