//! The recorder's background task: takes recorded Events off the queue, correlates them, and
//! writes them with a bounded number of writes in flight.
//!
//! Writes of one series (one Event object) never overlap: while one is in flight, later
//! ones wait, and only the newest of them is written afterwards (each carries the whole
//! count, so the newest supersedes the rest). A burst of repeats thus costs two writes, not
//! one per repeat. A write is retried a few times when the apiserver could not answer
//! (transport errors, 5xx, 429) and dropped otherwise: a 404 or 403 (the namespace is gone
//! or being deleted) will not change by retrying. Events are best effort, as in Kubernetes.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use k8s_openapi::api::core::v1::Event;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams, PostParams};
use tokio::sync::mpsc;

use super::EventMetrics;
use super::correlator::{Correlator, Write};
use crate::status::{is_already_exists, is_not_found, is_retriable};

/// Attempts per write.
const ATTEMPTS: u32 = 3;
/// The pause before the first retry; doubles per retry.
const FIRST_RETRY: Duration = Duration::from_millis(500);

/// Why a write was given up.
pub(crate) type WriteResult = Result<(), kube::Error>;

/// A write in flight, resolving to its series.
type InFlight = Pin<Box<dyn Future<Output = ((String, String), WriteResult)> + Send>>;

/// Correlates the queue's Events and writes them with `write`, at most `max_in_flight` at
/// once, until every sender is gone and the last write is done.
pub(crate) async fn dispatch<W, F>(
    mut queue: mpsc::Receiver<Event>,
    mut correlator: Correlator,
    max_in_flight: usize,
    metrics: Arc<EventMetrics>,
    write: W,
) where
    W: Fn(Write) -> F,
    F: Future<Output = WriteResult> + Send + 'static,
{
    let mut in_flight: FuturesUnordered<InFlight> = FuturesUnordered::new();
    // Series with a write in flight, and the newest write waiting for it.
    let mut busy: HashMap<(String, String), Option<Write>> = HashMap::new();
    let start = |w: Write, in_flight: &mut FuturesUnordered<InFlight>| {
        let key = w.key();
        let fut = write(w);
        in_flight.push(Box::pin(async move { (key, fut.await) }));
    };
    let mut open = true;
    while open || !in_flight.is_empty() {
        tokio::select! {
            biased;
            Some((key, result)) = in_flight.next(), if !in_flight.is_empty() => {
                match result {
                    Ok(()) => EventMetrics::inc(&metrics.written),
                    Err(e) => {
                        EventMetrics::inc(&metrics.dropped);
                        tracing::debug!(error = %e, event = %key.1, "could not write an event");
                    }
                }
                if let Some(next) = busy.remove(&key).flatten() {
                    busy.insert(key, None);
                    start(next, &mut in_flight);
                }
            }
            event = queue.recv(), if open && in_flight.len() < max_in_flight => {
                let Some(event) = event else {
                    open = false;
                    continue;
                };
                let now = event.last_timestamp.as_ref().map_or_else(Timestamp::now, |t| t.0);
                match correlator.correlate(event, now) {
                    None => EventMetrics::inc(&metrics.spam_filtered),
                    Some(w) => match busy.get_mut(&w.key()) {
                        Some(waiting) => {
                            if waiting.replace(w).is_some() {
                                EventMetrics::inc(&metrics.coalesced);
                            }
                        }
                        None => {
                            busy.insert(w.key(), None);
                            start(w, &mut in_flight);
                        }
                    },
                }
            }
        }
    }
}

