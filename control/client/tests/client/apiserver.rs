//! An in-process apiserver on a loopback port, and a client for it.

use std::time::Duration;

use anyhow::Result;
use kube::config::{KubeConfigOptions, Kubeconfig};

/// A running apiserver: its data directory, an admin client, and the sender that stops it
/// (dropping it stops it too).
pub(crate) async fn start_apiserver() -> Result<(
    tempfile::TempDir,
    kube::Client,
    tokio::sync::oneshot::Sender<()>,
)> {
    let dir = tempfile::tempdir()?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = wasmkube_apiserver::start(
        wasmkube_apiserver::Config {
            data_dir: dir.path().to_path_buf(),
            bind: "127.0.0.1:0".parse()?,
            extra_sans: Vec::new(),
            history_max_events: 10_000,
            history_max_age: Duration::from_secs(600),
            default_toleration_seconds: Default::default(),
            authorization_modes: vec![wasmkube_apiserver::authz::AuthorizationMode::Rbac],
            encryption_provider_config: None,
        },
        async move {
            let _ = stopped.await;
        },
    )
    .await?;
    let kubeconfig = Kubeconfig::read_from(&running.kubeconfig)?;
    let config =
        kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?;
    Ok((dir, kube::Client::try_from(config)?, stop))
}
