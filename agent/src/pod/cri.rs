//! Pods that run as Linux containers through the node's container runtime (CRI), as the
//! kubelet's kuberuntime runs them.
//!
//! * Which runtime ([`runtime_of`]): the pod's RuntimeClass handler; `wasmtime` is the
//!   in-process wasm runtime, any other handler goes to CRI with that handler. A pod without a
//!   runtimeClassName goes to CRI (its default handler) when the node has a container
//!   runtime, else to wasmtime.
//! * The sandbox ([`run_sandbox`], the worker's pod-level step): `RunPodSandbox` with the
//!   pod's metadata, hostname, log directory (the pod's directory, where the agent's log
//!   reader finds `<container>/<restartCount>.log`, which the runtime writes in the CRI log
//!   format itself), the resolv.conf the agent forms for wasm pods too, the
//!   `io.kubernetes.pod.*` labels and the namespace options; its IP from `PodSandboxStatus`.
//!   An old sandbox of the pod (an agent restart) is removed first, with its containers: one
//!   sandbox and one container per container of the pod, never two.
//! * A container ([`start_container`]): `ImageStatus`/`PullImage` with the pod's
//!   imagePullSecrets and the pull policy, `CreateContainer` (command/args/env/workingDir,
//!   the pod's volumes, resources as cgroup limits, the security context; privileged
//!   containers refused), `StartContainer`; then `ContainerStatus` is polled until the
//!   container exits (exit code, `OOMKilled`, finishedAt), which is the lifecycle's
//!   [`Outcome`]. A stop is `StopContainer` with the grace period; an exited container is
//!   removed (its log stays in the pod's directory for `--previous`).
//! * Deletion ([`remove_sandbox`]): `StopPodSandbox` then `RemovePodSandbox`.
//! * After an agent restart ([`remove_orphans`]): sandboxes of pods no longer bound to the
//!   node are removed.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use k8s_openapi::api::core::v1::{Container, Pod};
use k8s_openapi::api::node::v1::RuntimeClass;
use wasmkube_api::quantity::Quantity;
use wasmkube_client::events::{EventType, pod_reference};
use wasmkube_cri::{Client, v1};

use super::PodContext;
use super::env::Environment;
use super::start::{StartFailed, StartRequest, Started, pull_credentials};
use crate::images::PullPolicy;
use crate::images::registry::RegistryAuth;
use crate::logs::ContainerLog;
use crate::runtime::{Outcome, RunningContainer, StopHandle, Workload};
use crate::volumes;

/// The label of a sandbox or container naming its pod's UID (the kubelet's).
pub(crate) const POD_UID_LABEL: &str = "io.kubernetes.pod.uid";
pub(crate) const POD_NAME_LABEL: &str = "io.kubernetes.pod.name";
pub(crate) const POD_NAMESPACE_LABEL: &str = "io.kubernetes.pod.namespace";
pub(crate) const CONTAINER_NAME_LABEL: &str = "io.kubernetes.container.name";
/// How often a running container's status is read.
const POLL: Duration = Duration::from_secs(1);

/// Where a pod runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PodRuntime {
    /// In-process wasmtime.
    Wasm,
    /// The container runtime, with this RuntimeClass handler (`""`: its default).
    Cri {
        /// The handler.
        handler: String,
    },
}

/// Which runtime runs `pod` (see the module docs). `Err` is the kubelet's sandbox creation
/// error (a RuntimeClass that does not exist, a handler this node lacks).
pub(crate) async fn runtime_of(ctx: &PodContext, pod: &Pod) -> Result<PodRuntime, String> {
    // A wasm-only node runs every pod in wasmtime, as before it knew of CRI (the scheduler's
    // RuntimeClass filter keeps other handlers' pods away from it), without reading the
    // RuntimeClass.
    if ctx.cri.is_none() {
        return Ok(PodRuntime::Wasm);
    }
    let class = pod
        .spec
        .as_ref()
        .and_then(|s| s.runtime_class_name.as_deref())
        .filter(|c| !c.is_empty());
    let Some(class) = class else {
        return Ok(PodRuntime::Cri {
            handler: String::new(),
        });
    };
    let classes: kube::Api<RuntimeClass> = kube::Api::all(ctx.client.clone());
    let handler = match classes.get(class).await {
        Ok(rc) => rc.handler,
        Err(e) if wasmkube_client::status::is_not_found(&e) => {
            return Err(format!("RuntimeClass \"{class}\" not found"));
        }
        Err(e) => {
            return Err(format!(
                "failed to get RuntimeClass \"{class}\": {}",
                wasmkube_client::status::api_message(&e)
            ));
        }
    };
    if handler == crate::node::WASMTIME_HANDLER {
        return Ok(PodRuntime::Wasm);
    }
    Ok(PodRuntime::Cri { handler })
}

