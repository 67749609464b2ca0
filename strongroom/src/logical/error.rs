//! [`LogicalError`]: why a logical request failed, and which HTTP status
//! Vault answers for it.

use seal_core::StorageError;

/// The message of [`LogicalError::UnsupportedPath`] for a path no handler
/// serves inside `sys/` and `auth/`.
pub(crate) const UNSUPPORTED_PATH: &str = "unsupported path";

/// Why a logical request (KV, tokens, mounts) failed.
///
/// Each variant maps to the HTTP status Vault answers with ([`Self::status`])
/// and to the strings Vault puts in its `{"errors":[...]}` body
/// ([`Self::errors`]), so the HTTP layer needs no knowledge of the router.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LogicalError {
    /// The request carries no token, or an unknown or expired one. Vault
    /// never says which, so a probing client learns nothing: 403
    /// `permission denied`.
    #[error("permission denied")]
    PermissionDenied,

    /// The token is valid but its policies do not allow the request (no
    /// rule, a `deny`, a missing capability or `sudo`, or a parameter
    /// constraint). 403 with Vault's multierror text
    /// `1 error occurred:\n\t* permission denied\n\n`.
    #[error("permission denied")]
    Denied,

    /// Access is refused with a specific message Vault also gives, for
    /// example the KV preflight check on a path no mount serves. 403.
    #[error("{0}")]
    Forbidden(String),

    /// The secret (or mount, token, version) does not exist: 404 with an
    /// empty `errors` list, exactly like Vault. The path is kept for logs.
    #[error("nothing found at {0:?}")]
    NotFound(String),

    /// No mount or engine route serves this path: 404 with Vault's message.
    #[error("{0}")]
    UnsupportedPath(String),

    /// The request is malformed: wrong JSON types, missing or invalid
    /// parameters, check-and-set mismatch. 400 with the message.
    #[error("{0}")]
    InvalidRequest(String),

    /// The path exists but does not accept this operation (for example
    /// LIST on a KV v2 `data/` path): 405 `unsupported operation`.
    #[error("unsupported operation {operation} on {path:?}")]
    UnsupportedOperation {
        /// The operation the client asked for (`read`, `list`, ...).
        operation: &'static str,
        /// The request path.
        path: String,
    },

    /// The storage below the router failed. 500; 503 when the barrier is
    /// sealed (its error text contains "Vault is sealed") or the backend is
    /// unreachable; 413 when a secret exceeds the backend's value limit; 400
    /// for a key the backend refuses.
    #[error("storage failure: {0}")]
    Storage(#[from] StorageError),

    /// An entry read back from storage does not decode: the data was written
    /// by something else or is corrupt. 500; the entry is left untouched.
    #[error(
        "stored entry {path} is unreadable ({reason}); it was not written by this version of strongroom or is corrupt"
    )]
    Corrupt {
        /// The storage key of the entry.
        path: String,
        /// What did not decode.
        reason: String,
    },

    /// Audit devices are enabled and none could record the request or its
    /// response, so it was refused (fail closed). 500 with Vault's
    /// `internal error`; the server log and the audit failure metrics say
    /// which device failed and why.
    #[error("no audit device could record the request")]
    AuditFailed,

    /// The operating system's random number generator failed while minting
    /// a token or identifier. 500; retry, and check the host's entropy source.
    #[error("random number generation failed: {0}")]
    Random(String),
}

impl LogicalError {
    /// The HTTP status code Vault answers for this error.
    pub fn status(&self) -> u16 {
        match self {
            Self::PermissionDenied | Self::Denied | Self::Forbidden(_) => 403,
            Self::NotFound(_) | Self::UnsupportedPath(_) => 404,
            Self::InvalidRequest(_) => 400,
            Self::UnsupportedOperation { .. } => 405,
            // A read-only takeover refuses writes (see `adopt`).
            Self::Storage(StorageError::InvalidKey { .. }) => 400,
            Self::Storage(StorageError::PermissionDenied { message, .. })
                if message == crate::adopt::READ_ONLY_MESSAGE =>
            {
                400
            }
            // The client sent a secret larger than the backend stores
            // (Consul: 512 KiB); Vault's HTTP layer answers 413 for these.
            Self::Storage(
                StorageError::ValueTooLarge { .. } | StorageError::TransactionTooLarge { .. },
            ) => 413,
            Self::Storage(err) if err.to_string().contains("Vault is sealed") => 503,
            Self::Storage(err) if err.is_transient() => 503,
            Self::Storage(_) | Self::Corrupt { .. } | Self::Random(_) | Self::AuditFailed => 500,
        }
    }

