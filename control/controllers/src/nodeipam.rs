//! Node IPAM (kube-controller-manager's `nodeipam` with the range allocator, as k3s runs
//! it): every Node gets a pod CIDR (`spec.podCIDR`, `spec.podCIDRs`) of
//! `--node-cidr-mask-size` bits from `--cluster-cidr`, once; no two Nodes get the same one,
//! and a deleted Node's CIDR is free again.
//!
//! On start, once the shared Node informer has listed, every Node's existing pod CIDR is
//! marked taken ([`cidr_set`]); only then are Nodes without one given one (a merge patch of
//! `spec`; the apiserver refuses to change a pod CIDR once set). A CIDR handed out is held
//! for its Node until the informer shows it, so a Node seen twice before that is not given a
//! second. When the range is full the Node gets a `CIDRNotAvailable` Event and waits for a
//! Node to go. A failed patch gives the CIDR back and is retried with back-off.

pub(crate) mod cidr_set;

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::Arc;

use futures::StreamExt;
use futures::channel::mpsc;
use ipnet::IpNet;
use k8s_openapi::api::core::v1::Node;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::reflector::{ObjectRef, Store};
use wasmkube_client::informers::{Change, SharedInformerFactory};
use wasmkube_client::status::is_not_found;

use crate::context::{Context, Recorder, WARNING};
use crate::retry::Retries;
use cidr_set::CidrSet;

/// The `source.component` of the controller's Events (Kubernetes' range allocator's).
const COMPONENT: &str = "cidrAllocator";

/// What the allocator hears from the Node informer.
#[derive(Debug)]
enum Message {
    /// A Node was added or changed (by name; its state is read from the store).
    Applied(String),
    /// A Node was deleted: its last state.
    Deleted(Arc<Node>),
    /// A relist replaced the store.
    Relisted,
}

/// The pod CIDRs a Node has (`spec.podCIDRs`, else `spec.podCIDR`), parsed.
fn node_cidrs(node: &Node) -> Vec<IpNet> {
    let spec = node.spec.as_ref();
    let listed: Vec<&String> = spec
        .and_then(|s| s.pod_cidrs.as_ref())
        .map(|c| c.iter().collect())
        .unwrap_or_default();
    let single: Vec<&String> = spec.and_then(|s| s.pod_cidr.as_ref()).into_iter().collect();
    let all = if listed.is_empty() { single } else { listed };
    all.into_iter().filter_map(|c| c.parse().ok()).collect()
}

struct Allocator {
    client: kube::Client,
    nodes: Store<Node>,
    set: CidrSet,
    /// CIDRs handed out (or found) per Node name.
    assigned: BTreeMap<String, IpNet>,
    /// Nodes waiting for a free CIDR.
    waiting: BTreeSet<String>,
    retries: Retries,
    recorder: Recorder,
    retry: mpsc::UnboundedSender<Message>,
}

/// The node IPAM controller over the shared Node informer, allocating from `cluster_cidr`
/// subnets of `mask` bits; runs until the task is aborted.
pub(crate) fn run(
    ctx: Arc<Context>,
    informers: &SharedInformerFactory,
    cluster_cidr: IpNet,
    mask: u8,
) -> impl Future<Output = ()> + Send + 'static {
    let nodes = informers.informer::<Node>();
    async move {
        let set = match CidrSet::new(cluster_cidr, mask) {
            Ok(set) => set,
            Err(e) => {
                // The configuration was validated; this cannot happen.
                tracing::error!(error = %e, "node IPAM: invalid cluster CIDR");
                return std::future::pending().await;
            }
        };
        let (tx, mut rx) = mpsc::unbounded();
        let _handler = {
            let tx = tx.clone();
            nodes.add_handler(move |change| {
                let message = match change {
                    Change::Applied { new, .. } => Message::Applied(new.name_any()),
                    Change::Deleted(node) => Message::Deleted((*node).clone()),
                    Change::Relisted => Message::Relisted,
                };
                let _ = tx.unbounded_send(message);
            })
        };
        if !nodes.wait_synced().await {
            tracing::error!("node IPAM: the node informer stopped before listing");
            return std::future::pending().await;
        }
        let mut allocator = Allocator {
            client: ctx.client.clone(),
            nodes: nodes.store(),
            set,
            assigned: BTreeMap::new(),
            waiting: BTreeSet::new(),
            retries: Retries::client_go_default(),
            recorder: ctx.recorder(COMPONENT),
            retry: tx,
        };
        allocator.occupy_existing();
        tracing::info!(%cluster_cidr, mask, "node IPAM started");
        while let Some(message) = rx.next().await {
            allocator.handle(message).await;
        }
        std::future::pending().await
    }
}

