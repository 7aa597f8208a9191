//! User impersonation (`kubectl --as alice --as-group devs`), as kube-apiserver's
//! impersonation filter does it.
//!
//! The `Impersonate-User`, `Impersonate-Group` (repeatable), `Impersonate-Uid` and
//! `Impersonate-Extra-<key>` headers ask to act as another identity. Each part is
//! authorized for the requesting user with the `impersonate` verb: on `users` (or, for
//! `system:serviceaccount:<ns>:<name>`, on `serviceaccounts` in `<ns>`), `groups`, `uids`
//! and `userextras/<key>` (authentication.k8s.io). A refusal is a 403 in Kubernetes'
//! words (`users "bob" is forbidden: User "alice" cannot impersonate resource "users" in
//! API group "" at the cluster scope`); groups or extras without a user are a 400.
//!
//! The impersonated identity gets `system:authenticated` (unless a group says otherwise)
//! and, for a service account without explicit groups, `system:serviceaccounts` and
//! `system:serviceaccounts:<ns>`. The impersonation headers are removed afterwards.

use http::HeaderMap;

use crate::authn::{GROUP_AUTHENTICATED, GROUP_UNAUTHENTICATED, Identity, USER_ANONYMOUS};
use crate::authz::{Attributes, Authorizer, RequestInfo, forbidden};
use crate::error::ApiError;
use crate::rbac::{service_account_groups, split_service_account_username};

/// The header naming the user to act as.
pub const USER_HEADER: &str = "impersonate-user";
/// The header naming a group to act in (repeatable).
pub const GROUP_HEADER: &str = "impersonate-group";
/// The header naming the uid to act as.
pub const UID_HEADER: &str = "impersonate-uid";
/// The prefix of headers naming extra user attributes.
pub const EXTRA_PREFIX: &str = "impersonate-extra-";

/// Whether the request asks to impersonate anyone.
pub fn requested(headers: &HeaderMap) -> bool {
    headers.keys().any(|name| {
        let name = name.as_str();
        name == USER_HEADER
            || name == GROUP_HEADER
            || name == UID_HEADER
            || name.starts_with(EXTRA_PREFIX)
    })
}

fn values<'a>(headers: &'a HeaderMap, name: &str) -> Result<Vec<&'a str>, ApiError> {
    headers
        .get_all(name)
        .iter()
        .map(|v| {
            v.to_str()
                .map(str::trim)
                .map_err(|_| ApiError::bad_request(format!("the {name} header is not valid text")))
        })
        .collect()
}

