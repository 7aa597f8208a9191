//! Patches exactly as kubectl v1.32 (and the kubelet, and kube-rs users) send them, applied to
//! live objects as the apiserver stores them (defaults filled in, status present).

use serde_json::{Value, json};

use super::{PatchType, apply};

const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// A Deployment as stored after `kubectl apply -f web.yaml`, with defaults and status.
fn live_deployment() -> Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": "web",
            "namespace": "default",
            "uid": "7c1f0a3e-8d5b-4a51-9a55-1f2e3d4c5b6a",
            "resourceVersion": "42",
            "generation": 1,
            "labels": {"app": "web"},
            "annotations": {
                "deployment.kubernetes.io/revision": "1",
                LAST_APPLIED: "{\"apiVersion\":\"apps/v1\",\"kind\":\"Deployment\",\"metadata\":{\"annotations\":{},\"labels\":{\"app\":\"web\"},\"name\":\"web\",\"namespace\":\"default\"},\"spec\":{\"replicas\":2,\"selector\":{\"matchLabels\":{\"app\":\"web\"}},\"template\":{\"metadata\":{\"labels\":{\"app\":\"web\"}},\"spec\":{\"containers\":[{\"env\":[{\"name\":\"MODE\",\"value\":\"prod\"}],\"image\":\"nginx:1.25\",\"name\":\"nginx\",\"ports\":[{\"containerPort\":80},{\"containerPort\":8080}]},{\"image\":\"envoy:1.30\",\"name\":\"proxy\"}],\"runtimeClassName\":\"wasmtime\"}}}}\n"
            }
        },
        "spec": {
            "replicas": 2,
            "revisionHistoryLimit": 10,
            "progressDeadlineSeconds": 600,
            "selector": {"matchLabels": {"app": "web"}},
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}
            },
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {
                    "runtimeClassName": "wasmtime",
                    "restartPolicy": "Always",
                    "dnsPolicy": "ClusterFirst",
                    "terminationGracePeriodSeconds": 30,
                    "containers": [
                        {
                            "name": "nginx",
                            "image": "nginx:1.25",
                            "imagePullPolicy": "IfNotPresent",
                            "env": [{"name": "MODE", "value": "prod"}],
                            "ports": [
                                {"containerPort": 80, "protocol": "TCP"},
                                {"containerPort": 8080, "protocol": "TCP"}
                            ],
                            "resources": {},
                            "terminationMessagePath": "/dev/termination-log",
                            "terminationMessagePolicy": "File"
                        },
                        {
                            "name": "proxy",
                            "image": "envoy:1.30",
                            "imagePullPolicy": "IfNotPresent",
                            "resources": {},
                            "terminationMessagePath": "/dev/termination-log",
                            "terminationMessagePolicy": "File"
                        }
                    ],
                    "tolerations": [
                        {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute"}
                    ]
                }
            }
        },
        "status": {
            "observedGeneration": 1,
            "replicas": 2,
            "readyReplicas": 2,
            "conditions": [
                {"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable"},
                {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable"}
            ]
        }
    })
}

fn smp(group: &str, kind: &str, live: &Value, patch: Value) -> Value {
    match apply(PatchType::StrategicMerge, group, kind, live, &patch) {
        Ok(v) => v,
        Err(e) => panic!("strategic merge patch failed: {e}"),
    }
}

fn patch_deployment(patch: Value) -> Value {
    smp("apps", "Deployment", &live_deployment(), patch)
}

fn containers(v: &Value) -> &Vec<Value> {
    match v["spec"]["template"]["spec"]["containers"].as_array() {
        Some(cs) => cs,
        None => panic!("no containers in {v}"),
    }
}

fn names(list: &[Value]) -> Vec<&str> {
    list.iter().filter_map(|c| c["name"].as_str()).collect()
}

