//! Just enough of the protocol buffers wire format to read what Vault wrote.
//!
//! Vault keeps several records as protobuf messages: the seal's
//! `EncryptedBlobInfo` (stored unseal keys, recovery key) and KV v2's key
//! metadata and versions. Strongroom only ever *reads* them, to take over a
//! Vault data set, so a total, bounds-checked field reader is all it needs
//! (no schema compiler, no generated code). Every input gives fields or an
//! error, never a panic: storage is not trusted.

use std::fmt;

/// Why bytes are not a protobuf message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtoError(&'static str);

impl fmt::Display for ProtoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "malformed protobuf message: {}", self.0)
    }
}

impl std::error::Error for ProtoError {}

/// One field's value, as the wire type gives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Value<'a> {
    /// Wire type 0: int32/64, uint32/64, bool, enum.
    Varint(u64),
    /// Wire type 1: fixed64, sfixed64, double.
    Fixed64(u64),
    /// Wire type 2: bytes, string, embedded message, packed repeated.
    Bytes(&'a [u8]),
    /// Wire type 5: fixed32, sfixed32, float.
    Fixed32(u32),
}

impl<'a> Value<'a> {
    /// The varint, or an error naming the field's expected type.
    ///
    /// # Errors
    /// [`ProtoError`] when the field has another wire type.
    pub fn varint(self) -> Result<u64, ProtoError> {
        match self {
            Self::Varint(v) => Ok(v),
            _ => Err(ProtoError("expected a varint field")),
        }
    }

    /// The length-delimited bytes.
    ///
    /// # Errors
    /// [`ProtoError`] when the field has another wire type.
    pub fn bytes(self) -> Result<&'a [u8], ProtoError> {
        match self {
            Self::Bytes(b) => Ok(b),
            _ => Err(ProtoError("expected a length-delimited field")),
        }
    }

    /// The bytes as UTF-8 text.
    ///
    /// # Errors
    /// [`ProtoError`] for another wire type or invalid UTF-8.
    pub fn string(self) -> Result<&'a str, ProtoError> {
        std::str::from_utf8(self.bytes()?).map_err(|_| ProtoError("string field is not UTF-8"))
    }
}

/// Iterates over the fields of one message: `(field number, value)`.
///
/// ```
/// use seal_core::protobuf::{Fields, Value};
/// // field 1 = varint 150, field 2 = "hi"
/// let msg = [0x08, 0x96, 0x01, 0x12, 0x02, b'h', b'i'];
/// let fields: Vec<_> = Fields::new(&msg).collect::<Result<_, _>>().unwrap();
/// assert_eq!(fields, vec![(1, Value::Varint(150)), (2, Value::Bytes(b"hi"))]);
/// ```
#[derive(Debug, Clone)]
pub struct Fields<'a> {
    rest: &'a [u8],
    failed: bool,
}

impl<'a> Fields<'a> {
    /// A reader over `message`.
    pub fn new(message: &'a [u8]) -> Self {
        Self {
            rest: message,
            failed: false,
        }
    }

    fn varint(&mut self) -> Result<u64, ProtoError> {
        let mut value = 0u64;
        for shift in (0..70).step_by(7) {
            let (&byte, rest) = self
                .rest
                .split_first()
                .ok_or(ProtoError("truncated varint"))?;
            self.rest = rest;
            if shift == 63 && byte > 1 {
                return Err(ProtoError("varint overflows 64 bits"));
            }
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(ProtoError("varint longer than 10 bytes"))
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], ProtoError> {
        if self.rest.len() < n {
            return Err(ProtoError("field runs past the end of the message"));
        }
        let (head, rest) = self.rest.split_at(n);
        self.rest = rest;
        Ok(head)
    }

    fn field(&mut self) -> Result<(u32, Value<'a>), ProtoError> {
        let key = self.varint()?;
        let number = u32::try_from(key >> 3)
            .ok()
            .filter(|n| *n > 0)
            .ok_or(ProtoError("invalid field number"))?;
        let value = match key & 7 {
            0 => Value::Varint(self.varint()?),
            1 => {
                let raw = self.take(8)?;
                let mut b = [0u8; 8];
                b.copy_from_slice(raw);
                Value::Fixed64(u64::from_le_bytes(b))
            }
            2 => {
                let len = usize::try_from(self.varint()?)
                    .map_err(|_| ProtoError("length does not fit in memory"))?;
                Value::Bytes(self.take(len)?)
            }
            5 => {
                let raw = self.take(4)?;
                let mut b = [0u8; 4];
                b.copy_from_slice(raw);
                Value::Fixed32(u32::from_le_bytes(b))
            }
            _ => return Err(ProtoError("unsupported wire type (groups are not used)")),
        };
        Ok((number, value))
    }
}

impl<'a> Iterator for Fields<'a> {
    type Item = Result<(u32, Value<'a>), ProtoError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.rest.is_empty() {
            return None;
        }
        let item = self.field();
        self.failed = item.is_err();
        Some(item)
    }
}

/// A `google.protobuf.Timestamp` (seconds, nanos) as Unix seconds and
/// nanoseconds; an empty message is the epoch.
///
/// # Errors
/// [`ProtoError`] when the message is malformed or nanos is out of range.
pub fn timestamp(message: &[u8]) -> Result<(i64, u32), ProtoError> {
    let (mut seconds, mut nanos) = (0i64, 0u32);
    for field in Fields::new(message) {
        match field? {
            // int64 is two's complement in a varint.
            (1, v) => seconds = v.varint()?.cast_signed(),
            (2, v) => {
                nanos = u32::try_from(v.varint()?)
                    .ok()
                    .filter(|n| *n < 1_000_000_000)
                    .ok_or(ProtoError("timestamp nanos out of range"))?;
            }
            _ => {}
        }
    }
    Ok((seconds, nanos))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn reads_every_wire_type() {
        let msg = [
            0x08, 0x01, // 1: varint 1
            0x11, 1, 0, 0, 0, 0, 0, 0, 0, // 2: fixed64 1
            0x1a, 0x00, // 3: empty bytes
            0x25, 2, 0, 0, 0, // 4: fixed32 2
        ];
        let fields: Vec<_> = Fields::new(&msg).collect::<Result<_, _>>().unwrap();
        assert_eq!(
            fields,
            vec![
                (1, Value::Varint(1)),
                (2, Value::Fixed64(1)),
                (3, Value::Bytes(b"")),
                (4, Value::Fixed32(2)),
            ]
        );
    }

    #[test]
    fn truncation_is_an_error_once() {
        let mut fields = Fields::new(&[0x12, 0x05, b'a']);
        assert!(fields.next().unwrap().is_err());
        assert!(fields.next().is_none());
    }

    #[test]
    fn timestamps_decode() {
        // seconds = 1_560_000_000, nanos = 5
        let msg = [0x08, 0x80, 0xec, 0xee, 0xe7, 0x05, 0x10, 0x05];
        assert_eq!(timestamp(&msg).unwrap(), (1_560_000_000, 5));
        assert_eq!(timestamp(&[]).unwrap(), (0, 0));
        assert!(timestamp(&[0x10, 0xff, 0xff, 0xff, 0xff, 0x0f]).is_err());
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(raw in proptest::collection::vec(any::<u8>(), 0..256)) {
            for (_, v) in Fields::new(&raw).flatten() {
                let _ = v.string();
            }
            let _ = timestamp(&raw);
        }
    }
}
