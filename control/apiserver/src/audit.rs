//! Auditing, as kube-apiserver's: every request is put to the audit policy
//! (`--audit-policy-file`, [`policy`]) and written, at the level the policy gives it, as
//! `audit.k8s.io/v1` `Event` JSON lines ([`event`]) to the log backend
//! (`--audit-log-path`, rotated by `--audit-log-maxsize/-maxbackup/-maxage`: [`log`],
//! [`rotate`]). Without a policy file nothing is audited; every response still carries its
//! `Audit-Id` header, the ID its events would have (a client's own `Audit-ID` header is
//! kept, as there).
//!
//! The [`audit`] middleware wraps authentication (`authn`), as kube-apiserver's `WithAudit`
//! filter sits between authentication and impersonation. The authentication middleware
//! reports what only it knows through three calls that do nothing when auditing is off:
//! [`authenticated`] (the policy is evaluated for the requester and `RequestReceived`
//! written), [`impersonated`] and [`authorized`] (the `authorization.k8s.io/decision` and
//! `authorization.k8s.io/reason` annotations); admission adds its annotations with
//! [`annotate`]. They find the request's audit context in a task-local set around the
//! inner service. A request whose authentication failed gets one `ResponseStarted` event
//! with its 401, as kube-apiserver's failed-authentication audit does.
//!
//! Stages: `RequestReceived` once authenticated; `ResponseStarted` (long-running requests:
//! watches, logs, proxies) when the headers go out; `ResponseComplete` when the response is
//! done (a long-running one when its body ends or the client goes away); `Panic` if the
//! handler panicked. Request bodies are read as the handler reads them (never buffered
//! ahead of it), response bodies only at `RequestResponse` or for failure Statuses.

pub mod event;
pub mod log;
pub mod policy;
pub mod rotate;

mod request;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use http::HeaderValue;

pub use event::Event;
pub use policy::{Level, Policy, PolicyError, Stage};
use request::RequestAudit;

use crate::authn::Identity;
use crate::authz::Decision;

/// The response (and request) header with the audit ID.
pub const AUDIT_ID_HEADER: &str = "audit-id";

/// What `--audit-*` configured.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuditConfig {
    /// `--audit-policy-file`: no file, no auditing.
    pub policy_file: Option<PathBuf>,
    /// `--audit-log-path`: a file, or `-` for standard output.
    pub log_path: Option<PathBuf>,
    /// `--audit-log-maxsize`: megabytes before the file is rotated (0: 100).
    pub log_max_size_mb: u64,
    /// `--audit-log-maxbackup`: rotated files kept (0: all).
    pub log_max_backups: usize,
    /// `--audit-log-maxage`: days rotated files are kept (0: forever).
    pub log_max_age_days: u64,
}

