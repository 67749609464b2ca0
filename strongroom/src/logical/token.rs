//! The token store: Vault-style service tokens kept only as salted hashes.
//!
//! Layout in storage (inside the barrier in production):
//! * `sys/token/salt` — 32 random bytes (hex), created once per store.
//! * `sys/token/id/<sha256(salt ‖ token) hex>` — the [`TokenEntry`] as JSON.
//!   The raw token is never written anywhere; a stolen storage dump does not
//!   yield usable tokens.
//! * `sys/token/accessor/<sha256(salt ‖ "accessor:" ‖ accessor) hex>` — the
//!   token hash an accessor refers to.
//! * `sys/token/parent/<parent hash>/<child hash>` — an empty marker, so
//!   revoking a token revokes its children, like Vault.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use time::OffsetDateTime;
use zeroize::Zeroizing;

use super::error::LogicalError;
use super::policy::sanitize_policies;
use super::policy::store::check_assignable;
use super::util::{Fields, StripedLocks, now, random_base62, rfc3339};
use seal_core::{Storage, TxnOp};

pub(crate) const SALT_PATH: &str = "sys/token/salt";
pub(crate) const ID_PREFIX: &str = "sys/token/id/";
pub(crate) const ACCESSOR_PREFIX: &str = "sys/token/accessor/";
pub(crate) const PARENT_PREFIX: &str = "sys/token/parent/";

/// Vault's system-wide maximum lease TTL (768h = 32 days): the default TTL
/// of a child token and the longest a token may live through renewals.
pub(crate) const MAX_TTL_SECS: u64 = 768 * 3600;

/// Prefix of generated service tokens, as Vault ≥ 1.10 prints them.
const TOKEN_PREFIX: &str = "hvs.";

/// What the store knows about one token. Never contains the token itself.
///
/// Returned by [`super::Logical::check_token`] so callers outside the router
/// (the `sys/*` endpoints of the core) can decide whether the caller may act.
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct TokenEntry {
    id_hash: String,
    accessor: String,
    #[serde(default)]
    parent_hash: Option<String>,
    policies: Vec<String>,
    path: String,
    display_name: String,
    #[serde(default)]
    meta: Option<BTreeMap<String, String>>,
    #[serde(default)]
    num_uses: u64,
    #[serde(with = "time::serde::rfc3339")]
    issue_time: OffsetDateTime,
    #[serde(default)]
    creation_ttl: u64,
    #[serde(default, with = "time::serde::rfc3339::option")]
    expire_time: Option<OffsetDateTime>,
    #[serde(default)]
    explicit_max_ttl: u64,
    #[serde(default)]
    renewable: bool,
    #[serde(default)]
    orphan: bool,
    /// A periodic token's period in seconds (0: not periodic). Each renewal
    /// grants exactly this TTL, with no maximum but `explicit_max_ttl`.
    #[serde(default)]
    period: u64,
}

impl std::fmt::Debug for TokenEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The hash is a storage key, not a secret, but there is no reason to
        // spread it through logs either.
        f.debug_struct("TokenEntry")
            .field("accessor", &self.accessor)
            .field("policies", &self.policies)
            .field("display_name", &self.display_name)
            .field("expire_time", &self.expire_time)
            .field("num_uses", &self.num_uses)
            .finish_non_exhaustive()
    }
}

impl TokenEntry {
    /// Whether the token carries the `root` policy, which authorises every
    /// request.
    pub fn is_root(&self) -> bool {
        self.policies.iter().any(|p| p == "root")
    }

    /// The token's policies, sorted, as Vault reports them.
    pub fn policies(&self) -> &[String] {
        &self.policies
    }

    /// The accessor: a second identifier that names the token without
    /// granting its rights (safe to log and show).
    pub fn accessor(&self) -> &str {
        &self.accessor
    }

    /// The display name (`root`, `token`, `token-<name>`).
    pub fn display_name(&self) -> &str {
        &self.display_name
    }

    /// When the token stops working; `None` for tokens without a TTL (root).
    pub fn expire_time(&self) -> Option<OffsetDateTime> {
        self.expire_time
    }

    /// Uses left before the token is revoked; 0 means unlimited.
    pub fn num_uses(&self) -> u64 {
        self.num_uses
    }

