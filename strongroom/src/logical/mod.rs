//! The logical request router: tokens, the mount table and the KV engines,
//! with Vault's paths, response shapes and status codes.
//!
//! [`Logical`] sits above the barrier: it reads and writes plaintext JSON
//! through any [`Storage`] (in production the barrier's encrypted view, in
//! tests a [`seal_core::MemoryStorage`]). The HTTP layer turns a `/v1/<path>`
//! request into a [`LogicalRequest`] and the answer back into JSON with
//! [`LogicalResponse::to_json`] or, on error, [`LogicalError::errors`].
//!
//! # Storage layout
//! * `core/mounts` — the mount table (JSON).
//! * `sys/token/...` — salted hashes of tokens (see the token store); a raw
//!   token is never written.
//! * `sys/policy/<name>` — ACL policies (Vault's entry format).
//! * `logical/<mount uuid>/...` — each engine's data. KV v1 keeps one JSON
//!   object per secret path; KV v2 keeps `metadata/<path>` (the version
//!   index) and `versions/<sha256(path)>/<n>` (each version's data), plus
//!   `config`.
//!
//! # Authorization
//! Every request is checked against Vault ACL policies (see [`policy`]):
//! the token's policies, compiled into a cached [`Acl`], must grant the
//! operation's capability on the request path, plus `sudo` on Vault's
//! root-protected paths; the `root` policy allows everything. Policies live
//! at `sys/policy/<name>` in Vault's format. Only
//! `sys/internal/ui/mounts[/...]` answers without a token.
//!
//! # Ownership
//! A `Logical` caches the mount table and unlimited-use token entries in
//! memory; exactly one `Logical` (the active node's) should serve a given
//! storage at a time. A new `Logical` over the same storage sees everything
//! the previous one wrote; [`Logical::reload`] refreshes an existing one.

mod audit;
mod authz;
mod error;
mod kv1;
pub(crate) mod kv2;
pub(crate) mod mounts;
pub mod policy;
pub(crate) mod token;
pub(crate) mod util;

pub(crate) use util::random_base62;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use seal_core::Storage;
use serde_json::{Map, Value, json};
use tokio::sync::RwLock;

pub use audit::AuditCounters;
pub use error::LogicalError;
pub use mounts::MountKind;
pub use policy::{Acl, AclDecision, Policy, PolicyError};
pub use token::TokenEntry;

pub(crate) use audit::Outcome;
use audit::{AuditBroker, MountInfo, Record};
use authz::Caller;
use policy::store::PolicyStore;

use mounts::{MountEntry, MountTable};
use token::{NewToken, TokenStore};
use util::{Fields, StripedLocks};

/// What a logical request does, as Vault names its operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operation {
    /// HTTP GET.
    Read,
    /// HTTP POST/PUT on a path that does not exist yet. Treated exactly like
    /// [`Operation::Update`]; the HTTP layer may send either.
    Create,
    /// HTTP POST/PUT.
    Update,
    /// HTTP DELETE.
    Delete,
    /// HTTP LIST, or GET with `?list=true`.
    List,
    /// HTTP PATCH (JSON merge patch).
    Patch,
}

impl Operation {
    /// Vault's lower-case name of the operation.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::Create => "create",
            Self::Update => "update",
            Self::Delete => "delete",
            Self::List => "list",
            Self::Patch => "patch",
        }
    }

    pub(crate) fn is_write(self) -> bool {
        matches!(self, Self::Create | Self::Update)
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One request to the router, already stripped of HTTP.
#[derive(Clone, PartialEq)]
pub struct LogicalRequest {
    /// What to do.
    pub operation: Operation,
    /// The path without `/v1/`, for example `secret/data/foo`.
    pub path: String,
    /// The JSON body, when there is one; it must be an object.
    pub data: Option<Map<String, Value>>,
    /// Query parameters (`version` for KV v2 reads).
    pub query: BTreeMap<String, String>,
    /// The raw client token (`X-Vault-Token` or `Authorization: Bearer`).
    pub token: Option<String>,
    /// The request's id (the HTTP layer's `request_id`), shared by its
    /// audit entries; one is made up when empty and audit is on.
    pub id: String,
    /// The client's `address:port`, for audit entries.
    pub remote_address: Option<String>,
}

impl LogicalRequest {
    /// A request with no body, query or token; fill the rest with the
    /// builder methods.
    pub fn new(operation: Operation, path: impl Into<String>) -> Self {
        Self {
            operation,
            path: path.into(),
            data: None,
            query: BTreeMap::new(),
            token: None,
            id: String::new(),
            remote_address: None,
        }
    }

    /// Sets the request id (audit entries carry it).
    #[must_use]
    pub fn with_id(mut self, id: impl Into<String>) -> Self {
        self.id = id.into();
        self
    }

    /// Sets the client's address (audit entries carry it).
    #[must_use]
    pub fn with_remote_address(mut self, address: impl Into<String>) -> Self {
        self.remote_address = Some(address.into());
        self
    }

    /// Sets the client token.
    #[must_use]
    pub fn with_token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// Sets the JSON body. Vault bodies are JSON objects; any other value
    /// (array, string, null) leaves the request without a body.
    #[must_use]
    pub fn with_data(mut self, data: Value) -> Self {
        self.data = match data {
            Value::Object(map) => Some(map),
            _ => None,
        };
        self
    }

    /// Adds one query parameter.
    #[must_use]
    pub fn with_query(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.query.insert(key.into(), value.into());
        self
    }
}

// Never print the token or the body (it holds secrets).
impl fmt::Debug for LogicalRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LogicalRequest")
            .field("operation", &self.operation)
            .field("path", &self.path)
            .field("has_data", &self.data.is_some())
            .field("query", &self.query)
            .field("has_token", &self.token.is_some())
            .field("id", &self.id)
            .field("remote_address", &self.remote_address)
            .finish()
    }
}

