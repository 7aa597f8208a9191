//! The dependency graph of the garbage collector: every observed object by uid, its
//! owner references, and for every owner uid (observed or not) the uids of its dependents.
//!
//! Owners named by a reference but not (yet) observed are *virtual* nodes, as Kubernetes'
//! GraphBuilder keeps them: the workers verify with the apiserver whether they exist.
//! Every change returns the [`Work`] it makes necessary; the graph itself does no I/O.

use std::collections::{BTreeSet, HashMap};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

/// An object's uid.
pub(crate) type Uid = String;

/// The finalizer that makes the garbage collector orphan the dependents.
pub(crate) const ORPHAN_FINALIZER: &str = "orphan";
/// The finalizer that makes the garbage collector delete the dependents first.
pub(crate) const FOREGROUND_FINALIZER: &str = "foregroundDeletion";

/// What identifies an object: its kind, namespace, name and uid.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Identity {
    /// `group/version` or `v1`.
    pub(crate) api_version: String,
    pub(crate) kind: String,
    /// `None` for cluster-scoped objects (and owners whose kind is cluster-scoped).
    pub(crate) namespace: Option<String>,
    pub(crate) name: String,
    pub(crate) uid: Uid,
}

impl Identity {
    /// The group of the api version (`""` for the core group).
    pub(crate) fn group(&self) -> &str {
        group_of(&self.api_version)
    }
}

impl std::fmt::Display for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.namespace {
            Some(ns) => write!(f, "{} {}/{} ({})", self.kind, ns, self.name, self.uid),
            None => write!(f, "{} {} ({})", self.kind, self.name, self.uid),
        }
    }
}

/// The group part of an `apiVersion`.
pub(crate) fn group_of(api_version: &str) -> &str {
    api_version
        .split_once('/')
        .map(|(group, _)| group)
        .unwrap_or("")
}

/// One object of the graph.
#[derive(Clone, Debug)]
pub(crate) struct Node {
    pub(crate) identity: Identity,
    pub(crate) owners: Vec<OwnerReference>,
    /// `deletionTimestamp` is set.
    pub(crate) being_deleted: bool,
    /// Being deleted with the `foregroundDeletion` finalizer: waits for its blocking
    /// dependents.
    pub(crate) deleting_dependents: bool,
    /// Being deleted with the `orphan` finalizer.
    pub(crate) orphaning: bool,
    /// Named by an owner reference, not observed (yet).
    pub(crate) is_virtual: bool,
}

/// What a change of the graph asks the workers to do.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Work {
    /// Check whether the object should go (its owners gone or waiting for it), verify a
    /// virtual node, or (for an owner deleting its dependents) delete the dependents and
    /// remove the `foregroundDeletion` finalizer when none blocks any more.
    AttemptToDelete(Uid),
    /// Remove the owner references to this object from its dependents, then its `orphan`
    /// finalizer.
    AttemptToOrphan(Uid),
}

/// The graph.
#[derive(Debug, Default)]
pub(crate) struct Graph {
    nodes: HashMap<Uid, Node>,
    /// Owner uid -> dependent uids (owners need not be nodes).
    dependents: HashMap<Uid, BTreeSet<Uid>>,
}

impl Graph {
    /// The node of `uid`.
    pub(crate) fn node(&self, uid: &str) -> Option<&Node> {
        self.nodes.get(uid)
    }

    /// How many nodes (observed and virtual) the graph holds.
    pub(crate) fn len(&self) -> usize {
        self.nodes.len()
    }

    /// The dependents of `owner` that are nodes.
    pub(crate) fn dependents(&self, owner: &str) -> Vec<&Node> {
        self.dependents
            .get(owner)
            .into_iter()
            .flatten()
            .filter_map(|uid| self.nodes.get(uid))
            .collect()
    }

    /// The dependents whose reference to `owner` has `blockOwnerDeletion: true`.
    pub(crate) fn blocking_dependents(&self, owner: &str) -> Vec<&Node> {
        self.dependents(owner)
            .into_iter()
            .filter(|d| {
                d.owners
                    .iter()
                    .any(|r| r.uid == owner && r.block_owner_deletion == Some(true))
            })
            .collect()
    }

