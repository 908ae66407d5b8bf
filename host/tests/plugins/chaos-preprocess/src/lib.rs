//! A preprocessor that returns invalid features or window sizes on demand, for the host's tests
//! only.
//!
//! Tenant settings: `chaos_window_size` — what `window-size` returns (default 32, any u32);
//! `chaos_features` — `mismatch` (more names than values), `duplicate` (a name twice), `many`
//! (100,000 features), `inf` (an infinite value) or unset (two valid features);
//! `chaos_device`, when set, limits the misbehaviour to that device. Every valid output carries
//! `chaos_targeted` (1 for the targeted device, else 0) for the chaos scorer.

#[cfg(target_arch = "wasm32")]
mod component {
    use edgepm_sdk::preprocessor::{Features, Guest, Window, host};

    struct Chaos;

    impl Guest for Chaos {
        fn window_size() -> u32 {
            host::config("chaos_window_size").and_then(|v| v.trim().parse().ok()).unwrap_or(32)
        }

        fn features(w: Window) -> Result<Features, String> {
            let targeted = host::config("chaos_device").is_none_or(|d| d == w.device);
            let mut f = Features::with_capacity(3);
            f.push("vibration_rms", w.channels.first().map_or(0.0, |c| c.samples.len() as f32));
            f.push("chaos_targeted", if targeted { 1.0 } else { 0.0 });
            if !targeted {
                return Ok(f);
            }
            match host::config("chaos_features").as_deref() {
                Some("mismatch") => f.names.push("orphan".into()),
                Some("duplicate") => f.push("vibration_rms", 1.0),
                Some("inf") => f.push("infinite", f32::INFINITY),
                Some("many") => {
                    for i in 0..100_000 {
                        f.push(format!("f{i}"), 0.0);
                    }
                }
                _ => {}
            }
            Ok(f)
        }
    }

    edgepm_sdk::preprocessor::export!(Chaos);
}
