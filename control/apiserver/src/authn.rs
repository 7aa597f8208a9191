//! Authentication: who is making a request.
//!
//! Authenticators, tried in Kubernetes' order: the TLS client certificate (verified
//! against the cluster CA during the handshake by `serve`, which turns it into an
//! [`Identity`] request extension with [`identity_from_certificate`]), then the bearer-token
//! chain: a static token ([`TokenAuthenticator`], the format of kube-apiserver's
//! `--token-auth-file`), then each [`BearerTokenAuthenticator`] added with
//! [`Authn::with_token_authenticator`] (bootstrap tokens, `crate::bootstrap_token`;
//! service-account tokens, `crate::serviceaccount`), in order, the first that recognises the
//! token winning (Kubernetes' union authenticator).
//! A request with neither is answered 401, except for the public health and version
//! endpoints that Kubernetes' `system:public-info-viewer` role opens to everyone.
//!
//! The same middleware then applies impersonation (`crate::impersonation`) and asks the
//! authorizer chain (`crate::authz`) about the request: authentication, impersonation and
//! authorization run in kube-apiserver's order before any handler. It tells the audit
//! middleware around it (`crate::audit`) who the requester is, whom it impersonates and
//! what the authorizer decided.

use std::sync::{Arc, RwLock};

use async_trait::async_trait;
use axum::Router;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::header;
use thiserror::Error;

use crate::authz::node::graph::NodeGraph;
use crate::authz::node::{depends_on_graph, node_identity};
use crate::authz::{Attributes, Authorizer, Decision, forbidden, resolve_request};
use crate::error::ApiError;

/// The group every authenticated identity belongs to.
pub const GROUP_AUTHENTICATED: &str = "system:authenticated";
/// The group of requests that carried no credentials.
pub const GROUP_UNAUTHENTICATED: &str = "system:unauthenticated";
/// The user of requests that carried no credentials.
pub const USER_ANONYMOUS: &str = "system:anonymous";
/// The group that may do anything (Kubernetes' cluster-admin binding).
pub const GROUP_MASTERS: &str = "system:masters";

/// Paths anyone may read without credentials (`system:public-info-viewer`).
const PUBLIC_PATHS: &[&str] = &["/healthz", "/livez", "/readyz", "/version", "/cacerts"];

/// The authenticated user of a request, stored in the request's extensions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// User name: a certificate's CN, a token's user column.
    pub user: String,
    /// Groups: a certificate's O values, a token's groups column.
    pub groups: Vec<String>,
}

impl Identity {
    /// The identity of a request without credentials.
    pub fn anonymous() -> Self {
        Identity {
            user: USER_ANONYMOUS.to_string(),
            groups: vec![GROUP_UNAUTHENTICATED.to_string()],
        }
    }

    /// Whether this is the identity of a request without credentials.
    pub fn is_anonymous(&self) -> bool {
        self.user == USER_ANONYMOUS
    }

    /// Whether the identity is in `group`.
    pub fn in_group(&self, group: &str) -> bool {
        self.groups.iter().any(|g| g == group)
    }
}

/// Reads the identity from a DER client certificate: user = CN, groups = O values.
///
/// Returns `None` when the certificate cannot be parsed or has no CN. The caller must
/// only pass certificates the TLS layer has already verified against the cluster CA.
pub fn identity_from_certificate(der: &[u8]) -> Option<Identity> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let subject = cert.subject();
    let user = subject
        .iter_common_name()
        .find_map(|cn| cn.as_str().ok())?
        .to_string();
    if user.is_empty() {
        return None;
    }
    let groups = subject
        .iter_organization()
        .filter_map(|o| o.as_str().ok())
        .map(str::to_string)
        .collect();
    Some(Identity { user, groups })
}

