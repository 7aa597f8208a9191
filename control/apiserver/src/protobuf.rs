//! Decoding Kubernetes protobuf request bodies (`application/vnd.kubernetes.protobuf`)
//! into the JSON the rest of the apiserver works on.
//!
//! kubectl and client-go send the bodies of most writes as protobuf: the four bytes
//! `k8s\0`, then a `runtime.Unknown` message holding the object's `apiVersion` and `kind`
//! and its own encoding (the k8s.io/api `generated.proto` messages, proto2). Responses
//! stay JSON, which those clients also accept.
//!
//! There is no descriptor set to load at run time, so the messages come from a
//! compiled-in table (`protobuf/schema.json`, made by `scripts/gen-protobuf-schema` from
//! the k8s-pb crate's prost bindings and the Go API types): for every field its tag, JSON
//! name, type, and how Go marshals it. The pieces:
//! - [`wire`]: the schema-less wire-format reader;
//! - `schema`: the table, indexed by message name and by kind;
//! - `to_json`: one message to JSON, with Kubernetes' conventions: `Time` and
//!   `MicroTime` as RFC 3339, `Duration` as a Go duration, `Quantity` and `IntOrString` as
//!   scalars, `RawExtension`/`FieldsV1` as embedded JSON, `bytes` as base64, embedded Go
//!   structs flattened into their parent;
//! - `wellknown`: the time and duration formats.
//!
//! Zero values: gogo-protobuf writes every non-pointer field even when it is zero, so a
//! plain decode would yield `"generateName": ""`, `"hostNetwork": false` and a 1970
//! `creationTimestamp`. Go's JSON encoder leaves such fields out when they carry
//! `omitempty`, and the table records which do (non-pointer + `omitempty`): those zeros
//! are dropped, like zero `Time`s and empty `RawExtension`s. A pointer field was only
//! written because it was set, so its zero is kept (`replicas: 0`,
//! `enableServiceLinks: false`, `gracePeriodSeconds: 0`). Fields the Go types did not
//! cover (older API versions) fall back to: drop empty strings, keep other zeros. Empty
//! arrays and maps never appear (nothing is on the wire), and empty objects are kept, as
//! Go's encoder keeps empty structs (`emptyDir: {}` is meaningful).

mod schema;
mod to_json;
mod wellknown;
pub mod wire;

#[cfg(test)]
mod tests;

use serde_json::Value;
use thiserror::Error;

use schema::Schema;
use wire::{Reader, WireError, WireValue};

/// The prefix of every Kubernetes protobuf body.
pub const MAGIC: &[u8; 4] = b"k8s\0";

/// The media type of Kubernetes protobuf bodies.
pub const MEDIA_TYPE: &str = "application/vnd.kubernetes.protobuf";

/// Why a protobuf body could not be decoded. Each is a client error (400) except
/// [`DecodeError::Schema`].
#[derive(Debug, Error)]
pub enum DecodeError {
    /// The body does not begin with `k8s\0`.
    #[error("the body does not start with the Kubernetes protobuf prefix \"k8s\\x00\"")]
    MissingPrefix,
    /// The `runtime.Unknown` envelope is not valid protobuf.
    #[error("malformed protobuf envelope: {0}")]
    Envelope(#[source] WireError),
    /// The envelope names no kind.
    #[error("the protobuf envelope names no kind")]
    MissingKind,
    /// The envelope's raw bytes are compressed or not protobuf.
    #[error("unsupported protobuf envelope {what} {value:?}")]
    Unsupported {
        /// `contentEncoding` or `contentType`.
        what: &'static str,
        /// Its value.
        value: String,
    },
    /// No message is known for the envelope's kind.
    #[error("no kind {kind:?} is registered for version {api_version:?} in the protobuf schema")]
    UnknownKind {
        /// The envelope's apiVersion.
        api_version: String,
        /// The envelope's kind.
        kind: String,
    },
    /// A field could not be decoded.
    #[error("malformed protobuf at {at}: {reason}")]
    Malformed {
        /// `message.field` where it went wrong.
        at: String,
        /// What was wrong.
        reason: String,
    },
    /// Messages nested deeper than any real object.
    #[error("protobuf messages are nested too deeply")]
    TooDeep,
    /// The compiled-in schema is broken (a build defect, not the client's fault).
    #[error("the protobuf schema is unusable: {0}")]
    Schema(&'static str),
}

/// Whether a media type (without parameters) is Kubernetes protobuf.
pub fn is_protobuf(media_type: &str) -> bool {
    media_type.eq_ignore_ascii_case(MEDIA_TYPE)
}

/// Decodes a `k8s\0`-prefixed protobuf body into the object's JSON, `apiVersion` and
/// `kind` included.
pub fn decode(body: &[u8]) -> Result<Value, DecodeError> {
    let schema = schema::schema().map_err(DecodeError::Schema)?;
    decode_envelope(schema, body, 0)
}

/// The envelope: `k8s\0` + `runtime.Unknown{1: typeMeta{1: apiVersion, 2: kind}, 2: raw,
/// 3: contentEncoding, 4: contentType}`.
fn decode_envelope(schema: &Schema, body: &[u8], depth: usize) -> Result<Value, DecodeError> {
    let data = body
        .strip_prefix(MAGIC.as_slice())
        .ok_or(DecodeError::MissingPrefix)?;
    let (mut api_version, mut kind) = (String::new(), String::new());
    let mut raw: &[u8] = &[];
    let mut reader = Reader::new(data);
    while let Some((tag, value)) = reader.next_field().map_err(DecodeError::Envelope)? {
        match (tag, value) {
            (1, WireValue::Bytes(type_meta)) => {
                let mut tm = Reader::new(type_meta);
                while let Some((tag, value)) = tm.next_field().map_err(DecodeError::Envelope)? {
                    match (tag, value) {
                        (1, WireValue::Bytes(b)) => api_version = envelope_string(b)?,
                        (2, WireValue::Bytes(b)) => kind = envelope_string(b)?,
                        _ => {}
                    }
                }
            }
            (2, WireValue::Bytes(b)) => raw = b,
            (3 | 4, WireValue::Bytes(b)) if !b.is_empty() => {
                let value = envelope_string(b)?;
                if tag == 3 {
                    return Err(DecodeError::Unsupported {
                        what: "contentEncoding",
                        value,
                    });
                }
                if !is_protobuf(&value) {
                    return Err(DecodeError::Unsupported {
                        what: "contentType",
                        value,
                    });
                }
            }
            _ => {}
        }
    }
    if kind.is_empty() {
        return Err(DecodeError::MissingKind);
    }
    let idx = schema
        .kind(&api_version, &kind)
        .ok_or_else(|| DecodeError::UnknownKind {
            api_version: api_version.clone(),
            kind: kind.clone(),
        })?;
    let decoder = to_json::Decoder { schema };
    let mut object = match decoder.message(idx, raw, depth)? {
        Some(Value::Object(object)) => object,
        _ => {
            return Err(DecodeError::UnknownKind { api_version, kind });
        }
    };
    if !api_version.is_empty() {
        object.insert("apiVersion".to_string(), Value::String(api_version));
    }
    object.insert("kind".to_string(), Value::String(kind));
    Ok(Value::Object(object))
}

fn envelope_string(b: &[u8]) -> Result<String, DecodeError> {
    std::str::from_utf8(b)
        .map(str::to_string)
        .map_err(|_| DecodeError::Malformed {
            at: "runtime.Unknown".to_string(),
            reason: "string is not UTF-8".to_string(),
        })
}