/// The router's answer, before it becomes Vault's JSON envelope.
#[derive(Clone, Default, PartialEq)]
pub struct LogicalResponse {
    /// HTTP status: 200 with a body, 204 without one, 404 for a KV v2
    /// version that is deleted or destroyed (the body still carries its
    /// metadata, as in Vault).
    pub status: u16,
    /// Vault's `data` field.
    pub data: Option<Value>,
    /// Vault's `auth` field (token creation and renewal).
    pub auth: Option<Value>,
    /// Vault's `warnings` field.
    pub warnings: Vec<String>,
    /// Vault's top-level `lease_duration` (KV v1 reads report one).
    pub lease_duration: u64,
    /// Vault's top-level `renewable`.
    pub renewable: bool,
    /// Set for `sys/mounts` (and `sys/mounts/<path>`, `.../tune`): Vault also copies every key of `data` to the
    /// top level of the body for old clients. [`Self::to_json`] does it.
    pub data_at_top_level: bool,
}

impl LogicalResponse {
    /// 200 with `data`.
    pub fn ok(data: Value) -> Self {
        Self {
            status: 200,
            data: Some(data),
            ..Self::default()
        }
    }

    /// 204: success without a body.
    pub fn no_content() -> Self {
        Self {
            status: 204,
            ..Self::default()
        }
    }

    /// Adds the handler's warnings. A 204 that carries warnings becomes a
    /// 200, as in Vault, so the client sees them.
    fn with_warnings(mut self, mut warnings: Vec<String>) -> Self {
        warnings.append(&mut self.warnings);
        self.warnings = warnings;
        if self.status == 204 && !self.warnings.is_empty() {
            self.status = 200;
        }
        self
    }

    /// Vault's JSON envelope (`request_id`, `lease_id`, `renewable`,
    /// `lease_duration`, `data`, `wrap_info`, `warnings`, `auth`,
    /// `mount_type`), or `None` for a 204. `request_id` identifies the
    /// request in logs; pass a fresh UUID.
    pub fn to_json(&self, request_id: &str) -> Option<Value> {
        if self.status == 204 {
            return None;
        }
        let mut body = Map::new();
        if self.data_at_top_level
            && let Some(Value::Object(data)) = &self.data
        {
            body.extend(data.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
        body.insert("request_id".into(), json!(request_id));
        body.insert("lease_id".into(), json!(""));
        body.insert("renewable".into(), json!(self.renewable));
        body.insert("lease_duration".into(), json!(self.lease_duration));
        body.insert("data".into(), self.data.clone().unwrap_or(Value::Null));
        body.insert("wrap_info".into(), Value::Null);
        body.insert(
            "warnings".into(),
            if self.warnings.is_empty() {
                Value::Null
            } else {
                json!(self.warnings)
            },
        );
        body.insert("auth".into(), self.auth.clone().unwrap_or(Value::Null));
        body.insert("mount_type".into(), json!(""));
        Some(Value::Object(body))
    }
}

// Responses carry secrets (KV data, new tokens): print only the shape.
impl fmt::Debug for LogicalResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LogicalResponse")
            .field("status", &self.status)
            .field("has_data", &self.data.is_some())
            .field("has_auth", &self.auth.is_some())
            .field("warnings", &self.warnings)
            .finish_non_exhaustive()
    }
}

