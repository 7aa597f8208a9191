//! Knative Serving (`serving.knative.dev/v1`) vocabulary shared by the apiserver (validation,
//! defaulting), the controllers that turn Services into Revisions and Deployments, and the
//! function ingress: the labels and annotations Knative puts on objects, revision names,
//! the autoscaling annotations parsed with Knative's bounds, and the Route's URLs.
//!
//! Objects themselves stay JSON (`serde_json::Value`) everywhere: Knative's kinds have no
//! k8s-openapi types, and a controller that rewrote them through a narrower struct would
//! drop fields it does not know.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;

/// The API group.
pub const GROUP: &str = "serving.knative.dev";
/// The API version.
pub const VERSION: &str = "v1";
/// `serving.knative.dev/v1`.
pub const API_VERSION: &str = "serving.knative.dev/v1";

/// Label: the Knative Service a Configuration, Route, Revision or pod belongs to.
pub const SERVICE_LABEL: &str = "serving.knative.dev/service";
/// Label: the Configuration of a Revision (and its Deployment and pods).
pub const CONFIGURATION_LABEL: &str = "serving.knative.dev/configuration";
/// Label: the Configuration's generation a Revision was made from.
pub const CONFIGURATION_GENERATION_LABEL: &str = "serving.knative.dev/configurationGeneration";
/// Label: the Revision of a Deployment and its pods.
pub const REVISION_LABEL: &str = "serving.knative.dev/revision";
/// Label: the Revision's uid on its Deployment and pods.
pub const REVISION_UID_LABEL: &str = "serving.knative.dev/revisionUID";
/// Label: the Route that sends traffic to a Revision.
pub const ROUTE_LABEL: &str = "serving.knative.dev/route";

/// The autoscaling annotations Knative reads from a revision template (or Revision).
pub const MIN_SCALE: &str = "autoscaling.knative.dev/min-scale";
/// Upper bound of the replicas (0: none).
pub const MAX_SCALE: &str = "autoscaling.knative.dev/max-scale";
/// Replicas a new Revision starts with.
pub const INITIAL_SCALE: &str = "autoscaling.knative.dev/initial-scale";
/// The per-pod target of the metric.
pub const TARGET: &str = "autoscaling.knative.dev/target";
/// `concurrency` or `rps` (KPA), `cpu` or `memory` (HPA class).
pub const METRIC: &str = "autoscaling.knative.dev/metric";
/// The stable window (6 s to 1 h).
pub const WINDOW: &str = "autoscaling.knative.dev/window";
/// How long the last pod stays after traffic stopped.
pub const RETENTION: &str = "autoscaling.knative.dev/scale-to-zero-pod-retention-period";
/// The autoscaler class.
pub const CLASS: &str = "autoscaling.knative.dev/class";
/// The target utilization percentage.
pub const TARGET_UTILIZATION: &str = "autoscaling.knative.dev/target-utilization-percentage";

/// The metrics of the KPA and HPA classes.
pub const METRICS: &[&str] = &["concurrency", "rps", "cpu", "memory"];
/// The autoscaler classes.
pub const CLASSES: &[&str] = &["kpa.autoscaling.knative.dev", "hpa.autoscaling.knative.dev"];

/// Knative's default `timeoutSeconds` of a revision.
pub const DEFAULT_TIMEOUT_SECONDS: i64 = 300;
/// The name Knative gives the serving container when the template names none.
pub const DEFAULT_CONTAINER_NAME: &str = "user-container";
/// The port a container without one listens on (Knative's `PORT` default).
pub const DEFAULT_PORT: i64 = 8080;

/// The name of a Configuration's Revision of `generation`: `NAME-00001`, as Knative.
pub fn revision_name(configuration: &str, generation: i64) -> String {
    format!("{configuration}-{generation:05}")
}

