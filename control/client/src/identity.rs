//! Who this process is to the apiserver: the machine's host name, the Lease holder identity
//! of a component replica (`<hostname>_<uuid>`, as kube-scheduler and
//! kube-controller-manager name theirs) and the default node name of a node agent (the
//! host name, lower-cased, as the kubelet's `nodeutil.GetHostname`).

/// The machine's host name, trimmed and lower-cased; `localhost` when it cannot be read.
pub fn hostname() -> String {
    let raw = hostname::get()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_default();
    let name = raw.trim().to_ascii_lowercase();
    if name.is_empty() {
        "localhost".to_string()
    } else {
        name
    }
}

/// `<hostname>_<uuid>`: unique per call, so two replicas on one machine (or one restarted)
/// never share a Lease holder identity.
pub fn default_identity() -> String {
    format!("{}_{}", hostname(), uuid::Uuid::new_v4())
}

/// The node name a node agent registers by default: the host name as a DNS subdomain
/// (lower case; characters other than letters, digits, `-` and `.` become `-`).
pub fn default_node_name() -> String {
    node_name_from(&hostname())
}

/// `raw` as a node name (see [`default_node_name`]); `wasmkube-node` if nothing is left.
pub fn node_name_from(raw: &str) -> String {
    let name: String = raw
        .trim()
        .to_ascii_lowercase()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c
            } else {
                '-'
            }
        })
        .collect();
    let name = name.trim_matches(|c| c == '-' || c == '.');
    if name.is_empty() {
        "wasmkube-node".to_string()
    } else {
        name.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identities_differ_per_call_and_start_with_the_host_name() {
        let (a, b) = (default_identity(), default_identity());
        assert_ne!(a, b);
        assert!(a.starts_with(&format!("{}_", hostname())), "{a}");
    }

    #[test]
    fn the_host_name_is_never_empty_and_lower_case() {
        let h = hostname();
        assert!(!h.is_empty());
        assert_eq!(h, h.to_ascii_lowercase());
    }

    #[test]
    fn node_names_are_dns_subdomains_of_the_host_name() {
        assert_eq!(node_name_from("Build_Box.Example\n"), "build-box.example");
        assert_eq!(node_name_from("--node-1."), "node-1");
        assert_eq!(node_name_from("  "), "wasmkube-node");
    }
}
