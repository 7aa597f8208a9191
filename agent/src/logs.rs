//! Container logs: files in the CRI log format, and reading them back like the kubelet.
//!
//! Every instance of a container writes one file,
//! `<agent-dir>/pods/<pod-uid>/<container>/<restartCount>.log`, each line
//! `2024-01-01T00:00:00.000000000Z stdout F hello` (RFC 3339 with nanoseconds, the stream,
//! `F` for a full line or `P` for a piece of a line longer than 16 KiB, the text). The
//! current instance and the one before it are kept (`kubectl logs --previous`); older
//! files are removed when a new instance starts. A file past 10 MiB is rotated once
//! (`N.log` → `N.log.1`), as the kubelet's `containerLogMaxSize` does. The file is created
//! when the instance starts but opened for writing only at its first record, so an idle pod
//! that has printed nothing (an HTTP handler before its first request) holds no descriptor
//! for its log: 10,000 idle listener pods need 10,000 descriptors, not 20,000.
//!
//! A [`ContainerLog`] is the writer (the runtime hands the guest's stdout and stderr bytes to
//! its [`StreamWriter`]s); the [`LogRegistry`] maps pods' names to their UIDs and lets a
//! follower ([`follow`]) wake when a live file grows and stop when its instance ends.
//! [`server`] serves `/containerLogs/...` over HTTPS for the apiserver's `pods/log`, to the
//! users [`auth`] lets in.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use jiff::Timestamp;
use tokio::sync::watch;

pub(crate) mod auth;
pub(crate) mod read;
pub(crate) mod server;
pub(crate) mod streaming;

pub(crate) use read::LogOptions;

/// Longest piece of a line written as one record; longer lines are split into `P` records.
const MAX_RECORD: usize = 16 * 1024;
/// Size at which a log file is rotated.
const MAX_FILE_BYTES: u64 = 10 * 1024 * 1024;

/// Which output stream a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

impl Stream {
    fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// The directory holding a container's log files.
pub(crate) fn container_dir(pods_dir: &Path, pod_uid: &str, container: &str) -> PathBuf {
    pods_dir.join(pod_uid).join(container)
}

/// The log file of a container's instance number `restart_count`.
pub(crate) fn log_path(
    pods_dir: &Path,
    pod_uid: &str,
    container: &str,
    restart_count: u32,
) -> PathBuf {
    container_dir(pods_dir, pod_uid, container).join(format!("{restart_count}.log"))
}

/// The instance numbers that have a log file in `dir`, ascending.
pub(crate) fn instances(dir: &Path) -> Vec<u32> {
    let mut out: Vec<u32> = fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            e.file_name()
                .to_str()
                .and_then(|n| n.strip_suffix(".log"))
                .and_then(|n| n.parse().ok())
        })
        .collect();
    out.sort_unstable();
    out
}

/// The state of a live log, as followers see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LiveState {
    /// Bumped on every write.
    pub(crate) version: u64,
    /// Whether the instance still runs (false once it ended: followers stop at EOF).
    pub(crate) open: bool,
}

/// Pods' names and the live log files, shared by the pod workers and the log server.
#[derive(Debug, Clone, Default)]
pub(crate) struct LogRegistry {
    inner: Arc<Mutex<Registry>>,
}

#[derive(Debug, Default)]
struct Registry {
    /// (namespace, name) -> the pod.
    pods: HashMap<(String, String), PodEntry>,
    /// Live log file -> its state.
    live: HashMap<PathBuf, watch::Receiver<LiveState>>,
}

#[derive(Debug, Default)]
struct PodEntry {
    uid: String,
    /// The pod's IP once its sandbox has one (port forwarding dials it).
    ip: Option<std::net::IpAddr>,
    containers: Vec<String>,
    /// Why a container has no log yet (its waiting reason).
    waiting: HashMap<String, String>,
}

