//! The rules of the `ip wasmkube` table, modelled on kube-proxy's nftables proxier
//! (`pkg/proxy/nftables/proxier.go`): what the fixed part and each Service port's
//! [`Fragment`] hold.
//!
//! ```text
//! nat-prerouting, nat-output (dstnat)  -> services
//! services:   ip daddr . meta l4proto . th dport vmap @service-ips
//!             ip daddr @nodeport-ips meta l4proto . th dport vmap @service-nodeports
//! service-H-ns/svc/tcp/http (no session affinity): one rule, no per-endpoint chain
//!             meta l4proto tcp dnat ip to numgen random mod N map
//!                 { 0 : 10.42.1.5 . 8080, 1 : 10.42.2.7 . 8080, ... }
//! service-H-ns/svc/tcp/http (sessionAffinity ClientIP):
//!             ip saddr @affinity-E goto endpoint-E ...
//!             numgen random mod N vmap { 0 : goto endpoint-E0, ... }
//! endpoint-H-ns/svc/tcp/http__10.42.1.5/8080 (session affinity only):
//!             ip saddr 10.42.1.5 jump mark-for-masquerade     (hairpin)
//!             update @affinity-E { ip saddr }
//!             meta l4proto tcp dnat to 10.42.1.5:8080
//! external-H-...: the NodePort entry: masquerade (policy Cluster) or the node's own
//!             endpoints only (policy Local)
//! filter-input/forward/output (dstnat-10): ct state new -> service-endpoints-check,
//!             nodeport-endpoints-check: a Service without endpoints is rejected
//!             (TCP reset, else ICMP port unreachable) from @no-endpoint-services and
//!             @no-endpoint-nodeports; cluster-ips-check rejects unserved ports of cluster IPs
//! nat-postrouting (srcnat) -> masquerading:
//!             ct status dnat ip saddr . ip daddr @hairpin-endpoints jump mark-for-masquerade
//!             masquerade what mark-for-masquerade marked
//! ```
//!
//! Services without session affinity have no chain per endpoint (kube-proxy's own has
//! one): nft 1.0.x reads every chain of the table before a batch that adds a rule or
//! touches an element, so an endpoint change costs about that read, and a chain per
//! endpoint made the table ten times larger (docs/benchmarks.md). Their hairpin traffic (a
//! pod reaching itself through its Service) is masqueraded in postrouting from the
//! `hairpin-endpoints` set of `endpoint . endpoint` pairs, the same packets an endpoint
//! chain's `ip saddr ENDPOINT jump mark-for-masquerade` marks.

use std::collections::HashSet;
use std::net::Ipv4Addr;

use nftables::expr::{
    BinaryOperation, CT, Expression, Fib, FibFlag, FibResult, Map, Meta, MetaKey, NamedExpression,
    NgMode, Numgen, Payload, PayloadField, SetItem, Verdict as NftVerdict,
};
use nftables::stmt::{
    JumpTarget, Mangle, Match, NAT, NATFamily, NATFlag, Operator, Reject, RejectType,
    Set as SetStmt, SetOp, Statement, VerdictMap,
};
use nftables::types::NfHook;
use sha2::{Digest as _, Sha256};

use super::ruleset::{ChainSpec, Fragment, Hook, Key, Rule, SetKind, Verdict};
use crate::proxy::model::{Categorized, Endpoint, Protocol, ServicePort};

/// The shared map: cluster IP . protocol . port -> the Service port's chain.
pub(crate) const SERVICE_IPS: &str = "service-ips";
/// The shared map: protocol . node port -> the Service port's external chain.
pub(crate) const SERVICE_NODEPORTS: &str = "service-nodeports";
/// Cluster IP . protocol . port of Services without usable endpoints -> reject or drop.
pub(crate) const NO_ENDPOINT_SERVICES: &str = "no-endpoint-services";
/// Protocol . node port of Services without usable endpoints -> reject or drop.
pub(crate) const NO_ENDPOINT_NODEPORTS: &str = "no-endpoint-nodeports";
/// Every cluster IP.
pub(crate) const CLUSTER_IPS: &str = "cluster-ips";
/// The node addresses NodePorts answer on.
pub(crate) const NODEPORT_IPS: &str = "nodeport-ips";
/// `endpoint . endpoint` of every endpoint of a Service without session affinity: DNATed
/// traffic from an endpoint to itself is masqueraded (hairpin).
pub(crate) const HAIRPIN_ENDPOINTS: &str = "hairpin-endpoints";

