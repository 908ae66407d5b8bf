//! `edgepm plugin`: inspect and export plugins.

use anyhow::Context as _;
use clap::{Subcommand, ValueEnum};
use edgepm::plugins::{builtin, check::check_file};
use edgepm::types::Stage;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Subcommand)]
pub enum PluginCommand {
    /// Print a component's stage, world, exports and imports and run a smoke call. Exits non-zero
    /// for a file that is not a valid component of one of the edgepm worlds.
    Check {
        /// The .wasm file.
        file: PathBuf,
        /// Also require this stage.
        #[arg(long, value_enum)]
        stage: Option<StageArg>,
    },
    /// Write the built-in reference plugins (preprocess.wasm, score.wasm, policy.wasm) into a
    /// folder, e.g. to start a tenant folder from them.
    Export {
        /// Destination folder (created if missing).
        dir: PathBuf,
        /// Which reference preprocessor to write as preprocess.wasm: bearing-features (vibration
        /// motors, the default), bearing-spectrum (accelerometer bursts with their sample rate and unit) or ai4i-features (AI4I 2020-style machining telemetry).
        #[arg(long, default_value = "bearing-features")]
        preprocess: String,
    },
}

#[derive(Clone, Copy, ValueEnum)]
pub enum StageArg {
    Preprocess,
    Score,
    Policy,
}

impl From<StageArg> for Stage {
    fn from(s: StageArg) -> Stage {
        match s {
            StageArg::Preprocess => Stage::Preprocess,
            StageArg::Score => Stage::Score,
            StageArg::Policy => Stage::Policy,
        }
    }
}

pub fn run(command: PluginCommand) -> anyhow::Result<ExitCode> {
    match command {
        PluginCommand::Check { file, stage } => match check_file(&file, stage.map(Into::into)) {
            Ok(report) => {
                println!("{}: ok\n{report}", file.display());
                Ok(if report.smoke.is_ok() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
            }
            Err(e) => {
                eprintln!("{}: not a usable edgepm plugin: {e}", file.display());
                Ok(ExitCode::FAILURE)
            }
        },
        PluginCommand::Export { dir, preprocess } => {
            let pre = builtin::preprocessor(&preprocess).with_context(|| {
                format!("no reference preprocessor {preprocess:?} (bearing-features, bearing-spectrum, ai4i-features)")
            })?;
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            for stage in Stage::ALL {
                let path = dir.join(stage.file_name());
                let (bytes, source) = match stage {
                    Stage::Preprocess => (pre, format!("reference:{preprocess}")),
                    _ => (builtin::bytes(stage), builtin::source(stage).to_string()),
                };
                std::fs::write(&path, bytes).with_context(|| format!("writing {}", path.display()))?;
                println!("{} ({source})", path.display());
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
