//! Requests in flight: kube-apiserver's `--max-requests-inflight` and
//! `--max-mutating-requests-inflight`, with a fair share per user.
//!
//! As kube-apiserver's max-in-flight filter (the one it runs without API Priority and
//! Fairness): read-only requests (`get`, `list`) and mutating ones (everything else) each
//! have a number of seats (default 400 and 200, `0` for no limit); a request takes a seat
//! for as long as its handler runs, and one that finds none free is answered at once with
//! 429 TooManyRequests, `Retry-After: 1` and Kubernetes' message "Too many requests, please
//! try again later." (Kubernetes writes that message as plain text; here it is the message
//! of a `Status`, which every client reads too). Long-running requests (watches, `log`,
//! `exec`, `attach`, `portforward`, `proxy`) take no seat, as Kubernetes'. Exempt, as
//! APF's `exempt` priority level and `probes` FlowSchema are: `system:masters` (the cluster
//! admin, and the server's own loopback client, is never refused and takes no seat) and the
//! health probes `/healthz`, `/livez` and `/readyz` (a busy server is not a dead one).
//!
//! Fairness, instead of APF's priority levels and fair queuing: a user (APF's flow, by user
//! name) may hold at most `seats / (n + 1)` seats of a class (at least one), `n` being the
//! number of users holding seats of it, the requester included. A greedy client alone gets
//! half the seats, two share two thirds, and so on: there is always room for one more
//! user, so no client can take every seat from the others. What APF does and this does
//! not: priority levels and FlowSchemas (system components before workloads), queuing
//! (requests over the limit wait up to 15 s in a shuffle-sharded queue instead of getting
//! an immediate 429), and seat estimates (a large LIST takes several seats).
//!
//! Runs after authentication and authorization (it needs the user and the verb); an
//! unauthorized request is refused before it could take a seat.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::HeaderValue;

use crate::authn::{GROUP_MASTERS, Identity};
use crate::authz::RequestInfo;
use crate::error::ApiError;

/// kube-apiserver's default `--max-requests-inflight`.
pub const DEFAULT_MAX_REQUESTS_INFLIGHT: usize = 400;
/// kube-apiserver's default `--max-mutating-requests-inflight`.
pub const DEFAULT_MAX_MUTATING_REQUESTS_INFLIGHT: usize = 200;
/// The message of a 429, as kube-apiserver words it.
pub const TOO_MANY_REQUESTS: &str = "Too many requests, please try again later.";

/// Subresources whose requests are long-running (kube-apiserver's
/// `--long-running-request-regexp` defaults, as subresources).
const LONG_RUNNING_SUBRESOURCES: &[&str] = &["log", "exec", "attach", "portforward", "proxy"];

/// The seats of one kind of request.
struct Class {
    /// `readOnly` or `mutating`, as kube-apiserver's `request_kind` label.
    kind: &'static str,
    /// At most this many at once; `0` for no limit.
    limit: usize,
    seats: Mutex<Seats>,
    /// Requests refused with 429.
    dropped: AtomicU64,
}

/// Who holds the seats of a class.
#[derive(Default)]
struct Seats {
    total: usize,
    by_user: HashMap<String, usize>,
}

fn lock(m: &Mutex<Seats>) -> MutexGuard<'_, Seats> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Why a request got no seat.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Refusal {
    /// Every seat of the class is taken.
    Full,
    /// The user holds its fair share already.
    UserShare,
}

impl Class {
    fn new(kind: &'static str, limit: usize) -> Self {
        Class {
            kind,
            limit,
            seats: Mutex::new(Seats::default()),
            dropped: AtomicU64::new(0),
        }
    }

