//! The in-memory ring of recently committed events that live watchers read from.
//!
//! The writer appends every committed event (in revision order, after the commit)
//! and evicts the oldest ones beyond a count and a byte bound. Because every
//! successful write takes the next revision, the ring covers a contiguous range
//! `(start, end]` and a watcher finds its position by arithmetic, not search.
//! Watchers whose cursor is older than `start` read the `events` table instead.
//!
//! A value is held once: the writer gives an event's `prev` the very bytes of the event
//! that wrote that value when the ring (or the batch) still holds it ([`Ring::value_at`]),
//! so a key written N times in a row costs N values, not 2N, and the byte bound counts
//! a shared `prev` as free.

use std::collections::VecDeque;
use std::sync::Arc;

use super::codec;
use crate::{Event, Revision};

/// Fixed per-event overhead counted against the byte bound (allocations, keys, revisions).
const EVENT_OVERHEAD: usize = 96;

/// Recent events, contiguous in revision.
#[derive(Debug)]
pub(crate) struct Ring {
    /// Every event at or below `start` is not in the ring.
    start: Revision,
    events: VecDeque<Arc<Event>>,
    /// What each event counts against `max_bytes` (decided when it was pushed).
    sizes: VecDeque<usize>,
    bytes: usize,
    max_events: usize,
    max_bytes: usize,
}

/// What a watcher finds when it looks for its next event in the ring.
#[derive(Debug)]
pub(crate) enum RingScan {
    /// The next event of the prefix after the cursor.
    Found(Arc<Event>),
    /// No event of the prefix in `(cursor, through]`; `through` is the ring's end.
    Exhausted { through: Revision },
    /// The cursor is older than the ring: events `(cursor, start]` must come from the table.
    Behind { start: Revision },
}

impl Ring {
    /// An empty ring whose next event will be `start + 1`.
    pub(crate) fn new(start: Revision, max_events: usize, max_bytes: usize) -> Self {
        Self {
            start,
            events: VecDeque::new(),
            sizes: VecDeque::new(),
            bytes: 0,
            max_events,
            max_bytes,
        }
    }

    /// Every event at or below this revision has left (or never entered) the ring.
    #[cfg(test)]
    pub(crate) fn start(&self) -> Revision {
        self.start
    }

    /// The revision of the newest event (or `start` when empty).
    pub(crate) fn end(&self) -> Revision {
        self.start + self.events.len() as Revision
    }

    /// The bytes the event at `revision` wrote under `key`, while the ring holds it: a
    /// later event's `prev` shares them instead of holding a copy.
    pub(crate) fn value_at(&self, revision: Revision, key: &str) -> Option<&bytes::Bytes> {
        let offset = usize::try_from(revision.checked_sub(self.start + 1)?).ok()?;
        match &**self.events.get(offset)? {
            Event::Put { kv, .. } if kv.key == key => Some(&kv.value),
            _ => None,
        }
    }

    /// Appends the next committed event and evicts the oldest beyond the bounds.
    /// An event that does not follow the ring's end restarts the ring at that event
    /// (cannot happen with a single writer; keeps the ring contiguous regardless).
    pub(crate) fn push(&mut self, event: Arc<Event>) {
        let revision = event.revision();
        if revision != self.end() + 1 {
            self.events.clear();
            self.sizes.clear();
            self.bytes = 0;
            self.start = revision - 1;
        }
        let size = self.size_in_ring(&event);
        self.bytes += size;
        self.sizes.push_back(size);
        self.events.push_back(event);
        while self.events.len() > self.max_events
            || (self.bytes > self.max_bytes && !self.events.is_empty())
        {
            self.pop_front();
        }
    }

    /// Drops every event at or below `revision` (after a compaction).
    pub(crate) fn trim_through(&mut self, revision: Revision) {
        while self.start < revision && !self.events.is_empty() {
            self.pop_front();
        }
        self.start = self.start.max(revision);
    }

    /// The first event after `cursor` whose key starts with `prefix`.
    pub(crate) fn scan(&self, cursor: Revision, prefix: &str) -> RingScan {
        if cursor < self.start {
            return RingScan::Behind { start: self.start };
        }
        let offset = usize::try_from(cursor - self.start).unwrap_or(usize::MAX);
        for event in self.events.iter().skip(offset) {
            if event.key().starts_with(prefix) {
                return RingScan::Found(Arc::clone(event));
            }
        }
        RingScan::Exhausted {
            through: self.end(),
        }
    }

    fn pop_front(&mut self) {
        if self.events.pop_front().is_some() {
            self.bytes -= self.sizes.pop_front().unwrap_or(0);
            self.start += 1;
        }
    }

    /// What `event` adds to the ring: its overhead, its key and the values it holds, less a
    /// `prev` that shares the bytes of an event the ring already holds.
    fn size_in_ring(&self, event: &Event) -> usize {
        let shared = match event {
            Event::Put {
                prev: Some(prev), ..
            } => self
                .value_at(prev.mod_revision, &prev.key)
                .is_some_and(|held| held.as_ptr() == prev.value.as_ptr())
                .then_some(prev.value.len()),
            _ => None,
        };
        Self::size_of(event) - shared.unwrap_or(0)
    }

