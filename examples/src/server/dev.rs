//! `strongroom server -dev`: in memory, initialised with a single key,
//! unsealed, KV v2 at `secret/`, and the root token and unseal key printed
//! so the first `kv put` works within seconds (Vault's dev mode).

use std::path::PathBuf;

use serde_json::json;
use strongroom::logical::{LogicalRequest, Operation};
use strongroom::{Core, InitParams};

use crate::cli::ServerArgs;
use crate::config::{
    DEFAULT_MAX_REQUEST_SIZE, ListenerConfig, LogFormat, ServerConfig, StorageConfig,
};
use crate::error::Error;

/// The configuration `-dev` runs with.
///
/// # Errors
///
/// [`Error::Usage`] when `-dev-listen-address` is not an `IP:port`.
pub(crate) fn config(args: &ServerArgs) -> Result<ServerConfig, Error> {
    let address = args.dev_listen_address.parse().map_err(|_| {
        Error::Usage(format!(
            "-dev-listen-address {:?} is not an IP:port such as 127.0.0.1:8200",
            args.dev_listen_address
        ))
    })?;
    if !args.config.is_empty() {
        return Err(Error::Usage(
            "-dev runs in memory with its own settings; leave out -config (or drop -dev)".into(),
        ));
    }
    Ok(ServerConfig {
        storage: StorageConfig::Inmem,
        seals: Vec::new(),
        seal_health_check_interval: None,
        listeners: vec![ListenerConfig {
            address,
            tls: None,
            max_request_size: DEFAULT_MAX_REQUEST_SIZE,
            unauthenticated_metrics_access: false,
        }],
        api_addr: None,
        cluster_addr: None,
        ha_enabled: None,
        ha_storage: None,
        consul_registration: None,
        cluster_name: None,
        log_level: None,
        log_format: LogFormat::Standard,
        disable_mlock: true,
        auto_unseal_max_backoff: None,
        telemetry: crate::metrics::TelemetrySettings::default(),
        kubernetes: None,
        ui: true,
        vault_takeover: strongroom::VaultTakeover::default(),
        cache_size: None,
        cache_max_bytes: None,
        disable_cache: false,
        warnings: Vec::new(),
    })
}

/// What the dev banner shows.
#[derive(Debug)]
pub(crate) struct DevKeys {
    /// The single unseal key (base64).
    pub(crate) unseal_key: zeroize::Zeroizing<String>,
    /// The root token.
    pub(crate) root_token: zeroize::Zeroizing<String>,
}

/// Initialises (1 share, threshold 1), unseals and mounts KV v2 at
/// `secret/`.
///
/// # Errors
///
/// [`Error::Core`] when any step fails.
pub(crate) async fn initialize(core: &Core, root_token_id: Option<&str>) -> Result<DevKeys, Error> {
    let fail = |what: &str| {
        let what = what.to_owned();
        move |e: strongroom::CoreError| Error::Core {
            what,
            message: e.to_string(),
        }
    };
    let result = core
        .init(InitParams {
            secret_shares: 1,
            secret_threshold: 1,
            root_token_id: root_token_id.map(str::to_owned),
            ..InitParams::default()
        })
        .await
        .map_err(fail("initializing the dev server"))?;
    let unseal_key =
        zeroize::Zeroizing::new(result.keys_base64.first().cloned().unwrap_or_default());
    let root_token = zeroize::Zeroizing::new(result.root_token.clone());
    drop(result);
    core.unseal(&unseal_key)
        .await
        .map_err(fail("unsealing the dev server"))?;
    let mount = LogicalRequest::new(Operation::Update, "sys/mounts/secret")
        .with_token(root_token.as_str())
        .with_data(json!({
            "type": "kv",
            "description": "key/value secret storage",
            "options": {"version": "2"},
        }));
    core.handle(mount)
        .await
        .map_err(fail("mounting KV version 2 at secret/ on the dev server"))?;
    Ok(DevKeys {
        unseal_key,
        root_token,
    })
}

/// Vault's dev-mode banner.
pub(crate) fn banner(address: &str, keys: &DevKeys) -> String {
    let program = std::env::args_os()
        .next()
        .map(PathBuf::from)
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "strongroom".to_owned());
    format!(
        "WARNING! dev mode is enabled! In this mode, Strongroom runs entirely in-memory\n\
         and starts unsealed with a single unseal key. Everything is lost when it stops.\n\
         \n\
         You may need to set the following environment variables:\n\
         \n\
         \x20   $ export STRONGROOM_ADDR='{address}'\n\
         \x20   $ export STRONGROOM_TOKEN='{token}'\n\
         \n\
         (VAULT_ADDR / VAULT_TOKEN work too, for vault, bao and hvac clients.)\n\
         \n\
         The unseal key and root token are displayed below in case you want to\n\
         seal/unseal the server or re-authenticate.\n\
         \n\
         Unseal Key: {key}\n\
         Root Token: {token}\n\
         \n\
         Try: {program} kv put secret/hello foo=world && {program} kv get secret/hello\n\
         \n\
         Development mode should NOT be used in production installations!\n",
        token = keys.root_token.as_str(),
        key = keys.unseal_key.as_str(),
    )
}
