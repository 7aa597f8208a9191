//! The `paths` of a group-version document: one operation per verb the generic handlers
//! serve, shaped like Kubernetes' (`operationId`, `x-kubernetes-action`,
//! `x-kubernetes-group-version-kind`, inline query parameters).
//!
//! kubectl reads two things here: whether the PATCH operation of a kind lists the
//! `fieldValidation` parameter (then it leaves validation to the server,
//! `resource.QueryParamVerifierV3`), and whether it accepts
//! `application/strategic-merge-patch+json` (then client-side apply computes a strategic
//! merge patch from the schemas). Server-side apply is not offered.

use serde_json::{Map, Value, json};

use super::schemas::{
    API_RESOURCE_LIST, BINDING, DELETE_OPTIONS, EVICTION, PATCH, REF_PREFIX, SCALE, STATUS,
    TOKEN_REQUEST, schema_name,
};
use crate::registry::{ResourceType, Subresource};

fn param(name: &str, location: &str, ty: &str, description: &str) -> Value {
    let mut p = json!({
        "name": name,
        "in": location,
        "description": description,
        "schema": {"type": ty, "uniqueItems": true},
    });
    if location == "path" {
        p["required"] = json!(true);
    }
    p
}

fn q(name: &str, ty: &str, description: &str) -> Value {
    param(name, "query", ty, description)
}

fn pretty() -> Value {
    q(
        "pretty",
        "string",
        "If 'true', then the output is pretty printed. Defaults to 'false' unless the user-agent indicates a browser or command-line HTTP tool (curl and wget).",
    )
}

fn namespace_param() -> Value {
    param(
        "namespace",
        "path",
        "string",
        "object name and auth scope, such as for teams and projects",
    )
}

fn dry_run() -> Value {
    q(
        "dryRun",
        "string",
        "When present, indicates that modifications should not be persisted. An invalid or unrecognized dryRun directive will result in an error response and no further processing of the request. Valid values are: - All: all dry run stages will be processed",
    )
}

fn field_manager() -> Value {
    q(
        "fieldManager",
        "string",
        "fieldManager is a name associated with the actor or entity that is making these changes. The value must be less than or 128 characters long, and only contain printable characters, as defined by https://golang.org/pkg/unicode/#IsPrint.",
    )
}

fn field_validation() -> Value {
    q(
        "fieldValidation",
        "string",
        "fieldValidation instructs the server on how to handle objects in the request (POST/PUT/PATCH) containing unknown or duplicate fields. Valid values are: - Ignore: This will ignore any unknown fields that are silently dropped from the object, and will ignore all but the last duplicate field that the decoder encounters. This is the default behavior prior to v1.23. - Warn: This will send a warning via the standard warning response header for each unknown field that is dropped from the object, and for each duplicate field that is encountered. The request will still succeed if there are no other errors, and will only persist the last of any duplicate fields. This is the default in v1.23+ - Strict: This will fail the request with a BadRequest error if any unknown fields would be dropped from the object, or if any duplicate fields are present. The error returned from the server will contain all unknown and duplicate fields encountered.",
    )
}

fn write_params() -> Vec<Value> {
    vec![dry_run(), field_manager(), field_validation()]
}