    /// The token's metadata (`meta` at creation).
    pub fn meta(&self) -> Option<&BTreeMap<String, String>> {
        self.meta.as_ref()
    }

    /// When the token was created.
    pub fn issue_time(&self) -> OffsetDateTime {
        self.issue_time
    }

    /// The TTL the token was created with, in seconds (0: none).
    pub fn creation_ttl(&self) -> u64 {
        self.creation_ttl
    }

    fn expired_at(&self, at: OffsetDateTime) -> bool {
        self.expire_time.is_some_and(|exp| exp <= at)
    }

    fn ttl_left(&self, at: OffsetDateTime) -> u64 {
        self.expire_time.map_or(0, |exp| {
            u64::try_from((exp - at).whole_seconds()).unwrap_or(0)
        })
    }

    /// Vault's `auth` block for a response that issues or renews a token.
    /// The lease is the TTL just granted: the microseconds spent since the
    /// entry was written are rounded away, so `ttl=1h` reports 3600 like
    /// Vault rather than 3599.
    pub(crate) fn auth_block(&self, client_token: &str) -> Value {
        let at = now() - time::Duration::milliseconds(500);
        json!({
            "client_token": client_token,
            "accessor": self.accessor,
            "policies": self.policies,
            "token_policies": self.policies,
            "metadata": self.meta,
            "lease_duration": self.ttl_left(at),
            "renewable": self.renewable && self.expire_time.is_some(),
            "entity_id": "",
            "token_type": "service",
            "orphan": self.orphan,
            "mfa_requirement": null,
            "num_uses": self.num_uses,
        })
    }

    /// Vault's `data` block of `auth/token/lookup-self` and `lookup`.
    pub(crate) fn lookup_data(&self, id: Option<&str>) -> Value {
        let at = now();
        let mut data = json!({
            "accessor": self.accessor,
            "creation_time": self.issue_time.unix_timestamp(),
            "creation_ttl": self.creation_ttl,
            "display_name": self.display_name,
            "entity_id": "",
            "expire_time": self.expire_time.map(rfc3339),
            "explicit_max_ttl": self.explicit_max_ttl,
            "id": id.unwrap_or(""),
            "issue_time": rfc3339(self.issue_time),
            "meta": self.meta,
            "num_uses": self.num_uses,
            "orphan": self.orphan,
            "path": self.path,
            "policies": self.policies,
            "renewable": self.renewable && self.expire_time.is_some(),
            "ttl": self.ttl_left(at),
            "type": "service",
        });
        // Vault shows `period` only for periodic tokens.
        if self.period > 0 {
            data["period"] = json!(self.period);
        }
        data
    }
}

/// Most entries the in-memory token cache holds before it starts over.
const CACHE_CAPACITY: usize = 8192;

/// Token persistence and validation over a [`Storage`].
///
/// Entries of unlimited-use tokens are cached in memory (keyed by hash), so
/// an authenticated request costs one SHA-256 instead of a storage read and
/// a decryption. Every revocation and renewal goes through this store and
/// updates the cache; a generation counter keeps a lookup that raced with a
/// revocation from re-inserting the revoked entry.
pub(crate) struct TokenStore {
    salt: Zeroizing<Vec<u8>>,
    locks: StripedLocks,
    cache: std::sync::RwLock<TokenCache>,
}

#[derive(Default)]
struct TokenCache {
    entries: std::collections::HashMap<String, TokenEntry>,
    /// Bumped by every revocation and renewal.
    generation: u64,
}

impl std::fmt::Debug for TokenStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenStore").finish_non_exhaustive()
    }
}

fn decode_entry(path: &str, bytes: &[u8]) -> Result<TokenEntry, LogicalError> {
    serde_json::from_slice(bytes).map_err(|e| LogicalError::corrupt(path, e))
}

fn encode<T: Serialize>(path: &str, value: &T) -> Result<Vec<u8>, LogicalError> {
    serde_json::to_vec(value).map_err(|e| LogicalError::corrupt(path, e))
}

