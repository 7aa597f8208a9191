//! The scheduling framework: filter plugins decide where a pod *can* go, score plugins
//! where it *should* go, and [`Framework::schedule`] runs them over the [`Snapshot`].
//!
//! One scheduling cycle, as in kube-scheduler:
//! 1. **PreFilter** ([`FilterPlugin::pre_filter`]): once per pod; plugins compute what they
//!    need (merged tolerations, parsed affinity, later the anti-affinity of existing pods)
//!    into the [`CycleState`], or reject the pod outright (a missing RuntimeClass).
//! 2. **Filter** ([`FilterPlugin::filter`]): per node, in plugin order; the first plugin that
//!    says [`Unschedulable`] rules the node out. Like kube-scheduler, the search stops once
//!    enough feasible nodes are found (`percentageOfNodesToScore`, adaptive by default) and
//!    the next cycle starts where this one stopped, so large clusters stay fast and every
//!    node gets its turn.
//! 3. **Score** ([`ScorePlugin::score`], then [`ScorePlugin::normalize`] into `0..=100`),
//!    weighted and summed; the best node wins, ties broken at random so equal pods spread.
//!
//! When no node passes, the [`FitError`] renders kube-scheduler's message
//! (`0/2 nodes are available: 1 Insufficient memory, ... preemption: ...`).
//!
//! Plugins get the whole snapshot (every node with all its pods) in the pre-filter and
//! pre-score steps, which is what InterPodAffinity and PodTopologySpread need.

use std::any::{Any, TypeId};
use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;

use crate::snapshot::{NodeInfo, PodInfo, Snapshot};

mod fit_error;

pub use fit_error::FitError;

/// The highest score a node can get from one plugin after normalization.
pub const MAX_NODE_SCORE: i64 = 100;

/// Below this many nodes, every node is evaluated.
const MIN_FEASIBLE_NODES_TO_FIND: usize = 100;
/// The adaptive percentage of nodes to evaluate never goes below this.
const MIN_FEASIBLE_NODES_PERCENTAGE_TO_FIND: usize = 5;

/// Why a node (or, from a pre-filter, every node) cannot take the pod.
///
/// The first reason is held inline, so rejecting a node with one fixed reason allocates
/// nothing (the filter hot path rejects most nodes of a large cluster).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unschedulable {
    reason: Cow<'static, str>,
    more: Vec<Cow<'static, str>>,
    /// Whether removing pods (preemption) could help: `true` for resource shortage,
    /// `false` for labels, taints and the like (kube-scheduler's
    /// `UnschedulableAndUnresolvable`).
    pub resolvable: bool,
}

impl Unschedulable {
    /// A reason that removing pods could resolve (e.g. `Insufficient memory`).
    pub fn resolvable(reason: impl Into<Cow<'static, str>>) -> Self {
        Unschedulable {
            reason: reason.into(),
            more: Vec::new(),
            resolvable: true,
        }
    }

    /// A reason that removing pods cannot resolve (e.g. an untolerated taint).
    pub fn unresolvable(reason: impl Into<Cow<'static, str>>) -> Self {
        Unschedulable {
            reason: reason.into(),
            more: Vec::new(),
            resolvable: false,
        }
    }

    /// Adds a further reason (a node short of cpu *and* memory).
    pub fn and(mut self, reason: impl Into<Cow<'static, str>>) -> Self {
        self.more.push(reason.into());
        self
    }

    /// The reasons, each counted per node in the pod's message (`Insufficient cpu`).
    pub fn reasons(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.reason.as_ref()).chain(self.more.iter().map(AsRef::as_ref))
    }

    pub(crate) fn into_reasons(self) -> impl Iterator<Item = Cow<'static, str>> {
        std::iter::once(self.reason).chain(self.more)
    }
}

impl fmt::Display for Unschedulable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, reason) in self.reasons().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            f.write_str(reason)?;
        }
        Ok(())
    }
}

/// Per-cycle scratch space that plugins share: a map from type to value, written in
/// pre-filter or pre-score and read in filter or score.
#[derive(Default)]
pub struct CycleState {
    entries: Vec<(TypeId, Box<dyn Any + Send + Sync>)>,
}

