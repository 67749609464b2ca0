//! Vault's seal blob, `EncryptedBlobInfo`, so a seal can open what Vault
//! wrapped when Strongroom takes over a Vault data set.
//!
//! Vault (`physical/types.proto`, later go-kms-wrapping's `BlobInfo`, same
//! field numbers) stores `core/hsm/barrier-unseal-keys` and
//! `core/recovery-key` as this protobuf message:
//!
//! ```text
//! ciphertext = 1 (bytes)   AES-GCM output: ct || tag (awskms), iv || ct || tag (Shamir)
//! iv         = 2 (bytes)   GCM nonce (awskms envelope)
//! hmac       = 3 (bytes)
//! wrapped    = 4 (bool)
//! key_info   = 5 { mechanism = 1, hmac_mechanism = 2, key_id = 3,
//!                  hmac_key_id = 4, wrapped_key = 5, flags = 6 }
//! ```
//!
//! Vault encrypted these without associated data. A Strongroom blob starts
//! with its own header ([`super::blob`], first byte `S`), a Vault blob with
//! the tag of field 1 or 2, so the two never look alike: [`is_vault_blob`]
//! tells them apart from the bytes alone.

use crate::SealError;
use crate::protobuf::Fields;

/// The fields of a Vault `EncryptedBlobInfo` that a seal needs.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct VaultBlob {
    /// GCM ciphertext with its tag (for Shamir: nonce first).
    pub ciphertext: Vec<u8>,
    /// GCM nonce (empty for the Shamir wrapper, which prefixes it).
    pub iv: Vec<u8>,
    /// `key_info.mechanism` (awskms: 1 = envelope AES-GCM, 0 = direct KMS).
    pub mechanism: u64,
    /// `key_info.key_id`: the KMS key that wrapped the data key.
    pub key_id: String,
    /// `key_info.wrapped_key`: the data key as KMS encrypted it.
    pub wrapped_key: Vec<u8>,
}

// Ciphertext is not secret, but the wrapped key and sizes are all a reader
// needs to see.
impl std::fmt::Debug for VaultBlob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VaultBlob")
            .field("ciphertext_len", &self.ciphertext.len())
            .field("iv_len", &self.iv.len())
            .field("mechanism", &self.mechanism)
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

/// Whether `blob` is Vault's protobuf rather than a Strongroom seal blob.
pub fn is_vault_blob(blob: &[u8]) -> bool {
    // Field 1 or 2, wire type 2 (length-delimited).
    matches!(blob.first(), Some(0x0a | 0x12))
}

/// Parses a Vault `EncryptedBlobInfo`.
///
/// # Errors
/// [`SealError::Malformed`] for anything that is not such a message.
pub fn parse(blob: &[u8]) -> Result<VaultBlob, SealError> {
    let malformed = |_| SealError::Malformed("not a Vault EncryptedBlobInfo protobuf");
    let mut out = VaultBlob::default();
    for field in Fields::new(blob) {
        match field.map_err(malformed)? {
            (1, v) => out.ciphertext = v.bytes().map_err(malformed)?.to_vec(),
            (2, v) => out.iv = v.bytes().map_err(malformed)?.to_vec(),
            (5, v) => {
                for inner in Fields::new(v.bytes().map_err(malformed)?) {
                    match inner.map_err(malformed)? {
                        (1, m) => out.mechanism = m.varint().map_err(malformed)?,
                        (3, id) => out.key_id = id.string().map_err(malformed)?.to_owned(),
                        (5, w) => out.wrapped_key = w.bytes().map_err(malformed)?.to_vec(),
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    if out.ciphertext.is_empty() {
        return Err(SealError::Malformed(
            "Vault EncryptedBlobInfo without ciphertext",
        ));
    }
    Ok(out)
}

/// Encodes a blob the way Vault does (for tests that need Vault's bytes
/// without running Vault; Strongroom never writes this format).
pub fn encode(blob: &VaultBlob) -> Vec<u8> {
    fn bytes_field(out: &mut Vec<u8>, number: u8, value: &[u8]) {
        if value.is_empty() {
            return;
        }
        out.push(number << 3 | 2);
        varint(out, value.len() as u64);
        out.extend_from_slice(value);
    }
    fn varint(out: &mut Vec<u8>, mut v: u64) {
        while v >= 0x80 {
            out.push((v as u8) | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }
    let mut key_info = Vec::new();
    if blob.mechanism != 0 {
        key_info.push(1 << 3);
        varint(&mut key_info, blob.mechanism);
    }
    bytes_field(&mut key_info, 3, blob.key_id.as_bytes());
    bytes_field(&mut key_info, 5, &blob.wrapped_key);
    let mut out = Vec::new();
    bytes_field(&mut out, 1, &blob.ciphertext);
    bytes_field(&mut out, 2, &blob.iv);
    // Vault always writes key_info, even when every field is empty.
    out.push(5 << 3 | 2);
    varint(&mut out, key_info.len() as u64);
    out.extend_from_slice(&key_info);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn round_trips_and_is_told_apart_from_strongroom_blobs() {
        let blob = VaultBlob {
            ciphertext: vec![1; 48],
            iv: vec![2; 12],
            mechanism: 1,
            key_id: "arn:aws:kms:us-east-1:123456789012:key/abc".into(),
            wrapped_key: vec![3; 100],
        };
        let raw = encode(&blob);
        assert!(is_vault_blob(&raw));
        assert_eq!(parse(&raw).unwrap(), blob);
        let ours = crate::blob::encode(crate::SealType::AwsKms, b"body");
        assert!(!is_vault_blob(&ours));
        assert!(parse(&ours).is_err());
    }

    #[test]
    fn missing_ciphertext_is_malformed() {
        let raw = encode(&VaultBlob::default());
        assert!(matches!(parse(&raw), Err(SealError::Malformed(_))));
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(raw in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = parse(&raw);
        }
    }
}
