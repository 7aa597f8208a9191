//! Proves the private containerd the container tests stand on (`harness::containerd`): it
//! starts inside a lab host with its CRI plugin loaded, imports the offline busybox and pause
//! images, runs busybox with `ctr run` (in the host's network namespace with cgroups working),
//! survives `kill -9` with its containers and images, and leaves nothing running when dropped.
//!
//! The CRI side (sandboxes with CNI) is proven by the agent's container tests: there is no
//! `crictl` in Debian 12 to drive the CRI plugin without the agent. The agent's CNI
//! configuration list (`wasmkube_agent::network::cni`) is proven against the real plugins
//! here: run as libcni runs a list (each plugin with the previous one's result) on a
//! container's network namespace, it gives the container an address of the pod sub-range
//! that its lab host reaches, and gives it back on DEL.

use std::time::Duration;

use anyhow::{Context, Result, ensure};

use crate::harness::{
    BUSYBOX_IMAGE, Containerd, NetnsLab, PAUSE_IMAGE, cri_tests_opted_out, poll_until, test_images,
};

/// A container id no other test process on this machine uses (runc's state and the cgroup
/// paths of `ctr run` containers are per namespace and id, machine-wide).
fn unique_id(name: &str) -> String {
    format!("{name}-{}", std::process::id())
}

/// Polls `ctr tasks ls` until task `id` has `status` (RUNNING, STOPPED).
async fn wait_task(containerd: &Containerd, id: &str, status: &str) -> Result<()> {
    poll_until(
        &format!("task {id} to be {status}"),
        Duration::from_secs(60),
        || async {
            let tasks = containerd.ctr_ok(&["tasks", "ls"]).await?;
            let found = tasks.lines().any(|line| {
                let fields: Vec<&str> = line.split_whitespace().collect();
                fields.first() == Some(&id) && fields.last() == Some(&status)
            });
            Ok(found.then_some(()))
        },
    )
    .await
}

#[tokio::test]
async fn a_private_containerd_in_a_lab_host_runs_busybox_and_survives_kill9() -> Result<()> {
    if cri_tests_opted_out("a_private_containerd_in_a_lab_host_runs_busybox_and_survives_kill9") {
        return Ok(());
    }
    let lab = NetnsLab::new(1).await?;
    let host = lab.host(0)?;
    let cni = tempfile::tempdir()?;
    let mut containerd = Containerd::start(host, cni.path()).await?;
    ensure!(
        containerd.endpoint().starts_with("unix:///"),
        "{}",
        containerd.endpoint()
    );
    eprintln!("containerd snapshotter: {}", containerd.snapshotter());
    containerd.import_test_images().await?;
    let images = containerd.ctr_ok(&["images", "ls", "-q"]).await?;
    for image in [BUSYBOX_IMAGE, PAUSE_IMAGE] {
        ensure!(images.lines().any(|l| l == image), "{image} in {images}");
    }

    // busybox runs, and the container shares the lab host's network with --net-host.
    let hi = unique_id("hi");
    let out = containerd
        .ctr_ok(&["run", "--rm", BUSYBOX_IMAGE, &hi, "sh", "-c", "echo hi"])
        .await?;
    assert_eq!(out, "hi\n");
    let addr = unique_id("addr");
    let out = containerd
        .ctr_ok(&[
            "run",
            "--rm",
            "--net-host",
            BUSYBOX_IMAGE,
            &addr,
            "ip",
            "-4",
            "addr",
            "show",
            "eth0",
        ])
        .await?;
    ensure!(
        out.contains(&format!("inet {}/24", host.ip())),
        "the container is not in the lab host's network: {out}"
    );

    // The pause image waits until SIGTERM, then exits.
    let pause = unique_id("pause");
    containerd
        .ctr_ok(&["run", "-d", PAUSE_IMAGE, &pause])
        .await?;
    wait_task(&containerd, &pause, "RUNNING").await?;
    containerd.ctr_ok(&["tasks", "kill", &pause]).await?;
    wait_task(&containerd, &pause, "STOPPED").await?;
    containerd.ctr_ok(&["tasks", "delete", &pause]).await?;
    containerd.ctr_ok(&["containers", "delete", &pause]).await?;

    // kill -9: a running container lives on in its shim, and the restarted daemon (same
    // root, state and socket) finds it, with the images.
    let survivor = unique_id("survivor");
    containerd
        .ctr_ok(&["run", "-d", BUSYBOX_IMAGE, &survivor, "sleep", "3600"])
        .await?;
    wait_task(&containerd, &survivor, "RUNNING").await?;
    containerd.kill9().await?;
    let down = containerd.ctr(&["version"]).await?;
    ensure!(!down.status.success(), "ctr still answers after kill -9");
    containerd.restart().await?;
    wait_task(&containerd, &survivor, "RUNNING").await?;
    let images = containerd.ctr_ok(&["images", "ls", "-q"]).await?;
    ensure!(images.lines().any(|l| l == BUSYBOX_IMAGE), "{images}");
    let again = unique_id("again");
    let out = containerd
        .ctr_ok(&["run", "--rm", BUSYBOX_IMAGE, &again, "cat", "/etc/passwd"])
        .await?;
    ensure!(out.starts_with("root:x:0:0:"), "{out}");

    // Dropping the handle leaves no shim or container of it running.
    let socket = containerd.socket();
    drop(containerd);
    let leftovers = processes_naming(&socket.to_string_lossy())?;
    ensure!(leftovers.is_empty(), "still running: {leftovers:?}");
    Ok(())
}

