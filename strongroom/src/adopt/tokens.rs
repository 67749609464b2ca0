//! Reads Vault's token store (`vault/token_store.go`) below `sys/token/`:
//!
//! * `salt` — a UUID string.
//! * `id/<salted id>` — the token entry as JSON, *including the raw token
//!   id*; the salted id is `"h" + hex(HMAC-SHA256(salt, id))` for tokens
//!   with a `.` (`s.…`, Vault ≥ 1.0) and `hex(SHA1(salt ‖ id))` for older
//!   ones. Entries with `num_uses < 0` are being revoked.
//! * `accessor/<salted accessor>` and `parent/<salted parent>/<salted
//!   child>` — indexes this module does not need: the entry names its
//!   accessor and parent.
//!
//! A token's expiry lives with its lease in the expiration manager:
//! `sys/expire/id/<entry path>/<salted id>` (`expire_time`, and the lease's
//! `auth.renewable`). A root token without a TTL needs no lease; any other
//! token without one is one Vault would revoke on sight, so it is not taken
//! over.

use std::collections::BTreeMap;

use seal_core::Storage;
use serde::Deserialize;
use time::OffsetDateTime;
use zeroize::Zeroizing;

use super::AdoptError;
use crate::logical::token::ImportedToken;

const ID_FOLDER: &str = "sys/token/id/";
const LEASE_FOLDER: &str = "sys/expire/id/";

/// Vault's `logical.TokenEntry` (the fields taken over).
#[derive(Deserialize)]
struct VaultTokenEntry {
    #[serde(default)]
    id: Zeroizing<String>,
    #[serde(default)]
    accessor: String,
    #[serde(default)]
    parent: Zeroizing<String>,
    #[serde(default)]
    policies: Option<Vec<String>>,
    #[serde(default)]
    path: String,
    #[serde(default)]
    meta: Option<BTreeMap<String, String>>,
    #[serde(default)]
    display_name: String,
    #[serde(default)]
    num_uses: i64,
    #[serde(default)]
    creation_time: i64,
    /// Go `time.Duration`: nanoseconds.
    #[serde(default)]
    ttl: i64,
    #[serde(default)]
    explicit_max_ttl: i64,
}

/// Vault's lease entry (the fields a token needs).
#[derive(Deserialize)]
struct LeaseEntry {
    #[serde(default, with = "time::serde::rfc3339::option")]
    expire_time: Option<OffsetDateTime>,
    #[serde(default)]
    auth: Option<LeaseAuth>,
}

#[derive(Deserialize)]
struct LeaseAuth {
    #[serde(default)]
    renewable: bool,
}

fn secs(nanos: i64) -> u64 {
    u64::try_from(nanos / 1_000_000_000).unwrap_or(0)
}

/// What [`read_tokens`] found.
#[derive(Debug, Default)]
pub(crate) struct VaultTokens {
    pub(crate) tokens: Vec<ImportedToken>,
    /// Tokens not taken over, with why (for the start-up report).
    pub(crate) skipped: Vec<String>,
}

