//! WebAssembly glue: the `scorer` world.

use crate::{DEFAULT_THRESHOLD, Explain};
use edgepm_sdk::scorer::{Features, Guest, Score, host, model, setting};

struct ModelScore;

impl Guest for ModelScore {
    fn score(f: Features) -> Result<Score, String> {
        let name = host::config("model").unwrap_or_default();
        let explain = Explain::parse(host::config("explain").as_deref());
        let first = model::predict(&name, &f, explain == Explain::Always)?;
        let threshold = setting("threshold").unwrap_or(DEFAULT_THRESHOLD);
        if explain.wants_rerun(first.probability, threshold) {
            return model::predict(&name, &f, true);
        }
        Ok(first)
    }
}

edgepm_sdk::scorer::export!(ModelScore);