/// `hex(sha256(salt ‖ domain ‖ value))`: how the store names tokens
/// (domain `""`) and accessors (domain `"accessor:"`).
fn salted_hash(salt: &[u8], domain: &str, value: &str) -> String {
    let mut hasher = Sha256::new();
    hasher.update(salt);
    hasher.update(domain.as_bytes());
    hasher.update(value.as_bytes());
    hex::encode(hasher.finalize())
}

/// Whether a name below `sys/token/id/` (or `accessor/`, `parent/`) is one
/// this store writes (64 hex digits), as opposed to another layout's.
pub(crate) fn is_own_hash(name: &str) -> bool {
    name.len() == 64 && name.bytes().all(|b| b.is_ascii_hexdigit())
}

/// A fresh store salt, as stored at [`SALT_PATH`] (hex text).
pub(crate) fn new_salt_hex() -> Result<Zeroizing<String>, LogicalError> {
    let fresh = seal_core::random_bytes(32).map_err(|e| LogicalError::Random(e.to_string()))?;
    Ok(Zeroizing::new(hex::encode(&*fresh)))
}

/// A token taken over from another layout (a Vault data set), with the
/// raw token id that layout kept, so it can be stored under this store's
/// salted hash and keep working unchanged.
pub(crate) struct ImportedToken {
    pub(crate) id: Zeroizing<String>,
    pub(crate) accessor: String,
    pub(crate) parent: Option<Zeroizing<String>>,
    pub(crate) policies: Vec<String>,
    pub(crate) path: String,
    pub(crate) display_name: String,
    pub(crate) meta: Option<BTreeMap<String, String>>,
    pub(crate) num_uses: u64,
    pub(crate) issue_time: OffsetDateTime,
    pub(crate) creation_ttl: u64,
    pub(crate) expire_time: Option<OffsetDateTime>,
    pub(crate) explicit_max_ttl: u64,
    pub(crate) renewable: bool,
}

impl std::fmt::Debug for ImportedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImportedToken")
            .field("accessor", &self.accessor)
            .field("policies", &self.policies)
            .finish_non_exhaustive()
    }
}

/// The writes that store `token` in this store's layout under the salt
/// `salt_hex` (the text stored at [`SALT_PATH`]): the entry, the accessor
/// index and the parent marker.
///
/// # Errors
/// [`LogicalError::Corrupt`] for a salt that is not hex.
pub(crate) fn import_token_ops(
    salt_hex: &str,
    token: &ImportedToken,
) -> Result<Vec<TxnOp>, LogicalError> {
    let salt =
        Zeroizing::new(hex::decode(salt_hex).map_err(|e| LogicalError::corrupt(SALT_PATH, e))?);
    let id_hash = salted_hash(&salt, "", &token.id);
    let parent_hash = token.parent.as_ref().map(|p| salted_hash(&salt, "", p));
    let mut policies = token.policies.clone();
    policies.sort();
    policies.dedup();
    let entry = TokenEntry {
        id_hash: id_hash.clone(),
        accessor: token.accessor.clone(),
        orphan: parent_hash.is_none(),
        parent_hash: parent_hash.clone(),
        policies,
        path: token.path.clone(),
        display_name: token.display_name.clone(),
        meta: token.meta.clone(),
        num_uses: token.num_uses,
        issue_time: token.issue_time,
        creation_ttl: token.creation_ttl,
        expire_time: token.expire_time,
        explicit_max_ttl: token.explicit_max_ttl,
        renewable: token.renewable,
        period: 0,
    };
    let id_path = format!("{ID_PREFIX}{id_hash}");
    let mut ops = vec![
        TxnOp::put(id_path.clone(), encode(&id_path, &entry)?),
        TxnOp::put(
            format!(
                "{ACCESSOR_PREFIX}{}",
                salted_hash(&salt, "accessor:", &token.accessor)
            ),
            id_hash.clone().into_bytes(),
        ),
    ];
    if let Some(parent) = parent_hash {
        ops.push(TxnOp::put(
            format!("{PARENT_PREFIX}{parent}/{id_hash}"),
            Vec::new(),
        ));
    }
    Ok(ops)
}

