//! A running `kubectl port-forward` whose output the test reads, and `curl` to its local
//! port (`tests/e2e/port_forward.rs`, and the container pods' tests).

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use super::TestCluster;

/// How long kubectl may take to start forwarding or to print a line.
const KUBECTL_DEADLINE: Duration = Duration::from_secs(60);

/// A running `kubectl port-forward` and what it printed so far.
pub(crate) struct PortForward {
    child: Child,
    stdout: Arc<Mutex<String>>,
    stderr: Arc<Mutex<String>>,
}

impl PortForward {
    /// Starts `kubectl [flags...] port-forward args...` with `env` set.
    pub(crate) fn start(
        cluster: &TestCluster,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Result<PortForward> {
        let mut full = vec!["port-forward"];
        full.extend_from_slice(args);
        let mut cmd: Command = cluster.kubectl_command(&full);
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().context("spawning kubectl port-forward")?;
        let collect = |pipe: Option<Box<dyn tokio::io::AsyncRead + Send + Unpin>>| {
            let text = Arc::new(Mutex::new(String::new()));
            if let Some(pipe) = pipe {
                let text = Arc::clone(&text);
                tokio::spawn(async move {
                    let mut lines = BufReader::new(pipe).lines();
                    while let Ok(Some(line)) = lines.next_line().await {
                        let mut t = text.lock().unwrap_or_else(|e| e.into_inner());
                        t.push_str(&line);
                        t.push('\n');
                    }
                });
            }
            text
        };
        let stdout = collect(
            child
                .stdout
                .take()
                .map(|p| Box::new(p) as Box<dyn tokio::io::AsyncRead + Send + Unpin>),
        );
        let stderr = collect(
            child
                .stderr
                .take()
                .map(|p| Box::new(p) as Box<dyn tokio::io::AsyncRead + Send + Unpin>),
        );
        Ok(PortForward {
            child,
            stdout,
            stderr,
        })
    }

    pub(crate) fn stdout(&self) -> String {
        self.stdout
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub(crate) fn stderr(&self) -> String {
        self.stderr
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Waits until stdout or stderr contains `text`; fails early if kubectl exits.
    pub(crate) async fn wait_for(&mut self, what: &str, text: &str) -> Result<()> {
        let until = tokio::time::Instant::now() + KUBECTL_DEADLINE;
        loop {
            if self.stdout().contains(text) || self.stderr().contains(text) {
                return Ok(());
            }
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "kubectl port-forward exited with {status} before {what}; stdout:\n{}\nstderr:\n{}",
                    self.stdout(),
                    self.stderr()
                );
            }
            if tokio::time::Instant::now() >= until {
                bail!(
                    "{what}: {text:?} not printed within {KUBECTL_DEADLINE:?}; stdout:\n{}\nstderr:\n{}",
                    self.stdout(),
                    self.stderr()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Fails if kubectl is no longer running.
    pub(crate) fn ensure_running(&mut self) -> Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!(
                "kubectl port-forward exited with {status}; stdout:\n{}\nstderr:\n{}",
                self.stdout(),
                self.stderr()
            );
        }
        Ok(())
    }
}

/// `curl -sS http://127.0.0.1:port/path`: the body, or curl's error.
pub(crate) async fn curl(port: u16, path: &str) -> Result<String> {
    let url = format!("http://127.0.0.1:{port}{path}");
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        Command::new("curl")
            .args(["-sS", "--max-time", "30", &url])
            .kill_on_drop(true)
            .output(),
    )
    .await
    .with_context(|| format!("curl {url} did not finish"))?
    .context("running curl (apt-get install curl)")?;
    if !out.status.success() {
        bail!(
            "curl {url} failed with {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
