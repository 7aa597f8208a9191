//! The scheduling queue: which pending pod to try next, and when to try again.
//!
//! Like kube-scheduler's, it has three parts:
//! - **active**: pods ready for a scheduling attempt, highest `spec.priority` first, then
//!   oldest first;
//! - **backoff**: pods whose last attempt failed recently; each waits `initial_backoff`
//!   doubling per attempt up to `max_backoff` before becoming active again;
//! - **unschedulable**: pods no node could take. They wait for a cluster change that may
//!   help ([`SchedulingQueue::move_all_unschedulable`]: a node added or changed, a pod
//!   removed, a RuntimeClass added), or at most `unschedulable_retry` ([`SchedulingQueue::flush`]).
//!
//! A pod handed out by [`SchedulingQueue::pop`] is *in flight* until the scheduler reports
//! the outcome. Stale heap items are skipped lazily (each carries the sequence number it was
//! pushed with), so every operation is `O(log n)` without searching the heaps.

use std::cmp::{Ordering, Reverse};
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::snapshot::PodInfo;

/// Timings of the queue.
#[derive(Clone, Copy, Debug)]
pub struct QueueTimings {
    /// Backoff after the first failed attempt.
    pub initial_backoff: Duration,
    /// Longest backoff.
    pub max_backoff: Duration,
    /// An unschedulable pod is retried after this long even if nothing changed.
    pub unschedulable_retry: Duration,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Active,
    Backoff,
    Unschedulable,
    InFlight,
}

#[derive(Debug)]
struct Entry {
    pod: Arc<PodInfo>,
    state: State,
    attempts: u32,
    seq: u64,
    /// When the pod entered the queue or its last attempt failed.
    since: Instant,
    /// Set when an update arrived while in flight: retry promptly if this attempt fails.
    updated_in_flight: bool,
}

#[derive(Debug, PartialEq, Eq)]
struct ActiveItem {
    priority: i32,
    seq: u64,
    uid: String,
}

impl Ord for ActiveItem {
    fn cmp(&self, other: &Self) -> Ordering {
        self.priority
            .cmp(&other.priority)
            .then_with(|| other.seq.cmp(&self.seq))
    }
}

impl PartialOrd for ActiveItem {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// See the module documentation.
#[derive(Debug)]
pub struct SchedulingQueue {
    timings: QueueTimings,
    entries: HashMap<String, Entry>,
    active: BinaryHeap<ActiveItem>,
    backoff: BinaryHeap<Reverse<(Instant, u64, String)>>,
    unschedulable: HashSet<String>,
    next_seq: u64,
}

impl SchedulingQueue {
    /// An empty queue.
    pub fn new(timings: QueueTimings) -> Self {
        SchedulingQueue {
            timings,
            entries: HashMap::new(),
            active: BinaryHeap::new(),
            backoff: BinaryHeap::new(),
            unschedulable: HashSet::new(),
            next_seq: 0,
        }
    }

    /// How many pods the queue holds in any state.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the queue holds no pods.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether a pod is waiting for a cluster change.
    pub fn is_unschedulable(&self, uid: &str) -> bool {
        self.unschedulable.contains(uid)
    }

    /// Whether the queue holds the pod.
    pub fn contains(&self, uid: &str) -> bool {
        self.entries.contains_key(uid)
    }

    /// UIDs of every pod in the queue.
    pub fn uids(&self) -> Vec<String> {
        self.entries.keys().cloned().collect()
    }

    /// Adds a new pending pod, or records an update of a known one. An update that changes
    /// what scheduling looks at (spec, labels) makes an unschedulable pod active again.
    pub fn add_or_update(&mut self, pod: Arc<PodInfo>, now: Instant) {
        let uid = pod.uid.clone();
        let Some(entry) = self.entries.get_mut(&uid) else {
            self.entries.insert(
                uid.clone(),
                Entry {
                    pod,
                    state: State::Active,
                    attempts: 0,
                    seq: 0,
                    since: now,
                    updated_in_flight: false,
                },
            );
            self.push_active(&uid);
            return;
        };
        let relevant = scheduling_relevant_update(&entry.pod, &pod);
        entry.pod = pod;
        if !relevant {
            return;
        }
        match entry.state {
            State::Unschedulable => {
                self.unschedulable.remove(&uid);
                self.requeue(&uid, now);
            }
            State::InFlight => entry.updated_in_flight = true,
            State::Active | State::Backoff => {}
        }
    }

    /// Forgets a pod (bound, deleted, or no longer ours).
    pub fn remove(&mut self, uid: &str) {
        self.entries.remove(uid);
        self.unschedulable.remove(uid);
    }

