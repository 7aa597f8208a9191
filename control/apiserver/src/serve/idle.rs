//! Which connections are idle: requests in flight per connection, counted from the moment
//! the service is called until the response body is finished (or dropped), so a long
//! watch is never idle however quiet it is.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::response::Response;
use bytes::Bytes;
use hyper::body::{Body as HttpBody, Frame, SizeHint};
use tokio::sync::watch;
use tokio::time::Instant;

/// The requests of one connection: how many are in flight, and since when none is.
#[derive(Clone, Copy, Debug)]
struct State {
    in_flight: usize,
    idle_since: Instant,
}

/// One connection's request activity.
pub(super) struct Activity {
    state: watch::Sender<State>,
}

impl Activity {
    /// A connection that has had no request yet (idle since now).
    pub(super) fn new() -> Self {
        Activity {
            state: watch::Sender::new(State {
                in_flight: 0,
                idle_since: Instant::now(),
            }),
        }
    }

    /// A request starts; it is in flight until the returned guard (or the response body it
    /// is moved into by [`InFlight::track`]) is dropped.
    pub(super) fn begin(self: &Arc<Self>) -> InFlight {
        self.state.send_modify(|s| s.in_flight += 1);
        InFlight {
            activity: Arc::clone(self),
        }
    }

    /// Resolves once the connection has had no request in flight for `timeout`.
    pub(super) async fn idle_for(&self, timeout: Duration) {
        let mut changes = self.state.subscribe();
        loop {
            let state = *changes.borrow_and_update();
            if state.in_flight > 0 {
                if changes.changed().await.is_err() {
                    return std::future::pending().await;
                }
                continue;
            }
            tokio::select! {
                biased;
                changed = changes.changed() => {
                    if changed.is_err() {
                        return std::future::pending().await;
                    }
                }
                () = tokio::time::sleep_until(state.idle_since + timeout) => return,
            }
        }
    }
}

/// A request in flight on a connection.
pub(super) struct InFlight {
    activity: Arc<Activity>,
}

impl InFlight {
    /// Keeps the request in flight until `response`'s body is finished or dropped.
    pub(super) fn track(self, response: Response) -> Response {
        response.map(|body| {
            Body::new(TrackedBody {
                body,
                in_flight: Some(self),
            })
        })
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.activity.state.send_modify(|s| {
            s.in_flight -= 1;
            if s.in_flight == 0 {
                s.idle_since = Instant::now();
            }
        });
    }
}

/// A response body that ends its request's [`InFlight`] when it ends.
struct TrackedBody {
    body: Body,
    in_flight: Option<InFlight>,
}

impl HttpBody for TrackedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let polled = Pin::new(&mut self.body).poll_frame(cx);
        if matches!(polled, Poll::Ready(None)) {
            self.in_flight = None;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_connection_is_idle_only_without_requests_in_flight() {
        let activity = Arc::new(Activity::new());
        let timeout = Duration::from_secs(90);
        let request = activity.begin();
        let response = request.track(Response::new(Body::from("x")));
        // In flight (its body not read yet): never idle.
        let idle = tokio::time::timeout(timeout * 3, activity.idle_for(timeout)).await;
        assert!(
            idle.is_err(),
            "a connection with a request in flight is not idle"
        );
        drop(response);
        tokio::time::timeout(timeout * 2, activity.idle_for(timeout))
            .await
            .expect("idle once the response is gone");
    }

    #[tokio::test(start_paused = true)]
    async fn a_new_connection_without_requests_becomes_idle() {
        let activity = Arc::new(Activity::new());
        tokio::time::timeout(
            Duration::from_secs(2),
            activity.idle_for(Duration::from_secs(1)),
        )
        .await
        .expect("idle");
    }
}
