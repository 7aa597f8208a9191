//! The levels, labels and messages of PodSecurity against what Kubernetes prints.

use serde_json::json;

use super::*;

fn pod(spec: Value) -> (ObjectMeta, PodSpec) {
    pod_parts(&json!({"metadata": {"name": "p"}, "spec": spec})).expect("a pod")
}

fn policy(labels: &[(&str, &str)]) -> Policy {
    let labels: BTreeMap<String, String> = labels
        .iter()
        .map(|(k, v)| (format!("{LABEL_PREFIX}{k}"), (*v).to_string()))
        .collect();
    let (policy, errors) = policy_from_labels(&labels);
    assert!(errors.is_empty(), "{errors:?}");
    policy
}

fn host_path_pod() -> (ObjectMeta, PodSpec) {
    pod(json!({
        "containers": [{"name": "c", "image": "i"}],
        "volumes": [{"name": "h", "hostPath": {"path": "/etc"}}],
    }))
}

#[test]
fn baseline_refuses_host_path_with_kubernetes_message() {
    let (meta, spec) = host_path_pod();
    let decision = admit_pod(&policy(&[("enforce", "baseline")]), &meta, &spec);
    assert_eq!(
        decision.refused.as_deref(),
        Some("violates PodSecurity \"baseline:latest\": hostPath volumes (volume \"h\")")
    );
    assert_eq!(
        decision
            .audit
            .get(ENFORCE_POLICY_ANNOTATION)
            .map(String::as_str),
        Some("baseline:latest")
    );
}

#[test]
fn restricted_lists_every_violation_in_kubernetes_order() {
    let (meta, spec) = host_path_pod();
    let decision = admit_pod(&policy(&[("enforce", "restricted")]), &meta, &spec);
    assert_eq!(
        decision.refused.as_deref(),
        Some(
            "violates PodSecurity \"restricted:latest\": \
             allowPrivilegeEscalation != false (container \"c\" must set securityContext.allowPrivilegeEscalation=false), \
             unrestricted capabilities (container \"c\" must set securityContext.capabilities.drop=[\"ALL\"]), \
             restricted volume types (volume \"h\" uses restricted volume type \"hostPath\"), \
             runAsNonRoot != true (pod or container \"c\" must set securityContext.runAsNonRoot=true), \
             seccompProfile (pod or container \"c\" must set securityContext.seccompProfile.type to \"RuntimeDefault\" or \"Localhost\")"
        )
    );
}

#[test]
fn a_pod_that_follows_restricted_passes() {
    let (meta, spec) = pod(json!({
        "securityContext": {"runAsNonRoot": true, "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [{
            "name": "c",
            "image": "i",
            "securityContext": {
                "allowPrivilegeEscalation": false,
                "capabilities": {"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]},
            },
        }],
        "volumes": [{"name": "d", "emptyDir": {}}, {"name": "s", "secret": {"secretName": "x"}}],
    }));
    let p = policy(&[("enforce", "restricted")]);
    assert_eq!(evaluate(p.enforce, &meta, &spec), Vec::new());
}

#[test]
fn baseline_checks_name_what_they_forbid() {
    let (meta, spec) = pod(json!({
        "hostNetwork": true,
        "hostPID": true,
        "securityContext": {
            "sysctls": [{"name": "kernel.msgmax", "value": "1"}, {"name": "net.ipv4.tcp_syncookies", "value": "1"}],
            "seLinuxOptions": {"type": "spc_t"},
        },
        "initContainers": [{"name": "init", "image": "i", "securityContext": {"privileged": true}}],
        "containers": [
            {"name": "a", "image": "i", "ports": [{"containerPort": 80, "hostPort": 8080}],
             "securityContext": {"capabilities": {"add": ["NET_ADMIN", "CHOWN"]}, "procMount": "Unmasked"}},
            {"name": "b", "image": "i", "securityContext": {"seccompProfile": {"type": "Unconfined"},
             "appArmorProfile": {"type": "Unconfined"}}},
        ],
    }));
    let p = policy(&[("enforce", "baseline")]);
    let got: Vec<String> = evaluate(p.enforce, &meta, &spec)
        .into_iter()
        .map(|v| format!("{} ({})", v.reason, v.detail))
        .collect();
    assert_eq!(
        got,
        vec![
            "forbidden AppArmor profile (container \"b\" must not set AppArmor profile type to \"Unconfined\")",
            "host namespaces (hostNetwork, hostPID)",
            "hostPort (container \"a\" uses hostPort 8080)",
            "privileged (container \"init\" must not set securityContext.privileged=true)",
            "procMount (container \"a\" must not set securityContext.procMount to \"Unmasked\")",
            "seLinuxOptions (pod set forbidden securityContext.seLinuxOptions: type \"spc_t\")",
            "forbidden sysctls (kernel.msgmax)",
            "non-default capabilities (container \"a\" must not include \"NET_ADMIN\" in securityContext.capabilities.add)",
            "seccompProfile (container \"b\" must not set securityContext.seccompProfile.type to \"Unconfined\")",
        ]
    );
}