const SERVICES_CHAIN: &str = "services";
const MASQUERADING_CHAIN: &str = "masquerading";
const MARK_CHAIN: &str = "mark-for-masquerade";
const SERVICE_CHECK_CHAIN: &str = "service-endpoints-check";
const NODEPORT_CHECK_CHAIN: &str = "nodeport-endpoints-check";
const CLUSTER_IPS_CHECK_CHAIN: &str = "cluster-ips-check";
const REJECT_CHAIN: &str = "reject-chain";
/// The mark bit of packets to masquerade (kube-proxy's `--masquerade-bit` 14).
const MASQUERADE_MARK: u32 = 0x4000;

const DSTNAT: i32 = -100;
const SRCNAT: i32 = 100;

// --- expression helpers ---------------------------------------------------------------

fn payload(protocol: &'static str, field: &'static str) -> Expression<'static> {
    Expression::Named(NamedExpression::Payload(Payload::PayloadField(
        PayloadField {
            protocol: protocol.into(),
            field: field.into(),
        },
    )))
}

fn meta(key: MetaKey) -> Expression<'static> {
    Expression::Named(NamedExpression::Meta(Meta { key }))
}

fn text(s: impl Into<String>) -> Expression<'static> {
    Expression::String(s.into().into())
}

fn set_ref(name: &str) -> Expression<'static> {
    text(format!("@{name}"))
}

fn concat(items: Vec<Expression<'static>>) -> Expression<'static> {
    Expression::Named(NamedExpression::Concat(items))
}

fn matches(
    left: Expression<'static>,
    op: Operator,
    right: Expression<'static>,
) -> Statement<'static> {
    Statement::Match(Match { left, right, op })
}

fn jump(chain: &str) -> Statement<'static> {
    Statement::Jump(JumpTarget {
        target: chain.to_string().into(),
    })
}

fn goto(chain: &str) -> Statement<'static> {
    Statement::Goto(JumpTarget {
        target: chain.to_string().into(),
    })
}

/// `ct KEY VALUE` (`ct state new`, `ct status dnat`).
fn ct_is(key: &'static str, value: &'static str) -> Statement<'static> {
    matches(
        Expression::Named(NamedExpression::CT(CT {
            key: key.into(),
            family: None,
            dir: None,
        })),
        Operator::IN,
        text(value),
    )
}

fn ct_state_new() -> Statement<'static> {
    ct_is("state", "new")
}

fn fib(flag: FibFlag) -> Expression<'static> {
    Expression::Named(NamedExpression::Fib(Fib {
        result: FibResult::Type,
        flags: [flag].into_iter().collect(),
    }))
}

/// `ip daddr . meta l4proto . th dport`.
fn service_tuple() -> Expression<'static> {
    concat(vec![
        payload("ip", "daddr"),
        meta(MetaKey::L4proto),
        payload("th", "dport"),
    ])
}

/// `meta l4proto . th dport`.
fn port_tuple() -> Expression<'static> {
    concat(vec![meta(MetaKey::L4proto), payload("th", "dport")])
}

fn vmap(key: Expression<'static>, map: &str) -> Statement<'static> {
    Statement::VerdictMap(VerdictMap {
        key,
        data: set_ref(map),
    })
}

fn mark_or(
    op: fn(Expression<'static>, Expression<'static>) -> BinaryOperation<'static>,
) -> Statement<'static> {
    Statement::Mangle(Mangle {
        key: meta(MetaKey::Mark),
        value: Expression::BinaryOperation(Box::new(op(
            meta(MetaKey::Mark),
            Expression::Number(MASQUERADE_MARK),
        ))),
    })
}

fn base(nat: bool, hook: NfHook, priority: i32, rules: Vec<Rule>) -> ChainSpec {
    ChainSpec {
        hook: Some(Hook {
            nat,
            hook,
            priority,
        }),
        rules,
    }
}

fn chain(rules: Vec<Rule>) -> ChainSpec {
    ChainSpec { hook: None, rules }
}

// --- the fixed part -------------------------------------------------------------------

