//! Byte layout of the records stored in the redb tables.
//!
//! The layout is hand-rolled: fixed-width little-endian integers and `u32` length
//! prefixes around the opaque value bytes (the apiserver's JSON). Why not a serde
//! format: the records are three tiny fixed shapes, a serde format would either copy
//! values through an intermediate buffer or bloat them (serde_json writes bytes as a
//! number array), and the whole codec is a few dozen lines that need no dependency.
//! The decoder checks every length and reports [`CorruptRecord`] instead of panicking,
//! so a damaged file surfaces as a backend error, never as a crash.
//!
//! Layouts (all integers little-endian):
//! - `kv` value: `create_revision i64 | mod_revision i64 | value bytes (rest)`.
//! - `events` value: `tag u8 | timestamp_ms u64 | key_len u32 | key`, then
//!   - tag 1 (created): `create_revision i64 | value_len u32 | value`;
//!   - tag 2 (updated): as tag 1, then `prev_create i64 | prev_mod i64 | prev value (rest)`;
//!   - tag 3 (deleted): `prev_create i64 | prev_mod i64 | prev value (rest)`.
//!
//!   The event's own revision is the table key; the timestamp drives age-based compaction.

use bytes::Bytes;

use crate::{Event, KeyValue, Revision};

const TAG_CREATED: u8 = 1;
const TAG_UPDATED: u8 = 2;
const TAG_DELETED: u8 = 3;

/// A stored record could not be decoded: the file is damaged or was written by an
/// incompatible version.
#[derive(Debug, thiserror::Error)]
#[error("corrupt {table} record: {reason}")]
pub(crate) struct CorruptRecord {
    table: &'static str,
    reason: &'static str,
}

impl CorruptRecord {
    fn kv(reason: &'static str) -> Self {
        Self {
            table: "kv",
            reason,
        }
    }

    fn event(reason: &'static str) -> Self {
        Self {
            table: "events",
            reason,
        }
    }
}

/// Encodes the current state of one key (the key itself is the table key).
pub(crate) fn encode_kv(kv: &KeyValue) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + kv.value.len());
    out.extend_from_slice(&kv.create_revision.to_le_bytes());
    out.extend_from_slice(&kv.mod_revision.to_le_bytes());
    out.extend_from_slice(&kv.value);
    out
}

/// Decodes a `kv` record of `key`.
pub(crate) fn decode_kv(key: &str, bytes: &[u8]) -> Result<KeyValue, CorruptRecord> {
    let mut reader = Reader { bytes, table: "kv" };
    let create_revision = reader.i64()?;
    let mod_revision = reader.i64()?;
    if create_revision <= 0 || mod_revision < create_revision {
        return Err(CorruptRecord::kv("revisions out of order"));
    }
    Ok(KeyValue {
        key: key.to_owned(),
        value: Bytes::copy_from_slice(reader.rest()),
        create_revision,
        mod_revision,
    })
}

/// Encodes one event of the revision log (its revision is the table key).
pub(crate) fn encode_event(event: &Event, timestamp_ms: u64) -> Vec<u8> {
    let key = event.key().as_bytes();
    let mut out = Vec::with_capacity(64 + key.len() + approx_values_len(event));
    let tag = match event {
        Event::Put { prev: None, .. } => TAG_CREATED,
        Event::Put { prev: Some(_), .. } => TAG_UPDATED,
        Event::Delete { .. } => TAG_DELETED,
    };
    out.push(tag);
    out.extend_from_slice(&timestamp_ms.to_le_bytes());
    put_len_prefixed(&mut out, key);
    match event {
        Event::Put { kv, prev } => {
            out.extend_from_slice(&kv.create_revision.to_le_bytes());
            put_len_prefixed(&mut out, &kv.value);
            if let Some(prev) = prev {
                put_prev(&mut out, prev);
            }
        }
        Event::Delete { prev, .. } => put_prev(&mut out, prev),
    }
    out
}

/// Decodes the event stored under `revision`.
pub(crate) fn decode_event(revision: Revision, bytes: &[u8]) -> Result<Event, CorruptRecord> {
    let mut reader = Reader {
        bytes,
        table: "events",
    };
    let tag = reader.u8()?;
    let _timestamp = reader.u64()?;
    let key = reader.str()?.to_owned();
    match tag {
        TAG_CREATED | TAG_UPDATED => {
            let create_revision = reader.i64()?;
            let value = Bytes::copy_from_slice(reader.len_prefixed()?);
            let prev = if tag == TAG_UPDATED {
                Some(reader.prev(&key)?)
            } else if reader.rest().is_empty() {
                None
            } else {
                return Err(CorruptRecord::event("trailing bytes after a created event"));
            };
            let kv = KeyValue {
                key,
                value,
                create_revision,
                mod_revision: revision,
            };
            Ok(Event::Put { kv, prev })
        }
        TAG_DELETED => {
            let prev = reader.prev(&key)?;
            Ok(Event::Delete { revision, prev })
        }
        _ => Err(CorruptRecord::event("unknown event tag")),
    }
}

/// The key of an encoded event, without decoding its values (used to filter by prefix).
pub(crate) fn event_key(bytes: &[u8]) -> Result<&str, CorruptRecord> {
    let mut reader = Reader {
        bytes,
        table: "events",
    };
    reader.u8()?;
    reader.u64()?;
    reader.str()
}

/// The commit time (milliseconds since the Unix epoch) of an encoded event.
pub(crate) fn event_timestamp_ms(bytes: &[u8]) -> Result<u64, CorruptRecord> {
    let mut reader = Reader {
        bytes,
        table: "events",
    };
    reader.u8()?;
    reader.u64()
}