fn list_params() -> Vec<Value> {
    vec![
        q(
            "allowWatchBookmarks",
            "boolean",
            "allowWatchBookmarks requests watch events with type \"BOOKMARK\". Servers that do not implement bookmarks may ignore this flag and bookmarks are sent at the server's discretion. Clients should not assume bookmarks are returned at any specific interval, nor may they assume the server will send any BOOKMARK event during a session. If this is not a watch, this field is ignored.",
        ),
        q(
            "continue",
            "string",
            "The continue option should be set when retrieving more results from the server. Since this value is server defined, clients may only use the continue value from a previous query result with identical query parameters (except for the value of continue) and the server may reject a continue value it does not recognize. If the specified continue value is no longer valid whether due to expiration (generally five to fifteen minutes) or a configuration change on the server, the server will respond with a 410 ResourceExpired error together with a continue token.",
        ),
        q(
            "fieldSelector",
            "string",
            "A selector to restrict the list of returned objects by their fields. Defaults to everything.",
        ),
        q(
            "labelSelector",
            "string",
            "A selector to restrict the list of returned objects by their labels. Defaults to everything.",
        ),
        q(
            "limit",
            "integer",
            "limit is a maximum number of responses to return for a list call. If more items exist, the server will set the `continue` field on the list metadata to a value that can be used with the same initial query to retrieve the next set of results.",
        ),
        q(
            "resourceVersion",
            "string",
            "resourceVersion sets a constraint on what resource versions a request may be served from. See https://kubernetes.io/docs/reference/using-api/api-concepts/#resource-versions for details.\n\nDefaults to unset",
        ),
        q(
            "resourceVersionMatch",
            "string",
            "resourceVersionMatch determines how resourceVersion is applied to list calls. It is highly recommended that resourceVersionMatch be set for list calls where resourceVersion is set See https://kubernetes.io/docs/reference/using-api/api-concepts/#resource-versions for details.\n\nDefaults to unset",
        ),
        q(
            "sendInitialEvents",
            "boolean",
            "`sendInitialEvents=true` may be set together with `watch=true`. In that case, the watch stream will begin with synthetic events to produce the current state of objects in the collection.",
        ),
        q(
            "timeoutSeconds",
            "integer",
            "Timeout for the list/watch call. This limits the duration of the call, regardless of any activity or inactivity.",
        ),
        q(
            "watch",
            "boolean",
            "Watch for changes to the described resources and return them as a stream of add, update, and remove notifications. Specify resourceVersion.",
        ),
    ]
}

fn delete_params() -> Vec<Value> {
    vec![
        dry_run(),
        q(
            "gracePeriodSeconds",
            "integer",
            "The duration in seconds before the object should be deleted. Value must be non-negative integer. The value zero indicates delete immediately. If this value is nil, the default grace period for the specified type will be used. Defaults to a per object value if not specified. zero means delete immediately.",
        ),
        q(
            "ignoreStoreReadErrorWithClusterBreakingPotential",
            "boolean",
            "if set to true, it will trigger an unsafe deletion of the resource in case the normal deletion flow fails with a corrupt object error. A resource is considered corrupt if it can not be retrieved from the underlying storage successfully because of a) its data can not be transformed e.g. decryption failure, or b) it fails to decode into an object. NOTE: unsafe deletion ignores finalizer constraints, skips precondition checks, and removes the object from the storage. WARNING: This may potentially break the cluster if the workload associated with the resource being unsafe-deleted relies on normal deletion flow. Use only if you REALLY know what you are doing. The default value is false, and the user must opt in to enable it",
        ),
        q(
            "orphanDependents",
            "boolean",
            "Deprecated: please use the PropagationPolicy, this field will be deprecated in 1.7. Should the dependent objects be orphaned. If true/false, the \"orphan\" finalizer will be added to/removed from the object's finalizers list. Either this field or PropagationPolicy may be set, but not both.",
        ),
        q(
            "propagationPolicy",
            "string",
            "Whether and how garbage collection will be performed. Either this field or OrphanDependents may be set, but not both. The default policy is decided by the existing finalizer set in the metadata.finalizers and the resource-specific default policy. Acceptable values are: 'Orphan' - orphan the dependents; 'Background' - allow the garbage collector to delete the dependents in the background; 'Foreground' - a cascading policy that deletes all dependents in the foreground.",
        ),
    ]
}

fn delete_collection_params() -> Vec<Value> {
    let list = list_params();
    let delete = delete_params();
    let mut params: Vec<Value> = list
        .into_iter()
        .filter(|p| !matches!(p["name"].as_str(), Some("allowWatchBookmarks" | "watch")))
        .chain(delete)
        .collect();
    params.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
    params
}

