//! [`BarrierError`]: everything that can go wrong inside the barrier.

use seal_core::{SecretError, StorageError};

/// Why a barrier operation failed.
///
/// Messages are written for an operator reading a log: they say what failed,
/// where, and what to check. None of them ever carries key bytes or
/// plaintext. Every authentication failure of a data entry is the single,
/// deliberately opaque [`BarrierError::Decrypt`], so an attacker probing with
/// forged ciphertexts learns nothing from the error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BarrierError {
    /// The barrier holds no keys: it was never unsealed, or it was sealed.
    /// HTTP layers map this to 503, as Vault does.
    #[error(
        "Vault is sealed: the barrier holds no keys; unseal it (unseal keys or the auto-unseal seal) before reading or writing"
    )]
    Sealed,

    /// `core/keyring` does not exist, so there is nothing to unseal.
    #[error(
        "the barrier is not initialized: core/keyring does not exist in storage; initialize it first, or check that this node points at the right storage (path, Consul prefix)"
    )]
    NotInitialized,

    /// `core/keyring` already exists; initializing again would orphan
    /// every stored entry.
    #[error(
        "the barrier is already initialized: core/keyring exists in storage; unseal it instead of initializing again"
    )]
    AlreadyInitialized,

    /// The root key does not open `core/keyring`.
    #[error(
        "unseal failed, invalid key: the root key does not decrypt core/keyring; check that the unseal keys (or the seal's stored root key) belong to this storage"
    )]
    InvalidRootKey,

    /// A ciphertext failed authentication: it was tampered with, was stored
    /// under another path, or was written under a different key. One opaque
    /// variant on purpose (see the type docs).
    #[error(
        "decryption failed: the entry is corrupt, was tampered with, or was stored under another path"
    )]
    Decrypt,

    /// The input is shorter than the smallest possible barrier ciphertext
    /// (term, version, nonce and tag: 33 bytes).
    #[error(
        "invalid ciphertext: {len} bytes is shorter than the {min}-byte minimum of a barrier entry; the entry is truncated or was not written by the barrier"
    )]
    TooShort {
        /// Length received.
        len: usize,
        /// Smallest valid length.
        min: usize,
    },

    /// The version byte is not one this barrier writes (0x02).
    #[error(
        "invalid ciphertext: unknown barrier version byte 0x{version:02x} (expected 0x02); the entry is corrupt or was not written by the barrier"
    )]
    UnknownVersion {
        /// The version byte found.
        version: u8,
    },

    /// The entry names a key term the keyring does not hold.
    #[error(
        "no decryption key available for term {term}; if another node rotated the key, reload the keyring (standbys do this on their own), otherwise the entry is corrupt"
    )]
    UnknownTerm {
        /// The term found in the entry.
        term: u32,
    },

    /// `core/keyring` decrypted but its contents are not a valid keyring.
    #[error("core/keyring is corrupt: {reason}; restore core/keyring from a backup of the storage")]
    CorruptKeyring {
        /// What is wrong with it.
        reason: String,
    },

    /// The path is the barrier's own bookkeeping (`core/keyring`,
    /// `core/master`); the encrypted view neither reads nor writes it, since
    /// a write would destroy the keyring.
    #[error(
        "{op} {path}: refused, the path is reserved for the barrier's keyring; use another key"
    )]
    ReservedPath {
        /// The operation attempted.
        op: &'static str,
        /// The reserved path.
        path: String,
    },

    /// The key term counter would overflow (4 294 967 295 rotations).
    #[error("cannot rotate: the key term is already {term}, the largest possible")]
    TermExhausted {
        /// The current term.
        term: u32,
    },

    /// A key of a length AES-GCM does not accept was found in the keyring
    /// or given to the barrier.
    #[error("{what} must be 16 or 32 bytes, got {len}")]
    InvalidKeyLength {
        /// Which key.
        what: &'static str,
        /// Its length.
        len: usize,
    },

    /// The AEAD backend refused to encrypt (it does not for valid keys and
    /// sizes; seeing this points at a broken crypto library build).
    #[error("AES-GCM encryption failed in the {backend} backend")]
    Encrypt {
        /// The backend's name.
        backend: &'static str,
    },

    /// The operating system's random number generator failed, so no key or
    /// nonce could be made. Nothing was written.
    #[error("the operating system's random number generator failed: {0}")]
    Random(String),

    /// The keyring could not be serialized.
    #[error("serializing the keyring failed: {0}")]
    Serialize(String),

    /// The underlying storage failed; the inner error names the operation and
    /// key.
    #[error("barrier storage: {0}")]
    Storage(#[from] StorageError),
}

impl From<SecretError> for BarrierError {
    fn from(err: SecretError) -> Self {
        match err {
            SecretError::InvalidLength { actual, .. } => Self::InvalidKeyLength {
                what: "key",
                len: actual,
            },
            other => Self::Random(other.to_string()),
        }
    }
}
