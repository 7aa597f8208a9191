//! The Container Runtime Interface (CRI v1) as wasmkube's agent speaks it to a container
//! runtime (containerd's CRI plugin, CRI-O).
//!
//! * [`v1`]: the generated messages and gRPC clients of `runtime.v1` (`proto/api.proto`,
//!   copied from kubernetes/cri-api; the Rust code in `src/generated.rs` is made by
//!   `scripts/gen-cri-api` with protox and tonic-prost-build and checked in, so a build needs
//!   no protoc).
//! * [`Client`]: both services (`RuntimeService`, `ImageService`) over one HTTP/2 connection
//!   to a unix socket given as the kubelet's `--container-runtime-endpoint`
//!   (`unix:///run/containerd/containerd.sock`), every call bounded by a timeout like the
//!   kubelet's `--runtime-request-timeout`.

mod client;

pub use client::{Client, Endpoint, EndpointError, Error, Timeouts};

/// The generated CRI v1 API (`runtime.v1`).
#[allow(
    missing_docs,
    unreachable_pub,
    clippy::all,
    clippy::pedantic,
    rustdoc::invalid_html_tags,
    rustdoc::bare_urls,
    rustdoc::broken_intra_doc_links
)]
pub mod v1 {
    include!("generated.rs");
}
