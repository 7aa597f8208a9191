//! Label selectors: requirements on an object's labels, all of which must hold.
//!
//! The semantics are those of `k8s.io/apimachinery/pkg/labels`: `in`, `=` and `==` need
//! the key present with one of the values; `notin` and `!=` also match when the key is
//! missing; `exists`/`!key` test presence; `gt`/`lt` compare integers. A selector with no
//! requirements matches everything; [`LabelSelector::nothing`] matches nothing.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::str::FromStr;

use k8s_openapi::apimachinery::pkg::apis::meta::v1 as metav1;
use serde_json::Value;

use super::SelectorError;
use super::parser;
use crate::field::{FieldError, FieldPath, Rendered, aggregate, go_quote, go_string_slice};
use crate::validate::{is_qualified_name, is_valid_label_value};

/// Something labels can be read from: a map of strings or a JSON labels object.
pub trait Labels {
    /// The value of label `key`, if present.
    fn label(&self, key: &str) -> Option<&str>;
}

impl Labels for BTreeMap<String, String> {
    fn label(&self, key: &str) -> Option<&str> {
        self.get(key).map(String::as_str)
    }
}

impl Labels for HashMap<String, String> {
    fn label(&self, key: &str) -> Option<&str> {
        self.get(key).map(String::as_str)
    }
}

impl Labels for serde_json::Map<String, Value> {
    fn label(&self, key: &str) -> Option<&str> {
        self.get(key).and_then(Value::as_str)
    }
}

/// A JSON labels object (`metadata.labels`); anything else has no labels.
impl Labels for Value {
    fn label(&self, key: &str) -> Option<&str> {
        self.as_object().and_then(|m| m.label(key))
    }
}

impl<L: Labels + ?Sized> Labels for &L {
    fn label(&self, key: &str) -> Option<&str> {
        (**self).label(key)
    }
}

/// A requirement's operator (`selection.Operator`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Operator {
    /// `key in (a,b)`.
    In,
    /// `key notin (a,b)`.
    NotIn,
    /// `key=a`.
    Equals,
    /// `key==a`.
    DoubleEquals,
    /// `key!=a`.
    NotEquals,
    /// `key`.
    Exists,
    /// `!key`.
    DoesNotExist,
    /// `key>5`.
    GreaterThan,
    /// `key<5`.
    LessThan,
}

impl Operator {
    /// The operator's name as Kubernetes spells it in messages (`in`, `=`, `gt`...).
    pub fn as_str(self) -> &'static str {
        match self {
            Operator::In => "in",
            Operator::NotIn => "notin",
            Operator::Equals => "=",
            Operator::DoubleEquals => "==",
            Operator::NotEquals => "!=",
            Operator::Exists => "exists",
            Operator::DoesNotExist => "!",
            Operator::GreaterThan => "gt",
            Operator::LessThan => "lt",
        }
    }
}

/// One condition on one label key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Requirement {
    key: String,
    operator: Operator,
    /// Sorted and without duplicates.
    values: Vec<String>,
}

impl Requirement {
    /// Builds a requirement, validating the key, the values and their number for the
    /// operator exactly as Kubernetes' `NewRequirement`.
    pub fn new(key: &str, operator: Operator, values: Vec<String>) -> Result<Self, SelectorError> {
        let errors = requirement_errors(key, operator, &values);
        if !errors.is_empty() {
            return Err(SelectorError::Label(aggregate(&errors)));
        }
        let mut values = values;
        values.sort();
        values.dedup();
        Ok(Requirement {
            key: key.to_string(),
            operator,
            values,
        })
    }

    /// The label key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The operator.
    pub fn operator(&self) -> Operator {
        self.operator
    }

    /// The values, sorted.
    pub fn values(&self) -> &[String] {
        &self.values
    }

    /// Whether `labels` satisfy this requirement.
    pub fn matches<L: Labels + ?Sized>(&self, labels: &L) -> bool {
        let value = labels.label(&self.key);
        let has = |v: &str| self.values.iter().any(|x| x == v);
        match self.operator {
            Operator::In | Operator::Equals | Operator::DoubleEquals => value.is_some_and(has),
            Operator::NotIn | Operator::NotEquals => !value.is_some_and(has),
            Operator::Exists => value.is_some(),
            Operator::DoesNotExist => value.is_none(),
            Operator::GreaterThan | Operator::LessThan => {
                let (Some(actual), [wanted]) = (value, self.values.as_slice()) else {
                    return false;
                };
                match (actual.parse::<i64>(), wanted.parse::<i64>()) {
                    (Ok(a), Ok(w)) if self.operator == Operator::GreaterThan => a > w,
                    (Ok(a), Ok(w)) => a < w,
                    _ => false,
                }
            }
        }
    }
}

