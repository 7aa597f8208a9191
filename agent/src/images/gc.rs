//! Image garbage collection, as the kubelet's image GC manager does it: when the image
//! store's filesystem is more than `high_threshold_percent` used, delete images no pod on
//! the node uses, least recently used first, until usage is under `low_threshold_percent`.
//! An image is "used" by every pod the node has, whatever its phase ([`super::in_use`]);
//! images younger (first seen) than `minimum_age` stay. Removing an image removes its names,
//! its blobs that no other image shares and its compiled code ([`super::remove`]).
//!
//! The agent runs [`ImageStore::collect_garbage`] every `period` ([`run`]); a pass that
//! cannot free enough records the kubelet's `FreeDiskSpaceFailed` Warning on the Node.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use super::{ImageError, ImageStore};

/// When images are collected (the kubelet's `--image-gc-high-threshold`,
/// `--image-gc-low-threshold`, `--minimum-image-gc-age`, and its 5-minute period).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageGcPolicy {
    /// Disk usage (percent) at or above which images are collected; 100 disables it.
    pub high_threshold_percent: u8,
    /// Disk usage (percent) a collection frees down to.
    pub low_threshold_percent: u8,
    /// Images first seen less than this long ago are kept.
    pub minimum_age: Duration,
    /// How often usage is checked.
    pub period: Duration,
}

impl Default for ImageGcPolicy {
    fn default() -> Self {
        ImageGcPolicy {
            high_threshold_percent: 85,
            low_threshold_percent: 80,
            minimum_age: Duration::from_secs(120),
            period: Duration::from_secs(300),
        }
    }
}

/// A policy that cannot work, in the words of the flags.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImageGcPolicyError {
    /// A threshold is over 100.
    #[error("--{flag} is {value}: it must be a percentage between 0 and 100")]
    OutOfRange {
        /// The flag.
        flag: &'static str,
        /// Its value.
        value: u8,
    },
    /// low >= high.
    #[error(
        "--image-gc-low-threshold ({low}) must be less than --image-gc-high-threshold ({high})"
    )]
    LowNotBelowHigh {
        /// The low threshold.
        low: u8,
        /// The high threshold.
        high: u8,
    },
    /// A zero period.
    #[error("the image GC period must be more than zero")]
    ZeroPeriod,
}

impl ImageGcPolicy {
    /// Checks the policy as the kubelet validates its configuration.
    pub fn validate(&self) -> Result<(), ImageGcPolicyError> {
        for (flag, value) in [
            ("image-gc-high-threshold", self.high_threshold_percent),
            ("image-gc-low-threshold", self.low_threshold_percent),
        ] {
            if value > 100 {
                return Err(ImageGcPolicyError::OutOfRange { flag, value });
            }
        }
        if self.low_threshold_percent >= self.high_threshold_percent {
            return Err(ImageGcPolicyError::LowNotBelowHigh {
                low: self.low_threshold_percent,
                high: self.high_threshold_percent,
            });
        }
        if self.period.is_zero() {
            return Err(ImageGcPolicyError::ZeroPeriod);
        }
        Ok(())
    }
}

/// When an image was first seen and last used, for the least-recently-used order.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Seen {
    first_detected: Instant,
    last_used: Option<Instant>,
}

/// What one pass did.
#[derive(Debug, Clone, Default)]
pub struct GcOutcome {
    /// Disk usage (percent) before the pass.
    pub usage_percent: u8,
    /// Bytes it had to free to reach the low threshold (0: under the high one).
    pub needed: u64,
    /// Bytes freed.
    pub freed: u64,
    /// The images removed: digest, names, bytes.
    pub removed: Vec<(String, Vec<String>, u64)>,
    /// Whether the pass was skipped (a pull was under way).
    pub skipped: bool,
}

impl GcOutcome {
    /// Whether the pass could not free what it needed.
    pub fn fell_short(&self) -> bool {
        self.freed < self.needed
    }
}

/// (capacity, available) bytes of the filesystem holding `dir`.
fn filesystem(dir: &Path) -> Result<(u64, u64), ImageError> {
    let s = rustix::fs::statvfs(dir).map_err(|e| ImageError::Io {
        action: "measure the filesystem of",
        path: dir.to_path_buf(),
        source: e.into(),
    })?;
    let block = if s.f_frsize > 0 {
        s.f_frsize
    } else {
        s.f_bsize
    };
    Ok((
        s.f_blocks.saturating_mul(block),
        s.f_bavail.saturating_mul(block),
    ))
}

impl ImageStore {
    /// Notes that the image with top-level digest `digest` was just used by a container.
    pub(crate) fn touch(&self, digest: &str) {
        let now = Instant::now();
        let mut seen = self.seen_lock();
        let entry = seen.entry(digest.to_string()).or_insert(Seen {
            first_detected: now,
            last_used: None,
        });
        entry.last_used = Some(now);
    }

