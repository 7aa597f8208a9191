//! OpenAPI v3: the `/openapi/v3` index and one document per group-version
//! (`/openapi/v3/api/v1`, `/openapi/v3/apis/apps/v1`, ...), generated once from the
//! registry and the k8s-openapi types' schemars impls.
//!
//! kubectl 1.32 depends on these documents: `apply` computes strategic merge patches
//! from the schemas' `x-kubernetes-patch-*` extensions (`schemas`), `apply`/`create` leave
//! field validation to the server when the kind's PATCH operation lists the
//! `fieldValidation` parameter (`paths`), and `explain` renders the schemas. The server
//! then has to honour `fieldValidation=Strict`: `crate::typed` finds the unknown fields by
//! round-tripping the object through its k8s-openapi type.
//!
//! `/openapi/v2` is not served: kubectl 1.32 reads v2 only as protobuf, and only as a
//! fallback when v3 is missing (or for `explain --output plaintext-openapiv2`).
//!
//! Documents are deterministic (serde_json's sorted maps), so the same registry yields
//! byte-identical documents and the same `hash` in every process; clients cache a
//! document URL that carries its hash forever.

mod paths;
mod schemas;

use std::collections::BTreeMap;

use bytes::Bytes;
use serde_json::{Map, Value, json};

use crate::registry::{Registry, ResourceType};

/// One group-version document, serialized once.
#[derive(Clone, Debug)]
pub struct Document {
    /// Content hash (hex), the `hash` query parameter of its `serverRelativeURL`.
    pub hash: String,
    /// The JSON bytes served with `Content-Type: application/json`.
    pub json: Bytes,
}

/// All OpenAPI v3 documents of a registry, built once at startup.
#[derive(Clone, Debug)]
pub struct OpenApi {
    index: Value,
    index_json: Bytes,
    docs: BTreeMap<String, Document>,
}

/// The index key and URL path of a group-version: `api/v1`, `apis/apps/v1`.
pub fn gv_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

fn types_of<'a>(registry: &'a Registry, group: &str, version: &str) -> Vec<&'a ResourceType> {
    registry
        .all()
        .iter()
        .filter(|t| t.group == group && t.version == version)
        .collect()
}

/// The OpenAPI 3.0 document of one group-version, `None` if the registry serves none of it.
pub fn v3_document(registry: &Registry, group: &str, version: &str) -> Option<Value> {
    let types = types_of(registry, group, version);
    if types.is_empty() {
        return None;
    }
    let prefix = format!("/{}", gv_path(group, version));
    Some(json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": crate::discovery::git_version()},
        "paths": paths::paths(&types, group, version, &prefix),
        "components": {"schemas": schemas::components(&types, group, version)},
    }))
}

/// A stable 128-bit content hash (two FNV-1a lanes), upper-case hex like Kubernetes'.
fn content_hash(bytes: &[u8]) -> String {
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut a: u64 = 0xcbf2_9ce4_8422_2325;
    let mut b: u64 = 0x6c62_272e_07bb_0142;
    for &byte in bytes {
        a = (a ^ u64::from(byte)).wrapping_mul(PRIME);
        b = (b ^ u64::from(byte.rotate_left(3))).wrapping_mul(PRIME);
    }
    format!("{a:016X}{b:016X}")
}

impl OpenApi {
    /// Generates every document of `registry` (a few hundred milliseconds; call once).
    pub fn new(registry: &Registry) -> Self {
        let mut docs = BTreeMap::new();
        let mut index_paths = Map::new();
        for (group, version) in registry.group_versions() {
            let Some(doc) = v3_document(registry, group, version) else {
                continue;
            };
            let path = gv_path(group, version);
            // A Value always serializes; the fallback only keeps this panic-free.
            let json = serde_json::to_vec(&doc).unwrap_or_default();
            let hash = content_hash(&json);
            index_paths.insert(
                path.clone(),
                json!({"serverRelativeURL": format!("/openapi/v3/{path}?hash={hash}")}),
            );
            docs.insert(
                path,
                Document {
                    hash,
                    json: Bytes::from(json),
                },
            );
        }
        let index = json!({"paths": index_paths});
        let index_json = Bytes::from(serde_json::to_vec(&index).unwrap_or_default());
        OpenApi {
            index,
            index_json,
            docs,
        }
    }

