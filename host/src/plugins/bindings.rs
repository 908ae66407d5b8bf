//! Generated bindings of the three worlds, the host side of the imports, and conversions between
//! generated types and the host's domain types. Generated types do not leave `plugins/`.
//!
//! The host serves every released version of the contract: the current one (`wit/plugin.wit`,
//! modules [`preprocessor`], [`scorer`], [`policy`]) and `edgepm:plugin@0.1.0`
//! (`wit/v0.1.0/plugin.wit`, module [`v0_1`]). Within a version, the `types`, `host` and
//! `history` interfaces are generated once (with the preprocessor world) and shared by the other
//! worlds through `with`, so each import has exactly one implementation per version; the
//! implementations of both versions are one macro ([`imports!`]).
//!
//! Scorers and policies of 0.1.0 export the same types as 0.2.0, so the host calls them through
//! the 0.2.0 bindings (the linker holds both versions' imports); a 0.1.0 preprocessor's window has
//! channels without a sample rate or unit, so it has bindings of its own.

use super::instance::StoreState;
use crate::types;
use tracing::Level as TLevel;

pub mod preprocessor {
    wasmtime::component::bindgen!({ path: "../wit", world: "preprocessor" });
}

pub mod scorer {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "scorer",
        with: {
            "edgepm:plugin/types": super::preprocessor::edgepm::plugin::types,
            "edgepm:plugin/host": super::preprocessor::edgepm::plugin::host,
        },
    });
}

pub mod policy {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "policy",
        with: {
            "edgepm:plugin/types": super::preprocessor::edgepm::plugin::types,
            "edgepm:plugin/host": super::preprocessor::edgepm::plugin::host,
            "edgepm:plugin/history": super::preprocessor::edgepm::plugin::history,
        },
    });
}

/// `edgepm:plugin@0.1.0`, the first released contract.
pub mod v0_1 {
    pub mod preprocessor {
        wasmtime::component::bindgen!({ path: "../wit/v0.1.0", world: "preprocessor" });
    }

    pub mod scorer {
        wasmtime::component::bindgen!({
            path: "../wit/v0.1.0",
            world: "scorer",
            with: {
                "edgepm:plugin/types": super::preprocessor::edgepm::plugin::types,
                "edgepm:plugin/host": super::preprocessor::edgepm::plugin::host,
            },
        });
    }

    pub mod policy {
        wasmtime::component::bindgen!({
            path: "../wit/v0.1.0",
            world: "policy",
            with: {
                "edgepm:plugin/types": super::preprocessor::edgepm::plugin::types,
                "edgepm:plugin/host": super::preprocessor::edgepm::plugin::host,
            },
        });
    }
}

/// Log lines a plugin may write per call; more are dropped (a plugin must not flood the log).
pub const LOG_LINES_PER_CALL: u32 = 16;
/// Longest log line kept, in bytes.
const LOG_LINE_MAX: usize = 1024;

/// The imports, once, on the host's own types: every version's generated traits call these.
impl StoreState {
    fn log(&mut self, level: TLevel, message: String) {
        if self.logs_left == 0 {
            return;
        }
        self.logs_left -= 1;
        let mut message = message;
        if message.len() > LOG_LINE_MAX {
            let mut cut = LOG_LINE_MAX;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
        }
        let c = &self.ctx;
        macro_rules! emit {
            ($lvl:expr) => {
                tracing::event!(target: "edgepm::plugin", $lvl, tenant = %c.tenant, stage = %c.stage,
                    version = %c.version, "{message}")
            };
        }
        match level {
            TLevel::TRACE => emit!(TLevel::TRACE),
            TLevel::DEBUG => emit!(TLevel::DEBUG),
            TLevel::INFO => emit!(TLevel::INFO),
            TLevel::WARN => emit!(TLevel::WARN),
            _ => emit!(TLevel::ERROR),
        }
    }