/// Routes logical requests (tokens, mounts, KV v1 and v2) over a [`Storage`].
///
/// Cheap to clone: clones share the same state.
///
/// ```
/// use std::sync::Arc;
/// use seal_core::MemoryStorage;
/// use serde_json::json;
/// use strongroom::logical::{Logical, LogicalRequest, MountKind, Operation};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), strongroom::logical::LogicalError> {
/// let logical = Logical::new(Arc::new(MemoryStorage::new())).await?;
/// let root = logical.create_root_token(None).await?;
/// logical.mount("secret/", MountKind::KvV2, "key/value secret storage").await?;
///
/// let put = LogicalRequest::new(Operation::Update, "secret/data/app")
///     .with_token(root.as_str())
///     .with_data(json!({"data": {"password": "hunter2"}}));
/// assert_eq!(logical.handle(put).await?.data.unwrap()["version"], 1);
///
/// let get = LogicalRequest::new(Operation::Read, "secret/data/app").with_token(root.as_str());
/// let data = logical.handle(get).await?.data.unwrap();
/// assert_eq!(data["data"]["password"], "hunter2");
///
/// let anonymous = LogicalRequest::new(Operation::Read, "secret/data/app");
/// assert_eq!(logical.handle(anonymous).await.unwrap_err().status(), 403);
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Logical {
    inner: Arc<Inner>,
}

struct Inner {
    storage: Arc<dyn Storage>,
    mounts: RwLock<MountTable>,
    tokens: TokenStore,
    policies: PolicyStore,
    audit: AuditBroker,
    /// Serialises read-modify-write cycles on one KV v2 key.
    kv_locks: StripedLocks,
}

impl fmt::Debug for Logical {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Logical")
            .field("storage", &self.inner.storage)
            .finish_non_exhaustive()
    }
}

/// What a handler gets: the storage, the caller and the request.
pub(crate) struct Ctx<'a> {
    pub(crate) storage: &'a dyn Storage,
    pub(crate) req: &'a LogicalRequest,
    pub(crate) warnings: Vec<String>,
}

impl<'a> Ctx<'a> {
    pub(crate) fn fields(&self) -> Fields<'a> {
        Fields::new(self.req.data.as_ref())
    }

    pub(crate) fn unsupported(&self) -> LogicalError {
        LogicalError::UnsupportedOperation {
            operation: self.req.operation.as_str(),
            path: self.req.path.clone(),
        }
    }
}

/// An admitted request, between its request and response audit entries.
#[derive(Debug)]
pub(crate) struct Ticket {
    pub(crate) req: LogicalRequest,
    pub(crate) caller: Caller,
    /// Set when audit devices were enabled at admission.
    mount: Option<MountInfo>,
}

impl Ticket {
    fn record(&self) -> Record<'_> {
        record(&self.req, Some(&self.caller), self.mount.as_ref())
    }

    /// Disabling an audit device must stay possible while no device can
    /// record anything (a broken device would otherwise lock operators out,
    /// hashicorp/vault#37): such requests run with a server-log warning.
    fn disables_audit(&self) -> bool {
        let disabling =
            self.req.operation == Operation::Delete && self.req.path.starts_with("sys/audit/");
        if disabling {
            tracing::warn!(
                path = %self.req.path,
                accessor = %self.caller.entry.accessor(),
                "disabling an audit device although no device could record the request"
            );
        }
        disabling
    }
}

fn record<'a>(
    req: &'a LogicalRequest,
    caller: Option<&'a Caller>,
    mount: Option<&'a MountInfo>,
) -> Record<'a> {
    Record {
        id: &req.id,
        operation: req.operation,
        path: &req.path,
        data: req.data.as_ref(),
        token: req.token.as_deref(),
        caller,
        mount,
        remote_address: req.remote_address.as_deref(),
    }
}

impl Logical {
    /// Opens the router over `storage`: loads the mount table from
    /// `core/mounts` (an empty table when none exists) and the token salt
    /// (created on first use), writes the built-in `default` policy when it
    /// is missing, and starts the enabled audit devices.
    ///
    /// # Errors
    /// [`LogicalError::Storage`] when storage fails (503 while sealed),
    /// [`LogicalError::Corrupt`] when the mount table or salt do not decode.
    pub async fn new(storage: Arc<dyn Storage>) -> Result<Self, LogicalError> {
        Self::with_audit_counters(storage, Arc::default()).await
    }