    /// The strings for Vault's `{"errors":[...]}` body. Empty for
    /// [`Self::NotFound`] (Vault answers a missing secret with `[]`);
    /// internal failures are summarised so storage details stay in the log.
    pub fn errors(&self) -> Vec<String> {
        match self {
            Self::NotFound(_) => Vec::new(),
            Self::Denied => vec!["1 error occurred:\n\t* permission denied\n\n".to_owned()],
            Self::AuditFailed => vec!["1 error occurred:\n\t* internal error\n\n".to_owned()],
            // Vault's router wraps these two in a multierror; clients that
            // match on the text see exactly Vault's.
            Self::UnsupportedOperation { .. } => {
                vec!["1 error occurred:\n\t* unsupported operation\n\n".to_owned()]
            }
            Self::UnsupportedPath(msg) if msg == UNSUPPORTED_PATH => {
                vec!["1 error occurred:\n\t* unsupported path\n\n".to_owned()]
            }
            Self::Storage(
                err @ (StorageError::ValueTooLarge { .. }
                | StorageError::TransactionTooLarge { .. }
                | StorageError::InvalidKey { .. }),
            ) => vec![err.to_string()],
            Self::Storage(StorageError::PermissionDenied { message, .. })
                if message == crate::adopt::READ_ONLY_MESSAGE =>
            {
                vec![message.clone()]
            }
            Self::Storage(_) | Self::Corrupt { .. } | Self::Random(_) => {
                vec![format!("internal error: {self}")]
            }
            other => vec![other.to_string()],
        }
    }

    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        Self::InvalidRequest(message.into())
    }

    pub(crate) fn corrupt(path: &str, reason: impl ToString) -> Self {
        Self::Corrupt {
            path: path.to_owned(),
            reason: reason.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_match_vault() {
        assert_eq!(LogicalError::PermissionDenied.status(), 403);
        assert_eq!(LogicalError::Denied.status(), 403);
        assert_eq!(
            LogicalError::Denied.errors(),
            ["1 error occurred:\n\t* permission denied\n\n"]
        );
        assert_eq!(
            LogicalError::PermissionDenied.errors(),
            ["permission denied"]
        );
        let missing = LogicalError::NotFound("secret/x".into());
        assert_eq!(missing.status(), 404);
        assert!(missing.errors().is_empty());
        assert_eq!(LogicalError::invalid("bad").status(), 400);
        let op = LogicalError::UnsupportedOperation {
            operation: "list",
            path: "x".into(),
        };
        assert_eq!(op.status(), 405);
        assert_eq!(
            op.errors(),
            ["1 error occurred:\n\t* unsupported operation\n\n"]
        );
        let path = LogicalError::UnsupportedPath(UNSUPPORTED_PATH.into());
        assert_eq!(
            path.errors(),
            ["1 error occurred:\n\t* unsupported path\n\n"]
        );
        assert_eq!(path.to_string(), "unsupported path");
        let sealed = LogicalError::Storage(StorageError::Unavailable {
            op: "get",
            key: "core/mounts".into(),
            message: "Vault is sealed".into(),
            source: None,
        });
        assert_eq!(sealed.status(), 503);
        assert_eq!(LogicalError::corrupt("k", "bad json").status(), 500);
        let big = LogicalError::Storage(StorageError::ValueTooLarge {
            op: "put",
            key: "logical/x/y".into(),
            size: 600_000,
            limit: 524_288,
        });
        assert_eq!(big.status(), 413);
        assert!(big.errors()[0].contains("exceeds the storage limit"));
    }
}
