//! A work queue as client-go's: an item queued several times is processed once, never by
//! two workers at once (queued again while processed, it is processed again after), and
//! failed items come back after a per-item exponential backoff.

use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::Hash;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::Notify;

/// The first retry delay of a failing item (client-go's 5 ms).
const BASE_DELAY: Duration = Duration::from_millis(5);
/// The longest retry delay.
const MAX_DELAY: Duration = Duration::from_secs(60);

/// A deduplicating work queue shared by the workers.
#[derive(Debug)]
pub(crate) struct WorkQueue<T> {
    state: Mutex<State<T>>,
    notify: Notify,
}

#[derive(Debug)]
struct State<T> {
    queue: VecDeque<T>,
    /// Queued (or to be queued again once processed).
    dirty: HashSet<T>,
    processing: HashSet<T>,
    failures: HashMap<T, u32>,
}

impl<T: Clone + Eq + Hash + Send + 'static> WorkQueue<T> {
    /// An empty queue.
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(WorkQueue {
            state: Mutex::new(State {
                queue: VecDeque::new(),
                dirty: HashSet::new(),
                processing: HashSet::new(),
                failures: HashMap::new(),
            }),
            notify: Notify::new(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State<T>> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues `item` unless it is queued already.
    pub(crate) fn add(&self, item: T) {
        let mut s = self.lock();
        if !s.dirty.insert(item.clone()) {
            return;
        }
        if s.processing.contains(&item) {
            return;
        }
        s.queue.push_back(item);
        drop(s);
        self.notify.notify_one();
    }

    /// Waits for the next item; call [`WorkQueue::done`] when finished with it.
    pub(crate) async fn next(&self) -> T {
        loop {
            let notified = self.notify.notified();
            {
                let mut s = self.lock();
                if let Some(item) = s.queue.pop_front() {
                    s.dirty.remove(&item);
                    s.processing.insert(item.clone());
                    if !s.queue.is_empty() {
                        // Wake another worker for the rest.
                        self.notify.notify_one();
                    }
                    return item;
                }
            }
            notified.await;
        }
    }

    /// Marks `item` processed; queued again meanwhile, it is queued now.
    pub(crate) fn done(&self, item: &T) {
        let mut s = self.lock();
        s.processing.remove(item);
        if s.dirty.contains(item) {
            s.queue.push_back(item.clone());
            drop(s);
            self.notify.notify_one();
        }
    }

    /// Forgets the failures of `item` (it succeeded).
    pub(crate) fn forget(&self, item: &T) {
        self.lock().failures.remove(item);
    }

    /// Queues `item` again after its next backoff delay (5 ms doubling, at most 60 s).
    pub(crate) fn retry(self: &Arc<Self>, item: T) -> Duration {
        let delay = {
            let mut s = self.lock();
            let n = s.failures.entry(item.clone()).or_insert(0);
            *n = n.saturating_add(1);
            backoff(*n)
        };
        let queue = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            queue.add(item);
        });
        delay
    }

    /// How many items wait (not counting those being processed).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.lock().queue.len()
    }
}

/// The delay before the `failures`-th retry.
fn backoff(failures: u32) -> Duration {
    let factor = 2u32.saturating_pow(failures.saturating_sub(1).min(20));
    BASE_DELAY.saturating_mul(factor).min(MAX_DELAY)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_item_queued_twice_is_processed_once() {
        let q = WorkQueue::new();
        q.add("a");
        q.add("b");
        q.add("a");
        assert_eq!(q.len(), 2);
        assert_eq!(q.next().await, "a");
        assert_eq!(q.next().await, "b");
        assert_eq!(q.len(), 0);
    }

    #[tokio::test]
    async fn an_item_queued_while_processed_comes_back_after_done() {
        let q = WorkQueue::new();
        q.add(1);
        let item = q.next().await;
        q.add(1);
        // Not handed to a second worker while the first holds it.
        assert_eq!(q.len(), 0);
        q.done(&item);
        assert_eq!(q.len(), 1);
        assert_eq!(q.next().await, 1);
    }

    #[test]
    fn retry_delays_double_from_five_milliseconds_up_to_a_minute() {
        assert_eq!(backoff(1), Duration::from_millis(5));
        assert_eq!(backoff(2), Duration::from_millis(10));
        assert_eq!(backoff(4), Duration::from_millis(40));
        assert_eq!(backoff(40), MAX_DELAY);
    }

    #[tokio::test]
    async fn a_failed_item_is_queued_again_after_its_delay() {
        let q = WorkQueue::new();
        q.add("x");
        let item = q.next().await;
        let delay = q.retry(item);
        q.done(&item);
        assert_eq!(delay, Duration::from_millis(5));
        let again = tokio::time::timeout(Duration::from_secs(5), q.next()).await;
        assert_eq!(again.ok(), Some("x"));
    }
}