    /// An object was added or changed. `namespaced_owner`
    /// says whether an owner reference's kind is namespaced (it then lives in the
    /// object's namespace).
    pub(crate) fn observe(
        &mut self,
        api_version: &str,
        kind: &str,
        meta: &ObjectMeta,
        namespaced_owner: &dyn Fn(&OwnerReference) -> bool,
    ) -> Vec<Work> {
        let Some(uid) = meta.uid.clone().filter(|u| !u.is_empty()) else {
            return Vec::new();
        };
        let identity = Identity {
            api_version: api_version.to_string(),
            kind: kind.to_string(),
            namespace: meta.namespace.clone().filter(|n| !n.is_empty()),
            name: meta.name.clone().unwrap_or_default(),
            uid: uid.clone(),
        };
        let finalizers = meta.finalizers.as_deref().unwrap_or(&[]);
        let being_deleted = meta.deletion_timestamp.is_some();
        let has = |f: &str| finalizers.iter().any(|x| x == f);
        let owners = meta.owner_references.clone().unwrap_or_default();
        let mut work = Vec::new();

        let previous = self.nodes.get(&uid).cloned();
        if let Some(prev) = &previous
            && prev.is_virtual
            && prev.identity != identity
        {
            // Dependents named this object by another kind or name: their references
            // may be wrong, have them checked against the apiserver.
            for dep in self.dependents.get(&uid).into_iter().flatten() {
                if let Some(d) = self.nodes.get(dep)
                    && d.owners
                        .iter()
                        .any(|r| r.uid == uid && !refers_to(r, &identity))
                {
                    work.push(Work::AttemptToDelete(dep.clone()));
                }
            }
        }
        let old_owners = previous
            .as_ref()
            .filter(|p| !p.is_virtual)
            .map(|p| p.owners.clone())
            .unwrap_or_default();
        // Index changes: references removed, references added.
        for old in &old_owners {
            let kept = owners.iter().find(|r| r.uid == old.uid);
            if kept.is_none() {
                self.unlink(&old.uid, &uid);
            }
            // An owner waiting for its blocking dependents may be released by this one.
            let unblocked = old.block_owner_deletion == Some(true)
                && kept.is_none_or(|r| r.block_owner_deletion != Some(true));
            if unblocked
                && self
                    .nodes
                    .get(&old.uid)
                    .is_some_and(|o| o.deleting_dependents)
            {
                work.push(Work::AttemptToDelete(old.uid.clone()));
            }
        }
        for r in &owners {
            if old_owners.iter().any(|o| o.uid == r.uid) {
                continue;
            }
            self.dependents
                .entry(r.uid.clone())
                .or_default()
                .insert(uid.clone());
            if !self.nodes.contains_key(&r.uid) {
                let namespace = if namespaced_owner(r) {
                    identity.namespace.clone()
                } else {
                    None
                };
                self.nodes.insert(
                    r.uid.clone(),
                    Node {
                        identity: Identity {
                            api_version: r.api_version.clone(),
                            kind: r.kind.clone(),
                            namespace,
                            name: r.name.clone(),
                            uid: r.uid.clone(),
                        },
                        owners: Vec::new(),
                        being_deleted: false,
                        deleting_dependents: false,
                        orphaning: false,
                        is_virtual: true,
                    },
                );
                work.push(Work::AttemptToDelete(r.uid.clone()));
            }
        }
        let was_deleting_dependents = previous.as_ref().is_some_and(|p| p.deleting_dependents);
        let was_orphaning = previous.as_ref().is_some_and(|p| p.orphaning);
        let node = Node {
            identity,
            owners,
            being_deleted,
            deleting_dependents: being_deleted && has(FOREGROUND_FINALIZER),
            orphaning: being_deleted && has(ORPHAN_FINALIZER),
            is_virtual: false,
        };
        if node.orphaning && !was_orphaning {
            work.push(Work::AttemptToOrphan(uid.clone()));
        }
        if node.deleting_dependents && !was_deleting_dependents {
            for dep in self.dependents.get(&uid).into_iter().flatten() {
                work.push(Work::AttemptToDelete(dep.clone()));
            }
            work.push(Work::AttemptToDelete(uid.clone()));
        }
        self.nodes.insert(uid, node);
        work
    }

