//! Unit tests of [`super::plan`]: DaemonSets, nodes and pods built by hand.

use super::*;
use crate::daemonset::eligibility::pin_to_node;
use k8s_openapi::api::apps::v1::{DaemonSetSpec, DaemonSetUpdateStrategy, RollingUpdateDaemonSet};
use k8s_openapi::api::core::v1::{
    NodeSpec, PodCondition, PodSpec, PodStatus, PodTemplateSpec, Taint,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};

const HASH: &str = "new";

fn at(second: i64) -> Timestamp {
    Timestamp::from_second(second).unwrap_or(Timestamp::UNIX_EPOCH)
}

fn ds(max_unavailable: Option<IntOrString>) -> DaemonSet {
    DaemonSet {
        metadata: ObjectMeta {
            name: Some("agent".into()),
            namespace: Some("default".into()),
            uid: Some("ds-uid".into()),
            generation: Some(3),
            ..ObjectMeta::default()
        },
        spec: Some(DaemonSetSpec {
            template: PodTemplateSpec {
                metadata: None,
                spec: Some(PodSpec::default()),
            },
            update_strategy: Some(DaemonSetUpdateStrategy {
                type_: Some("RollingUpdate".into()),
                rolling_update: Some(RollingUpdateDaemonSet {
                    max_unavailable,
                    max_surge: None,
                }),
            }),
            ..DaemonSetSpec::default()
        }),
        status: None,
    }
}

fn node(name: &str) -> Node {
    Node {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..ObjectMeta::default()
        },
        ..Node::default()
    }
}

fn tainted(name: &str, key: &str) -> Node {
    let mut n = node(name);
    n.spec = Some(NodeSpec {
        taints: Some(vec![Taint {
            key: key.into(),
            effect: "NoSchedule".into(),
            value: None,
            time_added: None,
        }]),
        ..NodeSpec::default()
    });
    n
}

/// A ready, running daemon pod for `node` with revision `hash`, created at `created`.
fn pod(name: &str, node: &str, hash: &str, created: i64) -> Pod {
    let mut spec = PodSpec::default();
    pin_to_node(&mut spec, node);
    Pod {
        metadata: ObjectMeta {
            name: Some(name.into()),
            uid: Some(format!("{name}-uid")),
            creation_timestamp: Some(Time(at(created))),
            labels: Some([(REVISION_HASH_LABEL.to_string(), hash.to_string())].into()),
            ..ObjectMeta::default()
        },
        spec: Some(spec),
        status: Some(PodStatus {
            phase: Some("Running".into()),
            conditions: Some(vec![PodCondition {
                type_: "Ready".into(),
                status: "True".into(),
                last_transition_time: Some(Time(at(created))),
                ..PodCondition::default()
            }]),
            ..PodStatus::default()
        }),
    }
}

fn with_phase(mut p: Pod, phase: &str) -> Pod {
    if let Some(s) = p.status.as_mut() {
        s.phase = Some(phase.into());
        s.conditions = None;
    }
    p
}

fn names(list: &[PodToDelete]) -> Vec<&str> {
    let mut names: Vec<&str> = list.iter().map(|p| p.name.as_str()).collect();
    names.sort_unstable();
    names
}

fn run(ds: &DaemonSet, nodes: &[Node], pods: &[Pod]) -> Plan {
    let nodes: Vec<&Node> = nodes.iter().collect();
    let pods: Vec<&Pod> = pods.iter().collect();
    plan(ds, &nodes, &pods, HASH, at(1000), true)
}

#[test]
fn every_eligible_node_without_a_pod_gets_one() {
    let nodes = [node("a"), node("b"), tainted("c", "gpu")];
    let pods = [pod("pa", "a", HASH, 10)];
    let plan = run(&ds(None), &nodes, &pods);
    assert_eq!(plan.create, vec!["b".to_string()]);
    assert!(plan.delete.is_empty());
    assert_eq!(plan.status.desired_number_scheduled, 2);
    assert_eq!(plan.status.current_number_scheduled, 1);
    assert_eq!(plan.status.observed_generation, Some(3));
}

