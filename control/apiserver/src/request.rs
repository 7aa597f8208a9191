//! Turning an HTTP request into what the generic handlers need: which resource and
//! object the path names, the query options, the decoded body, and the output form
//! the client accepts.

use std::collections::HashMap;

use bytes::Bytes;
use http::HeaderMap;
use serde_json::Value;

use crate::error::{ApiError, ApiResult};
use crate::registry::{Registry, ResourceType, Subresource};

/// The largest request body accepted (Kubernetes' limit is 3 MiB).
pub const MAX_BODY_BYTES: usize = 3 * 1024 * 1024;

/// What an `/api` or `/apis` path names.
#[derive(Debug)]
pub enum ApiPath<'r> {
    /// `/api`, `/apis`: the group lists.
    Root { legacy: bool },
    /// `/apis/{group}`: one group.
    Group { group: String },
    /// `/api/v1`, `/apis/{group}/{version}`: the resource list of a group version.
    GroupVersion { group: String, version: String },
    /// A resource, a collection or one object.
    Resource(Target<'r>),
}

/// A resource request target: `…/namespaces/{ns}/{plural}/{name}/{sub}`.
#[derive(Debug)]
pub struct Target<'r> {
    pub rt: &'r ResourceType,
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub subresource: Option<Subresource>,
    /// For `nodes/{name}/proxy/{path}`: `/{path}` as sent (still percent-encoded), `/`
    /// when the URL ends at `proxy`.
    pub proxy_path: Option<String>,
    /// The query as sent (for what passes it on: `nodes/proxy`, `pods/exec`).
    pub raw_query: Option<String>,
}

/// Splits and resolves a request path. Unknown groups, versions or resources are 404s.
pub fn parse_path<'r>(registry: &'r Registry, path: &str) -> ApiResult<ApiPath<'r>> {
    let segs: Vec<String> = path
        .trim_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .map(|s| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8_lossy()
                .into_owned()
        })
        .collect();
    let (group, version, rest) = match segs.first().map(String::as_str) {
        Some("api") => match segs.get(1) {
            None => return Ok(ApiPath::Root { legacy: true }),
            Some(v) => (String::new(), v.clone(), &segs[2..]),
        },
        Some("apis") => match (segs.get(1), segs.get(2)) {
            (None, _) => return Ok(ApiPath::Root { legacy: false }),
            (Some(g), None) => {
                if registry.all().iter().any(|t| t.group == g) {
                    return Ok(ApiPath::Group { group: g.clone() });
                }
                return Err(not_found_path(path));
            }
            (Some(g), Some(v)) => (g.clone(), v.clone(), &segs[3..]),
        },
        _ => return Err(not_found_path(path)),
    };
    if !registry
        .group_versions()
        .iter()
        .any(|(g, v)| *g == group && *v == version)
    {
        return Err(not_found_path(path));
    }
    if rest.is_empty() {
        return Ok(ApiPath::GroupVersion { group, version });
    }
    // `namespaces/{ns}/{plural}...` unless it is the namespace object's own subresource.
    let namespaced_form = rest[0] == "namespaces"
        && rest.len() >= 3
        && !matches!(rest[2].as_str(), "status" | "finalize");
    let (namespace, plural, name, sub) = if namespaced_form {
        (Some(rest[1].clone()), &rest[2], rest.get(3), rest.get(4))
    } else {
        (None, &rest[0], rest.get(1), rest.get(2))
    };
    let rt = registry
        .by_plural(&group, &version, plural)
        .ok_or_else(|| not_found_path(path))?;
    let sub_at = if namespaced_form { 4 } else { 2 };
    let proxies = sub.is_some_and(|s| s == Subresource::Proxy.name())
        && rt.subresources.contains(&Subresource::Proxy);
    if rest.len() > sub_at + 1 && !proxies {
        return Err(not_found_path(path));
    }
    // Everything after `.../{name}/proxy`, as sent: the segments before it are the
    // prefix's plus `rest`'s first `sub_at + 1`.
    let proxy_path = proxies.then(|| {
        let before = segs.len() - rest.len() + sub_at + 1;
        let tail = path
            .trim_start_matches('/')
            .splitn(before + 1, '/')
            .nth(before)
            .unwrap_or("");
        format!("/{tail}")
    });
    if namespaced_form && !rt.namespaced {
        return Err(not_found_path(path));
    }
    let subresource = match sub {
        None => None,
        Some(s) => {
            let found = rt.subresources.iter().copied().find(|sr| sr.name() == s);
            match found {
                Some(sr) => Some(sr),
                // `namespaces/{name}/finalize` is served like status.
                None if rt.kind == "Namespace" && s == "finalize" => Some(Subresource::Status),
                None => return Err(not_found_path(path)),
            }
        }
    };
    Ok(ApiPath::Resource(Target {
        rt,
        namespace,
        name: name.cloned(),
        subresource,
        proxy_path,
        raw_query: None,
    }))
}

