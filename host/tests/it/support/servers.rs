//! The cloud side, local: moto server (the AWS APIs), InfluxDB 1.x and VictoriaMetrics, each
//! started on a free loopback port, and a plain HTTP client to read back what they stored.
//! `scripts/test.sh` installs them (moto into a virtualenv: `EDGEPM_MOTO_SERVER`; influxdb and
//! victoria-metrics from Debian); without them these tests fail saying so.

use super::broker::free_port;
use super::wait_until;
use std::io::{Read as _, Write as _};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

fn binary(env: &str, names: &[&str], install: &str) -> PathBuf {
    if let Ok(p) = std::env::var(env) {
        return PathBuf::from(p);
    }
    for dir in std::env::var("PATH").unwrap_or_default().split(':').chain(["/usr/sbin", "/usr/bin"]) {
        for name in names {
            let p = std::path::Path::new(dir).join(name);
            if p.is_file() {
                return p;
            }
        }
    }
    panic!("{} is not installed ({env} unset): {install}", names[0]);
}

/// A minimal HTTP/1.1 request on loopback: `(status, body)`.
pub fn http(method: &str, port: u16, path: &str, headers: &[(&str, &str)], body: &[u8]) -> (u16, String) {
    let (status, head, body) = http_bytes(method, port, path, headers, body);
    let body = String::from_utf8_lossy(&body);
    let body = if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        dechunk(&body)
    } else {
        body.into_owned()
    };
    (status, body)
}

/// Like [`http`], with the response's head and its body as bytes (not de-chunked).
pub fn http_bytes(
    method: &str,
    port: u16,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, String, Vec<u8>) {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30))).expect("timeout");
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).expect("write");
    s.write_all(body).expect("write");
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).expect("read");
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").map_or(raw.len(), |i| i + 4);
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let status = head.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (status, head, raw[split..].to_vec())
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// A percent-encoded query value.
pub fn q(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// A child process that is killed when dropped.
pub struct Server {
    pub port: u16,
    child: Option<Child>,
    pub dir: tempfile::TempDir,
    ready: &'static str,
}

impl Server {
    fn launch(port: u16, ready: &'static str, start: impl FnOnce(u16, &std::path::Path) -> Child) -> Server {
        let dir = tempfile::tempdir().expect("tempdir");
        let child = start(port, dir.path());
        let mut s = Server { port, child: Some(child), dir, ready };
        s.wait_ready();
        s
    }

    fn wait_ready(&mut self) {
        let port = self.port;
        let path = self.ready;
        let up = wait_until(Duration::from_secs(60), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
                && matches!(http("GET", port, path, &[], b"").0, 200..=299)
        });
        assert!(up.is_some(), "the server on port {port} did not answer GET {path} within 60 s");
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Freezes the server (SIGSTOP): connections hang, as over a dead uplink.
    pub fn freeze(&self) {
        self.signal("-STOP");
    }

    /// Thaws a frozen server (SIGCONT).
    pub fn thaw(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, sig: &str) {
        let pid = self.child.as_ref().expect("running").id().to_string();
        let ok = Command::new("kill").args([sig, &pid]).status().expect("kill").success();
        assert!(ok, "kill {sig} {pid}");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill").args(["-CONT", &c.id().to_string()]).status();
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// moto server: the AWS APIs (Timestream, SNS, SES, ...) in memory.
pub fn moto() -> Server {
    let bin = binary(
        "EDGEPM_MOTO_SERVER",
        &["moto_server"],
        "scripts/test.sh installs moto[server] into its virtualenv",
    );
    Server::launch(free_port(), "/moto-api/data.json", move |port: u16, dir: &std::path::Path| {
        let log = std::fs::File::create(dir.join("moto.log")).expect("log");
        Command::new(&bin)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .expect("moto_server")
    })
}

/// What moto stored (`/moto-api/data.json`).
pub fn moto_data(server: &Server) -> serde_json::Value {
    let (status, body) = http("GET", server.port, "/moto-api/data.json", &[], b"");
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).expect("moto data")
}

/// InfluxDB 1.x (`influxd`), with its database `edgepm` created.
pub fn influxdb1() -> Server {
    let bin = binary("EDGEPM_INFLUXD", &["influxd"], "scripts/test.sh installs Debian's influxdb");
    let server = Server::launch(free_port(), "/ping", move |port: u16, dir: &std::path::Path| {
        let rpc = free_port();
        let conf = dir.join("influxdb.conf");
        let d = dir.display();
        std::fs::write(
                &conf,
                format!(
                    "reporting-disabled = true\nbind-address = \"127.0.0.1:{rpc}\"\n[meta]\ndir = \"{d}/meta\"\n\
                     [data]\ndir = \"{d}/data\"\nwal-dir = \"{d}/wal\"\nquery-log-enabled = false\n\
                     [http]\nbind-address = \"127.0.0.1:{port}\"\nlog-enabled = false\n[monitor]\nstore-enabled = false\n"
                ),
            )
            .expect("conf");
        let log = std::fs::File::create(dir.join("influxd.log")).expect("log");
        Command::new(&bin)
            .args(["-config", &conf.display().to_string()])
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .expect("influxd")
    });
    let (status, body) =
        http("POST", server.port, &format!("/query?q={}", q("CREATE DATABASE edgepm")), &[], b"");
    assert_eq!(status, 200, "{body}");
    server
}

/// An InfluxQL query against `edgepm`: the `series` of the first result.
pub fn influxql(server: &Server, query: &str) -> serde_json::Value {
    let (status, body) =
        http("GET", server.port, &format!("/query?db=edgepm&epoch=ms&q={}", q(query)), &[], b"");
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).expect("json");
    v["results"][0]["series"].clone()
}

/// VictoriaMetrics: it accepts InfluxDB's `/api/v2/write`.
pub fn victoria_metrics() -> Server {
    let bin = binary(
        "EDGEPM_VICTORIA_METRICS",
        &["victoria-metrics"],
        "scripts/test.sh installs Debian's victoria-metrics",
    );
    Server::launch(free_port(), "/health", move |port: u16, dir: &std::path::Path| {
        let log = std::fs::File::create(dir.join("vm.log")).expect("log");
        Command::new(&bin)
            .args([
                format!("-httpListenAddr=127.0.0.1:{port}"),
                format!("-storageDataPath={}", dir.join("data").display()),
                "-search.latencyOffset=0s".to_string(),
                // The tests write April 2025: older than the default retention of a month.
                "-retentionPeriod=100y".to_string(),
            ])
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .expect("victoria-metrics")
    })
}
