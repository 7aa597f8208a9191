//! The shared pod informer as the pod-owning controllers (ReplicaSet, Job, DaemonSet) use
//! it: each change is observed in the controller's [`Expectations`] (a new pod is an
//! observed creation of its controller; a pod being or having been deleted an observed
//! deletion) *after* the store holds it, and only then triggers a sync
//! ([`wasmkube_client::informers`] guarantees the order), so a sync that finds its expectations
//! satisfied also finds the pods that satisfied them. A sync reads its expectations before
//! its pods. A relist observes the listed pods and, as deletions, the vanished ones once the
//! store was replaced.
//!
//! [`trim_pod`] is the controller-manager's pod transform: what none of its controllers
//! reads is not kept in the one pod store they share.

use std::sync::Arc;

use k8s_openapi::api::core::v1::{Container, Pod};
use kube::runtime::reflector::Store;

use crate::context::Recorder;
use crate::expectations::Expectations;
use crate::pod_control::PodControl;
use crate::pods::{controller_of, is_controlled_by};
use wasmkube_client::informers::{Change, SharedInformer, Subscription};

/// Observes a pod change in `expectations` (call it from a handler of the pod informer,
/// before anything the change triggers).
pub(crate) fn observe(expectations: &Expectations, change: &Change<'_, Arc<Pod>>) {
    match change {
        Change::Applied { old, new } => observe_applied(expectations, old.map(|p| &**p), new),
        Change::Deleted(pod) => observe_deleted(expectations, pod),
        Change::Relisted => {}
    }
}

/// What a kube-runtime `Controller` that owns pods is built from: the pod store it reads,
/// the pod control that creates and deletes with the expectations the informer observes,
/// and the pod triggers for its `owns_shared_stream` (each yielded after its observation).
pub(crate) fn owned_pod_informer(
    pods: &SharedInformer<Pod>,
    client: &kube::Client,
    recorder: Recorder,
) -> (Store<Pod>, PodControl, Subscription<Pod>) {
    let expectations = Arc::new(Expectations::default());
    let observed = expectations.clone();
    let triggers = pods.subscribe_with(move |change| observe(&observed, change));
    let control = PodControl::new(client.clone(), recorder, expectations);
    (pods.store(), control, triggers)
}

