//! Builders for the unit tests: nodes and pods with just the fields a test cares about.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Container, Node, NodeSpec, NodeStatus, Pod, PodSpec, ResourceRequirements, Taint, Toleration,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::snapshot::{NodeInfo, PodInfo};

/// A node with allocatable cpu and memory, 110 pods and a hostname label.
pub(crate) fn node(name: &str, cpu: &str, memory: &str) -> Node {
    Node {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some(BTreeMap::from([(
                "kubernetes.io/hostname".to_string(),
                name.to_string(),
            )])),
            ..Default::default()
        },
        spec: Some(NodeSpec::default()),
        status: Some(NodeStatus {
            allocatable: Some(BTreeMap::from([
                ("cpu".to_string(), Quantity(cpu.into())),
                ("memory".to_string(), Quantity(memory.into())),
                ("pods".to_string(), Quantity("110".into())),
            ])),
            ..Default::default()
        }),
    }
}

/// A node with extra labels.
pub(crate) fn labelled(mut n: Node, labels: &[(&str, &str)]) -> Node {
    let map = n.metadata.labels.get_or_insert_with(BTreeMap::new);
    for (k, v) in labels {
        map.insert(k.to_string(), v.to_string());
    }
    n
}

/// A node with taints `(key, value, effect)`.
pub(crate) fn tainted(mut n: Node, taints: &[(&str, &str, &str)]) -> Node {
    let spec = n.spec.get_or_insert_with(NodeSpec::default);
    spec.taints = Some(
        taints
            .iter()
            .map(|(k, v, e)| Taint {
                key: k.to_string(),
                value: (!v.is_empty()).then(|| v.to_string()),
                effect: e.to_string(),
                time_added: None,
            })
            .collect(),
    );
    n
}

/// A pending pod in `default` whose uid is its name, with one container requesting
/// `cpu` and `memory` (empty strings request nothing).
pub(crate) fn pod_with_requests(name: &str, cpu: &str, memory: &str) -> Pod {
    let mut requests = BTreeMap::new();
    if !cpu.is_empty() {
        requests.insert("cpu".to_string(), Quantity(cpu.into()));
    }
    if !memory.is_empty() {
        requests.insert("memory".to_string(), Quantity(memory.into()));
    }
    Pod {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some("default".into()),
            uid: Some(name.into()),
            ..Default::default()
        },
        spec: Some(PodSpec {
            containers: vec![Container {
                name: "main".into(),
                resources: Some(ResourceRequirements {
                    requests: Some(requests),
                    ..Default::default()
                }),
                ..Default::default()
            }],
            ..Default::default()
        }),
        status: None,
    }
}

/// A pod without requests.
pub(crate) fn pod(name: &str) -> Pod {
    pod_with_requests(name, "", "")
}

/// A toleration `(key, operator, value, effect)`; empty strings are left unset.
pub(crate) fn toleration(key: &str, operator: &str, value: &str, effect: &str) -> Toleration {
    let opt = |s: &str| (!s.is_empty()).then(|| s.to_string());
    Toleration {
        key: opt(key),
        operator: opt(operator),
        value: opt(value),
        effect: opt(effect),
        toleration_seconds: None,
    }
}

/// Changes a pod's spec.
pub(crate) fn with_spec(mut p: Pod, f: impl FnOnce(&mut PodSpec)) -> Pod {
    if let Some(spec) = p.spec.as_mut() {
        f(spec);
    }
    p
}

/// Wraps a pod for plugins.
pub(crate) fn info(p: Pod) -> PodInfo {
    PodInfo::new(p)
}

/// Wraps a node for plugins.
pub(crate) fn node_info(n: Node) -> NodeInfo {
    NodeInfo::new(n)
}
