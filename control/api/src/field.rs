//! Field-level validation errors, rendered the way Kubernetes renders them.
//!
//! Kubernetes reports a bad field as `<path>: <type>[: <value>][: <detail>]`, e.g.
//! `spec.containers[0].name: Invalid value: "Web": a lowercase RFC 1123 label ...`.
//! The apiserver puts the part after the path (the "error body") into a Status cause and
//! the whole string into the Status message, so both must match Kubernetes word for word
//! for clients and people that read them. [`FieldPath`] builds the dotted/indexed paths,
//! [`FieldError`] holds one error and [`GoValue`] renders the offending value as Go's `%q`
//! / `%v` / `%#v` would.

use std::collections::BTreeMap;
use std::fmt;

use serde_json::Value;

/// A path to a field inside an object: `spec.containers[0].ports[1].name`, `data[key]`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct FieldPath(String);

impl FieldPath {
    /// A path starting at the top-level field `name` (`FieldPath::new("spec")`).
    pub fn new(name: &str) -> Self {
        FieldPath(name.to_string())
    }

    /// The path of the object itself (Kubernetes renders it as `<nil>` in messages).
    pub fn root() -> Self {
        FieldPath(String::new())
    }

    /// `self.name`.
    #[must_use]
    pub fn child(&self, name: &str) -> Self {
        if self.0.is_empty() {
            FieldPath(name.to_string())
        } else {
            FieldPath(format!("{}.{name}", self.0))
        }
    }

    /// `self[index]`.
    #[must_use]
    pub fn index(&self, index: usize) -> Self {
        FieldPath(format!("{}[{index}]", self.0))
    }

    /// `self[key]` (map keys are not quoted, as in Kubernetes).
    #[must_use]
    pub fn key(&self, key: &str) -> Self {
        FieldPath(format!("{}[{key}]", self.0))
    }

    /// The path as written in messages; empty for the root.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            f.write_str("<nil>")
        } else {
            f.write_str(&self.0)
        }
    }
}

/// What is wrong with a field; one-to-one with Kubernetes' `CauseType`s.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorType {
    /// A referenced value does not exist (`Not found`).
    NotFound,
    /// A required value is missing (`Required value`).
    Required,
    /// A value that must be unique is repeated (`Duplicate value`).
    Duplicate,
    /// A malformed value (`Invalid value`).
    Invalid,
    /// A value outside an enumeration (`Unsupported value`).
    NotSupported,
    /// A well-formed value that is not allowed here (`Forbidden`).
    Forbidden,
    /// A value longer than allowed (`Too long`).
    TooLong,
    /// A list with too many items (`Too many`).
    TooMany,
    /// A server-side problem unrelated to the input (`Internal error`).
    Internal,
}

impl ErrorType {
    /// The machine-readable reason of a Status cause, e.g. `FieldValueRequired`.
    pub fn reason(self) -> &'static str {
        match self {
            ErrorType::NotFound => "FieldValueNotFound",
            ErrorType::Required => "FieldValueRequired",
            ErrorType::Duplicate => "FieldValueDuplicate",
            ErrorType::Invalid => "FieldValueInvalid",
            ErrorType::NotSupported => "FieldValueNotSupported",
            ErrorType::Forbidden => "FieldValueForbidden",
            ErrorType::TooLong => "FieldValueTooLong",
            ErrorType::TooMany => "FieldValueTooMany",
            ErrorType::Internal => "InternalError",
        }
    }

    /// The human label that starts the error body, e.g. `Required value`.
    pub fn label(self) -> &'static str {
        match self {
            ErrorType::NotFound => "Not found",
            ErrorType::Required => "Required value",
            ErrorType::Duplicate => "Duplicate value",
            ErrorType::Invalid => "Invalid value",
            ErrorType::NotSupported => "Unsupported value",
            ErrorType::Forbidden => "Forbidden",
            ErrorType::TooLong => "Too long",
            ErrorType::TooMany => "Too many",
            ErrorType::Internal => "Internal error",
        }
    }
}

/// One field-level validation error.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    /// What kind of problem it is.
    pub error_type: ErrorType,
    /// The field path as rendered (`spec.replicas`); `<nil>` for the object itself.
    pub field: String,
    /// The offending value already rendered Go-style, when the message shows it.
    pub value: Option<String>,
    /// Extra explanation appended after the value.
    pub detail: String,
}

impl FieldError {
    fn new(error_type: ErrorType, field: &FieldPath, value: Option<String>, detail: &str) -> Self {
        FieldError {
            error_type,
            field: field.to_string(),
            value,
            detail: detail.to_string(),
        }
    }

    /// `Required value[: detail]`.
    pub fn required(field: &FieldPath, detail: &str) -> Self {
        Self::new(ErrorType::Required, field, None, detail)
    }

