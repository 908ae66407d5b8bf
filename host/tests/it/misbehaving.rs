//! Hostile and broken plugins: each is rejected or quarantined with a clear message, the tenant
//! keeps being served by its last good version, and another tenant never notices.

use crate::support::{self, Deployment, T0};
use edgepm::pipeline::{PipelineError, process_window};
use edgepm::plugins::{CallError, PluginEventKind, PluginHost};
use edgepm::types::Stage;
use std::sync::Arc;
use std::time::Duration;

/// Tenant `a` serves a known good policy version; tenant `b` is a bystander.
fn two_tenants(a_settings: &str) -> (Deployment, Arc<PluginHost>, String) {
    let d = Deployment::new();
    d.add_tenant("a", a_settings);
    d.add_tenant("b", "");
    let good = support::variant(&support::wasm(support::THRESHOLD_POLICY), "good");
    d.deploy("a", "policy.wasm", &good);
    let host = d.open();
    (d, host, support::version_of(&good))
}

/// Both tenants process windows; `a` with `policy` as its policy version.
fn assert_both_served(host: &PluginHost, policy: &str, n: i64) {
    for tenant in ["a", "b"] {
        let out = process_window(host, support::window(tenant, "MTR-OK", 32, T0 + n * 60_000, 0.0))
            .unwrap_or_else(|e| panic!("tenant {tenant} must keep being served: {e}"));
        if tenant == "a" {
            assert_eq!(out.versions[2], policy, "tenant a keeps its last good policy");
        }
    }
}

fn last_rejection(host: &PluginHost) -> String {
    host.events()
        .into_iter()
        .rev()
        .find(|e| e.kind == PluginEventKind::Rejected)
        .map(|e| e.message)
        .unwrap_or_default()
}

#[test]
fn broken_and_hostile_versions_are_rejected_at_load() {
    let _timing = support::shared();
    let (d, host, good) = two_tenants("[settings]\nchaos_device = \"none-yet\"\n");
    let _watcher = host.watch().expect("watching");
    let chaos = support::wasm(support::CHAOS_POLICY);
    let policy = support::wasm(support::THRESHOLD_POLICY);
    let core_module = wat::parse_str(r#"(module (func (export "decide")))"#).expect("wat");
    let cases: Vec<(&str, &str, Vec<u8>, &str)> = vec![
        ("bytes that are not wasm", "", b"MZ\x90\x00 definitely not wasm".to_vec(), "not WebAssembly"),
        ("a truncated component", "", policy[..policy.len() / 3].to_vec(), "does not compile"),
        ("a core module", "", core_module, "core WebAssembly module, not a component"),
        (
            "a component of the wrong world",
            "",
            support::wasm(support::BEARING_FEATURES),
            "implements the preprocessor world, but this is the policy slot",
        ),
        ("an infinite loop", "loop", support::variant(&chaos, "loop"), "exceeded its deadline of 50 ms"),
        ("a memory bomb", "oom", support::variant(&chaos, "oom"), "exceeded its memory cap of 32 MiB"),
        ("a panic", "trap", support::variant(&chaos, "trap"), "trapped"),
    ];
    for (n, (what, chaos_mode, bytes, reason)) in cases.into_iter().enumerate() {
        if !chaos_mode.is_empty() {
            // Misbehave on every device, the smoke call's included. Wait until the new settings
            // are live (the good version ignores them) before deploying the plugin.
            // The memory bomb gets a generous deadline: on a loaded machine filling 32 MiB can
            // take longer than 50 ms, and then the deadline stops it before the memory cap does.
            let limits = if chaos_mode == "oom" { "[limits]\ndeadline_ms = 2000\n" } else { "" };
            let toml = format!("model = \"bearing\"\n{limits}[settings]\nchaos = \"{chaos_mode}\"\n");
            d.deploy("a", "tenant.toml", toml.as_bytes());
            support::wait_until(Duration::from_secs(5), || {
                host.tenant("a").and_then(|p| p.config.lookup("chaos")).as_deref() == Some(chaos_mode)
            })
            .expect("settings live");
        }
        let before = host.rejected_versions();
        d.deploy("a", "policy.wasm", &bytes);
        support::wait_until(Duration::from_secs(10), || host.rejected_versions() > before)
            .unwrap_or_else(|| panic!("{what} was not rejected"));
        let message = last_rejection(&host);
        assert!(message.contains(reason), "{what}: {message}");
        assert!(message.contains("policy.wasm"), "{what}: the message names the file: {message}");
        assert_both_served(&host, &good, n as i64);
    }
    let m = host.metrics().encode();
    assert_eq!(
        support::metric(&m, "edgepm_plugin_loads_total", &[("tenant", "a"), ("result", "rejected")]),
        7.0
    );
    assert_eq!(
        support::metric(&m, "edgepm_plugin_loads_total", &[("tenant", "b"), ("result", "rejected")]),
        0.0
    );
}

#[test]
fn a_version_that_traps_repeatedly_is_quarantined() {
    let _timing = support::shared();
    let (d, host, good) = two_tenants("[settings]\nchaos = \"trap\"\nchaos_device = \"MTR-BAD\"\n");
    let _watcher = host.watch().expect("watching");
    let chaos = support::variant(&support::wasm(support::CHAOS_POLICY), "runtime-trap");
    let chaos_id = support::version_of(&chaos);
    d.deploy("a", "policy.wasm", &chaos);
    support::wait_until(Duration::from_secs(5), || {
        host.tenant("a").is_some_and(|p| p.versions()[2] == chaos_id)
    })
    .expect("the chaos version passes its smoke call and goes live");

    // Healthy devices are served by it; MTR-BAD's windows trap.
    let ok = process_window(&host, support::window("a", "MTR-OK", 32, T0, 0.0)).expect("served");
    assert_eq!(ok.versions[2], chaos_id);
    for i in 0..3 {
        let err = process_window(&host, support::window("a", "MTR-BAD", 32, T0 + i, 0.0)).expect_err("traps");
        match err {
            PipelineError::Stage { stage: Stage::Policy, error: CallError::Trap(msg), version, .. } => {
                assert_eq!(version, chaos_id);
                assert!(msg.contains("unreachable"), "a Rust panic is an `unreachable` trap: {msg}");
            }
            other => panic!("expected a policy trap, got {other}"),
        }
        assert_both_served(&host, if i < 2 { &chaos_id } else { &good }, i);
    }
    // Quarantined after 3 traps in a row: the last good version serves MTR-BAD again.
    assert_eq!(host.tenant("a").expect("tenant").versions()[2], good);
    let out = process_window(&host, support::window("a", "MTR-BAD", 32, T0 + 10, 0.0)).expect("served again");
    assert_eq!(out.versions[2], good);
    let q = host.events().into_iter().find(|e| e.kind == PluginEventKind::Quarantined).expect("event");
    assert_eq!(
        (q.tenant.as_str(), q.stage, q.version.as_str()),
        ("a", Some(Stage::Policy), chaos_id.as_str())
    );
    let m = host.metrics().encode();
    assert_eq!(
        support::metric(&m, "edgepm_plugin_quarantines_total", &[("tenant", "a"), ("stage", "policy")]),
        1.0
    );
    assert_eq!(
        support::metric(&m, "edgepm_plugin_calls_total", &[("tenant", "a"), ("outcome", "trap")]),
        3.0
    );
    assert_eq!(
        support::metric(&m, "edgepm_plugin_calls_total", &[("tenant", "b"), ("outcome", "trap")]),
        0.0
    );

    // The same bytes deployed again stay refused; changed bytes are tried again.
    d.deploy("a", "policy.wasm", &chaos);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        host.tenant("a").expect("tenant").versions()[2],
        good,
        "a quarantined version is not reloaded"
    );
    let fixed = support::variant(&support::wasm(support::THRESHOLD_POLICY), "fixed");
    d.deploy("a", "policy.wasm", &fixed);
    let fixed_id = support::version_of(&fixed);
    support::wait_until(Duration::from_secs(5), || {
        host.tenant("a").is_some_and(|p| p.versions()[2] == fixed_id)
    })
    .expect("a changed file goes live");
}