impl CycleState {
    /// An empty state.
    pub fn new() -> Self {
        CycleState::default()
    }

    /// Stores `value`, replacing an earlier value of the same type.
    pub fn write<T: Any + Send + Sync>(&mut self, value: T) {
        let id = TypeId::of::<T>();
        if let Some(slot) = self.entries.iter_mut().find(|(t, _)| *t == id) {
            slot.1 = Box::new(value);
        } else {
            self.entries.push((id, Box::new(value)));
        }
    }

    /// The value of type `T`, if a plugin wrote one.
    pub fn read<T: Any + Send + Sync>(&self) -> Option<&T> {
        let id = TypeId::of::<T>();
        self.entries
            .iter()
            .find(|(t, _)| *t == id)
            .and_then(|(_, v)| v.downcast_ref())
    }
}

impl fmt::Debug for CycleState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CycleState")
            .field("entries", &self.entries.len())
            .finish()
    }
}

/// Decides whether a pod can go to a node.
pub trait FilterPlugin: Send + Sync {
    /// The plugin's name, as in kube-scheduler (`NodeResourcesFit`).
    fn name(&self) -> &'static str;

    /// Runs once per pod and cycle before any node is filtered. An error rejects every node.
    fn pre_filter(
        &self,
        _pod: &PodInfo,
        _snapshot: &Snapshot,
        _state: &mut CycleState,
    ) -> Result<(), Unschedulable> {
        Ok(())
    }

    /// Whether `pod` fits `node`, and if not, why.
    fn filter(
        &self,
        pod: &PodInfo,
        node: &NodeInfo,
        state: &CycleState,
    ) -> Result<(), Unschedulable>;

    /// Whether `pod` fits `node`; must agree with [`FilterPlugin::filter`]. The search for
    /// feasible nodes calls this; reasons are gathered with `filter` only when no node
    /// fits. Override it when building the reason costs (formatting, allocation).
    fn fits(&self, pod: &PodInfo, node: &NodeInfo, state: &CycleState) -> bool {
        self.filter(pod, node, state).is_ok()
    }
}

/// Ranks the nodes a pod can go to.
pub trait ScorePlugin: Send + Sync {
    /// The plugin's name, as in kube-scheduler (`TaintToleration`).
    fn name(&self) -> &'static str;

    /// Runs once per pod after filtering, with the feasible nodes (indices into
    /// [`Snapshot::node_infos`]).
    fn pre_score(
        &self,
        _pod: &PodInfo,
        _snapshot: &Snapshot,
        _feasible: &[usize],
        _state: &mut CycleState,
    ) {
    }

    /// The raw score of `node` for `pod`; in `0..=100` unless [`ScorePlugin::normalize`]
    /// brings it there.
    fn score(&self, pod: &PodInfo, node: &NodeInfo, state: &CycleState) -> i64;

    /// Rescales the raw scores of all feasible nodes into `0..=100`.
    fn normalize(&self, _scores: &mut [i64]) {}
}

/// Filter and score plugins and the state of the node search.
pub struct Framework {
    filters: Vec<Box<dyn FilterPlugin>>,
    scorers: Vec<(Box<dyn ScorePlugin>, i64)>,
    percentage_of_nodes_to_score: Option<u32>,
    next_start: usize,
    rng: u64,
    feasible: Vec<usize>,
    totals: Vec<i64>,
    scratch: Vec<i64>,
}

