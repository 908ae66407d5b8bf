//! A real mosquitto on a free loopback port, the `edgepm run` binary as a child process, and
//! mosquitto_pub / mosquitto_sub. `scripts/test.sh` installs mosquitto; without it these tests
//! fail with a message saying so (they never pass by skipping).

use super::{BEARING_FEATURES, MODEL_SCORE, THRESHOLD_POLICY, wait_until};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

fn require(tool: &str) -> PathBuf {
    for dir in std::env::var("PATH").unwrap_or_default().split(':').chain(["/usr/sbin", "/usr/bin"]) {
        let p = Path::new(dir).join(tool);
        if p.is_file() {
            return p;
        }
    }
    panic!("{tool} is not installed: scripts/test.sh installs mosquitto and mosquitto-clients");
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

/// A mosquitto broker that queues without limit for persistent sessions.
pub struct Mosquitto {
    pub port: u16,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Mosquitto {
    pub fn start() -> Mosquitto {
        Self::start_with("")
    }

    /// Starts mosquitto with `extra` appended to its configuration (e.g. a TLS listener).
    pub fn start_with(extra: &str) -> Mosquitto {
        Self::start_on(free_port(), extra)
    }

    /// Starts mosquitto on `port` (e.g. a broker that comes back where the last one was).
    pub fn start_on(port: u16, extra: &str) -> Mosquitto {
        let bin = require("mosquitto");
        let dir = tempfile::tempdir().expect("tempdir");
        let conf = dir.path().join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!(
                "listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n\
                 max_queued_messages 0\nmax_queued_bytes 0\nmax_inflight_messages 100\n{extra}"
            ),
        )
        .expect("conf");
        let log = std::fs::File::create(dir.path().join("mosquitto.log")).expect("log");
        let child = Command::new(bin)
            .arg("-c")
            .arg(&conf)
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("starting mosquitto");
        let up =
            wait_until(Duration::from_secs(10), || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());
        assert!(
            up.is_some(),
            "mosquitto did not listen on {port}: {}",
            std::fs::read_to_string(dir.path().join("mosquitto.log")).unwrap_or_default()
        );
        Mosquitto { port, child, _dir: dir }
    }

    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }

    /// Stops the broker process (SIGSTOP): connections stay open, nothing is answered.
    pub fn freeze(&self) {
        let ok = Command::new("kill").args(["-STOP", &self.child.id().to_string()]).status().expect("kill");
        assert!(ok.success(), "SIGSTOP mosquitto");
    }

    /// Kills the broker (SIGKILL, also when frozen): its connections are reset.
    pub fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn publish_lines(&self, topic: &str, lines: &[String]) {
        Publisher { port: self.port }.publish_lines(topic, lines);
    }

    pub fn publish_file(&self, topic: &str, file: &Path) {
        Publisher { port: self.port }.publish_file(topic, file);
    }
}

/// mosquitto_pub against a broker port (usable from another thread).
#[derive(Clone, Copy)]
pub struct Publisher {
    pub port: u16,
}

impl Publisher {
    /// Publishes each line of `lines` as one QoS 1 message on `topic` (mosquitto_pub -l); returns
    /// once the broker acknowledged all of them.
    pub fn publish_lines(&self, topic: &str, lines: &[String]) {
        let mut child = Command::new(require("mosquitto_pub"))
            .args(["-p", &self.port.to_string(), "-h", "127.0.0.1", "-q", "1", "-t", topic, "-l"])
            .stdin(Stdio::piped())
            .spawn()
            .expect("mosquitto_pub");
        {
            let mut stdin = child.stdin.take().expect("stdin");
            for l in lines {
                stdin.write_all(l.as_bytes()).expect("write");
                stdin.write_all(b"\n").expect("write");
            }
        }
        assert!(child.wait().expect("mosquitto_pub").success(), "mosquitto_pub failed");
    }

    /// Publishes the bytes of a file as one QoS 1 message (mosquitto_pub -f).
    pub fn publish_file(&self, topic: &str, file: &Path) {
        let status = Command::new(require("mosquitto_pub"))
            .args(["-p", &self.port.to_string(), "-h", "127.0.0.1", "-q", "1", "-t", topic, "-f"])
            .arg(file)
            .status()
            .expect("mosquitto_pub");
        assert!(status.success(), "mosquitto_pub -f failed");
    }
}

