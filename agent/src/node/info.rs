//! Facts about the machine the agent runs on: CPUs, memory, disk, OS, kernel, IDs.
//!
//! Read from `/proc`, `/etc/os-release`, `/etc/machine-id` and `statvfs` of the data
//! directory; anything unreadable falls back to a neutral value rather than failing.

use std::path::Path;

/// The kubelet version the node reports.
pub const KUBELET_VERSION: &str = "v1.33.0-wasmkube";
/// The runtime version the node reports.
pub const CONTAINER_RUNTIME_VERSION: &str = "wasmtime://48.0.8";

/// What the node reports about the machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MachineInfo {
    /// Logical CPUs.
    pub cpus: i64,
    /// Total memory, bytes.
    pub memory_bytes: i64,
    /// Memory available now, bytes (`MemAvailable`).
    pub memory_available_bytes: i64,
    /// Size of the filesystem of the data directory, bytes.
    pub disk_bytes: i64,
    /// Free space there for unprivileged users, bytes.
    pub disk_available_bytes: i64,
    /// `PRETTY_NAME` of /etc/os-release.
    pub os_image: String,
    /// Kernel release.
    pub kernel_version: String,
    /// `/etc/machine-id`.
    pub machine_id: String,
    /// Boot ID.
    pub boot_id: String,
    /// Go-style architecture (`amd64`, `arm64`).
    pub architecture: String,
    /// Host name.
    pub hostname: String,
}

impl MachineInfo {
    /// Reads the machine's facts; `data_dir` is where disk usage is measured.
    pub fn detect(data_dir: &Path) -> MachineInfo {
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let (disk_bytes, disk_available_bytes) = disk(data_dir);
        MachineInfo {
            cpus: std::thread::available_parallelism()
                .map(|n| i64::try_from(n.get()).unwrap_or(1))
                .unwrap_or(1),
            memory_bytes: meminfo_kib(&meminfo, "MemTotal").saturating_mul(1024),
            memory_available_bytes: meminfo_kib(&meminfo, "MemAvailable").saturating_mul(1024),
            disk_bytes,
            disk_available_bytes,
            os_image: os_image(&std::fs::read_to_string("/etc/os-release").unwrap_or_default()),
            kernel_version: read_trimmed("/proc/sys/kernel/osrelease"),
            machine_id: read_trimmed("/etc/machine-id"),
            boot_id: read_trimmed("/proc/sys/kernel/random/boot_id"),
            architecture: go_arch(std::env::consts::ARCH).to_string(),
            hostname: hostname(),
        }
    }

    /// Refreshes what changes while running (available memory and disk).
    pub fn refresh(&mut self, data_dir: &Path) {
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        self.memory_available_bytes = meminfo_kib(&meminfo, "MemAvailable").saturating_mul(1024);
        let (total, avail) = disk(data_dir);
        self.disk_bytes = total;
        self.disk_available_bytes = avail;
    }
}

/// The machine's host name (lowercase), `localhost` if unknown.
pub fn hostname() -> String {
    wasmkube_client::identity::hostname()
}

fn read_trimmed(path: &str) -> String {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// A `Key:   123 kB` value of /proc/meminfo, in KiB (0 if absent).
fn meminfo_kib(meminfo: &str, key: &str) -> i64 {
    meminfo
        .lines()
        .find_map(|l| {
            let (k, rest) = l.split_once(':')?;
            (k == key).then(|| rest.trim().trim_end_matches("kB").trim().parse().ok())?
        })
        .unwrap_or(0)
}

/// `PRETTY_NAME` from os-release (quotes removed), or `Linux`.
fn os_image(os_release: &str) -> String {
    os_release
        .lines()
        .find_map(|l| l.strip_prefix("PRETTY_NAME="))
        .map(|v| v.trim().trim_matches('"').to_string())
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| "Linux".into())
}

/// Rust's architecture name as Go (and so Kubernetes) spells it.
fn go_arch(rust: &str) -> &str {
    match rust {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

/// (total, available) bytes of the filesystem holding `dir`.
fn disk(dir: &Path) -> (i64, i64) {
    match rustix::fs::statvfs(dir) {
        Ok(s) => {
            let frsize = if s.f_frsize > 0 {
                s.f_frsize
            } else {
                s.f_bsize
            };
            let total = s.f_blocks.saturating_mul(frsize);
            let avail = s.f_bavail.saturating_mul(frsize);
            (
                i64::try_from(total).unwrap_or(i64::MAX),
                i64::try_from(avail).unwrap_or(i64::MAX),
            )
        }
        Err(_) => (0, 0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meminfo_values_are_read_in_kib() {
        let m = "MemTotal:       24684876 kB\nMemFree:  1 kB\nMemAvailable:   22039488 kB\n";
        assert_eq!(meminfo_kib(m, "MemTotal"), 24_684_876);
        assert_eq!(meminfo_kib(m, "MemAvailable"), 22_039_488);
        assert_eq!(meminfo_kib(m, "Nope"), 0);
    }

    #[test]
    fn os_image_is_the_pretty_name() {
        let r = "NAME=\"Debian\"\nPRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\n";
        assert_eq!(os_image(r), "Debian GNU/Linux 12 (bookworm)");
        assert_eq!(os_image(""), "Linux");
    }

    #[test]
    fn architectures_use_go_names() {
        assert_eq!(go_arch("x86_64"), "amd64");
        assert_eq!(go_arch("aarch64"), "arm64");
    }

    #[test]
    fn detect_reads_this_machine() {
        let dir = tempfile::tempdir().unwrap();
        let info = MachineInfo::detect(dir.path());
        assert!(info.cpus >= 1);
        assert!(info.memory_bytes > 0);
        assert!(info.disk_bytes > 0);
        assert!(!info.hostname.is_empty());
    }
}
