//! etcd's errors as the store's: the contract's own errors where etcd has them, otherwise
//! `Unavailable` with a sentence a person can act on (never a raw gRPC status).

use etcd_client::Error;
use tonic::Code;

use crate::{Revision, StoreError};

/// Whether the request certainly was not served, so that sending it again (to another
/// endpoint, or once a leader is elected) cannot apply it twice.
pub(super) fn is_retryable(error: &Error) -> bool {
    match error {
        Error::TransportError(_) | Error::IoError(_) => true,
        Error::GRpcStatus(status) => {
            status.code() == Code::Unavailable
                && (!status.message().starts_with("etcdserver:")
                    || status.message().contains("no leader"))
        }
        _ => false,
    }
}

/// Why etcd cannot serve now, as a sentence.
pub(super) fn unavailable_reason(error: &Error) -> String {
    match error {
        Error::TransportError(e) => format!("cannot reach etcd: {}", transport_reason(e)),
        Error::IoError(e) => format!("cannot reach etcd: {e}"),
        Error::GRpcStatus(status) => {
            let message = status.message();
            if message.contains("no leader") {
                "etcd has no leader (its cluster has lost quorum)".to_owned()
            } else if message.contains("leader changed") {
                "etcd's leader changed while the request was in flight".to_owned()
            } else if message.contains("request timed out") {
                "etcd did not commit the request in time (request timed out)".to_owned()
            } else if message.contains("server stopped") {
                "the etcd member is stopping".to_owned()
            } else if message.contains("database space exceeded") {
                "etcd's database is full (NOSPACE alarm): compact and defragment it, then \
                 disarm the alarm"
                    .to_owned()
            } else if message.contains("too many requests") {
                "etcd is overloaded (too many requests)".to_owned()
            } else if status.code() == Code::Unavailable || status.code() == Code::Unknown {
                // Transport failures surface as Unavailable with tonic's text; the cause
                // (connection refused, a certificate not trusted) is its innermost source.
                let mut reason = first_line(message).to_owned();
                let mut source = std::error::Error::source(status);
                let mut innermost = None;
                while let Some(cause) = source {
                    innermost = Some(cause.to_string());
                    source = cause.source();
                }
                if let Some(cause) = innermost
                    && !reason.contains(&cause)
                {
                    reason = format!("{reason}: {cause}");
                }
                format!("cannot reach etcd: {reason}")
            } else {
                format!("etcd refused the request: {}", first_line(message))
            }
        }
        Error::WatchError(e) => format!("the etcd watch stream broke: {e}"),
        other => format!("etcd client error: {other}"),
    }
}

fn first_line(message: &str) -> &str {
    message.lines().next().unwrap_or(message)
}

/// A transport error's innermost cause (connection refused, certificate unknown, ...).
fn transport_reason(error: &tonic::transport::Error) -> String {
    let mut reason = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        reason = cause.to_string();
        source = cause.source();
    }
    reason
}

/// etcd's error as the store's. `current` fills `FutureRevision` when etcd does not say.
pub(super) fn classify(error: Error, current: Revision) -> StoreError {
    if let Error::GRpcStatus(status) = &error {
        let message = status.message();
        if message.contains("required revision has been compacted") {
            return StoreError::Compacted {
                requested: 0,
                compacted: 0,
            };
        }
        if message.contains("required revision is a future revision") {
            return StoreError::FutureRevision {
                requested: 0,
                current,
            };
        }
        if message.contains("request is too large") {
            return StoreError::TooLarge {
                key: String::new(),
                size: 0,
                limit: 0,
            };
        }
        match status.code() {
            Code::Unavailable
            | Code::DeadlineExceeded
            | Code::Cancelled
            | Code::ResourceExhausted
            | Code::Unknown
            | Code::Aborted => {}
            _ => {
                return StoreError::Backend(unavailable_reason(&error).into());
            }
        }
    }
    StoreError::Unavailable(unavailable_reason(&error))
}