impl LogRegistry {
    /// An empty registry.
    pub(crate) fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Registry> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records that pod `namespace/name` has UID `uid` and these containers on this node.
    pub(crate) fn add_pod(&self, namespace: &str, name: &str, uid: &str, containers: Vec<String>) {
        self.lock().pods.insert(
            (namespace.to_string(), name.to_string()),
            PodEntry {
                uid: uid.to_string(),
                ip: None,
                containers,
                waiting: HashMap::new(),
            },
        );
    }

    /// Forgets pod `namespace/name` if it still has UID `uid`.
    pub(crate) fn remove_pod(&self, namespace: &str, name: &str, uid: &str) {
        let mut reg = self.lock();
        let key = (namespace.to_string(), name.to_string());
        if reg.pods.get(&key).is_some_and(|p| p.uid == uid) {
            reg.pods.remove(&key);
        }
    }

    /// The UID of pod `namespace/name` on this node.
    pub(crate) fn pod_uid(&self, namespace: &str, name: &str) -> Option<String> {
        self.lock()
            .pods
            .get(&(namespace.to_string(), name.to_string()))
            .map(|p| p.uid.clone())
    }

    /// Records pod `namespace/name`'s IP (if it still has UID `uid`).
    pub(crate) fn set_pod_ip(&self, namespace: &str, name: &str, uid: &str, ip: std::net::IpAddr) {
        let mut reg = self.lock();
        if let Some(p) = reg.pods.get_mut(&(namespace.to_string(), name.to_string()))
            && p.uid == uid
        {
            p.ip = Some(ip);
        }
    }

    /// The UID and IP of pod `namespace/name` on this node.
    pub(crate) fn pod_address(
        &self,
        namespace: &str,
        name: &str,
    ) -> Option<(String, Option<std::net::IpAddr>)> {
        self.lock()
            .pods
            .get(&(namespace.to_string(), name.to_string()))
            .map(|p| (p.uid.clone(), p.ip))
    }

    /// Whether pod `namespace/name` has a container (or init container) `container`.
    pub(crate) fn has_container(&self, namespace: &str, name: &str, container: &str) -> bool {
        self.lock()
            .pods
            .get(&(namespace.to_string(), name.to_string()))
            .is_some_and(|p| p.containers.iter().any(|c| c == container))
    }

    /// Records (or clears) why a container is waiting, for requests before it has a log.
    pub(crate) fn set_waiting(
        &self,
        namespace: &str,
        name: &str,
        container: &str,
        reason: Option<&str>,
    ) {
        let mut reg = self.lock();
        if let Some(p) = reg.pods.get_mut(&(namespace.to_string(), name.to_string())) {
            match reason {
                Some(r) => {
                    p.waiting.insert(container.to_string(), r.to_string());
                }
                None => {
                    p.waiting.remove(container);
                }
            }
        }
    }

    /// Why a container is waiting, if recorded.
    pub(crate) fn waiting_reason(
        &self,
        namespace: &str,
        name: &str,
        container: &str,
    ) -> Option<String> {
        self.lock()
            .pods
            .get(&(namespace.to_string(), name.to_string()))
            .and_then(|p| p.waiting.get(container).cloned())
    }

    /// The live state of `path`, if an instance is writing it.
    pub(crate) fn live(&self, path: &Path) -> Option<watch::Receiver<LiveState>> {
        self.lock().live.get(path).cloned()
    }
}

/// The writer of one instance's log file; clones write to the same file.
#[derive(Debug, Clone)]
pub(crate) struct ContainerLog {
    inner: Arc<Mutex<Writer>>,
}

#[derive(Debug)]
struct Writer {
    path: PathBuf,
    /// The open file; `None` until the first record (see `opened`) or after a failed
    /// rotation.
    file: Option<File>,
    /// Whether the file was opened for writing (at the first record).
    opened: bool,
    written: u64,
    partial: [Vec<u8>; 2],
    state: watch::Sender<LiveState>,
    registry: LogRegistry,
    closed: bool,
}

