//! What a request asks to do, from its method, path and query alone, as Kubernetes'
//! `RequestInfoFactory` resolves it (no registry lookup, so an unknown resource is
//! authorized like any other and answered 404 only to those allowed to ask).
//!
//! `/api/v1/namespaces/default/pods` is a resource request (verb `list`, resource `pods`,
//! namespace `default`); `/api`, `/apis/apps/v1`, `/healthz` and `/metrics` are
//! non-resource requests whose verb is the lower-cased HTTP method.

use http::Method;

/// The attributes of one request that authorization looks at.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RequestInfo {
    /// Whether the path names a resource (else it is a non-resource URL).
    pub resource_request: bool,
    /// The URL path.
    pub path: String,
    /// `get`, `list`, `watch`, `create`, `update`, `patch`, `delete`, `deletecollection`
    /// for resources; the lower-cased method for non-resource URLs.
    pub verb: String,
    /// The API group, `""` for the core group.
    pub api_group: String,
    /// The API version.
    pub api_version: String,
    /// The namespace, `""` for cluster-scoped requests and all-namespace lists.
    pub namespace: String,
    /// The resource (plural), e.g. `pods`.
    pub resource: String,
    /// The subresource, e.g. `status`, `log`.
    pub subresource: String,
    /// The object's name, `""` for collections.
    pub name: String,
    /// The `field=value` (or `==`) terms of a list's or watch's `fieldSelector`.
    pub field_selector: Vec<(String, String)>,
}

impl RequestInfo {
    /// A resource request with these attributes (used by access reviews).
    pub fn resource(
        verb: &str,
        api_group: &str,
        resource: &str,
        subresource: &str,
        namespace: &str,
        name: &str,
    ) -> Self {
        RequestInfo {
            resource_request: true,
            verb: verb.to_string(),
            api_group: api_group.to_string(),
            namespace: namespace.to_string(),
            resource: resource.to_string(),
            subresource: subresource.to_string(),
            name: name.to_string(),
            ..RequestInfo::default()
        }
    }

    /// A non-resource request (used by access reviews).
    pub fn non_resource(verb: &str, path: &str) -> Self {
        RequestInfo {
            verb: verb.to_string(),
            path: path.to_string(),
            ..RequestInfo::default()
        }
    }
}

/// Namespace subresources, which stay on the namespace object instead of naming a resource.
const NAMESPACE_SUBRESOURCES: &[&str] = &["status", "finalize"];

/// Resolves a request. `path` is the URL path, `query` the raw query string (without `?`).
pub fn resolve(method: &Method, path: &str, query: &str) -> RequestInfo {
    let mut info = RequestInfo {
        path: path.to_string(),
        verb: method.as_str().to_ascii_lowercase(),
        ..RequestInfo::default()
    };
    let parts: Vec<&str> = path
        .trim_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    if parts.len() < 3 {
        return info;
    }
    let mut rest: &[&str] = match parts[0] {
        "api" => &parts[1..],
        "apis" if parts.len() >= 4 => {
            info.api_group = decode(parts[1]);
            &parts[2..]
        }
        _ => return info,
    };
    info.resource_request = true;
    info.api_version = decode(rest[0]);
    rest = &rest[1..];

    // `/api/v1/watch/...`: the verb is in the path (deprecated, still authorized as watch).
    let verb_from_method = if matches!(rest.first(), Some(&"watch") | Some(&"proxy")) {
        info.verb = rest[0].to_string();
        rest = &rest[1..];
        if rest.is_empty() {
            return info;
        }
        false
    } else {
        info.verb = match *method {
            Method::POST => "create",
            Method::GET | Method::HEAD => "get",
            Method::PUT => "update",
            Method::PATCH => "patch",
            Method::DELETE => "delete",
            _ => "",
        }
        .to_string();
        true
    };

    if rest[0] == "namespaces" && rest.len() > 1 {
        info.namespace = decode(rest[1]);
        if rest.len() > 2 && !NAMESPACE_SUBRESOURCES.contains(&rest[2]) {
            rest = &rest[2..];
        }
    }
    info.resource = decode(rest[0]);
    if let Some(name) = rest.get(1) {
        info.name = decode(name);
    }
    if let Some(sub) = rest.get(2)
        && info.verb != "proxy"
    {
        info.subresource = decode(sub);
    }

    if verb_from_method && info.name.is_empty() && info.verb == "get" {
        info.verb = if query_flag(query, "watch") {
            "watch"
        } else {
            "list"
        }
        .to_string();
        info.field_selector = equality_terms(query);
        // A watch or list of one object by field selector is authorized for that name.
        if let Some(name) = exact_name(query)
            && is_valid_path_segment(&name)
        {
            info.name = name;
        }
    }
    if verb_from_method && info.name.is_empty() && info.verb == "delete" {
        info.verb = "deletecollection".to_string();
    }
    info
}

fn decode(segment: &str) -> String {
    percent_encoding::percent_decode_str(segment)
        .decode_utf8_lossy()
        .into_owned()
}

fn query_params(query: &str) -> impl Iterator<Item = (String, String)> + '_ {
    query.split('&').filter(|p| !p.is_empty()).map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let decode = |s: &str| {
            percent_encoding::percent_decode_str(&s.replace('+', " "))
                .decode_utf8_lossy()
                .into_owned()
        };
        (decode(k), decode(v))
    })
}

/// A boolean query parameter as Go's `strconv.ParseBool` reads it.
fn query_flag(query: &str, key: &str) -> bool {
    query_params(query)
        .any(|(k, v)| k == key && matches!(v.as_str(), "1" | "t" | "T" | "true" | "TRUE" | "True"))
}

