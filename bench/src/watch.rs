//! Watch fan-out: how long an event takes from a write to every watcher.
//!
//! `watchers` clients (each its own `kube::Client` and connection) watch the ConfigMaps of
//! an empty namespace from the resourceVersion of a list made before they start. Once all
//! watches are open, one writer makes `events` writes (first creates, then merge patches of
//! the same objects), paced at `rate` writes per second. Every write carries two
//! annotations: its sequence number and the time just before it was sent, on a monotonic
//! clock shared by the whole process. A watcher records `arrival - sent` for each event and
//! ticks the sequence number off, so lost and duplicated events are counted as well.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures::{StreamExt, future::try_join_all};
use hdrhistogram::Histogram;
use indicatif::ProgressBar;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use serde_json::json;

use super::creates::bench_config_map;
use super::report::{LatencySummary, WatchResult, latency_histogram, record};
use super::target::Target;

/// Annotation with the write's sequence number (0-based).
const SEQ_ANNOTATION: &str = "bench.wasmkube.io/seq";
/// Annotation with the send time, in nanoseconds since the run's clock base.
const SENT_ANNOTATION: &str = "bench.wasmkube.io/sent-ns";
/// How long watchers may take to open their watches.
const OPEN_TIMEOUT: Duration = Duration::from_secs(60);
/// How long after the last write the watchers may take to receive everything.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(60);
/// Server-side watch timeout; a watch that ends is resumed from its last resourceVersion.
const WATCH_TIMEOUT_SECS: u32 = 290;

/// What the watch benchmark is asked to do.
#[derive(Clone, Copy, Debug)]
pub(crate) struct WatchPlan {
    /// Concurrent watches.
    pub(crate) watchers: usize,
    /// Writes to make.
    pub(crate) events: usize,
    /// Writes per second; `None` for back to back.
    pub(crate) rate: Option<u32>,
}

/// What one watcher saw.
struct WatcherTally {
    latency: Histogram<u64>,
    delivered: u64,
    unexpected: u64,
}

/// The annotations of write number `seq`, sent at `sent` after `base`.
fn stamp(seq: usize, base: Instant) -> BTreeMap<String, String> {
    BTreeMap::from([
        (SEQ_ANNOTATION.to_owned(), seq.to_string()),
        (
            SENT_ANNOTATION.to_owned(),
            base.elapsed().as_nanos().to_string(),
        ),
    ])
}

/// Reads back `(seq, sent)` from an object's annotations.
fn read_stamp(object: &ConfigMap) -> Option<(usize, Duration)> {
    let annotations = object.metadata.annotations.as_ref()?;
    let seq = annotations.get(SEQ_ANNOTATION)?.parse().ok()?;
    let sent: u64 = annotations.get(SENT_ANNOTATION)?.parse().ok()?;
    Some((seq, Duration::from_nanos(sent)))
}

/// Runs the watch benchmark in `namespace` (which must hold no ConfigMaps yet).
pub(crate) async fn run(
    target: &Target,
    namespace: &str,
    plan: WatchPlan,
    progress: &ProgressBar,
) -> anyhow::Result<WatchResult> {
    let writer: Api<ConfigMap> = Api::namespaced(target.new_client()?, namespace);
    let start_version = writer
        .list_metadata(&ListParams::default())
        .await
        .context("listing the watch namespace")?
        .metadata
        .resource_version
        .unwrap_or_else(|| "0".to_owned());

    let base = Instant::now();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let (open_tx, mut open_rx) =
        tokio::sync::mpsc::channel::<anyhow::Result<()>>(plan.watchers.max(1));
    let mut tasks = Vec::with_capacity(plan.watchers);
    for _ in 0..plan.watchers {
        let api: Api<ConfigMap> = Api::namespaced(target.new_client()?, namespace);
        let (version, progress, open_tx, stop_rx) = (
            start_version.clone(),
            progress.clone(),
            open_tx.clone(),
            stop_rx.clone(),
        );
        tasks.push(tokio::spawn(watch_one(
            api,
            version,
            plan.events,
            base,
            open_tx,
            stop_rx,
            progress,
        )));
    }
    drop(open_tx);
    let opened = tokio::time::timeout(OPEN_TIMEOUT, async {
        for _ in 0..plan.watchers {
            match open_rx.recv().await {
                Some(result) => result?,
                None => bail!("a watcher ended before its watch was open"),
            }
        }
        anyhow::Ok(())
    })
    .await;
    match opened {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            let _ = stop_tx.send(true);
            return Err(e.context("opening the watches"));
        }
        Err(_) => {
            let _ = stop_tx.send(true);
            bail!(
                "the {} watches were not all open within {OPEN_TIMEOUT:?}",
                plan.watchers
            );
        }
    }

    let write = write_events(&writer, plan, base).await;
    // Give the watchers time to drain, then stop whoever still waits for lost events.
    let drain_deadline = Instant::now() + DRAIN_TIMEOUT;
    while !tasks.iter().all(|t| t.is_finished()) && Instant::now() < drain_deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = stop_tx.send(true);
    let tallies = try_join_all(tasks)
        .await
        .context("a watcher task panicked")?;
    let write = write?;

    let mut latency = latency_histogram();
    let (mut delivered, mut unexpected) = (0, 0);
    for tally in tallies {
        let tally = tally?;
        latency
            .add(&tally.latency)
            .context("merging latency histograms")?;
        delivered += tally.delivered;
        unexpected += tally.unexpected;
    }
    Ok(WatchResult {
        watchers: plan.watchers,
        events: plan.events,
        rate: plan.rate,
        delivered,
        unexpected,
        delivery: LatencySummary::of(&latency),
        write,
    })
}

