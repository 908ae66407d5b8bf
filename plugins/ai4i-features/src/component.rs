//! WebAssembly glue: the `preprocessor` world over [`crate::compute`].

use edgepm_sdk::preprocessor::{Features, Guest, Window, setting};

struct Ai4iFeatures;

impl Guest for Ai4iFeatures {
    fn window_size() -> u32 {
        setting("window_size").unwrap_or(crate::DEFAULT_WINDOW_SIZE)
    }

    fn features(w: Window) -> Result<Features, String> {
        let newest = |name: &str| -> f32 {
            w.channels
                .iter()
                .find(|c| c.name == name)
                .and_then(|c| c.samples.last().copied())
                .unwrap_or(f32::NAN)
        };
        if crate::CHANNELS.iter().all(|c| newest(c).is_nan()) {
            return Err(format!("the window has none of the channels {:?}", crate::CHANNELS));
        }
        let values = crate::CHANNELS.map(newest);
        let quality = crate::quality(w.asset("Type"));
        let features = crate::compute(quality, values);
        Ok(Features {
            names: crate::FEATURE_NAMES.iter().map(|n| n.to_string()).collect(),
            values: features.to_vec(),
        })
    }
}

edgepm_sdk::preprocessor::export!(Ai4iFeatures);