    /// Like [`new`](Self::new), counting audit failures in `counters`, which
    /// outlive this router (the core keeps one set across unseals).
    ///
    /// # Errors
    /// As [`new`](Self::new).
    pub async fn with_audit_counters(
        storage: Arc<dyn Storage>,
        counters: Arc<AuditCounters>,
    ) -> Result<Self, LogicalError> {
        let mounts = MountTable::load(storage.as_ref()).await?;
        // First-use entries (token salt, default policy) go in one write.
        let mut writes = Vec::new();
        let tokens = TokenStore::open(storage.as_ref(), &mut writes).await?;
        let policies = PolicyStore::open(storage.as_ref(), &mut writes).await?;
        if !writes.is_empty() {
            storage.transaction(writes).await?;
        }
        let audit = AuditBroker::open(storage.as_ref(), counters).await?;
        Ok(Self {
            inner: Arc::new(Inner {
                storage,
                mounts: RwLock::new(mounts),
                tokens,
                policies,
                audit,
                kv_locks: StripedLocks::new(256),
            }),
        })
    }

    /// Creates a root token (policy `root`, no TTL) and returns it. With
    /// `id` the token is exactly that string (`-dev-root-token-id`);
    /// otherwise a random `hvs.` token. Only its salted hash is stored, so
    /// the returned value is the only copy: hand it to the operator once.
    ///
    /// # Errors
    /// [`LogicalError::InvalidRequest`] for an empty or over-long `id`;
    /// [`LogicalError::Storage`]; [`LogicalError::Random`].
    pub async fn create_root_token(&self, id: Option<&str>) -> Result<String, LogicalError> {
        if let Some(id) = id {
            if id.is_empty() || id.len() > 256 || id.chars().any(char::is_control) {
                return Err(LogicalError::invalid(
                    "root token id must be 1 to 256 characters without control characters",
                ));
            }
            // An existing token with this id is replaced: a dev server
            // restarted over the same storage with the same id keeps working.
            self.inner
                .tokens
                .revoke(self.inner.storage.as_ref(), id)
                .await?;
        }
        let (token, _) = self
            .inner
            .tokens
            .create(
                self.inner.storage.as_ref(),
                NewToken {
                    id: id.map(str::to_owned),
                    policies: vec!["root".to_owned()],
                    path: "auth/token/root".to_owned(),
                    display_name: "root".to_owned(),
                    ..NewToken::default()
                },
            )
            .await?;
        Ok(token.to_string())
    }

    /// Re-reads the mount table and the audit device table from storage and
    /// forgets cached token entries, policies and compiled ACLs. Call it when this node takes over as active after another
    /// node may have written the same storage (HA); a node that stays active
    /// never needs it, because every change goes through this router.
    ///
    /// # Errors
    /// [`LogicalError::Storage`]; [`LogicalError::Corrupt`] when the mount
    /// table does not decode (the old table stays in effect).
    pub async fn reload(&self) -> Result<(), LogicalError> {
        let mut table = self.inner.mounts.write().await;
        *table = MountTable::load(self.inner.storage.as_ref()).await?;
        self.inner.tokens.clear_cache();
        self.inner.policies.clear_cache();
        self.inner.audit.reload(self.inner.storage.as_ref()).await?;
        Ok(())
    }

    /// Closes and reopens every audit device's file, for log rotation
    /// (the server calls it on SIGHUP).
    pub fn reopen_audit_files(&self) {
        self.inner.audit.reopen();
    }

    /// Validates `token` for callers outside the router (the core's `sys/*`
    /// endpoints) and spends one use of a limited-use token.
    ///
    /// # Errors
    /// [`LogicalError::PermissionDenied`] for an unknown or expired token;
    /// [`LogicalError::Storage`].
    pub async fn check_token(&self, token: &str) -> Result<TokenEntry, LogicalError> {
        self.inner
            .tokens
            .authenticate(self.inner.storage.as_ref(), token)
            .await
    }

    /// Mounts a KV engine at `path` (`secret` or `secret/`), as `-dev` does.
    ///
    /// # Errors
    /// [`LogicalError::InvalidRequest`] for a malformed, reserved or taken
    /// path; [`LogicalError::Storage`].
    pub async fn mount(
        &self,
        path: &str,
        kind: MountKind,
        description: &str,
    ) -> Result<(), LogicalError> {
        let path = mounts::normalize_mount_path(path)?;
        let entry = mounts::new_entry(&path, kind, description)?;
        self.add_mount(entry).await
    }

    async fn add_mount(&self, entry: MountEntry) -> Result<(), LogicalError> {
        let mut table = self.inner.mounts.write().await;
        table.check_free(&entry.path)?;
        let mut next = table.clone();
        next.entries.push(entry);
        next.persist(self.inner.storage.as_ref()).await?;
        *table = next;
        Ok(())
    }

