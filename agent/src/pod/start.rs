//! Starting one instance of a container: image, environment, command line, log file, limits,
//! ports, then the runtime — with the kubelet's events along the way (`Pulled`, `Created`,
//! `Started`, `Failed`).
//!
//! Runs as its own future (compiling a large module takes a while), so the pod worker keeps
//! serving other containers and deletion meanwhile.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Container, Pod};
use wasmkube_api::quantity::Quantity;
use wasmkube_client::events::{EventType, pod_reference};

use super::PodContext;
use super::env::{self, Environment, PodFacts};
use super::signature;
use crate::images::registry::{AuthenticatedPuller, RegistryAuth, auth_from_docker_config};
use crate::images::{ImageError, PullPolicy, Reference};
use crate::logs::{ContainerLog, Stream};
use crate::runtime::{ContainerSpec, Limits, Mount, RunningContainer, StartError};
use crate::volumes;

/// The port an HTTP handler is served on when its container declares none.
pub(crate) const DEFAULT_HTTP_PORT: u16 = 8080;

/// The network of a pod's wasm guests: sockets at its IP, names resolved as its resolv.conf
/// says ([`crate::dns::pod_resolv_conf`]: the cluster DNS and search paths for
/// `ClusterFirst`), every connection in or out judged by the NetworkPolicies selecting the
/// pod ([`crate::network::policy::PodPolicy`]). The warnings are what did not fit
/// Kubernetes' limits.
fn guest_network(
    ctx: &PodContext,
    pod: &Pod,
    pod_ip: IpAddr,
) -> (wasmkube_runtime::GuestNetwork, Vec<String>) {
    let (resolv_conf, warnings) = crate::dns::pod_resolv_conf(pod, &ctx.dns);
    let network = wasmkube_runtime::GuestNetwork::new(pod_ip)
        .with_resolver(Arc::new(crate::dns::PodResolver::new(&resolv_conf)))
        .with_policy(ctx.policies.for_pod(pod, Some(pod_ip)));
    (network, warnings)
}

/// What a start needs.
#[derive(Debug, Clone)]
pub(crate) struct StartRequest {
    /// The pod.
    pub(crate) pod: Arc<Pod>,
    /// The container.
    pub(crate) container: Container,
    /// Whether it is an init container (for event field paths).
    pub(crate) init: bool,
    /// The instance number (restart count).
    pub(crate) restart_count: u32,
    /// The pod's IP.
    pub(crate) pod_ip: Option<IpAddr>,
    /// The pod's directory (its volumes live in `volumes/`).
    pub(crate) pod_dir: std::path::PathBuf,
    /// The pod's sandbox in the container runtime, for a pod that runs there.
    pub(crate) sandbox: Option<super::cri::CriSandbox>,
}

/// A started instance.
#[derive(Debug)]
pub(crate) struct Started {
    /// The running instance.
    pub(crate) running: RunningContainer,
    /// The ID of the image it runs (`imageID`).
    pub(crate) image_id: String,
    /// The container runtime's ID of the instance (`containerd://<id>`); `None` for wasm.
    pub(crate) runtime_id: Option<String>,
}

/// What every runtime needs before it runs a container: the pod's volumes (refreshed on
/// every start: configMap, secret and downwardAPI content), the container's environment
/// resolved (valueFrom included) and its volume mounts as open directories. A failure is a
/// configuration error, made by `config_error` (which records its event).
pub(crate) async fn prepare_container(
    ctx: &PodContext,
    req: &StartRequest,
    config_error: impl Fn(String) -> StartFailed,
) -> Result<(Environment, Vec<volumes::Preopen>), StartFailed> {
    let (c, pod) = (&req.container, &req.pod);
    let namespace = pod.metadata.namespace.clone().unwrap_or_default();
    let volumes = volumes::prepare(pod, &req.pod_dir, &ctx.client, &ctx.host_paths, &ctx.tokens)
        .await
        .map_err(|e| config_error(e.to_string()))?;
    let sources = env::fetch_sources(&ctx.client, &namespace, c)
        .await
        .map_err(|e| config_error(e.to_string()))?;
    let facts = PodFacts {
        pod,
        pod_ip: req.pod_ip.map(|ip| ip.to_string()),
        host_ip: ctx.host_ip.to_string(),
        node_cpu_millis: ctx.allocatable.cpu_millis,
        node_memory_bytes: ctx.allocatable.memory_bytes,
    };
    let container_env =
        env::resolve_env(c, &facts, &sources).map_err(|e| config_error(e.to_string()))?;
    let preopens = volumes
        .preopens_for(c, |name| container_env.get(name).map(str::to_string))
        .map_err(|e| config_error(e.to_string()))?;
    Ok((container_env, preopens))
}

/// Why a start did not produce a running instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum StartFailed {
    /// The image cannot be resolved.
    Image(String),
    /// The image is absent and the pull policy is `Never`.
    ImageNeverPull(String),
    /// The image has no valid signature where the policy asks for one.
    Signature(String),
    /// Environment or configuration error.
    Config(String),
    /// The runtime failed on its own.
    Runtime(String),
    /// The workload cannot run (invalid module, port in use): an instance that ended with
    /// `StartError`.
    Workload(String),
}