#[test]
fn pods_on_nodes_that_must_not_run_them_or_are_gone_are_deleted() {
    let mut no_execute = node("x");
    no_execute.spec = Some(NodeSpec {
        taints: Some(vec![Taint {
            key: "dedicated".into(),
            effect: "NoExecute".into(),
            value: None,
            time_added: None,
        }]),
        ..NodeSpec::default()
    });
    let nodes = [no_execute, tainted("s", "gpu")];
    let pods = [
        pod("px", "x", HASH, 10),
        pod("ps", "s", HASH, 10),
        pod("gone", "vanished", HASH, 10),
    ];
    let plan = run(&ds(None), &nodes, &pods);
    // A NoSchedule taint lets the running pod stay (misscheduled), NoExecute does not.
    assert_eq!(names(&plan.delete), vec!["gone", "px"]);
    assert_eq!(plan.status.number_misscheduled, 2);
    assert!(plan.create.is_empty());
}

#[test]
fn failed_and_duplicate_pods_are_deleted_keeping_the_oldest() {
    let nodes = [node("a"), node("b")];
    let pods = [
        pod("old", "a", HASH, 10),
        pod("young", "a", HASH, 20),
        with_phase(pod("broken", "b", HASH, 10), "Failed"),
    ];
    let plan = run(&ds(None), &nodes, &pods);
    assert_eq!(names(&plan.delete), vec!["broken", "young"]);
    assert_eq!(plan.failed_pod_messages.len(), 1);
    assert!(plan.failed_pod_messages[0].contains("on node b"));
    assert!(
        plan.create.is_empty(),
        "b still has its (failed) pod this sync"
    );
}

#[test]
fn a_terminating_pod_blocks_its_replacement() {
    let mut leaving = pod("leaving", "a", "old", 10);
    leaving.metadata.deletion_timestamp = Some(Time(at(900)));
    let plan = run(&ds(None), &[node("a")], &[leaving]);
    assert!(plan.create.is_empty() && plan.delete.is_empty());
}

#[test]
fn a_rolling_update_replaces_at_most_max_unavailable_available_pods() {
    let nodes = [node("a"), node("b"), node("c")];
    let pods = [
        pod("pa", "a", "old", 10),
        pod("pb", "b", "old", 10),
        pod("pc", "c", "old", 10),
    ];
    let one = run(&ds(None), &nodes, &pods);
    assert_eq!(one.delete.len(), 1);
    assert_eq!(one.status.updated_number_scheduled, Some(0));
    let two = run(&ds(Some(IntOrString::Int(2))), &nodes, &pods);
    assert_eq!(two.delete.len(), 2);
    let most = run(&ds(Some(IntOrString::String("50%".into()))), &nodes, &pods);
    assert_eq!(most.delete.len(), 2, "50% of 3 rounds up to 2");
}

#[test]
fn a_rolling_update_waits_while_a_new_pod_is_unavailable_but_replaces_broken_old_ones() {
    let nodes = [node("a"), node("b"), node("c")];
    let pods = [
        with_phase(pod("new-a", "a", HASH, 900), "Pending"),
        pod("pb", "b", "old", 10),
        with_phase(pod("pc", "c", "old", 10), "Pending"),
    ];
    let plan = run(&ds(None), &nodes, &pods);
    assert_eq!(names(&plan.delete), vec!["pc"]);
}

#[test]
fn status_counts_ready_available_and_updated_pods() {
    let nodes = [node("a"), node("b"), node("c")];
    let pods = [
        pod("pa", "a", HASH, 10),
        pod("pb", "b", "old", 10),
        with_phase(pod("pc", "c", HASH, 10), "Pending"),
    ];
    let nodes_ref: Vec<&Node> = nodes.iter().collect();
    let pods_ref: Vec<&Pod> = pods.iter().collect();
    let plan = plan(&ds(None), &nodes_ref, &pods_ref, HASH, at(1000), false);
    assert!(
        plan.create.is_empty() && plan.delete.is_empty(),
        "unsatisfied: no changes"
    );
    let s = plan.status;
    assert_eq!(
        (
            s.desired_number_scheduled,
            s.current_number_scheduled,
            s.number_ready
        ),
        (3, 3, 2)
    );
    assert_eq!(s.number_available, Some(2));
    assert_eq!(s.number_unavailable, Some(1));
    assert_eq!(s.updated_number_scheduled, Some(2));
}

#[test]
fn on_delete_never_replaces_old_pods() {
    let mut on_delete = ds(None);
    if let Some(s) = on_delete.spec.as_mut() {
        s.update_strategy = Some(DaemonSetUpdateStrategy {
            type_: Some("OnDelete".into()),
            rolling_update: None,
        });
    }
    let plan = run(&on_delete, &[node("a")], &[pod("pa", "a", "old", 10)]);
    assert!(plan.delete.is_empty());
}
