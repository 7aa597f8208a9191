//! A size-rotated log file, as kube-apiserver's log backend writes it (the `lumberjack`
//! logger): when the next line would take the file past `--audit-log-maxsize` megabytes,
//! the file is renamed to `<name>-<UTC time>.<ext>` (`audit-2024-05-01T10-00-00.123.log`)
//! and a new one is started; then backups beyond `--audit-log-maxbackup` (newest kept) and
//! older than `--audit-log-maxage` days are removed. Zero means "no limit" for the backup
//! count and age, and 100 MB for the size, as there.
//!
//! Hand-written rather than taken from a rotation crate: the backup names and the combined
//! count-and-age retention are what kube-apiserver's users (and their log shippers) expect,
//! and the crates name backups differently or apply one limit only.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A megabyte as lumberjack counts it.
const MEGABYTE: u64 = 1024 * 1024;
/// The size used when `--audit-log-maxsize` is 0 (lumberjack's default).
const DEFAULT_MAX_MEGABYTES: u64 = 100;
/// The backup names' time stamp (lumberjack's `2006-01-02T15-04-05.000`).
const BACKUP_TIME_FORMAT: &str = "%Y-%m-%dT%H-%M-%S%.3f";

/// Where and how much to keep.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rotation {
    /// Rotate before the file grows past this many bytes.
    pub max_bytes: u64,
    /// Keep at most this many backups; 0: all.
    pub max_backups: usize,
    /// Remove backups older than this; `None`: keep them.
    pub max_age: Option<Duration>,
}

impl Rotation {
    /// The flags' values: megabytes, a count, days (0: the defaults above).
    pub fn from_flags(max_size_mb: u64, max_backups: usize, max_age_days: u64) -> Self {
        let megabytes = if max_size_mb == 0 {
            DEFAULT_MAX_MEGABYTES
        } else {
            max_size_mb
        };
        Rotation {
            max_bytes: megabytes.saturating_mul(MEGABYTE),
            max_backups,
            max_age: (max_age_days > 0).then(|| Duration::from_secs(max_age_days * 24 * 3600)),
        }
    }
}

/// The log file being written.
#[derive(Debug)]
pub struct RotatingFile {
    path: PathBuf,
    rotation: Rotation,
    file: Option<BufWriter<File>>,
    size: u64,
}

impl RotatingFile {
    /// Opens (appending to) or creates `path`, 0600, and its directory.
    pub fn open(path: &Path, rotation: Rotation) -> std::io::Result<Self> {
        let mut file = RotatingFile {
            path: path.to_path_buf(),
            rotation,
            file: None,
            size: 0,
        };
        file.ensure_open()?;
        Ok(file)
    }

    fn ensure_open(&mut self) -> std::io::Result<()> {
        if self.file.is_some() {
            return Ok(());
        }
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let file = create_options().append(true).open(&self.path)?;
        self.size = file.metadata()?.len();
        self.file = Some(BufWriter::with_capacity(64 * 1024, file));
        Ok(())
    }

    /// Writes one line (with its newline), rotating first if it would not fit. A line
    /// larger than the limit gets a file of its own rather than being lost.
    pub fn write_line(&mut self, line: &[u8]) -> std::io::Result<()> {
        self.ensure_open()?;
        let len = line.len() as u64;
        if self.size > 0 && self.size + len > self.rotation.max_bytes {
            self.rotate()?;
        }
        let file = self.file.as_mut().ok_or_else(not_open)?;
        if let Err(e) = file.write_all(line) {
            // Reopen on the next write (the file may have been removed, the disk freed).
            self.file = None;
            return Err(e);
        }
        self.size += len;
        Ok(())
    }

    /// Writes buffered lines to the file.
    pub fn flush(&mut self) -> std::io::Result<()> {
        match self.file.as_mut() {
            Some(file) => file.flush().inspect_err(|_| self.file = None),
            None => Ok(()),
        }
    }

    fn rotate(&mut self) -> std::io::Result<()> {
        if let Some(mut file) = self.file.take() {
            file.flush()?;
        }
        let mut at = jiff::Timestamp::now();
        let mut backup = self.backup_name(at);
        while backup.exists() {
            at = at
                .checked_add(jiff::SignedDuration::from_millis(1))
                .map_err(std::io::Error::other)?;
            backup = self.backup_name(at);
        }
        std::fs::rename(&self.path, &backup)?;
        let file = create_options()
            .truncate(true)
            .write(true)
            .open(&self.path)?;
        self.file = Some(BufWriter::with_capacity(64 * 1024, file));
        self.size = 0;
        if let Err(e) = self.remove_old_backups(jiff::Timestamp::now()) {
            tracing::warn!(error = %e, path = %self.path.display(), "removing old audit log backups failed");
        }
        Ok(())
    }

    fn name_parts(&self) -> (String, String) {
        let file_name = self
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        match file_name.rfind('.') {
            Some(dot) if dot > 0 => (file_name[..dot].to_string(), file_name[dot..].to_string()),
            _ => (file_name, String::new()),
        }
    }

    fn backup_name(&self, at: jiff::Timestamp) -> PathBuf {
        let (stem, ext) = self.name_parts();
        let stamp = at.strftime(BACKUP_TIME_FORMAT);
        self.path.with_file_name(format!("{stem}-{stamp}{ext}"))
    }

