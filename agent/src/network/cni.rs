//! The CNI configuration of a node's container pods: what the agent writes where containerd's
//! CRI plugin reads it (its `conf_dir`), so that containerd sets up each sandbox's network with
//! the reference plugins of containernetworking-plugins, the Kubernetes way (issue 12, item 4).
//!
//! [`render_conflist`] (pure) turns a [`CniNetwork`] (the node's pod CIDR and the sub-range of
//! it that container pods get their addresses from) into a network configuration list:
//! - `bridge` on a bridge of its own (`isGateway`: the bridge holds the gateway address and is
//!   each pod's default route; `hairpinMode`, so a pod reaches itself through a Service that
//!   kube-proxy DNATs back to it; no `ipMasq`: traffic to other nodes' pods keeps its source
//!   address, routed by host-gw, and kube-proxy masquerades what it must),
//!   with `host-local` IPAM over the sub-range, a default route, and its allocations in a data
//!   directory of the agent's (host-local's default, `/var/lib/cni/networks`, is shared by every
//!   runtime on the machine);
//! - `portmap` (capability `portMappings`), for `hostPort`s.
//!
//! The `loopback` plugin is not in the list: containerd's CRI plugin brings up each sandbox's
//! `lo` itself, with the `loopback` binary from its `bin_dir` (go-cni's loopback network, loaded
//! beside the first configuration of `conf_dir`), and chaining `loopback` after `bridge` would
//! have it act on `eth0`. The reference plugins' CNI version 1.0.0 is used (Debian 12's
//! containernetworking-plugins 1.1 and containerd 1.6's libcni both speak it).
//!
//! [`write_conflist`] writes it into a directory atomically (a temporary file renamed over the
//! old one; containerd watches the directory and must never read half a file), and only when
//! it changed. Nothing here runs a plugin.

use std::io::Write as _;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};

/// The CNI specification version of the rendered list.
pub const CNI_VERSION: &str = "1.0.0";
/// The name containerd picks the first configuration of `conf_dir` by (sorted by name), and
/// the default name of the agent's file there.
pub const CONFLIST_FILE: &str = "10-wasmkube.conflist";

/// A node's container pod network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CniNetwork {
    /// The network's name (the CNI `name`; host-local keys its allocations by it).
    pub name: String,
    /// The Linux bridge the pods' veths join (at most 15 bytes).
    pub bridge: String,
    /// The node's pod CIDR (`spec.podCIDR`): its network address.
    pub subnet: Ipv4Addr,
    /// The pod CIDR's prefix length (8-30).
    pub prefix: u8,
    /// The first address container pods get (inside the subnet).
    pub range_start: Ipv4Addr,
    /// The last address container pods get (inside the subnet, not its broadcast address).
    pub range_end: Ipv4Addr,
    /// The bridge's address, the pods' default gateway (inside the subnet, outside the range).
    pub gateway: Ipv4Addr,
    /// The MTU of the bridge and the veths, or the kernel's default.
    pub mtu: Option<u32>,
    /// Where host-local keeps its allocations (one directory per network name inside).
    pub ipam_data_dir: PathBuf,
}

impl CniNetwork {
    /// The container half of a node's pod CIDR when wasm pods share it: the wasm allocator
    /// hands out the lower half ([`PodIpAllocator::with_cidr_shared`]), container pods get
    /// the upper half through `host-local`, the bridge holds its first address (the gateway).
    ///
    /// [`PodIpAllocator::with_cidr_shared`]: crate::network::PodIpAllocator::with_cidr_shared
    pub fn upper_half(subnet: Ipv4Addr, prefix: u8, ipam_data_dir: PathBuf) -> CniNetwork {
        let size = 1u32 << (32 - u32::from(prefix.clamp(8, 30)));
        let mask = !(size - 1);
        let base = u32::from(subnet) & mask;
        let half = base + size / 2;
        CniNetwork {
            name: "wasmkube".to_owned(),
            bridge: "wkcni0".to_owned(),
            subnet: Ipv4Addr::from(base),
            prefix,
            range_start: Ipv4Addr::from(half + 1),
            range_end: Ipv4Addr::from(base + size - 2),
            gateway: Ipv4Addr::from(half),
            mtu: None,
            ipam_data_dir,
        }
    }
}

