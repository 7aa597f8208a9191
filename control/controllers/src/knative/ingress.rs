//! The function ingress, with Knative's activator and autoscaler in its path: an HTTP
//! listener that routes each request by its Host (`NAME.NAMESPACE.DOMAIN`, or
//! `TAG-NAME.NAMESPACE.DOMAIN` for a tagged target) to a ready pod of a Revision the Route's
//! `status.traffic` names, split by the targets' percentages.
//!
//! - **Routing** reads three watch caches (Routes, Revisions, and pods labelled
//!   `serving.knative.dev/revision`); an unknown host is 404.
//! - **Activation**: a request for a Revision without a ready pod is held (at most
//!   [`IngressConfig::queue_limit`] per Revision, else 503 with `Retry-After`); the first one
//!   scales the Revision's Deployment to 1 at once; each waits for a ready pod (woken by
//!   every pod change) until [`IngressConfig::activation_timeout`], then 503 with
//!   `Retry-After`. No request is dropped while a Revision goes from 0 to 1.
//! - **Autoscaling** (Knative's KPA on the in-flight requests the ingress sees, or their
//!   rate with `metric: rps`): every [`IngressConfig::tick`] each Revision's time-weighted
//!   concurrency is sampled; desired pods = ceil(average over the stable window / target)
//!   (window from `autoscaling.knative.dev/window`, 60 s), or over the panic window (6 s)
//!   while that needs twice the pods ready (panic mode never scales down), within
//!   min-scale/max-scale; never below the in-flight requests over the target. A Revision
//!   with no requests for the stable window (and its
//!   `scale-to-zero-pod-retention-period`, at least [`IngressConfig::scale_to_zero_grace`])
//!   goes to zero unless `min-scale` says otherwise.
//!
//! Knative runs the activator and the autoscaler as their own deployments with the
//! queue-proxy sidecar reporting metrics; here wasm pods need no sidecar: the ingress counts
//! the requests it proxies.

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::Notify;
use wasmkube_api::knative::{self, REVISION_LABEL, deployment_name};

use super::revision::{clamp_replicas, scaling_of};
use super::types::{Revision, Route};

/// The ingress's settings.
#[derive(Clone, Debug)]
pub struct IngressConfig {
    /// The domain of Route hosts (`--function-domain`).
    pub domain: String,
    /// How long a request waits for a Revision's first ready pod.
    pub activation_timeout: Duration,
    /// Requests held per Revision while it activates; more are 503.
    pub queue_limit: usize,
    /// How long a Revision without requests keeps its last pod (Knative's
    /// `scale-to-zero-grace-period`, 30 s; an annotation's retention period may extend it).
    pub scale_to_zero_grace: Duration,
    /// The autoscaler's period (Knative's tick: 2 s).
    pub tick: Duration,
}

impl Default for IngressConfig {
    fn default() -> Self {
        IngressConfig {
            domain: crate::config::DEFAULT_FUNCTION_DOMAIN.to_string(),
            activation_timeout: Duration::from_secs(60),
            queue_limit: 1000,
            scale_to_zero_grace: Duration::from_secs(30),
            tick: Duration::from_secs(2),
        }
    }
}

type Body = BoxBody<Bytes, hyper::Error>;

/// Per-Revision request statistics (what Knative's queue-proxy reports).
#[derive(Debug)]
struct Stats {
    inflight: u64,
    /// In-flight requests integrated over time since the last sample (request-seconds).
    weighted: f64,
    /// Requests started since the last sample.
    started: u64,
    last_change: Instant,
    last_request: Instant,
    /// Held requests (activation).
    waiting: usize,
    /// (when, concurrency or rps) samples, newest last.
    samples: VecDeque<(Instant, f64)>,
    /// The last time the autoscaler saw a ready pod count, for panic mode.
    panic_until: Option<Instant>,
}

