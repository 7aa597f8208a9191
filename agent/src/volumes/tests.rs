//! Volume tests against a real apiserver started in-process on a temporary data directory.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{
    ConfigMapVolumeSource, DownwardAPIVolumeSource, EmptyDirVolumeSource, HostPathVolumeSource,
    ObjectFieldSelector, PodSpec, SecretVolumeSource, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::PostParams;
use wasmkube_apiserver::testing::TestApiserver;

use super::*;

/// An apiserver with its data in `<tmp>/server`; stops when dropped.
struct ApiServer {
    client: kube::Client,
    server: TestApiserver,
}

async fn apiserver() -> ApiServer {
    let server =
        TestApiserver::start_with(|config| config.data_dir = config.data_dir.join("server"))
            .await
            .expect("apiserver starts");
    ApiServer {
        client: server.client(),
        server,
    }
}

impl ApiServer {
    /// The temporary directory: the server's data in `server/`, the node's pods in `pods/`.
    fn dir(&self) -> &std::path::Path {
        self.server.dir()
    }

    /// A token manager over the admin client.
    fn tokens(&self) -> ServiceAccountTokens {
        ServiceAccountTokens::new(self.client.clone())
    }

    /// The hostPath rules of a node with data directory `<tmp>/server` that allows `<tmp>/host`.
    fn host_paths(&self) -> HostPathPolicy {
        fs::create_dir_all(self.dir().join("host")).expect("mkdir");
        HostPathPolicy::new(
            &[AllowedHostPath {
                prefix: self.dir().join("host"),
                read_only: false,
            }],
            &self.dir().join("server"),
        )
        .expect("policy")
    }

    async fn create_configmap(&self, name: &str, data: &[(&str, &str)]) {
        let cm = ConfigMap {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..ObjectMeta::default()
            },
            data: Some(
                data.iter()
                    .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
                    .collect(),
            ),
            binary_data: Some(BTreeMap::from([(
                "blob.bin".into(),
                ByteString(vec![0, 1, 2, 255]),
            )])),
            ..ConfigMap::default()
        };
        Api::<ConfigMap>::namespaced(self.client.clone(), "default")
            .create(&PostParams::default(), &cm)
            .await
            .expect("create configmap");
    }

    async fn create_secret(&self, name: &str, data: &[(&str, &[u8])]) {
        let secret = Secret {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..ObjectMeta::default()
            },
            data: Some(
                data.iter()
                    .map(|(k, v)| ((*k).to_string(), ByteString(v.to_vec())))
                    .collect(),
            ),
            ..Secret::default()
        };
        Api::<Secret>::namespaced(self.client.clone(), "default")
            .create(&PostParams::default(), &secret)
            .await
            .expect("create secret");
    }
}

fn volume(name: &str) -> Volume {
    Volume {
        name: name.into(),
        ..Volume::default()
    }
}

fn pod(volumes: Vec<Volume>) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some("files".into()),
            namespace: Some("default".into()),
            uid: Some("0f0e-uid".into()),
            labels: Some(BTreeMap::from([
                ("app".into(), "files".into()),
                ("tier".into(), "web".into()),
            ])),
            ..ObjectMeta::default()
        },
        spec: Some(PodSpec {
            volumes: Some(volumes),
            ..PodSpec::default()
        }),
        ..Pod::default()
    }
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path).expect("metadata").permissions().mode() & 0o777
}

