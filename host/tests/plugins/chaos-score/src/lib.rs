//! A scorer that returns invalid scores on demand, for the host's tests only.
//!
//! Tenant settings: `chaos_probability` — the probability to return (`nan`, `inf`, `-inf` or any
//! number, e.g. `-0.1`, `1.5`); `chaos_contribution` — the value of one contribution (`nan`,
//! `inf`); `chaos_device`, when set, limits the misbehaviour to that device's windows (the
//! scorer sees no device, so it reads the `device_hash` feature the chaos preprocessor adds, or
//! misbehaves on every window when there is none). Otherwise the probability is 0.1.

#[cfg(target_arch = "wasm32")]
mod component {
    use edgepm_sdk::scorer::{Contribution, Features, Guest, Score, host};

    struct Chaos;

    fn number(text: &str) -> Option<f32> {
        match text.trim() {
            "nan" => Some(f32::NAN),
            "inf" => Some(f32::INFINITY),
            "-inf" => Some(f32::NEG_INFINITY),
            other => other.parse().ok(),
        }
    }

    impl Guest for Chaos {
        fn score(f: Features) -> Result<Score, String> {
            let targeted = f.get("chaos_targeted").is_none_or(|v| v > 0.5);
            let mut score = Score { probability: 0.1, model: "chaos".into(), contributions: vec![] };
            if !targeted {
                return Ok(score);
            }
            if let Some(p) = host::config("chaos_probability").as_deref().and_then(number) {
                score.probability = p;
            }
            if let Some(v) = host::config("chaos_contribution").as_deref().and_then(number) {
                score.contributions.push(Contribution { feature: "vibration_rms".into(), value: v });
            }
            Ok(score)
        }
    }

    edgepm_sdk::scorer::export!(Chaos);
}
