//! The [`Storage`] trait: a flat key/value store of opaque bytes.
//!
//! Everything Strongroom keeps at rest goes through this trait, almost all of
//! it already encrypted by the barrier. The contract is small on purpose so
//! that an embedded file, Consul or memory can all implement it exactly.

use std::collections::BTreeSet;
use std::fmt::Debug;

use async_trait::async_trait;

use crate::BoxError;

/// Longest key, in bytes, any backend accepts. Consul puts keys in URL paths;
/// a bound keeps every backend's behaviour the same.
pub const MAX_KEY_LEN: usize = 2048;

/// One write inside an atomic [`Storage::transaction`].
#[derive(Clone, PartialEq, Eq)]
pub enum TxnOp {
    /// Create or replace `key` with `value`.
    Put {
        /// The key to write.
        key: String,
        /// The bytes to store.
        value: Vec<u8>,
    },
    /// Remove `key`; removing a missing key is not an error.
    Delete {
        /// The key to remove.
        key: String,
    },
}

impl TxnOp {
    /// Shorthand for [`TxnOp::Put`].
    pub fn put(key: impl Into<String>, value: impl Into<Vec<u8>>) -> Self {
        Self::Put {
            key: key.into(),
            value: value.into(),
        }
    }

    /// Shorthand for [`TxnOp::Delete`].
    pub fn delete(key: impl Into<String>) -> Self {
        Self::Delete { key: key.into() }
    }

    /// The key this operation touches.
    pub fn key(&self) -> &str {
        match self {
            Self::Put { key, .. } | Self::Delete { key } => key,
        }
    }
}

// Values are usually ciphertext, but never print them: a caller may store
// plaintext through a raw backend.
impl Debug for TxnOp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Put { key, value } => f
                .debug_struct("Put")
                .field("key", key)
                .field("value_len", &value.len())
                .finish(),
            Self::Delete { key } => f.debug_struct("Delete").field("key", key).finish(),
        }
    }
}

/// Limits a backend enforces, so callers can refuse early with a clear error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StorageLimits {
    /// Largest value in bytes a single put accepts (`None`: no limit).
    pub max_value_size: Option<usize>,
    /// Most operations one atomic transaction accepts (`None`: no limit).
    pub max_transaction_ops: Option<usize>,
}

/// A durable key/value store of opaque bytes.
///
/// # Keys
/// Keys are UTF-8 strings of `/`-separated segments, 1..=[`MAX_KEY_LEN`]
/// bytes. Unicode and spaces are fine. Every implementation rejects, with
/// [`StorageError::InvalidKey`] and without touching its data, a key that
/// is empty, starts or ends with `/`, has an empty segment (`a//b`), a `.` or
/// `..` segment, or an ASCII control character. [`validate_key`] implements
/// the rule; backends call it rather than re-implement it.
///
/// # To ensure correctness
/// * `put` and `transaction` return `Ok` only after the data is durable by
///   the backend's definition (fsync'd file, Consul raft commit). An
///   acknowledged write survives a crash of the process.
/// * `get` after an acknowledged `put` in the same process returns the new
///   value (read-your-writes).
/// * `delete` of a missing key succeeds.
/// * `list(prefix)` returns the *immediate children* of `prefix`: for every
///   key starting with `prefix`, the rest of the key up to and including its
///   first `/`. Folders therefore end in `/`, leaf keys do not; each name
///   appears once; the result is sorted by byte order. `prefix` may be empty
///   (the root), a folder (`"core/"`) or any partial name (`"co"` lists
///   `"re/"`). A prefix with no keys under it yields an empty list.
/// * `transaction` applies all of its operations or none of them. It is
///   validated as a whole first: one invalid key, oversized value or too many
///   operations fails the transaction and leaves storage unchanged. Operations
///   apply in order, so a later operation on the same key wins.
/// * Concurrent calls are safe; each single call is atomic.
#[async_trait]
pub trait Storage: Send + Sync + Debug + 'static {
    /// Reads `key`; `Ok(None)` when it does not exist.
    ///
    /// # Errors
    /// [`StorageError::InvalidKey`] for a malformed key; backend failures.
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StorageError>;

    /// Creates or replaces `key`.
    ///
    /// # Errors
    /// [`StorageError::InvalidKey`], [`StorageError::ValueTooLarge`], backend
    /// failures. On error nothing is written.
    async fn put(&self, key: &str, value: &[u8]) -> Result<(), StorageError>;

    /// Removes `key`; a missing key is not an error.
    ///
    /// # Errors
    /// [`StorageError::InvalidKey`]; backend failures.
    async fn delete(&self, key: &str) -> Result<(), StorageError>;

    /// Lists the immediate children of `prefix` (see the trait docs).
    ///
    /// # Errors
    /// [`StorageError::InvalidKey`] for a malformed prefix; backend failures.
    async fn list(&self, prefix: &str) -> Result<Vec<String>, StorageError>;

    /// Applies `ops` atomically: all or nothing.
    ///
    /// # Errors
    /// [`StorageError::TransactionTooLarge`] beyond
    /// [`StorageLimits::max_transaction_ops`]; any error a single operation
    /// could give. On error nothing is written.
    async fn transaction(&self, ops: Vec<TxnOp>) -> Result<(), StorageError>;

    /// The limits this backend enforces.
    fn limits(&self) -> StorageLimits {
        StorageLimits::default()
    }
}

