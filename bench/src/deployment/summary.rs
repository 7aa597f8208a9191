//! The report of `wasmkube-bench deployment`: a table for people, JSON for `--json`.

use std::fmt::Write as _;

use serde_json::{Value, json};

use super::DeploymentReport;
use super::phases::{ALL_RUNNING, Milestones};
use crate::table::{self, LatencyRow};

impl DeploymentReport {
    /// Pods per second from the create until all were Running.
    fn pods_per_second(&self) -> Option<f64> {
        let secs = self.create.milestones.secs(ALL_RUNNING)?;
        (secs > 0.0).then(|| self.replicas as f64 / secs)
    }

    /// The number of scale-ups of the new ReplicaSet and scale-downs of the old ones.
    fn step_counts(&self) -> (usize, usize) {
        let steps = &self.rollout.steps;
        let ups = steps.iter().filter(|s| s.1 && s.3 > s.2).count();
        let downs = steps.iter().filter(|s| !s.1 && s.3 < s.2).count();
        (ups, downs)
    }

    /// The report as one JSON document.
    pub(crate) fn to_json(&self) -> Value {
        let n = self.replicas;
        let (ups, downs) = self.step_counts();
        json!({
            "run": self.header.to_json(),
            "replicas": n,
            "sample": super::SAMPLE,
            "strategy": {
                "max_surge": self.bounds.max_surge,
                "max_unavailable": self.bounds.max_unavailable,
            },
            "create": {
                "milestones_s": milestones_json(&self.create.milestones),
                "pods_per_s_to_all_running": self.pods_per_second(),
                "per_pod": rows_json(&self.create.per_pod),
            },
            "rolling_update": {
                "milestones_s": milestones_json(&self.rollout.milestones),
                "min_ready_pods": self.rollout.min_ready,
                "min_ready_bound": self.bounds.min_ready(n),
                "max_pods": self.rollout.max_live,
                "max_pods_bound": self.bounds.max_pods(n),
                "max_pod_objects_with_deleting": self.rollout.max_existing,
                "new_rs_scale_ups": ups,
                "old_rs_scale_downs": downs,
                "cycle": rows_json(&self.rollout.cycle),
                "scale_steps": self.rollout.steps.iter().map(|(at, new, from, to)| json!({
                    "at_s": at, "replica_set": if *new { "new" } else { "old" },
                    "from": from, "to": to,
                })).collect::<Vec<_>>(),
            },
            "delete": {
                "milestones_s": milestones_json(&self.delete.milestones),
            },
            "store_writes": {
                "create": self.writes[0],
                "rolling_update": self.writes[1],
                "delete": self.writes[2],
            },
        })
    }

    /// The report as a table.
    pub(crate) fn to_table(&self) -> String {
        let n = self.replicas;
        let mut out = String::new();
        self.header.write(&mut out);
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "1. create a Deployment of {n} replicas of {} (readiness probe every 2 s)",
            super::SAMPLE
        );
        milestones_table(&mut out, &self.create.milestones, "after the create");
        if let Some(rate) = self.pods_per_second() {
            let _ = writeln!(out, "  {rate:.0} pods/s from the create to all Running");
        }
        let _ = writeln!(out, "  per pod");
        table::latency_table(&mut out, &self.create.per_pod);
        let _ = writeln!(out);

        let r = &self.rollout;
        let b = self.bounds;
        let _ = writeln!(
            out,
            "2. rolling update (a new env var; maxSurge {}, maxUnavailable {})",
            b.max_surge, b.max_unavailable
        );
        milestones_table(&mut out, &r.milestones, "after the patch");
        let _ = writeln!(
            out,
            "  Ready pods at least {} (bound >= {}); pods at most {} (bound <= {}); \
             pod objects with deleting ones at most {}",
            r.min_ready,
            b.min_ready(n),
            r.max_live,
            b.max_pods(n),
            r.max_existing
        );
        let (ups, downs) = self.step_counts();
        let _ = writeln!(
            out,
            "  {ups} scale-ups of the new ReplicaSet, {downs} scale-downs of the old one"
        );
        let _ = writeln!(out, "  where the time goes, link by link of the cycle");
        table::latency_table(&mut out, &r.cycle);
        let _ = writeln!(out);

        let _ = writeln!(
            out,
            "3. delete the Deployment (propagationPolicy Background)"
        );
        milestones_table(&mut out, &self.delete.milestones, "after the delete");
        out
    }
}

fn milestones_table(out: &mut String, milestones: &Milestones, after: &str) {
    let rows = milestones.rows();
    let width = rows.iter().map(|(l, _)| l.len()).max().unwrap_or(9).max(9);
    let _ = writeln!(out, "  {:<width$} {:>9}", "milestone", format!("s {after}"));
    for (label, secs) in rows {
        let secs = secs.map_or_else(|| "-".to_owned(), |s| format!("{s:.2}"));
        let _ = writeln!(out, "  {label:<width$} {secs:>9}");
    }
}

fn milestones_json(milestones: &Milestones) -> Value {
    Value::Array(
        milestones
            .rows()
            .into_iter()
            .map(|(what, secs)| json!({ "what": what, "s": secs }))
            .collect(),
    )
}

fn rows_json(rows: &[LatencyRow]) -> Value {
    Value::Array(rows.iter().map(LatencyRow::to_json).collect())
}