impl Mosquitto {
    /// Starts `mosquitto_sub -v` on `filters`; read what arrived with [`Subscriber::messages`].
    pub fn subscribe(&self, filters: &[&str]) -> Subscriber {
        let out = tempfile::NamedTempFile::new().expect("file");
        let mut cmd = Command::new(require("mosquitto_sub"));
        cmd.args(["-p", &self.port.to_string(), "-h", "127.0.0.1", "-q", "1", "-v"]);
        for f in filters {
            cmd.args(["-t", f]);
        }
        let child = cmd.stdout(out.reopen().expect("reopen")).spawn().expect("mosquitto_sub");
        // mosquitto_sub has no "subscribed" signal; the broker takes well under this.
        std::thread::sleep(Duration::from_millis(300));
        Subscriber { child, out }
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub struct Subscriber {
    child: Child,
    out: tempfile::NamedTempFile,
}

impl Subscriber {
    /// `(topic, payload)` of every message received so far.
    pub fn messages(&self) -> Vec<(String, String)> {
        std::fs::read_to_string(self.out.path())
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split_once(' ').map(|(t, p)| (t.to_string(), p.to_string())))
            .collect()
    }

    /// Waits until `cond` holds on the messages received.
    pub fn wait_for(
        &self,
        limit: Duration,
        cond: impl Fn(&[(String, String)]) -> bool,
    ) -> Vec<(String, String)> {
        wait_until(limit, || cond(&self.messages()));
        self.messages()
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A data folder with tenant `tenant` deployed (the reference plugins, `tenant_toml`) and the
/// baseline model as `default`.
pub fn data_dir_with_tenant(root: &Path, tenant: &str, tenant_toml: &str) -> PathBuf {
    let data = root.join("data");
    let t = data.join("plugins").join(tenant);
    std::fs::create_dir_all(&t).expect("tenant folder");
    for (file, src) in [
        ("preprocess.wasm", BEARING_FEATURES),
        ("score.wasm", MODEL_SCORE),
        ("policy.wasm", THRESHOLD_POLICY),
    ] {
        std::fs::copy(src, t.join(file)).expect("deploy plugin");
    }
    std::fs::write(t.join("tenant.toml"), tenant_toml).expect("tenant.toml");
    edgepm::model::baseline::write(&data.join("models"), "default").expect("baseline model");
    data
}

/// `edgepm run` as a child process.
pub struct HostProcess {
    child: Option<Child>,
    /// Extra environment of the next (re)start.
    pub env: Vec<(String, String)>,
    pub config: PathBuf,
    pub log: PathBuf,
    pub data: PathBuf,
    /// Hand the configuration over in `EDGEPM_CONFIG` (its text), not `--config <file>`.
    pub config_in_env: bool,
    /// Length of the log when the current process was launched: what it wrote comes after.
    launched_at: usize,
}

impl HostProcess {
    /// Writes `<root>/edgepm.toml` for `data` and the broker at `url` (plus `extra` TOML
    /// appended) and starts the host; returns once it subscribed.
    pub fn start(root: &Path, data: &Path, url: &str, extra: &str) -> HostProcess {
        let mut h = HostProcess::spawn(root, data, url, extra);
        h.wait_subscribed(0);
        h
    }

    /// Like [`HostProcess::start`], with `env` added to the host's environment.
    pub fn start_with_env(
        root: &Path,
        data: &Path,
        url: &str,
        extra: &str,
        env: &[(&str, &str)],
    ) -> HostProcess {
        let mut h = HostProcess::configure(root, data, url, extra);
        h.env = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        h.launch();
        h.wait_subscribed(0);
        h
    }

    /// Like [`HostProcess::start`], but returns at once, without waiting for the host to connect
    /// (it may never: the tests of refused connections).
    pub fn spawn(root: &Path, data: &Path, url: &str, extra: &str) -> HostProcess {
        let mut h = HostProcess::configure(root, data, url, extra);
        h.launch();
        h
    }

    /// A host serving tenant `acme` (reference plugins, `tenant_toml`) whose `/api/v1` requires
    /// the bearer `token` (`[http] token_env`).
    pub fn start_with_token(root: &Path, url: &str, tenant_toml: &str, token: &str) -> HostProcess {
        let data = data_dir_with_tenant(root, "acme", tenant_toml);
        // The configuration ends in its [http] table: the token variable joins it.
        HostProcess::start_with_env(
            root,
            &data,
            url,
            "token_env = \"EDGEPM_IT_TOKEN\"\n",
            &[("EDGEPM_IT_TOKEN", token)],
        )
    }

    /// Starts the host with `text` as its whole configuration, given as a container's task
    /// definition gives it: the TOML itself in `EDGEPM_CONFIG`, no file named. Returns once it
    /// subscribed. `env` is added to its environment.
    pub fn start_from_env(root: &Path, data: &Path, text: &str, env: &[(&str, &str)]) -> HostProcess {
        let config = root.join("edgepm.toml");
        std::fs::write(&config, text).expect("config");
        let mut h = HostProcess {
            child: None,
            env: env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            config,
            log: root.join("host.log"),
            data: data.to_path_buf(),
            config_in_env: true,
            launched_at: 0,
        };
        h.launch();
        h.wait_subscribed(0);
        h
    }

    /// Writes the configuration; starts nothing.
    fn configure(root: &Path, data: &Path, url: &str, extra: &str) -> HostProcess {
        let config = root.join("edgepm.toml");
        std::fs::write(
            &config,
            format!(
                "data_dir = {data:?}\nwatch_plugins = false\n[mqtt]\nurl = {url:?}\nclient_id = \"edgepm-it\"\n\
                 [http]\nlisten = \"127.0.0.1:0\"\n{extra}"
            ),
        )
        .expect("config");
        HostProcess {
            child: None,
            env: Vec::new(),
            config,
            log: root.join("host.log"),
            data: data.to_path_buf(),
            config_in_env: false,
            launched_at: 0,
        }
    }

    /// Starts the host again with the same configuration and data (appending to the log).
    pub fn restart(&mut self) {
        let before = self.log_text().matches("Subscribed").count();
        self.launch();
        self.wait_subscribed(before);
    }

    /// Spawns `edgepm run` with the configuration, the extra environment and the log.
    fn launch(&mut self) {
        self.launched_at = self.log_text().len();
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log).expect("log");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_edgepm"));
        cmd.arg("run");
        if self.config_in_env {
            cmd.env("EDGEPM_CONFIG", std::fs::read_to_string(&self.config).expect("config"));
        } else {
            cmd.arg("--config").arg(&self.config);
        }
        let child = cmd
            .env("RUST_LOG", "info,cranelift=warn")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("starting edgepm run");
        self.child = Some(child);
    }

    /// Waits until the log has two more "Subscribed" lines than `before` (both subscriptions).
    fn wait_subscribed(&mut self, before: usize) {
        let subscribed = wait_until(Duration::from_secs(60), || {
            self.log_text().matches("Subscribed").count() >= before + 2 || self.exited()
        });
        assert!(
            subscribed.is_some() && !self.exited(),
            "the host did not subscribe; log:\n{}",
            self.log_text()
        );
    }

    /// Waits up to `limit` for the host to exit on its own; its exit status.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let mut status = None;
        wait_until(limit, || {
            status = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten());
            status.is_some()
        });
        if status.is_some() {
            self.child = None;
        }
        status
    }

