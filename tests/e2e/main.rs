//! End-to-end acceptance tests of `wasmkube server`: one test binary that starts real server
//! processes (each test its own, on a free loopback port with a temporary data directory) and
//! drives them with the real `kubectl` and with kube-rs, exactly as users and components do.
//!
//! These tests are the specification of the apiserver's observable behaviour; where they assert
//! a detail (a reason, a status code, the columns of a table) it is what a real Kubernetes
//! apiserver does.
//!
//! The wasm workload tests (`wasm_pods`, `scheduling`, `hostile`) add nodes: `wasmkube agent`
//! processes joined with the server's token (or the server's embedded agent), with the sample
//! images (`samples/build --oci`) or modules written at test time imported into their stores.
//!
//! `audit` reads the audit log a policy file asks for, after kubectl commands as several
//! users.
//!
//! `netns_lab` proves the network-namespace lab (`harness::netns`) that tests sending traffic
//! to non-loopback addresses (node IPs, pod and service CIDRs) run their clusters in, so that no
//! packet leaves the machine.
//!
//! `containerd_lab` proves the private containerd (`harness::containerd`, in a lab host, with
//! the offline busybox and pause images of `harness::linux_images`) that the tests of Linux
//! container pods run their nodes' containers in, and the agent's CNI configuration list
//! against the real plugins.
//!
//! `cluster_dns` asks the server's cluster DNS with `dig` on 127.0.0.1, its upstream a
//! dnsmasq the test starts there. `wasm_network` runs it in a lab (listening on host 0's
//! address behind kube-dns, a dnsmasq upstream in host 0) for wasm pods calling Services by
//! name.
//!
//! `etcd_store` runs the server on a real etcd (`--datastore-endpoint`) that it starts on
//! loopback (the store's own test support, `control/store/tests/support/etcd.rs`).
//!
//! `rbac` acts as several users: client certificates the cluster CA issues for them
//! (`TestCluster::user_kubeconfig`), and impersonation (`kubectl --as`) by the admin.

mod admission;
mod airgap;
mod api_kubectl;
mod api_semantics;
mod audit;
mod bad_input;
mod cascading;
mod certificates;
mod cluster_dns;
mod containerd_lab;
mod controller_identities;
mod controller_manager;
mod cri_pods;
mod daemonsets;
mod deployments;
mod disk_full;
mod drain;
mod durability;
mod encryption;
mod endpoints;
mod etcd_store;
mod exec;
mod functions;
mod guest_isolation;
mod harness;
mod host_files;
mod hostile;
mod image_store;
mod jobs;
mod kube_client;
mod kube_proxy;
mod kubectl;
mod limits;
mod netns_lab;
mod network_policies;
mod node_authorizer;
mod node_identity;
mod node_ipam;
mod node_lifecycle;
mod node_proxy;
mod pod_network;
mod port_forward;
mod quota;
mod rbac;
mod rbac_roles;
mod registry;
mod registry_samples;
mod registry_tls;
mod replicasets;
mod scheduling;
mod service_accounts;
mod service_traffic;
mod shutdown;
mod signatures;
mod tables;
mod wasm_network;
mod wasm_pods;
