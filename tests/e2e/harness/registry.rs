//! A real OCI registry for the tests: Debian's `docker-registry` (the CNCF distribution
//! registry) on a free loopback port, storing into a temporary directory, stopped on drop.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tokio::process::{Child, Command};

use super::{free_port, poll_until};

/// The registry's command (Debian package `docker-registry`, which tests/run installs).
const REGISTRY: &str = "docker-registry";

/// The user of [`TestRegistry::start_with_auth`].
pub(crate) const REGISTRY_USER: &str = "alice";
/// Its password.
pub(crate) const REGISTRY_PASSWORD: &str = "s3cret";
/// bcrypt (cost 4, so each request verifies fast) of [`REGISTRY_PASSWORD`], as the
/// registry's htpasswd file takes it.
const PASSWORD_BCRYPT: &str = "$2b$04$TEwEvWLqP3TN5E/hDyHiZOB9kQKuoAMQXP68tE0JcEGBM/0TIiUoq";

/// A running registry.
pub(crate) struct TestRegistry {
    child: Child,
    dir: tempfile::TempDir,
    addr: String,
}

/// Starts the registry with `config` (its log appended to `log`) and waits until `addr`
/// accepts connections.
async fn serve(config: &Path, log: &Path, addr: &str) -> Result<Child> {
    let log_file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)?;
    let child = Command::new(REGISTRY)
        .arg("serve")
        .arg(config)
        .stdin(Stdio::null())
        .stdout(Stdio::from(log_file.try_clone()?))
        .stderr(Stdio::from(log_file))
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {REGISTRY}"))?;
    poll_until(
        "the registry to answer",
        Duration::from_secs(30),
        || async {
            let answer = tokio::net::TcpStream::connect(addr).await.is_ok();
            Ok(answer.then_some(()))
        },
    )
    .await
    .with_context(|| {
        format!(
            "waiting for http://{addr}/v2/; its log: {}",
            std::fs::read_to_string(log).unwrap_or_default()
        )
    })?;
    Ok(child)
}

impl TestRegistry {
    /// Starts a registry without authentication on 127.0.0.1 and waits until `/v2/` answers.
    pub(crate) async fn start() -> Result<TestRegistry> {
        TestRegistry::start_with(false).await
    }

    /// Starts a registry that asks for HTTP basic credentials: [`REGISTRY_USER`] with
    /// [`REGISTRY_PASSWORD`].
    pub(crate) async fn start_with_auth() -> Result<TestRegistry> {
        TestRegistry::start_with(true).await
    }

    async fn start_with(auth: bool) -> Result<TestRegistry> {
        if which(REGISTRY).is_none() {
            bail!(
                "`{REGISTRY}` is not installed: `apt-get install docker-registry` (tests/run \
                 installs it)"
            );
        }
        let dir = tempfile::tempdir()?;
        let port = free_port()?;
        let addr = format!("127.0.0.1:{port}");
        let config = dir.path().join("config.yml");
        let mut yaml = format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {addr}\n  secret: wasmkube-tests\n",
            dir.path().join("data").display()
        );
        if auth {
            let htpasswd = dir.path().join("htpasswd");
            std::fs::write(&htpasswd, format!("{REGISTRY_USER}:{PASSWORD_BCRYPT}\n"))?;
            yaml.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: wasmkube-tests\n    path: {}\n",
                htpasswd.display()
            ));
        }
        std::fs::write(&config, yaml)?;
        let child = serve(&config, &dir.path().join("registry.log"), &addr).await?;
        let registry = TestRegistry { child, dir, addr };
        Ok(registry)
    }

    /// `127.0.0.1:PORT`.
    pub(crate) fn addr(&self) -> &str {
        &self.addr
    }

    /// Where the registry keeps blob `digest` (`sha256:<hex>`), to tamper with.
    pub(crate) fn blob_data(&self, digest: &str) -> PathBuf {
        let hex = digest.trim_start_matches("sha256:");
        self.dir
            .path()
            .join("data/docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }

    /// Stops the registry (it then refuses connections).
    pub(crate) async fn stop(&mut self) -> Result<()> {
        self.child.kill().await.context("stopping the registry")
    }

    /// Starts the stopped registry again, on the same address with the same storage.
    pub(crate) async fn start_again(&mut self) -> Result<()> {
        let config = self.dir.path().join("config.yml");
        self.child = serve(&config, &self.dir.path().join("registry.log"), &self.addr).await?;
        Ok(())
    }
}

/// The path of `command` on PATH.
pub(crate) fn which(command: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(command))
            .find(|p| Path::new(p).is_file())
    })
}
