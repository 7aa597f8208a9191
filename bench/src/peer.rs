//! The peer the workload benchmarks compare with: the wasmtime CLI (`wasmtime run`,
//! `wasmtime compile`, `wasmtime serve`) on the same modules, in the same run.
//!
//! The CLI is not a dependency of the build; `scripts/bench` installs it
//! (`cargo install wasmtime-cli --version 48.0.8 --locked --root /var/tmp/tools`) and passes
//! `--wasmtime PATH`. Without it the peer rows say they were not measured.

use std::ffi::OsStr;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::io::AsyncReadExt as _;

/// Where `scripts/bench` installs the CLI.
const INSTALLED_PATH: &str = "/var/tmp/tools/bin/wasmtime";

/// What a peer row says when there is no CLI.
pub(crate) const NOT_FOUND: &str =
    "not measured: wasmtime CLI not found; run scripts/bench to install it";

/// How long one `wasmtime run` may take to print its first byte.
const FIRST_BYTE_TIMEOUT: Duration = Duration::from_secs(30);

/// The wasmtime CLI.
#[derive(Clone, Debug)]
pub(crate) struct Wasmtime {
    path: PathBuf,
    /// `wasmtime --version`, e.g. `wasmtime 48.0.8 (...)`.
    pub(crate) version: String,
}

impl Wasmtime {
    /// The CLI at `explicit`, else `wasmtime` on `PATH`, else [`INSTALLED_PATH`]; `None` when
    /// there is none (or it does not answer `--version`).
    pub(crate) async fn find(explicit: Option<&Path>) -> Option<Self> {
        let candidates: Vec<PathBuf> = match explicit {
            Some(path) => vec![path.to_path_buf()],
            None => {
                let on_path = std::env::var_os("PATH")
                    .map(|paths| {
                        std::env::split_paths(&paths)
                            .map(|dir| dir.join("wasmtime"))
                            .filter(|p| p.is_file())
                            .collect::<Vec<_>>()
                    })
                    .unwrap_or_default();
                on_path
                    .into_iter()
                    .chain([PathBuf::from(INSTALLED_PATH)])
                    .collect()
            }
        };
        for path in candidates {
            let Ok(output) = tokio::process::Command::new(&path)
                .arg("--version")
                .stdin(Stdio::null())
                .output()
                .await
            else {
                continue;
            };
            if output.status.success() {
                let version = String::from_utf8_lossy(&output.stdout).trim().to_owned();
                return Some(Self { path, version });
            }
        }
        None
    }

    /// Runs `wasmtime <args>` and measures from just before the process is spawned until its
    /// first byte on stdout (the guest is running and has printed); then kills it.
    pub(crate) async fn time_to_first_byte<I, S>(&self, args: I) -> anyhow::Result<Duration>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut command = tokio::process::Command::new(&self.path);
        command
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true);
        let start = Instant::now();
        let mut child = command
            .spawn()
            .with_context(|| format!("cannot run {}", self.path.display()))?;
        let mut stdout = child.stdout.take().context("no stdout pipe")?;
        let mut byte = [0u8; 1];
        let read = tokio::time::timeout(FIRST_BYTE_TIMEOUT, stdout.read(&mut byte)).await;
        let elapsed = start.elapsed();
        let _ = child.start_kill();
        let _ = child.wait().await;
        match read {
            Ok(Ok(1)) => Ok(elapsed),
            Ok(Ok(_)) => bail!("wasmtime run exited without printing"),
            Ok(Err(e)) => Err(e).context("cannot read wasmtime's stdout"),
            Err(_) => bail!("wasmtime run printed nothing within {FIRST_BYTE_TIMEOUT:?}"),
        }
    }

    /// `wasmtime compile -o OUT MODULE`: a precompiled `.cwasm` for `--allow-precompiled`.
    pub(crate) async fn compile(&self, module: &Path, out: &Path) -> anyhow::Result<()> {
        let output = tokio::process::Command::new(&self.path)
            .arg("compile")
            .arg("-o")
            .arg(out)
            .arg(module)
            .stdin(Stdio::null())
            .output()
            .await
            .with_context(|| format!("cannot run {} compile", self.path.display()))?;
        if !output.status.success() {
            bail!(
                "wasmtime compile {} failed: {}",
                module.display(),
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        Ok(())
    }

    /// Starts `wasmtime serve --addr ADDR COMPONENT` (its handlers' output discarded) and
    /// waits until the address accepts connections.
    pub(crate) async fn serve(&self, component: &Path, addr: SocketAddr) -> anyhow::Result<Serve> {
        let mut child = tokio::process::Command::new(&self.path)
            .arg("serve")
            .arg("--addr")
            .arg(addr.to_string())
            .arg(component)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot run {} serve", self.path.display()))?;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if tokio::net::TcpStream::connect(addr).await.is_ok() {
                return Ok(Serve { child });
            }
            if let Some(status) = child.try_wait()? {
                bail!("wasmtime serve exited ({status}) before it listened on {addr}");
            }
            if Instant::now() >= deadline {
                bail!("wasmtime serve did not listen on {addr} within 60 s");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// A running `wasmtime serve`; killed when dropped or stopped.
pub(crate) struct Serve {
    child: tokio::process::Child,
}

impl Serve {
    /// Kills the server and waits for it.
    pub(crate) async fn stop(mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_missing_cli_is_not_found() {
        let dir = tempfile::tempdir().expect("temp dir");
        assert!(
            Wasmtime::find(Some(&dir.path().join("wasmtime")))
                .await
                .is_none()
        );
    }
}