#[tokio::test]
async fn configmap_secret_downward_api_and_empty_dir_volumes_become_directories() {
    let api = apiserver().await;
    api.create_configmap("app-config", &[("greeting", "hello"), ("level", "debug")])
        .await;
    api.create_secret("creds", &[("password", b"s3cr3t\n")])
        .await;
    let pod = pod(vec![
        Volume {
            config_map: Some(ConfigMapVolumeSource {
                name: "app-config".into(),
                ..ConfigMapVolumeSource::default()
            }),
            ..volume("config")
        },
        Volume {
            secret: Some(SecretVolumeSource {
                secret_name: Some("creds".into()),
                default_mode: Some(0o400),
                ..SecretVolumeSource::default()
            }),
            ..volume("secret")
        },
        Volume {
            downward_api: Some(DownwardAPIVolumeSource {
                items: Some(vec![
                    DownwardAPIVolumeFile {
                        path: "labels".into(),
                        field_ref: Some(ObjectFieldSelector {
                            field_path: "metadata.labels".into(),
                            ..ObjectFieldSelector::default()
                        }),
                        ..DownwardAPIVolumeFile::default()
                    },
                    DownwardAPIVolumeFile {
                        path: "meta/name".into(),
                        field_ref: Some(ObjectFieldSelector {
                            field_path: "metadata.name".into(),
                            ..ObjectFieldSelector::default()
                        }),
                        ..DownwardAPIVolumeFile::default()
                    },
                ]),
                ..DownwardAPIVolumeSource::default()
            }),
            ..volume("podinfo")
        },
        Volume {
            empty_dir: Some(EmptyDirVolumeSource {
                medium: Some("Memory".into()),
                ..EmptyDirVolumeSource::default()
            }),
            ..volume("scratch")
        },
    ]);
    let pod_dir = api.dir().join("pods").join("0f0e-uid");
    let volumes = prepare(
        &pod,
        &pod_dir,
        &api.client,
        &api.host_paths(),
        &api.tokens(),
    )
    .await
    .expect("prepare");

    let config = volumes.get("config").expect("config");
    assert!(config.read_only);
    assert_eq!(read(&config.host.join("greeting")), "hello");
    assert_eq!(read(&config.host.join("level")), "debug");
    assert_eq!(
        fs::read(config.host.join("blob.bin")).expect("binary"),
        [0, 1, 2, 255]
    );
    assert_eq!(mode(&config.host.join("greeting")), 0o644);

    let secret = volumes.get("secret").expect("secret");
    assert_eq!(read(&secret.host.join("password")), "s3cr3t\n");
    assert_eq!(mode(&secret.host.join("password")), 0o400);
    // Only the agent's user may enter the directories of secrets and configMaps.
    assert_eq!(mode(&secret.host), 0o700);
    assert_eq!(mode(&config.host), 0o700);

    let podinfo = volumes.get("podinfo").expect("podinfo");
    assert_eq!(
        read(&podinfo.host.join("labels")),
        "app=\"files\"\ntier=\"web\""
    );
    assert_eq!(read(&podinfo.host.join("meta/name")), "files");

    let scratch = volumes.get("scratch").expect("scratch");
    assert!(!scratch.read_only);
    assert!(scratch.host.is_dir());
    fs::write(scratch.host.join("kept"), "x").expect("write");

    // Preparing again (a restart) keeps emptyDir content.
    let again = prepare(
        &pod,
        &pod_dir,
        &api.client,
        &api.host_paths(),
        &api.tokens(),
    )
    .await
    .expect("prepare again");
    assert_eq!(
        read(&again.get("scratch").expect("scratch").host.join("kept")),
        "x"
    );
}

#[tokio::test]
async fn items_select_keys_and_stale_keys_disappear_on_refresh() {
    let api = apiserver().await;
    api.create_configmap("cfg", &[("a", "1"), ("b", "2")]).await;
    let items = |keys: &[(&str, &str)]| {
        Some(
            keys.iter()
                .map(|(key, path)| KeyToPath {
                    key: (*key).into(),
                    path: (*path).into(),
                    mode: Some(0o600),
                })
                .collect(),
        )
    };
    let with_items = |keys: &[(&str, &str)]| {
        pod(vec![Volume {
            config_map: Some(ConfigMapVolumeSource {
                name: "cfg".into(),
                items: items(keys),
                ..ConfigMapVolumeSource::default()
            }),
            ..volume("config")
        }])
    };
    let pod_dir = api.dir().join("pods").join("p");
    let volumes = prepare(
        &with_items(&[("a", "conf/a.txt")]),
        &pod_dir,
        &api.client,
        &api.host_paths(),
        &api.tokens(),
    )
    .await
    .expect("prepare");
    let dir = volumes.get("config").expect("config").host.clone();
    assert_eq!(read(&dir.join("conf/a.txt")), "1");
    assert_eq!(mode(&dir.join("conf/a.txt")), 0o600);
    assert!(!dir.join("b").exists());

    prepare(
        &with_items(&[("b", "b.txt")]),
        &pod_dir,
        &api.client,
        &api.host_paths(),
        &api.tokens(),
    )
    .await
    .expect("refresh");
    assert_eq!(read(&dir.join("b.txt")), "2");
    assert!(!dir.join("conf").exists(), "stale files are removed");

    let err = prepare(
        &with_items(&[("zzz", "z")]),
        &pod_dir,
        &api.client,
        &api.host_paths(),
        &api.tokens(),
    )
    .await
    .expect_err("missing key");
    assert_eq!(
        err.to_string(),
        "MountVolume.SetUp failed for volume \"config\" : configmap \"cfg\" references \
         non-existent key \"zzz\""
    );
}

