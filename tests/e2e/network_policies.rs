//! NetworkPolicy (networking.k8s.io/v1) through the real kubectl: served, printed
//! (`NAME POD-SELECTOR AGE`), described and validated as Kubernetes does (422 naming the
//! field, nothing stored); and who may read policies cluster-wide (the agents' cluster-wide
//! identity, not a node's own).
//!
//! The CIDRs of the API tests are API data only: those clusters have no node and nothing
//! dials them. The enforcement test sends wasm-to-wasm traffic to pod and cluster IPs inside
//! the network-namespace lab only.

use anyhow::Result;
use serde_json::{Value, json};

use crate::harness::TestCluster;

fn policy(name: &str, spec: Value) -> Value {
    json!({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": name},
        "spec": spec,
    })
}

/// `kubectl create -f -` of `object` must fail with a 422 whose message names `field` and
/// says `detail`; afterwards the object does not exist.
async fn refused(cluster: &TestCluster, object: &Value, field: &str, detail: &str) -> Result<()> {
    let out = cluster
        .kubectl_with_stdin(&["create", "-f", "-"], Some(&object.to_string()))
        .await?;
    let name = object["metadata"]["name"].as_str().unwrap_or_default();
    assert!(!out.status.success(), "{name} was accepted: {}", out.stdout);
    assert!(
        out.stderr
            .contains(&format!("The NetworkPolicy \"{name}\" is invalid"))
            && out.stderr.contains(&format!("{field}: "))
            && out.stderr.contains(detail),
        "{name}: expected a 422 naming {field} ({detail}), got:\n{}",
        out.stderr
    );
    let get = cluster.kubectl(&["get", "networkpolicy", name]).await?;
    assert!(
        !get.status.success() && get.stderr.contains("NotFound"),
        "a refused policy must not be stored: {}{}",
        get.stdout,
        get.stderr
    );
    Ok(())
}

