//! Label selectors and field selectors, with Kubernetes' syntax, semantics and messages.
//!
//! - [`LabelSelector`] is `k8s.io/apimachinery/pkg/labels`: the query-string syntax of
//!   `?labelSelector=` and `kubectl -l` (`app=web,tier!=db,env in (a,b),!canary`) parsed by
//!   the same lexer and recursive-descent grammar, or built from a `metav1.LabelSelector`
//!   (`matchLabels` + `matchExpressions`) with [`LabelSelector::from_k8s`].
//! - [`FieldSelector`] is `k8s.io/apimachinery/pkg/fields`: `?fieldSelector=` terms
//!   `f=v`, `f==v`, `f!=v` with `\` escapes, matched against the JSON object by dotted
//!   path ([`object_field_value`]).
//!
//! Both are pure: parse once per request, then call `matches` per object.

mod field;
mod label;
mod parser;

pub use field::{FieldSelector, FieldTerm, object_field_value};
pub use label::{LabelSelector, Labels, Operator, Requirement};

/// A selector string or `metav1.LabelSelector` that cannot be used; the text is what
/// Kubernetes says, so the apiserver can return it in a 400 as is.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SelectorError {
    /// The label selector does not parse, or a key, value or operator is invalid.
    #[error("{0}")]
    Label(String),
    /// The field selector does not parse (bad term or escape sequence).
    #[error("{0}")]
    Field(String),
}