#[tokio::test]
async fn missing_objects_fail_the_mount_unless_optional() {
    let api = apiserver().await;
    let missing = |optional: Option<bool>| {
        pod(vec![Volume {
            secret: Some(SecretVolumeSource {
                secret_name: Some("absent".into()),
                optional,
                ..SecretVolumeSource::default()
            }),
            ..volume("creds")
        }])
    };
    let pod_dir = api.dir().join("pods").join("m");
    let err = prepare(
        &missing(None),
        &pod_dir,
        &api.client,
        &api.host_paths(),
        &api.tokens(),
    )
    .await
    .expect_err("absent secret");
    assert_eq!(
        err.to_string(),
        "MountVolume.SetUp failed for volume \"creds\" : secret \"absent\" not found"
    );
    let volumes = prepare(
        &missing(Some(true)),
        &pod_dir,
        &api.client,
        &api.host_paths(),
        &api.tokens(),
    )
    .await
    .expect("optional");
    let dir = &volumes.get("creds").expect("creds").host;
    assert_eq!(fs::read_dir(dir).expect("dir").count(), 0);
}

#[tokio::test]
async fn host_paths_are_checked_or_created_and_mounts_become_preopens() {
    let api = apiserver().await;
    let host = api.dir().join("host").join("data");
    let host_path = |type_: Option<&str>| {
        pod(vec![
            Volume {
                host_path: Some(HostPathVolumeSource {
                    path: host.display().to_string(),
                    type_: type_.map(str::to_string),
                }),
                ..volume("data")
            },
            Volume {
                empty_dir: Some(EmptyDirVolumeSource::default()),
                ..volume("scratch")
            },
        ])
    };
    let pod_dir = api.dir().join("pods").join("h");
    let policy = api.host_paths();
    let err = prepare(
        &host_path(Some("Directory")),
        &pod_dir,
        &api.client,
        &policy,
        &api.tokens(),
    )
    .await
    .expect_err("absent directory");
    assert!(
        err.to_string().contains("is not an existing directory"),
        "{err}"
    );
    let err = prepare(
        &host_path(Some("File")),
        &pod_dir,
        &api.client,
        &policy,
        &api.tokens(),
    )
    .await
    .expect_err("file type");
    assert!(err.to_string().contains("only directories"), "{err}");
    let volumes = prepare(
        &host_path(Some("DirectoryOrCreate")),
        &pod_dir,
        &api.client,
        &policy,
        &api.tokens(),
    )
    .await
    .expect("created");
    assert!(host.is_dir());

    let container = Container {
        name: "main".into(),
        volume_mounts: Some(vec![
            VolumeMount {
                name: "data".into(),
                mount_path: "/data".into(),
                read_only: Some(true),
                ..VolumeMount::default()
            },
            VolumeMount {
                name: "scratch".into(),
                mount_path: "/work".into(),
                sub_path: Some("sub/dir".into()),
                ..VolumeMount::default()
            },
        ]),
        ..Container::default()
    };
    let preopens = volumes.preopens_for(&container, no_env).expect("preopens");
    let scratch = volumes
        .get("scratch")
        .expect("scratch")
        .host
        .join("sub/dir");
    let shown: Vec<(PathBuf, &str, bool)> = preopens
        .iter()
        .map(|p| {
            (
                p.dir.shown_path().to_path_buf(),
                p.guest.as_str(),
                p.read_only,
            )
        })
        .collect();
    assert_eq!(
        shown,
        vec![
            (host.clone(), "/data", true),
            (scratch.clone(), "/work", false)
        ]
    );
    assert!(scratch.is_dir(), "a subPath directory is created");
    fs::write(scratch.join("marker"), "m").expect("write");
    assert_eq!(
        read(&preopens[1].dir.proc_path().join("marker")),
        "m",
        "the preopen's path names the subPath directory"
    );

    let escaping = Container {
        volume_mounts: Some(vec![VolumeMount {
            name: "scratch".into(),
            mount_path: "/x".into(),
            sub_path: Some("../../etc".into()),
            ..VolumeMount::default()
        }]),
        ..Container::default()
    };
    assert!(matches!(
        volumes.preopens_for(&escaping, no_env),
        Err(VolumeError::Mount { .. })
    ));
}