/// Options for a new token, decoded from `auth/token/create`.
#[derive(Debug, Default)]
pub(crate) struct NewToken {
    pub(crate) id: Option<String>,
    pub(crate) policies: Vec<String>,
    pub(crate) path: String,
    pub(crate) display_name: String,
    pub(crate) meta: Option<BTreeMap<String, String>>,
    pub(crate) num_uses: u64,
    pub(crate) ttl: u64,
    pub(crate) explicit_max_ttl: u64,
    pub(crate) renewable: bool,
    /// Periodic token: the TTL every renewal grants (0: not periodic).
    pub(crate) period: u64,
    pub(crate) parent_hash: Option<String>,
    pub(crate) parent_expire: Option<OffsetDateTime>,
}

impl TokenStore {
    /// Loads the per-store salt, creating it on first use: the write that
    /// stores a new salt is appended to `writes` for the caller to commit
    /// (with the other first-use entries, in one durable write).
    pub(crate) async fn open(
        storage: &dyn Storage,
        writes: &mut Vec<TxnOp>,
    ) -> Result<Self, LogicalError> {
        let salt = match storage.get(SALT_PATH).await? {
            Some(hex_salt) => {
                let text = Zeroizing::new(hex_salt);
                let bytes = hex::decode(&*text).map_err(|e| LogicalError::corrupt(SALT_PATH, e))?;
                if bytes.len() < 16 {
                    return Err(LogicalError::corrupt(
                        SALT_PATH,
                        "salt shorter than 16 bytes",
                    ));
                }
                Zeroizing::new(bytes)
            }
            None => {
                let text = new_salt_hex()?;
                writes.push(TxnOp::put(SALT_PATH, text.as_bytes().to_vec()));
                Zeroizing::new(
                    hex::decode(&*text).map_err(|e| LogicalError::corrupt(SALT_PATH, e))?,
                )
            }
        };
        Ok(Self {
            salt,
            locks: StripedLocks::new(64),
            cache: std::sync::RwLock::new(TokenCache::default()),
        })
    }

    fn cache_read(&self) -> std::sync::RwLockReadGuard<'_, TokenCache> {
        // The cache holds only copies of stored entries; a panic elsewhere
        // cannot leave it inconsistent with storage in a harmful way.
        self.cache
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn cache_write(&self) -> std::sync::RwLockWriteGuard<'_, TokenCache> {
        self.cache
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Forgets every cached entry (after a reload, or a step-down/step-up).
    pub(crate) fn clear_cache(&self) {
        let mut cache = self.cache_write();
        cache.entries.clear();
        cache.generation += 1;
    }

    fn forget(&self, id_hash: &str) {
        let mut cache = self.cache_write();
        cache.entries.remove(id_hash);
        cache.generation += 1;
    }

    fn hash(&self, domain: &str, value: &str) -> String {
        salted_hash(&self.salt, domain, value)
    }

    fn token_hash(&self, token: &str) -> String {
        self.hash("", token)
    }

    fn accessor_hash(&self, accessor: &str) -> String {
        self.hash("accessor:", accessor)
    }

    /// Creates a token and returns it with its entry. The raw token is
    /// returned to the caller once and never stored.
    pub(crate) async fn create(
        &self,
        storage: &dyn Storage,
        new: NewToken,
    ) -> Result<(Zeroizing<String>, TokenEntry), LogicalError> {
        let token = Zeroizing::new(match new.id {
            Some(id) => id,
            None => format!("{TOKEN_PREFIX}{}", random_base62(24)?),
        });
        let id_hash = self.token_hash(&token);
        let id_path = format!("{ID_PREFIX}{id_hash}");
        let _guard = self.locks.lock(&id_hash).await;
        let at = now();
        let mut expire_time =
            (new.ttl > 0).then(|| at + time::Duration::seconds(secs_i64(new.ttl)));
        if new.explicit_max_ttl > 0 {
            let max = at + time::Duration::seconds(secs_i64(new.explicit_max_ttl));
            expire_time = Some(expire_time.map_or(max, |e| e.min(max)));
        }
        if let Some(parent_exp) = new.parent_expire {
            expire_time = Some(expire_time.map_or(parent_exp, |e| e.min(parent_exp)));
        }
        let accessor = random_base62(24)?;
        let entry = TokenEntry {
            id_hash: id_hash.clone(),
            accessor: accessor.clone(),
            orphan: new.parent_hash.is_none(),
            parent_hash: new.parent_hash.clone(),
            policies: new.policies,
            path: new.path,
            display_name: new.display_name,
            meta: new.meta,
            num_uses: new.num_uses,
            issue_time: at,
            creation_ttl: expire_time
                .map_or(0, |e| u64::try_from((e - at).whole_seconds()).unwrap_or(0)),
            expire_time,
            explicit_max_ttl: new.explicit_max_ttl,
            renewable: new.renewable,
            period: new.period,
        };
        let mut ops = vec![
            TxnOp::put(id_path.clone(), encode(&id_path, &entry)?),
            TxnOp::put(
                format!("{ACCESSOR_PREFIX}{}", self.accessor_hash(&accessor)),
                id_hash.clone().into_bytes(),
            ),
        ];
        if let Some(parent) = &new.parent_hash {
            ops.push(TxnOp::put(
                format!("{PARENT_PREFIX}{parent}/{id_hash}"),
                Vec::new(),
            ));
        }
        storage.transaction(ops).await?;
        // A custom id may replace an earlier entry that is still cached.
        self.forget(&id_hash);
        Ok((token, entry))
    }

