//! ConfigMap and Secret validation (`ValidateConfigMap`, `ValidateSecret`) and Secret
//! defaulting. Both kinds share one hook; the object's `kind` tells them apart.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Map, Value, json};
use wasmkube_api::field::{FieldError, FieldPath, Rendered};
use wasmkube_api::validate::is_config_map_key;

use super::{Cause, causes, get_str, object_entry, set_default};

/// The most data a ConfigMap or Secret may hold (1 MiB).
const MAX_DATA_SIZE: usize = 1024 * 1024;
const IMMUTABLE_MSG: &str = "field is immutable when `immutable` is set";

/// Secret defaults: `type: Opaque`, and `stringData` merged into `data` (base64) and
/// dropped, as the Kubernetes apiserver does when it decodes a Secret.
pub fn default_secret(obj: &mut Value) {
    let Some(root) = obj.as_object_mut() else {
        return;
    };
    set_default(root, "type", json!("Opaque"));
    if let Some(Value::Object(string_data)) = root.remove("stringData") {
        let data = object_entry(root, "data");
        for (k, v) in string_data {
            let text = v
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| v.to_string());
            data.insert(k, json!(STANDARD.encode(text)));
        }
    }
}

/// Validates a ConfigMap's or Secret's keys, values, size and immutability.
pub fn validate_data_keys(obj: &Value, old: Option<&Value>) -> Vec<Cause> {
    let is_secret = match get_str(obj, "kind") {
        "Secret" => true,
        "ConfigMap" => false,
        _ => obj.get("type").is_some() || obj.get("stringData").is_some(),
    };
    let mut errs = if is_secret {
        secret_errors(obj)
    } else {
        config_map_errors(obj)
    };
    if let Some(old) = old {
        errs.extend(immutability_errors(obj, old, is_secret));
    }
    causes(errs)
}

fn entries(obj: &Value, key: &str) -> Map<String, Value> {
    obj.get(key)
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default()
}

fn key_errors(key: &str, path: &FieldPath) -> Vec<FieldError> {
    is_config_map_key(key)
        .iter()
        .map(|m| FieldError::invalid(&path.key(key), key, m))
        .collect()
}

/// Decoded length of a base64 value, or an error at `path[key]`.
fn decoded_len(key: &str, value: &Value, path: &FieldPath) -> Result<usize, FieldError> {
    let text = value.as_str().unwrap_or_default();
    STANDARD.decode(text).map(|b| b.len()).map_err(|e| {
        let detail = match e {
            base64::DecodeError::InvalidByte(at, _)
            | base64::DecodeError::InvalidLastSymbol(at, _) => {
                format!("illegal base64 data at input byte {at}")
            }
            _ => format!("illegal base64 data at input byte {}", text.len()),
        };
        FieldError::invalid(
            &path.key(key),
            Rendered("\"<secret contents redacted>\"".into()),
            &detail,
        )
    })
}

fn config_map_errors(obj: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let data = entries(obj, "data");
    let binary = entries(obj, "binaryData");
    let data_path = FieldPath::new("data");
    let binary_path = FieldPath::new("binaryData");
    let mut total = 0;
    for (k, v) in &data {
        errs.extend(key_errors(k, &data_path));
        if binary.contains_key(k) {
            errs.push(FieldError::invalid(
                &data_path.key(k),
                k,
                "duplicate of key present in binaryData",
            ));
        }
        total += v.as_str().map_or(0, str::len);
    }
    for (k, v) in &binary {
        errs.extend(key_errors(k, &binary_path));
        match decoded_len(k, v, &binary_path) {
            Ok(n) => total += n,
            Err(e) => errs.push(e),
        }
    }
    if total > MAX_DATA_SIZE {
        // Kubernetes reports the whole object with an empty path, rendered `[]`.
        errs.push(FieldError {
            field: "[]".into(),
            ..FieldError::too_long(&FieldPath::root(), MAX_DATA_SIZE)
        });
    }
    errs
}

