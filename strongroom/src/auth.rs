//! Token and policy checks for the `sys/*` operations the core serves
//! itself (seal, step-down, rotate, key status, metrics).
//!
//! Tokens and policies live in the logical layer (inside the barrier); the
//! core only asks it, so the same ACL rules apply to these endpoints as to
//! every routed request. A missing token is refused before any lookup, so
//! an empty header costs nothing.

use serde::Serialize;

use crate::logical::{
    LogicalError, LogicalRequest, LogicalResponse, Operation, Outcome, TokenEntry,
};
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

    /// Checks that `token` may perform `op` on `path` under its ACL
    /// policies, with `sudo` where Vault requires it (`sys/seal`,
    /// `sys/step-down`, `sys/rotate`, ...). Returns the token's entry.
    ///
    /// # Errors
    /// [`CoreError::Sealed`] while sealed; [`CoreError::PermissionDenied`]
    /// for an empty, unknown or expired token; a 403
    /// [`LogicalError::Denied`] (as [`CoreError::Logical`]) when the token's
    /// policies do not allow the request; storage failures.
    pub async fn authorize(
        &self,
        token: &str,
        op: Operation,
        path: &str,
    ) -> Result<TokenEntry, CoreError> {
        if token.is_empty() {
            return Err(CoreError::PermissionDenied);
        }
        // Waits for a node that has just taken the HA lock to load.
        let (logical, _) = self.serving().await?;
        match logical.authorize(token, op, path).await {
            Ok(entry) => Ok(entry),
            Err(LogicalError::PermissionDenied) => Err(CoreError::PermissionDenied),
            Err(e) => Err(e.into()),
        }
    }

    /// Runs `work` for a `sys/*` endpoint the core serves itself (rotate,
    /// key status, rotation config), as the router would: the token's ACL
    /// is checked (with `sudo` where Vault requires it), the request is
    /// recorded on the audit devices before `work` runs (500 when none can),
    /// and its result after.
    ///
    /// # Errors
    /// As [`authorize`](Self::authorize); a 500 when audit devices are
    /// enabled and none can record the request or response; `work`'s error.
    pub(crate) async fn audited<T, F>(
        &self,
        token: &str,
        op: Operation,
        path: &str,
        work: F,
    ) -> Result<T, CoreError>
    where
        T: Serialize,
        F: Future<Output = Result<T, CoreError>>,
    {
        self.audited_with(token, op, path, None, work).await
    }

    /// [`audited`](Self::audited) with the request's body, which the ACL's
    /// parameter rules and the audit entry see.
    pub(crate) async fn audited_with<T, F>(
        &self,
        token: &str,
        op: Operation,
        path: &str,
        data: Option<serde_json::Value>,
        work: F,
    ) -> Result<T, CoreError>
    where
        T: Serialize,
        F: Future<Output = Result<T, CoreError>>,
    {
        if token.is_empty() {
            return Err(CoreError::PermissionDenied);
        }
        // Waits for a node that has just taken the HA lock to load.
        let (logical, _) = self.serving().await?;
        let ticket = match logical
            .begin(
                LogicalRequest::new(op, path)
                    .with_token(token)
                    .with_data(data.unwrap_or_default()),
            )
            .await
        {
            Ok(ticket) => ticket,
            Err(LogicalError::PermissionDenied) => return Err(CoreError::PermissionDenied),
            Err(e) => return Err(e.into()),
        };
        let result = work.await;
        let response;
        let outcome = match &result {
            Ok(value) => {
                response = LogicalResponse::ok(serde_json::to_value(value).unwrap_or_default());
                Outcome::Response(&response)
            }
            Err(err) => Outcome::Error(err.to_string()),
        };
        logical.finish(&ticket, &outcome).await?;
        result
    }
}
