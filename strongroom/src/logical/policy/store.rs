//! The policy store: named ACL policies behind the barrier, and the cache
//! of compiled [`Acl`]s every request consults.
//!
//! # Storage (Vault's layout, so an adopted Vault data set loads unchanged)
//! Each policy is one entry at `sys/policy/<name>` (Vault's system view
//! `sys/` plus the policy store's sub-view `policy/`, see Vault's
//! `vault/policy_store.go`), holding Vault's `PolicyEntry` as JSON with Go's
//! field names:
//!
//! ```json
//! {"Version": 2, "Raw": "<policy text as written>", "Templated": false, "Type": 0}
//! ```
//!
//! `Type` 0 is an ACL policy. Fields other versions add (OpenBao's
//! `DataVersion`, `CASRequired`, `Modified`, ...) are ignored on read. The
//! `root` policy is never stored; `default` is written at the first unseal
//! when missing and never overwritten; `response-wrapping` (which Vault
//! stores) is hidden and immutable.
//!
//! # Caching
//! Parsed policies and compiled ACLs (keyed by a token's sorted policy
//! list) stay in memory. Every write and delete goes through this store and
//! clears the compiled ACLs; a generation counter keeps a lookup that raced
//! with a write from caching what it read before the write. A node that
//! becomes active builds a fresh store, so it starts from storage.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};

use seal_core::{Storage, TxnOp};
use serde::{Deserialize, Serialize};

use super::{Acl, Policy, sanitize_name};
use crate::logical::LogicalError;

/// Where policies live (Vault's path).
pub(crate) const POLICY_PREFIX: &str = "sys/policy/";

/// Policies that exist but cannot be written, deleted or given to tokens.
const IMMUTABLE: &[&str] = &["root", "response-wrapping", "control-group"];
const NOT_ASSIGNABLE: &[&str] = &["response-wrapping", "control-group"];

/// Compiled ACLs kept before the cache starts over.
const ACL_CACHE_CAPACITY: usize = 4096;

/// The rules of the built-in `default` policy, as in current Vault and
/// OpenBao: a token may look itself up, renew and revoke itself, check its
/// own capabilities, use its cubbyhole and the response-wrapping and hash
/// tools. The identity paths only apply to tokens with an entity.
pub(crate) const DEFAULT_POLICY: &str = r#"# Allow tokens to look up their own properties
path "auth/token/lookup-self" {
    capabilities = ["read"]
}

# Allow tokens to renew themselves
path "auth/token/renew-self" {
    capabilities = ["update"]
}

# Allow tokens to revoke themselves
path "auth/token/revoke-self" {
    capabilities = ["update"]
}

# Allow a token to look up its own capabilities on a path
path "sys/capabilities-self" {
    capabilities = ["update"]
}

# Allow a token to look up its own entity by id or name
path "identity/entity/id/{{identity.entity.id}}" {
  capabilities = ["read"]
}
path "identity/entity/name/{{identity.entity.name}}" {
  capabilities = ["read"]
}

# Allow a token to look up its resultant ACL from all policies
path "sys/internal/ui/resultant-acl" {
    capabilities = ["read"]
}

# Allow a token to renew a lease via lease_id in the request body
path "sys/renew" {
    capabilities = ["update"]
}
path "sys/leases/renew" {
    capabilities = ["update"]
}

# Allow looking up lease properties
path "sys/leases/lookup" {
    capabilities = ["update"]
}

# Allow a token to manage its own cubbyhole
path "cubbyhole/*" {
    capabilities = ["create", "read", "update", "delete", "list"]
}

# Allow a token to wrap arbitrary values in a response-wrapping token
path "sys/wrapping/wrap" {
    capabilities = ["update"]
}

# Allow a token to look up the creation time and TTL of a given
# response-wrapping token
path "sys/wrapping/lookup" {
    capabilities = ["update"]
}

# Allow a token to unwrap a response-wrapping token
path "sys/wrapping/unwrap" {
    capabilities = ["update"]
}

# Allow general purpose tools
path "sys/tools/hash" {
    capabilities = ["update"]
}
path "sys/tools/hash/*" {
    capabilities = ["update"]
}