    /// The `/openapi/v3` index: `{"paths": {"api/v1": {"serverRelativeURL": ...}}}`.
    pub fn index(&self) -> &Value {
        &self.index
    }

    /// The index, serialized.
    pub fn index_json(&self) -> Bytes {
        self.index_json.clone()
    }

    /// The document at `/openapi/v3/{path}` (`path` = `api/v1`, `apis/apps/v1`).
    ///
    /// Kubernetes answers a request whose `hash` differs from [`Document::hash`] with a
    /// redirect to the current URL, and serves a matching one with
    /// `Cache-Control: public, immutable`.
    pub fn document(&self, path: &str) -> Option<&Document> {
        self.docs.get(path.trim_matches('/'))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn openapi() -> OpenApi {
        OpenApi::new(&Registry::builtin())
    }

    #[test]
    fn access_reviews_are_post_only_and_have_no_list_schema() {
        let api = openapi();
        let doc: serde_json::Value =
            serde_json::from_slice(&api.document("apis/authorization.k8s.io/v1").unwrap().json)
                .unwrap();
        let path = &doc["paths"]["/apis/authorization.k8s.io/v1/selfsubjectaccessreviews"];
        assert_eq!(
            path["post"]["operationId"],
            "createAuthorizationV1SelfSubjectAccessReview"
        );
        assert!(path.get("get").is_none());
        assert!(
            doc["paths"]
                .get("/apis/authorization.k8s.io/v1/selfsubjectaccessreviews/{name}")
                .is_none()
        );
        let schemas = doc["components"]["schemas"].as_object().unwrap();
        assert!(schemas.contains_key("io.k8s.api.authorization.v1.SelfSubjectAccessReview"));
        assert!(!schemas.contains_key("io.k8s.api.authorization.v1.SelfSubjectAccessReviewList"));
    }

    #[test]
    fn index_lists_every_group_version_with_its_hash() {
        let api = openapi();
        let paths = api.index()["paths"].as_object().unwrap();
        let keys: Vec<&String> = paths.keys().collect();
        assert_eq!(
            keys,
            [
                "api/v1",
                "apis/apps/v1",
                "apis/authentication.k8s.io/v1",
                "apis/authorization.k8s.io/v1",
                "apis/batch/v1",
                "apis/certificates.k8s.io/v1",
                "apis/coordination.k8s.io/v1",
                "apis/discovery.k8s.io/v1",
                "apis/networking.k8s.io/v1",
                "apis/node.k8s.io/v1",
                "apis/rbac.authorization.k8s.io/v1",
                "apis/serving.knative.dev/v1"
            ]
        );
        let doc = api.document("apis/apps/v1").unwrap();
        assert_eq!(
            paths["apis/apps/v1"]["serverRelativeURL"],
            format!("/openapi/v3/apis/apps/v1?hash={}", doc.hash)
        );
        assert_eq!(doc.hash.len(), 32);
    }

    #[test]
    fn documents_are_byte_identical_across_builds() {
        let (a, b) = (openapi(), openapi());
        for (path, doc) in &a.docs {
            let other = b.document(path).unwrap();
            assert_eq!(doc.json, other.json, "{path}");
            assert_eq!(doc.hash, other.hash);
        }
        assert_eq!(a.index_json(), b.index_json());
    }

    #[test]
    fn a_document_is_openapi_three_with_paths_and_components() {
        let api = openapi();
        let doc: Value = serde_json::from_slice(&api.document("/api/v1/").unwrap().json).unwrap();
        assert_eq!(doc["openapi"], "3.0.0");
        assert!(
            doc["paths"]["/api/v1/namespaces/{namespace}/configmaps/{name}"]["patch"].is_object()
        );
        assert!(doc["components"]["schemas"]["io.k8s.api.core.v1.ConfigMap"].is_object());
        assert!(api.document("apis/extensions/v1beta1").is_none());
        assert!(v3_document(&Registry::builtin(), "nope", "v1").is_none());
    }

    #[test]
    fn content_hash_changes_with_content() {
        assert_ne!(content_hash(b"a"), content_hash(b"b"));
        assert_eq!(content_hash(b"abc"), content_hash(b"abc"));
    }
}
