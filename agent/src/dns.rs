//! A pod's resolver configuration, as the kubelet forms it (`pkg/kubelet/network/dns`): from
//! the pod's `dnsPolicy` and `dnsConfig`, the node's `--cluster-dns` and `--cluster-domain`,
//! and the host's resolv.conf, within Kubernetes' limits (3 nameservers, 32 search paths of at
//! most 253 characters, 2048 characters in the search line).
//!
//! * `ClusterFirst` (the default): the cluster DNS only, searching
//!   `<ns>.svc.<domain> svc.<domain> <domain>` then the host's search domains, `ndots:5`.
//!   A host-network pod gets `Default` instead; with no cluster DNS configured, too.
//! * `ClusterFirstWithHostNet`: `ClusterFirst`, host network or not.
//! * `Default`: the host's nameservers, search domains and options (no resolv.conf configured:
//!   `nameserver 127.0.0.1`, `search .`, as the kubelet with `--resolv-conf=""`).
//! * `None`: nothing but the pod's `dnsConfig`.
//!
//! `dnsConfig` is then merged in: nameservers and searches appended without duplicates,
//! options by name (the pod's win). What exceeds the limits is cut, with a warning (the
//! kubelet's `DNSConfigForming` Event).
//!
//! Wasm pods resolve through it: [`PodResolver`] is a stub resolver of such a configuration
//! (nameservers, search list, `ndots`, `timeout`, `attempts`), what their `ip-name-lookup`
//! and outgoing `wasi:http` requests use. There are no containers yet whose
//! `/etc/resolv.conf` it would be.

use std::net::IpAddr;

use k8s_openapi::api::core::v1::Pod;

mod resolver;
pub use resolver::PodResolver;

/// Kubernetes' `MaxDNSNameservers`.
pub const MAX_NAMESERVERS: usize = 3;
/// Kubernetes' `MaxDNSSearchPaths`.
pub const MAX_SEARCH_PATHS: usize = 32;
/// Kubernetes' `MaxDNSSearchListChars`.
pub const MAX_SEARCH_LIST_CHARS: usize = 2048;
/// The longest search domain (a DNS-1123 subdomain).
const MAX_SEARCH_LEN: usize = 253;

/// The node's DNS settings (the kubelet's `--cluster-dns`, `--cluster-domain`,
/// `--resolv-conf`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeDns {
    /// The cluster DNS addresses; empty: `ClusterFirst` falls back to `Default`.
    pub cluster_dns: Vec<IpAddr>,
    /// The cluster domain (`cluster.local`); empty: no cluster search domains.
    pub cluster_domain: String,
    /// The host's resolver configuration; `None` when none is configured.
    pub host: Option<ResolvConf>,
}

/// A resolver configuration: the lines of a resolv.conf.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResolvConf {
    /// `nameserver` lines.
    pub nameservers: Vec<String>,
    /// The `search` line.
    pub searches: Vec<String>,
    /// The `options` line (`ndots:5`, `edns0`).
    pub options: Vec<String>,
}

/// A host resolv.conf that cannot be read.
#[derive(Debug, thiserror::Error)]
#[error("cannot read the resolver configuration: {0}")]
pub struct ResolvConfError(String);

impl ResolvConf {
    /// Parses a resolv.conf (resolv-conf, the hickory project's parser).
    pub fn parse(text: &str) -> Result<ResolvConf, ResolvConfError> {
        let config =
            resolv_conf::Config::parse(text).map_err(|e| ResolvConfError(e.to_string()))?;
        let mut options = Vec::new();
        if config.ndots != 1 {
            options.push(format!("ndots:{}", config.ndots));
        }
        if config.timeout != 5 {
            options.push(format!("timeout:{}", config.timeout));
        }
        if config.attempts != 2 {
            options.push(format!("attempts:{}", config.attempts));
        }
        if config.edns0 {
            options.push("edns0".into());
        }
        if config.rotate {
            options.push("rotate".into());
        }
        if config.single_request {
            options.push("single-request".into());
        }
        if config.single_request_reopen {
            options.push("single-request-reopen".into());
        }
        if config.use_vc {
            options.push("use-vc".into());
        }
        Ok(ResolvConf {
            nameservers: config
                .nameservers
                .iter()
                .map(|ns| IpAddr::from(ns.clone()).to_string())
                .collect(),
            searches: config.get_search().cloned().unwrap_or_default(),
            options,
        })
    }

    /// The file's text, as the kubelet writes it.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for ns in &self.nameservers {
            out.push_str(&format!("nameserver {ns}\n"));
        }
        if !self.searches.is_empty() {
            out.push_str(&format!("search {}\n", self.searches.join(" ")));
        }
        if !self.options.is_empty() {
            out.push_str(&format!("options {}\n", self.options.join(" ")));
        }
        out
    }
}

