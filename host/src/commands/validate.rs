//! `edgepm validate`: load every tenant of a plugins folder and report what would be rejected.

use super::FolderArgs;
use std::process::ExitCode;

pub fn run(folders: FolderArgs) -> anyhow::Result<ExitCode> {
    let host = folders.open_host()?;
    for name in host.tenant_names() {
        if let Some(p) = host.tenant(&name) {
            let [pre, score, policy] = p.versions();
            println!("{name}: preprocess {pre}, score {score}, policy {policy}, window {}", p.window_size);
        }
    }
    let rejected = host.rejected_versions();
    if rejected > 0 {
        eprintln!("{rejected} plugin version(s) rejected; see the log above");
    }
    Ok(if rejected == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}
