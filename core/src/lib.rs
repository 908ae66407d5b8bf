//! The bottom of edgepm: what every other part speaks and nothing of it depends on.
//!
//! - [`types`]: the domain types — readings, windows, features, scores, decisions, stages.
//! - [`decode`]: one telemetry message (topic and payload) into a [`types::Reading`], under
//!   limits, never panicking; every refusal has a reason.
//! - [`validate`]: the checks of everything a plugin returns, before the host uses it.
//! - [`topics`]: the topic grammar (`edgepm/<tenant>/<device>/<leaf>`), built and parsed.
//! - [`clock`]: the host's clock and its time format (RFC 3339 UTC).
//!
//! No I/O and no runtime here: this crate builds in seconds, so it is fuzzed on its own
//! (`scripts/fuzz.sh`).

pub mod clock;
pub mod decode;
pub mod topics;
pub mod types;
pub mod validate;
