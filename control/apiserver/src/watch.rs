//! Watch: a stream of newline-delimited `{"type": ..., "object": ...}` events.
//!
//! Semantics follow Kubernetes: without a resourceVersion (or with `0`, or with
//! `sendInitialEvents=true`) the current state comes first as ADDED events; with a
//! resourceVersion, every change after it. A resourceVersion older than the retained
//! history is answered with an ERROR event carrying a 410 Expired status, so clients
//! (kube-rs' watcher, client-go's reflector) relist. With selectors, an object that
//! stops matching is reported as DELETED and one that starts matching as ADDED.

use std::time::Duration;

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::StatusCode;
use rand::Rng;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use wasmkube_store::{Event, Revision, StoreError, Watch};

use crate::error::{ApiError, ApiResult};
use crate::filter::Filter;
use crate::handlers::read::{collection_prefix, list_objects};
use crate::handlers::{Request, partial_metadata};
use crate::object;
use crate::registry::ResourceType;
use crate::request::Output;

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
    let (tx, rx) = mpsc::channel::<Bytes>(256);

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
            let _ = tx.try_send(error_event(&err));
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
            let _registered = registered;
            for obj in initial {
                if tx.send(encoder.event("ADDED", obj)).await.is_err() {
                    return;
                }
            }
            if send_initial && bookmarks && tx.send(encoder.bookmark(start, true)).await.is_err() {
                return;
            }
            pump(&mut *watch, &filter, &mut encoder, &tx, timeout, bookmarks).await;
        });
    }
    let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
    let body = Body::from_stream(futures::StreamExt::map(
        stream,
        Ok::<_, std::convert::Infallible>,
    ));
    Ok((
        StatusCode::OK,
        [(http::header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response())
}

/// Forwards store events until the client leaves, the timeout passes or the watch breaks.
async fn pump(
    watch: &mut dyn Watch,
    filter: &Filter,
    encoder: &mut Encoder,
    tx: &mpsc::Sender<Bytes>,
    timeout: Duration,
    bookmarks: bool,
) {
    let deadline = tokio::time::sleep(timeout);
    tokio::pin!(deadline);
    let mut ticker = tokio::time::interval(BOOKMARK_EVERY);
    ticker.tick().await;
    loop {
        tokio::select! {
            _ = tx.closed() => return,
            _ = &mut deadline => return,
            _ = ticker.tick(), if bookmarks => {
                if tx.send(encoder.bookmark(watch.progress(), false)).await.is_err() {
                    return;
                }
            }
            next = watch.next() => match next {
                Ok(event) => {
                    let Some((kind, obj)) = translate(&event, filter) else { continue };
                    if tx.send(encoder.event(kind, obj)).await.is_err() {
                        return;
                    }
                }
                Err(StoreError::WatcherTooSlow { revision }) => {
                    let err = ApiError::gone(format!("too old resource version: {revision}"));
                    let _ = tx.send(error_event(&err)).await;
                    return;
                }
                Err(e) => {
                    tracing::debug!(error = %e, "watch ended");
                    return;
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
