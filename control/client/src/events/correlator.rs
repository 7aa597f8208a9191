//! The event correlator of client-go's `tools/record` (`events_cache.go`): what happens to an
//! Event between the caller and the apiserver. Pure: no I/O, the time is an argument.
//!
//! Three steps, in client-go's order, each keeping an LRU cache of 4,096 entries:
//! 1. **Aggregation**: Events that differ only in their message (same source, involved
//!    object, type, reason and reporter) are *similar*. Once 10 distinct messages were seen
//!    within 10 minutes of each other, further similar Events are combined into one Event
//!    whose message is `(combined from similar events): <latest message>`, counted up like
//!    a series.
//! 2. **De-duplication** (series): an Event equal to an earlier one (message and field path
//!    included) is not a new object: the earlier one gets `count + 1`, a new `lastTimestamp`
//!    (and message), written as a PATCH.
//! 3. **Spam filtering**: a token bucket per source and involved object, 25 Events at once
//!    and then one per 5 minutes; Events beyond it are skipped. Counting happened before, so
//!    the next Event that passes carries the full count.

use std::collections::HashSet;
use std::num::NonZeroUsize;
use std::time::Duration;

use k8s_openapi::api::core::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use lru::LruCache;

use super::event_name;

/// The message prefix of a combined Event (client-go's `EventAggregatorByReasonMessageFunc`).
pub const COMBINED_PREFIX: &str = "(combined from similar events): ";

/// client-go's defaults (`defaultAggregateMaxEvents`, `defaultSpamBurst`, ...).
#[derive(Clone, Debug)]
pub(crate) struct CorrelatorOptions {
    /// Distinct messages of similar Events before they are combined (10).
    pub(crate) max_similar: usize,
    /// Similar Events further apart than this start afresh (10 minutes).
    pub(crate) similar_interval: Duration,
    /// Events a source may write about one object at once (25).
    pub(crate) spam_burst: u32,
    /// One more Event per this long once the burst is spent (5 minutes).
    pub(crate) spam_refill: Duration,
    /// Entries per cache (4,096).
    pub(crate) cache_size: NonZeroUsize,
}

impl Default for CorrelatorOptions {
    fn default() -> Self {
        CorrelatorOptions {
            max_similar: 10,
            similar_interval: Duration::from_secs(600),
            spam_burst: 25,
            spam_refill: Duration::from_secs(300),
            cache_size: NonZeroUsize::new(4096).unwrap_or(NonZeroUsize::MIN),
        }
    }
}

/// One Event write.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Write {
    /// The whole Event (a patch falls back to creating it when the Event is gone).
    pub(crate) event: Event,
    /// A repeat: PATCH `count`, `lastTimestamp` and `message` of the Event named
    /// `event.metadata.name`.
    pub(crate) patch: bool,
}

impl Write {
    /// The Event's namespace and name, which identify its series.
    pub(crate) fn key(&self) -> (String, String) {
        (
            self.event.metadata.namespace.clone().unwrap_or_default(),
            self.event.metadata.name.clone().unwrap_or_default(),
        )
    }
}

/// Similar Events seen recently.
#[derive(Debug)]
struct Similar {
    messages: HashSet<String>,
    last: Timestamp,
}

/// The Event a series writes to.
#[derive(Debug)]
struct Series {
    name: String,
    count: i32,
    first: Option<Time>,
}

/// A token bucket (client-go's `flowcontrol.NewTokenBucketRateLimiter`), hand-written: the
/// rate-limiting crates are built for shared limiters over `Instant`s, not thousands of
/// tiny per-object buckets on a given clock.
#[derive(Debug)]
struct TokenBucket {
    tokens: f64,
    at: Timestamp,
}

