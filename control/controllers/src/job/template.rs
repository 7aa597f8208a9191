//! The pods of a Job: made from its template, owned by it, and for Indexed Jobs marked
//! with their completion index (annotation and label
//! `batch.kubernetes.io/job-completion-index`, the env `JOB_COMPLETION_INDEX` read from that
//! label through the downward API, and the hostname `<job>-<index>`), as Kubernetes'
//! `manageJob` and `addCompletionIndexEnvVariables` make them.

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Container, EnvVar, EnvVarSource, ObjectFieldSelector, Pod};
use kube::ResourceExt;

use super::plan::COMPLETION_INDEX_ANNOTATION;
use crate::pods::{controller_ref, generate_name_prefix, pod_from_template};

/// The env var that tells an Indexed Job's pod its index.
pub(crate) const COMPLETION_INDEX_ENV: &str = "JOB_COMPLETION_INDEX";
/// Generated names hold at most this many characters before the 5 random ones.
const MAX_GENERATED_NAME_PREFIX: usize = 63 - 5;

/// `<job>-<index>-`, the job name cut so that the whole prefix fits
/// (`podGenerateNameWithIndex`).
pub(crate) fn indexed_generate_name(job: &str, index: u32) -> String {
    let suffix = format!("-{index}-");
    let room = MAX_GENERATED_NAME_PREFIX.saturating_sub(suffix.len());
    let mut cut = job.len().min(room);
    while !job.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}{suffix}", &job[..cut])
}

fn add_index_env(container: &mut Container) {
    let env = container.env.get_or_insert_with(Vec::new);
    if env.iter().any(|e| e.name == COMPLETION_INDEX_ENV) {
        return;
    }
    env.push(EnvVar {
        name: COMPLETION_INDEX_ENV.to_string(),
        value: None,
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                api_version: None,
                field_path: format!("metadata.labels['{COMPLETION_INDEX_ANNOTATION}']"),
            }),
            ..EnvVarSource::default()
        }),
    });
}

/// The pod to create for `job`, with completion index `index` for Indexed Jobs.
pub(crate) fn pod_for(job: &Job, index: Option<u32>) -> Pod {
    let name = job.name_any();
    let namespace = job.namespace().unwrap_or_default();
    let mut template = job
        .spec
        .as_ref()
        .map(|s| s.template.clone())
        .unwrap_or_default();
    let generate_name = match index {
        Some(i) => {
            let value = i.to_string();
            let meta = template.metadata.get_or_insert_with(Default::default);
            meta.annotations
                .get_or_insert_with(Default::default)
                .insert(COMPLETION_INDEX_ANNOTATION.to_string(), value.clone());
            meta.labels
                .get_or_insert_with(Default::default)
                .insert(COMPLETION_INDEX_ANNOTATION.to_string(), value);
            if let Some(spec) = template.spec.as_mut() {
                spec.hostname = Some(format!("{name}-{i}"));
                for c in spec.init_containers.iter_mut().flatten() {
                    add_index_env(c);
                }
                for c in &mut spec.containers {
                    add_index_env(c);
                }
            }
            indexed_generate_name(&name, i)
        }
        None => generate_name_prefix(&name),
    };
    pod_from_template(&template, &namespace, &generate_name, controller_ref(job))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::batch::v1::JobSpec;
    use k8s_openapi::api::core::v1::{PodSpec, PodTemplateSpec};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn job() -> Job {
        Job {
            metadata: ObjectMeta {
                name: Some("pi".into()),
                namespace: Some("default".into()),
                uid: Some("u1".into()),
                ..ObjectMeta::default()
            },
            spec: Some(JobSpec {
                template: PodTemplateSpec {
                    metadata: Some(ObjectMeta {
                        labels: Some([("job-name".to_string(), "pi".to_string())].into()),
                        ..ObjectMeta::default()
                    }),
                    spec: Some(PodSpec {
                        containers: vec![Container {
                            name: "main".into(),
                            ..Container::default()
                        }],
                        ..PodSpec::default()
                    }),
                },
                ..JobSpec::default()
            }),
            status: None,
        }
    }

    #[test]
    fn indexed_pods_carry_their_index_in_annotation_label_env_and_hostname() {
        let pod = pod_for(&job(), Some(3));
        assert_eq!(pod.metadata.generate_name.as_deref(), Some("pi-3-"));
        let annotations = pod.metadata.annotations.unwrap_or_default();
        assert_eq!(
            annotations
                .get(COMPLETION_INDEX_ANNOTATION)
                .map(String::as_str),
            Some("3")
        );
        let labels = pod.metadata.labels.unwrap_or_default();
        assert_eq!(
            labels.get(COMPLETION_INDEX_ANNOTATION).map(String::as_str),
            Some("3")
        );
        assert_eq!(labels.get("job-name").map(String::as_str), Some("pi"));
        let spec = pod.spec.unwrap_or_default();
        assert_eq!(spec.hostname.as_deref(), Some("pi-3"));
        let env = spec.containers[0].env.clone().unwrap_or_default();
        let field = env
            .iter()
            .find(|e| e.name == COMPLETION_INDEX_ENV)
            .and_then(|e| e.value_from.as_ref()?.field_ref.as_ref())
            .map(|f| f.field_path.clone());
        assert_eq!(
            field.as_deref(),
            Some("metadata.labels['batch.kubernetes.io/job-completion-index']")
        );
        let owner = &pod.metadata.owner_references.unwrap_or_default()[0];
        assert_eq!((owner.kind.as_str(), owner.uid.as_str()), ("Job", "u1"));
    }

    #[test]
    fn non_indexed_pods_are_named_after_the_job_only() {
        let pod = pod_for(&job(), None);
        assert_eq!(pod.metadata.generate_name.as_deref(), Some("pi-"));
        assert!(pod.metadata.annotations.is_none());
        assert!(pod.spec.unwrap_or_default().containers[0].env.is_none());
    }

    #[test]
    fn long_job_names_are_cut_before_the_index() {
        let name = "j".repeat(70);
        let prefix = indexed_generate_name(&name, 12);
        assert_eq!(prefix.len(), 58);
        assert!(prefix.ends_with("j-12-"));
    }
}