/// An error in a static token file.
#[derive(Debug, Error)]
pub enum TokenFileError {
    /// A line has fewer than the three required columns `token,user,uid`.
    #[error("line {line}: expected at least 3 columns (token,user,uid), found {found}")]
    TooFewColumns {
        /// 1-based line number.
        line: usize,
        /// Columns found.
        found: usize,
    },
    /// A quoted column is not closed before the end of the line.
    #[error("line {line}: unterminated quoted column")]
    UnterminatedQuote {
        /// 1-based line number.
        line: usize,
    },
    /// A token or user column is empty.
    #[error("line {line}: the token and user columns must not be empty")]
    EmptyColumn {
        /// 1-based line number.
        line: usize,
    },
}

/// One line of a static token file: `token,user,uid,"group1,group2"`.
#[derive(Clone, PartialEq, Eq)]
pub struct TokenEntry {
    /// The bearer token.
    pub token: String,
    /// The user the token authenticates as.
    pub user: String,
    /// The user's uid (may be empty).
    pub uid: String,
    /// The user's groups.
    pub groups: Vec<String>,
}

impl std::fmt::Debug for TokenEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenEntry")
            .field("token", &"<redacted>")
            .field("user", &self.user)
            .field("uid", &self.uid)
            .field("groups", &self.groups)
            .finish()
    }
}