/// The `field=value` and `field==value` terms of the `fieldSelector` parameter.
fn equality_terms(query: &str) -> Vec<(String, String)> {
    let Some((_, selector)) = query_params(query).find(|(k, _)| k == "fieldSelector") else {
        return Vec::new();
    };
    selector
        .split(',')
        .filter(|term| !term.contains("!="))
        .filter_map(|term| {
            let (field, value) = term.split_once("==").or_else(|| term.split_once('='))?;
            Some((field.trim().to_string(), value.trim().to_string()))
        })
        .collect()
}

/// The name a `fieldSelector` pins with `metadata.name=` (or `==`), if exactly one.
fn exact_name(query: &str) -> Option<String> {
    let (_, selector) = query_params(query).find(|(k, _)| k == "fieldSelector")?;
    let mut found = None;
    for term in selector.split(',') {
        let term = term.trim();
        let value = term
            .strip_prefix("metadata.name==")
            .or_else(|| term.strip_prefix("metadata.name="));
        if let Some(value) = value {
            if found.is_some() {
                return None;
            }
            found = Some(value.trim().to_string());
        }
    }
    found
}

fn is_valid_path_segment(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && !name.contains(['/', '%'])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(path: &str) -> RequestInfo {
        let (path, query) = path.split_once('?').unwrap_or((path, ""));
        resolve(&Method::GET, path, query)
    }

    #[test]
    fn discovery_and_health_paths_are_non_resource_requests() {
        for path in [
            "/",
            "/api",
            "/api/v1",
            "/apis",
            "/apis/apps",
            "/apis/apps/v1",
            "/healthz",
            "/openapi/v3/api/v1",
            "/metrics",
        ] {
            let info = get(path);
            assert!(!info.resource_request, "{path}");
            assert_eq!(info.verb, "get");
            assert_eq!(info.path, path);
        }
        assert_eq!(resolve(&Method::HEAD, "/healthz", "").verb, "head");
    }

    #[test]
    fn collections_are_list_watch_create_and_deletecollection() {
        let list = get("/api/v1/namespaces/default/pods");
        assert_eq!(
            (
                list.verb.as_str(),
                list.resource.as_str(),
                list.namespace.as_str()
            ),
            ("list", "pods", "default")
        );
        assert_eq!(get("/apis/apps/v1/deployments?watch=true").verb, "watch");
        assert_eq!(get("/apis/apps/v1/deployments?watch=1").verb, "watch");
        assert_eq!(get("/apis/apps/v1/deployments?watch=false").verb, "list");
        let create = resolve(&Method::POST, "/apis/apps/v1/namespaces/x/deployments", "");
        assert_eq!(
            (create.verb.as_str(), create.api_group.as_str()),
            ("create", "apps")
        );
        assert_eq!(
            resolve(&Method::DELETE, "/api/v1/namespaces/x/configmaps", "").verb,
            "deletecollection"
        );
    }

    #[test]
    fn named_objects_and_subresources() {
        let log = get("/api/v1/namespaces/ns/pods/web/log");
        assert_eq!(
            (
                log.verb.as_str(),
                log.resource.as_str(),
                log.name.as_str(),
                log.subresource.as_str()
            ),
            ("get", "pods", "web", "log")
        );
        let status = resolve(&Method::PATCH, "/api/v1/nodes/n1/status", "");
        assert_eq!(
            (
                status.verb.as_str(),
                status.namespace.as_str(),
                status.subresource.as_str()
            ),
            ("patch", "", "status")
        );
        assert_eq!(
            resolve(&Method::PUT, "/apis/apps/v1/namespaces/a/deployments/d", "").verb,
            "update"
        );
        assert_eq!(
            resolve(
                &Method::DELETE,
                "/apis/apps/v1/namespaces/a/deployments/d",
                ""
            )
            .verb,
            "delete"
        );
    }

    #[test]
    fn a_namespace_object_is_in_its_own_namespace() {
        let ns = get("/api/v1/namespaces/team-a");
        assert_eq!(
            (
                ns.resource.as_str(),
                ns.name.as_str(),
                ns.namespace.as_str()
            ),
            ("namespaces", "team-a", "team-a")
        );
        let finalize = resolve(&Method::PUT, "/api/v1/namespaces/team-a/finalize", "");
        assert_eq!(
            (
                finalize.resource.as_str(),
                finalize.name.as_str(),
                finalize.subresource.as_str()
            ),
            ("namespaces", "team-a", "finalize")
        );
        let all = get("/api/v1/namespaces");
        assert_eq!((all.verb.as_str(), all.namespace.as_str()), ("list", ""));
    }

    #[test]
    fn a_field_selector_on_the_name_names_the_object() {
        let watch = get(
            "/api/v1/namespaces/default/configmaps?fieldSelector=metadata.name%3Dcfg&watch=true",
        );
        assert_eq!((watch.verb.as_str(), watch.name.as_str()), ("watch", "cfg"));
        let other = get("/api/v1/namespaces/default/pods?fieldSelector=spec.nodeName%3Dn1");
        assert_eq!(other.name, "");
    }

    #[test]
    fn legacy_watch_paths_carry_their_verb() {
        let w = get("/api/v1/watch/namespaces/default/pods");
        assert_eq!(
            (w.verb.as_str(), w.resource.as_str(), w.namespace.as_str()),
            ("watch", "pods", "default")
        );
    }
}