    /// The next pod to schedule; it stays in flight until [`SchedulingQueue::remove`],
    /// [`SchedulingQueue::mark_unschedulable`] or [`SchedulingQueue::backoff`].
    pub fn pop(&mut self) -> Option<Arc<PodInfo>> {
        while let Some(item) = self.active.pop() {
            let Some(entry) = self.entries.get_mut(&item.uid) else {
                continue;
            };
            if entry.state != State::Active || entry.seq != item.seq {
                continue;
            }
            entry.state = State::InFlight;
            entry.attempts = entry.attempts.saturating_add(1);
            entry.updated_in_flight = false;
            return Some(entry.pod.clone());
        }
        None
    }

    /// Parks an in-flight pod that fit no node until the cluster changes. A pod updated
    /// during its attempt goes to backoff instead, to be retried with its new spec.
    pub fn mark_unschedulable(&mut self, uid: &str, now: Instant) {
        let Some(entry) = self.entries.get_mut(uid) else {
            return;
        };
        entry.since = now;
        if entry.updated_in_flight {
            self.requeue(uid, now);
            return;
        }
        entry.state = State::Unschedulable;
        self.unschedulable.insert(uid.to_string());
    }

    /// Retries an in-flight pod after its backoff (e.g. a failed binding).
    pub fn backoff(&mut self, uid: &str, now: Instant) {
        if let Some(entry) = self.entries.get_mut(uid) {
            entry.since = now;
            self.requeue(uid, now);
        }
    }

    /// A cluster change may let unschedulable pods fit: they become active (or wait out the
    /// rest of their backoff). Returns how many moved.
    pub fn move_all_unschedulable(&mut self, now: Instant) -> usize {
        let uids: Vec<String> = self.unschedulable.drain().collect();
        for uid in &uids {
            self.requeue(uid, now);
        }
        uids.len()
    }

    /// Activates pods whose backoff has passed and retries pods unschedulable for longer
    /// than `unschedulable_retry`.
    pub fn flush(&mut self, now: Instant) {
        while let Some(Reverse((at, seq, _))) = self.backoff.peek() {
            if *at > now {
                break;
            }
            let seq = *seq;
            let Some(Reverse((_, _, uid))) = self.backoff.pop() else {
                break;
            };
            if self
                .entries
                .get(&uid)
                .is_some_and(|e| e.state == State::Backoff && e.seq == seq)
            {
                self.push_active(&uid);
            }
        }
        let retry = self.timings.unschedulable_retry;
        let stale: Vec<String> = self
            .unschedulable
            .iter()
            .filter(|uid| {
                self.entries
                    .get(*uid)
                    .is_none_or(|e| now.saturating_duration_since(e.since) >= retry)
            })
            .cloned()
            .collect();
        for uid in stale {
            self.unschedulable.remove(&uid);
            self.requeue(&uid, now);
        }
    }

    /// When the next backoff ends, if any pod is backing off.
    pub fn next_backoff_expiry(&self) -> Option<Instant> {
        self.backoff.peek().map(|Reverse((at, _, _))| *at)
    }

    fn backoff_duration(&self, attempts: u32) -> Duration {
        let shift = attempts.saturating_sub(1).min(16);
        self.timings
            .initial_backoff
            .saturating_mul(1 << shift)
            .min(self.timings.max_backoff)
    }

    /// Moves a pod to active, or to backoff if its last attempt was too recent.
    fn requeue(&mut self, uid: &str, now: Instant) {
        let Some(entry) = self.entries.get(uid) else {
            return;
        };
        let ready_at = entry.since + self.backoff_duration(entry.attempts);
        if entry.attempts == 0 || ready_at <= now {
            self.push_active(uid);
        } else {
            self.push_backoff(uid, ready_at);
        }
    }

    fn push_active(&mut self, uid: &str) {
        self.next_seq += 1;
        let seq = self.next_seq;
        let Some(entry) = self.entries.get_mut(uid) else {
            return;
        };
        entry.state = State::Active;
        entry.seq = seq;
        let priority = entry
            .pod
            .pod
            .spec
            .as_ref()
            .and_then(|s| s.priority)
            .unwrap_or(0);
        self.active.push(ActiveItem {
            priority,
            seq,
            uid: uid.to_string(),
        });
    }

