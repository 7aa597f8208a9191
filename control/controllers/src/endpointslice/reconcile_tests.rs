//! The slice computation, sentence by sentence.

use super::*;
use k8s_openapi::api::core::v1::{
    Container, ContainerPort, PodCondition, PodIP, PodSpec, PodStatus, ServicePort, ServiceSpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

fn service(ports: Vec<ServicePort>) -> Service {
    Service {
        metadata: ObjectMeta {
            name: Some("web".into()),
            namespace: Some("default".into()),
            uid: Some("svc-uid".into()),
            labels: Some([("team".to_string(), "a".to_string())].into()),
            ..ObjectMeta::default()
        },
        spec: Some(ServiceSpec {
            selector: Some([("app".to_string(), "web".to_string())].into()),
            cluster_ip: Some("10.43.0.20".into()),
            ip_families: Some(vec!["IPv4".into()]),
            ports: Some(ports),
            ..ServiceSpec::default()
        }),
        status: None,
    }
}

fn port(name: &str, target: IntOrString) -> ServicePort {
    ServicePort {
        name: Some(name.into()),
        port: 80,
        protocol: Some("TCP".into()),
        target_port: Some(target),
        ..ServicePort::default()
    }
}

fn http_service() -> Service {
    service(vec![port("http", IntOrString::String("http".into()))])
}

/// A running, ready pod `n` with IP 127.1.x.y on node `node-1`, serving `http` on 8080.
fn pod(n: usize) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some(format!("web-{n}")),
            namespace: Some("default".into()),
            uid: Some(format!("pod-{n}")),
            labels: Some([("app".to_string(), "web".to_string())].into()),
            ..ObjectMeta::default()
        },
        spec: Some(PodSpec {
            node_name: Some("node-1".into()),
            containers: vec![Container {
                name: "app".into(),
                ports: Some(vec![ContainerPort {
                    name: Some("http".into()),
                    container_port: 8080,
                    protocol: Some("TCP".into()),
                    ..ContainerPort::default()
                }]),
                ..Container::default()
            }],
            ..PodSpec::default()
        }),
        status: Some(PodStatus {
            phase: Some("Running".into()),
            pod_ips: Some(vec![PodIP {
                ip: format!("127.1.{}.{}", n / 250, 1 + n % 250),
            }]),
            conditions: Some(vec![PodCondition {
                type_: "Ready".into(),
                status: "True".into(),
                ..PodCondition::default()
            }]),
            ..PodStatus::default()
        }),
    }
}

fn not_ready(mut pod: Pod) -> Pod {
    if let Some(c) = pod
        .status
        .as_mut()
        .and_then(|s| s.conditions.as_mut())
        .and_then(|c| c.first_mut())
    {
        c.status = "False".into();
    }
    pod
}

fn terminating(mut pod: Pod) -> Pod {
    pod.metadata.deletion_timestamp = Some(Time("2026-12-07T08:00:00Z".parse().unwrap()));
    pod
}

fn pods(n: usize) -> Vec<Arc<Pod>> {
    (0..n).map(|i| Arc::new(pod(i))).collect()
}

fn zone_a(node: &str) -> Option<Option<String>> {
    (node == "node-1").then(|| Some("zone-a".to_string()))
}

fn plan(service: &Service, pods: &[Arc<Pod>], existing: &[Arc<EndpointSlice>]) -> Plan {
    reconcile(service, pods, &zone_a, existing, MAX_ENDPOINTS_PER_SLICE)
}

/// The slices as the apiserver would store a plan's writes on top of `existing`.
fn apply(existing: &[Arc<EndpointSlice>], plan: Plan) -> Vec<Arc<EndpointSlice>> {
    let gone: Vec<String> = plan
        .delete
        .iter()
        .chain(&plan.update)
        .filter_map(|s| s.metadata.name.clone())
        .collect();
    let mut out: Vec<Arc<EndpointSlice>> = existing
        .iter()
        .filter(|s| !gone.contains(s.metadata.name.as_ref().unwrap()))
        .cloned()
        .collect();
    out.extend(plan.update.into_iter().map(Arc::new));
    for (i, mut slice) in plan.create.into_iter().enumerate() {
        let prefix = slice.metadata.generate_name.take().unwrap();
        slice.metadata.name = Some(format!("{prefix}{}{i}", out.len()));
        out.push(Arc::new(slice));
    }
    out
}

fn conditions(slice: &EndpointSlice) -> Vec<(bool, bool, bool)> {
    slice
        .endpoints
        .iter()
        .map(|e| {
            let c = e.conditions.clone().unwrap();
            (c.ready.unwrap(), c.serving.unwrap(), c.terminating.unwrap())
        })
        .collect()
}