    fn predict(
        &mut self,
        name: String,
        features: types::Features,
        explain: bool,
    ) -> Result<types::Score, String> {
        let config = &self.ctx.config;
        let name = if name.is_empty() { config.model.as_str() } else { name.as_str() };
        if !config.allows_model(name) {
            return Err(crate::model::ModelError::NotAllowed(name.to_string()).to_string());
        }
        let model = self.ctx.models.get(name).map_err(|e| e.to_string())?;
        if let Err(e) = super::validate::features(&features, &config.limits.output()) {
            self.violation.get_or_insert_with(|| format!("predict: {e}"));
            return Err(e);
        }
        let row = crate::model::arrange(model.as_ref(), &features).map_err(|e| e.to_string())?;
        if !explain && let Some(p) = self.prefetched.take_if(|p| p.answers(model.id(), &row)) {
            return Ok(types::Score {
                probability: p.probability,
                model: p.model,
                contributions: Vec::new(),
            });
        }
        model.predict_row(&row, explain).map_err(|e| e.to_string())
    }

    /// Whether the plugin may ask about `device`'s history: only about the device of the window
    /// being processed. Asking about another is recorded as a violation (the call then fails as
    /// an invalid output) and answered with nothing.
    fn own_device(&mut self, device: &str) -> bool {
        if self.device.as_deref() == Some(device) {
            return true;
        }
        if self.violation.is_none() {
            let asked: String = device.chars().take(64).collect();
            self.violation = Some(format!("history: asked about device {asked:?}, not the window's own"));
        }
        false
    }
}

/// The host side of one contract version's imports and the conversions of its types, for the
/// module tree `$v` generated by `bindgen!` (its `preprocessor` module holds the shared
/// interfaces, `scorer` the `model` one, `$history_world` the `history` one).
macro_rules! imports {
    ($v:tt, $history_world:ident) => {
        const _: () = {
            use $v::preprocessor::edgepm::plugin::host::{self as host_if, Level};
            use $v::preprocessor::edgepm::plugin::types as wit;
            use $v::scorer::edgepm::plugin::model as model_if;
            use $v::$history_world::edgepm::plugin::history as history_if;

            impl wit::Host for StoreState {}

            impl host_if::Host for StoreState {
                fn log(&mut self, level: Level, message: String) {
                    let level = match level {
                        Level::Trace => TLevel::TRACE,
                        Level::Debug => TLevel::DEBUG,
                        Level::Info => TLevel::INFO,
                        Level::Warn => TLevel::WARN,
                        Level::Error => TLevel::ERROR,
                    };
                    StoreState::log(self, level, message)
                }

                fn config(&mut self, key: String) -> Option<String> {
                    self.ctx.config.lookup(&key)
                }
            }

            impl model_if::Host for StoreState {
                fn predict(
                    &mut self,
                    name: String,
                    features: wit::Features,
                    explain: bool,
                ) -> Result<wit::Score, String> {
                    StoreState::predict(self, name, features.into(), explain).map(Into::into)
                }
            }

            impl history_if::Host for StoreState {
                fn above_since(&mut self, device: String, feature: String, threshold: f64) -> Option<i64> {
                    if !self.own_device(&device) {
                        return None;
                    }
                    self.ctx.history.above_since(&self.ctx.tenant, &device, &feature, threshold)
                }

                fn mean(&mut self, device: String, feature: String, from_ms: i64, to_ms: i64) -> Option<f64> {
                    if !self.own_device(&device) {
                        return None;
                    }
                    self.ctx.history.mean(&self.ctx.tenant, &device, &feature, from_ms, to_ms)
                }

                fn last_alert_ms(&mut self, device: String) -> Option<i64> {
                    if !self.own_device(&device) {
                        return None;
                    }
                    self.ctx.history.last_alert_ms(&self.ctx.tenant, &device)
                }

                baseline_import!($v);
            }

            impl From<wit::Features> for types::Features {
                fn from(f: wit::Features) -> Self {
                    types::Features { names: f.names, values: f.values }
                }
            }

            impl From<&types::Features> for wit::Features {
                fn from(f: &types::Features) -> Self {
                    wit::Features { names: f.names.clone(), values: f.values.clone() }
                }
            }

            impl From<wit::Score> for types::Score {
                fn from(s: wit::Score) -> Self {
                    types::Score {
                        probability: s.probability,
                        model: s.model,
                        contributions: s
                            .contributions
                            .into_iter()
                            .map(|c| types::Contribution { feature: c.feature, value: c.value })
                            .collect(),
                    }
                }
            }

            impl From<types::Score> for wit::Score {
                fn from(s: types::Score) -> Self {
                    wit::Score {
                        probability: s.probability,
                        model: s.model,
                        contributions: s
                            .contributions
                            .into_iter()
                            .map(|c| wit::Contribution { feature: c.feature, value: c.value })
                            .collect(),
                    }
                }
            }

            impl From<&types::Score> for wit::Score {
                fn from(s: &types::Score) -> Self {
                    wit::Score::from(s.clone())
                }
            }

            impl From<wit::Decision> for types::Decision {
                fn from(d: wit::Decision) -> Self {
                    types::Decision {
                        is_failure: d.is_failure,
                        alerts: d
                            .alerts
                            .into_iter()
                            .map(|a| types::Alert {
                                severity: match a.severity {
                                    wit::Severity::Info => types::Severity::Info,
                                    wit::Severity::Warning => types::Severity::Warning,
                                    wit::Severity::Critical => types::Severity::Critical,
                                },
                                subject: a.subject,
                                body: a.body,
                            })
                            .collect(),
                    }
                }
            }
        };
    };
}

