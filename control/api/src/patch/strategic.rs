//! Applying a Kubernetes strategic merge patch.
//!
//! Follows `StrategicMergeMapPatch` of k8s.io/apimachinery/pkg/util/strategicpatch (the
//! server-side apply path: parallel lists merged, unmatched `null`s ignored):
//!
//! - Maps merge recursively; `null` deletes a key; scalars and values of another type replace.
//! - Lists replace, unless the field's metadata ([`super::schema`]) says `merge`: lists of
//!   objects then merge element by element on the merge key (a patch element with the key of a
//!   live element is merged into it, others are added), lists of primitives become the union.
//!   The result is ordered as [`super::order`] describes.
//! - Directives, removed from the result:
//!   - `$patch: replace` in a map replaces the map with the rest of the patch map; as a list
//!     element it replaces the whole list with the other elements.
//!   - `$patch: delete` in a map empties it; as a list element it deletes the live elements
//!     with the same merge key.
//!   - `$patch: merge` is the default behaviour, accepted and ignored (Kubernetes rejects it;
//!     accepting it is harmless).
//!   - `$retainKeys: [..]` clears every key of the live map it does not list; every key the
//!     patch sets must be listed.
//!   - `$setElementOrder/<field>: [..]` orders the merged list `<field>`: listed elements in
//!     that order, live-only elements keep their relative order around them.
//!   - `$deleteFromPrimitiveList/<field>: [..]` removes those values from the list `<field>`.
//!
//! Where the live object has no value for a key (or one of another type), the patch value is
//! taken after its directives are processed against an empty value, so the result never holds
//! a directive. (Kubernetes copies such values nearly raw and relies on decoding into Go structs
//! to drop leftover directive keys; a generic `Value` store has no such filter.)

use serde_json::{Map, Value};

use super::PatchError;
use super::order::{self, Identity};
use super::schema::{Field, Strategy, Ty};

/// The `$patch` directive key.
pub(super) const DIRECTIVE: &str = "$patch";
const RETAIN_KEYS: &str = "$retainKeys";
const SET_ELEMENT_ORDER: &str = "$setElementOrder";
const DELETE_FROM_PRIMITIVE_LIST: &str = "$deleteFromPrimitiveList";

const BAD_RETAIN_KEYS: &str = "invalid patch format of retainKeys";
const BAD_SET_ELEMENT_ORDER: &str = "invalid patch format of setElementOrder list";
const BAD_PRIMITIVE_LIST: &str = "invalid patch format of primitive list";

type Object = Map<String, Value>;

/// Applies strategic merge `patch` to `original`, an object walked as type `root`.
pub(super) fn apply(root: Ty, original: &Value, patch: &Value) -> Result<Value, PatchError> {
    let patch = match patch {
        // Kubernetes decodes a `null` body into an empty patch.
        Value::Null => return Ok(original.clone()),
        Value::Object(p) => p.clone(),
        _ => {
            return Err(PatchError::malformed(
                "invalid strategic merge patch: the patch must be a JSON object",
            ));
        }
    };
    let original = original.as_object().cloned().unwrap_or_default();
    merge_map(original, patch, root).map(Value::Object)
}