    /// A seat for `user`, if the class has one free and the user is under its share.
    fn take(self: &Arc<Self>, user: &str) -> Result<Seat, Refusal> {
        let mut seats = lock(&self.seats);
        if seats.total >= self.limit {
            return Err(Refusal::Full);
        }
        let held = seats.by_user.get(user).copied().unwrap_or(0);
        let users = seats.by_user.len() + usize::from(held == 0);
        let share = (self.limit / (users + 1)).max(1);
        if held >= share {
            return Err(Refusal::UserShare);
        }
        seats.total += 1;
        *seats.by_user.entry(user.to_owned()).or_insert(0) += 1;
        Ok(Seat {
            class: Arc::clone(self),
            user: user.to_owned(),
        })
    }

    fn in_flight(&self) -> usize {
        lock(&self.seats).total
    }
}

/// A seat held by a request; given back when dropped.
struct Seat {
    class: Arc<Class>,
    user: String,
}

impl Drop for Seat {
    fn drop(&mut self) {
        let mut seats = lock(&self.class.seats);
        seats.total -= 1;
        if let Some(held) = seats.by_user.get_mut(&self.user) {
            *held -= 1;
            if *held == 0 {
                seats.by_user.remove(&self.user);
            }
        }
    }
}

/// The in-flight limits of one apiserver; cheap to clone.
#[derive(Clone)]
pub struct InFlight {
    read_only: Arc<Class>,
    mutating: Arc<Class>,
}

impl InFlight {
    /// Limits of `max_requests_inflight` read-only and `max_mutating_requests_inflight`
    /// mutating requests at once (`0`: no limit).
    pub fn new(max_requests_inflight: usize, max_mutating_requests_inflight: usize) -> Self {
        InFlight {
            read_only: Arc::new(Class::new("readOnly", max_requests_inflight)),
            mutating: Arc::new(Class::new("mutating", max_mutating_requests_inflight)),
        }
    }

    /// kube-apiserver's `apiserver_current_inflight_requests{request_kind}` (gauge) and
    /// `apiserver_dropped_requests_total{request_kind}` (counter), in the text format.
    pub fn render(&self, out: &mut String) {
        out.push_str(
            "# HELP apiserver_current_inflight_requests [STABLE] Maximal number of currently used inflight request limit of this apiserver per request kind in last second.\n\
             # TYPE apiserver_current_inflight_requests gauge\n",
        );
        for class in [&self.mutating, &self.read_only] {
            let _ = writeln!(
                out,
                "apiserver_current_inflight_requests{{request_kind=\"{}\"}} {}",
                class.kind,
                class.in_flight()
            );
        }
        out.push_str(
            "# HELP apiserver_dropped_requests_total [ALPHA] Number of requests dropped with 'Try again later' response.\n\
             # TYPE apiserver_dropped_requests_total counter\n",
        );
        for class in [&self.mutating, &self.read_only] {
            let _ = writeln!(
                out,
                "apiserver_dropped_requests_total{{request_kind=\"{}\"}} {}",
                class.kind,
                class.dropped.load(Ordering::Relaxed)
            );
        }
    }
}

/// The health probes, which take no seat (APF's `probes` FlowSchema is exempt).
const PROBES: &[&str] = &["/healthz", "/livez", "/readyz"];

/// Whether a request is long-running (takes no seat), as kube-apiserver's
/// `BasicLongRunningRequestCheck`: watches, proxies and the streaming subresources.
pub fn is_long_running(info: &RequestInfo) -> bool {
    info.verb == "watch"
        || info.verb == "proxy"
        || (info.resource_request && LONG_RUNNING_SUBRESOURCES.contains(&info.subresource.as_str()))
}

/// The 429 of a refused request.
pub fn too_many_requests() -> Response {
    let mut error = ApiError::too_many_requests(TOO_MANY_REQUESTS);
    error.details = Some(serde_json::json!({"retryAfterSeconds": 1}));
    let mut response = error.into_response();
    response
        .headers_mut()
        .insert(http::header::RETRY_AFTER, HeaderValue::from_static("1"));
    response
}