/// Asserts that no key anywhere in `v` is a strategic merge patch directive.
fn assert_no_directives(v: &Value) {
    match v {
        Value::Object(m) => {
            for (k, child) in m {
                assert!(
                    !(k == "$patch"
                        || k == "$retainKeys"
                        || k.starts_with("$setElementOrder")
                        || k.starts_with("$deleteFromPrimitiveList")),
                    "directive {k} left in the result"
                );
                assert_no_directives(child);
            }
        }
        Value::Array(items) => items.iter().for_each(assert_no_directives),
        _ => {}
    }
}

#[test]
fn kubectl_apply_with_a_new_image_updates_only_that_container() {
    let new_last_applied = "{\"apiVersion\":\"apps/v1\",\"kind\":\"Deployment\",\"metadata\":{\"annotations\":{},\"labels\":{\"app\":\"web\"},\"name\":\"web\",\"namespace\":\"default\"},\"spec\":{\"replicas\":2,\"selector\":{\"matchLabels\":{\"app\":\"web\"}},\"template\":{\"metadata\":{\"labels\":{\"app\":\"web\"}},\"spec\":{\"containers\":[{\"env\":[{\"name\":\"MODE\",\"value\":\"prod\"}],\"image\":\"nginx:1.26\",\"name\":\"nginx\",\"ports\":[{\"containerPort\":80},{\"containerPort\":8080}]},{\"image\":\"envoy:1.30\",\"name\":\"proxy\"}],\"runtimeClassName\":\"wasmtime\"}}}}\n";
    let patch = json!({
        "metadata": {"annotations": {LAST_APPLIED: new_last_applied}},
        "spec": {"template": {"spec": {
            "$setElementOrder/containers": [{"name": "nginx"}, {"name": "proxy"}],
            "containers": [{"image": "nginx:1.26", "name": "nginx"}]
        }}}
    });
    let out = patch_deployment(patch);

    let mut expected = live_deployment();
    expected["metadata"]["annotations"][LAST_APPLIED] = json!(new_last_applied);
    expected["spec"]["template"]["spec"]["containers"][0]["image"] = json!("nginx:1.26");
    assert_eq!(out, expected);
}

#[test]
fn kubectl_apply_adds_a_container_and_env_var_and_drops_a_port_and_a_field() {
    // Config change: nginx gets env LOG, loses port 8080 and `resources`; a log
    // shipper container is added between nginx and proxy.
    let patch = json!({"spec": {"template": {"spec": {
        "$setElementOrder/containers": [{"name": "nginx"}, {"name": "shipper"}, {"name": "proxy"}],
        "containers": [
            {
                "$setElementOrder/env": [{"name": "MODE"}, {"name": "LOG"}],
                "$setElementOrder/ports": [{"containerPort": 80}],
                "env": [{"name": "LOG", "value": "debug"}],
                "name": "nginx",
                "ports": [{"$patch": "delete", "containerPort": 8080}],
                "resources": null
            },
            {"image": "fluent-bit:3", "name": "shipper"}
        ]
    }}}});
    let out = patch_deployment(patch);
    assert_no_directives(&out);

    let cs = containers(&out);
    assert_eq!(names(cs), ["nginx", "shipper", "proxy"]);
    assert_eq!(
        cs[0]["env"],
        json!([{"name": "MODE", "value": "prod"}, {"name": "LOG", "value": "debug"}])
    );
    assert_eq!(
        cs[0]["ports"],
        json!([{"containerPort": 80, "protocol": "TCP"}])
    );
    assert!(cs[0].get("resources").is_none());
    assert_eq!(cs[0]["imagePullPolicy"], "IfNotPresent");
    assert_eq!(cs[1], json!({"image": "fluent-bit:3", "name": "shipper"}));
    assert_eq!(
        cs[2],
        live_deployment()["spec"]["template"]["spec"]["containers"][1]
    );
}