/// Makes the writes: creates of `w-0..`, then merge patches of the same objects.
async fn write_events(
    api: &Api<ConfigMap>,
    plan: WatchPlan,
    base: Instant,
) -> anyhow::Result<LatencySummary> {
    let objects = plan.events.div_ceil(2);
    let mut ticker = plan.rate.map(|rate| {
        let mut interval = tokio::time::interval(Duration::from_secs(1) / rate.max(1));
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        interval
    });
    let mut latency = latency_histogram();
    for seq in 0..plan.events {
        if let Some(ticker) = ticker.as_mut() {
            ticker.tick().await;
        }
        let sent = Instant::now();
        if seq < objects {
            let mut object = bench_config_map(format!("w-{seq}"));
            object.metadata.annotations = Some(stamp(seq, base));
            api.create(&PostParams::default(), &object)
                .await
                .with_context(|| format!("watch benchmark write {seq} (create)"))?;
        } else {
            let patch = json!({ "metadata": { "annotations": stamp(seq, base) } });
            api.patch(
                &format!("w-{}", seq - objects),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
            .with_context(|| format!("watch benchmark write {seq} (patch)"))?;
        }
        record(&mut latency, sent.elapsed());
    }
    Ok(LatencySummary::of(&latency))
}

/// One watcher: opens its watch, reports that on `open`, then records every event until it
/// has seen `events` distinct writes or `stop` turns true. A watch the server ends is resumed
/// from the last resourceVersion seen.
async fn watch_one(
    api: Api<ConfigMap>,
    mut version: String,
    events: usize,
    base: Instant,
    open: tokio::sync::mpsc::Sender<anyhow::Result<()>>,
    mut stop: tokio::sync::watch::Receiver<bool>,
    progress: ProgressBar,
) -> anyhow::Result<WatcherTally> {
    let mut tally = WatcherTally {
        latency: latency_histogram(),
        delivered: 0,
        unexpected: 0,
    };
    let mut seen = vec![false; events];
    let params = WatchParams::default().timeout(WATCH_TIMEOUT_SECS);
    let mut open = Some(open);
    while tally.delivered < events as u64 {
        let stream = match api.watch(&params, &version).await {
            Ok(stream) => stream,
            Err(e) => {
                let e = anyhow::Error::new(e).context("opening a watch");
                if let Some(open) = open.take() {
                    let _ = open.send(Err(e)).await;
                    return Ok(tally);
                }
                return Err(e);
            }
        };
        if let Some(open) = open.take() {
            let _ = open.send(Ok(())).await;
        }
        let mut stream = std::pin::pin!(stream);
        loop {
            let event = tokio::select! {
                event = stream.next() => event,
                _ = stop.wait_for(|stopped| *stopped) => return Ok(tally),
            };
            let object = match event {
                None => break,
                Some(Ok(WatchEvent::Added(object) | WatchEvent::Modified(object))) => object,
                Some(Ok(WatchEvent::Bookmark(bookmark))) => {
                    version = bookmark.metadata.resource_version;
                    continue;
                }
                Some(Ok(WatchEvent::Deleted(_))) => {
                    tally.unexpected += 1;
                    continue;
                }
                Some(Ok(WatchEvent::Error(status))) => bail!("the watch failed: {status:?}"),
                Some(Err(e)) => {
                    return Err(anyhow::Error::new(e).context("reading the watch stream"));
                }
            };
            let arrived = base.elapsed();
            if let Some(v) = &object.metadata.resource_version {
                version.clone_from(v);
            }
            match read_stamp(&object) {
                Some((seq, sent)) if seq < events && !seen[seq] => {
                    seen[seq] = true;
                    record(&mut tally.latency, arrived.saturating_sub(sent));
                    tally.delivered += 1;
                    progress.inc(1);
                }
                _ => tally.unexpected += 1,
            }
            if tally.delivered == events as u64 {
                break;
            }
        }
    }
    Ok(tally)
}

/// Shares one watch plan's progress bar length.
pub(crate) fn expected_deliveries(plan: WatchPlan) -> u64 {
    (plan.watchers as u64).saturating_mul(plan.events as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stamp_reads_back_as_its_sequence_number_and_send_time() {
        let base = Instant::now();
        let mut object = bench_config_map("w-3".to_owned());
        object.metadata.annotations = Some(stamp(3, base));
        let (seq, sent) = read_stamp(&object).expect("stamp");
        assert_eq!(seq, 3);
        assert!(sent <= base.elapsed());
    }

    #[test]
    fn an_object_without_a_stamp_is_not_counted() {
        assert_eq!(read_stamp(&bench_config_map("x".to_owned())), None);
    }

    #[test]
    fn expected_deliveries_is_watchers_times_events() {
        let plan = WatchPlan {
            watchers: 100,
            events: 500,
            rate: None,
        };
        assert_eq!(expected_deliveries(plan), 50_000);
    }
}
