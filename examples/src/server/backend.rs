//! Turning the config's `storage` and `seal` stanzas into the concrete
//! backends the core receives as trait objects.

use std::sync::Arc;

use seal_core::{MemoryStorage, Storage};

use crate::config::{SealConfig, StorageConfig};
use crate::error::Error;

/// Opens the configured storage.
///
/// # Errors
///
/// [`Error::Backend`] when the redb file cannot be opened or the Consul
/// settings are invalid, naming the stanza's line.
pub(crate) fn open_storage(config: &StorageConfig) -> Result<Arc<dyn Storage>, Error> {
    match config {
        StorageConfig::Inmem => Ok(Arc::new(MemoryStorage::new())),
        StorageConfig::Redb { path } => {
            if let Some(parent) = path
                .parent()
                .filter(|p| !p.as_os_str().is_empty() && !p.exists())
            {
                return Err(Error::Backend {
                    what: format!("storage \"redb\" at {}", path.display()),
                    message: format!(
                        "the directory {} does not exist; create it (owned by the server's user) or change path",
                        parent.display()
                    ),
                });
            }
            let storage = storage_redb::RedbStorage::open(path).map_err(|e| Error::Backend {
                what: format!("storage \"redb\" at {}", path.display()),
                message: e.to_string(),
            })?;
            Ok(Arc::new(storage))
        }
        StorageConfig::Consul { settings, line } => {
            let what = format!("storage \"consul\" (config line {line})");
            let consul_config =
                storage_consul::ConsulConfig::from_map(settings).map_err(|e| Error::Backend {
                    what: what.clone(),
                    message: e.to_string(),
                })?;
            let storage =
                storage_consul::ConsulStorage::new(consul_config).map_err(|e| Error::Backend {
                    what,
                    message: e.to_string(),
                })?;
            Ok(Arc::new(storage))
        }
    }
}

/// The seals the config names, as the core's builder takes them.
pub(crate) struct Seals {
    /// Enabled auto seals (empty = Shamir).
    pub(crate) enabled: Vec<strongroom::NamedSeal>,
    /// Disabled seals: the source of a seal migration.
    pub(crate) disabled: Vec<strongroom::NamedSeal>,
    /// Break-glass on (any enabled stanza says `recovery_unseal = true`).
    pub(crate) recovery_unseal: bool,
}

/// Builds every configured auto seal.
///
/// Building does not contact the KMS: a KMS that is down at start leaves
/// the node sealed and the auto-unseal loop retrying, instead of a server
/// that refuses to start (a Vault pain point).
///
/// # Errors
///
/// [`Error::Backend`] when a stanza is inconsistent (no key id, bad
/// durations), naming the stanza's line.
pub(crate) async fn build_seals(configs: &[SealConfig]) -> Result<Seals, Error> {
    let mut seals = Seals {
        enabled: Vec::new(),
        disabled: Vec::new(),
        recovery_unseal: configs.iter().any(|c| !c.disabled && c.recovery_unseal),
    };
    // The AWSKMS_* / VAULT_AWSKMS_* environment overrides name one key: they
    // apply when there is a single seal, never to one of several.
    let single = configs.len() == 1;
    for config in configs {
        let what = if config.name == "awskms" {
            format!("seal \"awskms\" (config line {})", config.line)
        } else {
            format!(
                "seal \"awskms\" {:?} (config line {})",
                config.name, config.line
            )
        };
        let mut kms_config =
            seal_awskms::AwsKmsConfig::from_map(&config.settings).map_err(|e| Error::Backend {
                what: what.clone(),
                message: e.to_string(),
            })?;
        if single {
            kms_config.apply_env();
        }
        let seal = seal_awskms::AwsKmsSeal::new(kms_config)
            .await
            .map_err(|e| Error::Backend {
                what,
                message: e.to_string(),
            })?;
        tracing::info!(
            name = %config.name,
            priority = config.priority,
            disabled = config.disabled,
            key_id = seal.key_id(),
            region = seal.region(),
            endpoint = seal.endpoint().unwrap_or("(AWS default)"),
            "awskms seal configured"
        );
        let named = strongroom::NamedSeal {
            name: config.name.clone(),
            priority: config.priority,
            seal: Arc::new(seal),
        };
        if config.disabled {
            seals.disabled.push(named);
        } else {
            seals.enabled.push(named);
        }
    }
    Ok(seals)
}
