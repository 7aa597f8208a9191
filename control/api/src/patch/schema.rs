//! Strategic-merge patch metadata of the built-in kinds: which lists merge, and by what key.
//!
//! In Kubernetes this comes from Go struct tags (`patchStrategy:"merge"
//! patchMergeKey:"name"`) found by reflection while the patch walks the object. Here each Go
//! struct type that carries such a tag, or leads to one, is a [`Ty`] with a table of its
//! notable fields; the walk follows field types from a kind's root (`Deployment` →
//! `spec: DeploymentSpec` → `template: PodTemplateSpec` → `spec: PodSpec` →
//! `containers: [Container]` → `env` merged by `name`).
//!
//! A field missing from a table has no metadata: a nested object merges key by key, a list
//! is replaced wholesale. That is exactly Kubernetes' behaviour for untagged fields such as
//! `tolerations`, `readinessGates`, `taints`, `containerStatuses` or `resizePolicy`; a few of
//! them are listed anyway ([`atomic`]) so the tables document the choice. The tags were read
//! from k8s.io/api (`core/v1`, `apps/v1`, `batch/v1`, `policy/v1`, …) and
//! k8s.io/apimachinery (`ObjectMeta`).
//!
//! `retainKeys` strategies (`DeploymentSpec.strategy`, `PodSpec.volumes`) only matter when a
//! client computes a patch; applying honours any `$retainKeys` directive wherever it is, so
//! they are not recorded.

/// How a field's value is combined with the patch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Strategy {
    /// No tag: objects merge key by key, lists are replaced.
    Default,
    /// `patchStrategy:"merge"`: lists merge (by the merge key for lists of objects, as a set
    /// for lists of primitives).
    Merge,
    /// `patchStrategy:"replace"`: an object is replaced, not merged.
    Replace,
}

/// Patch metadata of one field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Field {
    /// The JSON name of the field.
    name: &'static str,
    /// Its patch strategy.
    pub(super) strategy: Strategy,
    /// `patchMergeKey`, for merged lists of objects.
    pub(super) merge_key: Option<&'static str>,
    /// The type of the value, or of each element for a list.
    pub(super) ty: Ty,
}

/// The metadata of a field no table lists.
pub(super) const NO_METADATA: Field = Field {
    name: "",
    strategy: Strategy::Default,
    merge_key: None,
    ty: Ty::Opaque,
};

/// A nested object (or list of objects) of type `ty`, with no strategy of its own.
const fn typed(name: &'static str, ty: Ty) -> Field {
    Field {
        name,
        strategy: Strategy::Default,
        merge_key: None,
        ty,
    }
}

/// A list of objects merged by `key`.
const fn merge_by(name: &'static str, key: &'static str, ty: Ty) -> Field {
    Field {
        name,
        strategy: Strategy::Merge,
        merge_key: Some(key),
        ty,
    }
}

/// A list of primitives merged as a set.
const fn merge_set(name: &'static str) -> Field {
    Field {
        name,
        strategy: Strategy::Merge,
        merge_key: None,
        ty: Ty::Opaque,
    }
}

/// An object replaced as a whole.
const fn replace(name: &'static str) -> Field {
    Field {
        name,
        strategy: Strategy::Replace,
        merge_key: None,
        ty: Ty::Opaque,
    }
}

/// A list that Kubernetes replaces as a whole (no tag); listed for documentation only.
const fn atomic(name: &'static str) -> Field {
    Field {
        name,
        strategy: Strategy::Default,
        merge_key: None,
        ty: Ty::Opaque,
    }
}

