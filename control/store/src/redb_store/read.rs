//! Reads: point gets, prefix lists (at the latest or a past revision, paged) and the
//! history batches that watchers replay from the `events` table.
//!
//! Every read runs in one redb read transaction, i.e. on one consistent snapshot that
//! includes the counters in `meta`, so a concurrent commit or compaction can never
//! show a half-applied state.
//!
//! Listing at a past revision `R`: the snapshot holds the current state plus the log
//! entries `(R, current]`. A key untouched since `R` has its current value; for a key
//! changed after `R`, the `prev` of its first event after `R` is its value at `R`
//! (absent if that event created it). Merging the two key-ordered streams gives the
//! state at `R` in key order, so `start_after`/`limit` page it exactly like the latest
//! state.

use std::collections::{BTreeMap, VecDeque};
use std::ops::{Bound, ControlFlow};

use redb::{Database, ReadTransaction, ReadableDatabase};

use super::tables::{EVENTS, KV, META, read_counters};
use super::{backend, codec};
use crate::{Event, KeyValue, ListOptions, ListResult, Result, Revision, StoreError};

/// The latest value of `key`.
pub(super) fn get(db: &Database, key: &str) -> Result<Option<KeyValue>> {
    let txn = db.begin_read().map_err(backend)?;
    let kv = txn.open_table(KV).map_err(backend)?;
    match kv.get(key).map_err(backend)? {
        Some(bytes) => Ok(Some(codec::decode_kv(key, bytes.value()).map_err(backend)?)),
        None => Ok(None),
    }
}

/// Keys under a prefix at the latest or a past revision, paged.
pub(super) fn list(db: &Database, opts: &ListOptions) -> Result<ListResult> {
    let txn = db.begin_read().map_err(backend)?;
    let counters = read_counters(&txn.open_table(META).map_err(backend)?)?;
    let at = match opts.revision {
        None => counters.current,
        Some(requested) if requested < counters.compacted => {
            return Err(StoreError::Compacted {
                requested,
                compacted: counters.compacted,
            });
        }
        Some(requested) if requested > counters.current => {
            return Err(StoreError::FutureRevision {
                requested,
                current: counters.current,
            });
        }
        Some(requested) => requested,
    };
    let prefix = opts.prefix.as_str();
    // A `start_after` before the prefix means "from the start of the prefix".
    let start_after = opts.start_after.as_deref().filter(|after| *after >= prefix);
    let in_range =
        |key: &str| key.starts_with(prefix) && start_after.is_none_or(|after| key > after);

    let overrides = if at < counters.current {
        values_at(&txn, at, counters.current, &in_range)?
    } else {
        BTreeMap::new()
    };
    let mut overrides = overrides.into_iter().peekable();
    let mut page = Page::new(opts.limit);

    let kv = txn.open_table(KV).map_err(backend)?;
    let lower = match start_after {
        Some(after) => Bound::Excluded(after),
        None => Bound::Included(prefix),
    };
    for entry in kv
        .range::<&str>((lower, Bound::Unbounded))
        .map_err(backend)?
    {
        let (key, bytes) = entry.map_err(backend)?;
        let key = key.value();
        if !key.starts_with(prefix) {
            break;
        }
        // Keys that only existed at `at` (deleted since) sort in between current keys.
        while let Some((changed, _)) = overrides.peek()
            && changed.as_str() < key
        {
            if let Some((_, Some(old))) = overrides.next()
                && page.push(old).is_break()
            {
                return Ok(page.finish(at));
            }
        }
        let item = match overrides.next_if(|(changed, _)| changed == key) {
            Some((_, old)) => old,
            None => Some(codec::decode_kv(key, bytes.value()).map_err(backend)?),
        };
        if let Some(item) = item
            && page.push(item).is_break()
        {
            return Ok(page.finish(at));
        }
    }
    for (_, old) in overrides {
        if let Some(old) = old
            && page.push(old).is_break()
        {
            break;
        }
    }
    Ok(page.finish(at))
}

/// For every key in range changed in `(at, current]`: its value at `at` (None if absent).
fn values_at(
    txn: &ReadTransaction,
    at: Revision,
    current: Revision,
    in_range: &impl Fn(&str) -> bool,
) -> Result<BTreeMap<String, Option<KeyValue>>> {
    let events = txn.open_table(EVENTS).map_err(backend)?;
    let mut values = BTreeMap::new();
    let mut expected = at + 1;
    for entry in events.range(at + 1..=current).map_err(backend)? {
        let (revision, bytes) = entry.map_err(backend)?;
        let revision = revision.value();
        check_contiguous(revision, expected)?;
        expected += 1;
        let bytes = bytes.value();
        let key = codec::event_key(bytes).map_err(backend)?;
        if !in_range(key) || values.contains_key(key) {
            continue;
        }
        let before = match codec::decode_event(revision, bytes).map_err(backend)? {
            Event::Put { prev, .. } => prev,
            Event::Delete { prev, .. } => Some(prev),
        };
        values.insert(key.to_owned(), before);
    }
    check_contiguous(current + 1, expected)?;
    Ok(values)
}

