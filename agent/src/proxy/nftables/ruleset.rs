//! The desired state of the `ip wasmkube` table and the one nft transaction that gets the
//! kernel there.
//!
//! A [`Ruleset`] is a fixed part (base chains, the shared maps and sets, their static rules)
//! and one [`Fragment`] per Service port (its chains, its affinity sets, its elements in the
//! shared maps). A sync rebuilds only the fragments of the Services that changed and
//! [`Transaction::fragment`] turns old-versus-new into commands: a chain whose rules changed
//! is flushed and rewritten, map elements are added and deleted one by one, chains and sets
//! no fragment has any more are deleted, as kube-proxy's nftables proxier does. An element
//! of a plain set may belong to several fragments (a cluster IP to each port of its
//! Service, an endpoint's hairpin pair to each Service it serves): the ruleset counts its
//! owners, and it is added when the first appears and deleted when the last goes. A full sync
//! ([`Transaction::full`], at start and periodically) rewrites every chain and map element
//! it owns (each flushed first, so a restart never duplicates a rule) and deletes the
//! objects of the table no fragment owns (found by listing the table), never flushing the
//! table as a whole; affinity sets are kept, so clients keep their endpoint.
//!
//! Commands are nft's JSON API (`libnftables-json(5)`): rules are built from the `nftables`
//! crate's statement types; map declarations are written as JSON values because the crate's
//! `SetType` has no `verdict` (needed by verdict maps).

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use nftables::schema::{Chain, FlushObject, NfCmd, NfListObject, Rule as NftRule};
use nftables::stmt::Statement;
use nftables::types::{NfChainType, NfFamily, NfHook};
use serde_json::{Value, json};

use crate::proxy::model::Protocol;

/// The proxy's table (family `ip`).
pub(crate) const TABLE: &str = "wasmkube";

/// One rule: its statements.
pub(crate) type Rule = Vec<Statement<'static>>;

/// A base chain's hook.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Hook {
    /// `nat` or `filter`.
    pub(crate) nat: bool,
    /// The hook.
    pub(crate) hook: NfHook,
    /// The priority.
    pub(crate) priority: i32,
}

/// A chain: its hook (base chains) and rules.
#[derive(Debug, Clone, PartialEq, Default)]
pub(crate) struct ChainSpec {
    /// `Some` for a base chain.
    pub(crate) hook: Option<Hook>,
    /// The rules, in order.
    pub(crate) rules: Vec<Rule>,
}

/// The type of a named set or map.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SetKind {
    /// A set of IPv4 addresses.
    Addresses,
    /// A set of `ipv4_addr . ipv4_addr` pairs.
    AddressPairs,
    /// A set of client addresses with a timeout (session affinity), filled by the rules.
    Affinity {
        /// Seconds an entry lives after its last use.
        timeout: u32,
    },
    /// `ipv4_addr . inet_proto . inet_service : verdict`.
    ServiceMap,
    /// `inet_proto . inet_service : verdict`.
    PortMap,
}

/// A key of a set or map element.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Key {
    /// An address.
    Address(Ipv4Addr),
    /// address . address.
    Pair(Ipv4Addr, Ipv4Addr),
    /// address . protocol . port.
    Service(Ipv4Addr, Protocol, u16),
    /// protocol . port.
    Port(Protocol, u16),
}

/// The verdict a map element maps to.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Verdict {
    /// `goto CHAIN`.
    Goto(String),
    /// `drop`.
    Drop,
}

/// The chains, sets and elements one Service port (or the fixed part) owns.
#[derive(Debug, Clone, PartialEq, Default)]
pub(crate) struct Fragment {
    /// Chains by name.
    pub(crate) chains: BTreeMap<String, ChainSpec>,
    /// Sets and maps by name.
    pub(crate) sets: BTreeMap<String, SetKind>,
    /// Elements: (set or map, key) -> the verdict (`None` in a set).
    pub(crate) elements: BTreeMap<(String, Key), Option<Verdict>>,
}

/// A set element: (set, key).
pub(crate) type Element = (String, Key);

/// The whole table: the fixed part and every Service port's fragment.
#[derive(Debug, Clone, PartialEq, Default)]
pub(crate) struct Ruleset {
    /// Base chains, shared maps and sets.
    pub(crate) fixed: Fragment,
    /// By Service port id (`namespace/name/protocol/port`).
    services: BTreeMap<String, Fragment>,
    /// How many Service port fragments own each element of a plain set (one without a
    /// verdict).
    owners: BTreeMap<Element, usize>,
}