fn not_found_path(path: &str) -> ApiError {
    ApiError::no_route(format!(
        "the server could not find the requested resource ({path})"
    ))
}

/// Query parameters, decoded.
#[derive(Debug, Default)]
pub struct Query(pub HashMap<String, String>);

impl Query {
    /// Parses a raw query string (`a=b&c=d`).
    pub fn parse(raw: Option<&str>) -> Self {
        let mut map = HashMap::new();
        if let Some(raw) = raw {
            for pair in raw.split('&').filter(|p| !p.is_empty()) {
                let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                let decode = |s: &str| {
                    percent_encoding::percent_decode_str(&s.replace('+', " "))
                        .decode_utf8_lossy()
                        .into_owned()
                };
                map.insert(decode(k), decode(v));
            }
        }
        Query(map)
    }

    /// A parameter's value, `None` when absent or empty.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .get(key)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    /// A boolean parameter (`true`, `1`).
    pub fn flag(&self, key: &str) -> bool {
        matches!(self.get(key), Some("true" | "1"))
    }

    /// An integer parameter; a malformed one is a 400.
    pub fn int(&self, key: &str) -> ApiResult<Option<i64>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v.parse::<i64>().map(Some).map_err(|_| {
                ApiError::bad_request(format!(
                    "invalid value {v:?} for query parameter {key}: not an integer"
                ))
            }),
        }
    }

    /// Whether `dryRun=All` was asked for (any other dryRun value is a 400).
    pub fn dry_run(&self) -> ApiResult<bool> {
        match self.get("dryRun") {
            None => Ok(false),
            Some("All") => Ok(true),
            Some(other) => Err(ApiError::bad_request(format!(
                "invalid dry run option {other:?}: the only supported value is \"All\""
            ))),
        }
    }
}

/// The body's media type.
fn content_type(headers: &HeaderMap) -> String {
    headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

/// Decodes a JSON or YAML request body into one JSON object.
pub fn decode_body(headers: &HeaderMap, body: &Bytes) -> ApiResult<Value> {
    if body.is_empty() {
        return Err(ApiError::bad_request(
            "the request body is empty; send a JSON or YAML object",
        ));
    }
    let ct = content_type(headers);
    let value: Value = if ct.contains("yaml") {
        serde_yaml_ng::from_slice(body).map_err(|e| {
            ApiError::bad_request(format!("the request body is not valid YAML: {e}"))
        })?
    } else if ct.contains("protobuf") {
        crate::protobuf::decode(body).map_err(|e| match e {
            crate::protobuf::DecodeError::Schema(_) => ApiError::internal(e.to_string()),
            _ => ApiError::bad_request(format!(
                "the request body is not valid Kubernetes protobuf: {e}"
            )),
        })?
    } else {
        serde_json::from_slice(body).map_err(|e| {
            ApiError::bad_request(format!("the request body is not valid JSON: {e}"))
        })?
    };
    if !value.is_object() {
        return Err(ApiError::bad_request(
            "the request body must be a JSON or YAML object",
        ));
    }
    Ok(value)
}

/// The patch media type of a PATCH request (without parameters).
pub fn patch_content_type(headers: &HeaderMap) -> String {
    content_type(headers)
}

/// The form of the response body the client asked for in `Accept`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output {
    /// The object(s) themselves.
    Object,
    /// A `meta.k8s.io/v1` Table (kubectl get).
    Table,
    /// `PartialObjectMetadata` / `PartialObjectMetadataList`.
    Metadata,
}

