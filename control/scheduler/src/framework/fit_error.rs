//! Why a pod fits no node, rendered as kube-scheduler renders it in the pod's
//! `PodScheduled` condition and `FailedScheduling` event:
//!
//! `0/3 nodes are available: 1 Insufficient memory, 2 node(s) had untolerated taint
//! {dedicated: gpu}. preemption: 0/3 nodes are available: 1 No preemption victims found for
//! incoming pod, 2 Preemption is not helpful for scheduling.`
//!
//! wasmkube does not preempt yet; the `preemption:` part says what kube-scheduler's default
//! preemption says when it finds no victims, so users and tools read the same text.

use std::borrow::Cow;
use std::fmt;

use super::{ReasonHistogram, Unschedulable};
use crate::snapshot::PodInfo;

/// The per-node rejections of one cycle.
#[derive(Debug, Default)]
pub(crate) struct Diagnosis {
    reasons: ReasonHistogram,
    resolvable: usize,
    unresolvable: usize,
    plugins: Vec<&'static str>,
}

impl Diagnosis {
    /// Counts one rejected node.
    pub(crate) fn record(&mut self, plugin: &'static str, rejection: Unschedulable) {
        let resolvable = rejection.resolvable;
        for reason in rejection.into_reasons() {
            *self.reasons.entry(reason).or_insert(0) += 1;
        }
        if resolvable {
            self.resolvable += 1;
        } else {
            self.unresolvable += 1;
        }
        if !self.plugins.contains(&plugin) {
            self.plugins.push(plugin);
        }
    }
}

/// A pod fits no node. `Display` gives kube-scheduler's message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FitError {
    num_all_nodes: usize,
    pre_filter: Option<String>,
    reasons: Vec<String>,
    resolvable: usize,
    unresolvable: usize,
    preemption_never: bool,
    plugins: Vec<&'static str>,
}

impl FitError {
    /// The cluster has no nodes.
    pub fn no_nodes() -> Self {
        FitError {
            num_all_nodes: 0,
            pre_filter: None,
            reasons: Vec::new(),
            resolvable: 0,
            unresolvable: 0,
            preemption_never: false,
            plugins: Vec::new(),
        }
    }

    /// A pre-filter plugin rejected the pod for every node.
    pub(crate) fn pre_filter(
        pod: &PodInfo,
        num_all_nodes: usize,
        plugin: &'static str,
        rejection: Unschedulable,
    ) -> Self {
        let resolvable = rejection.resolvable;
        FitError {
            num_all_nodes,
            pre_filter: Some(rejection.to_string()),
            reasons: Vec::new(),
            resolvable: if resolvable { num_all_nodes } else { 0 },
            unresolvable: if resolvable { 0 } else { num_all_nodes },
            preemption_never: preemption_never(pod),
            plugins: vec![plugin],
        }
    }

    /// Every node was rejected by a filter.
    pub(crate) fn filtered(pod: &PodInfo, num_all_nodes: usize, diagnosis: Diagnosis) -> Self {
        let mut reasons: Vec<String> = diagnosis
            .reasons
            .iter()
            .map(|(reason, count)| format!("{count} {reason}"))
            .collect();
        // kube-scheduler sorts the formatted strings, count included.
        reasons.sort();
        FitError {
            num_all_nodes,
            pre_filter: None,
            reasons,
            resolvable: diagnosis.resolvable,
            unresolvable: diagnosis.unresolvable,
            preemption_never: preemption_never(pod),
            plugins: diagnosis.plugins,
        }
    }

    /// How many nodes the cluster had.
    pub fn num_all_nodes(&self) -> usize {
        self.num_all_nodes
    }

    /// The plugins that rejected nodes (for deciding which cluster changes may help).
    pub fn unschedulable_plugins(&self) -> &[&'static str] {
        &self.plugins
    }
}

fn preemption_never(pod: &PodInfo) -> bool {
    pod.pod
        .spec
        .as_ref()
        .and_then(|s| s.preemption_policy.as_deref())
        == Some("Never")
}