#[test]
fn kubectl_apply_removing_a_container_sends_a_delete_directive() {
    let out = patch_deployment(json!({"spec": {"template": {"spec": {
        "$setElementOrder/containers": [{"name": "nginx"}],
        "containers": [{"$patch": "delete", "name": "proxy"}]
    }}}}));
    assert_eq!(names(containers(&out)), ["nginx"]);
    assert_eq!(containers(&out)[0]["image"], "nginx:1.25");
}

#[test]
fn kubectl_apply_switching_to_recreate_clears_rolling_update_with_retain_keys() {
    let out = patch_deployment(json!({"spec": {"strategy": {
        "$retainKeys": ["type"],
        "type": "Recreate"
    }}}));
    assert_eq!(out["spec"]["strategy"], json!({"type": "Recreate"}));
}

#[test]
fn kubectl_scale_merge_patch_sets_replicas_on_the_scale_subresource() {
    let scale = json!({
        "apiVersion": "autoscaling/v1",
        "kind": "Scale",
        "metadata": {"name": "web", "namespace": "default", "resourceVersion": "42"},
        "spec": {"replicas": 2},
        "status": {"replicas": 2, "selector": "app=web"}
    });
    let out = apply(
        PatchType::Merge,
        "autoscaling",
        "Scale",
        &scale,
        &json!({"spec": {"replicas": 3}}),
    )
    .unwrap();
    assert_eq!(out["spec"], json!({"replicas": 3}));
    assert_eq!(out["status"], scale["status"]);
}

#[test]
fn kubectl_scale_payload_as_strategic_patch_changes_only_replicas() {
    let out = patch_deployment(json!({"spec": {"replicas": 3}}));
    let mut expected = live_deployment();
    expected["spec"]["replicas"] = json!(3);
    assert_eq!(out, expected);
}

#[test]
fn kubectl_label_adds_and_removes_a_label_with_either_merge_flavour() {
    for patch_type in [PatchType::Merge, PatchType::StrategicMerge] {
        let labelled = apply(
            patch_type,
            "apps",
            "Deployment",
            &live_deployment(),
            &json!({"metadata": {"labels": {"tier": "frontend"}}}),
        )
        .unwrap();
        assert_eq!(
            labelled["metadata"]["labels"],
            json!({"app": "web", "tier": "frontend"})
        );

        let unlabelled = apply(
            patch_type,
            "apps",
            "Deployment",
            &labelled,
            &json!({"metadata": {"labels": {"tier": null}}}),
        )
        .unwrap();
        assert_eq!(unlabelled, live_deployment(), "{patch_type:?}");
    }
}

#[test]
fn kubectl_annotate_overwrites_an_annotation() {
    let out = smp(
        "",
        "ConfigMap",
        &json!({"metadata": {"name": "cfg", "annotations": {"owner": "a"}}, "data": {"k": "v"}}),
        json!({"metadata": {"annotations": {"owner": "b"}}}),
    );
    assert_eq!(out["metadata"]["annotations"], json!({"owner": "b"}));
    assert_eq!(out["data"], json!({"k": "v"}));
}

#[test]
fn kubectl_set_image_changes_one_container_and_keeps_the_order() {
    let out = patch_deployment(json!({"spec": {"template": {"spec": {
        "$setElementOrder/containers": [{"name": "nginx"}, {"name": "proxy"}],
        "containers": [{"image": "envoy:1.31", "name": "proxy"}]
    }}}}));
    let cs = containers(&out);
    assert_eq!(names(cs), ["nginx", "proxy"]);
    assert_eq!(cs[0]["image"], "nginx:1.25");
    assert_eq!(cs[1]["image"], "envoy:1.31");
    assert_eq!(cs[1]["terminationMessagePath"], "/dev/termination-log");
}

