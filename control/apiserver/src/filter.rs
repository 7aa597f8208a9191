//! List and watch filtering: label and field selectors from the query string.

use std::collections::BTreeMap;

use serde_json::Value;
use wasmkube_api::selector::{FieldSelector, LabelSelector};

use crate::error::{ApiError, ApiResult};
use crate::object;
use crate::registry::ResourceType;
use crate::request::Query;

/// The selectors of one list or watch request.
#[derive(Debug, Default)]
pub struct Filter {
    label: Option<LabelSelector>,
    field: Option<FieldSelector>,
}

impl Filter {
    /// Builds the filter from `labelSelector` and `fieldSelector`; a malformed selector or a
    /// field the kind does not support is a 400, as in Kubernetes.
    pub fn from_query(rt: &ResourceType, query: &Query) -> ApiResult<Self> {
        let label =
            match query.get("labelSelector") {
                None => None,
                Some(s) => Some(LabelSelector::parse(s).map_err(|e| {
                    ApiError::bad_request(format!("unable to parse requirement: {e}"))
                })?),
            };
        let field = match query.get("fieldSelector") {
            None => None,
            Some(s) => {
                let sel = FieldSelector::parse(s)
                    .map_err(|e| ApiError::bad_request(format!("invalid field selector: {e}")))?;
                for f in sel.fields() {
                    let supported = f == "metadata.name"
                        || (f == "metadata.namespace" && rt.namespaced)
                        || rt.field_selectors.contains(&f);
                    if !supported {
                        return Err(ApiError::bad_request(format!(
                            "field label not supported: {f} (supported for {}: metadata.name{}{}{})",
                            rt.plural,
                            if rt.namespaced {
                                ", metadata.namespace"
                            } else {
                                ""
                            },
                            if rt.field_selectors.is_empty() {
                                ""
                            } else {
                                ", "
                            },
                            rt.field_selectors.join(", ")
                        )));
                    }
                }
                Some(sel)
            }
        };
        Ok(Filter { label, field })
    }

    /// Whether nothing is filtered out.
    pub fn is_everything(&self) -> bool {
        self.label.is_none() && self.field.is_none()
    }

    /// Whether `obj` passes both selectors.
    pub fn matches(&self, obj: &Value) -> bool {
        if let Some(label) = &self.label {
            let labels: BTreeMap<String, String> = object::labels(obj)
                .into_iter()
                .filter_map(|(k, v)| v.as_str().map(|v| (k, v.to_string())))
                .collect();
            if !label.matches(&labels) {
                return false;
            }
        }
        if let Some(field) = &self.field
            && !field.matches(obj)
        {
            return false;
        }
        true
    }
}
