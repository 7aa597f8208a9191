//! The etcd backend of [`Store`](crate::Store): the store of a cluster with several servers.
//!
//! # Design
//!
//! - **Keys and revisions** are etcd's own: the apiserver's keys (`/registry/<resource>/<ns>/<name>`)
//!   are stored verbatim, a key's `mod_revision` is the object's `resourceVersion`, and the
//!   store's revision is etcd's cluster revision (a fresh etcd starts at 1, not 0).
//! - **Writes** are single etcd transactions: create-if-absent compares `create_revision == 0`,
//!   updates and conditional deletes compare `mod_revision`; the else branch reads the key, so
//!   a failed precondition answers `AlreadyExists`, `NotFound` or `Conflict` with the actual
//!   revision in one round trip. etcd acknowledges a write once a quorum has it on disk.
//! - **Lists** are etcd ranges (`limit`, `more`, at a revision); a list without a revision is
//!   linearizable, and every page after the first is read at the first page's revision.
//! - **Watches** ([`watch`]) are etcd watches from `after + 1` with previous values and progress
//!   notifications; a reader task per watch resumes on another endpoint when a connection
//!   breaks, and etcd's `compact_revision` cancel becomes `Compacted` / `WatcherTooSlow`.
//! - **Compaction**: [`Store::compact`] is etcd's compaction; a periodic compactor (as the
//!   apiserver's `--etcd-compaction-interval`) compacts to the revision seen one interval
//!   earlier, coordinated through etcd's `compact_rev_key` so that several servers compact once.
//! - **Revisions known without a round trip** (`current_revision`, `compacted_revision`) are
//!   the newest seen in any response; a background follower keeps the current one fresh with
//!   progress requests and records whether etcd answers ([`Store::health`]).
//! - **Errors** never carry a raw gRPC status: an unreachable etcd, a lost quorum or a timeout is
//!   [`StoreError::Unavailable`] (503 with `Retry-After` upstream), etcd's compaction and
//!   future-revision errors are the contract's own errors.

mod errors;
mod watch;

use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use etcd_client::{
    Certificate, Client, Compare, CompareOp, ConnectOptions, DeleteOptions, GetOptions, Identity,
    KvClient, TlsOptions, Txn, TxnOp, TxnOpResponse, TxnResponse, WatchClient, WatchOptions,
};

use self::errors::{classify, is_retryable};
use self::watch::EtcdWatch;
use crate::{KeyValue, ListOptions, ListResult, Result, Revision, Store, StoreError, Watch};

/// The key through which servers sharing an etcd agree on compactions (Kubernetes' own).
const COMPACT_REV_KEY: &str = "compact_rev_key";

/// The largest gRPC message accepted from etcd (a list of many objects): Kubernetes' client
/// accepts any size up to 2 GiB.
const MAX_DECODING_BYTES: usize = i32::MAX as usize;

/// How often the follower asks etcd for its revision.
const FOLLOW_INTERVAL: Duration = Duration::from_secs(1);

/// Client TLS towards etcd (`--datastore-cafile`, `--datastore-certfile`, `--datastore-keyfile`).
#[derive(Clone, Debug, Default)]
pub struct EtcdTls {
    /// The CA bundle that signed etcd's serving certificates; `None`: the system's roots.
    pub ca_file: Option<PathBuf>,
    /// The client certificate presented to etcd (with `key_file`).
    pub cert_file: Option<PathBuf>,
    /// The client certificate's private key.
    pub key_file: Option<PathBuf>,
}

/// How to reach etcd. Start from [`EtcdConfig::new`], which sets the defaults.
#[derive(Clone, Debug)]
pub struct EtcdConfig {
    /// `http://host:port` or `https://host:port` of one or more members.
    pub endpoints: Vec<String>,
    /// Client TLS (used with `https://` endpoints).
    pub tls: EtcdTls,
    /// How long connecting to an endpoint may take. Default 5 s.
    pub dial_timeout: Duration,
    /// How long one request (with its retries on another endpoint) may take before it fails
    /// as unavailable. Default 10 s.
    pub request_timeout: Duration,
    /// The periodic compactor's interval (`--etcd-compaction-interval`); `ZERO`: none.
    /// Default 5 minutes, as Kubernetes'.
    pub compaction_interval: Duration,
    /// The most bytes a key and its value may have together; larger writes fail with
    /// [`StoreError::TooLarge`] before they are sent. etcd's own `--max-request-bytes` counts
    /// the whole request, so run etcd with some room above this (the tests give 64 KiB).
    pub max_value_bytes: usize,
}

