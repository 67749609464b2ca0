//! [`CoreError`], the one error type of the core.

use barrier::BarrierError;
use seal_core::{SealError, StorageError};
use seal_shamir::ShamirError;

use crate::logical::LogicalError;

/// Why a [`Core`](crate::Core) operation failed.
///
/// Each variant maps to the HTTP status Vault answers with
/// ([`CoreError::status`]); messages follow Vault's wording where clients or
/// operators know it, then say what to check. None carries key material or
/// tokens.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CoreError {
    /// The barrier is sealed: nothing behind it can be read or written.
    #[error("Vault is sealed")]
    Sealed,
    /// The operation needs an initialized store; run `operator init` first.
    #[error("Vault is not initialized")]
    NotInitialized,
    /// `init` was called on an initialized store.
    #[error("Vault is already initialized")]
    AlreadyInitialized,
    /// `unseal_reset` (or another sealed-only step) on an unsealed node.
    #[error("vault is unsealed")]
    AlreadyUnsealed,
    /// The request's parameters are wrong; the message says which and why.
    #[error("{0}")]
    InvalidRequest(String),
    /// An unseal, recovery or rekey key was malformed or did not open the
    /// stored keys. Progress was reset when the threshold had been reached.
    #[error("{0}")]
    InvalidKey(String),
    /// This node is an HA standby: the request belongs to the active node,
    /// whose address is given when known (the HTTP layer forwards there or
    /// redirects with 307).
    #[error("{}", standby_message(.leader_address.as_deref()))]
    Standby {
        /// The active node's `api_addr`, when known.
        leader_address: Option<String>,
    },
    /// The node stopped being the active node while serving the request
    /// (the HA lock was lost or given up); from that moment it refuses
    /// every storage operation, so nothing after it was written.
    #[error(
        "this node lost its active status during the request (the HA lock was lost or given \
         up), so the request was stopped; retry it: it will reach the new active node"
    )]
    LeadershipLost,
    /// `sys/seal` on a standby (Vault's wording): seal the active node, or
    /// stop this one.
    #[error("vault cannot seal when in standby mode; please restart instead")]
    CannotSealStandby,
    /// The token is missing, unknown, expired, or not allowed here.
    #[error("permission denied")]
    PermissionDenied,
    /// The seal (Shamir KEK or a KMS) failed.
    #[error("{op}: {source}")]
    Seal {
        /// What the core was doing, e.g. "fetching stored unseal keys failed".
        op: &'static str,
        /// The seal's classified error.
        #[source]
        source: SealError,
    },
    /// The logical layer (mounts, tokens, KV) failed.
    #[error(transparent)]
    Logical(#[from] LogicalError),
    /// Physical storage failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// The barrier failed.
    #[error(transparent)]
    Barrier(#[from] BarrierError),
    /// A stored core entry (seal config, stored keys) could not be read
    /// back: storage holds something this version did not write.
    #[error("corrupt {path}: {reason}; the entry was not written by this version or was altered")]
    Corrupt {
        /// The storage path of the entry.
        path: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The operating system's random source failed.
    #[error("the operating system's random number generator failed: {0}")]
    Random(String),
    /// The core was configured in a way it cannot run.
    #[error("invalid core configuration: {0}")]
    Config(String),
    /// Taking over (or upgrading) a data set Vault wrote failed; the
    /// message names the entry and why.
    #[error("{0}")]
    VaultTakeover(String),
}

impl CoreError {
    /// The HTTP status Vault answers this error with: 400 for caller
    /// mistakes, 403 for token problems, 503 while sealed, 500 otherwise.
    pub fn status(&self) -> u16 {
        match self {
            Self::Sealed => 503,
            Self::NotInitialized
            | Self::AlreadyInitialized
            | Self::AlreadyUnsealed
            | Self::InvalidRequest(_)
            | Self::InvalidKey(_) => 400,
            Self::PermissionDenied => 403,
            Self::Standby { .. } | Self::LeadershipLost => 503,
            Self::CannotSealStandby => 500,
            Self::Logical(e) => e.status(),
            Self::Barrier(BarrierError::Sealed) => 503,
            Self::Seal { source, .. } if source.is_transient() => 503,
            Self::Seal { .. }
            | Self::Storage(_)
            | Self::Barrier(_)
            | Self::Corrupt { .. }
            | Self::Random(_)
            | Self::Config(_)
            | Self::VaultTakeover(_) => 500,
        }
    }

    /// The strings for Vault's `{"errors":[...]}` body. Internal failures
    /// are summarised; the full error belongs in the server log.
    pub fn errors(&self) -> Vec<String> {
        match self {
            Self::Logical(e) => e.errors(),
            other => vec![other.to_string()],
        }
    }

    pub(crate) fn seal(op: &'static str, source: SealError) -> Self {
        Self::Seal { op, source }
    }
}

fn standby_message(leader: Option<&str>) -> String {
    match leader {
        Some(addr) => format!("Vault is in standby mode; the active node is {addr}"),
        None => "Vault is in standby mode and no active node is known yet (local node not \
                 active but active cluster node not found)"
            .to_owned(),
    }
}

/// Maps a parse failure of the core entry at `path` to
/// [`CoreError::Corrupt`].
pub(crate) fn corrupt(path: &'static str) -> impl FnOnce(String) -> CoreError {
    move |reason| CoreError::Corrupt { path, reason }
}

impl From<ShamirError> for CoreError {
    fn from(err: ShamirError) -> Self {
        match err {
            ShamirError::Random(msg) => Self::Random(msg),
            other => Self::InvalidKey(other.to_string()),
        }
    }
}

impl From<seal_core::SecretError> for CoreError {
    fn from(err: seal_core::SecretError) -> Self {
        match err {
            seal_core::SecretError::Random(msg) => Self::Random(msg),
            other => Self::InvalidKey(format!("invalid key: {other}")),
        }
    }
}