fn requirement_errors(key: &str, operator: Operator, values: &[String]) -> Vec<FieldError> {
    let path = FieldPath::root();
    let mut errs = Vec::new();
    if let Some(e) = label_key_error(key, &path.child("key")) {
        errs.push(e);
    }
    let values_path = path.child("values");
    // Kubernetes shows the values with Go's %#v; an empty list there is always nil.
    let shown = if values.is_empty() {
        Rendered("[]string(nil)".into())
    } else {
        Rendered(go_string_slice(values))
    };
    match operator {
        Operator::In | Operator::NotIn if values.is_empty() => errs.push(FieldError::invalid(
            &values_path,
            shown.clone(),
            "for 'in', 'notin' operators, values set can't be empty",
        )),
        Operator::Equals | Operator::DoubleEquals | Operator::NotEquals if values.len() != 1 => {
            errs.push(FieldError::invalid(
                &values_path,
                shown.clone(),
                "exact-match compatibility requires one single value",
            ));
        }
        Operator::Exists | Operator::DoesNotExist if !values.is_empty() => {
            errs.push(FieldError::invalid(
                &values_path,
                shown.clone(),
                "values set must be empty for exists and does not exist",
            ))
        }
        Operator::GreaterThan | Operator::LessThan => {
            if values.len() != 1 {
                errs.push(FieldError::invalid(
                    &values_path,
                    shown.clone(),
                    "for 'Gt', 'Lt' operators, exactly one value is required",
                ));
            }
            for (i, v) in values.iter().enumerate() {
                if v.parse::<i64>().is_err() {
                    errs.push(FieldError::invalid(
                        &values_path.index(i),
                        v,
                        "for 'Gt', 'Lt' operators, the value must be an integer",
                    ));
                }
            }
        }
        _ => {}
    }
    for (i, v) in values.iter().enumerate() {
        let msgs = is_valid_label_value(v);
        if !msgs.is_empty() {
            errs.push(FieldError::invalid(
                &values_path.index(i).key(key),
                v,
                &msgs.join("; "),
            ));
        }
    }
    errs
}

/// Kubernetes' `validateLabelKey`: one error joining every problem of the key.
pub(super) fn label_key_error(key: &str, path: &FieldPath) -> Option<FieldError> {
    let msgs = is_qualified_name(key);
    (!msgs.is_empty()).then(|| FieldError::invalid(path, key, &msgs.join("; ")))
}

impl fmt::Display for Requirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.operator == Operator::DoesNotExist {
            f.write_str("!")?;
        }
        f.write_str(&self.key)?;
        let op = match self.operator {
            Operator::Exists | Operator::DoesNotExist => return Ok(()),
            Operator::Equals => "=",
            Operator::DoubleEquals => "==",
            Operator::NotEquals => "!=",
            Operator::In => " in ",
            Operator::NotIn => " notin ",
            Operator::GreaterThan => ">",
            Operator::LessThan => "<",
        };
        f.write_str(op)?;
        let set = matches!(self.operator, Operator::In | Operator::NotIn);
        if set {
            f.write_str("(")?;
        }
        f.write_str(&self.values.join(","))?;
        if set {
            f.write_str(")")?;
        }
        Ok(())
    }
}

/// A label selector: every requirement must match.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LabelSelector {
    requirements: Vec<Requirement>,
    nothing: bool,
}

impl LabelSelector {
    /// The selector that matches every object (an empty selector).
    pub fn everything() -> Self {
        LabelSelector::default()
    }

    /// The selector that matches no object (what a missing `metav1.LabelSelector` means).
    pub fn nothing() -> Self {
        LabelSelector {
            requirements: Vec::new(),
            nothing: true,
        }
    }

    /// Parses the query-string syntax (`a=b,c in (x,y),!d`); whitespace between tokens is
    /// ignored and the empty string selects everything.
    pub fn parse(selector: &str) -> Result<Self, SelectorError> {
        let mut requirements = parser::parse(selector)?;
        requirements.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(LabelSelector {
            requirements,
            nothing: false,
        })
    }

