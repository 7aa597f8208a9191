//! What one authorization decision costs, in process, without HTTP or TLS: the request's
//! attributes (`resolve_request`, which every authorization mode needs) and RBAC's decision
//! (`RbacAuthorizer::authorize`, what `--authorization-mode RBAC` adds) over the default
//! policy plus `BINDINGS` bindings to other users, for the user `wasmkube-bench authz` acts
//! as (bound to `edit` in its namespace). The benchmark measures the same through the API; this
//! isolates the part RBAC adds, to profile it (`perf record` on this binary) and compare
//! changes to the resolution.
//!
//! ```sh
//! cargo run --release -p wasmkube-apiserver --example authz_cost [BINDINGS] [DECISIONS]
//! ```

use std::error::Error;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::Method;
use serde_json::{Value, json};
use wasmkube_apiserver::authn::Identity;
use wasmkube_apiserver::authz::{Attributes, Authorizer, resolve_request};
use wasmkube_apiserver::rbac::{self, PolicyCache, RbacAuthorizer};
use wasmkube_apiserver::state::AppState;
use wasmkube_store::{RedbStore, Store, StoreConfig};

const NAMESPACE: &str = "authz-bench";
const RBAC_PREFIX: &str = "/registry/rbac.authorization.k8s.io";

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let mut args = std::env::args().skip(1);
    let bindings: usize = args.next().map_or(Ok(200), |a| a.parse())?;
    let decisions: u32 = args.next().map_or(Ok(200_000), |a| a.parse())?;

    let dir = tempfile::tempdir()?;
    let store: Arc<dyn Store> = RedbStore::open(StoreConfig::new(dir.path().join("store.redb")))?;
    let state = AppState::new(Arc::clone(&store));
    rbac::bootstrap(&state).await?;
    for i in 0..bindings {
        let name = format!("filler-{i}");
        let (key, namespace) = if i % 2 == 0 {
            (
                format!("{RBAC_PREFIX}/rolebindings/{NAMESPACE}/{name}"),
                NAMESPACE,
            )
        } else {
            (format!("{RBAC_PREFIX}/clusterrolebindings/{name}"), "")
        };
        let user = format!("someone-{i}");
        store
            .create(&key, binding(&name, namespace, "view", &user)?)
            .await?;
    }
    let key = format!("{RBAC_PREFIX}/rolebindings/{NAMESPACE}/bench-edit");
    store
        .create(&key, binding("bench-edit", NAMESPACE, "edit", "bench")?)
        .await?;

    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let cache = PolicyCache::start(Arc::clone(&store), async {
        let _ = stopped.await;
    })
    .await?;
    rbac::converge(&state, &cache).await?;
    let authorizer = RbacAuthorizer::new(cache);
    let user = Identity {
        user: "bench".into(),
        groups: vec!["system:authenticated".into()],
    };

    println!(
        "user \"bench\" bound to edit in {NAMESPACE}, {bindings} bindings to other users; \
         per request, best of 5 x {decisions}:"
    );
    let probe = format!("/api/v1/namespaces/{NAMESPACE}/configmaps/probe");
    let collection = format!("/api/v1/namespaces/{NAMESPACE}/configmaps");
    let secret = format!("/api/v1/namespaces/{NAMESPACE}/secrets/s");
    let cases = [
        ("GET a ConfigMap", Method::GET, probe.as_str()),
        ("POST a ConfigMap", Method::POST, collection.as_str()),
        ("DELETE a Secret", Method::DELETE, secret.as_str()),
        ("GET the nodes", Method::GET, "/api/v1/nodes"),
    ];
    println!("{:<16} {:>10} {:>10}", "", "attributes", "RBAC");
    for (label, method, path) in cases {
        // The best of five runs: the least disturbed by whatever else the machine does.
        let best = |measure: &dyn Fn() -> f64| (0..5).map(|_| measure()).fold(f64::MAX, f64::min);
        let attributes = best(&|| {
            let started = Instant::now();
            for _ in 0..decisions {
                std::hint::black_box(resolve_request(&method, path, ""));
            }
            started.elapsed().as_secs_f64() * 1e6 / f64::from(decisions)
        });
        let request = resolve_request(&method, path, "");
        let allowed = authorizer
            .authorize(&Attributes {
                user: &user,
                request: &request,
            })
            .is_allowed();
        let decision = best(&|| {
            let started = Instant::now();
            for _ in 0..decisions {
                std::hint::black_box(authorizer.authorize(&Attributes {
                    user: &user,
                    request: &request,
                }));
            }
            started.elapsed().as_secs_f64() * 1e6 / f64::from(decisions)
        });
        let verdict = if allowed { "allowed" } else { "denied" };
        println!("{label:<16} {attributes:>7.2} us {decision:>7.2} us  ({verdict})");
    }
    let _ = stop.send(());
    Ok(())
}

/// A binding of the ClusterRole `role` to the user `user`, as stored JSON.
fn binding(name: &str, namespace: &str, role: &str, user: &str) -> serde_json::Result<Bytes> {
    let mut metadata = json!({ "name": name });
    if !namespace.is_empty() {
        metadata["namespace"] = Value::from(namespace);
    }
    let object = json!({
        "metadata": metadata,
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
        "subjects": [{"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": user}],
    });
    Ok(Bytes::from(serde_json::to_vec(&object)?))
}