impl EtcdConfig {
    /// The configuration for `endpoints` with the defaults.
    pub fn new(endpoints: Vec<String>) -> Self {
        EtcdConfig {
            endpoints,
            tls: EtcdTls::default(),
            dial_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(10),
            compaction_interval: Duration::from_secs(5 * 60),
            max_value_bytes: crate::DEFAULT_MAX_VALUE_BYTES,
        }
    }
}

/// Revisions and health shared by the store handle, its watches and its background tasks.
pub(crate) struct Known {
    current: AtomicI64,
    compacted: AtomicI64,
    /// Whether etcd answers a progress request only for watches that have caught up
    /// (3.5 and later); 3.4 answers at once, so its answers say nothing of a watch's replay.
    pub(crate) trust_progress_requests: std::sync::atomic::AtomicBool,
    /// Why etcd does not answer now, if it does not.
    unhealthy: Mutex<Option<String>>,
}

impl Known {
    pub(crate) fn saw_revision(&self, revision: Revision) {
        self.current.fetch_max(revision, Ordering::AcqRel);
    }

    pub(crate) fn saw_compacted(&self, revision: Revision) {
        self.compacted.fetch_max(revision, Ordering::AcqRel);
    }

    fn set_unhealthy(&self, why: Option<String>) {
        *self
            .unhealthy
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = why;
    }
}

/// The etcd-backed [`Store`]. Open it with [`EtcdStore::open`]; dropping the last handle
/// stops its background tasks.
pub struct EtcdStore {
    kv: KvClient,
    watch: WatchClient,
    known: Arc<Known>,
    config: EtcdConfig,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for EtcdStore {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Reads a PEM file for TLS, with an error that names it.
fn read_pem(what: &str, path: &std::path::Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| {
        StoreError::Unavailable(format!(
            "cannot read the etcd {what} {}: {e}",
            path.display()
        ))
    })
}

fn tls_options(tls: &EtcdTls) -> Result<TlsOptions> {
    let mut options = TlsOptions::new();
    if let Some(ca) = &tls.ca_file {
        let pem = read_pem("CA file (--datastore-cafile)", ca)?;
        check_pem(&pem, "CA file (--datastore-cafile)", ca)?;
        options = options.ca_certificate(Certificate::from_pem(pem));
    } else {
        options = options.with_enabled_roots();
    }
    match (&tls.cert_file, &tls.key_file) {
        (Some(cert), Some(key)) => {
            let cert_pem = read_pem("client certificate (--datastore-certfile)", cert)?;
            check_pem(&cert_pem, "client certificate (--datastore-certfile)", cert)?;
            let key_pem = read_pem("client key (--datastore-keyfile)", key)?;
            check_pem(&key_pem, "client key (--datastore-keyfile)", key)?;
            options = options.identity(Identity::from_pem(cert_pem, key_pem));
        }
        (None, None) => {}
        (Some(_), None) | (None, Some(_)) => {
            return Err(StoreError::Unavailable(
                "--datastore-certfile and --datastore-keyfile go together: give both or neither"
                    .to_owned(),
            ));
        }
    }
    Ok(options)
}

/// A file that is not PEM fails here with its name rather than later as a handshake error.
fn check_pem(pem: &[u8], what: &str, path: &std::path::Path) -> Result<()> {
    if pem.windows(11).any(|w| w == b"-----BEGIN ") {
        Ok(())
    } else {
        Err(StoreError::Unavailable(format!(
            "the etcd {what} {} holds no PEM block",
            path.display()
        )))
    }
}

/// The end of the key range of every key starting with `prefix` (etcd's `GetPrefixRangeEnd`).
fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    // Every byte was 0xff (or the prefix is empty): to the end of the keyspace.
    vec![0]
}

