//! A [`Watch`](crate::Watch) on etcd: one etcd watch stream per store watch, read by a task.
//!
//! The reader task turns etcd's responses into [`Event`]s on a channel, so `next` is a
//! channel receive (cancel-safe) and events are never lost between two `next` calls. When
//! the stream breaks (a member died, a connection was cut) the task opens a new one from the
//! revision after the last event it passed on, on whichever endpoint answers: no gap and no
//! duplicate. Progress notifications (asked for whenever `progress` is read, and sent by etcd
//! on its own interval) move the progress past revisions of other keys.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use etcd_client::{EventType, WatchClient, WatchOptions};
use tokio::sync::{Notify, mpsc};

use super::{Known, convert, errors, prefix_end};
use crate::{Event, Result, Revision, StoreError};

/// How long the reader waits before opening a broken stream again.
const RESUME_BACKOFF: Duration = Duration::from_millis(100);

pub(super) struct EtcdWatch {
    events: mpsc::UnboundedReceiver<Result<Event>>,
    /// The revision of the last event `next` returned (or the watch's start).
    delivered: Revision,
    /// The newest progress notification's revision; every event up to it has been sent.
    notified: Arc<AtomicI64>,
    /// Asks the reader for a progress notification.
    poke: Arc<Notify>,
    reader: tokio::task::JoinHandle<()>,
}

impl Drop for EtcdWatch {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

impl EtcdWatch {
    /// Opens the etcd watch of `prefix` from `after + 1` and starts its reader; fails when
    /// etcd cannot be reached within `timeout`.
    pub(super) async fn start(
        client: WatchClient,
        known: Arc<Known>,
        prefix: &str,
        after: Revision,
        timeout: Duration,
    ) -> Result<EtcdWatch> {
        let reader = Reader {
            client,
            known,
            key: if prefix.is_empty() {
                vec![0]
            } else {
                prefix.as_bytes().to_vec()
            },
            end: prefix_end(prefix),
            next: after + 1,
            timeout,
        };
        let stream = reader.open().await?;
        let (tx, events) = mpsc::unbounded_channel();
        let notified = Arc::new(AtomicI64::new(after));
        let poke = Arc::new(Notify::new());
        let task = tokio::spawn(reader.run(stream, tx, Arc::clone(&notified), Arc::clone(&poke)));
        Ok(EtcdWatch {
            events,
            delivered: after,
            notified,
            poke,
            reader: task,
        })
    }
}

#[async_trait]
impl crate::Watch for EtcdWatch {
    async fn next(&mut self) -> Result<Event> {
        match self.events.recv().await {
            Some(Ok(event)) => {
                self.delivered = event.revision();
                Ok(event)
            }
            Some(Err(e)) => Err(e),
            None => Err(StoreError::Closed),
        }
    }

    fn progress(&self) -> Revision {
        self.poke.notify_one();
        // Read the notification before looking at the queue: the reader queues events before
        // it records a notification that covers them.
        let notified = self.notified.load(Ordering::Acquire);
        if self.events.is_empty() {
            notified.max(self.delivered)
        } else {
            self.delivered
        }
    }
}

struct Reader {
    client: WatchClient,
    known: Arc<Known>,
    key: Vec<u8>,
    end: Vec<u8>,
    /// The revision the next event must have at least (one past the last one queued).
    next: Revision,
    timeout: Duration,
}

impl Reader {
    async fn open(&self) -> Result<etcd_client::WatchStream> {
        let options = WatchOptions::new()
            .with_range(self.end.clone())
            .with_start_revision(self.next)
            .with_prev_key()
            .with_progress_notify();
        match tokio::time::timeout(
            self.timeout,
            self.client.clone().watch(self.key.clone(), Some(options)),
        )
        .await
        {
            Ok(Ok(stream)) => Ok(stream),
            Ok(Err(e)) => Err(StoreError::Unavailable(errors::unavailable_reason(&e))),
            Err(_) => Err(StoreError::Unavailable(format!(
                "etcd did not open a watch within {:?}",
                self.timeout
            ))),
        }
    }

