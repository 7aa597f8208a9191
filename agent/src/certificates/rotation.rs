//! Renewing a certificate before it expires, as the kubelet's certificate manager: the
//! deadline is a random point between 70% and 84% of the certificate's lifetime (70% plus
//! up to a fifth more, `wait.Jitter(0.7 * lifetime, 0.2)`), so a fleet of nodes whose
//! certificates were issued together does not renew at once. A failed renewal is retried
//! with back-off (2 s doubling to 5 minutes); the old certificate stays in use meanwhile.

use std::future::Future;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use super::request::{CertificateRequest, request_certificate};
use super::{CertificateSlot, Credentials, store};

/// The first retry after a failed renewal.
const RETRY_MIN: Duration = Duration::from_secs(2);
/// The longest pause between renewal attempts.
const RETRY_MAX: Duration = Duration::from_secs(300);
/// How long one renewal waits for its request to be signed before asking again.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(900);

/// When to renew `credentials`, with `jitter` in `[0, 1)`.
pub fn rotation_deadline(credentials: &Credentials, jitter: f64) -> SystemTime {
    let lifetime = credentials
        .not_after
        .duration_since(credentials.not_before)
        .unwrap_or_default();
    let fraction = 0.7 * (1.0 + 0.2 * jitter.clamp(0.0, 1.0));
    credentials.not_before + lifetime.mul_f64(fraction)
}

/// What one rotation loop keeps current.
#[derive(Clone, Debug)]
pub struct Rotation {
    /// Where the certificate in use lives.
    pub slot: std::sync::Arc<CertificateSlot>,
    /// What to ask for.
    pub request: CertificateRequest,
    /// The pki directory the certificate is stored in...
    pub dir: PathBuf,
    /// ...under this file name.
    pub file: &'static str,
}

/// Renews the slot's certificate before each expiry, until `stopped` resolves. An empty
/// slot is filled at once.
pub async fn run<F, Fut>(client: kube::Client, rotation: Rotation, stopped: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = ()>,
{
    let mut retry = RETRY_MIN;
    loop {
        let deadline = rotation
            .slot
            .get()
            .map(|c| rotation_deadline(&c, rand::random::<f64>()));
        let wait = deadline
            .and_then(|d| d.duration_since(SystemTime::now()).ok())
            .unwrap_or_default();
        if !wait.is_zero() {
            tracing::info!(
                signer = rotation.request.signer,
                renew_in_secs = wait.as_secs(),
                "certificate rotation scheduled"
            );
        }
        tokio::select! {
            () = stopped() => return,
            () = tokio::time::sleep(wait) => {}
        }
        let give_up = async {
            tokio::select! {
                () = stopped() => {}
                () = tokio::time::sleep(REQUEST_TIMEOUT) => {}
            }
        };
        match request_certificate(&client, &rotation.request, give_up).await {
            Ok(credentials) => {
                if let Err(e) = store(&rotation.dir, rotation.file, &credentials) {
                    tracing::warn!(error = %e, "storing the renewed certificate failed; using it anyway");
                }
                tracing::info!(
                    signer = rotation.request.signer,
                    subject = %credentials.common_name,
                    "rotated the certificate"
                );
                rotation.slot.set(credentials);
                retry = RETRY_MIN;
            }
            Err(e) => {
                tracing::warn!(error = %e, retry_in_secs = retry.as_secs(), "renewing the certificate failed");
                tokio::select! {
                    () = stopped() => return,
                    () = tokio::time::sleep(retry) => {}
                }
                retry = (retry * 2).min(RETRY_MAX);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn credentials(lifetime: Duration) -> Credentials {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::default();
        let start = time::OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap();
        params.not_before = start;
        params.not_after = start + time::Duration::try_from(lifetime).unwrap();
        let cert = params.self_signed(&key).unwrap();
        Credentials::from_pem(&cert.pem(), &key.serialize_pem()).unwrap()
    }

    #[test]
    fn renewal_falls_between_seventy_and_eighty_four_percent_of_the_lifetime() {
        let c = credentials(Duration::from_secs(1000));
        let at = |jitter| {
            rotation_deadline(&c, jitter)
                .duration_since(c.not_before)
                .unwrap()
                .as_secs_f64()
        };
        assert!((at(0.0) - 700.0).abs() < 0.01);
        assert!((at(1.0) - 840.0).abs() < 0.01);
        assert!((700.0..=840.0).contains(&at(0.5)));
    }
}
