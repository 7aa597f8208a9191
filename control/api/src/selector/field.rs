//! Field selectors: `?fieldSelector=metadata.name=x,spec.nodeName!=`.
//!
//! Parsing is `fields.ParseSelector`: terms split on unescaped commas and sorted, each
//! split at the first `!=`, `==` or `=`; in values `\\`, `\,` and `\=` are escapes and a
//! bare `,` or `=` is an error. The field name is taken verbatim (no trimming), so the
//! apiserver can reject unknown names with `field label not supported: <name>`.
//!
//! Matching reads each field from the JSON object with [`object_field_value`].

use std::fmt;
use std::str::FromStr;

use serde_json::Value;

use super::SelectorError;

/// One `field=value` (or `field!=value`) term.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldTerm {
    /// The field path, e.g. `spec.nodeName`.
    pub field: String,
    /// The unescaped value.
    pub value: String,
    /// `true` for `!=`.
    pub negated: bool,
}

impl FieldTerm {
    /// Whether `object` satisfies this term.
    pub fn matches(&self, object: &Value) -> bool {
        (object_field_value(object, &self.field) == self.value) != self.negated
    }
}

/// A parsed field selector; all terms must hold. Empty selects everything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FieldSelector {
    terms: Vec<FieldTerm>,
}

impl FieldSelector {
    /// The selector that matches everything.
    pub fn everything() -> Self {
        FieldSelector::default()
    }

    /// Parses a field selector string.
    pub fn parse(selector: &str) -> Result<Self, SelectorError> {
        let mut parts = split_terms(selector);
        parts.sort_unstable();
        let mut terms = Vec::new();
        for part in parts.into_iter().filter(|p| !p.is_empty()) {
            let Some((field, op, raw)) = split_term(part) else {
                return Err(SelectorError::Field(format!(
                    "invalid selector: '{selector}'; can't understand '{part}'"
                )));
            };
            let value = unescape_value(raw)?;
            terms.push(FieldTerm {
                field: field.to_string(),
                value,
                negated: op == "!=",
            });
        }
        Ok(FieldSelector { terms })
    }

    /// The field names used, for the caller to reject unsupported ones.
    pub fn fields(&self) -> impl Iterator<Item = &str> {
        self.terms.iter().map(|t| t.field.as_str())
    }

    /// The terms, in sorted order.
    pub fn terms(&self) -> &[FieldTerm] {
        &self.terms
    }

    /// Whether there are no terms.
    pub fn is_empty(&self) -> bool {
        self.terms.is_empty()
    }

    /// The value `field` must equal if the selector pins it with `=` (Kubernetes'
    /// `RequiresExactMatch`), e.g. `metadata.name` for a single-object lookup.
    pub fn requires_exact_match(&self, field: &str) -> Option<&str> {
        self.terms
            .iter()
            .find(|t| t.field == field && !t.negated)
            .map(|t| t.value.as_str())
    }

    /// Whether `object` satisfies every term.
    pub fn matches(&self, object: &Value) -> bool {
        self.terms.iter().all(|t| t.matches(object))
    }
}

impl fmt::Display for FieldSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, t) in self.terms.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            let op = if t.negated { "!=" } else { "=" };
            write!(f, "{}{op}{}", t.field, escape_value(&t.value))?;
        }
        Ok(())
    }
}

impl FromStr for FieldSelector {
    type Err = SelectorError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        FieldSelector::parse(s)
    }
}

/// Splits on commas not preceded by a backslash escape; escapes stay in the terms.
fn split_terms(selector: &str) -> Vec<&str> {
    if selector.is_empty() {
        return Vec::new();
    }
    let mut terms = Vec::new();
    let mut start = 0;
    let mut in_slash = false;
    for (i, c) in selector.char_indices() {
        if in_slash {
            in_slash = false;
        } else if c == '\\' {
            in_slash = true;
        } else if c == ',' {
            terms.push(&selector[start..i]);
            start = i + 1;
        }
    }
    terms.push(&selector[start..]);
    terms
}

