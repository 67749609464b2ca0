//! The [`Seal`] trait: what protects the barrier's root key at rest.

use std::fmt::{self, Debug};

use async_trait::async_trait;
use zeroize::Zeroizing;

/// The kinds of seal, named as Vault names them in `sys/seal-status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SealType {
    /// Shamir unseal keys entered by operators.
    Shamir,
    /// Auto-unseal through AWS KMS.
    AwsKms,
    /// The insecure in-process auto seal used by tests.
    Test,
}

impl SealType {
    /// Vault's name for the seal type (`"shamir"`, `"awskms"`, `"test"`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Shamir => "shamir",
            Self::AwsKms => "awskms",
            Self::Test => "test",
        }
    }

    /// Whether the seal unseals without operators (auto-unseal). Auto seals
    /// hand out recovery keys instead of unseal keys.
    pub fn is_auto(self) -> bool {
        !matches!(self, Self::Shamir)
    }

    /// The byte that marks blobs of this seal type (see [`blob`]).
    fn code(self) -> u8 {
        match self {
            Self::Shamir => 1,
            Self::AwsKms => 2,
            Self::Test => 0xFE,
        }
    }

    fn from_code(code: u8) -> Option<Self> {
        [Self::Shamir, Self::AwsKms, Self::Test]
            .into_iter()
            .find(|t| t.code() == code)
    }
}

impl fmt::Display for SealType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Encrypts and decrypts small secrets (the root key, the recovery key)
/// for storage in plaintext physical storage.
///
/// # To ensure correctness
/// * `decrypt` input is attacker-controlled: storage may be tampered with.
///   It must never panic, whatever the bytes, and must authenticate before
///   returning anything.
/// * Every authentication failure (tampered blob, wrong key, wrong `aad`)
///   is the one opaque [`SealError::Decrypt`]; say nothing about which part
///   failed.
/// * A blob made by another kind of seal is refused
///   ([`SealError::WrongSealType`]); use [`blob::encode`] / [`blob::decode`]
///   for the header.
/// * `encrypt` is randomized: two calls on the same input give different
///   blobs.
/// * Failures of a remote key service are classified (unreachable, access
///   denied, key disabled, key not found, throttled) so the core can act on
///   them and operators can read them; messages name the key and region,
///   never key material.
#[async_trait]
pub trait Seal: Send + Sync + Debug + 'static {
    /// The kind of seal.
    fn seal_type(&self) -> SealType;

    /// Encrypts `plaintext`, binding `aad` (typically the storage path).
    ///
    /// # Errors
    /// [`SealError::NotReady`] when the seal has no key yet (Shamir before
    /// unseal); remote failures for KMS-backed seals.
    async fn encrypt(&self, plaintext: &[u8], aad: &[u8]) -> Result<Vec<u8>, SealError>;

    /// Decrypts a blob produced by [`Seal::encrypt`] with the same `aad`.
    ///
    /// # Errors
    /// [`SealError::Decrypt`] on any authentication failure,
    /// [`SealError::Malformed`] / [`SealError::WrongSealType`] for bytes that
    /// are not this seal's blob; remote failures for KMS-backed seals.
    async fn decrypt(&self, blob: &[u8], aad: &[u8]) -> Result<Zeroizing<Vec<u8>>, SealError>;

    /// Re-encrypts `blob` under the seal's current key when it was made
    /// under an earlier one (a changed key id), as Vault's `UpgradeKeys`
    /// does after unseal. `Ok(None)`: keep the blob as it is (the default,
    /// for seals whose key never changes under them).
    ///
    /// # Errors
    /// [`SealError::Decrypt`] when the blob does not open with `aad`;
    /// remote failures for KMS-backed seals.
    async fn rewrap(&self, blob: &[u8], aad: &[u8]) -> Result<Option<Vec<u8>>, SealError> {
        let _ = (blob, aad);
        Ok(None)
    }

    /// Checks the seal works end to end by encrypting and decrypting a test
    /// value.
    ///
    /// # Errors
    /// Whatever [`Seal::encrypt`] or [`Seal::decrypt`] returned.
    async fn health_check(&self) -> Result<(), SealError> {
        let probe = b"strongroom seal health check";
        let blob = self.encrypt(probe, b"health-check").await?;
        let back = self.decrypt(&blob, b"health-check").await?;
        if back.as_slice() == probe {
            Ok(())
        } else {
            Err(SealError::Decrypt)
        }
    }
}

