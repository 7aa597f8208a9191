//! The rule model's tests: Services and slices -> fragments -> transactions -> nft JSON,
//! and (as root) the same transactions applied by the real `nft` inside a network
//! namespace the test makes and deletes, never in the machine's own.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::Arc;

use serde_json::Value;

use super::rules::{
    self, CLUSTER_IPS, HAIRPIN_ENDPOINTS, NO_ENDPOINT_SERVICES, SERVICE_IPS, SERVICE_NODEPORTS,
};
use super::ruleset::{Element, Key, Transaction, Verdict};
use super::*;
use crate::proxy::model::tests::{service, slice};
use crate::proxy::model::{Protocol, ServiceKey};

fn key(name: &str) -> ServiceKey {
    ServiceKey {
        namespace: "default".into(),
        name: name.into(),
    }
}

fn state(
    svc: k8s_openapi::api::core::v1::Service,
    slices: Vec<k8s_openapi::api::discovery::v1::EndpointSlice>,
) -> Option<ServiceState> {
    Some(ServiceState {
        service: Some(Arc::new(svc)),
        slices: slices
            .into_iter()
            .map(|s| (s.metadata.name.clone().unwrap_or_default(), Arc::new(s)))
            .collect(),
    })
}

fn commands(tx: Transaction) -> Vec<Value> {
    tx.into_json()["nftables"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// The verbs and object kinds of `cmds`, e.g. `add rule`, `delete element`.
fn verbs(cmds: &[Value]) -> Vec<String> {
    cmds.iter()
        .filter_map(|c| {
            let (verb, body) = c.as_object()?.iter().next()?;
            let (kind, _) = body.as_object()?.iter().next()?;
            Some(format!("{verb} {kind}"))
        })
        .collect()
}

fn proxier() -> NftProxier {
    NftProxier::new(Nft::default(), "n1", &[Ipv4Addr::new(10, 0, 0, 1)])
}

/// The commands that take fragment `old` to `new`, their plain-set elements settled with
/// `owners`.
fn diff(
    old: Option<&Fragment>,
    new: Option<&Fragment>,
    owners: &mut BTreeMap<Element, usize>,
) -> Vec<Value> {
    let mut tx = Transaction::default();
    tx.fragment(old, new, owners);
    tx.settle(owners);
    commands(tx)
}

fn hairpin_pairs(f: &Fragment) -> Vec<Ipv4Addr> {
    f.elements
        .keys()
        .filter(|(set, _)| set == HAIRPIN_ENDPOINTS)
        .map(|(_, key)| match key {
            Key::Pair(a, b) => {
                assert_eq!(a, b, "an endpoint . itself");
                *a
            }
            other => panic!("{other:?}"),
        })
        .collect()
}

#[test]
fn a_service_with_ready_endpoints_balances_over_them_with_numgen() {
    let p = proxier();
    let s = service("web", "10.43.0.10", 80);
    let sl = slice(
        "web",
        "a",
        8080,
        &[("10.42.1.2", "n1"), ("10.42.2.2", "n2")],
    );
    let st = state(s, vec![sl]);
    let frags = p.fragments(&key("web"), st.as_ref());
    let f = &frags["default/web/tcp/http"];
    let (name, verdict) = f
        .elements
        .iter()
        .find(|((set, _), _)| set == SERVICE_IPS)
        .map(|((_, k), v)| (k, v.clone()))
        .expect("a service-ips element");
    assert_eq!(
        *name,
        Key::Service(Ipv4Addr::new(10, 43, 0, 10), Protocol::Tcp, 80)
    );
    let Some(Verdict::Goto(chain)) = verdict else {
        panic!("{verdict:?}")
    };
    assert!(
        chain.starts_with("service-") && chain.ends_with("-default/web/tcp/http"),
        "{chain}"
    );
    // The service chain, the Service port's only chain: one rule that DNATs to an
    // address . port picked by numgen.
    assert_eq!(f.chains.keys().collect::<Vec<_>>(), vec![&chain]);
    let rules = &f.chains[&chain].rules;
    assert_eq!(rules.len(), 1);
    let text = serde_json::to_value(rules).expect("json").to_string();
    assert!(
        text.contains(r#""numgen":{"mod":2,"mode":"random"}"#),
        "{text}"
    );
    assert!(
        text.contains(r#"[0,{"concat":["10.42.1.2",8080]}],[1,{"concat":["10.42.2.2",8080]}]"#)
            && text.contains(r#""family":"ip""#),
        "{text}"
    );
    // Hairpin: each endpoint . itself.
    assert_eq!(
        hairpin_pairs(f),
        vec![Ipv4Addr::new(10, 42, 1, 2), Ipv4Addr::new(10, 42, 2, 2)]
    );
    assert!(
        !f.elements
            .keys()
            .any(|(set, _)| set == NO_ENDPOINT_SERVICES)
    );
}

#[test]
fn a_service_without_endpoints_is_rejected_and_local_policies_use_local_endpoints() {
    let p = proxier();
    let none = p.fragments(
        &key("empty"),
        state(service("empty", "10.43.0.11", 80), vec![]).as_ref(),
    );
    let f = &none["default/empty/tcp/http"];
    assert_eq!(
        f.elements.get(&(
            NO_ENDPOINT_SERVICES.to_string(),
            Key::Service(Ipv4Addr::new(10, 43, 0, 11), Protocol::Tcp, 80)
        )),
        Some(&Some(Verdict::Goto("reject-chain".into())))
    );
    assert!(f.chains.is_empty());

    let mut s = service("np", "10.43.0.12", 80);
    let spec = s.spec.as_mut().expect("spec");
    spec.type_ = Some("NodePort".into());
    spec.external_traffic_policy = Some("Local".into());
    spec.ports.as_mut().expect("ports")[0].node_port = Some(30080);
    // Only a remote endpoint: node n1 drops NodePort traffic from outside.
    let remote = slice("np", "a", 8080, &[("10.42.2.2", "n2")]);
    let frags = p.fragments(&key("np"), state(s.clone(), vec![remote]).as_ref());
    let f = &frags["default/np/tcp/http"];
    let (_, external) = f
        .elements
        .iter()
        .find(|((set, _), _)| set == SERVICE_NODEPORTS)
        .expect("a nodeport element");
    let Some(Verdict::Goto(external)) = external else {
        panic!()
    };
    let rules = serde_json::to_value(&f.chains[external].rules)
        .expect("json")
        .to_string();
    assert!(rules.ends_with(r#"[{"drop":null}]]"#), "{rules}");
    assert!(!f.chains.keys().any(|c| c.starts_with("local-")));
    // With a local endpoint the node balances over it alone.
    let both = slice("np", "a", 8080, &[("10.42.1.2", "n1"), ("10.42.2.2", "n2")]);
    let frags = p.fragments(&key("np"), state(s, vec![both]).as_ref());
    let f = &frags["default/np/tcp/http"];
    let local = f
        .chains
        .keys()
        .find(|c| c.starts_with("local-"))
        .expect("a local chain");
    let text = serde_json::to_value(&f.chains[local].rules)
        .expect("json")
        .to_string();
    assert!(text.contains(r#""mod":1"#), "{text}");
}

#[test]
fn session_affinity_adds_a_timeout_set_per_endpoint() {
    let p = proxier();
    let mut s = service("sticky", "10.43.0.13", 80);
    let spec = s.spec.as_mut().expect("spec");
    spec.session_affinity = Some("ClientIP".into());
    spec.session_affinity_config = Some(k8s_openapi::api::core::v1::SessionAffinityConfig {
        client_ip: Some(k8s_openapi::api::core::v1::ClientIPConfig {
            timeout_seconds: Some(60),
        }),
    });
    let sl = slice(
        "sticky",
        "a",
        8080,
        &[("10.42.1.2", "n1"), ("10.42.2.2", "n2")],
    );
    let frags = p.fragments(&key("sticky"), state(s, vec![sl]).as_ref());
    let f = &frags["default/sticky/tcp/http"];
    assert_eq!(f.sets.len(), 2);
    assert!(
        f.sets
            .values()
            .all(|k| *k == ruleset::SetKind::Affinity { timeout: 60 })
    );
    // The endpoints keep their chains (each updates its affinity set), hairpin included.
    assert_eq!(
        f.chains
            .keys()
            .filter(|c| c.starts_with("endpoint-"))
            .count(),
        2
    );
    assert!(hairpin_pairs(f).is_empty());
    let cmds = diff(None, Some(f), &mut BTreeMap::new());
    let sets: Vec<_> = cmds
        .iter()
        .filter(|c| c["add"]["set"].is_object())
        .collect();
    assert_eq!(sets.len(), 2);
    assert_eq!(sets[0]["add"]["set"]["timeout"], 60);
    assert_eq!(
        sets[0]["add"]["set"]["flags"],
        serde_json::json!(["timeout"])
    );
    let text = Value::Array(cmds).to_string();
    assert!(
        text.contains(
            r#""set":{"elem":{"payload":{"field":"saddr","protocol":"ip"}},"op":"update""#
        ),
        "{text}"
    );
}

#[test]
fn one_endpoint_change_rewrites_only_that_services_chain_and_hairpin_pairs() {
    let mut p = proxier();
    let mut changed = BTreeMap::new();
    for i in 0..3u8 {
        let name = format!("s{i}");
        let ip = format!("10.43.0.{}", 20 + i);
        changed.insert(
            key(&name),
            state(
                service(&name, &ip, 80),
                vec![slice(
                    &name,
                    "a",
                    8080,
                    &[("10.42.1.2", "n1"), (&format!("10.42.2.{}", 2 + i), "n2")],
                )],
            ),
        );
    }
    let mut tx = Transaction::default();
    for (k, st) in &changed {
        let frags = p.fragments(k, st.as_ref());
        p.ports.insert(k.clone(), frags.keys().cloned().collect());
        for (id, f) in frags {
            p.ruleset.replace(&id, Some(f), &mut tx);
        }
    }
    p.ruleset.settle(&mut tx);
    let first = commands(tx);
    // 10.42.1.2 serves all three: its hairpin pair is added once.
    let pairs: Vec<_> = first
        .iter()
        .filter(|c| c["add"]["element"]["name"] == HAIRPIN_ENDPOINTS)
        .map(|c| c["add"]["element"]["elem"][0]["concat"][0].clone())
        .collect();
    assert_eq!(
        pairs,
        ["10.42.1.2", "10.42.2.2", "10.42.2.3", "10.42.2.4"],
        "{first:?}"
    );

    let after_state = state(
        service("s1", "10.43.0.21", 80),
        vec![slice(
            "s1",
            "a",
            8080,
            &[("10.42.1.2", "n1"), ("10.42.3.3", "n3")],
        )],
    );
    let after = p.fragments(&key("s1"), after_state.as_ref())["default/s1/tcp/http"].clone();
    let mut tx = Transaction::default();
    p.ruleset
        .replace("default/s1/tcp/http", Some(after.clone()), &mut tx);
    p.ruleset.settle(&mut tx);
    let cmds = commands(tx);
    let v = verbs(&cmds);
    // The service chain (declared, in case it went) flushed and rewritten (one rule); the
    // gone endpoint's hairpin pair deleted, the new one's added; no other chain.
    assert_eq!(
        v,
        [
            "delete element",
            "add chain",
            "flush chain",
            "add rule",
            "add element"
        ],
        "{cmds:?}"
    );
    assert_eq!(
        cmds[0]["delete"]["element"]["elem"][0]["concat"][0],
        "10.42.2.3"
    );
    assert_eq!(
        cmds[4]["add"]["element"]["elem"][0]["concat"][0],
        "10.42.3.3"
    );
    let text = Value::Array(cmds.clone()).to_string();
    assert!(
        !text.contains("s0") && !text.contains("s2"),
        "only s1: {text}"
    );
    // Nothing changed: nothing to do.
    let mut tx = Transaction::default();
    p.ruleset
        .replace("default/s1/tcp/http", Some(after), &mut tx);
    p.ruleset.settle(&mut tx);
    assert!(tx.is_empty());

    // s0 and s2 go: 10.42.1.2 keeps its pair while s1 still has it.
    let mut tx = Transaction::default();
    for id in ["default/s0/tcp/http", "default/s2/tcp/http"] {
        p.ruleset.replace(id, None, &mut tx);
    }
    p.ruleset.settle(&mut tx);
    let cmds = commands(tx);
    let deleted: Vec<_> = cmds
        .iter()
        .filter(|c| c["delete"]["element"]["name"] == HAIRPIN_ENDPOINTS)
        .map(|c| c["delete"]["element"]["elem"][0]["concat"][0].clone())
        .collect();
    assert_eq!(deleted, ["10.42.2.2", "10.42.2.4"], "{cmds:?}");
}

#[test]
fn a_set_element_shared_by_fragments_is_deleted_with_its_last_owner_only() {
    let p = proxier();
    let mut s = service("two", "10.43.0.30", 80);
    let mut second = s
        .spec
        .as_ref()
        .expect("spec")
        .ports
        .as_ref()
        .expect("ports")[0]
        .clone();
    second.name = Some("metrics".into());
    second.port = 9090;
    s.spec
        .as_mut()
        .expect("spec")
        .ports
        .as_mut()
        .expect("ports")
        .push(second);
    let frags = p.fragments(&key("two"), state(s, vec![]).as_ref());
    assert_eq!(frags.len(), 2);
    let (a, b) = (
        &frags["default/two/tcp/http"],
        &frags["default/two/tcp/metrics"],
    );
    let cluster_ip: Element = (
        CLUSTER_IPS.to_string(),
        Key::Address(Ipv4Addr::new(10, 43, 0, 30)),
    );
    assert!(a.elements.contains_key(&cluster_ip) && b.elements.contains_key(&cluster_ip));
    let mut owners = BTreeMap::new();
    let added = diff(None, Some(a), &mut owners);
    assert!(
        added
            .iter()
            .any(|c| c["add"]["element"]["name"] == CLUSTER_IPS)
    );
    let again = diff(None, Some(b), &mut owners);
    assert!(
        !again
            .iter()
            .any(|c| c["add"]["element"]["name"] == CLUSTER_IPS)
    );
    // One port goes: the cluster IP stays; the other: it goes, once.
    let one = diff(Some(a), None, &mut owners);
    assert!(
        !one.iter()
            .any(|c| c["delete"]["element"]["name"] == CLUSTER_IPS),
        "{one:?}"
    );
    let both = diff(Some(b), None, &mut owners);
    assert_eq!(
        both.iter()
            .filter(|c| c["delete"]["element"]["name"] == CLUSTER_IPS)
            .count(),
        1,
        "{both:?}"
    );
    assert!(owners.is_empty());
}

#[test]
fn a_full_sync_flushes_what_it_rewrites_and_deletes_what_it_does_not_own() {
    let p = proxier();
    let mut existing = TableObjects {
        exists: true,
        ..TableObjects::default()
    };
    existing.chains.insert("services".into());
    existing
        .chains
        .insert("service-DEADBEEF-default/gone/tcp/http".into());
    existing.maps.insert(SERVICE_IPS.into());
    existing
        .sets
        .insert("affinity-DEADBEEF-default/gone/tcp/http__10.42.1.2/80".into());
    let cmds = commands(Transaction::full(p.ruleset(), &existing));
    let v = verbs(&cmds);
    assert_eq!(v[0], "add table");
    assert!(!v.contains(&"flush table".to_string()) && !v.contains(&"delete table".to_string()));
    let flushed: Vec<_> = cmds
        .iter()
        .filter_map(|c| c["flush"]["chain"]["name"].as_str())
        .collect();
    assert!(
        flushed.contains(&"services"),
        "an existing chain is flushed before its rules: {flushed:?}"
    );
    assert!(
        !flushed.contains(&"nat-output"),
        "a new chain needs no flush"
    );
    assert!(
        cmds.iter()
            .any(|c| c["flush"]["map"]["name"] == SERVICE_IPS)
    );
    assert!(
        cmds.iter()
            .any(|c| c["delete"]["chain"]["name"] == "service-DEADBEEF-default/gone/tcp/http")
    );
    assert!(cmds.iter().any(|c| {
        c["delete"]["set"]["name"]
            .as_str()
            .is_some_and(|n| n.starts_with("affinity-DEADBEEF"))
    }));
    let listing = serde_json::json!({"nftables": [
        {"metainfo": {"version": "1.0.6"}},
        {"table": {"family": "ip", "name": "wasmkube", "handle": 1}},
        {"chain": {"family": "ip", "table": "wasmkube", "name": "services", "handle": 2}},
        {"map": {"family": "ip", "table": "wasmkube", "name": "service-ips", "type": ["ipv4_addr", "inet_proto", "inet_service"], "map": "verdict"}},
        {"set": {"family": "ip", "table": "wasmkube", "name": "cluster-ips", "type": "ipv4_addr"}},
    ]});
    let objects = TableObjects::from_listing(&listing);
    assert!(objects.exists);
    assert!(objects.chains.contains("services"));
    assert!(objects.maps.contains("service-ips") && objects.sets.contains("cluster-ips"));
    let _ = rules::service_chain;
}

// --- applied by the real nft, inside a network namespace ---------------------------------

/// A network namespace made for one test, deleted when dropped.
struct Netns(String);

impl Netns {
    fn new(tag: &str) -> Netns {
        let name = format!("wk-proxy-{tag}-{}", std::process::id());
        let status = std::process::Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .unwrap_or_else(|e| panic!("ip netns add: {e} (this test needs root and iproute2)"));
        assert!(
            status.success(),
            "ip netns add {name} failed: this test needs root"
        );
        Netns(name)
    }

    fn nft(&self) -> Nft {
        Nft::with_prefix(
            "nsenter",
            vec![format!("--net=/var/run/netns/{}", self.0), "nft".into()],
        )
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &self.0])
            .status();
    }
}

/// Every rule of the table, as `nft -j list table` prints it (handles left out).
async fn rules_of(nft: &Nft) -> Vec<String> {
    let listing = nft.list_table().await.expect("list").expect("a table");
    let mut rules: Vec<String> = listing["nftables"]
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|o| {
            let mut rule = o.get("rule")?.clone();
            rule.as_object_mut()?.remove("handle");
            Some(rule.to_string())
        })
        .collect();
    rules.sort();
    rules
}

async fn element_count(nft: &Nft, map: &str) -> usize {
    let listing = nft.list_table().await.expect("list").expect("a table");
    listing["nftables"]
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|o| o.get("map").or_else(|| o.get("set")))
        .filter(|m| m["name"] == map)
        .map(|m| m["elem"].as_array().map_or(0, Vec::len))
        .sum()
}

#[tokio::test]
async fn nft_applies_full_and_incremental_syncs_and_a_restart_duplicates_nothing() {
    let ns = Netns::new("apply");
    let mut p = NftProxier::new(ns.nft(), "n1", &[Ipv4Addr::new(10, 0, 0, 1)]);
    let mut changed = BTreeMap::new();
    for i in 0..20u8 {
        let name = format!("s{i}");
        let mut s = service(&name, &format!("10.43.1.{}", i + 1), 80);
        if i % 2 == 0 {
            let spec = s.spec.as_mut().expect("spec");
            spec.type_ = Some("NodePort".into());
            spec.ports.as_mut().expect("ports")[0].node_port = Some(30000 + i32::from(i));
            spec.session_affinity = Some("ClientIP".into());
        }
        let eps: Vec<(String, &str)> = (0..3)
            .map(|e| (format!("10.42.{e}.{}", i + 1), "n1"))
            .collect();
        let eps: Vec<(&str, &str)> = eps.iter().map(|(a, n)| (a.as_str(), *n)).collect();
        let slices = if i == 19 {
            vec![]
        } else {
            vec![slice(&name, "a", 8080, &eps)]
        };
        changed.insert(key(&name), state(s, slices));
    }
    let stats = p.sync(&changed, false).await.expect("first sync");
    assert!(stats.full, "the first sync is full");
    assert_eq!(element_count(&ns.nft(), SERVICE_IPS).await, 19);
    assert_eq!(element_count(&ns.nft(), NO_ENDPOINT_SERVICES).await, 1);
    // The 9 Services without affinity with endpoints: 3 hairpin pairs each.
    assert_eq!(element_count(&ns.nft(), HAIRPIN_ENDPOINTS).await, 27);
    let first = rules_of(&ns.nft()).await;

    // One endpoint changes: an incremental transaction of a few commands.
    let one = BTreeMap::from([(
        key("s3"),
        state(
            service("s3", "10.43.1.4", 80),
            vec![slice(
                "s3",
                "a",
                8080,
                &[("10.42.0.4", "n1"), ("10.42.9.9", "n1")],
            )],
        ),
    )]);
    let stats = p.sync(&one, false).await.expect("incremental");
    assert!(!stats.full);
    assert!(stats.commands < 15, "{stats:?}");
    assert_eq!(element_count(&ns.nft(), HAIRPIN_ENDPOINTS).await, 26);
    // A Service goes away, one gains its endpoints.
    let gone = BTreeMap::from([
        (key("s5"), None),
        (
            key("s19"),
            state(
                service("s19", "10.43.1.20", 80),
                vec![slice("s19", "a", 8080, &[("10.42.0.20", "n1")])],
            ),
        ),
    ]);
    p.sync(&gone, false).await.expect("delete");
    assert_eq!(element_count(&ns.nft(), SERVICE_IPS).await, 19);
    assert_eq!(element_count(&ns.nft(), NO_ENDPOINT_SERVICES).await, 0);
    assert_eq!(element_count(&ns.nft(), HAIRPIN_ENDPOINTS).await, 24);
    let after = rules_of(&ns.nft()).await;
    assert_ne!(first, after);

    // A restarted proxier (empty memory) syncs fully over the same table: the same rules,
    // each once.
    let mut restarted = NftProxier::new(ns.nft(), "n1", &[Ipv4Addr::new(10, 0, 0, 1)]);
    let mut all = changed.clone();
    all.remove(&key("s5"));
    all.extend(one);
    all.insert(key("s19"), gone[&key("s19")].clone());
    restarted.sync(&all, false).await.expect("restart");
    assert_eq!(
        rules_of(&ns.nft()).await,
        after,
        "a restart keeps exactly one copy of each rule"
    );

    // A rule deleted behind the proxy's back comes back with the next full sync.
    let tampered = std::process::Command::new("nsenter")
        .args([
            &format!("--net=/var/run/netns/{}", ns.0),
            "nft",
            "flush",
            "chain",
            "ip",
            "wasmkube",
            "services",
        ])
        .status()
        .expect("nft");
    assert!(tampered.success());
    assert_ne!(rules_of(&ns.nft()).await, after);
    restarted
        .sync(&BTreeMap::new(), true)
        .await
        .expect("full resync");
    assert_eq!(rules_of(&ns.nft()).await, after);

    assert!(super::super::cleanup(&ns.nft()).await.expect("cleanup"));
    assert!(ns.nft().list_table().await.expect("list").is_none());
    assert!(
        !super::super::cleanup(&ns.nft())
            .await
            .expect("cleanup again")
    );
}

fn run_ok(program: &str, args: &[&str]) {
    let out = std::process::Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A process killed when dropped.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `curl` of `url` inside `ns`: whether it got an HTTP answer within 3 s.
fn curl_in(ns: &Netns, url: &str) -> bool {
    std::process::Command::new("nsenter")
        .args([
            &format!("--net=/var/run/netns/{}", ns.0),
            "curl",
            "-sS",
            "-o",
            "/dev/null",
            "--max-time",
            "3",
            url,
        ])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Hairpin: a pod behind the node (its own namespace, a veth to the node, the node its
/// gateway) reaches itself through its Service. The node DNATs the connection back out the
/// interface it came in on; unless the node masquerades it, the pod drops the packet as
/// one from its own address, so the connection works only with the `hairpin-endpoints`
/// pair in place.
#[tokio::test]
async fn nft_a_pod_reaches_itself_through_its_service() {
    let node = Netns::new("hpnode");
    let pod = Netns::new("hppod");
    let net = |ns: &Netns| format!("--net=/var/run/netns/{}", ns.0);
    run_ok(
        "ip",
        &[
            "-n", &node.0, "link", "add", "pod0", "type", "veth", "peer", "name", "eth0", "netns",
            &pod.0,
        ],
    );
    for (ns, dev, addr) in [
        (&node, "pod0", "10.42.0.1/24"),
        (&pod, "eth0", "10.42.0.5/24"),
    ] {
        run_ok("ip", &["-n", &ns.0, "addr", "add", addr, "dev", dev]);
        run_ok("ip", &["-n", &ns.0, "link", "set", dev, "up"]);
        run_ok("ip", &["-n", &ns.0, "link", "set", "lo", "up"]);
    }
    run_ok(
        "ip",
        &["-n", &pod.0, "route", "add", "default", "via", "10.42.0.1"],
    );
    for setting in [
        "net.ipv4.ip_forward=1",
        "net.ipv4.conf.all.send_redirects=0",
        "net.ipv4.conf.pod0.send_redirects=0",
    ] {
        run_ok("nsenter", &[&net(&node), "sysctl", "-q", "-w", setting]);
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let _server = Child(
        std::process::Command::new("nsenter")
            .args([
                &net(&pod),
                "python3",
                "-m",
                "http.server",
                "--bind",
                "10.42.0.5",
            ])
            .arg("8080")
            .arg("--directory")
            .arg(dir.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("python3 -m http.server (tests/run installs python3)"),
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !curl_in(&pod, "http://10.42.0.5:8080/") {
        assert!(
            std::time::Instant::now() < deadline,
            "the pod's HTTP server never answered"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }

    let mut p = NftProxier::new(node.nft(), "n1", &[Ipv4Addr::new(10, 42, 0, 1)]);
    let changed = BTreeMap::from([(
        key("self"),
        state(
            service("self", "10.43.0.50", 80),
            vec![slice("self", "a", 8080, &[("10.42.0.5", "n1")])],
        ),
    )]);
    p.sync(&changed, false).await.expect("sync");
    assert_eq!(element_count(&node.nft(), HAIRPIN_ENDPOINTS).await, 1);
    assert!(
        curl_in(&pod, "http://10.43.0.50/"),
        "the pod reaches itself through its Service"
    );
    // Without its hairpin pair the same connection fails: the masquerade is what made it.
    run_ok(
        "nsenter",
        &[
            &net(&node),
            "nft",
            "flush",
            "set",
            "ip",
            "wasmkube",
            HAIRPIN_ENDPOINTS,
        ],
    );
    assert!(!curl_in(&pod, "http://10.43.0.50/"));
}
