//! The container runtime behind `--container-runtime-endpoint` (containerd's CRI plugin):
//! the start-up handshake and what the Node says about it.
//!
//! [`connect`] is the kubelet's: `Version` (a runtime that does not answer stops the agent
//! with a message naming the endpoint), then `Status` (RuntimeReady / NetworkReady, and the
//! runtime handlers). A runtime that lists no handlers in `Status` (CRI before 1.30,
//! containerd 1.6) has them read from the verbose status' `config` (containerd's CRI config:
//! `containerd.runtimes`), else only its default `runc`.

use std::time::Duration;

use wasmkube_cri::{Client, Endpoint, Timeouts, v1};

use crate::node::{ContainerRuntimeInfo, RuntimeHandlerInfo};

/// Why the container runtime cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum CriError {
    /// The endpoint is not a unix socket.
    #[error(transparent)]
    Endpoint(#[from] wasmkube_cri::EndpointError),
    /// The runtime did not answer the handshake.
    #[error(
        "the container runtime at {endpoint} does not answer (--container-runtime-endpoint): {error}"
    )]
    Unreachable {
        /// The endpoint.
        endpoint: String,
        /// The failed call.
        error: wasmkube_cri::Error,
    },
}

/// Connects to the runtime at `endpoint` and learns what it runs.
pub(crate) async fn connect(
    endpoint: &str,
    request_timeout: Duration,
) -> Result<(Client, ContainerRuntimeInfo), CriError> {
    let endpoint = Endpoint::parse(endpoint)?;
    let timeouts = Timeouts {
        request: request_timeout,
        ..Timeouts::default()
    };
    let client = Client::new(endpoint.clone(), timeouts);
    let unreachable = |error| CriError::Unreachable {
        endpoint: endpoint.to_string(),
        error,
    };
    let version = client
        .version(v1::VersionRequest {
            version: "v1".into(),
        })
        .await
        .map_err(unreachable)?;
    let status = client
        .status(v1::StatusRequest { verbose: true })
        .await
        .map_err(unreachable)?;
    let conditions = status
        .status
        .as_ref()
        .map(|s| s.conditions.clone())
        .unwrap_or_default();
    let ready = |type_: &str| conditions.iter().any(|c| c.r#type == type_ && c.status);
    let handlers = handlers_of(&status);
    let info = ContainerRuntimeInfo {
        endpoint: endpoint.to_string(),
        name: version.runtime_name.clone(),
        version: version.runtime_version.clone(),
        handlers,
    };
    tracing::info!(
        endpoint = %endpoint,
        runtime = %version.runtime_name,
        version = %version.runtime_version,
        api = %version.runtime_api_version,
        runtime_ready = ready("RuntimeReady"),
        network_ready = ready("NetworkReady"),
        handlers = ?info.handlers.iter().map(|h| h.name.as_str()).collect::<Vec<_>>(),
        "container runtime connected"
    );
    for c in conditions.iter().filter(|c| !c.status) {
        tracing::warn!(condition = %c.r#type, reason = %c.reason, message = %c.message, "the container runtime is not ready");
    }
    Ok((client, info))
}

/// The runtime handlers `status` names (see the module docs).
fn handlers_of(status: &v1::StatusResponse) -> Vec<RuntimeHandlerInfo> {
    let mut handlers: Vec<RuntimeHandlerInfo> = status
        .runtime_handlers
        .iter()
        .filter(|h| !h.name.is_empty())
        .map(|h| RuntimeHandlerInfo {
            name: h.name.clone(),
            recursive_read_only_mounts: h
                .features
                .as_ref()
                .is_some_and(|f| f.recursive_read_only_mounts),
            user_namespaces: h.features.as_ref().is_some_and(|f| f.user_namespaces),
        })
        .collect();
    if handlers.is_empty()
        && let Some(config) = status.info.get("config")
        && let Ok(config) = serde_json::from_str::<serde_json::Value>(config)
        && let Some(runtimes) = config
            .pointer("/containerd/runtimes")
            .and_then(|r| r.as_object())
    {
        handlers = runtimes
            .keys()
            .map(|name| RuntimeHandlerInfo {
                name: name.clone(),
                recursive_read_only_mounts: false,
                user_namespaces: false,
            })
            .collect();
    }
    if handlers.is_empty() {
        handlers.push(RuntimeHandlerInfo {
            name: DEFAULT_HANDLER.into(),
            recursive_read_only_mounts: false,
            user_namespaces: false,
        });
    }
    handlers.sort_by(|a, b| a.name.cmp(&b.name));
    handlers.dedup_by(|a, b| a.name == b.name);
    handlers
}

/// containerd's default runtime handler.
pub(crate) const DEFAULT_HANDLER: &str = "runc";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handlers_come_from_status_else_from_containerds_config_else_runc() {
        let mut status = v1::StatusResponse {
            runtime_handlers: vec![v1::RuntimeHandler {
                name: "crun".into(),
                features: Some(v1::RuntimeHandlerFeatures {
                    recursive_read_only_mounts: true,
                    user_namespaces: false,
                }),
            }],
            ..Default::default()
        };
        let h = handlers_of(&status);
        assert_eq!(h.len(), 1);
        assert_eq!(h[0].name, "crun");
        assert!(h[0].recursive_read_only_mounts);

        status.runtime_handlers.clear();
        status.info.insert(
            "config".into(),
            r#"{"containerd":{"defaultRuntimeName":"runc","runtimes":{"runc":{},"kata":{}}}}"#
                .into(),
        );
        let names: Vec<String> = handlers_of(&status).into_iter().map(|h| h.name).collect();
        assert_eq!(names, ["kata", "runc"]);

        status.info.clear();
        let names: Vec<String> = handlers_of(&status).into_iter().map(|h| h.name).collect();
        assert_eq!(names, ["runc"]);
    }
}

/// How often the agent asks the runtime whether it is up (the kubelet checks every 5 s).
pub(crate) const HEALTH_CHECK: Duration = Duration::from_secs(2);

/// Whether the container runtime answers and says it is ready.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RuntimeHealth {
    /// `Status` answered with RuntimeReady true.
    Ready,
    /// It did not answer, or not ready: why.
    Down(String),
}

