//! Resource amounts as the scheduler counts them: what a pod requests and what a node offers.
//!
//! Quantities are parsed once, when a pod or node enters the cache, into plain integers
//! (millicores, bytes, counts) so the hot filter and score paths do integer arithmetic only.
//! A pod's request follows `k8s.io/component-helpers/resource.PodRequests`: the sum of its
//! containers, raised to the largest init container (restartable "sidecar" init containers
//! add up and keep running), plus the RuntimeClass overhead in `spec.overhead`. A container
//! with a limit and no request requests its limit, as the apiserver's defaulting would say.
//! Unparseable quantities count as zero: the apiserver validates them, so this only happens
//! with objects the scheduler cannot judge better anyway.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, Node, Pod};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use wasmkube_api::quantity::parse_quantity;

/// `cpu`.
pub const CPU: &str = "cpu";
/// `memory`.
pub const MEMORY: &str = "memory";
/// `ephemeral-storage`.
pub const EPHEMERAL_STORAGE: &str = "ephemeral-storage";
/// `pods`.
pub const PODS: &str = "pods";

/// CPU assumed for a container without a CPU request when scoring (kube-scheduler's 100m),
/// so that pods without requests still spread.
pub const DEFAULT_MILLI_CPU_REQUEST: i64 = 100;
/// Memory assumed for a container without a memory request when scoring (200 MB).
pub const DEFAULT_MEMORY_REQUEST: i64 = 200 * 1024 * 1024;

/// An amount of each resource: CPU in millicores, memory and storage in bytes, extended
/// resources (`example.com/gpu`, `hugepages-2Mi`) in whole units.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Resources {
    /// CPU in millicores.
    pub milli_cpu: i64,
    /// Memory in bytes.
    pub memory: i64,
    /// Ephemeral storage in bytes.
    pub ephemeral_storage: i64,
    /// Extended and hugepages resources, sorted by name; usually empty (no allocation).
    pub scalar: Vec<(String, i64)>,
}

impl Resources {
    /// Reads a `ResourceList` (requests, limits, allocatable, overhead).
    pub fn from_list(list: &BTreeMap<String, Quantity>) -> Self {
        let mut out = Resources::default();
        for (name, quantity) in list {
            out.set(name, quantity_in_units(name, quantity));
        }
        out
    }

    /// The amount of one resource by name (`cpu` in millicores).
    pub fn get(&self, name: &str) -> i64 {
        match name {
            CPU => self.milli_cpu,
            MEMORY => self.memory,
            EPHEMERAL_STORAGE => self.ephemeral_storage,
            _ => self
                .scalar
                .binary_search_by(|(n, _)| n.as_str().cmp(name))
                .map(|i| self.scalar[i].1)
                .unwrap_or(0),
        }
    }

    /// Sets one resource by name (`pods` is not a resource of this type and is ignored).
    pub fn set(&mut self, name: &str, amount: i64) {
        match name {
            CPU => self.milli_cpu = amount,
            MEMORY => self.memory = amount,
            EPHEMERAL_STORAGE => self.ephemeral_storage = amount,
            PODS => {}
            _ => match self.scalar.binary_search_by(|(n, _)| n.as_str().cmp(name)) {
                Ok(i) => self.scalar[i].1 = amount,
                Err(i) => self.scalar.insert(i, (name.to_string(), amount)),
            },
        }
    }

    /// Whether every amount is zero.
    pub fn is_zero(&self) -> bool {
        self.milli_cpu == 0
            && self.memory == 0
            && self.ephemeral_storage == 0
            && self.scalar.iter().all(|(_, v)| *v == 0)
    }

    /// Adds `other` to `self`, saturating.
    pub fn add(&mut self, other: &Resources) {
        self.milli_cpu = self.milli_cpu.saturating_add(other.milli_cpu);
        self.memory = self.memory.saturating_add(other.memory);
        self.ephemeral_storage = self
            .ephemeral_storage
            .saturating_add(other.ephemeral_storage);
        for (name, amount) in &other.scalar {
            let current = self.get(name);
            self.set(name, current.saturating_add(*amount));
        }
    }

