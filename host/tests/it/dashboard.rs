//! The dashboard in a real browser: Debian's headless Chromium driven over WebDriver
//! (chromedriver, installed by scripts/test.sh), against a host fed simulated motors through
//! mosquitto. What a user would notice: every view shows data, a new prediction appears without
//! a reload, an acknowledgement survives a reload. A screenshot is kept in
//! `<target>/test-artifacts/dashboard.png`.

use crate::support::broker::{HostProcess, Mosquitto, free_port};
use crate::support::servers::http;
use crate::support::wait_until;
use crate::telemetry::TENANT_TOML;
use serde_json::{Value, json};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// chromedriver on a free port, and one headless Chromium session.
struct Browser {
    driver: Child,
    port: u16,
    session: String,
    /// Where the browser saves downloads.
    downloads: tempfile::TempDir,
}

impl Browser {
    fn start() -> Browser {
        let port = free_port();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver is not installed: scripts/test.sh installs Debian's chromium-driver");
        let up =
            wait_until(Duration::from_secs(20), || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());
        assert!(up.is_some(), "chromedriver did not start");
        let downloads = tempfile::tempdir().expect("downloads folder");
        let caps = json!({"capabilities": {"alwaysMatch": {"browserName": "chrome", "goog:chromeOptions": {
            "binary": "/usr/bin/chromium",
            "prefs": {"download.default_directory": downloads.path(), "download.prompt_for_download": false},
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1400,1800", "--no-first-run", "--disable-extensions"]}}}});
        let mut b = Browser { driver, port, session: String::new(), downloads };
        let v = b.call("POST", "/session", &caps);
        b.session = v["sessionId"].as_str().unwrap_or_else(|| panic!("no session: {v}")).to_string();
        b
    }

    fn call(&self, method: &str, path: &str, body: &Value) -> Value {
        let body = if body.is_null() { String::new() } else { body.to_string() };
        let (status, text) = webdriver_http(method, self.port, path, body.as_bytes());
        let v: Value =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{method} {path}: {status} {e}: {text}"));
        assert_eq!(status, 200, "{method} {path}: {v}");
        v["value"].clone()
    }

    fn go(&self, url: &str) {
        self.call("POST", &format!("/session/{}/url", self.session), &json!({ "url": url }));
    }

    /// Runs `script` (a function body) in the page; its return value.
    fn js(&self, script: &str) -> Value {
        self.call(
            "POST",
            &format!("/session/{}/execute/sync", self.session),
            &json!({"script": script, "args": []}),
        )
    }

    fn wait_js(&self, what: &str, script: &str) -> Value {
        let mut last = Value::Null;
        let ok = wait_until(Duration::from_secs(30), || {
            last = self.js(script);
            last.as_bool() == Some(true)
        });
        assert!(
            ok.is_some(),
            "{what}: the page never got there; status: {}",
            self.js("return document.getElementById('status').textContent")
        );
        last
    }

    fn screenshot(&self, path: &std::path::Path) {
        use base64::Engine as _;
        let v = self.call("GET", &format!("/session/{}/screenshot", self.session), &Value::Null);
        let png = base64::engine::general_purpose::STANDARD.decode(v.as_str().expect("base64")).expect("png");
        std::fs::create_dir_all(path.parent().expect("folder")).expect("artifact folder");
        std::fs::write(path, png).expect("screenshot");
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = webdriver_http("DELETE", self.port, &format!("/session/{}", self.session), b"");
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// One request to chromedriver, which keeps its connections open (so the answer ends at its
/// Content-Length, not at a close).
fn webdriver_http(method: &str, port: u16, path: &str, body: &[u8]) -> (u16, String) {
    use std::io::{BufRead as _, Read as _, Write as _};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect chromedriver");
    s.set_read_timeout(Some(Duration::from_secs(60))).expect("timeout");
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .expect("write");
    s.write_all(body).expect("write");
    let mut reader = std::io::BufReader::new(s);
    let mut status_line = String::new();
    reader.read_line(&mut status_line).expect("status line");
    let status = status_line.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let mut length = 0usize;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).expect("header");
        if line.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':')
            && k.eq_ignore_ascii_case("content-length")
        {
            length = v.trim().parse().unwrap_or(0);
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).expect("body");
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// `n` readings of `motor` from `start` (ms), 100 ms apart.
fn readings(motor: &mut edgepm::sim::Motor, t_s: f64, n: usize, start: i64) -> Vec<String> {
    (0..n)
        .map(|i| {
            let (_, p) = motor.payload(start + i as i64 * 100, t_s, 64);
            String::from_utf8(p).expect("utf-8")
        })
        .collect()
}

#[test]
#[ignore = "needs mosquitto and chromium: run scripts/test.sh"]
fn the_dashboard_shows_every_view_updates_live_and_keeps_an_acknowledgement() {
    let _timing = crate::support::shared();
    let broker = Mosquitto::start();
    let root = tempfile::tempdir().expect("tempdir");
    // The shipped bearing pipeline (the XGBoost model: explanations by TreeSHAP) as tenant acme.
    let data = root.path().join("data");
    let deployed = Command::new(env!("CARGO_BIN_EXE_edgepm"))
        .args(["tenant", "deploy", "bearing", "--as", "acme", "--plugins-dir"])
        .arg(data.join("plugins"))
        .arg("--models-dir")
        .arg(data.join("models"))
        .output()
        .expect("edgepm tenant deploy");
    assert!(deployed.status.success(), "{}", String::from_utf8_lossy(&deployed.stderr));
    // Every score explained, not only those above the threshold: the top-5 view shows why.
    let toml = data.join("plugins/acme/tenant.toml");
    let text = std::fs::read_to_string(&toml).expect("tenant.toml");
    assert!(text.contains("[settings]\n"), "{text}");
    std::fs::write(&toml, text.replace("[settings]\n", "[settings]\nexplain = \"always\"\n"))
        .expect("tenant.toml");
    let host = HostProcess::start(root.path(), &data, &broker.url(), "");
    let port = host.http_addr().port();
    // Eight motors with their asset records (positions, install dates); two have failed. 40
    // readings each: windows of 32 every 8, two predictions per motor.
    let mut motors = edgepm::sim::fleet("acme", 8, 2, 0.0, 1.0, 11);
    for m in motors.iter_mut() {
        let (topic, asset) = m.asset_message();
        broker.publish_lines(&topic, &[String::from_utf8(asset).expect("utf-8")]);
        let lines = readings(m, 2.0, 40, edgepm::clock::now_ms() - 4_000);
        broker.publish_lines(&format!("edgepm/acme/{}/telemetry", m.spec.device), &lines);
    }
    let scored = wait_until(Duration::from_secs(60), || host.count("SELECT count(*) FROM predictions") == 16);
    assert!(scored.is_some(), "{}", host.log_text());

    let browser = Browser::start();
    let url = format!("http://127.0.0.1:{port}/");
    browser.go(&url);
    browser.wait_js("loaded", "return document.body.getAttribute('data-ready') === 'true'");
    // Every view with data.
    let views = browser.js("return {
          chart: document.querySelectorAll('#chart .uplot canvas').length,
          points: parseInt(document.getElementById('chart').getAttribute('data-points'), 10),
          markers: document.querySelectorAll('#map-sites circle.marker').length,
          red: document.querySelectorAll('#map-sites circle.risk-high').length,
          sites: document.querySelectorAll('#map-sites figure').length,
          top: document.querySelectorAll('#top5 tr.device').length,
          topFirst: document.querySelector('#top5 tr.device').getAttribute('data-device'),
          contributions: document.querySelectorAll('#top5 ul.contributions li').length,
          ages: document.querySelectorAll('#age-bands tr.age-band').length,
          alerts: document.querySelectorAll('#alert-list tr.alert').length,
          degradation: document.querySelectorAll('#degradation-list tr').length,
          tenants: document.querySelectorAll('#version-list tr.tenant').length,
        }");
    assert!(views["chart"].as_u64() >= Some(1) && views["points"].as_u64() >= Some(1), "{views}");
    assert_eq!(views["markers"], 8, "{views}");
    assert_eq!(views["red"], 2, "the two failed motors in red: {views}");
    assert_eq!(views["sites"], 3, "{views}");
    assert_eq!(views["top"], 5, "{views}");
    assert!(["acme/MTR-001", "acme/MTR-002"].contains(&views["topFirst"].as_str().unwrap_or("")), "{views}");
    assert!(
        views["contributions"].as_u64() >= Some(5 * 4),
        "each top row names its 4 strongest contributions: {views}"
    );
    assert_eq!(browser.js("return document.querySelectorAll('#top5 ul.contributions li.none').length"), 0);
    assert!(views["ages"].as_u64() >= Some(2), "{views}");
    let stored_alerts = host.count("SELECT count(*) FROM alerts");
    assert_eq!(views["alerts"].as_i64(), Some(stored_alerts.min(20)), "{views}");
    assert!(views["degradation"].as_u64() >= Some(1), "{views}");
    assert_eq!(views["tenants"], 1, "{views}");
    browser.screenshot(
        &std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("../test-artifacts/dashboard.png"),
    );

    // The weekly report downloads from the page: a PDF of the week the data is in.
    let week = browser.js("return document.getElementById('report-week').value");
    let newest = host.count("SELECT max(ts_ms) FROM predictions");
    assert_eq!(
        week,
        edgepm::report::IsoWeek::containing(newest).to_string().as_str(),
        "the newest week first"
    );
    browser.js("document.getElementById('report-download').click(); return null");
    let saved = browser.downloads.path().join(format!("edgepm-report-{}.pdf", week.as_str().expect("week")));
    let done = wait_until(Duration::from_secs(30), || {
        // (Chromium writes a .crdownload and renames it when complete.)
        std::fs::read(&saved).is_ok_and(|pdf| pdf.starts_with(b"%PDF-") && pdf.len() > 10_000)
    });
    assert!(
        done.is_some(),
        "no report downloaded to {}; status: {}",
        saved.display(),
        browser.js("return document.getElementById('status').textContent")
    );

    // A new prediction appears without a reload: MTR-008 was healthy; now it has failed.
    let before = browser.js("return parseInt(document.body.getAttribute('data-events') || '0', 10)");
    let mut m8 = edgepm::sim::fleet("acme", 8, 8, 0.0, 1.0, 11).remove(7);
    // (After the first 40 readings, which ended when they were published.)
    let later = host.count("SELECT max(ts_ms) FROM readings WHERE device = 'MTR-008'") + 100;
    broker.publish_lines("edgepm/acme/MTR-008/telemetry", &readings(&mut m8, 2.0, 32, later));
    browser.wait_js(
        "live update",
        &format!(
            "return parseInt(document.body.getAttribute('data-events') || '0', 10) > {before}
               && document.querySelector('#map-sites circle[data-device=\"acme/MTR-008\"]').classList.contains('risk-high')"
        ),
    );

    // Acknowledge the newest alert in the page; it is still acknowledged after a reload.
    let id = browser.js("const row = document.querySelector('#alert-list tr.alert');
         row.querySelector('input.ack-by').value = 'Ana';
         row.querySelector('input.ack-note').value = 'bearing ordered';
         row.querySelector('button.ack').click();
         return row.getAttribute('data-id');");
    let id = id.as_str().expect("alert id").to_string();
    let acked = format!(
        "const row = document.querySelector('#alert-list tr.alert[data-id=\"{id}\"]');
         return !!row && !!row.querySelector('.acknowledged') && row.querySelector('.acknowledged').textContent.includes('Ana');"
    );
    browser.wait_js("acknowledged", &acked);
    browser.go(&url);
    browser.wait_js("reloaded", "return document.body.getAttribute('data-ready') === 'true'");
    browser.wait_js("still acknowledged", &acked);
    let stored: String =
        host.store().query_row("SELECT acked_by FROM alert_acks", [], |r| r.get(0)).expect("ack");
    assert_eq!(stored, "Ana");
    let mut host = host;
    host.stop();
}

#[test]
#[ignore = "needs mosquitto and chromium: run scripts/test.sh"]
fn with_a_token_the_dashboard_asks_for_it_and_the_api_refuses_requests_without_it() {
    let _timing = crate::support::shared();
    let broker = Mosquitto::start();
    let root = tempfile::tempdir().expect("tempdir");
    let mut host = HostProcess::start_with_token(root.path(), &broker.url(), TENANT_TOML, "tok-42");
    let port = host.http_addr().port();
    let browser = Browser::start();
    browser.go(&format!("http://127.0.0.1:{port}/"));
    browser.wait_js("asks for the token", "return !document.getElementById('token-form').hidden");
    assert_eq!(browser.js("return document.body.getAttribute('data-ready')"), Value::Null);
    let (status, _) = http("GET", port, "/api/v1/devices", &[], b"");
    assert_eq!(status, 401);
    browser.js("document.getElementById('token-input').value = 'tok-42';
         document.getElementById('token-form').requestSubmit(); return true;");
    browser.wait_js("opens with it", "return document.body.getAttribute('data-ready') === 'true'");
    host.stop();
}
