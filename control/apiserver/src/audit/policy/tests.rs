//! Policy matching and validation, case by case as kube-apiserver's `policy.Checker`.

use super::*;
use crate::authz::resolve_request;

fn user(name: &str, groups: &[&str]) -> Identity {
    Identity {
        user: name.to_string(),
        groups: groups.iter().map(|g| g.to_string()).collect(),
    }
}

fn req(method: &str, path: &str) -> RequestInfo {
    let (path, query) = path.split_once('?').unwrap_or((path, ""));
    resolve_request(
        &http::Method::from_bytes(method.as_bytes()).expect("method"),
        path,
        query,
    )
}

fn level(policy: &Policy, who: Option<&Identity>, method: &str, path: &str) -> Level {
    policy.evaluate(who, &req(method, path)).level
}

/// The policy docs/architecture.md shows (secrets at Metadata only).
const DOCS_POLICY: &str = r#"
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived"]
rules:
  - level: None
    users: ["system:kube-proxy"]
    verbs: ["watch"]
  - level: None
    nonResourceURLs: ["/healthz*", "/livez*", "/readyz*", "/version"]
  - level: Metadata
    resources:
      - group: ""
        resources: ["secrets", "configmaps", "serviceaccounts/token"]
  - level: Request
    verbs: ["get", "list", "watch"]
  - level: RequestResponse
    resources:
      - group: ""
      - group: "apps"
  - level: Metadata
"#;

#[test]
fn the_documented_policy_logs_secrets_at_metadata_and_the_rest_by_its_rules() {
    let policy = Policy::parse(DOCS_POLICY).expect("the documented policy is valid");
    let alice = user("alice", &["system:authenticated"]);
    let a = Some(&alice);
    for (method, path) in [
        ("POST", "/api/v1/namespaces/default/secrets"),
        ("GET", "/api/v1/namespaces/default/secrets/s"),
        ("GET", "/api/v1/secrets?watch=true"),
        ("PUT", "/api/v1/namespaces/default/configmaps/c"),
        (
            "POST",
            "/api/v1/namespaces/default/serviceaccounts/sa/token",
        ),
    ] {
        assert_eq!(
            level(&policy, a, method, path),
            Level::Metadata,
            "{method} {path}"
        );
    }
    assert_eq!(level(&policy, a, "GET", "/api/v1/pods"), Level::Request);
    assert_eq!(
        level(&policy, a, "POST", "/api/v1/namespaces/default/pods"),
        Level::RequestResponse
    );
    assert_eq!(
        level(
            &policy,
            a,
            "DELETE",
            "/apis/apps/v1/namespaces/d/deployments/web"
        ),
        Level::RequestResponse
    );
    assert_eq!(
        level(&policy, a, "POST", "/apis/batch/v1/namespaces/d/jobs"),
        Level::Metadata
    );
    assert_eq!(level(&policy, a, "GET", "/healthz/etcd"), Level::None);
    assert_eq!(level(&policy, a, "GET", "/version"), Level::None);
    // `/versions` is not `/version` (no wildcard), so the read rule takes it.
    assert_eq!(level(&policy, a, "GET", "/versions"), Level::Request);
    let proxy = user("system:kube-proxy", &[]);
    assert_eq!(
        level(&policy, Some(&proxy), "GET", "/api/v1/services?watch=1"),
        Level::None
    );
    assert_eq!(
        level(&policy, Some(&proxy), "GET", "/api/v1/services"),
        Level::Request
    );
    let config = policy.evaluate(a, &req("GET", "/api/v1/pods"));
    assert!(config.omit_stages.contains(Stage::RequestReceived));
    assert!(!config.omit_stages.contains(Stage::ResponseComplete));
}

#[test]
fn no_matching_rule_is_level_none_and_the_first_match_wins() {
    let policy = Policy::parse(
        "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n- level: Request\n  verbs: [create]\n- level: Metadata\n  verbs: [create, delete]\n",
    )
    .expect("valid");
    let bob = user("bob", &[]);
    let b = Some(&bob);
    assert_eq!(
        level(&policy, b, "POST", "/api/v1/namespaces/x/pods"),
        Level::Request
    );
    assert_eq!(
        level(&policy, b, "DELETE", "/api/v1/namespaces/x/pods/p"),
        Level::Metadata
    );
    assert_eq!(
        level(&policy, b, "GET", "/api/v1/namespaces/x/pods/p"),
        Level::None
    );
}

