//! The pod row: Kubernetes' `printPod`, including the computed STATUS reason
//! (`Init:1/2`, `CrashLoopBackOff`, `Completed`, `Terminating`, ...) and RESTARTS with
//! the time since the last restart (`3 (5m ago)`).

use jiff::Timestamp;
use serde_json::{Value, json};

use super::duration::{parse_time, since};
use super::format::{arr_at, at, int_at, str_at};

/// The row conditions Kubernetes attaches to finished pods.
fn completed_condition(phase: &str) -> Option<Value> {
    let message = match phase {
        "Succeeded" => "The pod has completed successfully.",
        "Failed" => "The pod failed.",
        _ => return None,
    };
    Some(json!([{
        "type": "Completed",
        "status": "True",
        "reason": phase,
        "message": message,
    }]))
}

fn later(current: Option<Timestamp>, candidate: Option<Timestamp>) -> Option<Timestamp> {
    match (current, candidate) {
        (Some(c), Some(n)) if n > c => Some(n),
        (None, n) => n,
        (c, _) => c,
    }
}

fn condition_true(pod: &Value, ty: &str) -> bool {
    arr_at(pod, &["status", "conditions"])
        .iter()
        .any(|c| str_at(c, &["type"]) == ty && str_at(c, &["status"]) == "True")
}

fn last_termination(status: &Value) -> Option<Timestamp> {
    let terminated = at(status, &["lastState", "terminated"])?;
    parse_time(terminated.get("finishedAt"))
}

fn terminated_reason(terminated: &Value, prefix: &str) -> String {
    let reason = str_at(terminated, &["reason"]);
    if !reason.is_empty() {
        return format!("{prefix}{reason}");
    }
    let signal = int_at(terminated, &["signal"]);
    if signal != 0 {
        format!("{prefix}Signal:{signal}")
    } else {
        format!("{prefix}ExitCode:{}", int_at(terminated, &["exitCode"]))
    }
}

