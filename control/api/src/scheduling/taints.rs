//! Taints and tolerations, as `k8s.io/api/core/v1`'s `Toleration.ToleratesTaint` and
//! component-helpers' `TolerationsTolerateTaint` / `FindMatchingUntoleratedTaint`.
//!
//! A toleration tolerates a taint when:
//! 1. its effect is empty (any effect) or the taint's;
//! 2. its key is empty (any key) or the taint's;
//! 3. its operator is `Exists` (any value), or `Equal` — also when empty, the default —
//!    and its value is the taint's (an absent value is the empty string).
//!
//! An empty key is meant to go with `Exists` ("tolerate everything"); the apiserver rejects
//! an empty key with `Equal`. Should such a toleration reach these functions anyway, they
//! answer as Kubernetes' code does: rule 2 matches any key and rule 3 compares the values,
//! so it tolerates the taints of *any* key whose value equals its own. Other operators
//! (Kubernetes 1.35's alpha `Lt`/`Gt`, which this API version does not accept) tolerate
//! nothing.

use k8s_openapi::api::core::v1::{Taint, Toleration};

/// Whether `toleration` tolerates `taint` (see the module documentation).
pub fn tolerates(toleration: &Toleration, taint: &Taint) -> bool {
    let effect = toleration.effect.as_deref().unwrap_or("");
    if !effect.is_empty() && effect != taint.effect {
        return false;
    }
    let key = toleration.key.as_deref().unwrap_or("");
    if !key.is_empty() && key != taint.key {
        return false;
    }
    match toleration.operator.as_deref().unwrap_or("") {
        "" | "Equal" => {
            toleration.value.as_deref().unwrap_or("") == taint.value.as_deref().unwrap_or("")
        }
        "Exists" => true,
        _ => false,
    }
}

/// Whether any of `tolerations` tolerates `taint` (`TolerationsTolerateTaint`).
pub fn tolerations_tolerate_taint<'a>(
    tolerations: impl IntoIterator<Item = &'a Toleration>,
    taint: &Taint,
) -> bool {
    tolerations.into_iter().any(|t| tolerates(t, taint))
}

/// The first of `taints` that `include` selects and none of `tolerations` tolerates
/// (`FindMatchingUntoleratedTaint`), e.g. with `include` picking the `NoSchedule` and
/// `NoExecute` taints for scheduling.
pub fn find_matching_untolerated_taint<'t>(
    taints: &'t [Taint],
    tolerations: &[Toleration],
    include: impl Fn(&Taint) -> bool,
) -> Option<&'t Taint> {
    taints
        .iter()
        .filter(|taint| include(taint))
        .find(|taint| !tolerations_tolerate_taint(tolerations, taint))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn taint(key: &str, value: Option<&str>, effect: &str) -> Taint {
        Taint {
            key: key.into(),
            value: value.map(Into::into),
            effect: effect.into(),
            time_added: None,
        }
    }

    fn toleration(key: &str, operator: Option<&str>, value: &str, effect: &str) -> Toleration {
        Toleration {
            key: (!key.is_empty()).then(|| key.into()),
            operator: operator.map(Into::into),
            value: (!value.is_empty()).then(|| value.into()),
            effect: (!effect.is_empty()).then(|| effect.into()),
            toleration_seconds: None,
        }
    }

    const GPU: fn() -> Taint = || taint("dedicated", Some("gpu"), "NoSchedule");

    #[test]
    fn an_empty_key_with_exists_tolerates_every_taint() {
        let t = toleration("", Some("Exists"), "", "");
        assert!(tolerates(&t, &GPU()));
        assert!(tolerates(
            &t,
            &taint("node.kubernetes.io/unreachable", None, "NoExecute")
        ));
        assert!(tolerates(&t, &taint("x", Some("y"), "PreferNoSchedule")));
    }

    #[test]
    fn an_empty_key_with_equal_tolerates_any_key_with_the_same_value_as_kubernetes_does() {
        // Rejected by validation, but decided like Kubernetes' `ToleratesTaint`.
        let t = toleration("", Some("Equal"), "gpu", "");
        assert!(tolerates(&t, &GPU()));
        assert!(tolerates(&t, &taint("other", Some("gpu"), "NoExecute")));
        assert!(!tolerates(
            &t,
            &taint("dedicated", Some("tpu"), "NoSchedule")
        ));
        let valueless = toleration("", None, "", "");
        assert!(tolerates(&valueless, &taint("k", None, "NoSchedule")));
        assert!(!tolerates(&valueless, &GPU()));
    }

    #[test]
    fn an_empty_effect_tolerates_every_effect() {
        let t = toleration("dedicated", Some("Exists"), "", "");
        for effect in ["NoSchedule", "PreferNoSchedule", "NoExecute"] {
            assert!(
                tolerates(&t, &taint("dedicated", Some("gpu"), effect)),
                "{effect}"
            );
        }
    }

    #[test]
    fn another_effect_or_key_does_not_tolerate() {
        assert!(!tolerates(
            &toleration("dedicated", Some("Exists"), "", "NoExecute"),
            &GPU()
        ));
        assert!(!tolerates(
            &toleration("other", Some("Exists"), "", ""),
            &GPU()
        ));
    }

    #[test]
    fn the_operator_defaults_to_equal_and_compares_values() {
        assert!(tolerates(
            &toleration("dedicated", None, "gpu", "NoSchedule"),
            &GPU()
        ));
        assert!(tolerates(
            &toleration("dedicated", Some(""), "gpu", ""),
            &GPU()
        ));
        assert!(!tolerates(
            &toleration("dedicated", None, "tpu", ""),
            &GPU()
        ));
        assert!(!tolerates(
            &toleration("dedicated", Some("Equal"), "", ""),
            &GPU()
        ));
        // An absent value equals the empty one.
        assert!(tolerates(
            &toleration("k", Some("Equal"), "", ""),
            &taint("k", Some(""), "NoSchedule")
        ));
    }

    #[test]
    fn exists_ignores_the_value() {
        assert!(tolerates(
            &toleration("dedicated", Some("Exists"), "", "NoSchedule"),
            &GPU()
        ));
        assert!(tolerates(
            &toleration("k", Some("Exists"), "", ""),
            &taint("k", None, "NoExecute")
        ));
    }

    #[test]
    fn an_unknown_operator_tolerates_nothing() {
        assert!(!tolerates(
            &toleration("dedicated", Some("Lt"), "5", ""),
            &GPU()
        ));
        assert!(!tolerates(&toleration("", Some("exists"), "", ""), &GPU()));
    }

    #[test]
    fn the_first_untolerated_taint_of_the_selected_effects_is_found() {
        let taints = [
            taint("soft", None, "PreferNoSchedule"),
            GPU(),
            taint("evict", None, "NoExecute"),
        ];
        let hard = |t: &Taint| t.effect == "NoSchedule" || t.effect == "NoExecute";
        let none: [Toleration; 0] = [];
        assert_eq!(
            find_matching_untolerated_taint(&taints, &none, hard).map(|t| t.key.as_str()),
            Some("dedicated")
        );
        let gpu_ok = [toleration("dedicated", Some("Exists"), "", "")];
        assert_eq!(
            find_matching_untolerated_taint(&taints, &gpu_ok, hard).map(|t| t.key.as_str()),
            Some("evict")
        );
        let all = [toleration("", Some("Exists"), "", "")];
        assert_eq!(find_matching_untolerated_taint(&taints, &all, hard), None);
        assert!(tolerations_tolerate_taint(&gpu_ok, &GPU()));
    }
}
