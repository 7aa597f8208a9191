//! Asking the cluster for a certificate: a new key, a CertificateSigningRequest for it, and
//! the wait (a watch of that one request) until it is issued, denied or failed.

use std::net::IpAddr;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::ByteString;
use k8s_openapi::api::certificates::v1::{
    CertificateSigningRequest, CertificateSigningRequestSpec,
};
use kube::api::{ObjectMeta, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};

use super::{CertificateError, Credentials};

/// The signer of node client certificates.
pub const SIGNER_KUBELET_CLIENT: &str = "kubernetes.io/kube-apiserver-client-kubelet";
/// The signer of node serving certificates.
pub const SIGNER_KUBELET_SERVING: &str = "kubernetes.io/kubelet-serving";
/// The signer of client certificates for other users (here: the node's kube-proxy).
pub const SIGNER_KUBE_APISERVER_CLIENT: &str = "kubernetes.io/kube-apiserver-client";
/// The user a node's kube-proxy acts as.
pub const KUBE_PROXY_USER: &str = "system:kube-proxy";
/// How often the wait for approval is logged.
const WAITING_NOTICE: Duration = Duration::from_secs(30);

/// What certificate to ask for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertificateRequest {
    /// The signer, e.g. [`SIGNER_KUBELET_CLIENT`].
    pub signer: &'static str,
    /// The subject's common name (`system:node:<name>`).
    pub common_name: String,
    /// The subject's organizations (`system:nodes`).
    pub organizations: Vec<String>,
    /// DNS subject alternative names.
    pub dns_names: Vec<String>,
    /// IP subject alternative names.
    pub ips: Vec<IpAddr>,
    /// `spec.usages`.
    pub usages: Vec<String>,
    /// The prefix of the request's generated name (`node-csr-` when joining, `csr-` after).
    pub name_prefix: &'static str,
}

impl CertificateRequest {
    /// The node client certificate of `node`.
    pub fn node_client(node: &str) -> Self {
        CertificateRequest {
            signer: SIGNER_KUBELET_CLIENT,
            common_name: format!("system:node:{node}"),
            organizations: vec!["system:nodes".to_string()],
            dns_names: Vec::new(),
            ips: Vec::new(),
            usages: vec!["digital signature".into(), "client auth".into()],
            name_prefix: "csr-",
        }
    }

    /// The serving certificate of `node` for its names and addresses.
    pub fn node_serving(node: &str, dns_names: Vec<String>, ips: Vec<IpAddr>) -> Self {
        CertificateRequest {
            signer: SIGNER_KUBELET_SERVING,
            common_name: format!("system:node:{node}"),
            organizations: vec!["system:nodes".to_string()],
            dns_names,
            ips,
            usages: vec!["digital signature".into(), "server auth".into()],
            name_prefix: "csr-",
        }
    }

    /// The `system:kube-proxy` client certificate a node asks for (with its own credentials)
    /// for its kube-proxy and the routed pod network's Node watch; the server approves it
    /// for nodes (`certificatesigningrequests/nodeproxyclient`).
    pub fn kube_proxy() -> Self {
        CertificateRequest {
            signer: SIGNER_KUBE_APISERVER_CLIENT,
            common_name: KUBE_PROXY_USER.to_string(),
            organizations: Vec::new(),
            dns_names: Vec::new(),
            ips: Vec::new(),
            usages: vec!["digital signature".into(), "client auth".into()],
            name_prefix: "csr-",
        }
    }

    /// The same request under another name prefix.
    pub fn named(mut self, prefix: &'static str) -> Self {
        self.name_prefix = prefix;
        self
    }

    /// A new key and the PEM CSR for it.
    fn key_and_csr(&self) -> Result<(rcgen::KeyPair, String), CertificateError> {
        let invalid = |e: rcgen::Error| CertificateError::Invalid(e.to_string());
        let key = rcgen::KeyPair::generate().map_err(invalid)?;
        let mut params = rcgen::CertificateParams::new(self.dns_names.clone()).map_err(invalid)?;
        params
            .subject_alt_names
            .extend(self.ips.iter().map(|ip| rcgen::SanType::IpAddress(*ip)));
        let mut dn = rcgen::DistinguishedName::new();
        for org in &self.organizations {
            dn.push(rcgen::DnType::OrganizationName, org.as_str());
        }
        dn.push(rcgen::DnType::CommonName, self.common_name.as_str());
        params.distinguished_name = dn;
        let csr = params.serialize_request(&key).map_err(invalid)?;
        let pem = csr.pem().map_err(invalid)?;
        Ok((key, pem))
    }
}

