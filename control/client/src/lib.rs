//! wasmkube-client: what every API client of the cluster shares — our client-go (its
//! `tools/leaderelection`, `tools/record`, the work queues' rate limiters and
//! apimachinery's `errors.IsNotFound` & co.).
//!
//! The scheduler, the controller-manager and the node agent are API clients like any other
//! (kube-rs over HTTPS, also in-process). What they all need lives here, in a layer every
//! component imports, never in one component that the others borrow from:
//!
//! - [`events`]: the one Event recorder, with client-go's aggregation, de-duplication and
//!   spam filtering, a bounded queue and bounded, retried writes.
//! - [`leader`]: Lease leader election, so of several replicas of a component exactly one
//!   acts ([`LeaderElector::spawn_or_always`] is what a component's `run` calls).
//! - [`informers`]: shared informers, one watch and one store per kind in a process,
//!   feeding every component that needs that kind (client-go's `SharedInformerFactory`).
//! - [`connection`]: kube-rs' client stack with at most 25 idle connections kept to the
//!   apiserver, as client-go's transport (every in-process client is built with it).
//! - [`identity`]: who this process is (host name, `<hostname>_<uuid>` Lease holder
//!   identities, the default node name).
//! - [`retry`]: per-object exponential retry back-off, as the controllers' rate-limited work
//!   queues.
//! - [`status`]: what an API error means (`is_not_found`, `is_conflict`, ...), by the
//!   Status' reason and code as apimachinery decides it — the one place that looks at
//!   status codes.
//!
//! Pure predicates over API objects (toleration matching, node affinity, the pod-template
//! hash) have no I/O and live in `wasmkube-api`, as Kubernetes' component-helpers.

pub mod connection;
pub mod events;
pub mod identity;
pub mod informers;
pub mod leader;
pub mod retry;
pub mod status;

pub use events::{EventMetrics, EventRecorder, EventType, Reporter};
pub use leader::{LeaderElectionConfig, LeaderElectionError, LeaderElector};
