//! Where a rolling update's time goes. The update proceeds in cycles:
//!
//! new ReplicaSet scaled up -> its pods created -> Running -> Ready -> old ReplicaSet scaled
//! down -> its pods deleting -> gone -> new ReplicaSet scaled up again -> ...
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
use crate::commands::bench::report;
use crate::commands::bench::table::LatencyRow;

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
    let gones: Vec<Instant> = old_pods.iter().filter_map(|p| p.gone).collect();

    let mut h: [Histogram<u64>; 7] = [(); 7].map(|()| report::latency_histogram());
    for pod in new_pods {
        since_latest(&mut h[0], &ups, pod.created);
        if let Some(running) = pod.running {
            report::record(&mut h[1], running.saturating_duration_since(pod.created));
            if let Some(ready) = pod.ready {
                report::record(&mut h[2], ready.saturating_duration_since(running));
            }
        }
    }
    for &down in &downs {
        since_latest(&mut h[3], &readies, down);
    }
    for pod in old_pods {
        if let Some(deleting) = pod.deleting {
            since_latest(&mut h[4], &downs, deleting);
            if let Some(gone) = pod.gone {
                report::record(&mut h[5], gone.saturating_duration_since(deleting));
            }
        }
    }
    for &up in ups.iter().skip(1) {
        since_latest(&mut h[6], &gones, up);
    }
    let labels = [
        "new RS scaled up -> its pod created (ReplicaSet controller)",
        "new pod created -> Running (scheduler, agent)",
        "new pod Running -> Ready (readiness probe)",
        "latest new pod Ready -> old RS scaled down (RS status, Deployment controller)",
        "old RS scaled down -> its pod deleting (ReplicaSet controller)",
        "old pod deleting -> gone (agent stops it)",
        "latest old pod gone -> new RS scaled up (RS status, Deployment controller)",
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

    fn pod(hash: &str, t0: Instant, ms: [Option<u64>; 5]) -> PodLife {
        let at = |i: usize| ms[i].map(|m| t0 + Duration::from_millis(m));
        PodLife {
            hash: hash.to_owned(),
            created: at(0).unwrap_or(t0),
            running: at(1),
            ready: at(2),
            ready_now: ms[2].is_some(),
            deleting: at(3),
            gone: at(4),
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
        // new scaled 0 -> 1 at 0; its pod created at 10, Running at 30, Ready at 2030;
        // old scaled 1 -> 0 at 2040; its pod deleting at 2050, gone at 2060;
        // new scaled 1 -> 2 at 2100.
        let steps = [
            step("new", ms(0), 0, 1),
            step("old", ms(2040), 1, 0),
            step("new", ms(2100), 1, 2),
        ];
        let steps: Vec<&ScaleStep> = steps.iter().collect();
        let new_pod = pod("new", t0, [Some(10), Some(30), Some(2030), None, None]);
        let old_pod = pod("old", t0, [None, None, None, Some(2050), Some(2060)]);
        let rows = links("new", &steps, &[&new_pod], &[&old_pod]);
        // The histograms keep 3 significant digits.
        let p50 = |i: usize| rows[i].summary().map_or(-1.0, |s| s.p50_ms);
        let expected = [10.0, 20.0, 2000.0, 10.0, 10.0, 10.0, 40.0];
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
        assert!(rows[3].summary().is_none());
    }
}
