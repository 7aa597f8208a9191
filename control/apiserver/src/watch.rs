//! Watch: a stream of newline-delimited `{"type": ..., "object": ...}` events.
//!
//! Semantics follow Kubernetes: without a resourceVersion (or with `0`, or with
//! `sendInitialEvents=true`) the current state comes first as ADDED events; with a
//! resourceVersion, every change after it. A resourceVersion older than the retained
//! history is answered with an ERROR event carrying a 410 Expired status, so clients
//! (kube-rs' watcher, client-go's reflector) relist. With selectors, an object that
//! stops matching is reported as DELETED and one that starts matching as ADDED.
//!
//! Each watcher's encoded events wait in a buffer bounded in bytes ([`buffer`]); a client
//! that leaves it full for too long is closed, and watches again or relists.

use std::time::Duration;

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::StatusCode;
use rand::Rng;
use serde_json::{Value, json};
use wasmkube_store::{Event, Revision, StoreError, Watch};

use crate::error::{ApiError, ApiResult};
use crate::filter::Filter;
use crate::handlers::read::{collection_prefix, list_objects};
use crate::handlers::{Request, partial_metadata};
use crate::metrics::WatchRegistration;
use crate::object;
use crate::registry::ResourceType;
use crate::request::Output;

pub mod buffer;

use buffer::{SendError, Sender};

/// How often an idle watch with `allowWatchBookmarks` gets a BOOKMARK.
const BOOKMARK_EVERY: Duration = Duration::from_secs(30);

/// Encodes events in the client's requested form.
struct Encoder {
    rt: ResourceType,
    output: Output,
    tables: crate::table::WatchTables,
}

impl Encoder {
    fn event(&mut self, kind: &str, obj: Value) -> Bytes {
        let object = match self.output {
            Output::Object => obj,
            Output::Metadata => partial_metadata(&obj),
            Output::Table => self.tables.next_object(&obj, jiff::Timestamp::now()),
        };
        line(&json!({"type": kind, "object": object}))
    }