    /// Whether a token with this raw id exists (for duplicate custom ids).
    pub(crate) async fn exists(
        &self,
        storage: &dyn Storage,
        token: &str,
    ) -> Result<bool, LogicalError> {
        let path = format!("{ID_PREFIX}{}", self.token_hash(token));
        Ok(storage.get(&path).await?.is_some())
    }

    async fn load_by_hash(
        &self,
        storage: &dyn Storage,
        id_hash: &str,
    ) -> Result<Option<TokenEntry>, LogicalError> {
        let path = format!("{ID_PREFIX}{id_hash}");
        let Some(bytes) = storage.get(&path).await? else {
            return Ok(None);
        };
        let entry = decode_entry(&path, &bytes)?;
        // The storage key already is the hash; comparing the stored copy in
        // constant time guards against an entry moved under another key and
        // keeps token validation free of data-dependent early exits.
        if !bool::from(entry.id_hash.as_bytes().ct_eq(id_hash.as_bytes())) {
            return Err(LogicalError::corrupt(
                &path,
                "token hash does not match its key",
            ));
        }
        Ok(Some(entry))
    }

    /// Validates `token` and spends one use of a limited-use token.
    ///
    /// Unknown and expired tokens are [`LogicalError::PermissionDenied`];
    /// expired entries are revoked on the way. A token whose last use this
    /// is gets revoked now and its entry returned, so the current request
    /// still runs (Vault's semantics).
    pub(crate) async fn authenticate(
        &self,
        storage: &dyn Storage,
        token: &str,
    ) -> Result<TokenEntry, LogicalError> {
        if token.is_empty() || token.len() > 512 {
            return Err(LogicalError::PermissionDenied);
        }
        let id_hash = self.token_hash(token);
        let (cached, generation) = {
            let cache = self.cache_read();
            (cache.entries.get(&id_hash).cloned(), cache.generation)
        };
        let entry = match cached {
            Some(entry) => entry,
            None => self
                .load_by_hash(storage, &id_hash)
                .await?
                .ok_or(LogicalError::PermissionDenied)?,
        };
        if entry.expired_at(now()) {
            self.revoke_tree(storage, &id_hash).await?;
            return Err(LogicalError::PermissionDenied);
        }
        if entry.num_uses == 0 {
            let mut cache = self.cache_write();
            if cache.generation == generation && !cache.entries.contains_key(&id_hash) {
                if cache.entries.len() >= CACHE_CAPACITY {
                    cache.entries.clear();
                }
                cache.entries.insert(id_hash, entry.clone());
            }
            return Ok(entry);
        }
        let guard = self.locks.lock(&id_hash).await;
        // Re-read under the lock so concurrent requests never spend one use twice.
        let mut entry = self
            .load_by_hash(storage, &id_hash)
            .await?
            .ok_or(LogicalError::PermissionDenied)?;
        if entry.num_uses == 0 {
            return Ok(entry);
        }
        entry.num_uses -= 1;
        if entry.num_uses == 0 {
            drop(guard);
            self.revoke_tree(storage, &id_hash).await?;
            // Report the spent token as it was used: one use, now none left.
            return Ok(entry);
        }
        let path = format!("{ID_PREFIX}{id_hash}");
        storage.put(&path, &encode(&path, &entry)?).await?;
        Ok(entry)
    }