/// Why a configuration cannot be rendered or written.
#[derive(Debug, thiserror::Error)]
pub enum CniError {
    /// The network name is not a valid CNI network name.
    #[error(
        "CNI network name {0:?} is invalid: it must start with a letter or digit and hold only \
         letters, digits, '_', '.' and '-'"
    )]
    Name(String),
    /// The bridge name is not a valid Linux interface name.
    #[error("bridge name {0:?} is invalid: 1-15 bytes, no '/', ':', whitespace or NUL")]
    Bridge(String),
    /// The pod CIDR is not usable.
    #[error("{subnet}/{prefix} is not a usable pod CIDR (prefix 8-30)")]
    Cidr {
        /// The network address.
        subnet: Ipv4Addr,
        /// The prefix length.
        prefix: u8,
    },
    /// The range or the gateway does not fit the pod CIDR.
    #[error("{what} does not fit the pod CIDR {subnet}/{prefix}")]
    Range {
        /// What does not fit, e.g. "range 10.42.1.200-10.42.1.100".
        what: String,
        /// The network address.
        subnet: Ipv4Addr,
        /// The prefix length.
        prefix: u8,
    },
    /// The MTU is outside what Linux allows on a bridge.
    #[error("MTU {0} is invalid (68-65535)")]
    Mtu(u32),
    /// The file name would not be read by containerd, or escapes the directory.
    #[error("{0:?} is not a CNI configuration file name (NAME.conflist, no '/')")]
    FileName(String),
    /// Writing the file failed.
    #[error("writing {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

impl CniNetwork {
    /// Checks the names, the CIDR, the range, the gateway and the MTU.
    pub fn validate(&self) -> Result<(), CniError> {
        let name_ok = self
            .name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric())
            && self
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
        if !name_ok {
            return Err(CniError::Name(self.name.clone()));
        }
        let bridge_ok = (1..=15).contains(&self.bridge.len())
            && !self
                .bridge
                .chars()
                .any(|c| c == '/' || c == ':' || c.is_whitespace() || c == '\0');
        if !bridge_ok {
            return Err(CniError::Bridge(self.bridge.clone()));
        }
        let (subnet, prefix) = (self.subnet, self.prefix);
        if !(8..=30).contains(&prefix) {
            return Err(CniError::Cidr { subnet, prefix });
        }
        let mask = u32::MAX << (32 - prefix);
        let network = u32::from(subnet);
        if network & !mask != 0 {
            return Err(CniError::Cidr { subnet, prefix });
        }
        let broadcast = network | !mask;
        // A usable host address of the subnet: not the network, not the broadcast address.
        let host = |ip: Ipv4Addr| {
            let ip = u32::from(ip);
            ip > network && ip < broadcast
        };
        let misfit = |what: String| CniError::Range {
            what,
            subnet,
            prefix,
        };
        let (start, end) = (self.range_start, self.range_end);
        if !host(start) || !host(end) || u32::from(start) > u32::from(end) {
            return Err(misfit(format!("range {start}-{end}")));
        }
        let gateway = u32::from(self.gateway);
        if !host(self.gateway) || (u32::from(start)..=u32::from(end)).contains(&gateway) {
            return Err(misfit(format!(
                "gateway {} (inside the subnet, outside the range {start}-{end})",
                self.gateway
            )));
        }
        if let Some(mtu) = self.mtu
            && !(68..=65_535).contains(&mtu)
        {
            return Err(CniError::Mtu(mtu));
        }
        Ok(())
    }
}

/// The network configuration list of `network` (see the module docs), as JSON.
pub fn render_conflist(network: &CniNetwork) -> Result<Value, CniError> {
    network.validate()?;
    let mut bridge = json!({
        "type": "bridge",
        "bridge": network.bridge,
        "isGateway": true,
        "ipMasq": false,
        "hairpinMode": true,
        "ipam": {
            "type": "host-local",
            "ranges": [[{
                "subnet": format!("{}/{}", network.subnet, network.prefix),
                "rangeStart": network.range_start.to_string(),
                "rangeEnd": network.range_end.to_string(),
                "gateway": network.gateway.to_string(),
            }]],
            "routes": [{"dst": "0.0.0.0/0"}],
            "dataDir": network.ipam_data_dir.to_string_lossy(),
        },
    });
    if let Some(mtu) = network.mtu {
        bridge["mtu"] = json!(mtu);
    }
    Ok(json!({
        "cniVersion": CNI_VERSION,
        "name": network.name,
        "plugins": [
            bridge,
            {"type": "portmap", "capabilities": {"portMappings": true}},
        ],
    }))
}

