//! The HTTP endpoints over a real socket: liveness, readiness with versions and problems, and
//! the Prometheus text after real plugin calls.

use crate::support::{self, Deployment, T0};
use edgepm::pipeline::process_window;
use std::io::{Read, Write};

/// A plain HTTP/1.1 GET; returns (status, body).
pub fn get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    write!(s, "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").expect("request");
    let mut text = String::new();
    s.read_to_string(&mut text).expect("response");
    let status = text.split(' ').nth(1).and_then(|c| c.parse().ok()).expect("status line");
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    (status, body)
}

#[test]
fn health_readiness_and_metrics() {
    let _timing = support::shared();
    let d = Deployment::new();
    let host = d.open();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = {
        let host = host.clone();
        std::thread::spawn(move || {
            runtime.block_on(edgepm::api::serve(
                listener,
                edgepm::api::ApiState {
                    host,
                    needs_mqtt: false,
                    store: None,
                    acks: None,
                    events: None,
                    access: edgepm::api::ApiAccess::Open,
                },
                async {
                    let _ = stopped.await;
                },
            ))
        })
    };

    assert_eq!(get(addr, "/healthz"), (200, "ok\n".to_string()));
    let (status, body) = get(addr, "/readyz");
    assert_eq!(status, 503, "no tenant served yet: {body}");

    d.add_tenant("acme", "");
    d.deploy("acme", "policy.wasm", b"not a component");
    host.reload_tenant("acme");
    process_window(&host, support::window("acme", "MTR-1", 32, T0, 0.0)).expect("processed");

    let (status, body) = get(addr, "/readyz");
    assert_eq!(status, 200, "{body}");
    let ready: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(ready["tenants"][0]["name"], "acme");
    assert_eq!(ready["tenants"][0]["plugins"]["policy"]["source"], "builtin:threshold-policy");
    assert_eq!(ready["rejected_versions"], 1);
    let problem = &ready["recent_problems"][0];
    assert_eq!((problem["tenant"].as_str(), problem["kind"].as_str()), (Some("acme"), Some("rejected")));
    assert!(problem["message"].as_str().is_some_and(|m| m.contains("not WebAssembly")), "{problem}");

    let (status, metrics) = get(addr, "/metrics");
    assert_eq!(status, 200);
    assert_eq!(
        support::metric(
            &metrics,
            "edgepm_plugin_calls_total",
            &[("tenant", "acme"), ("stage", "policy"), ("outcome", "ok")]
        ),
        1.0,
        "{metrics}"
    );
    assert_eq!(support::metric(&metrics, "edgepm_windows_processed_total", &[("tenant", "acme")]), 1.0);
    assert_eq!(support::metric(&metrics, "edgepm_plugin_loads_total", &[("result", "rejected")]), 1.0);

    let _ = stop.send(());
    server.join().expect("server thread").expect("clean shutdown");
}