    /// Subtracts `other` from `self`, saturating.
    pub fn sub(&mut self, other: &Resources) {
        self.milli_cpu = self.milli_cpu.saturating_sub(other.milli_cpu);
        self.memory = self.memory.saturating_sub(other.memory);
        self.ephemeral_storage = self
            .ephemeral_storage
            .saturating_sub(other.ephemeral_storage);
        for (name, amount) in &other.scalar {
            let current = self.get(name);
            self.set(name, current.saturating_sub(*amount));
        }
    }

    /// Raises each amount of `self` to at least the one in `other`.
    pub fn max_with(&mut self, other: &Resources) {
        self.milli_cpu = self.milli_cpu.max(other.milli_cpu);
        self.memory = self.memory.max(other.memory);
        self.ephemeral_storage = self.ephemeral_storage.max(other.ephemeral_storage);
        for (name, amount) in &other.scalar {
            let current = self.get(name);
            self.set(name, current.max(*amount));
        }
    }
}

/// What a pod asks of a node, computed once per pod.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodRequests {
    /// The requests the fit check uses.
    pub resources: Resources,
    /// CPU for scoring: requests with [`DEFAULT_MILLI_CPU_REQUEST`] for containers that name none.
    pub non_zero_milli_cpu: i64,
    /// Memory for scoring: requests with [`DEFAULT_MEMORY_REQUEST`] for containers that name none.
    pub non_zero_memory: i64,
}

impl PodRequests {
    /// Computes a pod's effective requests.
    pub fn of(pod: &Pod) -> Self {
        let Some(spec) = &pod.spec else {
            return PodRequests::default();
        };
        let mut total = Resources::default();
        let mut non_zero = (0i64, 0i64);
        for container in &spec.containers {
            let requests = container_requests(container);
            non_zero.0 = non_zero.0.saturating_add(non_zero_cpu(&requests));
            non_zero.1 = non_zero.1.saturating_add(non_zero_memory(&requests));
            total.add(&requests);
        }
        let mut sidecars = Resources::default();
        let mut sidecars_non_zero = (0i64, 0i64);
        let mut init_max = Resources::default();
        let mut init_non_zero_max = (0i64, 0i64);
        for container in spec.init_containers.iter().flatten() {
            let requests = container_requests(container);
            let (cpu, memory) = (non_zero_cpu(&requests), non_zero_memory(&requests));
            let (step, step_non_zero) = if container.restart_policy.as_deref() == Some("Always") {
                // A sidecar keeps running next to everything that starts after it.
                total.add(&requests);
                non_zero.0 = non_zero.0.saturating_add(cpu);
                non_zero.1 = non_zero.1.saturating_add(memory);
                sidecars.add(&requests);
                sidecars_non_zero.0 = sidecars_non_zero.0.saturating_add(cpu);
                sidecars_non_zero.1 = sidecars_non_zero.1.saturating_add(memory);
                (sidecars.clone(), sidecars_non_zero)
            } else {
                let mut step = requests;
                step.add(&sidecars);
                (
                    step,
                    (
                        cpu.saturating_add(sidecars_non_zero.0),
                        memory.saturating_add(sidecars_non_zero.1),
                    ),
                )
            };
            init_max.max_with(&step);
            init_non_zero_max.0 = init_non_zero_max.0.max(step_non_zero.0);
            init_non_zero_max.1 = init_non_zero_max.1.max(step_non_zero.1);
        }
        total.max_with(&init_max);
        non_zero.0 = non_zero.0.max(init_non_zero_max.0);
        non_zero.1 = non_zero.1.max(init_non_zero_max.1);

        // Pod-level resources, when given, replace the container sum for cpu and memory.
        if let Some(pod_level) = spec.resources.as_ref().and_then(|r| r.requests.as_ref()) {
            let pod_level = Resources::from_list(pod_level);
            if pod_level.milli_cpu > 0 {
                total.milli_cpu = pod_level.milli_cpu;
                non_zero.0 = pod_level.milli_cpu;
            }
            if pod_level.memory > 0 {
                total.memory = pod_level.memory;
                non_zero.1 = pod_level.memory;
            }
        }
        if let Some(overhead) = &spec.overhead {
            let overhead = Resources::from_list(overhead);
            total.add(&overhead);
            non_zero.0 = non_zero.0.saturating_add(overhead.milli_cpu);
            non_zero.1 = non_zero.1.saturating_add(overhead.memory);
        }
        PodRequests {
            resources: total,
            non_zero_milli_cpu: non_zero.0,
            non_zero_memory: non_zero.1,
        }
    }
}

