//! The node authorizer's graph, as Kubernetes' `plugin/pkg/auth/authorizer/node/graph.go`
//! keeps it: which node each object a pod references is reachable from. A pod bound to a
//! node (`spec.nodeName`) links the node to the pod itself and to every Secret, ConfigMap,
//! PersistentVolumeClaim and the ServiceAccount the pod names (volumes, projected sources,
//! env, envFrom, image pull secrets, in containers, init and ephemeral containers).
//!
//! The graph follows one store watch of the pods (listed once, then watched, relisted after
//! an error), so authorization never lists the store. [`NodeGraph::sync_to`] waits until
//! it has seen a given store revision: a node that learned of a new pod from its own watch
//! may ask for the pod's secret before the graph has caught up, and the authentication
//! middleware then waits for the graph before it refuses.

use std::collections::HashMap;
use std::sync::{Arc, RwLock, Weak};
use std::time::Duration;

use futures::FutureExt;
use serde_json::Value;
use tokio::sync::{Notify, watch};
use wasmkube_store::{Event, ListOptions, Revision, Store, StoreError};

/// The store prefix of pods.
const PODS: &str = "/registry/core/pods/";
/// The pause before relisting after a watch error.
const RELIST_BACKOFF: Duration = Duration::from_millis(200);

/// What kind of object a vertex is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum VertexKind {
    /// A pod (bound to the node).
    Pod,
    /// A Secret a pod references.
    Secret,
    /// A ConfigMap a pod references.
    ConfigMap,
    /// The ServiceAccount a pod runs as.
    ServiceAccount,
    /// A PersistentVolumeClaim a pod mounts.
    PersistentVolumeClaim,
}

/// One namespaced object of the graph.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Vertex {
    /// What it is.
    pub kind: VertexKind,
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
}

/// The node a pod is bound to and the objects it references.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct PodEdges {
    node: String,
    vertices: Vec<Vertex>,
}

#[derive(Debug, Default)]
struct State {
    pods: HashMap<String, PodEdges>,
    /// For each vertex, the nodes that reach it and through how many pods.
    reach: HashMap<Vertex, HashMap<String, usize>>,
}

impl State {
    fn remove(&mut self, key: &str) {
        let Some(edges) = self.pods.remove(key) else {
            return;
        };
        for vertex in edges.vertices {
            if let Some(nodes) = self.reach.get_mut(&vertex) {
                if let Some(count) = nodes.get_mut(&edges.node) {
                    *count -= 1;
                    if *count == 0 {
                        nodes.remove(&edges.node);
                    }
                }
                if nodes.is_empty() {
                    self.reach.remove(&vertex);
                }
            }
        }
    }

    fn put(&mut self, key: &str, pod: &Value) {
        self.remove(key);
        let Some(edges) = pod_edges(pod) else {
            return;
        };
        for vertex in &edges.vertices {
            *self
                .reach
                .entry(vertex.clone())
                .or_default()
                .entry(edges.node.clone())
                .or_default() += 1;
        }
        self.pods.insert(key.to_string(), edges);
    }

    fn apply(&mut self, event: &Event) {
        match event {
            Event::Put { kv, .. } => match serde_json::from_slice::<Value>(&kv.value) {
                Ok(pod) => self.put(&kv.key, &pod),
                Err(_) => self.remove(&kv.key),
            },
            Event::Delete { prev, .. } => self.remove(&prev.key),
        }
    }
}

/// The edges of a bound pod; `None` for a pod not bound to a node.
fn pod_edges(pod: &Value) -> Option<PodEdges> {
    let node = pod.pointer("/spec/nodeName").and_then(Value::as_str)?;
    if node.is_empty() {
        return None;
    }
    let namespace = pod
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let name = pod
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("");
    let mut vertices = vec![Vertex {
        kind: VertexKind::Pod,
        namespace: namespace.clone(),
        name: name.to_string(),
    }];
    for (kind, referenced) in references(pod) {
        if referenced.is_empty() {
            continue;
        }
        let vertex = Vertex {
            kind,
            namespace: namespace.clone(),
            name: referenced,
        };
        if !vertices.contains(&vertex) {
            vertices.push(vertex);
        }
    }
    Some(PodEdges {
        node: node.to_string(),
        vertices,
    })
}