fn secret_errors(obj: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let data = entries(obj, "data");
    let data_path = FieldPath::new("data");
    let mut total = 0;
    for (k, v) in &data {
        errs.extend(key_errors(k, &data_path));
        match decoded_len(k, v, &data_path) {
            Ok(n) => total += n,
            Err(e) => errs.push(e),
        }
    }
    if total > MAX_DATA_SIZE {
        errs.push(FieldError::too_long(&data_path, MAX_DATA_SIZE));
    }
    let present = |k: &str| {
        data.get(k)
            .and_then(Value::as_str)
            .is_some_and(|s| !s.is_empty())
    };
    match get_str(obj, "type") {
        "kubernetes.io/service-account-token" => {
            let annotation = "kubernetes.io/service-account.name";
            if obj
                .pointer("/metadata/annotations")
                .and_then(|a| a.get(annotation))
                .and_then(Value::as_str)
                .unwrap_or("")
                .is_empty()
            {
                errs.push(FieldError::required(
                    &FieldPath::new("metadata")
                        .child("annotations")
                        .key(annotation),
                    "",
                ));
            }
        }
        "kubernetes.io/dockercfg" => errs.extend(json_key_errors(&data, ".dockercfg", &data_path)),
        "kubernetes.io/dockerconfigjson" => {
            errs.extend(json_key_errors(&data, ".dockerconfigjson", &data_path))
        }
        "kubernetes.io/basic-auth" if !present("username") && !present("password") => {
            errs.push(FieldError::required(&data_path.key("username"), ""));
            errs.push(FieldError::required(&data_path.key("password"), ""));
        }
        "kubernetes.io/ssh-auth" if !present("ssh-privatekey") => {
            errs.push(FieldError::required(&data_path.key("ssh-privatekey"), ""));
        }
        "kubernetes.io/tls" => {
            for key in ["tls.crt", "tls.key"] {
                if !data.contains_key(key) {
                    errs.push(FieldError::required(&data_path.key(key), ""));
                }
            }
        }
        _ => {}
    }
    errs
}

/// The key must exist and decode to JSON.
fn json_key_errors(data: &Map<String, Value>, key: &str, path: &FieldPath) -> Vec<FieldError> {
    let Some(value) = data.get(key) else {
        return vec![FieldError::required(&path.key(key), "")];
    };
    let decoded = STANDARD
        .decode(value.as_str().unwrap_or_default())
        .unwrap_or_default();
    match serde_json::from_slice::<Value>(&decoded) {
        Ok(_) => Vec::new(),
        Err(e) => vec![FieldError::invalid(
            &path.key(key),
            Rendered("\"<secret contents redacted>\"".into()),
            &e.to_string(),
        )],
    }
}