impl TokenBucket {
    fn try_accept(&mut self, now: Timestamp, burst: u32, refill: Duration) -> bool {
        let elapsed = now.duration_since(self.at).as_secs_f64().max(0.0);
        let refilled = elapsed / refill.as_secs_f64().max(f64::MIN_POSITIVE);
        self.tokens = (self.tokens + refilled).min(f64::from(burst));
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// The correlator of one recorder. See the module documentation.
#[derive(Debug)]
pub(crate) struct Correlator {
    options: CorrelatorOptions,
    similar: LruCache<String, Similar>,
    series: LruCache<String, Series>,
    spam: LruCache<String, TokenBucket>,
}

/// Joins key parts with a separator no Kubernetes name contains.
fn key(parts: &[&str]) -> String {
    parts.join("\u{1f}")
}

fn s(value: &Option<String>) -> &str {
    value.as_deref().unwrap_or("")
}

/// The source and involved object (client-go's `getSpamKey`).
fn spam_key(e: &Event) -> String {
    let source = e.source.clone().unwrap_or_default();
    let o = &e.involved_object;
    key(&[
        s(&source.component),
        s(&source.host),
        s(&o.kind),
        s(&o.namespace),
        s(&o.name),
        s(&o.uid),
        s(&o.api_version),
    ])
}

/// What makes Events similar (`EventAggregatorByReasonFunc`): all but the message.
fn similar_key(e: &Event) -> String {
    key(&[
        &spam_key(e),
        s(&e.type_),
        s(&e.reason),
        s(&e.reporting_component),
        s(&e.reporting_instance),
    ])
}

/// What makes an Event a repeat (`getEventKey`): also the field path and message.
fn series_key(e: &Event) -> String {
    key(&[
        &spam_key(e),
        s(&e.involved_object.field_path),
        s(&e.type_),
        s(&e.reason),
        s(&e.message),
    ])
}

impl Correlator {
    pub(crate) fn new(options: CorrelatorOptions) -> Self {
        let size = options.cache_size;
        Correlator {
            options,
            similar: LruCache::new(size),
            series: LruCache::new(size),
            spam: LruCache::new(size),
        }
    }

    /// Aggregates, counts and filters `event` (a fresh Event: count 1, its own name),
    /// recorded at `now`: the write to make, or `None` for spam.
    pub(crate) fn correlate(&mut self, event: Event, now: Timestamp) -> Option<Write> {
        let (event, series_key) = self.aggregate(event, now);
        let write = self.observe(event, series_key);
        let burst = self.options.spam_burst;
        let refill = self.options.spam_refill;
        let bucket = self
            .spam
            .get_or_insert_mut(spam_key(&write.event), || TokenBucket {
                tokens: f64::from(burst),
                at: now,
            });
        bucket.try_accept(now, burst, refill).then_some(write)
    }

    /// Step 1: the Event as is, or the combined Event of its similar ones; and the key of
    /// the series it belongs to.
    fn aggregate(&mut self, event: Event, now: Timestamp) -> (Event, String) {
        let interval =
            SignedDuration::try_from(self.options.similar_interval).unwrap_or(SignedDuration::MAX);
        let similar_key = similar_key(&event);
        let message = event.message.clone().unwrap_or_default();
        let record = self
            .similar
            .get_or_insert_mut(similar_key.clone(), || Similar {
                messages: HashSet::new(),
                last: now,
            });
        if now.duration_since(record.last) > interval {
            record.messages.clear();
        }
        record.messages.insert(message.clone());
        record.last = now;
        if record.messages.len() < self.options.max_similar {
            let key = series_key(&event);
            return (event, key);
        }
        // Keep the set at its bound: forget one message (any, as client-go's `PopAny`).
        if let Some(any) = record.messages.iter().next().cloned() {
            record.messages.remove(&any);
        }
        let name = event.involved_object.name.clone().unwrap_or_default();
        let combined = Event {
            metadata: ObjectMeta {
                name: Some(event_name(&name, now)),
                namespace: event.metadata.namespace.clone(),
                ..ObjectMeta::default()
            },
            message: Some(format!("{COMBINED_PREFIX}{message}")),
            count: Some(1),
            first_timestamp: Some(Time(now)),
            last_timestamp: Some(Time(now)),
            ..event
        };
        (combined, similar_key)
    }

    /// Step 2: a repeat of a series becomes a patch of its Event.
    fn observe(&mut self, mut event: Event, series_key: String) -> Write {
        let mut patch = false;
        match self.series.get_mut(&series_key) {
            Some(series) if series.count > 0 => {
                series.count = series.count.saturating_add(1);
                event.metadata.name = Some(series.name.clone());
                event.first_timestamp = series.first.clone();
                event.count = Some(series.count);
                patch = true;
            }
            _ => {
                self.series.put(
                    series_key,
                    Series {
                        name: event.metadata.name.clone().unwrap_or_default(),
                        count: event.count.unwrap_or(1),
                        first: event.first_timestamp.clone(),
                    },
                );
            }
        }
        Write { event, patch }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{EventSource, ObjectReference};

    fn at(secs: i64) -> Timestamp {
        Timestamp::UNIX_EPOCH
            .checked_add(SignedDuration::from_secs(1_700_000_000 + secs))
            .unwrap_or(Timestamp::UNIX_EPOCH)
    }

    fn event(object: &str, reason: &str, message: &str, now: Timestamp) -> Event {
        Event {
            metadata: ObjectMeta {
                name: Some(event_name(object, now)),
                namespace: Some("default".into()),
                ..ObjectMeta::default()
            },
            involved_object: ObjectReference {
                kind: Some("Pod".into()),
                name: Some(object.into()),
                namespace: Some("default".into()),
                uid: Some(format!("uid-{object}")),
                api_version: Some("v1".into()),
                ..ObjectReference::default()
            },
            reason: Some(reason.into()),
            message: Some(message.into()),
            type_: Some("Normal".into()),
            source: Some(EventSource {
                component: Some("test".into()),
                host: None,
            }),
            count: Some(1),
            first_timestamp: Some(Time(now)),
            last_timestamp: Some(Time(now)),
            ..Event::default()
        }
    }

    fn write(c: Option<Write>) -> Write {
        c.expect("the event was not filtered as spam")
    }

    #[test]
    fn a_repeated_event_patches_the_first_one_with_a_growing_count() {
        let mut c = Correlator::new(CorrelatorOptions::default());
        let first = write(c.correlate(event("p", "BackOff", "m", at(0)), at(0)));
        assert!(!first.patch);
        let second = write(c.correlate(event("p", "BackOff", "m", at(5)), at(5)));
        assert!(second.patch);
        assert_eq!(second.event.metadata.name, first.event.metadata.name);
        assert_eq!(second.event.count, Some(2));
        assert_eq!(second.event.first_timestamp, Some(Time(at(0))));
        assert_eq!(second.event.last_timestamp, Some(Time(at(5))));
        let third = write(c.correlate(event("p", "BackOff", "m", at(9)), at(9)));
        assert_eq!(third.event.count, Some(3));
    }

    #[test]
    fn events_about_other_objects_or_with_other_field_paths_are_other_series() {
        let mut c = Correlator::new(CorrelatorOptions::default());
        assert!(!write(c.correlate(event("p", "Started", "m", at(0)), at(0))).patch);
        assert!(!write(c.correlate(event("q", "Started", "m", at(0)), at(0))).patch);
        let mut container = event("p", "Started", "m", at(1));
        container.involved_object.field_path = Some("spec.containers{c}".into());
        assert!(!write(c.correlate(container, at(1))).patch);
    }

    #[test]
    fn the_tenth_distinct_message_of_similar_events_is_combined() {
        let mut c = Correlator::new(CorrelatorOptions::default());
        for i in 0..9 {
            let w = write(c.correlate(
                event("rs", "SuccessfulCreate", &format!("pod {i}"), at(i)),
                at(i),
            ));
            assert!(!w.patch);
            assert_eq!(
                w.event.message.as_deref(),
                Some(format!("pod {i}").as_str())
            );
        }
        let tenth = write(c.correlate(event("rs", "SuccessfulCreate", "pod 9", at(9)), at(9)));
        assert!(!tenth.patch, "the combined event is created once");
        assert_eq!(
            tenth.event.message.as_deref(),
            Some("(combined from similar events): pod 9")
        );
        assert_eq!(tenth.event.count, Some(1));
        let eleventh =
            write(c.correlate(event("rs", "SuccessfulCreate", "pod 10", at(10)), at(10)));
        assert!(eleventh.patch, "then counted up");
        assert_eq!(eleventh.event.metadata.name, tenth.event.metadata.name);
        assert_eq!(eleventh.event.count, Some(2));
        assert_eq!(
            eleventh.event.message.as_deref(),
            Some("(combined from similar events): pod 10")
        );
    }

    #[test]
    fn similar_events_more_than_ten_minutes_apart_start_afresh() {
        let mut c = Correlator::new(CorrelatorOptions::default());
        for i in 0..9 {
            c.correlate(event("rs", "R", &format!("m{i}"), at(i)), at(i));
        }
        let later = at(9 + 601);
        let w = write(c.correlate(event("rs", "R", "m9", later), later));
        assert_eq!(w.event.message.as_deref(), Some("m9"), "not combined");
    }

    #[test]
    fn events_with_another_reason_or_type_are_not_similar() {
        let mut c = Correlator::new(CorrelatorOptions::default());
        for i in 0..9 {
            c.correlate(event("rs", "A", &format!("m{i}"), at(i)), at(i));
        }
        let w = write(c.correlate(event("rs", "B", "m9", at(9)), at(9)));
        assert_eq!(w.event.message.as_deref(), Some("m9"));
        let mut warning = event("rs", "A", "m10", at(10));
        warning.type_ = Some("Warning".into());
        let w = write(c.correlate(warning, at(10)));
        assert_eq!(w.event.message.as_deref(), Some("m10"));
    }

    #[test]
    fn a_source_may_burst_25_events_about_an_object_then_one_per_5_minutes() {
        let mut c = Correlator::new(CorrelatorOptions::default());
        for i in 0..25 {
            let e = event("p", "Unhealthy", "probe failed", at(0));
            assert!(c.correlate(e, at(0)).is_some(), "event {i} of the burst");
        }
        let e = event("p", "Unhealthy", "probe failed", at(1));
        assert_eq!(c.correlate(e, at(1)), None);
        // Another object has its own bucket.
        assert!(
            c.correlate(event("q", "Unhealthy", "probe failed", at(1)), at(1))
                .is_some()
        );
        // Five minutes refill one token; the Event that passes carries every occurrence.
        let e = event("p", "Unhealthy", "probe failed", at(301));
        let w = write(c.correlate(e, at(301)));
        assert_eq!(w.event.count, Some(27));
        assert_eq!(
            c.correlate(event("p", "Unhealthy", "probe failed", at(302)), at(302)),
            None
        );
    }

    #[test]
    fn the_caches_forget_the_least_recently_used_entries() {
        let mut c = Correlator::new(CorrelatorOptions {
            cache_size: NonZeroUsize::new(2).unwrap_or(NonZeroUsize::MIN),
            ..CorrelatorOptions::default()
        });
        c.correlate(event("a", "R", "m", at(0)), at(0));
        c.correlate(event("b", "R", "m", at(0)), at(0));
        c.correlate(event("a", "R", "m", at(1)), at(1));
        c.correlate(event("c", "R", "m", at(2)), at(2));
        // `b` was the least recently used series: forgotten, so a new Event.
        assert!(!write(c.correlate(event("b", "R", "m", at(3)), at(3))).patch);
    }
}