#[tokio::test]
async fn network_policies_are_served_printed_and_validated_as_kubernetes_does() -> Result<()> {
    let cluster = TestCluster::builder().without_controllers().start().await?;

    let resources = cluster.kubectl_ok(&["api-resources"]).await?;
    let row: Vec<&str> = resources
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|cols| cols.first() == Some(&"networkpolicies"))
        .unwrap_or_default();
    assert_eq!(
        row,
        [
            "networkpolicies",
            "netpol",
            "networking.k8s.io/v1",
            "true",
            "NetworkPolicy"
        ],
        "{resources}"
    );
    let explained = cluster
        .kubectl_ok(&["explain", "networkpolicy.spec.ingress.ports.endPort"])
        .await?;
    assert!(explained.contains("integer"), "{explained}");

    // Applied with kubectl's client-side validation against /openapi/v3.
    let allow = policy(
        "allow-client",
        json!({
            "podSelector": {"matchLabels": {"app": "web"}},
            "ingress": [{
                "from": [{"podSelector": {"matchLabels": {"app": "client"}}},
                         {"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.1.0.0/16"]}}],
                "ports": [{"port": 8080}, {"port": 9000, "endPort": 9100}]
            }],
        }),
    );
    cluster
        .kubectl_ok_stdin(&["apply", "-f", "-"], &allow.to_string())
        .await?;
    let deny = policy(
        "default-deny",
        json!({"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}),
    );
    cluster
        .kubectl_ok_stdin(&["apply", "-f", "-"], &deny.to_string())
        .await?;

    let out = cluster.kubectl_ok(&["get", "netpol"]).await?;
    let mut lines = out
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>());
    assert_eq!(
        lines.next().unwrap_or_default(),
        ["NAME", "POD-SELECTOR", "AGE"],
        "{out}"
    );
    let rows: Vec<Vec<&str>> = lines.collect();
    assert_eq!(rows.len(), 2, "{out}");
    assert_eq!(rows[0][..2], ["allow-client", "app=web"], "{out}");
    assert_eq!(rows[1][..2], ["default-deny", "<none>"], "{out}");

    // Defaults as Kubernetes sets them: policyTypes, and TCP for ports.
    let stored = cluster
        .kubectl_json(&["get", "networkpolicy", "allow-client"])
        .await?;
    assert_eq!(stored["spec"]["policyTypes"], json!(["Ingress"]));
    assert_eq!(stored["spec"]["ingress"][0]["ports"][0]["protocol"], "TCP");
    assert_eq!(stored["metadata"]["generation"], 1);
    let yaml = cluster
        .kubectl_ok(&["get", "networkpolicy", "allow-client", "-o", "yaml"])
        .await?;
    assert!(yaml.contains("endPort: 9100"), "{yaml}");

    let described = cluster
        .kubectl_ok(&["describe", "networkpolicy", "allow-client"])
        .await?;
    for expected in [
        "Name:         allow-client",
        "PodSelector:     app=web",
        "Allowing ingress traffic:",
        "To Port: 8080/TCP",
        "PodSelector: app=client",
        "IPBlock:",
        "CIDR: 10.0.0.0/8",
        "Except: 10.1.0.0/16",
        "Not affecting egress traffic",
        "Policy Types: Ingress",
    ] {
        assert!(
            described.contains(expected),
            "{expected:?} in:\n{described}"
        );
    }

    // A spec change bumps the generation.
    cluster
        .kubectl_ok(&[
            "patch",
            "networkpolicy",
            "allow-client",
            "--type=merge",
            "-p",
            r#"{"spec":{"podSelector":{"matchLabels":{"app":"api"}}}}"#,
        ])
        .await?;
    let patched = cluster
        .kubectl_json(&["get", "networkpolicy", "allow-client"])
        .await?;
    assert_eq!(patched["metadata"]["generation"], 2);

    // Every rule of ValidateNetworkPolicySpec, each a 422 naming its field.
    let ingress_port = |port: Value| json!({"podSelector": {}, "ingress": [{"ports": [port]}]});
    refused(
        &cluster,
        &policy("port-range", ingress_port(json!({"port": 70000}))),
        "spec.ingress[0].ports[0].port",
        "Invalid value: 70000: must be between 1 and 65535, inclusive",
    )
    .await?;
    refused(
        &cluster,
        &policy(
            "end-below",
            ingress_port(json!({"port": 8080, "endPort": 80})),
        ),
        "spec.ingress[0].ports[0].endPort",
        "must be greater than or equal to `port`",
    )
    .await?;
    refused(
        &cluster,
        &policy(
            "end-named",
            ingress_port(json!({"port": "http", "endPort": 90})),
        ),
        "spec.ingress[0].ports[0].endPort",
        "may not be specified when `port` is non-numeric",
    )
    .await?;
    refused(
        &cluster,
        &policy("bad-name", ingress_port(json!({"port": "not_a_name"}))),
        "spec.ingress[0].ports[0].port",
        "Invalid value: \"not_a_name\"",
    )
    .await?;
    refused(
        &cluster,
        &policy(
            "icmp",
            ingress_port(json!({"port": 80, "protocol": "ICMP"})),
        ),
        "spec.ingress[0].ports[0].protocol",
        "Unsupported value: \"ICMP\"",
    )
    .await?;
    refused(
        &cluster,
        &policy(
            "bad-cidr",
            json!({"podSelector": {}, "egress": [{"to": [{"ipBlock": {"cidr": "10.0.0.0/33"}}]}]}),
        ),
        "spec.egress[0].to[0].ipBlock.cidr",
        "must be a valid CIDR value",
    )
    .await?;
    refused(
        &cluster,
        &policy(
            "except-outside",
            json!({"podSelector": {}, "egress": [{"to": [{"ipBlock": {"cidr": "10.0.0.0/16", "except": ["10.1.0.0/24"]}}]}]}),
        ),
        "spec.egress[0].to[0].ipBlock.except[0]",
        "must be a strict subset of `cidr`",
    )
    .await?;
    refused(
        &cluster,
        &policy(
            "two-peers",
            json!({"podSelector": {}, "ingress": [{"from": [{"ipBlock": {"cidr": "10.0.0.0/8"}, "podSelector": {}}]}]}),
        ),
        "spec.ingress[0].from[0]",
        "may not specify both ipBlock and another peer",
    )
    .await?;
    refused(
        &cluster,
        &policy(
            "no-peer",
            json!({"podSelector": {}, "ingress": [{"from": [{}]}]}),
        ),
        "spec.ingress[0].from[0]",
        "must specify a peer",
    )
    .await?;
    refused(
        &cluster,
        &policy(
            "bad-type",
            json!({"podSelector": {}, "policyTypes": ["Inbound"]}),
        ),
        "spec.policyTypes[0]",
        "Unsupported value: \"Inbound\"",
    )
    .await?;
    refused(
        &cluster,
        &policy(
            "bad-selector",
            json!({"podSelector": {"matchExpressions": [{"key": "app", "operator": "In"}]}}),
        ),
        "spec.podSelector.matchExpressions[0].values",
        "must be specified when `operator` is 'In' or 'NotIn'",
    )
    .await?;
    Ok(())
}

