//! `edgepm healthcheck`: a container's health check. Asks the host's `/healthz` over plain
//! HTTP/1.1 on loopback and exits 0 on a 200, 1 otherwise — so an image needs neither a shell
//! nor curl (`HEALTHCHECK CMD ["edgepm", "healthcheck"]`).

use anyhow::Context as _;
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::process::ExitCode;
use std::time::Duration;

#[derive(clap::Args)]
pub struct HealthcheckArgs {
    /// The host's HTTP address (`[http] listen` of edgepm.toml).
    #[arg(long, default_value = "127.0.0.1:9464")]
    pub addr: SocketAddr,
    /// The path asked; `/readyz` also requires a connected broker and a served tenant.
    #[arg(long, default_value = "/healthz")]
    pub path: String,
    /// Give up after this long (seconds).
    #[arg(long, default_value_t = 5)]
    pub timeout: u64,
}

pub fn run(args: HealthcheckArgs) -> anyhow::Result<ExitCode> {
    match status(&args) {
        Ok(200) => {
            println!("{}{}: 200", args.addr, args.path);
            Ok(ExitCode::SUCCESS)
        }
        Ok(code) => {
            eprintln!("{}{}: HTTP {code}", args.addr, args.path);
            Ok(ExitCode::FAILURE)
        }
        Err(e) => {
            eprintln!("{}{}: {e:#}", args.addr, args.path);
            Ok(ExitCode::FAILURE)
        }
    }
}

/// The status code of `GET <path>`.
fn status(args: &HealthcheckArgs) -> anyhow::Result<u16> {
    let timeout = Duration::from_secs(args.timeout.max(1));
    let mut stream = TcpStream::connect_timeout(&args.addr, timeout).context("connecting")?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    write!(stream, "GET {} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n", args.path, args.addr)
        .context("sending the request")?;
    let mut head = [0u8; 64];
    let mut n = 0;
    while n < 12 {
        let read = stream.read(&mut head[n..]).context("reading the answer")?;
        anyhow::ensure!(read > 0, "the connection closed before a status line");
        n += read;
    }
    let line = String::from_utf8_lossy(&head[..n]);
    line.strip_prefix("HTTP/1.")
        .and_then(|rest| rest.get(2..5))
        .and_then(|code| code.parse().ok())
        .with_context(|| format!("not an HTTP answer: {line:?}"))
}
