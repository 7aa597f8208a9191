//! The wasmkube apiserver: the Kubernetes REST API over a revisioned [`Store`].
//!
//! Request flow: TLS (`serve`) -> auditing (`audit`) -> authentication (`authn`), impersonation
//! (`impersonation`) and authorization (`authz`, `rbac`) -> axum router (`routes`)
//! -> generic handlers (`handlers`) keyed by the [`registry::Registry`] -> object storage
//! (`storage`) -> the store. Watches stream from the store's watch (`watch`).
//! Table output (`table`), discovery (`discovery`) and OpenAPI (`openapi`) are derived
//! from the same registry. `/metrics` serves the request and watch counters (`metrics`).

pub mod admission;
pub mod audit;
pub mod authn;
pub mod authz;
pub mod bootstrap_token;
pub mod certificates;
pub mod discovery;
pub mod encryption;
pub mod error;
pub mod exec;
pub mod filter;
pub mod handlers;
pub mod impersonation;
pub mod inflight;
pub mod join;
pub mod metrics;
pub mod namespace;
pub mod node_proxy;
pub mod object;
pub mod openapi;
pub mod pki;
pub mod portforward;
pub mod protobuf;
pub mod rbac;
pub mod registry;
pub mod request;
pub mod routes;
pub mod serve;
pub mod server;
pub mod serviceaccount;
pub mod services;
pub mod state;
pub mod table;
#[cfg(feature = "testing")]
pub mod testing;
pub mod typed;
pub mod validation;
pub mod watch;

pub use server::{
    Config, DEFAULT_CLUSTER_SIGNING_DURATION, Datastore, Limits, Running, StartError, start,
    start_with_limits,
};
pub use wasmkube_store::{EtcdConfig, EtcdTls, Store};
