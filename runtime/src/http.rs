//! Serving a `wasi:http/proxy` component: every request gets a fresh instance (its own
//! store, memory and limits), at most `max_concurrent_requests` run at once, and each is
//! cut off at `request_timeout`.
//!
//! [`HttpService::handle`] turns one `http::Request` into a response; [`HttpService::serve`]
//! runs an HTTP/1.1 + HTTP/2 server (hyper) on a listener with graceful shutdown, the way
//! `wasmtime serve` glues hyper to wasmtime-wasi-http. A guest that traps, runs out of
//! memory or times out costs its request a 500/503/504, never the server; the details go
//! to the pod's stderr sink and into [`HttpStats`].

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Body;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::time::Instant;
use wasmtime_wasi_http::WasiHttpView;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;

use crate::host::{Preopen, StoreSettings, WasiSetup};
use crate::limits::{Control, Limits};
use crate::network::{GuestNetwork, Protocol};
use crate::outcome::{Outcome, Phase};
use crate::process::report;
use crate::program::{Code, Program};
use crate::quota::{CpuQuota, Throttled};
use crate::runtime::Shared;
use crate::sink::{LogSink, NullSink, SharedSink};

/// Error type of response bodies.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Body of the responses [`HttpService`] produces.
pub type ResponseBody = UnsyncBoxBody<Bytes, BoxError>;

/// Default bound on requests served at once.
pub const DEFAULT_MAX_CONCURRENT_REQUESTS: usize = 100;

/// Default time a request may take, from arrival to the guest's end.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// How an HTTP handler program is served.
pub struct HttpSpec {
    /// Environment of every instance.
    pub env: Vec<(String, String)>,
    /// Directories every instance may open.
    pub preopens: Vec<Preopen>,
    /// Receives the stdout of all instances.
    pub stdout: Box<dyn LogSink>,
    /// Receives the stderr of all instances (and the runtime's account of failures).
    pub stderr: Box<dyn LogSink>,
    /// Limits of each instance (one per request).
    pub limits: Limits,
    /// Requests served at once; more wait (within their timeout) for a slot.
    pub max_concurrent_requests: usize,
    /// Time a request may take, waiting for a slot included; past it the client gets a 504
    /// (or its body ends) and the instance is dropped.
    pub request_timeout: Duration,
    /// The guests' network: connections to [`HttpService::serve`] are checked against its
    /// policy, and the instances get sockets at the pod IP. `None`: every peer is served
    /// and the instances have no sockets.
    pub network: Option<GuestNetwork>,
}

impl Default for HttpSpec {
    fn default() -> Self {
        Self {
            env: Vec::new(),
            preopens: Vec::new(),
            stdout: Box::new(NullSink),
            stderr: Box::new(NullSink),
            limits: Limits::default(),
            max_concurrent_requests: DEFAULT_MAX_CONCURRENT_REQUESTS,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            network: None,
        }
    }
}

/// Counters of an [`HttpService`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HttpStats {
    /// Requests received.
    pub requests: u64,
    /// Responses the guest produced (any status).
    pub responses: u64,
    /// Instances that trapped or failed to start.
    pub failures: u64,
    /// Instances that hit the memory limit.
    pub out_of_memory: u64,
    /// Requests cut off by the timeout (waiting for a slot or running).
    pub timeouts: u64,
    /// Instances running now.
    pub in_flight: u64,
}

#[derive(Default)]
struct Counters {
    requests: AtomicU64,
    responses: AtomicU64,
    failures: AtomicU64,
    out_of_memory: AtomicU64,
    timeouts: AtomicU64,
    in_flight: AtomicU64,
}

struct Inner {
    shared: Arc<Shared>,
    program: Program,
    env: Vec<(String, String)>,
    preopens: Vec<Preopen>,
    stdout: SharedSink,
    stderr: SharedSink,
    limits: Limits,
    /// The CPU quota all instances share (`limits.cpu` is the container's, not a request's).
    quota: Option<Arc<CpuQuota>>,
    permits: Arc<Semaphore>,
    request_timeout: Duration,
    network: Option<GuestNetwork>,
    /// Service-wide stop; each request also has its own [`Control`] for its limits.
    stop: Arc<Control>,
    counters: Counters,
}

