//! The single writer thread: group commit of every mutation.
//!
//! Clients send [`Request`]s over a channel and await a oneshot reply. The writer
//! blocks for the first request, drains whatever else is already queued (up to
//! [`MAX_BATCH`]), and applies the whole batch in ONE redb write transaction: each
//! request gets its own precondition check against the state as left by the requests
//! before it (create-if-absent, compare-and-swap on the mod revision, delete), and
//! each successful one the next revision and an entry in the `events` log. One
//! `commit` (one fsync, `Durability::Immediate`) then makes the batch durable; only
//! after it returns does the writer publish the events to the ring, advance the
//! published revision, wake watchers and reply. A failed precondition fails only its
//! own request; a storage failure fails the whole batch (nothing of it was committed).
//!
//! While clients wait for an fsync the next batch accumulates in the channel, so the
//! batch size adapts to the load: one request per commit when idle, dozens under
//! concurrency, which is what turns a few hundred fsyncs per second into thousands of
//! durable writes per second.
//!
//! Compaction also runs here, so it never races a write: `compact(rev)` only moves the
//! durable compacted mark; the history policy (max events, max age) moves it at most
//! once per [`MAINTENANCE_INTERVAL`]; and log entries at or below the mark are purged
//! in chunks of [`PURGE_CHUNK`], piggybacked on write batches or in idle transactions.
//! Readers never look below the mark (they read it in the same snapshot), so a
//! half-purged log is invisible.
//!
//! Disk space ([`super::space`]): creates and updates of a batch are refused while the
//! filesystem is nearly full; a batch that fails because redb's file failed (a full disk
//! during the commit) makes the writer reopen the file, and while the store is unhealthy
//! it tries again every [`MAINTENANCE_INTERVAL`].

use std::error::Error as StdError;
use std::fmt;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use redb::{Durability, ReadableTable, Table};
use tokio::sync::oneshot;

use super::ring::Ring;
use super::space::{Health, Space};
use super::tables::{self, EVENTS, KV, META};
use super::{Shared, codec, open_database};
use crate::{Event, KeyValue, Result, Revision, StoreError};

/// The most requests applied in one transaction.
const MAX_BATCH: usize = 1024;
/// How often the history policy is evaluated.
const MAINTENANCE_INTERVAL: Duration = Duration::from_secs(1);
/// The most log entries purged in one transaction.
const PURGE_CHUNK: Revision = 4096;
/// The most log entries whose age one maintenance pass looks at.
const AGE_SCAN_LIMIT: usize = 16_384;

type AnyError = Box<dyn StdError + Send + Sync>;

/// A mutation asked of the writer.
#[derive(Debug)]
pub(super) enum WriteOp {
    /// Create `key`; fails if present.
    Create { key: String, value: Bytes },
    /// Replace `key` if its mod revision is `expected`.
    Update {
        key: String,
        value: Bytes,
        expected: Revision,
    },
    /// Delete `key` (if `expected` is set, only when it matches).
    Delete {
        key: String,
        expected: Option<Revision>,
    },
    /// Move the compacted mark to `revision`.
    Compact { revision: Revision },
}

/// What a successful [`WriteOp`] did.
#[derive(Debug)]
pub(super) enum WriteOutcome {
    /// The key's new value.
    Put(KeyValue),
    /// The deleted value and the revision of the deletion.
    Deleted(KeyValue, Revision),
    /// The compacted mark is at least the requested revision.
    Compacted,
}

/// One request and where to send its result.
#[derive(Debug)]
pub(super) struct Request {
    pub(super) op: WriteOp,
    pub(super) reply: oneshot::Sender<Result<WriteOutcome>>,
}

/// The history bounds enforced by the writer.
#[derive(Clone, Copy, Debug)]
pub(super) struct HistoryPolicy {
    pub(super) max_events: usize,
    pub(super) max_age: Duration,
}

/// The writer's own view of the durable counters (it is the only one changing them).
pub(super) struct Writer {
    shared: Arc<Shared>,
    requests: Receiver<Request>,
    policy: HistoryPolicy,
    space: Space,
    current: Revision,
    compacted: Revision,
    /// Every log entry at or below this revision is physically gone.
    purged_through: Revision,
    last_timestamp_ms: u64,
    next_maintenance: Instant,
}

