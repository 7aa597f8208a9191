//! Decoding one message's bytes to the JSON Kubernetes' Go types marshal to, driven by
//! the [`Schema`]: field names, inlined structs, maps, repeated fields, the special
//! apimachinery types, and Go's `omitempty` for the zero values gogo-protobuf always
//! writes.

use base64::Engine as _;
use serde_json::{Map, Number, Value};

use super::schema::{Field, FieldType, Message, Schema, Special};
use super::wellknown;
use super::wire::{Reader, WireValue};
use super::{DecodeError, decode_envelope};

/// Deeper nesting than any real object needs (CRD schemas are the deepest); it bounds the
/// recursion on hostile input.
const MAX_DEPTH: usize = 100;

/// Decodes messages of one schema.
pub(super) struct Decoder<'s> {
    pub(super) schema: &'s Schema,
}

fn malformed(msg: &Message, field: Option<&Field>, reason: impl std::fmt::Display) -> DecodeError {
    let at = match field {
        Some(f) => format!("{}.{}", msg.name, f.json),
        None => msg.name.clone(),
    };
    DecodeError::Malformed {
        at,
        reason: reason.to_string(),
    }
}

impl Decoder<'_> {
    /// The JSON of message `idx` encoded in `data`; `None` for values Go marshals as
    /// absent (a zero `Time`, an empty `RawExtension`).
    pub(super) fn message(
        &self,
        idx: usize,
        data: &[u8],
        depth: usize,
    ) -> Result<Option<Value>, DecodeError> {
        if depth > MAX_DEPTH {
            return Err(DecodeError::TooDeep);
        }
        let msg = self
            .schema
            .messages
            .get(idx)
            .ok_or(DecodeError::Schema("dangling message index"))?;
        match msg.special {
            Special::None => {
                let object = self.object(msg, data, depth)?;
                if let Some(wrapped) = msg.fields.values().find(|f| f.array_wrapper) {
                    let items = object.get(&wrapped.json).cloned();
                    return Ok(Some(items.unwrap_or(Value::Array(Vec::new()))));
                }
                Ok(Some(Value::Object(object)))
            }
            Special::Time | Special::MicroTime => {
                let fields = scalars(msg, data)?;
                let seconds = fields.int(1) as i64;
                let nanos = fields.int(2) as i32;
                if seconds == 0 && nanos == 0 {
                    return Ok(None);
                }
                let text = if msg.special == Special::Time {
                    wellknown::rfc3339(seconds, nanos)
                } else {
                    wellknown::rfc3339_micro(seconds, nanos)
                };
                let text = text.ok_or_else(|| malformed(msg, None, "time out of range"))?;
                Ok(Some(Value::String(text)))
            }
            Special::Duration => {
                let fields = scalars(msg, data)?;
                Ok(Some(Value::String(wellknown::go_duration(
                    fields.int(1) as i64
                ))))
            }
            Special::Quantity => {
                let fields = scalars(msg, data)?;
                let text = fields.string(msg, 1)?;
                Ok(Some(Value::String(if text.is_empty() {
                    "0".to_string()
                } else {
                    text
                })))
            }
            Special::IntOrString => {
                let fields = scalars(msg, data)?;
                if fields.int(1) == 1 {
                    Ok(Some(Value::String(fields.string(msg, 3)?)))
                } else {
                    Ok(Some(Value::from(fields.int(2) as i32)))
                }
            }
            Special::RawJson => {
                let fields = scalars(msg, data)?;
                let raw = fields.bytes(1);
                if raw.is_empty() {
                    Ok(None)
                } else if raw.starts_with(super::MAGIC) {
                    decode_envelope(self.schema, raw, depth + 1).map(Some)
                } else {
                    serde_json::from_slice(raw)
                        .map(Some)
                        .map_err(|e| malformed(msg, None, format!("embedded JSON: {e}")))
                }
            }
            Special::SchemaOrArray | Special::SchemaOrBool | Special::SchemaOrStringArray => {
                let object = self.object(msg, data, depth)?;
                let by_tag = |tag: u32| {
                    msg.fields
                        .get(&tag)
                        .and_then(|f| object.get(&f.json))
                        .cloned()
                };
                let value = match msg.special {
                    // {1: schema, 2: repeated schemas} / {1: schema, 2: repeated strings}
                    Special::SchemaOrArray | Special::SchemaOrStringArray => by_tag(1)
                        .or_else(|| by_tag(2))
                        .unwrap_or(Value::Array(Vec::new())),
                    // {1: allows, 2: schema}
                    _ => by_tag(2)
                        .or_else(|| by_tag(1))
                        .unwrap_or(Value::Bool(false)),
                };
                Ok(Some(value))
            }
        }
    }

    /// An ordinary message: a JSON object of its fields.
    fn object(
        &self,
        msg: &Message,
        data: &[u8],
        depth: usize,
    ) -> Result<Map<String, Value>, DecodeError> {
        let mut out = Map::new();
        let mut reader = Reader::new(data);
        while let Some((tag, value)) = reader.next_field().map_err(|e| malformed(msg, None, e))? {
            // A field newer than the schema: skip it, as proto decoders do.
            let Some(field) = msg.fields.get(&tag) else {
                continue;
            };
            if field.map {
                let (key, v) = self.map_entry(msg, field, value, depth)?;
                let entry = out
                    .entry(field.json.clone())
                    .or_insert_with(|| Value::Object(Map::new()));
                if let Value::Object(map) = entry {
                    map.insert(key, v);
                }
            } else if field.repeated {
                let mut items = Vec::new();
                match (field.ty, value) {
                    // Packed scalars: one length-delimited run of values.
                    (
                        FieldType::Bool | FieldType::Int32 | FieldType::Int64 | FieldType::Double,
                        WireValue::Bytes(run),
                    ) => items = self.packed(msg, field, run)?,
                    _ => items.push(
                        self.single(msg, field, value, depth)?
                            .unwrap_or(Value::Null),
                    ),
                }
                let entry = out
                    .entry(field.json.clone())
                    .or_insert_with(|| Value::Array(Vec::new()));
                if let Value::Array(list) = entry {
                    list.extend(items);
                }
            } else if field.inline {
                if let Some(Value::Object(inner)) = self.single(msg, field, value, depth)? {
                    for (k, v) in inner {
                        merge(&mut out, k, v);
                    }
                }
            } else {
                match self.single(msg, field, value, depth)? {
                    Some(v) if !omitted(self.schema, field, &v) => {
                        merge(&mut out, field.json.clone(), v)
                    }
                    _ => {
                        out.remove(&field.json);
                    }
                }
            }
        }
        Ok(out)
    }

    /// One value of `field`'s type.
    fn single(
        &self,
        msg: &Message,
        field: &Field,
        value: WireValue<'_>,
        depth: usize,
    ) -> Result<Option<Value>, DecodeError> {
        let wrong = || {
            malformed(
                msg,
                Some(field),
                format!("unexpected {} value", value.kind()),
            )
        };
        Ok(Some(match (field.ty, value) {
            (FieldType::String, WireValue::Bytes(b)) => Value::String(
                std::str::from_utf8(b)
                    .map_err(|_| malformed(msg, Some(field), "string is not UTF-8"))?
                    .to_string(),
            ),
            (FieldType::Bytes, WireValue::Bytes(b)) => {
                Value::String(base64::engine::general_purpose::STANDARD.encode(b))
            }
            (FieldType::Bool, WireValue::Varint(v)) => Value::Bool(v != 0),
            (FieldType::Int32, WireValue::Varint(v)) => Value::from(v as i32),
            (FieldType::Int64, WireValue::Varint(v)) => Value::from(v as i64),
            (FieldType::Double, WireValue::Fixed64(bits)) => Number::from_f64(f64::from_bits(bits))
                .map(Value::Number)
                .ok_or_else(|| malformed(msg, Some(field), "not a finite number"))?,
            (FieldType::Message(idx), WireValue::Bytes(b)) => {
                return self.message(idx, b, depth + 1);
            }
            _ => return Err(wrong()),
        }))
    }

    /// A packed run of varints or doubles.
    fn packed(&self, msg: &Message, field: &Field, run: &[u8]) -> Result<Vec<Value>, DecodeError> {
        if field.ty == FieldType::Double {
            return self.packed_doubles(msg, field, run);
        }
        let mut reader = Reader::new(run);
        let mut out = Vec::new();
        while !reader.is_empty() {
            let v = reader
                .varint()
                .map_err(|e| malformed(msg, Some(field), e))?;
            if let Some(v) = self.single(msg, field, WireValue::Varint(v), 0)? {
                out.push(v);
            }
        }
        Ok(out)
    }

    fn packed_doubles(
        &self,
        msg: &Message,
        field: &Field,
        run: &[u8],
    ) -> Result<Vec<Value>, DecodeError> {
        if !run.len().is_multiple_of(8) {
            return Err(malformed(msg, Some(field), "truncated packed doubles"));
        }
        run.chunks_exact(8)
            .map(|c| {
                let mut bits = [0u8; 8];
                bits.copy_from_slice(c);
                let v = WireValue::Fixed64(u64::from_le_bytes(bits));
                Ok(self.single(msg, field, v, 0)?.unwrap_or(Value::Null))
            })
            .collect()
    }

    /// One `map<string, T>` entry: `{1: key, 2: value}`.
    fn map_entry(
        &self,
        msg: &Message,
        field: &Field,
        value: WireValue<'_>,
        depth: usize,
    ) -> Result<(String, Value), DecodeError> {
        let WireValue::Bytes(entry) = value else {
            return Err(malformed(msg, Some(field), "map entry is not a message"));
        };
        let mut key = String::new();
        let mut val = None;
        let mut reader = Reader::new(entry);
        while let Some((tag, v)) = reader
            .next_field()
            .map_err(|e| malformed(msg, Some(field), e))?
        {
            match (tag, v) {
                (1, WireValue::Bytes(b)) => {
                    key = std::str::from_utf8(b)
                        .map_err(|_| malformed(msg, Some(field), "map key is not UTF-8"))?
                        .to_string();
                }
                (1, _) => return Err(malformed(msg, Some(field), "map key is not a string")),
                (2, v) => val = Some(self.single(msg, field, v, depth)?.unwrap_or(Value::Null)),
                _ => {}
            }
        }
        let val = match val {
            Some(v) => v,
            None => self.zero(field.ty, depth)?,
        };
        Ok((key, val))
    }

    /// The value of a map entry that carries no value.
    fn zero(&self, ty: FieldType, depth: usize) -> Result<Value, DecodeError> {
        Ok(match ty {
            FieldType::String | FieldType::Bytes => Value::String(String::new()),
            FieldType::Bool => Value::Bool(false),
            FieldType::Int32 | FieldType::Int64 | FieldType::Double => Value::from(0),
            FieldType::Message(idx) => self.message(idx, &[], depth + 1)?.unwrap_or(Value::Null),
        })
    }
}

