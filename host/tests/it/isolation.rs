//! A plugin is untrusted code: whatever it does inside WASI, its call ends within its deadline,
//! and whatever it returns is checked before the host uses it. Each violation fails that window
//! as `blocked` or `invalid_output`, counts towards quarantine, and leaves other tenants alone.

use crate::support::{self, Deployment, T0};
use edgepm::pipeline::{PipelineError, process_window};
use edgepm::plugins::{CallError, PluginEventKind, PluginHost};
use edgepm::types::Stage;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The error of tenant `tenant`'s window of `device`, which must fail.
fn failure(host: &PluginHost, tenant: &str, device: &str, n: i64) -> (Stage, CallError) {
    match process_window(host, support::window(tenant, device, 32, T0 + n * 60_000, 0.0)) {
        Ok(o) => panic!("{tenant}/{device}: expected a failure, got {o:?}"),
        Err(PipelineError::Stage { stage, error, .. }) => (stage, error),
        Err(e) => panic!("{tenant}/{device}: {e}"),
    }
}

fn served(host: &PluginHost, tenant: &str, device: &str, n: i64) {
    process_window(host, support::window(tenant, device, 32, T0 + n * 60_000, 0.0))
        .unwrap_or_else(|e| panic!("{tenant}/{device} must be served: {e}"));
}

fn rejections(host: &PluginHost, tenant: &str) -> Vec<String> {
    host.events()
        .into_iter()
        .filter(|e| e.tenant == tenant && e.kind == PluginEventKind::Rejected)
        .map(|e| e.message)
        .collect()
}

fn calls(host: &PluginHost, tenant: &str, stage: &str, outcome: &str) -> f64 {
    support::metric(
        &host.metrics().encode(),
        "edgepm_plugin_calls_total",
        &[("tenant", tenant), ("stage", stage), ("outcome", outcome)],
    )
}

#[test]
fn a_plugin_that_sleeps_is_stopped_at_once_and_quarantined() {
    let _timing = support::shared();
    let d = Deployment::new();
    let chaos = support::wasm(support::CHAOS_POLICY);
    // `asleep` sleeps on every window, the smoke call's included; `nappy` only on MTR-BAD's.
    d.add_tenant("asleep", "[settings]\nchaos = \"sleep\"\n");
    d.deploy("asleep", "policy.wasm", &chaos);
    d.add_tenant("nappy", "[settings]\nchaos = \"sleep\"\nchaos_device = \"MTR-BAD\"\n");
    d.deploy("nappy", "policy.wasm", &chaos);
    d.add_tenant("bystander", "");
    let started = Instant::now();
    let host = d.open();
    // The smoke call of `asleep` sleeps 20 s if let: its rejection came long before that.
    assert!(started.elapsed() < Duration::from_secs(10), "start-up took {:?}", started.elapsed());
    let reasons = rejections(&host, "asleep");
    assert!(reasons.iter().any(|r| r.contains("tried to block in wasi:io/poll")), "{reasons:?}");
    served(&host, "asleep", "MTR-OK", 0); // by the built-in policy

    let chaos_id = support::version_of(&chaos);
    assert_eq!(host.tenant("nappy").expect("tenant").versions()[2], chaos_id, "passes its smoke call");
    for i in 0..3 {
        let started = Instant::now();
        let (stage, error) = failure(&host, "nappy", "MTR-BAD", i);
        assert_eq!(stage, Stage::Policy);
        assert!(matches!(error, CallError::Blocked(ref call) if call.contains("poll")), "{error}");
        // The 20 s sleep ended at once: a blocked call returns, it does not wait out a deadline.
        assert!(started.elapsed() < Duration::from_secs(5), "window took {:?}", started.elapsed());
        served(&host, "bystander", "MTR-OK", i);
    }
    assert_eq!(calls(&host, "nappy", "policy", "blocked"), 3.0);
    // Three blocked calls: quarantined, the built-in serves MTR-BAD and every other device.
    let versions = host.tenant("nappy").expect("tenant").versions();
    assert_ne!(versions[2], chaos_id, "quarantined");
    served(&host, "nappy", "MTR-BAD", 10);
    assert!(host.events().iter().any(|e| e.tenant == "nappy" && e.kind == PluginEventKind::Quarantined));
}