/// The effects of one batch, applied to the writer's state after a successful commit.
struct Applied {
    replies: Vec<Result<WriteOutcome>>,
    /// The revision before the batch's first event.
    base: Revision,
    events: Vec<Arc<Event>>,
    current: Revision,
    compacted: Revision,
    purged_through: Revision,
    timestamp_ms: u64,
}

impl Writer {
    pub(super) fn new(
        shared: Arc<Shared>,
        requests: Receiver<Request>,
        policy: HistoryPolicy,
        space: Space,
        boot: tables::Bootstrap,
    ) -> Self {
        Self {
            shared,
            requests,
            policy,
            space,
            current: boot.current,
            compacted: boot.compacted,
            purged_through: purged_through(&boot),
            last_timestamp_ms: boot.last_timestamp_ms,
            next_maintenance: Instant::now(),
        }
    }

    /// Serves requests until every sender is gone, then tells watchers the store closed.
    pub(super) fn run(mut self) {
        // Set even if the writer panics, so watchers end instead of waiting forever.
        let _closed = CloseOnDrop(Arc::clone(&self.shared));
        loop {
            let wait = if self.purged_through < self.compacted {
                Duration::ZERO
            } else {
                self.next_maintenance
                    .saturating_duration_since(Instant::now())
            };
            let mut batch = Vec::new();
            match self.requests.recv_timeout(wait) {
                Ok(first) => batch.push(first),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            while batch.len() < MAX_BATCH {
                match self.requests.try_recv() {
                    Ok(request) => batch.push(request),
                    Err(_) => break,
                }
            }
            let maintenance = Instant::now() >= self.next_maintenance;
            if maintenance {
                self.next_maintenance = Instant::now() + MAINTENANCE_INTERVAL;
                if self.shared.health() != Health::Ok {
                    self.recover();
                }
            }
            if batch.is_empty() && !maintenance && self.purged_through >= self.compacted {
                continue;
            }
            self.run_batch(batch, maintenance);
        }
        tracing::debug!(revision = self.current, "store writer stopped");
    }

    fn run_batch(&mut self, batch: Vec<Request>, maintenance: bool) {
        if let Health::Failed(why) = self.shared.health() {
            for request in batch {
                let _ = request
                    .reply
                    .send(Err(StoreError::Unavailable(why.clone())));
            }
            return;
        }
        let batch = self.refuse_writes_without_space(batch);
        let size = batch.len();
        match self.apply(&batch, maintenance) {
            Ok(applied) => self.publish(batch, applied),
            Err(error) => {
                tracing::error!(error = %error, batch = size, "store write batch failed");
                let failed = self.after_failure(&error);
                let error = BatchFailed(Arc::from(error));
                for request in batch {
                    let reply = match &failed {
                        Some(health) => health
                            .check(&self.space.path)
                            .err()
                            .unwrap_or_else(|| StoreError::Backend(Box::new(error.clone()))),
                        None => StoreError::Backend(Box::new(error.clone())),
                    };
                    let _ = request.reply.send(Err(reply));
                }
            }
        }
    }

    /// Answers the creates and updates of `batch` with `NoSpace` when the filesystem is
    /// nearly full; returns the requests to run (all of them when there is space).
    fn refuse_writes_without_space(&self, batch: Vec<Request>) -> Vec<Request> {
        let grows = |op: &WriteOp| matches!(op, WriteOp::Create { .. } | WriteOp::Update { .. });
        if !batch.iter().any(|r| grows(&r.op)) {
            return batch;
        }
        let health = self.space.check();
        self.note_health(health.clone());
        if health == Health::Ok {
            return batch;
        }
        let (refused, rest): (Vec<_>, Vec<_>) = batch.into_iter().partition(|r| grows(&r.op));
        for request in refused {
            let error = health.check(&self.space.path).err();
            let _ = request.reply.send(Err(error.unwrap_or(StoreError::Closed)));
        }
        rest
    }

    /// Records the store's health, logging when it changes.
    fn note_health(&self, health: Health) {
        let before = self.shared.health();
        if before == health {
            return;
        }
        match &health {
            Health::Ok => tracing::info!("the store takes writes again"),
            Health::NoSpace {
                available,
                required,
            } if !matches!(before, Health::NoSpace { .. }) => tracing::warn!(
                path = %self.space.path.display(),
                available,
                required,
                "too little free space: the store refuses writes until space is freed"
            ),
            Health::NoSpace { .. } => {}
            Health::Failed(why) => tracing::error!(%why, "the store file failed"),
        }
        self.shared.set_health(health);
    }

    /// After a failed batch: when redb's file has failed (it then refuses everything until
    /// reopened), takes it out of service and tries to reopen it. Returns the state the
    /// batch's requests are answered from, `None` for an ordinary backend error.
    fn after_failure(&mut self, error: &AnyError) -> Option<Health> {
        let db = self.shared.db().ok()?;
        let latched = matches!(
            db.begin_write(),
            Err(redb::TransactionError::Storage(
                redb::StorageError::PreviousIo | redb::StorageError::Io(_)
            ))
        );
        drop(db);
        let space = self.space.check();
        let no_space = space != Health::Ok || error.to_string().contains("No space left");
        let failed = latched.then(|| {
            let failed = Health::Failed(format!(
                "the store file failed ({error}) and is being reopened"
            ));
            self.note_health(failed.clone());
            self.reopen();
            failed
        });
        if no_space {
            let health = match space {
                Health::Ok => Health::NoSpace {
                    available: 0,
                    required: self.space.min_free_bytes,
                },
                other => other,
            };
            if self.shared.health() == Health::Ok {
                self.note_health(health.clone());
            }
            return Some(health);
        }
        failed
    }

    /// While the store is unhealthy: reopens a failed file, then looks at the space again.
    fn recover(&mut self) {
        if matches!(self.shared.health(), Health::Failed(_)) && !self.reopen() {
            return;
        }
        let health = self.space.check();
        self.note_health(health);
    }

    /// Closes the failed database and opens the file again (redb repairs it), reloading
    /// the counters from what is durable. Returns whether the file is open.
    fn reopen(&mut self) -> bool {
        let old = self
            .shared
            .db
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(old) = old {
            // Readers hold the database for one short read; the file is released when
            // the last of them is done.
            let deadline = Instant::now() + Duration::from_secs(2);
            while Arc::strong_count(&old) > 1 && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
            drop(old);
        }
        let opened = open_database(&self.space.path, self.space.cache_bytes).and_then(|db| {
            let boot = tables::bootstrap(&db)?;
            Ok((db, boot))
        });
        match opened {
            Ok((db, boot)) => {
                self.current = boot.current;
                self.compacted = boot.compacted;
                self.purged_through = purged_through(&boot);
                self.last_timestamp_ms = self.last_timestamp_ms.max(boot.last_timestamp_ms);
                self.shared
                    .compacted
                    .store(self.compacted, Ordering::Release);
                *self
                    .shared
                    .db
                    .write()
                    .unwrap_or_else(PoisonError::into_inner) = Some(Arc::new(db));
                // Events a failed commit made durable after all reach watchers from the log.
                if self.shared.current.swap(self.current, Ordering::AcqRel) != self.current {
                    self.shared.notify.send_replace(self.current);
                }
                tracing::info!(revision = self.current, "store file reopened");
                self.note_health(Health::Ok);
                true
            }
            Err(error) => {
                tracing::debug!(%error, "reopening the store file failed; trying again");
                self.note_health(Health::Failed(format!(
                    "the store file failed and cannot be reopened yet: {error}"
                )));
                false
            }
        }
    }

    /// Applies a batch (and due maintenance) in one transaction and commits it.
    fn apply(&self, batch: &[Request], maintenance: bool) -> Result<Applied, AnyError> {
        let db = self.shared.db()?;
        let mut txn = db.begin_write()?;
        txn.set_durability(Durability::Immediate)?;
        let mut applied = Applied {
            replies: Vec::with_capacity(batch.len()),
            base: self.current,
            events: Vec::new(),
            current: self.current,
            compacted: self.compacted,
            purged_through: self.purged_through,
            timestamp_ms: self.timestamp_now(),
        };
        {
            let mut kv = txn.open_table(KV)?;
            let mut events = txn.open_table(EVENTS)?;
            // Only this thread changes the ring (in `publish`, after the guard is gone).
            let ring = self.shared.ring_read();
            for request in batch {
                let reply = apply_op(&mut kv, &mut events, &request.op, &mut applied, &ring)?;
                applied.replies.push(reply);
            }
            drop(ring);
            if maintenance {
                let target = self.policy_target(&events, applied.current, applied.compacted)?;
                applied.compacted = applied.compacted.max(target);
            }
            if applied.purged_through < applied.compacted {
                let upper = applied.compacted.min(applied.purged_through + PURGE_CHUNK);
                events.retain_in(..=upper, |_, _| false)?;
                applied.purged_through = upper;
            }
        }
        let dirty = applied.current != self.current
            || applied.compacted != self.compacted
            || applied.purged_through != self.purged_through;
        if dirty {
            {
                let mut meta = txn.open_table(META)?;
                meta.insert(tables::META_CURRENT_REVISION, applied.current)?;
                meta.insert(tables::META_COMPACTED_REVISION, applied.compacted)?;
            }
            txn.commit()?;
        } else {
            // Only failed preconditions (or nothing): they were decided on durable state.
            txn.abort()?;
        }
        Ok(applied)
    }

    /// The compacted revision the history policy asks for (never below `compacted`).
    fn policy_target(
        &self,
        events: &Table<'_, i64, &'static [u8]>,
        current: Revision,
        compacted: Revision,
    ) -> Result<Revision, AnyError> {
        let max_events = Revision::try_from(self.policy.max_events).unwrap_or(Revision::MAX);
        let by_count = current.saturating_sub(max_events);
        let max_age_ms = u64::try_from(self.policy.max_age.as_millis()).unwrap_or(u64::MAX);
        let cutoff_ms = wall_clock_ms().saturating_sub(max_age_ms);
        let mut by_age = compacted;
        for entry in events.range(compacted + 1..)?.take(AGE_SCAN_LIMIT) {
            let (revision, bytes) = entry?;
            if codec::event_timestamp_ms(bytes.value())? >= cutoff_ms {
                break;
            }
            by_age = revision.value();
        }
        Ok(compacted.max(by_count).max(by_age))
    }

    /// Makes a committed batch visible: counters, ring, watchers, then the replies.
    fn publish(&mut self, batch: Vec<Request>, applied: Applied) {
        let compaction_moved = applied.compacted != self.compacted;
        self.current = applied.current;
        self.compacted = applied.compacted;
        self.purged_through = applied.purged_through;
        self.last_timestamp_ms = applied.timestamp_ms;
        self.shared
            .compacted
            .store(self.compacted, Ordering::Release);
        if !applied.events.is_empty() || compaction_moved {
            {
                let mut ring = self.shared.ring_write();
                for event in applied.events {
                    ring.push(event);
                }
                ring.trim_through(self.compacted);
            }
            self.shared.current.store(self.current, Ordering::Release);
            self.shared.notify.send_replace(self.current);
        }
        if compaction_moved {
            tracing::debug!(compacted = self.compacted, "store history compacted");
        }
        for (request, reply) in batch.into_iter().zip(applied.replies) {
            // A client that stopped waiting still got its write; nothing to do.
            let _ = request.reply.send(reply);
        }
    }

    /// Event timestamps never go backwards, so age-based compaction is a prefix of the log.
    fn timestamp_now(&self) -> u64 {
        wall_clock_ms().max(self.last_timestamp_ms)
    }
}

/// Applies one request inside the batch's transaction. The outer error aborts the
/// batch (storage failure); the inner one is the request's own outcome.
fn apply_op(
    kv: &mut Table<'_, &'static str, &'static [u8]>,
    events: &mut Table<'_, i64, &'static [u8]>,
    op: &WriteOp,
    applied: &mut Applied,
    ring: &Ring,
) -> Result<Result<WriteOutcome>, AnyError> {
    match op {
        WriteOp::Create { key, value } => {
            if kv.get(key.as_str())?.is_some() {
                return Ok(Err(StoreError::AlreadyExists { key: key.clone() }));
            }
            let revision = applied.current + 1;
            let new = KeyValue {
                key: key.clone(),
                value: value.clone(),
                create_revision: revision,
                mod_revision: revision,
            };
            kv.insert(key.as_str(), codec::encode_kv(&new).as_slice())?;
            record(
                events,
                applied,
                Event::Put {
                    kv: new.clone(),
                    prev: None,
                },
            )?;
            Ok(Ok(WriteOutcome::Put(new)))
        }
        WriteOp::Update {
            key,
            value,
            expected,
        } => {
            let prev = match load(kv, key, applied, ring)? {
                None => return Ok(Err(StoreError::NotFound { key: key.clone() })),
                Some(prev) if prev.mod_revision != *expected => {
                    return Ok(Err(StoreError::Conflict {
                        key: key.clone(),
                        expected: *expected,
                        actual: prev.mod_revision,
                    }));
                }
                Some(prev) => prev,
            };
            let revision = applied.current + 1;
            let new = KeyValue {
                key: key.clone(),
                value: value.clone(),
                create_revision: prev.create_revision,
                mod_revision: revision,
            };
            kv.insert(key.as_str(), codec::encode_kv(&new).as_slice())?;
            record(
                events,
                applied,
                Event::Put {
                    kv: new.clone(),
                    prev: Some(prev),
                },
            )?;
            Ok(Ok(WriteOutcome::Put(new)))
        }
        WriteOp::Delete { key, expected } => {
            let prev = match load(kv, key, applied, ring)? {
                None => return Ok(Err(StoreError::NotFound { key: key.clone() })),
                Some(prev) => prev,
            };
            if let Some(expected) = expected
                && prev.mod_revision != *expected
            {
                return Ok(Err(StoreError::Conflict {
                    key: key.clone(),
                    expected: *expected,
                    actual: prev.mod_revision,
                }));
            }
            let revision = applied.current + 1;
            kv.remove(key.as_str())?;
            record(
                events,
                applied,
                Event::Delete {
                    revision,
                    prev: prev.clone(),
                },
            )?;
            Ok(Ok(WriteOutcome::Deleted(prev, revision)))
        }
        WriteOp::Compact { revision } => {
            if *revision > applied.current {
                return Ok(Err(StoreError::FutureRevision {
                    requested: *revision,
                    current: applied.current,
                }));
            }
            applied.compacted = applied.compacted.max(*revision);
            Ok(Ok(WriteOutcome::Compacted))
        }
    }
}

/// The current value of `key` as seen by the batch's transaction. Its bytes are those of
/// the event that wrote it when the batch or the ring still holds that event, so the
/// next event's `prev` shares them instead of holding a second copy.
fn load(
    kv: &Table<'_, &'static str, &'static [u8]>,
    key: &str,
    applied: &Applied,
    ring: &Ring,
) -> Result<Option<KeyValue>, AnyError> {
    let Some(bytes) = kv.get(key)? else {
        return Ok(None);
    };
    let mut current = codec::decode_kv(key, bytes.value())?;
    if let Some(held) = written_value(current.mod_revision, key, applied, ring) {
        // The key's mod revision names the write, so these are the same bytes.
        debug_assert_eq!(held, current.value);
        current.value = held;
    }
    Ok(Some(current))
}

/// The bytes the event at `revision` wrote under `key`, if this batch or the ring holds it.
fn written_value(revision: Revision, key: &str, applied: &Applied, ring: &Ring) -> Option<Bytes> {
    if revision <= applied.base {
        return ring.value_at(revision, key).cloned();
    }
    let index = usize::try_from(revision - applied.base - 1).ok()?;
    match &**applied.events.get(index)? {
        Event::Put { kv, .. } if kv.key == key => Some(kv.value.clone()),
        _ => None,
    }
}

/// Appends `event` (whose revision is `applied.current + 1`) to the log.
fn record(
    events: &mut Table<'_, i64, &'static [u8]>,
    applied: &mut Applied,
    event: Event,
) -> Result<(), AnyError> {
    let revision = event.revision();
    events.insert(
        revision,
        codec::encode_event(&event, applied.timestamp_ms).as_slice(),
    )?;
    applied.current = revision;
    applied.events.push(Arc::new(event));
    Ok(())
}

fn wall_clock_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| {
            u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX)
        })
}

/// Marks the store closed and wakes every watcher when the writer stops.
struct CloseOnDrop(Arc<Shared>);

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        self.0.closed.store(true, Ordering::Release);
        self.0.notify.send_modify(|_| {});
    }
}

/// The error every request of a failed batch gets (the batch shares one cause).
#[derive(Clone, Debug)]
struct BatchFailed(Arc<dyn StdError + Send + Sync>);

impl fmt::Display for BatchFailed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "write transaction failed: {}", self.0)
    }
}

impl StdError for BatchFailed {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        Some(&*self.0)
    }
}

/// Every log entry at or below this revision is physically gone (at open).
fn purged_through(boot: &tables::Bootstrap) -> Revision {
    match boot.first_event {
        Some(first) => first - 1,
        None => boot.compacted.max(boot.current),
    }
}