#[test]
fn a_service_gets_a_slice_of_its_pods_with_labels_owner_ports_node_and_zone() {
    let svc = http_service();
    let p = plan(&svc, &pods(2), &[]);
    assert!(p.update.is_empty() && p.delete.is_empty());
    let [slice] = p.create.as_slice() else {
        panic!("one slice: {p:?}")
    };
    assert_eq!(slice.metadata.generate_name.as_deref(), Some("web-"));
    assert_eq!(
        slice.metadata.labels.clone().unwrap(),
        BTreeMap::from([
            ("team".to_string(), "a".to_string()),
            (SERVICE_NAME_LABEL.to_string(), "web".to_string()),
            (MANAGED_BY_LABEL.to_string(), CONTROLLER_NAME.to_string()),
        ])
    );
    let owner = &slice.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.uid.as_str(), owner.controller),
        ("Service", "svc-uid", Some(true))
    );
    assert_eq!(slice.address_type, "IPv4");
    assert_eq!(
        slice.ports,
        Some(vec![EndpointPort {
            name: Some("http".into()),
            port: Some(8080),
            protocol: Some("TCP".into()),
            app_protocol: None,
        }])
    );
    let first = &slice.endpoints[0];
    assert_eq!(first.addresses, ["127.1.0.1"]);
    assert_eq!(first.node_name.as_deref(), Some("node-1"));
    assert_eq!(first.zone.as_deref(), Some("zone-a"));
    let target = first.target_ref.as_ref().unwrap();
    assert_eq!(
        (
            target.kind.as_deref(),
            target.name.as_deref(),
            target.uid.as_deref()
        ),
        (Some("Pod"), Some("web-0"), Some("pod-0"))
    );
    assert_eq!(conditions(slice), [(true, true, false); 2]);
}

#[test]
fn more_than_a_hundred_pods_fill_slices_of_at_most_a_hundred() {
    let p = plan(&http_service(), &pods(250), &[]);
    let mut sizes: Vec<usize> = p.create.iter().map(|s| s.endpoints.len()).collect();
    sizes.sort();
    assert_eq!(sizes, [50, 100, 100]);
}

#[test]
fn a_second_sync_of_the_same_state_writes_nothing() {
    let svc = http_service();
    let all = pods(130);
    let stored = apply(&[], plan(&svc, &all, &[]));
    let again = plan(&svc, &all, &stored);
    assert!(again.is_empty(), "{again:?}");
}

#[test]
fn a_pod_that_stops_being_ready_is_updated_in_place() {
    let svc = http_service();
    let mut all = pods(3);
    let stored = apply(&[], plan(&svc, &all, &[]));
    all[1] = Arc::new(not_ready(pod(1)));
    let p = plan(&svc, &all, &stored);
    assert!(p.create.is_empty() && p.delete.is_empty(), "{p:?}");
    let [slice] = p.update.as_slice() else {
        panic!("one update: {p:?}")
    };
    assert_eq!(slice.metadata.name, stored[0].metadata.name);
    assert_eq!(
        conditions(slice),
        [
            (true, true, false),
            (false, false, false),
            (true, true, false)
        ]
    );
}

#[test]
fn a_terminating_pod_serves_as_its_readiness_says_but_is_not_ready() {
    let svc = http_service();
    let all = vec![
        Arc::new(terminating(pod(0))),
        Arc::new(terminating(not_ready(pod(1)))),
    ];
    let p = plan(&svc, &all, &[]);
    assert_eq!(
        conditions(&p.create[0]),
        [(false, true, true), (false, false, true)]
    );
    let mut publishing = svc.clone();
    publishing
        .spec
        .as_mut()
        .unwrap()
        .publish_not_ready_addresses = Some(true);
    let p = plan(&publishing, &all, &[]);
    assert_eq!(
        conditions(&p.create[0]),
        [(true, true, true), (true, false, true)]
    );
}

#[test]
fn finished_pods_and_pods_without_an_ip_are_left_out() {
    let mut done = pod(0);
    done.status.as_mut().unwrap().phase = Some("Succeeded".into());
    let mut pending = pod(1);
    pending.status.as_mut().unwrap().pod_ips = None;
    let p = plan(
        &http_service(),
        &[Arc::new(done), Arc::new(pending), Arc::new(pod(2))],
        &[],
    );
    assert_eq!(p.create[0].endpoints.len(), 1);
    assert_eq!(p.create[0].endpoints[0].addresses, ["127.1.0.3"]);
}