    /// Converts a `metav1.LabelSelector` (`matchLabels` become `=` requirements,
    /// `matchExpressions` In/NotIn/Exists/DoesNotExist); an empty one selects everything.
    pub fn from_k8s(selector: &metav1::LabelSelector) -> Result<Self, SelectorError> {
        let mut requirements = Vec::new();
        for (k, v) in selector.match_labels.iter().flatten() {
            requirements.push(Requirement::new(k, Operator::Equals, vec![v.clone()])?);
        }
        for expr in selector.match_expressions.iter().flatten() {
            let operator = match expr.operator.as_str() {
                "In" => Operator::In,
                "NotIn" => Operator::NotIn,
                "Exists" => Operator::Exists,
                "DoesNotExist" => Operator::DoesNotExist,
                other => {
                    return Err(SelectorError::Label(format!(
                        "{} is not a valid label selector operator",
                        go_quote(other)
                    )));
                }
            };
            requirements.push(Requirement::new(
                &expr.key,
                operator,
                expr.values.clone().unwrap_or_default(),
            )?);
        }
        requirements.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(LabelSelector {
            requirements,
            nothing: false,
        })
    }

    /// Converts an optional `metav1.LabelSelector`: `None` selects nothing, as in Kubernetes.
    pub fn from_k8s_opt(selector: Option<&metav1::LabelSelector>) -> Result<Self, SelectorError> {
        selector.map_or_else(|| Ok(Self::nothing()), Self::from_k8s)
    }

    /// The selector matching exactly these labels (`labels.SelectorFromSet`), unvalidated.
    pub fn from_set(labels: &BTreeMap<String, String>) -> Self {
        let requirements = labels
            .iter()
            .map(|(k, v)| Requirement {
                key: k.clone(),
                operator: Operator::Equals,
                values: vec![v.clone()],
            })
            .collect();
        LabelSelector {
            requirements,
            nothing: false,
        }
    }

    /// Adds a requirement (kept sorted by key).
    #[must_use]
    pub fn with(mut self, requirement: Requirement) -> Self {
        self.requirements.push(requirement);
        self.requirements.sort_by(|a, b| a.key.cmp(&b.key));
        self
    }

    /// The requirements, sorted by key.
    pub fn requirements(&self) -> &[Requirement] {
        &self.requirements
    }

    /// Whether the selector places no restriction (selects everything).
    pub fn is_empty(&self) -> bool {
        !self.nothing && self.requirements.is_empty()
    }

    /// Whether `labels` satisfy every requirement.
    pub fn matches<L: Labels + ?Sized>(&self, labels: &L) -> bool {
        !self.nothing && self.requirements.iter().all(|r| r.matches(labels))
    }

    /// Whether a JSON object's `metadata.labels` satisfy the selector.
    pub fn matches_object(&self, object: &Value) -> bool {
        self.matches(&object["metadata"]["labels"])
    }
}

impl fmt::Display for LabelSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.requirements.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{r}")?;
        }
        Ok(())
    }
}

impl FromStr for LabelSelector {
    type Err = SelectorError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        LabelSelector::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn sel(s: &str) -> LabelSelector {
        match LabelSelector::parse(s) {
            Ok(sel) => sel,
            Err(e) => panic!("{s}: {e}"),
        }
    }

    #[test]
    fn equality_selectors_need_the_key_and_value() {
        let l = labels(&[("app", "web"), ("tier", "front")]);
        assert!(sel("app=web").matches(&l));
        assert!(sel("app==web").matches(&l));
        assert!(sel("app=web,tier=front").matches(&l));
        assert!(!sel("app=db").matches(&l));
        assert!(!sel("missing=x").matches(&l));
        assert!(sel("app!=db").matches(&l));
        assert!(!sel("app!=web").matches(&l));
    }

    #[test]
    fn set_based_selector_matches_missing_key_with_notin() {
        let l = labels(&[("env", "prod")]);
        assert!(sel("tier notin (db)").matches(&l));
        assert!(sel("tier!=db").matches(&l));
        assert!(sel("env in (prod,staging)").matches(&l));
        assert!(!sel("env notin (prod)").matches(&l));
        assert!(!sel("tier in (db)").matches(&l));
        assert!(sel("env").matches(&l));
        assert!(!sel("!env").matches(&l));
        assert!(sel("!tier").matches(&l));
    }

    #[test]
    fn numeric_comparisons_need_integer_labels() {
        let l = labels(&[("n", "5"), ("s", "x")]);
        assert!(sel("n>4").matches(&l));
        assert!(!sel("n>5").matches(&l));
        assert!(sel("n<6").matches(&l));
        assert!(!sel("s<6").matches(&l));
        assert!(!sel("m<6").matches(&l));
    }