    fn push_backoff(&mut self, uid: &str, at: Instant) {
        self.next_seq += 1;
        let seq = self.next_seq;
        let Some(entry) = self.entries.get_mut(uid) else {
            return;
        };
        entry.state = State::Backoff;
        entry.seq = seq;
        self.backoff.push(Reverse((at, seq, uid.to_string())));
    }
}

/// Whether an update of a pending pod can change where it fits.
fn scheduling_relevant_update(old: &PodInfo, new: &PodInfo) -> bool {
    old.pod.spec != new.pod.spec || old.pod.metadata.labels != new.pod.metadata.labels
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{info, pod, with_spec};

    fn timings() -> QueueTimings {
        QueueTimings {
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(10),
            unschedulable_retry: Duration::from_secs(30),
        }
    }

    fn arc(name: &str) -> Arc<PodInfo> {
        Arc::new(info(pod(name)))
    }

    fn popped(q: &mut SchedulingQueue) -> Option<String> {
        q.pop().map(|p| p.uid.clone())
    }

    #[test]
    fn pods_come_out_by_priority_then_age() {
        let mut q = SchedulingQueue::new(timings());
        let now = Instant::now();
        q.add_or_update(arc("old"), now);
        q.add_or_update(arc("young"), now);
        q.add_or_update(
            Arc::new(info(with_spec(pod("urgent"), |s| s.priority = Some(1000)))),
            now,
        );
        assert_eq!(popped(&mut q).as_deref(), Some("urgent"));
        assert_eq!(popped(&mut q).as_deref(), Some("old"));
        assert_eq!(popped(&mut q).as_deref(), Some("young"));
        assert_eq!(popped(&mut q), None);
    }

    #[test]
    fn an_unschedulable_pod_waits_for_a_cluster_change() {
        let mut q = SchedulingQueue::new(timings());
        let t0 = Instant::now();
        q.add_or_update(arc("p"), t0);
        assert!(q.pop().is_some());
        q.mark_unschedulable("p", t0);
        assert!(q.is_unschedulable("p"));
        q.flush(t0 + Duration::from_secs(5));
        assert_eq!(popped(&mut q), None);
        // A node appears after the backoff has passed: the pod is tried at once.
        assert_eq!(q.move_all_unschedulable(t0 + Duration::from_secs(2)), 1);
        assert_eq!(popped(&mut q).as_deref(), Some("p"));
    }

    #[test]
    fn a_cluster_change_during_backoff_waits_out_the_backoff() {
        let mut q = SchedulingQueue::new(timings());
        let t0 = Instant::now();
        q.add_or_update(arc("p"), t0);
        assert!(q.pop().is_some());
        q.mark_unschedulable("p", t0);
        q.move_all_unschedulable(t0 + Duration::from_millis(100));
        assert_eq!(popped(&mut q), None);
        assert_eq!(q.next_backoff_expiry(), Some(t0 + Duration::from_secs(1)));
        q.flush(t0 + Duration::from_secs(1));
        assert_eq!(popped(&mut q).as_deref(), Some("p"));
    }

    #[test]
    fn backoff_doubles_per_attempt_up_to_the_maximum() {
        let q = SchedulingQueue::new(timings());
        assert_eq!(q.backoff_duration(1), Duration::from_secs(1));
        assert_eq!(q.backoff_duration(2), Duration::from_secs(2));
        assert_eq!(q.backoff_duration(4), Duration::from_secs(8));
        assert_eq!(q.backoff_duration(5), Duration::from_secs(10));
        assert_eq!(q.backoff_duration(100), Duration::from_secs(10));
    }

    #[test]
    fn unschedulable_pods_are_retried_periodically() {
        let mut q = SchedulingQueue::new(timings());
        let t0 = Instant::now();
        q.add_or_update(arc("p"), t0);
        assert!(q.pop().is_some());
        q.mark_unschedulable("p", t0);
        q.flush(t0 + Duration::from_secs(29));
        assert_eq!(popped(&mut q), None);
        q.flush(t0 + Duration::from_secs(30));
        assert_eq!(popped(&mut q).as_deref(), Some("p"));
    }

    #[test]
    fn a_spec_update_reactivates_an_unschedulable_pod_but_a_status_update_does_not() {
        let mut q = SchedulingQueue::new(timings());
        let t0 = Instant::now();
        q.add_or_update(arc("p"), t0);
        assert!(q.pop().is_some());
        q.mark_unschedulable("p", t0);
        let t1 = t0 + Duration::from_secs(5);
        let mut status_only = pod("p");
        status_only.status = Some(Default::default());
        q.add_or_update(Arc::new(info(status_only)), t1);
        assert!(q.is_unschedulable("p"));
        let relabelled = with_spec(pod("p"), |s| {
            s.node_selector = Some([("zone".to_string(), "a".to_string())].into())
        });
        q.add_or_update(Arc::new(info(relabelled)), t1);
        assert_eq!(popped(&mut q).as_deref(), Some("p"));
    }

    #[test]
    fn removed_pods_are_never_popped() {
        let mut q = SchedulingQueue::new(timings());
        let now = Instant::now();
        q.add_or_update(arc("a"), now);
        q.add_or_update(arc("b"), now);
        q.remove("a");
        assert_eq!(popped(&mut q).as_deref(), Some("b"));
        assert_eq!(popped(&mut q), None);
        assert_eq!(q.len(), 1);
    }

    #[test]
    fn a_failed_binding_retries_after_backoff() {
        let mut q = SchedulingQueue::new(timings());
        let t0 = Instant::now();
        q.add_or_update(arc("p"), t0);
        assert!(q.pop().is_some());
        q.backoff("p", t0);
        assert_eq!(popped(&mut q), None);
        q.flush(t0 + Duration::from_secs(1));
        assert_eq!(popped(&mut q).as_deref(), Some("p"));
    }
}