# Allow a token to make requests to the Authorization Endpoint for OIDC providers
path "identity/oidc/provider/+/authorize" {
    capabilities = ["read", "update"]
}
"#;

/// Vault's `PolicyEntry`, field names as Go encodes them.
#[derive(Debug, Serialize, Deserialize)]
struct PolicyEntry {
    #[serde(rename = "Version", default)]
    version: u32,
    #[serde(rename = "Raw", default)]
    raw: String,
    #[serde(rename = "Templated", default)]
    templated: bool,
    #[serde(rename = "Type", default)]
    kind: u32,
}

#[derive(Default)]
struct Cache {
    /// `None` remembers that a policy does not exist.
    policies: HashMap<String, Option<Arc<Policy>>>,
    acls: HashMap<Vec<String>, Arc<Acl>>,
    /// Bumped by every write and delete.
    generation: u64,
}

/// Policies over a [`Storage`], with the compiled-ACL cache.
pub(crate) struct PolicyStore {
    cache: RwLock<Cache>,
}

impl std::fmt::Debug for PolicyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicyStore").finish_non_exhaustive()
    }
}

fn policy_path(name: &str) -> String {
    format!("{POLICY_PREFIX}{name}")
}

fn encode_entry(path: &str, raw: &str, templated: bool) -> Result<Vec<u8>, LogicalError> {
    let entry = PolicyEntry {
        version: 2,
        raw: raw.to_owned(),
        templated,
        kind: 0,
    };
    serde_json::to_vec(&entry).map_err(|e| LogicalError::corrupt(path, e))
}

/// Whether `name` may be written, deleted or assigned: `Err` with Vault's
/// message otherwise.
pub(crate) fn check_assignable(policies: &[String]) -> Result<(), LogicalError> {
    match policies
        .iter()
        .find(|p| NOT_ASSIGNABLE.contains(&p.as_str()))
    {
        Some(p) => Err(LogicalError::invalid(format!("cannot assign policy {p:?}"))),
        None => Ok(()),
    }
}