    fn seen_lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Seen>> {
        self.seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// One garbage collection pass (blocking file I/O): frees down to the low threshold when
    /// usage is at or above the high one, removing the least recently used images no pod
    /// uses. The images pods use are [`ImageStore::images_in_use`].
    pub fn collect_garbage(&self, policy: &ImageGcPolicy) -> Result<GcOutcome, ImageError> {
        let now = Instant::now();
        let in_use = self.images_in_use();
        let images = self.images()?;
        // Every image is detected, and those pods use are used now.
        let mut candidates = Vec::new();
        {
            let mut seen = self.seen_lock();
            seen.retain(|digest, _| images.iter().any(|(d, _)| d == digest));
            for (digest, names) in &images {
                let entry = seen.entry(digest.clone()).or_insert(Seen {
                    first_detected: now,
                    last_used: None,
                });
                let used = in_use
                    .iter()
                    .any(|r| super::remove::uses(r, names, digest, false));
                if used {
                    entry.last_used = Some(now);
                } else if now.duration_since(entry.first_detected) >= policy.minimum_age {
                    candidates.push((entry.last_used, entry.first_detected, digest.clone()));
                }
            }
        }
        let (capacity, available) = filesystem(&self.root)?;
        if capacity == 0 {
            return Ok(GcOutcome::default());
        }
        let usage = 100 - (available.saturating_mul(100) / capacity).min(100);
        let mut outcome = GcOutcome {
            usage_percent: u8::try_from(usage).unwrap_or(100),
            ..GcOutcome::default()
        };
        if policy.high_threshold_percent >= 100 || usage < u64::from(policy.high_threshold_percent)
        {
            return Ok(outcome);
        }
        let pulling = !self
            .pulls
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .is_empty();
        if pulling {
            // A pull may be counting on blobs an unused image shares; next period.
            outcome.skipped = true;
            return Ok(outcome);
        }
        outcome.needed = (capacity.saturating_mul(u64::from(100 - policy.low_threshold_percent))
            / 100)
            .saturating_sub(available);
        tracing::info!(
            usage = outcome.usage_percent,
            high_threshold = policy.high_threshold_percent,
            amount_to_free = outcome.needed,
            low_threshold = policy.low_threshold_percent,
            "disk usage on the image filesystem is over the high threshold, trying to free bytes \
             down to the low threshold"
        );
        // Least recently used first (never used before used), then first detected.
        candidates.sort();
        for (_, _, digest) in candidates {
            if outcome.freed >= outcome.needed {
                break;
            }
            // What pods use now: a pod bound since the pass began keeps its image.
            match self.remove_image(&digest, &self.images_in_use()) {
                Ok(removed) => {
                    tracing::info!(
                        image_id = %digest,
                        names = ?removed.names,
                        size = removed.bytes_freed,
                        "removing image to free bytes"
                    );
                    self.seen_lock().remove(&digest);
                    outcome.freed += removed.bytes_freed;
                    outcome
                        .removed
                        .push((digest, removed.names, removed.bytes_freed));
                }
                Err(e) => tracing::warn!(image_id = %digest, error = %e, "cannot remove an image"),
            }
        }
        Ok(outcome)
    }
}

/// Runs [`ImageStore::collect_garbage`] every `policy.period` until `stopped` resolves;
/// `fell_short` is told the message of each pass that could not free enough (the kubelet's
/// `FreeDiskSpaceFailed` event).
pub async fn run(
    store: ImageStore,
    policy: ImageGcPolicy,
    fell_short: impl Fn(String) + Send,
    stopped: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(stopped);
    let mut tick = tokio::time::interval(policy.period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = &mut stopped => return,
            _ = tick.tick() => {}
        }
        let pass = store.clone();
        match tokio::task::spawn_blocking(move || pass.collect_garbage(&policy)).await {
            Ok(Ok(outcome)) if outcome.fell_short() => fell_short(format!(
                "Failed to garbage collect required amount of images. Attempted to free {} \
                 bytes, but only found {} bytes eligible to free.",
                outcome.needed, outcome.freed
            )),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "image garbage collection failed"),
            Err(e) => tracing::warn!(error = %e, "image garbage collection stopped"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_policy_is_validated_as_the_kubelet_does() {
        assert_eq!(ImageGcPolicy::default().validate(), Ok(()));
        let with = |high, low| ImageGcPolicy {
            high_threshold_percent: high,
            low_threshold_percent: low,
            ..ImageGcPolicy::default()
        };
        assert_eq!(with(100, 0).validate(), Ok(()));
        let e = with(101, 80).validate().expect_err("101%");
        assert!(
            e.to_string().contains("--image-gc-high-threshold is 101"),
            "{e}"
        );
        let e = with(80, 80).validate().expect_err("low == high");
        assert!(
            e.to_string().contains(
                "--image-gc-low-threshold (80) must be less than --image-gc-high-threshold (80)"
            ),
            "{e}"
        );
    }
}