#[test]
fn per_tenant_limits_stop_runaway_calls() {
    let _timing = support::shared();
    let d = Deployment::new();
    let chaos = support::wasm(support::CHAOS_POLICY);
    // The hoarder's deadline is generous: on a loaded machine filling 16 MiB can take longer
    // than 20 ms, and then the deadline would stop it before the memory cap does.
    for (tenant, mode, deadline_ms) in [("looper", "loop", 20), ("hoarder", "oom", 2000)] {
        d.add_tenant(
            tenant,
            &format!("[limits]\ndeadline_ms = {deadline_ms}\nmemory_mib = 16\n[settings]\nchaos = \"{mode}\"\nchaos_device = \"MTR-X\"\n"),
        );
        d.deploy(tenant, "policy.wasm", &chaos);
    }
    let host = d.open();
    let loop_err = process_window(&host, support::window("looper", "MTR-X", 32, T0, 0.0)).expect_err("loops");
    assert!(
        matches!(loop_err, PipelineError::Stage { error: CallError::Timeout(20), .. }),
        "deadline from tenant.toml: {loop_err}"
    );
    let oom_err =
        process_window(&host, support::window("hoarder", "MTR-X", 32, T0, 0.0)).expect_err("hoards");
    assert!(
        matches!(oom_err, PipelineError::Stage { error: CallError::MemoryCap(16), .. }),
        "memory cap from tenant.toml: {oom_err}"
    );
    // The instance that trapped was thrown away; the next call gets a fresh one and works.
    for tenant in ["looper", "hoarder"] {
        process_window(&host, support::window(tenant, "MTR-Y", 32, T0, 0.0)).expect("fresh instance serves");
    }
}

#[test]
fn plugins_get_no_environment_files_or_network() {
    let _timing = support::shared();
    let d = Deployment::new();
    d.add_tenant("nosy", "[settings]\nchaos = \"escape\"\nchaos_device = \"MTR-X\"\n");
    d.deploy("nosy", "policy.wasm", &support::wasm(support::CHAOS_POLICY));
    let host = d.open();
    assert!(std::env::vars().count() > 0, "the test process itself has an environment");
    let err = process_window(&host, support::window("nosy", "MTR-X", 32, T0, 0.0)).expect_err("reports");
    let PipelineError::Stage { error: CallError::Rejected(report), .. } = err else {
        panic!("expected the plugin's report as an error result, got {err}");
    };
    assert!(report.starts_with("env=0 args=0 fs=denied"), "{report}");
    assert!(report.contains("net=denied"), "{report}");
}
