//! Kubernetes' NetworkPolicy semantics, table-driven over one small cluster:
//! namespaces `prod` (team=a), `dev` (team=b) and `other` (no labels); pods with IPs in
//! 10.42/16; the node at 10.77.0.2.

use std::net::IpAddr;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use serde_json::{Value, json};

use super::model::CompiledPolicy;
use super::*;

const NODE_IP: &str = "10.77.0.2";

fn ip(s: &str) -> IpAddr {
    s.parse().expect("an IP")
}

fn pod(namespace: &str, name: &str, labels: Value, ip: &str, ports: Value) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {"containers": [{"name": "app", "ports": ports}]},
        "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]},
    }))
    .expect("a pod")
}

fn cluster() -> ClusterView {
    let mut view = ClusterView::new(vec![ip(NODE_IP)]);
    for (name, team) in [("prod", Some("a")), ("dev", Some("b")), ("other", None)] {
        let mut labels = model::Labels::new();
        labels.insert("kubernetes.io/metadata.name".into(), name.into());
        if let Some(team) = team {
            labels.insert("team".into(), team.into());
        }
        view.set_namespace(name, labels);
    }
    let web_ports = json!([
        {"name": "http", "containerPort": 8080},
        {"name": "dns", "containerPort": 53, "protocol": "UDP"},
    ]);
    for p in [
        pod(
            "prod",
            "web",
            json!({"app": "web"}),
            "10.42.0.10",
            web_ports,
        ),
        pod(
            "prod",
            "client",
            json!({"app": "client"}),
            "10.42.0.11",
            json!([]),
        ),
        pod(
            "prod",
            "stranger",
            json!({"app": "other"}),
            "10.42.0.12",
            json!([]),
        ),
        pod(
            "prod",
            "db",
            json!({"app": "db"}),
            "10.42.0.20",
            json!([{"name": "pg", "containerPort": 5432}]),
        ),
        pod(
            "dev",
            "client",
            json!({"app": "client"}),
            "10.42.1.11",
            json!([]),
        ),
        pod(
            "dev",
            "worker",
            json!({"app": "worker"}),
            "10.42.1.12",
            json!([]),
        ),
        pod(
            "other",
            "tool",
            json!({"app": "tool"}),
            "10.42.2.5",
            json!([]),
        ),
    ] {
        view.set_pod(PodInfo::of(&p));
    }
    view
}

fn policy(namespace: &str, name: &str, spec: Value) -> CompiledPolicy {
    let policy: NetworkPolicy = serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }))
    .expect("a policy");
    CompiledPolicy::compile(&policy)
}

/// One connection: the subject pod (`namespace/name`), its direction, the peer's IP, the
/// port and protocol, and whether it is allowed.
struct Case {
    what: &'static str,
    subject: &'static str,
    direction: Direction,
    peer: &'static str,
    port: u16,
    protocol: Protocol,
    allowed: bool,
}

use Direction::{Egress, Ingress};
use Protocol::{Tcp, Udp};

const fn case(
    what: &'static str,
    subject: &'static str,
    direction: Direction,
    peer: &'static str,
    port: u16,
    protocol: Protocol,
    allowed: bool,
) -> Case {
    Case {
        what,
        subject,
        direction,
        peer,
        port,
        protocol,
        allowed,
    }
}

/// Runs `cases` against the cluster with `policies`.
fn check(policies: &[CompiledPolicy], cases: &[Case]) {
    let mut view = cluster();
    for p in policies {
        view.set_policy(p.clone());
    }
    for c in cases {
        let (namespace, name) = c.subject.split_once('/').expect("ns/name");
        let key = model::PodKey {
            namespace: namespace.into(),
            name: name.into(),
        };
        let subject = view.pod(&key).expect("a subject pod").clone();
        let decision = view.decide(&subject, c.direction, ip(c.peer), c.port, c.protocol);
        assert_eq!(
            decision.allowed(),
            c.allowed,
            "{}: {} {:?} {} port {} {:?} -> {decision:?}",
            c.what,
            c.subject,
            c.direction,
            c.peer,
            c.port,
            c.protocol
        );
    }
}

fn default_deny_ingress() -> CompiledPolicy {
    policy(
        "prod",
        "default-deny",
        json!({"podSelector": {}, "policyTypes": ["Ingress"]}),
    )
}

