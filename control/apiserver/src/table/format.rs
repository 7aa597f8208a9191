//! Small formatting helpers shared by the printers: reading loosely typed JSON,
//! `labels.FormatLabels`, `metav1.FormatLabelSelector` and the wide CONTAINERS/IMAGES cells.

use serde_json::{Map, Value};

/// Follows `path` through nested objects.
pub(crate) fn at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a Value> {
    path.iter().try_fold(v, |cur, key| cur.get(*key))
}

/// The string at `path`, `""` when absent (Go's zero value).
pub(crate) fn str_at<'a>(v: &'a Value, path: &[&str]) -> &'a str {
    at(v, path).and_then(Value::as_str).unwrap_or("")
}

/// The integer at `path`, `0` when absent.
pub(crate) fn int_at(v: &Value, path: &[&str]) -> i64 {
    at(v, path).and_then(Value::as_i64).unwrap_or(0)
}

/// The integer at `path`, `default` when absent (fields Kubernetes defaults, like replicas).
pub(crate) fn int_or(v: &Value, path: &[&str], default: i64) -> i64 {
    at(v, path).and_then(Value::as_i64).unwrap_or(default)
}

/// The array at `path`, empty when absent.
pub(crate) fn arr_at<'a>(v: &'a Value, path: &[&str]) -> &'a [Value] {
    at(v, path)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

/// The object at `path`, if any.
pub(crate) fn obj_at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a Map<String, Value>> {
    at(v, path).and_then(Value::as_object)
}

/// The number of entries of the map at `path`.
pub(crate) fn map_len(v: &Value, path: &[&str]) -> i64 {
    obj_at(v, path).map_or(0, |m| i64::try_from(m.len()).unwrap_or(i64::MAX))
}

/// The number of items of the array at `path`.
pub(crate) fn arr_len(v: &Value, path: &[&str]) -> i64 {
    i64::try_from(arr_at(v, path).len()).unwrap_or(i64::MAX)
}

/// `labels.FormatLabels`: `k=v` pairs sorted by key, `<none>` when empty.
pub(crate) fn format_labels(labels: Option<&Map<String, Value>>) -> String {
    let pairs = labels
        .map(|m| {
            // serde_json's map is sorted by key, as labels.Set.String() sorts.
            m.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    if pairs.is_empty() {
        "<none>".to_string()
    } else {
        pairs.join(",")
    }
}

/// Why a label selector cannot be turned into a selector string.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct BadSelector;

/// `metav1.LabelSelectorAsSelector(sel).String()`: `Ok("")` for a nil or empty selector.
pub(crate) fn selector_string(selector: Option<&Value>) -> Result<String, BadSelector> {
    let Some(selector) = selector.filter(|s| !s.is_null()) else {
        return Ok(String::new());
    };
    let mut requirements: Vec<(String, String)> = Vec::new();
    if let Some(labels) = selector.get("matchLabels").and_then(Value::as_object) {
        for (k, v) in labels {
            let v = v.as_str().ok_or(BadSelector)?;
            requirements.push((k.clone(), format!("{k}={v}")));
        }
    }
    for expr in arr_at(selector, &["matchExpressions"]) {
        let key = str_at(expr, &["key"]);
        let mut values: Vec<&str> = arr_at(expr, &["values"])
            .iter()
            .map(|v| v.as_str().ok_or(BadSelector))
            .collect::<Result<_, _>>()?;
        values.sort_unstable();
        values.dedup();
        let text = match str_at(expr, &["operator"]) {
            "In" | "NotIn" if values.is_empty() => return Err(BadSelector),
            "In" => format!("{key} in ({})", values.join(",")),
            "NotIn" => format!("{key} notin ({})", values.join(",")),
            "Exists" if values.is_empty() => key.to_string(),
            "DoesNotExist" if values.is_empty() => format!("!{key}"),
            _ => return Err(BadSelector),
        };
        requirements.push((key.to_string(), text));
    }
    // labels.internalSelector sorts its requirements by key.
    requirements.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(requirements
        .into_iter()
        .map(|(_, r)| r)
        .collect::<Vec<_>>()
        .join(","))
}

/// `metav1.FormatLabelSelector`: `<none>` when empty, `<error>` when invalid.
pub(crate) fn format_label_selector(selector: Option<&Value>) -> String {
    match selector_string(selector) {
        Ok(s) if s.is_empty() => "<none>".to_string(),
        Ok(s) => s,
        Err(BadSelector) => "<error>".to_string(),
    }
}

/// `layoutContainerCells`: container names and images, comma-joined.
pub(crate) fn layout_containers(template_spec: Option<&Value>) -> (String, String) {
    let containers = template_spec.map_or(&[][..], |s| arr_at(s, &["containers"]));
    let names: Vec<&str> = containers.iter().map(|c| str_at(c, &["name"])).collect();
    let images: Vec<&str> = containers.iter().map(|c| str_at(c, &["image"])).collect();
    (names.join(","), images.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn format_labels_sorts_pairs_and_says_none_when_empty() {
        let labels = json!({"tier": "web", "app": "shop"});
        assert_eq!(format_labels(labels.as_object()), "app=shop,tier=web");
        assert_eq!(format_labels(None), "<none>");
        assert_eq!(format_labels(json!({}).as_object()), "<none>");
    }

    #[test]
    fn selector_string_renders_every_operator_sorted_by_key() {
        let sel = json!({
            "matchLabels": {"app": "web"},
            "matchExpressions": [
                {"key": "tier", "operator": "In", "values": ["b", "a"]},
                {"key": "env", "operator": "NotIn", "values": ["dev"]},
                {"key": "canary", "operator": "DoesNotExist"},
                {"key": "zone", "operator": "Exists"}
            ]
        });
        assert_eq!(
            selector_string(Some(&sel)),
            Ok("app=web,!canary,env notin (dev),tier in (a,b),zone".to_string())
        );
    }

    #[test]
    fn format_label_selector_distinguishes_empty_and_invalid() {
        assert_eq!(format_label_selector(None), "<none>");
        assert_eq!(format_label_selector(Some(&json!({}))), "<none>");
        let bad = json!({"matchExpressions": [{"key": "a", "operator": "In", "values": []}]});
        assert_eq!(format_label_selector(Some(&bad)), "<error>");
        let unknown = json!({"matchExpressions": [{"key": "a", "operator": "Gt"}]});
        assert_eq!(format_label_selector(Some(&unknown)), "<error>");
    }

    #[test]
    fn layout_containers_joins_names_and_images() {
        let spec = json!({"containers": [
            {"name": "app", "image": "ghcr.io/x/app:1"},
            {"name": "sidecar", "image": "busybox"}
        ]});
        assert_eq!(
            layout_containers(Some(&spec)),
            (
                "app,sidecar".to_string(),
                "ghcr.io/x/app:1,busybox".to_string()
            )
        );
        assert_eq!(layout_containers(None), (String::new(), String::new()));
    }
}