impl fmt::Display for FitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.num_all_nodes;
        if n == 0 {
            return f.write_str("no nodes available to schedule pods");
        }
        write!(f, "0/{n} nodes are available:")?;
        if let Some(message) = &self.pre_filter {
            write!(f, " {message}.")?;
        } else if !self.reasons.is_empty() {
            write!(f, " {}.", self.reasons.join(", "))?;
        }
        if self.preemption_never {
            return f.write_str(" preemption: not eligible due to preemptionPolicy=Never.");
        }
        let mut parts: Vec<Cow<'_, str>> = Vec::with_capacity(2);
        if self.resolvable > 0 {
            parts.push(
                format!(
                    "{} No preemption victims found for incoming pod",
                    self.resolvable
                )
                .into(),
            );
        }
        if self.unresolvable > 0 {
            parts.push(
                format!(
                    "{} Preemption is not helpful for scheduling",
                    self.unresolvable
                )
                .into(),
            );
        }
        parts.sort();
        write!(f, " preemption: 0/{n} nodes are available:")?;
        if !parts.is_empty() {
            write!(f, " {}.", parts.join(", "))?;
        }
        Ok(())
    }
}

impl std::error::Error for FitError {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::pod_with_requests;

    fn pod() -> PodInfo {
        PodInfo::new(pod_with_requests("p", "1", "1Gi"))
    }

    #[test]
    fn filter_rejections_are_counted_per_reason_and_sorted() {
        let mut d = Diagnosis::default();
        d.record(
            "TaintToleration",
            Unschedulable::unresolvable("node(s) had untolerated taint {dedicated: gpu}"),
        );
        d.record(
            "NodeResourcesFit",
            Unschedulable::resolvable("Insufficient memory"),
        );
        let e = FitError::filtered(&pod(), 2, d);
        assert_eq!(
            e.to_string(),
            "0/2 nodes are available: 1 Insufficient memory, 1 node(s) had untolerated taint \
             {dedicated: gpu}. preemption: 0/2 nodes are available: 1 No preemption victims \
             found for incoming pod, 1 Preemption is not helpful for scheduling."
        );
        assert_eq!(
            e.unschedulable_plugins(),
            &["TaintToleration", "NodeResourcesFit"]
        );
    }

    #[test]
    fn a_node_short_of_several_resources_counts_each() {
        let mut d = Diagnosis::default();
        let both = Unschedulable::resolvable("Insufficient cpu").and("Insufficient memory");
        d.record("NodeResourcesFit", both);
        d.record(
            "NodeResourcesFit",
            Unschedulable::resolvable("Insufficient memory"),
        );
        let e = FitError::filtered(&pod(), 2, d);
        assert_eq!(
            e.to_string(),
            "0/2 nodes are available: 1 Insufficient cpu, 2 Insufficient memory. preemption: \
             0/2 nodes are available: 2 No preemption victims found for incoming pod."
        );
    }

    #[test]
    fn a_pre_filter_rejection_replaces_the_node_reasons() {
        let e = FitError::pre_filter(
            &pod(),
            3,
            "RuntimeClass",
            Unschedulable::unresolvable("RuntimeClass \"gvisor\" not found"),
        );
        assert_eq!(
            e.to_string(),
            "0/3 nodes are available: RuntimeClass \"gvisor\" not found. preemption: 0/3 nodes \
             are available: 3 Preemption is not helpful for scheduling."
        );
    }

    #[test]
    fn pods_that_never_preempt_say_so() {
        let mut p = pod_with_requests("p", "1", "1Gi");
        if let Some(spec) = p.spec.as_mut() {
            spec.preemption_policy = Some("Never".into());
        }
        let mut d = Diagnosis::default();
        d.record(
            "NodeResourcesFit",
            Unschedulable::resolvable("Insufficient cpu"),
        );
        let e = FitError::filtered(&PodInfo::new(p), 1, d);
        assert_eq!(
            e.to_string(),
            "0/1 nodes are available: 1 Insufficient cpu. preemption: not eligible due to \
             preemptionPolicy=Never."
        );
    }
}
