//! The order of elements in a list after a strategic merge.
//!
//! Kubernetes keeps lists in a deliberate order after merging (the "preserve order in
//! strategic merge patch" design): elements named in the patch are ordered as the patch
//! names them (or as `$setElementOrder/<field>` does, which takes precedence), elements only
//! the server has keep their relative order from the live object, and the two sequences are
//! interleaved using the live order as the reference. Without `$setElementOrder`, an element
//! the live object did not have lands before the live elements that follow it in the merge —
//! with a single new element, at the front, as `kubectl patch` users see.
//!
//! Elements are identified by their merge key for lists of objects, by value otherwise.

use serde_json::Value;

use super::PatchError;
use super::strategic::DIRECTIVE;

/// How the elements of a list are told apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Identity<'a> {
    /// Objects, by the value of their merge key.
    Key(&'a str),
    /// Primitives (or objects of a list without merge key), by their whole value.
    Value,
}

impl Identity<'_> {
    /// The value that identifies `v`; `None` for an object without the merge key.
    fn of<'v>(&self, v: &'v Value) -> Option<&'v Value> {
        match self {
            Identity::Key(key) => v.as_object().and_then(|m| m.get(*key)),
            Identity::Value => Some(v),
        }
    }

    /// The position of `v` in `list`, if an element there has the same identity.
    fn index_in(&self, list: &[Value], v: &Value) -> Option<usize> {
        let wanted = self.of(v)?;
        list.iter().position(|e| self.of(e) == Some(wanted))
    }

    /// Whether `a` and `b` have the same identity; an object lacking the merge key is an
    /// error, as in Kubernetes.
    fn same(&self, a: &Value, b: &Value) -> Result<bool, PatchError> {
        match self {
            Identity::Key(key) => Ok(key_of(a, key)? == key_of(b, key)?),
            Identity::Value => Ok(a == b),
        }
    }
}

/// The merge key value of `v`, which must be an object carrying it.
pub(super) fn key_of<'v>(v: &'v Value, key: &str) -> Result<&'v Value, PatchError> {
    match v {
        Value::Object(m) => m.get(key).ok_or_else(|| {
            PatchError::unprocessable(format!(
                "map: {v} does not contain declared merge key: {key}"
            ))
        }),
        other => Err(PatchError::unprocessable(format!(
            "expected a map with merge key {key}, but received {other}"
        ))),
    }
}

fn require_keys(list: &[Value], identity: Identity<'_>) -> Result<(), PatchError> {
    if let Identity::Key(key) = identity {
        for v in list {
            key_of(v, key)?;
        }
    }
    Ok(())
}

fn is_delete_directive(v: &Value) -> bool {
    v.get(DIRECTIVE).and_then(Value::as_str) == Some("delete")
}

/// Splits `merged` into the elements present in `by` and the others, keeping their order.
pub(super) fn partition(
    merged: Vec<Value>,
    by: &[Value],
    identity: Identity<'_>,
) -> Result<(Vec<Value>, Vec<Value>), PatchError> {
    require_keys(&merged, identity)?;
    if let Identity::Key(_) = identity {
        for (i, v) in by.iter().enumerate() {
            if !v.is_object() {
                return Err(PatchError::unprocessable(format!(
                    "value for key {i} is not a map"
                )));
            }
        }
    }
    Ok(merged
        .into_iter()
        .partition(|v| identity.index_in(by, v).is_some()))
}

/// Sorts `to_sort` by the positions its elements have in `order`. Elements `order` does not
/// name keep their places; `$patch: delete` elements go last.
fn sort_by_order(
    to_sort: Vec<Value>,
    order: &[Value],
    identity: Identity<'_>,
) -> Result<Vec<Value>, PatchError> {
    let (mut kept, deletes) = match identity {
        Identity::Key(_) => {
            require_keys(&to_sort, identity)?;
            require_keys(order, identity)?;
            to_sort
                .into_iter()
                .partition::<Vec<_>, _>(|v| !is_delete_directive(v))
        }
        Identity::Value => (to_sort, Vec::new()),
    };
    // Lift out the elements `order` names, sort them by rank (stable), and put them back
    // into the same slots; the other elements do not move.
    let slots: Vec<(usize, usize)> = kept
        .iter()
        .enumerate()
        .filter_map(|(slot, v)| identity.index_in(order, v).map(|rank| (slot, rank)))
        .collect();
    let mut lifted: Vec<(usize, Value)> = slots
        .iter()
        .map(|&(slot, rank)| (rank, std::mem::take(&mut kept[slot])))
        .collect();
    lifted.sort_by_key(|(rank, _)| *rank);
    for (&(slot, _), (_, value)) in slots.iter().zip(lifted) {
        kept[slot] = value;
    }
    kept.extend(deletes);
    Ok(kept)
}

/// Interleaves `left` (server-only elements) with `right` (patch elements), both already in
/// their own order, using `server_order` (the live list) to decide who goes first. An element
/// of `right` the live list lacks goes before the remaining `left` elements.
fn merge_sorted(
    left: Vec<Value>,
    right: Vec<Value>,
    server_order: &[Value],
    identity: Identity<'_>,
) -> Vec<Value> {
    let mut out = Vec::with_capacity(left.len() + right.len());
    let mut left = left.into_iter().peekable();
    let mut right = right.into_iter().peekable();
    loop {
        let take_left = match (left.peek(), right.peek()) {
            (None, None) => break,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (Some(l), Some(r)) => {
                match (
                    identity.index_in(server_order, l),
                    identity.index_in(server_order, r),
                ) {
                    (Some(li), Some(ri)) => li < ri,
                    _ => false,
                }
            }
        };
        let next = if take_left { left.next() } else { right.next() };
        out.extend(next);
    }
    out
}

