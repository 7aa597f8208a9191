//! A watcher's send buffer, bounded in bytes, and the closing of watchers too slow to read.
//!
//! Encoded events wait here between the task that produces them and the response body
//! that hyper writes to the client. The buffer holds at most [`BUFFER_BYTES`] (and always
//! one event, however large, so an object of the maximum size still gets through). When it
//! is full the producer waits for the client to read; a client that frees no room for
//! [`SLOW_WATCHER_TIMEOUT`] is too slow: its buffered events are dropped at once (the memory
//! is freed even when the client never reads again) and its response ends, as
//! kube-apiserver's cacheWatcher is terminated ("Forcing watcher close due to
//! unresponsiveness"). Its client then watches again from the last resourceVersion it got,
//! or relists when that is too old (410 Expired).
//!
//! Hand-written instead of a `tokio::sync::mpsc` channel: a channel bounds messages, not
//! bytes, and only its receiver can drop what it holds; a client that stopped reading never
//! polls the receiver again.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use futures::Stream;
use tokio::sync::Notify;

/// The most bytes of encoded events one watcher's buffer holds.
pub const BUFFER_BYTES: usize = 1 << 20;
/// How long a full buffer may wait for its client to read before the watcher is closed.
pub const SLOW_WATCHER_TIMEOUT: Duration = Duration::from_secs(10);

/// What the producer and the consumer share.
#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    /// Woken when the consumer takes an event or goes away.
    writable: Notify,
    max_bytes: usize,
    timeout: Duration,
}

#[derive(Debug, Default)]
struct State {
    queue: VecDeque<Bytes>,
    bytes: usize,
    /// The producer is gone: the stream ends once the queue is drained.
    sender_gone: bool,
    /// The response body was dropped: the client left.
    receiver_gone: bool,
    /// The consumer waiting for the next event.
    waker: Option<Waker>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Why an event was not buffered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SendError {
    /// The client left.
    Closed,
    /// The client read nothing for the whole timeout while the buffer was full; what was
    /// buffered is dropped and the response ends.
    TooSlow,
}

/// The producing end of a watcher's buffer.
#[derive(Debug)]
pub struct Sender {
    shared: Arc<Shared>,
}

/// The consuming end: the stream of the response body.
#[derive(Debug)]
pub struct Receiver {
    shared: Arc<Shared>,
}

/// A buffer of at most `max_bytes` whose producer waits at most `timeout` for room.
pub fn buffer(max_bytes: usize, timeout: Duration) -> (Sender, Receiver) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State::default()),
        writable: Notify::new(),
        max_bytes,
        timeout,
    });
    (
        Sender {
            shared: Arc::clone(&shared),
        },
        Receiver { shared },
    )
}

impl Sender {
    /// Buffers `event`, waiting for room while the buffer is full.
    pub async fn send(&self, event: Bytes) -> Result<(), SendError> {
        let deadline = tokio::time::Instant::now() + self.shared.timeout;
        loop {
            let writable = self.shared.writable.notified();
            tokio::pin!(writable);
            // Registered before the check, so a read between the check and the wait wakes it.
            writable.as_mut().enable();
            {
                let mut state = self.shared.lock();
                if state.receiver_gone {
                    return Err(SendError::Closed);
                }
                if state.queue.is_empty() || state.bytes + event.len() <= self.shared.max_bytes {
                    state.bytes += event.len();
                    state.queue.push_back(event);
                    if let Some(waker) = state.waker.take() {
                        waker.wake();
                    }
                    return Ok(());
                }
            }
            if tokio::time::timeout_at(deadline, writable).await.is_err() {
                let mut state = self.shared.lock();
                state.queue.clear();
                state.bytes = 0;
                return Err(SendError::TooSlow);
            }
        }
    }

    /// Resolves when the client has left.
    pub async fn closed(&self) {
        loop {
            let writable = self.shared.writable.notified();
            tokio::pin!(writable);
            writable.as_mut().enable();
            if self.shared.lock().receiver_gone {
                return;
            }
            writable.await;
        }
    }