fn immutability_errors(new: &Value, old: &Value, is_secret: bool) -> Vec<FieldError> {
    let mut errs = Vec::new();
    if is_secret && get_str(new, "type") != get_str(old, "type") {
        errs.push(FieldError::invalid(
            &FieldPath::new("type"),
            get_str(new, "type"),
            "field is immutable",
        ));
    }
    if old.get("immutable").and_then(Value::as_bool) != Some(true) {
        return errs;
    }
    if new.get("immutable").and_then(Value::as_bool) != Some(true) {
        errs.push(FieldError::forbidden(
            &FieldPath::new("immutable"),
            IMMUTABLE_MSG,
        ));
    }
    let fields: &[&str] = if is_secret {
        &["data"]
    } else {
        &["data", "binaryData"]
    };
    for field in fields {
        if entries(new, field) != entries(old, field) {
            errs.push(FieldError::forbidden(&FieldPath::new(field), IMMUTABLE_MSG));
        }
    }
    errs
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validation::test_support::{fields, summary};

    fn secret(extra: Value) -> Value {
        let mut s = json!({"kind": "Secret", "metadata": {"name": "s", "namespace": "default"}});
        if let (Some(s), Some(extra)) = (s.as_object_mut(), extra.as_object()) {
            s.extend(extra.clone());
        }
        default_secret(&mut s);
        s
    }

    #[test]
    fn secrets_default_to_opaque_and_absorb_string_data() {
        let s = secret(json!({"data": {"a": "eA=="}, "stringData": {"b": "hello", "a": "y"}}));
        assert_eq!(s["type"], json!("Opaque"));
        assert_eq!(s["data"], json!({"a": "eQ==", "b": "aGVsbG8="}));
        assert_eq!(s.get("stringData"), None);
        assert_eq!(validate_data_keys(&s, None), vec![]);
    }

    #[test]
    fn data_keys_must_be_config_keys() {
        let cm = json!({"kind": "ConfigMap", "data": {"ok.key": "1", "bad/key": "2"}, "binaryData": {"ok.key": "AA=="}});
        let c = validate_data_keys(&cm, None);
        assert_eq!(fields(&c), vec!["data[bad/key]", "data[ok.key]"]);
        assert!(c[0].message.starts_with(
            "Invalid value: \"bad/key\": a valid config key must consist of alphanumeric characters"
        ));
        assert_eq!(
            c[1].message,
            "Invalid value: \"ok.key\": duplicate of key present in binaryData"
        );
        let s = secret(json!({"data": {"..": "AA=="}}));
        assert_eq!(
            summary(&validate_data_keys(&s, None)),
            vec!["data[..]: Invalid value: \"..\": must not be '..'"]
        );
    }

    #[test]
    fn secret_values_must_be_base64() {
        let s = secret(json!({"data": {"k": "not base64!"}}));
        assert_eq!(
            summary(&validate_data_keys(&s, None)),
            vec![
                "data[k]: Invalid value: \"<secret contents redacted>\": illegal base64 data at input byte 3"
            ]
        );
    }

    #[test]
    fn data_is_limited_to_one_mebibyte() {
        let big = "x".repeat(MAX_DATA_SIZE + 1);
        let cm = json!({"kind": "ConfigMap", "data": {"k": big}});
        assert_eq!(
            summary(&validate_data_keys(&cm, None)),
            vec!["[]: Too long: may not be more than 1048576 bytes"]
        );
    }

    #[test]
    fn typed_secrets_need_their_keys() {
        let tls = secret(json!({"type": "kubernetes.io/tls", "data": {"tls.crt": "AA=="}}));
        assert_eq!(
            summary(&validate_data_keys(&tls, None)),
            vec!["data[tls.key]: Required value"]
        );
        let docker = secret(
            json!({"type": "kubernetes.io/dockerconfigjson", "data": {".dockerconfigjson": "e30="}}),
        );
        assert_eq!(validate_data_keys(&docker, None), vec![]);
        let basic = secret(json!({"type": "kubernetes.io/basic-auth"}));
        assert_eq!(
            fields(&validate_data_keys(&basic, None)),
            vec!["data[username]", "data[password]"]
        );
        let token = secret(json!({"type": "kubernetes.io/service-account-token"}));
        assert_eq!(
            summary(&validate_data_keys(&token, None)),
            vec!["metadata.annotations[kubernetes.io/service-account.name]: Required value"]
        );
    }

    #[test]
    fn immutable_objects_keep_their_data_and_secrets_their_type() {
        let old = json!({"kind": "ConfigMap", "immutable": true, "data": {"a": "1"}});
        let new = json!({"kind": "ConfigMap", "data": {"a": "2"}});
        assert_eq!(
            summary(&validate_data_keys(&new, Some(&old))),
            vec![
                "immutable: Forbidden: field is immutable when `immutable` is set",
                "data: Forbidden: field is immutable when `immutable` is set",
            ]
        );
        assert_eq!(validate_data_keys(&old, Some(&old)), vec![]);
        let old = secret(json!({}));
        let new =
            secret(json!({"type": "kubernetes.io/tls", "data": {"tls.crt": "", "tls.key": ""}}));
        assert_eq!(
            summary(&validate_data_keys(&new, Some(&old))),
            vec!["type: Invalid value: \"kubernetes.io/tls\": field is immutable"]
        );
    }
}