/// The bytes held by an event's values, for the in-memory ring's size bound.
pub(crate) fn approx_values_len(event: &Event) -> usize {
    match event {
        Event::Put { kv, prev } => kv.value.len() + prev.as_ref().map_or(0, |p| p.value.len()),
        Event::Delete { prev, .. } => prev.value.len(),
    }
}

fn put_len_prefixed(out: &mut Vec<u8>, bytes: &[u8]) {
    // Keys and values are bounded far below 4 GiB by the apiserver's request size limit;
    // saturating keeps the encoder total, and the decoder would then reject the record.
    let len = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(bytes);
}

fn put_prev(out: &mut Vec<u8>, prev: &KeyValue) {
    out.extend_from_slice(&prev.create_revision.to_le_bytes());
    out.extend_from_slice(&prev.mod_revision.to_le_bytes());
    out.extend_from_slice(&prev.value);
}

/// A bounds-checked cursor over a record.
struct Reader<'a> {
    bytes: &'a [u8],
    table: &'static str,
}

impl<'a> Reader<'a> {
    fn corrupt(&self, reason: &'static str) -> CorruptRecord {
        CorruptRecord {
            table: self.table,
            reason,
        }
    }

    fn take(&mut self, len: usize) -> Result<&'a [u8], CorruptRecord> {
        if self.bytes.len() < len {
            return Err(self.corrupt("truncated"));
        }
        let (head, tail) = self.bytes.split_at(len);
        self.bytes = tail;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], CorruptRecord> {
        let mut out = [0; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    fn u8(&mut self) -> Result<u8, CorruptRecord> {
        Ok(self.array::<1>()?[0])
    }

    fn u64(&mut self) -> Result<u64, CorruptRecord> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    fn i64(&mut self) -> Result<i64, CorruptRecord> {
        Ok(i64::from_le_bytes(self.array()?))
    }

    fn len_prefixed(&mut self) -> Result<&'a [u8], CorruptRecord> {
        let len = u32::from_le_bytes(self.array()?);
        let len = usize::try_from(len).map_err(|_| self.corrupt("length overflows"))?;
        self.take(len)
    }

    fn str(&mut self) -> Result<&'a str, CorruptRecord> {
        let bytes = self.len_prefixed()?;
        std::str::from_utf8(bytes).map_err(|_| self.corrupt("key is not UTF-8"))
    }

    fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.bytes)
    }

    fn prev(&mut self, key: &str) -> Result<KeyValue, CorruptRecord> {
        let create_revision = self.i64()?;
        let mod_revision = self.i64()?;
        Ok(KeyValue {
            key: key.to_owned(),
            value: Bytes::copy_from_slice(self.rest()),
            create_revision,
            mod_revision,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(key: &str, value: &str, create: Revision, modified: Revision) -> KeyValue {
        KeyValue {
            key: key.to_owned(),
            value: Bytes::copy_from_slice(value.as_bytes()),
            create_revision: create,
            mod_revision: modified,
        }
    }

    fn sample_events() -> Vec<Event> {
        vec![
            Event::Put {
                kv: kv("/a", "one", 7, 7),
                prev: None,
            },
            Event::Put {
                kv: kv("/a", "two", 7, 9),
                prev: Some(kv("/a", "one", 7, 7)),
            },
            Event::Put {
                kv: kv("/empty", "", 3, 10),
                prev: Some(kv("/empty", "", 3, 3)),
            },
            Event::Delete {
                revision: 11,
                prev: kv("/a", "two", 7, 9),
            },
        ]
    }

    #[test]
    fn kv_records_round_trip() {
        let original = kv("/registry/pods/default/web", "{\"x\":1}", 4, 12);
        let decoded = decode_kv(&original.key, &encode_kv(&original)).expect("decodes");
        assert_eq!(decoded, original);
    }

    #[test]
    fn events_round_trip_with_their_revision_and_timestamp() {
        for event in sample_events() {
            let bytes = encode_event(&event, 1_700_000_000_123);
            let decoded = decode_event(event.revision(), &bytes).expect("decodes");
            assert_eq!(decoded, event);
            assert_eq!(event_key(&bytes).expect("key"), event.key());
            assert_eq!(
                event_timestamp_ms(&bytes).expect("timestamp"),
                1_700_000_000_123
            );
        }
    }

    #[test]
    fn every_truncation_of_an_event_is_rejected_or_decodes_without_panicking() {
        for event in sample_events() {
            let bytes = encode_event(&event, 42);
            for len in 0..bytes.len() {
                // Truncating inside the trailing prev value still decodes (the value is the
                // rest of the record); everything else must be a clean error.
                let _ = decode_event(event.revision(), &bytes[..len]);
            }
            assert!(decode_event(event.revision(), &bytes[..10]).is_err());
        }
    }

    #[test]
    fn garbage_is_a_corrupt_record_error_not_a_panic() {
        let garbage: &[&[u8]] = &[
            b"",
            b"\x09",
            b"\x01\x00",
            &[0xff; 40],
            b"\x01aaaaaaaa\xff\xff\xff\xff",
        ];
        for bytes in garbage {
            assert!(decode_event(5, bytes).is_err());
            assert!(decode_kv("/k", bytes).is_err());
        }
    }

    #[test]
    fn kv_record_with_impossible_revisions_is_rejected() {
        let bad = kv("/k", "v", 9, 3);
        assert!(decode_kv("/k", &encode_kv(&bad)).is_err());
    }
}