    /// `Invalid value: <value>: detail`.
    pub fn invalid(field: &FieldPath, value: impl GoValue, detail: &str) -> Self {
        Self::new(ErrorType::Invalid, field, Some(value.go_value()), detail)
    }

    /// `Unsupported value: <value>: supported values: "a", "b"`.
    pub fn not_supported(field: &FieldPath, value: impl GoValue, supported: &[&str]) -> Self {
        let detail = if supported.is_empty() {
            String::new()
        } else {
            let quoted: Vec<String> = supported.iter().map(|s| go_quote(s)).collect();
            format!("supported values: {}", quoted.join(", "))
        };
        Self::new(
            ErrorType::NotSupported,
            field,
            Some(value.go_value()),
            &detail,
        )
    }

    /// `Duplicate value: <value>`.
    pub fn duplicate(field: &FieldPath, value: impl GoValue) -> Self {
        Self::new(ErrorType::Duplicate, field, Some(value.go_value()), "")
    }

    /// `Not found: <value>`.
    pub fn not_found(field: &FieldPath, value: impl GoValue) -> Self {
        Self::new(ErrorType::NotFound, field, Some(value.go_value()), "")
    }

    /// `Forbidden: detail`.
    pub fn forbidden(field: &FieldPath, detail: &str) -> Self {
        Self::new(ErrorType::Forbidden, field, None, detail)
    }

    /// `Too long: may not be more than <max> bytes`.
    pub fn too_long(field: &FieldPath, max_bytes: usize) -> Self {
        let unit = if max_bytes == 1 { "byte" } else { "bytes" };
        Self::new(
            ErrorType::TooLong,
            field,
            None,
            &format!("may not be more than {max_bytes} {unit}"),
        )
    }

    /// `Too many: <actual>: must have at most <max> items` (Kubernetes' `field.TooMany`).
    pub fn too_many(field: &FieldPath, actual: usize, max: usize) -> Self {
        let unit = if max == 1 { "item" } else { "items" };
        Self::new(
            ErrorType::TooMany,
            field,
            Some(actual.to_string()),
            &format!("must have at most {max} {unit}"),
        )
    }

    /// `Internal error: detail`.
    pub fn internal(field: &FieldPath, detail: &str) -> Self {
        Self::new(ErrorType::Internal, field, None, detail)
    }

    /// The message without the field path (Kubernetes' `ErrorBody`), the text of a cause.
    pub fn body(&self) -> String {
        let mut s = self.error_type.label().to_string();
        if let Some(value) = &self.value {
            s.push_str(": ");
            s.push_str(value);
        }
        if !self.detail.is_empty() {
            s.push_str(": ");
            s.push_str(&self.detail);
        }
        s
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.body())
    }
}

impl std::error::Error for FieldError {}

/// Renders several errors as Kubernetes' aggregate error does: one as is, more as
/// `[a, b]`, duplicates dropped.
pub fn aggregate(errors: &[FieldError]) -> String {
    let mut seen: Vec<String> = Vec::new();
    for e in errors {
        let s = e.to_string();
        if !seen.contains(&s) {
            seen.push(s);
        }
    }
    match seen.len() {
        0 => String::new(),
        1 => seen.remove(0),
        _ => format!("[{}]", seen.join(", ")),
    }
}

/// A value rendered the way Go's `fmt` renders it inside a Kubernetes field error.
pub trait GoValue {
    /// The rendering: strings quoted (`%q`), numbers and booleans bare, string maps as
    /// `map[string]string{"k":"v"}`, string lists as `[]string{"a", "b"}`.
    fn go_value(&self) -> String;
}

impl GoValue for &str {
    fn go_value(&self) -> String {
        go_quote(self)
    }
}

impl GoValue for String {
    fn go_value(&self) -> String {
        go_quote(self)
    }
}

impl GoValue for &String {
    fn go_value(&self) -> String {
        go_quote(self)
    }
}

macro_rules! go_value_display {
    ($($t:ty),*) => { $(impl GoValue for $t { fn go_value(&self) -> String { self.to_string() } })* };
}
go_value_display!(i32, i64, u16, u32, u64, usize, bool);

impl GoValue for &BTreeMap<String, String> {
    fn go_value(&self) -> String {
        go_string_map(self.iter().map(|(k, v)| (k.as_str(), v.as_str())))
    }
}

impl GoValue for &[String] {
    fn go_value(&self) -> String {
        go_string_slice(self)
    }
}