/// Renders `network` and writes it to `dir/file_name` (a `.conflist` name), atomically and only
/// when the file's content differs; returns the path and whether it was written.
pub fn write_conflist(
    dir: &Path,
    file_name: &str,
    network: &CniNetwork,
) -> Result<(PathBuf, bool), CniError> {
    let stem = file_name.strip_suffix(".conflist").unwrap_or_default();
    if stem.is_empty() || stem.starts_with('.') || file_name.contains('/') {
        return Err(CniError::FileName(file_name.to_owned()));
    }
    let mut content = serde_json::to_vec_pretty(&render_conflist(network)?)
        .expect("a JSON value always serializes");
    content.push(b'\n');
    let path = dir.join(file_name);
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| CniError::Io { path, source }
    };
    if std::fs::read(&path).is_ok_and(|old| old == content) {
        return Ok((path, false));
    }
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    // A dot name without a configuration extension: containerd never loads it half written.
    let temporary = dir.join(format!(".{file_name}.{}.tmp", std::process::id()));
    let written = (|| {
        let mut file = std::fs::File::create(&temporary)?;
        file.write_all(&content)?;
        file.sync_all()?;
        std::fs::rename(&temporary, &path)
    })();
    if let Err(source) = written {
        let _ = std::fs::remove_file(&temporary);
        return Err(CniError::Io { path, source });
    }
    Ok((path, true))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn containers_get_the_upper_half_of_the_pod_cidr() {
        let n = CniNetwork::upper_half("10.42.3.0".parse().unwrap(), 24, PathBuf::from("/d"));
        assert_eq!(
            (n.subnet, n.gateway, n.range_start, n.range_end),
            (
                "10.42.3.0".parse().unwrap(),
                "10.42.3.128".parse().unwrap(),
                "10.42.3.129".parse().unwrap(),
                "10.42.3.254".parse().unwrap()
            )
        );
        n.validate().unwrap();
    }

    fn network() -> CniNetwork {
        CniNetwork {
            name: "wasmkube".to_owned(),
            bridge: "wkcni0".to_owned(),
            subnet: Ipv4Addr::new(10, 42, 1, 0),
            prefix: 24,
            range_start: Ipv4Addr::new(10, 42, 1, 128),
            range_end: Ipv4Addr::new(10, 42, 1, 254),
            gateway: Ipv4Addr::new(10, 42, 1, 127),
            mtu: None,
            ipam_data_dir: PathBuf::from("/var/lib/wasmkube/cni/networks"),
        }
    }

    #[test]
    fn a_node_sub_range_renders_bridge_with_host_local_then_portmap() {
        let list = render_conflist(&network()).expect("valid");
        assert_eq!(list["cniVersion"], "1.0.0");
        assert_eq!(list["name"], "wasmkube");
        let plugins = list["plugins"].as_array().expect("plugins");
        assert_eq!(plugins.len(), 2);
        let bridge = &plugins[0];
        assert_eq!(bridge["type"], "bridge");
        assert_eq!(bridge["bridge"], "wkcni0");
        assert_eq!(bridge["isGateway"], true);
        assert_eq!(bridge["ipMasq"], false);
        assert_eq!(bridge["hairpinMode"], true);
        assert!(bridge.get("mtu").is_none());
        let ipam = &bridge["ipam"];
        assert_eq!(ipam["type"], "host-local");
        assert_eq!(
            ipam["ranges"],
            json!([[{
                "subnet": "10.42.1.0/24",
                "rangeStart": "10.42.1.128",
                "rangeEnd": "10.42.1.254",
                "gateway": "10.42.1.127",
            }]])
        );
        assert_eq!(ipam["routes"], json!([{"dst": "0.0.0.0/0"}]));
        assert_eq!(ipam["dataDir"], "/var/lib/wasmkube/cni/networks");
        assert_eq!(
            plugins[1],
            json!({"type": "portmap", "capabilities": {"portMappings": true}})
        );
    }

    #[test]
    fn an_mtu_goes_to_the_bridge() {
        let mut network = network();
        network.mtu = Some(1450);
        let list = render_conflist(&network).expect("valid");
        assert_eq!(list["plugins"][0]["mtu"], 1450);
    }

    #[test]
    fn ranges_and_gateways_outside_the_pod_cidr_are_refused() {
        type Change = fn(&mut CniNetwork);
        let cases: [(&str, Change); 8] = [
            ("start after end", |n| {
                n.range_start = Ipv4Addr::new(10, 42, 1, 200);
                n.range_end = Ipv4Addr::new(10, 42, 1, 150);
            }),
            ("range beyond the subnet", |n| {
                n.range_end = Ipv4Addr::new(10, 42, 2, 10);
            }),
            ("range ending on the broadcast address", |n| {
                n.range_end = Ipv4Addr::new(10, 42, 1, 255);
            }),
            ("range starting on the network address", |n| {
                n.range_start = Ipv4Addr::new(10, 42, 1, 0);
                n.gateway = Ipv4Addr::new(10, 42, 1, 255);
            }),
            ("gateway outside the subnet", |n| {
                n.gateway = Ipv4Addr::new(10, 42, 0, 1);
            }),
            ("gateway inside the range", |n| {
                n.gateway = Ipv4Addr::new(10, 42, 1, 130);
            }),
            ("subnet not a network address", |n| {
                n.subnet = Ipv4Addr::new(10, 42, 1, 7);
            }),
            ("prefix too long", |n| {
                n.prefix = 31;
            }),
        ];
        for (what, change) in cases {
            let mut network = network();
            change(&mut network);
            let error = render_conflist(&network).expect_err(what);
            assert!(
                matches!(error, CniError::Range { .. } | CniError::Cidr { .. }),
                "{what}: {error}"
            );
        }
    }

    #[test]
    fn names_and_mtus_the_plugins_would_refuse_are_refused() {
        let mut bad = network();
        bad.name = "-wasmkube".to_owned();
        assert!(matches!(render_conflist(&bad), Err(CniError::Name(_))));
        let mut bad = network();
        bad.bridge = "a-bridge-name-too-long".to_owned();
        assert!(matches!(render_conflist(&bad), Err(CniError::Bridge(_))));
        let mut bad = network();
        bad.bridge = "br/0".to_owned();
        assert!(matches!(render_conflist(&bad), Err(CniError::Bridge(_))));
        let mut bad = network();
        bad.mtu = Some(40);
        let error = render_conflist(&bad).expect_err("mtu");
        assert_eq!(error.to_string(), "MTU 40 is invalid (68-65535)");
    }

    #[test]
    fn the_file_is_written_whole_once_and_rewritten_only_when_it_changes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let conf_dir = dir.path().join("net.d");
        let (path, written) = write_conflist(&conf_dir, CONFLIST_FILE, &network()).expect("write");
        assert!(written);
        assert_eq!(path, conf_dir.join("10-wasmkube.conflist"));
        let on_disk: Value =
            serde_json::from_slice(&std::fs::read(&path).expect("read")).expect("JSON");
        assert_eq!(on_disk, render_conflist(&network()).expect("valid"));

        let (_, written) = write_conflist(&conf_dir, CONFLIST_FILE, &network()).expect("again");
        assert!(!written, "the same content is not rewritten");

        let mut moved = network();
        moved.range_start = Ipv4Addr::new(10, 42, 1, 192);
        let (_, written) = write_conflist(&conf_dir, CONFLIST_FILE, &moved).expect("changed");
        assert!(written);
        let names: Vec<String> = std::fs::read_dir(&conf_dir)
            .expect("list")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["10-wasmkube.conflist"], "no temporary file is left");
    }

    #[test]
    fn a_file_name_containerd_would_not_read_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        for name in [
            "wasmkube.json",
            ".conflist",
            "../x.conflist",
            ".hidden.conflist",
        ] {
            assert!(
                matches!(
                    write_conflist(dir.path(), name, &network()),
                    Err(CniError::FileName(_))
                ),
                "{name}"
            );
        }
    }
}
