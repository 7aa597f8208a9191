//! `wasmkube server`: a complete single-node cluster in one process: the apiserver on an
//! embedded store, the scheduler, the controllers and a node agent running wasm pods.
//!
//! On SIGINT or SIGTERM the components stop first (the controller-manager and the scheduler
//! release their Leases, the agent stops its pods), and only then the apiserver they talk
//! to, as a cluster's control plane would be taken down.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;

/// How long the scheduler, controllers and agent may take to stop before the apiserver
/// stops regardless.
const COMPONENTS_STOP_TIMEOUT: Duration = Duration::from_secs(20);
/// The embedded scheduler's user, bound to RBAC's `system:kube-scheduler` role.
const SCHEDULER_USER: &str = "system:kube-scheduler";
/// The embedded controller-manager's user, bound to `system:kube-controller-manager`.
const CONTROLLER_MANAGER_USER: &str = "system:kube-controller-manager";
/// Where the controllers' service accounts live.
const CONTROLLER_NAMESPACE: &str = "kube-system";

use super::cluster::{
    LogFormat, NodeArgs, Shutdown, component_client, default_data_dir, init_logging,
};

/// Run a cluster: the Kubernetes API on an embedded, durable store, the scheduler, the
/// controllers and a node agent that runs wasm pods (each unless --disable-...).
///
/// On first start it creates a CA, a serving certificate, an admin client certificate and
/// an admin kubeconfig in the data directory; later starts reuse them and keep every
/// object. Nodes join with bootstrap tokens from `wasmkube server token create`.
#[derive(clap::Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub(crate) struct ServerCommand {
    #[command(subcommand)]
    action: Option<ServerAction>,
    /// Where the store, certificates, tokens, kubeconfig and the embedded agent's files live
    /// [default: the user's data directory, e.g. ~/.local/share/wasmkube].
    #[arg(long, env = "WASMKUBE_DATA_DIR", value_name = "DIR", global = true)]
    data_dir: Option<PathBuf>,
    /// Address and port the apiserver listens on (HTTPS).
    #[arg(
        long,
        default_value = "127.0.0.1:6443",
        env = "WASMKUBE_BIND",
        value_name = "ADDR:PORT"
    )]
    bind: SocketAddr,
    /// Extra names or IPs for the serving certificate (repeatable), e.g. a DNS name clients use.
    #[arg(long = "tls-san", value_name = "NAME")]
    tls_sans: Vec<String>,
    /// Watch history kept, in events; older resourceVersions answer 410 Gone.
    #[arg(long, default_value_t = 100_000, value_name = "N")]
    history_max_events: usize,
    /// Watch history kept, in seconds.
    #[arg(long, default_value_t = 300, value_name = "SECS")]
    history_max_age: u64,
    /// The tolerationSeconds of the node.kubernetes.io/not-ready:NoExecute toleration
    /// added to every pod that does not already tolerate that taint.
    #[arg(long, default_value_t = 300, value_name = "SECS")]
    default_not_ready_toleration_seconds: i64,
    /// The tolerationSeconds of the node.kubernetes.io/unreachable:NoExecute toleration
    /// added to every pod that does not already tolerate that taint.
    #[arg(long, default_value_t = 300, value_name = "SECS")]
    default_unreachable_toleration_seconds: i64,
    /// Authorizers every request is put to, in order, as kube-apiserver's flag: Node, RBAC,
    /// AlwaysAllow or AlwaysDeny (comma-separated). The system:masters group is always
    /// allowed; without Node, node agents are authorized by RBAC alone.
    #[arg(long, default_value = "Node,RBAC", value_name = "MODE[,MODE]", value_delimiter = ',',
          value_parser = parse_authorization_mode)]
    authorization_mode: Vec<wasmkube_apiserver::authz::AuthorizationMode>,
    /// An EncryptionConfiguration (apiserver.config.k8s.io/v1) saying which resources are
    /// encrypted at rest and with which keys (aescbc, aesgcm, secretbox, identity), as
    /// kube-apiserver's flag [default: <data-dir>/encryption-config.yaml, written for a new
    /// cluster: Secrets with a fresh secretbox key, then identity].
    #[arg(long, value_name = "FILE")]
    encryption_provider_config: Option<std::path::PathBuf>,
    /// The longest validity of the certificates the server signs for
    /// CertificateSigningRequests (node certificates included), e.g. `8760h`, `30m`.
    #[arg(long, default_value = "8760h", value_name = "DURATION", value_parser = super::cluster::parse_duration)]
    cluster_signing_duration: Duration,
    /// The issuer of service-account tokens (repeatable: the first is put in new tokens,
    /// all are accepted), as kube-apiserver's flag
    /// [default: https://kubernetes.default.svc.cluster.local].
    #[arg(long = "service-account-issuer", value_name = "URL")]
    service_account_issuers: Vec<String>,
    /// The PKCS#8 PEM private key (ECDSA P-256 or RSA) service-account tokens are signed with
    /// [default: DATA_DIR/pki/sa.key, generated on first start].
    #[arg(long, value_name = "FILE")]
    service_account_signing_key_file: Option<PathBuf>,
    /// More PEM files of public (or private) keys service-account tokens are verified with
    /// (repeatable), e.g. a previous signing key during a rotation.
    #[arg(long = "service-account-key-file", value_name = "FILE")]
    service_account_key_files: Vec<PathBuf>,
    /// The audiences a service-account token must name to be accepted by the API
    /// (comma-separated) [default: the issuers].
    #[arg(long, value_name = "AUD[,AUD]", value_delimiter = ',')]
    api_audiences: Vec<String>,
    #[command(flatten)]
    audit: Box<AuditArgs>,
    /// Run only the control plane: no node agent in this process (join agents with `wasmkube agent`).
    #[arg(long)]
    disable_agent: bool,
    /// Do not run the scheduler in this process.
    #[arg(long)]
    disable_scheduler: bool,
    /// Do not run the controllers (Deployments, ReplicaSets, Jobs, DaemonSets, garbage
    /// collection, node lifecycle) in this process; run `wasmkube controllers` instead.
    #[arg(long)]
    disable_controllers: bool,
    #[command(flatten)]
    datastore: DatastoreArgs,
    #[command(flatten)]
    limits: LimitArgs,
    #[command(flatten)]
    controllers: super::controllers::ControllerArgs,
    #[command(flatten)]
    node: NodeArgs,
    #[command(flatten)]
    dns: super::cluster_dns::ClusterDnsArgs,
    #[command(flatten)]
    functions: FunctionArgs,
    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