fn log_params() -> Vec<Value> {
    vec![
        q(
            "container",
            "string",
            "The container for which to stream logs. Defaults to only container if there is one container in the pod.",
        ),
        q(
            "follow",
            "boolean",
            "Follow the log stream of the pod. Defaults to false.",
        ),
        q(
            "insecureSkipTLSVerifyBackend",
            "boolean",
            "insecureSkipTLSVerifyBackend indicates that the apiserver should not confirm the validity of the serving certificate of the backend it is connecting to.",
        ),
        q(
            "limitBytes",
            "integer",
            "If set, the number of bytes to read from the server before terminating the log output. This may not display a complete final line of logging, and may return slightly more or slightly less than the specified limit.",
        ),
        q(
            "previous",
            "boolean",
            "Return previous terminated container logs. Defaults to false.",
        ),
        q(
            "sinceSeconds",
            "integer",
            "A relative time in seconds before the current time from which to show logs. If this value precedes the time a pod was started, only logs since the pod start will be returned. If this value is in the future, no logs will be returned. Only one of sinceSeconds or sinceTime may be specified.",
        ),
        q(
            "tailLines",
            "integer",
            "If set, the number of lines from the end of the logs to show. If not specified, logs are shown from the creation of the container or sinceSeconds or sinceTime",
        ),
        q(
            "timestamps",
            "boolean",
            "If true, add an RFC3339 or RFC3339Nano timestamp at the beginning of every line of log output. Defaults to false.",
        ),
    ]
}

fn schema_ref(name: &str) -> Value {
    json!({"$ref": format!("{REF_PREFIX}{name}")})
}

fn content(schema: &str) -> Value {
    json!({"application/json": {"schema": schema_ref(schema)}})
}

fn responses(schema: &str, extra: &[(&str, &str)]) -> Value {
    let mut r = Map::new();
    r.insert(
        "200".into(),
        json!({"description": "OK", "content": content(schema)}),
    );
    for (code, description) in extra {
        r.insert(
            (*code).into(),
            json!({"description": description, "content": content(schema)}),
        );
    }
    r.insert("401".into(), json!({"description": "Unauthorized"}));
    Value::Object(r)
}

fn body(schema: &str) -> Value {
    json!({"content": {"*/*": {"schema": schema_ref(schema)}}, "required": true})
}

fn patch_body() -> Value {
    let mut content = Map::new();
    for ty in [
        "application/json-patch+json",
        "application/merge-patch+json",
        "application/strategic-merge-patch+json",
    ] {
        content.insert(ty.into(), json!({"schema": schema_ref(PATCH)}));
    }
    json!({"content": content, "required": true})
}

/// The identifiers Kubernetes derives from a group and version: the operationId infix
/// (`CoreV1`, `AppsV1`, `CoordinationV1`) and the tag (`core_v1`, `coordination_v1`).
pub(crate) fn gv_names(group: &str, version: &str) -> (String, String) {
    let group = if group.is_empty() { "core" } else { group };
    let group = group.strip_suffix(".k8s.io").unwrap_or(group);
    let camel: String = group.split('.').map(capitalize).collect();
    let mut tag = camel.clone();
    if let Some(first) = tag.get(..1) {
        tag.replace_range(..1, &first.to_lowercase());
    }
    (
        format!("{camel}{}", capitalize(version)),
        format!("{tag}_{version}"),
    )
}

fn capitalize(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(c) => c.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// Builds operations for one kind.
struct Kind<'a> {
    rt: &'a ResourceType,
    tag: String,
    infix: String,
    scope: &'static str,
    schema: String,
    list_schema: String,
}

