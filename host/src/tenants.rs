//! Tenants shipped with edgepm, deployed with one command (`edgepm tenant deploy <name>`): each
//! one's `tenant.toml`, plugins and model are built into the binary, so deploying needs neither
//! the repository nor a training run.

use crate::plugins::builtin;
use crate::types::Stage;
use anyhow::Context as _;
use std::path::{Path, PathBuf};

/// A model folder built into the binary.
pub struct ShippedModel {
    pub name: &'static str,
    files: &'static [(&'static str, &'static [u8])],
}

/// The XGBoost bearing model the training pipeline exported (`models/train.sh`), trained on the
/// simulator's run-to-failure data.
pub const BEARING_XGB: ShippedModel = ShippedModel {
    name: "bearing-xgb",
    files: &[
        ("metadata.json", include_bytes!("../../models/bearing-xgb/metadata.json")),
        ("model.json", include_bytes!("../../models/bearing-xgb/model.json")),
        ("model.onnx", include_bytes!("../../models/bearing-xgb/model.onnx")),
    ],
};

/// The XGBoost model trained on the AI4I 2020 training file (`models/README.md`).
pub const AI4I_XGB: ShippedModel = ShippedModel {
    name: "ai4i-xgb",
    files: &[
        ("metadata.json", include_bytes!("../../models/ai4i-xgb/metadata.json")),
        ("model.json", include_bytes!("../../models/ai4i-xgb/model.json")),
        ("model.onnx", include_bytes!("../../models/ai4i-xgb/model.onnx")),
    ],
};

/// The XGBoost model of accelerometer features relative to each machine's baseline
/// (`bearing-spectrum`), trained on the FEMTO/PRONOSTIA learning set (`models/femto.sh`).
pub const BEARING_SPECTRUM_XGB: ShippedModel = ShippedModel {
    name: "bearing-spectrum-xgb",
    files: &[
        ("metadata.json", include_bytes!("../../models/bearing-spectrum-xgb/metadata.json")),
        ("model.json", include_bytes!("../../models/bearing-spectrum-xgb/model.json")),
        ("model.onnx", include_bytes!("../../models/bearing-spectrum-xgb/model.onnx")),
    ],
};

/// A tenant shipped with edgepm.
pub struct ShippedTenant {
    pub name: &'static str,
    pub about: &'static str,
    tenant_toml: &'static str,
    /// The reference preprocessor it runs ([`builtin::preprocessor`]); score and policy are the
    /// reference ones.
    preprocess: &'static str,
    pub model: &'static ShippedModel,
}

/// Every shipped tenant.
pub const SHIPPED: &[ShippedTenant] = &[
    ShippedTenant {
        name: "ai4i",
        about: "machining process telemetry in the AI4I 2020 format, scored by ai4i-xgb",
        tenant_toml: include_str!("../../tenants/ai4i/tenant.toml"),
        preprocess: "ai4i-features",
        model: &AI4I_XGB,
    },
    ShippedTenant {
        name: "bearing",
        about: "motors with vibration bursts, temperature and current, scored by bearing-xgb",
        tenant_toml: include_str!("../../tenants/bearing/tenant.toml"),
        preprocess: "bearing-features",
        model: &BEARING_XGB,
    },
    ShippedTenant {
        name: "vibration",
        about: "accelerometer bursts with the bearing's geometry, scored by bearing-spectrum-xgb (real bearings)",
        tenant_toml: include_str!("../../tenants/vibration/tenant.toml"),
        preprocess: "bearing-spectrum",
        model: &BEARING_SPECTRUM_XGB,
    },
];

/// The shipped tenant called `name`.
pub fn shipped(name: &str) -> anyhow::Result<&'static ShippedTenant> {
    SHIPPED.iter().find(|t| t.name == name).with_context(|| {
        let names: Vec<&str> = SHIPPED.iter().map(|t| t.name).collect();
        format!("no shipped tenant {name:?} (shipped: {})", names.join(", "))
    })
}

/// What [`deploy`] wrote.
#[derive(Debug)]
pub struct Deployed {
    pub tenant_dir: PathBuf,
    pub model_dir: PathBuf,
    /// Files written; those already there with the same bytes are left alone and not listed.
    pub written: Vec<PathBuf>,
}

/// Deploys `tenant` as `<plugins_dir>/<name>/` and its model as `<models_dir>/<model>/`. The
/// model goes first, so a host watching the plugins folder finds it when the tenant appears;
/// every file is written under a temporary name and renamed into place (a watching host never
/// loads half a file). A file already there with other bytes — a tenant or model changed by
/// hand — is an error unless `force`.
pub fn deploy(
    tenant: &ShippedTenant,
    as_name: Option<&str>,
    plugins_dir: &Path,
    models_dir: &Path,
    force: bool,
) -> anyhow::Result<Deployed> {
    let name = as_name.unwrap_or(tenant.name);
    anyhow::ensure!(
        crate::plugins::is_tenant_name(name),
        "{name:?} cannot name a tenant: letters, digits, '-' and '_', at most 64"
    );
    let model_dir = models_dir.join(tenant.model.name);
    let tenant_dir = plugins_dir.join(name);
    let mut files: Vec<(PathBuf, &[u8])> =
        tenant.model.files.iter().map(|(f, bytes)| (model_dir.join(f), *bytes)).collect();
    let preprocess = builtin::preprocessor(tenant.preprocess)
        .with_context(|| format!("no reference preprocessor {:?}", tenant.preprocess))?;
    for stage in Stage::ALL {
        let bytes = if stage == Stage::Preprocess { preprocess } else { builtin::bytes(stage) };
        files.push((tenant_dir.join(stage.file_name()), bytes));
    }
    files.push((tenant_dir.join("tenant.toml"), tenant.tenant_toml.as_bytes()));
    if !force {
        let changed: Vec<String> = files
            .iter()
            .filter(|(path, bytes)| std::fs::read(path).is_ok_and(|old| old != *bytes))
            .map(|(path, _)| path.display().to_string())
            .collect();
        anyhow::ensure!(
            changed.is_empty(),
            "not overwriting files that differ from the shipped ones (--force overwrites them): {}",
            changed.join(", ")
        );
    }
    let mut written = Vec::new();
    for (path, bytes) in files {
        if std::fs::read(&path).is_ok_and(|old| old == bytes) {
            continue;
        }
        write_into_place(&path, bytes)?;
        written.push(path);
    }
    Ok(Deployed { tenant_dir, model_dir, written })
}

/// Writes a shipped model folder into `models_dir` unless one of that name is there.
pub fn write_model_if_missing(model: &ShippedModel, models_dir: &Path) -> anyhow::Result<()> {
    let dir = models_dir.join(model.name);
    if dir.join("metadata.json").exists() {
        return Ok(());
    }
    for (file, bytes) in model.files {
        write_into_place(&dir.join(file), bytes)?;
    }
    Ok(())
}

fn write_into_place(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let dir = path.parent().context("a file path has a folder")?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let file_name = path.file_name().context("a file path has a name")?.to_string_lossy();
    let staged = dir.join(format!(".{file_name}.edgepm-tmp"));
    std::fs::write(&staged, bytes).with_context(|| format!("writing {}", staged.display()))?;
    std::fs::rename(&staged, path).with_context(|| format!("renaming into {}", path.display()))?;
    Ok(())
}