/// Sends `request` as `client` and waits until the certificate is issued (or the request
/// is denied or failed, or `stopped` resolves).
pub async fn request_certificate(
    client: &Client,
    request: &CertificateRequest,
    stopped: impl std::future::Future<Output = ()>,
) -> Result<Credentials, CertificateError> {
    let (key, csr_pem) = request.key_and_csr()?;
    let api: Api<CertificateSigningRequest> = Api::all(client.clone());
    let object = CertificateSigningRequest {
        metadata: ObjectMeta {
            generate_name: Some(request.name_prefix.to_string()),
            ..ObjectMeta::default()
        },
        spec: CertificateSigningRequestSpec {
            request: ByteString(csr_pem.into_bytes()),
            signer_name: request.signer.to_string(),
            usages: Some(request.usages.clone()),
            ..CertificateSigningRequestSpec::default()
        },
        status: None,
    };
    let created = api
        .create(&PostParams::default(), &object)
        .await
        .map_err(|source| CertificateError::Api {
            what: "creating a certificate signing request".into(),
            source,
        })?;
    let name = created.metadata.name.clone().unwrap_or_default();
    tracing::info!(csr = %name, signer = request.signer, "asked for a certificate");
    let cert_pem = wait_for_certificate(&api, &name, stopped).await?;
    Credentials::from_pem(&cert_pem, &key.serialize_pem())
}

/// The issued certificate of a CSR (PEM), if its status says how it ended.
fn outcome(csr: &CertificateSigningRequest) -> Option<Result<String, CertificateError>> {
    let name = csr.metadata.name.clone().unwrap_or_default();
    let status = csr.status.as_ref()?;
    for c in status.conditions.iter().flatten() {
        let outcome = match c.type_.as_str() {
            "Denied" => "denied",
            "Failed" => "failed",
            _ => continue,
        };
        return Some(Err(CertificateError::NotIssued {
            name,
            outcome,
            reason: format!(
                "{}: {}",
                c.reason.as_deref().unwrap_or(""),
                c.message.as_deref().unwrap_or("")
            ),
        }));
    }
    let cert = status.certificate.as_ref().filter(|c| !c.0.is_empty())?;
    Some(
        String::from_utf8(cert.0.clone()).map_err(|_| {
            CertificateError::Invalid(format!("the certificate of {name} is not PEM"))
        }),
    )
}

async fn wait_for_certificate(
    api: &Api<CertificateSigningRequest>,
    name: &str,
    stopped: impl std::future::Future<Output = ()>,
) -> Result<String, CertificateError> {
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let mut stream = std::pin::pin!(
        watcher::watcher(api.clone(), config)
            .default_backoff()
            .applied_objects()
    );
    tokio::pin!(stopped);
    let mut notice = tokio::time::interval(WAITING_NOTICE);
    notice.tick().await;
    loop {
        tokio::select! {
            () = &mut stopped => return Err(CertificateError::Stopped(name.to_string())),
            _ = notice.tick() => {
                tracing::warn!(csr = %name, "still waiting for the certificate signing request to be approved and signed (an administrator can approve it with `kubectl certificate approve {name}`)");
            }
            event = stream.next() => match event {
                Some(Ok(csr)) => {
                    if let Some(outcome) = outcome(&csr) {
                        return outcome;
                    }
                }
                Some(Err(e)) => tracing::debug!(csr = %name, error = %e, "watching the certificate signing request failed; retrying"),
                None => return Err(CertificateError::Stopped(name.to_string())),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::certificates::v1::{
        CertificateSigningRequestCondition, CertificateSigningRequestStatus,
    };

    #[test]
    fn a_node_client_request_has_the_node_subject_and_no_names() {
        let request = CertificateRequest::node_client("n1");
        let (_, pem) = request.key_and_csr().unwrap();
        let (_, block) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).unwrap();
        assert_eq!(block.label, "CERTIFICATE REQUEST");
        assert_eq!(request.common_name, "system:node:n1");
        assert_eq!(request.signer, SIGNER_KUBELET_CLIENT);
    }

    #[test]
    fn a_denied_request_ends_the_wait_with_its_reason() {
        let csr = CertificateSigningRequest {
            metadata: ObjectMeta {
                name: Some("csr-1".into()),
                ..ObjectMeta::default()
            },
            status: Some(CertificateSigningRequestStatus {
                conditions: Some(vec![CertificateSigningRequestCondition {
                    type_: "Denied".into(),
                    status: "True".into(),
                    reason: Some("KubectlDeny".into()),
                    message: Some("no".into()),
                    ..Default::default()
                }]),
                certificate: None,
            }),
            ..Default::default()
        };
        let err = outcome(&csr).unwrap().unwrap_err();
        assert_eq!(
            err.to_string(),
            "certificate signing request csr-1 was denied: KubectlDeny: no"
        );
        let pending = CertificateSigningRequest::default();
        assert!(outcome(&pending).is_none());
    }
}