/// An etcd key-value as the store's.
pub(crate) fn convert(kv: etcd_client::KeyValue) -> KeyValue {
    let create_revision = kv.create_revision();
    let mod_revision = kv.mod_revision();
    let (key, value) = kv.into_key_value();
    KeyValue {
        key: String::from_utf8(key)
            .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()),
        value: Bytes::from(value),
        create_revision,
        mod_revision,
    }
}

impl EtcdStore {
    /// Connects to etcd and checks that it answers (within the dial and request timeouts):
    /// an unreachable etcd, a wrong CA or a lost quorum fail here with a message that says so.
    /// Needs a Tokio runtime (it starts the follower and the compactor).
    pub async fn open(config: EtcdConfig) -> Result<Arc<EtcdStore>> {
        if config.endpoints.is_empty() {
            return Err(StoreError::Unavailable(
                "no etcd endpoint given (--datastore-endpoint)".to_owned(),
            ));
        }
        let mut options = ConnectOptions::new()
            .with_connect_timeout(config.dial_timeout)
            .with_keep_alive(Duration::from_secs(10), Duration::from_secs(5))
            .with_require_leader(true);
        let https = config.endpoints.iter().any(|e| e.starts_with("https://"));
        if https {
            if let Some(plain) = config.endpoints.iter().find(|e| !e.starts_with("https://")) {
                return Err(StoreError::Unavailable(format!(
                    "etcd endpoint {plain} is not https:// while others are: use one scheme"
                )));
            }
            options = options.with_tls(tls_options(&config.tls)?);
        } else if config.tls.ca_file.is_some() || config.tls.cert_file.is_some() {
            return Err(StoreError::Unavailable(
                "--datastore-cafile/--datastore-certfile need https:// etcd endpoints".to_owned(),
            ));
        }
        let endpoints = config.endpoints.join(",");
        let client = Client::connect(&config.endpoints, Some(options))
            .await
            .map_err(|e| {
                StoreError::Unavailable(format!("cannot connect to etcd at {endpoints}: {e}"))
            })?;
        let kv = client
            .kv_client()
            .max_decoding_message_size(MAX_DECODING_BYTES);
        let watch = client
            .watch_client()
            .max_decoding_message_size(MAX_DECODING_BYTES);
        let known = Arc::new(Known {
            current: AtomicI64::new(0),
            compacted: AtomicI64::new(0),
            trust_progress_requests: std::sync::atomic::AtomicBool::new(false),
            unhealthy: Mutex::new(None),
        });
        let mut store = EtcdStore {
            kv,
            watch,
            known,
            config,
            tasks: Vec::new(),
        };
        // The first answer proves etcd is reachable and has a leader.
        let recorded = store
            .get_raw(COMPACT_REV_KEY, None)
            .await
            .map_err(|e| match e {
                StoreError::Unavailable(why) => {
                    let tls = if https {
                        format!(
                            " (TLS: is {} the CA that signed etcd's serving certificate, and does \
                             etcd accept the client certificate {}?)",
                            store.config.tls.ca_file.as_ref().map_or_else(
                                || "the system's trust store".to_owned(),
                                |f| format!("--datastore-cafile {}", f.display())
                            ),
                            store.config.tls.cert_file.as_ref().map_or_else(
                                || "(none given)".to_owned(),
                                |f| format!("--datastore-certfile {}", f.display())
                            ),
                        )
                    } else {
                        String::new()
                    };
                    StoreError::Unavailable(format!(
                        "etcd at {endpoints} does not answer: {why}{tls}"
                    ))
                }
                other => other,
            })?;
        if let Some(kv) = recorded
            && let Some(revision) = std::str::from_utf8(&kv.value)
                .ok()
                .and_then(|s| s.trim().parse::<Revision>().ok())
        {
            store.known.saw_compacted(revision);
        }
        store.learn_compacted().await?;
        if let Ok(Ok(status)) =
            tokio::time::timeout(store.config.request_timeout, client.clone().status()).await
        {
            let version: Vec<u32> = status
                .version()
                .split('.')
                .filter_map(|p| p.parse().ok())
                .collect();
            let modern = version.as_slice() >= [3, 5].as_slice();
            store
                .known
                .trust_progress_requests
                .store(modern, Ordering::Release);
        }
        store.tasks.push(tokio::spawn(follow(
            store.watch.clone(),
            Arc::clone(&store.known),
            store.config.request_timeout,
        )));
        if !store.config.compaction_interval.is_zero() {
            store.tasks.push(tokio::spawn(compact_periodically(
                store.kv.clone(),
                Arc::clone(&store.known),
                store.config.compaction_interval,
                store.config.request_timeout,
            )));
        }
        Ok(Arc::new(store))
    }