/// `history.baseline`, which only the current version has.
macro_rules! baseline_import {
    (self) => {
        fn baseline(&mut self, device: String, feature: String) -> Option<f64> {
            if !self.own_device(&device) {
                return None;
            }
            let period = crate::store::BaselinePeriod {
                since_ms: self.baseline_since,
                minutes: self.ctx.config.baseline_minutes,
            };
            self.ctx.history.baseline(&self.ctx.tenant, &device, &feature, period)
        }
    };
    (v0_1) => {};
}

imports!(self, preprocessor);
imports!(v0_1, policy);

impl From<types::Window> for preprocessor::edgepm::plugin::types::Window {
    fn from(w: types::Window) -> Self {
        use preprocessor::edgepm::plugin::types as wit;
        wit::Window {
            tenant: w.tenant,
            device: w.device,
            start_ms: w.start_ms,
            end_ms: w.end_ms,
            timestamps_ms: w.timestamps_ms,
            channels: w
                .channels
                .into_iter()
                .map(|c| wit::Channel {
                    name: c.name,
                    samples: c.samples,
                    samples_per_reading: c.samples_per_reading,
                    sample_rate_hz: c.sample_rate_hz,
                    unit: c.unit,
                })
                .collect(),
            asset: w.asset.into_iter().map(|(key, value)| wit::Attribute { key, value }).collect(),
        }
    }
}

impl From<types::Window> for v0_1::preprocessor::edgepm::plugin::types::Window {
    fn from(w: types::Window) -> Self {
        use v0_1::preprocessor::edgepm::plugin::types as wit;
        wit::Window {
            tenant: w.tenant,
            device: w.device,
            start_ms: w.start_ms,
            end_ms: w.end_ms,
            timestamps_ms: w.timestamps_ms,
            channels: w
                .channels
                .into_iter()
                .map(|c| wit::Channel {
                    name: c.name,
                    samples: c.samples,
                    samples_per_reading: c.samples_per_reading,
                })
                .collect(),
            asset: w.asset.into_iter().map(|(key, value)| wit::Attribute { key, value }).collect(),
        }
    }
}