#[test]
fn users_and_groups_match_the_requester_and_never_an_unauthenticated_request() {
    let policy = Policy::parse(
        "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n- level: None\n  users: [quiet]\n- level: Request\n  userGroups: [devs, ops]\n- level: Metadata\n",
    )
    .expect("valid");
    let quiet = user("quiet", &["devs"]);
    let dev = user("dana", &["system:authenticated", "ops"]);
    let other = user("otto", &["system:authenticated"]);
    assert_eq!(level(&policy, Some(&quiet), "GET", "/api"), Level::None);
    assert_eq!(level(&policy, Some(&dev), "GET", "/api"), Level::Request);
    assert_eq!(level(&policy, Some(&other), "GET", "/api"), Level::Metadata);
    assert_eq!(level(&policy, None, "GET", "/api"), Level::Metadata);
}

#[test]
fn resources_match_by_group_subresource_wildcards_and_names() {
    let policy = Policy::parse(
        r#"
apiVersion: audit.k8s.io/v1
kind: Policy
rules:
  - level: RequestResponse
    resources: [{group: "", resources: ["pods/log"]}]
  - level: Request
    resources: [{group: "", resources: ["*/status"]}]
  - level: None
    resources: [{group: "", resources: ["configmaps"], resourceNames: ["noisy"]}]
  - level: Metadata
    resources: [{group: "apps", resources: ["deployments/*"]}]
  - level: Request
    resources: [{group: "", resources: ["pods"]}]
"#,
    )
    .expect("valid");
    let u = user("u", &[]);
    let u = Some(&u);
    assert_eq!(
        level(&policy, u, "GET", "/api/v1/namespaces/d/pods/p/log"),
        Level::RequestResponse
    );
    assert_eq!(
        level(&policy, u, "PUT", "/api/v1/namespaces/d/pods/p/status"),
        Level::Request
    );
    assert_eq!(
        level(&policy, u, "PUT", "/api/v1/nodes/n/status"),
        Level::Request
    );
    assert_eq!(
        level(&policy, u, "GET", "/api/v1/namespaces/d/pods/p"),
        Level::Request
    );
    // `pods` does not match the subresource `pods/exec`; nothing else does either.
    assert_eq!(
        level(&policy, u, "POST", "/api/v1/namespaces/d/pods/p/exec"),
        Level::None
    );
    assert_eq!(
        level(&policy, u, "GET", "/api/v1/namespaces/d/configmaps/noisy"),
        Level::None
    );
    // A rule with resourceNames does not match other names, nor collections.
    assert_eq!(
        level(&policy, u, "GET", "/api/v1/namespaces/d/configmaps/other"),
        Level::None
    );
    assert_eq!(
        level(
            &policy,
            u,
            "GET",
            "/apis/apps/v1/namespaces/d/deployments/web/scale"
        ),
        Level::Metadata
    );
    assert_eq!(
        level(
            &policy,
            u,
            "GET",
            "/apis/apps/v1/namespaces/d/deployments/web"
        ),
        Level::Metadata
    );
    // Group mismatch: the core group's pods rule does not match a group named "apps".
    assert_eq!(
        level(&policy, u, "GET", "/apis/apps/v1/namespaces/d/replicasets"),
        Level::None
    );
}

#[test]
fn namespaces_match_with_the_empty_string_for_cluster_scope() {
    let policy = Policy::parse(
        "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n- level: Request\n  namespaces: [\"kube-system\", \"\"]\n",
    )
    .expect("valid");
    let u = user("u", &[]);
    let u = Some(&u);
    assert_eq!(
        level(&policy, u, "GET", "/api/v1/namespaces/kube-system/pods"),
        Level::Request
    );
    assert_eq!(level(&policy, u, "GET", "/api/v1/nodes"), Level::Request);
    assert_eq!(
        level(&policy, u, "GET", "/api/v1/namespaces/default/pods"),
        Level::None
    );
    // A namespaces rule never matches a non-resource request.
    assert_eq!(level(&policy, u, "GET", "/healthz"), Level::None);
}