impl ContainerLog {
    /// Creates (truncating) the log file of instance `restart_count` of a container, removes
    /// files older than the previous instance, and registers it as live.
    pub(crate) fn create(
        registry: &LogRegistry,
        pods_dir: &Path,
        pod_uid: &str,
        container: &str,
        restart_count: u32,
    ) -> io::Result<ContainerLog> {
        let dir = container_dir(pods_dir, pod_uid, container);
        fs::create_dir_all(&dir)?;
        for old in instances(&dir) {
            if old + 1 < restart_count {
                let p = dir.join(format!("{old}.log"));
                let _ = fs::remove_file(&p);
                let _ = fs::remove_file(p.with_extension("log.1"));
            }
        }
        let path = log_path(pods_dir, pod_uid, container, restart_count);
        // Created (empty) now so readers find it; opened again at the first record.
        OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .open(&path)?;
        let (state, rx) = watch::channel(LiveState {
            version: 0,
            open: true,
        });
        registry.lock().live.insert(path.clone(), rx);
        Ok(ContainerLog {
            inner: Arc::new(Mutex::new(Writer {
                path,
                file: None,
                opened: false,
                written: 0,
                partial: [Vec::new(), Vec::new()],
                state,
                registry: registry.clone(),
                closed: false,
            })),
        })
    }

    /// The file being written.
    #[cfg(test)]
    pub(crate) fn path(&self) -> PathBuf {
        self.lock().path.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Writer> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A writer for one stream.
    pub(crate) fn stream(&self, stream: Stream) -> StreamWriter {
        StreamWriter {
            log: self.clone(),
            stream,
        }
    }

    /// Writes one message line directly (the agent's own notes, e.g. why a start failed).
    pub(crate) fn note(&self, stream: Stream, line: &str) {
        let mut w = self.lock();
        w.record(stream, line.as_bytes(), true, Timestamp::now());
        w.notify();
    }

    /// Ends the instance's log: flushes partial lines and tells followers to stop at EOF.
    pub(crate) fn close(&self) {
        let mut w = self.lock();
        if w.closed {
            return;
        }
        let now = Timestamp::now();
        for (idx, stream) in [(0, Stream::Stdout), (1, Stream::Stderr)] {
            let rest = std::mem::take(&mut w.partial[idx]);
            if !rest.is_empty() {
                w.record(stream, &rest, true, now);
            }
        }
        if let Some(f) = w.file.as_mut() {
            let _ = f.flush();
        }
        w.closed = true;
        let path = w.path.clone();
        w.registry.lock().live.remove(&path);
        w.state.send_modify(|s| {
            s.version += 1;
            s.open = false;
        });
    }
}

impl Writer {
    /// Appends guest bytes of `stream`, emitting complete lines.
    fn append(&mut self, stream: Stream, mut bytes: &[u8]) {
        let idx = match stream {
            Stream::Stdout => 0,
            Stream::Stderr => 1,
        };
        let now = Timestamp::now();
        while !bytes.is_empty() {
            match bytes.iter().position(|&b| b == b'\n') {
                Some(nl) => {
                    let mut line = std::mem::take(&mut self.partial[idx]);
                    line.extend_from_slice(&bytes[..nl]);
                    self.split_record(stream, &line, now);
                    bytes = &bytes[nl + 1..];
                }
                None => {
                    self.partial[idx].extend_from_slice(bytes);
                    bytes = &[];
                    while self.partial[idx].len() >= MAX_RECORD {
                        let piece: Vec<u8> = self.partial[idx].drain(..MAX_RECORD).collect();
                        self.record(stream, &piece, false, now);
                    }
                }
            }
        }
        self.notify();
    }