/// One health check: `Status`, its `RuntimeReady` condition.
pub(crate) async fn health(client: &Client) -> RuntimeHealth {
    match client.status(v1::StatusRequest { verbose: false }).await {
        Ok(answer) => {
            let ready = answer
                .status
                .iter()
                .flat_map(|s| s.conditions.iter())
                .find(|c| c.r#type == "RuntimeReady");
            match ready {
                Some(c) if c.status => RuntimeHealth::Ready,
                Some(c) => RuntimeHealth::Down(format!(
                    "the container runtime is not ready: {} {}",
                    c.reason, c.message
                )),
                None => RuntimeHealth::Down(
                    "the container runtime's status has no RuntimeReady condition".into(),
                ),
            }
        }
        Err(e) => RuntimeHealth::Down(format!("container runtime is down: {e}")),
    }
}

/// Checks the runtime every [`HEALTH_CHECK`] until `shutdown`, publishing each change to
/// `tx` and calling `changed` with the new state (the agent records a Node event).
pub(crate) async fn monitor(
    client: Client,
    tx: tokio::sync::watch::Sender<RuntimeHealth>,
    changed: impl Fn(&RuntimeHealth),
    shutdown: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => return,
            () = tokio::time::sleep(HEALTH_CHECK) => {}
        }
        let now = health(&client).await;
        if *tx.borrow() != now {
            match &now {
                RuntimeHealth::Ready => tracing::info!("the container runtime is back"),
                RuntimeHealth::Down(why) => tracing::warn!(%why, "the container runtime is down"),
            }
            changed(&now);
            tx.send_replace(now);
        }
    }
}