impl TokenEntry {
    /// The line of a token file for this entry (without the newline).
    pub fn to_line(&self) -> String {
        let columns = [
            self.token.clone(),
            self.user.clone(),
            self.uid.clone(),
            self.groups.join(","),
        ];
        columns
            .iter()
            .map(|c| quote_column(c))
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// Bearer-token authentication against a set of static tokens.
///
/// Tokens can be added at run time ([`TokenAuthenticator::insert`]), e.g. a node join
/// token; persisting them is the owner's business (`pki::Pki::add_token`).
#[derive(Debug, Default)]
pub struct TokenAuthenticator {
    entries: RwLock<Vec<TokenEntry>>,
}

impl TokenAuthenticator {
    /// An authenticator over `entries`.
    pub fn new(entries: Vec<TokenEntry>) -> Self {
        TokenAuthenticator {
            entries: RwLock::new(entries),
        }
    }

    /// Parses a token file: one `token,user,uid[,"group1,group2"]` line per token, CSV
    /// quoting, blank lines and `#` comments ignored.
    pub fn parse(text: &str) -> Result<Self, TokenFileError> {
        let mut entries = Vec::new();
        for (index, raw) in text.lines().enumerate() {
            let line = index + 1;
            let trimmed = raw.trim();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            let columns =
                split_csv_line(trimmed).ok_or(TokenFileError::UnterminatedQuote { line })?;
            if columns.len() < 3 {
                return Err(TokenFileError::TooFewColumns {
                    line,
                    found: columns.len(),
                });
            }
            let token = columns[0].trim().to_string();
            let user = columns[1].trim().to_string();
            if token.is_empty() || user.is_empty() {
                return Err(TokenFileError::EmptyColumn { line });
            }
            let groups = columns
                .get(3)
                .map(|g| {
                    g.split(',')
                        .map(str::trim)
                        .filter(|g| !g.is_empty())
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default();
            entries.push(TokenEntry {
                token,
                user,
                uid: columns[2].trim().to_string(),
                groups,
            });
        }
        Ok(Self::new(entries))
    }

    /// The token file text for the current entries (parsed back by [`Self::parse`]).
    pub fn to_file_contents(&self) -> String {
        let mut out = String::from(
            "# token,user,uid,\"group1,group2\" (kube-apiserver --token-auth-file format)\n",
        );
        for entry in self.read().iter() {
            out.push_str(&entry.to_line());
            out.push('\n');
        }
        out
    }

    /// Adds a token (replacing an entry with the same token).
    pub fn insert(&self, entry: TokenEntry) {
        let mut entries = self
            .entries
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        entries.retain(|e| !constant_time_eq(e.token.as_bytes(), entry.token.as_bytes()));
        entries.push(entry);
    }

    /// Removes every entry of `user`; returns whether there was one.
    pub fn remove_user(&self, user: &str) -> bool {
        let mut entries = self
            .entries
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let before = entries.len();
        entries.retain(|e| e.user != user);
        entries.len() != before
    }

    /// The entries, in file order.
    pub fn entries(&self) -> Vec<TokenEntry> {
        self.read().clone()
    }

    /// The identity a bearer token authenticates as, if any.
    ///
    /// Every entry is compared in constant time, so the answer's timing does not tell
    /// how much of a token was right.
    pub fn authenticate(&self, token: &str) -> Option<Identity> {
        let mut found = None;
        for entry in self.read().iter() {
            if constant_time_eq(entry.token.as_bytes(), token.as_bytes()) && found.is_none() {
                found = Some(Identity {
                    user: entry.user.clone(),
                    groups: entry.groups.clone(),
                });
            }
        }
        found
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Vec<TokenEntry>> {
        self.entries
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Compares two byte strings without an early exit on the first difference.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Splits one CSV line into columns; `None` if a quote is left open.
fn split_csv_line(line: &str) -> Option<Vec<String>> {
    let mut columns = Vec::new();
    let mut current = String::new();
    let mut chars = line.chars().peekable();
    let mut in_quotes = false;
    while let Some(c) = chars.next() {
        match (c, in_quotes) {
            ('"', true) if chars.peek() == Some(&'"') => {
                chars.next();
                current.push('"');
            }
            ('"', true) => in_quotes = false,
            ('"', false) if current.trim().is_empty() => {
                current.clear();
                in_quotes = true;
            }
            (',', false) => columns.push(std::mem::take(&mut current)),
            (c, _) => current.push(c),
        }
    }
    if in_quotes {
        return None;
    }
    columns.push(current);
    Some(columns)
}

fn quote_column(column: &str) -> String {
    if column.contains([',', '"']) || column.starts_with(' ') || column.ends_with(' ') {
        format!("\"{}\"", column.replace('"', "\"\""))
    } else {
        column.to_string()
    }
}

/// One bearer-token authenticator of the chain after the static tokens (Kubernetes'
/// `authenticator.Token`): bootstrap tokens, service account tokens.
#[async_trait]
pub trait BearerTokenAuthenticator: Send + Sync + 'static {
    /// The identity `token` authenticates as, or `None` (not this authenticator's token,
    /// or not a valid one): the next authenticator is asked.
    async fn authenticate(&self, token: &str) -> Option<Identity>;
}

/// The state of the [`authenticate`] middleware: the token authenticators and the
/// authorizer chain (for impersonation and for the request itself).
#[derive(Clone)]
pub struct Authn {
    tokens: Arc<TokenAuthenticator>,
    chain: Vec<Arc<dyn BearerTokenAuthenticator>>,
    authorizer: Arc<dyn Authorizer>,
    node_graph: Option<(Arc<NodeGraph>, Arc<dyn wasmkube_store::Store>)>,
}

/// How long a node's request waits for the Node authorizer's graph to catch up before it
/// is refused.
const NODE_GRAPH_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

impl std::fmt::Debug for Authn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authn").finish_non_exhaustive()
    }
}

impl Authn {
    /// Bearer tokens from `tokens`, requests authorized by `authorizer`.
    pub fn new(tokens: Arc<TokenAuthenticator>, authorizer: Arc<dyn Authorizer>) -> Self {
        Authn {
            tokens,
            chain: Vec::new(),
            authorizer,
            node_graph: None,
        }
    }

    /// The Node authorizer's graph and the store it follows: a node's request the chain
    /// refuses is decided again once the graph has caught up with the store (the node may
    /// have seen its new pod before the graph did).
    pub fn with_node_graph(
        mut self,
        graph: Arc<NodeGraph>,
        store: Arc<dyn wasmkube_store::Store>,
    ) -> Self {
        self.node_graph = Some((graph, store));
        self
    }

    /// Adds a bearer-token authenticator, asked after the static tokens and the ones added
    /// before it.
    pub fn with_token_authenticator(mut self, link: Arc<dyn BearerTokenAuthenticator>) -> Self {
        self.chain.push(link);
        self
    }

    /// The identity a bearer token authenticates as: the static tokens first, then the
    /// chain in order.
    pub async fn authenticate_token(&self, token: &str) -> Option<Identity> {
        if let Some(identity) = self.tokens.authenticate(token) {
            return Some(identity);
        }
        for link in &self.chain {
            if let Some(identity) = link.authenticate(token).await {
                return Some(identity);
            }
        }
        None
    }
}

/// Puts `router` behind [`authenticate`] (all routes and the fallback).
pub fn require_authentication<S>(router: Router<S>, authn: Authn) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    router.layer(axum::middleware::from_fn_with_state(authn, authenticate))
}

/// Whether anyone may read `path` without credentials.
pub fn is_public_path(path: &str) -> bool {
    let path = if path.len() > 1 {
        path.strip_suffix('/').unwrap_or(path)
    } else {
        path
    };
    PUBLIC_PATHS.contains(&path)
}

/// Paths served before authorization: the CA bundle a joining agent fetches (and checks
/// against its join token's hash) before it has any way to authenticate.
const UNAUTHORIZED_PATHS: &[&str] = &["/cacerts"];

/// Axum middleware: establishes the request's [`Identity`], applies impersonation and asks
/// the authorizer.
///
/// Order: an `Identity` extension from the TLS client certificate, else an
/// `Authorization: Bearer` token; a wrong token is 401 everywhere, no credentials is 401
/// except on the public paths (which then see [`Identity::anonymous`], authorized by the
/// `system:public-info-viewer` binding). Authenticated identities get the
/// `system:authenticated` group. Then `Impersonate-*` headers, then the request's
/// [`crate::authz::RequestInfo`] is authorized: a refusal is 403. The `Authorization`
/// header is removed before the handler runs, which finds the [`Identity`] and the
/// `RequestInfo` in the request's extensions.
pub async fn authenticate(State(authn): State<Authn>, mut req: Request, next: Next) -> Response {
    let identity = match req.extensions().get::<Identity>().cloned() {
        Some(identity) => with_authenticated_group(identity),
        None => match bearer_token(&req) {
            Some(Some(token)) => match authn.authenticate_token(token).await {
                Some(identity) => with_authenticated_group(identity),
                None => return unauthorized(&req, "invalid bearer token"),
            },
            Some(None) => return unauthorized(&req, "malformed Authorization header"),
            None if is_public_path(req.uri().path()) => Identity::anonymous(),
            None => return unauthorized(&req, "no credentials"),
        },
    };
    crate::audit::authenticated(&identity).await;
    let identity = match crate::impersonation::impersonate(
        authn.authorizer.as_ref(),
        identity,
        req.headers_mut(),
    ) {
        Ok(identity) => identity,
        Err(e) => return e.into_response(),
    };
    crate::audit::impersonated(&identity);
    let info = resolve_request(
        req.method(),
        req.uri().path(),
        req.uri().query().unwrap_or(""),
    );
    if !UNAUTHORIZED_PATHS.contains(&info.path.as_str()) {
        let attributes = Attributes {
            user: &identity,
            request: &info,
        };
        let mut decision = authn.authorizer.authorize(&attributes);
        if !decision.is_allowed()
            && let Some((graph, store)) = &authn.node_graph
            && node_identity(&identity).is_some()
            && depends_on_graph(&info)
            && graph
                .sync_to(store.current_revision(), NODE_GRAPH_WAIT)
                .await
        {
            decision = authn.authorizer.authorize(&attributes);
        }
        crate::audit::authorized(&decision);
        if !matches!(decision, Decision::Allow(_)) {
            tracing::debug!(user = %identity.user, verb = %info.verb, path = %info.path, "forbidden");
            return forbidden(&identity, &info, decision.reason()).into_response();
        }
    }
    req.headers_mut().remove(header::AUTHORIZATION);
    req.extensions_mut().insert(identity);
    req.extensions_mut().insert(info);
    next.run(req).await
}

fn with_authenticated_group(mut identity: Identity) -> Identity {
    if !identity.in_group(GROUP_AUTHENTICATED) {
        identity.groups.push(GROUP_AUTHENTICATED.to_string());
    }
    identity
}

/// `None`: no Authorization header; `Some(None)`: one that is not a usable bearer token.
fn bearer_token(req: &Request) -> Option<Option<&str>> {
    let value = req.headers().get(header::AUTHORIZATION)?;
    let token = value.to_str().ok().and_then(|v| {
        let (scheme, token) = v.trim().split_once(' ')?;
        let token = token.trim();
        (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
    });
    Some(token)
}

fn unauthorized(req: &Request, why: &str) -> Response {
    tracing::debug!(method = %req.method(), path = %req.uri().path(), why, "unauthorized");
    ApiError::unauthorized().into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::routing::get;
    use axum::{Extension, Json};
    use http::StatusCode;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    fn tokens() -> Arc<TokenAuthenticator> {
        Arc::new(
            TokenAuthenticator::parse("secret-admin,admin,1,\"system:masters\"\nnode-token,system:node:a,2,system:nodes\n")
                .expect("valid token file"),
        )
    }

    fn app() -> Router {
        let router = Router::new()
            .route(
                "/whoami",
                get(|Extension(id): Extension<Identity>| async move { Json(id.user) }),
            )
            .route(
                "/healthz",
                get(|Extension(id): Extension<Identity>| async move { Json(id.user) }),
            );
        require_authentication(
            router,
            Authn::new(tokens(), Arc::new(crate::authz::AlwaysAllow)),
        )
    }

    async fn call(req: http::Request<Body>) -> (StatusCode, serde_json::Value) {
        let response = app().oneshot(req).await.expect("infallible");
        let status = response.status();
        let bytes = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        (status, serde_json::from_slice(&bytes).expect("json body"))
    }

    fn get_req(path: &str, auth: Option<&str>) -> http::Request<Body> {
        let mut builder = http::Request::get(path);
        if let Some(auth) = auth {
            builder = builder.header(header::AUTHORIZATION, auth);
        }
        builder.body(Body::empty()).expect("request")
    }

    #[test]
    fn token_file_parses_quoted_groups_and_skips_comments() {
        let auth = TokenAuthenticator::parse("# comment\n\nt1,alice,u1,\"a,b\"\nt2,bob,u2\n")
            .expect("parses");
        let entries = auth.entries();
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0].groups, vec!["a", "b"]);
        assert!(entries[1].groups.is_empty());
    }

    #[test]
    fn token_file_round_trips_through_its_text_form() {
        let auth = TokenAuthenticator::new(vec![TokenEntry {
            token: "tok".into(),
            user: "we\"ird, user".into(),
            uid: String::new(),
            groups: vec!["g1".into(), "g2".into()],
        }]);
        let again = TokenAuthenticator::parse(&auth.to_file_contents()).expect("parses");
        assert_eq!(again.entries(), auth.entries());
    }

    #[test]
    fn token_file_rejects_short_lines_and_open_quotes() {
        assert!(matches!(
            TokenAuthenticator::parse("tok,user\n"),
            Err(TokenFileError::TooFewColumns { line: 1, .. })
        ));
        assert!(matches!(
            TokenAuthenticator::parse("a,b,c\ntok,user,1,\"open\n"),
            Err(TokenFileError::UnterminatedQuote { line: 2 })
        ));
        assert!(matches!(
            TokenAuthenticator::parse(",user,1\n"),
            Err(TokenFileError::EmptyColumn { line: 1 })
        ));
    }

    #[test]
    fn token_lookup_finds_only_exact_tokens() {
        let auth = tokens();
        let id = auth.authenticate("secret-admin").expect("known token");
        assert_eq!(
            id,
            Identity {
                user: "admin".into(),
                groups: vec!["system:masters".into()]
            }
        );
        assert!(auth.authenticate("secret-admi").is_none());
        assert!(auth.authenticate("secret-admin2").is_none());
        assert!(auth.authenticate("").is_none());
    }

    #[test]
    fn inserted_token_replaces_an_entry_with_the_same_token() {
        let auth = tokens();
        auth.insert(TokenEntry {
            token: "node-token".into(),
            user: "other".into(),
            uid: String::new(),
            groups: vec![],
        });
        assert_eq!(auth.entries().len(), 2);
        assert_eq!(
            auth.authenticate("node-token").map(|i| i.user),
            Some("other".to_string())
        );
    }

    #[test]
    fn public_paths_match_with_or_without_trailing_slash_only() {
        assert!(is_public_path("/healthz"));
        assert!(is_public_path("/version/"));
        assert!(!is_public_path("/healthz/etcd"));
        assert!(!is_public_path("/api"));
        assert!(!is_public_path("/"));
    }

    #[tokio::test]
    async fn bearer_token_authenticates_and_handler_sees_the_user() {
        let (status, body) = call(get_req("/whoami", Some("Bearer secret-admin"))).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, "admin");
    }

    #[tokio::test]
    async fn wrong_or_missing_token_is_401_status() {
        for auth in [
            Some("Bearer nope"),
            Some("Basic abc"),
            Some("Bearer "),
            None,
        ] {
            let (status, body) = call(get_req("/whoami", auth)).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{auth:?}");
            assert_eq!(body["kind"], "Status");
            assert_eq!(body["reason"], "Unauthorized");
            assert_eq!(body["code"], 401);
        }
    }

    #[tokio::test]
    async fn unknown_paths_without_credentials_are_401_not_404() {
        let (status, _) = call(get_req("/api/v1/nothing", None)).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }

    #[tokio::test]
    async fn public_path_is_served_anonymously() {
        let (status, body) = call(get_req("/healthz", None)).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, USER_ANONYMOUS);
    }

