//! The contract is not Rust-only: a policy written in Python (componentize-py) serves a tenant.
//! Such a component imports 25 WASI p2 interfaces; the host links them all over an empty context.

use crate::support::{self, Deployment, T0};
use edgepm::pipeline::process_window;

#[test]
#[ignore = "needs the Python component that scripts/test.sh builds with componentize-py"]
fn a_python_policy_serves_a_tenant() {
    let _timing = support::shared();
    let path = std::env::var("EDGEPM_PYTHON_POLICY")
        .expect("EDGEPM_PYTHON_POLICY names the component; scripts/test.sh builds it and sets it");
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("reading {path}: {e}"));
    let d = Deployment::new();
    d.add_tenant("py", "threshold = 0.5\n[settings]\ncooldown_minutes = 30\n");
    d.deploy("py", "policy.wasm", &bytes);
    let host = d.open();
    let pipeline = host.tenant("py").expect("tenant");
    assert_eq!(
        pipeline.versions()[2],
        support::version_of(&bytes),
        "the Python version serves, not the built-in"
    );
    assert_eq!(host.rejected_versions(), 0);

    let healthy = process_window(&host, support::window("py", "MTR-7", 32, T0, 0.0)).expect("processed");
    assert!(!healthy.decision.is_failure && healthy.decision.alerts.is_empty());
    let worn =
        process_window(&host, support::window("py", "MTR-7", 32, T0 + 3_600_000, 3.0)).expect("processed");
    assert!(worn.decision.is_failure);
    let alert = &worn.decision.alerts[0];
    assert_eq!(alert.subject, "[python] MTR-7 at risk");
    assert!(
        alert.body.contains("abnormal vibration since 2025-04-05"),
        "history import answered: {}",
        alert.body
    );
    // Cool-down through the host's record of alerts: no alert ten minutes later.
    let again =
        process_window(&host, support::window("py", "MTR-7", 32, T0 + 4_200_000, 3.0)).expect("processed");
    assert!(again.decision.is_failure && again.decision.alerts.is_empty());
}
