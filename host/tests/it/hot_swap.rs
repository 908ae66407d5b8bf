//! Hot swap: new versions dropped into a tenant folder go live between two windows, with no
//! window lost, split between versions, or stuck on an old version.

use crate::support::{self, Deployment, T0};
use edgepm::pipeline::process_window;
use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

#[test]
fn policy_replaced_20_times_while_windows_flow() {
    let _timing = support::exclusive();
    let d = Deployment::new();
    d.add_tenant("acme", "");
    let policy = support::wasm(support::THRESHOLD_POLICY);
    let versions: Vec<Vec<u8>> = (0..=20).map(|i| support::variant(&policy, &format!("v{i}"))).collect();
    let ids: Vec<String> = versions.iter().map(|v| support::version_of(v)).collect();
    d.deploy("acme", "policy.wasm", &versions[0]);
    let host = d.open();
    let _watcher = host.watch().expect("watching");
    assert_eq!(host.tenant("acme").expect("tenant").versions()[2], ids[0]);

    // A steady stream of windows on another thread, recording the policy version of each.
    let stop = Arc::new(AtomicBool::new(false));
    let stream = {
        let (host, stop) = (host.clone(), stop.clone());
        std::thread::spawn(move || {
            let (mut sent, mut seen) = (0u64, Vec::new());
            while !stop.load(Ordering::Relaxed) {
                let w =
                    support::window("acme", &format!("MTR-{}", sent % 7), 32, T0 + sent as i64 * 1000, 0.0);
                sent += 1;
                let out = process_window(&host, w).expect("every window gets a decision");
                seen.push(out.versions);
            }
            (sent, seen)
        })
    };

    let mut latencies = Vec::new();
    for i in 1..=20 {
        d.deploy("acme", "policy.wasm", &versions[i]);
        let live = support::wait_until(Duration::from_secs(5), || {
            host.tenant("acme").is_some_and(|p| p.versions()[2] == ids[i])
        })
        .unwrap_or_else(|| panic!("version {i} never went live"));
        latencies.push(live);
        std::thread::sleep(Duration::from_millis(20)); // let some windows run on it
    }
    stop.store(true, Ordering::Relaxed);
    let (sent, seen) = stream.join().expect("stream thread");

    assert_eq!(seen.len() as u64, sent, "exactly one decision per window");
    assert!(sent > 100, "windows kept flowing during the swaps ({sent})");
    // Each window ran on one whole version of each stage: the preprocess and score versions never
    // changed, and the policy version of every window is one of the deployed ones, in order.
    let first = &seen[0];
    let mut last_index = 0;
    for v in &seen {
        assert_eq!((&v[0], &v[1]), (&first[0], &first[1]));
        let index = ids.iter().position(|id| *id == v[2]).expect("a deployed policy version");
        assert!(index >= last_index, "policy went back from v{last_index} to v{index}");
        last_index = index;
    }
    assert_eq!(last_index, 20);
    let slowest = latencies.iter().max().copied().unwrap_or_default();
    assert!(slowest <= Duration::from_secs(1), "a version took {slowest:?} to go live: {latencies:?}");
    assert_eq!(host.rejected_versions(), 0);
}

#[test]
fn a_partially_written_file_is_not_loaded_until_complete() {
    let _timing = support::shared();
    let d = Deployment::new();
    d.add_tenant("acme", "");
    let host = d.open();
    let _watcher = host.watch().expect("watching");
    let builtin = host.tenant("acme").expect("tenant").versions()[2].clone();
    let new = support::variant(&support::wasm(support::THRESHOLD_POLICY), "partial");

    // Written in place, slowly: half now, the rest later.
    let path = d.plugins_dir().join("acme").join("policy.wasm");
    let mut file = std::fs::File::create(&path).expect("create");
    file.write_all(&new[..new.len() / 2]).expect("half");
    file.flush().expect("flush");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(host.tenant("acme").expect("tenant").versions()[2], builtin, "half a file is not a version");
    assert_eq!(host.rejected_versions(), 0, "half a file is not even tried");
    file.write_all(&new[new.len() / 2..]).expect("rest");
    drop(file);
    let id = support::version_of(&new);
    support::wait_until(Duration::from_secs(5), || {
        host.tenant("acme").is_some_and(|p| p.versions()[2] == id)
    })
    .expect("the complete file goes live");
    assert_eq!(host.rejected_versions(), 0);
}

#[test]
fn tenant_folders_add_and_retire_tenants() {
    let _timing = support::shared();
    let d = Deployment::new();
    let host = d.open();
    let _watcher = host.watch().expect("watching");
    assert!(host.tenant_names().is_empty());
    d.add_tenant("newco", "threshold = 0.7\n");
    support::wait_until(Duration::from_secs(5), || host.tenant("newco").is_some()).expect("tenant added");
    assert_eq!(host.tenant("newco").expect("tenant").config.threshold, 0.7);
    process_window(&host, support::window("newco", "M1", 32, T0, 0.0)).expect("served");

    // Changing tenant.toml alone swaps the configuration.
    d.deploy("newco", "tenant.toml", b"model = \"bearing\"\nthreshold = 0.6\n");
    support::wait_until(Duration::from_secs(5), || {
        host.tenant("newco").is_some_and(|p| p.config.threshold == 0.6)
    })
    .expect("config reloaded");

    std::fs::remove_dir_all(d.plugins_dir().join("newco")).expect("remove");
    support::wait_until(Duration::from_secs(5), || host.tenant("newco").is_none()).expect("tenant retired");
    let err = process_window(&host, support::window("newco", "M1", 32, T0, 0.0)).expect_err("retired");
    assert!(err.to_string().contains("unknown tenant"), "{err}");
}

#[test]
fn a_restart_reuses_compiled_plugins_from_the_cache() {
    let _timing = support::shared();
    let d = Deployment::new();
    d.add_tenant("acme", "");
    d.deploy("acme", "policy.wasm", &support::variant(&support::wasm(support::THRESHOLD_POLICY), "cached"));
    drop(d.open());
    let cached: Vec<_> = walk(&d.root.path().join("cache"));
    assert_eq!(cached.len(), 4, "three built-ins and one tenant version: {cached:?}");
    let before: Vec<_> =
        cached.iter().map(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok()).collect();
    let host = d.open();
    process_window(&host, support::window("acme", "M", 32, T0, 0.0)).expect("served after restart");
    let after: Vec<_> = cached.iter().map(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok()).collect();
    assert_eq!(before, after, "nothing recompiled");
    assert_eq!(walk(&d.root.path().join("cache")).len(), 4);
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out.sort();
    out
}
