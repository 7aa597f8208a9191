//! TaintToleration: a node's `NoSchedule` and `NoExecute` taints keep out pods that do not
//! tolerate them; untolerated `PreferNoSchedule` taints lower the node's score.
//!
//! The tolerations that count are the pod's own plus those of its RuntimeClass
//! ([`effective_tolerations`]).

use k8s_openapi::api::core::v1::{Taint, Toleration};
use wasmkube_api::scheduling::tolerates;

use super::runtime_class::RuntimeClassScheduling;
use crate::framework::{CycleState, FilterPlugin, MAX_NODE_SCORE, ScorePlugin, Unschedulable};
use crate::snapshot::{NodeInfo, PodInfo};

/// The pod's tolerations followed by its RuntimeClass's (resolved in the RuntimeClass
/// plugin's pre-filter).
pub fn effective_tolerations<'a>(
    pod: &'a PodInfo,
    state: &'a CycleState,
) -> impl Iterator<Item = &'a Toleration> + 'a {
    let own = pod
        .pod
        .spec
        .as_ref()
        .and_then(|s| s.tolerations.as_deref())
        .unwrap_or(&[]);
    let class = state
        .read::<RuntimeClassScheduling>()
        .map(|rc| rc.tolerations.as_slice())
        .unwrap_or(&[]);
    own.iter().chain(class)
}

/// Filters out nodes with untolerated `NoSchedule`/`NoExecute` taints and prefers nodes
/// with fewer untolerated `PreferNoSchedule` taints.
#[derive(Clone, Copy, Debug, Default)]
pub struct TaintToleration;

impl FilterPlugin for TaintToleration {
    fn name(&self) -> &'static str {
        "TaintToleration"
    }

    fn filter(
        &self,
        pod: &PodInfo,
        node: &NodeInfo,
        state: &CycleState,
    ) -> Result<(), Unschedulable> {
        if !node.has_hard_taints() {
            return Ok(());
        }
        match first_untolerated(pod, node, state) {
            None => Ok(()),
            Some(taint) => Err(Unschedulable::unresolvable(format!(
                "node(s) had untolerated taint {{{}: {}}}",
                taint.key,
                taint.value.as_deref().unwrap_or("")
            ))),
        }
    }

    fn fits(&self, pod: &PodInfo, node: &NodeInfo, state: &CycleState) -> bool {
        !node.has_hard_taints() || first_untolerated(pod, node, state).is_none()
    }
}

/// The first `NoSchedule`/`NoExecute` taint of the node the pod does not tolerate.
fn first_untolerated<'a>(
    pod: &PodInfo,
    node: &'a NodeInfo,
    state: &CycleState,
) -> Option<&'a Taint> {
    node.taints().iter().find(|taint| {
        (taint.effect == "NoSchedule" || taint.effect == "NoExecute")
            && !effective_tolerations(pod, state).any(|t| tolerates(t, taint))
    })
}

impl ScorePlugin for TaintToleration {
    fn name(&self) -> &'static str {
        "TaintToleration"
    }

    /// The number of untolerated `PreferNoSchedule` taints (reversed by `normalize`).
    fn score(&self, pod: &PodInfo, node: &NodeInfo, state: &CycleState) -> i64 {
        if !node.has_soft_taints() {
            return 0;
        }
        let count = node
            .taints()
            .iter()
            .filter(|taint| taint.effect == "PreferNoSchedule")
            .filter(|taint| {
                !effective_tolerations(pod, state).any(|t| {
                    matches!(
                        t.effect.as_deref(),
                        None | Some("") | Some("PreferNoSchedule")
                    ) && tolerates(t, taint)
                })
            })
            .count();
        i64::try_from(count).unwrap_or(i64::MAX)
    }

    fn normalize(&self, scores: &mut [i64]) {
        default_normalize(scores, true);
    }
}

