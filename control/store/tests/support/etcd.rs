//! A real etcd for tests: Debian's `etcd` (etcd-server) started on free loopback ports with a
//! private data directory, stopped (and its directory removed) when dropped.
//!
//! std only, so the end-to-end harness includes this file too (`#[path]`). A machine without
//! etcd fails the test with the command that installs it: nothing is skipped.

#![allow(dead_code, unreachable_pub)]

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// What installs etcd (and protoc, which the etcd client's build needs).
pub const INSTALL: &str = "tests/run (it runs `apt-get install -y etcd-server protobuf-compiler`)";

/// How long a fresh member may take to elect itself and answer.
const READY_WITHIN: Duration = Duration::from_secs(60);

/// One etcd member, its own single-member cluster.
pub struct Etcd {
    child: Option<Child>,
    dir: PathBuf,
    owned_dir: bool,
    client_port: u16,
    peer_port: u16,
    name: String,
    /// `--initial-cluster`: every member's `name=peer URL`.
    initial_cluster: String,
    /// Serving certificate, key and the CA clients must be signed by (https clients).
    tls: Option<[PathBuf; 3]>,
}

fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

fn etcd_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("ETCD") {
        return PathBuf::from(path);
    }
    for dir in ["/usr/bin", "/usr/local/bin", "/usr/sbin"] {
        let candidate = Path::new(dir).join("etcd");
        if candidate.is_file() {
            return candidate;
        }
    }
    panic!("etcd is not installed (the etcd store tests start a real one): run {INSTALL}");
}

impl Etcd {
    /// Starts a member in a new temporary directory and waits until it answers.
    pub fn start() -> Etcd {
        let dir = std::env::temp_dir().join(format!(
            "wasmkube-etcd-{}-{}",
            std::process::id(),
            free_port()
        ));
        let peer_port = free_port();
        let mut etcd = Etcd {
            child: None,
            dir,
            owned_dir: true,
            client_port: free_port(),
            peer_port,
            name: "test".to_owned(),
            initial_cluster: format!("test=http://127.0.0.1:{peer_port}"),
            tls: None,
        };
        etcd.spawn();
        etcd.wait_ready();
        etcd
    }

    /// Starts a cluster of `n` members (each its own process, directory and ports) and waits
    /// until every one answers.
    pub fn start_cluster(n: usize) -> Vec<Etcd> {
        let ports: Vec<(u16, u16)> = (0..n).map(|_| (free_port(), free_port())).collect();
        let initial_cluster = ports
            .iter()
            .enumerate()
            .map(|(i, (_, peer))| format!("m{i}=http://127.0.0.1:{peer}"))
            .collect::<Vec<_>>()
            .join(",");
        let mut members: Vec<Etcd> = ports
            .iter()
            .enumerate()
            .map(|(i, (client, peer))| Etcd {
                child: None,
                dir: std::env::temp_dir()
                    .join(format!("wasmkube-etcd-{}-{client}", std::process::id())),
                owned_dir: true,
                client_port: *client,
                peer_port: *peer,
                name: format!("m{i}"),
                initial_cluster: initial_cluster.clone(),
                tls: None,
            })
            .collect();
        for member in &mut members {
            member.spawn();
        }
        for member in &mut members {
            member.wait_ready();
        }
        members
    }

    /// Starts a member serving clients over TLS with `cert` and `key`, requiring client
    /// certificates signed by `client_ca`; returns once its port accepts connections.
    pub fn start_tls(cert: PathBuf, key: PathBuf, client_ca: PathBuf) -> Etcd {
        let peer_port = free_port();
        let mut etcd = Etcd {
            child: None,
            dir: std::env::temp_dir().join(format!(
                "wasmkube-etcd-{}-{}",
                std::process::id(),
                free_port()
            )),
            owned_dir: true,
            client_port: free_port(),
            peer_port,
            name: "test".to_owned(),
            initial_cluster: format!("test=http://127.0.0.1:{peer_port}"),
            tls: Some([cert, key, client_ca]),
        };
        etcd.spawn();
        etcd.wait_ready();
        etcd
    }

    /// The client URL (`http://127.0.0.1:PORT`, `https://` with TLS).
    pub fn endpoint(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.client_port)
    }

    /// `kill -9` of the member (its data stays).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the member again on the same ports and data after [`Etcd::kill`].
    pub fn restart(&mut self) {
        self.kill();
        self.launch();
    }

    fn launch(&mut self) {
        self.spawn();
        self.wait_ready();
    }

    fn spawn(&mut self) {
        let binary = etcd_binary();
        std::fs::create_dir_all(&self.dir).expect("etcd data directory");
        let client = self.endpoint();
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let log = std::fs::File::create(self.dir.join("etcd.log")).expect("etcd log file");
        let mut command = Command::new(&binary);
        if let Some([cert, key, ca]) = &self.tls {
            command
                .arg(format!("--cert-file={}", cert.display()))
                .arg(format!("--key-file={}", key.display()))
                .arg(format!("--trusted-ca-file={}", ca.display()))
                .arg("--client-cert-auth");
        }
        let child = command
            .arg(format!("--name={}", self.name))
            .arg(format!("--data-dir={}", self.dir.join("data").display()))
            .arg(format!("--listen-client-urls={client}"))
            .arg(format!("--advertise-client-urls={client}"))
            .arg(format!("--listen-peer-urls={peer}"))
            .arg(format!("--initial-advertise-peer-urls={peer}"))
            .arg(format!("--initial-cluster={}", self.initial_cluster))
            .arg("--initial-cluster-state=new")
            // Idle watches learn their progress often (kube-apiserver's tests do the same).
            .arg("--experimental-watch-progress-notify-interval=200ms")
            // The store's limit (1.5 MiB of key and value) plus room for the request around it.
            .arg(format!("--max-request-bytes={}", 1536 * 1024 + 64 * 1024))
            .arg("--log-level=warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("etcd log file"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}; run {INSTALL}", binary.display()));
        self.child = Some(child);
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + READY_WITHIN;
        while Instant::now() < deadline {
            if self.healthy() {
                return;
            }
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                let log = std::fs::read_to_string(self.dir.join("etcd.log")).unwrap_or_default();
                panic!("etcd exited at start ({status}):\n{log}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let log = std::fs::read_to_string(self.dir.join("etcd.log")).unwrap_or_default();
        panic!("etcd did not answer /health within {READY_WITHIN:?}:\n{log}");
    }

    /// Whether `/health` says the member has a leader (with TLS: whether it accepts
    /// connections; the test's client then waits for the leader).
    fn healthy(&self) -> bool {
        let Ok(mut stream) = TcpStream::connect((Ipv4Addr::LOCALHOST, self.client_port)) else {
            return false;
        };
        if self.tls.is_some() {
            return true;
        }
        let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
        let request = format!(
            "GET /health HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nConnection: close\r\n\r\n",
            self.client_port
        );
        if stream.write_all(request.as_bytes()).is_err() {
            return false;
        }
        let mut answer = String::new();
        let _ = stream.read_to_string(&mut answer);
        answer.contains("\"health\":\"true\"")
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.kill();
        if self.owned_dir {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}
