//! Telemetry in: topic and payload decoding with limits. The MQTT session (rumqttc, QoS 1,
//! manual acks after commit) will live beside it in this folder.

pub mod decode;

pub use decode::{Limits, Reading, Reject, Samples, decode};
