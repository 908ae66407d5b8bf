//! `edgepm model`: model folders.

use anyhow::Context as _;
use clap::Subcommand;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Subcommand)]
pub enum ModelCommand {
    /// Write the hand-weighted logistic baseline (an ONNX graph, not trained) as a model folder,
    /// so the pipeline runs before trained models are deployed.
    Baseline {
        /// Models folder to write into.
        models_dir: PathBuf,
        /// Model name (the folder name; tenants select it with `model = "..."`).
        #[arg(long, default_value = edgepm::config::DEFAULT_MODEL)]
        name: String,
    },
}

pub fn run(command: ModelCommand) -> anyhow::Result<ExitCode> {
    match command {
        ModelCommand::Baseline { models_dir, name } => {
            let dir = edgepm::model::baseline::write(&models_dir, &name)
                .with_context(|| format!("writing model {name} into {}", models_dir.display()))?;
            println!("{}", dir.display());
            Ok(ExitCode::SUCCESS)
        }
    }
}
