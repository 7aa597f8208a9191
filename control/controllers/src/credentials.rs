//! Service account credentials for the controllers of a controller-manager that holds no CA:
//! `wasmkube controllers --use-service-account-credentials` (the default), as
//! kube-controller-manager's flag of that name. Its client builder asks the TokenRequest API
//! (`serviceaccounts/token`, which `system:kube-controller-manager` may create) for each
//! controller's service account in `kube-system` and renews the token before it expires;
//! every controller then reads and writes as `system:serviceaccount:kube-system:<account>`,
//! bound to its `system:controller:<account>` role, instead of as the kubeconfig's user.
//! (`wasmkube server` issues its embedded controllers client certificates instead: it holds
//! the CA.)
//!
//! Tokens live in memory only. Each is asked for with an hour's lifetime and renewed at 80%
//! of it; a failed renewal is retried with back-off while the old token is still valid.

use std::collections::HashMap;
use std::time::Duration;

use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::Api;
use kube::api::PostParams;
use tokio::task::JoinSet;
use wasmkube_client::connection::{BearerToken, client_with_bearer_token};
use wasmkube_client::status;

use crate::CONTROLLER_NAMESPACE;

/// The lifetime asked for each token (kube-controller-manager's client builder asks for an
/// hour too).
pub const TOKEN_LIFETIME: Duration = Duration::from_secs(3600);

/// The longest wait between two attempts at a token.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Why the controllers' credentials cannot be had.
#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    /// The apiserver refused a token for an account.
    #[error(
        "cannot get a token for the service account {CONTROLLER_NAMESPACE}/{account}: {message}; the \
         controller-manager's user needs `create serviceaccounts/token` in {CONTROLLER_NAMESPACE} \
         (the role system:kube-controller-manager has it), or run with \
         --use-service-account-credentials=false to act as the kubeconfig's user"
    )]
    Token {
        /// The service account.
        account: String,
        /// The apiserver's answer.
        message: String,
    },
    /// The client of an account cannot be built from the configuration.
    #[error("building the client of {CONTROLLER_NAMESPACE}/{account}: {source}")]
    Client {
        /// The service account.
        account: String,
        /// What kube-rs said.
        #[source]
        source: kube::Error,
    },
}

/// The clients of the controllers' service accounts and the tasks renewing their tokens,
/// which stop when this is dropped.
pub struct ServiceAccountCredentials {
    clients: HashMap<String, kube::Client>,
    _renewals: JoinSet<()>,
}

impl std::fmt::Debug for ServiceAccountCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut accounts: Vec<&String> = self.clients.keys().collect();
        accounts.sort_unstable();
        f.debug_struct("ServiceAccountCredentials")
            .field("accounts", &accounts)
            .finish_non_exhaustive()
    }
}

impl ServiceAccountCredentials {
    /// A client per service account, keyed by the account's name in `kube-system` (what
    /// [`run_with_service_accounts`](crate::run_with_service_accounts) takes).
    pub fn clients(&self) -> HashMap<String, kube::Client> {
        self.clients.clone()
    }
}

/// Makes sure every account of `accounts` exists in `kube-system`, gets a token for each with
/// `manager` (the controller-manager's own client) and builds a client per account on
/// `config` (the manager's server, CA and timeouts; its credentials are not used). While the
/// apiserver cannot answer (no connection, 5xx, 429) it waits and retries; a refusal (403)
/// is an error that says what to grant.
pub async fn service_account_clients(
    manager: &kube::Client,
    config: &kube::Config,
    accounts: &[&str],
) -> Result<ServiceAccountCredentials, CredentialsError> {
    crate::ensure_service_accounts(manager, accounts.iter().map(|a| a.to_string()).collect()).await;
    let mut clients = HashMap::new();
    let mut renewals = JoinSet::new();
    for account in accounts {
        let (token, expires_in) = token_retrying(manager, account).await?;
        let holder = BearerToken::new(&token).ok_or_else(|| CredentialsError::Token {
            account: account.to_string(),
            message: "the token is not a valid HTTP header value".into(),
        })?;
        let client =
            client_with_bearer_token(config.clone(), holder.clone()).map_err(|source| {
                CredentialsError::Client {
                    account: account.to_string(),
                    source,
                }
            })?;
        clients.insert(account.to_string(), client);
        renewals.spawn(renew(
            manager.clone(),
            account.to_string(),
            holder,
            expires_in,
        ));
    }
    tracing::info!(
        accounts = clients.len(),
        "the controllers act as their service accounts (tokens from the TokenRequest API)"
    );
    Ok(ServiceAccountCredentials {
        clients,
        _renewals: renewals,
    })
}