/// Writes one Event to the apiserver: creates it, or patches the count of its series; a
/// patch of a vanished Event creates it again, a create that finds its series' Event made
/// meanwhile patches it. Retried [`ATTEMPTS`] times while the apiserver cannot answer.
pub(crate) async fn write(client: kube::Client, w: Write) -> WriteResult {
    let namespace = w.event.metadata.namespace.clone().unwrap_or_default();
    let api: Api<Event> = Api::namespaced(client, &namespace);
    let mut attempt = 0;
    loop {
        match write_once(&api, &w).await {
            Ok(()) => return Ok(()),
            Err(e) if is_retriable(&e) && attempt + 1 < ATTEMPTS => {
                tokio::time::sleep(FIRST_RETRY * 2u32.pow(attempt)).await;
                attempt += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

async fn write_once(api: &Api<Event>, w: &Write) -> WriteResult {
    let name = w.event.metadata.name.clone().unwrap_or_default();
    let patch = || async {
        let body = serde_json::json!({
            "count": w.event.count,
            "lastTimestamp": w.event.last_timestamp,
            "message": w.event.message,
        });
        api.patch(&name, &PatchParams::default(), &Patch::Merge(&body))
            .await
            .map(drop)
    };
    if w.patch {
        match patch().await {
            Err(e) if is_not_found(&e) => {}
            other => return other,
        }
    }
    match api.create(&PostParams::default(), &w.event).await {
        Ok(_) => Ok(()),
        // Our first write of the series landed after all: count it up.
        Err(e) if is_already_exists(&e) && w.event.count.unwrap_or(1) > 1 => patch().await,
        Err(e) if is_already_exists(&e) => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::correlator::CorrelatorOptions;
    use std::sync::Mutex;
    use std::sync::atomic::Ordering;
    use tokio::sync::Semaphore;

    fn event(name: &str, message: &str) -> Event {
        let mut e = Event::default();
        e.metadata.name = Some(format!("{name}.{message}"));
        e.metadata.namespace = Some("default".into());
        e.involved_object.name = Some(name.into());
        e.reason = Some("R".into());
        e.message = Some(message.into());
        e.count = Some(1);
        e.last_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            Timestamp::now(),
        ));
        e
    }

    /// Runs the dispatcher with a fake writer that holds every write until `gate` lets it
    /// through; returns the writes in the order they started.
    async fn run(
        events: Vec<Event>,
        gate: Arc<Semaphore>,
        max: usize,
    ) -> (Vec<Write>, Arc<EventMetrics>) {
        let (tx, rx) = mpsc::channel(64);
        for e in events {
            tx.try_send(e).expect("room in the queue");
        }
        drop(tx);
        let seen = Arc::new(Mutex::new(Vec::new()));
        let metrics = Arc::new(EventMetrics::default());
        let log = seen.clone();
        dispatch(
            rx,
            Correlator::new(CorrelatorOptions::default()),
            max,
            metrics.clone(),
            move |w| {
                log.lock().expect("lock").push(w);
                let gate = gate.clone();
                async move {
                    let _ = gate.acquire().await.map(|p| p.forget());
                    Ok(())
                }
            },
        )
        .await;
        let writes = seen.lock().expect("lock").clone();
        (writes, metrics)
    }

    #[tokio::test]
    async fn repeats_while_a_write_is_in_flight_collapse_into_the_newest() {
        let gate = Arc::new(Semaphore::new(0));
        let opener = gate.clone();
        let events = (0..5).map(|_| event("p", "same")).collect();
        let task = tokio::spawn(run(events, gate, 8));
        tokio::task::yield_now().await;
        opener.add_permits(100);
        let (writes, metrics) = task.await.expect("dispatcher");
        assert_eq!(writes.len(), 2, "{writes:?}");
        assert!(!writes[0].patch);
        assert!(writes[1].patch);
        assert_eq!(writes[1].event.count, Some(5));
        assert_eq!(metrics.coalesced.load(Ordering::Relaxed), 3);
        assert_eq!(metrics.written.load(Ordering::Relaxed), 2);
    }

    #[tokio::test]
    async fn distinct_series_are_written_side_by_side_up_to_the_bound() {
        let gate = Arc::new(Semaphore::new(0));
        let opener = gate.clone();
        let events = (0..6).map(|i| event(&format!("p{i}"), "m")).collect();
        let task = tokio::spawn(run(events, gate, 2));
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        opener.add_permits(100);
        let (writes, metrics) = task.await.expect("dispatcher");
        assert_eq!(writes.len(), 6);
        assert!(writes.iter().all(|w| !w.patch));
        assert_eq!(metrics.written.load(Ordering::Relaxed), 6);
    }

    #[tokio::test]
    async fn spam_is_counted_and_not_written() {
        let gate = Arc::new(Semaphore::new(1000));
        let events = (0..30)
            .map(|i| event("p", &format!("m{}", i % 2)))
            .collect();
        let (writes, metrics) = run(events, gate, 1).await;
        assert_eq!(metrics.spam_filtered.load(Ordering::Relaxed), 5);
        assert!(writes.len() <= 25);
    }
}