/// The function ingress (Knative Routes by Host, activator and autoscaler).
#[derive(clap::Args, Debug)]
struct FunctionArgs {
    /// Where the function ingress listens for HTTP requests to Knative Routes (by Host:
    /// NAME.NAMESPACE.<--function-domain>). A port it cannot bind is logged and the server
    /// goes on without it.
    #[arg(long, value_name = "ADDR:PORT", default_value = "0.0.0.0:80")]
    function_ingress_listen: std::net::SocketAddr,
    /// Do not run the function ingress in this process.
    #[arg(long)]
    disable_function_ingress: bool,
    /// How long a request to a function at zero waits for its first ready pod before 503.
    #[arg(long, value_name = "SECS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
    function_activation_timeout: u64,
    /// How long a function without requests keeps its last pod after its stable window
    /// (Knative's scale-to-zero-grace-period), in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 30_000)]
    function_scale_to_zero_grace_ms: u64,
    /// The autoscaler's period, in milliseconds (Knative's tick interval, 2 s).
    #[arg(long, value_name = "MS", default_value_t = 2_000, value_parser = clap::value_parser!(u64).range(10..))]
    function_autoscaler_tick_ms: u64,
}

/// Where the cluster's objects are kept (k3s' flag names).
#[derive(clap::Args, Debug)]
struct DatastoreArgs {
    /// etcd members to store objects in instead of the embedded store, comma-separated
    /// (`http://HOST:PORT` or `https://HOST:PORT`); several servers given the same etcd
    /// share one cluster.
    #[arg(
        long,
        env = "WASMKUBE_DATASTORE_ENDPOINT",
        value_name = "URL[,URL]",
        value_delimiter = ','
    )]
    datastore_endpoint: Vec<String>,
    /// The CA bundle that signed etcd's serving certificates (https:// endpoints).
    #[arg(long, value_name = "FILE")]
    datastore_cafile: Option<PathBuf>,
    /// The client certificate presented to etcd (with --datastore-keyfile).
    #[arg(long, value_name = "FILE")]
    datastore_certfile: Option<PathBuf>,
    /// The private key of --datastore-certfile.
    #[arg(long, value_name = "FILE")]
    datastore_keyfile: Option<PathBuf>,
    /// How often etcd's history is compacted, as kube-apiserver's flag: each time to the
    /// revision of the previous interval, so watches can resume from at least this far
    /// back (`0s`: never).
    #[arg(long, default_value = "5m", value_name = "DURATION", value_parser = super::cluster::parse_duration)]
    etcd_compaction_interval: Duration,
}