impl Ruleset {
    /// A ruleset of the fixed part alone.
    pub(crate) fn new(fixed: Fragment) -> Ruleset {
        Ruleset {
            fixed,
            ..Ruleset::default()
        }
    }

    /// Makes `new` the fragment of Service port `id` (`None`: it has none any more) and adds
    /// the commands that take the kernel there to `tx`.
    pub(crate) fn replace(&mut self, id: &str, new: Option<Fragment>, tx: &mut Transaction) {
        let old = match &new {
            Some(new) if self.services.get(id) == Some(new) => return,
            Some(new) => self.services.insert(id.to_string(), new.clone()),
            None => self.services.remove(id),
        };
        tx.fragment(old.as_ref(), new.as_ref(), &mut self.owners);
    }

    /// Settles `tx`'s plain-set elements once every changed fragment is in
    /// ([`Transaction::settle`]).
    pub(crate) fn settle(&self, tx: &mut Transaction) {
        tx.settle(&self.owners);
    }

    fn fragments(&self) -> impl Iterator<Item = &Fragment> {
        std::iter::once(&self.fixed).chain(self.services.values())
    }

    /// How many chains it has.
    pub(crate) fn chains(&self) -> usize {
        self.fragments().map(|f| f.chains.len()).sum()
    }
}

/// The commands of one nft transaction, kept in the order the kernel needs: element
/// deletions first, then declarations, chains and flushes, rules and new elements, and the
/// deletions of chains and sets last (once nothing refers to them).
#[derive(Debug, Default)]
pub(crate) struct Transaction {
    /// Plain-set elements whose owners changed, and whether the kernel had them before.
    shared: BTreeMap<Element, bool>,
    element_deletes: Vec<Value>,
    declarations: Vec<Value>,
    flushes: Vec<Value>,
    rules: Vec<Value>,
    element_adds: Vec<Value>,
    stale_flushes: Vec<Value>,
    chain_deletes: Vec<Value>,
    set_deletes: Vec<Value>,
}

fn to_value(cmd: NfCmd<'_>) -> Value {
    // The crate's types always serialize.
    serde_json::to_value(cmd).unwrap_or(Value::Null)
}

fn chain_object(name: &str, hook: Option<Hook>) -> NfListObject<'static> {
    NfListObject::Chain(Chain {
        family: NfFamily::IP,
        table: TABLE.into(),
        name: name.to_string().into(),
        _type: hook.map(|h| {
            if h.nat {
                NfChainType::NAT
            } else {
                NfChainType::Filter
            }
        }),
        hook: hook.map(|h| h.hook),
        prio: hook.map(|h| h.priority),
        ..Chain::default()
    })
}

fn chain_ref(name: &str) -> Chain<'static> {
    Chain {
        family: NfFamily::IP,
        table: TABLE.into(),
        name: name.to_string().into(),
        ..Chain::default()
    }
}

fn set_declaration(name: &str, kind: SetKind) -> Value {
    let (what, body) = match kind {
        SetKind::Addresses => ("set", json!({"type": "ipv4_addr"})),
        SetKind::AddressPairs => ("set", json!({"type": ["ipv4_addr", "ipv4_addr"]})),
        SetKind::Affinity { timeout } => (
            "set",
            // nft 1.0.6's JSON parser knows no `dynamic` flag; nft adds it itself to a set
            // that an `update` statement fills.
            json!({"type": "ipv4_addr", "flags": ["timeout"], "timeout": timeout}),
        ),
        SetKind::ServiceMap => (
            "map",
            json!({"type": ["ipv4_addr", "inet_proto", "inet_service"], "map": "verdict"}),
        ),
        SetKind::PortMap => (
            "map",
            json!({"type": ["inet_proto", "inet_service"], "map": "verdict"}),
        ),
    };
    let mut object = json!({"family": "ip", "table": TABLE, "name": name});
    if let (Some(object), Some(body)) = (object.as_object_mut(), body.as_object()) {
        object.extend(body.clone());
    }
    json!({"add": {what: object}})
}

fn set_word(kind: SetKind) -> &'static str {
    match kind {
        SetKind::Addresses | SetKind::AddressPairs | SetKind::Affinity { .. } => "set",
        SetKind::ServiceMap | SetKind::PortMap => "map",
    }
}

fn set_command(verb: &str, name: &str, kind: SetKind) -> Value {
    json!({verb: {set_word(kind): {"family": "ip", "table": TABLE, "name": name}}})
}

/// A key as nft JSON.
pub(crate) fn key_value(key: &Key) -> Value {
    match key {
        Key::Address(ip) => json!(ip.to_string()),
        Key::Pair(a, b) => json!({"concat": [a.to_string(), b.to_string()]}),
        Key::Service(ip, proto, port) => {
            json!({"concat": [ip.to_string(), proto.nft_name(), port]})
        }
        Key::Port(proto, port) => json!({"concat": [proto.nft_name(), port]}),
    }
}