/// Every object a pod references, as Kubernetes' `VisitPodSecretNames`,
/// `VisitPodConfigmapNames` and the graph's ServiceAccount and PVC edges.
fn references(pod: &Value) -> Vec<(VertexKind, String)> {
    let mut out = Vec::new();
    let spec = pod.get("spec").unwrap_or(&Value::Null);
    let text = |v: Option<&Value>| v.and_then(Value::as_str).unwrap_or("").to_string();
    let list = |v: &Value, key: &str| -> Vec<Value> {
        v.get(key)
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    };
    let account = text(spec.get("serviceAccountName"));
    out.push((
        VertexKind::ServiceAccount,
        if account.is_empty() {
            "default".to_string()
        } else {
            account
        },
    ));
    for secret in list(spec, "imagePullSecrets") {
        out.push((VertexKind::Secret, text(secret.get("name"))));
    }
    for volume in list(spec, "volumes") {
        if let Some(secret) = volume.get("secret") {
            out.push((VertexKind::Secret, text(secret.get("secretName"))));
        }
        if let Some(map) = volume.get("configMap") {
            out.push((VertexKind::ConfigMap, text(map.get("name"))));
        }
        if let Some(claim) = volume.get("persistentVolumeClaim") {
            out.push((
                VertexKind::PersistentVolumeClaim,
                text(claim.get("claimName")),
            ));
        }
        if volume.get("ephemeral").is_some() {
            let pod_name = pod
                .pointer("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or("");
            let volume_name = text(volume.get("name"));
            out.push((
                VertexKind::PersistentVolumeClaim,
                format!("{pod_name}-{volume_name}"),
            ));
        }
        for source in volume
            .pointer("/projected/sources")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if let Some(secret) = source.get("secret") {
                out.push((VertexKind::Secret, text(secret.get("name"))));
            }
            if let Some(map) = source.get("configMap") {
                out.push((VertexKind::ConfigMap, text(map.get("name"))));
            }
        }
        for key in [
            "cephfs",
            "cinder",
            "flexVolume",
            "rbd",
            "scaleIO",
            "storageos",
            "iscsi",
            "azureFile",
            "csi",
        ] {
            if let Some(source) = volume.get(key) {
                for field in ["secretRef", "nodePublishSecretRef"] {
                    if let Some(r) = source.get(field) {
                        out.push((VertexKind::Secret, text(r.get("name"))));
                    }
                }
                if key == "azureFile" {
                    out.push((VertexKind::Secret, text(source.get("secretName"))));
                }
            }
        }
    }
    for containers in ["initContainers", "containers", "ephemeralContainers"] {
        for container in list(spec, containers) {
            for from in list(&container, "envFrom") {
                if let Some(r) = from.get("secretRef") {
                    out.push((VertexKind::Secret, text(r.get("name"))));
                }
                if let Some(r) = from.get("configMapRef") {
                    out.push((VertexKind::ConfigMap, text(r.get("name"))));
                }
            }
            for env in list(&container, "env") {
                if let Some(r) = env.pointer("/valueFrom/secretKeyRef") {
                    out.push((VertexKind::Secret, text(r.get("name"))));
                }
                if let Some(r) = env.pointer("/valueFrom/configMapKeyRef") {
                    out.push((VertexKind::ConfigMap, text(r.get("name"))));
                }
            }
        }
    }
    out
}

/// Which nodes reach which objects through their pods, current to the store's watch.
#[derive(Debug)]
pub struct NodeGraph {
    state: RwLock<State>,
    revision: watch::Sender<Revision>,
    kick: Notify,
}