#[test]
fn pods_no_policy_selects_accept_and_send_everything() {
    check(
        &[policy(
            "prod",
            "db-only",
            json!({"podSelector": {"matchLabels": {"app": "db"}}}),
        )],
        &[
            case(
                "unselected pod",
                "prod/web",
                Ingress,
                "10.42.0.12",
                8080,
                Tcp,
                true,
            ),
            case(
                "unselected pod out",
                "prod/web",
                Egress,
                "192.0.2.1",
                443,
                Tcp,
                true,
            ),
            case(
                "selected pod",
                "prod/db",
                Ingress,
                "10.42.0.10",
                5432,
                Tcp,
                false,
            ),
            case(
                "ingress-only policy",
                "prod/db",
                Egress,
                "10.42.0.10",
                8080,
                Tcp,
                true,
            ),
        ],
    );
}

#[test]
fn default_deny_ingress_isolates_every_pod_of_its_namespace_only_for_ingress() {
    check(
        &[default_deny_ingress()],
        &[
            case(
                "same namespace",
                "prod/web",
                Ingress,
                "10.42.0.11",
                8080,
                Tcp,
                false,
            ),
            case(
                "other namespace",
                "prod/web",
                Ingress,
                "10.42.1.11",
                8080,
                Tcp,
                false,
            ),
            case(
                "no pod at that IP",
                "prod/web",
                Ingress,
                "192.0.2.9",
                8080,
                Tcp,
                false,
            ),
            case("udp too", "prod/web", Ingress, "10.42.0.11", 53, Udp, false),
            case(
                "egress untouched",
                "prod/web",
                Egress,
                "10.42.0.20",
                5432,
                Tcp,
                true,
            ),
            case(
                "other namespace's pods",
                "dev/worker",
                Ingress,
                "10.42.0.11",
                80,
                Tcp,
                true,
            ),
            case("the node", "prod/web", Ingress, NODE_IP, 8080, Tcp, true),
            case(
                "the pod itself",
                "prod/web",
                Ingress,
                "10.42.0.10",
                8080,
                Tcp,
                true,
            ),
        ],
    );
}

#[test]
fn a_pod_selector_peer_allows_matching_pods_of_the_policys_namespace() {
    let allow = policy(
        "prod",
        "allow-client",
        json!({
            "podSelector": {"matchLabels": {"app": "web"}},
            "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "client"}}}]}],
        }),
    );
    check(
        &[default_deny_ingress(), allow],
        &[
            case(
                "labelled client",
                "prod/web",
                Ingress,
                "10.42.0.11",
                8080,
                Tcp,
                true,
            ),
            case(
                "any port",
                "prod/web",
                Ingress,
                "10.42.0.11",
                9999,
                Tcp,
                true,
            ),
            case(
                "unlabelled pod",
                "prod/web",
                Ingress,
                "10.42.0.12",
                8080,
                Tcp,
                false,
            ),
            case(
                "same labels elsewhere",
                "prod/web",
                Ingress,
                "10.42.1.11",
                8080,
                Tcp,
                false,
            ),
            case(
                "another selected pod",
                "prod/db",
                Ingress,
                "10.42.0.11",
                5432,
                Tcp,
                false,
            ),
            case(
                "ipv4-mapped address",
                "prod/web",
                Ingress,
                "::ffff:10.42.0.11",
                8080,
                Tcp,
                true,
            ),
        ],
    );
}

#[test]
fn namespace_selectors_alone_or_with_pod_selectors() {
    let by_namespace = policy(
        "prod",
        "from-team-b",
        json!({
            "podSelector": {"matchLabels": {"app": "web"}},
            "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"team": "b"}}}]}],
        }),
    );
    check(
        &[by_namespace],
        &[
            case(
                "any pod of dev",
                "prod/web",
                Ingress,
                "10.42.1.12",
                80,
                Tcp,
                true,
            ),
            case(
                "a pod of prod",
                "prod/web",
                Ingress,
                "10.42.0.11",
                80,
                Tcp,
                false,
            ),
            case(
                "a pod of other",
                "prod/web",
                Ingress,
                "10.42.2.5",
                80,
                Tcp,
                false,
            ),
        ],
    );
    let both = policy(
        "prod",
        "clients-of-team-b",
        json!({
            "podSelector": {"matchLabels": {"app": "web"}},
            "ingress": [{"from": [{
                "namespaceSelector": {"matchLabels": {"team": "b"}},
                "podSelector": {"matchLabels": {"app": "client"}}
            }]}],
        }),
    );
    check(
        &[both],
        &[
            case(
                "client of dev",
                "prod/web",
                Ingress,
                "10.42.1.11",
                80,
                Tcp,
                true,
            ),
            case(
                "worker of dev",
                "prod/web",
                Ingress,
                "10.42.1.12",
                80,
                Tcp,
                false,
            ),
            case(
                "client of prod",
                "prod/web",
                Ingress,
                "10.42.0.11",
                80,
                Tcp,
                false,
            ),
        ],
    );
    let every_namespace = policy(
        "prod",
        "from-everywhere",
        json!({
            "podSelector": {},
            "ingress": [{"from": [{"namespaceSelector": {}}]}],
        }),
    );
    check(
        &[every_namespace],
        &[
            case(
                "pod of other",
                "prod/web",
                Ingress,
                "10.42.2.5",
                80,
                Tcp,
                true,
            ),
            case(
                "not a pod",
                "prod/web",
                Ingress,
                "192.0.2.1",
                80,
                Tcp,
                false,
            ),
        ],
    );
}