    fn bookmark(&self, rv: Revision, initial_events_end: bool) -> Bytes {
        let mut meta = json!({"resourceVersion": rv.to_string()});
        if initial_events_end {
            meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        let object =
            json!({"kind": self.rt.kind, "apiVersion": self.rt.api_version(), "metadata": meta});
        line(&json!({"type": "BOOKMARK", "object": object}))
    }
}

fn line(v: &Value) -> Bytes {
    let mut buf = serde_json::to_vec(v).unwrap_or_default();
    buf.push(b'\n');
    Bytes::from(buf)
}

fn error_event(err: &ApiError) -> Bytes {
    line(&json!({"type": "ERROR", "object": err.status()}))
}

/// Serves a watch request.
pub async fn serve(req: &Request<'_>) -> ApiResult<Response> {
    let filter = Filter::from_query(req.rt, &req.query)?;
    let timeout = match req.query.int("timeoutSeconds")? {
        Some(t) if t > 0 => Duration::from_secs(t as u64),
        _ => Duration::from_secs(rand::rng().random_range(1800..3600)),
    };
    let bookmarks = req.query.flag("allowWatchBookmarks");
    let send_initial = req.query.flag("sendInitialEvents");
    let rv = match req.query.get("resourceVersion") {
        None => None,
        Some(rv) => Some(object::parse_rv(rv)?),
    };
    let mut encoder = Encoder {
        rt: req.rt.clone(),
        output: req.output,
        tables: crate::table::WatchTables::new(req.rt, req.include),
    };
    let (tx, rx) = buffer::buffer(buffer::BUFFER_BYTES, buffer::SLOW_WATCHER_TIMEOUT);

    // The initial state, when asked for.
    let mut initial = Vec::new();
    let start = if rv.is_none() || rv == Some(0) || send_initial {
        let listing = Request {
            state: req.state,
            rt: req.rt,
            namespace: req.namespace.clone(),
            query: crate::request::Query::default(),
            headers: req.headers.clone(),
            output: req.output,
            include: req.include,
            user: req.user.clone(),
        };
        let listed = list_objects(&listing, &filter).await?;
        initial = listed.items;
        listed.revision
    } else {
        rv.unwrap_or(0)
    };

    let prefix = collection_prefix(req);
    let watch = match req.state.store().watch(&prefix, start).await {
        Ok(w) => Some(w),
        Err(StoreError::Compacted {
            requested,
            compacted,
        }) => {
            let err = ApiError::gone(format!(
                "too old resource version: {requested} ({compacted})"
            ));
            // The buffer is empty: the event goes in at once.
            let _ = tx.send(error_event(&err)).await;
            None
        }
        Err(e) => return Err(crate::handlers::store_error(req.rt, "", e)),
    };

    if let Some(mut watch) = watch {
        let state_store = req.state.store().clone();
        let registered = req
            .state
            .metrics()
            .watch_started(req.rt, req.namespace.as_deref());
        tokio::spawn(async move {
            let _keep = state_store;
            // Counted in `apiserver_registered_watchers` until the watch ends.
            let sent = async {
                for obj in initial {
                    tx.send(encoder.event("ADDED", obj)).await?;
                }
                if send_initial && bookmarks {
                    tx.send(encoder.bookmark(start, true)).await?;
                }
                pump(&mut *watch, &filter, &mut encoder, &tx, timeout, bookmarks).await
            }
            .await;
            if sent == Err(SendError::TooSlow) {
                too_slow(&registered, &encoder.rt);
            }
        });
    }
    let body = Body::from_stream(futures::StreamExt::map(
        rx,
        Ok::<_, std::convert::Infallible>,
    ));
    Ok((
        StatusCode::OK,
        [(http::header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response())
}

/// A watcher closed for reading too slowly: counted, and logged as Kubernetes does.
fn too_slow(registered: &WatchRegistration, rt: &ResourceType) {
    registered.terminated();
    tracing::info!(
        resource = rt.plural,
        group = rt.group,
        "Forcing watcher close due to unresponsiveness: its buffer stayed full"
    );
}

/// Forwards store events until the client leaves, the timeout passes or the watch breaks;
/// `Err` when the client left or was too slow.
async fn pump(
    watch: &mut dyn Watch,
    filter: &Filter,
    encoder: &mut Encoder,
    tx: &Sender,
    timeout: Duration,
    bookmarks: bool,
) -> Result<(), SendError> {
    let deadline = tokio::time::sleep(timeout);
    tokio::pin!(deadline);
    let mut ticker = tokio::time::interval(BOOKMARK_EVERY);
    ticker.tick().await;
    loop {
        tokio::select! {
            () = tx.closed() => return Err(SendError::Closed),
            () = &mut deadline => return Ok(()),
            _ = ticker.tick(), if bookmarks => {
                tx.send(encoder.bookmark(watch.progress(), false)).await?;
            }
            next = watch.next() => match next {
                Ok(event) => {
                    let Some((kind, obj)) = translate(&event, filter) else { continue };
                    tx.send(encoder.event(kind, obj)).await?;
                }
                Err(StoreError::WatcherTooSlow { revision }) => {
                    let err = ApiError::gone(format!("too old resource version: {revision}"));
                    return tx.send(error_event(&err)).await;
                }
                Err(e) => {
                    tracing::debug!(error = %e, "watch ended");
                    return Ok(());
                }
            }
        }
    }
}

/// Turns a store event into a watch event, applying the selectors.
fn translate(event: &Event, filter: &Filter) -> Option<(&'static str, Value)> {
    match event {
        Event::Put { kv, prev } => {
            let new = object::decode(kv).ok()?;
            let now = filter.matches(&new);
            let before = match prev {
                Some(p) if !filter.is_everything() => object::decode(p)
                    .map(|o| filter.matches(&o))
                    .unwrap_or(false),
                Some(_) => true,
                None => false,
            };
            match (before, now) {
                (false, true) => Some(("ADDED", new)),
                (true, true) => Some(("MODIFIED", new)),
                (true, false) => Some(("DELETED", new)),
                (false, false) => None,
            }
        }
        Event::Delete { revision, prev } => {
            let old = object::decode_at(&prev.value, *revision).ok()?;
            filter.matches(&old).then_some(("DELETED", old))
        }
    }
}