#[tokio::test]
async fn dropping_a_killed_containerd_ends_the_containers_it_left() -> Result<()> {
    if cri_tests_opted_out("dropping_a_killed_containerd_ends_the_containers_it_left") {
        return Ok(());
    }
    let lab = NetnsLab::new(1).await?;
    let cni = tempfile::tempdir()?;
    let mut containerd = Containerd::start(lab.host(0)?, cni.path()).await?;
    containerd.import_test_images().await?;
    let orphan = unique_id("orphan");
    containerd
        .ctr_ok(&["run", "-d", BUSYBOX_IMAGE, &orphan, "sleep", "3600"])
        .await?;
    wait_task(&containerd, &orphan, "RUNNING").await?;
    let pid = containerd
        .ctr_ok(&["tasks", "ls"])
        .await?
        .lines()
        .find(|l| l.starts_with(&orphan))
        .and_then(|l| l.split_whitespace().nth(1).map(str::to_owned))
        .context("the task's pid")?;
    containerd.kill9().await?;
    ensure!(
        std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "the container died with the daemon"
    );
    let socket = containerd.socket();
    let dir = socket
        .parent()
        .context("the socket's directory")?
        .to_owned();
    drop(containerd);
    poll_until(
        "the orphaned container to end",
        Duration::from_secs(30),
        || async {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            Ok((stat.is_empty() || stat.contains(") Z ")).then_some(()))
        },
    )
    .await?;
    let leftovers = processes_naming(&socket.to_string_lossy())?;
    ensure!(leftovers.is_empty(), "still running: {leftovers:?}");
    ensure!(!dir.exists(), "{} is left", dir.display());
    let state = std::path::Path::new("/run/containerd/runc")
        .join(crate::harness::K8S_NAMESPACE)
        .join(&orphan);
    ensure!(!state.exists(), "runc's state {} is left", state.display());
    let cgroup = std::path::Path::new("/sys/fs/cgroup/memory/k8s.io").join(&orphan);
    ensure!(!cgroup.exists(), "its cgroup {} is left", cgroup.display());
    Ok(())
}