    /// The object `uid` is gone (deleted, or found absent). Its dependents are checked,
    /// and its owners that wait for their dependents re-checked.
    pub(crate) fn remove(&mut self, uid: &str) -> Vec<Work> {
        let Some(node) = self.nodes.remove(uid) else {
            return Vec::new();
        };
        let mut work: Vec<Work> = self
            .dependents
            .get(uid)
            .into_iter()
            .flatten()
            .filter(|d| self.nodes.contains_key(*d))
            .map(|d| Work::AttemptToDelete(d.clone()))
            .collect();
        for r in &node.owners {
            self.unlink(&r.uid, uid);
            if self
                .nodes
                .get(&r.uid)
                .is_some_and(|o| o.deleting_dependents)
            {
                work.push(Work::AttemptToDelete(r.uid.clone()));
            }
        }
        if self
            .dependents
            .get(uid)
            .is_none_or(|deps| !deps.iter().any(|d| self.nodes.contains_key(d)))
        {
            self.dependents.remove(uid);
        }
        work
    }

    fn unlink(&mut self, owner: &str, dependent: &str) {
        if let Some(deps) = self.dependents.get_mut(owner) {
            deps.remove(dependent);
            if deps.is_empty() {
                self.dependents.remove(owner);
                // A virtual owner nobody names any more is forgotten.
                if self.nodes.get(owner).is_some_and(|n| n.is_virtual) {
                    self.nodes.remove(owner);
                }
            }
        }
    }
}