/// NetworkPolicy enforcement watches every pod, namespace and policy as the agents'
/// cluster-wide identity (`system:kube-proxy`, ClusterRole `wasmkube:network-policy`); a
/// node's own credentials still list only its own pods.
#[tokio::test]
async fn policy_enforcement_reads_cluster_wide_as_kube_proxy_not_as_a_node() -> Result<()> {
    let cluster = TestCluster::builder().without_controllers().start().await?;
    let can_i = |verb: &'static str, resource: &'static str, user: &'static [&'static str]| {
        let cluster = &cluster;
        async move {
            let mut args = vec!["auth", "can-i", verb, resource, "--all-namespaces"];
            args.extend_from_slice(user);
            let out = cluster.kubectl(&args).await?;
            anyhow::Ok(out.stdout.trim().to_string())
        }
    };
    const KUBE_PROXY: &[&str] = &["--as", "system:kube-proxy"];
    const NODE: &[&str] = &["--as", "system:node:node-a", "--as-group", "system:nodes"];
    for resource in ["pods", "namespaces", "networkpolicies.networking.k8s.io"] {
        for verb in ["list", "watch"] {
            assert_eq!(
                can_i(verb, resource, KUBE_PROXY).await?,
                "yes",
                "{verb} {resource}"
            );
        }
        assert!(
            can_i("create", resource, KUBE_PROXY)
                .await?
                .starts_with("no"),
            "create {resource}"
        );
    }
    for resource in ["pods", "networkpolicies.networking.k8s.io"] {
        assert!(
            can_i("list", resource, NODE).await?.starts_with("no"),
            "a node lists {resource}"
        );
    }
    Ok(())
}