/// Picks the first acceptable form in the client's `Accept` list.
pub fn negotiate(headers: &HeaderMap) -> ApiResult<Output> {
    let Some(accept) = headers
        .get(http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
    else {
        return Ok(Output::Object);
    };
    let mut saw_any = false;
    for item in accept.split(',') {
        let mut parts = item.split(';').map(str::trim);
        let media = parts.next().unwrap_or("").to_ascii_lowercase();
        let params: HashMap<String, String> = parts
            .filter_map(|p| p.split_once('='))
            .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
            .collect();
        if !(media == "application/json"
            || media == "*/*"
            || media == "application/*"
            || media.is_empty())
        {
            continue;
        }
        saw_any = true;
        match params.get("as").map(String::as_str) {
            None => return Ok(Output::Object),
            Some("Table")
                if params.get("g").map(String::as_str) == Some("meta.k8s.io")
                    && params.get("v").map(String::as_str) == Some("v1") =>
            {
                return Ok(Output::Table);
            }
            Some("PartialObjectMetadata" | "PartialObjectMetadataList")
                if params.get("g").map(String::as_str) == Some("meta.k8s.io")
                    && params.get("v").map(String::as_str) == Some("v1") =>
            {
                return Ok(Output::Metadata);
            }
            Some(_) => continue,
        }
    }
    if saw_any || accept.contains("protobuf") || accept.contains("yaml") {
        // Clients that list protobuf first always list JSON too; be lenient otherwise.
        return Ok(Output::Object);
    }
    Err(ApiError::not_acceptable(format!(
        "only the following media types are accepted: application/json (got {accept:?})"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_proxy_paths_keep_what_follows_proxy_as_sent() {
        let reg = Registry::builtin();
        let proxied = |path: &str| match parse_path(&reg, path) {
            Ok(ApiPath::Resource(t)) => {
                assert_eq!(t.subresource, Some(Subresource::Proxy), "{path}");
                assert_eq!(t.name.as_deref(), Some("n1"), "{path}");
                t.proxy_path
            }
            other => panic!("{path}: {other:?}"),
        };
        assert_eq!(
            proxied("/api/v1/nodes/n1/proxy/healthz").as_deref(),
            Some("/healthz")
        );
        assert_eq!(
            proxied("/api/v1/nodes/n1/proxy/containerLogs/a%2Fb/c/").as_deref(),
            Some("/containerLogs/a%2Fb/c/")
        );
        assert_eq!(proxied("/api/v1/nodes/n1/proxy").as_deref(), Some("/"));
        // Only the proxy subresource takes a path; others stay 404 past their name.
        assert!(parse_path(&reg, "/api/v1/nodes/n1/status/x").is_err());
        assert!(parse_path(&reg, "/api/v1/namespaces/d/pods/p/log/x").is_err());
        assert!(parse_path(&reg, "/api/v1/namespaces/d/pods/p/proxy/x").is_err());
    }

    #[test]
    fn namespaced_and_cluster_paths_resolve() {
        let reg = Registry::builtin();
        let ApiPath::Resource(t) =
            parse_path(&reg, "/api/v1/namespaces/default/pods/web/status").unwrap()
        else {
            panic!()
        };
        assert_eq!(t.rt.plural, "pods");
        assert_eq!(t.namespace.as_deref(), Some("default"));
        assert_eq!(t.name.as_deref(), Some("web"));
        assert_eq!(t.subresource, Some(Subresource::Status));
        let ApiPath::Resource(t) = parse_path(&reg, "/api/v1/namespaces/kube-system").unwrap()
        else {
            panic!()
        };
        assert_eq!(t.rt.plural, "namespaces");
        assert_eq!(t.name.as_deref(), Some("kube-system"));
        let ApiPath::Resource(t) = parse_path(&reg, "/api/v1/namespaces/x/status").unwrap() else {
            panic!()
        };
        assert_eq!(t.rt.plural, "namespaces");
        assert_eq!(t.subresource, Some(Subresource::Status));
        let ApiPath::Resource(t) = parse_path(&reg, "/apis/apps/v1/deployments").unwrap() else {
            panic!()
        };
        assert!(t.namespace.is_none() && t.name.is_none());
    }

    #[test]
    fn unknown_resources_and_groups_are_not_found() {
        let reg = Registry::builtin();
        for p in [
            "/api/v1/foos",
            "/apis/nope/v1/x",
            "/api/v2/pods",
            "/api/v1/namespaces/a/nodes/b",
            "/api/v1/pods/a/b/c/d",
        ] {
            let err = parse_path(&reg, p).unwrap_err();
            assert_eq!(err.code, http::StatusCode::NOT_FOUND, "{p}");
        }
    }

    #[test]
    fn kubectl_table_accept_header_selects_table() {
        let mut h = HeaderMap::new();
        h.insert(
            http::header::ACCEPT,
            "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json"
                .parse()
                .unwrap(),
        );
        assert_eq!(negotiate(&h).unwrap(), Output::Table);
        h.insert(
            http::header::ACCEPT,
            "application/vnd.kubernetes.protobuf, */*".parse().unwrap(),
        );
        assert_eq!(negotiate(&h).unwrap(), Output::Object);
    }

    #[test]
    fn malformed_bodies_are_bad_requests() {
        let mut h = HeaderMap::new();
        assert_eq!(
            decode_body(&h, &Bytes::from_static(b"{nope"))
                .unwrap_err()
                .code,
            400
        );
        h.insert(
            http::header::CONTENT_TYPE,
            "application/yaml".parse().unwrap(),
        );
        assert_eq!(
            decode_body(&h, &Bytes::from_static(b"a: [b"))
                .unwrap_err()
                .code,
            400
        );
        assert!(decode_body(&h, &Bytes::from_static(b"kind: Pod\n")).is_ok());
    }
}
