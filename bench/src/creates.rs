//! Durable creates per second through the HTTPS API.
//!
//! One level = `clients` concurrent clients, each a separate `kube::Client` (its own TLS
//! connection, like separate processes), that together create `creates` ConfigMaps (or
//! Secrets, [`BenchKind`]) as fast as the server acknowledges them. Each client sends one request at a time and takes the
//! next index from a shared counter, so fast clients do more of the work. Connections are
//! opened (a warm-up GET each) before the clock starts.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use anyhow::Context;
use futures::future::try_join_all;
use hdrhistogram::Histogram;
use indicatif::ProgressBar;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{Api, ApiResource, DynamicObject, ListParams, ObjectMeta, PostParams};

use super::report::{CreateResult, LatencySummary, latency_histogram, record};
use super::target::Target;

/// The payload every benchmark ConfigMap carries (about the size of a small real one).
pub(crate) const PAYLOAD: &str = "wasmkube-benchmark payload: a few hundred bytes of configuration, \
     comparable to a small real ConfigMap such as an nginx.conf snippet or feature flags. \
     0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxyz";

/// The ConfigMap the benchmark creates under `name`.
pub(crate) fn bench_config_map(name: String) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(name),
            labels: Some(BTreeMap::from([(
                "app.kubernetes.io/name".to_owned(),
                "wasmkube-bench".to_owned(),
            )])),
            ..ObjectMeta::default()
        },
        data: Some(BTreeMap::from([("payload".to_owned(), PAYLOAD.to_owned())])),
        ..ConfigMap::default()
    }
}

/// The Secret the benchmark creates under `name`: the ConfigMap's payload as secret data.
pub(crate) fn bench_secret(name: String) -> Secret {
    let config_map = bench_config_map(name);
    Secret {
        metadata: config_map.metadata,
        string_data: config_map.data,
        ..Secret::default()
    }
}

/// What a benchmark creates and reads: the kind is what the server does differently with
/// it (Secrets are encrypted at rest, ConfigMaps are not).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum BenchKind {
    ConfigMap,
    Secret,
}

impl BenchKind {
    /// The kind's name, for reports.
    pub(crate) fn name(self) -> &'static str {
        match self {
            BenchKind::ConfigMap => "ConfigMap",
            BenchKind::Secret => "Secret",
        }
    }

    /// The API of the kind in `namespace`.
    pub(crate) fn api(self, client: kube::Client, namespace: &str) -> Api<DynamicObject> {
        let resource = match self {
            BenchKind::ConfigMap => ApiResource::erase::<ConfigMap>(&()),
            BenchKind::Secret => ApiResource::erase::<Secret>(&()),
        };
        Api::namespaced_with(client, namespace, &resource)
    }

    /// The object the benchmark creates under `name`.
    pub(crate) fn object(self, name: String) -> anyhow::Result<DynamicObject> {
        let value = match self {
            BenchKind::ConfigMap => serde_json::to_value(bench_config_map(name)),
            BenchKind::Secret => serde_json::to_value(bench_secret(name)),
        }?;
        Ok(serde_json::from_value(value)?)
    }
}

/// What one client task measured.
struct ClientTally {
    latency: Histogram<u64>,
    creates: u64,
    errors: u64,
    first_error: Option<String>,
}

/// Runs one concurrency level of creates of `kind` against the API and returns its row.
pub(crate) async fn run_level(
    target: &Target,
    kind: BenchKind,
    namespace: &str,
    level: usize,
    clients: usize,
    creates: usize,
    progress: &ProgressBar,
) -> anyhow::Result<CreateResult> {
    let apis = try_join_all((0..clients).map(|_| async {
        let api = kind.api(target.new_client()?, namespace);
        api.list_metadata(&ListParams::default().limit(1))
            .await
            .with_context(|| format!("warm-up list of {}s failed", kind.name()))?;
        anyhow::Ok(api)
    }))
    .await?;

    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let tasks: Vec<_> = apis
        .into_iter()
        .map(|api| {
            let next = Arc::clone(&next);
            let progress = progress.clone();
            tokio::spawn(async move {
                let mut tally = ClientTally {
                    latency: latency_histogram(),
                    creates: 0,
                    errors: 0,
                    first_error: None,
                };
                let params = PostParams::default();
                loop {
                    let index = next.fetch_add(1, Ordering::Relaxed);
                    if index >= creates {
                        break;
                    }
                    let sent = Instant::now();
                    let created = match kind.object(format!("l{level}-c{clients}-{index}")) {
                        Ok(object) => api.create(&params, &object).await.map_err(Into::into),
                        Err(e) => Err(e),
                    };
                    match created {
                        Ok(_) => {
                            record(&mut tally.latency, sent.elapsed());
                            tally.creates += 1;
                        }
                        Err(e) => {
                            tally.errors += 1;
                            tally.first_error.get_or_insert_with(|| e.to_string());
                        }
                    }
                    progress.inc(1);
                }
                tally
            })
        })
        .collect();
    let tallies = try_join_all(tasks)
        .await
        .context("a create client task panicked")?;
    let elapsed = started.elapsed();

    let mut latency = latency_histogram();
    let (mut ok, mut errors, mut first_error) = (0, 0, None);
    for tally in tallies {
        latency
            .add(&tally.latency)
            .context("merging latency histograms")?;
        ok += tally.creates;
        errors += tally.errors;
        first_error = first_error.or(tally.first_error);
    }
    if let Some(message) = first_error {
        progress.suspend(|| {
            eprintln!("warning: {errors} creates failed at {clients} clients; first: {message}")
        });
    }
    Ok(CreateResult {
        path: "https api",
        clients,
        creates: ok,
        errors,
        elapsed,
        latency: LatencySummary::of(&latency),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bench_config_map_is_a_valid_small_object() {
        let object = bench_config_map("c8-17".to_owned());
        let json = serde_json::to_vec(&object).expect("serialises");
        assert!(
            json.len() < 1024,
            "payload should stay small: {} bytes",
            json.len()
        );
        assert_eq!(object.metadata.name.as_deref(), Some("c8-17"));
    }

    #[test]
    fn each_kind_makes_an_object_of_its_kind_with_the_payload() {
        for kind in [BenchKind::ConfigMap, BenchKind::Secret] {
            let object = kind.object("s-1".to_owned()).expect("an object");
            let types = object.types.expect("apiVersion and kind");
            assert_eq!(
                (types.api_version.as_str(), types.kind.as_str()),
                ("v1", kind.name())
            );
            let payload = match kind {
                BenchKind::ConfigMap => &object.data["data"]["payload"],
                BenchKind::Secret => &object.data["stringData"]["payload"],
            };
            assert_eq!(payload, PAYLOAD);
        }
    }
}