#[test]
fn stdin_and_sockets_give_a_plugin_nothing_and_never_block() {
    let _timing = support::shared();
    let d = Deployment::new();
    let chaos = support::wasm(support::CHAOS_POLICY);
    for mode in ["stdin", "socket"] {
        d.add_tenant(mode, &format!("[settings]\nchaos = \"{mode}\"\nchaos_device = \"MTR-X\"\n"));
        d.deploy(mode, "policy.wasm", &chaos);
    }
    let host = d.open();
    let (_, stdin) = failure(&host, "stdin", "MTR-X", 0);
    // Standard input is closed: reading it ends at once with nothing.
    assert!(matches!(stdin, CallError::Rejected(ref r) if r.starts_with("stdin: Ok(0)")), "{stdin}");
    let (_, socket) = failure(&host, "socket", "MTR-X", 0);
    // Not even a socket is created (the empty context alone would only deny its addresses).
    assert!(matches!(socket, CallError::Rejected(ref r) if r.starts_with("socket: denied")), "{socket}");
}

#[test]
fn a_policy_may_ask_only_about_its_own_device_and_raise_bounded_alerts() {
    let _timing = support::shared();
    let d = Deployment::new();
    let chaos = support::wasm(support::CHAOS_POLICY);
    for mode in ["history", "big-alert"] {
        d.add_tenant(mode, &format!("[settings]\nchaos = \"{mode}\"\nchaos_device = \"MTR-X\"\n"));
        d.deploy(mode, "policy.wasm", &chaos);
    }
    let host = d.open();
    let (_, history) = failure(&host, "history", "MTR-X", 0);
    assert!(
        matches!(history, CallError::InvalidOutput(ref m) if m.contains("SOMEONE-ELSE")),
        "another device's history is refused: {history}"
    );
    let (_, alert) = failure(&host, "big-alert", "MTR-X", 0);
    assert!(matches!(alert, CallError::InvalidOutput(ref m) if m.contains("alert body")), "{alert}");
    assert_eq!(calls(&host, "history", "policy", "invalid_output"), 1.0);
    served(&host, "history", "MTR-Y", 1);
}

#[test]
fn scores_that_are_not_probabilities_fail_their_window_as_invalid_output() {
    let _timing = support::shared();
    let d = Deployment::new();
    let (pre, score) = (support::wasm(support::CHAOS_PREPROCESS), support::wasm(support::CHAOS_SCORE));
    let cases = [("nan", "nan"), ("inf", "inf"), ("minf", "-inf"), ("neg", "-0.1"), ("big", "1.5")];
    for (tenant, p) in cases {
        d.add_tenant(tenant, &format!("[settings]\nchaos_device = \"MTR-X\"\nchaos_probability = \"{p}\"\n"));
        d.deploy(tenant, "preprocess.wasm", &pre);
        d.deploy(tenant, "score.wasm", &score);
    }
    d.add_tenant("contrib", "[settings]\nchaos_device = \"MTR-X\"\nchaos_contribution = \"nan\"\n");
    d.deploy("contrib", "preprocess.wasm", &pre);
    d.deploy("contrib", "score.wasm", &score);
    let host = d.open();
    for (tenant, p) in cases {
        let (stage, error) = failure(&host, tenant, "MTR-X", 0);
        assert_eq!(stage, Stage::Score, "{tenant}");
        assert!(
            matches!(error, CallError::InvalidOutput(ref m) if m.contains("probability")),
            "{p}: {error}"
        );
        // Other devices of the same tenant are scored (0.1) and pass.
        let ok = process_window(&host, support::window(tenant, "MTR-Y", 32, T0, 0.0)).expect("served");
        assert_eq!(ok.score.probability, 0.1);
        assert_eq!(calls(&host, tenant, "score", "invalid_output"), 1.0);
    }
    let (_, error) = failure(&host, "contrib", "MTR-X", 0);
    assert!(matches!(error, CallError::InvalidOutput(ref m) if m.contains("contribution")), "{error}");
}

#[test]
fn features_that_do_not_pair_up_repeat_or_flood_fail_as_invalid_output() {
    let _timing = support::shared();
    let d = Deployment::new();
    let pre = support::wasm(support::CHAOS_PREPROCESS);
    let cases = [
        ("mismatch", "3 names but 2 values"),
        ("duplicate", "appears twice"),
        ("many", "max_features"),
        ("inf", "is inf"),
    ];
    for (mode, _) in cases {
        // 100,000 features take a while to build on a loaded machine: a deadline that is no part
        // of what is tested.
        d.add_tenant(
            mode,
            &format!("[limits]\ndeadline_ms = 5000\n[settings]\nchaos_device = \"MTR-X\"\nchaos_features = \"{mode}\"\n"),
        );
        d.deploy(mode, "preprocess.wasm", &pre);
    }
    let host = d.open();
    for (mode, expected) in cases {
        let (stage, error) = failure(&host, mode, "MTR-X", 0);
        assert_eq!(stage, Stage::Preprocess, "{mode}");
        assert!(matches!(error, CallError::InvalidOutput(ref m) if m.contains(expected)), "{mode}: {error}");
        assert_eq!(calls(&host, mode, "preprocess", "invalid_output"), 1.0, "{mode}");
    }
}