    /// Looks a token up without spending a use (`auth/token/lookup`).
    pub(crate) async fn lookup(
        &self,
        storage: &dyn Storage,
        token: &str,
    ) -> Result<Option<TokenEntry>, LogicalError> {
        let id_hash = self.token_hash(token);
        match self.load_by_hash(storage, &id_hash).await? {
            Some(entry) if entry.expired_at(now()) => {
                self.revoke_tree(storage, &id_hash).await?;
                Ok(None)
            }
            other => Ok(other),
        }
    }

    /// The accessors of every live token, sorted (`LIST
    /// auth/token/accessors`, a sudo path). The accessor index is keyed by
    /// hashes, so this reads the token entries themselves: an operator's
    /// audit tool, not a hot path.
    pub(crate) async fn accessors(
        &self,
        storage: &dyn Storage,
    ) -> Result<Vec<String>, LogicalError> {
        let at = now();
        let mut accessors = Vec::new();
        for key in storage.list(ID_PREFIX).await? {
            let path = format!("{ID_PREFIX}{key}");
            if let Some(bytes) = storage.get(&path).await? {
                let entry = decode_entry(&path, &bytes)?;
                if !entry.expired_at(at) {
                    accessors.push(entry.accessor);
                }
            }
        }
        accessors.sort();
        Ok(accessors)
    }

    /// Looks a token up by accessor.
    pub(crate) async fn lookup_accessor(
        &self,
        storage: &dyn Storage,
        accessor: &str,
    ) -> Result<Option<TokenEntry>, LogicalError> {
        let path = format!("{ACCESSOR_PREFIX}{}", self.accessor_hash(accessor));
        let Some(hash) = storage.get(&path).await? else {
            return Ok(None);
        };
        let hash = String::from_utf8(hash).map_err(|e| LogicalError::corrupt(&path, e))?;
        match self.load_by_hash(storage, &hash).await? {
            Some(entry) if entry.expired_at(now()) => {
                self.revoke_tree(storage, &hash).await?;
                Ok(None)
            }
            other => Ok(other),
        }
    }

    /// Revokes the token with raw id `token` and all its descendants.
    pub(crate) async fn revoke(
        &self,
        storage: &dyn Storage,
        token: &str,
    ) -> Result<(), LogicalError> {
        self.revoke_tree(storage, &self.token_hash(token)).await
    }

    /// Revokes the token an entry describes and all its descendants.
    pub(crate) async fn revoke_entry(
        &self,
        storage: &dyn Storage,
        entry: &TokenEntry,
    ) -> Result<(), LogicalError> {
        self.revoke_tree(storage, &entry.id_hash).await
    }

    /// Revokes a token and, depth first, every token created under it.
    /// Revoking a token that no longer exists succeeds.
    async fn revoke_tree(
        &self,
        storage: &dyn Storage,
        root_hash: &str,
    ) -> Result<(), LogicalError> {
        let mut pending = vec![root_hash.to_owned()];
        let mut order = Vec::new();
        // Collect the whole tree first, then delete descendants
        // before parents, so a crash midway never leaves an orphaned child
        // whose parent marker is gone but which still works.
        while let Some(hash) = pending.pop() {
            let children = storage.list(&format!("{PARENT_PREFIX}{hash}/")).await?;
            pending.extend(children.into_iter().filter(|c| !c.ends_with('/')));
            order.push(hash);
        }
        for hash in order.iter().rev() {
            let path = format!("{ID_PREFIX}{hash}");
            let mut ops = Vec::new();
            if let Some(bytes) = storage.get(&path).await? {
                match decode_entry(&path, &bytes) {
                    Ok(entry) => {
                        ops.push(TxnOp::delete(format!(
                            "{ACCESSOR_PREFIX}{}",
                            self.accessor_hash(&entry.accessor)
                        )));
                        if let Some(parent) = &entry.parent_hash {
                            ops.push(TxnOp::delete(format!("{PARENT_PREFIX}{parent}/{hash}")));
                        }
                    }
                    // A corrupt entry is still removed: revocation must not
                    // be blocked by the very damage that may prompt it.
                    Err(err) => tracing::warn!(error = %err, "revoking an unreadable token entry"),
                }
            }
            ops.push(TxnOp::delete(path));
            // Forget before and after the delete: a lookup that read the
            // entry before the delete cannot re-insert it (generation check).
            self.forget(hash);
            storage.transaction(ops).await?;
            self.forget(hash);
        }
        Ok(())
    }

