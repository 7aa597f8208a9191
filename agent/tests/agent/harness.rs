//! The test cluster: a real apiserver started in-process on a temporary data directory and a
//! real agent registered as `node-1`, both reached through kube-rs like any client.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Event, Pod};
use kube::api::{ListParams, PostParams};
use kube::{Api, Client};
use tokio::sync::oneshot;
use wasmkube_agent::{AgentConfig, RunningAgent};
use wasmkube_apiserver::testing::TestApiserver;

/// The node name of the test agent.
pub(crate) const NODE: &str = "node-1";

/// A running agent and the switch that stops it.
pub(crate) struct Agent {
    pub(crate) running: RunningAgent,
    stop: oneshot::Sender<()>,
}

/// An apiserver and (usually) an agent, sharing the apiserver's temporary data directory.
pub(crate) struct Cluster {
    pub(crate) client: Client,
    pub(crate) agent: Option<Agent>,
    api: TestApiserver,
}

fn stopper() -> (
    oneshot::Sender<()>,
    impl Future<Output = ()> + Send + 'static,
) {
    let (tx, rx) = oneshot::channel::<()>();
    (tx, async move {
        let _ = rx.await;
    })
}

impl Cluster {
    /// Starts the apiserver and an agent.
    pub(crate) async fn start() -> Cluster {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| "warn".into()),
            )
            .with_test_writer()
            .try_init();
        let api = TestApiserver::start().await.expect("apiserver starts");
        // Pods need their namespace's `default` ServiceAccount and the `kube-root-ca.crt`
        // their token volume projects: the two controllers that make them, as in every
        // cluster.
        let controllers = wasmkube_controllers::ControllersConfig {
            controllers: vec!["serviceaccount".into(), "root-ca-cert-publisher".into()],
            leader_election: None,
            root_ca: Some(
                std::fs::read_to_string(api.dir().join("pki").join("ca.crt")).expect("ca"),
            ),
            ..wasmkube_controllers::ControllersConfig::default()
        };
        tokio::spawn(wasmkube_controllers::run(
            api.client(),
            controllers,
            std::future::pending::<()>(),
        ));
        let mut cluster = Cluster {
            client: api.client(),
            agent: None,
            api,
        };
        cluster.start_agent().await;
        cluster
    }

    /// Stops the apiserver and waits until it has (the agent keeps running).
    pub(crate) async fn stop_apiserver(&mut self) {
        self.api.stop().await.expect("apiserver stops");
    }

    /// Starts the apiserver again on its address with the same data directory.
    pub(crate) async fn restart_apiserver(&mut self) {
        self.api.restart().await.expect("apiserver restarts");
    }

    pub(crate) fn data_dir(&self) -> PathBuf {
        self.api.dir().to_path_buf()
    }

    /// The agent's settings: node-1, log server on loopback, client certificates from the
    /// cluster CA authenticate (and the apiserver authorizes their users).
    pub(crate) fn agent_config(&self) -> AgentConfig {
        let mut config = AgentConfig::new(NODE, self.data_dir(), self.client.clone());
        config.log_server.bind = "127.0.0.1:0".parse().expect("addr");
        config.log_server.client_ca_pem =
            Some(std::fs::read_to_string(self.api.dir().join("pki").join("ca.crt")).expect("ca"));
        // As kind does: the shared machine's nearly full disk is no DiskPressure here.
        config.eviction_hard = "memory.available<100Mi,nodefs.available<0%"
            .parse()
            .expect("thresholds");
        config
    }

    /// Starts the agent (again).
    pub(crate) async fn start_agent(&mut self) {
        let (stop, shutdown) = stopper();
        let running = wasmkube_agent::start(self.agent_config(), shutdown)
            .await
            .expect("agent starts");
        self.agent = Some(Agent { running, stop });
    }

    /// Stops the agent and waits until it has.
    pub(crate) async fn stop_agent(&mut self) {
        if let Some(agent) = self.agent.take() {
            let _ = agent.stop.send(());
            tokio::time::timeout(Duration::from_secs(30), agent.running.task)
                .await
                .expect("agent stops in time")
                .expect("agent task");
        }
    }

    pub(crate) fn log_addr(&self) -> SocketAddr {
        self.agent.as_ref().expect("agent").running.log_addr
    }

    pub(crate) fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.client.clone(), "default")
    }

    /// Creates a pod from JSON, bound to the test node.
    pub(crate) async fn create_pod(&self, mut pod: serde_json::Value) -> Pod {
        pod["spec"]["nodeName"] = serde_json::json!(NODE);
        let pod: Pod = serde_json::from_value(pod).expect("pod json");
        self.pods()
            .create(&PostParams::default(), &pod)
            .await
            .expect("create pod")
    }

    /// Polls pod `name` until `ready` holds; panics with the last status at the deadline.
    pub(crate) async fn wait_pod(
        &self,
        name: &str,
        within: Duration,
        ready: impl Fn(&Pod) -> bool,
    ) -> Pod {
        let deadline = Instant::now() + within;
        loop {
            let pod = self.pods().get_opt(name).await.expect("get pod");
            if let Some(pod) = &pod
                && ready(pod)
            {
                return pod.clone();
            }
            if Instant::now() > deadline {
                panic!(
                    "pod {name} did not reach the expected state; last: {}",
                    serde_json::to_string_pretty(&pod.map(|p| p.status)).unwrap_or_default()
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Polls until pod `name` no longer exists.
    pub(crate) async fn wait_gone(&self, name: &str, within: Duration) {
        let deadline = Instant::now() + within;
        while self.pods().get_opt(name).await.expect("get pod").is_some() {
            assert!(Instant::now() < deadline, "pod {name} still exists");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Polls until the pod has an event with `reason`; returns the events.
    pub(crate) async fn wait_event(&self, pod: &str, reason: &str, within: Duration) -> Vec<Event> {
        let events: Api<Event> = Api::namespaced(self.client.clone(), "default");
        let deadline = Instant::now() + within;
        loop {
            let list = events
                .list(&ListParams::default().fields(&format!("involvedObject.name={pod}")))
                .await
                .expect("list events");
            if list
                .items
                .iter()
                .any(|e| e.reason.as_deref() == Some(reason))
            {
                return list.items;
            }
            assert!(
                Instant::now() < deadline,
                "no {reason} event for {pod}; have: {:?}",
                list.items
                    .iter()
                    .map(|e| e.reason.clone())
                    .collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The pod's log file of instance `restart` of `container`.
    pub(crate) fn log_file(&self, pod: &Pod, container: &str, restart: u32) -> PathBuf {
        self.api
            .dir()
            .join("agent")
            .join("pods")
            .join(pod.metadata.uid.as_deref().expect("uid"))
            .join(container)
            .join(format!("{restart}.log"))
    }
}

/// The first container status of a pod.
pub(crate) fn container(pod: &Pod) -> k8s_openapi::api::core::v1::ContainerStatus {
    pod.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|c| c.first())
        .cloned()
        .unwrap_or_default()
}

/// The pod's phase.
pub(crate) fn phase(pod: &Pod) -> String {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.clone())
        .unwrap_or_default()
}