    /// Handles one request: validates the token and checks its policies
    /// first (403 `permission denied` when the token is missing, unknown or
    /// expired, or its policies do not allow the request), records it on
    /// the audit devices (500 when none can), then routes it.
    ///
    /// # Errors
    /// Every [`LogicalError`]; [`LogicalError::status`] gives the HTTP code
    /// and [`LogicalError::errors`] the body's `errors`.
    pub async fn handle(&self, mut req: LogicalRequest) -> Result<LogicalResponse, LogicalError> {
        if req.path.starts_with('/') {
            req.path = req.path.trim_start_matches('/').to_owned();
        }
        let path = req.path.clone();
        if path == "sys/internal/ui/mounts"
            || path == "sys/internal/ui/mounts/"
            || path.starts_with("sys/internal/ui/mounts/")
        {
            return self.ui_mounts(req).await;
        }
        let ticket = self.begin(req).await?;
        let token = ticket.req.token.as_deref().unwrap_or_default();
        let mut ctx = Ctx {
            storage: self.inner.storage.as_ref(),
            req: &ticket.req,
            warnings: Vec::new(),
        };
        let result = self.route(&mut ctx, &path, token, &ticket.caller).await;
        let warnings = ctx.warnings;
        let result = result.map(|r| r.with_warnings(warnings));
        self.finish(&ticket, &Outcome::of(&result)).await?;
        result
    }

    /// Admits a request (token, ACL) and records its request entry on the
    /// audit devices. A refused request is recorded with its error, and
    /// its response entry too.
    pub(crate) async fn begin(&self, mut req: LogicalRequest) -> Result<Ticket, LogicalError> {
        let audit = self.inner.audit.is_enabled();
        if audit && req.id.is_empty() {
            req.id = util::random_uuid()?;
        }
        // Vault's HTTP layer gives LIST paths a trailing slash; the audit
        // log shows them that way.
        if req.operation == Operation::List && !req.path.ends_with('/') {
            req.path.push('/');
        }
        let admission = self.admit(&mut req, audit).await;
        let mount = if audit {
            Some(self.mount_info(&req.path).await)
        } else {
            None
        };
        if let Some(refused) = admission.refused {
            if audit {
                let message = audit::error_text(&refused);
                // Vault's response entry for an unknown token carries the
                // router's multierror, its request entry the bare text.
                let response_message = match refused {
                    LogicalError::PermissionDenied => audit::error_text(&LogicalError::Denied),
                    _ => message.clone(),
                };
                let record = record(&req, admission.caller.as_ref(), mount.as_ref());
                // As Vault: a refusal is answered even when it cannot be
                // recorded (the broker logs and counts the failure).
                self.inner.audit.log_request(&record, Some(&message)).await;
                self.inner
                    .audit
                    .log_response(&record, &Outcome::Error(response_message))
                    .await;
            }
            return Err(refused);
        }
        let Some(caller) = admission.caller else {
            return Err(LogicalError::PermissionDenied);
        };
        let ticket = Ticket { req, caller, mount };
        if audit
            && !self.inner.audit.log_request(&ticket.record(), None).await
            && !ticket.disables_audit()
        {
            return Err(LogicalError::AuditFailed);
        }
        Ok(ticket)
    }

    /// Records the response entry of an admitted request. A request that
    /// ran but whose response no device could record is answered with 500.
    pub(crate) async fn finish(
        &self,
        ticket: &Ticket,
        outcome: &Outcome<'_>,
    ) -> Result<(), LogicalError> {
        if ticket.mount.is_none() {
            return Ok(());
        }
        if !self
            .inner
            .audit
            .log_response(&ticket.record(), outcome)
            .await
            && !ticket.disables_audit()
        {
            return Err(LogicalError::AuditFailed);
        }
        Ok(())
    }

    /// The mount a path belongs to, as audit entries name it.
    async fn mount_info(&self, path: &str) -> MountInfo {
        if path.starts_with("sys/") || path == "sys" {
            return MountInfo {
                point: "sys/".to_owned(),
                kind: "system".to_owned(),
                accessor: mounts::SYSTEM_ACCESSOR.to_owned(),
            };
        }
        if path.starts_with("auth/token/") {
            return MountInfo {
                point: "auth/token/".to_owned(),
                kind: "token".to_owned(),
                accessor: String::new(),
            };
        }
        let table = self.inner.mounts.read().await;
        table
            .route(path)
            .map(|(m, _)| MountInfo {
                point: m.path.clone(),
                kind: m.kind_name.clone(),
                accessor: m.accessor.clone(),
            })
            .unwrap_or_default()
    }