    /// The backups next to the log, newest first.
    pub fn backups(&self) -> std::io::Result<Vec<(jiff::Timestamp, PathBuf)>> {
        let (stem, ext) = self.name_parts();
        let prefix = format!("{stem}-");
        let dir = match self.path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let mut found = Vec::new();
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(stamp) = name
                .strip_prefix(&prefix)
                .and_then(|rest| rest.strip_suffix(ext.as_str()))
            else {
                continue;
            };
            let Ok(at) = jiff::fmt::strtime::parse(BACKUP_TIME_FORMAT, stamp)
                .and_then(|t| t.to_datetime())
                .and_then(|dt| dt.to_zoned(jiff::tz::TimeZone::UTC))
            else {
                continue;
            };
            found.push((at.timestamp(), entry.path()));
        }
        found.sort_by_key(|b| std::cmp::Reverse(b.0));
        Ok(found)
    }

    fn remove_old_backups(&self, now: jiff::Timestamp) -> std::io::Result<()> {
        let cutoff = self
            .rotation
            .max_age
            .and_then(|age| jiff::SignedDuration::try_from(age).ok())
            .and_then(|age| now.checked_sub(age).ok());
        for (i, (at, path)) in self.backups()?.into_iter().enumerate() {
            let too_many = self.rotation.max_backups > 0 && i >= self.rotation.max_backups;
            let too_old = cutoff.is_some_and(|cutoff| at < cutoff);
            if too_many || too_old {
                std::fs::remove_file(&path)?;
            }
        }
        Ok(())
    }
}

fn create_options() -> OpenOptions {
    use std::os::unix::fs::OpenOptionsExt;
    let mut options = OpenOptions::new();
    options.create(true).mode(0o600);
    options
}

fn not_open() -> std::io::Error {
    std::io::Error::other("the audit log is not open")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rotation(max_bytes: u64, max_backups: usize) -> Rotation {
        Rotation {
            max_bytes,
            max_backups,
            max_age: None,
        }
    }

    #[test]
    fn flags_map_to_lumberjack_limits() {
        let r = Rotation::from_flags(0, 0, 0);
        assert_eq!(r.max_bytes, 100 * MEGABYTE);
        assert_eq!(r.max_age, None);
        let r = Rotation::from_flags(2, 3, 1);
        assert_eq!(r.max_bytes, 2 * MEGABYTE);
        assert_eq!(r.max_backups, 3);
        assert_eq!(r.max_age, Some(Duration::from_secs(86_400)));
    }

    #[test]
    fn a_full_file_is_renamed_with_a_time_stamp_and_only_the_newest_backups_are_kept() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("logs/audit.log");
        let mut log = RotatingFile::open(&path, rotation(30, 2)).expect("opens");
        for i in 0..8 {
            log.write_line(format!("line {i:03} xxxxx\n").as_bytes())
                .expect("writes");
        }
        log.flush().expect("flushes");
        let backups = log.backups().expect("lists");
        assert_eq!(backups.len(), 2, "{backups:?}");
        for (_, backup) in &backups {
            let name = backup
                .file_name()
                .expect("name")
                .to_string_lossy()
                .into_owned();
            assert!(
                name.starts_with("audit-") && name.ends_with(".log"),
                "{name}"
            );
            assert_eq!(
                std::fs::metadata(backup).expect("meta").len(),
                30,
                "two 15-byte lines per file"
            );
        }
        assert_eq!(
            std::fs::read_to_string(&path).expect("reads"),
            "line 006 xxxxx\nline 007 xxxxx\n"
        );
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&path).expect("meta").permissions().mode() & 0o777,
            0o600
        );
    }

    #[test]
    fn an_existing_log_is_appended_to_and_counted() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("audit");
        std::fs::write(&path, "0123456789\n").expect("writes");
        let mut log = RotatingFile::open(&path, rotation(20, 0)).expect("opens");
        log.write_line(b"abcdefghij\n").expect("writes");
        log.flush().expect("flushes");
        let backups = log.backups().expect("lists");
        assert_eq!(backups.len(), 1, "the second line did not fit: {backups:?}");
        assert_eq!(
            std::fs::read_to_string(&backups[0].1).expect("reads"),
            "0123456789\n"
        );
        assert_eq!(
            std::fs::read_to_string(&path).expect("reads"),
            "abcdefghij\n"
        );
    }

    #[test]
    fn backups_older_than_max_age_are_removed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("audit.log");
        let old = dir.path().join("audit-2001-01-01T00-00-00.000.log");
        let unrelated = dir.path().join("audit-notatime.log");
        std::fs::write(&old, "old\n").expect("writes");
        std::fs::write(&unrelated, "keep\n").expect("writes");
        let mut log = RotatingFile::open(
            &path,
            Rotation {
                max_bytes: 4,
                max_backups: 0,
                max_age: Some(Duration::from_secs(86_400)),
            },
        )
        .expect("opens");
        log.write_line(b"one\n").expect("writes");
        log.write_line(b"two\n").expect("writes");
        assert!(!old.exists(), "a backup from 2001 is older than a day");
        assert!(unrelated.exists(), "files that are not backups stay");
        assert_eq!(log.backups().expect("lists").len(), 1);
    }
}