    /// Runs `op` with the request timeout, retrying on another endpoint while the error says
    /// the request was not served (connection refused, no leader yet).
    async fn call<T, F, Fut>(&self, mut op: F) -> Result<T>
    where
        F: FnMut(KvClient) -> Fut,
        Fut: std::future::Future<Output = Result<T, etcd_client::Error>>,
    {
        let deadline = tokio::time::Instant::now() + self.config.request_timeout;
        let mut backoff = Duration::from_millis(20);
        loop {
            let attempt = tokio::time::timeout_at(deadline, op(self.kv.clone())).await;
            let error = match attempt {
                Ok(Ok(answer)) => {
                    self.known.set_unhealthy(None);
                    return Ok(answer);
                }
                Ok(Err(e)) => e,
                Err(_) => {
                    let why = format!(
                        "etcd did not answer within {:?}",
                        self.config.request_timeout
                    );
                    self.known.set_unhealthy(Some(why.clone()));
                    return Err(StoreError::Unavailable(why));
                }
            };
            if is_retryable(&error) && tokio::time::Instant::now() + backoff < deadline {
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_millis(500));
                continue;
            }
            let error = classify(error, self.current_revision());
            if let StoreError::Unavailable(why) = &error {
                self.known.set_unhealthy(Some(why.clone()));
            }
            return Err(error);
        }
    }

    async fn get_raw(&self, key: &str, revision: Option<Revision>) -> Result<Option<KeyValue>> {
        let mut response = self
            .call(|mut kv| {
                let options = revision.map(|r| GetOptions::new().with_revision(r));
                async move { kv.get(key, options).await }
            })
            .await?;
        if let Some(header) = response.header() {
            self.known.saw_revision(header.revision());
        }
        Ok(response.take_kvs().into_iter().next().map(convert))
    }

    /// Finds etcd's compacted revision when it is newer than the one recorded: a read at the
    /// recorded one fails then, and a watch from revision 1 is cancelled with the real one.
    async fn learn_compacted(&self) -> Result<()> {
        let known = self.compacted_revision().max(1);
        match self.get_raw(COMPACT_REV_KEY, Some(known)).await {
            Ok(_) => Ok(()),
            Err(StoreError::Compacted { .. }) => {
                let probe = async {
                    let mut stream = self
                        .watch
                        .clone()
                        .watch(
                            COMPACT_REV_KEY,
                            Some(WatchOptions::new().with_start_revision(1)),
                        )
                        .await?;
                    while let Some(response) = stream.message().await? {
                        if response.canceled() {
                            return Ok(response.compact_revision());
                        }
                    }
                    Ok::<_, etcd_client::Error>(0)
                };
                match tokio::time::timeout(self.config.request_timeout, probe).await {
                    Ok(Ok(revision)) => {
                        self.known.saw_compacted(revision);
                        Ok(())
                    }
                    Ok(Err(e)) => Err(classify(e, self.current_revision())),
                    Err(_) => Err(StoreError::Unavailable(
                        "etcd did not say how far it is compacted".to_owned(),
                    )),
                }
            }
            Err(e) => Err(e),
        }
    }

    fn check_size(&self, key: &str, value: &Bytes) -> Result<()> {
        let size = key.len() + value.len();
        if size > self.config.max_value_bytes {
            return Err(StoreError::TooLarge {
                key: key.to_owned(),
                size,
                limit: self.config.max_value_bytes,
            });
        }
        Ok(())
    }

    /// A transaction's answer, with the revision recorded (`size`: of the key and value it
    /// writes, for etcd's own "request is too large").
    async fn txn(&self, key: &str, size: usize, txn: impl Fn() -> Txn) -> Result<TxnResponse> {
        let response = self
            .call(|mut kv| {
                let txn = txn();
                async move { kv.txn(txn).await }
            })
            .await
            .map_err(|e| match e {
                StoreError::TooLarge { .. } => StoreError::TooLarge {
                    key: key.to_owned(),
                    size,
                    limit: size.saturating_sub(1).min(self.config.max_value_bytes),
                },
                other => other,
            })?;
        if let Some(header) = response.header() {
            self.known.saw_revision(header.revision());
        }
        Ok(response)
    }
}

