//! A policy plugin that misbehaves on demand, for the host's tests only.
//!
//! Tenant settings: `chaos` = `loop` (never returns), `oom` (allocates without bound), `trap`
//! (panics), `error` (returns an error), `escape` (tries to read the environment, the file system
//! and the network, and returns what it got as an error), `sleep` (sleeps 20 s: a blocking WASI
//! poll), `stdin` (reads standard input to its end), `socket` (tries to open a listening TCP
//! socket and returns what happened as an error), `history` (asks about another device's
//! history), `big-alert` (raises an alert with a 1 MiB body), `slow` (computes for `chaos_ms`
//! milliseconds, default 20, then behaves: slow but valid) or unset (behaves: failure above
//! 0.5, no alerts);
//! `chaos_device`, when set, limits the misbehaviour to that device, so the version passes the
//! host's smoke call and misbehaves later on real windows.

#[cfg(target_arch = "wasm32")]
mod component {
    use edgepm_sdk::policy::{Decision, Features, Guest, Score, host};

    struct Chaos;

    impl Guest for Chaos {
        fn decide(device: String, _ts_ms: i64, _f: Features, s: Score) -> Result<Decision, String> {
            let targeted = host::config("chaos_device").is_none_or(|d| d == device);
            match host::config("chaos").as_deref() {
                Some("loop") if targeted => loop {
                    std::hint::black_box(&device);
                },
                Some("oom") if targeted => {
                    let mut hoard: Vec<Vec<u8>> = Vec::new();
                    loop {
                        hoard.push(vec![1u8; 1 << 20]);
                        std::hint::black_box(&hoard);
                    }
                }
                Some("trap") if targeted => panic!("chaos: deliberate trap for {device}"),
                Some("error") if targeted => Err(format!("chaos: deliberate error for {device}")),
                Some("escape") if targeted => Err(escape()),
                Some("sleep") if targeted => {
                    std::thread::sleep(std::time::Duration::from_secs(20));
                    Ok(Decision { is_failure: false, alerts: vec![] })
                }
                Some("stdin") if targeted => {
                    let mut text = String::new();
                    let read = std::io::Read::read_to_string(&mut std::io::stdin(), &mut text);
                    Err(format!("stdin: {read:?}, {} bytes", text.len()))
                }
                Some("socket") if targeted => match std::net::TcpListener::bind("127.0.0.1:0") {
                    Ok(l) => Err(format!("socket: listening on {:?}", l.local_addr())),
                    Err(e) => Err(format!("socket: denied ({e})")),
                },
                Some("history") if targeted => {
                    let other = edgepm_sdk::policy::history::last_alert_ms("SOMEONE-ELSE");
                    Ok(Decision { is_failure: other.is_some(), alerts: vec![] })
                }
                Some("slow") if targeted => {
                    let ms = host::config("chaos_ms").and_then(|m| m.parse().ok()).unwrap_or(20);
                    let until = std::time::Instant::now() + std::time::Duration::from_millis(ms);
                    while std::time::Instant::now() < until {
                        std::hint::black_box(&device);
                    }
                    Ok(Decision { is_failure: s.probability > 0.5, alerts: vec![] })
                }
                Some("big-alert") if targeted => Ok(Decision {
                    is_failure: true,
                    alerts: vec![edgepm_sdk::policy::Alert {
                        severity: edgepm_sdk::policy::Severity::Critical,
                        subject: "big".into(),
                        body: "x".repeat(1 << 20),
                    }],
                }),
                _ => Ok(Decision { is_failure: s.probability > 0.5, alerts: vec![] }),
            }
        }
    }

    /// What the sandbox let through, as `env=<n> args=<n> fs=<...> net=<...>`.
    fn escape() -> String {
        let env = std::env::vars().count();
        let args = std::env::args().count();
        let fs = match std::fs::read_dir("/") {
            Ok(entries) => format!("listed {} entries", entries.count()),
            Err(e) => format!("denied ({e})"),
        };
        let net = match std::net::TcpStream::connect("127.0.0.1:9") {
            Ok(_) => "connected".to_string(),
            Err(e) => format!("denied ({e})"),
        };
        format!("env={env} args={args} fs={fs} net={net}")
    }

    edgepm_sdk::policy::export!(Chaos);
}
