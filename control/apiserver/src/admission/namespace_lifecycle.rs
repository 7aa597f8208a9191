//! NamespaceLifecycle admission: new content only in namespaces that exist and are not
//! being deleted (`plugin/pkg/admission/namespace/lifecycle`).
//!
//! - a namespaced create in a namespace that does not exist: 404 `namespaces "x" not found`;
//! - in a namespace being terminated: 403 `pods "p" is forbidden: unable to create new
//!   content in namespace x because it is being terminated` (reason NamespaceTerminating
//!   in the details' causes, as Kubernetes);
//! - the `default`, `kube-system` and `kube-public` namespaces cannot be deleted (checked by
//!   the delete handler: `namespaces "default" is forbidden: this namespace may not be
//!   deleted`).

use serde_json::{Value, json};

use crate::error::{ApiError, ApiResult};
use crate::handlers::{Request, store_error};
use crate::object;

/// The namespaces that are never deleted.
pub const IMMORTAL: &[&str] = &["default", "kube-system", "kube-public"];

/// Checks that a new object named `name` may be created in the request's namespace, and
/// returns that namespace (for the plugins that read its labels); `None` for cluster-scoped
/// kinds.
pub async fn admit(req: &Request<'_>, name: &str) -> ApiResult<Option<Value>> {
    let Some(ns) = req.store_namespace() else {
        return Ok(None);
    };
    let ns_rt = req
        .state
        .registry()
        .by_kind("", "Namespace")
        .ok_or_else(|| ApiError::internal("namespaces are not registered"))?;
    let kv = req
        .state
        .store()
        .get(&ns_rt.key(None, ns))
        .await
        .map_err(|e| store_error(ns_rt, ns, e))?
        .ok_or_else(|| ApiError::not_found("", "namespaces", ns))?;
    let namespace = object::decode(&kv)?;
    if object::is_deleting(&namespace) {
        let mut e = ApiError::forbidden_object(
            req.rt.group,
            req.rt.plural,
            name,
            &format!(
                "unable to create new content in namespace {ns} because it is being terminated"
            ),
        );
        if let Some(details) = e.details.as_mut() {
            details["causes"] = json!([{
                "reason": "NamespaceTerminating",
                "message": format!("namespace {ns} is being terminated"),
                "field": "metadata.namespace",
            }]);
        }
        return Err(e);
    }
    Ok(Some(namespace))
}
