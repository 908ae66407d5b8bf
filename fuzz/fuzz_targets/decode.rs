//! Telemetry decoding on arbitrary input: it never panics; a reject names a reason; an accepted
//! reading respects every limit and agrees with the topic; and the hand-written fast path agrees
//! with the general (serde_json) path on every message it decodes.
//!
//! Input: one byte picks the topic (a valid telemetry topic most of the time, else the bytes up
//! to the first newline), the rest is the payload.
#![no_main]

use edgepm_core::decode::{Limits, decode, decode_asset, decode_general, parse_asset_topic};
use edgepm_core::types::Samples;
use libfuzzer_sys::fuzz_target;

/// 2025-04-05T10:30:00Z, the host clock of every run.
const NOW_MS: i64 = 1_743_849_000_000;
const TOPIC: &str = "edgepm/acme/MTR-042/telemetry";

fuzz_target!(|data: &[u8]| {
    let Some((&pick, rest)) = data.split_first() else { return };
    let (topic, payload) = if pick < 224 {
        (TOPIC.to_string(), rest)
    } else {
        let cut = rest.iter().position(|&b| b == b'\n').unwrap_or(rest.len());
        let payload = rest.get(cut + 1..).unwrap_or_default();
        (String::from_utf8_lossy(&rest[..cut]).into_owned(), payload)
    };
    // Small limits reach the limit checks with small inputs.
    let limits = if pick % 2 == 0 {
        Limits::default()
    } else {
        Limits { max_payload_bytes: 512, max_channels: 3, max_samples: 8, ..Limits::default() }
    };
    let decoded = decode(&topic, payload, &limits, NOW_MS);
    match &decoded {
        Ok(r) => {
            assert!(payload.len() <= limits.max_payload_bytes);
            assert_eq!(topic, format!("edgepm/{}/{}/telemetry", r.tenant, r.device));
            assert!(r.ts_ms - NOW_MS <= limits.max_future_ms && NOW_MS - r.ts_ms <= limits.max_age_ms);
            assert!(!r.channels.is_empty() && r.channels.len() <= limits.max_channels);
            assert!(r.channels.windows(2).all(|w| w[0].0 < w[1].0), "channels sorted, unique");
            for (name, samples) in &r.channels {
                assert!(!["ts", "seq", "tenant", "device"].contains(&name.as_str()));
                match samples {
                    Samples::Scalar(x) => assert!(x.is_finite()),
                    Samples::Burst(xs) => {
                        assert!(!xs.is_empty() && xs.len() <= limits.max_samples);
                        assert!(xs.iter().all(|x| x.is_finite()));
                    }
                }
            }
        }
        Err(reject) => assert!(!reject.reason().is_empty() && !reject.to_string().is_empty()),
    }
    // The fast path may decline a message, never decode it differently.
    let general = decode_general(&topic, payload, &limits, NOW_MS);
    if decoded.is_ok() || general.is_ok() {
        assert_eq!(decoded, general, "fast and general paths disagree");
    }
    let _ = parse_asset_topic(&topic);
    if let Err(reject) = decode_asset(payload) {
        assert!(!reject.reason().is_empty());
    }
});