impl Stats {
    fn new(now: Instant) -> Self {
        Stats {
            inflight: 0,
            weighted: 0.0,
            started: 0,
            last_change: now,
            last_request: now,
            waiting: 0,
            samples: VecDeque::new(),
            panic_until: None,
        }
    }

    fn advance(&mut self, now: Instant) {
        let elapsed = now
            .saturating_duration_since(self.last_change)
            .as_secs_f64();
        self.weighted += self.inflight as f64 * elapsed;
        self.last_change = now;
    }
}

struct Ingress {
    config: IngressConfig,
    client: kube::Client,
    routes: Store<Route>,
    revisions: Store<Revision>,
    pods: Store<Pod>,
    pods_changed: Arc<Notify>,
    stats: Mutex<HashMap<(String, String), Stats>>,
    http: HttpClient<HttpConnector, Incoming>,
    rng: AtomicU64,
}

/// Runs the ingress on `listener` until `shutdown` resolves.
pub async fn run(
    client: kube::Client,
    listener: TcpListener,
    config: IngressConfig,
    shutdown: impl Future<Output = ()> + Send,
) {
    let (routes, routes_writer) = reflector::store();
    let (revisions, revisions_writer) = reflector::store();
    let (pods, pods_writer) = reflector::store();
    let pods_changed = Arc::new(Notify::new());
    let route_watch = reflector::reflector(
        routes_writer,
        watcher(
            Api::<Route>::all(client.clone()),
            watcher::Config::default(),
        ),
    )
    .default_backoff()
    .for_each(|_| async {});
    let revision_watch = reflector::reflector(
        revisions_writer,
        watcher(
            Api::<Revision>::all(client.clone()),
            watcher::Config::default(),
        ),
    )
    .default_backoff()
    .for_each(|_| async {});
    let notify = pods_changed.clone();
    let pod_watch = reflector::reflector(
        pods_writer,
        watcher(
            Api::<Pod>::all(client.clone()),
            watcher::Config::default().labels(REVISION_LABEL),
        ),
    )
    .default_backoff()
    .for_each(move |_| {
        notify.notify_waiters();
        async {}
    });
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64)
        | 1;
    let ingress = Arc::new(Ingress {
        config,
        client,
        routes,
        revisions,
        pods,
        pods_changed,
        stats: Mutex::new(HashMap::new()),
        http: {
            // Without TCP_NODELAY a request's head and body wait on the pod's delayed ACK.
            let mut connector = HttpConnector::new();
            connector.set_nodelay(true);
            HttpClient::builder(TokioExecutor::new())
                .pool_idle_timeout(Duration::from_secs(30))
                .build(connector)
        },
        rng: AtomicU64::new(seed),
    });
    let accept = accept_loop(ingress.clone(), listener);
    let autoscale = autoscale_loop(ingress.clone());
    tokio::select! {
        _ = route_watch => {}
        _ = revision_watch => {}
        _ = pod_watch => {}
        _ = accept => {}
        _ = autoscale => {}
        _ = shutdown => {}
    }
}

async fn accept_loop(ingress: Arc<Ingress>, listener: TcpListener) {
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let (tcp, _) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "function ingress: accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let ingress = ingress.clone();
        connections.spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let ingress = ingress.clone();
                async move { Ok::<_, Infallible>(ingress.handle(req).await) }
            });
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(tcp), service)
                .await;
        });
        while connections.try_join_next().is_some() {}
    }
}