/// Sets `key`, merging into an object already there (proto2 merges a repeated
/// occurrence of an embedded message; scalars: the last one wins).
fn merge(out: &mut Map<String, Value>, key: String, value: Value) {
    match (out.get_mut(&key), value) {
        (Some(Value::Object(old)), Value::Object(new)) => {
            for (k, v) in new {
                merge(old, k, v);
            }
        }
        (_, value) => {
            out.insert(key, value);
        }
    }
}

/// Whether Go's JSON encoder would leave this decoded zero value out.
fn omitted(schema: &Schema, field: &Field, value: &Value) -> bool {
    let zero = match value {
        Value::String(s) => s.is_empty(),
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        _ => false,
    };
    if !zero {
        return false;
    }
    match field.ty {
        // gogo writes every non-pointer string; without Go type information an empty
        // one is taken as unset.
        FieldType::String => !field.keep_empty,
        FieldType::Bytes => true,
        FieldType::Bool | FieldType::Int32 | FieldType::Int64 | FieldType::Double => {
            field.omit_zero
        }
        FieldType::Message(idx) => {
            field.omit_zero
                && schema
                    .messages
                    .get(idx)
                    .is_some_and(|m| m.special == Special::IntOrString)
        }
    }
}

/// The scalar fields of a small special message, by tag (the last occurrence wins).
struct Scalars<'a> {
    values: Vec<(u32, WireValue<'a>)>,
}

fn scalars<'a>(msg: &Message, data: &'a [u8]) -> Result<Scalars<'a>, DecodeError> {
    let mut values = Vec::new();
    let mut reader = Reader::new(data);
    while let Some(field) = reader.next_field().map_err(|e| malformed(msg, None, e))? {
        values.push(field);
    }
    Ok(Scalars { values })
}

impl<'a> Scalars<'a> {
    fn last(&self, tag: u32) -> Option<WireValue<'a>> {
        self.values
            .iter()
            .rev()
            .find(|(t, _)| *t == tag)
            .map(|(_, v)| *v)
    }

    /// A varint field (0 when absent or of another wire type).
    fn int(&self, tag: u32) -> u64 {
        match self.last(tag) {
            Some(WireValue::Varint(v)) => v,
            _ => 0,
        }
    }

    fn bytes(&self, tag: u32) -> &'a [u8] {
        match self.last(tag) {
            Some(WireValue::Bytes(b)) => b,
            _ => &[],
        }
    }

    fn string(&self, msg: &Message, tag: u32) -> Result<String, DecodeError> {
        std::str::from_utf8(self.bytes(tag))
            .map(str::to_string)
            .map_err(|_| malformed(msg, None, "string is not UTF-8"))
    }
}