    /// `sys/internal/ui/mounts[/<path>]`, which Vault serves without a
    /// token (the KV CLI's preflight). With a token, only mounts the
    /// token's policies reach are shown; without one, none.
    async fn ui_mounts(&self, mut req: LogicalRequest) -> Result<LogicalResponse, LogicalError> {
        if !self.inner.audit.is_enabled() {
            return self.ui_mounts_unaudited(&req).await;
        }
        if req.id.is_empty() {
            req.id = util::random_uuid()?;
        }
        let mount = self.mount_info(&req.path).await;
        let record = record(&req, None, Some(&mount));
        if !self.inner.audit.log_request(&record, None).await {
            return Err(LogicalError::AuditFailed);
        }
        let result = self.ui_mounts_unaudited(&req).await;
        if !self
            .inner
            .audit
            .log_response(&record, &Outcome::of(&result))
            .await
        {
            return Err(LogicalError::AuditFailed);
        }
        result
    }

    async fn ui_mounts_unaudited(
        &self,
        req: &LogicalRequest,
    ) -> Result<LogicalResponse, LogicalError> {
        let path = req.path.as_str();
        if req.operation != Operation::Read {
            return Err(LogicalError::UnsupportedOperation {
                operation: req.operation.as_str(),
                path: req.path.clone(),
            });
        }
        let acl = match req.token.as_deref().filter(|t| !t.is_empty()) {
            Some(token) => Some(self.acl_for(&self.check_token(token).await?).await?),
            None => None,
        };
        let visible = |mount: &mounts::MountEntry| {
            acl.as_ref()
                .is_some_and(|acl| acl.has_mount_access(&mount.path))
        };
        let table = self.inner.mounts.read().await;
        let Some(rest) = path.strip_prefix("sys/internal/ui/mounts/") else {
            let secret: Map<String, Value> = table
                .entries
                .iter()
                .filter(|m| visible(m))
                .map(|m| (m.path.clone(), m.to_json()))
                .collect();
            return Ok(LogicalResponse::ok(json!({"secret": secret, "auth": {}})));
        };
        let wanted = rest.trim_matches('/');
        if wanted.is_empty() {
            return Err(LogicalError::invalid("path not set"));
        }
        let denied = || {
            // The same answer whether or not the mount exists, so this path
            // cannot be used to enumerate mounts.
            LogicalError::Forbidden(format!(
                "preflight capability check returned 403, please ensure client's policies grant access to path \"{wanted}/\""
            ))
        };
        if acl.is_none() {
            return Err(LogicalError::PermissionDenied);
        }
        let Some((mount, _)) = table.route(wanted) else {
            return Err(denied());
        };
        if !visible(mount) {
            return Err(denied());
        }
        let mut data = mount.to_json();
        if let Value::Object(obj) = &mut data {
            obj.insert("path".into(), json!(mount.path));
        }
        Ok(LogicalResponse::ok(data))
    }

    async fn route(
        &self,
        ctx: &mut Ctx<'_>,
        path: &str,
        token: &str,
        caller: &Caller,
    ) -> Result<LogicalResponse, LogicalError> {
        if let Some(rest) = path.strip_prefix("auth/token/") {
            return self.token_path(ctx, rest, token, caller).await;
        }
        if path == "sys/mounts" || path == "sys/mounts/" {
            return match ctx.req.operation {
                Operation::Read => {
                    let table = self.inner.mounts.read().await;
                    Ok(LogicalResponse {
                        data_at_top_level: true,
                        ..LogicalResponse::ok(Value::Object(table.list_json()))
                    })
                }
                _ => Err(ctx.unsupported()),
            };
        }
        if let Some(rest) = path.strip_prefix("sys/mounts/") {
            return self.mount_path(ctx, rest).await;
        }
        if let Some(result) = policy::api::handle(&self.inner.policies, ctx, path).await {
            return result;
        }
        if let Some(result) = policy::api::capabilities(self, ctx, path, token).await {
            return result;
        }
        if let Some(result) = audit::handle(&self.inner.audit, ctx, path).await {
            return result;
        }
        if path.starts_with("sys/") || path == "sys" || path.starts_with("auth/") {
            return Err(LogicalError::UnsupportedPath(
                error::UNSUPPORTED_PATH.to_owned(),
            ));
        }
        // The read guard is held for the whole engine request: disabling a
        // mount waits for requests in flight, so none of them can write
        // into the data folder after it has been deleted.
        let table = self.inner.mounts.read().await;
        let Some((mount, rest)) = table.route(path) else {
            return Err(LogicalError::UnsupportedPath(format!(
                "no handler for route {path:?}. route entry not found."
            )));
        };
        match mount.kind() {
            Some(MountKind::KvV1) => kv1::handle(ctx, mount, rest).await,
            Some(MountKind::KvV2) => kv2::handle(ctx, &self.inner.kv_locks, mount, rest).await,
            None => Err(mount.unsupported_error()),
        }
    }