#[test]
fn kubectl_set_env_merges_env_by_name() {
    let out = patch_deployment(json!({"spec": {"template": {"spec": {
        "$setElementOrder/containers": [{"name": "nginx"}, {"name": "proxy"}],
        "containers": [{
            "$setElementOrder/env": [{"name": "MODE"}, {"name": "LOG"}],
            "env": [{"name": "MODE", "value": "staging"}, {"name": "LOG", "value": "debug"}],
            "name": "nginx"
        }]
    }}}}));
    assert_eq!(
        containers(&out)[0]["env"],
        json!([{"name": "MODE", "value": "staging"}, {"name": "LOG", "value": "debug"}])
    );
}

#[test]
fn env_var_removed_with_a_delete_directive_by_name() {
    let out = patch_deployment(json!({"spec": {"template": {"spec": {"containers": [
        {"name": "nginx", "env": [{"name": "MODE", "$patch": "delete"}]}
    ]}}}}));
    assert_eq!(containers(&out)[0]["env"], json!([]));
}

#[test]
fn kubectl_rollout_restart_adds_a_template_annotation() {
    let out = patch_deployment(json!({"spec": {"template": {"metadata": {"annotations": {
        "kubectl.kubernetes.io/restartedAt": "2025-01-01T00:00:00Z"
    }}}}}));
    assert_eq!(
        out["spec"]["template"]["metadata"],
        json!({
            "labels": {"app": "web"},
            "annotations": {"kubectl.kubernetes.io/restartedAt": "2025-01-01T00:00:00Z"}
        })
    );
}

#[test]
fn kubectl_patch_deleting_a_container_with_patch_delete() {
    let out = patch_deployment(json!({"spec": {"template": {"spec": {"containers": [
        {"name": "nginx", "$patch": "delete"}
    ]}}}}));
    assert_eq!(names(containers(&out)), ["proxy"]);
}

#[test]
fn kubectl_patch_adding_a_container_without_order_puts_it_first_like_kubernetes() {
    // The kubectl patch task in the Kubernetes docs shows the new container first.
    let out = patch_deployment(json!({"spec": {"template": {"spec": {"containers": [
        {"name": "redis", "image": "redis"}
    ]}}}}));
    assert_eq!(names(containers(&out)), ["redis", "nginx", "proxy"]);
}

