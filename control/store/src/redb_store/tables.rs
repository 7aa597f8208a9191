//! The redb tables of the store, defined in one place, and the bootstrap that
//! creates them and reads the persisted counters back on open.
//!
//! - [`KV`]: the current state, `key -> (create_revision, mod_revision, value)`.
//! - [`EVENTS`]: the revision log, `revision -> (key, kind, value, prev value)`, one entry
//!   per successful write, contiguous from `compacted_revision + 1` to `current_revision`
//!   (entries at or below the compacted revision may linger until the writer purges them).
//! - [`META`]: the counters, `name -> i64`.
//!
//! Record layouts are in [`super::codec`].

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use super::{backend, codec};
use crate::{Result, Revision, StoreError};

/// Current state: key -> encoded `(create_revision, mod_revision, value)`.
pub(crate) const KV: TableDefinition<&str, &[u8]> = TableDefinition::new("kv");
/// Revision log: revision -> encoded event.
pub(crate) const EVENTS: TableDefinition<i64, &[u8]> = TableDefinition::new("events");
/// Counters: name -> value.
pub(crate) const META: TableDefinition<&str, i64> = TableDefinition::new("meta");

/// `META` key: the revision of the last committed write.
pub(crate) const META_CURRENT_REVISION: &str = "current_revision";
/// `META` key: every event at or below this revision is discarded.
pub(crate) const META_COMPACTED_REVISION: &str = "compacted_revision";
/// `META` key: the on-disk format version.
pub(crate) const META_FORMAT_VERSION: &str = "format_version";
/// The format this code writes and reads.
pub(crate) const FORMAT_VERSION: i64 = 1;

/// What the writer and the readers need to know about a freshly opened database.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Bootstrap {
    /// The last committed revision.
    pub(crate) current: Revision,
    /// The compacted revision.
    pub(crate) compacted: Revision,
    /// The oldest event still physically present, if any.
    pub(crate) first_event: Option<Revision>,
    /// The commit time of the newest event (0 if none).
    pub(crate) last_timestamp_ms: u64,
}

/// Creates the tables if missing, checks the format and reads the counters.
pub(crate) fn bootstrap(db: &Database) -> Result<Bootstrap> {
    let txn = db.begin_write().map_err(backend)?;
    {
        txn.open_table(KV).map_err(backend)?;
        txn.open_table(EVENTS).map_err(backend)?;
        let mut meta = txn.open_table(META).map_err(backend)?;
        let version = meta
            .get(META_FORMAT_VERSION)
            .map_err(backend)?
            .map(|v| v.value());
        match version {
            None => {
                meta.insert(META_FORMAT_VERSION, FORMAT_VERSION)
                    .map_err(backend)?;
            }
            Some(FORMAT_VERSION) => {}
            Some(other) => {
                return Err(StoreError::Backend(
                    format!("unsupported store format version {other} (expected {FORMAT_VERSION})")
                        .into(),
                ));
            }
        }
    }
    txn.commit().map_err(backend)?;

    let txn = db.begin_read().map_err(backend)?;
    let meta = txn.open_table(META).map_err(backend)?;
    let counters = read_counters(&meta)?;
    let events = txn.open_table(EVENTS).map_err(backend)?;
    let first_event = events.first().map_err(backend)?.map(|(k, _)| k.value());
    let last_timestamp_ms = match events.last().map_err(backend)? {
        Some((_, v)) => codec::event_timestamp_ms(v.value()).map_err(backend)?,
        None => 0,
    };
    Ok(Bootstrap {
        current: counters.current,
        compacted: counters.compacted,
        first_event,
        last_timestamp_ms,
    })
}

/// The two revision counters as of one transaction.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Counters {
    pub(crate) current: Revision,
    pub(crate) compacted: Revision,
}

/// Reads the counters from an open `META` table (missing means 0).
pub(crate) fn read_counters(meta: &impl ReadableTable<&'static str, i64>) -> Result<Counters> {
    let get = |name: &str| -> Result<Revision> {
        Ok(meta.get(name).map_err(backend)?.map_or(0, |v| v.value()))
    };
    Ok(Counters {
        current: get(META_CURRENT_REVISION)?,
        compacted: get(META_COMPACTED_REVISION)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bootstrap_of_a_new_file_starts_at_revision_zero_with_no_history() {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::create(dir.path().join("db")).unwrap();
        let boot = bootstrap(&db).unwrap();
        assert_eq!(
            (boot.current, boot.compacted, boot.first_event),
            (0, 0, None)
        );
        // Bootstrapping again (a reopen) finds the same, initialised tables.
        assert_eq!(bootstrap(&db).unwrap().current, 0);
    }

    #[test]
    fn a_database_of_another_format_version_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::create(dir.path().join("db")).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(META)
            .unwrap()
            .insert(META_FORMAT_VERSION, FORMAT_VERSION + 1)
            .unwrap();
        txn.commit().unwrap();
        let err = bootstrap(&db).unwrap_err();
        assert!(
            err.to_string().contains("unsupported store format version"),
            "{err}"
        );
    }
}
