//! Telemetry in: topic and payload decoding with limits ([`decode`], from `edgepm-core`), the batch of messages the
//! host stores and turns into windows and predictions ([`batch`]), and the MQTT session that
//! feeds it and acknowledges each message only after its batch is committed ([`mqtt`]).

pub mod batch;
pub mod mqtt;
pub mod run;

/// Decoding lives in `edgepm-core` (no I/O, fuzzed on its own); re-exported where it is used.
pub mod decode {
    pub use edgepm_core::decode::*;
}

pub use batch::{BatchReport, DEVICE_IDLE_MS, Ingestor, MAX_DEVICE_STATES, Message, Outputs, WindowBudget};
pub use edgepm_core::decode::{Limits, Reject, decode};
pub use edgepm_core::types::{Reading, Samples};