/// A pod's resolver configuration, and the warnings about what was cut to fit the limits.
pub fn pod_resolv_conf(pod: &Pod, node: &NodeDns) -> (ResolvConf, Vec<String>) {
    let spec = pod.spec.as_ref();
    let host_network = spec.and_then(|s| s.host_network).unwrap_or(false);
    let policy = spec
        .and_then(|s| s.dns_policy.as_deref())
        .unwrap_or("ClusterFirst");
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
    let mut warnings = Vec::new();
    let cluster = match policy {
        "None" => None,
        "ClusterFirstWithHostNet" => Some(true),
        "Default" => Some(false),
        // ClusterFirst (and anything else, which the API refuses).
        _ => Some(!host_network),
    };
    let mut config = match cluster {
        None => ResolvConf::default(),
        Some(true) if !node.cluster_dns.is_empty() => {
            let host_searches = node
                .host
                .as_ref()
                .map(|h| h.searches.clone())
                .unwrap_or_default();
            let mut searches = Vec::new();
            if !node.cluster_domain.is_empty() {
                let domain = &node.cluster_domain;
                searches = vec![
                    format!("{namespace}.svc.{domain}"),
                    format!("svc.{domain}"),
                    domain.clone(),
                ];
            }
            searches.extend(host_searches);
            ResolvConf {
                nameservers: node.cluster_dns.iter().map(IpAddr::to_string).collect(),
                searches: without_duplicates(searches),
                options: vec!["ndots:5".into()],
            }
        }
        Some(cluster) => {
            if cluster {
                warnings.push(format!(
                    "the node has no cluster DNS configured and cannot use the \"{policy}\" policy; falling back to \"Default\""
                ));
            }
            node.host.clone().unwrap_or_else(|| ResolvConf {
                nameservers: vec!["127.0.0.1".into()],
                searches: vec![".".into()],
                options: Vec::new(),
            })
        }
    };
    if let Some(dns) = spec.and_then(|s| s.dns_config.as_ref()) {
        config
            .nameservers
            .extend(dns.nameservers.iter().flatten().cloned());
        config.nameservers = without_duplicates(std::mem::take(&mut config.nameservers));
        config
            .searches
            .extend(dns.searches.iter().flatten().cloned());
        config.searches = without_duplicates(std::mem::take(&mut config.searches));
        for option in dns.options.iter().flatten() {
            let Some(name) = option.name.as_deref() else {
                continue;
            };
            let rendered = match &option.value {
                Some(value) if !value.is_empty() => format!("{name}:{value}"),
                _ => name.to_string(),
            };
            let existing = config
                .options
                .iter()
                .position(|o| o.split(':').next() == Some(name));
            match existing {
                Some(i) => config.options[i] = rendered,
                None => config.options.push(rendered),
            }
        }
    }
    fit_limits(&mut config, &mut warnings);
    (config, warnings)
}

fn without_duplicates(items: Vec<String>) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(items.len());
    for item in items {
        if !out.contains(&item) {
            out.push(item);
        }
    }
    out
}

