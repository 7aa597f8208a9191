//! Image references, normalized the way Docker, containerd's CRI plugin and the kubelet do.
//!
//! `hello` means `docker.io/library/hello:latest`; `wasmkube.local/samples/hello:v1` is already
//! full; `name@sha256:<hex>` pins content (a tag next to a digest is dropped, as Docker's
//! `ParseDockerRef` does). The store keeps every name in this normalized form, so a pod's
//! `image: hello` and an imported `docker.io/library/hello:latest` meet.

use std::fmt;

/// The registry assumed when a reference names none.
pub(crate) const DEFAULT_DOMAIN: &str = "docker.io";
/// Docker's legacy name for the default registry, rewritten to [`DEFAULT_DOMAIN`].
const LEGACY_DEFAULT_DOMAIN: &str = "index.docker.io";
/// The repository namespace of single-component names on the default registry.
const OFFICIAL_REPO_PREFIX: &str = "library/";
/// The tag assumed when a reference has neither tag nor digest.
pub(crate) const DEFAULT_TAG: &str = "latest";
/// Longest repository name (domain + path) Docker accepts.
const NAME_TOTAL_MAX: usize = 255;

/// A parsed, normalized image reference.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Reference {
    /// Registry host (and port), e.g. `docker.io` or `wasmkube.local:5000`.
    pub domain: String,
    /// Repository path below the registry, e.g. `library/hello`.
    pub path: String,
    /// The tag; `None` when the reference is pinned by digest.
    pub tag: Option<String>,
    /// `sha256:<hex>` when pinned by digest.
    pub digest: Option<String>,
}

/// Why a string is not an image reference; the message is shown to the user.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ReferenceError(String);

impl Reference {
    /// Parses and normalizes `s` like Docker: default registry `docker.io`, `library/` for
    /// single-component names there, `:latest` when there is no tag and no digest.
    pub fn parse(s: &str) -> Result<Reference, ReferenceError> {
        if s.is_empty() {
            return Err(ReferenceError("the image reference is empty".into()));
        }
        if s.trim() != s || s.contains(char::is_whitespace) {
            return Err(ReferenceError(
                "an image reference contains no whitespace".into(),
            ));
        }
        let (rest, digest) = match s.split_once('@') {
            Some((rest, digest)) => {
                validate_digest(digest)?;
                (rest, Some(digest.to_string()))
            }
            None => (s, None),
        };
        // A tag is after the last ':' that follows the last '/'; a ':' before it is a port.
        let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => {
                let at = last_slash + i;
                (&rest[..at], Some(&rest[at + 1..]))
            }
            None => (rest, None),
        };
        if let Some(tag) = tag {
            validate_tag(tag)?;
        }
        let (domain, path) = split_domain(name);
        validate_domain(&domain)?;
        validate_path(&path, name)?;
        if domain.len() + 1 + path.len() > NAME_TOTAL_MAX {
            return Err(ReferenceError(format!(
                "repository name must not be longer than {NAME_TOTAL_MAX} characters"
            )));
        }
        let tag = match (&digest, tag) {
            // Docker drops the tag of a reference that is both tagged and digested.
            (Some(_), _) => None,
            (None, Some(tag)) => Some(tag.to_string()),
            (None, None) => Some(DEFAULT_TAG.to_string()),
        };
        Ok(Reference {
            domain,
            path,
            tag,
            digest,
        })
    }

    /// The repository: `domain/path`, without tag or digest.
    pub fn repository(&self) -> String {
        format!("{}/{}", self.domain, self.path)
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.domain, self.path)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

/// Whether `s` is a bare content digest (`sha256:<64 hex>`), which the store resolves as an
/// image ID the way containerd's CRI plugin does.
pub(crate) fn is_bare_digest(s: &str) -> bool {
    validate_digest(s).is_ok()
}

/// Docker's rule: the first component is a registry when it has a `.` or `:`, is `localhost`,
/// or has upper-case letters (which a repository path may not).
fn split_domain(name: &str) -> (String, String) {
    let (domain, path) = match name.split_once('/') {
        Some((first, rest))
            if first.contains(['.', ':'])
                || first == "localhost"
                || first.chars().any(|c| c.is_ascii_uppercase()) =>
        {
            (first.to_string(), rest.to_string())
        }
        _ => (DEFAULT_DOMAIN.to_string(), name.to_string()),
    };
    let domain = if domain == LEGACY_DEFAULT_DOMAIN {
        DEFAULT_DOMAIN.to_string()
    } else {
        domain
    };
    let path = if domain == DEFAULT_DOMAIN && !path.contains('/') {
        format!("{OFFICIAL_REPO_PREFIX}{path}")
    } else {
        path
    };
    (domain, path)
}

fn validate_domain(domain: &str) -> Result<(), ReferenceError> {
    let (host, port) = match domain.rsplit_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (domain, None),
    };
    let host_ok = !host.is_empty()
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        });
    let port_ok = port.is_none_or(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()));
    if host_ok && port_ok {
        Ok(())
    } else {
        Err(ReferenceError(format!(
            "{domain:?} is not a valid registry host[:port]"
        )))
    }
}