    fn exited(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| c.try_wait().ok().flatten().is_some())
    }

    /// Where the current process serves /healthz, /readyz and /metrics (the newest address it
    /// logged: a SIGHUP reload binds again).
    /// The host starts HTTP after its ingest session, so the line may come a little after the
    /// subscription.
    pub fn http_addr(&self) -> std::net::SocketAddr {
        let listening = |log: &str| {
            let own = log.get(self.launched_at..).unwrap_or_default();
            own.lines().rev().find(|l| l.contains("HTTP endpoints listening")).map(str::to_string)
        };
        let mut line = None;
        wait_until(Duration::from_secs(30), || {
            line = listening(&self.log_text());
            line.is_some()
        });
        let line = line.unwrap_or_else(|| panic!("no HTTP address in the log:\n{}", self.log_text()));
        let addr = line.split("addr=").nth(1).and_then(|r| r.split_whitespace().next()).expect("addr=");
        addr.parse().unwrap_or_else(|e| panic!("{addr:?}: {e}"))
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGKILL: no shutdown code runs.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Sends `signal` to the running host.
    pub fn signal(&self, signal: i32) {
        let c = self.child.as_ref().expect("a running host");
        // SAFETY: sending a signal to our own child process id.
        assert_eq!(unsafe { libc::kill(c.id() as i32, signal) }, 0, "kill");
    }

    /// SIGTERM and wait: the clean shutdown path. Panics when it does not exit 0.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: sending a signal to our own child process id.
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            let status = c.wait().expect("wait");
            assert!(status.success(), "edgepm run exited with {status}; log:\n{}", self.log_text());
        }
    }

    pub fn store(&self) -> rusqlite::Connection {
        let c = rusqlite::Connection::open(self.data.join("edgepm.db")).expect("open store");
        c.busy_timeout(Duration::from_secs(10)).expect("busy timeout");
        c
    }

    /// The single integer `sql` selects; a query that fails is a test failure, never a number.
    pub fn count(&self, sql: &str) -> i64 {
        self.store().query_row(sql, [], |r| r.get(0)).unwrap_or_else(|e| panic!("{sql}: {e}"))
    }
}

