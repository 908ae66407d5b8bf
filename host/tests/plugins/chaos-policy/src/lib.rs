//! A policy plugin that misbehaves on demand, for the host's tests only.
//!
//! Tenant settings: `chaos` = `loop` (never returns), `oom` (allocates without bound), `trap`
//! (panics), `error` (returns an error) or unset (behaves: failure above 0.5, no alerts);
//! `chaos_device`, when set, limits the misbehaviour to that device, so the version passes the
//! host's smoke call and misbehaves later on real windows.

#[cfg(target_arch = "wasm32")]
mod component {
    use edgepm_sdk::policy::{Decision, Features, Guest, Score, host};

    struct Chaos;

    impl Guest for Chaos {
        fn decide(device: String, _ts_ms: i64, _f: Features, s: Score) -> Result<Decision, String> {
            let targeted = host::config("chaos_device").is_none_or(|d| d == device);
            match host::config("chaos").as_deref() {
                Some("loop") if targeted => loop {
                    std::hint::black_box(&device);
                },
                Some("oom") if targeted => {
                    let mut hoard: Vec<Vec<u8>> = Vec::new();
                    loop {
                        hoard.push(vec![1u8; 1 << 20]);
                        std::hint::black_box(&hoard);
                    }
                }
                Some("trap") if targeted => panic!("chaos: deliberate trap for {device}"),
                Some("error") if targeted => Err(format!("chaos: deliberate error for {device}")),
                _ => Ok(Decision { is_failure: s.probability > 0.5, alerts: vec![] }),
            }
        }
    }

    edgepm_sdk::policy::export!(Chaos);
}
