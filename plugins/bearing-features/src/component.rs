//! WebAssembly glue: the `preprocessor` world over [`crate::compute`].

use edgepm_sdk::preprocessor::{Features, Guest, Window, setting};

struct BearingFeatures;

impl Guest for BearingFeatures {
    fn window_size() -> u32 {
        setting("window_size").unwrap_or(crate::DEFAULT_WINDOW_SIZE)
    }

    fn features(w: Window) -> Result<Features, String> {
        let channels: Vec<crate::Channel<'_>> = w
            .channels
            .iter()
            .map(|c| crate::Channel {
                name: &c.name,
                samples: &c.samples,
                samples_per_reading: c.samples_per_reading,
            })
            .collect();
        let window = crate::Window { timestamps_ms: &w.timestamps_ms, channels: &channels };
        let mut values = Vec::with_capacity(crate::FEATURE_NAMES.len());
        crate::compute(&window, &mut values)?;
        Ok(Features { names: crate::FEATURE_NAMES.iter().map(|n| n.to_string()).collect(), values })
    }
}

edgepm_sdk::preprocessor::export!(BearingFeatures);
