//! Admission of a request: who is asking (the token) and whether their
//! policies allow it, before any backend runs.
//!
//! Vault's order, kept here: the token is validated (403 `permission
//! denied` for a missing, unknown or expired one); a POST/PUT on a path
//! whose backend has an existence check becomes `create` when nothing is
//! there yet, `update` otherwise; LIST paths get their trailing `/`; the
//! token's compiled ACL decides, with parameter constraints; a
//! root-protected path (see [`requires_sudo`]) also needs `sudo`.

use std::sync::{Arc, LazyLock};

use super::policy::{Acl, AclDecision, Policy, cap, requires_sudo};
use super::{Logical, LogicalError, LogicalRequest, MountKind, Operation, TokenEntry, kv1, kv2};

/// The root token's ACL, shared: root tokens skip the policy cache.
static ROOT_ACL: LazyLock<Arc<Acl>> =
    LazyLock::new(|| Arc::new(Acl::new(&[Arc::new(Policy::root())])));

/// An authenticated caller and the ACL decision for its request.
#[derive(Debug, Clone)]
pub(crate) struct Caller {
    pub(crate) entry: TokenEntry,
    pub(crate) acl: Arc<Acl>,
    pub(crate) decision: AclDecision,
}

/// What admission found: the caller when the token was valid, and the
/// refusal when the request may not run.
#[derive(Debug)]
pub(crate) struct Admission {
    pub(crate) caller: Option<Caller>,
    pub(crate) refused: Option<LogicalError>,
}

/// The path the ACL sees: no leading `/`, and for LIST a trailing `/`
/// (Vault's HTTP layer adds it).
pub(crate) fn acl_path(op: Operation, path: &str) -> std::borrow::Cow<'_, str> {
    let path = path.trim_start_matches('/');
    if op == Operation::List && !path.ends_with('/') {
        std::borrow::Cow::Owned(format!("{path}/"))
    } else {
        std::borrow::Cow::Borrowed(path)
    }
}

impl Logical {
    /// The compiled ACL for a token.
    pub(crate) async fn acl_for(&self, entry: &TokenEntry) -> Result<Arc<Acl>, LogicalError> {
        if entry.is_root() {
            return Ok(ROOT_ACL.clone());
        }
        self.inner
            .policies
            .acl(self.inner.storage.as_ref(), entry.policies())
            .await
    }

    /// Vault's existence check for a write to `path`: `Some(false)` makes
    /// the write a `create`. `None` where the backend has no check (every
    /// `sys/` and `auth/` path, KV v2 `delete/` and friends).
    async fn exists(&self, path: &str) -> Result<Option<bool>, LogicalError> {
        if path.starts_with("sys/") || path.starts_with("auth/") {
            return Ok(None);
        }
        let table = self.inner.mounts.read().await;
        let Some((mount, rest)) = table.route(path) else {
            return Ok(None);
        };
        let storage = self.inner.storage.as_ref();
        match mount.kind() {
            Some(MountKind::KvV1) => kv1::exists(storage, mount, rest).await,
            Some(MountKind::KvV2) => kv2::exists(storage, mount, rest).await,
            None => Ok(None),
        }
    }

    /// Authenticates the request's token and checks its ACL. A POST/PUT
    /// (`Update`) becomes `Create` when the backend's existence check finds
    /// nothing; `precise` forces the check even when the answer cannot
    /// change the decision (audit logs show the real operation).
    pub(crate) async fn admit(&self, req: &mut LogicalRequest, precise: bool) -> Admission {
        let token = match req.token.as_deref().filter(|t| !t.is_empty()) {
            Some(token) => token,
            None => {
                return Admission {
                    caller: None,
                    refused: Some(LogicalError::PermissionDenied),
                };
            }
        };
        let entry = match self.check_token(token).await {
            Ok(entry) => entry,
            Err(err) => {
                return Admission {
                    caller: None,
                    refused: Some(err),
                };
            }
        };
        match self.decide(req, &entry, precise).await {
            Ok((acl, decision)) => {
                let refused = (!decision.allowed
                    || (requires_sudo(&acl_path(req.operation, &req.path)) && !decision.sudo))
                    .then_some(LogicalError::Denied);
                Admission {
                    caller: Some(Caller {
                        entry,
                        acl,
                        decision,
                    }),
                    refused,
                }
            }
            Err(err) => Admission {
                caller: None,
                refused: Some(err),
            },
        }
    }

    async fn decide(
        &self,
        req: &mut LogicalRequest,
        entry: &TokenEntry,
        precise: bool,
    ) -> Result<(Arc<Acl>, AclDecision), LogicalError> {
        let acl = self.acl_for(entry).await?;
        let path = req.path.trim_start_matches('/');
        let data = req.data.as_ref();
        let decision = acl.check(req.operation, &acl_path(req.operation, path), data);
        if req.operation != Operation::Update {
            return Ok((acl, decision));
        }
        // Where create and update are both granted (root included) the
        // existence check cannot change the outcome: skip its storage read
        // unless the audit log needs the exact operation.
        let both = cap::CREATE | cap::UPDATE;
        if !precise && (acl.is_root() || decision.capabilities & both == both) {
            return Ok((acl, decision));
        }
        if self.exists(path).await? == Some(false) {
            req.operation = Operation::Create;
            let decision = acl.check(Operation::Create, path, req.data.as_ref());
            return Ok((acl, decision));
        }
        Ok((acl, decision))
    }

    /// Authenticates `token` and checks that it may perform `op` on `path`
    /// (with `sudo` where Vault requires it), for the `sys/*` endpoints the
    /// core serves outside the router (seal, step-down, rotate, key status,
    /// metrics).
    ///
    /// # Errors
    /// [`LogicalError::PermissionDenied`] for a missing, unknown or expired
    /// token; [`LogicalError::Denied`] when the token's policies do not
    /// allow the request; storage errors.
    pub async fn authorize(
        &self,
        token: &str,
        op: Operation,
        path: &str,
    ) -> Result<TokenEntry, LogicalError> {
        let mut req = LogicalRequest::new(op, path).with_token(token);
        let admission = self.admit(&mut req, false).await;
        match (admission.refused, admission.caller) {
            (Some(err), _) => Err(err),
            (None, Some(caller)) => Ok(caller.entry),
            (None, None) => Err(LogicalError::PermissionDenied),
        }
    }
}