/// Whether the reference `r` names `identity` (same group, kind and name).
pub(crate) fn refers_to(r: &OwnerReference, identity: &Identity) -> bool {
    r.kind == identity.kind
        && r.name == identity.name
        && group_of(&r.api_version) == identity.group()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner_ref(uid: &str, kind: &str, name: &str, block: bool) -> OwnerReference {
        OwnerReference {
            api_version: if kind == "Deployment" || kind == "ReplicaSet" {
                "apps/v1".into()
            } else {
                "v1".into()
            },
            kind: kind.into(),
            name: name.into(),
            uid: uid.into(),
            controller: Some(true),
            block_owner_deletion: Some(block),
        }
    }

    fn meta(uid: &str, name: &str, owners: Vec<OwnerReference>) -> ObjectMeta {
        ObjectMeta {
            uid: Some(uid.into()),
            name: Some(name.into()),
            namespace: Some("default".into()),
            owner_references: (!owners.is_empty()).then_some(owners),
            ..Default::default()
        }
    }

    fn namespaced(_: &OwnerReference) -> bool {
        true
    }

    #[test]
    fn an_owner_not_yet_observed_becomes_a_virtual_node_to_verify() {
        let mut g = Graph::default();
        let work = g.observe(
            "v1",
            "Pod",
            &meta(
                "p1",
                "web-1",
                vec![owner_ref("rs1", "ReplicaSet", "web", true)],
            ),
            &namespaced,
        );
        assert_eq!(work, vec![Work::AttemptToDelete("rs1".into())]);
        let rs = g.node("rs1").unwrap();
        assert!(rs.is_virtual);
        assert_eq!(rs.identity.namespace.as_deref(), Some("default"));
        // Observing the owner makes it real, without more work.
        let work = g.observe(
            "apps/v1",
            "ReplicaSet",
            &meta("rs1", "web", vec![]),
            &namespaced,
        );
        assert!(work.is_empty());
        assert!(!g.node("rs1").unwrap().is_virtual);
        assert_eq!(g.dependents("rs1").len(), 1);
    }

    #[test]
    fn removing_an_owner_asks_to_check_each_dependent() {
        let mut g = Graph::default();
        g.observe(
            "apps/v1",
            "ReplicaSet",
            &meta("rs1", "web", vec![]),
            &namespaced,
        );
        for (uid, name) in [("p1", "a"), ("p2", "b")] {
            let work = g.observe(
                "v1",
                "Pod",
                &meta(uid, name, vec![owner_ref("rs1", "ReplicaSet", "web", true)]),
                &namespaced,
            );
            assert!(work.is_empty(), "{work:?}");
        }
        let mut work = g.remove("rs1");
        work.sort_by_key(|w| format!("{w:?}"));
        assert_eq!(
            work,
            vec![
                Work::AttemptToDelete("p1".into()),
                Work::AttemptToDelete("p2".into())
            ]
        );
    }

    #[test]
    fn foreground_deletion_checks_the_dependents_and_the_owner_and_waits_for_blocking_ones() {
        let mut g = Graph::default();
        g.observe(
            "apps/v1",
            "ReplicaSet",
            &meta("rs1", "web", vec![]),
            &namespaced,
        );
        g.observe(
            "v1",
            "Pod",
            &meta("p1", "a", vec![owner_ref("rs1", "ReplicaSet", "web", true)]),
            &namespaced,
        );
        g.observe(
            "v1",
            "Pod",
            &meta(
                "p2",
                "b",
                vec![owner_ref("rs1", "ReplicaSet", "web", false)],
            ),
            &namespaced,
        );
        let mut deleting = meta("rs1", "web", vec![]);
        deleting.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
        ));
        deleting.finalizers = Some(vec![FOREGROUND_FINALIZER.into()]);
        let work = g.observe("apps/v1", "ReplicaSet", &deleting, &namespaced);
        assert!(work.contains(&Work::AttemptToDelete("p1".into())));
        assert!(work.contains(&Work::AttemptToDelete("p2".into())));
        assert!(work.contains(&Work::AttemptToDelete("rs1".into())));
        let blocking: Vec<_> = g
            .blocking_dependents("rs1")
            .iter()
            .map(|n| n.identity.uid.clone())
            .collect();
        assert_eq!(blocking, vec!["p1".to_string()]);
        // The same state observed again asks for nothing new.
        assert!(
            g.observe("apps/v1", "ReplicaSet", &deleting, &namespaced)
                .is_empty()
        );
        // The blocking dependent going away re-checks the waiting owner.
        assert_eq!(g.remove("p1"), vec![Work::AttemptToDelete("rs1".into())]);
        assert!(g.blocking_dependents("rs1").is_empty());
    }

    #[test]
    fn orphan_finalizer_on_a_deleting_owner_asks_to_orphan_once() {
        let mut g = Graph::default();
        let mut m = meta("d1", "web", vec![]);
        m.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
        ));
        m.finalizers = Some(vec![ORPHAN_FINALIZER.into()]);
        assert_eq!(
            g.observe("apps/v1", "Deployment", &m, &namespaced),
            vec![Work::AttemptToOrphan("d1".into())]
        );
        assert!(
            g.observe("apps/v1", "Deployment", &m, &namespaced)
                .is_empty()
        );
    }

    #[test]
    fn dropping_a_blocking_reference_releases_a_waiting_owner_and_forgets_virtual_owners() {
        let mut g = Graph::default();
        let mut owner = meta("cm0", "owner", vec![]);
        owner.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
        ));
        owner.finalizers = Some(vec![FOREGROUND_FINALIZER.into()]);
        g.observe("v1", "ConfigMap", &owner, &namespaced);
        let refs = vec![
            owner_ref("cm0", "ConfigMap", "owner", true),
            owner_ref("ghost", "ConfigMap", "ghost", false),
        ];
        g.observe("v1", "ConfigMap", &meta("cm1", "dep", refs), &namespaced);
        assert!(g.node("ghost").is_some_and(|n| n.is_virtual));
        let work = g.observe("v1", "ConfigMap", &meta("cm1", "dep", vec![]), &namespaced);
        assert_eq!(work, vec![Work::AttemptToDelete("cm0".into())]);
        assert!(g.node("ghost").is_none());
        assert!(g.dependents("cm0").is_empty());
    }

    #[test]
    fn cluster_scoped_owner_kinds_have_no_namespace() {
        let mut g = Graph::default();
        g.observe(
            "coordination.k8s.io/v1",
            "Lease",
            &meta(
                "l1",
                "node-a",
                vec![owner_ref("n1", "Node", "node-a", false)],
            ),
            &|r: &OwnerReference| r.kind != "Node",
        );
        assert_eq!(g.node("n1").unwrap().identity.namespace, None);
    }
}
