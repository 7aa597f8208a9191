//! [`ContainerRuntime`] on `wasmkube-runtime` (wasmtime).
//!
//! A container's image is a wasm module or component: command programs (preview1 `_start`
//! modules, `wasi:cli/run` components) run like processes; `wasi:http/proxy` components are
//! served on the pod's IP and container ports, a fresh instance per request.
//!
//! Stopping: a process has no signals to handle, so it is stopped at once (at its next epoch
//! tick), like a process with the default SIGTERM disposition; its outcome is `Stopped`
//! (exit code 137). An HTTP handler stops accepting connections at once, lets requests in
//! flight finish within the grace period and then ends any that remain; it ends with exit
//! code 0 when it drained in time.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::FutureExt;
use tokio::net::TcpListener;
use tokio::sync::watch;
use wasmkube_runtime as wr;

use super::{
    ContainerRuntime, ContainerSpec, Outcome, RunningContainer, StartError, StopHandle, Workload,
};
use crate::logs::{ContainerLog, Stream, StreamWriter};

/// Extra time after the grace period for the HTTP servers to wind down before they are cut.
const CUT_AFTER: Duration = Duration::from_secs(2);

/// The wasmtime runtime; cheap to clone.
#[derive(Clone, Debug)]
pub(crate) struct WasmRuntime {
    runtime: wr::Runtime,
}

impl WasmRuntime {
    /// Wraps a runtime.
    pub(crate) fn new(runtime: wr::Runtime) -> Self {
        WasmRuntime { runtime }
    }
}

/// A log stream as the runtime's sink.
struct Sink(StreamWriter);

impl wr::LogSink for Sink {
    fn write(&mut self, bytes: &[u8]) {
        self.0.write(bytes);
    }

    fn flush(&mut self) {
        self.0.flush();
    }
}

fn sinks(log: &ContainerLog) -> (Box<dyn wr::LogSink>, Box<dyn wr::LogSink>) {
    (
        Box::new(Sink(log.stream(Stream::Stdout))),
        Box::new(Sink(log.stream(Stream::Stderr))),
    )
}

fn outcome_of(o: wr::Outcome) -> Outcome {
    match o {
        wr::Outcome::Exited(code) => Outcome::Exited(code),
        wr::Outcome::Trapped { message } => Outcome::Trapped { message },
        wr::Outcome::OutOfMemory => Outcome::OutOfMemory,
        wr::Outcome::Stopped => Outcome::Stopped,
        wr::Outcome::CpuTimeExceeded => Outcome::CpuTimeExceeded,
        wr::Outcome::StartFailed { message } => Outcome::StartFailed { message },
    }
}

struct ProcessStop(wr::Stopper);

impl StopHandle for ProcessStop {
    fn stop(&self, _grace: Duration) {
        self.0.stop();
    }
}

struct HttpStop {
    /// `Some(grace)` once a stop was asked for.
    shutdown: watch::Sender<Option<Duration>>,
    /// Becomes true when every server has returned.
    done: watch::Receiver<bool>,
    service: wr::HttpService,
    forced: Arc<AtomicBool>,
}

impl StopHandle for HttpStop {
    fn stop(&self, grace: Duration) {
        let first = self.shutdown.send_if_modified(|s| {
            if s.is_some() {
                return false;
            }
            *s = Some(grace);
            true
        });
        if !first {
            return;
        }
        let service = self.service.clone();
        let forced = Arc::clone(&self.forced);
        let mut done = self.done.clone();
        tokio::spawn(async move {
            let drained = tokio::time::timeout(grace, done.wait_for(|d| *d))
                .await
                .is_ok();
            if !drained {
                forced.store(true, Ordering::SeqCst);
                service.stop();
            }
        });
    }
}