/// A token for `account` and how long it is valid, retrying while the apiserver cannot
/// answer.
async fn token_retrying(
    manager: &kube::Client,
    account: &str,
) -> Result<(String, Duration), CredentialsError> {
    let mut backoff = Duration::from_millis(250);
    loop {
        match request_token(manager, account).await {
            Ok(token) => return Ok(token),
            Err(e) if status::is_retriable(&e) || status::is_not_found(&e) => {
                // Not found: the account was created a moment ago by another manager's
                // request that has not been answered, or is being recreated; try again.
                tracing::warn!(account, error = %e, "cannot get the controller's token yet; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
            Err(e) => {
                return Err(CredentialsError::Token {
                    account: account.to_string(),
                    message: status::api_message(&e),
                });
            }
        }
    }
}

/// One TokenRequest for `account`: the token and its remaining lifetime.
async fn request_token(
    manager: &kube::Client,
    account: &str,
) -> Result<(String, Duration), kube::Error> {
    let api: Api<ServiceAccount> = Api::namespaced(manager.clone(), CONTROLLER_NAMESPACE);
    let request = TokenRequest {
        spec: TokenRequestSpec {
            expiration_seconds: Some(TOKEN_LIFETIME.as_secs().try_into().unwrap_or(i64::MAX)),
            ..TokenRequestSpec::default()
        },
        ..TokenRequest::default()
    };
    let answer = api
        .create_token_request(account, &PostParams::default(), &request)
        .await?;
    let Some(status) = answer.status else {
        return Err(kube::Error::Api(
            kube::core::Status::failure("the TokenRequest answer has no status", "InternalError")
                .with_code(500)
                .boxed(),
        ));
    };
    let now = jiff::Timestamp::now();
    let remaining =
        Duration::try_from(status.expiration_timestamp.0.duration_since(now)).unwrap_or_default();
    Ok((status.token, remaining.min(TOKEN_LIFETIME)))
}

/// When to renew a token valid for `lifetime`: at 80% of it.
fn renew_after(lifetime: Duration) -> Duration {
    lifetime.mul_f64(0.8)
}

/// Renews `holder`'s token for `account` at 80% of each token's lifetime, forever (until
/// the task is aborted). A failed renewal is retried with back-off; the old token keeps
/// serving meanwhile.
async fn renew(manager: kube::Client, account: String, holder: BearerToken, lifetime: Duration) {
    let mut wait = renew_after(lifetime);
    loop {
        tokio::time::sleep(wait).await;
        let mut backoff = Duration::from_secs(1);
        loop {
            match request_token(&manager, &account).await {
                Ok((token, lifetime)) if holder.set(&token) => {
                    tracing::debug!(account, "renewed the controller's token");
                    wait = renew_after(lifetime);
                    break;
                }
                Ok(_) => tracing::warn!(account, "the renewed token is not a valid header value"),
                Err(e) => {
                    tracing::warn!(account, error = %e, "cannot renew the controller's token; retrying")
                }
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_renewed_at_four_fifths_of_its_lifetime() {
        assert_eq!(
            renew_after(Duration::from_secs(3600)),
            Duration::from_secs(2880)
        );
        assert_eq!(renew_after(Duration::ZERO), Duration::ZERO);
    }
}