/// A Go struct type with patch metadata somewhere beneath it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Ty {
    /// Nothing known: maps merge key by key, lists are replaced.
    Opaque,
    /// A built-in kind whose only tagged fields are in `metadata`.
    Object,
    /// `metav1.ObjectMeta`.
    ObjectMeta,
    /// A kind whose `status.conditions` merge by `type` (HPA, FlowSchema, ServiceCIDR, …).
    ObjectWithStatusConditions,
    /// A status whose `conditions` merge by `type`.
    StatusConditions,
    /// `core/v1` Pod.
    Pod,
    /// `core/v1` PodTemplate.
    PodTemplate,
    /// `core/v1` PodTemplateSpec.
    PodTemplateSpec,
    /// `core/v1` PodSpec.
    PodSpec,
    /// `core/v1` Container and EphemeralContainer (same JSON fields).
    Container,
    /// `core/v1` PodStatus.
    PodStatus,
    /// Deployment, ReplicaSet, DaemonSet, StatefulSet, Job, ReplicationController: a
    /// `spec.template` pod template and `status.conditions` merged by `type`.
    Workload,
    /// The specs of [`Ty::Workload`] kinds and `batch/v1` JobSpec: a `template`.
    WorkloadSpec,
    /// `batch/v1` CronJob.
    CronJob,
    /// `batch/v1` CronJobSpec.
    CronJobSpec,
    /// `batch/v1` JobTemplateSpec.
    JobTemplateSpec,
    /// `core/v1` Service.
    Service,
    /// `core/v1` ServiceSpec.
    ServiceSpec,
    /// `core/v1` ServiceAccount.
    ServiceAccount,
    /// `core/v1` Node.
    Node,
    /// `core/v1` NodeSpec.
    NodeSpec,
    /// `core/v1` NodeStatus.
    NodeStatus,
    /// `core/v1` ComponentStatus (conditions at the top level).
    ComponentStatus,
    /// `policy/v1` PodDisruptionBudget.
    PodDisruptionBudget,
    /// `policy/v1` PodDisruptionBudgetSpec.
    PodDisruptionBudgetSpec,
    /// `storage.k8s.io/v1` CSINode.
    CsiNode,
    /// `storage.k8s.io/v1` CSINodeSpec.
    CsiNodeSpec,
    /// `admissionregistration.k8s.io/v1` Validating/MutatingWebhookConfiguration.
    WebhookConfiguration,
    /// `admissionregistration.k8s.io/v1` ValidatingWebhook / MutatingWebhook.
    Webhook,
    /// `admissionregistration.k8s.io/v1` ValidatingAdmissionPolicy.
    AdmissionPolicy,
    /// `admissionregistration.k8s.io/v1` ValidatingAdmissionPolicySpec.
    AdmissionPolicySpec,
}

const OBJECT_META: Field = typed("metadata", Ty::ObjectMeta);
const CONDITIONS_BY_TYPE: Field = merge_by("conditions", "type", Ty::Opaque);

/// A `&'static [Field]` built from `const fn` calls (a constant, so it can be borrowed
/// for `'static`).
macro_rules! fields {
    ($($field:expr),* $(,)?) => {{
        const FIELDS: &[Field] = &[$($field),*];
        FIELDS
    }};
}