/// Reads every live service token of a Vault token store.
///
/// # Errors
/// [`AdoptError::Storage`]; [`AdoptError::Corrupt`] for an entry or lease
/// that does not decode.
pub(crate) async fn read_tokens(storage: &dyn Storage) -> Result<VaultTokens, AdoptError> {
    let mut out = VaultTokens::default();
    let now = OffsetDateTime::now_utc();
    for salted in storage.list(ID_FOLDER).await? {
        if salted.ends_with('/') || crate::logical::token::is_own_hash(&salted) {
            continue;
        }
        let path = format!("{ID_FOLDER}{salted}");
        let Some(raw) = storage.get(&path).await? else {
            continue;
        };
        let entry: VaultTokenEntry =
            serde_json::from_slice(&raw).map_err(|e| AdoptError::Corrupt {
                path: path.clone(),
                reason: format!("not a Vault token entry: {e}"),
            })?;
        if entry.num_uses < 0 {
            out.skipped
                .push(format!("token {}: being revoked", entry.accessor));
            continue;
        }
        if entry.id.is_empty() {
            out.skipped.push(format!(
                "token {}: entry without a token id",
                entry.accessor
            ));
            continue;
        }
        let policies = entry.policies.clone().unwrap_or_default();
        let is_root_forever = policies == ["root"] && entry.ttl == 0;
        let lease_path = format!(
            "{LEASE_FOLDER}{}/{salted}",
            entry.path.trim_end_matches('/')
        );
        let lease = match storage.get(&lease_path).await? {
            Some(raw) => Some(serde_json::from_slice::<LeaseEntry>(&raw).map_err(|e| {
                AdoptError::Corrupt {
                    path: lease_path.clone(),
                    reason: format!("not a Vault lease entry: {e}"),
                }
            })?),
            None => None,
        };
        // Go's zero time means "no expiry".
        let expire_time = lease
            .as_ref()
            .and_then(|l| l.expire_time)
            .filter(|t| t.year() > 1);
        if !is_root_forever && expire_time.is_none() {
            out.skipped.push(format!(
                "token {}: has a TTL but no lease, Vault would revoke it",
                entry.accessor
            ));
            continue;
        }
        if expire_time.is_some_and(|t| t <= now) {
            out.skipped
                .push(format!("token {}: expired", entry.accessor));
            continue;
        }
        let explicit = secs(entry.explicit_max_ttl);
        let issue_time = OffsetDateTime::from_unix_timestamp(entry.creation_time).unwrap_or(now);
        out.tokens.push(ImportedToken {
            id: entry.id,
            accessor: entry.accessor,
            parent: (!entry.parent.is_empty()).then_some(entry.parent),
            policies,
            path: entry.path,
            display_name: entry.display_name,
            meta: entry.meta.filter(|m| !m.is_empty()),
            num_uses: u64::try_from(entry.num_uses).unwrap_or(0),
            issue_time,
            creation_ttl: secs(entry.ttl),
            expire_time: if is_root_forever { None } else { expire_time },
            explicit_max_ttl: explicit,
            renewable: lease.and_then(|l| l.auth).is_some_and(|a| a.renewable),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use seal_core::MemoryStorage;

    #[tokio::test]
    async fn takes_over_live_tokens_and_skips_the_rest() {
        let s = MemoryStorage::new();
        let root = serde_json::json!({"id": "s.root", "accessor": "acc1", "policies": ["root"],
            "path": "auth/token/root", "display_name": "root", "creation_time": 1_560_000_000, "ttl": 0});
        s.put("sys/token/id/hroot", root.to_string().as_bytes())
            .await
            .unwrap();
        let child = serde_json::json!({"id": "s.child", "accessor": "acc2", "parent": "s.root",
            "policies": ["app", "default"], "path": "auth/token/create", "display_name": "token",
            "creation_time": 1_560_000_000, "ttl": 3_600_000_000_000_i64, "num_uses": 0});
        s.put("sys/token/id/hchild", child.to_string().as_bytes())
            .await
            .unwrap();
        let lease =
            serde_json::json!({"expire_time": "2999-01-01T00:00:00Z", "auth": {"renewable": true}});
        s.put(
            "sys/expire/id/auth/token/create/hchild",
            lease.to_string().as_bytes(),
        )
        .await
        .unwrap();
        let orphan = serde_json::json!({"id": "s.nolease", "accessor": "acc3", "policies": ["app"],
            "path": "auth/token/create", "ttl": 60_000_000_000_i64});
        s.put("sys/token/id/hnolease", orphan.to_string().as_bytes())
            .await
            .unwrap();
        let found = read_tokens(&s).await.unwrap();
        assert_eq!(found.tokens.len(), 2);
        let child = found.tokens.iter().find(|t| t.accessor == "acc2").unwrap();
        assert_eq!(child.parent.as_deref().map(String::as_str), Some("s.root"));
        assert_eq!(child.creation_ttl, 3600);
        assert!(child.renewable);
        assert!(child.expire_time.is_some());
        let root = found.tokens.iter().find(|t| t.accessor == "acc1").unwrap();
        assert!(root.expire_time.is_none());
        assert_eq!(found.skipped.len(), 1);
        assert!(found.skipped[0].contains("acc3"));
    }

    #[tokio::test]
    async fn a_broken_entry_names_its_path() {
        let s = MemoryStorage::new();
        s.put("sys/token/id/hbad", b"{not json").await.unwrap();
        let err = read_tokens(&s).await.unwrap_err();
        assert!(err.to_string().contains("sys/token/id/hbad"), "{err}");
    }
}