/// A watcher's replay of the log from the table.
#[derive(Debug)]
pub(super) struct HistoryBatch {
    /// Events of the prefix in `(after, through]`, in revision order.
    pub(super) events: VecDeque<Event>,
    /// The revision through which the log was scanned.
    pub(super) through: Revision,
}

/// Reads the events of `prefix` in `(after, through]` (clamped to the current revision).
/// Fails with `WatcherTooSlow` when `after` has been compacted.
pub(super) fn history(
    db: &Database,
    prefix: &str,
    after: Revision,
    through: Revision,
) -> Result<HistoryBatch> {
    let txn = db.begin_read().map_err(backend)?;
    let counters = read_counters(&txn.open_table(META).map_err(backend)?)?;
    if after < counters.compacted {
        return Err(StoreError::WatcherTooSlow { revision: after });
    }
    let through = through.min(counters.current);
    let mut batch = HistoryBatch {
        events: VecDeque::new(),
        through: after.max(through),
    };
    if through <= after {
        return Ok(batch);
    }
    let log = txn.open_table(EVENTS).map_err(backend)?;
    let mut expected = after + 1;
    for entry in log.range(after + 1..=through).map_err(backend)? {
        let (revision, bytes) = entry.map_err(backend)?;
        let revision = revision.value();
        check_contiguous(revision, expected)?;
        expected += 1;
        let bytes = bytes.value();
        if codec::event_key(bytes)
            .map_err(backend)?
            .starts_with(prefix)
        {
            batch
                .events
                .push_back(codec::decode_event(revision, bytes).map_err(backend)?);
        }
    }
    check_contiguous(through + 1, expected)?;
    Ok(batch)
}

/// The retained log must hold every revision; a hole means the file is damaged.
fn check_contiguous(found: Revision, expected: Revision) -> Result<()> {
    if found == expected {
        Ok(())
    } else {
        Err(StoreError::Backend(
            format!("revision log is missing revision {expected} (found {found})").into(),
        ))
    }
}

/// Collects list items up to the limit and notices whether more follow.
struct Page {
    items: Vec<KeyValue>,
    limit: Option<usize>,
    more: bool,
}

impl Page {
    /// `Some(0)` means no limit, as in Kubernetes' `limit=0`.
    fn new(limit: Option<usize>) -> Self {
        Self {
            items: Vec::new(),
            limit: limit.filter(|limit| *limit > 0),
            more: false,
        }
    }

    fn push(&mut self, item: KeyValue) -> ControlFlow<()> {
        if self.limit.is_some_and(|limit| self.items.len() >= limit) {
            self.more = true;
            return ControlFlow::Break(());
        }
        self.items.push(item);
        ControlFlow::Continue(())
    }

    fn finish(self, revision: Revision) -> ListResult {
        ListResult {
            items: self.items,
            revision,
            more: self.more,
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    fn item(key: &str) -> KeyValue {
        KeyValue {
            key: key.to_owned(),
            value: Bytes::new(),
            create_revision: 1,
            mod_revision: 1,
        }
    }

    #[test]
    fn a_page_reports_more_only_when_an_item_is_left_out() {
        let mut page = Page::new(Some(2));
        assert!(page.push(item("/a")).is_continue());
        assert!(page.push(item("/b")).is_continue());
        assert!(!page.finish(3).more);

        let mut page = Page::new(Some(2));
        let _ = page.push(item("/a"));
        let _ = page.push(item("/b"));
        assert!(page.push(item("/c")).is_break());
        let result = page.finish(3);
        assert_eq!(
            (result.items.len(), result.more, result.revision),
            (2, true, 3)
        );
    }

    #[test]
    fn a_limit_of_zero_means_no_limit() {
        let mut page = Page::new(Some(0));
        for key in ["/a", "/b", "/c"] {
            assert!(page.push(item(key)).is_continue());
        }
        assert_eq!(page.finish(1).items.len(), 3);
    }

    #[test]
    fn a_hole_in_the_revision_log_is_a_backend_error() {
        assert!(check_contiguous(5, 5).is_ok());
        assert!(matches!(
            check_contiguous(7, 5),
            Err(StoreError::Backend(_))
        ));
    }
}