    /// Writes a complete line, split into `P` records if it is long.
    fn split_record(&mut self, stream: Stream, line: &[u8], now: Timestamp) {
        let mut rest = line;
        while rest.len() > MAX_RECORD {
            let (piece, tail) = rest.split_at(MAX_RECORD);
            self.record(stream, piece, false, now);
            rest = tail;
        }
        self.record(stream, rest, true, now);
    }

    /// Writes one CRI record. Write errors drop the record: a full disk must not kill the
    /// workload.
    fn record(&mut self, stream: Stream, content: &[u8], full: bool, now: Timestamp) {
        if !self.opened {
            self.opened = true;
            // Not `create`: a file removed meanwhile (the pod is being deleted) stays gone.
            self.file = OpenOptions::new().append(true).open(&self.path).ok();
        }
        let Some(file) = self.file.as_mut() else {
            return;
        };
        let mut line = Vec::with_capacity(content.len() + 48);
        let _ = write!(
            line,
            "{:.9} {} {} ",
            now,
            stream.as_str(),
            if full { 'F' } else { 'P' }
        );
        line.extend_from_slice(content);
        line.push(b'\n');
        if file.write_all(&line).is_ok() {
            self.written += line.len() as u64;
        }
        if self.written >= MAX_FILE_BYTES {
            self.rotate();
        }
    }

    fn rotate(&mut self) {
        let backup = self.path.with_extension("log.1");
        self.file = None;
        if fs::rename(&self.path, &backup).is_err() {
            tracing::warn!(path = %self.path.display(), "cannot rotate a container log");
        }
        self.file = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .open(&self.path)
            .ok();
        self.written = 0;
    }

    fn notify(&mut self) {
        self.state.send_modify(|s| s.version += 1);
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        if !self.closed {
            let path = self.path.clone();
            self.registry.lock().live.remove(&path);
            self.state.send_modify(|s| s.open = false);
        }
    }
}

/// The writer of one stream (stdout or stderr) of an instance.
#[derive(Debug, Clone)]
pub(crate) struct StreamWriter {
    log: ContainerLog,
    stream: Stream,
}

impl StreamWriter {
    /// Takes bytes the guest wrote (any length, not split on lines).
    pub(crate) fn write(&mut self, bytes: &[u8]) {
        self.log.lock().append(self.stream, bytes);
    }

    /// Flushes the file (partial lines wait for their newline or the end of the instance).
    pub(crate) fn flush(&mut self) {
        if let Some(f) = self.log.lock().file.as_mut() {
            let _ = f.flush();
        }
    }
}

/// Follows a log file from `offset`: yields rendered chunks as the file grows until the
/// instance ends (or at once if it is not live). The caller stops polling when done.
pub(crate) fn follow(
    registry: &LogRegistry,
    path: PathBuf,
    offset: u64,
    opts: LogOptions,
    already_sent: u64,
) -> impl futures::Stream<Item = io::Result<bytes::Bytes>> + Send + 'static {
    let live = registry.live(&path);
    read::follow_stream(path, offset, opts, already_sent, live)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(path: &Path) -> Vec<String> {
        fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect()
    }

    #[test]
    fn guest_output_becomes_cri_records_split_on_newlines() {
        let dir = tempfile::tempdir().unwrap();
        let reg = LogRegistry::new();
        let log = ContainerLog::create(&reg, dir.path(), "uid", "c", 0).unwrap();
        let mut out = log.stream(Stream::Stdout);
        let mut err = log.stream(Stream::Stderr);
        out.write(b"hello ");
        err.write(b"oops\n");
        out.write(b"world\nsecond");
        log.close();
        let got = lines(&log.path());
        assert_eq!(got.len(), 3);
        assert!(got[0].ends_with(" stderr F oops"), "{got:?}");
        assert!(got[1].ends_with(" stdout F hello world"), "{got:?}");
        assert!(got[2].ends_with(" stdout F second"), "{got:?}");
        let ts = got[0].split(' ').next().unwrap();
        assert!(ts.parse::<Timestamp>().is_ok(), "{ts}");
        assert_eq!(ts.len(), "2024-01-01T00:00:00.000000000Z".len());
    }