/// The key-values of a transaction branch's first range.
fn first_get(response: &TxnResponse) -> Option<etcd_client::KeyValue> {
    response.op_responses().into_iter().find_map(|op| match op {
        TxnOpResponse::Get(mut get) => get.take_kvs().into_iter().next(),
        _ => None,
    })
}

fn header_revision(response: &TxnResponse) -> Revision {
    response.header().map(|h| h.revision()).unwrap_or_default()
}

#[async_trait]
impl Store for EtcdStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        self.get_raw(key, None).await
    }

    async fn list(&self, opts: ListOptions) -> Result<ListResult> {
        if let Some(revision) = opts.revision
            && revision < self.compacted_revision()
        {
            return Err(StoreError::Compacted {
                requested: revision,
                compacted: self.compacted_revision(),
            });
        }
        let start = match &opts.start_after {
            Some(after) if after.as_str() >= opts.prefix.as_str() => {
                let mut key = after.as_bytes().to_vec();
                key.push(0);
                key
            }
            _ if opts.prefix.is_empty() => vec![0],
            _ => opts.prefix.as_bytes().to_vec(),
        };
        let end = prefix_end(&opts.prefix);
        let limit = opts.limit.filter(|l| *l > 0);
        let mut response = self
            .call(|mut kv| {
                let mut options = GetOptions::new().with_range(end.clone());
                if let Some(limit) = limit {
                    options = options.with_limit(i64::try_from(limit).unwrap_or(i64::MAX));
                }
                if let Some(revision) = opts.revision {
                    options = options.with_revision(revision);
                }
                let start = start.clone();
                async move { kv.get(start, Some(options)).await }
            })
            .await
            .map_err(|e| match e {
                StoreError::Compacted { compacted, .. } => StoreError::Compacted {
                    requested: opts.revision.unwrap_or_default(),
                    compacted: compacted.max(self.compacted_revision()),
                },
                StoreError::FutureRevision { .. } => StoreError::FutureRevision {
                    requested: opts.revision.unwrap_or_default(),
                    current: self.current_revision(),
                },
                other => other,
            })?;
        let header = response.header().map(|h| h.revision()).unwrap_or_default();
        self.known.saw_revision(header);
        let more = response.more();
        let items: Vec<KeyValue> = response.take_kvs().into_iter().map(convert).collect();
        Ok(ListResult {
            items,
            revision: opts.revision.unwrap_or(header),
            more,
        })
    }

    async fn create(&self, key: &str, value: Bytes) -> Result<KeyValue> {
        self.check_size(key, &value)?;
        let response = self
            .txn(key, key.len() + value.len(), || {
                Txn::new()
                    .when([Compare::create_revision(key, CompareOp::Equal, 0)])
                    .and_then([TxnOp::put(key, value.to_vec(), None)])
                    .or_else([TxnOp::get(key, None)])
            })
            .await?;
        if !response.succeeded() {
            return Err(StoreError::AlreadyExists {
                key: key.to_owned(),
            });
        }
        let revision = header_revision(&response);
        Ok(KeyValue {
            key: key.to_owned(),
            value,
            create_revision: revision,
            mod_revision: revision,
        })
    }

    async fn update(
        &self,
        key: &str,
        value: Bytes,
        expected_mod_revision: Revision,
    ) -> Result<KeyValue> {
        self.check_size(key, &value)?;
        let response = self
            .txn(key, key.len() + value.len(), || {
                Txn::new()
                    .when([Compare::mod_revision(
                        key,
                        CompareOp::Equal,
                        expected_mod_revision,
                    )])
                    .and_then([TxnOp::put(key, value.to_vec(), None), TxnOp::get(key, None)])
                    .or_else([TxnOp::get(key, None)])
            })
            .await?;
        let current = first_get(&response);
        if !response.succeeded() {
            return Err(match current {
                None => StoreError::NotFound {
                    key: key.to_owned(),
                },
                Some(kv) => StoreError::Conflict {
                    key: key.to_owned(),
                    expected: expected_mod_revision,
                    actual: kv.mod_revision(),
                },
            });
        }
        let revision = header_revision(&response);
        Ok(KeyValue {
            key: key.to_owned(),
            value,
            create_revision: current.map(|kv| kv.create_revision()).unwrap_or(revision),
            mod_revision: revision,
        })
    }

    async fn delete(
        &self,
        key: &str,
        expected_mod_revision: Option<Revision>,
    ) -> Result<(KeyValue, Revision)> {
        let response = self
            .txn(key, key.len(), || {
                let compare = match expected_mod_revision {
                    Some(expected) => Compare::mod_revision(key, CompareOp::Equal, expected),
                    // Present at all (a key's create revision is never 0).
                    None => Compare::create_revision(key, CompareOp::Greater, 0),
                };
                Txn::new()
                    .when([compare])
                    .and_then([TxnOp::delete(
                        key,
                        Some(DeleteOptions::new().with_prev_key()),
                    )])
                    .or_else([TxnOp::get(key, None)])
            })
            .await?;
        if !response.succeeded() {
            return Err(match (first_get(&response), expected_mod_revision) {
                (Some(kv), Some(expected)) => StoreError::Conflict {
                    key: key.to_owned(),
                    expected,
                    actual: kv.mod_revision(),
                },
                _ => StoreError::NotFound {
                    key: key.to_owned(),
                },
            });
        }
        let prev = response.op_responses().into_iter().find_map(|op| match op {
            TxnOpResponse::Delete(mut delete) => delete.take_prev_kvs().into_iter().next(),
            _ => None,
        });
        let Some(prev) = prev else {
            return Err(StoreError::NotFound {
                key: key.to_owned(),
            });
        };
        Ok((convert(prev), header_revision(&response)))
    }

    async fn watch(&self, prefix: &str, after: Revision) -> Result<Box<dyn Watch>> {
        let compacted = self.compacted_revision();
        if after < compacted {
            return Err(StoreError::Compacted {
                requested: after,
                compacted,
            });
        }
        let watch = EtcdWatch::start(
            self.watch.clone(),
            Arc::clone(&self.known),
            prefix,
            after,
            self.config.request_timeout,
        )
        .await?;
        Ok(Box::new(watch))
    }

    fn current_revision(&self) -> Revision {
        self.known.current.load(Ordering::Acquire)
    }

    fn compacted_revision(&self) -> Revision {
        self.known.compacted.load(Ordering::Acquire)
    }

    async fn compact(&self, revision: Revision) -> Result<()> {
        if revision <= self.compacted_revision() {
            return Ok(());
        }
        let result = self
            .call(|mut kv| async move { kv.compact(revision, None).await })
            .await;
        match result {
            Ok(response) => {
                if let Some(header) = response.header() {
                    self.known.saw_revision(header.revision());
                }
                self.known.saw_compacted(revision);
                Ok(())
            }
            // Compacted further already (by another server): nothing to do.
            Err(StoreError::Compacted { .. }) => {
                self.learn_compacted().await?;
                Ok(())
            }
            Err(StoreError::FutureRevision { .. }) => Err(StoreError::FutureRevision {
                requested: revision,
                current: self.current_revision(),
            }),
            Err(e) => Err(e),
        }
    }

    fn health(&self) -> Result<()> {
        match &*self
            .known
            .unhealthy
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
        {
            Some(why) => Err(StoreError::Unavailable(why.clone())),
            None => Ok(()),
        }
    }
}