impl Drop for HostProcess {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A throw-away CA with a server certificate for 127.0.0.1 and a client certificate, made with
/// the openssl command line.
pub struct Certificates {
    _dir: tempfile::TempDir,
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

impl Certificates {
    pub fn generate() -> Certificates {
        let openssl = require("openssl");
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        let run = |args: &[&str]| {
            let out = Command::new(&openssl).args(args).current_dir(d).output().expect("openssl");
            assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        };
        let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
        run(&[
            &["req", "-x509"][..],
            &ec,
            &["-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=edgepm test CA"],
        ]
        .concat());
        std::fs::write(d.join("server.ext"), "subjectAltName=IP:127.0.0.1,DNS:localhost\n").expect("ext");
        std::fs::write(d.join("client.ext"), "extendedKeyUsage=clientAuth\n").expect("ext");
        for who in ["server", "client"] {
            let (key, csr, pem, ext) =
                (format!("{who}.key"), format!("{who}.csr"), format!("{who}.pem"), format!("{who}.ext"));
            run(&[
                &["req"][..],
                &ec,
                &["-keyout", &key, "-out", &csr, "-subj", &format!("/CN=edgepm-{who}")],
            ]
            .concat());
            run(&[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                &pem,
                "-days",
                "2",
                "-extfile",
                &ext,
            ]);
        }
        // mosquitto started as root drops to its own user before reading the certificates.
        use std::os::unix::fs::PermissionsExt as _;
        let _ = std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755));
        for f in ["ca.pem", "server.pem", "server.key"] {
            let _ = std::fs::set_permissions(d.join(f), std::fs::Permissions::from_mode(0o644));
        }
        Certificates {
            ca: d.join("ca.pem"),
            server_cert: d.join("server.pem"),
            server_key: d.join("server.key"),
            client_cert: d.join("client.pem"),
            client_key: d.join("client.key"),
            _dir: dir,
        }
    }

    /// A mosquitto listener on `port` that requires a client certificate signed by the CA.
    pub fn mosquitto_listener(&self, port: u16) -> String {
        self.mosquitto_listener_on("127.0.0.1", port)
    }

    /// The same on another loopback address (`127.0.0.2`: not a name the server certificate has).
    pub fn mosquitto_listener_on(&self, addr: &str, port: u16) -> String {
        format!(
            "listener {port} {addr}\ncafile {}\ncertfile {}\nkeyfile {}\nrequire_certificate true\n",
            self.ca.display(),
            self.server_cert.display(),
            self.server_key.display()
        )
    }
}