    /// Extends a token's TTL (`auth/token/renew-self`).
    pub(crate) async fn renew(
        &self,
        storage: &dyn Storage,
        token: &str,
        increment: Option<u64>,
    ) -> Result<TokenEntry, LogicalError> {
        let id_hash = self.token_hash(token);
        let _guard = self.locks.lock(&id_hash).await;
        let mut entry = self
            .load_by_hash(storage, &id_hash)
            .await?
            .ok_or(LogicalError::PermissionDenied)?;
        let at = now();
        if entry.expired_at(at) {
            return Err(LogicalError::PermissionDenied);
        }
        let Some(_) = entry.expire_time else {
            // A token without a TTL (root) never expires; nothing to renew.
            return Ok(entry);
        };
        if !entry.renewable {
            return Err(LogicalError::invalid("lease is not renewable"));
        }
        // A periodic token gets its period back on every renewal, whatever
        // the increment, and outlives the system maximum (Vault's rule).
        let (ttl, mut limit) = if entry.period > 0 {
            (
                entry.period,
                at + time::Duration::seconds(secs_i64(entry.period)),
            )
        } else {
            (
                increment.filter(|i| *i > 0).unwrap_or(entry.creation_ttl),
                entry.issue_time + time::Duration::seconds(secs_i64(MAX_TTL_SECS)),
            )
        };
        if entry.explicit_max_ttl > 0 {
            limit = limit
                .min(entry.issue_time + time::Duration::seconds(secs_i64(entry.explicit_max_ttl)));
        }
        if let Some(parent) = &entry.parent_hash
            && let Some(parent_entry) = self.load_by_hash(storage, parent).await?
            && let Some(parent_exp) = parent_entry.expire_time
        {
            limit = limit.min(parent_exp);
        }
        entry.expire_time = Some((at + time::Duration::seconds(secs_i64(ttl))).min(limit));
        let path = format!("{ID_PREFIX}{id_hash}");
        self.forget(&id_hash);
        storage.put(&path, &encode(&path, &entry)?).await?;
        self.forget(&id_hash);
        Ok(entry)
    }
}

/// Vault's policy rules for a child token: no policies means the parent's;
/// without `sudo` they must be a subset of the parent's (`default` aside),
/// and `default` is added when the parent has it; with `sudo` any set, with
/// `default` added. `no_default_policy` removes `default` even when listed;
/// `root` needs a root parent.
fn child_policies(
    parent: &[String],
    sudo: bool,
    requested: Vec<String>,
    no_default: bool,
) -> Result<Vec<String>, LogicalError> {
    let requested = if requested.iter().all(|p| p.trim().is_empty()) {
        parent.to_vec()
    } else {
        requested
    };
    let add_default = if sudo {
        !no_default
    } else {
        let without_default = |list: &[String]| {
            sanitize_policies(list, false)
                .into_iter()
                .filter(|p| p != "default")
                .collect::<Vec<_>>()
        };
        let parent_set = without_default(parent);
        if !without_default(&requested)
            .iter()
            .all(|p| parent_set.contains(p))
        {
            return Err(LogicalError::invalid(
                "child policies must be subset of parent",
            ));
        }
        !no_default && parent.iter().any(|p| p == "default")
    };
    let mut policies = sanitize_policies(&requested, add_default);
    if no_default {
        policies.retain(|p| p != "default");
    }
    check_assignable(&policies)?;
    if policies.iter().any(|p| p == "root") && !parent.iter().any(|p| p == "root") {
        return Err(LogicalError::invalid(
            "root tokens may not be created without parent token being root",
        ));
    }
    Ok(policies)
}

fn secs_i64(secs: u64) -> i64 {
    i64::try_from(secs).unwrap_or(i64::MAX / 2)
}