impl DatastoreArgs {
    fn datastore(&self) -> anyhow::Result<wasmkube_apiserver::Datastore> {
        if self.datastore_endpoint.is_empty() {
            if self.datastore_cafile.is_some()
                || self.datastore_certfile.is_some()
                || self.datastore_keyfile.is_some()
            {
                anyhow::bail!(
                    "--datastore-cafile, --datastore-certfile and --datastore-keyfile need \
                     --datastore-endpoint"
                );
            }
            return Ok(wasmkube_apiserver::Datastore::Redb);
        }
        let mut endpoints = Vec::new();
        for endpoint in &self.datastore_endpoint {
            let endpoint = endpoint.trim();
            if endpoint.is_empty() {
                continue;
            }
            let Some(rest) = endpoint
                .strip_prefix("http://")
                .or_else(|| endpoint.strip_prefix("https://"))
            else {
                anyhow::bail!(
                    "--datastore-endpoint {endpoint:?}: an etcd endpoint is http://HOST:PORT or \
                     https://HOST:PORT (other datastores are not supported)"
                );
            };
            if rest.is_empty() || rest.contains('/') && !rest.ends_with('/') {
                anyhow::bail!("--datastore-endpoint {endpoint:?}: give HOST:PORT, no path");
            }
            endpoints.push(endpoint.trim_end_matches('/').to_owned());
        }
        if endpoints.is_empty() {
            anyhow::bail!("--datastore-endpoint is empty");
        }
        let mut config = wasmkube_apiserver::EtcdConfig::new(endpoints);
        config.tls = wasmkube_apiserver::EtcdTls {
            ca_file: self.datastore_cafile.clone(),
            cert_file: self.datastore_certfile.clone(),
            key_file: self.datastore_keyfile.clone(),
        };
        config.compaction_interval = self.etcd_compaction_interval;
        Ok(wasmkube_apiserver::Datastore::Etcd(config))
    }
}

/// The limits that protect the apiserver from its clients (kube-apiserver's flags and
/// defaults where it has them).
#[derive(clap::Args, Debug)]
struct LimitArgs {
    /// Read-only requests served at once; more are answered 429 with Retry-After (watches
    /// and logs are not counted, system:masters and health probes are exempt; 0: no limit).
    #[arg(long, default_value_t = wasmkube_apiserver::inflight::DEFAULT_MAX_REQUESTS_INFLIGHT, value_name = "N")]
    max_requests_inflight: usize,
    /// Mutating requests served at once; more are answered 429 with Retry-After (0: no
    /// limit).
    #[arg(long, default_value_t = wasmkube_apiserver::inflight::DEFAULT_MAX_MUTATING_REQUESTS_INFLIGHT, value_name = "N")]
    max_mutating_requests_inflight: usize,
    /// Close a client connection that has had no request in flight for this long.
    #[arg(long, default_value_t = 90, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..))]
    idle_connection_timeout: u64,
    /// Close a client connection that has not finished its TLS handshake in this long.
    #[arg(long, default_value_t = 10, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..))]
    tls_handshake_timeout: u64,
    /// Refuse writes (507 Insufficient Storage, /readyz not ready) while the data
    /// directory's filesystem has less free space than this; they resume by themselves
    /// once space is freed (0: never refuse).
    #[arg(long, default_value_t = wasmkube_apiserver::Limits::default().store_min_free_bytes, value_name = "BYTES")]
    store_min_free_bytes: u64,
}