/// Orders a merged list: `patch_items` by `patch_order`, `server_only` by `server_order`,
/// then interleaved (see the module documentation).
pub(super) fn normalize(
    patch_items: Vec<Value>,
    server_only: Vec<Value>,
    patch_order: &[Value],
    server_order: &[Value],
    identity: Identity<'_>,
) -> Result<Vec<Value>, PatchError> {
    let patch_items = sort_by_order(patch_items, patch_order, identity)?;
    let server_only = sort_by_order(server_only, server_order, identity)?;
    Ok(merge_sorted(
        server_only,
        patch_items,
        server_order,
        identity,
    ))
}

/// Checks that the elements of a patch list appear in `$setElementOrder` and in the same
/// relative order (deletions and other directive elements aside).
pub(super) fn validate_set_element_order(
    patch_list: &[Value],
    order: &[Value],
    identity: Identity<'_>,
    field: &str,
) -> Result<(), PatchError> {
    if patch_list.is_empty() || order.is_empty() {
        return Ok(());
    }
    if let (Identity::Key(_), Some(v)) = (identity, patch_list.iter().find(|v| !v.is_object())) {
        return Err(PatchError::unprocessable(format!(
            "expected a map in list {field}, but received {v}"
        )));
    }
    let elements: Vec<&Value> = patch_list
        .iter()
        .filter(|v| identity == Identity::Value || !is_delete_directive(v))
        .collect();
    let (mut p, mut o) = (0, 0);
    while p < elements.len() && o < order.len() {
        if elements[p].get(DIRECTIVE).is_some() {
            p += 1;
            continue;
        }
        if identity.same(elements[p], &order[o])? {
            p += 1;
        }
        o += 1;
    }
    if p < elements.len() {
        return Err(PatchError::malformed(format!(
            "The order in patch list {field}: {} doesn't match $setElementOrder list: {}",
            Value::Array(patch_list.to_vec()),
            Value::Array(order.to_vec())
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn names(list: &[Value]) -> Vec<&str> {
        list.iter().filter_map(|v| v["name"].as_str()).collect()
    }

    fn named(ns: &[&str]) -> Vec<Value> {
        ns.iter().map(|n| json!({"name": n})).collect()
    }

    #[test]
    fn new_patch_element_goes_before_the_live_elements() {
        let out = normalize(
            named(&["c"]),
            named(&["a", "b"]),
            &named(&["c"]),
            &named(&["a", "b"]),
            Identity::Key("name"),
        )
        .unwrap();
        assert_eq!(names(&out), ["c", "a", "b"]);
    }

    #[test]
    fn patched_live_elements_keep_their_live_positions() {
        let out = normalize(
            named(&["b", "c"]),
            named(&["a"]),
            &named(&["b", "c"]),
            &named(&["a", "b"]),
            Identity::Key("name"),
        )
        .unwrap();
        assert_eq!(names(&out), ["a", "b", "c"]);
    }

    #[test]
    fn patch_items_follow_the_patch_order() {
        let out = normalize(
            named(&["a", "b"]),
            vec![],
            &named(&["b", "a"]),
            &named(&["a", "b"]),
            Identity::Key("name"),
        )
        .unwrap();
        assert_eq!(names(&out), ["b", "a"]);
    }

    #[test]
    fn elements_not_in_the_order_keep_their_places() {
        let out = sort_by_order(
            vec![json!("x"), json!("c"), json!("y"), json!("a")],
            &[json!("a"), json!("c")],
            Identity::Value,
        )
        .unwrap();
        assert_eq!(out, [json!("x"), json!("a"), json!("y"), json!("c")]);
    }

    #[test]
    fn primitives_are_identified_by_value() {
        let out = normalize(
            vec![json!("c")],
            vec![json!("a"), json!("b")],
            &[json!("c")],
            &[json!("a"), json!("b")],
            Identity::Value,
        )
        .unwrap();
        assert_eq!(out, [json!("c"), json!("a"), json!("b")]);
    }

    #[test]
    fn partition_splits_by_presence_keeping_order() {
        let (inside, outside) = partition(
            named(&["a", "b", "c"]),
            &named(&["c", "a"]),
            Identity::Key("name"),
        )
        .unwrap();
        assert_eq!(
            (names(&inside), names(&outside)),
            (vec!["a", "c"], vec!["b"])
        );
    }

    #[test]
    fn element_without_merge_key_is_unprocessable() {
        let err = partition(vec![json!({"image": "x"})], &[], Identity::Key("name")).unwrap_err();
        assert_eq!(err.http_code(), 422);
        assert!(
            err.to_string()
                .contains("does not contain declared merge key: name"),
            "{err}"
        );
    }

    #[test]
    fn set_element_order_accepts_a_subsequence_and_skips_deletions() {
        let patch = vec![
            json!({"name": "c"}),
            json!({"name": "z", "$patch": "delete"}),
            json!({"name": "a"}),
        ];
        validate_set_element_order(&patch, &named(&["c", "b", "a"]), Identity::Key("name"), "x")
            .unwrap();
    }

    #[test]
    fn set_element_order_out_of_order_with_the_patch_is_rejected() {
        let err = validate_set_element_order(
            &named(&["c", "a"]),
            &named(&["a", "b", "c"]),
            Identity::Key("name"),
            "containers",
        )
        .unwrap_err();
        assert_eq!(err.http_code(), 400);
        assert!(err.to_string().contains("doesn't match"), "{err}");
    }
}
