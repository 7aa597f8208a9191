//! The three timed phases of `wasmkube-bench deployment` — create, rolling update, delete —
//! each a set of milestones reached when the watched state first satisfies them.

use std::time::{Duration, Instant};

use anyhow::Context;
use hdrhistogram::Histogram;
use indicatif::ProgressBar;

use super::cycle;
use super::observe::{Observer, PodLife, ScaleStep, State};
use super::strategy::{ready_replicas, rollout_complete};
use crate::report::{self, LatencySummary};
use crate::table::LatencyRow;

/// The moments a phase reached its milestones.
#[derive(Clone, Debug)]
pub(crate) struct Milestones {
    start: Instant,
    marks: Vec<(String, Option<Instant>)>,
}

impl Milestones {
    fn new(start: Instant, labels: &[String]) -> Self {
        Self {
            start,
            marks: labels.iter().map(|l| (l.clone(), None)).collect(),
        }
    }

    /// Records milestone `i` at `at` the first time `reached` is true.
    fn check(&mut self, i: usize, reached: bool, at: Instant) {
        if reached && let Some((_, mark)) = self.marks.get_mut(i) {
            mark.get_or_insert(at);
        }
    }

    fn all(&self) -> bool {
        self.marks.iter().all(|(_, at)| at.is_some())
    }

    /// Each milestone and the seconds from the phase's start until it.
    pub(crate) fn rows(&self) -> Vec<(String, Option<f64>)> {
        self.marks
            .iter()
            .map(|(label, at)| {
                let secs = at.map(|at| at.saturating_duration_since(self.start).as_secs_f64());
                (label.clone(), secs)
            })
            .collect()
    }

    /// Seconds from the start until milestone `i`.
    pub(crate) fn secs(&self, i: usize) -> Option<f64> {
        self.rows().get(i).and_then(|(_, s)| *s)
    }

    /// Seconds from the start until the last milestone.
    pub(crate) fn last_s(&self) -> f64 {
        self.rows()
            .iter()
            .filter_map(|(_, s)| *s)
            .fold(0.0, f64::max)
    }

    /// The milestones not reached, for an error message.
    fn pending(&self) -> String {
        let labels: Vec<&str> = self
            .marks
            .iter()
            .filter(|(_, at)| at.is_none())
            .map(|(l, _)| l.as_str())
            .collect();
        labels.join(", ")
    }
}

/// The create phase's figures.
pub(crate) struct CreateResult {
    /// Pods created, Running, Ready; the ReplicaSet's and the Deployment's readyReplicas;
    /// rollout complete.
    pub(crate) milestones: Milestones,
    /// Per pod: created -> bound -> agent status -> Running -> Ready.
    pub(crate) per_pod: Vec<LatencyRow>,
}

/// The milestone of [`CreateResult`] "all pods Running".
pub(crate) const ALL_RUNNING: usize = 1;

/// Waits for the Deployment created at `start` (with `generation`) to be rolled out.
pub(crate) async fn create(
    observer: &mut Observer,
    start: Instant,
    generation: i64,
    n: usize,
    timeout: Duration,
    bar: &ProgressBar,
) -> anyhow::Result<CreateResult> {
    let labels = [
        format!("all {n} pods created"),
        format!("all {n} pods Running"),
        format!("all {n} pods Ready"),
        format!("ReplicaSet status.readyReplicas = {n}"),
        format!("Deployment status.readyReplicas = {n}"),
        "rollout complete (kubectl rollout status)".to_owned(),
    ];
    let mut marks = Milestones::new(start, &labels);
    let outcome = observer
        .until(start + timeout, |state, at| {
            let total = state.total();
            bar.set_position(total.ready as u64);
            marks.check(0, total.seen >= n, at);
            marks.check(1, total.running >= n, at);
            marks.check(2, total.ready >= n, at);
            let rs_ready = state.replica_sets.values().any(|rs| {
                let ready = rs.status.as_ref().and_then(|s| s.ready_replicas);
                ready.and_then(|r| usize::try_from(r).ok()) >= Some(n)
            });
            marks.check(3, rs_ready, at);
            let d = state.deployment.as_ref();
            marks.check(4, d.is_some_and(|d| ready_replicas(d) >= n), at);
            marks.check(5, d.is_some_and(|d| rollout_complete(d, generation)), at);
            marks.all()
        })
        .await;
    outcome.with_context(|| stuck("create", &marks, &observer.state))?;
    let pods: Vec<&PodLife> = observer.state.pods.values().collect();
    Ok(CreateResult {
        milestones: marks,
        per_pod: pod_rows(&pods),
    })
}

/// The rolling update's figures.
pub(crate) struct RolloutResult {
    /// New ReplicaSet, first and all new pods Ready, old pods gone, rollout complete.
    pub(crate) milestones: Milestones,
    /// The fewest live Ready pods at any moment.
    pub(crate) min_ready: usize,
    /// The most live pods (not deleting) at any moment.
    pub(crate) max_live: usize,
    /// The most pod objects (deleting ones too) at any moment.
    pub(crate) max_existing: usize,
    /// The links of the update's cycle, each timed per pod or per step.
    pub(crate) cycle: Vec<LatencyRow>,
    /// The ReplicaSets' size changes (seconds after the start, new?, from, to).
    pub(crate) steps: Vec<(f64, bool, i32, i32)>,
}

