//! [`Client`]: the CRI runtime and image services over a unix socket.
//!
//! The connection is lazy and reconnects by itself (tonic's `Channel`), as grpc-go's does
//! for the kubelet: a runtime that restarts is found again by the next call. Every call has
//! a deadline ([`Timeouts`]); a call past it is [`Error::Timeout`], and the message of a
//! call the runtime refused reads as grpc-go prints it (`rpc error: code = NotFound desc =
//! ...`), which is what the kubelet puts in pod status and events.

use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use tonic::transport::Channel;

use crate::v1;
use crate::v1::image_service_client::ImageServiceClient;
use crate::v1::runtime_service_client::RuntimeServiceClient;

/// A `--container-runtime-endpoint`: a unix socket, `unix:///path` (or a bare absolute path,
/// which the kubelet takes as well).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    socket: PathBuf,
}

/// Why an endpoint was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EndpointError {
    /// Not `unix:///absolute/path`.
    #[error(
        "container runtime endpoint {0:?}: only unix sockets are supported, as unix:///path/to/socket"
    )]
    NotUnix(String),
}

impl Endpoint {
    /// Parses `unix:///path` or `/path`.
    pub fn parse(s: &str) -> Result<Self, EndpointError> {
        let path = s.strip_prefix("unix://").unwrap_or(s);
        if !path.starts_with('/') || path.len() < 2 {
            return Err(EndpointError::NotUnix(s.to_string()));
        }
        Ok(Endpoint {
            socket: PathBuf::from(path),
        })
    }

    /// The socket's path.
    pub fn socket(&self) -> &std::path::Path {
        &self.socket
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "unix://{}", self.socket.display())
    }
}

/// Deadlines of the calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// Every call but the ones below (the kubelet's `--runtime-request-timeout`, 2 minutes).
    pub request: Duration,
    /// `Version`, `Status` and the status/list calls the agent polls: short, so a runtime
    /// that hangs is reported down quickly.
    pub status: Duration,
    /// `PullImage`: the kubelet gives pulls no deadline of their own; a long one here so a
    /// wedged pull still ends.
    pub pull: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            request: Duration::from_secs(120),
            status: Duration::from_secs(10),
            pull: Duration::from_secs(30 * 60),
        }
    }
}

/// A CRI call that failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// The runtime answered with an error (or could not be reached: `Unavailable`).
    #[error("rpc error: code = {code:?} desc = {message}")]
    Status {
        /// The RPC.
        method: &'static str,
        /// gRPC code.
        code: tonic::Code,
        /// The runtime's message.
        message: String,
    },
    /// No answer within the deadline.
    #[error("rpc error: code = DeadlineExceeded desc = {method}: no answer within {after:?}")]
    Timeout {
        /// The RPC.
        method: &'static str,
        /// The deadline.
        after: Duration,
    },
}

impl Error {
    /// The gRPC code (`DeadlineExceeded` for a timeout).
    pub fn code(&self) -> tonic::Code {
        match self {
            Error::Status { code, .. } => *code,
            Error::Timeout { .. } => tonic::Code::DeadlineExceeded,
        }
    }

    /// The runtime's own message (without the `rpc error: ...` frame).
    pub fn message(&self) -> String {
        match self {
            Error::Status { message, .. } => message.clone(),
            Error::Timeout { .. } => self.to_string(),
        }
    }

    /// Whether the runtime said the object does not exist.
    pub fn is_not_found(&self) -> bool {
        self.code() == tonic::Code::NotFound
    }
}

/// Both CRI services of one runtime; cheap to clone (one connection).
#[derive(Debug, Clone)]
pub struct Client {
    endpoint: Endpoint,
    runtime: RuntimeServiceClient<Channel>,
    image: ImageServiceClient<Channel>,
    timeouts: Timeouts,
}