#[tokio::test]
async fn the_agents_cni_conflist_gives_a_container_a_pod_address_its_host_reaches() -> Result<()> {
    use wasmkube_agent::network::cni::{CONFLIST_FILE, CniNetwork, write_conflist};
    if cri_tests_opted_out(
        "the_agents_cni_conflist_gives_a_container_a_pod_address_its_host_reaches",
    ) {
        return Ok(());
    }
    let lab = NetnsLab::new(1).await?;
    let host = lab.host(0)?;
    let cni = tempfile::tempdir()?;
    let containerd = Containerd::start(host, cni.path()).await?;
    containerd.import_test_images().await?;
    // A container with a network namespace of its own (only lo), serving /etc on port 8080.
    let web = unique_id("web");
    containerd
        .ctr_ok(&[
            "run",
            "-d",
            BUSYBOX_IMAGE,
            &web,
            "httpd",
            "-f",
            "-p",
            "8080",
            "-h",
            "/etc",
        ])
        .await?;
    wait_task(&containerd, &web, "RUNNING").await?;
    let pid = task_pid(&containerd, &web).await?;
    let netns = format!("/proc/{pid}/ns/net");

    let ipam = tempfile::tempdir()?;
    let network = CniNetwork {
        name: "wasmkube".to_owned(),
        bridge: "wkcni0".to_owned(),
        subnet: "10.42.1.0".parse()?,
        prefix: 24,
        range_start: "10.42.1.128".parse()?,
        range_end: "10.42.1.254".parse()?,
        gateway: "10.42.1.127".parse()?,
        mtu: None,
        ipam_data_dir: ipam.path().to_owned(),
    };
    let (path, _) = write_conflist(cni.path(), CONFLIST_FILE, &network)?;
    let list: serde_json::Value = serde_json::from_slice(&std::fs::read(&path)?)?;

    let result = run_conflist(host, &list, "ADD", &web, &netns).await?;
    let address = result["ips"][0]["address"].as_str().context("an address")?;
    assert_eq!(address, "10.42.1.128/24", "{result}");
    assert_eq!(result["ips"][0]["gateway"], "10.42.1.127", "{result}");
    let url = "http://10.42.1.128:8080/passwd";
    let body = host
        .run_ok("curl", &["-sS", "--max-time", "10", url])
        .await?;
    ensure!(body.starts_with("root:x:0:0:"), "{body}");
    let routes = containerd
        .ctr_ok(&[
            "tasks",
            "exec",
            "--exec-id",
            "routes",
            &web,
            "ip",
            "-4",
            "route",
        ])
        .await?;
    ensure!(
        routes.contains("default via 10.42.1.127 dev eth0"),
        "{routes}"
    );

    run_conflist(host, &list, "DEL", &web, &netns).await?;
    let reserved = ipam.path().join("wasmkube").join("10.42.1.128");
    ensure!(!reserved.exists(), "host-local still holds 10.42.1.128");
    let out = host.run("curl", &["-sS", "--max-time", "3", url]).await?;
    ensure!(!out.status.success(), "the address answers after DEL");
    Ok(())
}

/// The pid of task `id` (`ctr tasks ls`).
async fn task_pid(containerd: &Containerd, id: &str) -> Result<u32> {
    let tasks = containerd.ctr_ok(&["tasks", "ls"]).await?;
    tasks
        .lines()
        .find(|l| l.split_whitespace().next() == Some(id))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|pid| pid.parse().ok())
        .with_context(|| format!("the pid of {id} in {tasks}"))
}