fn no_env(_: &str) -> Option<String> {
    None
}

#[tokio::test]
async fn a_host_path_outside_the_allow_list_or_in_the_data_dir_is_refused_for_every_container() {
    let api = apiserver().await;
    let pod_dir = api.dir().join("pods").join("r");
    for path in [api.dir().join("server").join("pki"), PathBuf::from("/etc")] {
        let pod = pod(vec![Volume {
            host_path: Some(HostPathVolumeSource {
                path: path.display().to_string(),
                type_: None,
            }),
            ..volume("h")
        }]);
        let volumes = prepare(
            &pod,
            &pod_dir,
            &api.client,
            &api.host_paths(),
            &api.tokens(),
        )
        .await
        .expect("a refusal is not a set-up failure");
        let (volume, message) = volumes.refused().expect("refused");
        assert_eq!(volume, "h");
        assert!(message.contains("not allowed"), "{message}");
        let unrelated = Container {
            name: "c".into(),
            ..Container::default()
        };
        let err = volumes
            .preopens_for(&unrelated, no_env)
            .expect_err("refused");
        assert!(matches!(err, VolumeError::NotAllowed { .. }), "{err}");
    }
}

#[tokio::test]
async fn a_sub_path_through_a_symlink_a_guest_made_does_not_leave_the_volume() {
    let api = apiserver().await;
    let pod = pod(vec![Volume {
        empty_dir: Some(EmptyDirVolumeSource::default()),
        ..volume("shared")
    }]);
    let pod_dir = api.dir().join("pods").join("s");
    let volumes = prepare(
        &pod,
        &pod_dir,
        &api.client,
        &api.host_paths(),
        &api.tokens(),
    )
    .await
    .expect("prepare");
    let shared = volumes.get("shared").expect("shared").host.clone();
    // What an init container can do in its emptyDir: links up and out.
    std::os::unix::fs::symlink("../../..", shared.join("esc")).expect("symlink");
    std::os::unix::fs::symlink("/etc", shared.join("etc")).expect("symlink");
    fs::create_dir_all(shared.join("real")).expect("mkdir");
    std::os::unix::fs::symlink("real", shared.join("inside")).expect("symlink");
    let mounting = |sub: &str| Container {
        name: "main".into(),
        volume_mounts: Some(vec![VolumeMount {
            name: "shared".into(),
            mount_path: "/m".into(),
            sub_path: Some(sub.into()),
            ..VolumeMount::default()
        }]),
        ..Container::default()
    };
    for sub in ["esc", "etc", "esc/new", "etc/wasmkube-test"] {
        let err = volumes
            .preopens_for(&mounting(sub), no_env)
            .expect_err(sub)
            .to_string();
        assert!(err.contains("outside of the volume"), "{sub}: {err}");
    }
    assert!(!Path::new("/etc/wasmkube-test").exists());
    let inside = volumes
        .preopens_for(&mounting("inside"), no_env)
        .expect("a link that stays inside");
    fs::write(shared.join("real/f"), "inside").expect("write");
    assert_eq!(read(&inside[0].dir.proc_path().join("f")), "inside");
}

#[tokio::test]
async fn sub_path_expr_expands_the_containers_environment() {
    let api = apiserver().await;
    let pod = pod(vec![Volume {
        empty_dir: Some(EmptyDirVolumeSource::default()),
        ..volume("logs")
    }]);
    let pod_dir = api.dir().join("pods").join("e");
    let volumes = prepare(
        &pod,
        &pod_dir,
        &api.client,
        &api.host_paths(),
        &api.tokens(),
    )
    .await
    .expect("prepare");
    let container = Container {
        name: "main".into(),
        volume_mounts: Some(vec![VolumeMount {
            name: "logs".into(),
            mount_path: "/logs".into(),
            sub_path_expr: Some("pods/$(POD_NAME)".into()),
            ..VolumeMount::default()
        }]),
        ..Container::default()
    };
    let preopens = volumes
        .preopens_for(&container, |name| {
            (name == "POD_NAME").then(|| "web-1".to_string())
        })
        .expect("expanded");
    assert_eq!(
        preopens[0].dir.shown_path(),
        volumes.get("logs").expect("logs").host.join("pods/web-1")
    );
    let err = volumes
        .preopens_for(&container, no_env)
        .expect_err("missing variable")
        .to_string();
    assert!(err.contains("missing value for POD_NAME"), "{err}");
}