/// The credentials for `image_ref`'s registry among the pod's `imagePullSecrets`, as the
/// kubelet looks them up: each Secret of type `kubernetes.io/dockerconfigjson`
/// (`.dockerconfigjson`) or `kubernetes.io/dockercfg` (`.dockercfg`), in order, the first
/// that has the registry; anonymous when none has. A Secret that cannot be read is a Warning
/// event (`FailedToRetrieveImagePullSecret`, as the kubelet's), not a failure.
pub(crate) async fn pull_credentials(
    ctx: &PodContext,
    pod: &Pod,
    image_ref: &str,
    event: &impl Fn(EventType, &str, String),
) -> RegistryAuth {
    use k8s_openapi::api::core::v1::Secret;
    let names: Vec<String> = pod
        .spec
        .as_ref()
        .and_then(|s| s.image_pull_secrets.as_ref())
        .into_iter()
        .flatten()
        .map(|r| r.name.clone())
        .filter(|n| !n.is_empty())
        .collect();
    let Ok(reference) = Reference::parse(image_ref) else {
        return RegistryAuth::Anonymous;
    };
    if names.is_empty() {
        return RegistryAuth::Anonymous;
    }
    let namespace = pod.metadata.namespace.clone().unwrap_or_default();
    let secrets: kube::Api<Secret> = kube::Api::namespaced(ctx.client.clone(), &namespace);
    for name in names {
        let secret = match secrets.get(&name).await {
            Ok(secret) => secret,
            Err(e) => {
                event(
                    EventType::Warning,
                    "FailedToRetrieveImagePullSecret",
                    format!(
                        "Unable to retrieve some image pull secrets ({name}); attempting to pull \
                         the image may not succeed: {}",
                        wasmkube_client::status::api_message(&e)
                    ),
                );
                continue;
            }
        };
        let key = match secret.type_.as_deref() {
            Some("kubernetes.io/dockerconfigjson") => ".dockerconfigjson",
            Some("kubernetes.io/dockercfg") => ".dockercfg",
            _ => continue,
        };
        let found = secret
            .data
            .as_ref()
            .and_then(|d| d.get(key))
            .and_then(|config| auth_from_docker_config(&config.0, &reference.domain));
        if let Some(auth) = found {
            return auth;
        }
    }
    RegistryAuth::Anonymous
}