/// Why a [`Storage`] call failed.
///
/// Every variant names the operation and the key so a log line alone tells
/// an operator what was being done where.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StorageError {
    /// The key breaks the rules in the [`Storage`] docs.
    #[error("invalid storage key {key:?}: {reason}")]
    InvalidKey {
        /// The offending key.
        key: String,
        /// Which rule it breaks.
        reason: &'static str,
    },
    /// A value is larger than the backend accepts.
    #[error("{op} {key}: value of {size} bytes exceeds the storage limit of {limit} bytes")]
    ValueTooLarge {
        /// The operation (`put`, `transaction`).
        op: &'static str,
        /// The key being written.
        key: String,
        /// The value's size in bytes.
        size: usize,
        /// The backend's limit in bytes.
        limit: usize,
    },
    /// A transaction has more operations or bytes than the backend accepts,
    /// and splitting it would break its atomicity.
    #[error("transaction of {ops} operations refused: {reason}")]
    TransactionTooLarge {
        /// Number of operations in the transaction.
        ops: usize,
        /// Which limit was exceeded, with its value.
        reason: String,
    },
    /// The backend refused the credentials (for example a Consul ACL token).
    #[error("{op} {key}: permission denied by the storage backend: {message}")]
    PermissionDenied {
        /// The operation.
        op: &'static str,
        /// The key.
        key: String,
        /// What the backend said, and what to check.
        message: String,
    },
    /// The backend could not be reached or cannot serve right now
    /// (connection refused, timeout, no cluster leader, rate limited).
    /// Retrying later may succeed; nothing was written.
    #[error("{op} {key}: storage unavailable: {message}")]
    Unavailable {
        /// The operation.
        op: &'static str,
        /// The key.
        key: String,
        /// What failed, in operator words.
        message: String,
        /// The underlying error, when there is one.
        #[source]
        source: Option<BoxError>,
    },
    /// The write was refused because it is fenced on an HA lock this node
    /// no longer holds (see [`crate::HaLock::fencing_token`]): another node
    /// may be active. Nothing of the write was stored, and retrying cannot
    /// help: the node must step down. The source says which lock and
    /// session.
    #[error("{op} {key}: {source}")]
    Fenced {
        /// The operation.
        op: &'static str,
        /// The key.
        key: String,
        /// The backend's refusal.
        #[source]
        source: BoxError,
    },
    /// Any other backend failure (corrupt database, unexpected response).
    #[error("{op} {key}: {source}")]
    Backend {
        /// The operation.
        op: &'static str,
        /// The key.
        key: String,
        /// The underlying error.
        #[source]
        source: BoxError,
    },
}

impl StorageError {
    /// Whether retrying the same call later may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Unavailable { .. })
    }

    /// Whether the write was refused by an HA write fence: this node lost
    /// the lock and must step down (see [`StorageError::Fenced`]).
    pub fn is_fenced(&self) -> bool {
        matches!(self, Self::Fenced { .. })
    }

    /// Shorthand for a [`StorageError::Backend`].
    pub fn backend(op: &'static str, key: &str, source: impl Into<BoxError>) -> Self {
        Self::Backend {
            op,
            key: key.to_owned(),
            source: source.into(),
        }
    }
}