impl NodeGraph {
    /// Lists the pods and follows their watch in a task that ends when `stopped`
    /// resolves, the graph is dropped or the store closes.
    pub async fn start(
        store: Arc<dyn Store>,
        stopped: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<Arc<NodeGraph>, StoreError> {
        let (state, revision) = list(store.as_ref()).await?;
        let graph = Arc::new(NodeGraph {
            state: RwLock::new(state),
            revision: watch::Sender::new(revision),
            kick: Notify::new(),
        });
        let follow = follow(Arc::downgrade(&graph), store, revision);
        tokio::spawn(async move {
            tokio::select! {
                _ = stopped => {}
                _ = follow => {}
            }
        });
        Ok(graph)
    }

    /// A graph over `pods` (tests).
    #[cfg(test)]
    pub(crate) fn of(pods: &[Value]) -> NodeGraph {
        let mut state = State::default();
        for (i, pod) in pods.iter().enumerate() {
            state.put(&format!("{PODS}{i}"), pod);
        }
        NodeGraph {
            state: RwLock::new(state),
            revision: watch::Sender::new(0),
            kick: Notify::new(),
        }
    }

    /// Whether `node` reaches the object through one of its pods.
    pub fn has_path(&self, node: &str, kind: VertexKind, namespace: &str, name: &str) -> bool {
        let vertex = Vertex {
            kind,
            namespace: namespace.to_string(),
            name: name.to_string(),
        };
        self.state
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .reach
            .get(&vertex)
            .is_some_and(|nodes| nodes.contains_key(node))
    }

    /// Waits (at most `within`) until the graph has seen every pod change up to `target`.
    /// Returns whether it has.
    pub async fn sync_to(&self, target: Revision, within: Duration) -> bool {
        let mut seen = self.revision.subscribe();
        let caught_up = async {
            loop {
                if *seen.borrow_and_update() >= target {
                    return;
                }
                self.kick.notify_one();
                if seen.changed().await.is_err() {
                    return;
                }
            }
        };
        tokio::time::timeout(within, caught_up).await.is_ok() && *seen.borrow() >= target
    }

    fn publish(&self, revision: Revision) {
        self.revision.send_if_modified(|seen| {
            let newer = revision > *seen;
            if newer {
                *seen = revision;
            }
            newer
        });
    }
}

async fn list(store: &dyn Store) -> Result<(State, Revision), StoreError> {
    let page = store
        .list(ListOptions {
            prefix: PODS.to_string(),
            ..ListOptions::default()
        })
        .await?;
    let mut state = State::default();
    for kv in &page.items {
        if let Ok(pod) = serde_json::from_slice::<Value>(&kv.value) {
            state.put(&kv.key, &pod);
        }
    }
    Ok((state, page.revision))
}

/// The watch loop: apply events, publish the revision seen; on a kick (someone waits for
/// the graph), publish the watch's progress, which covers revisions of other objects too.
async fn follow(graph: Weak<NodeGraph>, store: Arc<dyn Store>, mut revision: Revision) {
    loop {
        let mut watcher = match store.watch(PODS, revision).await {
            Ok(w) => w,
            Err(StoreError::Closed) => return,
            Err(e) => {
                tracing::warn!(error = %e, "watching pods for the node authorizer failed; relisting");
                match relist(&graph, store.as_ref()).await {
                    Some(r) => revision = r,
                    None => return,
                }
                continue;
            }
        };
        loop {
            let Some(kick) = graph.upgrade() else {
                return;
            };
            let event = tokio::select! {
                event = watcher.next() => Some(event),
                () = kick.kick.notified() => None,
            };
            drop(kick);
            let Some(event) = event else {
                if let Some(g) = graph.upgrade() {
                    g.publish(watcher.progress());
                }
                continue;
            };
            let mut failed = None;
            let mut batch = Vec::new();
            match event {
                Ok(e) => batch.push(e),
                Err(e) => failed = Some(e),
            }
            while failed.is_none() {
                match watcher.next().now_or_never() {
                    Some(Ok(e)) => batch.push(e),
                    Some(Err(e)) => failed = Some(e),
                    None => break,
                }
            }
            let Some(g) = graph.upgrade() else {
                return;
            };
            if !batch.is_empty() {
                let mut state = g
                    .state
                    .write()
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
                for event in &batch {
                    revision = event.revision();
                    state.apply(event);
                }
            }
            g.publish(revision.max(watcher.progress()));
            drop(g);
            match failed {
                None => {}
                Some(StoreError::Closed) => return,
                Some(e) => {
                    tracing::warn!(error = %e, "the node authorizer's pod watch ended; relisting");
                    match relist(&graph, store.as_ref()).await {
                        Some(r) => revision = r,
                        None => return,
                    }
                    break;
                }
            }
        }
    }
}

/// Lists again and swaps the state in; `None` when the graph is gone or the store closed.
async fn relist(graph: &Weak<NodeGraph>, store: &dyn Store) -> Option<Revision> {
    loop {
        tokio::time::sleep(RELIST_BACKOFF).await;
        match list(store).await {
            Ok((state, revision)) => {
                let g = graph.upgrade()?;
                *g.state
                    .write()
                    .unwrap_or_else(|poisoned| poisoned.into_inner()) = state;
                g.publish(revision);
                return Some(revision);
            }
            Err(StoreError::Closed) => return None,
            Err(e) => tracing::warn!(error = %e, "relisting pods for the node authorizer failed"),
        }
        graph.upgrade()?;
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn pod(name: &str, node: &str) -> Value {
        json!({
            "metadata": {"name": name, "namespace": "ns"},
            "spec": {
                "nodeName": node,
                "serviceAccountName": "runner",
                "imagePullSecrets": [{"name": "pull"}],
                "volumes": [
                    {"name": "s", "secret": {"secretName": "vol-secret"}},
                    {"name": "c", "configMap": {"name": "vol-map"}},
                    {"name": "p", "projected": {"sources": [{"secret": {"name": "proj-secret"}}]}},
                    {"name": "d", "persistentVolumeClaim": {"claimName": "data"}},
                ],
                "initContainers": [{"name": "i", "envFrom": [{"secretRef": {"name": "init-env"}}]}],
                "containers": [{"name": "c", "env": [
                    {"name": "A", "valueFrom": {"secretKeyRef": {"name": "env-secret", "key": "k"}}},
                    {"name": "B", "valueFrom": {"configMapKeyRef": {"name": "env-map", "key": "k"}}},
                ]}],
            },
        })
    }

    #[test]
    fn a_bound_pod_links_its_node_to_everything_it_references() {
        let graph = NodeGraph::of(&[pod("web", "n1")]);
        for (kind, name) in [
            (VertexKind::Pod, "web"),
            (VertexKind::Secret, "vol-secret"),
            (VertexKind::Secret, "proj-secret"),
            (VertexKind::Secret, "pull"),
            (VertexKind::Secret, "init-env"),
            (VertexKind::Secret, "env-secret"),
            (VertexKind::ConfigMap, "vol-map"),
            (VertexKind::ConfigMap, "env-map"),
            (VertexKind::ServiceAccount, "runner"),
            (VertexKind::PersistentVolumeClaim, "data"),
        ] {
            assert!(graph.has_path("n1", kind, "ns", name), "{kind:?} {name}");
            assert!(!graph.has_path("n2", kind, "ns", name), "{kind:?} {name}");
            assert!(
                !graph.has_path("n1", kind, "other", name),
                "{kind:?} {name}"
            );
        }
        assert!(!graph.has_path("n1", VertexKind::Secret, "ns", "unrelated"));
    }

    #[test]
    fn edges_go_when_the_pod_moves_or_goes_and_shared_objects_stay() {
        let mut state = State::default();
        state.put("a", &pod("a", "n1"));
        state.put("b", &pod("b", "n1"));
        state.remove("a");
        let shared = Vertex {
            kind: VertexKind::Secret,
            namespace: "ns".into(),
            name: "vol-secret".into(),
        };
        assert_eq!(state.reach[&shared].get("n1"), Some(&1));
        state.put(
            "b",
            &json!({"metadata": {"name": "b", "namespace": "ns"}, "spec": {}}),
        );
        assert!(!state.reach.contains_key(&shared));
        assert!(state.pods.is_empty());
    }
}
