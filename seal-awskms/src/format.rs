//! The seal blob body: a version byte, then four length-prefixed fields.
//!
//! ```text
//! seal_core::blob header (3 bytes: 'S', 0x01, awskms)
//! body:
//!   format version       u8 = 0x01
//!   key id               u16 BE length | UTF-8 key ARN returned by KMS Encrypt
//!   wrapped data key     u16 BE length | KMS CiphertextBlob
//!   nonce                u8 length (12) | 12 bytes
//!   ciphertext + tag     u32 BE length | AES-256-GCM output (tag last)
//! ```
//!
//! The GCM associated data is everything in the blob before the ciphertext
//! length (header, version, key id, wrapped key, nonce) followed by the
//! caller's `aad`, so no byte of the blob can change without the open
//! failing. The key id is not needed to decrypt (KMS finds the key from the
//! wrapped key) but is recorded so [`crate::AwsKmsSeal::rewrap`] can tell
//! which blobs were written under an earlier key.
//!
//! Parsing is bounds-checked and total: any input gives a value or an
//! error, never a panic, and trailing bytes are refused.

use seal_core::{SealError, SealType, blob};

/// The body format this version writes and reads.
pub(crate) const FORMAT_V1: u8 = 0x01;
/// AES-GCM standard nonce length.
pub(crate) const NONCE_LEN: usize = 12;
/// AES-GCM tag length.
pub(crate) const TAG_LEN: usize = 16;
/// A KMS key ARN is at most 2048 characters.
const MAX_KEY_ID_LEN: usize = 2048;
/// KMS ciphertext blobs are at most 6144 bytes.
const MAX_WRAPPED_LEN: usize = 6144;

/// The parsed fields of a blob, borrowing from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Parsed<'a> {
    /// The key ARN KMS reported when the data key was wrapped.
    pub(crate) key_id: &'a str,
    /// KMS `CiphertextBlob` of the data key.
    pub(crate) wrapped_key: &'a [u8],
    /// GCM nonce.
    pub(crate) nonce: &'a [u8; NONCE_LEN],
    /// GCM ciphertext with the tag at the end.
    pub(crate) ciphertext: &'a [u8],
    /// Blob bytes authenticated as associated data (everything before the
    /// ciphertext's length prefix).
    pub(crate) authenticated_prefix: &'a [u8],
}

/// Writes the blob up to (not including) the ciphertext field; the result is
/// also the GCM associated-data prefix.
pub(crate) fn encode_prefix(
    key_id: &str,
    wrapped_key: &[u8],
    nonce: &[u8; NONCE_LEN],
) -> Result<Vec<u8>, SealError> {
    let key_len = u16::try_from(key_id.len())
        .ok()
        .filter(|n| *n > 0 && usize::from(*n) <= MAX_KEY_ID_LEN)
        .ok_or_else(|| {
            SealError::Backend(format!(
                "KMS returned a key id of {} bytes; expected 1..={MAX_KEY_ID_LEN}",
                key_id.len()
            ))
        })?;
    let wrapped_len = u16::try_from(wrapped_key.len())
        .ok()
        .filter(|n| *n > 0 && usize::from(*n) <= MAX_WRAPPED_LEN)
        .ok_or_else(|| {
            SealError::Backend(format!(
                "KMS returned a wrapped data key of {} bytes; expected 1..={MAX_WRAPPED_LEN}",
                wrapped_key.len()
            ))
        })?;
    let mut body = Vec::with_capacity(1 + 2 + key_id.len() + 2 + wrapped_key.len() + 1 + NONCE_LEN);
    body.push(FORMAT_V1);
    body.extend_from_slice(&key_len.to_be_bytes());
    body.extend_from_slice(key_id.as_bytes());
    body.extend_from_slice(&wrapped_len.to_be_bytes());
    body.extend_from_slice(wrapped_key);
    body.push(NONCE_LEN as u8);
    body.extend_from_slice(nonce);
    Ok(blob::encode(SealType::AwsKms, &body))
}

/// Appends the ciphertext field to a prefix from [`encode_prefix`].
pub(crate) fn finish(mut prefix: Vec<u8>, ciphertext: &[u8]) -> Result<Vec<u8>, SealError> {
    let len = u32::try_from(ciphertext.len())
        .map_err(|_| SealError::Backend("plaintext too large for a seal blob".into()))?;
    prefix.reserve_exact(4 + ciphertext.len());
    prefix.extend_from_slice(&len.to_be_bytes());
    prefix.extend_from_slice(ciphertext);
    Ok(prefix)
}