/// Keeps [`Known::current`] fresh and the health known: a watch on the compaction key,
/// asked for its progress every [`FOLLOW_INTERVAL`] (etcd answers with its revision).
async fn follow(watch: WatchClient, known: Arc<Known>, timeout: Duration) {
    loop {
        let stream = tokio::time::timeout(
            timeout,
            watch.clone().watch(
                COMPACT_REV_KEY,
                Some(WatchOptions::new().with_progress_notify()),
            ),
        )
        .await;
        let mut stream = match stream {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => {
                known.set_unhealthy(Some(errors::unavailable_reason(&e)));
                tokio::time::sleep(FOLLOW_INTERVAL).await;
                continue;
            }
            Err(_) => {
                known.set_unhealthy(Some(format!("etcd did not answer within {timeout:?}")));
                continue;
            }
        };
        let mut ticker = tokio::time::interval(FOLLOW_INTERVAL);
        let mut asked = false;
        loop {
            tokio::select! {
                _ = ticker.tick() => {
                    if asked {
                        // The last request got no answer within an interval.
                        known.set_unhealthy(Some(format!(
                            "etcd did not answer a progress request within {FOLLOW_INTERVAL:?}"
                        )));
                    }
                    if stream.request_progress().await.is_err() {
                        break;
                    }
                    asked = true;
                }
                message = stream.message() => match message {
                    Ok(Some(response)) => {
                        if let Some(header) = response.header() {
                            known.saw_revision(header.revision());
                        }
                        if response.compact_revision() > 0 {
                            known.saw_compacted(response.compact_revision());
                        }
                        known.set_unhealthy(None);
                        asked = false;
                    }
                    Ok(None) => break,
                    Err(e) => {
                        known.set_unhealthy(Some(errors::unavailable_reason(&e)));
                        break;
                    }
                },
            }
        }
        tokio::time::sleep(FOLLOW_INTERVAL).await;
    }
}