/// Checks the impersonation headers against `authorizer` for `requester`, and returns the
/// identity to act as (`requester` itself when nothing is asked). Removes the headers.
pub fn impersonate(
    authorizer: &dyn Authorizer,
    requester: Identity,
    headers: &mut HeaderMap,
) -> Result<Identity, ApiError> {
    if !requested(headers) {
        return Ok(requester);
    }
    let users = values(headers, USER_HEADER)?;
    let groups = values(headers, GROUP_HEADER)?;
    let uids = values(headers, UID_HEADER)?;
    let extra_keys: Vec<String> = headers
        .keys()
        .filter_map(|k| k.as_str().strip_prefix(EXTRA_PREFIX))
        .map(|k| {
            percent_encoding::percent_decode_str(k)
                .decode_utf8_lossy()
                .into_owned()
        })
        .collect();
    let user = match users.as_slice() {
        [] => {
            return Err(ApiError::bad_request(
                "requested impersonation of groups, a uid or extra attributes without impersonating a user (set Impersonate-User)",
            ));
        }
        [one] if !one.is_empty() => one.to_string(),
        [_] => {
            return Err(ApiError::bad_request(
                "the Impersonate-User header is empty",
            ));
        }
        _ => {
            return Err(ApiError::bad_request(
                "only one Impersonate-User header may be given",
            ));
        }
    };

    let check = |request: RequestInfo| -> Result<(), ApiError> {
        let decision = authorizer.authorize(&Attributes {
            user: &requester,
            request: &request,
        });
        if decision.is_allowed() {
            Ok(())
        } else {
            Err(forbidden(&requester, &request, decision.reason()))
        }
    };
    let impersonate = |resource: &str, namespace: &str, name: &str, group: &str| {
        RequestInfo::resource("impersonate", group, resource, "", namespace, name)
    };

    let mut identity_groups: Vec<String> = Vec::new();
    match split_service_account_username(&user) {
        Some((namespace, name)) => {
            check(impersonate("serviceaccounts", namespace, name, ""))?;
            if groups.is_empty() {
                identity_groups = service_account_groups(namespace);
            }
        }
        None => check(impersonate("users", "", &user, ""))?,
    }
    for group in &groups {
        check(impersonate("groups", "", group, ""))?;
        identity_groups.push(group.to_string());
    }
    for uid in &uids {
        check(impersonate("uids", "", uid, "authentication.k8s.io"))?;
    }
    for key in &extra_keys {
        for value in values(headers, &format!("{EXTRA_PREFIX}{key}"))? {
            check(RequestInfo::resource(
                "impersonate",
                "authentication.k8s.io",
                "userextras",
                key,
                "",
                value,
            ))?;
        }
    }

    if user == USER_ANONYMOUS {
        if !identity_groups.iter().any(|g| g == GROUP_UNAUTHENTICATED) {
            identity_groups.push(GROUP_UNAUTHENTICATED.to_string());
        }
    } else if !identity_groups
        .iter()
        .any(|g| g == GROUP_AUTHENTICATED || g == GROUP_UNAUTHENTICATED)
    {
        identity_groups.push(GROUP_AUTHENTICATED.to_string());
    }

    let remove: Vec<http::HeaderName> = headers
        .keys()
        .filter(|k| {
            let k = k.as_str();
            k == USER_HEADER || k == GROUP_HEADER || k == UID_HEADER || k.starts_with(EXTRA_PREFIX)
        })
        .cloned()
        .collect();
    for name in remove {
        headers.remove(name);
    }
    tracing::debug!(requester = %requester.user, user = %user, "impersonating");
    Ok(Identity {
        user,
        groups: identity_groups,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::authz::{Decision, RuleSet};

    /// Allows impersonating only what `allowed` lists as `resource/name`.
    struct Allow(Vec<&'static str>);
    impl Authorizer for Allow {
        fn authorize(&self, a: &Attributes<'_>) -> Decision {
            let key = format!("{}/{}", a.request.resource, a.request.name);
            if a.request.verb == "impersonate" && self.0.contains(&key.as_str()) {
                Decision::Allow(String::new())
            } else {
                Decision::NoOpinion(String::new())
            }
        }
        fn rules_for(&self, _: &Identity, _: &str) -> RuleSet {
            RuleSet::default()
        }
    }

    fn admin() -> Identity {
        Identity {
            user: "admin".into(),
            groups: vec!["system:masters".into()],
        }
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    #[test]
    fn no_headers_keep_the_requester() {
        let mut h = HeaderMap::new();
        assert_eq!(
            impersonate(&Allow(vec![]), admin(), &mut h).unwrap(),
            admin()
        );
    }

    #[test]
    fn an_allowed_user_and_groups_become_the_identity() {
        let mut h = headers(&[
            ("Impersonate-User", "alice"),
            ("Impersonate-Group", "devs"),
            ("Impersonate-Group", "ops"),
        ]);
        let id = impersonate(
            &Allow(vec!["users/alice", "groups/devs", "groups/ops"]),
            admin(),
            &mut h,
        )
        .unwrap();
        assert_eq!(id.user, "alice");
        assert_eq!(id.groups, ["devs", "ops", "system:authenticated"]);
        assert!(!requested(&h));
    }

    #[test]
    fn a_service_account_gets_its_groups() {
        let mut h = headers(&[("Impersonate-User", "system:serviceaccount:ns1:builder")]);
        let id = impersonate(&Allow(vec!["serviceaccounts/builder"]), admin(), &mut h).unwrap();
        assert_eq!(
            id.groups,
            [
                "system:serviceaccounts",
                "system:serviceaccounts:ns1",
                "system:authenticated"
            ]
        );
    }

    #[test]
    fn a_refused_impersonation_is_a_kubernetes_403() {
        let bob = Identity {
            user: "bob".into(),
            groups: vec![],
        };
        let mut h = headers(&[("Impersonate-User", "alice")]);
        let err = impersonate(&Allow(vec![]), bob, &mut h).unwrap_err();
        assert_eq!(err.code, 403);
        assert_eq!(
            err.message,
            "users \"alice\" is forbidden: User \"bob\" cannot impersonate resource \"users\" in API group \"\" at the cluster scope"
        );
        let mut h = headers(&[("Impersonate-User", "alice"), ("Impersonate-Group", "root")]);
        let err = impersonate(&Allow(vec!["users/alice"]), admin(), &mut h).unwrap_err();
        assert!(
            err.message.starts_with("groups \"root\" is forbidden"),
            "{}",
            err.message
        );
    }

    #[test]
    fn groups_without_a_user_are_a_bad_request() {
        let mut h = headers(&[("Impersonate-Group", "devs")]);
        let err = impersonate(&Allow(vec![]), admin(), &mut h).unwrap_err();
        assert_eq!(err.code, 400);
    }
}