impl Kind<'_> {
    #[allow(clippy::too_many_arguments)]
    fn op(
        &self,
        description: String,
        id: String,
        params: Vec<Value>,
        body: Option<Value>,
        responses: Value,
        action: &str,
        gvk: Value,
    ) -> Value {
        let mut op = Map::new();
        op.insert("tags".into(), json!([self.tag]));
        op.insert("description".into(), json!(description));
        op.insert("operationId".into(), json!(id));
        if !params.is_empty() {
            op.insert("parameters".into(), Value::Array(params));
        }
        if let Some(body) = body {
            op.insert("requestBody".into(), body);
        }
        op.insert("responses".into(), responses);
        op.insert("x-kubernetes-action".into(), json!(action));
        op.insert("x-kubernetes-group-version-kind".into(), gvk);
        Value::Object(op)
    }

    fn gvk(&self) -> Value {
        json!({"group": self.rt.group, "kind": self.rt.kind, "version": self.rt.version})
    }

    fn id(&self, verb: &str, suffix: &str) -> String {
        format!("{verb}{}{}{}{suffix}", self.infix, self.scope, self.rt.kind)
    }

    fn collection(&self) -> Value {
        let kind = self.rt.kind;
        let mut item = Map::new();
        item.insert(
            "get".into(),
            self.op(
                format!("list or watch objects of kind {kind}"),
                self.id("list", ""),
                list_params(),
                None,
                responses(&self.list_schema, &[]),
                "list",
                self.gvk(),
            ),
        );
        item.insert(
            "post".into(),
            self.op(
                format!("create a {kind}"),
                self.id("create", ""),
                write_params(),
                Some(body(&self.schema)),
                responses(&self.schema, &[("201", "Created"), ("202", "Accepted")]),
                "post",
                self.gvk(),
            ),
        );
        item.insert(
            "delete".into(),
            self.op(
                format!("delete collection of {kind}"),
                format!("delete{}Collection{}{kind}", self.infix, self.scope),
                delete_collection_params(),
                Some(body(DELETE_OPTIONS)),
                responses(STATUS, &[]),
                "deletecollection",
                self.gvk(),
            ),
        );
        item.insert("parameters".into(), json!(self.path_params(false)));
        Value::Object(item)
    }

    /// The POST-only collection of a create-only kind (the access reviews).
    fn create_only(&self) -> Value {
        let kind = self.rt.kind;
        let mut item = Map::new();
        item.insert(
            "post".into(),
            self.op(
                format!("create a {kind}"),
                self.id("create", ""),
                write_params(),
                Some(body(&self.schema)),
                responses(&self.schema, &[("201", "Created"), ("202", "Accepted")]),
                "post",
                self.gvk(),
            ),
        );
        item.insert("parameters".into(), json!(self.path_params(false)));
        Value::Object(item)
    }

    fn path_params(&self, named: bool) -> Vec<Value> {
        let mut params = Vec::new();
        if named {
            params.push(param(
                "name",
                "path",
                "string",
                &format!("name of the {}", self.rt.kind),
            ));
        }
        if self.rt.namespaced {
            params.push(namespace_param());
        }
        params.push(pretty());
        params
    }

    fn item(&self) -> Value {
        let kind = self.rt.kind;
        let mut item = Map::new();
        item.insert(
            "get".into(),
            self.op(
                format!("read the specified {kind}"),
                self.id("read", ""),
                Vec::new(),
                None,
                responses(&self.schema, &[]),
                "get",
                self.gvk(),
            ),
        );
        item.insert(
            "put".into(),
            self.op(
                format!("replace the specified {kind}"),
                self.id("replace", ""),
                write_params(),
                Some(body(&self.schema)),
                responses(&self.schema, &[("201", "Created")]),
                "put",
                self.gvk(),
            ),
        );
        item.insert(
            "delete".into(),
            self.op(
                format!("delete a {kind}"),
                self.id("delete", ""),
                delete_params(),
                Some(body(DELETE_OPTIONS)),
                responses(&self.schema, &[("202", "Accepted")]),
                "delete",
                self.gvk(),
            ),
        );
        item.insert(
            "patch".into(),
            self.op(
                format!("partially update the specified {kind}"),
                self.id("patch", ""),
                write_params(),
                Some(patch_body()),
                responses(&self.schema, &[("201", "Created")]),
                "patch",
                self.gvk(),
            ),
        );
        item.insert("parameters".into(), json!(self.path_params(true)));
        Value::Object(item)
    }

    /// get/put/patch of `status` or `scale`.
    fn read_write_subresource(&self, sub: &str, schema: &str, gvk: Value) -> Value {
        let kind = self.rt.kind;
        let suffix = capitalize(sub);
        let mut item = Map::new();
        item.insert(
            "get".into(),
            self.op(
                format!("read {sub} of the specified {kind}"),
                self.id("read", &suffix),
                Vec::new(),
                None,
                responses(schema, &[]),
                "get",
                gvk.clone(),
            ),
        );
        item.insert(
            "put".into(),
            self.op(
                format!("replace {sub} of the specified {kind}"),
                self.id("replace", &suffix),
                write_params(),
                Some(body(schema)),
                responses(schema, &[("201", "Created")]),
                "put",
                gvk.clone(),
            ),
        );
        item.insert(
            "patch".into(),
            self.op(
                format!("partially update {sub} of the specified {kind}"),
                self.id("patch", &suffix),
                write_params(),
                Some(patch_body()),
                responses(schema, &[("201", "Created")]),
                "patch",
                gvk,
            ),
        );
        item.insert("parameters".into(), json!(self.path_params(true)));
        Value::Object(item)
    }

    /// The `create` (POST) of `binding` or `eviction`, whose body is another kind.
    fn create_subresource(&self, kind: &str, schema: &str, gvk: Value) -> Value {
        let mut item = Map::new();
        item.insert(
            "post".into(),
            self.op(
                format!("create {} of a {}", kind.to_lowercase(), self.rt.kind),
                self.id("create", kind),
                write_params(),
                Some(body(schema)),
                responses(schema, &[("201", "Created"), ("202", "Accepted")]),
                "post",
                gvk,
            ),
        );
        item.insert("parameters".into(), json!(self.path_params(true)));
        Value::Object(item)
    }

    fn log(&self) -> Value {
        let mut responses = Map::new();
        responses.insert(
            "200".into(),
            json!({"description": "OK", "content": {"text/plain": {"schema": {"type": "string"}}}}),
        );
        responses.insert("401".into(), json!({"description": "Unauthorized"}));
        let mut item = Map::new();
        item.insert(
            "get".into(),
            self.op(
                format!("read log of the specified {}", self.rt.kind),
                self.id("read", "Log"),
                log_params(),
                None,
                Value::Object(responses),
                "get",
                self.gvk(),
            ),
        );
        item.insert("parameters".into(), json!(self.path_params(true)));
        Value::Object(item)
    }

    /// `pods/portforward`: `connect` operations (GET for WebSockets, POST for SPDY), as
    /// Kubernetes publishes them.
    fn port_forward(&self) -> Value {
        let params = vec![q(
            "ports",
            "integer",
            "List of ports to forward Required when using WebSockets",
        )];
        self.connect(
            "PodPortForwardOptions",
            "portforward",
            "Portforward",
            &[("get", "Get"), ("post", "Post")],
            params,
        )
    }

    fn exec(&self) -> Value {
        let params = vec![
            q(
                "command",
                "string",
                "Command is the remote command to execute. argv array. Not executed within a shell.",
            ),
            q(
                "container",
                "string",
                "Container in which to execute the command. Defaults to only container if there is only one container in the pod.",
            ),
            q(
                "stderr",
                "boolean",
                "Redirect the standard error stream of the pod for this call.",
            ),
            q(
                "stdin",
                "boolean",
                "Redirect the standard input stream of the pod for this call. Defaults to false.",
            ),
            q(
                "stdout",
                "boolean",
                "Redirect the standard output stream of the pod for this call.",
            ),
            q(
                "tty",
                "boolean",
                "TTY if true indicates that a tty will be allocated for the exec call. Defaults to false.",
            ),
        ];
        self.connect(
            "PodExecOptions",
            "exec",
            "Exec",
            &[("get", "Get"), ("post", "Post")],
            params,
        )
    }

    fn attach(&self) -> Value {
        let params = vec![
            q(
                "container",
                "string",
                "The container in which to execute the command. Defaults to only container if there is only one container in the pod.",
            ),
            q(
                "stderr",
                "boolean",
                "Stderr if true indicates that stderr is to be redirected for the attach call. Defaults to true.",
            ),
            q(
                "stdin",
                "boolean",
                "Stdin if true, redirects the standard input stream of the pod for this call. Defaults to false.",
            ),
            q(
                "stdout",
                "boolean",
                "Stdout if true indicates that stdout is to be redirected for the attach call. Defaults to true.",
            ),
            q(
                "tty",
                "boolean",
                "TTY if true indicates that a tty will be allocated for the attach call. This is passed through the container runtime so the tty is allocated on the worker node by the container runtime. Defaults to false.",
            ),
        ];
        self.connect(
            "PodAttachOptions",
            "attach",
            "Attach",
            &[("get", "Get"), ("post", "Post")],
            params,
        )
    }

    fn proxy(&self) -> Value {
        let params = vec![q(
            "path",
            "string",
            "Path is the URL path to use for the current proxy request to node.",
        )];
        self.connect(
            "NodeProxyOptions",
            "proxy",
            "Proxy",
            &[
                ("get", "Get"),
                ("put", "Put"),
                ("post", "Post"),
                ("delete", "Delete"),
                ("options", "Options"),
                ("head", "Head"),
                ("patch", "Patch"),
            ],
            params,
        )
    }

    /// A `connect` subresource (`portforward`, `proxy`): its methods, each answering a
    /// stream.
    fn connect(
        &self,
        options_kind: &str,
        sub: &str,
        op_suffix: &str,
        methods: &[(&str, &str)],
        params: Vec<Value>,
    ) -> Value {
        let mut responses = Map::new();
        responses.insert(
            "200".into(),
            json!({"description": "OK", "content": {"*/*": {"schema": {"type": "string"}}}}),
        );
        responses.insert("401".into(), json!({"description": "Unauthorized"}));
        let gvk = json!({"group": "", "kind": options_kind, "version": "v1"});
        let mut item = Map::new();
        for (method, verb) in methods {
            item.insert(
                (*method).into(),
                self.op(
                    format!("connect {method} requests to {sub} of {}", self.rt.kind),
                    format!(
                        "connect{}{verb}{}{}{op_suffix}",
                        self.infix, self.scope, self.rt.kind
                    ),
                    params.clone(),
                    None,
                    Value::Object(responses.clone()),
                    "connect",
                    gvk.clone(),
                ),
            );
        }
        item.insert("parameters".into(), json!(self.path_params(true)));
        Value::Object(item)
    }

    fn all_namespaces(&self) -> Value {
        let kind = self.rt.kind;
        let mut params = list_params();
        params.push(pretty());
        params.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
        let mut item = Map::new();
        item.insert(
            "get".into(),
            self.op(
                format!("list or watch objects of kind {kind}"),
                format!("list{}{kind}ForAllNamespaces", self.infix),
                Vec::new(),
                None,
                responses(&self.list_schema, &[]),
                "list",
                self.gvk(),
            ),
        );
        item.insert("parameters".into(), Value::Array(params));
        Value::Object(item)
    }
}