/// Decodes `auth/token/create`'s body into [`NewToken`] for a parent token.
/// `sudo` says whether the caller is root or has `sudo` on the create path:
/// only then may it choose the id, create an orphan or give policies its own
/// token does not have (Vault's rules).
pub(crate) fn parse_create(
    parent: &TokenEntry,
    sudo: bool,
    body: Option<&Map<String, Value>>,
    warnings: &mut Vec<String>,
) -> Result<NewToken, LogicalError> {
    const KNOWN: &[&str] = &[
        "id",
        "policies",
        "meta",
        "no_parent",
        "no_default_policy",
        "renewable",
        "ttl",
        "type",
        "explicit_max_ttl",
        "display_name",
        "num_uses",
        "lease",
        "period",
        "entity_alias",
    ];
    let fields = Fields::new(body);
    warnings.extend(fields.unknown_warning(KNOWN));

    let id = fields.string("id")?.filter(|s| !s.is_empty());
    if id.is_some() && !sudo {
        return Err(LogicalError::invalid(
            "root or sudo privileges required to specify token id",
        ));
    }
    if let Some(id) = &id {
        if id.contains('.') {
            return Err(LogicalError::invalid(
                "custom token ID cannot have a '.' in the value",
            ));
        }
        if id.len() > 256 || id.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(LogicalError::invalid(
                "custom token ID must be at most 256 characters without whitespace",
            ));
        }
    }
    if let Some(kind) = fields.string("type")?
        && !kind.is_empty()
        && kind != "service"
        && kind != "default"
    {
        return Err(LogicalError::invalid(format!(
            "token type {kind:?} is not supported; only \"service\" tokens exist"
        )));
    }
    let period = fields.duration("period")?.unwrap_or(0);
    if period > 0 && !sudo {
        return Err(LogicalError::invalid(
            "root or sudo privileges required to create periodic token",
        ));
    }
    if fields
        .string("entity_alias")?
        .is_some_and(|a| !a.is_empty())
    {
        return Err(LogicalError::invalid(
            "entity_alias requires a token role, which this server does not support",
        ));
    }
    let no_parent = fields.bool("no_parent")?.unwrap_or(false);
    if no_parent && !sudo {
        return Err(LogicalError::invalid(
            "root or sudo privileges required to create orphan token",
        ));
    }

    let no_default = fields.bool("no_default_policy")?.unwrap_or(false);
    let policies = child_policies(
        parent.policies(),
        sudo,
        fields.string_list("policies")?.unwrap_or_default(),
        no_default,
    )?;

    let ttl = match fields.duration("ttl")? {
        Some(ttl) => Some(ttl),
        None => fields.duration("lease")?,
    };
    let explicit_max_ttl = fields.duration("explicit_max_ttl")?.unwrap_or(0);
    if ttl.is_some_and(|t| t > MAX_TTL_SECS) {
        warnings.push(format!(
            "TTL of {}s is greater than the maximum of {MAX_TTL_SECS}s; capped",
            ttl.unwrap_or(0)
        ));
    }
    // A periodic token's TTL is its period (the system maximum does not
    // apply to it); `explicit_max_ttl` still caps it in the store.
    let ttl = if period > 0 {
        period
    } else {
        ttl.filter(|t| *t > 0)
            .unwrap_or(MAX_TTL_SECS)
            .min(MAX_TTL_SECS)
    };

    let display_name = match fields.string("display_name")? {
        Some(name) if !name.trim().is_empty() => {
            // Vault's sanitising: anything but ASCII letters, digits and '-'
            // becomes '-'; case is kept.
            let cleaned: String = name
                .trim()
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || c == '-' {
                        c
                    } else {
                        '-'
                    }
                })
                .take(64)
                .collect();
            format!("token-{cleaned}")
        }
        _ => "token".to_owned(),
    };

    Ok(NewToken {
        id,
        policies,
        path: "auth/token/create".to_owned(),
        display_name,
        meta: fields.string_map("meta")?,
        num_uses: fields.u64("num_uses")?.unwrap_or(0),
        ttl,
        explicit_max_ttl,
        renewable: fields.bool("renewable")?.unwrap_or(true),
        period,
        parent_hash: (!no_parent).then(|| parent.id_hash.clone()),
        parent_expire: if no_parent { None } else { parent.expire_time },
    })
}