#[test]
fn kubectl_patch_tolerations_replaces_the_whole_list() {
    let out = patch_deployment(json!({"spec": {"template": {"spec": {"tolerations": [
        {"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}
    ]}}}}));
    assert_eq!(
        out["spec"]["template"]["spec"]["tolerations"],
        json!([{"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}])
    );
}

#[test]
fn finalizer_removed_with_delete_from_primitive_list() {
    let live = json!({
        "metadata": {"name": "ns1", "finalizers": ["example.com/protect", "kubernetes"]},
        "spec": {}
    });
    let out = smp(
        "",
        "Namespace",
        &live,
        json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["example.com/protect"]}}),
    );
    assert_eq!(
        out["metadata"],
        json!({"name": "ns1", "finalizers": ["kubernetes"]})
    );
}

#[test]
fn kubectl_apply_finalizer_change_adds_and_removes_in_order() {
    let live = json!({"metadata": {"name": "cm", "finalizers": ["a.io/x", "b.io/y"]}});
    let out = smp(
        "",
        "ConfigMap",
        &live,
        json!({"metadata": {
            "$deleteFromPrimitiveList/finalizers": ["a.io/x"],
            "$setElementOrder/finalizers": ["b.io/y", "c.io/z"],
            "finalizers": ["c.io/z"]
        }}),
    );
    assert_eq!(out["metadata"]["finalizers"], json!(["b.io/y", "c.io/z"]));
}

#[test]
fn owner_references_merge_by_uid() {
    let live = json!({"metadata": {"name": "rs", "ownerReferences": [
        {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web", "uid": "u1", "controller": true}
    ]}});
    let out = smp(
        "apps",
        "ReplicaSet",
        &live,
        json!({"metadata": {"ownerReferences": [
            {"uid": "u1", "blockOwnerDeletion": true},
            {"apiVersion": "v1", "kind": "ConfigMap", "name": "cfg", "uid": "u2"}
        ]}}),
    );
    let refs = &out["metadata"]["ownerReferences"];
    assert_eq!(refs.as_array().map(Vec::len), Some(2));
    assert_eq!(refs[0]["blockOwnerDeletion"], true);
    assert_eq!(refs[0]["controller"], true);
    assert_eq!(refs[1]["uid"], "u2");
}

#[test]
fn kubelet_status_patch_merges_pod_conditions_by_type() {
    let live = json!({
        "metadata": {"name": "web-1"},
        "spec": {"containers": [{"name": "app", "image": "app:1"}]},
        "status": {
            "phase": "Pending",
            "conditions": [
                {"type": "PodScheduled", "status": "True"},
                {"type": "Ready", "status": "False"}
            ],
            "containerStatuses": [{"name": "app", "ready": false, "restartCount": 0}]
        }
    });
    let out = smp(
        "",
        "Pod",
        &live,
        json!({"status": {
            "$setElementOrder/conditions": [
                {"type": "PodScheduled"}, {"type": "Ready"}, {"type": "ContainersReady"}
            ],
            "conditions": [
                {"type": "Ready", "status": "True"},
                {"type": "ContainersReady", "status": "True"}
            ],
            "containerStatuses": [{"name": "app", "ready": true, "restartCount": 0}],
            "phase": "Running",
            "podIP": "127.0.1.5"
        }}),
    );
    assert_eq!(
        out["status"]["conditions"],
        json!([
            {"type": "PodScheduled", "status": "True"},
            {"type": "Ready", "status": "True"},
            {"type": "ContainersReady", "status": "True"}
        ])
    );
    assert_eq!(
        out["status"]["containerStatuses"],
        json!([{"name": "app", "ready": true, "restartCount": 0}])
    );
    assert_eq!(out["status"]["phase"], "Running");
}

#[test]
fn node_status_patch_merges_addresses_and_conditions_by_type_and_replaces_taints() {
    let live = json!({
        "metadata": {"name": "node-1"},
        "spec": {"taints": [{"key": "a", "effect": "NoSchedule"}]},
        "status": {
            "addresses": [{"type": "InternalIP", "address": "10.0.0.1"}, {"type": "Hostname", "address": "node-1"}],
            "conditions": [{"type": "Ready", "status": "False"}, {"type": "MemoryPressure", "status": "False"}]
        }
    });
    let out = smp(
        "",
        "Node",
        &live,
        json!({
            "spec": {"taints": [{"key": "b", "effect": "NoExecute"}]},
            "status": {
                "addresses": [{"type": "InternalIP", "address": "10.0.0.2"}],
                "conditions": [{"type": "Ready", "status": "True"}]
            }
        }),
    );
    assert_eq!(
        out["spec"]["taints"],
        json!([{"key": "b", "effect": "NoExecute"}])
    );
    assert_eq!(
        out["status"]["addresses"],
        json!([{"type": "InternalIP", "address": "10.0.0.2"}, {"type": "Hostname", "address": "node-1"}])
    );
    assert_eq!(
        out["status"]["conditions"][0],
        json!({"type": "Ready", "status": "True"})
    );
    assert_eq!(out["status"]["conditions"][1]["type"], "MemoryPressure");
}

#[test]
fn service_ports_merge_by_port() {
    let live = json!({
        "metadata": {"name": "web"},
        "spec": {
            "type": "ClusterIP",
            "clusterIP": "10.96.0.10",
            "ports": [{"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"}]
        }
    });
    let out = smp(
        "",
        "Service",
        &live,
        json!({"spec": {
            "$setElementOrder/ports": [{"port": 80}, {"port": 443}],
            "ports": [{"name": "https", "port": 443, "targetPort": 8443}]
        }}),
    );
    assert_eq!(
        out["spec"]["ports"],
        json!([
            {"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"},
            {"name": "https", "port": 443, "targetPort": 8443}
        ])
    );
    assert_eq!(out["spec"]["clusterIP"], "10.96.0.10");
}

#[test]
fn cronjob_containers_merge_through_the_job_template() {
    let live = json!({
        "metadata": {"name": "backup"},
        "spec": {"schedule": "0 * * * *", "jobTemplate": {"spec": {"template": {"spec": {
            "restartPolicy": "OnFailure",
            "containers": [{"name": "backup", "image": "backup:1", "args": ["--all"]}]
        }}}}}
    });
    let out = smp(
        "batch",
        "CronJob",
        &live,
        json!({"spec": {"jobTemplate": {"spec": {"template": {"spec": {
            "containers": [{"name": "backup", "image": "backup:2"}]
        }}}}}}),
    );
    assert_eq!(
        out["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"],
        json!([{"name": "backup", "image": "backup:2", "args": ["--all"]}])
    );
}

#[test]
fn custom_resources_get_merge_patch_semantics_without_directives() {
    let live = json!({
        "apiVersion": "example.com/v1",
        "kind": "Widget",
        "metadata": {"name": "w", "finalizers": ["example.com/a"]},
        "spec": {"items": [{"name": "a", "size": 1}], "color": "red"}
    });
    let out = smp(
        "example.com",
        "Widget",
        &live,
        json!({
            "metadata": {"finalizers": ["example.com/b"]},
            "spec": {
                "$setElementOrder/items": [{"name": "b"}],
                "items": [{"name": "b", "size": 2}],
                "color": null
            }
        }),
    );
    assert_no_directives(&out);
    assert_eq!(out["metadata"]["finalizers"], json!(["example.com/b"]));
    assert_eq!(out["spec"], json!({"items": [{"name": "b", "size": 2}]}));
}

#[test]
fn configmap_data_is_a_plain_map() {
    let live = json!({"metadata": {"name": "cfg"}, "data": {"a": "1", "b": "2"}});
    let out = smp(
        "",
        "ConfigMap",
        &live,
        json!({"data": {"a": null, "c": "3"}}),
    );
    assert_eq!(out["data"], json!({"b": "2", "c": "3"}));
}

#[test]
fn json_patch_from_kubectl_patch_type_json_edits_a_container_image() {
    let out = apply(
        PatchType::Json,
        "apps",
        "Deployment",
        &live_deployment(),
        &json!([
            {"op": "test", "path": "/spec/template/spec/containers/0/name", "value": "nginx"},
            {"op": "replace", "path": "/spec/template/spec/containers/0/image", "value": "nginx:1.27"}
        ]),
    )
    .unwrap();
    assert_eq!(containers(&out)[0]["image"], "nginx:1.27");
}

#[test]
fn kubectl_apply_replacing_a_container_keeps_an_injected_sidecar_where_kubernetes_puts_it() {
    // Live: `injected` was added by someone else (server-only). The new config swaps `old`
    // for `new`. Kubernetes lands the server-only container between the kept and the new one.
    let live = json!({"metadata": {"name": "p"}, "spec": {"containers": [
        {"name": "app", "image": "app:1"},
        {"name": "old", "image": "old:1"},
        {"name": "injected", "image": "mesh:1"}
    ]}});
    let out = smp(
        "",
        "Pod",
        &live,
        json!({"spec": {
            "$setElementOrder/containers": [{"name": "app"}, {"name": "new"}],
            "containers": [{"image": "new:1", "name": "new"}, {"$patch": "delete", "name": "old"}]
        }}),
    );
    assert_eq!(
        out["spec"]["containers"],
        json!([
            {"name": "app", "image": "app:1"},
            {"name": "injected", "image": "mesh:1"},
            {"name": "new", "image": "new:1"}
        ])
    );
}
