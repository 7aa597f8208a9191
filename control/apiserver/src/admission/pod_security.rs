//! PodSecurity admission: the Pod Security Standards (privileged, baseline, restricted),
//! chosen per namespace by its `pod-security.kubernetes.io/{enforce,audit,warn}[-version]`
//! labels, as Kubernetes' built-in plugin applies them (no exemptions).
//!
//! - **enforce**: a pod that violates the level is refused with 403 and Kubernetes' message
//!   `pods "x" is forbidden: violates PodSecurity "restricted:latest": hostPath volumes
//!   (volume "h"), ...`.
//! - **warn**: the request succeeds with a `Warning: 299 - "would violate PodSecurity ..."`
//!   header, which kubectl prints.
//! - **audit**: the violation becomes the `pod-security.kubernetes.io/audit-violations` audit
//!   annotation of the request (and the enforced level `.../enforce-policy`); with no audit
//!   log yet they are logged (target `audit`), see [`super::Outcome::audit_annotations`].
//!
//! Pods are checked on create (their security-relevant fields are immutable); workload
//! objects with a pod template (Deployment, ReplicaSet, DaemonSet, Job) get warn and audit
//! only, on create and when the template changes, as Kubernetes does. Namespaces: invalid
//! labels are refused (422), and setting a new enforce level warns about the existing pods
//! that would violate it. The checks themselves are in [`checks`].

pub mod checks;

use std::collections::BTreeMap;
use std::fmt;

use k8s_openapi::api::core::v1::PodSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde_json::Value;

use crate::validation::Cause;
use checks::Violation;

/// The label prefix of the policy labels.
const LABEL_PREFIX: &str = "pod-security.kubernetes.io/";
/// The newest policy version this apiserver knows (it serves Kubernetes 1.33).
pub const LATEST_MINOR: u32 = 33;
/// The audit annotation naming the enforced policy.
pub const ENFORCE_POLICY_ANNOTATION: &str = "pod-security.kubernetes.io/enforce-policy";
/// The audit annotation holding an audit-level violation.
pub const AUDIT_VIOLATIONS_ANNOTATION: &str = "pod-security.kubernetes.io/audit-violations";

/// A Pod Security Standards level.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    /// Anything goes.
    Privileged,
    /// Prevents known privilege escalations.
    Baseline,
    /// Hardening best practices.
    Restricted,
}

impl Level {
    fn parse(s: &str) -> Option<Level> {
        match s {
            "privileged" => Some(Level::Privileged),
            "baseline" => Some(Level::Baseline),
            "restricted" => Some(Level::Restricted),
            _ => None,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Level::Privileged => "privileged",
            Level::Baseline => "baseline",
            Level::Restricted => "restricted",
        }
    }
}

/// A policy version: `latest` or `v1.N`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    /// The newest checks.
    Latest,
    /// The checks as of Kubernetes 1.N.
    Minor(u32),
}

impl Version {
    fn parse(s: &str) -> Option<Version> {
        if s == "latest" {
            return Some(Version::Latest);
        }
        let minor = s.strip_prefix("v1.")?;
        let valid = minor == "0" || (!minor.starts_with('0') && !minor.is_empty());
        if !valid || !minor.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        minor.parse().ok().map(Version::Minor)
    }

    /// The minor version whose checks apply (later versions than this apiserver's get its
    /// newest checks, as Kubernetes caps them).
    fn effective_minor(self) -> u32 {
        match self {
            Version::Latest => LATEST_MINOR,
            Version::Minor(m) => m.min(LATEST_MINOR),
        }
    }
}

/// A level at a version, shown as `restricted:latest`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LevelVersion {
    /// The level.
    pub level: Level,
    /// The version.
    pub version: Version,
}

impl fmt::Display for LevelVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.version {
            Version::Latest => write!(f, "{}:latest", self.level.as_str()),
            Version::Minor(m) => write!(f, "{}:v1.{m}", self.level.as_str()),
        }
    }
}

const PRIVILEGED_LATEST: LevelVersion = LevelVersion {
    level: Level::Privileged,
    version: Version::Latest,
};

/// A namespace's policy for each mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Policy {
    /// Refuse violating pods.
    pub enforce: LevelVersion,
    /// Record violations in the audit annotations.
    pub audit: LevelVersion,
    /// Warn the client.
    pub warn: LevelVersion,
}