/// How long a reconcile waits for its stores' first list.
const STORES_READY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Whether the stores `ready` waits for have listed within 30 s (client-go's
/// `WaitForCacheSync`: before the pod watch has listed, "no pods" would mean "create them
/// all"). `ready` is `true` once every store is ready.
pub(crate) async fn synced(ready: impl std::future::Future<Output = bool>) -> bool {
    tokio::time::timeout(STORES_READY_TIMEOUT, ready).await == Ok(true)
}

/// The pods in `store` of `namespace` controlled by the owner `owner_uid`.
pub(crate) fn owned_pods(store: &Store<Pod>, namespace: &str, owner_uid: &str) -> Vec<Arc<Pod>> {
    store
        .state()
        .into_iter()
        .filter(|p| p.metadata.namespace.as_deref() == Some(namespace))
        .filter(|p| is_controlled_by(&p.metadata, owner_uid))
        .collect()
}

/// The controller-manager's pod transform: drops what none of its controllers reads from
/// the pod store, so each pod costs the controller-manager little. Kept: all metadata but
/// managedFields (owner references, labels, annotations such as the completion index and
/// the deletion cost, finalizers, timestamps), the spec's scheduling fields (`nodeName`,
/// affinity, tolerations, ...), and the status (phase, conditions: the node lifecycle
/// controller writes them back; container statuses' states and restart counts), and of
/// each container its name, ports (the endpoint controllers resolve named targetPorts) and
/// restart policy (a sidecar's ports count too). Dropped: the rest of the containers'
/// definitions (images, commands, env, probes, resources, mounts: pods are created from
/// their owners' templates, never from the store), volumes, ephemeral containers, and the
/// container statuses' image names and IDs.
pub(crate) fn trim_pod(pod: &mut Pod) {
    if let Some(spec) = pod.spec.as_mut() {
        let names_only = |containers: &mut Vec<Container>| {
            for c in containers.iter_mut() {
                *c = Container {
                    name: std::mem::take(&mut c.name),
                    ports: c.ports.take(),
                    restart_policy: c.restart_policy.take(),
                    ..Container::default()
                };
            }
        };
        names_only(&mut spec.containers);
        if let Some(init) = spec.init_containers.as_mut() {
            names_only(init);
        }
        spec.ephemeral_containers = None;
        spec.volumes = None;
    }
    if let Some(status) = pod.status.as_mut() {
        let statuses = [
            status.container_statuses.as_mut(),
            status.init_container_statuses.as_mut(),
            status.ephemeral_container_statuses.as_mut(),
        ];
        for s in statuses.into_iter().flatten().flatten() {
            s.image = String::new();
            s.image_id = String::new();
            s.container_id = None;
            s.volume_mounts = None;
            s.resources = None;
            s.allocated_resources = None;
        }
    }
}

/// A pod version the store now holds: a creation of its controller if the pod is new (a
/// pod that shows up already being deleted was still created), a deletion if it is being
/// deleted.
fn observe_applied(expectations: &Expectations, old: Option<&Pod>, new: &Pod) {
    let Some(owner) = controller_of(&new.metadata) else {
        return;
    };
    let is_new = old.is_none_or(|o| o.metadata.uid != new.metadata.uid);
    if is_new {
        expectations.creation_observed(&owner.uid);
    }
    if new.metadata.deletion_timestamp.is_some() {
        expectations.deletion_observed(&owner.uid, new.metadata.uid.as_deref().unwrap_or_default());
    }
}

fn observe_deleted(expectations: &Expectations, pod: &Pod) {
    if let Some(owner) = controller_of(&pod.metadata) {
        expectations.deletion_observed(&owner.uid, pod.metadata.uid.as_deref().unwrap_or_default());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        ContainerPort, ContainerStatus, PodSpec, PodStatus, Toleration, Volume,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference, Time};
    use k8s_openapi::jiff::Timestamp;
    use kube::ResourceExt;
    use kube::runtime::reflector;
    use kube::runtime::watcher::Event;

    use wasmkube_client::informers::HandlerRegistration;

    fn owned_pod(uid: &str) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some(format!("p-{uid}")),
                namespace: Some("default".into()),
                uid: Some(uid.into()),
                owner_references: Some(vec![OwnerReference {
                    uid: "rs".into(),
                    controller: Some(true),
                    ..OwnerReference::default()
                }]),
                ..ObjectMeta::default()
            },
            ..Pod::default()
        }
    }

    /// A pod informer whose handler observes `e` and checks, at each observation, that the
    /// store already holds what satisfied it.
    fn observed_informer(e: &Arc<Expectations>) -> (SharedInformer<Pod>, HandlerRegistration) {
        let informer = SharedInformer::<Pod>::new(());
        let store = informer.store();
        let observed = e.clone();
        let registration = informer.add_handler(move |change| {
            if let Change::Applied { new, .. } = change {
                assert!(
                    store
                        .get(&reflector::ObjectRef::from_obj(&***new))
                        .is_some()
                );
            }
            observe(&observed, change);
        });
        (informer, registration)
    }

    #[test]
    fn only_new_pods_count_as_observed_creations() {
        let e = Expectations::default();
        e.expect_creations("rs", 2);
        let pod = owned_pod("a");
        observe_applied(&e, None, &pod);
        // An update of a pod already seen is not another creation.
        observe_applied(&e, Some(&pod), &pod);
        assert!(!e.satisfied("rs"));
        observe_applied(&e, None, &owned_pod("b"));
        assert!(e.satisfied("rs"));
    }

    #[test]
    fn a_pod_listed_by_a_relist_counts_only_once_the_store_holds_it() {
        let e = Arc::new(Expectations::default());
        let (informer, _registration) = observed_informer(&e);
        let mut reflector = informer.reflector().expect("not running");
        e.expect_creations("rs", 1);
        reflector.apply(Event::Init);
        reflector.apply(Event::InitApply(owned_pod("a")));
        // A sync now would read no pod "a": it must not find its expectations satisfied.
        assert!(informer.store().state().is_empty());
        assert!(!e.satisfied("rs"));
        reflector.apply(Event::InitDone);
        assert_eq!(informer.store().state().len(), 1);
        assert!(e.satisfied("rs"));
    }

    #[test]
    fn a_pod_gone_after_a_relist_is_an_observed_deletion() {
        let e = Arc::new(Expectations::default());
        let (informer, _registration) = observed_informer(&e);
        let mut reflector = informer.reflector().expect("not running");
        for uid in ["a", "b"] {
            reflector.apply(Event::Apply(owned_pod(uid)));
        }
        e.expect_deletions("rs", ["b".to_string()]);
        // The watch broke; "b" was deleted during the gap and the relist lists only "a".
        reflector.apply(Event::Init);
        reflector.apply(Event::InitApply(owned_pod("a")));
        assert!(!e.satisfied("rs"));
        reflector.apply(Event::InitDone);
        assert!(e.satisfied("rs"));
        let names: Vec<String> = informer
            .store()
            .state()
            .iter()
            .map(|p| p.name_any())
            .collect();
        assert_eq!(names, ["p-a"]);
    }

    #[test]
    fn owned_pods_are_those_of_the_namespace_the_owner_controls() {
        let (reader, mut writer) = reflector::store::<Pod>();
        let mut other_ns = owned_pod("b");
        other_ns.metadata.namespace = Some("other".into());
        let mut orphan = owned_pod("c");
        orphan.metadata.owner_references = None;
        for pod in [owned_pod("a"), other_ns, orphan] {
            writer.apply_watcher_event(&Event::Apply(pod));
        }
        let owned = owned_pods(&reader, "default", "rs");
        let names: Vec<String> = owned.iter().map(|p| p.name_any()).collect();
        assert_eq!(names, ["p-a"]);
    }

    #[test]
    fn a_deletion_timestamp_or_a_delete_is_an_observed_deletion() {
        let e = Expectations::default();
        e.expect_deletions("rs", ["a".to_string(), "b".to_string()]);
        let a = owned_pod("a");
        let mut deleting = a.clone();
        deleting.metadata.deletion_timestamp = Some(Time(Timestamp::UNIX_EPOCH));
        observe_applied(&e, Some(&a), &deleting);
        observe_deleted(&e, &owned_pod("b"));
        assert!(e.satisfied("rs"));
    }

    #[test]
    fn a_trimmed_pod_keeps_what_the_controllers_read() {
        let mut pod = owned_pod("a");
        pod.metadata.annotations = Some([("k".to_string(), "v".to_string())].into());
        pod.spec = Some(PodSpec {
            node_name: Some("n1".into()),
            tolerations: Some(vec![Toleration::default()]),
            containers: vec![Container {
                name: "web".into(),
                image: Some("example.com/web:1".into()),
                args: Some(vec!["--big".into()]),
                ports: Some(vec![ContainerPort {
                    name: Some("http".into()),
                    container_port: 8080,
                    ..ContainerPort::default()
                }]),
                ..Container::default()
            }],
            volumes: Some(vec![Volume::default()]),
            ..PodSpec::default()
        });
        pod.status = Some(PodStatus {
            phase: Some("Running".into()),
            container_statuses: Some(vec![ContainerStatus {
                name: "web".into(),
                image: "example.com/web:1".into(),
                image_id: "sha256:abc".into(),
                restart_count: 3,
                ..ContainerStatus::default()
            }]),
            ..PodStatus::default()
        });
        let before = pod.clone();
        trim_pod(&mut pod);
        assert_eq!(pod.metadata, before.metadata);
        let spec = pod.spec.as_ref().expect("the spec stays");
        assert_eq!(spec.node_name.as_deref(), Some("n1"));
        assert_eq!(
            spec.tolerations,
            before.spec.as_ref().and_then(|s| s.tolerations.clone())
        );
        assert_eq!(
            spec.containers,
            [Container {
                name: "web".into(),
                ports: before
                    .spec
                    .as_ref()
                    .and_then(|s| s.containers[0].ports.clone()),
                ..Container::default()
            }]
        );
        assert_eq!(spec.volumes, None);
        let status = pod.status.as_ref().expect("the status stays");
        assert_eq!(status.phase.as_deref(), Some("Running"));
        let container = &status
            .container_statuses
            .as_ref()
            .expect("container statuses")[0];
        assert_eq!(
            (container.name.as_str(), container.restart_count),
            ("web", 3)
        );
        assert!(container.image.is_empty() && container.image_id.is_empty());
    }
}