/// Cells and row conditions of one pod.
pub(crate) fn pod_row(pod: &Value, now: Timestamp) -> (Vec<Value>, Option<Value>) {
    let spec_containers = arr_at(pod, &["spec", "containers"]);
    let init_containers = arr_at(pod, &["spec", "initContainers"]);
    let mut total = spec_containers.len();
    let mut ready = 0usize;
    let mut restarts: i64 = 0;
    let mut restartable_restarts: i64 = 0;
    let mut last_restart: Option<Timestamp> = None;
    let mut last_restartable_restart: Option<Timestamp> = None;

    let phase = str_at(pod, &["status", "phase"]);
    let mut reason = phase.to_string();
    let status_reason = str_at(pod, &["status", "reason"]);
    if !status_reason.is_empty() {
        reason = status_reason.to_string();
    }
    for condition in arr_at(pod, &["status", "conditions"]) {
        if str_at(condition, &["type"]) == "PodScheduled"
            && str_at(condition, &["reason"]) == "SchedulingGated"
        {
            reason = "SchedulingGated".to_string();
        }
    }

    // Sidecars: init containers with restartPolicy Always count as app containers.
    let restartable = |name: &str| {
        init_containers
            .iter()
            .any(|c| str_at(c, &["name"]) == name && str_at(c, &["restartPolicy"]) == "Always")
    };
    total += init_containers
        .iter()
        .filter(|c| str_at(c, &["restartPolicy"]) == "Always")
        .count();

    let mut initializing = false;
    for (i, container) in arr_at(pod, &["status", "initContainerStatuses"])
        .iter()
        .enumerate()
    {
        let count = int_at(container, &["restartCount"]);
        restarts += count;
        last_restart = later(last_restart, last_termination(container));
        let name = str_at(container, &["name"]);
        let is_restartable = restartable(name);
        if is_restartable {
            restartable_restarts += count;
            last_restartable_restart = later(last_restartable_restart, last_termination(container));
        }
        let terminated = at(container, &["state", "terminated"]);
        let waiting = at(container, &["state", "waiting"]);
        let started = at(container, &["started"]).and_then(Value::as_bool) == Some(true);
        match (terminated, waiting) {
            (Some(t), _) if int_at(t, &["exitCode"]) == 0 => continue,
            _ if is_restartable && started => {
                if at(container, &["ready"]).and_then(Value::as_bool) == Some(true) {
                    ready += 1;
                }
                continue;
            }
            (Some(t), _) => reason = terminated_reason(t, "Init:"),
            (None, Some(w))
                if !str_at(w, &["reason"]).is_empty()
                    && str_at(w, &["reason"]) != "PodInitializing" =>
            {
                reason = format!("Init:{}", str_at(w, &["reason"]));
            }
            _ => reason = format!("Init:{i}/{}", init_containers.len()),
        }
        initializing = true;
        break;
    }

    if !initializing || condition_true(pod, "Initialized") {
        restarts = restartable_restarts;
        last_restart = last_restartable_restart;
        let mut has_running = false;
        for container in arr_at(pod, &["status", "containerStatuses"]).iter().rev() {
            restarts += int_at(container, &["restartCount"]);
            last_restart = later(last_restart, last_termination(container));
            let waiting = at(container, &["state", "waiting"]);
            let terminated = at(container, &["state", "terminated"]);
            let waiting_reason = waiting.map_or("", |w| str_at(w, &["reason"]));
            if !waiting_reason.is_empty() {
                reason = waiting_reason.to_string();
            } else if let Some(t) = terminated {
                reason = terminated_reason(t, "");
            } else if at(container, &["ready"]).and_then(Value::as_bool) == Some(true)
                && at(container, &["state", "running"]).is_some()
            {
                has_running = true;
                ready += 1;
            }
        }
        if reason == "Completed" && has_running {
            reason = if condition_true(pod, "Ready") {
                "Running".to_string()
            } else {
                "NotReady".to_string()
            };
        }
    }

    let deleting = at(pod, &["metadata", "deletionTimestamp"]).is_some_and(|d| !d.is_null());
    if deleting && status_reason == "NodeLost" {
        reason = "Unknown".to_string();
    } else if deleting && phase != "Succeeded" && phase != "Failed" {
        reason = "Terminating".to_string();
    }

    let restarts_cell = match last_restart {
        Some(ts) if restarts != 0 => format!("{restarts} ({} ago)", since(now, Some(ts))),
        _ => restarts.to_string(),
    };

    let created = parse_time(at(pod, &["metadata", "creationTimestamp"]));
    let mut cells = vec![
        json!(str_at(pod, &["metadata", "name"])),
        json!(format!("{ready}/{total}")),
        json!(reason),
        json!(restarts_cell),
        json!(since(now, created)),
    ];
    cells.extend(wide_cells(pod).into_iter().map(Value::String));
    (cells, completed_condition(phase))
}

fn none_if_empty(s: &str) -> String {
    if s.is_empty() {
        "<none>".to_string()
    } else {
        s.to_string()
    }
}