impl fmt::Debug for Framework {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Framework")
            .field(
                "filters",
                &self.filters.iter().map(|p| p.name()).collect::<Vec<_>>(),
            )
            .field(
                "scorers",
                &self
                    .scorers
                    .iter()
                    .map(|(p, w)| (p.name(), *w))
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl Default for Framework {
    fn default() -> Self {
        Framework::new()
    }
}

impl Framework {
    /// A framework without plugins (every node fits, all score 0).
    pub fn new() -> Self {
        Framework {
            filters: Vec::new(),
            scorers: Vec::new(),
            percentage_of_nodes_to_score: None,
            next_start: 0,
            rng: random_seed(),
            feasible: Vec::new(),
            totals: Vec::new(),
            scratch: Vec::new(),
        }
    }

    /// Adds a filter plugin; filters run in the order they are added.
    pub fn with_filter(mut self, plugin: impl FilterPlugin + 'static) -> Self {
        self.filters.push(Box::new(plugin));
        self
    }

    /// Adds a score plugin with its weight.
    pub fn with_score(mut self, plugin: impl ScorePlugin + 'static, weight: i64) -> Self {
        self.scorers.push((Box::new(plugin), weight));
        self
    }

    /// Evaluates this percentage of the nodes (at least 100) instead of kube-scheduler's
    /// adaptive default; 100 evaluates every node.
    pub fn with_percentage_of_nodes_to_score(mut self, percentage: Option<u32>) -> Self {
        self.percentage_of_nodes_to_score = percentage.filter(|p| *p > 0).map(|p| p.min(100));
        self
    }

    /// Seeds the tie-breaking random numbers (for reproducible tests and benchmarks).
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.rng = seed | 1;
        self
    }

    /// How many feasible nodes to look for among `all` (kube-scheduler's
    /// `numFeasibleNodesToFind`).
    pub fn num_feasible_nodes_to_find(&self, all: usize) -> usize {
        if all < MIN_FEASIBLE_NODES_TO_FIND {
            return all;
        }
        let percentage = match self.percentage_of_nodes_to_score {
            Some(p) => p as usize,
            None => 50usize
                .saturating_sub(all / 125)
                .max(MIN_FEASIBLE_NODES_PERCENTAGE_TO_FIND),
        };
        (all * percentage / 100).max(MIN_FEASIBLE_NODES_TO_FIND)
    }

    /// Picks a node for `pod`, or says why none fits.
    pub fn schedule(&mut self, pod: &PodInfo, snapshot: &Snapshot) -> Result<String, FitError> {
        let all = snapshot.num_nodes();
        if all == 0 {
            return Err(FitError::no_nodes());
        }
        let mut state = CycleState::new();
        for plugin in &self.filters {
            if let Err(rejection) = plugin.pre_filter(pod, snapshot, &mut state) {
                return Err(FitError::pre_filter(pod, all, plugin.name(), rejection));
            }
        }

        let infos = snapshot.node_infos();
        let wanted = self.num_feasible_nodes_to_find(all);
        let mut feasible = std::mem::take(&mut self.feasible);
        feasible.clear();
        let mut processed = 0;
        let start = if infos.is_empty() {
            0
        } else {
            self.next_start % infos.len()
        };
        for offset in 0..infos.len() {
            if feasible.len() >= wanted {
                break;
            }
            let i = (start + offset) % infos.len();
            processed += 1;
            let info = &infos[i];
            if info.node().is_none() {
                continue;
            }
            // Why a node was rejected only matters if every node is: see `diagnose`.
            if self.filters.iter().all(|f| f.fits(pod, info, &state)) {
                feasible.push(i);
            }
        }
        if !infos.is_empty() {
            self.next_start = (start + processed) % infos.len();
        }

        let chosen = match feasible.len() {
            0 => None,
            1 => Some(feasible[0]),
            _ => Some(self.best_of(pod, snapshot, &feasible, &mut state)),
        };
        self.feasible = feasible;
        match chosen {
            Some(i) => Ok(infos[i].name().to_string()),
            None => Err(FitError::filtered(
                pod,
                all,
                self.diagnose(pod, snapshot, &state),
            )),
        }
    }

    /// Collects every node's rejection. Done only once no node fits, so the common path
    /// neither counts nor hashes reasons.
    fn diagnose(
        &self,
        pod: &PodInfo,
        snapshot: &Snapshot,
        state: &CycleState,
    ) -> fit_error::Diagnosis {
        let mut diagnosis = fit_error::Diagnosis::default();
        for info in snapshot.node_infos() {
            if info.node().is_none() {
                continue;
            }
            if let Err((plugin, rejection)) = self.run_filters(pod, info, state) {
                diagnosis.record(plugin, rejection);
            }
        }
        diagnosis
    }

    /// Runs the filters of one node; the first rejection wins.
    pub fn run_filters(
        &self,
        pod: &PodInfo,
        node: &NodeInfo,
        state: &CycleState,
    ) -> Result<(), (&'static str, Unschedulable)> {
        for plugin in &self.filters {
            plugin
                .filter(pod, node, state)
                .map_err(|rejection| (plugin.name(), rejection))?;
        }
        Ok(())
    }

    /// Scores the feasible nodes and returns the best (an index into the snapshot's nodes).
    fn best_of(
        &mut self,
        pod: &PodInfo,
        snapshot: &Snapshot,
        feasible: &[usize],
        state: &mut CycleState,
    ) -> usize {
        let infos = snapshot.node_infos();
        self.totals.clear();
        self.totals.resize(feasible.len(), 0);
        for (plugin, weight) in &self.scorers {
            plugin.pre_score(pod, snapshot, feasible, state);
            self.scratch.clear();
            self.scratch.extend(
                feasible
                    .iter()
                    .map(|&i| plugin.score(pod, &infos[i], state)),
            );
            plugin.normalize(&mut self.scratch);
            for (total, score) in self.totals.iter_mut().zip(&self.scratch) {
                *total = total.saturating_add(score.saturating_mul(*weight));
            }
        }
        // Reservoir sampling among the best so equal nodes share the load.
        let mut best = 0;
        let mut ties = 0u64;
        for (k, &total) in self.totals.iter().enumerate() {
            if k == 0 || total > self.totals[best] {
                best = k;
                ties = 1;
            } else if total == self.totals[best] {
                ties += 1;
                if next_random(&mut self.rng).is_multiple_of(ties) {
                    best = k;
                }
            }
        }
        feasible[best]
    }
}

/// xorshift64*: plenty for tie-breaking, no allocation, no dependency.
fn next_random(state: &mut u64) -> u64 {
    let mut x = *state;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *state = x;
    x.wrapping_mul(0x2545_F491_4F6C_DD1D)
}

fn random_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(0x5eed);
    hasher.finish() | 1
}

