//! Turning the config's `storage` and `seal` stanzas into the concrete
//! backends the core receives as trait objects.

use std::sync::Arc;

use seal_core::{MemoryStorage, Seal, Storage};

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

/// Builds the configured auto seal (`None` = Shamir).
///
/// Building does not contact the KMS: a KMS that is down at start leaves
/// the node sealed and the auto-unseal loop retrying, instead of a server
/// that refuses to start (a Vault pain point).
///
/// # Errors
///
/// [`Error::Backend`] when the stanza is inconsistent (no key id, bad
/// durations), naming the stanza's line.
pub(crate) async fn build_seal(
    config: Option<&SealConfig>,
) -> Result<Option<Arc<dyn Seal>>, Error> {
    let Some(SealConfig::AwsKms { settings, line }) = config else {
        return Ok(None);
    };
    let what = format!("seal \"awskms\" (config line {line})");
    let mut kms_config =
        seal_awskms::AwsKmsConfig::from_map(settings).map_err(|e| Error::Backend {
            what: what.clone(),
            message: e.to_string(),
        })?;
    kms_config.apply_env();
    let seal = seal_awskms::AwsKmsSeal::new(kms_config)
        .await
        .map_err(|e| Error::Backend {
            what,
            message: e.to_string(),
        })?;
    tracing::info!(
        key_id = seal.key_id(),
        region = seal.region(),
        endpoint = seal.endpoint().unwrap_or("(AWS default)"),
        "awskms seal configured"
    );
    Ok(Some(Arc::new(seal)))
}