#[async_trait::async_trait]
impl ContainerRuntime for WasmRuntime {
    fn scheme(&self) -> &'static str {
        "wasmtime://"
    }

    async fn start(&self, spec: ContainerSpec) -> Result<RunningContainer, StartError> {
        let program = self
            .runtime
            .load_file(&spec.image.wasm, &spec.image.wasm_digest)
            .await
            .map_err(|e| match e {
                // Retried with back-off (CreateContainerError): the compilation goes on and
                // a later start finds its result.
                wr::LoadError::CompileTimeout { .. } => StartError::Timeout(e.to_string()),
                e if e.is_workload_error() => StartError::Workload(e.to_string()),
                e => StartError::Internal(e.to_string()),
            })?;
        // The compiled-code cache's counters after this load: a second pod of an image
        // leaves `compiled` where the first left it (a memory or disk hit instead).
        let cache = self.runtime.cache_stats();
        tracing::info!(
            container = %spec.id,
            image = %spec.image.reference,
            wasm_digest = %spec.image.wasm_digest,
            compiled_total = cache.compiled,
            disk_hits_total = cache.disk_hits,
            memory_hits_total = cache.memory_hits,
            "wasm program loaded"
        );
        let preopens: Vec<wr::Preopen> = spec
            .mounts
            .iter()
            .map(|m| wr::Preopen {
                host: m.host.clone(),
                guest: m.guest.clone(),
                read_only: m.read_only,
            })
            .collect();
        let limits = wr::Limits {
            memory_bytes: spec.limits.memory_bytes,
            cpu_millis: spec.limits.cpu_millis,
            cpu_millicores: spec.limits.cpu_millicores,
        };
        let (stdout, stderr) = sinks(&spec.log);
        if program.kind().is_command() {
            let process = wr::ProcessSpec {
                args: spec.args,
                env: spec.env,
                preopens,
                stdout,
                stderr,
                limits,
                network: spec.network,
            };
            let (stopper, task) = self.runtime.spawn(&program, process);
            let log = spec.log.clone();
            let outcome = async move {
                let outcome = match task.await {
                    Ok(o) => outcome_of(o),
                    Err(e) => Outcome::Trapped {
                        message: format!("the runtime task failed: {e}"),
                    },
                };
                log.close();
                outcome
            }
            .boxed();
            return Ok(RunningContainer {
                workload: Workload::Process,
                stopper: Box::new(ProcessStop(stopper)),
                outcome,
                exec: None,
            });
        }
        // An HTTP handler: bind every port first, so a port in use is a start error. The
        // listeners and their connections live on the guests' threads, with the instances.
        let guests = self.runtime.guest_handle().clone();
        let mut listeners = Vec::new();
        for addr in &spec.listen {
            let addr = *addr;
            let listener = guests
                .spawn(TcpListener::bind(addr))
                .await
                .map_err(|e| StartError::Internal(format!("cannot listen on {addr}: {e}")))?
                .map_err(|e| StartError::Workload(format!("cannot listen on {addr}: {e}")))?;
            listeners.push(listener);
        }
        let service = self.runtime.http_service(
            &program,
            wr::HttpSpec {
                env: spec.env,
                preopens,
                stdout,
                stderr,
                limits,
                network: spec.network,
                ..Default::default()
            },
        );
        let (shutdown, _) = watch::channel(None::<Duration>);
        let (done_tx, done) = watch::channel(false);
        let forced = Arc::new(AtomicBool::new(false));
        let mut servers = Vec::new();
        for listener in listeners {
            let service = service.clone();
            let mut rx = shutdown.subscribe();
            servers.push(guests.spawn(async move {
                let stop = async move {
                    let _ = rx.wait_for(Option::is_some).await;
                };
                service.serve(listener, stop).await
            }));
        }
        let addrs: Vec<SocketAddr> = spec.listen.clone();
        tracing::debug!(container = %spec.id, ?addrs, "serving an HTTP handler");
        let log = spec.log.clone();
        let mut stopped = shutdown.subscribe();
        let stop = HttpStop {
            shutdown,
            done,
            service: service.clone(),
            forced: Arc::clone(&forced),
        };
        let outcome = async move {
            let mut result = Outcome::Exited(0);
            let cut = async move {
                // Reached only after a stop: the grace period plus a little, then cut.
                let grace = match stopped.wait_for(Option::is_some).await {
                    Ok(g) => Some(g.unwrap_or_default()),
                    Err(_) => None,
                };
                let Some(grace) = grace else {
                    return std::future::pending().await;
                };
                tokio::time::sleep(grace + CUT_AFTER).await;
            };
            tokio::pin!(cut);
            let aborts: Vec<_> = servers.iter().map(|s| s.abort_handle()).collect();
            let all = futures::future::join_all(servers);
            tokio::select! {
                results = all => {
                    for r in results {
                        if let Ok(Err(e)) = r {
                            result = Outcome::Trapped { message: format!("HTTP server failed: {e}") };
                        }
                    }
                }
                () = &mut cut => {
                    for a in aborts {
                        a.abort();
                    }
                    forced.store(true, Ordering::SeqCst);
                }
            }
            let _ = done_tx.send(true);
            if forced.load(Ordering::SeqCst) && result == Outcome::Exited(0) {
                result = Outcome::Stopped;
            }
            log.close();
            result
        }
        .boxed();
        Ok(RunningContainer {
            workload: Workload::HttpHandler,
            stopper: Box::new(stop),
            outcome,
            exec: None,
        })
    }
}