/// Merges `patch` into `original`, both maps of type `ty`.
fn merge_map(mut original: Object, mut patch: Object, ty: Ty) -> Result<Object, PatchError> {
    if let Some(directive) = patch.remove(DIRECTIVE) {
        match directive.as_str() {
            Some("replace") => return merge_map(Object::new(), patch, ty),
            Some("delete") => return Ok(Object::new()),
            Some("merge") => {}
            _ => {
                return Err(PatchError::malformed(format!(
                    "unknown patch type: {directive} in map: {}",
                    Value::Object(patch)
                )));
            }
        }
    }
    apply_retain_keys(&mut original, &mut patch)?;
    apply_set_element_orders(&mut original, &mut patch, ty)?;

    for (key, value) in patch {
        if key.starts_with(DELETE_FROM_PRIMITIVE_LIST) {
            let name = directive_field(&key, DELETE_FROM_PRIMITIVE_LIST, BAD_PRIMITIVE_LIST)?;
            delete_from_list(&mut original, &name, value)?;
            continue;
        }
        if value.is_null() {
            remove_key(&mut original, &key);
            continue;
        }
        let field = ty.field(&key);
        let Some(slot) = original.get_mut(&key) else {
            if let Some(fresh) = fresh_value(value, field)? {
                original.insert(key, fresh);
            }
            continue;
        };
        match (std::mem::take(slot), value) {
            (Value::Object(live), Value::Object(p)) => {
                *slot = Value::Object(match field.strategy {
                    Strategy::Replace => merge_map(Object::new(), p, field.ty)?,
                    Strategy::Default | Strategy::Merge => merge_map(live, p, field.ty)?,
                });
            }
            (Value::Array(live), Value::Array(p)) => {
                *slot = Value::Array(merge_list_field(live, p, field, &key)?);
            }
            (_, value) => match fresh_value(value, field)? {
                Some(fresh) => *slot = fresh,
                None => remove_key(&mut original, &key),
            },
        }
    }
    Ok(original)
}

/// Removes `key` without disturbing the order of the other keys (`Map::remove` may swap).
fn remove_key(map: &mut Object, key: &str) {
    map.retain(|k, _| k != key);
}

/// The field named by a `<prefix>/<field>` directive key.
fn directive_field(key: &str, prefix: &str, format_error: &str) -> Result<String, PatchError> {
    key.strip_prefix(prefix)
        .and_then(|rest| rest.strip_prefix('/'))
        .filter(|field| !field.is_empty())
        .map(str::to_string)
        .ok_or_else(|| PatchError::malformed(format!("{format_error}: {key}")))
}

/// What a patch value becomes where the live object has nothing to merge it into: its
/// directives processed against an empty value. `None` when it deletes itself.
fn fresh_value(value: Value, field: Field) -> Result<Option<Value>, PatchError> {
    match value {
        Value::Object(p) if is_delete(&p) => Ok(None),
        Value::Object(p) => Ok(Some(Value::Object(merge_map(Object::new(), p, field.ty)?))),
        Value::Array(items) => Ok(Some(Value::Array(fresh_list(items, field.ty)?))),
        scalar => Ok(Some(scalar)),
    }
}

/// A patch list taken as is: elements that only carry a directive are dropped, `$patch:
/// delete` elements too, and object elements are cleaned of directives.
fn fresh_list(items: Vec<Value>, elem_ty: Ty) -> Result<Vec<Value>, PatchError> {
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        match item {
            Value::Object(m) if is_delete(&m) => {}
            Value::Object(m) if m.len() == 1 && m.contains_key(DIRECTIVE) => {}
            Value::Object(m) => out.push(Value::Object(merge_map(Object::new(), m, elem_ty)?)),
            other => out.push(other),
        }
    }
    Ok(out)
}

fn is_delete(m: &Object) -> bool {
    m.get(DIRECTIVE).and_then(Value::as_str) == Some("delete")
}

/// How a list is identified for ordering: by merge key, or by value.
fn identity(field: &Field) -> Identity<'static> {
    field.merge_key.map_or(Identity::Value, Identity::Key)
}

/// Combines the live list `live` with the patch list `patch` of field `field`.
fn merge_list_field(
    live: Vec<Value>,
    patch: Vec<Value>,
    field: Field,
    name: &str,
) -> Result<Vec<Value>, PatchError> {
    match field.strategy {
        Strategy::Merge => merge_list(live, patch, field, name),
        Strategy::Default | Strategy::Replace => fresh_list(patch, field.ty),
    }
}

/// Whether a list holds objects or primitives; lists of lists and mixed lists are refused.
fn holds_objects(live: &[Value], patch: &[Value], name: &str) -> Result<bool, PatchError> {
    let mut first = None;
    for v in live.iter().chain(patch) {
        let kind = match v {
            Value::Array(_) => {
                return Err(PatchError::unprocessable(format!(
                    "lists of lists are not supported ({name})"
                )));
            }
            Value::Object(_) => 0,
            Value::String(_) => 1,
            Value::Number(_) => 2,
            Value::Bool(_) => 3,
            Value::Null => 4,
        };
        match first {
            None => first = Some(kind),
            Some(f) if f != kind => {
                return Err(PatchError::unprocessable(format!(
                    "list element types are not identical in {name}"
                )));
            }
            Some(_) => {}
        }
    }
    Ok(first == Some(0))
}