impl GoValue for &Value {
    fn go_value(&self) -> String {
        match self {
            Value::Null => "null".to_string(),
            Value::Bool(b) => b.to_string(),
            Value::Number(n) => n.to_string(),
            Value::String(s) => go_quote(s),
            Value::Object(map) if map.values().all(Value::is_string) => go_string_map(
                map.iter()
                    .map(|(k, v)| (k.as_str(), v.as_str().unwrap_or_default())),
            ),
            Value::Array(items) if items.iter().all(Value::is_string) => {
                let items: Vec<String> = items
                    .iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect();
                go_string_slice(&items)
            }
            other => other.to_string(),
        }
    }
}

/// A value whose rendering is already done (for the few places that show a struct).
#[derive(Clone, Debug)]
pub struct Rendered(pub String);

impl GoValue for Rendered {
    fn go_value(&self) -> String {
        self.0.clone()
    }
}

/// Go's `%q` of a string: double-quoted with backslash escapes.
pub fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\u{b}' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c if c.is_control() => {
                let n = c as u32;
                if n <= 0xffff {
                    out.push_str(&format!("\\u{n:04x}"));
                } else {
                    out.push_str(&format!("\\U{n:08x}"));
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Go's `%#v` of a `map[string]string` (keys in sorted order, as Go prints maps).
pub fn go_string_map<'a>(entries: impl Iterator<Item = (&'a str, &'a str)>) -> String {
    let mut pairs: Vec<(&str, &str)> = entries.collect();
    pairs.sort_unstable();
    let body: Vec<String> = pairs
        .iter()
        .map(|(k, v)| format!("{}:{}", go_quote(k), go_quote(v)))
        .collect();
    format!("map[string]string{{{}}}", body.join(", "))
}

/// Go's `%#v` of a `[]string`.
pub fn go_string_slice(items: &[String]) -> String {
    let body: Vec<String> = items.iter().map(|s| go_quote(s)).collect();
    format!("[]string{{{}}}", body.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_render_children_indexes_and_keys_like_kubernetes() {
        let p = FieldPath::new("spec")
            .child("containers")
            .index(0)
            .child("name");
        assert_eq!(p.to_string(), "spec.containers[0].name");
        assert_eq!(FieldPath::new("data").key("a b").to_string(), "data[a b]");
        assert_eq!(FieldPath::root().to_string(), "<nil>");
        assert_eq!(FieldPath::root().child("key").to_string(), "key");
    }

    #[test]
    fn error_bodies_follow_the_kubernetes_layout() {
        let p = FieldPath::new("spec").child("replicas");
        assert_eq!(
            FieldError::required(&p, "").to_string(),
            "spec.replicas: Required value"
        );
        assert_eq!(
            FieldError::invalid(&p, -1i64, "must be greater than or equal to 0").to_string(),
            "spec.replicas: Invalid value: -1: must be greater than or equal to 0"
        );
        assert_eq!(
            FieldError::not_supported(&p, "x", &["TCP", "UDP"]).body(),
            "Unsupported value: \"x\": supported values: \"TCP\", \"UDP\""
        );
        assert_eq!(FieldError::forbidden(&p, "nope").body(), "Forbidden: nope");
        assert_eq!(
            FieldError::too_long(&p, 262144).body(),
            "Too long: may not be more than 262144 bytes"
        );
        assert_eq!(
            FieldError::duplicate(&p, "a").body(),
            "Duplicate value: \"a\""
        );
        assert_eq!(FieldError::not_found(&p, "v").body(), "Not found: \"v\"");
        assert_eq!(
            FieldError::required(&p, "").error_type.reason(),
            "FieldValueRequired"
        );
    }

    #[test]
    fn go_values_render_like_fmt() {
        assert_eq!(go_quote("a\"b\\c\n"), r#""a\"b\\c\n""#);
        let mut m = BTreeMap::new();
        m.insert("b".to_string(), "2".to_string());
        m.insert("a".to_string(), "1".to_string());
        assert_eq!((&m).go_value(), r#"map[string]string{"a":"1", "b":"2"}"#);
        let v: &[String] = &["x".to_string(), "y".to_string()];
        assert_eq!(v.go_value(), r#"[]string{"x", "y"}"#);
        assert_eq!(
            (&serde_json::json!({"app": "x"})).go_value(),
            r#"map[string]string{"app":"x"}"#
        );
        assert_eq!((&serde_json::json!(3)).go_value(), "3");
    }

    #[test]
    fn aggregates_drop_duplicates_and_bracket_several() {
        let p = FieldPath::new("a");
        let e1 = FieldError::required(&p, "");
        let e2 = FieldError::forbidden(&p, "x");
        assert_eq!(aggregate(std::slice::from_ref(&e1)), "a: Required value");
        assert_eq!(aggregate(&[e1.clone(), e1.clone()]), "a: Required value");
        assert_eq!(aggregate(&[e1, e2]), "[a: Required value, a: Forbidden: x]");
    }
}
