//! The log backend (`--audit-log-path`): events as JSON lines, to a rotated file or, for
//! `-`, to standard output.
//!
//! Requests hand their events to a bounded queue of [`BUFFER_EVENTS`] and one writer thread
//! serializes and writes them, flushing after each batch it finds queued. This is
//! kube-apiserver's `blocking` mode with a buffer in front: a request waits only while the
//! buffer is full (then it waits for room, so no event is ever dropped), and never for the
//! disk otherwise; `batch` mode would drop events instead. A write error never fails a
//! request: it is logged (at most every [`ERROR_LOG_INTERVAL`], with the count of events
//! lost) and the file is reopened for the next event.

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};

use super::event::Event;
use super::rotate::{RotatingFile, Rotation};

/// Events queued before a request has to wait (kube-apiserver's batch buffer size).
pub const BUFFER_EVENTS: usize = 10_000;
/// Events written between two flushes at most.
const MAX_BATCH: usize = 1024;
/// How often a failing log says so.
pub const ERROR_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Where events go.
#[derive(Debug)]
enum Destination {
    Stdout,
    File(RotatingFile),
}

impl Destination {
    fn write_line(&mut self, line: &[u8]) -> std::io::Result<()> {
        match self {
            Destination::Stdout => std::io::stdout().lock().write_all(line),
            Destination::File(file) => file.write_line(line),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Destination::Stdout => std::io::stdout().lock().flush(),
            Destination::File(file) => file.flush(),
        }
    }
}

/// The sending side of the log: cheap to clone, one per request in flight.
#[derive(Clone, Debug)]
pub struct Sink {
    tx: mpsc::Sender<Box<Event>>,
}

/// Resolves when the writer has written every event and stopped (after every [`Sink`] is
/// gone).
#[derive(Debug)]
pub struct WriterDone(oneshot::Receiver<()>);

impl WriterDone {
    /// Waits at most `timeout` for the writer to finish.
    pub async fn wait(self, timeout: Duration) {
        let _ = tokio::time::timeout(timeout, self.0).await;
    }
}

impl Sink {
    /// Opens the log (`-`: standard output) and starts its writer thread.
    pub fn start(path: &Path, rotation: Rotation) -> std::io::Result<(Sink, WriterDone)> {
        let destination = if path.as_os_str() == "-" {
            Destination::Stdout
        } else {
            Destination::File(RotatingFile::open(path, rotation)?)
        };
        let (tx, rx) = mpsc::channel(BUFFER_EVENTS);
        let (done_tx, done_rx) = oneshot::channel();
        std::thread::Builder::new()
            .name("audit-log".into())
            .spawn(move || {
                write_events(rx, destination);
                let _ = done_tx.send(());
            })?;
        Ok((Sink { tx }, WriterDone(done_rx)))
    }

    /// Queues an event, waiting while the buffer is full.
    pub async fn process(&self, event: Event) {
        // An error means the writer is gone (the server is stopping): nothing to do.
        let _ = self.tx.send(Box::new(event)).await;
    }

    /// Queues an event from where one cannot wait (a response body being dropped): at
    /// once if there is room, else from a task that waits for room.
    pub fn process_detached(&self, event: Event) {
        match self.tx.try_send(Box::new(event)) {
            Ok(()) | Err(mpsc::error::TrySendError::Closed(_)) => {}
            Err(mpsc::error::TrySendError::Full(event)) => {
                if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                    let tx = self.tx.clone();
                    runtime.spawn(async move {
                        let _ = tx.send(event).await;
                    });
                } else {
                    tracing::warn!(
                        "the audit log buffer is full outside the runtime: an event is lost"
                    );
                }
            }
        }
    }
}

/// Counts write failures and says so at most every [`ERROR_LOG_INTERVAL`].
#[derive(Debug, Default)]
struct Failures {
    lost: u64,
    last_logged: Option<Instant>,
}

impl Failures {
    fn record(&mut self, error: &std::io::Error, lost: u64) {
        self.lost += lost;
        let due = self
            .last_logged
            .is_none_or(|at| at.elapsed() >= ERROR_LOG_INTERVAL);
        if due {
            tracing::error!(error = %error, events_lost = self.lost, "writing the audit log failed");
            self.last_logged = Some(Instant::now());
            self.lost = 0;
        }
    }
}

fn write_events(mut rx: mpsc::Receiver<Box<Event>>, mut destination: Destination) {
    let mut line = Vec::with_capacity(4096);
    let mut failures = Failures::default();
    while let Some(first) = rx.blocking_recv() {
        let mut next = Some(first);
        let mut written = 0;
        while let Some(event) = next.take() {
            line.clear();
            match serde_json::to_writer(&mut line, &*event) {
                Ok(()) => {
                    line.push(b'\n');
                    if let Err(e) = destination.write_line(&line) {
                        failures.record(&e, 1);
                    }
                }
                Err(e) => failures.record(&std::io::Error::other(e), 1),
            }
            written += 1;
            if written < MAX_BATCH {
                next = rx.try_recv().ok();
            }
        }
        if let Err(e) = destination.flush() {
            failures.record(&e, 0);
        }
    }
    if let Err(e) = destination.flush() {
        failures.record(&e, 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::event::{ResponseStatus, UserInfo, micro_time};
    use crate::audit::policy::{Level, Stage};

    fn event(id: usize) -> Event {
        Event {
            kind: "Event",
            api_version: "audit.k8s.io/v1",
            level: Level::Metadata,
            audit_id: format!("id-{id}"),
            stage: Stage::ResponseComplete,
            request_uri: "/api".into(),
            verb: "get".into(),
            user: UserInfo::default(),
            impersonated_user: None,
            source_ips: Vec::new(),
            user_agent: String::new(),
            object_ref: None,
            response_status: Some(ResponseStatus::code(200)),
            request_object: None,
            response_object: None,
            request_received_timestamp: micro_time(jiff::Timestamp::now()),
            stage_timestamp: micro_time(jiff::Timestamp::now()),
            annotations: Default::default(),
        }
    }

    #[tokio::test]
    async fn every_event_becomes_one_json_line_in_order_even_past_the_buffer() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("audit.log");
        let (sink, done) = Sink::start(&path, Rotation::from_flags(0, 0, 0)).expect("starts");
        let n = BUFFER_EVENTS + 500;
        for i in 0..n {
            sink.process(event(i)).await;
        }
        drop(sink);
        done.wait(Duration::from_secs(30)).await;
        let text = std::fs::read_to_string(&path).expect("reads");
        let ids: Vec<String> = text
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).expect("a JSON line");
                v["auditID"].as_str().expect("auditID").to_string()
            })
            .collect();
        assert_eq!(ids.len(), n);
        assert_eq!(ids[0], "id-0");
        assert_eq!(ids[n - 1], format!("id-{}", n - 1));
    }

    #[test]
    fn a_log_that_cannot_be_created_is_an_error_at_start() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("file");
        std::fs::write(&file, "").expect("writes");
        let err = Sink::start(&file.join("audit.log"), Rotation::from_flags(0, 0, 0))
            .expect_err("a file is not a directory");
        assert!(!err.to_string().is_empty());
    }
}