/// The base chains, the shared maps and sets, and the chains every Service shares.
/// NodePorts answer on `node_ips` (loopback addresses are left out, as kube-proxy leaves
/// out localhost NodePorts in nftables mode).
pub(crate) fn fixed(node_ips: &[Ipv4Addr]) -> Fragment {
    let mut f = Fragment::default();
    let check = |chain: &str| vec![ct_state_new(), jump(chain)];
    let chains = [
        (
            "nat-prerouting",
            base(
                true,
                NfHook::Prerouting,
                DSTNAT,
                vec![vec![jump(SERVICES_CHAIN)]],
            ),
        ),
        (
            "nat-output",
            base(
                true,
                NfHook::Output,
                DSTNAT,
                vec![vec![jump(SERVICES_CHAIN)]],
            ),
        ),
        (
            "nat-postrouting",
            base(
                true,
                NfHook::Postrouting,
                SRCNAT,
                vec![vec![jump(MASQUERADING_CHAIN)]],
            ),
        ),
        (
            "filter-input",
            base(
                false,
                NfHook::Input,
                DSTNAT - 10,
                vec![check(NODEPORT_CHECK_CHAIN), check(SERVICE_CHECK_CHAIN)],
            ),
        ),
        (
            "filter-forward",
            base(
                false,
                NfHook::Forward,
                DSTNAT - 10,
                vec![check(SERVICE_CHECK_CHAIN), check(CLUSTER_IPS_CHECK_CHAIN)],
            ),
        ),
        (
            "filter-output",
            base(
                false,
                NfHook::Output,
                DSTNAT - 10,
                vec![check(SERVICE_CHECK_CHAIN)],
            ),
        ),
        (
            "filter-output-post-dnat",
            base(
                false,
                NfHook::Output,
                DSTNAT + 10,
                vec![check(CLUSTER_IPS_CHECK_CHAIN)],
            ),
        ),
        (
            SERVICES_CHAIN,
            chain(vec![
                vec![vmap(service_tuple(), SERVICE_IPS)],
                vec![
                    matches(payload("ip", "daddr"), Operator::EQ, set_ref(NODEPORT_IPS)),
                    vmap(port_tuple(), SERVICE_NODEPORTS),
                ],
            ]),
        ),
        (
            MASQUERADING_CHAIN,
            chain(vec![
                // Hairpin: an endpoint reaching itself through a Service.
                vec![
                    ct_is("status", "dnat"),
                    matches(
                        concat(vec![payload("ip", "saddr"), payload("ip", "daddr")]),
                        Operator::EQ,
                        set_ref(HAIRPIN_ENDPOINTS),
                    ),
                    jump(MARK_CHAIN),
                ],
                vec![
                    matches(
                        Expression::BinaryOperation(Box::new(BinaryOperation::AND(
                            meta(MetaKey::Mark),
                            Expression::Number(MASQUERADE_MARK),
                        ))),
                        Operator::EQ,
                        Expression::Number(0),
                    ),
                    Statement::Return(None),
                ],
                vec![mark_or(BinaryOperation::XOR)],
                vec![Statement::Masquerade(Some(NAT {
                    addr: None,
                    family: None,
                    port: None,
                    flags: Some([NATFlag::FullyRandom].into_iter().collect()),
                }))],
            ]),
        ),
        (
            MARK_CHAIN,
            chain(vec![vec![mark_or(|a, b| BinaryOperation::OR(vec![a, b]))]]),
        ),
        (
            SERVICE_CHECK_CHAIN,
            chain(vec![vec![vmap(service_tuple(), NO_ENDPOINT_SERVICES)]]),
        ),
        (
            NODEPORT_CHECK_CHAIN,
            chain(vec![vec![
                matches(payload("ip", "daddr"), Operator::EQ, set_ref(NODEPORT_IPS)),
                vmap(port_tuple(), NO_ENDPOINT_NODEPORTS),
            ]]),
        ),
        (
            CLUSTER_IPS_CHECK_CHAIN,
            chain(vec![vec![
                matches(payload("ip", "daddr"), Operator::EQ, set_ref(CLUSTER_IPS)),
                Statement::Reject(None),
            ]]),
        ),
        (
            REJECT_CHAIN,
            chain(vec![
                vec![
                    matches(meta(MetaKey::L4proto), Operator::EQ, text("tcp")),
                    Statement::Reject(Some(Reject::new(Some(RejectType::TCPReset), None))),
                ],
                vec![Statement::Reject(None)],
            ]),
        ),
    ];
    for (name, spec) in chains {
        f.chains.insert(name.to_string(), spec);
    }
    for (name, kind) in [
        (SERVICE_IPS, SetKind::ServiceMap),
        (NO_ENDPOINT_SERVICES, SetKind::ServiceMap),
        (SERVICE_NODEPORTS, SetKind::PortMap),
        (NO_ENDPOINT_NODEPORTS, SetKind::PortMap),
        (CLUSTER_IPS, SetKind::Addresses),
        (NODEPORT_IPS, SetKind::Addresses),
        (HAIRPIN_ENDPOINTS, SetKind::AddressPairs),
    ] {
        f.sets.insert(name.to_string(), kind);
    }
    let mut seen = HashSet::new();
    for ip in node_ips.iter().filter(|ip| !ip.is_loopback()) {
        if seen.insert(*ip) {
            f.elements
                .insert((NODEPORT_IPS.to_string(), Key::Address(*ip)), None);
        }
    }
    f
}