/// The name of a Revision's Deployment: `REVISION-deployment`, as Knative.
pub fn deployment_name(revision: &str) -> String {
    format!("{revision}-deployment")
}

/// The host of a Route (or of one of its tags, `TAG-NAME`): `NAME.NAMESPACE.DOMAIN`.
pub fn host(name: &str, namespace: &str, domain: &str, tag: Option<&str>) -> String {
    match tag {
        Some(tag) => format!("{tag}-{name}.{namespace}.{domain}"),
        None => format!("{name}.{namespace}.{domain}"),
    }
}

/// Parses a Go duration (`"60s"`, `"1m30s"`, `"500ms"`, `"0"`), as `time.ParseDuration`
/// does for non-negative values.
pub fn parse_go_duration(s: &str) -> Option<Duration> {
    if s == "0" {
        return Some(Duration::ZERO);
    }
    let mut rest = s;
    let mut total = 0f64;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if digits == 0 {
            return None;
        }
        let number: f64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let seconds = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total += number * seconds;
    }
    Duration::try_from_secs_f64(total).ok()
}

/// A problem with one autoscaling annotation: the annotation key and Knative's message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AnnotationError {
    /// The annotation the message is about.
    pub key: &'static str,
    /// The value as written.
    pub value: String,
    /// Knative's message, e.g. `expected 0 <= -1 <= 2147483647`.
    pub message: String,
}

/// The autoscaling settings of a revision, from its annotations.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Autoscaling {
    /// `min-scale` (0: may scale to zero).
    pub min_scale: i64,
    /// `max-scale` (0: unbounded).
    pub max_scale: i64,
    /// `initial-scale` (Knative's default 1).
    pub initial_scale: i64,
    /// `target`, if set.
    pub target: Option<f64>,
    /// `metric` (default `concurrency`).
    pub metric: String,
    /// `window` (default 60 s).
    pub window: Duration,
    /// `scale-to-zero-pod-retention-period` (default 0).
    pub retention: Duration,
}

fn annotation<'a>(annotations: &'a BTreeMap<String, String>, key: &str) -> Option<&'a str> {
    annotations.get(key).map(String::as_str)
}

/// Reads and checks the autoscaling annotations as Knative's `ValidateAnnotations` does.
pub fn autoscaling(
    annotations: &BTreeMap<String, String>,
) -> Result<Autoscaling, Vec<AnnotationError>> {
    let mut errors = Vec::new();
    let mut int = |key: &'static str, default: i64| -> i64 {
        match annotation(annotations, key) {
            None => default,
            Some(v) => match v.parse::<i64>() {
                Ok(n) if (0..=i64::from(i32::MAX)).contains(&n) => n,
                _ => {
                    errors.push(AnnotationError {
                        key,
                        value: v.to_string(),
                        message: format!("expected 0 <= {v} <= 2147483647"),
                    });
                    default
                }
            },
        }
    };
    let min_scale = int(MIN_SCALE, 0);
    let max_scale = int(MAX_SCALE, 0);
    let initial_scale = int(INITIAL_SCALE, 1);
    if max_scale != 0 && max_scale < min_scale {
        errors.push(AnnotationError {
            key: MAX_SCALE,
            value: max_scale.to_string(),
            message: format!("max-scale={max_scale} is less than min-scale={min_scale}"),
        });
    }
    let mut target = None;
    if let Some(v) = annotation(annotations, TARGET) {
        match v.parse::<f64>() {
            Ok(t) if t >= 0.01 && t.is_finite() => target = Some(t),
            _ => errors.push(AnnotationError {
                key: TARGET,
                value: v.to_string(),
                message: format!("expected 0.01 <= {v} <= 3.402823e+38"),
            }),
        }
    }
    let metric = annotation(annotations, METRIC).unwrap_or("concurrency");
    if !METRICS.contains(&metric) {
        errors.push(AnnotationError {
            key: METRIC,
            value: metric.to_string(),
            message: format!(
                "invalid value: {metric}; supported values: concurrency, rps, cpu, memory"
            ),
        });
    }
    if let Some(class) = annotation(annotations, CLASS)
        && !CLASSES.contains(&class)
    {
        errors.push(AnnotationError {
            key: CLASS,
            value: class.to_string(),
            message: format!("invalid value: {class}"),
        });
    }
    let mut window = Duration::from_secs(60);
    if let Some(v) = annotation(annotations, WINDOW) {
        match parse_go_duration(v) {
            Some(d) if d >= Duration::from_secs(6) && d <= Duration::from_secs(3600) => window = d,
            _ => errors.push(AnnotationError {
                key: WINDOW,
                value: v.to_string(),
                message: format!("expected 6s <= {v} <= 1h0m0s"),
            }),
        }
    }
    let mut retention = Duration::ZERO;
    if let Some(v) = annotation(annotations, RETENTION) {
        match parse_go_duration(v) {
            Some(d) => retention = d,
            None => errors.push(AnnotationError {
                key: RETENTION,
                value: v.to_string(),
                message: format!("invalid duration: {v}"),
            }),
        }
    }
    if let Some(v) = annotation(annotations, TARGET_UTILIZATION) {
        let ok = v.parse::<f64>().is_ok_and(|p| (1.0..=100.0).contains(&p));
        if !ok {
            errors.push(AnnotationError {
                key: TARGET_UTILIZATION,
                value: v.to_string(),
                message: format!("expected 1 <= {v} <= 100"),
            });
        }
    }
    if errors.is_empty() {
        Ok(Autoscaling {
            min_scale,
            max_scale,
            initial_scale,
            target,
            metric: metric.to_string(),
            window,
            retention,
        })
    } else {
        Err(errors)
    }
}