impl Inner {
    fn count(&self, outcome: Option<&Outcome>) {
        let c = &self.counters;
        let counter = match outcome {
            None => &c.timeouts,
            Some(Outcome::OutOfMemory) => &c.out_of_memory,
            Some(
                Outcome::Trapped { .. } | Outcome::StartFailed { .. } | Outcome::CpuTimeExceeded,
            ) => &c.failures,
            Some(Outcome::Exited(_) | Outcome::Stopped) => return,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// A `wasi:http/proxy` program being served; cheap to clone.
#[derive(Clone)]
pub struct HttpService {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for HttpService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpService")
            .field("program", &self.inner.program)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl HttpService {
    pub(crate) fn new(shared: Arc<Shared>, program: Program, spec: HttpSpec) -> Self {
        let quota = spec
            .limits
            .cpu_millicores
            .and_then(|m| CpuQuota::new(m, shared.config.cpu_period));
        Self {
            inner: Arc::new(Inner {
                shared,
                program,
                env: spec.env,
                preopens: spec.preopens,
                stdout: SharedSink::new(spec.stdout),
                stderr: SharedSink::new(spec.stderr),
                limits: spec.limits,
                quota,
                permits: Arc::new(Semaphore::new(spec.max_concurrent_requests.max(1))),
                request_timeout: spec.request_timeout,
                network: spec.network,
                stop: Control::new(),
                counters: Counters::default(),
            }),
        }
    }

    /// Counters so far.
    pub fn stats(&self) -> HttpStats {
        let c = &self.inner.counters;
        HttpStats {
            requests: c.requests.load(Ordering::Relaxed),
            responses: c.responses.load(Ordering::Relaxed),
            failures: c.failures.load(Ordering::Relaxed),
            out_of_memory: c.out_of_memory.load(Ordering::Relaxed),
            timeouts: c.timeouts.load(Ordering::Relaxed),
            in_flight: c.in_flight.load(Ordering::Relaxed),
        }
    }

    /// Ends every in-flight instance now and answers later requests with 503 (the hard stop
    /// after a grace period; [`HttpService::serve`]'s shutdown is the graceful part).
    pub fn stop(&self) {
        self.inner.stop.request_stop();
        self.inner.permits.close();
    }

    /// Serves one request with a fresh instance.
    pub async fn handle<B>(&self, request: Request<B>) -> Response<ResponseBody>
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let inner = &self.inner;
        inner.counters.requests.fetch_add(1, Ordering::Relaxed);
        let Code::Proxy(pre) = &inner.program.inner.code else {
            return plain(
                StatusCode::INTERNAL_SERVER_ERROR,
                "program is not a wasi:http/proxy component",
            );
        };
        let deadline = Instant::now() + inner.request_timeout;
        let permit =
            match tokio::time::timeout_at(deadline, inner.permits.clone().acquire_owned()).await {
                Ok(Ok(permit)) => permit,
                Ok(Err(_closed)) => return plain(StatusCode::SERVICE_UNAVAILABLE, "stopped"),
                Err(_elapsed) => {
                    inner.counters.timeouts.fetch_add(1, Ordering::Relaxed);
                    return plain(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "too many requests in flight",
                    );
                }
            };

        let control = Control::new();
        let args = Vec::new();
        let wasi = WasiSetup {
            args: &args,
            env: &inner.env,
            preopens: &inner.preopens,
            stdout: &inner.stdout,
            stderr: &inner.stderr,
            network: inner.network.as_ref(),
        };
        let settings = StoreSettings {
            runtime: &inner.shared.config,
            limits: &inner.limits,
            control: &control,
        };
        let mut store = match settings.component_store(&inner.shared.engine, &wasi) {
            Ok(store) => store,
            Err(message) => {
                inner.counters.failures.fetch_add(1, Ordering::Relaxed);
                inner
                    .stderr
                    .write_all(format!("wasmkube: failed to start: {message}\n").as_bytes());
                return plain(StatusCode::INTERNAL_SERVER_ERROR, "handler failed to start");
            }
        };
        let request = request.map(|body| {
            body.map_err(|e| {
                wasmtime_wasi_http::Error::InternalError(Some(
                    Into::<BoxError>::into(e).to_string(),
                ))
            })
        });
        let (sender, receiver) = tokio::sync::oneshot::channel();
        let prepared = store
            .data_mut()
            .http()
            .new_incoming_request(Scheme::Http, request)
            .and_then(|req| {
                let out = store.data_mut().http().new_response_outparam(sender)?;
                Ok((req, out))
            });
        let (incoming, outparam) = match prepared {
            Ok(prepared) => prepared,
            Err(e) => {
                return plain(
                    StatusCode::BAD_REQUEST,
                    &format!("cannot pass the request to the handler: {e}"),
                );
            }
        };

        let pre = pre.clone();
        let service = self.inner.clone();
        let in_flight = InFlight::enter(self.inner.clone());
        let quota = inner.quota.clone();
        let task = inner.shared.guests.spawn(async move {
            let _permit = permit;
            let _in_flight = in_flight;
            let work = Throttled::new(
                async {
                    let proxy = pre
                        .instantiate_async(&mut store)
                        .await
                        .map_err(|e| (e, Phase::Instantiate))?;
                    proxy
                        .wasi_http_incoming_handler()
                        .call_handle(&mut store, incoming, outparam)
                        .await
                        .map_err(|e| (e, Phase::Run))
                },
                quota,
            );
            let outcome = tokio::select! {
                biased;
                () = service.stop.stop_requested() => Some(Outcome::Stopped),
                () = tokio::time::sleep_until(deadline) => None,
                result = work => Some(match result {
                    Ok(()) => Outcome::Exited(0),
                    Err((e, phase)) => report(&e, &control, phase, &service.stderr),
                }),
            };
            service.count(outcome.as_ref());
            outcome
        });

        match tokio::time::timeout_at(deadline, receiver).await {
            Ok(Ok(Ok(response))) => {
                inner.counters.responses.fetch_add(1, Ordering::Relaxed);
                response.map(|body| body.map_err(BoxError::from).boxed_unsync())
            }
            Ok(Ok(Err(code))) => plain(
                StatusCode::INTERNAL_SERVER_ERROR,
                &format!("handler failed: {code:?}"),
            ),
            // The guest ended without setting a response: its outcome says why.
            Ok(Err(_dropped)) => match task.await {
                Ok(Some(Outcome::OutOfMemory)) => plain(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "handler ran out of memory",
                ),
                Ok(Some(Outcome::Stopped)) => plain(StatusCode::SERVICE_UNAVAILABLE, "stopped"),
                Ok(None) => plain(StatusCode::GATEWAY_TIMEOUT, "handler timed out"),
                Ok(Some(Outcome::Exited(_))) => plain(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "handler returned without a response",
                ),
                Ok(Some(_)) | Err(_) => plain(StatusCode::INTERNAL_SERVER_ERROR, "handler failed"),
            },
            Err(_elapsed) => plain(StatusCode::GATEWAY_TIMEOUT, "handler timed out"),
        }
    }

    /// Serves HTTP/1.1 and HTTP/2 on `listener` until `shutdown` resolves, then stops
    /// accepting, lets the open connections finish their in-flight requests, and returns.
    /// Bound the graceful part with a timeout and call [`HttpService::stop`] after it to
    /// end stragglers. With a [`GuestNetwork`], a peer its policy refuses
    /// ([`ConnectPolicy::allow_ingress`](crate::ConnectPolicy::allow_ingress)) has its
    /// connection closed at once, before any byte is read.
    pub async fn serve(
        &self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()>,
    ) -> std::io::Result<()> {
        let graceful = GracefulShutdown::new();
        let local_port = listener.local_addr()?.port();
        let builder = auto::Builder::new(TokioExecutor::new());
        tokio::pin!(shutdown);
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                () = &mut shutdown => break,
            };
            let stream = match accepted {
                Ok((stream, peer)) => {
                    if let Some(network) = &self.inner.network
                        && !network
                            .policy
                            .allow_ingress(peer, local_port, Protocol::Tcp)
                    {
                        tracing::debug!(%peer, local_port, "connection refused by policy");
                        drop(stream);
                        continue;
                    }
                    stream
                }
                Err(e) => {
                    // Out of descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let service = self.clone();
            let connection = builder
                .serve_connection(
                    TokioIo::new(stream),
                    hyper::service::service_fn(move |request| {
                        let service = service.clone();
                        async move { Ok::<_, Infallible>(service.handle(request).await) }
                    }),
                )
                .into_owned();
            let watched = graceful.watch(connection);
            tokio::spawn(async move {
                if let Err(e) = watched.await {
                    tracing::debug!(error = %e, "HTTP connection ended with an error");
                }
            });
        }
        drop(listener);
        graceful.shutdown().await;
        Ok(())
    }
}

/// Counts an instance in [`HttpStats::in_flight`] while alive.
struct InFlight(Arc<Inner>);

impl InFlight {
    fn enter(inner: Arc<Inner>) -> Self {
        inner.counters.in_flight.fetch_add(1, Ordering::Relaxed);
        Self(inner)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.counters.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A plain-text response of the server's own.
fn plain(status: StatusCode, message: &str) -> Response<ResponseBody> {
    let mut response = Response::new(
        Full::new(Bytes::from(format!("{message}\n")))
            .map_err(|never| match never {})
            .boxed_unsync(),
    );
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}