fn text(status: StatusCode, message: String) -> Response<Body> {
    let mut response = Response::new(
        Full::new(Bytes::from(message))
            .map_err(|never: Infallible| match never {})
            .boxed(),
    );
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

fn unavailable(message: String) -> Response<Body> {
    let mut response = text(StatusCode::SERVICE_UNAVAILABLE, message);
    response.headers_mut().insert(
        hyper::header::RETRY_AFTER,
        hyper::header::HeaderValue::from_static("1"),
    );
    response
}

/// The host of a request, lower-cased, without a port.
fn request_host(req: &Request<Incoming>) -> String {
    let raw = req
        .headers()
        .get(hyper::header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_string)
        .or_else(|| req.uri().host().map(str::to_string))
        .unwrap_or_default();
    let host = match raw.rsplit_once(':') {
        Some((h, port)) if port.chars().all(|c| c.is_ascii_digit()) => h.to_string(),
        _ => raw,
    };
    host.to_ascii_lowercase()
}

/// The (namespace, name) a host asks for under `domain`: `NAME.NAMESPACE.DOMAIN`.
fn split_host<'a>(host: &'a str, domain: &str) -> Option<(&'a str, &'a str)> {
    let rest = host.strip_suffix(domain)?.strip_suffix('.')?;
    let (name, namespace) = rest.rsplit_once('.')?;
    (!name.is_empty() && !namespace.is_empty() && !name.contains('.')).then_some((namespace, name))
}

