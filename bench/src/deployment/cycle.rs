//! Where a rolling update's time goes. The update proceeds in cycles:
//!
//! new ReplicaSet scaled up -> its pods created -> bound -> started by the agent -> Running
//! -> Ready -> old ReplicaSet scaled down -> its pods deleting (no longer counted in the old
//! ReplicaSet's status.replicas) -> new ReplicaSet scaled up again -> ...
//!
//! An old pod's way from deleting to gone (the agent stops it) is off the cycle: neither the
//! surge nor the availability bound counts terminating pods.
//!
//! Each link is timed from what the watches saw: per pod for the links a pod goes through
//! (created -> Running, ...), and for the links that end in a scaling step or a pod event,
//! from the latest event of the previous link before it (e.g. a scale-down of the old
//! ReplicaSet counts from the latest new pod that turned Ready before it). The slowest
//! link, times the number of cycles, is what sets the pace.

use std::time::Instant;

use hdrhistogram::Histogram;

use super::observe::{PodLife, ScaleStep};
use super::phases::latency_row;
use crate::report;
use crate::table::LatencyRow;

/// The links of the cycle, in cycle order, each as a latency row.
pub(crate) fn links(
    new_hash: &str,
    steps: &[&ScaleStep],
    new_pods: &[&PodLife],
    old_pods: &[&PodLife],
) -> Vec<LatencyRow> {
    let ups: Vec<Instant> = steps
        .iter()
        .filter(|s| s.hash == new_hash && s.to > s.from)
        .map(|s| s.at)
        .collect();
    let downs: Vec<Instant> = steps
        .iter()
        .filter(|s| s.hash != new_hash && s.to < s.from)
        .map(|s| s.at)
        .collect();
    let readies: Vec<Instant> = new_pods.iter().filter_map(|p| p.ready).collect();
    let deletions: Vec<Instant> = old_pods.iter().filter_map(|p| p.deleting).collect();

    let mut h: [Histogram<u64>; 9] = [(); 9].map(|()| report::latency_histogram());
    for pod in new_pods {
        since_latest(&mut h[0], &ups, pod.created);
        let path = [
            Some(pod.created),
            pod.bound,
            pod.agent_status,
            pod.running,
            pod.ready,
        ];
        for (i, pair) in path.windows(2).enumerate() {
            if let [Some(from), Some(to)] = pair {
                report::record(&mut h[1 + i], to.saturating_duration_since(*from));
            }
        }
    }
    for &down in &downs {
        since_latest(&mut h[5], &readies, down);
    }
    for pod in old_pods {
        if let Some(deleting) = pod.deleting {
            since_latest(&mut h[6], &downs, deleting);
            if let Some(gone) = pod.gone {
                report::record(&mut h[8], gone.saturating_duration_since(deleting));
            }
        }
    }
    for &up in ups.iter().skip(1) {
        since_latest(&mut h[7], &deletions, up);
    }
    let labels = [
        "new RS scaled up -> its pod created (ReplicaSet controller)",
        "new pod created -> bound (scheduler)",
        "new pod bound -> first agent status (agent's watch, worker)",
        "new pod first agent status -> Running (agent starts it)",
        "new pod Running -> Ready (readiness probe)",
        "latest new pod Ready -> old RS scaled down (RS status, Deployment controller)",
        "old RS scaled down -> its pod deleting (ReplicaSet controller)",
        "latest old pod deleting -> new RS scaled up (RS status, Deployment controller)",
        "off the cycle: old pod deleting -> gone (agent stops it)",
    ];
    labels
        .iter()
        .zip(&h)
        .map(|(label, h)| latency_row(label, h))
        .collect()
}

/// Records `at` minus the latest of `events` at or before it, if there is one.
fn since_latest(histogram: &mut Histogram<u64>, events: &[Instant], at: Instant) {
    if let Some(latest) = events.iter().filter(|e| **e <= at).max() {
        report::record(histogram, at.saturating_duration_since(*latest));
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// A pod whose milestones are `ms` milliseconds after `t0`: created, bound, agent
    /// status, Running, Ready, deleting, gone.
    fn pod(hash: &str, t0: Instant, ms: [Option<u64>; 7]) -> PodLife {
        let at = |i: usize| ms[i].map(|m| t0 + Duration::from_millis(m));
        PodLife {
            hash: hash.to_owned(),
            created: at(0).unwrap_or(t0),
            bound: at(1),
            agent_status: at(2),
            running: at(3),
            ready: at(4),
            ready_now: ms[4].is_some(),
            deleting: at(5),
            gone: at(6),
        }
    }

    fn step(hash: &str, at: Instant, from: i32, to: i32) -> ScaleStep {
        ScaleStep {
            at,
            hash: hash.to_owned(),
            from,
            to,
        }
    }

    #[test]
    fn each_link_counts_from_the_latest_event_of_the_previous_link() {
        let t0 = Instant::now();
        let ms = |m: u64| t0 + Duration::from_millis(m);
        // new scaled 0 -> 1 at 0; its pod created at 10, bound at 15, agent status at 25,
        // Running at 30, Ready at 2030; old scaled 1 -> 0 at 2040; its pod deleting at 2050,
        // gone at 2060; new scaled 1 -> 2 at 2100.
        let steps = [
            step("new", ms(0), 0, 1),
            step("old", ms(2040), 1, 0),
            step("new", ms(2100), 1, 2),
        ];
        let steps: Vec<&ScaleStep> = steps.iter().collect();
        let new = [
            Some(10),
            Some(15),
            Some(25),
            Some(30),
            Some(2030),
            None,
            None,
        ];
        let old = [None, None, None, None, None, Some(2050), Some(2060)];
        let (new_pod, old_pod) = (pod("new", t0, new), pod("old", t0, old));
        let rows = links("new", &steps, &[&new_pod], &[&old_pod]);
        // The histograms keep 3 significant digits.
        let p50 = |i: usize| rows[i].summary().map_or(-1.0, |s| s.p50_ms);
        let expected = [10.0, 5.0, 10.0, 5.0, 2000.0, 10.0, 10.0, 50.0, 10.0];
        for (i, ms) in expected.iter().enumerate() {
            assert!((p50(i) - ms).abs() <= ms / 500.0, "link {i}: {}", p50(i));
        }
    }

    #[test]
    fn a_link_without_a_previous_event_has_no_sample() {
        let t0 = Instant::now();
        // The first scale-down comes before any new pod is Ready (maxUnavailable allows it).
        let steps = [step("old", t0, 4, 3)];
        let steps: Vec<&ScaleStep> = steps.iter().collect();
        let rows = links("new", &steps, &[], &[]);
        assert!(rows[5].summary().is_none());
    }
}