/// Auditing that cannot start.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// The policy file is missing or wrong.
    #[error(transparent)]
    Policy(#[from] PolicyError),
    /// The log file cannot be opened.
    #[error("cannot open the audit log {path}: {source}")]
    Log {
        /// The path given.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// A server's auditing: the policy and the log it writes to (`None`: auditing is off).
#[derive(Clone, Debug, Default)]
pub struct Audit {
    enabled: Option<Arc<Enabled>>,
}

#[derive(Debug)]
struct Enabled {
    policy: Arc<Policy>,
    sink: log::Sink,
}

/// Waits for the audit log's last events to be written (see [`Audit::start`]).
#[derive(Debug, Default)]
pub struct AuditStopped(Option<log::WriterDone>);

impl AuditStopped {
    /// Waits at most `timeout` for the writer, once the server holds no more requests.
    pub async fn wait(self, timeout: Duration) {
        if let Some(done) = self.0 {
            done.wait(timeout).await;
        }
    }
}

impl Audit {
    /// Reads the policy and opens the log. A policy without a log, or a log without a
    /// policy, audits nothing (as kube-apiserver) and says so.
    pub fn start(config: &AuditConfig) -> Result<(Audit, AuditStopped), AuditError> {
        let (policy_file, log_path) = match (&config.policy_file, &config.log_path) {
            (Some(policy), Some(log)) => (policy, log),
            (None, None) => return Ok((Audit::default(), AuditStopped::default())),
            (None, Some(_)) => {
                tracing::warn!("--audit-log-path without --audit-policy-file: nothing is audited");
                return Ok((Audit::default(), AuditStopped::default()));
            }
            (Some(policy), None) => {
                Policy::load(policy)?;
                tracing::warn!(
                    "--audit-policy-file without --audit-log-path: there is no audit backend, nothing is written"
                );
                return Ok((Audit::default(), AuditStopped::default()));
            }
        };
        let policy = Policy::load(policy_file)?;
        let rotation = rotate::Rotation::from_flags(
            config.log_max_size_mb,
            config.log_max_backups,
            config.log_max_age_days,
        );
        let (sink, done) =
            log::Sink::start(log_path, rotation).map_err(|source| AuditError::Log {
                path: log_path.display().to_string(),
                source,
            })?;
        tracing::info!(
            policy = %policy_file.display(),
            log = %log_path.display(),
            rules = policy.rules.len(),
            "auditing"
        );
        Ok((
            Audit {
                enabled: Some(Arc::new(Enabled {
                    policy: Arc::new(policy),
                    sink,
                })),
            },
            AuditStopped(Some(done)),
        ))
    }

    /// Auditing with `policy` into `sink` (tests).
    pub fn with_sink(policy: Policy, sink: log::Sink) -> Audit {
        Audit {
            enabled: Some(Arc::new(Enabled {
                policy: Arc::new(policy),
                sink,
            })),
        }
    }

    /// Whether requests are audited.
    pub fn is_enabled(&self) -> bool {
        self.enabled.is_some()
    }
}

/// Puts `router` (the authenticated API) behind the [`audit`] middleware.
pub fn layer<S>(router: Router<S>, audit: Audit) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    router.layer(axum::middleware::from_fn_with_state(audit, self::audit))
}

tokio::task_local! {
    /// The audit context of the request this task is serving.
    static CURRENT: Arc<RequestAudit>;
}

/// The middleware: an audit ID for every request, and the events the policy asks for.
pub async fn audit(State(audit): State<Audit>, req: Request, next: Next) -> Response {
    let audit_id = audit_id(&req);
    let Some(enabled) = audit.enabled.clone() else {
        let mut response = next.run(req).await;
        set_audit_id(&mut response, &audit_id);
        return response;
    };
    let (context, req) =
        RequestAudit::new(enabled.policy.clone(), enabled.sink.clone(), audit_id, req);
    let context = Arc::new(context);
    let served = futures::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(
        CURRENT.scope(Arc::clone(&context), next.run(req)),
    ))
    .await;
    match served {
        Ok(mut response) => {
            set_audit_id(&mut response, context.audit_id());
            request::RequestAudit::respond(context, response).await
        }
        Err(panic) => {
            context.panicked(panic_message(panic.as_ref())).await;
            std::panic::resume_unwind(panic)
        }
    }
}

/// The request's own `Audit-ID` if it is a sensible one, else a new UUID.
fn audit_id(req: &Request) -> String {
    req.headers()
        .get(AUDIT_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|id| !id.is_empty() && id.len() <= 128 && id.bytes().all(|b| b.is_ascii_graphic()))
        .map(str::to_string)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string())
}

fn set_audit_id(response: &mut Response, id: &str) {
    if let Ok(value) = HeaderValue::from_str(id) {
        response.headers_mut().insert(AUDIT_ID_HEADER, value);
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_string())
}

fn current() -> Option<Arc<RequestAudit>> {
    CURRENT.try_with(Arc::clone).ok()
}

/// Authentication established `user` (before impersonation): the policy decides the
/// request's level and `RequestReceived` is written. Waits only while the log's buffer
/// is full.
pub async fn authenticated(user: &Identity) {
    if let Some(context) = current() {
        context.authenticated(user).await;
    }
}

/// The request acts as `user` (impersonation headers were honoured).
pub fn impersonated(user: &Identity) {
    if let Some(context) = current() {
        context.impersonated(user);
    }
}

/// The authorizer's decision on the request, as the `authorization.k8s.io/decision`
/// (`allow` or `forbid`) and `authorization.k8s.io/reason` annotations.
pub fn authorized(decision: &Decision) {
    if let Some(context) = current() {
        let verdict = if decision.is_allowed() {
            "allow"
        } else {
            "forbid"
        };
        context.annotate(event::DECISION_ANNOTATION, verdict);
        context.annotate(event::REASON_ANNOTATION, decision.reason());
    }
}

/// Adds an annotation to the request's events (admission plugins' audit annotations).
pub fn annotate(key: &str, value: &str) {
    if let Some(context) = current() {
        context.annotate(key, value);
    }
}

#[cfg(test)]
mod tests;