#[test]
fn versions_choose_the_checks_of_their_time() {
    let (meta, spec) = pod(json!({
        "securityContext": {"runAsNonRoot": true, "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [{"name": "c", "image": "i", "securityContext": {"allowPrivilegeEscalation": false}}],
    }));
    // Dropping ALL capabilities became a rule in 1.22.
    let old = policy(&[("enforce", "restricted"), ("enforce-version", "v1.21")]);
    assert_eq!(evaluate(old.enforce, &meta, &spec), Vec::new());
    let new = policy(&[("enforce", "restricted"), ("enforce-version", "v1.22")]);
    assert_eq!(evaluate(new.enforce, &meta, &spec).len(), 1);
    assert_eq!(new.enforce.to_string(), "restricted:v1.22");
    // Versions past this apiserver's get its newest checks.
    let future = policy(&[("enforce", "restricted"), ("enforce-version", "v1.99")]);
    assert_eq!(evaluate(future.enforce, &meta, &spec).len(), 1);
}

#[test]
fn warn_and_audit_do_not_refuse() {
    let (meta, spec) = host_path_pod();
    let decision = admit_pod(
        &policy(&[("warn", "baseline"), ("audit", "restricted")]),
        &meta,
        &spec,
    );
    assert_eq!(decision.refused, None);
    assert_eq!(
        decision.warnings,
        vec!["would violate PodSecurity \"baseline:latest\": hostPath volumes (volume \"h\")"]
    );
    assert!(decision.audit[AUDIT_VIOLATIONS_ANNOTATION].starts_with(
        "would violate PodSecurity \"restricted:latest\": allowPrivilegeEscalation != false"
    ));
}

#[test]
fn invalid_labels_fail_closed_and_are_reported() {
    let labels: BTreeMap<String, String> = [
        ("pod-security.kubernetes.io/enforce", "strict"),
        ("pod-security.kubernetes.io/warn-version", "1.25"),
    ]
    .iter()
    .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
    .collect();
    let (policy, errors) = policy_from_labels(&labels);
    assert_eq!(policy.enforce.level, Level::Restricted);
    let summary: Vec<String> = errors
        .iter()
        .map(|c| format!("{}: {}", c.field, c.message))
        .collect();
    assert_eq!(
        summary,
        vec![
            "metadata.labels[pod-security.kubernetes.io/enforce]: Invalid value: \"strict\": must be one of privileged, baseline, restricted",
            "metadata.labels[pod-security.kubernetes.io/warn-version]: Invalid value: \"1.25\": must be 'latest' or of the form 'v1.x'",
        ]
    );
    for bad in ["v1.01", "v2.0", "v1.", "latest1"] {
        assert_eq!(Version::parse(bad), None, "{bad}");
    }
    assert_eq!(Version::parse("v1.0"), Some(Version::Minor(0)));
}

#[test]
fn existing_pods_are_grouped_by_their_reasons() {
    let (m1, s1) = host_path_pod();
    let (m2, s2) = host_path_pod();
    let (m3, s3) = pod(json!({"hostNetwork": true, "containers": [{"name": "c", "image": "i"}]}));
    let pods = vec![
        ("a".to_string(), m1, s1),
        ("b".to_string(), m2, s2),
        ("c".to_string(), m3, s3),
    ];
    let enforce = policy(&[("enforce", "baseline")]).enforce;
    assert_eq!(
        existing_pod_warnings("ns", enforce, &pods),
        vec![
            "existing pods in namespace \"ns\" violate the new PodSecurity enforce level \"baseline:latest\"",
            "a (and 1 other pods): hostPath volumes",
            "c: host namespaces",
        ]
    );
}
