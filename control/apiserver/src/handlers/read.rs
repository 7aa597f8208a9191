//! `get` and `list` (with selectors, paging and resourceVersion semantics).

use axum::response::Response;
use base64::Engine;
use http::StatusCode;
use serde_json::{Value, json};
use wasmkube_store::{ListOptions, Revision};

use super::{Request, json_response, object_response, partial_metadata, store_error};
use crate::error::{ApiError, ApiResult};
use crate::filter::Filter;
use crate::object;
use crate::request::Output;

/// How many keys one store page reads while filtering a list.
const PAGE: usize = 500;

/// Reads one object (404 if absent).
pub async fn get(req: &Request<'_>, name: &str) -> ApiResult<Response> {
    let obj = read_object(req, name).await?.0;
    Ok(object_response(req, StatusCode::OK, obj))
}

/// Reads one object and its mod revision.
pub async fn read_object(req: &Request<'_>, name: &str) -> ApiResult<(Value, Revision)> {
    let key = req.rt.key(req.store_namespace(), name);
    match req.state.store().get(&key).await {
        Ok(Some(kv)) => Ok((object::decode(&kv)?, kv.mod_revision)),
        Ok(None) => Err(ApiError::not_found(req.rt.group, req.rt.plural, name)),
        Err(e) => Err(store_error(req.rt, name, e)),
    }
}

/// The store prefix a collection request covers.
pub fn collection_prefix(req: &Request<'_>) -> String {
    match req.store_namespace() {
        Some(ns) => format!("{}{ns}/", req.rt.key_prefix()),
        None => req.rt.key_prefix(),
    }
}

/// A continue token: the snapshot revision and the last key returned.
#[derive(serde::Serialize, serde::Deserialize)]
struct Continue {
    v: String,
    rv: Revision,
    start: String,
}

fn encode_continue(rv: Revision, key: &str) -> String {
    let token = Continue {
        v: "meta.k8s.io/v1".into(),
        rv,
        start: key.to_string(),
    };
    base64::engine::general_purpose::URL_SAFE.encode(serde_json::to_vec(&token).unwrap_or_default())
}

fn decode_continue(token: &str, prefix: &str) -> ApiResult<Continue> {
    let bad = || {
        ApiError::bad_request(
            "continue key is not valid: it must come from a previous list response",
        )
    };
    let bytes = base64::engine::general_purpose::URL_SAFE
        .decode(token)
        .or_else(|_| base64::engine::general_purpose::STANDARD.decode(token))
        .map_err(|_| bad())?;
    let c: Continue = serde_json::from_slice(&bytes).map_err(|_| bad())?;
    if c.v != "meta.k8s.io/v1" || !c.start.starts_with(prefix) {
        return Err(bad());
    }
    Ok(c)
}

/// The result of a filtered, paged list.
pub struct Listed {
    pub items: Vec<Value>,
    pub revision: Revision,
    pub continue_token: Option<String>,
}

/// Lists the collection of `req` with its selectors, limit and continue token.
pub async fn list_objects(req: &Request<'_>, filter: &Filter) -> ApiResult<Listed> {
    let prefix = collection_prefix(req);
    let limit = req
        .query
        .int("limit")?
        .filter(|l| *l > 0)
        .map(|l| l as usize);
    let (mut revision, mut start_after) = match req.query.get("continue") {
        Some(token) => {
            let c = decode_continue(token, &prefix)?;
            (Some(c.rv), Some(c.start))
        }
        None => {
            let exact = req.query.get("resourceVersionMatch") == Some("Exact");
            match (req.query.get("resourceVersion"), exact) {
                (Some(rv), true) => (Some(object::parse_rv(rv)?), None),
                (Some(rv), false) => {
                    object::parse_rv(rv)?;
                    (None, None)
                }
                (None, true) => {
                    return Err(ApiError::bad_request(
                        "resourceVersionMatch is forbidden unless resourceVersion is provided",
                    ));
                }
                (None, false) => (None, None),
            }
        }
    };
    let mut items = Vec::new();
    let mut continue_token = None;
    loop {
        let page_size = match limit {
            Some(l) => (l - items.len()).clamp(1, PAGE) + 1,
            None => PAGE,
        };
        let page = req
            .state
            .store()
            .list(ListOptions { prefix: prefix.clone(), start_after: start_after.clone(), limit: Some(page_size), revision })
            .await
            .map_err(|e| match e {
                wasmkube_store::StoreError::Compacted { .. } if req.query.get("continue").is_some() => ApiError::gone(
                    "The provided continue parameter is too old to display a consistent list result. \
                     You can start a new list without the continue parameter.",
                ),
                other => store_error(req.rt, "", other),
            })?;
        revision = Some(page.revision);
        let count = page.items.len();
        for (i, kv) in page.items.iter().enumerate() {
            let obj = object::decode(kv)?;
            if !filter.matches(&obj) {
                start_after = Some(kv.key.clone());
                continue;
            }
            items.push(obj);
            start_after = Some(kv.key.clone());
            if limit.is_some_and(|l| items.len() >= l) {
                let more_here = i + 1 < count || page.more;
                if more_here {
                    continue_token = Some(encode_continue(page.revision, &kv.key));
                }
                return Ok(Listed {
                    items,
                    revision: page.revision,
                    continue_token,
                });
            }
        }
        if !page.more {
            break;
        }
    }
    Ok(Listed {
        items,
        revision: revision.unwrap_or(0),
        continue_token,
    })
}

/// Lists a collection.
pub async fn list(req: &Request<'_>) -> ApiResult<Response> {
    let filter = Filter::from_query(req.rt, &req.query)?;
    let listed = list_objects(req, &filter).await?;
    let rv = listed.revision.to_string();
    let body = match req.output {
        Output::Table => crate::table::to_table(
            req.rt,
            &listed.items,
            req.include,
            jiff::Timestamp::now(),
            &rv,
            listed.continue_token.as_deref(),
            None,
        ),
        Output::Metadata => {
            let mut meta = json!({ "resourceVersion": rv });
            if let Some(c) = &listed.continue_token {
                meta["continue"] = json!(c);
            }
            json!({
                "kind": "PartialObjectMetadataList",
                "apiVersion": "meta.k8s.io/v1",
                "metadata": meta,
                "items": listed.items.iter().map(partial_metadata).collect::<Vec<_>>(),
            })
        }
        Output::Object => {
            let mut meta = json!({ "resourceVersion": rv });
            if let Some(c) = &listed.continue_token {
                meta["continue"] = json!(c);
            }
            let items: Vec<Value> = listed
                .items
                .into_iter()
                .map(|mut o| {
                    if let Some(m) = o.as_object_mut() {
                        m.remove("kind");
                        m.remove("apiVersion");
                    }
                    o
                })
                .collect();
            json!({
                "kind": format!("{}List", req.rt.kind),
                "apiVersion": req.rt.api_version(),
                "metadata": meta,
                "items": items,
            })
        }
    };
    Ok(json_response(StatusCode::OK, &body))
}