    /// The bytes buffered now.
    #[cfg(test)]
    fn buffered(&self) -> usize {
        self.shared.lock().bytes
    }
}

impl Drop for Sender {
    fn drop(&mut self) {
        let mut state = self.shared.lock();
        state.sender_gone = true;
        if let Some(waker) = state.waker.take() {
            waker.wake();
        }
    }
}

impl Stream for Receiver {
    type Item = Bytes;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Bytes>> {
        let mut state = self.shared.lock();
        if let Some(event) = state.queue.pop_front() {
            state.bytes -= event.len();
            drop(state);
            self.shared.writable.notify_waiters();
            return Poll::Ready(Some(event));
        }
        if state.sender_gone {
            return Poll::Ready(None);
        }
        state.waker = Some(cx.waker().clone());
        Poll::Pending
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        {
            let mut state = self.shared.lock();
            state.receiver_gone = true;
            state.queue.clear();
            state.bytes = 0;
        }
        self.shared.writable.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use futures::StreamExt;

    use super::*;

    fn event(len: usize) -> Bytes {
        Bytes::from(vec![b'x'; len])
    }

    #[tokio::test(start_paused = true)]
    async fn a_reading_client_gets_every_event_in_order() {
        let (tx, mut rx) = buffer(10, Duration::from_secs(5));
        let producer = tokio::spawn(async move {
            for i in 0..100u8 {
                tx.send(Bytes::from(vec![i; 4])).await.expect("sent");
            }
        });
        for i in 0..100u8 {
            assert_eq!(rx.next().await, Some(Bytes::from(vec![i; 4])));
        }
        producer.await.expect("producer");
        assert_eq!(rx.next().await, None, "the stream ends with its producer");
    }

    #[tokio::test(start_paused = true)]
    async fn the_buffer_holds_at_most_its_bytes_but_always_one_event() {
        let (tx, mut rx) = buffer(10, Duration::from_secs(5));
        tx.send(event(100)).await.expect("one event of any size");
        assert_eq!(tx.buffered(), 100);
        assert_eq!(rx.next().await.map(|b| b.len()), Some(100));
        tx.send(event(6)).await.expect("fits");
        tx.send(event(4)).await.expect("fits exactly");
        assert_eq!(tx.buffered(), 10);
        let full = tokio::time::timeout(Duration::from_secs(1), tx.send(event(1))).await;
        assert!(full.is_err(), "a full buffer waits for the client");
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_that_reads_nothing_is_closed_and_its_events_dropped() {
        let (tx, mut rx) = buffer(10, Duration::from_secs(5));
        tx.send(event(8)).await.expect("fits");
        assert_eq!(tx.send(event(8)).await, Err(SendError::TooSlow));
        assert_eq!(tx.buffered(), 0, "the buffered events are freed at once");
        drop(tx);
        assert_eq!(rx.next().await, None, "the response ends");
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_reader_that_makes_room_in_time_is_kept() {
        let (tx, mut rx) = buffer(10, Duration::from_secs(5));
        tx.send(event(8)).await.expect("fits");
        let reader = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(4)).await;
            let first = rx.next().await;
            (first, rx)
        });
        tx.send(event(8))
            .await
            .expect("room made before the timeout");
        let (first, mut rx) = reader.await.expect("reader");
        assert_eq!(first.map(|b| b.len()), Some(8));
        assert_eq!(rx.next().await.map(|b| b.len()), Some(8));
    }

    #[tokio::test(start_paused = true)]
    async fn the_producer_learns_that_the_client_left() {
        let (tx, rx) = buffer(10, Duration::from_secs(5));
        tx.send(event(8)).await.expect("fits");
        let waiting = tokio::spawn(async move {
            let full = tx.send(event(8)).await;
            tx.closed().await;
            full
        });
        tokio::task::yield_now().await;
        drop(rx);
        assert_eq!(
            waiting.await.expect("producer"),
            Err(SendError::Closed),
            "a producer waiting for room sees the client leave"
        );
    }
}