/// kube-scheduler's `DefaultNormalizeScore`: scales scores so the highest is 100, then
/// optionally reverses them (fewer is better); all zero and reversed means all 100.
pub(crate) fn default_normalize(scores: &mut [i64], reverse: bool) {
    let max = scores.iter().copied().max().unwrap_or(0);
    if max <= 0 {
        if reverse {
            scores.iter_mut().for_each(|s| *s = MAX_NODE_SCORE);
        }
        return;
    }
    for score in scores.iter_mut() {
        let scaled = MAX_NODE_SCORE * *score / max;
        *score = if reverse {
            MAX_NODE_SCORE - scaled
        } else {
            scaled
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{info, node, node_info, pod, tainted, toleration, with_spec};

    fn gpu_node() -> NodeInfo {
        node_info(tainted(
            node("gpu", "1", "1Gi"),
            &[("dedicated", "gpu", "NoSchedule")],
        ))
    }

    #[test]
    fn an_untolerated_no_schedule_taint_is_reported_with_key_and_value() {
        let p = info(pod("p"));
        assert_eq!(
            TaintToleration.filter(&p, &gpu_node(), &CycleState::new()),
            Err(Unschedulable::unresolvable(
                "node(s) had untolerated taint {dedicated: gpu}"
            ))
        );
    }

    #[test]
    fn an_equal_toleration_with_the_right_value_tolerates() {
        let p = info(with_spec(pod("p"), |s| {
            s.tolerations = Some(vec![toleration("dedicated", "Equal", "gpu", "NoSchedule")])
        }));
        assert!(
            TaintToleration
                .filter(&p, &gpu_node(), &CycleState::new())
                .is_ok()
        );
    }

    #[test]
    fn an_equal_toleration_with_another_value_does_not_tolerate() {
        let p = info(with_spec(pod("p"), |s| {
            s.tolerations = Some(vec![toleration("dedicated", "", "tpu", "")])
        }));
        assert!(
            TaintToleration
                .filter(&p, &gpu_node(), &CycleState::new())
                .is_err()
        );
    }

    #[test]
    fn an_exists_toleration_without_key_tolerates_everything() {
        let t = toleration("", "Exists", "", "");
        let taint = Taint {
            key: "anything".into(),
            value: Some("v".into()),
            effect: "NoExecute".into(),
            time_added: None,
        };
        assert!(tolerates(&t, &taint));
    }

    #[test]
    fn a_toleration_for_another_effect_does_not_tolerate() {
        let p = info(with_spec(pod("p"), |s| {
            s.tolerations = Some(vec![toleration("dedicated", "Exists", "", "NoExecute")])
        }));
        assert!(
            TaintToleration
                .filter(&p, &gpu_node(), &CycleState::new())
                .is_err()
        );
    }

    #[test]
    fn prefer_no_schedule_taints_only_lower_the_score() {
        let p = info(pod("p"));
        let state = CycleState::new();
        let soft = node_info(tainted(
            node("soft", "1", "1Gi"),
            &[("a", "", "PreferNoSchedule"), ("b", "", "PreferNoSchedule")],
        ));
        let plain = node_info(node("plain", "1", "1Gi"));
        assert!(TaintToleration.filter(&p, &soft, &state).is_ok());
        let mut scores = vec![
            TaintToleration.score(&p, &soft, &state),
            TaintToleration.score(&p, &plain, &state),
        ];
        assert_eq!(scores, vec![2, 0]);
        TaintToleration.normalize(&mut scores);
        assert_eq!(scores, vec![0, 100]);
    }

    #[test]
    fn tolerated_prefer_no_schedule_taints_do_not_count() {
        let p = info(with_spec(pod("p"), |s| {
            s.tolerations = Some(vec![toleration("a", "Exists", "", "PreferNoSchedule")])
        }));
        let soft = node_info(tainted(
            node("soft", "1", "1Gi"),
            &[("a", "", "PreferNoSchedule")],
        ));
        assert_eq!(TaintToleration.score(&p, &soft, &CycleState::new()), 0);
    }

    #[test]
    fn runtime_class_tolerations_join_the_pods_own() {
        let p = info(pod("p"));
        let mut state = CycleState::new();
        state.write(RuntimeClassScheduling {
            name: "wasmtime".into(),
            node_selector: Default::default(),
            compiled: None,
            tolerations: vec![toleration("dedicated", "Exists", "", "")],
        });
        assert!(TaintToleration.filter(&p, &gpu_node(), &state).is_ok());
    }

    #[test]
    fn normalizing_all_zero_scores_reversed_gives_everyone_the_maximum() {
        let mut scores = vec![0, 0];
        default_normalize(&mut scores, true);
        assert_eq!(scores, vec![100, 100]);
        let mut scores = vec![0, 0];
        default_normalize(&mut scores, false);
        assert_eq!(scores, vec![0, 0]);
    }
}
