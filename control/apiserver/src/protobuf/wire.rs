//! The protobuf wire format, read without a schema: a [`Reader`] walks the fields of
//! one message and yields each tag with its raw value. Every read is bounds-checked, so
//! truncated or garbage input ends in a [`WireError`], never a panic.

use thiserror::Error;

/// Why bytes could not be read as protobuf.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum WireError {
    /// The input ended inside a field.
    #[error("unexpected end of data")]
    Truncated,
    /// A varint ran past ten bytes.
    #[error("malformed varint")]
    BadVarint,
    /// A field key used a wire type that does not exist (or a deprecated group).
    #[error("unsupported wire type {0}")]
    BadWireType(u64),
    /// A field key named tag 0 or a tag beyond the protobuf maximum.
    #[error("invalid field number {0}")]
    BadTag(u64),
}

/// One field's raw value, as the wire type carries it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum WireValue<'a> {
    /// Wire type 0: int32, int64, bool, enum.
    Varint(u64),
    /// Wire type 1: double, fixed64.
    Fixed64(u64),
    /// Wire type 5: float, fixed32.
    Fixed32(u32),
    /// Wire type 2: string, bytes, embedded message, packed repeated scalars.
    Bytes(&'a [u8]),
}

impl WireValue<'_> {
    /// The wire type's name, for error messages.
    pub fn kind(&self) -> &'static str {
        match self {
            WireValue::Varint(_) => "varint",
            WireValue::Fixed64(_) => "64-bit",
            WireValue::Fixed32(_) => "32-bit",
            WireValue::Bytes(_) => "length-delimited",
        }
    }
}

/// Iterates over the `(tag, value)` pairs of one encoded message.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// A reader over one message's bytes.
    pub fn new(data: &'a [u8]) -> Self {
        Reader { data, pos: 0 }
    }

    /// Whether every byte has been read.
    pub fn is_empty(&self) -> bool {
        self.pos >= self.data.len()
    }

    /// Reads one base-128 varint.
    pub fn varint(&mut self) -> Result<u64, WireError> {
        let mut value: u64 = 0;
        for i in 0..10 {
            let byte = *self.data.get(self.pos).ok_or(WireError::Truncated)?;
            self.pos += 1;
            value |= u64::from(byte & 0x7f) << (7 * i);
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(WireError::BadVarint)
    }

    fn take(&mut self, len: usize) -> Result<&'a [u8], WireError> {
        let end = self.pos.checked_add(len).ok_or(WireError::Truncated)?;
        let bytes = self.data.get(self.pos..end).ok_or(WireError::Truncated)?;
        self.pos = end;
        Ok(bytes)
    }

    fn fixed<const N: usize>(&mut self) -> Result<[u8; N], WireError> {
        let bytes = self.take(N)?;
        let mut out = [0u8; N];
        out.copy_from_slice(bytes);
        Ok(out)
    }

    /// The next field, or `None` at the end of the message.
    pub fn next_field(&mut self) -> Result<Option<(u32, WireValue<'a>)>, WireError> {
        if self.is_empty() {
            return Ok(None);
        }
        let key = self.varint()?;
        let tag = key >> 3;
        let tag = match u32::try_from(tag) {
            Ok(t) if (1..=0x1fff_ffff).contains(&t) => t,
            _ => return Err(WireError::BadTag(tag)),
        };
        let value = match key & 7 {
            0 => WireValue::Varint(self.varint()?),
            1 => WireValue::Fixed64(u64::from_le_bytes(self.fixed::<8>()?)),
            2 => {
                let len = usize::try_from(self.varint()?).map_err(|_| WireError::Truncated)?;
                WireValue::Bytes(self.take(len)?)
            }
            5 => WireValue::Fixed32(u32::from_le_bytes(self.fixed::<4>()?)),
            other => return Err(WireError::BadWireType(other)),
        };
        Ok(Some((tag, value)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_varint_fixed_and_length_delimited_fields() {
        // 1: varint 150, 2: "hi", 3: fixed64 1, 4: fixed32 2
        let data = [
            0x08, 0x96, 0x01, 0x12, 0x02, b'h', b'i', 0x19, 1, 0, 0, 0, 0, 0, 0, 0, 0x25, 2, 0, 0,
            0,
        ];
        let mut r = Reader::new(&data);
        assert_eq!(r.next_field().unwrap(), Some((1, WireValue::Varint(150))));
        assert_eq!(r.next_field().unwrap(), Some((2, WireValue::Bytes(b"hi"))));
        assert_eq!(r.next_field().unwrap(), Some((3, WireValue::Fixed64(1))));
        assert_eq!(r.next_field().unwrap(), Some((4, WireValue::Fixed32(2))));
        assert_eq!(r.next_field().unwrap(), None);
    }

    #[test]
    fn truncated_length_delimited_field_is_an_error() {
        let mut r = Reader::new(&[0x12, 0x05, b'a']);
        assert_eq!(r.next_field(), Err(WireError::Truncated));
    }

    #[test]
    fn huge_length_does_not_overflow() {
        let mut r = Reader::new(&[
            0x12, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01,
        ]);
        assert_eq!(r.next_field(), Err(WireError::Truncated));
    }

    #[test]
    fn eleven_byte_varint_is_malformed() {
        let mut r = Reader::new(&[0xff; 11]);
        assert_eq!(r.varint(), Err(WireError::BadVarint));
    }

    #[test]
    fn groups_and_tag_zero_are_rejected() {
        assert_eq!(
            Reader::new(&[0x0b]).next_field(),
            Err(WireError::BadWireType(3))
        );
        assert_eq!(
            Reader::new(&[0x00, 0x00]).next_field(),
            Err(WireError::BadTag(0))
        );
    }
}
