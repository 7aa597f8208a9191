//! RuntimeClass: a pod with `runtimeClassName` needs that RuntimeClass to exist, and goes
//! only to nodes matching the class's `scheduling.nodeSelector`; the class's
//! `scheduling.tolerations` count as the pod's own (read by TaintToleration and
//! NodeUnschedulable through [`super::effective_tolerations`]).
//!
//! In Kubernetes the RuntimeClass admission plugin merges these into the pod at creation;
//! wasmkube resolves them at scheduling time instead, so a RuntimeClass created after the
//! pod still counts, and a missing one leaves the pod Pending with a clear reason (retried
//! when RuntimeClasses change) rather than rejecting it.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Toleration;

use crate::framework::{CycleState, FilterPlugin, Unschedulable};
use crate::labels::CompiledSelector;
use crate::snapshot::{NodeInfo, PodInfo, Snapshot};
use wasmkube_api::scheduling::labels_match;

/// What the pod's RuntimeClass asks of nodes; written into the [`CycleState`] by the
/// pre-filter.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RuntimeClassScheduling {
    /// The RuntimeClass's name.
    pub name: String,
    /// Labels every node must have.
    pub node_selector: BTreeMap<String, String>,
    /// `node_selector` compiled against the snapshot (`None` outside one).
    pub compiled: Option<CompiledSelector>,
    /// Tolerations added to the pod's.
    pub tolerations: Vec<Toleration>,
}

/// Resolves the pod's RuntimeClass and filters by its node selector.
#[derive(Clone, Copy, Debug, Default)]
pub struct RuntimeClass;

impl FilterPlugin for RuntimeClass {
    fn name(&self) -> &'static str {
        "RuntimeClass"
    }

    fn pre_filter(
        &self,
        pod: &PodInfo,
        snapshot: &Snapshot,
        state: &mut CycleState,
    ) -> Result<(), Unschedulable> {
        let name = pod
            .pod
            .spec
            .as_ref()
            .and_then(|s| s.runtime_class_name.as_deref())
            .filter(|n| !n.is_empty());
        let Some(name) = name else {
            return Ok(());
        };
        let Some(class) = snapshot.runtime_class(name) else {
            return Err(Unschedulable::unresolvable(format!(
                "RuntimeClass \"{name}\" not found"
            )));
        };
        let scheduling = class.scheduling.as_ref();
        let node_selector = scheduling
            .and_then(|s| s.node_selector.clone())
            .unwrap_or_default();
        state.write(RuntimeClassScheduling {
            name: name.to_string(),
            compiled: Some(snapshot.label_index().compile(&node_selector)),
            node_selector,
            tolerations: scheduling
                .and_then(|s| s.tolerations.clone())
                .unwrap_or_default(),
        });
        Ok(())
    }

    fn filter(
        &self,
        _pod: &PodInfo,
        node: &NodeInfo,
        state: &CycleState,
    ) -> Result<(), Unschedulable> {
        let Some(class) = state.read::<RuntimeClassScheduling>() else {
            return Ok(());
        };
        let matches = class.node_selector.is_empty()
            || match &class.compiled {
                Some(compiled) => compiled.matches(node.labels()),
                None => labels_match(
                    &class.node_selector,
                    node.node().and_then(|n| n.metadata.labels.as_ref()),
                ),
            };
        if matches {
            Ok(())
        } else {
            Err(Unschedulable::unresolvable(format!(
                "node(s) didn't match the node selector of RuntimeClass \"{}\"",
                class.name
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::{TaintToleration, default_framework};
    use crate::testing::{info, labelled, node, node_info, pod, tainted, toleration, with_spec};
    use k8s_openapi::api::node::v1::{RuntimeClass as RuntimeClassObject, Scheduling};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn wasmtime_class() -> RuntimeClassObject {
        RuntimeClassObject {
            metadata: ObjectMeta {
                name: Some("wasmtime".into()),
                ..Default::default()
            },
            handler: "wasmtime".into(),
            overhead: None,
            scheduling: Some(Scheduling {
                node_selector: Some(BTreeMap::from([(
                    "wasmkube.io/runtime-wasmtime".to_string(),
                    "true".to_string(),
                )])),
                tolerations: Some(vec![toleration("wasm-only", "Exists", "", "")]),
            }),
        }
    }

    fn wasm_pod() -> PodInfo {
        info(with_spec(pod("p"), |s| {
            s.runtime_class_name = Some("wasmtime".into())
        }))
    }

    #[test]
    fn a_missing_runtime_class_rejects_the_pod_with_its_name() {
        let s = Snapshot::new();
        let mut state = CycleState::new();
        assert_eq!(
            RuntimeClass.pre_filter(&wasm_pod(), &s, &mut state),
            Err(Unschedulable::unresolvable(
                "RuntimeClass \"wasmtime\" not found"
            ))
        );
    }

    #[test]
    fn pods_without_a_runtime_class_are_not_affected() {
        let s = Snapshot::new();
        let mut state = CycleState::new();
        let p = info(pod("p"));
        assert!(RuntimeClass.pre_filter(&p, &s, &mut state).is_ok());
        let n = node_info(node("n1", "1", "1Gi"));
        assert!(RuntimeClass.filter(&p, &n, &state).is_ok());
    }

    #[test]
    fn the_class_node_selector_filters_nodes() {
        let mut s = Snapshot::new();
        s.upsert_runtime_class(wasmtime_class());
        s.upsert_node(node("plain", "1", "1Gi"));
        s.upsert_node(labelled(
            node("wasm", "1", "1Gi"),
            &[("wasmkube.io/runtime-wasmtime", "true")],
        ));
        let mut state = CycleState::new();
        let p = wasm_pod();
        assert!(RuntimeClass.pre_filter(&p, &s, &mut state).is_ok());
        let (Some(plain), Some(wasm)) = (s.node("plain"), s.node("wasm")) else {
            panic!("nodes missing from the snapshot");
        };
        assert_eq!(
            RuntimeClass.filter(&p, plain, &state),
            Err(Unschedulable::unresolvable(
                "node(s) didn't match the node selector of RuntimeClass \"wasmtime\""
            ))
        );
        assert!(RuntimeClass.filter(&p, wasm, &state).is_ok());
    }

    #[test]
    fn the_class_tolerations_let_the_pod_onto_tainted_nodes() {
        let mut s = Snapshot::new();
        s.upsert_runtime_class(wasmtime_class());
        let mut state = CycleState::new();
        let p = wasm_pod();
        assert!(RuntimeClass.pre_filter(&p, &s, &mut state).is_ok());
        let n = node_info(tainted(
            labelled(
                node("wasm", "1", "1Gi"),
                &[("wasmkube.io/runtime-wasmtime", "true")],
            ),
            &[("wasm-only", "", "NoSchedule")],
        ));
        assert!(TaintToleration.filter(&p, &n, &state).is_ok());
    }

    #[test]
    fn the_default_framework_reports_a_missing_class_for_every_node() {
        let mut s = Snapshot::new();
        s.upsert_node(node("n1", "1", "1Gi"));
        s.upsert_node(node("n2", "1", "1Gi"));
        let err = default_framework()
            .schedule(&wasm_pod(), &s)
            .err()
            .map(|e| e.to_string());
        assert_eq!(
            err.as_deref(),
            Some(
                "0/2 nodes are available: RuntimeClass \"wasmtime\" not found. preemption: 0/2 \
                 nodes are available: 2 Preemption is not helpful for scheduling."
            )
        );
    }
}