/// The string annotations of an object's `metadata` (non-strings skipped).
pub fn annotations_of(metadata: Option<&Value>) -> BTreeMap<String, String> {
    metadata
        .and_then(|m| m.get("annotations"))
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| v.as_str().map(|s| (k.clone(), s.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn annotations(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn revision_names_count_generations_with_five_digits() {
        assert_eq!(revision_name("hello", 1), "hello-00001");
        assert_eq!(revision_name("hello", 123456), "hello-123456");
    }

    #[test]
    fn go_durations_parse_as_time_parse_duration() {
        assert_eq!(parse_go_duration("60s"), Some(Duration::from_secs(60)));
        assert_eq!(parse_go_duration("1m30s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_go_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_go_duration("0"), Some(Duration::ZERO));
        assert_eq!(parse_go_duration("10"), None);
        assert_eq!(parse_go_duration("s"), None);
        assert_eq!(parse_go_duration(""), None);
    }

    #[test]
    fn min_scale_above_max_scale_is_refused_on_max_scale() {
        let errors = autoscaling(&annotations(&[(MIN_SCALE, "5"), (MAX_SCALE, "3")])).unwrap_err();
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].key, MAX_SCALE);
        assert_eq!(errors[0].message, "max-scale=3 is less than min-scale=5");
    }

    #[test]
    fn negative_targets_and_scales_are_out_of_bounds() {
        let errors = autoscaling(&annotations(&[(TARGET, "-1"), (MIN_SCALE, "-2")])).unwrap_err();
        let keys: Vec<&str> = errors.iter().map(|e| e.key).collect();
        assert_eq!(keys, [MIN_SCALE, TARGET]);
        assert_eq!(errors[1].message, "expected 0.01 <= -1 <= 3.402823e+38");
    }

    #[test]
    fn defaults_are_knatives() {
        let a = autoscaling(&BTreeMap::new()).unwrap();
        assert_eq!((a.min_scale, a.max_scale, a.initial_scale), (0, 0, 1));
        assert_eq!(a.metric, "concurrency");
        assert_eq!(a.window, Duration::from_secs(60));
    }
}