/// Merges two lists of a field with the `merge` strategy.
fn merge_list(
    live: Vec<Value>,
    patch: Vec<Value>,
    field: Field,
    name: &str,
) -> Result<Vec<Value>, PatchError> {
    if live.is_empty() && patch.is_empty() {
        return Ok(live);
    }
    if !holds_objects(&live, &patch, name)? {
        if let Some(key) = field.merge_key {
            return Err(PatchError::unprocessable(format!(
                "{name} must be a list of maps with merge key {key}"
            )));
        }
        let mut merged: Vec<Value> = Vec::with_capacity(live.len() + patch.len());
        for v in live.iter().chain(&patch) {
            if !merged.contains(v) {
                merged.push(v.clone());
            }
        }
        let (patch_items, server_only) = order::partition(merged, &patch, Identity::Value)?;
        return order::normalize(patch_items, server_only, &patch, &live, Identity::Value);
    }

    let Some(key) = field.merge_key else {
        return Err(PatchError::unprocessable(format!(
            "cannot merge lists without merge key for {name}"
        )));
    };
    let (live, patch) = apply_element_directives(live, patch, key, field.ty)?;
    let mut merged = live.clone();
    for element in &patch {
        let value = order::key_of(element, key)?;
        let Value::Object(p) = element.clone() else {
            continue;
        };
        match merged.iter().position(|e| e.get(key) == Some(value)) {
            Some(i) => {
                let Value::Object(current) = std::mem::take(&mut merged[i]) else {
                    continue;
                };
                merged[i] = Value::Object(merge_map(current, p, field.ty)?);
            }
            None => merged.push(Value::Object(merge_map(Object::new(), p, field.ty)?)),
        }
    }
    let identity = Identity::Key(key);
    let (patch_items, server_only) = order::partition(merged, &patch, identity)?;
    order::normalize(patch_items, server_only, &patch, &live, identity)
}

/// Handles `$patch` elements of a merged list of objects: deletions are applied to `live`,
/// a `replace` makes the remaining patch elements the new live list. Returns the live list
/// and the patch elements still to merge.
fn apply_element_directives(
    mut live: Vec<Value>,
    patch: Vec<Value>,
    key: &str,
    elem_ty: Ty,
) -> Result<(Vec<Value>, Vec<Value>), PatchError> {
    let mut rest = Vec::with_capacity(patch.len());
    let mut replace = false;
    for element in patch {
        let Value::Object(mut m) = element else {
            return Err(PatchError::unprocessable(format!("{element} is not a map")));
        };
        let Some(directive) = m.get(DIRECTIVE).cloned() else {
            rest.push(Value::Object(m));
            continue;
        };
        match directive.as_str() {
            Some("delete") => {
                let doomed = order::key_of(&Value::Object(m.clone()), key)?.clone();
                live.retain(|e| e.get(key) != Some(&doomed));
            }
            Some("replace") => replace = true,
            Some("merge") => {
                m.remove(DIRECTIVE);
                if !m.is_empty() {
                    rest.push(Value::Object(m));
                }
            }
            _ => {
                return Err(PatchError::malformed(format!(
                    "unknown patch type: {directive} in map: {}",
                    Value::Object(m)
                )));
            }
        }
    }
    if replace {
        Ok((fresh_list(rest, elem_ty)?, Vec::new()))
    } else {
        Ok((live, rest))
    }
}