impl LimitArgs {
    fn limits(&self) -> wasmkube_apiserver::Limits {
        wasmkube_apiserver::Limits {
            max_requests_inflight: self.max_requests_inflight,
            max_mutating_requests_inflight: self.max_mutating_requests_inflight,
            serve: wasmkube_apiserver::serve::ServeOptions {
                handshake_timeout: Duration::from_secs(self.tls_handshake_timeout),
                idle_timeout: Duration::from_secs(self.idle_connection_timeout),
            },
            store_min_free_bytes: self.store_min_free_bytes,
        }
    }
}

/// kube-apiserver's audit flags (boxed: they would make every subcommand as large).
#[derive(clap::Args, Debug)]
#[command(next_help_heading = "Auditing")]
struct AuditArgs {
    /// An audit.k8s.io/v1 Policy (YAML or JSON) saying which requests are audited at which
    /// level; without it nothing is audited (as kube-apiserver).
    #[arg(long, value_name = "PATH")]
    audit_policy_file: Option<PathBuf>,
    /// Where audit events are written as JSON lines; `-` is standard output.
    #[arg(long, value_name = "PATH")]
    audit_log_path: Option<PathBuf>,
    /// Megabytes of audit log before it is rotated (0: 100).
    #[arg(long, default_value_t = 0, value_name = "MB")]
    audit_log_maxsize: u64,
    /// Rotated audit log files kept (0: all).
    #[arg(long, default_value_t = 0, value_name = "N")]
    audit_log_maxbackup: usize,
    /// Days rotated audit log files are kept (0: no limit).
    #[arg(long, default_value_t = 0, value_name = "DAYS")]
    audit_log_maxage: u64,
}

impl AuditArgs {
    fn config(&self) -> wasmkube_apiserver::audit::AuditConfig {
        wasmkube_apiserver::audit::AuditConfig {
            policy_file: self.audit_policy_file.clone(),
            log_path: self.audit_log_path.clone(),
            log_max_size_mb: self.audit_log_maxsize,
            log_max_backups: self.audit_log_maxbackup,
            log_max_age_days: self.audit_log_maxage,
        }
    }
}

/// Parses one value of `--authorization-mode`.
fn parse_authorization_mode(
    value: &str,
) -> Result<wasmkube_apiserver::authz::AuthorizationMode, String> {
    value
        .parse()
        .map_err(|e: wasmkube_apiserver::authz::ModeError| e.to_string())
}

#[derive(clap::Subcommand, Debug)]
enum ServerAction {
    /// Manage the bootstrap tokens nodes join with (`wasmkube agent --token`), through the
    /// running server's API.
    Token {
        #[command(subcommand)]
        action: super::token::TokenAction,
    },
    /// Print a kubeconfig for a user, with a client certificate signed by the cluster CA
    /// (as `kubeadm kubeconfig user`); what the user may do is up to RBAC bindings.
    // (Boxed: the command's flags would otherwise make every `wasmkube` command as large.)
    Kubeconfig(Box<KubeconfigArgs>),
}

/// The flags of `wasmkube server kubeconfig`.
#[derive(clap::Args, Debug)]
struct KubeconfigArgs {
    /// The user name (the certificate's CN).
    #[arg(long, value_name = "NAME")]
    user: String,
    /// A group the user is in (the certificate's O). One for now: the certificate
    /// library writes one value per subject attribute.
    #[arg(long, value_name = "GROUP")]
    group: Option<String>,
    /// The server URL to put in it [default: the admin kubeconfig's].
    #[arg(long, value_name = "URL")]
    server: Option<String>,
}