/// A policy changes what wasm pods may connect to, in a one-node lab (routed, nftables):
/// default-deny ingress blocks a wasm client's call to http-hello (through its Service), an
/// allow rule by pod label opens exactly that path (the labelled client gets through, an
/// unlabelled one does not), and an egress deny blocks the labelled client's own call.
#[tokio::test]
async fn network_policies_govern_wasm_to_wasm_connections() -> Result<()> {
    use std::time::Duration;

    use crate::harness::{NodeSpec, lab_tests_opted_out};
    const TEST: &str = "network_policies_govern_wasm_to_wasm_connections";
    const DEADLINE: Duration = Duration::from_secs(120);
    if lab_tests_opted_out(TEST) {
        return Ok(());
    }
    if wasmkube_samples::built(TEST, "oci/net-client/index.json")?.is_none() {
        return Ok(());
    }
    let node = NodeSpec::named("netpol-0")
        .arg("--pod-network")
        .arg("routed")
        .arg("--proxy-mode=nftables");
    let Some(cluster) = TestCluster::builder()
        .embedded_agent(node)
        .in_netns_lab()
        .start_with_samples(TEST)
        .await?
    else {
        return Ok(());
    };
    let server = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "http-hello", "labels": {"app": "http-hello"}},
        "spec": {"runtimeClassName": "wasmtime", "containers": [{
            "name": "http-hello", "image": "wasmkube.local/samples/http-hello:v1",
            "ports": [{"name": "http", "containerPort": 8080}]}]},
    });
    let service = json!({
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "http-hello"},
        "spec": {"selector": {"app": "http-hello"},
                 "ports": [{"name": "http", "port": 80, "targetPort": "http"}]},
    });
    for object in [&server, &service] {
        cluster
            .kubectl_ok_stdin(&["apply", "-f", "-"], &object.to_string())
            .await?;
    }
    cluster
        .wait_pod("http-hello", "Running", DEADLINE, |p| {
            p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
        })
        .await?;
    let cluster_ip = cluster
        .kubectl_ok(&[
            "get",
            "service",
            "http-hello",
            "-o",
            "jsonpath={.spec.clusterIP}",
        ])
        .await?;
    cluster
        .host(0)?
        .run_ok("ip", &["route", "add", "10.43.0.0/16", "dev", "eth0"])
        .await?;
    // A net-client pod (labelled `role` when given) calling the Service's cluster IP; its
    // log once it has finished.
    let call = |name: String, role: Option<&'static str>| {
        let cluster = &cluster;
        let cluster_ip = cluster_ip.clone();
        async move {
            let name = name.as_str();
            let labels = role.map_or(json!({}), |r| json!({"role": r}));
            let pod = json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": name, "labels": labels},
                "spec": {"runtimeClassName": "wasmtime", "restartPolicy": "Never",
                         "containers": [{"name": "net-client",
                                         "image": "wasmkube.local/samples/net-client:v1",
                                         "args": [cluster_ip, "80", "/netpol"]}]},
            });
            cluster
                .kubectl_ok_stdin(&["apply", "-f", "-"], &pod.to_string())
                .await?;
            cluster
                .wait_pod(name, "Succeeded or Failed", DEADLINE, |p| {
                    matches!(
                        p.status.as_ref().and_then(|s| s.phase.as_deref()),
                        Some("Succeeded" | "Failed")
                    )
                })
                .await?;
            let logs = cluster.kubectl_ok(&["logs", name]).await?;
            eprintln!("{TEST}: {name}:\n{logs}");
            anyhow::Ok(logs)
        }
    };
    let answered = |logs: &str| logs.contains("-> 200");
    // The agent applies a policy once its informer has it: call (a new pod each time) until
    // the answer is `expected`, within the deadline.
    let until = |prefix: &'static str, role: Option<&'static str>, expected: bool| {
        let call = &call;
        async move {
            let started = tokio::time::Instant::now();
            for attempt in 0.. {
                let logs = call(format!("{prefix}-{attempt}"), role).await?;
                if answered(&logs) == expected {
                    return anyhow::Ok(logs);
                }
                anyhow::ensure!(
                    started.elapsed() < DEADLINE,
                    "{prefix}: still {} after {attempt} calls: {logs}",
                    if expected { "refused" } else { "answered" }
                );
            }
            unreachable!("the loop returns")
        }
    };

    // No policy: the call goes through.
    until("open", None, true).await?;

    let deny = policy(
        "default-deny",
        json!({"podSelector": {}, "policyTypes": ["Ingress"]}),
    );
    cluster
        .kubectl_ok_stdin(&["apply", "-f", "-"], &deny.to_string())
        .await?;
    until("denied", Some("client"), false).await?;

    let allow = policy(
        "allow-clients",
        json!({"podSelector": {"matchLabels": {"app": "http-hello"}},
               "ingress": [{"from": [{"podSelector": {"matchLabels": {"role": "client"}}}],
                            "ports": [{"port": "http"}]}]}),
    );
    cluster
        .kubectl_ok_stdin(&["apply", "-f", "-"], &allow.to_string())
        .await?;
    until("labelled", Some("client"), true).await?;
    // The same policies, seen already: exactly that path is open.
    let unlabelled = call("unlabelled".to_string(), None).await?;
    assert!(!answered(&unlabelled), "no label: {unlabelled}");

    let egress = policy(
        "client-egress-deny",
        json!({"podSelector": {"matchLabels": {"role": "client"}}, "policyTypes": ["Egress"]}),
    );
    cluster
        .kubectl_ok_stdin(&["apply", "-f", "-"], &egress.to_string())
        .await?;
    let blocked = until("egress", Some("client"), false).await?;
    assert!(
        blocked.contains("destination IP prohibited") && blocked.contains("access-denied"),
        "the guest is told it may not connect: {blocked}"
    );
    Ok(())
}