/// Waits for the rolling update patched at `start` (to `generation`) to finish.
pub(crate) async fn rollout(
    observer: &mut Observer,
    start: Instant,
    generation: i64,
    n: usize,
    timeout: Duration,
    bar: &ProgressBar,
) -> anyhow::Result<RolloutResult> {
    let old: Vec<String> = observer.state.replica_sets.keys().cloned().collect();
    let labels = [
        "new ReplicaSet seen".to_owned(),
        "first new pod Ready".to_owned(),
        format!("all {n} new pods created"),
        format!("all {n} new pods Ready"),
        "no old pod left (all deleting or gone)".to_owned(),
        "all old pods gone".to_owned(),
        "rollout complete (kubectl rollout status)".to_owned(),
    ];
    let mut marks = Milestones::new(start, &labels);
    let mut new_hash: Option<String> = None;
    let (mut min_ready, mut max_live, mut max_existing) = (usize::MAX, 0, 0);
    let outcome = observer
        .until(start + timeout, |state, at| {
            if new_hash.is_none() {
                new_hash = state
                    .replica_sets
                    .keys()
                    .find(|h| !old.contains(h))
                    .cloned();
            }
            let total = state.total();
            min_ready = min_ready.min(total.ready);
            max_live = max_live.max(total.live);
            max_existing = max_existing.max(total.existing);
            let Some(hash) = new_hash.as_deref() else {
                return false;
            };
            let new = state.of_hash(hash);
            let old = state.other_than(hash);
            bar.set_position(new.ready as u64);
            marks.check(0, true, at);
            marks.check(1, new.ready >= 1, at);
            marks.check(2, new.seen >= n, at);
            marks.check(3, new.ready >= n, at);
            marks.check(4, old.live == 0, at);
            marks.check(5, old.existing == 0, at);
            let d = state.deployment.as_ref();
            marks.check(6, d.is_some_and(|d| rollout_complete(d, generation)), at);
            marks.all()
        })
        .await;
    outcome.with_context(|| stuck("rolling update", &marks, &observer.state))?;
    let state = &observer.state;
    let new_hash = new_hash.unwrap_or_default();
    let is_new = |p: &&PodLife| p.hash == new_hash;
    let new_pods: Vec<&PodLife> = state.pods.values().filter(is_new).collect();
    let old_pods: Vec<&PodLife> = state
        .pods
        .values()
        .filter(|p| old.contains(&p.hash))
        .collect();
    let steps: Vec<&ScaleStep> = state.scale_steps.iter().filter(|s| s.at >= start).collect();
    Ok(RolloutResult {
        milestones: marks,
        min_ready,
        max_live,
        max_existing,
        cycle: cycle::links(&new_hash, &steps, &new_pods, &old_pods),
        steps: steps
            .iter()
            .map(|s| {
                let secs = s.at.saturating_duration_since(start).as_secs_f64();
                (secs, s.hash == new_hash, s.from, s.to)
            })
            .collect(),
    })
}

/// The delete phase's figures.
pub(crate) struct DeleteResult {
    /// Deployment gone, ReplicaSets gone, pods deleting, pods gone.
    pub(crate) milestones: Milestones,
}

/// Waits until the Deployment deleted at `start`, its ReplicaSets and pods are gone.
pub(crate) async fn delete(
    observer: &mut Observer,
    start: Instant,
    timeout: Duration,
    bar: &ProgressBar,
) -> anyhow::Result<DeleteResult> {
    let n = observer.state.total().existing;
    let labels = [
        "Deployment gone".to_owned(),
        "all ReplicaSets gone".to_owned(),
        format!("all {n} pods deleting"),
        format!("all {n} pods gone"),
    ];
    let mut marks = Milestones::new(start, &labels);
    let outcome = observer
        .until(start + timeout, |state, at| {
            let total = state.total();
            bar.set_position(n.saturating_sub(total.existing) as u64);
            marks.check(0, state.deployment.is_none(), at);
            marks.check(1, state.replica_sets.is_empty(), at);
            marks.check(2, total.live == 0, at);
            marks.check(3, total.existing == 0, at);
            marks.all()
        })
        .await;
    outcome.with_context(|| stuck("delete", &marks, &observer.state))?;
    Ok(DeleteResult { milestones: marks })
}

/// What a phase that timed out was still waiting for.
fn stuck(phase: &str, marks: &Milestones, state: &State) -> String {
    let t = state.total();
    format!(
        "the {phase} phase did not reach: {} (pods: {} live, {} Running, {} Ready, {} existing)",
        marks.pending(),
        t.live,
        t.running,
        t.ready,
        t.existing
    )
}

/// Per pod: created -> bound -> first agent status -> Running -> Ready, and created -> Ready.
fn pod_rows(pods: &[&PodLife]) -> Vec<LatencyRow> {
    let mut histograms: [Histogram<u64>; 5] = [(); 5].map(|()| report::latency_histogram());
    for pod in pods {
        let path = [
            Some(pod.created),
            pod.bound,
            pod.agent_status,
            pod.running,
            pod.ready,
        ];
        for (i, pair) in path.windows(2).enumerate() {
            if let [Some(from), Some(to)] = pair {
                report::record(&mut histograms[i], to.saturating_duration_since(*from));
            }
        }
        if let Some(ready) = pod.ready {
            report::record(
                &mut histograms[4],
                ready.saturating_duration_since(pod.created),
            );
        }
    }
    let labels = [
        "created -> bound (scheduler)",
        "bound -> first agent status (agent's watch, worker)",
        "first agent status -> Running (agent starts it)",
        "Running -> Ready (readiness probe)",
        "created -> Ready",
    ];
    labels
        .iter()
        .zip(&histograms)
        .map(|(label, h)| latency_row(label, h))
        .collect()
}

/// A row of `histogram`'s figures, or "no samples".
pub(super) fn latency_row(label: &str, histogram: &Histogram<u64>) -> LatencyRow {
    if histogram.is_empty() {
        LatencyRow::missing(label, "no samples")
    } else {
        LatencyRow::measured(label, LatencySummary::of(histogram))
    }
}