impl Ty {
    /// The fields of this type that carry metadata or lead to some.
    fn fields(self) -> &'static [Field] {
        match self {
            Ty::Opaque => &[],
            Ty::Object => fields![OBJECT_META],
            Ty::ObjectMeta => fields![
                merge_set("finalizers"),
                merge_by("ownerReferences", "uid", Ty::Opaque),
                atomic("managedFields"),
            ],
            Ty::ObjectWithStatusConditions => {
                fields![OBJECT_META, typed("status", Ty::StatusConditions)]
            }
            Ty::StatusConditions => fields![CONDITIONS_BY_TYPE],
            Ty::Pod => fields![
                OBJECT_META,
                typed("spec", Ty::PodSpec),
                typed("status", Ty::PodStatus),
            ],
            Ty::PodTemplate => fields![OBJECT_META, typed("template", Ty::PodTemplateSpec)],
            Ty::PodTemplateSpec => fields![OBJECT_META, typed("spec", Ty::PodSpec)],
            Ty::PodSpec => fields![
                merge_by("volumes", "name", Ty::Opaque),
                merge_by("initContainers", "name", Ty::Container),
                merge_by("containers", "name", Ty::Container),
                merge_by("ephemeralContainers", "name", Ty::Container),
                merge_by("imagePullSecrets", "name", Ty::Opaque),
                merge_by("hostAliases", "ip", Ty::Opaque),
                merge_by("topologySpreadConstraints", "topologyKey", Ty::Opaque),
                merge_by("schedulingGates", "name", Ty::Opaque),
                merge_by("resourceClaims", "name", Ty::Opaque),
                atomic("tolerations"),
                atomic("readinessGates"),
            ],
            Ty::Container => fields![
                merge_by("ports", "containerPort", Ty::Opaque),
                merge_by("env", "name", Ty::Opaque),
                merge_by("volumeMounts", "mountPath", Ty::Opaque),
                merge_by("volumeDevices", "devicePath", Ty::Opaque),
                atomic("resizePolicy"),
                atomic("envFrom"),
            ],
            Ty::PodStatus => fields![
                CONDITIONS_BY_TYPE,
                merge_by("hostIPs", "ip", Ty::Opaque),
                merge_by("podIPs", "ip", Ty::Opaque),
                merge_by("resourceClaimStatuses", "name", Ty::Opaque),
                atomic("containerStatuses"),
                atomic("initContainerStatuses"),
                atomic("ephemeralContainerStatuses"),
            ],
            Ty::Workload => fields![
                OBJECT_META,
                typed("spec", Ty::WorkloadSpec),
                typed("status", Ty::StatusConditions),
            ],
            Ty::WorkloadSpec => fields![
                typed("template", Ty::PodTemplateSpec),
                atomic("volumeClaimTemplates"),
            ],
            Ty::CronJob => fields![OBJECT_META, typed("spec", Ty::CronJobSpec)],
            Ty::CronJobSpec => fields![typed("jobTemplate", Ty::JobTemplateSpec)],
            Ty::JobTemplateSpec => fields![OBJECT_META, typed("spec", Ty::WorkloadSpec)],
            Ty::Service => fields![
                OBJECT_META,
                typed("spec", Ty::ServiceSpec),
                typed("status", Ty::StatusConditions),
            ],
            Ty::ServiceSpec => fields![merge_by("ports", "port", Ty::Opaque)],
            Ty::ServiceAccount => fields![OBJECT_META, merge_by("secrets", "name", Ty::Opaque)],
            Ty::Node => fields![
                OBJECT_META,
                typed("spec", Ty::NodeSpec),
                typed("status", Ty::NodeStatus),
            ],
            Ty::NodeSpec => fields![merge_set("podCIDRs"), atomic("taints")],
            Ty::NodeStatus => fields![
                CONDITIONS_BY_TYPE,
                merge_by("addresses", "type", Ty::Opaque),
                atomic("images"),
            ],
            Ty::ComponentStatus => fields![OBJECT_META, CONDITIONS_BY_TYPE],
            Ty::PodDisruptionBudget => fields![
                OBJECT_META,
                typed("spec", Ty::PodDisruptionBudgetSpec),
                typed("status", Ty::StatusConditions),
            ],
            Ty::PodDisruptionBudgetSpec => fields![replace("selector")],
            Ty::CsiNode => fields![OBJECT_META, typed("spec", Ty::CsiNodeSpec)],
            Ty::CsiNodeSpec => fields![merge_by("drivers", "name", Ty::Opaque)],
            Ty::WebhookConfiguration => {
                fields![OBJECT_META, merge_by("webhooks", "name", Ty::Webhook)]
            }
            Ty::Webhook => fields![merge_by("matchConditions", "name", Ty::Opaque)],
            Ty::AdmissionPolicy => fields![OBJECT_META, typed("spec", Ty::AdmissionPolicySpec)],
            Ty::AdmissionPolicySpec => fields![
                merge_by("matchConditions", "name", Ty::Opaque),
                merge_by("variables", "name", Ty::Opaque),
            ],
        }
    }

    /// The metadata of field `name` of this type ([`NO_METADATA`] when it has none).
    pub(super) fn field(self, name: &str) -> Field {
        self.fields()
            .iter()
            .find(|f| f.name == name)
            .copied()
            .unwrap_or(NO_METADATA)
    }
}

