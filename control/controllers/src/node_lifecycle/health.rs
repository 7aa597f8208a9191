//! Node health, as kube-controller-manager's node lifecycle controller judges it: when the
//! node's heartbeat (its Lease's `renewTime` or its Ready condition's `lastHeartbeatTime`)
//! was last seen to change, measured on this process's clock; the conditions a silent
//! node gets; and the taints its conditions call for. Pure functions, no I/O.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{NodeCondition, Taint};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

/// The taint of nodes whose Ready condition is False.
pub(crate) const NOT_READY_TAINT: &str = "node.kubernetes.io/not-ready";
/// The taint of nodes whose Ready condition is Unknown.
pub(crate) const UNREACHABLE_TAINT: &str = "node.kubernetes.io/unreachable";
/// The taint of cordoned nodes.
pub(crate) const UNSCHEDULABLE_TAINT: &str = "node.kubernetes.io/unschedulable";
/// The condition-to-taint map of TaintNodesByCondition (besides Ready).
const PRESSURE_TAINTS: &[(&str, &str)] = &[
    ("MemoryPressure", "node.kubernetes.io/memory-pressure"),
    ("DiskPressure", "node.kubernetes.io/disk-pressure"),
    ("PIDPressure", "node.kubernetes.io/pid-pressure"),
    (
        "NetworkUnavailable",
        "node.kubernetes.io/network-unavailable",
    ),
];
/// The conditions a silent node's kubelet would report, set to Unknown.
const KUBELET_CONDITIONS: &[&str] = &["Ready", "MemoryPressure", "DiskPressure", "PIDPressure"];

/// The reason of conditions set Unknown because the kubelet went silent.
pub(crate) const STATUS_UNKNOWN_REASON: &str = "NodeStatusUnknown";
/// Their message.
pub(crate) const STATUS_UNKNOWN_MESSAGE: &str = "Kubelet stopped posting node status.";
/// The reason of conditions set Unknown because the kubelet never reported them.
const NEVER_UPDATED_REASON: &str = "NodeStatusNeverUpdated";
const NEVER_UPDATED_MESSAGE: &str = "Kubelet never posted node status.";

/// What the controller last saw of one node's heartbeats.
#[derive(Clone, Debug)]
pub(crate) struct Heartbeat {
    /// When (on this clock) a heartbeat was last seen to change.
    pub(crate) probed_at: Instant,
    ready_heartbeat: Option<Timestamp>,
    lease_renew: Option<Timestamp>,
}

impl Heartbeat {
    /// A node first seen now: it gets a full grace period.
    pub(crate) fn new(now: Instant, ready: Option<Timestamp>, lease: Option<Timestamp>) -> Self {
        Heartbeat {
            probed_at: now,
            ready_heartbeat: ready,
            lease_renew: lease,
        }
    }

    /// Records what is seen now; a changed heartbeat renews the probe time.
    pub(crate) fn observe(
        &mut self,
        now: Instant,
        ready: Option<Timestamp>,
        lease: Option<Timestamp>,
    ) {
        if ready.is_some() && ready != self.ready_heartbeat {
            self.ready_heartbeat = ready;
            self.probed_at = now;
        }
        if lease.is_some() && lease != self.lease_renew {
            self.lease_renew = lease;
            self.probed_at = now;
        }
    }

    /// Whether nothing was heard for longer than `grace`.
    pub(crate) fn is_silent(&self, now: Instant, grace: Duration) -> bool {
        now.saturating_duration_since(self.probed_at) > grace
    }
}

/// The conditions of a node whose kubelet went silent: Ready and the pressure conditions
/// become Unknown (`NodeStatusUnknown`, or `NodeStatusNeverUpdated` for ones it never
/// reported), keeping their heartbeat times. `None` when they are already so.
pub(crate) fn silent_node_conditions(
    conditions: &[NodeCondition],
    now: Timestamp,
) -> Option<Vec<NodeCondition>> {
    let mut out = conditions.to_vec();
    let mut changed = false;
    for type_ in KUBELET_CONDITIONS {
        match out.iter_mut().find(|c| c.type_ == *type_) {
            Some(c) if c.status == "Unknown" => {}
            Some(c) => {
                c.status = "Unknown".into();
                c.reason = Some(STATUS_UNKNOWN_REASON.into());
                c.message = Some(STATUS_UNKNOWN_MESSAGE.into());
                c.last_transition_time = Some(Time(now));
                changed = true;
            }
            None => {
                out.push(NodeCondition {
                    type_: type_.to_string(),
                    status: "Unknown".into(),
                    reason: Some(NEVER_UPDATED_REASON.into()),
                    message: Some(NEVER_UPDATED_MESSAGE.into()),
                    last_heartbeat_time: None,
                    last_transition_time: Some(Time(now)),
                });
                changed = true;
            }
        }
    }
    changed.then_some(out)
}