/// Starts one instance of `req.container`.
pub(crate) async fn start_container(
    ctx: Arc<PodContext>,
    req: StartRequest,
) -> Result<Started, StartFailed> {
    if let Some(sandbox) = req.sandbox.clone() {
        return super::cri::start_container(ctx, req, sandbox).await;
    }
    let c = &req.container;
    let pod = &req.pod;
    let event = |type_: EventType, reason: &str, message: String| {
        let involved = pod_reference(pod, Some((&c.name, req.init)));
        ctx.events.record(involved, type_, reason, message);
    };
    let image_ref = c.image.clone().unwrap_or_default();
    let policy = PullPolicy::for_container(c.image_pull_policy.as_deref(), &image_ref);
    let pulling = std::time::Instant::now();
    let puller = |_: &str| {
        event(
            EventType::Normal,
            "Pulling",
            format!("Pulling image \"{image_ref}\""),
        );
    };
    let auth = pull_credentials(&ctx, pod, &image_ref, &event).await;
    let authenticated = AuthenticatedPuller {
        registries: &ctx.registries,
        auth: auth.clone(),
    };
    let image = match ctx
        .images
        .ensure_pulling(&image_ref, policy, Some(&authenticated), puller)
        .await
    {
        Ok((image, pulled)) => {
            if pulled {
                event(
                    EventType::Normal,
                    "Pulled",
                    format!(
                        "Successfully pulled image \"{image_ref}\" in {:.3}s",
                        pulling.elapsed().as_secs_f64()
                    ),
                );
            } else {
                event(
                    EventType::Normal,
                    "Pulled",
                    format!("Container image \"{image_ref}\" already present on machine"),
                );
            }
            image
        }
        Err(e) => {
            let message = e.to_string();
            let never = matches!(e, ImageError::NeverPull { .. });
            if never {
                // The kubelet's image manager: an ErrImageNeverPull Warning, no pull attempt.
                event(EventType::Warning, e.reason(), message.clone());
            } else {
                event(
                    EventType::Warning,
                    "Failed",
                    format!("Failed to pull image \"{image_ref}\": {message}"),
                );
            }
            event(
                EventType::Warning,
                "Failed",
                format!("Error: {}", e.reason()),
            );
            return Err(if never {
                StartFailed::ImageNeverPull(message)
            } else {
                StartFailed::Image(message)
            });
        }
    };
    signature::check_image(&ctx, pod, &image_ref, &image, &auth, &event).await?;

    let namespace = pod.metadata.namespace.clone().unwrap_or_default();
    let config_error = |message: String| {
        event(EventType::Warning, "Failed", format!("Error: {message}"));
        StartFailed::Config(message)
    };
    let (container_env, preopens) = prepare_container(&ctx, &req, config_error).await?;
    // The open directories stay open until the instance ends: the runtime preopens them by
    // their /proc/self/fd path (an HTTP handler does so for every request).
    let held: Vec<volumes::DirHandle> = preopens.iter().map(|p| p.dir.clone()).collect();
    let mounts: Vec<Mount> = preopens
        .into_iter()
        .map(|p| Mount {
            host: p.dir.proc_path(),
            guest: p.guest,
            read_only: p.read_only,
        })
        .collect();
    // The image's Env comes first, then the apiserver's address (the kubelet's service
    // variables); the container's overrides them.
    let mut environment = Environment::default();
    for (k, v) in &image.env {
        environment.set(k, v.clone());
    }
    if let Some((host, port)) = &ctx.api_server {
        environment.set("KUBERNETES_SERVICE_HOST", host.clone());
        environment.set("KUBERNETES_SERVICE_PORT", port.clone());
    }
    for (k, v) in container_env.into_vec() {
        environment.set(&k, v);
    }
    let command: Vec<String> = c
        .command
        .iter()
        .flatten()
        .map(|s| environment.expand(s))
        .collect();
    let args: Vec<String> = c
        .args
        .iter()
        .flatten()
        .map(|s| environment.expand(s))
        .collect();
    let mut argv = image.argv(&command, &args);
    // A wasm image has no program to choose: when no word of the line names one (no command,
    // no entrypoint, and the image's Cmd is replaced by args or absent), argv[0] is the
    // container's name.
    let unnamed = command.is_empty()
        && image.entrypoint.is_empty()
        && (!args.is_empty() || image.cmd.is_empty());
    if unnamed {
        argv.insert(0, c.name.clone());
    }

    let log = ContainerLog::create(
        &ctx.logs,
        &ctx.pods_dir,
        pod.metadata.uid.as_deref().unwrap_or_default(),
        &c.name,
        req.restart_count,
    )
    .map_err(|e| StartFailed::Runtime(format!("cannot create the log file: {e}")))?;

    let limit = |name: &str| {
        c.resources
            .as_ref()
            .and_then(|r| r.limits.as_ref())
            .and_then(|l| l.get(name))
            .and_then(|q| Quantity::parse(&q.0).ok())
    };
    let limits = Limits {
        memory_bytes: limit("memory").and_then(|q| u64::try_from(q.value()).ok()),
        cpu_millis: None,
        // A zero limit is no limit (the kubelet sets no CFS quota for it).
        cpu_millicores: limit("cpu")
            .and_then(|q| u64::try_from(q.milli_value()).ok())
            .filter(|m| *m > 0),
    };
    let listen = match req.pod_ip {
        Some(ip) => {
            let ports: Vec<SocketAddr> = c
                .ports
                .iter()
                .flatten()
                .filter(|p| p.protocol.as_deref().is_none_or(|p| p == "TCP"))
                .filter_map(|p| u16::try_from(p.container_port).ok())
                .map(|port| SocketAddr::new(ip, port))
                .collect();
            if ports.is_empty() {
                vec![SocketAddr::new(ip, DEFAULT_HTTP_PORT)]
            } else {
                ports
            }
        }
        None => Vec::new(),
    };
    let network = req.pod_ip.map(|ip| {
        let (network, warnings) = guest_network(&ctx, pod, ip);
        for warning in warnings {
            // The kubelet's event for a resolver configuration cut to Kubernetes' limits.
            event(EventType::Warning, "DNSConfigForming", warning);
        }
        network
    });
    let spec = ContainerSpec {
        id: format!(
            "{namespace}/{}/{}",
            pod.metadata.name.as_deref().unwrap_or_default(),
            c.name
        ),
        image: image.clone(),
        args: argv,
        env: environment.into_vec(),
        mounts,
        log: log.clone(),
        limits,
        listen,
        network,
    };
    event(
        EventType::Normal,
        "Created",
        format!("Created container: {}", c.name),
    );
    match ctx.runtime.start(spec).await {
        Ok(mut running) => {
            let outcome = running.outcome;
            running.outcome = Box::pin(async move {
                let outcome = outcome.await;
                drop(held);
                outcome
            });
            event(
                EventType::Normal,
                "Started",
                format!("Started container {}", c.name),
            );
            Ok(Started {
                running,
                image_id: image.digest.clone(),
                runtime_id: None,
            })
        }
        Err(StartError::Workload(message)) => {
            log.note(Stream::Stderr, &format!("failed to start: {message}"));
            log.close();
            event(EventType::Warning, "Failed", format!("Error: {message}"));
            Err(StartFailed::Workload(message))
        }
        Err(StartError::Internal(message) | StartError::Timeout(message)) => {
            log.close();
            event(EventType::Warning, "Failed", format!("Error: {message}"));
            Err(StartFailed::Runtime(message))
        }
    }
}