/// Why a [`Seal`] call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SealError {
    /// Authentication failed: the blob was tampered with, belongs to another
    /// key, or the `aad` differs. Deliberately says nothing more.
    #[error("decryption failed: the blob is corrupt or was sealed under another key")]
    Decrypt,
    /// The bytes are not a blob of any known format.
    #[error("malformed seal blob: {0}")]
    Malformed(&'static str),
    /// The blob was made by another kind of seal.
    #[error("seal blob was made by a {found} seal, but this is a {expected} seal")]
    WrongSealType {
        /// This seal's type.
        expected: SealType,
        /// The type recorded in the blob (`None`: unknown code).
        found: BlobSealType,
    },
    /// The seal has no key yet (a Shamir seal before its unseal keys were
    /// combined).
    #[error("seal not ready: {0}")]
    NotReady(String),
    /// The key service could not be reached or timed out.
    #[error("seal backend unreachable: {0}")]
    Unreachable(String),
    /// The key service refused the credentials or the key policy.
    #[error("seal access denied: {0}")]
    AccessDenied(String),
    /// The key exists but is disabled.
    #[error("seal key disabled: {0}")]
    KeyDisabled(String),
    /// The key does not exist (or lives in another region/account).
    #[error("seal key not found: {0}")]
    KeyNotFound(String),
    /// The key service is rate limiting us.
    #[error("seal backend throttled the request: {0}")]
    Throttled(String),
    /// Any other failure of the seal backend.
    #[error("seal backend error: {0}")]
    Backend(String),
}

impl SealError {
    /// Whether retrying later may succeed (unreachable, throttled).
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Unreachable(_) | Self::Throttled(_))
    }
}

/// The seal type recorded in a blob header, printable even when unknown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlobSealType(pub Option<SealType>);

impl fmt::Display for BlobSealType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(t) => f.write_str(t.as_str()),
            None => f.write_str("unknown"),
        }
    }
}

/// The header every seal blob starts with, so a blob of one seal kind is
/// refused by another with a clear error rather than a decrypt failure.
///
/// Layout: `0x53 ('S') | format version 0x01 | seal type code | body`.
pub mod blob {
    use super::{BlobSealType, SealError, SealType};

    const MAGIC: u8 = 0x53;
    const VERSION: u8 = 0x01;
    /// Bytes of header before the body.
    pub const HEADER_LEN: usize = 3;

    /// Prefixes `body` with the header for `seal_type`.
    pub fn encode(seal_type: SealType, body: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER_LEN + body.len());
        out.extend_from_slice(&[MAGIC, VERSION, seal_type.code()]);
        out.extend_from_slice(body);
        out
    }

    /// Checks the header and returns the body.
    ///
    /// # Errors
    /// [`SealError::Malformed`] for a short or unknown header,
    /// [`SealError::WrongSealType`] when the blob belongs to another seal.
    pub fn decode(expected: SealType, blob: &[u8]) -> Result<&[u8], SealError> {
        let Some((header, body)) = blob.split_first_chunk::<HEADER_LEN>() else {
            return Err(SealError::Malformed("shorter than the seal blob header"));
        };
        let [magic, version, code] = *header;
        if magic != MAGIC {
            return Err(SealError::Malformed("not a strongroom seal blob"));
        }
        if version != VERSION {
            return Err(SealError::Malformed("unsupported seal blob version"));
        }
        let found = SealType::from_code(code);
        if found != Some(expected) {
            return Err(SealError::WrongSealType {
                expected,
                found: BlobSealType(found),
            });
        }
        Ok(body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blob_header_round_trip_and_refusals() {
        let b = blob::encode(SealType::AwsKms, b"body");
        assert_eq!(blob::decode(SealType::AwsKms, &b).unwrap(), b"body");
        let err = blob::decode(SealType::Shamir, &b).unwrap_err();
        assert_eq!(
            err.to_string(),
            "seal blob was made by a awskms seal, but this is a shamir seal"
        );
        assert!(matches!(
            blob::decode(SealType::Shamir, &[]),
            Err(SealError::Malformed(_))
        ));
        assert!(matches!(
            blob::decode(SealType::Shamir, &[0x53, 9, 1]),
            Err(SealError::Malformed(_))
        ));
    }
}