fn verdict_value(verdict: &Verdict) -> Value {
    match verdict {
        Verdict::Goto(chain) => json!({"goto": {"target": chain}}),
        Verdict::Drop => json!({"drop": null}),
    }
}

fn element(verb: &str, set: &str, key: &Key, verdict: Option<&Verdict>) -> Value {
    let elem = match verdict {
        Some(v) => json!([[key_value(key), verdict_value(v)]]),
        None => json!([key_value(key)]),
    };
    json!({verb: {"element": {"family": "ip", "table": TABLE, "name": set, "elem": elem}}})
}

impl Transaction {
    fn add_chain(&mut self, name: &str, spec: &ChainSpec, flush: bool) {
        self.declarations
            .push(to_value(NfCmd::Add(chain_object(name, spec.hook))));
        if flush {
            self.flushes
                .push(to_value(NfCmd::Flush(FlushObject::Chain(chain_ref(name)))));
        }
        self.add_rules(name, spec);
    }

    fn add_rules(&mut self, name: &str, spec: &ChainSpec) {
        for rule in &spec.rules {
            self.rules
                .push(to_value(NfCmd::Add(NfListObject::Rule(NftRule {
                    family: NfFamily::IP,
                    table: TABLE.into(),
                    chain: name.to_string().into(),
                    expr: rule.clone().into(),
                    handle: None,
                    index: None,
                    comment: None,
                }))));
        }
    }

    fn delete_chain(&mut self, name: &str) {
        self.stale_flushes
            .push(to_value(NfCmd::Flush(FlushObject::Chain(chain_ref(name)))));
        self.chain_deletes
            .push(to_value(NfCmd::Delete(NfListObject::Chain(chain_ref(
                name,
            )))));
    }

    /// The commands that turn fragment `old` (as the kernel has it) into `new`; `None` is a
    /// fragment that does not exist. `owners` counts the fragments that own each plain-set
    /// element; its elements are added or deleted by [`Transaction::into_json`] once the
    /// transaction knows every fragment that changed.
    pub(crate) fn fragment(
        &mut self,
        old: Option<&Fragment>,
        new: Option<&Fragment>,
        owners: &mut BTreeMap<Element, usize>,
    ) {
        let empty = Fragment::default();
        let old = old.unwrap_or(&empty);
        let new = new.unwrap_or(&empty);
        // A set's name says its type (an affinity set's names its timeout), so a name is
        // never declared twice with different types.
        for (name, kind) in &new.sets {
            if !old.sets.contains_key(name) {
                self.declarations.push(set_declaration(name, *kind));
            }
        }
        for (name, kind) in &old.sets {
            if !new.sets.contains_key(name) {
                self.set_deletes.push(set_command("delete", name, *kind));
            }
        }
        for (name, spec) in &new.chains {
            match old.chains.get(name) {
                None => self.add_chain(name, spec, false),
                Some(before) if before != spec => self.add_chain(name, spec, true),
                Some(_) => {}
            }
        }
        for name in old.chains.keys() {
            if !new.chains.contains_key(name) {
                self.delete_chain(name);
            }
        }
        for (elem, verdict) in &old.elements {
            match new.elements.get(elem) {
                Some(now) if now == verdict => {}
                _ if verdict.is_none() => {
                    let count = owners.entry(elem.clone()).or_default();
                    self.shared.entry(elem.clone()).or_insert(*count > 0);
                    *count = count.saturating_sub(1);
                    if *count == 0 {
                        owners.remove(elem);
                    }
                }
                _ => self
                    .element_deletes
                    .push(element("delete", &elem.0, &elem.1, None)),
            }
        }
        for (elem, verdict) in &new.elements {
            if old.elements.get(elem) == Some(verdict) {
                continue;
            }
            if verdict.is_none() {
                let count = owners.entry(elem.clone()).or_default();
                self.shared.entry(elem.clone()).or_insert(*count > 0);
                *count += 1;
            } else {
                self.element_adds
                    .push(element("add", &elem.0, &elem.1, verdict.as_ref()));
            }
        }
    }

    /// Adds the plain-set elements that gained their first owner in this transaction and
    /// deletes those that lost their last (`owners` as [`Transaction::fragment`] left it).
    pub(crate) fn settle(&mut self, owners: &BTreeMap<Element, usize>) {
        for ((set, key), before) in std::mem::take(&mut self.shared) {
            match (before, owners.contains_key(&(set.clone(), key))) {
                (true, false) => self
                    .element_deletes
                    .push(element("delete", &set, &key, None)),
                (false, true) => self.element_adds.push(element("add", &set, &key, None)),
                _ => {}
            }
        }
    }