/// Splits at the first operator; `!=` and `==` are tried before `=` at each position.
fn split_term(term: &str) -> Option<(&str, &'static str, &str)> {
    for (i, _) in term.char_indices() {
        let rest = &term[i..];
        for op in ["!=", "==", "="] {
            if let Some(value) = rest.strip_prefix(op) {
                return Some((&term[..i], op, value));
            }
        }
    }
    None
}

fn unescape_value(s: &str) -> Result<String, SelectorError> {
    let mut out = String::with_capacity(s.len());
    let mut in_slash = false;
    for c in s.chars() {
        if in_slash {
            match c {
                '\\' | ',' | '=' => out.push(c),
                _ => {
                    return Err(SelectorError::Field(format!(
                        "invalid field selector: invalid escape sequence: \\{c}"
                    )));
                }
            }
            in_slash = false;
            continue;
        }
        match c {
            '\\' => in_slash = true,
            // Go prints the rune with %v, i.e. as its code point number.
            ',' | '=' => {
                return Err(SelectorError::Field(format!(
                    "invalid field selector: unescaped character in value: {}",
                    c as u32
                )));
            }
            _ => out.push(c),
        }
    }
    if in_slash {
        return Err(SelectorError::Field(
            "invalid field selector: invalid escape sequence: \\".into(),
        ));
    }
    Ok(out)
}

fn escape_value(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace(',', "\\,")
        .replace('=', "\\=")
}

/// The value a field selector compares for `field` of a JSON object, as the Kubernetes
/// registries compute their selectable fields:
/// - a dotted path (`metadata.name`, `spec.nodeName`, `involvedObject.kind`) read from
///   the object; strings as is, booleans `true`/`false`, numbers in decimal, anything
///   missing (or not a scalar) as the empty string;
/// - `source` (events) is `source.component`, or `reportingComponent` when that is empty;
/// - `status.podIP` (pods) is the first of `status.podIPs`, else `status.podIP`;
/// - `spec.hostNetwork` (pods) and `spec.unschedulable` (nodes) are `false` when absent;
/// - `status.successful` (jobs) is `status.succeeded`, `0` when absent, and
///   `status.replicas` (replica sets) is `0` when absent.
pub fn object_field_value(object: &Value, field: &str) -> String {
    match field {
        "source" => {
            let component = scalar(lookup(object, "source.component"));
            if component.is_empty() {
                scalar(lookup(object, "reportingComponent"))
            } else {
                component
            }
        }
        "status.podIP" => {
            let first = scalar(object.pointer("/status/podIPs/0/ip"));
            if first.is_empty() {
                scalar(lookup(object, field))
            } else {
                first
            }
        }
        "spec.hostNetwork" | "spec.unschedulable" => with_default(lookup(object, field), "false"),
        "status.successful" => with_default(lookup(object, "status.succeeded"), "0"),
        "status.replicas" => with_default(lookup(object, field), "0"),
        _ => scalar(lookup(object, field)),
    }
}

fn lookup<'a>(object: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.')
        .try_fold(object, |v, segment| v.as_object()?.get(segment))
}

fn scalar(value: Option<&Value>) -> String {
    match value {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Bool(b)) => b.to_string(),
        Some(Value::Number(n)) => n.to_string(),
        _ => String::new(),
    }
}