#[test]
fn ip_blocks_match_addresses_in_cidr_and_in_no_except() {
    let block = policy(
        "prod",
        "from-block",
        json!({
            "podSelector": {},
            "ingress": [{"from": [{"ipBlock": {"cidr": "10.42.0.0/16", "except": ["10.42.0.12/32", "10.42.1.0/24"]}}]}],
        }),
    );
    check(
        &[block],
        &[
            case(
                "pod in the block",
                "prod/web",
                Ingress,
                "10.42.0.11",
                80,
                Tcp,
                true,
            ),
            case(
                "address no pod has",
                "prod/web",
                Ingress,
                "10.42.9.9",
                80,
                Tcp,
                true,
            ),
            case(
                "excepted address",
                "prod/web",
                Ingress,
                "10.42.0.12",
                80,
                Tcp,
                false,
            ),
            case(
                "excepted subnet",
                "prod/web",
                Ingress,
                "10.42.1.11",
                80,
                Tcp,
                false,
            ),
            case(
                "outside the block",
                "prod/web",
                Ingress,
                "192.0.2.1",
                80,
                Tcp,
                false,
            ),
            case(
                "other family",
                "prod/web",
                Ingress,
                "2001:db8::1",
                80,
                Tcp,
                false,
            ),
        ],
    );
}

#[test]
fn ports_by_number_range_and_name_for_one_protocol() {
    let ports = policy(
        "prod",
        "ports",
        json!({
            "podSelector": {"matchLabels": {"app": "web"}},
            "ingress": [{"ports": [
                {"port": 8080},
                {"port": 9000, "endPort": 9100, "protocol": "TCP"},
                {"port": "dns", "protocol": "UDP"}
            ]}],
        }),
    );
    check(
        &[ports],
        &[
            case("number", "prod/web", Ingress, "10.42.0.11", 8080, Tcp, true),
            case(
                "number, other protocol",
                "prod/web",
                Ingress,
                "10.42.0.11",
                8080,
                Udp,
                false,
            ),
            case(
                "other number",
                "prod/web",
                Ingress,
                "10.42.0.11",
                8081,
                Tcp,
                false,
            ),
            case(
                "range start",
                "prod/web",
                Ingress,
                "10.42.0.11",
                9000,
                Tcp,
                true,
            ),
            case(
                "range end",
                "prod/web",
                Ingress,
                "10.42.0.11",
                9100,
                Tcp,
                true,
            ),
            case(
                "past the range",
                "prod/web",
                Ingress,
                "10.42.0.11",
                9101,
                Tcp,
                false,
            ),
            case(
                "named port",
                "prod/web",
                Ingress,
                "10.42.0.11",
                53,
                Udp,
                true,
            ),
            case(
                "named port, tcp",
                "prod/web",
                Ingress,
                "10.42.0.11",
                53,
                Tcp,
                false,
            ),
            case(
                "unknown udp port",
                "prod/web",
                Ingress,
                "10.42.0.11",
                0,
                Udp,
                false,
            ),
        ],
    );
    // A named port of the pod the traffic goes to: the subject's for ingress.
    let named = policy(
        "prod",
        "http",
        json!({
            "podSelector": {},
            "ingress": [{"ports": [{"port": "http"}]}],
        }),
    );
    check(
        &[named],
        &[
            case(
                "web's http",
                "prod/web",
                Ingress,
                "10.42.0.11",
                8080,
                Tcp,
                true,
            ),
            case(
                "db has no http",
                "prod/db",
                Ingress,
                "10.42.0.11",
                8080,
                Tcp,
                false,
            ),
        ],
    );
}

