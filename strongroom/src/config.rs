//! The plain (unencrypted) core entries: seal and recovery configuration, in
//! Vault's JSON layout, and the paths the core keeps its wrapped keys at.

use seal_core::Storage;
use serde::{Deserialize, Serialize};

use crate::CoreError;

/// Barrier seal configuration (plain JSON; Vault's `SealConfig`).
pub(crate) const SEAL_CONFIG_PATH: &str = "core/seal-config";
/// Recovery key configuration for auto seals (plain JSON).
pub(crate) const RECOVERY_CONFIG_PATH: &str = "core/recovery-config";
/// The root key wrapped by the seal (plain seal blob).
pub(crate) const STORED_KEYS_PATH: &str = "core/hsm/barrier-unseal-keys";
/// The recovery key wrapped by the seal (plain seal blob).
pub(crate) const RECOVERY_KEY_PATH: &str = "core/recovery-key";
/// During a Shamir rekey only: the new root key wrapped under the current
/// KEK (plain seal blob), removed in the same transaction that stores the
/// new wrapped root key.
pub(crate) const REKEY_PENDING_PATH: &str = "core/hsm/barrier-unseal-keys-rekey-pending";
/// During a Shamir → auto seal migration only: the migration record (plain
/// JSON, every key in it wrapped), removed by the migration's last
/// transaction.
pub(crate) const MIGRATION_PATH: &str = "core/seal-migration";
/// The seal generation (plain JSON `{"generation": N}`, Vault ≥ 1.15 keeps
/// a `core/seal-gen-info` too): bumped by every seal migration and when a
/// seal removed from the config loses its wraps, so a node still running
/// on the configuration from before, changed by another node, can tell,
/// and never re-wraps the keys with its old seals.
pub(crate) const SEAL_GEN_INFO_PATH: &str = "core/seal-gen-info";
/// Cluster name and id, inside the barrier.
pub(crate) const CLUSTER_INFO_PATH: &str = "core/cluster/local/info";

/// Vault's `SealConfig`, as stored at [`SEAL_CONFIG_PATH`] and
/// [`RECOVERY_CONFIG_PATH`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SealConfig {
    #[serde(rename = "type")]
    pub(crate) seal_type: String,
    pub(crate) secret_shares: usize,
    pub(crate) secret_threshold: usize,
    #[serde(default)]
    pub(crate) pgp_keys: Option<Vec<String>>,
    #[serde(default)]
    pub(crate) nonce: String,
    #[serde(default)]
    pub(crate) backup: bool,
    #[serde(default)]
    pub(crate) stored_shares: usize,
}

impl SealConfig {
    pub(crate) fn new(seal_type: &str, shares: usize, threshold: usize) -> Self {
        Self {
            seal_type: seal_type.to_owned(),
            secret_shares: shares,
            secret_threshold: threshold,
            pgp_keys: None,
            nonce: String::new(),
            backup: false,
            stored_shares: 1,
        }
    }

    /// Reads the config at `path` from physical storage.
    pub(crate) async fn load(
        storage: &dyn Storage,
        path: &'static str,
    ) -> Result<Option<Self>, CoreError> {
        let Some(raw) = storage.get(path).await? else {
            return Ok(None);
        };
        Self::parse(&raw, path).map(Some)
    }

    /// Parses and checks a stored config. Storage is not trusted: any bytes
    /// give an error, never a panic.
    pub(crate) fn parse(raw: &[u8], path: &'static str) -> Result<Self, CoreError> {
        let config: Self = serde_json::from_slice(raw).map_err(|e| CoreError::Corrupt {
            path,
            reason: format!("not a seal configuration JSON document: {e}"),
        })?;
        if config.secret_threshold == 0
            || config.secret_threshold > config.secret_shares
            || config.secret_shares > seal_shamir::MAX_SHARES
        {
            return Err(CoreError::Corrupt {
                path,
                reason: format!(
                    "impossible share counts (shares {}, threshold {})",
                    config.secret_shares, config.secret_threshold
                ),
            });
        }
        Ok(config)
    }

    pub(crate) fn to_json(&self) -> Result<Vec<u8>, CoreError> {
        serde_json::to_vec(self)
            .map_err(|e| CoreError::Config(format!("serializing seal config: {e}")))
    }
}

/// The cluster's name and id, kept inside the barrier.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ClusterInfo {
    pub(crate) name: String,
    pub(crate) id: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn reads_vaults_layout() {
        let raw = br#"{"type":"shamir","secret_shares":5,"secret_threshold":3,"pgp_keys":null,"nonce":"","backup":false,"stored_shares":1}"#;
        let config = SealConfig::parse(raw, SEAL_CONFIG_PATH).unwrap();
        assert_eq!(config, SealConfig::new("shamir", 5, 3));
        let back = SealConfig::parse(&config.to_json().unwrap(), SEAL_CONFIG_PATH).unwrap();
        assert_eq!(back, config);
    }

    #[test]
    fn impossible_counts_are_corrupt() {
        for raw in [
            &br#"{"type":"shamir","secret_shares":3,"secret_threshold":5}"#[..],
            br#"{"type":"shamir","secret_shares":3,"secret_threshold":0}"#,
            br#"{"type":"shamir","secret_shares":300,"secret_threshold":3}"#,
            br#"{"type":"shamir"}"#,
            b"not json",
        ] {
            let err = SealConfig::parse(raw, SEAL_CONFIG_PATH).unwrap_err();
            assert!(
                err.to_string().starts_with("corrupt core/seal-config"),
                "{err}"
            );
        }
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(raw in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = SealConfig::parse(&raw, SEAL_CONFIG_PATH);
        }

        #[test]
        fn arbitrary_json_objects_never_panic(shares in any::<i64>(), threshold in any::<u64>(), ty in ".{0,12}") {
            let raw = serde_json::json!({"type": ty, "secret_shares": shares, "secret_threshold": threshold});
            let _ = SealConfig::parse(raw.to_string().as_bytes(), SEAL_CONFIG_PATH);
        }
    }
}
