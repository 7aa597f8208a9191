//! An apiserver for tests (the `testing` feature): started in the test's process on a loopback
//! port and a temporary data directory, with an admin client for it. One helper for every
//! crate's tests, so a new [`Config`] field is set in one place ([`Config::new`]).
//!
//! ```no_run
//! # async fn example() -> Result<(), wasmkube_apiserver::testing::TestApiserverError> {
//! let api = wasmkube_apiserver::testing::TestApiserver::start().await?;
//! let pods: kube::Api<k8s_openapi::api::core::v1::Pod> = kube::Api::default_namespaced(api.client());
//! # Ok(()) }
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use kube::config::{KubeConfigOptions, Kubeconfig, KubeconfigError};
use tokio::sync::oneshot;

use crate::server::{Config, StartError, start};

/// How long [`TestApiserver::stop`] waits for the server to finish.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a test apiserver cannot be started or stopped.
#[derive(Debug, thiserror::Error)]
pub enum TestApiserverError {
    /// The temporary data directory cannot be created.
    #[error("cannot create a temporary data directory: {0}")]
    TempDir(#[source] std::io::Error),
    /// The apiserver does not start.
    #[error("the apiserver does not start: {0}")]
    Start(#[from] StartError),
    /// The admin kubeconfig it wrote cannot be read.
    #[error("cannot read the admin kubeconfig: {0}")]
    Kubeconfig(#[from] KubeconfigError),
    /// No client can be made from the admin kubeconfig.
    #[error("cannot make a client: {0}")]
    Client(#[from] kube::Error),
    /// The apiserver did not stop within 30 s.
    #[error("the apiserver did not stop within {STOP_TIMEOUT:?}")]
    StopTimeout,
    /// [`TestApiserver::restart`] while it runs, or [`TestApiserver::stop`] while stopped.
    #[error("the apiserver is {0}")]
    State(&'static str),
}

/// A running apiserver, its temporary data directory and an admin client. Dropping it stops
/// the server and deletes the directory.
pub struct TestApiserver {
    /// The server's current run: its stop switch and task; `None` after [`Self::stop`].
    run: Option<Run>,
    addr: SocketAddr,
    kubeconfig: PathBuf,
    client: kube::Client,
    config: Config,
    // Last, so the server has been told to stop before its directory goes.
    dir: tempfile::TempDir,
}

struct Run {
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl std::fmt::Debug for TestApiserver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestApiserver")
            .field("addr", &self.addr)
            .field("data_dir", &self.dir.path())
            .field("running", &self.run.is_some())
            .finish_non_exhaustive()
    }
}

impl TestApiserver {
    /// Starts an apiserver with [`Config::new`]'s settings on `127.0.0.1:0`.
    pub async fn start() -> Result<TestApiserver, TestApiserverError> {
        Self::start_with(|_| {}).await
    }

    /// Starts an apiserver with [`Config::new`]'s settings on `127.0.0.1:0` as changed by
    /// `configure` (its `data_dir` is the temporary directory, which `configure` may replace
    /// with a path under it).
    pub async fn start_with(
        configure: impl FnOnce(&mut Config),
    ) -> Result<TestApiserver, TestApiserverError> {
        let dir = tempfile::tempdir().map_err(TestApiserverError::TempDir)?;
        let mut config = Config::new(dir.path(), SocketAddr::from(([127, 0, 0, 1], 0)));
        configure(&mut config);
        let (run, addr, kubeconfig) = run(config.clone()).await?;
        let kubeconfig_yaml = Kubeconfig::read_from(&kubeconfig)?;
        let client_config =
            kube::Config::from_custom_kubeconfig(kubeconfig_yaml, &KubeConfigOptions::default())
                .await?;
        Ok(TestApiserver {
            run: Some(run),
            addr,
            kubeconfig,
            client: kube::Client::try_from(client_config)?,
            config,
            dir,
        })
    }

    /// An admin client (`system:masters`).
    pub fn client(&self) -> kube::Client {
        self.client.clone()
    }

    /// The temporary directory (the data directory unless the configuration moved it).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The configuration it runs with.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The admin kubeconfig it wrote.
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// Stops the server and waits until it has; the data directory stays.
    pub async fn stop(&mut self) -> Result<(), TestApiserverError> {
        let run = self
            .run
            .take()
            .ok_or(TestApiserverError::State("stopped"))?;
        let _ = run.stop.send(());
        // The server's own outcome (an I/O error while serving) is not this call's concern.
        let _outcome = tokio::time::timeout(STOP_TIMEOUT, run.task)
            .await
            .map_err(|_| TestApiserverError::StopTimeout)?;
        Ok(())
    }

    /// Starts the stopped server again, on the same address and data directory.
    pub async fn restart(&mut self) -> Result<(), TestApiserverError> {
        if self.run.is_some() {
            return Err(TestApiserverError::State("running"));
        }
        let config = Config {
            bind: self.addr,
            ..self.config.clone()
        };
        let (run, _, _) = run(config).await?;
        self.run = Some(run);
        Ok(())
    }
}

/// Starts the apiserver with `config`.
async fn run(config: Config) -> Result<(Run, SocketAddr, PathBuf), StartError> {
    let (stop, stopped) = oneshot::channel::<()>();
    let running = start(config, async move {
        let _ = stopped.await;
    })
    .await?;
    let run = Run {
        stop,
        task: running.task,
    };
    Ok((run, running.addr, running.kubeconfig))
}
