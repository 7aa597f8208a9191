//! The rule model's tests: Services and slices -> fragments -> transactions -> nft JSON,
//! and (as root) the same transactions applied by the real `nft` inside a network
//! namespace the test makes and deletes, never in the machine's own.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::Arc;

use serde_json::Value;

use super::rules::{self, NO_ENDPOINT_SERVICES, SERVICE_IPS, SERVICE_NODEPORTS};
use super::ruleset::{Key, Transaction, Verdict};
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

fn fragment_of(p: &NftProxier, name: &str) -> Fragment {
    p.ruleset.services[&format!("default/{name}/tcp/http")].clone()
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
    // The service chain: one numgen vmap over two endpoint chains.
    let json = serde_json::to_value(&f.chains[&chain].rules).expect("json");
    let text = json.to_string();
    assert!(
        text.contains(r#""numgen":{"mod":2,"mode":"random"}"#),
        "{text}"
    );
    let endpoints: Vec<_> = f
        .chains
        .keys()
        .filter(|c| c.starts_with("endpoint-"))
        .collect();
    assert_eq!(endpoints.len(), 2);
    let ep = serde_json::to_value(&f.chains[endpoints[0]].rules)
        .expect("json")
        .to_string();
    assert!(
        ep.contains(r#""dnat":{"addr":"10.42."#) && ep.contains(r#""port":8080"#),
        "{ep}"
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
    let mut tx = Transaction::default();
    tx.fragment(None, Some(f));
    let cmds = commands(tx);
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
fn one_endpoint_change_rewrites_only_that_services_chains_and_elements() {
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
                    &[("10.42.1.2", "n1"), ("10.42.2.2", "n2")],
                )],
            ),
        );
    }
    for (k, st) in &changed {
        let frags = p.fragments(k, st.as_ref());
        p.ports.insert(k.clone(), frags.keys().cloned().collect());
        p.ruleset.services.extend(frags);
    }
    let before = fragment_of(&p, "s1");
    let after_state = state(
        service("s1", "10.43.0.21", 80),
        vec![slice(
            "s1",
            "a",
            8080,
            &[("10.42.1.2", "n1"), ("10.42.3.3", "n3")],
        )],
    );
    let after = &p.fragments(&key("s1"), after_state.as_ref())["default/s1/tcp/http"];
    let mut tx = Transaction::default();
    tx.fragment(Some(&before), Some(after));
    let cmds = commands(tx);
    let v = verbs(&cmds);
    // The new endpoint's chain, the service chain flushed and rewritten, the gone
    // endpoint's chain flushed and deleted; the map element stays.
    assert_eq!(v.iter().filter(|x| *x == "add chain").count(), 2, "{v:?}");
    assert_eq!(v.iter().filter(|x| *x == "flush chain").count(), 2, "{v:?}");
    assert_eq!(
        v.iter().filter(|x| *x == "delete chain").count(),
        1,
        "{v:?}"
    );
    assert!(!v.iter().any(|x| x.contains("element")), "{v:?}");
    assert!(
        !v.iter().any(|x| x.contains("table")),
        "never the table: {v:?}"
    );
    let text = Value::Array(cmds.clone()).to_string();
    assert!(
        !text.contains("s0") && !text.contains("s2"),
        "only s1: {text}"
    );
    // Deletions come after everything that referred to the chain was rewritten.
    let flush_service = v.iter().position(|x| x == "flush chain").expect("flush");
    let delete = v.iter().position(|x| x == "delete chain").expect("delete");
    assert!(flush_service < delete);
    // Nothing changed: nothing to do.
    let mut tx = Transaction::default();
    tx.fragment(Some(after), Some(after));
    assert!(tx.is_empty());
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
