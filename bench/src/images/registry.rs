//! The registry of `wasmkube-bench images`: Debian's `docker-registry` (the CNCF distribution
//! registry) on a free loopback port, storing into a temporary directory, its access log kept
//! to count what it served; stopped on drop.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::target::free_loopback_port;

const REGISTRY: &str = "docker-registry";
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A running registry.
pub(super) struct Registry {
    _child: tokio::process::Child,
    dir: tempfile::TempDir,
    addr: String,
}

impl Registry {
    /// Starts the registry without authentication and waits until it accepts connections.
    pub(super) async fn start() -> anyhow::Result<Self> {
        if which(REGISTRY).is_none() {
            bail!("`{REGISTRY}` is not installed: `apt-get install docker-registry`");
        }
        let dir = tempfile::Builder::new()
            .prefix("wasmkube-bench-registry-")
            .tempdir()
            .context("cannot create the registry's directory")?;
        let addr = format!("127.0.0.1:{}", free_loopback_port()?);
        let config = dir.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: info\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {addr}\n  secret: wasmkube-bench\n",
                dir.path().join("data").display()
            ),
        )?;
        let log = std::fs::File::create(log_path(dir.path()))?;
        let child = tokio::process::Command::new(REGISTRY)
            .arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log))
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start {REGISTRY}"))?;
        let deadline = Instant::now() + START_TIMEOUT;
        while tokio::net::TcpStream::connect(&addr).await.is_err() {
            if Instant::now() > deadline {
                bail!(
                    "{REGISTRY} did not listen on {addr} within {START_TIMEOUT:?}; its log:\n{}",
                    std::fs::read_to_string(log_path(dir.path())).unwrap_or_default()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(Self {
            _child: child,
            dir,
            addr,
        })
    }

    /// `127.0.0.1:PORT`.
    pub(super) fn addr(&self) -> &str {
        &self.addr
    }

    /// How many GETs of blob `digest` the registry has completed, from its log's
    /// "response completed" lines.
    pub(super) fn blob_gets(&self, digest: &str) -> anyhow::Result<usize> {
        let log = std::fs::read_to_string(log_path(self.dir.path()))
            .context("cannot read the registry's log")?;
        Ok(count_blob_gets(&log, digest))
    }
}

fn log_path(dir: &Path) -> PathBuf {
    dir.join("registry.log")
}

/// The "response completed" lines of GETs of `/v2/.../blobs/<digest>`.
fn count_blob_gets(log: &str, digest: &str) -> usize {
    let blob = format!("/blobs/{digest}\"");
    log.lines()
        .filter(|l| {
            l.contains("msg=\"response completed\"")
                && l.contains("http.request.method=GET")
                && l.contains(&blob)
        })
        .count()
}

/// The path of `command` on PATH.
pub(crate) fn which(command: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(command))
            .find(|p| p.is_file())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_completed_gets_of_the_blob_count() {
        let log = r#"time="x" level=info msg="response completed" http.request.method=GET http.request.uri="/v2/bench/a/blobs/sha256:ab" http.response.status=200
time="x" level=info msg="response completed" http.request.method=HEAD http.request.uri="/v2/bench/a/blobs/sha256:ab" http.response.status=200
time="x" level=info msg="response completed" http.request.method=GET http.request.uri="/v2/bench/a/blobs/sha256:cd" http.response.status=200
time="x" level=info msg="response completed" http.request.method=GET http.request.uri="/v2/bench/a/manifests/v1" http.response.status=200
"#;
        assert_eq!(count_blob_gets(log, "sha256:ab"), 1);
        assert_eq!(count_blob_gets(log, "sha256:cd"), 1);
        assert_eq!(count_blob_gets(log, "sha256:ef"), 0);
    }
}