/// Runs the plugins of the configuration list `list` as libcni does for `command` (ADD in
/// order, each given the previous one's result; DEL in reverse), from inside `host`, on the
/// network namespace `netns`, interface `eth0`; returns the last ADD result.
async fn run_conflist(
    host: &crate::harness::LabHost,
    list: &serde_json::Value,
    command: &str,
    container_id: &str,
    netns: &str,
) -> Result<serde_json::Value> {
    use tokio::io::AsyncWriteExt as _;
    let mut plugins = list["plugins"].as_array().context("plugins")?.clone();
    if command == "DEL" {
        plugins.reverse();
    }
    let mut previous: Option<serde_json::Value> = None;
    for mut plugin in plugins {
        plugin["cniVersion"] = list["cniVersion"].clone();
        plugin["name"] = list["name"].clone();
        if let Some(result) = &previous {
            plugin["prevResult"] = result.clone();
        }
        let kind = plugin["type"].as_str().context("type")?.to_owned();
        let binary = format!("{}/{kind}", crate::harness::CNI_BIN_DIR);
        let mut cmd = host.command(&binary, std::iter::empty::<&str>());
        cmd.stdin(std::process::Stdio::piped())
            .env("CNI_COMMAND", command)
            .env("CNI_CONTAINERID", container_id)
            .env("CNI_NETNS", netns)
            .env("CNI_IFNAME", "eth0")
            .env("CNI_PATH", crate::harness::CNI_BIN_DIR);
        let mut child = cmd.spawn().with_context(|| format!("spawning {binary}"))?;
        let mut stdin = child.stdin.take().context("the plugin's stdin")?;
        stdin.write_all(&serde_json::to_vec(&plugin)?).await?;
        drop(stdin);
        let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
            .await
            .context("the plugin did not finish within 60 s")??;
        ensure!(
            out.status.success(),
            "{kind} {command} failed with {}: {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if command == "ADD" {
            previous = Some(serde_json::from_slice(&out.stdout).with_context(|| {
                format!("{kind}'s result: {}", String::from_utf8_lossy(&out.stdout))
            })?);
        }
    }
    Ok(previous.unwrap_or_default())
}

#[test]
fn the_test_images_are_one_oci_layout_with_busybox_and_pause() -> Result<()> {
    if std::env::var_os(crate::harness::CRI_OPT_OUT_VAR).is_some_and(|v| !v.is_empty() && v != "0")
    {
        return Ok(());
    }
    let images = test_images()?;
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(images.layout().join("index.json"))?)?;
    let names: Vec<&str> = index["manifests"]
        .as_array()
        .context("manifests")?
        .iter()
        .filter_map(|m| m["annotations"]["io.containerd.image.name"].as_str())
        .collect();
    assert_eq!(names, [BUSYBOX_IMAGE, PAUSE_IMAGE]);
    // The archive holds the layout; the shared layer has busybox and its applets.
    let mut archive = tar::Archive::new(std::fs::File::open(images.archive())?);
    let mut layer = None;
    for entry in archive.entries()? {
        let mut entry = entry?;
        let path = entry.path()?.into_owned();
        if entry.size() > 1_000_000 && path.starts_with("blobs/sha256") {
            let mut bytes = Vec::new();
            std::io::Read::read_to_end(&mut entry, &mut bytes)?;
            layer = Some(bytes);
        }
    }
    let layer = layer.context("no layer blob in the archive")?;
    let mut links = std::collections::BTreeMap::new();
    for entry in tar::Archive::new(&layer[..]).entries()? {
        let entry = entry?;
        let path = entry.path()?.to_string_lossy().into_owned();
        let target = entry.link_name()?.map(|t| t.to_string_lossy().into_owned());
        links.insert(path, target);
    }
    assert_eq!(links.get("bin/busybox"), Some(&None));
    for applet in [
        "bin/sh",
        "bin/echo",
        "bin/cat",
        "bin/sleep",
        "usr/bin/nc",
        "usr/sbin/httpd",
    ] {
        assert_eq!(
            links.get(applet),
            Some(&Some("/bin/busybox".to_owned())),
            "{applet}"
        );
    }
    assert!(links.contains_key("etc/passwd") && links.contains_key("tmp"));
    Ok(())
}

/// The processes whose command line contains `needle`, as `pid: command line`.
fn processes_naming(needle: &str) -> Result<Vec<String>> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc")?.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.contains(needle) {
            found.push(format!("{pid}: {cmdline}"));
        }
    }
    Ok(found)
}