#[test]
fn a_window_size_beyond_the_limit_is_refused_at_load() {
    let _timing = support::shared();
    let d = Deployment::new();
    let pre = support::wasm(support::CHAOS_PREPROCESS);
    d.add_tenant("huge", "[settings]\nchaos_window_size = 4000000000\n");
    d.deploy("huge", "preprocess.wasm", &pre);
    d.add_tenant("zero", "[settings]\nchaos_window_size = 0\n");
    d.deploy("zero", "preprocess.wasm", &pre);
    // Up to the tenant's own bound.
    d.add_tenant("roomy", "[limits]\nmax_window = 64\n[settings]\nchaos_window_size = 64\n");
    d.deploy("roomy", "preprocess.wasm", &pre);
    let host = d.open();
    for tenant in ["huge", "zero"] {
        let reasons = rejections(&host, tenant);
        assert!(
            reasons.iter().any(|r| r.contains("window-size") && r.contains("max_window")),
            "{tenant}: {reasons:?}"
        );
        let p = host.tenant(tenant).expect("served by the built-in preprocessor");
        assert_eq!(p.window_size, 32, "{tenant}: the built-in's window");
    }
    assert_eq!(host.tenant("roomy").expect("tenant").window_size, 64);
}

#[test]
fn a_quarantined_version_stays_refused_after_a_restart() {
    let _timing = support::shared();
    let d = Deployment::new();
    d.add_tenant("a", "[settings]\nchaos = \"trap\"\nchaos_device = \"MTR-BAD\"\n");
    let chaos = support::wasm(support::CHAOS_POLICY);
    d.deploy("a", "policy.wasm", &chaos);
    let refused_file = d.root.path().join("refused-plugins.json");
    let open = || {
        let mut o = d.options();
        o.refused_file = Some(refused_file.clone());
        PluginHost::open(
            o,
            Arc::new(edgepm::store::MemoryHistory::default()),
            Arc::new(edgepm::metrics::Metrics::new()),
        )
        .expect("host starts")
    };
    let chaos_id = support::version_of(&chaos);
    let host = open();
    assert_eq!(host.tenant("a").expect("tenant").versions()[2], chaos_id);
    for i in 0..3 {
        failure(&host, "a", "MTR-BAD", i);
    }
    assert_ne!(host.tenant("a").expect("tenant").versions()[2], chaos_id, "quarantined");
    drop(host);
    // A restart (the process crashed, say) with the same file in the folder: not loaded again.
    let host = open();
    assert_ne!(host.tenant("a").expect("tenant").versions()[2], chaos_id, "still refused after a restart");
    served(&host, "a", "MTR-BAD", 5);
    // A changed file is tried again.
    let fixed = support::variant(&chaos, "fixed");
    d.deploy("a", "policy.wasm", &fixed);
    drop(host);
    let host = open();
    assert_eq!(host.tenant("a").expect("tenant").versions()[2], support::version_of(&fixed));
}

#[test]
fn the_memory_cap_covers_all_of_a_tenants_instances() {
    let _timing = support::shared();
    let d = Deployment::new();
    // Each instance may have 64 MiB, the tenant's instances together too: the preprocessor's and
    // scorer's instances hold some of it, so the hoarding policy hits the tenant's cap first.
    d.add_tenant(
        "hoarder",
        "[limits]\nmemory_mib = 64\ntenant_memory_mib = 64\ndeadline_ms = 5000\n[settings]\nchaos = \"oom\"\nchaos_device = \"MTR-X\"\n",
    );
    d.deploy("hoarder", "policy.wasm", &support::wasm(support::CHAOS_POLICY));
    let host = d.open();
    let (_, error) = failure(&host, "hoarder", "MTR-X", 0);
    assert_eq!(error, CallError::TenantMemoryCap(64), "{error}");
    // The trapped instance gave its memory back: the next windows are served.
    for i in 1..4 {
        served(&host, "hoarder", "MTR-Y", i);
    }
}
