//! WebAssembly glue: the `preprocessor` world (`edgepm:plugin@0.2.0`) over [`crate::compute`].

use edgepm_sdk::preprocessor::{Features, Guest, Window, setting};

struct BearingSpectrum;

impl Guest for BearingSpectrum {
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
                sample_rate_hz: c.sample_rate_hz,
                unit: c.unit.as_deref(),
            })
            .collect();
        let asset: Vec<(String, String)> = w.asset.iter().map(|a| (a.key.clone(), a.value.clone())).collect();
        let window = crate::Window { timestamps_ms: &w.timestamps_ms, channels: &channels, asset: &asset };
        let values = crate::compute(&window, |feature| w.baseline(feature))?;
        let readings = (values.len() - crate::FEATURE_NAMES.len()) / crate::SEQUENCE.len();
        Ok(Features { names: crate::feature_names(readings), values })
    }
}

edgepm_sdk::preprocessor::export!(BearingSpectrum);