impl PolicyStore {
    /// Opens the store. When the `default` policy is missing (Vault writes
    /// it at every unseal; an edited `default` is kept) its write is
    /// appended to `writes` for the caller to commit.
    pub(crate) async fn open(
        storage: &dyn Storage,
        writes: &mut Vec<TxnOp>,
    ) -> Result<Self, LogicalError> {
        let path = policy_path("default");
        if storage.get(&path).await?.is_none() {
            writes.push(TxnOp::put(
                path.clone(),
                encode_entry(&path, DEFAULT_POLICY, false)?,
            ));
        }
        Ok(Self {
            cache: RwLock::new(Cache::default()),
        })
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Cache> {
        self.cache.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Cache> {
        self.cache.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// Forgets everything cached (after a reload from storage).
    pub(crate) fn clear_cache(&self) {
        let mut cache = self.write();
        cache.policies.clear();
        cache.acls.clear();
        cache.generation += 1;
    }

    /// The policy `name`, or `None`. `root` always exists.
    pub(crate) async fn get(
        &self,
        storage: &dyn Storage,
        name: &str,
    ) -> Result<Option<Arc<Policy>>, LogicalError> {
        let name = sanitize_name(name);
        if name == "root" {
            return Ok(Some(Arc::new(Policy::root())));
        }
        let generation = {
            let cache = self.read();
            if let Some(hit) = cache.policies.get(&name) {
                return Ok(hit.clone());
            }
            cache.generation
        };
        let path = policy_path(&name);
        let loaded = match storage.get(&path).await? {
            None => None,
            Some(bytes) => {
                let entry: PolicyEntry =
                    serde_json::from_slice(&bytes).map_err(|e| LogicalError::corrupt(&path, e))?;
                if entry.kind != 0 {
                    return Err(LogicalError::corrupt(
                        &path,
                        format!("policy type {} is not an ACL policy", entry.kind),
                    ));
                }
                let policy = Policy::parse(&name, &entry.raw)
                    .map_err(|e| LogicalError::corrupt(&path, e))?;
                Some(Arc::new(policy))
            }
        };
        let mut cache = self.write();
        if cache.generation == generation {
            cache.policies.insert(name, loaded.clone());
        }
        Ok(loaded)
    }

    /// The compiled ACL for a token's (sanitized, sorted) policy list.
    /// Policies that do not exist contribute nothing.
    pub(crate) async fn acl(
        &self,
        storage: &dyn Storage,
        policies: &[String],
    ) -> Result<Arc<Acl>, LogicalError> {
        let generation = {
            let cache = self.read();
            if let Some(acl) = cache.acls.get(policies) {
                return Ok(acl.clone());
            }
            cache.generation
        };
        let mut resolved = Vec::with_capacity(policies.len());
        for name in policies {
            if let Some(policy) = self.get(storage, name).await? {
                resolved.push(policy);
            }
        }
        let acl = Arc::new(Acl::new(&resolved));
        let mut cache = self.write();
        if cache.generation == generation {
            if cache.acls.len() >= ACL_CACHE_CAPACITY {
                cache.acls.clear();
            }
            cache.acls.insert(policies.to_vec(), acl.clone());
        }
        Ok(acl)
    }

    async fn write_entry(
        &self,
        storage: &dyn Storage,
        name: &str,
        raw: &str,
    ) -> Result<Arc<Policy>, LogicalError> {
        let policy = Arc::new(
            Policy::parse(name, raw).map_err(|e| LogicalError::InvalidRequest(e.to_string()))?,
        );
        let path = policy_path(name);
        let bytes = encode_entry(&path, raw, policy.paths.iter().any(|p| p.templated))?;
        // Invalidate before and after: a reader that loaded the old entry
        // before the put cannot cache it (generation check).
        self.invalidate();
        storage.put(&path, &bytes).await?;
        let mut cache = self.write();
        cache.generation += 1;
        cache.acls.clear();
        cache.policies.insert(name.to_owned(), Some(policy.clone()));
        Ok(policy)
    }

    fn invalidate(&self) {
        let mut cache = self.write();
        cache.generation += 1;
        cache.acls.clear();
    }

    /// Creates or replaces the policy `name` (already sanitized).
    ///
    /// # Errors
    /// 400 for `root` and the other immutable policies and for a policy
    /// that does not parse; storage errors.
    pub(crate) async fn set(
        &self,
        storage: &dyn Storage,
        name: &str,
        raw: &str,
    ) -> Result<(), LogicalError> {
        if IMMUTABLE.contains(&name) {
            return Err(LogicalError::invalid(format!(
                "cannot update {name:?} policy"
            )));
        }
        self.write_entry(storage, name, raw).await.map(|_| ())
    }

    /// Deletes the policy `name`; deleting a missing policy succeeds.
    ///
    /// # Errors
    /// 400 for `root`, `default` and the other immutable policies; storage
    /// errors.
    pub(crate) async fn delete(
        &self,
        storage: &dyn Storage,
        name: &str,
    ) -> Result<(), LogicalError> {
        if IMMUTABLE.contains(&name) {
            return Err(LogicalError::invalid(format!(
                "cannot delete {name:?} policy"
            )));
        }
        if name == "default" {
            return Err(LogicalError::invalid("cannot delete default policy"));
        }
        self.invalidate();
        storage.delete(&policy_path(name)).await?;
        let mut cache = self.write();
        cache.generation += 1;
        cache.acls.clear();
        cache.policies.insert(name.to_owned(), None);
        Ok(())
    }

    /// Every assignable policy name, sorted, then `root` (Vault's order).
    pub(crate) async fn list(&self, storage: &dyn Storage) -> Result<Vec<String>, LogicalError> {
        let mut names = Vec::new();
        let mut pending = vec![String::new()];
        // Names may contain `/`: collect the whole tree, as Vault does.
        while let Some(folder) = pending.pop() {
            for key in storage.list(&format!("{POLICY_PREFIX}{folder}")).await? {
                let full = format!("{folder}{key}");
                if key.ends_with('/') {
                    pending.push(full);
                } else if !NOT_ASSIGNABLE.contains(&full.as_str()) {
                    names.push(full);
                }
            }
        }
        names.sort();
        names.push("root".to_owned());
        Ok(names)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use seal_core::MemoryStorage;

    async fn open(storage: &MemoryStorage) -> PolicyStore {
        let mut writes = Vec::new();
        let store = PolicyStore::open(storage, &mut writes).await.unwrap();
        if !writes.is_empty() {
            storage.transaction(writes).await.unwrap();
        }
        store
    }

    #[tokio::test]
    async fn default_is_created_once_and_vaults_entry_shape_is_kept() {
        let storage = MemoryStorage::new();
        let store = open(&storage).await;
        let raw = storage.get("sys/policy/default").await.unwrap().unwrap();
        let entry: serde_json::Value = serde_json::from_slice(&raw).unwrap();
        assert_eq!(entry["Version"], 2);
        assert_eq!(entry["Type"], 0);
        assert_eq!(entry["Raw"], DEFAULT_POLICY);
        // An edited default survives the next open.
        store
            .set(
                &storage,
                "default",
                "path \"x\" { capabilities = [\"read\"] }",
            )
            .await
            .unwrap();
        let again = open(&storage).await;
        let policy = again.get(&storage, "default").await.unwrap().unwrap();
        assert!(policy.raw().contains("path \"x\""));
    }

    #[tokio::test]
    async fn a_vault_1_1_entry_loads() {
        let storage = MemoryStorage::new();
        // What Vault 1.1.2 writes, and OpenBao's newer fields.
        storage
            .put(
                "sys/policy/app",
                br#"{"Version":2,"Raw":"path \"secret/*\" { capabilities = [\"read\"] }","Templated":false,"Type":0,"DataVersion":3,"CASRequired":false}"#,
            )
            .await
            .unwrap();
        storage
            .put("sys/policy/response-wrapping", br#"{"Version":2,"Raw":"path \"cubbyhole/response\" { capabilities = [\"create\", \"read\"] }","Type":0}"#)
            .await
            .unwrap();
        let store = open(&storage).await;
        let acl = store
            .acl(&storage, &["app".to_owned(), "default".to_owned()])
            .await
            .unwrap();
        assert_eq!(acl.capabilities("secret/x"), ["read"]);
        assert_eq!(
            store.list(&storage).await.unwrap(),
            ["app", "default", "root"]
        );
        assert!(store.set(&storage, "response-wrapping", "").await.is_err());
        assert!(check_assignable(&["response-wrapping".to_owned()]).is_err());
    }

    #[tokio::test]
    async fn writes_and_deletes_refresh_compiled_acls() {
        let storage = MemoryStorage::new();
        let store = open(&storage).await;
        let names = vec!["p".to_owned()];
        assert_eq!(
            store.acl(&storage, &names).await.unwrap().capabilities("a"),
            ["deny"]
        );
        store
            .set(&storage, "p", "path \"a\" { capabilities = [\"read\"] }")
            .await
            .unwrap();
        assert_eq!(
            store.acl(&storage, &names).await.unwrap().capabilities("a"),
            ["read"]
        );
        store.delete(&storage, "p").await.unwrap();
        assert_eq!(
            store.acl(&storage, &names).await.unwrap().capabilities("a"),
            ["deny"]
        );
        store.delete(&storage, "p").await.unwrap();
        for (name, wanted) in [
            ("root", "cannot delete \"root\" policy"),
            ("default", "cannot delete default policy"),
        ] {
            assert_eq!(
                store.delete(&storage, name).await.unwrap_err().to_string(),
                wanted
            );
        }
        assert_eq!(
            store
                .set(&storage, "root", "")
                .await
                .unwrap_err()
                .to_string(),
            "cannot update \"root\" policy"
        );
    }

    #[tokio::test]
    async fn names_with_slashes_are_listed() {
        let storage = MemoryStorage::new();
        let store = open(&storage).await;
        store.set(&storage, "team/a", "").await.unwrap();
        assert_eq!(
            store.list(&storage).await.unwrap(),
            ["default", "team/a", "root"]
        );
    }
}