fn invalid(key: &str, reason: &'static str) -> StorageError {
    StorageError::InvalidKey {
        key: key.chars().take(128).collect(),
        reason,
    }
}

/// Checks `key` against the key rules in the [`Storage`] docs.
///
/// # Errors
/// [`StorageError::InvalidKey`] naming the rule broken.
pub fn validate_key(key: &str) -> Result<(), StorageError> {
    if key.is_empty() {
        return Err(invalid(key, "empty key"));
    }
    if key.ends_with('/') {
        return Err(invalid(key, "a key must not end with '/'"));
    }
    validate_segments(key)
}

/// Checks a [`Storage::list`] prefix: empty, or a key that may end in `/`.
///
/// # Errors
/// [`StorageError::InvalidKey`] naming the rule broken.
pub fn validate_prefix(prefix: &str) -> Result<(), StorageError> {
    if prefix.is_empty() {
        return Ok(());
    }
    let body = prefix.strip_suffix('/').unwrap_or(prefix);
    validate_segments(body).map_err(|err| match err {
        StorageError::InvalidKey { reason, .. } => invalid(prefix, reason),
        other => other,
    })
}

fn validate_segments(key: &str) -> Result<(), StorageError> {
    if key.is_empty() {
        return Err(invalid(key, "empty segment"));
    }
    if key.len() > MAX_KEY_LEN {
        return Err(invalid(key, "key longer than 2048 bytes"));
    }
    if key.starts_with('/') {
        return Err(invalid(key, "a key must not start with '/'"));
    }
    if key.chars().any(|c| c.is_ascii_control()) {
        return Err(invalid(key, "control characters are not allowed"));
    }
    for segment in key.split('/') {
        match segment {
            "" => return Err(invalid(key, "empty segment ('//')")),
            "." | ".." => return Err(invalid(key, "'.' and '..' segments are not allowed")),
            _ => {}
        }
    }
    Ok(())
}

/// Computes [`Storage::list`]'s answer from every key that starts with
/// `prefix`, so backends share one definition of "immediate children".
///
/// Keys not starting with `prefix` are ignored; the result is sorted and
/// free of duplicates.
pub fn list_children<'a>(prefix: &str, keys: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    let mut children = BTreeSet::new();
    for key in keys {
        let Some(rest) = key.strip_prefix(prefix) else {
            continue;
        };
        if rest.is_empty() {
            continue;
        }
        let child = match rest.find('/') {
            Some(slash) => &rest[..=slash],
            None => rest,
        };
        if !children.contains(child) {
            children.insert(child.to_owned());
        }
    }
    children.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_rules() {
        for good in [
            "a",
            "core/keyring",
            "ü/ñ",
            "with space/x",
            "a.b/.hidden",
            "x/..y",
        ] {
            validate_key(good).unwrap_or_else(|e| panic!("{good}: {e}"));
        }
        for bad in [
            "", "/a", "a/", "a//b", "a/./b", "a/../b", "..", ".", "a\0b", "a\nb",
        ] {
            assert!(validate_key(bad).is_err(), "{bad:?} accepted");
        }
        assert!(validate_key(&"k".repeat(MAX_KEY_LEN)).is_ok());
        assert!(validate_key(&"k".repeat(MAX_KEY_LEN + 1)).is_err());
    }

    #[test]
    fn prefix_rules() {
        for good in ["", "core/", "co", "a/b/", "a/b"] {
            validate_prefix(good).unwrap_or_else(|e| panic!("{good}: {e}"));
        }
        for bad in ["/", "/a", "a//", "a/../", "./"] {
            assert!(validate_prefix(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn children() {
        let keys = ["a/b/c", "a/b/d", "a/e", "ab", "b", "a/f/"];
        assert_eq!(list_children("", keys), ["a/", "ab", "b"]);
        assert_eq!(list_children("a/", keys), ["b/", "e", "f/"]);
        assert_eq!(list_children("a", keys), ["/", "b"]);
        assert!(list_children("zz", keys).is_empty());
    }
}
