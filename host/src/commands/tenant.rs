//! `edgepm tenant`: the tenants shipped in the binary.

use clap::Subcommand;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Subcommand)]
pub enum TenantCommand {
    /// List the shipped tenants.
    List,
    /// Write a shipped tenant into a plugins folder (<plugins-dir>/<name>/) and its model into a
    /// models folder. A host watching the plugins folder starts serving it at once.
    Deploy {
        /// The shipped tenant (`edgepm tenant list`).
        name: String,
        /// Deploy it under another tenant name (its MQTT topics are edgepm/<name>/...).
        #[arg(long = "as", value_name = "TENANT")]
        as_name: Option<String>,
        /// Plugins folder (the `plugins_dir` of edgepm.toml, `<data_dir>/plugins` by default).
        #[arg(long, default_value = "plugins-deployed")]
        plugins_dir: PathBuf,
        /// Models folder (the `models_dir` of edgepm.toml, `<data_dir>/models` by default).
        #[arg(long, default_value = "models")]
        models_dir: PathBuf,
        /// Overwrite files that differ from the shipped ones (a tenant changed by hand).
        #[arg(long)]
        force: bool,
    },
}

pub fn run(command: TenantCommand) -> anyhow::Result<ExitCode> {
    match command {
        TenantCommand::List => {
            for t in edgepm::tenants::SHIPPED {
                println!("{:<10} {} (model {})", t.name, t.about, t.model.name);
            }
            Ok(ExitCode::SUCCESS)
        }
        TenantCommand::Deploy { name, as_name, plugins_dir, models_dir, force } => {
            let tenant = edgepm::tenants::shipped(&name)?;
            let done = edgepm::tenants::deploy(tenant, as_name.as_deref(), &plugins_dir, &models_dir, force)?;
            for path in &done.written {
                println!("wrote {}", path.display());
            }
            println!(
                "tenant {} deployed in {} (model {} in {}){}",
                as_name.as_deref().unwrap_or(tenant.name),
                done.tenant_dir.display(),
                tenant.model.name,
                done.model_dir.display(),
                if done.written.is_empty() { ", already up to date" } else { "" }
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}
