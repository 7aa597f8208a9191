//! Watchers: one cursor per watcher over the shared ring, with replay from the
//! `events` table for whatever the ring no longer (or not yet) holds.
//!
//! A watcher's state is its cursor (every event of its prefix up to the cursor has
//! been delivered), a small buffer of events read from the table and a receiver of the
//! writer's "latest revision" notifications. `next` first drains the buffer, then
//! scans the ring from the cursor; if the cursor is older than the ring it reads the
//! next chunk of the log from the table (on the blocking pool), and if the ring is
//! exhausted it waits for the writer's next publication. The table and the ring hold
//! the same contiguous revisions, the cursor only moves past revisions actually
//! scanned, so replay hands over to live events with no gap and no duplicate.
//!
//! Cancel safety: the state only changes between awaits, and the awaits (a blocking
//! table read whose result is applied after it completes, `watch::Receiver::changed`)
//! lose nothing when dropped: a dropped table read is simply done again.
//!
//! Fan-out: all watchers share the ring behind a read lock and one `tokio::sync::watch`
//! channel; a commit costs one notification, and each watcher scans the new events
//! once, so a thousand watchers cost a thousand short scans per batch, not per event.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use async_trait::async_trait;
use tokio::sync::watch;

use super::ring::RingScan;
use super::{Shared, backend, read};
use crate::{Event, Result, Revision, StoreError, Watch};

/// The most revisions replayed from the table in one read.
const HISTORY_CHUNK: Revision = 1024;

/// Why a watch ended for good.
#[derive(Clone, Copy, Debug)]
enum Ended {
    /// Events after this revision were compacted before the watcher read them.
    TooSlow(Revision),
    /// The store shut down and every committed event was delivered.
    Closed,
}

/// A watch of one prefix on a [`RedbStore`](super::RedbStore).
pub(super) struct RedbWatch {
    shared: Arc<Shared>,
    prefix: String,
    /// Every event of the prefix at or below this revision has been delivered.
    cursor: Revision,
    /// Events read from the table and not delivered yet.
    pending: VecDeque<Event>,
    /// The table was scanned through this revision (meaningful once `pending` is drained).
    pending_through: Revision,
    notify: watch::Receiver<Revision>,
    ended: Option<Ended>,
}

impl RedbWatch {
    /// A watcher of `prefix` that will deliver every event after `after`.
    pub(super) fn new(shared: Arc<Shared>, prefix: &str, after: Revision) -> Self {
        let notify = shared.notify.subscribe();
        Self {
            shared,
            prefix: prefix.to_owned(),
            cursor: after,
            pending: VecDeque::new(),
            pending_through: after,
            notify,
            ended: None,
        }
    }

    /// Replays `(cursor, through]` from the table into `pending`.
    async fn replay(&mut self, through: Revision) -> Result<()> {
        let shared = Arc::clone(&self.shared);
        let prefix = self.prefix.clone();
        let after = self.cursor;
        let through = through.min(after.saturating_add(HISTORY_CHUNK));
        let batch = tokio::task::spawn_blocking(move || {
            let db = shared.db()?;
            read::history(&db, &prefix, after, through).map_err(|e| shared.read_error(e))
        })
        .await
        .map_err(backend)?;
        match batch {
            Ok(batch) => {
                self.pending = batch.events;
                self.pending_through = batch.through;
                Ok(())
            }
            Err(StoreError::WatcherTooSlow { revision }) => {
                self.ended = Some(Ended::TooSlow(revision));
                Ok(())
            }
            Err(error) => Err(error),
        }
    }
}

#[async_trait]
impl Watch for RedbWatch {
    async fn next(&mut self) -> Result<Event> {
        loop {
            match self.ended {
                Some(Ended::TooSlow(revision)) => {
                    return Err(StoreError::WatcherTooSlow { revision });
                }
                Some(Ended::Closed) => return Err(StoreError::Closed),
                None => {}
            }
            if let Some(event) = self.pending.pop_front() {
                self.cursor = event.revision();
                return Ok(event);
            }
            self.cursor = self.cursor.max(self.pending_through);
            // Read before scanning: the writer publishes its last events before it marks
            // the store closed, so a scan after seeing the mark misses nothing.
            let closed = self.shared.closed.load(Ordering::Acquire);
            // Mark the latest notification as seen *before* scanning, so a publication
            // that lands after the scan wakes the wait below.
            self.notify.borrow_and_update();
            let scan = self.shared.ring_read().scan(self.cursor, &self.prefix);
            match scan {
                RingScan::Found(event) => {
                    self.cursor = event.revision();
                    return Ok(Event::clone(&event));
                }
                RingScan::Behind { start } => {
                    self.replay(start).await?;
                    continue;
                }
                RingScan::Exhausted { through } => self.cursor = self.cursor.max(through),
            }
            if closed {
                self.ended = Some(Ended::Closed);
                continue;
            }
            if self.notify.changed().await.is_err() {
                self.ended = Some(Ended::Closed);
            }
        }
    }

    fn progress(&self) -> Revision {
        if self.pending.is_empty() {
            self.cursor.max(self.pending_through)
        } else {
            self.cursor
        }
    }
}