    async fn mount_path(
        &self,
        ctx: &mut Ctx<'_>,
        rest: &str,
    ) -> Result<LogicalResponse, LogicalError> {
        let storage = self.inner.storage.as_ref();
        if let Some(mount) = rest.trim_end_matches('/').strip_suffix("/tune") {
            let path = mounts::normalize_mount_path(mount)?;
            return match ctx.req.operation {
                Operation::Read => {
                    let table = self.inner.mounts.read().await;
                    let entry = table.get(&path).ok_or_else(|| {
                        LogicalError::invalid(format!("cannot fetch sysview for path {path:?}"))
                    })?;
                    Ok(LogicalResponse {
                        data_at_top_level: true,
                        ..LogicalResponse::ok(mounts::tune_response(entry))
                    })
                }
                op if op.is_write() => {
                    let mut table = self.inner.mounts.write().await;
                    let mut next = table.clone();
                    let entry = next
                        .entries
                        .iter_mut()
                        .find(|m| m.path == path)
                        .ok_or_else(|| {
                            LogicalError::invalid(format!(
                                "tune of path {path:?} failed: no mount entry found"
                            ))
                        })?;
                    let upgrade =
                        mounts::apply_tune(entry, ctx.req.data.as_ref(), &mut ctx.warnings)?;
                    if !upgrade {
                        next.persist(storage).await?;
                        *table = next;
                        return Ok(LogicalResponse::no_content());
                    }
                    // KV v1 -> v2: copy every secret into a fresh folder as
                    // version 1, then switch the table to it. The write lock
                    // keeps every request off the mount while this runs; a
                    // crash before the switch leaves the v1 mount untouched.
                    let old_prefix = entry.data_prefix();
                    entry.uuid = util::random_uuid()?;
                    entry.options.insert("version".to_owned(), "2".to_owned());
                    let copied = kv2::import_v1(storage, &old_prefix, entry).await?;
                    next.persist(storage).await?;
                    *table = next;
                    drop(table);
                    mounts::delete_tree(storage, &old_prefix).await?;
                    Ok(LogicalResponse {
                        status: 200,
                        warnings: vec![format!(
                            "Upgraded mount {path} from KV version 1 to version 2: {copied} secrets are now version 1 of their key."
                        )],
                        ..LogicalResponse::default()
                    })
                }
                _ => Err(ctx.unsupported()),
            };
        }
        let path = mounts::normalize_mount_path(rest)?;
        match ctx.req.operation {
            Operation::Read => {
                let table = self.inner.mounts.read().await;
                let entry = table.get(&path).ok_or_else(|| {
                    LogicalError::invalid(format!("No secret engine mount at {path}"))
                })?;
                Ok(LogicalResponse {
                    data_at_top_level: true,
                    ..LogicalResponse::ok(entry.to_json())
                })
            }
            op if op.is_write() => {
                let entry = mounts::parse_enable(&path, ctx.req.data.as_ref(), &mut ctx.warnings)?;
                self.add_mount(entry).await?;
                Ok(LogicalResponse::no_content())
            }
            Operation::Delete => {
                if path.starts_with("sys/") || path.starts_with("auth/") {
                    return Err(LogicalError::invalid(format!("cannot unmount {path:?}")));
                }
                // Taking the write lock waits for requests in flight on this
                // mount; once the new table is in place none can reach the
                // old data, so it is deleted without holding the lock (a
                // re-enabled path gets a new uuid and an empty folder).
                let removed = {
                    let mut table = self.inner.mounts.write().await;
                    let Some(index) = table.entries.iter().position(|m| m.path == path) else {
                        // Vault: "Disabled the secrets engine (if it existed)".
                        return Ok(LogicalResponse::no_content());
                    };
                    if table.entries[index].kind().is_none() {
                        // Never delete what Strongroom cannot serve.
                        return Err(table.entries[index].unsupported_error());
                    }
                    let mut next = table.clone();
                    let removed = next.entries.remove(index);
                    // The table goes first: once it is written nothing can
                    // reach the old data, so a crash while deleting the data
                    // below leaves only unreachable garbage, never a mount
                    // with half its secrets.
                    next.persist(storage).await?;
                    *table = next;
                    removed
                };
                mounts::delete_tree(storage, &removed.data_prefix()).await?;
                Ok(LogicalResponse::no_content())
            }
            _ => Err(ctx.unsupported()),
        }
    }