impl Policy {
    /// Whether nothing is checked in any mode.
    pub fn fully_privileged(&self) -> bool {
        [self.enforce, self.audit, self.warn]
            .iter()
            .all(|lv| lv.level == Level::Privileged)
    }
}

/// The policy of a namespace's labels, and the problems with them (invalid labels make the
/// mode restricted, failing closed, as Kubernetes does). Unlabelled modes are
/// `privileged:latest`.
pub fn policy_from_labels(labels: &BTreeMap<String, String>) -> (Policy, Vec<Cause>) {
    let mut errors = Vec::new();
    let mut mode = |name: &str| {
        let level_key = format!("{LABEL_PREFIX}{name}");
        let version_key = format!("{LABEL_PREFIX}{name}-version");
        let mut lv = PRIVILEGED_LATEST;
        let mut has_level = false;
        if let Some(level) = labels.get(&level_key) {
            match Level::parse(level) {
                Some(l) => {
                    lv.level = l;
                    has_level = true;
                }
                None => {
                    lv.level = Level::Restricted;
                    errors.push(label_cause(
                        &level_key,
                        level,
                        "must be one of privileged, baseline, restricted",
                    ));
                }
            }
        }
        if let Some(version) = labels.get(&version_key) {
            match Version::parse(version) {
                Some(v) => lv.version = v,
                None => {
                    lv.version = Version::Latest;
                    errors.push(label_cause(
                        &version_key,
                        version,
                        "must be 'latest' or of the form 'v1.x'",
                    ));
                }
            }
        } else if has_level {
            lv.version = Version::Latest;
        }
        lv
    };
    let policy = Policy {
        enforce: mode("enforce"),
        audit: mode("audit"),
        warn: mode("warn"),
    };
    (policy, errors)
}

fn label_cause(key: &str, value: &str, message: &str) -> Cause {
    Cause {
        reason: "FieldValueInvalid",
        message: format!("Invalid value: \"{value}\": {message}"),
        field: format!("metadata.labels[{key}]"),
    }
}

/// The violations of a pod (metadata and spec) at `lv`, in Kubernetes' order.
pub fn evaluate(lv: LevelVersion, meta: &ObjectMeta, spec: &PodSpec) -> Vec<Violation> {
    let minor = lv.version.effective_minor();
    let mut list: Vec<checks::Check> = Vec::new();
    match lv.level {
        Level::Privileged => return Vec::new(),
        Level::Baseline => {
            list.extend_from_slice(checks::BASELINE);
            list.extend_from_slice(checks::BASELINE_ONLY);
        }
        Level::Restricted => {
            list.extend_from_slice(checks::BASELINE);
            list.extend(checks::baseline_only_at_restricted(minor));
            list.extend_from_slice(checks::RESTRICTED);
        }
    }
    list.iter().filter_map(|c| c(meta, spec, minor)).collect()
}

