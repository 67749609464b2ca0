//! Token checks for the `sys/*` operations the core serves itself.
//!
//! Tokens live in the logical layer's token store (hashes only, inside the
//! barrier); the core only asks it. A missing token is refused before any
//! lookup, so an empty header costs nothing.

use crate::logical::{LogicalError, TokenEntry};
use crate::{Core, CoreError};

impl Core {
    /// Looks `token` up in the token store.
    ///
    /// # Errors
    /// [`CoreError::Sealed`] while sealed (tokens live behind the barrier);
    /// [`CoreError::Standby`] on an HA standby (tokens are checked by the
    /// active node); [`CoreError::PermissionDenied`] for an empty, unknown or expired
    /// token; other logical-layer failures.
    pub async fn check_token(&self, token: &str) -> Result<TokenEntry, CoreError> {
        if token.is_empty() {
            return Err(CoreError::PermissionDenied);
        }
        let (logical, _) = self.serving().await?;
        match logical.check_token(token).await {
            Ok(entry) => Ok(entry),
            Err(LogicalError::PermissionDenied) => Err(CoreError::PermissionDenied),
            Err(e) => Err(e.into()),
        }
    }

    /// Like [`check_token`](Self::check_token), and the token must carry the
    /// root policy: every `sys/*` operation of the core (seal, rotate,
    /// key status, rekey) needs what only root tokens have here, since there
    /// are no ACL policies yet (the logical layer applies the same rule).
    ///
    /// # Errors
    /// As [`check_token`](Self::check_token); [`CoreError::PermissionDenied`]
    /// for a valid token without the root policy.
    pub(crate) async fn require_root_token(&self, token: &str) -> Result<TokenEntry, CoreError> {
        let entry = self.check_token(token).await?;
        if entry.is_root() {
            Ok(entry)
        } else {
            Err(CoreError::PermissionDenied)
        }
    }
}