    /// Reads `stream` (and its successors) until the watch is dropped or ends with an error.
    async fn run(
        mut self,
        mut stream: etcd_client::WatchStream,
        tx: mpsc::UnboundedSender<Result<Event>>,
        notified: Arc<AtomicI64>,
        poke: Arc<Notify>,
    ) {
        let mut broken_since: Option<tokio::time::Instant> = None;
        loop {
            let ended = self.pump(&mut stream, &tx, &notified, &poke).await;
            match ended {
                Pumped::Done => return,
                Pumped::Broken(why) => {
                    let since = *broken_since.get_or_insert_with(tokio::time::Instant::now);
                    loop {
                        if since.elapsed() > self.timeout {
                            let _ = tx.send(Err(StoreError::Unavailable(why)));
                            return;
                        }
                        tokio::time::sleep(RESUME_BACKOFF).await;
                        if tx.is_closed() {
                            return;
                        }
                        match self.open().await {
                            Ok(s) => {
                                stream = s;
                                break;
                            }
                            Err(e) => tracing::debug!(error = %e, "resuming an etcd watch"),
                        }
                    }
                }
                Pumped::Healthy => broken_since = None,
            }
        }
    }

    async fn pump(
        &mut self,
        stream: &mut etcd_client::WatchStream,
        tx: &mpsc::UnboundedSender<Result<Event>>,
        notified: &AtomicI64,
        poke: &Notify,
    ) -> Pumped {
        let mut answered = false;
        loop {
            let message = tokio::select! {
                () = tx.closed() => return Pumped::Done,
                () = poke.notified() => {
                    if stream.request_progress().await.is_err() {
                        return Pumped::Broken("the etcd watch stream closed".to_owned());
                    }
                    continue;
                }
                message = stream.message() => message,
            };
            let response = match message {
                Ok(Some(response)) => response,
                Ok(None) if answered => return Pumped::Healthy,
                Ok(None) => return Pumped::Broken("the etcd watch stream closed".to_owned()),
                Err(e) if answered => {
                    tracing::debug!(error = %e, "an etcd watch stream broke; resuming");
                    return Pumped::Healthy;
                }
                Err(e) => return Pumped::Broken(errors::unavailable_reason(&e)),
            };
            answered = true;
            let header = response.header().map(|h| h.revision()).unwrap_or_default();
            self.known.saw_revision(header);
            if response.canceled() {
                let compacted = response.compact_revision();
                let error = if compacted > 0 {
                    self.known.saw_compacted(compacted);
                    StoreError::WatcherTooSlow {
                        revision: self.next - 1,
                    }
                } else {
                    let reason = response.cancel_reason();
                    StoreError::Unavailable(if reason.is_empty() {
                        "etcd cancelled the watch".to_owned()
                    } else {
                        format!("etcd cancelled the watch: {reason}")
                    })
                };
                let _ = tx.send(Err(error));
                return Pumped::Done;
            }
            if response.created() {
                continue;
            }
            if response.events().is_empty() {
                // A progress notification: every event up to `header` has been sent. etcd
                // before 3.5 answers a progress *request* (watch id -1) even while the watch
                // is still replaying history, so only its periodic ones count there.
                let requested = response.watch_id() == -1;
                if header >= self.next - 1
                    && (!requested || self.known.trust_progress_requests.load(Ordering::Acquire))
                {
                    notified.fetch_max(header, Ordering::AcqRel);
                }
                continue;
            }
            for event in response.events() {
                let Some(kv) = event.kv() else { continue };
                let revision = kv.mod_revision();
                if revision < self.next {
                    // Already passed on (a resumed stream never repeats, but be sure).
                    continue;
                }
                let prev = event.prev_kv().cloned().map(convert);
                let converted = match event.event_type() {
                    EventType::Put => Event::Put {
                        kv: convert(kv.clone()),
                        prev,
                    },
                    EventType::Delete => match prev {
                        Some(prev) => Event::Delete { revision, prev },
                        None => {
                            // etcd drops prev_kv when it was compacted away; the delete
                            // still happened: pass the key on with empty contents.
                            let mut bare = convert(kv.clone());
                            bare.mod_revision = revision;
                            Event::Delete {
                                revision,
                                prev: bare,
                            }
                        }
                    },
                };
                self.next = revision + 1;
                if tx.send(Ok(converted)).is_err() {
                    return Pumped::Done;
                }
            }
        }
    }
}

enum Pumped {
    /// The watch is over (dropped, or ended with an error already sent).
    Done,
    /// The stream broke after it had worked: open it again.
    Healthy,
    /// The stream could not be used at all: try again until the timeout.
    Broken(String),
}
