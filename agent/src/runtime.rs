//! The agent's container runtime seam: what the pod lifecycle needs from whatever runs a
//! container. [`wasm::WasmRuntime`] implements it on `wasmkube-runtime` (wasmtime); a CRI
//! runtime (containerd) is meant to be a second implementation, so the lifecycle code never
//! knows which one runs a container.
//!
//! A start either fails before anything runs ([`StartError`]: the workload's fault, such as
//! a module with an unsatisfied import, or the runtime's) or yields a [`RunningContainer`]:
//! a handle to stop it and a future of its [`Outcome`]. Outcomes are workload results
//! (exit codes, traps, limit hits), never agent errors.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use futures::future::BoxFuture;

use crate::images::ResolvedImage;
use crate::logs::ContainerLog;

pub(crate) mod cri;
pub(crate) mod wasm;

/// How an instance ended (the agent's view, whichever runtime ran it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Exited with this code.
    Exited(i32),
    /// Trapped (a wasm trap, or a fatal host error).
    Trapped {
        /// What happened.
        message: String,
    },
    /// Went past its memory limit.
    OutOfMemory,
    /// Was stopped by the agent.
    Stopped,
    /// Spent its CPU time budget.
    CpuTimeExceeded,
    /// Could not be started (instantiation failed, no room in the instance pool).
    StartFailed {
        /// Why.
        message: String,
    },
}

/// A directory the container sees (a volume mount).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Mount {
    /// Directory on the node.
    pub(crate) host: PathBuf,
    /// Path inside the container.
    pub(crate) guest: String,
    /// Whether writes are refused.
    pub(crate) read_only: bool,
}

/// Resource limits of one container.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Limits {
    /// Memory limit in bytes (`resources.limits.memory`).
    pub(crate) memory_bytes: Option<u64>,
    /// CPU time budget in milliseconds (not set from `limits.cpu`, which is a rate).
    pub(crate) cpu_millis: Option<u64>,
    /// CPU rate limit in millicores (`resources.limits.cpu`), enforced as a CFS-style quota
    /// per period.
    pub(crate) cpu_millicores: Option<u64>,
}

/// Everything needed to start one instance of a container.
#[derive(Debug, Clone)]
pub(crate) struct ContainerSpec {
    /// `namespace/pod/container`, for logs.
    pub(crate) id: String,
    /// The resolved image.
    pub(crate) image: ResolvedImage,
    /// argv, `argv[0]` first.
    pub(crate) args: Vec<String>,
    /// Environment.
    pub(crate) env: Vec<(String, String)>,
    /// Volumes.
    pub(crate) mounts: Vec<Mount>,
    /// Where stdout and stderr go.
    pub(crate) log: ContainerLog,
    /// Limits.
    pub(crate) limits: Limits,
    /// Addresses to serve on (pod IP and each TCP `containerPort`) when the program is an
    /// HTTP handler; ignored for commands.
    pub(crate) listen: Vec<SocketAddr>,
    /// The pod's network for its guests (pod IP, resolver, connection policy); `None` when
    /// the pod has no IP: no sockets.
    pub(crate) network: Option<wasmkube_runtime::GuestNetwork>,
}

/// What kind of workload a started container is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Workload {
    /// A process: it runs until it exits.
    Process,
    /// An HTTP handler served on the pod's ports until stopped.
    HttpHandler,
}

/// Stops a running instance.
pub(crate) trait StopHandle: Send + Sync {
    /// Asks the instance to stop. An HTTP handler stops accepting at once and lets requests in
    /// flight finish within `grace`; a process has no signals to catch, so it is stopped at
    /// its next epoch tick whatever `grace` is.
    fn stop(&self, grace: Duration);
}

/// A started instance.
pub(crate) struct RunningContainer {
    /// Process or HTTP handler.
    pub(crate) workload: Workload,
    /// Stops it.
    pub(crate) stopper: Box<dyn StopHandle>,
    /// Resolves to how it ended.
    pub(crate) outcome: BoxFuture<'static, Outcome>,
    /// Where its `exec` probes run (a container of the CRI runtime; `None` for wasm).
    pub(crate) exec: Option<Box<crate::probes::ExecTarget>>,
}

impl std::fmt::Debug for RunningContainer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunningContainer")
            .field("workload", &self.workload)
            .finish_non_exhaustive()
    }
}

/// Why a start failed before anything ran.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum StartError {
    /// The workload is at fault (invalid module, unsatisfied import, too large, a port in
    /// use): the instance counts as ended with `StartError`.
    #[error("{0}")]
    Workload(String),
    /// The runtime failed on its own; the start is retried later.
    #[error("runtime error: {0}")]
    Internal(String),
    /// The start took longer than the runtime allows (a compilation past its timeout); it
    /// is retried later, like a CRI call past the kubelet's runtime request timeout.
    #[error("{0}")]
    Timeout(String),
}

/// Runs containers.
#[async_trait::async_trait]
pub(crate) trait ContainerRuntime: Send + Sync + 'static {
    /// The scheme of container IDs (`wasmtime://`).
    fn scheme(&self) -> &'static str;

    /// Starts one instance.
    async fn start(&self, spec: ContainerSpec) -> Result<RunningContainer, StartError>;
}