    #[test]
    fn empty_selector_matches_everything_and_nothing_matches_nothing() {
        let l = labels(&[]);
        assert!(sel("").matches(&l));
        assert!(sel("  ").is_empty());
        assert!(!LabelSelector::nothing().matches(&l));
        assert!(!LabelSelector::nothing().is_empty());
    }

    #[test]
    fn matches_json_label_objects() {
        let obj = serde_json::json!({"metadata": {"labels": {"app": "web"}}});
        assert!(sel("app=web").matches_object(&obj));
        assert!(sel("!app").matches_object(&serde_json::json!({"metadata": {}})));
        assert!(sel("app in (web)").matches(&serde_json::json!({"app": "web"})));
    }

    #[test]
    fn displays_requirements_sorted_by_key_in_kubernetes_syntax() {
        let s = sel("z in (b, a), !y, x, w!=1, v==2, u=3, t>4, s<5, r notin ()");
        assert_eq!(
            s.to_string(),
            "r notin (),s<5,t>4,u=3,v==2,w!=1,x,!y,z in (a,b)"
        );
        assert_eq!(s.requirements().len(), 9);
    }

    #[test]
    fn converts_metav1_label_selectors() {
        let k8s = metav1::LabelSelector {
            match_labels: Some([("app".to_string(), "web".to_string())].into()),
            match_expressions: Some(vec![
                metav1::LabelSelectorRequirement {
                    key: "env".into(),
                    operator: "In".into(),
                    values: Some(vec!["prod".into(), "dev".into()]),
                },
                metav1::LabelSelectorRequirement {
                    key: "canary".into(),
                    operator: "DoesNotExist".into(),
                    values: None,
                },
            ]),
        };
        let s = LabelSelector::from_k8s(&k8s).map_err(|e| e.to_string());
        assert_eq!(
            s.as_ref().map(ToString::to_string).as_deref(),
            Ok("app=web,!canary,env in (dev,prod)")
        );
        let s = s.unwrap_or_default();
        assert!(s.matches(&labels(&[("app", "web"), ("env", "dev")])));
        assert!(!s.matches(&labels(&[("app", "web"), ("env", "dev"), ("canary", "1")])));
        assert!(
            LabelSelector::from_k8s(&metav1::LabelSelector::default()).is_ok_and(|s| s.is_empty())
        );
        assert!(LabelSelector::from_k8s_opt(None).is_ok_and(|s| !s.matches(&labels(&[]))));
    }

    #[test]
    fn metav1_conversion_rejects_bad_operators_and_value_counts() {
        let bad_op = metav1::LabelSelector {
            match_expressions: Some(vec![metav1::LabelSelectorRequirement {
                key: "a".into(),
                operator: "Gt".into(),
                values: None,
            }]),
            ..Default::default()
        };
        assert_eq!(
            LabelSelector::from_k8s(&bad_op),
            Err(SelectorError::Label(
                "\"Gt\" is not a valid label selector operator".into()
            ))
        );
        let empty_in = metav1::LabelSelector {
            match_expressions: Some(vec![metav1::LabelSelectorRequirement {
                key: "a".into(),
                operator: "In".into(),
                values: Some(vec![]),
            }]),
            ..Default::default()
        };
        assert_eq!(
            LabelSelector::from_k8s(&empty_in),
            Err(SelectorError::Label(
                "values: Invalid value: []string(nil): for 'in', 'notin' operators, values set can't be empty".into()
            ))
        );
    }

    #[test]
    fn requirement_validation_names_the_offending_value() {
        let err = Requirement::new("a", Operator::Equals, vec!["b c".into()]);
        let Err(SelectorError::Label(msg)) = err else {
            panic!("expected an error")
        };
        assert!(msg.starts_with(
            "values[0][a]: Invalid value: \"b c\": a valid label must be an empty string"
        ));
        let err = Requirement::new("n", Operator::GreaterThan, vec!["x".into()]);
        assert_eq!(
            err.map_err(|e| e.to_string()),
            Err("values[0]: Invalid value: \"x\": for 'Gt', 'Lt' operators, the value must be an integer".into())
        );
    }

    #[test]
    fn from_set_selects_exactly_those_labels() {
        let set = labels(&[("app", "web")]);
        let s = LabelSelector::from_set(&set);
        assert!(s.matches(&labels(&[("app", "web"), ("x", "y")])));
        assert!(!s.matches(&labels(&[("app", "db")])));
        assert_eq!(s.to_string(), "app=web");
    }
}
