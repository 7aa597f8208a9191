//! wasmkube-api: pure, I/O-free helpers shared by the control plane.
//!
//! - [`selector`]: label selectors and field selectors, parsed and matched as
//!   `k8s.io/apimachinery` does (used by list/watch in the apiserver and by controllers).
//! - [`validate`]: name, label, key and port checks with Kubernetes' error messages.
//! - [`field`]: field paths and field errors rendered as Kubernetes renders them.
//! - [`quantity`]: resource quantities (`100m`, `128Mi`), used by validation and the
//!   scheduler.
//! - [`quota`]: what an object consumes of a ResourceQuota, shared by the apiserver's quota
//!   admission and the quota controller.
//! - [`scheduling`]: toleration and node-affinity matching, as Kubernetes'
//!   component-helpers (the scheduler's plugins, the DaemonSet controller and taint
//!   eviction decide with them).
//! - [`template_hash`]: the pod-template hash of ReplicaSet names and DaemonSet revisions.
//! - [`knative`]: Knative Serving's labels, annotations (autoscaling bounds), revision names
//!   and hosts, shared by the apiserver, the Knative controllers and the function ingress.
//!
//! Types of the Kubernetes API themselves come from `k8s-openapi`.

pub mod field;
pub mod knative;
pub mod patch;
pub mod quantity;
pub mod quota;
pub mod scheduling;
pub mod selector;
pub mod template_hash;
pub mod validate;

pub use field::{FieldError, FieldPath};
pub use quantity::{Quantity, QuantityError, QuantityFormat, parse_quantity};
pub use selector::{FieldSelector, LabelSelector, SelectorError};
pub use template_hash::pod_template_hash;