#[test]
fn a_pod_without_a_named_port_goes_to_a_slice_without_that_port() {
    let svc = service(vec![
        port("http", IntOrString::String("http".into())),
        port("metrics", IntOrString::Int(9090)),
    ]);
    let mut bare = pod(1);
    bare.spec.as_mut().unwrap().containers[0].ports = None;
    let p = plan(&svc, &[Arc::new(pod(0)), Arc::new(bare)], &[]);
    let mut slices: Vec<(Vec<String>, Vec<String>)> = p
        .create
        .iter()
        .map(|s| {
            (
                s.ports
                    .iter()
                    .flatten()
                    .map(|p| format!("{}={}", p.name.clone().unwrap(), p.port.unwrap()))
                    .collect(),
                s.endpoints.iter().map(|e| e.addresses[0].clone()).collect(),
            )
        })
        .collect();
    slices.sort();
    assert_eq!(
        slices,
        [
            (
                vec!["http=8080".to_string(), "metrics=9090".to_string()],
                vec!["127.1.0.1".to_string()]
            ),
            (
                vec!["metrics=9090".to_string()],
                vec!["127.1.0.2".to_string()]
            ),
        ]
    );
}

#[test]
fn removing_every_pod_leaves_one_empty_placeholder_slice_by_updating_the_last() {
    let svc = http_service();
    let stored = apply(&[], plan(&svc, &pods(1), &[]));
    let p = plan(&svc, &[], &stored);
    assert!(p.create.is_empty() && p.delete.is_empty(), "{p:?}");
    let [slice] = p.update.as_slice() else {
        panic!("one update: {p:?}")
    };
    assert_eq!(slice.metadata.name, stored[0].metadata.name);
    assert!(slice.endpoints.is_empty());
    assert_eq!(slice.ports, Some(vec![]));
    // ... which stays as it is.
    let stored = apply(&stored, p);
    assert!(plan(&svc, &[], &stored).is_empty());
    // A service without pods from the start gets the placeholder too.
    let fresh = plan(&svc, &[], &[]);
    assert_eq!(fresh.create.len(), 1);
    assert!(fresh.create[0].endpoints.is_empty());
}

#[test]
fn slices_of_an_older_service_of_the_same_name_are_replaced() {
    let svc = http_service();
    let mut old = svc.clone();
    old.metadata.uid = Some("older".into());
    let stored = apply(&[], plan(&old, &pods(1), &[]));
    let p = plan(&svc, &pods(1), &stored);
    assert_eq!(p.delete.len(), 1, "{p:?}");
    assert_eq!(p.create.len(), 1, "{p:?}");
}

#[test]
fn pods_on_unknown_nodes_wait_unless_not_ready_addresses_are_published() {
    let svc = http_service();
    let mut elsewhere = pod(1);
    elsewhere.spec.as_mut().unwrap().node_name = Some("node-9".into());
    let all = [Arc::new(pod(0)), Arc::new(elsewhere)];
    let p = plan(&svc, &all, &[]);
    assert_eq!(p.unknown_nodes, ["node-9"]);
    assert_eq!(p.create[0].endpoints.len(), 1);
    let mut publishing = svc.clone();
    publishing
        .spec
        .as_mut()
        .unwrap()
        .publish_not_ready_addresses = Some(true);
    let p = plan(&publishing, &all, &[]);
    assert!(p.unknown_nodes.is_empty());
    assert_eq!(p.create[0].endpoints.len(), 2);
    assert_eq!(p.create[0].endpoints[1].zone, None);
}

#[test]
fn headless_services_are_labelled_and_their_pods_hostnames_kept() {
    let mut svc = http_service();
    svc.spec.as_mut().unwrap().cluster_ip = Some("None".into());
    let mut named = pod(0);
    let spec = named.spec.as_mut().unwrap();
    spec.hostname = Some("db-0".into());
    spec.subdomain = Some("web".into());
    let p = plan(&svc, &[Arc::new(named)], &[]);
    let slice = &p.create[0];
    assert_eq!(
        slice.metadata.labels.as_ref().unwrap().get(HEADLESS_LABEL),
        Some(&String::new())
    );
    assert_eq!(slice.endpoints[0].hostname.as_deref(), Some("db-0"));
}

#[test]
fn new_pods_fill_the_slice_being_updated_before_new_slices_are_made() {
    let svc = http_service();
    let stored = apply(&[], plan(&svc, &pods(150), &[]));
    // One pod goes (its slice is updated), five come: they join that slice.
    let mut now: Vec<Arc<Pod>> = pods(155);
    now.remove(0);
    let p = plan(&svc, &now, &stored);
    assert!(p.create.is_empty() && p.delete.is_empty(), "{p:?}");
    let total: usize = apply(&stored, p).iter().map(|s| s.endpoints.len()).sum();
    assert_eq!(total, 154);
}
