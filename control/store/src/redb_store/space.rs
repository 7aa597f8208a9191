//! Disk space and the store's health: writes refused while the filesystem is nearly full,
//! and the recovery from a write that failed on a full disk.
//!
//! Before a batch with creates or updates the writer asks the filesystem for its free
//! space (`statvfs`, one system call); below [`StoreConfig::min_free_bytes`] those writes
//! fail at once with [`StoreError::NoSpace`], while reads, deletes and compaction go on, as
//! etcd's NOSPACE alarm. So the store file normally never meets a full disk. When it still
//! does (another process filled the disk during a commit), redb refuses every later
//! operation on that handle (`PreviousIo`) until the file is reopened: the writer then
//! takes the database out of service (reads answer [`StoreError::Unavailable`]), reopens it
//! (redb repairs it), and reloads its counters from what is durable.
//!
//! While the store is unhealthy the writer looks again every second, with or without
//! writes to serve; once the file is open and the space is back, writes resume: nothing
//! needs a restart.
//!
//! [`StoreConfig::min_free_bytes`]: super::StoreConfig::min_free_bytes

use std::path::{Path, PathBuf};

use crate::{Result, StoreError};

/// Why the store cannot take writes now.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) enum Health {
    /// Writes are accepted.
    #[default]
    Ok,
    /// Too little free space: creates and updates are refused.
    NoSpace { available: u64, required: u64 },
    /// The file failed and is not open: every operation is refused until it is reopened.
    Failed(String),
}

impl Health {
    /// The error a request gets in this state (`Ok` when healthy).
    pub(super) fn check(&self, path: &Path) -> Result<()> {
        match self {
            Health::Ok => Ok(()),
            Health::NoSpace {
                available,
                required,
            } => Err(StoreError::NoSpace {
                path: path.to_owned(),
                available: *available,
                required: *required,
            }),
            Health::Failed(why) => Err(StoreError::Unavailable(why.clone())),
        }
    }
}

/// The free space (for unprivileged users) of the filesystem holding `path`.
pub(super) fn available_bytes(path: &Path) -> std::io::Result<u64> {
    let dir = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    let stat = rustix::fs::statvfs(dir)?;
    Ok(stat.f_bavail.saturating_mul(stat.f_frsize))
}

/// What the writer knows about the space of the store's filesystem.
#[derive(Debug)]
pub(super) struct Space {
    pub(super) path: PathBuf,
    pub(super) min_free_bytes: u64,
    /// redb's page cache, for reopening the file.
    pub(super) cache_bytes: usize,
}

impl Space {
    /// `Ok` when the filesystem has at least `min_free_bytes` free, else the `NoSpace`
    /// state. A failing `statvfs` is not a reason to refuse writes.
    pub(super) fn check(&self) -> Health {
        if self.min_free_bytes == 0 {
            return Health::Ok;
        }
        match available_bytes(&self.path) {
            Ok(available) if available < self.min_free_bytes => Health::NoSpace {
                available,
                required: self.min_free_bytes,
            },
            Ok(_) => Health::Ok,
            Err(error) => {
                tracing::debug!(%error, "cannot read the store filesystem's free space");
                Health::Ok
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reserve_larger_than_the_disk_refuses_writes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("store.redb");
        let space = Space {
            path: path.clone(),
            min_free_bytes: u64::MAX,
            cache_bytes: 1 << 20,
        };
        let health = space.check();
        assert!(
            matches!(health, Health::NoSpace { required, .. } if required == u64::MAX),
            "{health:?}"
        );
        let error = health.check(&path).expect_err("refused");
        assert!(
            error.to_string().contains("no space left for the store"),
            "{error}"
        );
        let relaxed = Space {
            path,
            min_free_bytes: 1,
            cache_bytes: 1 << 20,
        };
        assert_eq!(relaxed.check(), Health::Ok);
    }
}