/// Every built-in kind, by API group, with the type its objects are walked as.
const KINDS: &[(&str, &[(&str, Ty)])] = &[
    (
        "",
        &[
            ("Pod", Ty::Pod),
            ("PodTemplate", Ty::PodTemplate),
            ("ReplicationController", Ty::Workload),
            ("Service", Ty::Service),
            ("ServiceAccount", Ty::ServiceAccount),
            ("Node", Ty::Node),
            ("Namespace", Ty::ObjectWithStatusConditions),
            ("PersistentVolumeClaim", Ty::ObjectWithStatusConditions),
            ("ComponentStatus", Ty::ComponentStatus),
            ("Endpoints", Ty::Object),
            ("ConfigMap", Ty::Object),
            ("Secret", Ty::Object),
            ("Event", Ty::Object),
            ("PersistentVolume", Ty::Object),
            ("LimitRange", Ty::Object),
            ("ResourceQuota", Ty::Object),
            ("Binding", Ty::Object),
        ],
    ),
    (
        "apps",
        &[
            ("Deployment", Ty::Workload),
            ("ReplicaSet", Ty::Workload),
            ("DaemonSet", Ty::Workload),
            ("StatefulSet", Ty::Workload),
            ("ControllerRevision", Ty::Object),
        ],
    ),
    ("batch", &[("Job", Ty::Workload), ("CronJob", Ty::CronJob)]),
    (
        "autoscaling",
        &[
            ("HorizontalPodAutoscaler", Ty::ObjectWithStatusConditions),
            ("Scale", Ty::Object),
        ],
    ),
    (
        "policy",
        &[
            ("PodDisruptionBudget", Ty::PodDisruptionBudget),
            ("Eviction", Ty::Object),
        ],
    ),
    (
        "networking.k8s.io",
        &[
            ("Ingress", Ty::Object),
            ("IngressClass", Ty::Object),
            ("NetworkPolicy", Ty::Object),
            ("IPAddress", Ty::Object),
            ("ServiceCIDR", Ty::ObjectWithStatusConditions),
        ],
    ),
    ("discovery.k8s.io", &[("EndpointSlice", Ty::Object)]),
    ("events.k8s.io", &[("Event", Ty::Object)]),
    ("coordination.k8s.io", &[("Lease", Ty::Object)]),
    ("node.k8s.io", &[("RuntimeClass", Ty::Object)]),
    ("scheduling.k8s.io", &[("PriorityClass", Ty::Object)]),
    (
        "storage.k8s.io",
        &[
            ("StorageClass", Ty::Object),
            ("CSIDriver", Ty::Object),
            ("CSINode", Ty::CsiNode),
            ("CSIStorageCapacity", Ty::Object),
            ("VolumeAttachment", Ty::Object),
        ],
    ),
    (
        "rbac.authorization.k8s.io",
        &[
            ("Role", Ty::Object),
            ("ClusterRole", Ty::Object),
            ("RoleBinding", Ty::Object),
            ("ClusterRoleBinding", Ty::Object),
        ],
    ),
    (
        "admissionregistration.k8s.io",
        &[
            ("ValidatingWebhookConfiguration", Ty::WebhookConfiguration),
            ("MutatingWebhookConfiguration", Ty::WebhookConfiguration),
            ("ValidatingAdmissionPolicy", Ty::AdmissionPolicy),
            ("ValidatingAdmissionPolicyBinding", Ty::Object),
        ],
    ),
    (
        "apiextensions.k8s.io",
        &[("CustomResourceDefinition", Ty::Object)],
    ),
    ("apiregistration.k8s.io", &[("APIService", Ty::Object)]),
    (
        "certificates.k8s.io",
        &[("CertificateSigningRequest", Ty::Object)],
    ),
    (
        "flowcontrol.apiserver.k8s.io",
        &[
            ("FlowSchema", Ty::ObjectWithStatusConditions),
            ("PriorityLevelConfiguration", Ty::ObjectWithStatusConditions),
        ],
    ),
];

fn lookup(group: &str, kind: &str) -> Option<Ty> {
    KINDS
        .iter()
        .find(|(g, _)| *g == group)
        .and_then(|(_, kinds)| kinds.iter().find(|(k, _)| *k == kind))
        .map(|(_, ty)| *ty)
}

/// Whether strategic merge patch is defined for `group`/`kind` (`""` is the core group):
/// true for Kubernetes' built-in kinds, false for anything else such as custom resources,
/// for which the apiserver should answer `application/strategic-merge-patch+json` with
/// 415 Unsupported Media Type, like Kubernetes.
pub fn supports_strategic(group: &str, kind: &str) -> bool {
    lookup(group, kind).is_some()
}

