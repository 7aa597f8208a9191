//! Knative's kinds as kube-rs resources: metadata typed, `spec` and `status` as JSON (no
//! k8s-openapi types exist for them, and JSON keeps every field a client wrote).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::{Deserialize, Serialize};
use serde_json::Value;

macro_rules! knative_kind {
    ($(#[$doc:meta])* $name:ident, $kind:literal, $plural:literal) => {
        $(#[$doc])*
        #[derive(Clone, Debug, Default, Serialize, Deserialize)]
        pub struct $name {
            /// `serving.knative.dev/v1`.
            #[serde(rename = "apiVersion", default)]
            pub api_version: String,
            /// The kind.
            #[serde(default)]
            pub kind: String,
            /// Standard object metadata.
            #[serde(default)]
            pub metadata: ObjectMeta,
            /// The spec, as JSON.
            #[serde(default, skip_serializing_if = "Value::is_null")]
            pub spec: Value,
            /// The status, as JSON.
            #[serde(default, skip_serializing_if = "Value::is_null")]
            pub status: Value,
        }

        impl $name {
            /// A new object with `metadata` and `spec`.
            pub fn new(metadata: ObjectMeta, spec: Value) -> Self {
                $name {
                    api_version: wasmkube_api::knative::API_VERSION.to_string(),
                    kind: $kind.to_string(),
                    metadata,
                    spec,
                    status: Value::Null,
                }
            }
        }

        impl k8s_openapi::Resource for $name {
            const API_VERSION: &'static str = "serving.knative.dev/v1";
            const GROUP: &'static str = "serving.knative.dev";
            const KIND: &'static str = $kind;
            const VERSION: &'static str = "v1";
            const URL_PATH_SEGMENT: &'static str = $plural;
            type Scope = k8s_openapi::NamespaceResourceScope;
        }

        impl k8s_openapi::Metadata for $name {
            type Ty = ObjectMeta;
            fn metadata(&self) -> &ObjectMeta {
                &self.metadata
            }
            fn metadata_mut(&mut self) -> &mut ObjectMeta {
                &mut self.metadata
            }
        }
    };
}

knative_kind!(
    /// A Knative Service (`ksvc`).
    KService,
    "Service",
    "services"
);
knative_kind!(
    /// A Configuration: the template Revisions are stamped from.
    Configuration,
    "Configuration",
    "configurations"
);
knative_kind!(
    /// A Revision: one immutable template, run by a Deployment.
    Revision,
    "Revision",
    "revisions"
);
knative_kind!(
    /// A Route: traffic targets and URLs.
    Route,
    "Route",
    "routes"
);