/// Counts of reasons across nodes, for messages and for requeueing decisions.
pub(crate) type ReasonHistogram = HashMap<Cow<'static, str>, usize>;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{node, pod_with_requests};
    use std::sync::Arc;

    struct RejectNode(&'static str);

    impl FilterPlugin for RejectNode {
        fn name(&self) -> &'static str {
            "RejectNode"
        }
        fn filter(
            &self,
            _pod: &PodInfo,
            node: &NodeInfo,
            _state: &CycleState,
        ) -> Result<(), Unschedulable> {
            if node.name() == self.0 {
                Err(Unschedulable::unresolvable("node(s) were rejected"))
            } else {
                Ok(())
            }
        }
    }

    struct PreferNode(&'static str);

    impl ScorePlugin for PreferNode {
        fn name(&self) -> &'static str {
            "PreferNode"
        }
        fn score(&self, _pod: &PodInfo, node: &NodeInfo, _state: &CycleState) -> i64 {
            if node.name() == self.0 { 100 } else { 0 }
        }
    }

    struct Marker(u32);

    struct WritesState;

    impl FilterPlugin for WritesState {
        fn name(&self) -> &'static str {
            "WritesState"
        }
        fn pre_filter(
            &self,
            _pod: &PodInfo,
            _snapshot: &Snapshot,
            state: &mut CycleState,
        ) -> Result<(), Unschedulable> {
            state.write(Marker(7));
            Ok(())
        }
        fn filter(
            &self,
            _pod: &PodInfo,
            _node: &NodeInfo,
            state: &CycleState,
        ) -> Result<(), Unschedulable> {
            match state.read::<Marker>() {
                Some(Marker(7)) => Ok(()),
                _ => Err(Unschedulable::unresolvable("state missing")),
            }
        }
    }

    fn snapshot(names: &[&str]) -> Snapshot {
        let mut s = Snapshot::new();
        for n in names {
            s.upsert_node(node(n, "4", "8Gi"));
        }
        s
    }

    fn pod() -> PodInfo {
        PodInfo::new(pod_with_requests("p", "100m", "10Mi"))
    }

    #[test]
    fn filters_rule_nodes_out_and_scores_pick_among_the_rest() {
        let s = snapshot(&["a", "b", "c"]);
        let mut fw = Framework::new()
            .with_filter(RejectNode("a"))
            .with_score(PreferNode("a"), 1)
            .with_score(PreferNode("c"), 1);
        assert_eq!(fw.schedule(&pod(), &s).ok().as_deref(), Some("c"));
    }

    #[test]
    fn weights_decide_between_plugins() {
        let s = snapshot(&["a", "b"]);
        let mut fw = Framework::new()
            .with_score(PreferNode("a"), 1)
            .with_score(PreferNode("b"), 3);
        assert_eq!(fw.schedule(&pod(), &s).ok().as_deref(), Some("b"));
    }

    #[test]
    fn ties_are_broken_across_all_equal_nodes() {
        let s = snapshot(&["a", "b", "c", "d"]);
        let mut fw = Framework::new().with_seed(42);
        let mut seen = std::collections::HashSet::new();
        for _ in 0..200 {
            if let Ok(n) = fw.schedule(&pod(), &s) {
                seen.insert(n);
            }
        }
        assert_eq!(seen.len(), 4);
    }

    #[test]
    fn pre_filter_state_reaches_the_filters() {
        let s = snapshot(&["a"]);
        let mut fw = Framework::new().with_filter(WritesState);
        assert_eq!(fw.schedule(&pod(), &s).ok().as_deref(), Some("a"));
    }

    #[test]
    fn no_nodes_gives_kubernetes_message() {
        let s = Snapshot::new();
        let mut fw = Framework::new();
        let err = fw.schedule(&pod(), &s).err().map(|e| e.to_string());
        assert_eq!(err.as_deref(), Some("no nodes available to schedule pods"));
    }

    #[test]
    fn nodes_without_a_node_object_are_never_chosen() {
        let mut s = snapshot(&["a"]);
        let mut ghost = pod_with_requests("g", "1", "1Gi");
        if let Some(spec) = ghost.spec.as_mut() {
            spec.node_name = Some("ghost".into());
        }
        s.add_bound_pod(Arc::new(PodInfo::new(ghost)));
        let mut fw = Framework::new();
        for _ in 0..10 {
            assert_eq!(fw.schedule(&pod(), &s).ok().as_deref(), Some("a"));
        }
    }

    #[test]
    fn large_clusters_evaluate_an_adaptive_share_of_nodes() {
        let fw = Framework::new();
        assert_eq!(fw.num_feasible_nodes_to_find(50), 50);
        assert_eq!(fw.num_feasible_nodes_to_find(150), 100);
        // 50 - 5000/125 = 10 percent.
        assert_eq!(fw.num_feasible_nodes_to_find(5000), 500);
        // never under 5 percent
        assert_eq!(fw.num_feasible_nodes_to_find(10_000), 500);
        let all = Framework::new().with_percentage_of_nodes_to_score(Some(100));
        assert_eq!(all.num_feasible_nodes_to_find(5000), 5000);
    }

    #[test]
    fn the_search_resumes_where_the_previous_cycle_stopped() {
        let names: Vec<String> = (0..200).map(|i| format!("n{i:03}")).collect();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let s = snapshot(&refs);
        // 100 feasible nodes are enough; all score 0; two cycles cover different halves.
        let mut fw = Framework::new().with_seed(1);
        let mut seen = std::collections::HashSet::new();
        for _ in 0..2 {
            let _ = fw.schedule(&pod(), &s);
            seen.extend(fw.feasible.iter().copied());
        }
        assert_eq!(seen.len(), 200);
    }

    #[test]
    fn cycle_state_replaces_values_of_the_same_type() {
        let mut state = CycleState::new();
        state.write(Marker(1));
        state.write(Marker(2));
        state.write(5u8);
        assert!(matches!(state.read::<Marker>(), Some(Marker(2))));
        assert_eq!(state.read::<u8>(), Some(&5));
        assert!(state.read::<u16>().is_none());
    }
}