#[test]
fn egress_rules_isolate_and_resolve_named_ports_on_the_destination() {
    let deny = policy(
        "prod",
        "deny-egress",
        json!({"podSelector": {"matchLabels": {"app": "client"}}, "policyTypes": ["Egress"]}),
    );
    check(
        std::slice::from_ref(&deny),
        &[
            case(
                "to a pod",
                "prod/client",
                Egress,
                "10.42.0.10",
                8080,
                Tcp,
                false,
            ),
            case(
                "to the world",
                "prod/client",
                Egress,
                "192.0.2.1",
                443,
                Tcp,
                false,
            ),
            case("udp", "prod/client", Egress, "10.43.0.10", 53, Udp, false),
            case(
                "to its node",
                "prod/client",
                Egress,
                NODE_IP,
                10250,
                Tcp,
                true,
            ),
            case(
                "ingress untouched",
                "prod/client",
                Ingress,
                "10.42.0.12",
                80,
                Tcp,
                true,
            ),
            case(
                "unselected pod",
                "prod/web",
                Egress,
                "192.0.2.1",
                443,
                Tcp,
                true,
            ),
        ],
    );
    let to_db = policy(
        "prod",
        "to-db",
        json!({
            "podSelector": {"matchLabels": {"app": "client"}},
            "egress": [{"to": [{"podSelector": {"matchLabels": {"app": "db"}}}], "ports": [{"port": "pg"}]}],
        }),
    );
    check(
        &[deny, to_db.clone()],
        &[
            case(
                "db's pg port",
                "prod/client",
                Egress,
                "10.42.0.20",
                5432,
                Tcp,
                true,
            ),
            case(
                "db, other port",
                "prod/client",
                Egress,
                "10.42.0.20",
                5433,
                Tcp,
                false,
            ),
            case("web", "prod/client", Egress, "10.42.0.10", 8080, Tcp, false),
        ],
    );
    // Egress rules without policyTypes: Ingress and Egress, so ingress is isolated too.
    assert!(to_db.ingress.as_ref().is_some_and(Vec::is_empty));
    check(
        &[to_db],
        &[case(
            "no ingress rule",
            "prod/client",
            Ingress,
            "10.42.0.12",
            80,
            Tcp,
            false,
        )],
    );
}