    #[test]
    fn long_lines_are_split_into_partial_records() {
        let dir = tempfile::tempdir().unwrap();
        let reg = LogRegistry::new();
        let log = ContainerLog::create(&reg, dir.path(), "uid", "c", 0).unwrap();
        let mut out = log.stream(Stream::Stdout);
        let long = vec![b'x'; MAX_RECORD + 10];
        out.write(&long);
        out.write(b"\n");
        log.close();
        let got = lines(&log.path());
        assert_eq!(got.len(), 2);
        assert!(got[0].contains(" stdout P "));
        assert!(got[1].ends_with(&format!(" stdout F {}", "x".repeat(10))));
    }

    #[test]
    fn a_new_instance_keeps_only_the_previous_log() {
        let dir = tempfile::tempdir().unwrap();
        let reg = LogRegistry::new();
        for n in 0..4 {
            ContainerLog::create(&reg, dir.path(), "uid", "c", n)
                .unwrap()
                .close();
        }
        assert_eq!(
            instances(&container_dir(dir.path(), "uid", "c")),
            vec![2, 3]
        );
    }

    /// Descriptors of this process open on `path`.
    fn descriptors_on(path: &Path) -> usize {
        fs::read_dir("/proc/self/fd")
            .unwrap()
            .flatten()
            .filter(|fd| fs::read_link(fd.path()).is_ok_and(|target| target == path))
            .count()
    }

    #[test]
    fn a_log_holds_no_descriptor_until_its_first_record() {
        let dir = tempfile::tempdir().unwrap();
        let reg = LogRegistry::new();
        let log = ContainerLog::create(&reg, dir.path(), "uid", "c", 0).unwrap();
        let path = log.path();
        assert!(path.is_file(), "the file exists for readers at once");
        assert_eq!(descriptors_on(&path), 0);
        log.stream(Stream::Stdout).write(b"first\n");
        assert_eq!(descriptors_on(&path), 1);
        log.stream(Stream::Stderr).write(b"second\n");
        assert_eq!(descriptors_on(&path), 1);
        drop(log);
        assert_eq!(descriptors_on(&path), 0);
        let got = lines(&path);
        assert_eq!(got.len(), 2, "{got:?}");
        assert!(got[1].ends_with(" stderr F second"), "{got:?}");
    }

    #[test]
    fn a_log_removed_before_its_first_record_is_not_created_again() {
        let dir = tempfile::tempdir().unwrap();
        let reg = LogRegistry::new();
        let log = ContainerLog::create(&reg, dir.path(), "uid", "c", 0).unwrap();
        fs::remove_dir_all(dir.path().join("uid")).unwrap();
        log.stream(Stream::Stdout).write(b"late\n");
        log.close();
        assert!(!log.path().exists());
    }

    #[test]
    fn closing_marks_the_log_not_live() {
        let dir = tempfile::tempdir().unwrap();
        let reg = LogRegistry::new();
        let log = ContainerLog::create(&reg, dir.path(), "uid", "c", 0).unwrap();
        let rx = reg.live(&log.path()).unwrap();
        assert!(rx.borrow().open);
        log.close();
        assert!(!rx.borrow().open);
        assert!(reg.live(&log.path()).is_none());
    }

    #[test]
    fn registry_forgets_a_pod_only_for_its_own_uid() {
        let reg = LogRegistry::new();
        reg.add_pod("ns", "p", "u2", vec!["c".into()]);
        assert!(reg.has_container("ns", "p", "c"));
        assert!(!reg.has_container("ns", "p", "d"));
        reg.remove_pod("ns", "p", "u1");
        assert_eq!(reg.pod_uid("ns", "p").as_deref(), Some("u2"));
        reg.remove_pod("ns", "p", "u2");
        assert_eq!(reg.pod_uid("ns", "p"), None);
    }
}