/// The traffic targets (`status.traffic`) of a Route.
fn traffic_of(route: &Route) -> Vec<(String, i64, Option<String>)> {
    route
        .status
        .get("traffic")
        .and_then(Value::as_array)
        .map(|t| {
            t.iter()
                .filter_map(|t| {
                    Some((
                        t.get("revisionName")?.as_str()?.to_string(),
                        t.get("percent").and_then(Value::as_i64).unwrap_or(0),
                        t.get("tag").and_then(Value::as_str).map(str::to_string),
                    ))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The first container port of a pod (the serving container's), Knative's 8080 otherwise.
fn pod_port(pod: &Pod) -> u16 {
    pod.spec
        .as_ref()
        .and_then(|s| {
            s.containers
                .iter()
                .find_map(|c| c.ports.as_ref().and_then(|p| p.first()))
        })
        .and_then(|p| u16::try_from(p.container_port).ok())
        .unwrap_or(knative::DEFAULT_PORT as u16)
}

fn pod_ready(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_none()
        && pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

impl Ingress {
    fn random(&self) -> u64 {
        // xorshift64: cheap and good enough to split traffic.
        let mut x = self.rng.load(Ordering::Relaxed);
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng.store(x, Ordering::Relaxed);
        x
    }

    /// The Revision a host's request goes to: the tag's, or one of the Route's by percent.
    fn pick_revision(&self, host: &str) -> Option<(String, String)> {
        let (namespace, name) = split_host(host, &self.config.domain)?;
        if let Some(route) = self.routes.get(&ObjectRef::new(name).within(namespace)) {
            let traffic = traffic_of(&route);
            let total: i64 = traffic.iter().map(|t| t.1.max(0)).sum();
            if total <= 0 {
                return None;
            }
            let mut roll = (self.random() % total as u64) as i64;
            for (revision, percent, _) in traffic {
                if roll < percent.max(0) {
                    return Some((namespace.to_string(), revision));
                }
                roll -= percent.max(0);
            }
            return None;
        }
        // TAG-ROUTE: a tagged target of a Route in the namespace.
        for route in self.routes.state() {
            if route.namespace().as_deref() != Some(namespace) {
                continue;
            }
            let Some(tag) = name
                .strip_suffix(route.name_any().as_str())
                .and_then(|t| t.strip_suffix('-'))
            else {
                continue;
            };
            for (revision, _, t) in traffic_of(&route) {
                if t.as_deref() == Some(tag) {
                    return Some((namespace.to_string(), revision));
                }
            }
        }
        None
    }

    /// A ready pod of the Revision (address), picked at random.
    fn ready_pod(&self, namespace: &str, revision: &str) -> Option<SocketAddr> {
        let pods: Vec<Arc<Pod>> = self
            .pods
            .state()
            .into_iter()
            .filter(|p| {
                p.namespace().as_deref() == Some(namespace)
                    && p.labels().get(REVISION_LABEL).map(String::as_str) == Some(revision)
                    && pod_ready(p)
            })
            .collect();
        if pods.is_empty() {
            return None;
        }
        let pod = &pods[(self.random() % pods.len() as u64) as usize];
        let ip = pod.status.as_ref()?.pod_ip.as_ref()?.parse().ok()?;
        Some(SocketAddr::new(ip, pod_port(pod)))
    }

    fn with_stats<T>(&self, key: &(String, String), f: impl FnOnce(&mut Stats) -> T) -> T {
        let mut stats = self.stats.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        let entry = stats.entry(key.clone()).or_insert_with(|| Stats::new(now));
        f(entry)
    }

    async fn handle(self: Arc<Self>, req: Request<Incoming>) -> Response<Body> {
        let host = request_host(&req);
        let Some((namespace, revision)) = self.pick_revision(&host) else {
            return text(
                StatusCode::NOT_FOUND,
                format!("no Route serves the host {host:?}\n"),
            );
        };
        let key = (namespace.clone(), revision.clone());
        let now = Instant::now();
        self.with_stats(&key, |s| {
            s.advance(now);
            s.inflight += 1;
            s.started += 1;
            s.last_request = now;
        });
        let response = self.forward(&key, req).await;
        let now = Instant::now();
        self.with_stats(&key, |s| {
            s.advance(now);
            s.inflight = s.inflight.saturating_sub(1);
            s.last_request = now;
        });
        response
    }

    /// Sends the request to a ready pod, activating the Revision first if it has none.
    async fn forward(&self, key: &(String, String), req: Request<Incoming>) -> Response<Body> {
        let (namespace, revision) = key;
        let addr = match self.ready_pod(namespace, revision) {
            Some(addr) => addr,
            None => match self.activate(key).await {
                Ok(addr) => addr,
                Err(response) => return response,
            },
        };
        let (mut parts, body) = req.into_parts();
        let path = parts
            .uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_string();
        let Ok(uri) = format!("http://{addr}{path}").parse() else {
            return text(
                StatusCode::BAD_REQUEST,
                format!("bad request path {path:?}\n"),
            );
        };
        parts.uri = uri;
        match self.http.request(Request::from_parts(parts, body)).await {
            Ok(response) => response.map(BodyExt::boxed),
            Err(e) => text(
                StatusCode::BAD_GATEWAY,
                format!("revision {revision}: the pod at {addr} did not answer: {e}\n"),
            ),
        }
    }

    /// Holds a request until the Revision has a ready pod, scaling it up from zero.
    async fn activate(&self, key: &(String, String)) -> Result<SocketAddr, Response<Body>> {
        let (namespace, revision) = key;
        let admitted = self.with_stats(key, |s| {
            if s.waiting >= self.config.queue_limit {
                false
            } else {
                s.waiting += 1;
                true
            }
        });
        if !admitted {
            return Err(unavailable(format!(
                "revision {revision} is activating and {} requests already wait for it\n",
                self.config.queue_limit
            )));
        }
        let started = Instant::now();
        let deadline = started + self.config.activation_timeout;
        let mut scaled = false;
        let result = loop {
            let changed = self.pods_changed.notified();
            if let Some(addr) = self.ready_pod(namespace, revision) {
                break Ok(addr);
            }
            if !scaled {
                scaled = true;
                self.scale_from_zero(namespace, revision).await;
            }
            let now = Instant::now();
            if now >= deadline {
                break Err(unavailable(format!(
                    "revision {revision} has no ready pod after {:?}\n",
                    self.config.activation_timeout
                )));
            }
            // Woken by any pod change; a short timeout covers a missed wake-up.
            let _ = tokio::time::timeout((deadline - now).min(Duration::from_millis(250)), changed)
                .await;
        };
        self.with_stats(key, |s| s.waiting = s.waiting.saturating_sub(1));
        if result.is_ok() {
            tracing::debug!(namespace, revision, waited = ?started.elapsed(), "activated");
        }
        result
    }

    /// Scales a Revision's Deployment at zero to one pod (the activator's poke).
    async fn scale_from_zero(&self, namespace: &str, revision: &str) {
        let deployments: Api<Deployment> = Api::namespaced(self.client.clone(), namespace);
        let name = deployment_name(revision);
        match deployments.get_opt(&name).await {
            Ok(Some(d)) if d.spec.as_ref().and_then(|s| s.replicas) == Some(0) => {
                let patch = Patch::Merge(json!({"spec": {"replicas": 1}}));
                if let Err(e) = deployments
                    .patch(&name, &PatchParams::default(), &patch)
                    .await
                {
                    tracing::warn!(namespace, revision, error = %e, "activator: scaling from zero failed");
                }
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(namespace, revision, error = %e, "activator: reading the Deployment failed")
            }
        }
    }
}

/// The autoscaler's decision for one Revision.
#[derive(Debug, PartialEq)]
struct Decision {
    desired: i64,
    panic: bool,
}

/// Knative's KPA: `samples` are (age, value) pairs, newest last.
#[allow(clippy::too_many_arguments)]
fn decide(
    samples: &VecDeque<(Instant, f64)>,
    now: Instant,
    window: Duration,
    target: f64,
    ready: i64,
    current: i64,
    inflight: u64,
    in_panic: bool,
    idle_for: Duration,
    retention: Duration,
) -> Decision {
    let average = |span: Duration| {
        let values: Vec<f64> = samples
            .iter()
            .filter(|(t, _)| now.saturating_duration_since(*t) <= span)
            .map(|(_, v)| *v)
            .collect();
        if values.is_empty() {
            0.0
        } else {
            values.iter().sum::<f64>() / values.len() as f64
        }
    };
    let stable = average(window);
    let panic_window = window.mul_f64(0.1).max(Duration::from_secs(1));
    let burst = average(panic_window);
    let stable_pods = (stable / target).ceil() as i64;
    let panic_pods = (burst / target).ceil() as i64;
    let panic = panic_pods >= 2 * ready.max(1) && panic_pods > ready;
    let mut desired = if panic || in_panic {
        // Panic mode: follow the burst up, never down.
        panic_pods.max(ready).max(stable_pods)
    } else {
        stable_pods
    };
    // Never below what the requests in flight now need.
    desired = desired.max((inflight as f64 / target).ceil() as i64);
    // The last pod stays for the stable window (and the retention period) after the last
    // request; a Revision already at zero stays there until a request comes.
    if desired == 0 && current > 0 && idle_for < window.max(retention) {
        desired = 1;
    }
    Decision {
        desired,
        panic: panic || in_panic,
    }
}

async fn autoscale_loop(ingress: Arc<Ingress>) {
    let mut ticker = tokio::time::interval(ingress.config.tick);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let now = Instant::now();
        let mut decisions = Vec::new();
        for rev in ingress.revisions.state() {
            // A Revision scales only once it has been ready (at its initial scale), as
            // Knative's: scaling a starting Revision to zero would leave it never ready.
            if super::condition_status(&rev.status, "Ready") != "True" {
                continue;
            }
            let namespace = rev.namespace().unwrap_or_default();
            let name = rev.name_any();
            let key = (namespace.clone(), name.clone());
            let scaling = scaling_of(&rev);
            let container_concurrency = rev
                .spec
                .get("containerConcurrency")
                .and_then(Value::as_i64)
                .unwrap_or(0);
            let target = scaling.target.unwrap_or(if container_concurrency > 0 {
                container_concurrency as f64 * 0.7
            } else if scaling.metric == "rps" {
                200.0
            } else {
                100.0
            });
            let ready = rev
                .status
                .get("actualReplicas")
                .and_then(Value::as_i64)
                .unwrap_or(0);
            let current = rev
                .status
                .get("desiredReplicas")
                .and_then(Value::as_i64)
                .unwrap_or(0);
            let retention = scaling.retention.max(ingress.config.scale_to_zero_grace);
            let tick = ingress.config.tick.as_secs_f64();
            let decision = ingress.with_stats(&key, |s| {
                s.advance(now);
                let value = if scaling.metric == "rps" {
                    s.started as f64 / tick
                } else {
                    s.weighted / tick
                };
                s.weighted = 0.0;
                s.started = 0;
                s.samples.push_back((now, value));
                while s
                    .samples
                    .front()
                    .is_some_and(|(t, _)| now.saturating_duration_since(*t) > scaling.window)
                {
                    s.samples.pop_front();
                }
                let in_panic = s.panic_until.is_some_and(|until| now < until);
                let idle_for = now.saturating_duration_since(s.last_request);
                let decision = decide(
                    &s.samples,
                    now,
                    scaling.window,
                    target,
                    ready,
                    current,
                    s.inflight + s.waiting as u64,
                    in_panic,
                    idle_for,
                    retention,
                );
                if decision.panic && !in_panic {
                    s.panic_until =
                        Some(now + scaling.window.mul_f64(0.1).max(Duration::from_secs(6)));
                }
                decision
            });
            let desired = i64::from(clamp_replicas(&scaling, decision.desired));
            if desired != current && rev.metadata.deletion_timestamp.is_none() {
                decisions.push((namespace, name, desired, current));
            }
        }
        for (namespace, revision, desired, current) in decisions {
            // A Revision without a Deployment yet has nothing to scale.
            let deployments: Api<Deployment> = Api::namespaced(ingress.client.clone(), &namespace);
            let patch = Patch::Merge(json!({"spec": {"replicas": desired}}));
            match deployments
                .patch(&deployment_name(&revision), &PatchParams::default(), &patch)
                .await
            {
                Ok(_) => tracing::info!(
                    namespace,
                    revision,
                    from = current,
                    to = desired,
                    "autoscaler: scaled"
                ),
                Err(e) => {
                    tracing::debug!(namespace, revision, error = %e, "autoscaler: scaling failed")
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_name_a_route_and_its_namespace_under_the_domain() {
        let domain = "127.0.0.1.sslip.io";
        assert_eq!(
            split_host("hello.default.127.0.0.1.sslip.io", domain),
            Some(("default", "hello"))
        );
        assert_eq!(split_host("a.b.c.127.0.0.1.sslip.io", domain), None);
        assert_eq!(split_host("hello.default.example.com", domain), None);
    }

    #[test]
    fn the_kpa_follows_the_stable_average_and_panics_on_bursts() {
        let now = Instant::now();
        let window = Duration::from_secs(60);
        let steady: VecDeque<(Instant, f64)> = (0..30)
            .map(|i| (now - Duration::from_secs(2 * i), 250.0))
            .collect();
        let d = decide(
            &steady,
            now,
            window,
            100.0,
            3,
            3,
            0,
            false,
            Duration::ZERO,
            Duration::ZERO,
        );
        assert_eq!(
            d,
            Decision {
                desired: 3,
                panic: false
            }
        );
        let burst: VecDeque<(Instant, f64)> = [(now, 800.0)].into_iter().collect();
        let d = decide(
            &burst,
            now,
            window,
            100.0,
            1,
            1,
            0,
            false,
            Duration::ZERO,
            Duration::ZERO,
        );
        assert_eq!(
            d,
            Decision {
                desired: 8,
                panic: true
            }
        );
    }

    #[test]
    fn an_idle_revision_keeps_its_pod_for_the_retention_period_then_goes_to_zero() {
        let now = Instant::now();
        let window = Duration::from_secs(6);
        let idle: VecDeque<(Instant, f64)> = [(now, 0.0)].into_iter().collect();
        let keep = decide(
            &idle,
            now,
            window,
            100.0,
            1,
            1,
            0,
            false,
            Duration::from_secs(2),
            Duration::from_secs(10),
        );
        assert_eq!(keep.desired, 1);
        let zero = decide(
            &idle,
            now,
            window,
            100.0,
            1,
            1,
            0,
            false,
            Duration::from_secs(20),
            Duration::from_secs(10),
        );
        assert_eq!(zero.desired, 0);
    }
}