impl ServerCommand {
    pub(crate) async fn execute(self) -> anyhow::Result<()> {
        self.node.image_gc_policy()?;
        let data_dir = match self.data_dir.clone() {
            Some(d) => d,
            None => default_data_dir()?,
        };
        if let Some(ServerAction::Kubeconfig(args)) = &self.action {
            let KubeconfigArgs {
                user,
                group,
                server,
            } = args.as_ref();
            let groups: Vec<&str> = group.iter().map(String::as_str).collect();
            let yaml = wasmkube_apiserver::pki::user_kubeconfig(
                &data_dir,
                user,
                &groups,
                server.as_deref(),
            )
            .with_context(|| format!("writing a kubeconfig for {user}"))?;
            print!("{yaml}");
            return Ok(());
        }
        if let Some(ServerAction::Token { action }) = self.action {
            return super::token::execute(action, &data_dir).await;
        }
        let datastore = self.datastore.datastore()?;
        init_logging(self.log_format);
        let shutdown = Shutdown::on_signals();
        crate::process::prepare(shutdown.wait());
        // Bound before the apiserver starts, which points kube-system/kube-dns at it.
        let dns = self.dns.prepare(&self.node).await?;
        let config = wasmkube_apiserver::Config {
            data_dir: data_dir.clone(),
            bind: self.bind,
            extra_sans: self.tls_sans.clone(),
            history_max_events: self.history_max_events,
            history_max_age: Duration::from_secs(self.history_max_age),
            default_toleration_seconds: wasmkube_apiserver::validation::DefaultTolerationSeconds {
                not_ready: self.default_not_ready_toleration_seconds,
                unreachable: self.default_unreachable_toleration_seconds,
            },
            authorization_modes: self.authorization_mode.clone(),
            encryption_provider_config: self.encryption_provider_config.clone(),
            cluster_signing_duration: self.cluster_signing_duration,
            service_accounts: wasmkube_apiserver::serviceaccount::ServiceAccountConfig {
                issuers: self.service_account_issuers.clone(),
                signing_key_file: self.service_account_signing_key_file.clone(),
                key_files: self.service_account_key_files.clone(),
                api_audiences: self.api_audiences.clone(),
            },
            audit: self.audit.config(),
            cluster_dns: dns.as_ref().map(super::cluster_dns::PreparedDns::service),
            datastore,
        };
        // The apiserver stops after the components (or when this function returns early).
        let (stop_apiserver, apiserver_stopped) = tokio::sync::oneshot::channel::<()>();
        let apiserver_shutdown = async move {
            let _ = apiserver_stopped.await;
        };
        let running =
            wasmkube_apiserver::start_with_limits(config, self.limits.limits(), apiserver_shutdown)
                .await
                .with_context(|| {
                    format!(
                        "starting the server with data directory {}",
                        data_dir.display()
                    )
                })?;

        let mut tasks = Vec::new();
        if let Some(dns) = dns {
            tasks.push(dns.run(&data_dir, shutdown.wait()).await?);
        }
        if !self.disable_scheduler {
            let client = component_client(&data_dir, SCHEDULER_USER, &[]).await?;
            let stop = shutdown.wait();
            tasks.push(tokio::spawn(async move {
                let config = wasmkube_scheduler::SchedulerConfig::default();
                if let Err(e) = wasmkube_scheduler::run(client, config, stop).await {
                    tracing::error!(error = %e, "the scheduler stopped");
                }
            }));
        }
        if !self.disable_controllers {
            let mut config = self.controllers.config()?;
            config.root_ca = Some(running.ca_pem.clone());
            // As kube-controller-manager with --use-service-account-credentials: the manager
            // is system:kube-controller-manager (its Lease, the shared informers), each
            // controller the service account RBAC's system:controller:<name> role is bound
            // to; the server issues their client certificates (it holds the CA).
            let client = component_client(&data_dir, CONTROLLER_MANAGER_USER, &[]).await?;
            let mut accounts = std::collections::HashMap::new();
            for account in wasmkube_controllers::service_accounts() {
                let user = format!("system:serviceaccount:{CONTROLLER_NAMESPACE}:{account}");
                // A certificate carries one group: a token's other one,
                // system:serviceaccounts:kube-system, is bound to nothing by default.
                let client =
                    component_client(&data_dir, &user, &["system:serviceaccounts"]).await?;
                accounts.insert(account.to_string(), client);
            }
            let stop = shutdown.wait();
            tasks.push(tokio::spawn(async move {
                let run =
                    wasmkube_controllers::run_with_service_accounts(client, accounts, config, stop);
                if let Err(e) = run.await {
                    tracing::error!(error = %e, "the controllers stopped");
                }
            }));
        }
        if !self.functions.disable_function_ingress {
            let listen = self.functions.function_ingress_listen;
            match tokio::net::TcpListener::bind(listen).await {
                Ok(listener) => {
                    let user = format!(
                        "system:serviceaccount:{CONTROLLER_NAMESPACE}:knative-serving-controller"
                    );
                    let client =
                        component_client(&data_dir, &user, &["system:serviceaccounts"]).await?;
                    let config = wasmkube_controllers::knative::ingress::IngressConfig {
                        domain: self.controllers.function_domain.clone(),
                        activation_timeout: std::time::Duration::from_secs(
                            self.functions.function_activation_timeout,
                        ),
                        scale_to_zero_grace: std::time::Duration::from_millis(
                            self.functions.function_scale_to_zero_grace_ms,
                        ),
                        tick: std::time::Duration::from_millis(
                            self.functions.function_autoscaler_tick_ms,
                        ),
                        ..Default::default()
                    };
                    tracing::info!(%listen, domain = %config.domain, "function ingress listening");
                    let stop = shutdown.wait();
                    tasks.push(tokio::spawn(wasmkube_controllers::knative::ingress::run(
                        client, listener, config, stop,
                    )));
                }
                Err(e) => tracing::warn!(
                    %listen,
                    error = %e,
                    "the function ingress cannot listen (see --function-ingress-listen): Knative Routes are not served by this server"
                ),
            }
        }
        let mut node_name = None;
        if !self.disable_agent {
            // The embedded agent is a node like any other: its own identity, which the
            // server issues directly (it holds the CA).
            let name = self
                .node
                .node_name
                .clone()
                .unwrap_or_else(wasmkube_client::identity::default_node_name);
            let (cert, key) = running
                .pki
                .issue_client_cert(&format!("system:node:{name}"), &["system:nodes"])
                .context("issuing the embedded node's client certificate")?;
            let slot = wasmkube_agent::certificates::CertificateSlot::new(Some(
                wasmkube_agent::certificates::Credentials::from_pem(&cert, &key)?,
            ));
            let node_client = wasmkube_agent::certificates::client::api_client(
                &running.url,
                &running.ca_pem,
                slot,
            )?;
            let mut agent = self
                .node
                .agent_config(&data_dir, node_client, &running.ca_pem, 1)?;
            agent.api_server = Some(running.url.clone());
            // As k3s' agent: the cluster-wide watches (the routed network's Nodes,
            // NetworkPolicy's pods, namespaces and policies) run as kube-proxy, not as the node.
            agent.kube_proxy_client =
                Some(component_client(&data_dir, "system:kube-proxy", &[]).await?);
            node_name = Some(agent.node_name.clone());
            let started = wasmkube_agent::start(agent, shutdown.wait())
                .await
                .context("starting the embedded node agent")?;
            tasks.push(tokio::spawn(async move {
                let _ = started.task.await;
            }));
        }
        eprintln!(
            "wasmkube is serving the Kubernetes API at {url}{node}\n\
             \n\
             Use it with kubectl:\n\
             \n\
             \x20   export KUBECONFIG={kubeconfig}\n\
             \x20   kubectl get nodes\n\
             \n\
             Join another node with:\n\
             \n\
             \x20   wasmkube agent --server {url} --token $(wasmkube server token create --data-dir {data})\n",
            url = running.url,
            node = node_name
                .map(|n| format!(" (node {n})"))
                .unwrap_or_default(),
            kubeconfig = running.kubeconfig.display(),
            data = data_dir.display(),
        );
        let mut serving = running.task;
        tokio::select! {
            served = &mut serving => {
                // The apiserver stopped by itself: nothing can work without it.
                served.context("the server task failed")?.context("serving")?;
                anyhow::bail!("the apiserver stopped");
            }
            () = shutdown.wait() => {}
        }
        let components = async {
            for task in tasks {
                let _ = task.await;
            }
        };
        if tokio::time::timeout(COMPONENTS_STOP_TIMEOUT, components)
            .await
            .is_err()
        {
            tracing::warn!(
                timeout = ?COMPONENTS_STOP_TIMEOUT,
                "the scheduler, controllers or agent did not stop in time; stopping the apiserver anyway"
            );
        }
        let _ = stop_apiserver.send(());
        serving
            .await
            .context("the server task failed")?
            .context("serving")?;
        tracing::info!("stopped");
        Ok(())
    }
}