impl Allocator {
    /// Marks every stored Node's pod CIDR taken (before anything is allocated).
    fn occupy_existing(&mut self) {
        for node in self.nodes.state() {
            for cidr in node_cidrs(&node) {
                if self.set.occupy(&cidr) {
                    self.assigned.insert(node.name_any(), cidr);
                } else {
                    tracing::info!(node = %node.name_any(), %cidr, "a node's pod CIDR is outside the cluster CIDR: left alone");
                }
            }
        }
    }

    async fn handle(&mut self, message: Message) {
        match message {
            Message::Applied(name) => self.sync(&name).await,
            Message::Deleted(node) => {
                self.forget(&node.name_any(), &node_cidrs(&node));
                self.retry_waiting();
            }
            Message::Relisted => {
                let gone: Vec<String> = self
                    .assigned
                    .keys()
                    .filter(|name| self.nodes.get(&ObjectRef::new(name)).is_none())
                    .cloned()
                    .collect();
                for name in gone {
                    self.forget(&name, &[]);
                }
                for node in self.nodes.state() {
                    let _ = self.retry.unbounded_send(Message::Applied(node.name_any()));
                }
            }
        }
    }

    /// Gives back what a gone Node held.
    fn forget(&mut self, name: &str, cidrs: &[IpNet]) {
        if let Some(cidr) = self.assigned.remove(name) {
            self.set.release(&cidr);
        }
        for cidr in cidrs {
            self.set.release(cidr);
        }
        self.waiting.remove(name);
        self.retries.succeeded(name);
    }

    /// Nodes that waited for a free CIDR try again.
    fn retry_waiting(&mut self) {
        for name in std::mem::take(&mut self.waiting) {
            let _ = self.retry.unbounded_send(Message::Applied(name));
        }
    }

    /// Gives the Node a pod CIDR if it has none (and none is on its way).
    async fn sync(&mut self, name: &str) {
        let Some(node) = self.nodes.get(&ObjectRef::new(name)) else {
            return;
        };
        let existing = node_cidrs(&node);
        if let Some(cidr) = existing.first() {
            if self.assigned.get(name) != Some(cidr) {
                // Set by someone else (or ours, now visible): keep the books right.
                if let Some(previous) = self.assigned.remove(name) {
                    self.set.release(&previous);
                }
                if self.set.occupy(cidr) {
                    self.assigned.insert(name.to_string(), *cidr);
                }
            }
            return;
        }
        if node.metadata.deletion_timestamp.is_some() || self.assigned.contains_key(name) {
            return;
        }
        let Some(cidr) = self.set.allocate() else {
            if self.waiting.insert(name.to_string()) {
                self.recorder.publish(
                    &*node,
                    WARNING,
                    "CIDRNotAvailable",
                    format!("Node {name} status is now: CIDRNotAvailable"),
                );
            }
            return;
        };
        self.assigned.insert(name.to_string(), cidr);
        let patch = serde_json::json!({
            "spec": {"podCIDR": cidr.to_string(), "podCIDRs": [cidr.to_string()]}
        });
        let api: Api<Node> = Api::all(self.client.clone());
        match api
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => {
                tracing::info!(node = %name, %cidr, "allocated the node's pod CIDR");
                self.retries.succeeded(name);
            }
            Err(e) if is_not_found(&e) => self.forget(name, &[]),
            Err(e) => {
                self.assigned.remove(name);
                self.set.release(&cidr);
                let delay = self.retries.failed(name, false);
                tracing::warn!(node = %name, %cidr, error = %e, ?delay, "setting the node's pod CIDR failed; retrying");
                let retry = self.retry.clone();
                let name = name.to_string();
                tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    let _ = retry.unbounded_send(Message::Applied(name));
                });
            }
        }
    }
}