/// The type a `group`/`kind` object is walked as; [`Ty::Opaque`] for unknown kinds.
pub(super) fn root_type(group: &str, kind: &str) -> Ty {
    lookup(group, kind).unwrap_or(Ty::Opaque)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Follows a path of field names from a kind's root type.
    fn walk(group: &str, kind: &str, path: &[&str]) -> Field {
        let mut field = typed("", root_type(group, kind));
        for name in path {
            field = field.ty.field(name);
        }
        field
    }

    #[test]
    fn deployment_containers_merge_by_name_through_the_pod_template() {
        let f = walk(
            "apps",
            "Deployment",
            &["spec", "template", "spec", "containers"],
        );
        assert_eq!((f.strategy, f.merge_key), (Strategy::Merge, Some("name")));
        assert_eq!(f.ty, Ty::Container);
    }

    #[test]
    fn container_env_ports_and_mounts_have_their_kubernetes_merge_keys() {
        for (field, key) in [
            ("env", "name"),
            ("ports", "containerPort"),
            ("volumeMounts", "mountPath"),
            ("volumeDevices", "devicePath"),
        ] {
            let f = walk("", "Pod", &["spec", "containers", field]);
            assert_eq!(
                (f.strategy, f.merge_key),
                (Strategy::Merge, Some(key)),
                "{field}"
            );
        }
    }

    #[test]
    fn cronjob_containers_are_reached_through_the_job_template() {
        let f = walk(
            "batch",
            "CronJob",
            &[
                "spec",
                "jobTemplate",
                "spec",
                "template",
                "spec",
                "initContainers",
            ],
        );
        assert_eq!(f.merge_key, Some("name"));
    }

    #[test]
    fn untagged_lists_have_no_strategy() {
        for path in [
            &["spec", "tolerations"][..],
            &["spec", "readinessGates"],
            &["status", "containerStatuses"],
            &["spec", "containers", "resizePolicy"],
        ] {
            assert_eq!(
                walk("", "Pod", path).strategy,
                Strategy::Default,
                "{path:?}"
            );
        }
        assert_eq!(
            walk("", "Node", &["spec", "taints"]).strategy,
            Strategy::Default
        );
    }

    #[test]
    fn object_meta_finalizers_and_owner_references_merge_for_every_builtin_kind() {
        for (group, kind) in [("", "ConfigMap"), ("apps", "StatefulSet"), ("", "Pod")] {
            let f = walk(group, kind, &["metadata", "finalizers"]);
            assert_eq!((f.strategy, f.merge_key), (Strategy::Merge, None));
            let f = walk(group, kind, &["metadata", "ownerReferences"]);
            assert_eq!(f.merge_key, Some("uid"));
        }
    }

    #[test]
    fn status_conditions_merge_by_type() {
        for (group, kind) in [
            ("", "Pod"),
            ("", "Node"),
            ("apps", "Deployment"),
            ("apps", "DaemonSet"),
            ("batch", "Job"),
        ] {
            assert_eq!(
                walk(group, kind, &["status", "conditions"]).merge_key,
                Some("type")
            );
        }
        assert_eq!(
            walk("", "Node", &["status", "addresses"]).merge_key,
            Some("type")
        );
        assert_eq!(
            walk("", "Service", &["spec", "ports"]).merge_key,
            Some("port")
        );
    }

    #[test]
    fn builtin_kinds_support_strategic_merge_and_custom_resources_do_not() {
        assert!(supports_strategic("", "Pod"));
        assert!(supports_strategic("", "ConfigMap"));
        assert!(supports_strategic("apps", "Deployment"));
        assert!(supports_strategic("coordination.k8s.io", "Lease"));
        assert!(supports_strategic("node.k8s.io", "RuntimeClass"));
        assert!(!supports_strategic("example.com", "Widget"));
        assert!(!supports_strategic("apps", "Widget"));
        assert!(!supports_strategic("", "Deployment"));
    }

    #[test]
    fn unknown_kinds_walk_as_opaque() {
        assert_eq!(root_type("example.com", "Widget"), Ty::Opaque);
        assert_eq!(
            walk("example.com", "Widget", &["metadata", "finalizers"]),
            NO_METADATA
        );
    }
}
