//! Turning the config's `storage`, `ha_storage`, `service_registration
//! "consul"` and `seal` stanzas into the concrete backends the core
//! receives as trait objects.

use std::collections::BTreeMap;
use std::sync::Arc;

use seal_core::{HaBackend, MemoryStorage, Storage};
use storage_consul::{ConsulConfig, ConsulHaBackend, ConsulStorage};

use crate::config::{SealConfig, ServerConfig, StorageConfig};
use crate::error::Error;

/// The opened storage, and the Consul client behind it when there is one
/// (HA and service registration share its connection, token and TLS).
#[derive(Debug)]
pub(crate) struct OpenedStorage {
    /// What the core stores through.
    pub(crate) storage: Arc<dyn Storage>,
    /// With `storage "consul"`: the backend and its settings.
    pub(crate) consul: Option<(ConsulStorage, ConsulConfig)>,
}

/// Opens the configured storage.
///
/// # Errors
///
/// [`Error::Backend`] when the redb file cannot be opened or the Consul
/// settings are invalid, naming the stanza's line.
pub(crate) fn open_storage(config: &StorageConfig) -> Result<OpenedStorage, Error> {
    match config {
        StorageConfig::Inmem => Ok(OpenedStorage {
            storage: Arc::new(MemoryStorage::new()),
            consul: None,
        }),
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
            Ok(OpenedStorage {
                storage: Arc::new(storage),
                consul: None,
            })
        }
        StorageConfig::Consul { settings, line } => {
            let (storage, config) = open_consul(
                settings,
                &format!("storage \"consul\" (config line {line})"),
            )?;
            Ok(OpenedStorage {
                storage: Arc::new(storage.clone()),
                consul: Some((storage, config)),
            })
        }
    }
}

fn consul_config(settings: &BTreeMap<String, String>, what: &str) -> Result<ConsulConfig, Error> {
    ConsulConfig::from_map(settings).map_err(|e| Error::Backend {
        what: what.to_owned(),
        message: e.to_string(),
    })
}

fn open_consul(
    settings: &BTreeMap<String, String>,
    what: &str,
) -> Result<(ConsulStorage, ConsulConfig), Error> {
    let config = consul_config(settings, what)?;
    let storage = ConsulStorage::new(config.clone()).map_err(|e| Error::Backend {
        what: what.to_owned(),
        message: e.to_string(),
    })?;
    Ok((storage, config))
}

/// The HA lock service: `ha_storage "consul"` when given, else the Consul
/// storage itself (Vault: `ha_enabled` defaults to true there); none for
/// redb and inmem, which serve one node.
///
/// The Consul HA backend fences the writes of the storage it is built
/// from, so with Consul storage every write of the active node carries a
/// `check-session` on the lock. With a separate `ha_storage` the data
/// storage is not fenced by Consul; the core still refuses every write the
/// moment it knows the lock is lost.
///
/// # Errors
///
/// [`Error::Backend`] for invalid `ha_storage` settings.
pub(crate) fn open_ha(
    config: &ServerConfig,
    opened: &OpenedStorage,
) -> Result<Option<Arc<dyn HaBackend>>, Error> {
    if config.ha_enabled == Some(false) {
        return Ok(None);
    }
    if config.ha_enabled == Some(true) && config.ha_storage.is_none() && opened.consul.is_none() {
        return Err(Error::Backend {
            what: format!("ha_enabled with storage \"{}\"", config.storage.kind()),
            message: "this storage cannot elect an active node; use storage \"consul\" or add \
                      an ha_storage \"consul\" stanza"
                .into(),
        });
    }
    if let Some(stanza) = &config.ha_storage {
        let what = format!("ha_storage \"consul\" (config line {})", stanza.line);
        let (storage, consul) = open_consul(&stanza.settings, &what)?;
        if !consul.ha_enabled {
            return Ok(None);
        }
        tracing::warn!(
            "ha_storage \"consul\": the HA lock lives in Consul but the data does not, so writes \
             are fenced by the core only (storage \"consul\" also fences them in Consul)"
        );
        return Ok(Some(Arc::new(ConsulHaBackend::new(&storage))));
    }
    Ok(match &opened.consul {
        Some((storage, consul)) if consul.ha_enabled => {
            Some(Arc::new(ConsulHaBackend::new(storage)))
        }
        _ => None,
    })
}

/// The settings of the Consul service registration, when it is on:
/// `service_registration "consul"` when given, else (as Vault) those of
/// `ha_storage "consul"` or `storage "consul"`; `None` with
/// `disable_registration = true` or without Consul.
///
/// # Errors
///
/// [`Error::Backend`] for invalid settings.
pub(crate) fn consul_registration(
    config: &ServerConfig,
    opened: &OpenedStorage,
) -> Result<Option<ConsulConfig>, Error> {
    let consul = if let Some(stanza) = &config.consul_registration {
        consul_config(
            &stanza.settings,
            &format!(
                "service_registration \"consul\" (config line {})",
                stanza.line
            ),
        )?
    } else if let Some(stanza) = &config.ha_storage {
        consul_config(
            &stanza.settings,
            &format!("ha_storage \"consul\" (config line {})", stanza.line),
        )?
    } else if let Some((_, consul)) = &opened.consul {
        consul.clone()
    } else {
        return Ok(None);
    };
    Ok((!consul.registration.disable_registration).then_some(consul))
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