/// The status of condition `type_` (`None` when absent).
pub(crate) fn condition_status<'a>(
    conditions: &'a [NodeCondition],
    type_: &str,
) -> Option<&'a str> {
    conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| c.status.as_str())
}

fn is_managed(t: &Taint) -> bool {
    let key = t.key.as_str();
    match t.effect.as_str() {
        "NoExecute" => key == NOT_READY_TAINT || key == UNREACHABLE_TAINT,
        "NoSchedule" => {
            key == NOT_READY_TAINT
                || key == UNREACHABLE_TAINT
                || key == UNSCHEDULABLE_TAINT
                || PRESSURE_TAINTS.iter().any(|(_, k)| *k == key)
        }
        _ => false,
    }
}

/// The taints the conditions call for: `not-ready` (Ready False) or `unreachable` (Ready
/// Unknown) as NoExecute (with `timeAdded`) and NoSchedule, the pressure taints as
/// NoSchedule, `unschedulable` for cordoned nodes. Other taints are kept as they are, and
/// taints already right keep their `timeAdded`. `None` when nothing changes.
pub(crate) fn desired_taints(
    existing: &[Taint],
    conditions: &[NodeCondition],
    unschedulable: bool,
    now: Timestamp,
) -> Option<Vec<Taint>> {
    let mut wanted: Vec<(&str, &str)> = Vec::new();
    match condition_status(conditions, "Ready") {
        Some("False") => {
            wanted.push((NOT_READY_TAINT, "NoExecute"));
            wanted.push((NOT_READY_TAINT, "NoSchedule"));
        }
        Some("Unknown") => {
            wanted.push((UNREACHABLE_TAINT, "NoExecute"));
            wanted.push((UNREACHABLE_TAINT, "NoSchedule"));
        }
        _ => {}
    }
    for (type_, key) in PRESSURE_TAINTS {
        if condition_status(conditions, type_) == Some("True") {
            wanted.push((key, "NoSchedule"));
        }
    }
    if unschedulable {
        wanted.push((UNSCHEDULABLE_TAINT, "NoSchedule"));
    }
    let mut out: Vec<Taint> = existing
        .iter()
        .filter(|t| !is_managed(t) || wanted.contains(&(t.key.as_str(), t.effect.as_str())))
        .cloned()
        .collect();
    for (key, effect) in wanted {
        if !out.iter().any(|t| t.key == key && t.effect == effect) {
            out.push(Taint {
                key: key.to_string(),
                effect: effect.to_string(),
                value: None,
                time_added: (effect == "NoExecute").then_some(Time(now)),
            });
        }
    }
    (out != existing).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cond(type_: &str, status: &str) -> NodeCondition {
        NodeCondition {
            type_: type_.into(),
            status: status.into(),
            reason: Some("KubeletReady".into()),
            message: None,
            last_heartbeat_time: Some(Time(Timestamp::UNIX_EPOCH)),
            last_transition_time: Some(Time(Timestamp::UNIX_EPOCH)),
        }
    }

    fn keys(taints: &[Taint]) -> Vec<(String, String)> {
        taints
            .iter()
            .map(|t| (t.key.clone(), t.effect.clone()))
            .collect()
    }

    #[test]
    fn a_heartbeat_renews_the_probe_time_and_silence_is_measured_locally() {
        let t0 = Instant::now();
        let renew = Timestamp::UNIX_EPOCH;
        let mut hb = Heartbeat::new(t0, None, Some(renew));
        let grace = Duration::from_secs(6);
        assert!(!hb.is_silent(t0 + Duration::from_secs(5), grace));
        // The same renewTime seen again is no heartbeat.
        hb.observe(t0 + Duration::from_secs(5), None, Some(renew));
        assert!(hb.is_silent(t0 + Duration::from_secs(7), grace));
        // A new renewTime is, whatever its value says about the remote clock.
        let later = renew.checked_add(jiff_secs(1)).unwrap();
        hb.observe(t0 + Duration::from_secs(7), None, Some(later));
        assert!(!hb.is_silent(t0 + Duration::from_secs(12), grace));
    }

    fn jiff_secs(s: i64) -> k8s_openapi::jiff::SignedDuration {
        k8s_openapi::jiff::SignedDuration::from_secs(s)
    }

    #[test]
    fn a_silent_node_gets_unknown_conditions_once() {
        let now = Timestamp::UNIX_EPOCH.checked_add(jiff_secs(100)).unwrap();
        let conds = vec![cond("Ready", "True"), cond("MemoryPressure", "False")];
        let out = silent_node_conditions(&conds, now).unwrap();
        let ready = out.iter().find(|c| c.type_ == "Ready").unwrap();
        assert_eq!(ready.status, "Unknown");
        assert_eq!(ready.reason.as_deref(), Some("NodeStatusUnknown"));
        assert_eq!(
            ready.message.as_deref(),
            Some("Kubelet stopped posting node status.")
        );
        assert_eq!(ready.last_heartbeat_time, Some(Time(Timestamp::UNIX_EPOCH)));
        assert_eq!(ready.last_transition_time, Some(Time(now)));
        let pid = out.iter().find(|c| c.type_ == "PIDPressure").unwrap();
        assert_eq!(pid.reason.as_deref(), Some("NodeStatusNeverUpdated"));
        assert_eq!(out.len(), 4);
        assert!(silent_node_conditions(&out, now).is_none());
    }

    #[test]
    fn unknown_ready_taints_unreachable_and_ready_again_removes_it() {
        let now = Timestamp::UNIX_EPOCH;
        let user = Taint {
            key: "dedicated".into(),
            value: Some("gpu".into()),
            effect: "NoSchedule".into(),
            time_added: None,
        };
        let tainted = desired_taints(
            std::slice::from_ref(&user),
            &[cond("Ready", "Unknown")],
            false,
            now,
        )
        .unwrap();
        assert_eq!(
            keys(&tainted),
            [
                ("dedicated".into(), "NoSchedule".into()),
                (UNREACHABLE_TAINT.into(), "NoExecute".into()),
                (UNREACHABLE_TAINT.into(), "NoSchedule".into()),
            ]
        );
        assert_eq!(tainted[1].time_added, Some(Time(now)));
        assert_eq!(tainted[2].time_added, None);
        // Already right: nothing to write, timeAdded kept.
        let later = now.checked_add(jiff_secs(30)).unwrap();
        assert!(desired_taints(&tainted, &[cond("Ready", "Unknown")], false, later).is_none());
        // False swaps unreachable for not-ready.
        let not_ready = desired_taints(&tainted, &[cond("Ready", "False")], false, later).unwrap();
        assert_eq!(
            keys(&not_ready),
            [
                ("dedicated".into(), "NoSchedule".into()),
                (NOT_READY_TAINT.into(), "NoExecute".into()),
                (NOT_READY_TAINT.into(), "NoSchedule".into()),
            ]
        );
        let healed = desired_taints(&not_ready, &[cond("Ready", "True")], false, later).unwrap();
        assert_eq!(healed, vec![user]);
    }

    #[test]
    fn pressure_and_cordon_become_no_schedule_taints() {
        let conds = [cond("Ready", "True"), cond("DiskPressure", "True")];
        let taints = desired_taints(&[], &conds, true, Timestamp::UNIX_EPOCH).unwrap();
        assert_eq!(
            keys(&taints),
            [
                (
                    "node.kubernetes.io/disk-pressure".into(),
                    "NoSchedule".into()
                ),
                (UNSCHEDULABLE_TAINT.into(), "NoSchedule".into()),
            ]
        );
        assert!(
            desired_taints(&[], &[cond("Ready", "True")], false, Timestamp::UNIX_EPOCH).is_none()
        );
    }
}