async fn call<T>(
    method: &'static str,
    after: Duration,
    fut: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
) -> Result<T, Error> {
    match tokio::time::timeout(after, fut).await {
        Ok(Ok(r)) => Ok(r.into_inner()),
        Ok(Err(status)) => {
            tracing::debug!(method, code = ?status.code(), message = status.message(), "CRI call failed");
            Err(Error::Status {
                method,
                code: status.code(),
                message: status.message().to_string(),
            })
        }
        Err(_) => Err(Error::Timeout { method, after }),
    }
}

/// One runtime-service RPC with the given deadline field of [`Timeouts`].
macro_rules! runtime_rpc {
    ($(#[$doc:meta])* $name:ident, $req:ident, $resp:ident, $timeout:ident) => {
        $(#[$doc])*
        pub async fn $name(&self, req: v1::$req) -> Result<v1::$resp, Error> {
            let mut c = self.runtime.clone();
            call(stringify!($name), self.timeouts.$timeout, c.$name(req)).await
        }
    };
}

/// One image-service RPC with the given deadline field of [`Timeouts`].
macro_rules! image_rpc {
    ($(#[$doc:meta])* $name:ident, $req:ident, $resp:ident, $timeout:ident) => {
        $(#[$doc])*
        pub async fn $name(&self, req: v1::$req) -> Result<v1::$resp, Error> {
            let mut c = self.image.clone();
            call(stringify!($name), self.timeouts.$timeout, c.$name(req)).await
        }
    };
}

impl Client {
    /// A client of the runtime at `endpoint`. Nothing is dialled yet: the first call
    /// connects (see [`Client::version`] for the handshake).
    pub fn new(endpoint: Endpoint, timeouts: Timeouts) -> Self {
        // tonic dials a `unix:` endpoint's socket itself.
        let channel = tonic::transport::Endpoint::from_shared(endpoint.to_string())
            .expect("a unix: endpoint is always valid")
            .connect_lazy();
        Client {
            runtime: RuntimeServiceClient::new(channel.clone())
                .max_decoding_message_size(16 * 1024 * 1024),
            image: ImageServiceClient::new(channel).max_decoding_message_size(16 * 1024 * 1024),
            endpoint,
            timeouts,
        }
    }

    /// The endpoint.
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// The deadlines.
    pub fn timeouts(&self) -> Timeouts {
        self.timeouts
    }

    runtime_rpc!(
        /// `Version`: the runtime's name and versions (the kubelet's handshake).
        version, VersionRequest, VersionResponse, status
    );
    runtime_rpc!(
        /// `Status`: RuntimeReady / NetworkReady and, verbose, the runtime handlers.
        status, StatusRequest, StatusResponse, status
    );
    runtime_rpc!(
        /// `RunPodSandbox`.
        run_pod_sandbox, RunPodSandboxRequest, RunPodSandboxResponse, request
    );
    runtime_rpc!(
        /// `StopPodSandbox` (idempotent).
        stop_pod_sandbox, StopPodSandboxRequest, StopPodSandboxResponse, request
    );
    runtime_rpc!(
        /// `RemovePodSandbox` (idempotent).
        remove_pod_sandbox, RemovePodSandboxRequest, RemovePodSandboxResponse, request
    );
    runtime_rpc!(
        /// `PodSandboxStatus`.
        pod_sandbox_status, PodSandboxStatusRequest, PodSandboxStatusResponse, status
    );
    runtime_rpc!(
        /// `ListPodSandbox`.
        list_pod_sandbox, ListPodSandboxRequest, ListPodSandboxResponse, status
    );
    runtime_rpc!(
        /// `CreateContainer`.
        create_container, CreateContainerRequest, CreateContainerResponse, request
    );
    runtime_rpc!(
        /// `StartContainer`.
        start_container, StartContainerRequest, StartContainerResponse, request
    );
    runtime_rpc!(
        /// `RemoveContainer`.
        remove_container, RemoveContainerRequest, RemoveContainerResponse, request
    );
    runtime_rpc!(
        /// `ListContainers`.
        list_containers, ListContainersRequest, ListContainersResponse, status
    );
    runtime_rpc!(
        /// `ContainerStatus`.
        container_status, ContainerStatusRequest, ContainerStatusResponse, status
    );
    runtime_rpc!(
        /// `ReopenContainerLog`.
        reopen_container_log, ReopenContainerLogRequest, ReopenContainerLogResponse, request
    );
    runtime_rpc!(
        /// `Exec`: a URL of the runtime's streaming server that serves the command's
        /// streams (the kubelet proxies `pods/exec` to it).
        exec, ExecRequest, ExecResponse, request
    );
    runtime_rpc!(
        /// `Attach`: a URL of the streaming server attached to the container's streams.
        attach, AttachRequest, AttachResponse, request
    );
    runtime_rpc!(
        /// `PortForward`: a URL of the streaming server forwarding to the sandbox's ports.
        port_forward, PortForwardRequest, PortForwardResponse, request
    );
    image_rpc!(
        /// `ImageStatus`.
        image_status, ImageStatusRequest, ImageStatusResponse, status
    );
    image_rpc!(
        /// `PullImage` (the long deadline).
        pull_image, PullImageRequest, PullImageResponse, pull
    );
    image_rpc!(
        /// `RemoveImage`.
        remove_image, RemoveImageRequest, RemoveImageResponse, request
    );

    /// `StopContainer`: the runtime sends SIGTERM, then SIGKILL after `timeout` seconds; the
    /// call's own deadline is the request timeout plus that, as the kubelet's.
    pub async fn stop_container(&self, container_id: &str, grace: Duration) -> Result<(), Error> {
        let mut c = self.runtime.clone();
        let req = v1::StopContainerRequest {
            container_id: container_id.to_string(),
            timeout: i64::try_from(grace.as_secs()).unwrap_or(i64::MAX),
        };
        call(
            "stop_container",
            self.timeouts.request + grace,
            c.stop_container(req),
        )
        .await
        .map(|_| ())
    }

    /// `ExecSync`: runs `cmd` in the container, at most `timeout` (0: none, bounded by the
    /// request timeout), as an exec probe does.
    pub async fn exec_sync(
        &self,
        container_id: &str,
        cmd: Vec<String>,
        timeout: Duration,
    ) -> Result<v1::ExecSyncResponse, Error> {
        let mut c = self.runtime.clone();
        let req = v1::ExecSyncRequest {
            container_id: container_id.to_string(),
            cmd,
            timeout: i64::try_from(timeout.as_secs()).unwrap_or(i64::MAX),
        };
        call(
            "exec_sync",
            self.timeouts.request + timeout,
            c.exec_sync(req),
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_unix_sockets_as_the_kubelet_takes_them() {
        let e = Endpoint::parse("unix:///run/containerd/containerd.sock").unwrap();
        assert_eq!(
            e.socket(),
            std::path::Path::new("/run/containerd/containerd.sock")
        );
        assert_eq!(e.to_string(), "unix:///run/containerd/containerd.sock");
        assert_eq!(
            Endpoint::parse("/run/crio/crio.sock").unwrap().to_string(),
            "unix:///run/crio/crio.sock"
        );
        for bad in ["tcp://127.0.0.1:1234", "unix://relative", "", "unix://"] {
            let err = Endpoint::parse(bad).unwrap_err();
            assert!(err.to_string().contains("unix:///path/to/socket"), "{err}");
        }
    }

    #[test]
    fn errors_read_as_grpc_go_prints_them() {
        let e = Error::Status {
            method: "pull_image",
            code: tonic::Code::NotFound,
            message: "failed to pull and unpack image".into(),
        };
        assert_eq!(
            e.to_string(),
            "rpc error: code = NotFound desc = failed to pull and unpack image"
        );
        assert!(e.is_not_found());
    }

    #[tokio::test]
    async fn a_runtime_that_is_not_there_is_unavailable_not_a_hang() {
        let dir = std::env::temp_dir().join(format!("wk-cri-none-{}", std::process::id()));
        let client = Client::new(
            Endpoint::parse(&format!("unix://{}/nothing.sock", dir.display())).unwrap(),
            Timeouts::default(),
        );
        let err = client
            .version(v1::VersionRequest::default())
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::Unavailable, "{err}");
    }
}
