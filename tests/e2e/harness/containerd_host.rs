//! What a private containerd needs around it, free of the test harness (std only), so that
//! `wasmkube-bench` (which includes this file) starts the very same daemon: its config.toml
//! ([`config_toml`]: everything under one directory, the CRI plugin's `sandbox_image`, CNI
//! from [`CNI_BIN_DIR`] and the caller's `conf_dir`, runc with cgroupfs and its own root, pod
//! network namespaces under the state directory, registry hosts from `DIR/certs.d`), the
//! probe that picks the snapshotter ([`overlay_mount_works`]), and the clean-up of what a
//! daemon leaves: its tasks while it answers ([`delete_tasks`]), the containers and shims of
//! a dead one ([`delete_containers_of`]) and the mounts under its directory
//! ([`unmount_under`]).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// Where Debian's containernetworking-plugins puts the CNI plugins.
pub(crate) const CNI_BIN_DIR: &str = "/usr/lib/cni";

/// The gRPC socket of the containerd whose directory is `dir` (its ttrpc socket is beside it,
/// with `.ttrpc` appended).
pub(crate) fn socket_path(dir: &Path) -> PathBuf {
    dir.join("containerd.sock")
}

/// The CRI plugin's registry hosts directory (`config_path`) of the containerd in `dir`.
pub(crate) fn registry_config_dir(dir: &Path) -> PathBuf {
    dir.join("certs.d")
}