/// Cuts nameservers and search paths to Kubernetes' limits, as the kubelet's
/// `formDNSConfigFitsLimits`.
fn fit_limits(config: &mut ResolvConf, warnings: &mut Vec<String>) {
    if config.nameservers.len() > MAX_NAMESERVERS {
        config.nameservers.truncate(MAX_NAMESERVERS);
        warnings.push(format!(
            "Nameserver limits were exceeded, some nameservers have been omitted, the applied nameserver line is: {}",
            config.nameservers.join(" ")
        ));
    }
    let mut exceeded = false;
    if config.searches.len() > MAX_SEARCH_PATHS {
        config.searches.truncate(MAX_SEARCH_PATHS);
        exceeded = true;
    }
    let before = config.searches.len();
    config.searches.retain(|s| s.len() <= MAX_SEARCH_LEN);
    exceeded |= config.searches.len() != before;
    while config.searches.join(" ").len() > MAX_SEARCH_LIST_CHARS {
        config.searches.pop();
        exceeded = true;
    }
    if exceeded {
        warnings.push(format!(
            "Search Line limits were exceeded, some search paths have been omitted, the applied search line is: {}",
            config.searches.join(" ")
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{PodDNSConfig, PodDNSConfigOption, PodSpec};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn pod(policy: &str, host_network: bool, dns: Option<PodDNSConfig>) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some("p".into()),
                namespace: Some("shop".into()),
                ..ObjectMeta::default()
            },
            spec: Some(PodSpec {
                dns_policy: Some(policy.into()),
                host_network: Some(host_network),
                dns_config: dns,
                ..PodSpec::default()
            }),
            ..Pod::default()
        }
    }

    fn node() -> NodeDns {
        NodeDns {
            cluster_dns: vec!["10.43.0.10".parse().unwrap()],
            cluster_domain: "cluster.local".into(),
            host: Some(
                ResolvConf::parse("nameserver 192.0.2.53\nsearch corp.example\noptions edns0\n")
                    .unwrap(),
            ),
        }
    }

    #[test]
    fn cluster_first_searches_the_namespace_then_the_host() {
        let (conf, warnings) = pod_resolv_conf(&pod("ClusterFirst", false, None), &node());
        assert!(warnings.is_empty());
        assert_eq!(
            conf.render(),
            "nameserver 10.43.0.10\n\
             search shop.svc.cluster.local svc.cluster.local cluster.local corp.example\n\
             options ndots:5\n"
        );
    }

    #[test]
    fn host_network_pods_use_the_host_unless_with_host_net() {
        let (conf, _) = pod_resolv_conf(&pod("ClusterFirst", true, None), &node());
        assert_eq!(conf.nameservers, ["192.0.2.53"]);
        assert_eq!(conf.searches, ["corp.example"]);
        assert_eq!(conf.options, ["edns0"]);
        let (conf, _) = pod_resolv_conf(&pod("ClusterFirstWithHostNet", true, None), &node());
        assert_eq!(conf.nameservers, ["10.43.0.10"]);
        let (conf, _) = pod_resolv_conf(&pod("Default", false, None), &node());
        assert_eq!(conf.nameservers, ["192.0.2.53"]);
    }

    #[test]
    fn no_cluster_dns_falls_back_to_default_with_a_warning() {
        let node = NodeDns {
            cluster_dns: Vec::new(),
            ..node()
        };
        let (conf, warnings) = pod_resolv_conf(&pod("ClusterFirst", false, None), &node);
        assert_eq!(conf.nameservers, ["192.0.2.53"]);
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        // Without a host resolv.conf: the kubelet's localhost fallback.
        let bare = NodeDns::default();
        let (conf, _) = pod_resolv_conf(&pod("Default", false, None), &bare);
        assert_eq!(conf.render(), "nameserver 127.0.0.1\nsearch .\n");
    }

    #[test]
    fn none_uses_only_the_pods_dns_config_and_options_merge_by_name() {
        let dns = PodDNSConfig {
            nameservers: Some(vec!["192.0.2.1".into(), "192.0.2.1".into()]),
            searches: Some(vec!["a.example".into()]),
            options: Some(vec![
                PodDNSConfigOption {
                    name: Some("ndots".into()),
                    value: Some("2".into()),
                },
                PodDNSConfigOption {
                    name: Some("edns0".into()),
                    value: None,
                },
            ]),
        };
        let (conf, _) = pod_resolv_conf(&pod("None", false, Some(dns.clone())), &node());
        assert_eq!(
            conf.render(),
            "nameserver 192.0.2.1\nsearch a.example\noptions ndots:2 edns0\n"
        );
        // Merged into ClusterFirst: appended; ndots overridden in place.
        let (conf, _) = pod_resolv_conf(&pod("ClusterFirst", false, Some(dns)), &node());
        assert_eq!(conf.nameservers, ["10.43.0.10", "192.0.2.1"]);
        assert_eq!(conf.searches.last().map(String::as_str), Some("a.example"));
        assert_eq!(conf.options, ["ndots:2", "edns0"]);
    }

    #[test]
    fn limits_cut_nameservers_and_search_paths_with_warnings() {
        let dns = PodDNSConfig {
            nameservers: Some((1..=4).map(|i| format!("192.0.2.{i}")).collect()),
            searches: Some(
                (0..40)
                    .map(|i| format!("{}{i}.example", "s".repeat(60)))
                    .chain(std::iter::once(format!("{}.example", "x".repeat(250))))
                    .collect(),
            ),
            options: None,
        };
        let (conf, warnings) = pod_resolv_conf(&pod("None", false, Some(dns)), &node());
        assert_eq!(conf.nameservers.len(), MAX_NAMESERVERS);
        assert!(conf.searches.len() <= MAX_SEARCH_PATHS);
        assert!(conf.searches.join(" ").len() <= MAX_SEARCH_LIST_CHARS);
        assert!(conf.searches.iter().all(|s| s.len() <= 253));
        assert_eq!(warnings.len(), 2, "{warnings:?}");
    }
}