fn with_default(value: Option<&Value>, default: &str) -> String {
    match value {
        None | Some(Value::Null) => default.to_string(),
        v => scalar(v),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sel(s: &str) -> FieldSelector {
        match FieldSelector::parse(s) {
            Ok(sel) => sel,
            Err(e) => panic!("{s}: {e}"),
        }
    }

    #[test]
    fn parses_equality_and_inequality_terms_sorted() {
        let s = sel("spec.nodeName=n1,metadata.name==web,status.phase!=Running");
        let fields: Vec<&str> = s.fields().collect();
        assert_eq!(
            fields,
            vec!["metadata.name", "spec.nodeName", "status.phase"]
        );
        assert_eq!(
            s.to_string(),
            "metadata.name=web,spec.nodeName=n1,status.phase!=Running"
        );
        assert_eq!(s.requires_exact_match("metadata.name"), Some("web"));
        assert_eq!(s.requires_exact_match("status.phase"), None);
        assert!(sel("").is_empty());
        assert!(sel(",").is_empty());
    }

    #[test]
    fn unescapes_values_and_rejects_bad_escapes() {
        let s = sel(r"a=x\,y\=z\\");
        assert_eq!(s.terms()[0].value, r"x,y=z\");
        assert_eq!(s.to_string(), r"a=x\,y\=z\\");
        assert_eq!(
            FieldSelector::parse(r"a=\q"),
            Err(SelectorError::Field(
                r"invalid field selector: invalid escape sequence: \q".into()
            ))
        );
        assert_eq!(
            FieldSelector::parse(r"a=b\"),
            Err(SelectorError::Field(
                r"invalid field selector: invalid escape sequence: \".into()
            ))
        );
        assert_eq!(
            FieldSelector::parse("a=b=c"),
            Err(SelectorError::Field(
                "invalid field selector: unescaped character in value: 61".into()
            ))
        );
    }

    #[test]
    fn rejects_terms_without_an_operator() {
        assert_eq!(
            FieldSelector::parse("a=b,oops"),
            Err(SelectorError::Field(
                "invalid selector: 'a=b,oops'; can't understand 'oops'".into()
            ))
        );
    }

    #[test]
    fn keeps_field_names_verbatim() {
        let s = sel("metadata.name = x");
        assert_eq!(s.fields().collect::<Vec<_>>(), vec!["metadata.name "]);
        assert_eq!(s.terms()[0].value, " x");
    }

    #[test]
    fn matches_dotted_paths_with_missing_fields_as_empty() {
        let pod = json!({
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"nodeName": "n1", "hostNetwork": true, "priority": 5},
            "status": {"phase": "Running"}
        });
        assert!(sel("metadata.name=web,metadata.namespace=default").matches(&pod));
        assert!(sel("spec.nodeName=n1").matches(&pod));
        assert!(!sel("spec.nodeName!=n1").matches(&pod));
        assert!(sel("spec.hostNetwork=true").matches(&pod));
        assert!(sel("spec.priority=5").matches(&pod));
        assert!(sel("spec.schedulerName=").matches(&pod));
        assert!(sel("status.podIP!=1.2.3.4").matches(&pod));
        let unscheduled = json!({"metadata": {"name": "p"}, "spec": {}});
        assert!(sel("spec.nodeName=").matches(&unscheduled));
        assert!(sel("spec.hostNetwork=false").matches(&unscheduled));
    }

    #[test]
    fn special_fields_follow_the_kubernetes_registries() {
        let event = json!({"involvedObject": {"kind": "Pod"}, "source": {"component": "kubelet"}});
        assert!(sel("involvedObject.kind=Pod,source=kubelet").matches(&event));
        let new_event = json!({"reportingComponent": "scheduler"});
        assert!(sel("source=scheduler").matches(&new_event));
        assert_eq!(
            object_field_value(&json!({"status": {"succeeded": 2}}), "status.successful"),
            "2"
        );
        assert_eq!(object_field_value(&json!({}), "status.successful"), "0");
        assert_eq!(object_field_value(&json!({}), "status.replicas"), "0");
        assert_eq!(
            object_field_value(&json!({}), "spec.unschedulable"),
            "false"
        );
        let pod = json!({"status": {"podIP": "10.0.0.1", "podIPs": [{"ip": "10.0.0.2"}]}});
        assert_eq!(object_field_value(&pod, "status.podIP"), "10.0.0.2");
    }
}