/// The config.toml (version 2) of a containerd that keeps everything under `dir`, its CRI
/// plugin reading CNI configuration from `cni_conf_dir`, unpacking with `snapshotter` and
/// starting sandboxes from `sandbox_image`.
pub(crate) fn config_toml(
    dir: &Path,
    cni_conf_dir: &Path,
    snapshotter: &str,
    sandbox_image: &str,
) -> String {
    let socket = socket_path(dir);
    let socket = socket.display();
    let certs = registry_config_dir(dir);
    let certs = certs.display();
    let cni_conf_dir = cni_conf_dir.display();
    let dir = dir.display();
    format!(
        r#"# A private containerd of wasmkube's tests or benchmarks (tests/e2e/harness/containerd_host.rs).
version = 2
root = "{dir}/root"
state = "{dir}/state"
# Snapshotters and tracing that need what a test machine has not (btrfs, zfs, a devmapper
# pool, an aufs module, a collector).
disabled_plugins = [
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.zfs",
  "io.containerd.tracing.processor.v1.otlp",
  "io.containerd.internal.v1.tracing",
]

[grpc]
  address = "{socket}"

[ttrpc]
  address = "{socket}.ttrpc"

[debug]
  level = "info"

[plugins]
  [plugins."io.containerd.internal.v1.opt"]
    path = "{dir}/opt"

  [plugins."io.containerd.grpc.v1.cri"]
    sandbox_image = "{sandbox_image}"
    netns_mounts_under_state_dir = true
    stream_server_address = "127.0.0.1"
    stream_server_port = "0"
    # Sandboxes ask for oom_score_adj -998, which needs CAP_SYS_RESOURCE; without it (as in
    # this sandboxed machine) runc init dies ("can't get final child's PID from pipe: EOF").
    # Restricted, the CRI plugin never asks for less than its own score.
    restrict_oom_score_adj = true

    [plugins."io.containerd.grpc.v1.cri".cni]
      bin_dir = "{CNI_BIN_DIR}"
      conf_dir = "{cni_conf_dir}"

    [plugins."io.containerd.grpc.v1.cri".containerd]
      snapshotter = "{snapshotter}"
      default_runtime_name = "runc"

      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
        runtime_type = "io.containerd.runc.v2"

        [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
          SystemdCgroup = false
          Root = "{dir}/runc"

    [plugins."io.containerd.grpc.v1.cri".registry]
      config_path = "{certs}"
"#
    )
}

/// Force-deletes every task of every namespace of the containerd at `socket` (killing the
/// containers' processes and unmounting their root filesystems). Each `ctr` call is bounded
/// by `timeout`: this runs in Drop.
pub(crate) fn delete_tasks(socket: &Path) {
    let ctr = |args: &[&str]| -> String {
        Command::new("timeout")
            .arg("20")
            .arg("ctr")
            .arg("--address")
            .arg(socket)
            .args(args)
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output()
            .map(|out| String::from_utf8_lossy(&out.stdout).into_owned())
            .unwrap_or_default()
    };
    for namespace in ctr(&["namespaces", "ls", "-q"]).lines() {
        for task in ctr(&["-n", namespace, "tasks", "ls", "-q"]).lines() {
            ctr(&["-n", namespace, "tasks", "delete", "--force", task]);
        }
    }
}

/// Whether an overlay mount works on the filesystem of `dir` (the snapshotter's): mounts one
/// in a scratch directory and unmounts it.
pub(crate) fn overlay_mount_works(dir: &Path) -> bool {
    let probe = dir.join("overlay-probe");
    let [lower, upper, work, merged] = ["lower", "upper", "work", "merged"].map(|d| probe.join(d));
    for d in [&lower, &upper, &work, &merged] {
        if std::fs::create_dir_all(d).is_err() {
            return false;
        }
    }
    let options = format!(
        "lowerdir={},upperdir={},workdir={}",
        lower.display(),
        upper.display(),
        work.display()
    );
    let mounted = Command::new("mount")
        .args(["-t", "overlay", "overlay", "-o", &options])
        .arg(&merged)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if mounted {
        let _ = Command::new("umount").arg(&merged).status();
    }
    let _ = std::fs::remove_dir_all(&probe);
    mounted
}

/// Waits (at most 10 s) until process `pid` is gone.
pub(crate) fn wait_gone(pid: u32) {
    let proc = PathBuf::from(format!("/proc/{pid}"));
    for _ in 0..200 {
        // A zombie of ours still has /proc/PID: its state is Z.
        match std::fs::read_to_string(proc.join("stat")) {
            Ok(stat)
                if !stat
                    .rsplit(')')
                    .next()
                    .unwrap_or("")
                    .trim_start()
                    .starts_with('Z') =>
            {
                std::thread::sleep(Duration::from_millis(50));
            }
            _ => return,
        }
    }
}

/// Ends what a daemon at `socket` that is gone left running: `runc delete --force` of every
/// container in the runc roots under `runc_roots` (the CRI runtime's) and of every container
/// one of its shims holds in runc's default root (`ctr run`'s), which kills the container and
/// removes its state and cgroups, then SIGKILL to those shims and to what they still hold.
pub(crate) fn delete_containers_of(socket: &Path, runc_roots: &Path) {
    let runc = |args: &[&str]| -> String {
        Command::new("timeout")
            .arg("20")
            .arg("runc")
            .args(args)
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output()
            .map(|out| String::from_utf8_lossy(&out.stdout).into_owned())
            .unwrap_or_default()
    };
    for root in std::fs::read_dir(runc_roots)
        .into_iter()
        .flatten()
        .flatten()
    {
        let root = root.path().to_string_lossy().into_owned();
        for id in runc(&["--root", &root, "list", "-q"]).lines() {
            runc(&["--root", &root, "delete", "--force", id]);
        }
    }
    let socket = socket.to_string_lossy();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return;
    };
    let processes: Vec<(u32, u32, Vec<String>)> = entries
        .flatten()
        .filter_map(|entry| {
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(entry.path().join("stat")).ok()?;
            let ppid: u32 = stat
                .rsplit(')')
                .next()?
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()?;
            let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
            let args = cmdline
                .split(|b| *b == 0)
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            Some((pid, ppid, args))
        })
        .collect();
    let flag = |args: &[String], name: &str| -> Option<String> {
        args.windows(2).find(|w| w[0] == name).map(|w| w[1].clone())
    };
    let shims: Vec<u32> = processes
        .iter()
        .filter(|(_, _, args)| {
            args.first().is_some_and(|a| a.contains("containerd-shim"))
                && flag(args, "-address").as_deref() == Some(socket.as_ref())
        })
        .map(|(pid, _, args)| {
            if let (Some(namespace), Some(id)) = (flag(args, "-namespace"), flag(args, "-id")) {
                let root = format!("/run/containerd/runc/{namespace}");
                runc(&["--root", &root, "delete", "--force", &id]);
            }
            *pid
        })
        .collect();
    let children = processes
        .iter()
        .filter(|(_, ppid, _)| shims.contains(ppid))
        .map(|(pid, _, _)| *pid);
    for pid in children.chain(shims.iter().copied()) {
        let _ = Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// Lazily unmounts every mount point under `dir` (rootfs and network namespace mounts a
/// killed daemon left), deepest first.
pub(crate) fn unmount_under(dir: &Path) {
    let Ok(mountinfo) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return;
    };
    let mut points: Vec<&str> = mountinfo
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .filter(|point| Path::new(point).starts_with(dir))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for point in points {
        let _ = Command::new("umount")
            .args(["-l", point])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}