/// Applies `$deleteFromPrimitiveList/<name>`: removes the listed values from the live list.
/// Kubernetes does this whatever the field's strategy; a missing live list stays missing.
fn delete_from_list(original: &mut Object, name: &str, doomed: Value) -> Result<(), PatchError> {
    let (Some(Value::Array(live)), Value::Array(doomed)) = (original.get_mut(name), doomed) else {
        return Ok(());
    };
    if holds_objects(live, &doomed, name)? {
        return Err(PatchError::malformed(format!(
            "{BAD_PRIMITIVE_LIST}: {DELETE_FROM_PRIMITIVE_LIST}/{name} must list primitive values"
        )));
    }
    live.retain(|v| !doomed.contains(v));
    Ok(())
}

/// Applies a `$retainKeys` directive: clears keys of `original` it does not list, after
/// checking that the patch sets no key it does not list.
fn apply_retain_keys(original: &mut Object, patch: &mut Object) -> Result<(), PatchError> {
    let Some(retain) = patch.remove(RETAIN_KEYS) else {
        return Ok(());
    };
    let Value::Array(retain) = retain else {
        return Err(PatchError::malformed(format!(
            "{BAD_RETAIN_KEYS}: {RETAIN_KEYS} must be a list"
        )));
    };
    let retained = |k: &str| retain.iter().any(|v| v.as_str() == Some(k));
    for (k, v) in patch.iter() {
        let directive =
            k.starts_with(DELETE_FROM_PRIMITIVE_LIST) || k.starts_with(SET_ELEMENT_ORDER);
        if !v.is_null() && !directive && !retained(k) {
            return Err(PatchError::malformed(format!(
                "{BAD_RETAIN_KEYS}: {k} is patched but not listed in {RETAIN_KEYS}"
            )));
        }
    }
    original.retain(|k, _| retained(k));
    Ok(())
}

/// Processes every `$setElementOrder/<field>` directive of `patch`: merges the patch list
/// `<field>` (if any) into the live one and orders the result; both keys leave `patch`.
fn apply_set_element_orders(
    original: &mut Object,
    patch: &mut Object,
    ty: Ty,
) -> Result<(), PatchError> {
    let keys: Vec<String> = patch
        .keys()
        .filter(|k| k.starts_with(SET_ELEMENT_ORDER))
        .cloned()
        .collect();
    for directive_key in keys {
        let name = directive_field(&directive_key, SET_ELEMENT_ORDER, BAD_SET_ELEMENT_ORDER)?;
        let Some(Value::Array(order_list)) = patch.remove(&directive_key) else {
            return Err(PatchError::malformed(format!(
                "{BAD_SET_ELEMENT_ORDER}: {directive_key} must be a list"
            )));
        };
        let live = match original.get(&name) {
            None => None,
            Some(Value::Array(live)) => Some(live.clone()),
            Some(_) => {
                return Err(PatchError::unprocessable(format!(
                    "{directive_key} orders {name}, which is not a list in the object"
                )));
            }
        };
        let patched = match patch.remove(&name) {
            None => None,
            Some(Value::Array(items)) => Some(items),
            Some(_) => {
                return Err(PatchError::malformed(format!(
                    "{BAD_SET_ELEMENT_ORDER}: {directive_key} is given but {name} is not a list"
                )));
            }
        };
        let field = ty.field(&name);
        if field.merge_key.is_none() && order_list.iter().any(Value::is_object) {
            // Objects without a merge key cannot be matched to an order (Kubernetes fails
            // on this); the directive is dropped and the list is patched as if it were absent.
            if let Some(patched) = patched {
                patch.insert(name, Value::Array(patched));
            }
            continue;
        }
        let identity = identity(&field);
        order::validate_set_element_order(
            patched.as_deref().unwrap_or_default(),
            &order_list,
            identity,
            &name,
        )?;
        let (merged, server_order) = match (live, patched) {
            (Some(live), None) => (live.clone(), live),
            (None, Some(patched)) => (fresh_list(patched, field.ty)?, Vec::new()),
            (Some(live), Some(patched)) => {
                let server_order = match (field.strategy, field.merge_key) {
                    (Strategy::Merge, Some(key)) => live_order_after_merge(&live, &patched, key),
                    _ => live.clone(),
                };
                (merge_list_field(live, patched, field, &name)?, server_order)
            }
            (None, None) => continue,
        };
        let (patch_items, server_only) = order::partition(merged, &order_list, identity)?;
        let ordered = order::normalize(
            patch_items,
            server_only,
            &order_list,
            &server_order,
            identity,
        )?;
        original.insert(name, Value::Array(ordered));
    }
    Ok(())
}