/// Kubernetes' compactor: every `interval`, compact to the revision seen one interval
/// earlier, once across all servers (the one whose transaction on `compact_rev_key` wins).
async fn compact_periodically(
    kv: KvClient,
    known: Arc<Known>,
    interval: Duration,
    timeout: Duration,
) {
    let mut version: i64 = 0;
    let mut previous: Option<Revision> = None;
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await;
    loop {
        ticker.tick().await;
        let current = known.current.load(Ordering::Acquire);
        let Some(target) = previous.replace(current) else {
            continue;
        };
        if target <= known.compacted.load(Ordering::Acquire) {
            continue;
        }
        let txn = Txn::new()
            .when([Compare::version(COMPACT_REV_KEY, CompareOp::Equal, version)])
            .and_then([TxnOp::put(COMPACT_REV_KEY, target.to_string(), None)])
            .or_else([TxnOp::get(COMPACT_REV_KEY, None)]);
        let answer = tokio::time::timeout(timeout, kv.clone().txn(txn)).await;
        let response = match answer {
            Ok(Ok(response)) => response,
            Ok(Err(e)) => {
                tracing::warn!(error = %errors::unavailable_reason(&e), "etcd compaction skipped");
                continue;
            }
            Err(_) => continue,
        };
        if !response.succeeded() {
            // Another server compacted this interval; follow its version.
            version = first_get(&response).map(|kv| kv.version()).unwrap_or(0);
            continue;
        }
        version += 1;
        match tokio::time::timeout(timeout, kv.clone().compact(target, None)).await {
            Ok(Ok(_)) => {
                known.saw_compacted(target);
                tracing::debug!(revision = target, "etcd compacted");
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %errors::unavailable_reason(&e), revision = target, "etcd compaction failed");
            }
            Err(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::prefix_end;

    #[test]
    fn a_prefix_range_ends_after_the_last_key_with_the_prefix() {
        assert_eq!(prefix_end("/registry/pods/"), b"/registry/pods0".to_vec());
        assert_eq!(prefix_end(""), vec![0]);
    }
}