    #[tokio::test]
    async fn certificate_identity_extension_wins_over_a_bad_token() {
        let mut req = get_req("/whoami", Some("Bearer wrong"));
        req.extensions_mut().insert(Identity {
            user: "cert-user".into(),
            groups: vec![],
        });
        let (status, body) = call(req).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, "cert-user");
    }

    #[tokio::test]
    async fn a_denying_authorizer_answers_403_in_kubernetes_words() {
        let router = Router::new().route("/x", get(|| async { "x" }));
        let app = require_authentication(
            router,
            Authn::new(tokens(), Arc::new(crate::authz::AlwaysDeny)),
        );
        let response = app
            .oneshot(get_req("/x", Some("Bearer node-token")))
            .await
            .expect("infallible");
        assert_eq!(response.status(), StatusCode::FORBIDDEN);
        let bytes = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        let body: serde_json::Value = serde_json::from_slice(&bytes).expect("json");
        assert_eq!(
            body["message"],
            "forbidden: User \"system:node:a\" cannot get path \"/x\""
        );
    }

    #[tokio::test]
    async fn system_masters_needs_no_rule_but_others_do() {
        let router = Router::new().route("/x", get(|| async { "x" }));
        let chain = crate::authz::build_chain(
            &[crate::authz::AuthorizationMode::AlwaysDeny],
            Arc::new(crate::authz::AlwaysDeny),
            Arc::new(crate::authz::AlwaysDeny),
        );
        let app = require_authentication(router, Authn::new(tokens(), Arc::new(chain)));
        let admin = app
            .clone()
            .oneshot(get_req("/x", Some("Bearer secret-admin")))
            .await
            .expect("infallible");
        assert_eq!(admin.status(), StatusCode::OK);
        let node = app
            .oneshot(get_req("/x", Some("Bearer node-token")))
            .await
            .expect("infallible");
        assert_eq!(node.status(), StatusCode::FORBIDDEN);
    }
}