/// Axum middleware: a seat for every request that is not long-running, or a 429.
/// Needs the [`Identity`] and [`RequestInfo`] extensions authentication adds.
pub async fn limit(State(limits): State<InFlight>, req: Request, next: Next) -> Response {
    let Some(info) = req.extensions().get::<RequestInfo>() else {
        return next.run(req).await;
    };
    let identity = req.extensions().get::<Identity>();
    let exempt = identity.is_some_and(|i| i.in_group(GROUP_MASTERS))
        || (!info.resource_request && PROBES.contains(&info.path.as_str()));
    if exempt || is_long_running(info) {
        return next.run(req).await;
    }
    let class = if matches!(info.verb.as_str(), "get" | "list" | "watch") {
        &limits.read_only
    } else {
        &limits.mutating
    };
    if class.limit == 0 {
        return next.run(req).await;
    }
    let user = identity.map_or("", |i| i.user.as_str()).to_owned();
    match class.take(&user) {
        Ok(seat) => {
            let response = next.run(req).await;
            drop(seat);
            response
        }
        Err(refusal) => {
            class.dropped.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(
                %user,
                kind = class.kind,
                ?refusal,
                "too many requests in flight"
            );
            too_many_requests()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_class_refuses_and_a_returned_seat_is_free_again() {
        let class = Arc::new(Class::new("mutating", 1));
        let seat = class.take("alice").expect("the only seat");
        assert_eq!(class.take("bob").err(), Some(Refusal::Full));
        drop(seat);
        assert!(class.take("bob").is_ok());
        assert_eq!(class.in_flight(), 0);
    }

    #[test]
    fn one_user_never_takes_every_seat() {
        let class = Arc::new(Class::new("readOnly", 8));
        let alice: Vec<Seat> = (0..4)
            .map(|_| class.take("alice").expect("a seat"))
            .collect();
        // Alone, alice has half the seats: the rest are for others.
        assert_eq!(class.take("alice").err(), Some(Refusal::UserShare));
        let bob = class.take("bob").expect("bob is served");
        // Now three shares: alice is over hers, bob at his (8 / 3 = 2).
        let bob2 = class.take("bob").expect("bob's second");
        assert_eq!(class.take("bob").err(), Some(Refusal::UserShare));
        let carol = class.take("carol").expect("a newcomer is served");
        assert_eq!(class.in_flight(), 7);
        // The last seat goes to one more newcomer; then the class is full for everyone.
        let dave = class.take("dave").expect("the last seat");
        assert_eq!(class.take("erin").err(), Some(Refusal::Full));
        drop((alice, bob, bob2, carol, dave));
        assert_eq!(class.in_flight(), 0);
        assert!(lock(&class.seats).by_user.is_empty());
    }

    #[test]
    fn watches_and_streaming_subresources_are_long_running() {
        let info = |verb: &str, subresource: &str| RequestInfo {
            resource_request: true,
            verb: verb.into(),
            subresource: subresource.into(),
            ..RequestInfo::default()
        };
        assert!(is_long_running(&info("watch", "")));
        assert!(is_long_running(&info("get", "log")));
        assert!(!is_long_running(&info("list", "")));
        assert!(!is_long_running(&info("update", "status")));
    }

    #[test]
    fn metrics_show_seats_and_refusals() {
        let limits = InFlight::new(2, 1);
        let _seat = limits.mutating.take("a").expect("a seat");
        limits.mutating.dropped.fetch_add(1, Ordering::Relaxed);
        let mut text = String::new();
        limits.render(&mut text);
        assert!(
            text.contains("apiserver_current_inflight_requests{request_kind=\"mutating\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("apiserver_current_inflight_requests{request_kind=\"readOnly\"} 0\n"),
            "{text}"
        );
        assert!(
            text.contains("apiserver_dropped_requests_total{request_kind=\"mutating\"} 1\n"),
            "{text}"
        );
    }
}