// --- one Service port -----------------------------------------------------------------

/// kube-proxy's chain-name prefix: a short hash (so two names never collide after
/// truncation) before the readable part.
fn hashed(kind: &str, readable: &str, salt: &str) -> String {
    let digest = Sha256::digest(format!("{readable}{salt}").as_bytes());
    let hash: String = digest[..4].iter().map(|b| format!("{b:02X}")).collect();
    format!("{kind}-{hash}-{readable}")
}

fn endpoint_id(port: &ServicePort, e: &Endpoint) -> String {
    format!("{}__{}/{}", port.id(), e.ip, e.port)
}

/// The chain of an endpoint.
pub(crate) fn endpoint_chain(port: &ServicePort, e: &Endpoint) -> String {
    hashed("endpoint", &endpoint_id(port, e), "")
}

fn affinity_set(port: &ServicePort, e: &Endpoint, timeout: u32) -> String {
    hashed("affinity", &endpoint_id(port, e), &timeout.to_string())
}

/// The chain that balances the Service port's cluster-wide endpoints.
pub(crate) fn service_chain(port: &ServicePort) -> String {
    hashed("service", &port.id(), "")
}

fn local_chain(port: &ServicePort) -> String {
    hashed("local", &port.id(), "")
}

fn external_chain(port: &ServicePort) -> String {
    hashed("external", &port.id(), "")
}

fn index(i: usize) -> Expression<'static> {
    Expression::Number(u32::try_from(i).unwrap_or(u32::MAX))
}

fn numgen(n: usize) -> Expression<'static> {
    Expression::Named(NamedExpression::Numgen(Numgen {
        mode: NgMode::Random,
        ng_mod: u32::try_from(n).unwrap_or(u32::MAX),
        offset: None,
    }))
}

/// `meta l4proto P`: port NAT needs the protocol.
fn l4proto_is(port: &ServicePort) -> Statement<'static> {
    matches(
        meta(MetaKey::L4proto),
        Operator::EQ,
        text(port.protocol.nft_name()),
    )
}

/// A chain that picks one of `endpoints` at random: with session affinity an affinity
/// entry first, then a jump to an endpoint's chain; without, one rule that DNATs straight
/// to `ip . port` from a map keyed by numgen.
fn balance(port: &ServicePort, endpoints: &[Endpoint]) -> ChainSpec {
    let Some(timeout) = port.affinity_timeout else {
        let targets = endpoints
            .iter()
            .enumerate()
            .map(|(i, e)| {
                SetItem::Mapping(
                    index(i),
                    concat(vec![
                        text(e.ip.to_string()),
                        Expression::Number(u32::from(e.port)),
                    ]),
                )
            })
            .collect();
        return chain(vec![vec![
            l4proto_is(port),
            Statement::DNAT(Some(NAT {
                addr: Some(Expression::Named(NamedExpression::Map(Box::new(Map {
                    key: numgen(endpoints.len()),
                    data: Expression::Named(NamedExpression::Set(targets)),
                })))),
                family: Some(NATFamily::IP),
                port: None,
                flags: None,
            })),
        ]]);
    };
    let mut rules = Vec::new();
    for e in endpoints {
        rules.push(vec![
            matches(
                payload("ip", "saddr"),
                Operator::EQ,
                set_ref(&affinity_set(port, e, timeout)),
            ),
            goto(&endpoint_chain(port, e)),
        ]);
    }
    let targets = endpoints
        .iter()
        .enumerate()
        .map(|(i, e)| {
            SetItem::Mapping(
                index(i),
                Expression::Verdict(NftVerdict::Goto(JumpTarget {
                    target: endpoint_chain(port, e).into(),
                })),
            )
        })
        .collect();
    rules.push(vec![Statement::VerdictMap(VerdictMap {
        key: numgen(endpoints.len()),
        data: Expression::Named(NamedExpression::Set(targets)),
    })]);
    chain(rules)
}