/// IP, NODE, NOMINATED NODE, READINESS GATES.
fn wide_cells(pod: &Value) -> [String; 4] {
    // v1 -> internal conversion fills podIPs from podIP when only the latter is set.
    let ip = arr_at(pod, &["status", "podIPs"])
        .first()
        .map(|p| str_at(p, &["ip"]))
        .unwrap_or_else(|| str_at(pod, &["status", "podIP"]));
    let gates = arr_at(pod, &["spec", "readinessGates"]);
    let readiness = if gates.is_empty() {
        "<none>".to_string()
    } else {
        let conditions = arr_at(pod, &["status", "conditions"]);
        let true_count = gates
            .iter()
            .filter(|gate| {
                let ty = str_at(gate, &["conditionType"]);
                conditions
                    .iter()
                    .find(|c| str_at(c, &["type"]) == ty)
                    .is_some_and(|c| str_at(c, &["status"]) == "True")
            })
            .count();
        format!("{true_count}/{}", gates.len())
    };
    [
        none_if_empty(ip),
        none_if_empty(str_at(pod, &["spec", "nodeName"])),
        none_if_empty(str_at(pod, &["status", "nominatedNodeName"])),
        readiness,
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> Timestamp {
        "2025-03-01T12:00:00Z".parse().unwrap()
    }

    fn cells(pod: &Value) -> Vec<Value> {
        pod_row(pod, now()).0
    }

    #[test]
    fn running_pod_with_two_ready_containers_and_a_recent_restart() {
        let pod = json!({
            "metadata": {"name": "web-1", "creationTimestamp": "2025-03-01T10:00:00Z"},
            "spec": {"nodeName": "node-a", "containers": [{"name": "app"}, {"name": "log"}]},
            "status": {
                "phase": "Running",
                "podIP": "10.1.0.7",
                "podIPs": [{"ip": "10.1.0.7"}],
                "conditions": [{"type": "Ready", "status": "True"}],
                "containerStatuses": [
                    {"name": "app", "ready": true, "restartCount": 3,
                     "state": {"running": {"startedAt": "2025-03-01T11:55:00Z"}},
                     "lastState": {"terminated": {"exitCode": 1, "finishedAt": "2025-03-01T11:55:00Z"}}},
                    {"name": "log", "ready": true, "restartCount": 0,
                     "state": {"running": {"startedAt": "2025-03-01T10:00:05Z"}}}
                ]
            }
        });
        assert_eq!(
            cells(&pod),
            [
                json!("web-1"),
                json!("2/2"),
                json!("Running"),
                json!("3 (5m ago)"),
                json!("120m"),
                json!("10.1.0.7"),
                json!("node-a"),
                json!("<none>"),
                json!("<none>")
            ]
        );
        assert_eq!(pod_row(&pod, now()).1, None);
    }

    #[test]
    fn pending_pod_without_status_shows_pending_and_placeholders() {
        let pod = json!({
            "metadata": {"name": "p", "creationTimestamp": "2025-03-01T11:59:55Z"},
            "spec": {"containers": [{"name": "app"}]},
            "status": {"phase": "Pending"}
        });
        assert_eq!(
            cells(&pod),
            [
                json!("p"),
                json!("0/1"),
                json!("Pending"),
                json!("0"),
                json!("5s"),
                json!("<none>"),
                json!("<none>"),
                json!("<none>"),
                json!("<none>")
            ]
        );
    }

    #[test]
    fn waiting_container_reason_becomes_the_status() {
        let pod = json!({
            "metadata": {"name": "crash"},
            "spec": {"containers": [{"name": "app"}]},
            "status": {"phase": "Running", "containerStatuses": [
                {"name": "app", "ready": false, "restartCount": 7,
                 "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                 "lastState": {"terminated": {"exitCode": 2, "finishedAt": "2025-03-01T11:59:00Z"}}}
            ]}
        });
        let c = cells(&pod);
        assert_eq!(c[1], json!("0/1"));
        assert_eq!(c[2], json!("CrashLoopBackOff"));
        assert_eq!(c[3], json!("7 (60s ago)"));
        assert_eq!(c[4], json!("<unknown>"));
    }

    #[test]
    fn init_containers_show_progress_and_failures() {
        let progress = json!({
            "metadata": {"name": "i"},
            "spec": {"initContainers": [{"name": "a"}, {"name": "b"}], "containers": [{"name": "app"}]},
            "status": {"phase": "Pending", "initContainerStatuses": [
                {"name": "a", "restartCount": 0, "state": {"terminated": {"exitCode": 0}}},
                {"name": "b", "restartCount": 0, "state": {"running": {}}}
            ]}
        });
        assert_eq!(cells(&progress)[2], json!("Init:1/2"));

        let failed = json!({
            "metadata": {"name": "i"},
            "spec": {"initContainers": [{"name": "a"}], "containers": [{"name": "app"}]},
            "status": {"phase": "Pending", "initContainerStatuses": [
                {"name": "a", "restartCount": 2, "state": {"terminated": {"exitCode": 3}}}
            ]}
        });
        assert_eq!(cells(&failed)[2], json!("Init:ExitCode:3"));
        assert_eq!(cells(&failed)[3], json!("2"));

        let waiting = json!({
            "metadata": {"name": "i"},
            "spec": {"initContainers": [{"name": "a"}], "containers": [{"name": "app"}]},
            "status": {"phase": "Pending", "initContainerStatuses": [
                {"name": "a", "state": {"waiting": {"reason": "ImagePullBackOff"}}}
            ]}
        });
        assert_eq!(cells(&waiting)[2], json!("Init:ImagePullBackOff"));
    }

    #[test]
    fn started_sidecar_counts_as_a_ready_container() {
        let pod = json!({
            "metadata": {"name": "s"},
            "spec": {
                "initContainers": [{"name": "proxy", "restartPolicy": "Always"}],
                "containers": [{"name": "app"}]
            },
            "status": {
                "phase": "Running",
                "conditions": [{"type": "Initialized", "status": "True"}],
                "initContainerStatuses": [
                    {"name": "proxy", "started": true, "ready": true, "restartCount": 1,
                     "state": {"running": {}}}
                ],
                "containerStatuses": [
                    {"name": "app", "ready": true, "restartCount": 0, "state": {"running": {}}}
                ]
            }
        });
        let c = cells(&pod);
        assert_eq!(c[1], json!("2/2"));
        assert_eq!(c[2], json!("Running"));
        assert_eq!(c[3], json!("1"));
    }

    #[test]
    fn succeeded_pod_is_completed_with_a_row_condition() {
        let pod = json!({
            "metadata": {"name": "job-x"},
            "spec": {"containers": [{"name": "app"}]},
            "status": {"phase": "Succeeded", "containerStatuses": [
                {"name": "app", "ready": false, "restartCount": 0,
                 "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}
            ]}
        });
        let (c, conditions) = pod_row(&pod, now());
        assert_eq!(c[2], json!("Completed"));
        assert_eq!(
            conditions,
            Some(
                json!([{"type": "Completed", "status": "True", "reason": "Succeeded",
                         "message": "The pod has completed successfully."}])
            )
        );
    }

    #[test]
    fn terminated_without_reason_shows_signal_or_exit_code() {
        let pod = json!({
            "metadata": {"name": "k"},
            "spec": {"containers": [{"name": "app"}]},
            "status": {"phase": "Failed", "containerStatuses": [
                {"name": "app", "state": {"terminated": {"exitCode": 137, "signal": 9}}}
            ]}
        });
        assert_eq!(cells(&pod)[2], json!("Signal:9"));
    }

    #[test]
    fn deleted_pods_are_terminating_unless_finished_or_node_lost() {
        let mut pod = json!({
            "metadata": {"name": "t", "deletionTimestamp": "2025-03-01T11:59:00Z"},
            "spec": {"containers": [{"name": "app"}]},
            "status": {"phase": "Running"}
        });
        assert_eq!(cells(&pod)[2], json!("Terminating"));
        pod["status"]["reason"] = json!("NodeLost");
        assert_eq!(cells(&pod)[2], json!("Unknown"));
        pod["status"] = json!({"phase": "Succeeded"});
        assert_eq!(cells(&pod)[2], json!("Succeeded"));
    }

    #[test]
    fn readiness_gates_count_true_conditions() {
        let pod = json!({
            "metadata": {"name": "g"},
            "spec": {"containers": [], "readinessGates": [
                {"conditionType": "example.com/lb"}, {"conditionType": "example.com/dns"}
            ]},
            "status": {"conditions": [{"type": "example.com/lb", "status": "True"}],
                       "nominatedNodeName": "node-b"}
        });
        let c = cells(&pod);
        assert_eq!(c[7], json!("node-b"));
        assert_eq!(c[8], json!("1/2"));
    }
}