/// A pod's sandbox in the container runtime.
#[derive(Debug, Clone)]
pub(crate) struct CriSandbox {
    /// The runtime's sandbox ID.
    pub(crate) id: String,
    /// The config it was made with (`CreateContainer` and `PullImage` take it again).
    pub(crate) config: v1::PodSandboxConfig,
    /// Its IP, when it has one.
    pub(crate) ip: Option<IpAddr>,
}

fn client(ctx: &PodContext) -> Result<&Client, String> {
    ctx.cri
        .as_ref()
        .ok_or_else(|| "this node has no container runtime".to_string())
}

fn pod_labels(pod: &Pod) -> HashMap<String, String> {
    let mut labels: HashMap<String, String> = pod
        .metadata
        .labels
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    labels.insert(
        POD_NAME_LABEL.into(),
        pod.metadata.name.clone().unwrap_or_default(),
    );
    labels.insert(
        POD_NAMESPACE_LABEL.into(),
        pod.metadata.namespace.clone().unwrap_or_default(),
    );
    labels.insert(
        POD_UID_LABEL.into(),
        pod.metadata.uid.clone().unwrap_or_default(),
    );
    labels
}

/// The sandbox config of `pod` (the kubelet's `generatePodSandboxConfig`).
fn sandbox_config(ctx: &PodContext, pod: &Pod, attempt: u32) -> v1::PodSandboxConfig {
    let spec = pod.spec.clone().unwrap_or_default();
    let name = pod.metadata.name.clone().unwrap_or_default();
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let host_network = spec.host_network.unwrap_or(false);
    let hostname = if host_network {
        String::new()
    } else {
        let mut h = spec.hostname.clone().unwrap_or_else(|| name.clone());
        h.truncate(63);
        h.trim_end_matches(['-', '.']).to_string()
    };
    let (resolv, _warnings) = crate::dns::pod_resolv_conf(pod, &ctx.dns);
    let mode = |node: bool| {
        if node {
            v1::NamespaceMode::Node as i32
        } else {
            v1::NamespaceMode::Pod as i32
        }
    };
    let psc = spec.security_context.clone().unwrap_or_default();
    let namespace_options = v1::NamespaceOption {
        network: mode(host_network),
        pid: if spec.host_pid.unwrap_or(false) {
            v1::NamespaceMode::Node as i32
        } else if spec.share_process_namespace.unwrap_or(false) {
            v1::NamespaceMode::Pod as i32
        } else {
            v1::NamespaceMode::Container as i32
        },
        ipc: mode(spec.host_ipc.unwrap_or(false)),
        ..Default::default()
    };
    v1::PodSandboxConfig {
        metadata: Some(v1::PodSandboxMetadata {
            name,
            uid: uid.clone(),
            namespace: pod.metadata.namespace.clone().unwrap_or_default(),
            attempt,
        }),
        hostname,
        log_directory: ctx.pods_dir.join(&uid).display().to_string(),
        dns_config: Some(v1::DnsConfig {
            servers: resolv.nameservers,
            searches: resolv.searches,
            options: resolv.options,
        }),
        labels: pod_labels(pod),
        annotations: pod
            .metadata
            .annotations
            .iter()
            .flatten()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        linux: Some(v1::LinuxPodSandboxConfig {
            security_context: Some(v1::LinuxSandboxSecurityContext {
                namespace_options: Some(namespace_options),
                run_as_user: psc.run_as_user.map(|value| v1::Int64Value { value }),
                run_as_group: psc.run_as_group.map(|value| v1::Int64Value { value }),
                supplemental_groups: psc.supplemental_groups.clone().unwrap_or_default(),
                ..Default::default()
            }),
            sysctls: psc
                .sysctls
                .iter()
                .flatten()
                .map(|s| (s.name.clone(), s.value.clone()))
                .collect(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The sandboxes the runtime holds for the pod with `uid`.
async fn sandboxes_of(client: &Client, uid: &str) -> Result<Vec<v1::PodSandbox>, String> {
    let list = client
        .list_pod_sandbox(v1::ListPodSandboxRequest {
            filter: Some(v1::PodSandboxFilter {
                label_selector: HashMap::from([(POD_UID_LABEL.to_string(), uid.to_string())]),
                ..Default::default()
            }),
        })
        .await
        .map_err(|e| e.to_string())?;
    Ok(list.items)
}

/// Creates the pod's sandbox (removing any the runtime still holds for it) and reads its IP.
pub(crate) async fn run_sandbox(
    ctx: &PodContext,
    pod: &Pod,
    handler: &str,
) -> Result<CriSandbox, String> {
    let client = client(ctx)?;
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let old = sandboxes_of(client, &uid).await?;
    let attempt = old
        .iter()
        .filter_map(|s| s.metadata.as_ref().map(|m| m.attempt + 1))
        .max()
        .unwrap_or(0);
    for s in &old {
        tracing::info!(sandbox = %s.id, "removing a sandbox the pod had before");
        remove_sandbox(client, &s.id).await;
    }
    let config = sandbox_config(ctx, pod, attempt);
    std::fs::create_dir_all(&config.log_directory)
        .map_err(|e| format!("cannot create the log directory: {e}"))?;
    let id = client
        .run_pod_sandbox(v1::RunPodSandboxRequest {
            config: Some(config.clone()),
            runtime_handler: handler.to_string(),
        })
        .await
        .map_err(|e| e.to_string())?
        .pod_sandbox_id;
    let status = client
        .pod_sandbox_status(v1::PodSandboxStatusRequest {
            pod_sandbox_id: id.clone(),
            verbose: false,
        })
        .await
        .map_err(|e| e.to_string())?;
    let ip = status
        .status
        .and_then(|s| s.network)
        .and_then(|n| n.ip.parse().ok());
    tracing::info!(sandbox = %id, ip = ?ip, handler, "pod sandbox running");
    Ok(CriSandbox { id, config, ip })
}

/// Stops and removes a sandbox (both idempotent); failures are logged.
pub(crate) async fn remove_sandbox(client: &Client, id: &str) {
    if let Err(e) = client
        .stop_pod_sandbox(v1::StopPodSandboxRequest {
            pod_sandbox_id: id.to_string(),
        })
        .await
        && !e.is_not_found()
    {
        tracing::warn!(sandbox = %id, error = %e, "StopPodSandbox failed");
    }
    if let Err(e) = client
        .remove_pod_sandbox(v1::RemovePodSandboxRequest {
            pod_sandbox_id: id.to_string(),
        })
        .await
        && !e.is_not_found()
    {
        tracing::warn!(sandbox = %id, error = %e, "RemovePodSandbox failed");
    }
}

/// Removes the sandboxes (with their containers) of pods not in `live` (UIDs of the pods
/// bound to this node): pods deleted while the agent was down.
pub(crate) async fn remove_orphans(client: &Client, live: &HashSet<String>) {
    let list = match client
        .list_pod_sandbox(v1::ListPodSandboxRequest::default())
        .await
    {
        Ok(list) => list.items,
        Err(e) => {
            tracing::warn!(error = %e, "cannot list the container runtime's pod sandboxes");
            return;
        }
    };
    for s in list {
        let Some(uid) = s.labels.get(POD_UID_LABEL) else {
            continue;
        };
        if !live.contains(uid) {
            tracing::info!(sandbox = %s.id, %uid, "removing the sandbox of a pod that is gone");
            remove_sandbox(client, &s.id).await;
        }
    }
}

/// Pulls `image` as the pull policy says; returns the image's ID (`imageID`) or the
/// kubelet's failure.
async fn ensure_image(
    ctx: &PodContext,
    pod: &Pod,
    c: &Container,
    sandbox: &CriSandbox,
    event: &(impl Fn(EventType, &str, String) + Sync),
) -> Result<String, StartFailed> {
    let client = client(ctx).map_err(StartFailed::Runtime)?;
    let image = c.image.clone().unwrap_or_default();
    let policy = PullPolicy::for_container(c.image_pull_policy.as_deref(), &image);
    let spec = v1::ImageSpec {
        image: image.clone(),
        ..Default::default()
    };
    let present = client
        .image_status(v1::ImageStatusRequest {
            image: Some(spec.clone()),
            verbose: false,
        })
        .await
        .map_err(|e| StartFailed::Runtime(e.to_string()))?
        .image;
    if policy != PullPolicy::Always
        && let Some(found) = &present
    {
        event(
            EventType::Normal,
            "Pulled",
            format!("Container image \"{image}\" already present on machine"),
        );
        return Ok(found.id.clone());
    }
    if policy == PullPolicy::Never {
        let message =
            format!("Container image \"{image}\" is not present with pull policy of Never");
        event(EventType::Warning, "ErrImageNeverPull", message.clone());
        event(
            EventType::Warning,
            "Failed",
            "Error: ErrImageNeverPull".into(),
        );
        return Err(StartFailed::ImageNeverPull(message));
    }
    event(
        EventType::Normal,
        "Pulling",
        format!("Pulling image \"{image}\""),
    );
    let auth = match pull_credentials(ctx, pod, &image, event).await {
        RegistryAuth::Anonymous => None,
        RegistryAuth::Basic(username, password) => Some(v1::AuthConfig {
            username,
            password,
            ..Default::default()
        }),
        RegistryAuth::Bearer(token) => Some(v1::AuthConfig {
            registry_token: token,
            ..Default::default()
        }),
    };
    let pulling = std::time::Instant::now();
    match client
        .pull_image(v1::PullImageRequest {
            image: Some(spec.clone()),
            auth,
            sandbox_config: Some(sandbox.config.clone()),
        })
        .await
    {
        Ok(pulled) => {
            event(
                EventType::Normal,
                "Pulled",
                format!(
                    "Successfully pulled image \"{image}\" in {:.3}s",
                    pulling.elapsed().as_secs_f64()
                ),
            );
            let id = client
                .image_status(v1::ImageStatusRequest {
                    image: Some(spec),
                    verbose: false,
                })
                .await
                .ok()
                .and_then(|s| s.image)
                .map_or(pulled.image_ref, |i| i.id);
            Ok(id)
        }
        Err(e) => {
            let message = e.to_string();
            event(
                EventType::Warning,
                "Failed",
                format!("Failed to pull image \"{image}\": {message}"),
            );
            event(EventType::Warning, "Failed", "Error: ErrImagePull".into());
            Err(StartFailed::Image(message))
        }
    }
}

/// Linux resources of a container: memory limit, CPU quota/period from `limits.cpu`,
/// shares from `requests.cpu` (the kubelet's `milliCPUToShares`/`milliCPUToQuota`).
fn linux_resources(c: &Container) -> v1::LinuxContainerResources {
    let get = |which: &str, name: &str| {
        let r = c.resources.as_ref()?;
        let map = if which == "limits" {
            r.limits.as_ref()
        } else {
            r.requests.as_ref()
        }?;
        Quantity::parse(&map.get(name)?.0).ok()
    };
    let milli = |q: Quantity| i64::try_from(q.milli_value()).unwrap_or(i64::MAX);
    const PERIOD: i64 = 100_000;
    let mut res = v1::LinuxContainerResources {
        cpu_period: 0,
        cpu_quota: 0,
        cpu_shares: 2,
        ..Default::default()
    };
    let request = get("requests", "cpu").or_else(|| get("limits", "cpu"));
    if let Some(q) = request {
        res.cpu_shares = (milli(q).saturating_mul(1024) / 1000).max(2);
    }
    if let Some(q) = get("limits", "cpu")
        && milli(q) > 0
    {
        res.cpu_period = PERIOD;
        res.cpu_quota = (milli(q).saturating_mul(PERIOD) / 1000).max(1000);
    }
    if let Some(q) = get("limits", "memory") {
        res.memory_limit_in_bytes = i64::try_from(q.value()).unwrap_or(i64::MAX);
    }
    res
}

/// The container's security context for the runtime; `Err` for what this node refuses.
fn security_context(pod: &Pod, c: &Container) -> Result<v1::LinuxContainerSecurityContext, String> {
    let psc = pod
        .spec
        .as_ref()
        .and_then(|s| s.security_context.clone())
        .unwrap_or_default();
    let sc = c.security_context.clone().unwrap_or_default();
    if sc.privileged.unwrap_or(false) {
        return Err(format!(
            "container {} is privileged: this node does not run privileged containers",
            c.name
        ));
    }
    let caps = sc.capabilities.clone().unwrap_or_default();
    Ok(v1::LinuxContainerSecurityContext {
        capabilities: Some(v1::Capability {
            add_capabilities: caps.add.unwrap_or_default(),
            drop_capabilities: caps.drop.unwrap_or_default(),
            ..Default::default()
        }),
        privileged: false,
        run_as_user: sc
            .run_as_user
            .or(psc.run_as_user)
            .map(|value| v1::Int64Value { value }),
        run_as_group: sc
            .run_as_group
            .or(psc.run_as_group)
            .map(|value| v1::Int64Value { value }),
        supplemental_groups: psc.supplemental_groups.clone().unwrap_or_default(),
        readonly_rootfs: sc.read_only_root_filesystem.unwrap_or(false),
        no_new_privs: !sc.allow_privilege_escalation.unwrap_or(true),
        namespace_options: Some(v1::NamespaceOption {
            network: v1::NamespaceMode::Pod as i32,
            pid: v1::NamespaceMode::Container as i32,
            ipc: v1::NamespaceMode::Pod as i32,
            ..Default::default()
        }),
        ..Default::default()
    })
}

/// Starts one instance of `req.container` in `sandbox`.
pub(crate) async fn start_container(
    ctx: Arc<PodContext>,
    req: StartRequest,
    sandbox: CriSandbox,
) -> Result<Started, StartFailed> {
    let c = &req.container;
    let pod = &req.pod;
    let event = |type_: EventType, reason: &str, message: String| {
        let involved = pod_reference(pod, Some((&c.name, req.init)));
        ctx.events.record(involved, type_, reason, message);
    };
    let config_error = |message: String| {
        event(EventType::Warning, "Failed", format!("Error: {message}"));
        StartFailed::Config(message)
    };
    let security = security_context(pod, c).map_err(config_error)?;
    let image_id = ensure_image(&ctx, pod, c, &sandbox, &event).await?;
    let client = client(&ctx).map_err(StartFailed::Runtime)?.clone();

    let namespace = pod.metadata.namespace.clone().unwrap_or_default();
    let (container_env, preopens) =
        super::start::prepare_container(&ctx, &req, config_error).await?;
    // The runtime is another process: it mounts the directory the agent holds open through
    // /proc/<agent>/fd/<n> (resolved once, while the handle is held), never the volume's
    // path looked up again.
    let pid = std::process::id();
    let mounts: Vec<v1::Mount> = preopens
        .iter()
        .map(|p| v1::Mount {
            container_path: p.guest.clone(),
            host_path: p
                .dir
                .proc_path()
                .display()
                .to_string()
                .replace("/proc/self/", &format!("/proc/{pid}/")),
            readonly: p.read_only,
            ..Default::default()
        })
        .collect();
    // The image's Env is the runtime's to add; the apiserver's address (the kubelet's
    // service variables) first, then the container's own.
    let mut environment = Environment::default();
    if let Some((host, port)) = &ctx.api_server {
        environment.set("KUBERNETES_SERVICE_HOST", host.clone());
        environment.set("KUBERNETES_SERVICE_PORT", port.clone());
    }
    for (k, v) in container_env.into_vec() {
        environment.set(&k, v);
    }
    let expand = |words: &Option<Vec<String>>| -> Vec<String> {
        words
            .iter()
            .flatten()
            .map(|s| environment.expand(s))
            .collect()
    };
    let command = expand(&c.command);
    let args = expand(&c.args);
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    // Created (empty) and registered for `kubectl logs -f`; the runtime appends to it.
    let log = ContainerLog::create(&ctx.logs, &ctx.pods_dir, &uid, &c.name, req.restart_count)
        .map_err(|e| StartFailed::Runtime(format!("cannot create the log file: {e}")))?;
    let config = v1::ContainerConfig {
        metadata: Some(v1::ContainerMetadata {
            name: c.name.clone(),
            attempt: req.restart_count,
        }),
        image: Some(v1::ImageSpec {
            image: image_id.clone(),
            user_specified_image: c.image.clone().unwrap_or_default(),
            ..Default::default()
        }),
        command,
        args,
        working_dir: c.working_dir.clone().unwrap_or_default(),
        envs: environment
            .into_vec()
            .into_iter()
            .map(|(key, value)| v1::KeyValue { key, value })
            .collect(),
        mounts,
        labels: HashMap::from([
            (CONTAINER_NAME_LABEL.to_string(), c.name.clone()),
            (
                POD_NAME_LABEL.to_string(),
                pod.metadata.name.clone().unwrap_or_default(),
            ),
            (POD_NAMESPACE_LABEL.to_string(), namespace.clone()),
            (POD_UID_LABEL.to_string(), uid.clone()),
        ]),
        annotations: HashMap::from([(
            "io.kubernetes.container.restartCount".to_string(),
            req.restart_count.to_string(),
        )]),
        log_path: format!("{}/{}.log", c.name, req.restart_count),
        linux: Some(v1::LinuxContainerConfig {
            resources: Some(linux_resources(c)),
            security_context: Some(security),
        }),
        ..Default::default()
    };
    let created = client
        .create_container(v1::CreateContainerRequest {
            pod_sandbox_id: sandbox.id.clone(),
            config: Some(config),
            sandbox_config: Some(sandbox.config.clone()),
        })
        .await;
    let id = match created {
        Ok(r) => r.container_id,
        Err(e) => {
            log.close();
            let message = e.to_string();
            event(EventType::Warning, "Failed", format!("Error: {message}"));
            return Err(StartFailed::Runtime(message));
        }
    };
    event(
        EventType::Normal,
        "Created",
        format!("Created container: {}", c.name),
    );
    if let Err(e) = client
        .start_container(v1::StartContainerRequest {
            container_id: id.clone(),
        })
        .await
    {
        // The kubelet's RunContainerError: the runtime records the container as exited
        // (StartError, 128) with its message.
        log.close();
        let message = e.message();
        event(EventType::Warning, "Failed", format!("Error: {message}"));
        remove_container(&client, &id).await;
        return Err(StartFailed::Workload(message));
    }
    event(
        EventType::Normal,
        "Started",
        format!("Started container {}", c.name),
    );
    // The kubelet's `<runtime name>://<id>`.
    let runtime_name = client
        .version(v1::VersionRequest {
            version: "v1".into(),
        })
        .await
        .map_or_else(|_| "cri".to_owned(), |v| v.runtime_name);
    let runtime_id = Some(format!("{runtime_name}://{id}"));
    let outcome = watch_exit(client.clone(), id.clone(), log, preopens).boxed();
    Ok(Started {
        runtime_id,
        running: RunningContainer {
            workload: Workload::Process,
            stopper: Box::new(CriStop {
                client: client.clone(),
                id: id.clone(),
            }),
            outcome,
            exec: Some(Box::new(crate::probes::ExecTarget {
                client,
                container_id: id,
            })),
        },
        image_id,
    })
}

/// Polls the container's status until it exits; then removes it.
async fn watch_exit(
    client: Client,
    id: String,
    log: ContainerLog,
    held: Vec<volumes::Preopen>,
) -> Outcome {
    let outcome = loop {
        tokio::time::sleep(POLL).await;
        let status = match client
            .container_status(v1::ContainerStatusRequest {
                container_id: id.clone(),
                verbose: false,
            })
            .await
        {
            Ok(s) => s.status,
            Err(e) if e.is_not_found() => {
                break Outcome::Trapped {
                    message: "the container is gone from the container runtime".into(),
                };
            }
            Err(e) => {
                tracing::debug!(container = %id, error = %e, "ContainerStatus failed; retrying");
                continue;
            }
        };
        let Some(status) = status else { continue };
        if status.state != v1::ContainerState::ContainerExited as i32 {
            continue;
        }
        break if status.reason == "OOMKilled" {
            Outcome::OutOfMemory
        } else {
            Outcome::Exited(status.exit_code)
        };
    };
    drop(held);
    log.close();
    remove_container(&client, &id).await;
    outcome
}

async fn remove_container(client: &Client, id: &str) {
    if let Err(e) = client
        .remove_container(v1::RemoveContainerRequest {
            container_id: id.to_string(),
        })
        .await
        && !e.is_not_found()
    {
        tracing::warn!(container = %id, error = %e, "RemoveContainer failed");
    }
}

/// Stops a container through the runtime: SIGTERM, SIGKILL after the grace period.
struct CriStop {
    client: Client,
    id: String,
}

impl StopHandle for CriStop {
    fn stop(&self, grace: Duration) {
        let client = self.client.clone();
        let id = self.id.clone();
        tokio::spawn(async move {
            if let Err(e) = client.stop_container(&id, grace).await
                && !e.is_not_found()
            {
                tracing::warn!(container = %id, error = %e, "StopContainer failed");
            }
        });
    }
}

/// Sorted copy of a string map (for tests).
#[cfg(test)]
fn sorted(m: &HashMap<String, String>) -> std::collections::BTreeMap<String, String> {
    m.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{ResourceRequirements, SecurityContext};
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity as Q;
    use std::collections::BTreeMap;

    fn container() -> Container {
        Container {
            name: "c".into(),
            ..Default::default()
        }
    }

    #[test]
    fn resources_become_cgroup_limits_as_the_kubelet_computes_them() {
        let mut c = container();
        c.resources = Some(ResourceRequirements {
            limits: Some(BTreeMap::from([
                ("cpu".to_string(), Q("500m".into())),
                ("memory".to_string(), Q("64Mi".into())),
            ])),
            requests: Some(BTreeMap::from([("cpu".to_string(), Q("250m".into()))])),
            ..Default::default()
        });
        let r = linux_resources(&c);
        assert_eq!(r.memory_limit_in_bytes, 64 << 20);
        assert_eq!(r.cpu_period, 100_000);
        assert_eq!(r.cpu_quota, 50_000);
        assert_eq!(r.cpu_shares, 256);
        let none = linux_resources(&container());
        assert_eq!(
            (none.cpu_quota, none.cpu_shares, none.memory_limit_in_bytes),
            (0, 2, 0)
        );
    }

    #[test]
    fn privileged_containers_are_refused_with_a_reason() {
        let mut c = container();
        c.security_context = Some(SecurityContext {
            privileged: Some(true),
            ..Default::default()
        });
        let err = security_context(&Pod::default(), &c).unwrap_err();
        assert!(err.contains("privileged"), "{err}");
        c.security_context = Some(SecurityContext {
            run_as_user: Some(1000),
            read_only_root_filesystem: Some(true),
            ..Default::default()
        });
        let sc = security_context(&Pod::default(), &c).unwrap();
        assert_eq!(sc.run_as_user, Some(v1::Int64Value { value: 1000 }));
        assert!(sc.readonly_rootfs);
        assert!(!sc.privileged);
    }

    #[test]
    fn pod_labels_name_the_pod_as_the_kubelets_do() {
        let mut pod = Pod::default();
        pod.metadata.name = Some("p".into());
        pod.metadata.namespace = Some("ns".into());
        pod.metadata.uid = Some("u".into());
        pod.metadata.labels = Some(BTreeMap::from([("app".into(), "x".into())]));
        let labels = sorted(&pod_labels(&pod));
        assert_eq!(labels[POD_UID_LABEL], "u");
        assert_eq!(labels[POD_NAME_LABEL], "p");
        assert_eq!(labels[POD_NAMESPACE_LABEL], "ns");
        assert_eq!(labels["app"], "x");
    }
}