#[test]
fn policies_add_up_and_an_empty_rule_allows_everything() {
    let clients = policy(
        "prod",
        "clients",
        json!({"podSelector": {"matchLabels": {"app": "web"}},
               "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "client"}}}]}]}),
    );
    let stranger = policy(
        "prod",
        "stranger",
        json!({"podSelector": {"matchLabels": {"app": "web"}},
               "ingress": [{"from": [{"ipBlock": {"cidr": "10.42.0.12/32"}}]}]}),
    );
    check(
        &[default_deny_ingress(), clients, stranger],
        &[
            case(
                "first policy",
                "prod/web",
                Ingress,
                "10.42.0.11",
                80,
                Tcp,
                true,
            ),
            case(
                "second policy",
                "prod/web",
                Ingress,
                "10.42.0.12",
                80,
                Tcp,
                true,
            ),
            case("neither", "prod/web", Ingress, "10.42.0.20", 80, Tcp, false),
        ],
    );
    let open = policy("prod", "open", json!({"podSelector": {}, "ingress": [{}]}));
    check(
        &[default_deny_ingress(), open],
        &[case(
            "empty rule",
            "prod/web",
            Ingress,
            "192.0.2.1",
            1,
            Tcp,
            true,
        )],
    );
    let closed = policy("prod", "closed", json!({"podSelector": {}, "ingress": []}));
    check(
        &[closed],
        &[case(
            "no rule",
            "prod/web",
            Ingress,
            "10.42.0.11",
            80,
            Tcp,
            false,
        )],
    );
}

#[test]
fn changes_to_policies_pods_and_namespaces_apply_to_the_next_decision() {
    let mut view = cluster();
    let web = view.pod(&key("prod", "web")).expect("web").clone();
    let decide = |view: &ClusterView| {
        view.decide(&web, Ingress, ip("10.42.1.12"), 80, Tcp)
            .allowed()
    };
    view.set_policy(policy(
        "prod",
        "from-team-c",
        json!({"podSelector": {}, "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"team": "c"}}}]}]}),
    ));
    assert!(!decide(&view));
    // dev joins team c.
    let mut labels = model::Labels::new();
    labels.insert("team".into(), "c".into());
    view.set_namespace("dev", labels);
    assert!(decide(&view));
    // The worker leaves; another pod of other (no team) gets its IP.
    view.remove_pod(&key("dev", "worker"));
    view.set_pod(PodInfo::of(&pod(
        "other",
        "reuser",
        json!({}),
        "10.42.1.12",
        json!([]),
    )));
    assert!(!decide(&view));
    view.remove_policy("prod", "from-team-c");
    assert_eq!(
        view.decide(&web, Ingress, ip("10.42.1.12"), 80, Tcp),
        Decision::NotIsolated
    );
}

#[test]
fn a_running_pod_owns_an_ip_a_finished_pod_had() {
    let mut view = cluster();
    let mut done = pod(
        "dev",
        "job",
        json!({"app": "client"}),
        "10.42.0.12",
        json!([]),
    );
    done.status.as_mut().expect("status").phase = Some("Succeeded".into());
    view.set_pod(PodInfo::of(&done));
    assert_eq!(
        view.pod_at(ip("10.42.0.12")).map(|p| p.name.as_str()),
        Some("stranger")
    );
    view.remove_pod(&key("prod", "stranger"));
    assert_eq!(
        view.pod_at(ip("10.42.0.12")).map(|p| p.name.as_str()),
        Some("job")
    );
}

#[test]
fn a_pod_policy_answers_for_its_pod_from_the_current_view() {
    let policies = NetworkPolicies::fixed(cluster());
    let web = pod(
        "prod",
        "web",
        json!({"app": "web"}),
        "10.42.0.10",
        json!([]),
    );
    let for_web = policies.for_pod(&web, None);
    let client: std::net::SocketAddr = "10.42.0.11:40000".parse().expect("addr");
    assert!(for_web.allows_ingress(client, 8080, Tcp));
    write(&policies.view).set_policy(default_deny_ingress());
    assert!(!for_web.allows_ingress(client, 8080, Tcp));
    assert!(for_web.allows_egress("10.42.0.20:5432".parse().expect("addr"), Tcp));
    // A pod the informer has not seen yet is judged by what the agent knows of it.
    let new = pod(
        "prod",
        "new",
        json!({"app": "new"}),
        "10.42.0.30",
        json!([]),
    );
    let for_new = policies.for_pod(&new, None);
    assert!(!for_new.allows_ingress(client, 80, Tcp));
    assert!(for_new.allows_ingress("10.42.0.30:1".parse().expect("addr"), 80, Tcp));
}

fn key(namespace: &str, name: &str) -> model::PodKey {
    model::PodKey {
        namespace: namespace.into(),
        name: name.into(),
    }
}

#[test]
fn egress_to_a_cluster_ip_is_judged_by_every_endpoint_it_may_reach() {
    use crate::proxy::model::tests::{service, slice};
    let in_prod = |mut o: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta| {
        o.namespace = Some("prod".into());
        o
    };
    let mut view = cluster();
    for (name, ip, port, target_port, endpoints) in [
        ("db", "10.43.0.20", 5432, 5432, vec![("10.42.0.20", "n1")]),
        (
            "mixed",
            "10.43.0.30",
            80,
            8080,
            vec![("10.42.0.10", "n1"), ("10.42.0.20", "n1")],
        ),
        ("empty", "10.43.0.40", 80, 80, vec![]),
    ] {
        let mut svc = service(name, ip, port);
        svc.metadata = in_prod(svc.metadata);
        view.set_service(std::sync::Arc::new(svc));
        let mut s = slice(name, "x1", target_port, &endpoints);
        s.metadata = in_prod(s.metadata);
        view.set_slice(std::sync::Arc::new(s));
    }
    view.set_policy(policy(
        "prod",
        "to-db",
        json!({
            "podSelector": {"matchLabels": {"app": "client"}},
            "policyTypes": ["Egress"],
            "egress": [{"to": [{"podSelector": {"matchLabels": {"app": "db"}}}]}],
        }),
    ));
    let client = view.pod(&key("prod", "client")).expect("client").clone();
    let decide = |view: &ClusterView, to: &str, port: u16| {
        view.decide(&client, Egress, ip(to), port, Tcp).allowed()
    };
    assert!(decide(&view, "10.43.0.20", 5432), "the db Service");
    assert!(
        !decide(&view, "10.43.0.20", 5433),
        "a port the Service lacks"
    );
    assert!(
        !decide(&view, "10.43.0.30", 80),
        "a Service with a web endpoint too"
    );
    assert!(
        !decide(&view, "10.43.0.40", 80),
        "a Service without endpoints"
    );
    view.set_policy(policy(
        "prod",
        "to-services",
        json!({
            "podSelector": {"matchLabels": {"app": "client"}},
            "egress": [{"to": [{"ipBlock": {"cidr": "10.43.0.0/16"}}]}],
        }),
    ));
    assert!(
        decide(&view, "10.43.0.30", 80),
        "the cluster IPs by ipBlock"
    );
    view.remove_service(&crate::proxy::model::ServiceKey {
        namespace: "prod".into(),
        name: "db".into(),
    });
    view.remove_policy("prod", "to-services");
    assert!(
        !decide(&view, "10.43.0.20", 5432),
        "no Service there any more"
    );
}