    async fn token_path(
        &self,
        ctx: &mut Ctx<'_>,
        rest: &str,
        token: &str,
        caller: &Caller,
    ) -> Result<LogicalResponse, LogicalError> {
        let storage = self.inner.storage.as_ref();
        let tokens = &self.inner.tokens;
        let sudo = caller
            .acl
            .capabilities(&ctx.req.path)
            .iter()
            .any(|c| *c == "root" || *c == "sudo");
        let caller = &caller.entry;
        let op = ctx.req.operation;
        match rest.trim_end_matches('/') {
            "create" | "create-orphan" if op.is_write() => {
                let mut new =
                    token::parse_create(caller, sudo, ctx.req.data.as_ref(), &mut ctx.warnings)?;
                if rest.starts_with("create-orphan") {
                    new.parent_hash = None;
                    new.parent_expire = None;
                }
                if let Some(id) = &new.id
                    && tokens.exists(storage, id).await?
                {
                    return Err(LogicalError::invalid(
                        "cannot create a token with a duplicate ID",
                    ));
                }
                let (client_token, entry) = tokens.create(storage, new).await?;
                Ok(LogicalResponse {
                    status: 200,
                    auth: Some(entry.auth_block(&client_token)),
                    ..LogicalResponse::default()
                })
            }
            "lookup-self" if matches!(op, Operation::Read) || op.is_write() => {
                Ok(LogicalResponse::ok(caller.lookup_data(Some(token))))
            }
            "revoke-self" if op.is_write() => {
                tokens.revoke_entry(storage, caller).await?;
                Ok(LogicalResponse::no_content())
            }
            "renew-self" if op.is_write() => {
                let increment = ctx.fields().duration("increment")?;
                let entry = tokens.renew(storage, token, increment).await?;
                Ok(LogicalResponse {
                    status: 200,
                    auth: Some(entry.auth_block(token)),
                    ..LogicalResponse::default()
                })
            }
            "lookup" if op.is_write() || op == Operation::Read => {
                let target = ctx
                    .fields()
                    .string("token")?
                    .filter(|t| !t.is_empty())
                    .ok_or_else(|| LogicalError::invalid("missing token to look up"))?;
                let entry = tokens
                    .lookup(storage, &target)
                    .await?
                    .ok_or_else(|| LogicalError::Forbidden("bad token".to_owned()))?;
                Ok(LogicalResponse::ok(entry.lookup_data(Some(&target))))
            }
            "lookup-accessor" if op.is_write() => {
                let accessor = ctx
                    .fields()
                    .string("accessor")?
                    .filter(|t| !t.is_empty())
                    .ok_or_else(|| LogicalError::invalid("missing accessor"))?;
                let entry = tokens
                    .lookup_accessor(storage, &accessor)
                    .await?
                    .ok_or_else(|| LogicalError::invalid("invalid accessor"))?;
                Ok(LogicalResponse::ok(entry.lookup_data(None)))
            }
            "revoke" if op.is_write() => {
                let target = ctx
                    .fields()
                    .string("token")?
                    .filter(|t| !t.is_empty())
                    .ok_or_else(|| LogicalError::invalid("missing token to revoke"))?;
                tokens.revoke(storage, &target).await?;
                Ok(LogicalResponse::no_content())
            }
            "revoke-accessor" if op.is_write() => {
                let accessor = ctx
                    .fields()
                    .string("accessor")?
                    .filter(|t| !t.is_empty())
                    .ok_or_else(|| LogicalError::invalid("missing accessor"))?;
                if let Some(entry) = tokens.lookup_accessor(storage, &accessor).await? {
                    tokens.revoke_entry(storage, &entry).await?;
                }
                Ok(LogicalResponse::no_content())
            }
            // Root-protected in Vault: the ACL check already demanded sudo.
            "accessors" if op == Operation::List => {
                let keys = tokens.accessors(storage).await?;
                if keys.is_empty() {
                    return Err(LogicalError::NotFound(ctx.req.path.clone()));
                }
                Ok(LogicalResponse::ok(json!({ "keys": keys })))
            }
            "create" | "create-orphan" | "lookup-self" | "revoke-self" | "renew-self"
            | "lookup" | "lookup-accessor" | "revoke" | "revoke-accessor" | "accessors" => {
                Err(ctx.unsupported())
            }
            _ => Err(LogicalError::UnsupportedPath(
                error::UNSUPPORTED_PATH.to_owned(),
            )),
        }
    }
}