/// Path components: `[a-z0-9]+` joined by `.`, `_`, `__` or runs of `-`.
fn validate_path(path: &str, name: &str) -> Result<(), ReferenceError> {
    if path.is_empty() {
        return Err(ReferenceError(format!("{name:?} has no repository name")));
    }
    if path.chars().any(|c| c.is_ascii_uppercase()) {
        return Err(ReferenceError(format!(
            "repository name {path:?} must be lowercase"
        )));
    }
    for component in path.split('/') {
        if !valid_path_component(component) {
            return Err(ReferenceError(format!(
                "{component:?} in {name:?} is not a valid repository name component \
                 (lowercase letters and digits, separated by '.', '_', '__' or '-')"
            )));
        }
    }
    Ok(())
}

fn valid_path_component(c: &str) -> bool {
    let bytes = c.as_bytes();
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    if bytes.is_empty() || !alnum(bytes[0]) || !alnum(bytes[bytes.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < bytes.len() {
        if alnum(bytes[i]) {
            i += 1;
            continue;
        }
        // A separator: '.', '_', '__' or one or more '-'.
        let start = i;
        match bytes[i] {
            b'.' => i += 1,
            b'_' => {
                i += 1;
                if bytes.get(i) == Some(&b'_') {
                    i += 1;
                }
            }
            b'-' => {
                while bytes.get(i) == Some(&b'-') {
                    i += 1;
                }
            }
            _ => return false,
        }
        if i == start || !bytes.get(i).copied().is_some_and(alnum) {
            return false;
        }
    }
    true
}

/// Tags: `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`.
fn validate_tag(tag: &str) -> Result<(), ReferenceError> {
    let mut chars = tag.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
    let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if first_ok && rest_ok && tag.len() <= 128 {
        Ok(())
    } else {
        Err(ReferenceError(format!(
            "{tag:?} is not a valid tag (letters, digits, '_', '.', '-', at most 128, \
             not starting with '.' or '-')"
        )))
    }
}

/// Digests: only `sha256:` with 64 lowercase hex digits is supported.
fn validate_digest(digest: &str) -> Result<(), ReferenceError> {
    match digest.split_once(':') {
        Some(("sha256", hex))
            if hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) =>
        {
            Ok(())
        }
        Some((alg, _)) if alg != "sha256" => Err(ReferenceError(format!(
            "digest algorithm {alg:?} is not supported (only sha256)"
        ))),
        _ => Err(ReferenceError(format!(
            "{digest:?} is not a valid digest (sha256:<64 lowercase hex digits>)"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(s: &str) -> String {
        match Reference::parse(s) {
            Ok(r) => r.to_string(),
            Err(e) => format!("error: {e}"),
        }
    }

    const HEX: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn short_names_get_the_default_registry_library_and_latest() {
        assert_eq!(norm("hello"), "docker.io/library/hello:latest");
        assert_eq!(norm("hello:v1"), "docker.io/library/hello:v1");
        assert_eq!(norm("team/hello"), "docker.io/team/hello:latest");
        assert_eq!(
            norm("index.docker.io/hello"),
            "docker.io/library/hello:latest"
        );
    }

    #[test]
    fn a_first_component_with_a_dot_port_or_localhost_is_a_registry() {
        assert_eq!(
            norm("wasmkube.local/samples/hello:v1"),
            "wasmkube.local/samples/hello:v1"
        );
        assert_eq!(norm("localhost:5000/hello"), "localhost:5000/hello:latest");
        assert_eq!(norm("localhost/hello"), "localhost/hello:latest");
    }

    #[test]
    fn a_digest_pins_the_reference_and_drops_the_tag() {
        let r = Reference::parse(&format!("hello:v1@sha256:{HEX}")).expect("valid");
        assert_eq!(r.tag, None);
        assert_eq!(
            r.to_string(),
            format!("docker.io/library/hello@sha256:{HEX}")
        );
        assert!(is_bare_digest(&format!("sha256:{HEX}")));
        assert!(!is_bare_digest("sha256:abc"));
    }

    #[test]
    fn invalid_references_are_rejected_with_a_reason() {
        assert!(norm("Hello").starts_with("error: repository name"));
        assert!(norm("hello:").starts_with("error:"));
        assert!(norm("hello@sha512:abcd").contains("not supported"));
        assert!(norm("hel--lo").starts_with("docker.io/"));
        assert!(norm("-hello").starts_with("error:"));
        assert!(norm("hello world").starts_with("error:"));
        assert!(norm("").starts_with("error:"));
        assert!(norm("a//b").starts_with("error:"));
        assert!(norm("hello:.tag").starts_with("error:"));
        assert!(norm("host:port/x").starts_with("error:"));
    }

    #[test]
    fn path_components_allow_docker_separators() {
        assert!(valid_path_component("a.b_c__d---e"));
        assert!(!valid_path_component("a___b"));
        assert!(!valid_path_component("a..b"));
        assert!(!valid_path_component("a_"));
    }
}