/// The live order Kubernetes interleaves server-only elements against after merging a list
/// of objects under `$setElementOrder`.
///
/// Kubernetes' Go code removes `$patch: delete` elements and appends new elements in place in
/// the live slice, so the live order it then consults is the live list without the deleted
/// elements, followed by as many of the newly added elements as elements were deleted. This
/// decides where server-only elements land, so it is reproduced.
fn live_order_after_merge(live: &[Value], patch: &[Value], key: &str) -> Vec<Value> {
    let mut remaining: Vec<&Value> = live.iter().collect();
    let mut deleted = 0;
    let mut replaced = false;
    for element in patch {
        match element.get(DIRECTIVE).and_then(Value::as_str) {
            Some("delete") => {
                if let Some(doomed) = element.get(key) {
                    let before = remaining.len();
                    remaining.retain(|e| e.get(key) != Some(doomed));
                    deleted += before - remaining.len();
                }
            }
            Some("replace") => replaced = true,
            _ => {}
        }
    }
    if !replaced {
        let mut added: Vec<&Value> = Vec::new();
        for element in patch {
            let directive = element.get(DIRECTIVE).and_then(Value::as_str);
            if matches!(directive, Some("delete" | "replace")) {
                continue;
            }
            let Some(value) = element.get(key) else {
                continue;
            };
            let known = |list: &[&Value]| list.iter().any(|e| e.get(key) == Some(value));
            if !known(&remaining) && !known(&added) {
                added.push(element);
            }
        }
        remaining.extend(added.into_iter().take(deleted));
    }
    remaining.into_iter().cloned().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod() -> Value {
        json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "web", "namespace": "default", "finalizers": ["a", "b"]},
            "spec": {
                "containers": [
                    {"name": "app", "image": "app:1", "env": [{"name": "A", "value": "1"}]},
                    {"name": "sidecar", "image": "proxy:1"}
                ],
                "tolerations": [{"key": "k1", "operator": "Exists"}],
                "volumes": [{"name": "data", "emptyDir": {}}]
            }
        })
    }

    fn patch_pod(patch: Value) -> Result<Value, PatchError> {
        apply(Ty::Pod, &pod(), &patch)
    }

    fn container_names(v: &Value) -> Vec<&str> {
        v["spec"]["containers"]
            .as_array()
            .map(|cs| cs.iter().filter_map(|c| c["name"].as_str()).collect())
            .unwrap_or_default()
    }

    #[test]
    fn patch_replace_directive_in_a_map_replaces_it() {
        let out = patch_pod(json!({"metadata": {"$patch": "replace", "name": "web"}})).unwrap();
        assert_eq!(out["metadata"], json!({"name": "web"}));
    }

    #[test]
    fn patch_delete_directive_in_a_map_empties_it() {
        let out = patch_pod(
            json!({"spec": {"volumes": [{"name": "data", "emptyDir": {"$patch": "delete"}}]}}),
        )
        .unwrap();
        assert_eq!(
            out["spec"]["volumes"],
            json!([{"name": "data", "emptyDir": {}}])
        );
    }

    #[test]
    fn patch_merge_directive_is_the_default_and_is_dropped() {
        let out =
            patch_pod(json!({"metadata": {"$patch": "merge", "labels": {"a": "b"}}})).unwrap();
        assert_eq!(out["metadata"]["labels"], json!({"a": "b"}));
        assert_eq!(out["metadata"]["name"], "web");
    }

    #[test]
    fn unknown_patch_directive_is_a_bad_request() {
        let err = patch_pod(json!({"metadata": {"$patch": "explode"}})).unwrap_err();
        assert_eq!(err.http_code(), 400);
    }

    #[test]
    fn patch_replace_element_replaces_a_merged_list() {
        let out = patch_pod(json!({"spec": {"containers": [
            {"$patch": "replace"},
            {"name": "only", "image": "only:1"}
        ]}}))
        .unwrap();
        assert_eq!(
            out["spec"]["containers"],
            json!([{"name": "only", "image": "only:1"}])
        );
    }

    #[test]
    fn patch_delete_element_without_merge_key_is_unprocessable() {
        let err = patch_pod(json!({"spec": {"containers": [{"$patch": "delete"}]}})).unwrap_err();
        assert_eq!(err.http_code(), 422);
    }

    #[test]
    fn element_without_merge_key_is_unprocessable() {
        let err = patch_pod(json!({"spec": {"containers": [{"image": "x"}]}})).unwrap_err();
        assert_eq!(err.http_code(), 422);
        assert!(err.to_string().contains("merge key: name"), "{err}");
    }

    #[test]
    fn new_element_with_nested_directives_is_added_clean() {
        let out = patch_pod(json!({"spec": {"containers": [{
            "name": "log", "image": "log:1",
            "$setElementOrder/env": [{"name": "X"}],
            "env": [{"name": "X", "value": "1"}, {"name": "Y", "$patch": "delete"}]
        }]}}))
        .unwrap();
        let log = &out["spec"]["containers"][0];
        assert_eq!(
            log,
            &json!({"name": "log", "image": "log:1", "env": [{"name": "X", "value": "1"}]})
        );
    }

    #[test]
    fn absent_key_patched_with_delete_directive_stays_absent() {
        let out = patch_pod(json!({"metadata": {"labels": {"$patch": "delete"}}})).unwrap();
        assert!(out["metadata"].get("labels").is_none());
    }

    #[test]
    fn retain_keys_clears_unlisted_keys() {
        let out = patch_pod(json!({"spec": {"volumes": [{
            "name": "data",
            "$retainKeys": ["name", "hostPath"],
            "hostPath": {"path": "/srv"}
        }]}}))
        .unwrap();
        assert_eq!(
            out["spec"]["volumes"],
            json!([{"name": "data", "hostPath": {"path": "/srv"}}])
        );
    }

    #[test]
    fn retain_keys_must_list_every_patched_key() {
        let err = patch_pod(json!({"spec": {"volumes": [{
            "name": "data", "$retainKeys": ["name"], "hostPath": {"path": "/srv"}
        }]}}))
        .unwrap_err();
        assert_eq!(err.http_code(), 400);
        assert!(err.to_string().contains("retainKeys"), "{err}");
    }

    #[test]
    fn retain_keys_that_is_not_a_list_is_a_bad_request() {
        let err = patch_pod(json!({"spec": {"$retainKeys": "x"}})).unwrap_err();
        assert_eq!(err.http_code(), 400);
    }

    #[test]
    fn primitive_merge_list_is_a_union_with_new_values_first() {
        let out = patch_pod(json!({"metadata": {"finalizers": ["c", "a"]}})).unwrap();
        assert_eq!(out["metadata"]["finalizers"], json!(["c", "a", "b"]));
    }

    #[test]
    fn primitive_merge_list_with_set_element_order_follows_it() {
        let out = patch_pod(json!({"metadata": {
            "$setElementOrder/finalizers": ["a", "b", "c"],
            "finalizers": ["c"]
        }}))
        .unwrap();
        assert_eq!(out["metadata"]["finalizers"], json!(["a", "b", "c"]));
    }

    #[test]
    fn delete_from_primitive_list_of_a_missing_list_adds_nothing() {
        let out =
            patch_pod(json!({"metadata": {"$deleteFromPrimitiveList/podCIDRs": ["x"]}})).unwrap();
        assert!(out["metadata"].get("podCIDRs").is_none());
        assert!(
            out["metadata"]
                .as_object()
                .unwrap()
                .keys()
                .all(|k| !k.starts_with('$'))
        );
    }

    #[test]
    fn delete_from_primitive_list_works_on_lists_without_merge_strategy() {
        let original = json!({"spec": {"args": ["--a", "--b", "--c"]}});
        let out = apply(
            Ty::Opaque,
            &original,
            &json!({"spec": {"$deleteFromPrimitiveList/args": ["--b"]}}),
        )
        .unwrap();
        assert_eq!(out["spec"]["args"], json!(["--a", "--c"]));
    }

    #[test]
    fn delete_from_primitive_list_of_objects_is_a_bad_request() {
        let err =
            patch_pod(json!({"spec": {"$deleteFromPrimitiveList/containers": [{"name": "app"}]}}))
                .unwrap_err();
        assert_eq!(err.http_code(), 400);
    }

    #[test]
    fn malformed_directive_keys_are_bad_requests() {
        for patch in [
            json!({"metadata": {"$setElementOrder": ["a"]}}),
            json!({"metadata": {"$setElementOrder/finalizers": "a"}}),
            json!({"metadata": {"$deleteFromPrimitiveList": ["a"]}}),
            json!({"metadata": {"$deleteFromPrimitiveListfinalizers": ["a"]}}),
        ] {
            let err = patch_pod(patch.clone()).unwrap_err();
            assert_eq!(err.http_code(), 400, "{patch}: {err}");
        }
    }

    #[test]
    fn set_element_order_reorders_without_a_patch_list() {
        let out = patch_pod(json!({"spec": {
            "$setElementOrder/containers": [{"name": "sidecar"}, {"name": "app"}]
        }}))
        .unwrap();
        assert_eq!(container_names(&out), ["sidecar", "app"]);
        assert_eq!(out["spec"]["containers"][1]["env"][0]["name"], "A");
    }

    #[test]
    fn set_element_order_for_a_missing_list_is_ignored() {
        let out = patch_pod(json!({"spec": {"$setElementOrder/initContainers": [{"name": "x"}]}}))
            .unwrap();
        assert!(out["spec"].get("initContainers").is_none());
    }

    #[test]
    fn lists_of_lists_are_unprocessable() {
        let err = patch_pod(json!({"metadata": {"finalizers": [["x"]]}})).unwrap_err();
        assert_eq!(err.http_code(), 422);
    }

    #[test]
    fn mixed_element_types_are_unprocessable() {
        let err = patch_pod(json!({"metadata": {"finalizers": [1]}})).unwrap_err();
        assert_eq!(err.http_code(), 422);
    }

    #[test]
    fn value_of_another_type_replaces_the_live_value() {
        let out = patch_pod(json!({"spec": {"volumes": {"not": "a list"}}})).unwrap();
        assert_eq!(out["spec"]["volumes"], json!({"not": "a list"}));
    }

    #[test]
    fn replace_strategy_replaces_a_map() {
        let original =
            json!({"spec": {"selector": {"matchLabels": {"a": "1"}}, "minAvailable": 1}});
        let out = apply(
            Ty::PodDisruptionBudget,
            &original,
            &json!({"spec": {"selector": {"matchExpressions": []}}}),
        )
        .unwrap();
        assert_eq!(out["spec"]["selector"], json!({"matchExpressions": []}));
    }

    #[test]
    fn null_patch_changes_nothing_and_non_object_patch_is_rejected() {
        assert_eq!(patch_pod(Value::Null).unwrap(), pod());
        assert_eq!(patch_pod(json!([])).unwrap_err().http_code(), 400);
        assert_eq!(patch_pod(json!("x")).unwrap_err().http_code(), 400);
    }

    #[test]
    fn opaque_types_merge_maps_and_replace_lists_like_a_merge_patch() {
        let original =
            json!({"metadata": {"finalizers": ["a"]}, "spec": {"items": [1, 2], "m": {"x": 1}}});
        let out = apply(
            Ty::Opaque,
            &original,
            &json!({"metadata": {"finalizers": ["b"]}, "spec": {"items": [3], "m": {"y": 2}}}),
        )
        .unwrap();
        assert_eq!(
            out,
            json!({"metadata": {"finalizers": ["b"]}, "spec": {"items": [3], "m": {"x": 1, "y": 2}}})
        );
    }
}