/// `paths` of the document serving `types` under `prefix` (`/api/v1`, `/apis/apps/v1`).
pub(crate) fn paths(types: &[&ResourceType], group: &str, version: &str, prefix: &str) -> Value {
    let (infix, tag) = gv_names(group, version);
    let mut paths = Map::new();
    paths.insert(
        format!("{prefix}/"),
        json!({"get": {
            "tags": [tag],
            "description": "get available resources",
            "operationId": format!("get{infix}APIResources"),
            "responses": responses(API_RESOURCE_LIST, &[]),
        }}),
    );
    for rt in types {
        let schema = schema_name(rt);
        let kind = Kind {
            rt,
            tag: tag.clone(),
            infix: infix.clone(),
            scope: if rt.namespaced { "Namespaced" } else { "" },
            list_schema: format!("{schema}List"),
            schema,
        };
        let base = if rt.namespaced {
            format!("{prefix}/namespaces/{{namespace}}/{}", rt.plural)
        } else {
            format!("{prefix}/{}", rt.plural)
        };
        if rt.create_only {
            paths.insert(base, kind.create_only());
            continue;
        }
        let named = format!("{base}/{{name}}");
        paths.insert(base.clone(), kind.collection());
        paths.insert(named.clone(), kind.item());
        if rt.namespaced {
            paths.insert(format!("{prefix}/{}", rt.plural), kind.all_namespaces());
        }
        for sub in rt.subresources {
            let path = format!("{named}/{}", sub.name());
            let item = match sub {
                Subresource::Status => {
                    kind.read_write_subresource("status", &kind.schema, kind.gvk())
                }
                Subresource::Approval => {
                    kind.read_write_subresource("approval", &kind.schema, kind.gvk())
                }
                Subresource::Scale => kind.read_write_subresource(
                    "scale",
                    SCALE,
                    json!({"group": "autoscaling", "kind": "Scale", "version": "v1"}),
                ),
                Subresource::Binding => kind.create_subresource(
                    "Binding",
                    BINDING,
                    json!({"group": "", "kind": "Binding", "version": "v1"}),
                ),
                Subresource::Eviction => kind.create_subresource(
                    "Eviction",
                    EVICTION,
                    json!({"group": "policy", "kind": "Eviction", "version": "v1"}),
                ),
                Subresource::Token => kind.create_subresource(
                    "Token",
                    TOKEN_REQUEST,
                    json!({"group": "authentication.k8s.io", "kind": "TokenRequest", "version": "v1"}),
                ),
                Subresource::Log => kind.log(),
                Subresource::PortForward => kind.port_forward(),
                Subresource::Proxy => kind.proxy(),
                Subresource::Exec => kind.exec(),
                Subresource::Attach => kind.attach(),
            };
            paths.insert(path, item);
        }
    }
    Value::Object(paths)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::Registry;

    #[test]
    fn group_names_follow_kubernetes_operation_ids_and_tags() {
        assert_eq!(
            gv_names("", "v1"),
            ("CoreV1".to_string(), "core_v1".to_string())
        );
        assert_eq!(
            gv_names("coordination.k8s.io", "v1"),
            ("CoordinationV1".to_string(), "coordination_v1".to_string())
        );
        assert_eq!(
            gv_names("rbac.authorization.k8s.io", "v1"),
            (
                "RbacAuthorizationV1".to_string(),
                "rbacAuthorization_v1".to_string()
            )
        );
    }

    #[test]
    fn every_patch_operation_offers_field_validation_and_strategic_merge_patch() {
        let registry = Registry::builtin();
        for (group, version) in registry.group_versions() {
            let types: Vec<&ResourceType> = registry
                .all()
                .iter()
                .filter(|t| t.group == group && t.version == version)
                .collect();
            let paths = paths(&types, group, version, "/x");
            for (path, item) in paths.as_object().unwrap() {
                let Some(patch) = item.get("patch") else {
                    continue;
                };
                // `nodes/proxy`'s PATCH passes a body through; it patches nothing.
                if patch["x-kubernetes-action"] == "connect" {
                    continue;
                }
                let names: Vec<&str> = patch["parameters"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|p| p["name"].as_str().unwrap())
                    .collect();
                assert!(names.contains(&"fieldValidation"), "{path}");
                assert!(
                    patch["requestBody"]["content"]
                        .get("application/strategic-merge-patch+json")
                        .is_some(),
                    "{path}"
                );
                assert!(patch["x-kubernetes-group-version-kind"].is_object());
            }
        }
    }

    #[test]
    fn pods_have_namespaced_collection_item_and_subresource_paths() {
        let registry = Registry::builtin();
        let pod = registry.by_kind("", "Pod").unwrap();
        let paths = paths(&[pod], "", "v1", "/api/v1");
        let p = paths.as_object().unwrap();
        let list = &p["/api/v1/namespaces/{namespace}/pods"]["get"];
        assert_eq!(list["operationId"], "listCoreV1NamespacedPod");
        assert_eq!(list["x-kubernetes-action"], "list");
        assert_eq!(
            list["x-kubernetes-group-version-kind"],
            json!({"group": "", "kind": "Pod", "version": "v1"})
        );
        assert_eq!(
            p["/api/v1/pods"]["get"]["operationId"],
            "listCoreV1PodForAllNamespaces"
        );
        assert_eq!(
            p["/api/v1/namespaces/{namespace}/pods/{name}/status"]["patch"]["operationId"],
            "patchCoreV1NamespacedPodStatus"
        );
        assert_eq!(
            p["/api/v1/namespaces/{namespace}/pods/{name}/binding"]["post"]["operationId"],
            "createCoreV1NamespacedPodBinding"
        );
        let eviction = &p["/api/v1/namespaces/{namespace}/pods/{name}/eviction"]["post"];
        assert_eq!(eviction["operationId"], "createCoreV1NamespacedPodEviction");
        assert_eq!(eviction["description"], "create eviction of a Pod");
        assert_eq!(
            eviction["x-kubernetes-group-version-kind"],
            json!({"group": "policy", "kind": "Eviction", "version": "v1"})
        );
        assert_eq!(
            eviction["requestBody"]["content"]["*/*"]["schema"]["$ref"],
            "#/components/schemas/io.k8s.api.policy.v1.Eviction"
        );
        assert_eq!(
            p["/api/v1/namespaces/{namespace}/pods/{name}/log"]["get"]["operationId"],
            "readCoreV1NamespacedPodLog"
        );
        assert_eq!(
            p["/api/v1/namespaces/{namespace}/pods"]["delete"]["operationId"],
            "deleteCoreV1CollectionNamespacedPod"
        );
    }

    #[test]
    fn scale_subresource_speaks_autoscaling_v1_scale() {
        let registry = Registry::builtin();
        let deploy = registry.by_kind("apps", "Deployment").unwrap();
        let paths = paths(&[deploy], "apps", "v1", "/apis/apps/v1");
        let scale = &paths["/apis/apps/v1/namespaces/{namespace}/deployments/{name}/scale"];
        assert_eq!(
            scale["get"]["operationId"],
            "readAppsV1NamespacedDeploymentScale"
        );
        assert_eq!(
            scale["patch"]["x-kubernetes-group-version-kind"],
            json!({"group": "autoscaling", "kind": "Scale", "version": "v1"})
        );
        assert_eq!(
            scale["put"]["requestBody"]["content"]["*/*"]["schema"]["$ref"],
            "#/components/schemas/io.k8s.api.autoscaling.v1.Scale"
        );
    }

    #[test]
    fn cluster_scoped_kinds_have_no_namespace_parameter() {
        let registry = Registry::builtin();
        let node = registry.by_kind("", "Node").unwrap();
        let paths = paths(&[node], "", "v1", "/api/v1");
        let item = &paths["/api/v1/nodes/{name}"];
        assert_eq!(item["get"]["operationId"], "readCoreV1Node");
        let names: Vec<&str> = item["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["name", "pretty"]);
    }
}
