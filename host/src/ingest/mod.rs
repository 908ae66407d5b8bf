//! Telemetry in: topic and payload decoding with limits ([`decode`]), the batch of messages the
//! host stores and turns into windows and predictions ([`batch`]), and the MQTT session that
//! feeds it and acknowledges each message only after its batch is committed ([`mqtt`]).

pub mod batch;
pub mod decode;
pub mod mqtt;

pub use batch::{BatchReport, DEVICE_IDLE_MS, Ingestor, MAX_DEVICE_STATES, Message};
pub use decode::{Limits, Reading, Reject, Samples, decode};