/// `reason (detail), reason`: the detailed form of an aggregated result.
pub fn forbidden_detail(violations: &[Violation]) -> String {
    violations
        .iter()
        .map(|v| {
            if v.detail.is_empty() {
                v.reason.clone()
            } else {
                format!("{} ({})", v.reason, v.detail)
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// `reason, reason`: the short form.
fn forbidden_reason(violations: &[Violation]) -> String {
    violations
        .iter()
        .map(|v| v.reason.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// A pod's metadata and spec from a Pod object (or a pod template).
pub fn pod_parts(obj: &Value) -> Option<(ObjectMeta, PodSpec)> {
    let meta: ObjectMeta = obj
        .get("metadata")
        .map(|m| serde_json::from_value(m.clone()))
        .transpose()
        .ok()?
        .unwrap_or_default();
    let spec: PodSpec = serde_json::from_value(obj.get("spec")?.clone()).ok()?;
    Some((meta, spec))
}

/// What PodSecurity decided about one request.
#[derive(Debug, Default)]
pub struct Decision {
    /// The enforce violation message (`violates PodSecurity "...": ...`), if refused.
    pub refused: Option<String>,
    /// Warnings for the client.
    pub warnings: Vec<String>,
    /// Audit annotations.
    pub audit: BTreeMap<String, String>,
}

/// Evaluates a pod against its namespace's `policy`: enforce, audit, warn.
pub fn admit_pod(policy: &Policy, meta: &ObjectMeta, spec: &PodSpec) -> Decision {
    let mut decision = Decision::default();
    if policy.fully_privileged() {
        return decision;
    }
    let enforce = evaluate(policy.enforce, meta, spec);
    if policy.enforce.level != Level::Privileged {
        decision
            .audit
            .insert(ENFORCE_POLICY_ANNOTATION.into(), policy.enforce.to_string());
    }
    if !enforce.is_empty() {
        decision.refused = Some(format!(
            "violates PodSecurity \"{}\": {}",
            policy.enforce,
            forbidden_detail(&enforce)
        ));
    }
    let audit = if policy.audit == policy.enforce {
        enforce
    } else {
        evaluate(policy.audit, meta, spec)
    };
    if !audit.is_empty() {
        decision.audit.insert(
            AUDIT_VIOLATIONS_ANNOTATION.into(),
            format!(
                "would violate PodSecurity \"{}\": {}",
                policy.audit,
                forbidden_detail(&audit)
            ),
        );
    }
    // No warning on a request that is refused anyway.
    if decision.refused.is_none() && policy.warn != policy.enforce {
        let warn = evaluate(policy.warn, meta, spec);
        if !warn.is_empty() {
            decision.warnings.push(format!(
                "would violate PodSecurity \"{}\": {}",
                policy.warn,
                forbidden_detail(&warn)
            ));
        }
    }
    decision
}

/// Evaluates a workload's pod template: warn and audit only (never enforced, as Kubernetes:
/// the pods it makes are).
pub fn admit_template(policy: &Policy, meta: &ObjectMeta, spec: &PodSpec) -> Decision {
    let mut decision = Decision::default();
    if policy.audit.level == Level::Privileged && policy.warn.level == Level::Privileged {
        return decision;
    }
    let audit = evaluate(policy.audit, meta, spec);
    if !audit.is_empty() {
        decision.audit.insert(
            AUDIT_VIOLATIONS_ANNOTATION.into(),
            format!(
                "would violate PodSecurity \"{}\": {}",
                policy.audit,
                forbidden_detail(&audit)
            ),
        );
    }
    let warn = if policy.warn == policy.audit {
        audit
    } else {
        evaluate(policy.warn, meta, spec)
    };
    if !warn.is_empty() {
        decision.warnings.push(format!(
            "would violate PodSecurity \"{}\": {}",
            policy.warn,
            forbidden_detail(&warn)
        ));
    }
    decision
}

/// The warnings for a namespace whose enforce level changes to `enforce`: which existing
/// pods (name, metadata, spec) would violate it, grouped by reasons as Kubernetes does.
pub fn existing_pod_warnings(
    namespace: &str,
    enforce: LevelVersion,
    pods: &[(String, ObjectMeta, PodSpec)],
) -> Vec<String> {
    if enforce.level == Level::Privileged {
        return Vec::new();
    }
    // reasons -> (first pod, count), in the order first seen.
    let mut order: Vec<String> = Vec::new();
    let mut seen: BTreeMap<String, (String, usize)> = BTreeMap::new();
    for (name, meta, spec) in pods {
        let violations = evaluate(enforce, meta, spec);
        if violations.is_empty() {
            continue;
        }
        let reason = forbidden_reason(&violations);
        let entry = seen.entry(reason.clone()).or_insert_with(|| {
            order.push(reason.clone());
            (name.clone(), 0)
        });
        entry.1 += 1;
    }
    if order.is_empty() {
        return Vec::new();
    }
    let mut warnings = vec![format!(
        "existing pods in namespace \"{namespace}\" violate the new PodSecurity enforce level \"{enforce}\""
    )];
    for reason in order {
        let (pod, count) = &seen[&reason];
        if *count == 1 {
            warnings.push(format!("{pod}: {reason}"));
        } else {
            warnings.push(format!("{pod} (and {} other pods): {reason}", count - 1));
        }
    }
    warnings
}

/// A namespace's labels.
pub fn labels_of(obj: &Value) -> BTreeMap<String, String> {
    obj.pointer("/metadata/labels")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| v.as_str().map(|s| (k.clone(), s.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests;