fn endpoint(port: &ServicePort, e: &Endpoint) -> ChainSpec {
    let mut rules = vec![vec![
        matches(payload("ip", "saddr"), Operator::EQ, text(e.ip.to_string())),
        jump(MARK_CHAIN),
    ]];
    if let Some(timeout) = port.affinity_timeout {
        rules.push(vec![Statement::Set(SetStmt {
            op: SetOp::Update,
            elem: payload("ip", "saddr"),
            set: format!("@{}", affinity_set(port, e, timeout)).into(),
        })]);
    }
    rules.push(vec![
        l4proto_is(port),
        Statement::DNAT(Some(NAT {
            addr: Some(text(e.ip.to_string())),
            family: None,
            port: Some(Expression::Number(u32::from(e.port))),
            flags: None,
        })),
    ]);
    chain(rules)
}

fn no_endpoints(any: bool) -> Verdict {
    if any {
        // Endpoints exist but none may take this traffic (a Local policy on a node
        // without one): dropped, as kube-proxy does.
        Verdict::Drop
    } else {
        Verdict::Goto(REJECT_CHAIN.to_string())
    }
}

/// The chains, sets and map elements of one Service port with its endpoints.
pub(crate) fn service_port(port: &ServicePort, endpoints: &Categorized) -> Fragment {
    let mut f = Fragment::default();
    let proto: Protocol = port.protocol;
    f.elements.insert(
        (CLUSTER_IPS.to_string(), Key::Address(port.cluster_ip)),
        None,
    );
    let cluster = service_chain(port);
    let local = local_chain(port);
    let mut used: Vec<&Endpoint> = Vec::new();
    if !endpoints.cluster.is_empty() {
        f.chains
            .insert(cluster.clone(), balance(port, &endpoints.cluster));
        used.extend(&endpoints.cluster);
    }
    let wants_local = port.internal_local || (port.external_local && port.node_port.is_some());
    if wants_local && !endpoints.local.is_empty() {
        f.chains
            .insert(local.clone(), balance(port, &endpoints.local));
        used.extend(&endpoints.local);
    }
    for e in used {
        let Some(timeout) = port.affinity_timeout else {
            f.elements
                .insert((HAIRPIN_ENDPOINTS.to_string(), Key::Pair(e.ip, e.ip)), None);
            continue;
        };
        if let std::collections::btree_map::Entry::Vacant(free) =
            f.chains.entry(endpoint_chain(port, e))
        {
            free.insert(endpoint(port, e));
            f.sets.insert(
                affinity_set(port, e, timeout),
                SetKind::Affinity { timeout },
            );
        }
    }

    let service_key = Key::Service(port.cluster_ip, proto, port.port);
    let (internal, internal_chain) = if port.internal_local {
        (&endpoints.local, &local)
    } else {
        (&endpoints.cluster, &cluster)
    };
    if internal.is_empty() {
        f.elements.insert(
            (NO_ENDPOINT_SERVICES.to_string(), service_key),
            Some(no_endpoints(endpoints.any)),
        );
    } else {
        f.elements.insert(
            (SERVICE_IPS.to_string(), service_key),
            Some(Verdict::Goto(internal_chain.clone())),
        );
    }

    if let Some(node_port) = port.node_port {
        let key = Key::Port(proto, node_port);
        if !endpoints.any {
            f.elements.insert(
                (NO_ENDPOINT_NODEPORTS.to_string(), key),
                Some(no_endpoints(false)),
            );
        } else {
            let external = external_chain(port);
            let mut rules = Vec::new();
            if port.external_local {
                // Traffic the node sends itself may use any endpoint (masqueraded, as
                // kube-proxy's "short-circuit" of locally originated traffic).
                if !endpoints.cluster.is_empty() {
                    let local_source = || matches(fib(FibFlag::Saddr), Operator::EQ, text("local"));
                    rules.push(vec![local_source(), jump(MARK_CHAIN)]);
                    rules.push(vec![local_source(), goto(&cluster)]);
                }
                if endpoints.local.is_empty() {
                    rules.push(vec![Statement::Drop(None)]);
                } else {
                    rules.push(vec![goto(&local)]);
                }
            } else {
                rules.push(vec![jump(MARK_CHAIN)]);
                if endpoints.cluster.is_empty() {
                    rules.push(vec![Statement::Drop(None)]);
                } else {
                    rules.push(vec![goto(&cluster)]);
                }
            }
            f.chains.insert(external.clone(), chain(rules));
            f.elements.insert(
                (SERVICE_NODEPORTS.to_string(), key),
                Some(Verdict::Goto(external)),
            );
        }
    }
    f
}