    fn size_of(event: &Event) -> usize {
        EVENT_OVERHEAD + 2 * event.key().len() + codec::approx_values_len(event)
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::KeyValue;

    fn put(key: &str, revision: Revision) -> Arc<Event> {
        let kv = KeyValue {
            key: key.to_owned(),
            value: Bytes::from_static(b"0123456789"),
            create_revision: revision,
            mod_revision: revision,
        };
        Arc::new(Event::Put { kv, prev: None })
    }

    #[test]
    fn scan_finds_the_next_event_of_the_prefix_after_the_cursor() {
        let mut ring = Ring::new(10, 100, usize::MAX);
        ring.push(put("/a/1", 11));
        ring.push(put("/b/1", 12));
        ring.push(put("/a/2", 13));
        match ring.scan(10, "/a/") {
            RingScan::Found(event) => assert_eq!(event.revision(), 11),
            other => panic!("unexpected {other:?}"),
        }
        match ring.scan(11, "/a/") {
            RingScan::Found(event) => assert_eq!(event.revision(), 13),
            other => panic!("unexpected {other:?}"),
        }
        assert!(matches!(
            ring.scan(13, "/a/"),
            RingScan::Exhausted { through: 13 }
        ));
        assert!(matches!(
            ring.scan(12, "/c/"),
            RingScan::Exhausted { through: 13 }
        ));
        assert!(matches!(
            ring.scan(9, "/a/"),
            RingScan::Behind { start: 10 }
        ));
    }

    #[test]
    fn a_cursor_beyond_the_end_is_exhausted_at_the_end() {
        let ring = Ring::new(5, 10, usize::MAX);
        assert!(matches!(
            ring.scan(8, ""),
            RingScan::Exhausted { through: 5 }
        ));
    }

    #[test]
    fn count_bound_evicts_the_oldest_events() {
        let mut ring = Ring::new(0, 3, usize::MAX);
        for revision in 1..=5 {
            ring.push(put("/k", revision));
        }
        assert_eq!((ring.start(), ring.end()), (2, 5));
        assert!(matches!(ring.scan(1, ""), RingScan::Behind { start: 2 }));
    }

    #[test]
    fn byte_bound_evicts_the_oldest_events() {
        let one = Ring::size_of(&put("/k", 1));
        let mut ring = Ring::new(0, 100, one * 2);
        for revision in 1..=4 {
            ring.push(put("/k", revision));
        }
        assert_eq!((ring.start(), ring.end()), (2, 4));
    }

    #[test]
    fn a_prev_sharing_the_bytes_of_a_held_event_counts_once() {
        let first = put("/k", 1);
        let Event::Put { kv: held, .. } = Event::clone(&first) else {
            unreachable!()
        };
        let shared = Arc::new(Event::Put {
            kv: KeyValue {
                mod_revision: 2,
                ..held.clone()
            },
            prev: Some(held.clone()),
        });
        let copied = Arc::new(Event::Put {
            kv: KeyValue {
                mod_revision: 3,
                ..held.clone()
            },
            prev: Some(KeyValue {
                value: Bytes::copy_from_slice(&held.value),
                mod_revision: 2,
                ..held.clone()
            }),
        });
        let mut ring = Ring::new(0, 100, usize::MAX);
        ring.push(first);
        let one = ring.bytes;
        ring.push(shared);
        assert_eq!(ring.bytes, 2 * one, "a shared prev adds nothing");
        ring.push(copied);
        assert_eq!(ring.bytes, 3 * one + held.value.len(), "a copy counts");
        assert_eq!(ring.value_at(1, "/k").map(Bytes::len), Some(10));
        assert_eq!(ring.value_at(1, "/other"), None);
        assert_eq!(ring.value_at(4, "/k"), None);
        ring.trim_through(3);
        assert_eq!(ring.bytes, 0);
    }

    #[test]
    fn trimming_through_a_compacted_revision_moves_the_start() {
        let mut ring = Ring::new(0, 100, usize::MAX);
        for revision in 1..=4 {
            ring.push(put("/k", revision));
        }
        ring.trim_through(2);
        assert_eq!((ring.start(), ring.end()), (2, 4));
        ring.trim_through(4);
        assert_eq!((ring.start(), ring.end()), (4, 4));
        ring.push(put("/k", 5));
        assert_eq!((ring.start(), ring.end()), (4, 5));
    }

    #[test]
    fn a_non_contiguous_push_restarts_the_ring() {
        let mut ring = Ring::new(0, 100, usize::MAX);
        ring.push(put("/k", 1));
        ring.push(put("/k", 7));
        assert_eq!((ring.start(), ring.end()), (6, 7));
    }
}