#[test]
fn non_resource_urls_match_exactly_by_prefix_or_all_and_never_resources() {
    let policy = Policy::parse(
        "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n- level: Request\n  nonResourceURLs: [\"/metrics\", \"/openapi/*\"]\n- level: Metadata\n  nonResourceURLs: [\"*\"]\n",
    )
    .expect("valid");
    let u = user("u", &[]);
    let u = Some(&u);
    assert_eq!(level(&policy, u, "GET", "/metrics"), Level::Request);
    assert_eq!(level(&policy, u, "GET", "/metrics/x"), Level::Metadata);
    assert_eq!(
        level(&policy, u, "GET", "/openapi/v3/api/v1"),
        Level::Request
    );
    assert_eq!(level(&policy, u, "GET", "/apis"), Level::Metadata);
    assert_eq!(
        level(&policy, u, "GET", "/api/v1/namespaces/d/pods"),
        Level::None
    );
}

#[test]
fn omit_stages_add_up_and_omit_managed_fields_can_be_overridden_per_rule() {
    let policy = Policy::parse(
        r#"
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
omitManagedFields: true
rules:
  - level: Request
    verbs: [create]
    omitStages: [ResponseStarted]
    omitManagedFields: false
  - level: Request
"#,
    )
    .expect("valid");
    let u = user("u", &[]);
    let create = policy.evaluate(Some(&u), &req("POST", "/api/v1/namespaces/d/pods"));
    assert!(create.omit_stages.contains(Stage::RequestReceived));
    assert!(create.omit_stages.contains(Stage::ResponseStarted));
    assert!(!create.omit_stages.contains(Stage::ResponseComplete));
    assert!(!create.omit_managed_fields);
    let get = policy.evaluate(Some(&u), &req("GET", "/api/v1/namespaces/d/pods/p"));
    assert!(get.omit_stages.contains(Stage::RequestReceived));
    assert!(!get.omit_stages.contains(Stage::ResponseStarted));
    assert!(get.omit_managed_fields);
}

#[test]
fn invalid_policies_are_refused_with_the_field_that_is_wrong() {
    let cases = [
        (
            "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules: []\n",
            "at least one rule",
        ),
        (
            "apiVersion: audit.k8s.io/v1beta1\nkind: Policy\nrules: [{level: None}]\n",
            "apiVersion",
        ),
        (
            "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n- level: None\n- level: Request\n  nonResourceURLs: [/x]\n  resources: [{group: \"\"}]\n",
            "rules[1].nonResourceURLs: rules cannot apply to both",
        ),
        (
            "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n- level: Request\n  nonResourceURLs: [healthz]\n",
            "must begin with a '/'",
        ),
        (
            "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n- level: Request\n  nonResourceURLs: [\"/a*/b\"]\n",
            "must be the final character",
        ),
        (
            "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n- level: Request\n  resources: [{group: \"\", resourceNames: [x]}]\n",
            "requires at least one resource",
        ),
        (
            "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n- level: Request\n  resources: [{group: \"Apps\"}]\n",
            "DNS subdomain",
        ),
        (
            "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n- level: Everything\n",
            "unknown variant",
        ),
        (
            "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n- level: None\n  userGroup: [x]\n",
            "unknown field `userGroup`",
        ),
        (
            "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n- level: None\n  omitStages: [Done]\n",
            "unknown variant",
        ),
    ];
    for (text, expected) in cases {
        let err = Policy::parse(text).expect_err(text).to_string();
        assert!(err.contains(expected), "{text}\n=> {err}");
    }
}

#[test]
fn a_policy_file_is_read_as_yaml_or_json() {
    let dir = tempfile::tempdir().expect("tempdir");
    let json = dir.path().join("policy.json");
    std::fs::write(
        &json,
        r#"{"apiVersion":"audit.k8s.io/v1","kind":"Policy","metadata":{"name":"p"},"rules":[{"level":"Metadata"}]}"#,
    )
    .expect("write");
    let policy = Policy::load(&json).expect("JSON policy");
    assert_eq!(policy.rules[0].level, Level::Metadata);
    let err = Policy::load(&dir.path().join("missing.yaml"))
        .expect_err("missing file")
        .to_string();
    assert!(err.contains("missing.yaml"), "{err}");
}