#[test]
fn only_plain_relative_paths_are_accepted() {
    assert_eq!(relative_path("a/b"), Some(PathBuf::from("a/b")));
    assert_eq!(relative_path("../a"), None);
    assert_eq!(relative_path("/etc"), None);
    assert_eq!(
        relative_path("a/./b").map(|p| p.components().count()),
        Some(2)
    );
    assert_eq!(relative_path(""), None);
}

#[tokio::test]
async fn a_projected_service_account_token_is_bound_to_the_pod_and_renewed_at_80_percent() {
    use k8s_openapi::api::core::v1::{ServiceAccount, ServiceAccountTokenProjection};
    use kube::Api;
    let api = apiserver().await;
    let accounts: Api<ServiceAccount> = Api::namespaced(api.client.clone(), "default");
    let account = ServiceAccount {
        metadata: ObjectMeta {
            name: Some("default".into()),
            ..ObjectMeta::default()
        },
        ..ServiceAccount::default()
    };
    match accounts.create(&PostParams::default(), &account).await {
        Ok(_) => {}
        Err(e) if wasmkube_client::status::is_already_exists(&e) => {}
        Err(e) => panic!("creating the account: {e}"),
    }
    // The token is bound to a pod that exists: create it, then mount its projection.
    let projected = Volume {
        projected: Some(k8s_openapi::api::core::v1::ProjectedVolumeSource {
            default_mode: Some(0o600),
            sources: Some(vec![k8s_openapi::api::core::v1::VolumeProjection {
                service_account_token: Some(ServiceAccountTokenProjection {
                    path: "token".into(),
                    expiration_seconds: Some(3607),
                    audience: None,
                }),
                ..Default::default()
            }]),
        }),
        ..volume("kube-api-access-test1")
    };
    let mut wanted = pod(vec![]);
    wanted.metadata.uid = None;
    let spec = wanted.spec.as_mut().expect("spec");
    spec.automount_service_account_token = Some(false);
    spec.containers = vec![Container {
        name: "app".into(),
        image: Some("wasmkube.local/samples/hello:v1".into()),
        ..Container::default()
    }];
    let pods: Api<Pod> = Api::namespaced(api.client.clone(), "default");
    let mut created = pods
        .create(&PostParams::default(), &wanted)
        .await
        .expect("pod");
    created.spec.as_mut().expect("spec").volumes = Some(vec![projected]);
    let pod_dir = api.dir().join("pods").join("token");
    let tokens = api.tokens();
    let before = std::time::SystemTime::now();
    let volumes = prepare(&created, &pod_dir, &api.client, &api.host_paths(), &tokens)
        .await
        .expect("prepare");
    let dir = &volumes.get("kube-api-access-test1").expect("volume").host;
    let token = read(&dir.join("token"));
    assert_eq!(token.split('.').count(), 3, "a JWT: {token}");
    assert_eq!(mode(&dir.join("token")), 0o600);
    assert_eq!(mode(dir), 0o700);
    let after = std::time::SystemTime::now();
    // 80% of the lifetime the server granted, counted from when the node got the token:
    // between the request and its answer (less a second the server's whole-second
    // expiry may cut).
    let refresh = volumes.token_refresh_at().expect("a refresh time");
    let at_80 = std::time::Duration::from_secs_f64(3607.0 * 0.8);
    let took = after.duration_since(before).expect("later");
    assert!(
        refresh >= before + at_80 - took - std::time::Duration::from_secs(1)
            && refresh <= after + at_80,
        "renewed at 80% of 3607 s: {refresh:?} is not within {before:?} .. {after:?} + {at_80:?}"
    );

    // Preparing again before then reuses the token; a forgotten pod gets a new one.
    let again = prepare(&created, &pod_dir, &api.client, &api.host_paths(), &tokens)
        .await
        .expect("prepare again");
    assert_eq!(read(&dir.join("token")), token);
    assert_eq!(again.token_refresh_at(), Some(refresh));
    tokens.forget_pod(created.metadata.uid.as_deref().expect("uid"));
    prepare(&created, &pod_dir, &api.client, &api.host_paths(), &tokens)
        .await
        .expect("prepare a third time");
    assert_ne!(read(&dir.join("token")), token);
}