/// What a node offers pods: `status.allocatable` (falling back to `status.capacity`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Allocatable {
    /// Allocatable cpu, memory, storage and extended resources.
    pub resources: Resources,
    /// How many pods the node accepts.
    pub pods: i64,
}

impl Allocatable {
    /// Reads a node's allocatable resources.
    pub fn of(node: &Node) -> Self {
        let status = node.status.as_ref();
        let list = status
            .and_then(|s| s.allocatable.as_ref())
            .or_else(|| status.and_then(|s| s.capacity.as_ref()));
        let Some(list) = list else {
            return Allocatable::default();
        };
        Allocatable {
            resources: Resources::from_list(list),
            pods: list
                .get(PODS)
                .map(|q| quantity_in_units(PODS, q))
                .unwrap_or(0),
        }
    }
}

/// One container's requests: its `requests`, and its `limits` for resources it requests
/// nothing of (the apiserver's defaulting).
fn container_requests(container: &Container) -> Resources {
    let Some(resources) = &container.resources else {
        return Resources::default();
    };
    let mut out = resources
        .requests
        .as_ref()
        .map(Resources::from_list)
        .unwrap_or_default();
    if let Some(limits) = &resources.limits {
        let requests = resources.requests.as_ref();
        for (name, quantity) in limits {
            if requests.is_none_or(|r| !r.contains_key(name)) {
                out.set(name, quantity_in_units(name, quantity));
            }
        }
    }
    out
}

fn non_zero_cpu(requests: &Resources) -> i64 {
    if requests.milli_cpu == 0 {
        DEFAULT_MILLI_CPU_REQUEST
    } else {
        requests.milli_cpu
    }
}

fn non_zero_memory(requests: &Resources) -> i64 {
    if requests.memory == 0 {
        DEFAULT_MEMORY_REQUEST
    } else {
        requests.memory
    }
}