/// A cursor that only moves forward within bounds.
struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], SealError> {
        if self.rest.len() < n {
            return Err(SealError::Malformed(what));
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }

    fn u8(&mut self, what: &'static str) -> Result<u8, SealError> {
        Ok(self.take(1, what)?[0])
    }

    fn u16(&mut self, what: &'static str) -> Result<usize, SealError> {
        let b = self.take(2, what)?;
        Ok(usize::from(u16::from_be_bytes([b[0], b[1]])))
    }

    fn u32(&mut self, what: &'static str) -> Result<usize, SealError> {
        let b = self.take(4, what)?;
        usize::try_from(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
            .map_err(|_| SealError::Malformed(what))
    }
}

/// Parses a whole blob (header included).
///
/// # Errors
/// [`SealError::Malformed`] naming the field that does not fit,
/// [`SealError::WrongSealType`] for another seal's blob.
pub(crate) fn parse(input: &[u8]) -> Result<Parsed<'_>, SealError> {
    let body = blob::decode(SealType::AwsKms, input)?;
    let mut r = Reader { rest: body };
    if r.u8("awskms blob has no format version")? != FORMAT_V1 {
        return Err(SealError::Malformed(
            "unsupported awskms blob format version",
        ));
    }
    let key_len = r.u16("awskms blob truncated in the key id length")?;
    if key_len == 0 || key_len > MAX_KEY_ID_LEN {
        return Err(SealError::Malformed(
            "awskms blob key id length out of range",
        ));
    }
    let key_id = std::str::from_utf8(r.take(key_len, "awskms blob truncated in the key id")?)
        .map_err(|_| SealError::Malformed("awskms blob key id is not UTF-8"))?;
    let wrapped_len = r.u16("awskms blob truncated in the wrapped key length")?;
    if wrapped_len == 0 || wrapped_len > MAX_WRAPPED_LEN {
        return Err(SealError::Malformed(
            "awskms blob wrapped key length out of range",
        ));
    }
    let wrapped_key = r.take(wrapped_len, "awskms blob truncated in the wrapped key")?;
    if usize::from(r.u8("awskms blob truncated in the nonce length")?) != NONCE_LEN {
        return Err(SealError::Malformed("awskms blob nonce length is not 12"));
    }
    let nonce: &[u8; NONCE_LEN] = r
        .take(NONCE_LEN, "awskms blob truncated in the nonce")?
        .try_into()
        .map_err(|_| SealError::Malformed("awskms blob truncated in the nonce"))?;
    let authenticated_len = input.len() - r.rest.len();
    let ct_len = r.u32("awskms blob truncated in the ciphertext length")?;
    if ct_len < TAG_LEN {
        return Err(SealError::Malformed(
            "awskms blob ciphertext shorter than its tag",
        ));
    }
    let ciphertext = r.take(ct_len, "awskms blob truncated in the ciphertext")?;
    if !r.rest.is_empty() {
        return Err(SealError::Malformed("awskms blob has trailing bytes"));
    }
    Ok(Parsed {
        key_id,
        wrapped_key,
        nonce,
        ciphertext,
        authenticated_prefix: &input[..authenticated_len],
    })
}

/// The GCM associated data: the authenticated blob prefix, then the
/// caller's `aad`. The prefix is self-delimiting, so the concatenation is
/// unambiguous.
pub(crate) fn associated_data(prefix: &[u8], aad: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(prefix.len() + aad.len());
    out.extend_from_slice(prefix);
    out.extend_from_slice(aad);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const ARN: &str = "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab";

    fn sample() -> Vec<u8> {
        let prefix = encode_prefix(ARN, &[7u8; 100], &[9u8; NONCE_LEN]).unwrap();
        finish(prefix, &[3u8; 48]).unwrap()
    }

    #[test]
    fn round_trip() {
        let b = sample();
        let p = parse(&b).unwrap();
        assert_eq!(p.key_id, ARN);
        assert_eq!(p.wrapped_key, &[7u8; 100]);
        assert_eq!(p.nonce, &[9u8; NONCE_LEN]);
        assert_eq!(p.ciphertext, &[3u8; 48]);
        assert_eq!(p.authenticated_prefix.len(), b.len() - 4 - 48);
        assert_eq!(&b[..3], &[0x53, 0x01, 0x02]);
        assert_eq!(b[3], FORMAT_V1);
    }

    #[test]
    fn every_truncation_and_extension_is_refused() {
        let b = sample();
        for len in 0..b.len() {
            assert!(parse(&b[..len]).is_err(), "truncated to {len}");
        }
        let mut longer = b.clone();
        longer.push(0);
        assert_eq!(
            parse(&longer).unwrap_err().to_string(),
            "malformed seal blob: awskms blob has trailing bytes"
        );
    }

    #[test]
    fn field_checks() {
        let b = sample();
        let mut v = b.clone();
        v[3] = 2;
        assert!(matches!(parse(&v), Err(SealError::Malformed(m)) if m.contains("version")));
        let mut v = b.clone();
        v[4] = 0;
        v[5] = 0;
        assert!(matches!(parse(&v), Err(SealError::Malformed(m)) if m.contains("key id length")));
        let mut v = b.clone();
        v[6] = 0xFF; // invalid UTF-8 in the key id
        assert!(matches!(parse(&v), Err(SealError::Malformed(m)) if m.contains("UTF-8")));
        assert!(encode_prefix("", &[1], &[0; 12]).is_err());
        assert!(encode_prefix(ARN, &[], &[0; 12]).is_err());
        assert!(encode_prefix(ARN, &[0; MAX_WRAPPED_LEN + 1], &[0; 12]).is_err());
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = parse(&bytes);
            let _ = parse(&blob::encode(SealType::AwsKms, &bytes));
        }

        #[test]
        fn mutated_blobs_never_panic(idx in any::<prop::sample::Index>(), byte in any::<u8>()) {
            let mut b = sample();
            let i = idx.index(b.len());
            b[i] = byte;
            let _ = parse(&b);
        }

        #[test]
        fn encode_parse_round_trip(
            key in "[a-zA-Z0-9:/_-]{1,200}",
            wrapped in proptest::collection::vec(any::<u8>(), 1..300),
            nonce in any::<[u8; 12]>(),
            ct in proptest::collection::vec(any::<u8>(), 16..300),
        ) {
            let b = finish(encode_prefix(&key, &wrapped, &nonce).unwrap(), &ct).unwrap();
            let p = parse(&b).unwrap();
            prop_assert_eq!(p.key_id, key.as_str());
            prop_assert_eq!(p.wrapped_key, wrapped.as_slice());
            prop_assert_eq!(p.nonce, &nonce);
            prop_assert_eq!(p.ciphertext, ct.as_slice());
        }
    }
}