    /// A full sync: the table, every set and chain of `desired` (chains flushed and
    /// rewritten, maps and address sets flushed and refilled, affinity sets kept), and the
    /// deletion of the chains, sets and maps in `existing` (what the kernel's table has) that
    /// `desired` does not own.
    pub(crate) fn full(desired: &Ruleset, existing: &TableObjects) -> Transaction {
        let mut tx = Transaction::default();
        tx.declarations
            .push(json!({"add": {"table": {"family": "ip", "name": TABLE}}}));
        let mut chains = BTreeSet::new();
        let mut sets = BTreeSet::new();
        // A plain-set element owned by several fragments is added once.
        let mut elements = BTreeMap::new();
        for fragment in desired.fragments() {
            for (name, kind) in &fragment.sets {
                sets.insert(name.as_str());
                let affinity = matches!(kind, SetKind::Affinity { .. });
                if existing.has_set(name) && !affinity {
                    tx.flushes.push(set_command("flush", name, *kind));
                }
                if !existing.has_set(name) || !affinity {
                    tx.declarations.push(set_declaration(name, *kind));
                }
            }
            for (name, spec) in &fragment.chains {
                chains.insert(name.as_str());
                tx.add_chain(name, spec, existing.chains.contains(name));
            }
            elements.extend(&fragment.elements);
        }
        for ((set, key), verdict) in elements {
            tx.element_adds
                .push(element("add", set, key, verdict.as_ref()));
        }
        for name in &existing.chains {
            if !chains.contains(name.as_str()) {
                tx.delete_chain(name);
            }
        }
        for (name, word) in existing
            .sets
            .iter()
            .zip(std::iter::repeat("set"))
            .chain(existing.maps.iter().zip(std::iter::repeat("map")))
        {
            if !sets.contains(name.as_str()) {
                tx.set_deletes.push(
                    json!({"delete": {word: {"family": "ip", "table": TABLE, "name": name}}}),
                );
            }
        }
        tx
    }

    /// Whether there is nothing to do.
    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How many commands.
    pub(crate) fn len(&self) -> usize {
        self.element_deletes.len()
            + self.declarations.len()
            + self.flushes.len()
            + self.rules.len()
            + self.element_adds.len()
            + self.stale_flushes.len()
            + self.chain_deletes.len()
            + self.set_deletes.len()
    }

    /// The nft JSON document (`nft -j -f -` input).
    pub(crate) fn into_json(self) -> Value {
        let commands: Vec<Value> = self
            .element_deletes
            .into_iter()
            .chain(self.declarations)
            .chain(self.flushes)
            .chain(self.rules)
            .chain(self.element_adds)
            .chain(self.stale_flushes)
            .chain(self.chain_deletes)
            .chain(self.set_deletes)
            .collect();
        json!({ "nftables": commands })
    }
}

/// The names of the chains, sets and maps a table has (from `nft -j list table`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct TableObjects {
    /// Whether the table exists.
    pub(crate) exists: bool,
    /// Chain names.
    pub(crate) chains: BTreeSet<String>,
    /// Set names (sets and maps, whose delete commands differ, apart).
    pub(crate) sets: BTreeSet<String>,
    /// Map names.
    pub(crate) maps: BTreeSet<String>,
}

impl TableObjects {
    /// Reads the names out of `nft -j list table ip wasmkube`'s output.
    pub(crate) fn from_listing(listing: &Value) -> TableObjects {
        let mut objects = TableObjects::default();
        let Some(items) = listing.get("nftables").and_then(Value::as_array) else {
            return objects;
        };
        for item in items {
            let name = |kind: &str| {
                item.get(kind)
                    .filter(|o| o.get("table").and_then(Value::as_str) == Some(TABLE))
                    .and_then(|o| o.get("name"))
                    .and_then(Value::as_str)
                    .map(str::to_string)
            };
            if item.get("table").is_some() {
                objects.exists = true;
            }
            if let Some(n) = name("chain") {
                objects.chains.insert(n);
            }
            if let Some(n) = name("set") {
                objects.sets.insert(n);
            }
            if let Some(n) = name("map") {
                objects.maps.insert(n);
            }
        }
        objects
    }
}

impl TableObjects {
    /// Whether the table has a set or map of this name.
    pub(crate) fn has_set(&self, name: &str) -> bool {
        self.sets.contains(name) || self.maps.contains(name)
    }
}