/// A quantity in the unit the scheduler counts `name` in: millicores for CPU, whole units
/// (rounded up, as `Quantity.Value` does) for everything else.
fn quantity_in_units(name: &str, quantity: &Quantity) -> i64 {
    let Ok(parsed) = parse_quantity(&quantity.0) else {
        return 0;
    };
    let amount = if name == CPU {
        parsed.milli_value()
    } else {
        parsed.value()
    };
    i64::try_from(amount).unwrap_or(if amount < 0 { i64::MIN } else { i64::MAX })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{NodeStatus, PodSpec, ResourceRequirements};

    fn list(items: &[(&str, &str)]) -> BTreeMap<String, Quantity> {
        items
            .iter()
            .map(|(k, v)| (k.to_string(), Quantity(v.to_string())))
            .collect()
    }

    fn container(requests: &[(&str, &str)], limits: &[(&str, &str)]) -> Container {
        Container {
            name: "c".into(),
            resources: Some(ResourceRequirements {
                requests: (!requests.is_empty()).then(|| list(requests)),
                limits: (!limits.is_empty()).then(|| list(limits)),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn pod(containers: Vec<Container>, init: Vec<Container>) -> Pod {
        Pod {
            spec: Some(PodSpec {
                containers,
                init_containers: (!init.is_empty()).then_some(init),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn containers_requests_add_up() {
        let p = pod(
            vec![
                container(&[("cpu", "250m"), ("memory", "64Mi")], &[]),
                container(&[("cpu", "1"), ("memory", "1Gi")], &[]),
            ],
            vec![],
        );
        let r = PodRequests::of(&p);
        assert_eq!(r.resources.milli_cpu, 1250);
        assert_eq!(r.resources.memory, (64 + 1024) * 1024 * 1024);
    }

    #[test]
    fn init_containers_raise_requests_to_their_maximum() {
        let p = pod(
            vec![container(&[("cpu", "100m"), ("memory", "1Gi")], &[])],
            vec![
                container(&[("cpu", "2")], &[]),
                container(&[("cpu", "500m")], &[]),
            ],
        );
        let r = PodRequests::of(&p);
        assert_eq!(r.resources.milli_cpu, 2000);
        assert_eq!(r.resources.memory, 1024 * 1024 * 1024);
    }

    #[test]
    fn sidecar_init_containers_add_to_the_running_containers() {
        let mut sidecar = container(&[("cpu", "300m")], &[]);
        sidecar.restart_policy = Some("Always".into());
        let p = pod(
            vec![container(&[("cpu", "100m")], &[])],
            vec![sidecar, container(&[("cpu", "1")], &[])],
        );
        // running: 100m + 300m; the plain init container runs next to the sidecar: 1300m.
        assert_eq!(PodRequests::of(&p).resources.milli_cpu, 1300);
    }

    #[test]
    fn a_limit_without_a_request_counts_as_the_request() {
        let p = pod(
            vec![container(
                &[("cpu", "100m")],
                &[("cpu", "2"), ("memory", "32Mi")],
            )],
            vec![],
        );
        let r = PodRequests::of(&p);
        assert_eq!(r.resources.milli_cpu, 100);
        assert_eq!(r.resources.memory, 32 * 1024 * 1024);
    }

    #[test]
    fn overhead_is_added_to_the_requests() {
        let mut p = pod(vec![container(&[("memory", "10Mi")], &[])], vec![]);
        if let Some(spec) = p.spec.as_mut() {
            spec.overhead = Some(list(&[("memory", "1Mi"), ("cpu", "10m")]));
        }
        let r = PodRequests::of(&p);
        assert_eq!(r.resources.memory, 11 * 1024 * 1024);
        assert_eq!(r.resources.milli_cpu, 10);
    }

    #[test]
    fn containers_without_requests_score_with_defaults() {
        let p = pod(vec![container(&[], &[]), container(&[], &[])], vec![]);
        let r = PodRequests::of(&p);
        assert!(r.resources.is_zero());
        assert_eq!(r.non_zero_milli_cpu, 2 * DEFAULT_MILLI_CPU_REQUEST);
        assert_eq!(r.non_zero_memory, 2 * DEFAULT_MEMORY_REQUEST);
    }

    #[test]
    fn extended_resources_are_counted_by_name() {
        let p = pod(
            vec![
                container(&[("example.com/gpu", "1")], &[]),
                container(&[("example.com/gpu", "2")], &[]),
            ],
            vec![],
        );
        let r = PodRequests::of(&p);
        assert_eq!(r.resources.get("example.com/gpu"), 3);
        assert_eq!(r.resources.get("example.com/fpga"), 0);
    }

    #[test]
    fn node_allocatable_falls_back_to_capacity() {
        let node = Node {
            status: Some(NodeStatus {
                capacity: Some(list(&[("cpu", "4"), ("memory", "8Gi"), ("pods", "110")])),
                ..Default::default()
            }),
            ..Default::default()
        };
        let a = Allocatable::of(&node);
        assert_eq!(a.resources.milli_cpu, 4000);
        assert_eq!(a.resources.memory, 8 * 1024 * 1024 * 1024);
        assert_eq!(a.pods, 110);
    }

    #[test]
    fn unparseable_quantities_count_as_zero() {
        let p = pod(vec![container(&[("cpu", "lots")], &[])], vec![]);
        assert_eq!(PodRequests::of(&p).resources.milli_cpu, 0);
    }
}
