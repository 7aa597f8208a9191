//! Container lifecycle hooks: `preStop` runs before a container of a deleted pod is asked to
//! stop, as the kubelet runs it, so that a pod can keep serving while Services stop sending it
//! new connections (the usual `preStop: {sleep: {seconds: 5}}` drain).
//!
//! Handlers: `sleep` waits; `httpGet` sends one GET (to the pod IP unless `host` is set,
//! named ports resolved against the container's ports), failing on what a probe would call a
//! failure; `exec` and `tcpSocket` fail with a message saying why (a wasm container has no
//! process to exec into; Kubernetes rejects `tcpSocket` in hooks). The hook's time counts
//! against the grace period: the worker cuts the container at the deadline whatever the hook
//! is doing.

use std::net::IpAddr;
use std::time::Duration;

use k8s_openapi::api::core::v1::{ContainerPort, LifecycleHandler};

use crate::probes::{ProbeResult, http_get};

/// How long one `httpGet` hook request may take at most (the grace period bounds it too).
const HTTP_HOOK_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs `handler` (a container's `lifecycle.preStop`) against the pod at `pod_ip`; `Err` is
/// the message of the `FailedPreStopHook` event.
pub(crate) async fn run_pre_stop(
    handler: &LifecycleHandler,
    pod_ip: IpAddr,
    ports: &[ContainerPort],
) -> Result<(), String> {
    if let Some(sleep) = &handler.sleep {
        let seconds = u64::try_from(sleep.seconds).unwrap_or(0);
        tokio::time::sleep(Duration::from_secs(seconds)).await;
        Ok(())
    } else if let Some(action) = &handler.http_get {
        match http_get(action, pod_ip, ports, HTTP_HOOK_TIMEOUT).await {
            ProbeResult::Success => Ok(()),
            ProbeResult::Failure(message) => Err(format!("HTTP lifecycle hook failed: {message}")),
        }
    } else if handler.exec.is_some() {
        Err(
            "exec lifecycle hooks are not supported for wasm containers (there is no process \
             to exec into); use httpGet or sleep"
                .into(),
        )
    } else if handler.tcp_socket.is_some() {
        Err("tcpSocket is not supported as a lifecycle handler; use httpGet or sleep".into())
    } else {
        Err("the lifecycle handler names no action (sleep, httpGet)".into())
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{ExecAction, HTTPGetAction, SleepAction};
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

    use super::*;

    const LOOPBACK: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    #[tokio::test]
    async fn a_sleep_hook_waits_its_seconds() {
        let handler = LifecycleHandler {
            sleep: Some(SleepAction { seconds: 1 }),
            ..Default::default()
        };
        let start = tokio::time::Instant::now();
        run_pre_stop(&handler, LOOPBACK, &[]).await.unwrap();
        // A lower bound only: the hook did not return before its second was up.
        assert!(start.elapsed() >= Duration::from_secs(1));
    }

    #[tokio::test]
    async fn an_http_hook_calls_the_pod_and_reports_a_refused_port() {
        let listener = tokio::net::TcpListener::bind((LOOPBACK, 0)).await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = tokio::spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut request = vec![0u8; 4096];
            let n = stream.read(&mut request).await.unwrap();
            stream
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                .await
                .unwrap();
            String::from_utf8_lossy(&request[..n]).to_string()
        });
        let ports = [ContainerPort {
            name: Some("http".into()),
            container_port: i32::from(port),
            ..Default::default()
        }];
        let handler = LifecycleHandler {
            http_get: Some(HTTPGetAction {
                path: Some("/drain".into()),
                port: IntOrString::String("http".into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        run_pre_stop(&handler, LOOPBACK, &ports).await.unwrap();
        let request = server.await.unwrap();
        assert!(request.starts_with("GET /drain HTTP/1.1\r\n"), "{request}");

        // Nobody listens any more: the hook fails, saying so.
        let error = run_pre_stop(&handler, LOOPBACK, &ports).await.unwrap_err();
        assert!(error.starts_with("HTTP lifecycle hook failed: "), "{error}");
    }

    #[tokio::test]
    async fn exec_and_tcp_socket_hooks_fail_with_the_reason() {
        let exec = LifecycleHandler {
            exec: Some(ExecAction {
                command: Some(vec!["sh".into()]),
            }),
            ..Default::default()
        };
        let error = run_pre_stop(&exec, LOOPBACK, &[]).await.unwrap_err();
        assert!(error.contains("no process to exec into"), "{error}");
        let empty = LifecycleHandler::default();
        let error = run_pre_stop(&empty, LOOPBACK, &[]).await.unwrap_err();
        assert!(error.contains("names no action"), "{error}");
    }
}
