//! The server's configuration file: Vault-style HCL.
//!
//! Operators move between Vault, OpenBao and Strongroom with the same config
//! files, so the file reads like Vault's:
//!
//! ```hcl
//! storage "redb" { path = "/var/lib/strongroom/data.redb" }
//! seal "awskms" {
//!   region     = "eu-west-1"
//!   kms_key_id = "alias/strongroom"
//! }
//! listener "tcp" {
//!   address     = "127.0.0.1:8200"
//!   tls_disable = true
//! }
//! api_addr     = "http://127.0.0.1:8200"
//! cluster_name = "prod"
//! log_level    = "info"
//! log_format   = "json"
//! ```
//!
//! The file is parsed with span information (hcl-rs's `hcl-edit` parser) so
//! every error names the line it is about: a syntax error points at the
//! column, a semantic one ("unknown storage type") at its block or attribute.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};

use hcl::edit::Span;
use hcl::edit::expr::Expression;
use hcl::edit::structure::{Attribute, Block, Body};

use crate::error::Error;
use crate::metrics::TelemetrySettings;

/// Vault's default `max_request_size` for a listener: 32 MiB.
pub(crate) const DEFAULT_MAX_REQUEST_SIZE: usize = 32 * 1024 * 1024;

/// The parsed server configuration.
#[derive(Debug, Clone)]
pub(crate) struct ServerConfig {
    /// Where ciphertext lives.
    pub(crate) storage: StorageConfig,
    /// The auto seals, enabled and disabled (migration sources); none
    /// enabled means Shamir unseal keys.
    pub(crate) seals: Vec<SealConfig>,
    /// The HTTP listeners (at least one).
    pub(crate) listeners: Vec<ListenerConfig>,
    /// The address clients should use to reach this node (advertised in HA).
    pub(crate) api_addr: Option<String>,
    /// The address for node-to-node traffic (Vault's `cluster_addr`),
    /// advertised beside `api_addr` and shown as `leader_cluster_address`.
    pub(crate) cluster_addr: Option<String>,
    /// A top-level `ha_enabled` (Vault reads it in the storage stanza, which
    /// works too): `false` turns HA off, `true` demands an HA backend.
    pub(crate) ha_enabled: Option<bool>,
    /// `ha_storage "consul"`: take the HA lock in this Consul instead of
    /// the storage backend (which may then be one without HA).
    pub(crate) ha_storage: Option<HaStorageConfig>,
    /// `service_registration "consul"`: where and how to register the
    /// node as a Consul service (without it, a `storage "consul"` stanza's
    /// settings are used, as in Vault).
    pub(crate) consul_registration: Option<ConsulStanza>,
    /// A human name for the cluster, shown in seal-status and health.
    pub(crate) cluster_name: Option<String>,
    /// `trace`, `debug`, `info`, `warn` or `error`.
    pub(crate) log_level: Option<String>,
    /// Text (default) or JSON log lines.
    pub(crate) log_format: LogFormat,
    /// Accepted for Vault compatibility: this server never calls mlock.
    pub(crate) disable_mlock: bool,
    /// Not Vault: the longest wait between auto-unseal attempts while the
    /// seal fails (the core's default when `None`).
    pub(crate) auto_unseal_max_backoff: Option<std::time::Duration>,
    /// The `telemetry` stanza's Prometheus settings.
    pub(crate) telemetry: TelemetrySettings,
    /// Not Vault: how often each auto seal's health is checked while
    /// unsealed (the core's default, 10 min, when `None`).
    pub(crate) seal_health_check_interval: Option<std::time::Duration>,
    /// `service_registration "kubernetes"`: label this pod with the node's
    /// role and seal state.
    pub(crate) kubernetes: Option<KubernetesRegistrationConfig>,
    /// Serve the operator console at `/ui/` (Vault's `ui = true`).
    pub(crate) ui: bool,
    /// Not Vault: what to do with a data set HashiCorp Vault wrote
    /// (`vault_takeover = "read-only"`, the default, or `"upgrade"`).
    pub(crate) vault_takeover: strongroom::VaultTakeover,
    /// Vault's `cache_size`: entries the read cache keeps (`None`: the
    /// core's default, 131072, as Vault's).
    pub(crate) cache_size: Option<usize>,
    /// Not Vault: bytes the read cache keeps (`None`: the core's default).
    pub(crate) cache_max_bytes: Option<usize>,
    /// Vault's `disable_cache`: no read cache in front of storage.
    pub(crate) disable_cache: bool,
    /// Settings that were accepted but have no effect, for a startup warning.
    pub(crate) warnings: Vec<String>,
}

impl ServerConfig {
    /// The read cache as `cache_size`, `cache_max_bytes` and
    /// `disable_cache` describe it.
    pub(crate) fn cache(&self) -> strongroom::CacheConfig {
        let default = strongroom::CacheConfig::default();
        strongroom::CacheConfig {
            enabled: !self.disable_cache,
            max_entries: self.cache_size.unwrap_or(default.max_entries),
            max_bytes: self.cache_max_bytes.unwrap_or(default.max_bytes),
        }
    }
}

/// The `service_registration "kubernetes"` stanza. The environment
/// (`VAULT_K8S_NAMESPACE`, `VAULT_K8S_POD_NAME`) overrides the file, as in
/// Vault; the Helm chart sets both from the downward API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct KubernetesRegistrationConfig {
    /// The pod's namespace.
    pub(crate) namespace: Option<String>,
    /// The pod's name.
    pub(crate) pod_name: Option<String>,
    /// Not Vault (which waits 5 s): how long to wait before patching labels
    /// again after a failure.
    pub(crate) retry_interval: Option<std::time::Duration>,
    /// Where the stanza starts, for error messages.
    pub(crate) line: usize,
}

/// A Consul stanza (`ha_storage "consul"`, `service_registration
/// "consul"`): its attributes, handed to `ConsulConfig::from_map`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ConsulStanza {
    /// The stanza's attributes, values as strings.
    pub(crate) settings: BTreeMap<String, String>,
    /// Where the stanza starts, for error messages.
    pub(crate) line: usize,
}

/// The `ha_storage` stanza (Consul only).
pub(crate) type HaStorageConfig = ConsulStanza;

/// The `storage` stanza.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum StorageConfig {
    /// Embedded redb file (the default for one machine).
    Redb {
        /// The database file.
        path: PathBuf,
    },
    /// Process memory: everything is lost when the process stops.
    Inmem,
    /// Consul KV; the attributes are handed to `ConsulConfig::from_map`.
    Consul {
        /// The stanza's attributes, values as strings.
        settings: BTreeMap<String, String>,
        /// Where the stanza starts, for error messages.
        line: usize,
    },
}

impl StorageConfig {
    /// The storage type name as Vault prints it in `storage_type`.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            StorageConfig::Redb { .. } => "redb",
            StorageConfig::Inmem => "inmem",
            StorageConfig::Consul { .. } => "consul",
        }
    }
}

/// One `seal "awskms"` stanza (none = Shamir). Several enabled stanzas
/// are Vault 1.16's multi-seal (`enable_multiseal = true`, a `name` and a
/// `priority` each); a stanza with `disabled = "true"` is the seal a
/// migration moves away from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SealConfig {
    /// The seal's name (`name`, or a second label; the type by default).
    pub(crate) name: String,
    /// Lower is tried first (`priority`, 1 by default).
    pub(crate) priority: u32,
    /// Vault's `disabled`: the migration source.
    pub(crate) disabled: bool,
    /// Not Vault: break-glass, the root key also wrapped under the
    /// recovery key.
    pub(crate) recovery_unseal: bool,
    /// The AWS KMS attributes for `AwsKmsConfig::from_map`, values as
    /// strings (without the four above).
    pub(crate) settings: BTreeMap<String, String>,
    /// Where the stanza starts, for error messages.
    pub(crate) line: usize,
}

/// One `listener "tcp"` stanza.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ListenerConfig {
    /// Where to listen.
    pub(crate) address: SocketAddr,
    /// Certificate and key, or `None` with `tls_disable = true`.
    pub(crate) tls: Option<TlsFiles>,
    /// Largest request body accepted before answering 413.
    pub(crate) max_request_size: usize,
    /// Vault's `telemetry { unauthenticated_metrics_access = true }`:
    /// `sys/metrics` without a token, so a sealed node can still be scraped.
    pub(crate) unauthenticated_metrics_access: bool,
}

/// PEM files for a TLS listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TlsFiles {
    /// Certificate chain, leaf first.
    pub(crate) cert_file: PathBuf,
    /// The private key (PKCS#8, PKCS#1 or SEC1).
    pub(crate) key_file: PathBuf,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum LogFormat {
    /// Human-readable lines.
    #[default]
    Standard,
    /// One JSON object per line, for log shippers.
    Json,
}

/// A scalar config value, kept with its source line.
#[derive(Debug, Clone)]
enum Scalar {
    Str(String),
    Bool(bool),
    Number(String),
}

impl Scalar {
    fn as_text(&self) -> String {
        match self {
            Scalar::Str(s) => s.clone(),
            Scalar::Bool(b) => b.to_string(),
            Scalar::Number(n) => n.clone(),
        }
    }
}

/// Reads and parses one or more config files (later files add listeners and
/// override single settings, like Vault's `-config` repeated), after filling
/// the listed `placeholders` from the environment ([`crate::placeholders`]).
///
/// # Errors
///
/// [`Error::ConfigRead`] when a file cannot be read, [`Error::ConfigParse`]
/// on HCL syntax errors and [`Error::ConfigInvalid`] on settings that do not
/// make sense, each naming the file and line; [`Error::Usage`] for a bad
/// placeholder.
pub(crate) fn load(paths: &[PathBuf], placeholders: &[String]) -> Result<ServerConfig, Error> {
    let mut merged: Option<ServerConfig> = None;
    for path in paths {
        let text = std::fs::read_to_string(path).map_err(|source| Error::ConfigRead {
            path: path.clone(),
            source,
        })?;
        let text =
            crate::placeholders::expand(&text, placeholders, |name| std::env::var(name).ok())
                .map_err(Error::Usage)?;
        let partial = parse_partial(&text, path)?;
        merged = Some(match merged {
            None => partial.finish(path)?,
            Some(base) => partial.merge_into(base),
        });
    }
    merged.ok_or_else(|| Error::Usage("no config file given: use -config FILE or -dev".into()))
}

/// Parses config text (the tests' entry point; [`load`] reads files).
///
/// # Errors
///
/// As for [`load`].
#[cfg(test)]
pub(crate) fn parse(text: &str, path: &Path) -> Result<ServerConfig, Error> {
    parse_partial(text, path)?.finish(path)
}

#[derive(Debug, Default)]
struct Partial {
    storage: Option<StorageConfig>,
    seals: Option<Vec<SealConfig>>,
    enable_multiseal: Option<bool>,
    seal_health_check_interval: Option<std::time::Duration>,
    listeners: Vec<ListenerConfig>,
    api_addr: Option<String>,
    cluster_addr: Option<String>,
    ha_enabled: Option<bool>,
    ha_storage: Option<HaStorageConfig>,
    consul_registration: Option<ConsulStanza>,
    cluster_name: Option<String>,
    log_level: Option<String>,
    log_format: Option<LogFormat>,
    disable_mlock: Option<bool>,
    auto_unseal_max_backoff: Option<std::time::Duration>,
    telemetry: Option<TelemetrySettings>,
    kubernetes: Option<KubernetesRegistrationConfig>,
    ui: Option<bool>,
    vault_takeover: Option<strongroom::VaultTakeover>,
    cache_size: Option<usize>,
    cache_max_bytes: Option<usize>,
    disable_cache: Option<bool>,
    warnings: Vec<String>,
}

impl Partial {
    fn finish(self, path: &Path) -> Result<ServerConfig, Error> {
        let storage = self.storage.ok_or_else(|| Error::ConfigMissing {
            path: path.to_path_buf(),
            message: "no storage stanza; add for example storage \"redb\" { path = \"/var/lib/strongroom/data.redb\" }".into(),
        })?;
        if self.listeners.is_empty() {
            return Err(Error::ConfigMissing {
                path: path.to_path_buf(),
                message: "no listener stanza; add for example listener \"tcp\" { address = \"127.0.0.1:8200\" } with tls_cert_file and tls_key_file (or tls_disable = true) on their own lines".into(),
            });
        }
        let seals = self.seals.unwrap_or_default();
        check_seals(&seals, self.enable_multiseal.unwrap_or(false), path)?;
        Ok(ServerConfig {
            storage,
            seals,
            seal_health_check_interval: self.seal_health_check_interval,
            listeners: self.listeners,
            api_addr: self.api_addr,
            cluster_addr: self.cluster_addr,
            ha_enabled: self.ha_enabled,
            ha_storage: self.ha_storage,
            consul_registration: self.consul_registration,
            cluster_name: self.cluster_name,
            log_level: self.log_level,
            log_format: self.log_format.unwrap_or_default(),
            disable_mlock: self.disable_mlock.unwrap_or(false),
            auto_unseal_max_backoff: self.auto_unseal_max_backoff,
            telemetry: self.telemetry.unwrap_or_default(),
            kubernetes: self.kubernetes,
            ui: self.ui.unwrap_or(false),
            vault_takeover: self.vault_takeover.unwrap_or_default(),
            cache_size: self.cache_size,
            cache_max_bytes: self.cache_max_bytes,
            disable_cache: self.disable_cache.unwrap_or(false),
            warnings: self.warnings,
        })
    }

    fn merge_into(self, mut base: ServerConfig) -> ServerConfig {
        if let Some(storage) = self.storage {
            base.storage = storage;
        }
        if let Some(seals) = self.seals {
            base.seals = seals;
        }
        base.seal_health_check_interval = self
            .seal_health_check_interval
            .or(base.seal_health_check_interval);
        base.listeners.extend(self.listeners);
        base.api_addr = self.api_addr.or(base.api_addr);
        base.cluster_addr = self.cluster_addr.or(base.cluster_addr);
        base.ha_enabled = self.ha_enabled.or(base.ha_enabled);
        base.ha_storage = self.ha_storage.or(base.ha_storage);
        base.consul_registration = self.consul_registration.or(base.consul_registration);
        base.cluster_name = self.cluster_name.or(base.cluster_name);
        base.log_level = self.log_level.or(base.log_level);
        base.log_format = self.log_format.unwrap_or(base.log_format);
        base.disable_mlock = self.disable_mlock.unwrap_or(base.disable_mlock);
        base.auto_unseal_max_backoff = self
            .auto_unseal_max_backoff
            .or(base.auto_unseal_max_backoff);
        if let Some(telemetry) = self.telemetry {
            base.telemetry = telemetry;
        }
        if self.kubernetes.is_some() {
            base.kubernetes = self.kubernetes;
        }
        base.ui = self.ui.unwrap_or(base.ui);
        base.vault_takeover = self.vault_takeover.unwrap_or(base.vault_takeover);
        base.cache_size = self.cache_size.or(base.cache_size);
        base.cache_max_bytes = self.cache_max_bytes.or(base.cache_max_bytes);
        base.disable_cache = self.disable_cache.unwrap_or(base.disable_cache);
        base.warnings.extend(self.warnings);
        base
    }
}

/// Top-level settings Vault knows that this server accepts and ignores.
const IGNORED_TOP_LEVEL: &[&str] = &[
    "default_lease_ttl",
    "max_lease_ttl",
    "plugin_directory",
    "disable_clustering",
    "pid_file",
    "raw_storage_endpoint",
    "introspection_endpoint",
    "disable_sealwrap",
    "disable_printable_check",
    "enable_response_header_hostname",
    "enable_response_header_raft_node_id",
    "log_file",
    "log_rotate_duration",
    "log_rotate_bytes",
    "log_rotate_max_files",
    "license_path",
    "imprecise_lease_role_tracking",
    "detect_deadlocks",
];

struct Ctx<'a> {
    text: &'a str,
    path: &'a Path,
}

impl Ctx<'_> {
    fn line_of(&self, span: Option<Range<usize>>) -> usize {
        let offset = span.map(|r| r.start).unwrap_or(0).min(self.text.len());
        let prefix = self.text.get(..offset).unwrap_or("");
        prefix.bytes().filter(|b| *b == b'\n').count() + 1
    }

    fn invalid(&self, span: Option<Range<usize>>, message: impl Into<String>) -> Error {
        Error::ConfigInvalid {
            path: self.path.to_path_buf(),
            line: self.line_of(span),
            message: message.into(),
        }
    }

    fn scalar(&self, attr: &Attribute) -> Result<Scalar, Error> {
        expr_scalar(&attr.value).ok_or_else(|| {
            self.invalid(
                attr.span(),
                format!(
                    "{} must be a plain string, number or boolean (expressions, interpolations, lists and objects are not supported here)",
                    attr.key.as_str()
                ),
            )
        })
    }

    fn string(&self, attr: &Attribute) -> Result<String, Error> {
        match self.scalar(attr)? {
            Scalar::Str(s) => Ok(s),
            other => Ok(other.as_text()),
        }
    }

    fn boolean(&self, attr: &Attribute) -> Result<bool, Error> {
        match self.scalar(attr)? {
            Scalar::Bool(b) => Ok(b),
            Scalar::Str(s) | Scalar::Number(s) => match s.trim().to_ascii_lowercase().as_str() {
                "true" | "1" | "t" | "yes" => Ok(true),
                "false" | "0" | "f" | "no" | "" => Ok(false),
                _ => Err(self.invalid(
                    attr.span(),
                    format!("{} must be true or false, got {s:?}", attr.key.as_str()),
                )),
            },
        }
    }

    /// A whole number of things (`None` for 0 is the caller's choice).
    fn count(&self, attr: &Attribute) -> Result<Option<usize>, Error> {
        let text = self.string(attr)?;
        text.trim().parse::<usize>().map(Some).map_err(|_| {
            self.invalid(
                attr.span(),
                format!("{} must be a whole number, got {text:?}", attr.key.as_str()),
            )
        })
    }

    /// Attribute values stringified, the form the backends' `from_map` take.
    fn settings(&self, body: &Body) -> Result<BTreeMap<String, String>, Error> {
        let mut map = BTreeMap::new();
        for attr in body.attributes() {
            let value = match &attr.value {
                Expression::Array(items) => {
                    let mut parts = Vec::new();
                    for item in items.iter() {
                        let scalar = expr_scalar(item).ok_or_else(|| {
                            self.invalid(
                                attr.span(),
                                format!("{} must be a list of plain strings", attr.key.as_str()),
                            )
                        })?;
                        parts.push(scalar.as_text());
                    }
                    parts.join(",")
                }
                _ => self.scalar(attr)?.as_text(),
            };
            map.insert(attr.key.as_str().to_owned(), value);
        }
        if let Some(block) = body.blocks().next() {
            return Err(self.invalid(
                block.span(),
                format!(
                    "unexpected block {:?} inside this stanza",
                    block.ident.as_str()
                ),
            ));
        }
        Ok(map)
    }
}

fn expr_scalar(expr: &Expression) -> Option<Scalar> {
    match expr {
        Expression::String(s) => Some(Scalar::Str(s.value().clone())),
        Expression::Bool(b) => Some(Scalar::Bool(*b.value())),
        Expression::Number(n) => Some(Scalar::Number(n.value().to_string())),
        _ => None,
    }
}

fn block_label(ctx: &Ctx<'_>, block: &Block, what: &str, example: &str) -> Result<String, Error> {
    match block.labels.as_slice() {
        [label] => Ok(label.as_str().to_owned()),
        [] => Err(ctx.invalid(
            block.span(),
            format!("{what} stanza needs a type label, e.g. {example}"),
        )),
        _ => Err(ctx.invalid(
            block.span(),
            format!("{what} stanza takes exactly one type label, e.g. {example}"),
        )),
    }
}

fn parse_partial(text: &str, path: &Path) -> Result<Partial, Error> {
    let body = hcl::edit::parser::parse_body(text).map_err(|err| Error::ConfigParse {
        path: path.to_path_buf(),
        line: err.location().line(),
        message: err.to_string(),
    })?;
    let ctx = Ctx { text, path };
    let mut out = Partial::default();

    for attr in body.attributes() {
        let key = attr.key.as_str();
        match key {
            "api_addr" => out.api_addr = Some(ctx.string(attr)?),
            "cluster_addr" => out.cluster_addr = Some(ctx.string(attr)?),
            "ha_enabled" => out.ha_enabled = Some(ctx.boolean(attr)?),
            "cluster_name" => out.cluster_name = Some(ctx.string(attr)?),
            "log_level" => {
                let level = ctx.string(attr)?.to_ascii_lowercase();
                let level = match level.as_str() {
                    "warning" => "warn".to_owned(),
                    "err" => "error".to_owned(),
                    _ => level,
                };
                if !["trace", "debug", "info", "warn", "error", "off"].contains(&level.as_str()) {
                    return Err(ctx.invalid(
                        attr.span(),
                        format!(
                            "log_level {level:?} is not one of trace, debug, info, warn, error"
                        ),
                    ));
                }
                out.log_level = Some(level);
            }
            "log_format" => {
                let format = ctx.string(attr)?;
                out.log_format = Some(match format.to_ascii_lowercase().as_str() {
                    "json" => LogFormat::Json,
                    "standard" | "text" | "" => LogFormat::Standard,
                    _ => {
                        return Err(ctx.invalid(
                            attr.span(),
                            format!("log_format {format:?} is not \"standard\" or \"json\""),
                        ));
                    }
                });
            }
            "disable_mlock" => out.disable_mlock = Some(ctx.boolean(attr)?),
            "disable_cache" => out.disable_cache = Some(ctx.boolean(attr)?),
            // Vault: 0 (or unset) means the default size.
            "cache_size" => out.cache_size = ctx.count(attr)?.filter(|n| *n > 0),
            "cache_max_bytes" => out.cache_max_bytes = ctx.count(attr)?.filter(|n| *n > 0),
            "enable_multiseal" => out.enable_multiseal = Some(ctx.boolean(attr)?),
            "seal_health_check_interval" => {
                let text = ctx.string(attr)?;
                let every = humantime::parse_duration(text.trim())
                    .ok()
                    .filter(|d| !d.is_zero())
                    .ok_or_else(|| {
                        ctx.invalid(
                            attr.span(),
                            format!("seal_health_check_interval {text:?} is not a positive duration such as \"10m\""),
                        )
                    })?;
                out.seal_health_check_interval = Some(every);
            }
            "ui" => out.ui = Some(ctx.boolean(attr)?),
            "auto_unseal_max_backoff" => {
                let text = ctx.string(attr)?;
                let wait = humantime::parse_duration(text.trim())
                    .ok()
                    .filter(|d| !d.is_zero())
                    .ok_or_else(|| {
                        ctx.invalid(
                            attr.span(),
                            format!("auto_unseal_max_backoff {text:?} is not a positive duration such as \"30s\""),
                        )
                    })?;
                out.auto_unseal_max_backoff = Some(wait);
            }
            "vault_takeover" => {
                let text = ctx.string(attr)?;
                out.vault_takeover = Some(match text.as_str() {
                    "read-only" => strongroom::VaultTakeover::ReadOnly,
                    "upgrade" => strongroom::VaultTakeover::Upgrade,
                    _ => {
                        return Err(ctx.invalid(
                            attr.span(),
                            format!("vault_takeover {text:?} is not \"read-only\" or \"upgrade\" (the one-way upgrade of a Vault data set)"),
                        ));
                    }
                });
            }
            _ if IGNORED_TOP_LEVEL.contains(&key) => out.warnings.push(format!(
                "{}:{}: {key} is accepted for Vault compatibility but has no effect",
                path.display(),
                ctx.line_of(attr.span())
            )),
            _ => {
                return Err(ctx.invalid(
                    attr.span(),
                    format!("unknown setting {key:?}; known: api_addr, cluster_addr, ha_enabled, cluster_name, log_level, log_format, disable_mlock, ui, cache_size, cache_max_bytes, disable_cache, auto_unseal_max_backoff, enable_multiseal, seal_health_check_interval, vault_takeover and the storage, seal and listener stanzas"),
                ));
            }
        }
    }

    for block in body.blocks() {
        match block.ident.as_str() {
            "storage" | "backend" => {
                if out.storage.is_some() {
                    return Err(ctx.invalid(block.span(), "only one storage stanza is allowed"));
                }
                out.storage = Some(parse_storage(&ctx, block)?);
            }
            "seal" => {
                let seals = out.seals.get_or_insert_with(Vec::new);
                if let Some(seal) = parse_seal(&ctx, block)? {
                    seals.push(seal);
                }
            }
            "listener" => out.listeners.push(parse_listener(&ctx, block)?),
            "telemetry" => {
                if out.telemetry.is_some() {
                    return Err(ctx.invalid(block.span(), "only one telemetry stanza is allowed"));
                }
                out.telemetry = Some(parse_telemetry(&ctx, block, &mut out.warnings)?);
            }
            "service_registration"
                if block.labels.first().map(|l| l.as_str()) == Some("kubernetes") =>
            {
                if out.kubernetes.is_some() {
                    return Err(ctx.invalid(
                        block.span(),
                        "only one service_registration \"kubernetes\" stanza is allowed",
                    ));
                }
                out.kubernetes = Some(parse_kubernetes(&ctx, block)?);
            }
            "service_registration"
                if block.labels.first().map(|l| l.as_str()) == Some("consul") =>
            {
                if out.consul_registration.is_some() {
                    return Err(ctx.invalid(
                        block.span(),
                        "only one service_registration \"consul\" stanza is allowed",
                    ));
                }
                out.consul_registration = Some(ConsulStanza {
                    settings: ctx.settings(&block.body)?,
                    line: ctx.line_of(block.span()),
                });
            }
            "ha_storage" => {
                if out.ha_storage.is_some() {
                    return Err(ctx.invalid(block.span(), "only one ha_storage stanza is allowed"));
                }
                let kind = block_label(&ctx, block, "ha_storage", "ha_storage \"consul\" { ... }")?;
                if kind != "consul" {
                    return Err(ctx.invalid(
                        block.span(),
                        format!("ha_storage type {kind:?} is not supported; use \"consul\" (or leave ha_storage out to use the storage stanza's backend)"),
                    ));
                }
                out.ha_storage = Some(ConsulStanza {
                    settings: ctx.settings(&block.body)?,
                    line: ctx.line_of(block.span()),
                });
            }
            "service_registration" | "user_lockout" => {
                out.warnings.push(format!(
                    "{}:{}: the {} stanza is accepted for Vault compatibility but has no effect",
                    path.display(),
                    ctx.line_of(block.span()),
                    block.ident.as_str()
                ));
            }
            other => {
                return Err(ctx.invalid(
                    block.span(),
                    format!("unknown stanza {other:?}; known: storage, seal, listener, telemetry, service_registration"),
                ));
            }
        }
    }
    Ok(out)
}

/// `telemetry` keys Vault knows for sinks this server does not have
/// (statsd, Circonus, DogStatsD, Stackdriver) or tuning it does not need:
/// accepted with a warning so a Vault config file still loads.
const IGNORED_TELEMETRY: &[&str] = &[
    "usage_gauge_period",
    "maximum_gauge_cardinality",
    "enable_hostname_label",
    "metrics_prefix",
    "lease_metrics_epsilon",
    "num_lease_metrics_buckets",
    "add_lease_metrics_namespace_labels",
    "filter_default",
    "prefix_filter",
    "statsite_address",
    "statsd_address",
    "dogstatsd_addr",
    "dogstatsd_tags",
    "circonus_api_token",
    "circonus_api_app",
    "circonus_api_url",
    "circonus_submission_interval",
    "circonus_submission_url",
    "circonus_check_id",
    "circonus_check_force_metric_activation",
    "circonus_check_instance_id",
    "circonus_check_search_tag",
    "circonus_check_display_name",
    "circonus_check_tags",
    "circonus_broker_id",
    "circonus_broker_select_tag",
    "stackdriver_project_id",
    "stackdriver_location",
    "stackdriver_namespace",
    "stackdriver_debug_logs",
];

/// A Vault duration: `"30s"`, `"24h"`, a bare number of seconds, or 0.
fn vault_duration(text: &str) -> Option<std::time::Duration> {
    let text = text.trim();
    if let Ok(secs) = text.parse::<u64>() {
        return Some(std::time::Duration::from_secs(secs));
    }
    humantime::parse_duration(text).ok()
}

fn parse_telemetry(
    ctx: &Ctx<'_>,
    block: &Block,
    warnings: &mut Vec<String>,
) -> Result<TelemetrySettings, Error> {
    if !block.labels.is_empty() {
        return Err(ctx.invalid(block.span(), "the telemetry stanza takes no label"));
    }
    let mut settings = TelemetrySettings::default();
    for attr in block.body.attributes() {
        let key = attr.key.as_str();
        match key {
            "prometheus_retention_time" => {
                let text = ctx.string(attr)?;
                settings.prometheus_retention = vault_duration(&text).ok_or_else(|| {
                    ctx.invalid(
                        attr.span(),
                        format!("prometheus_retention_time {text:?} is not a duration such as \"30s\" or \"24h\" (0 disables Prometheus)"),
                    )
                })?;
            }
            "disable_hostname" => settings.disable_hostname = ctx.boolean(attr)?,
            _ if IGNORED_TELEMETRY.contains(&key) => warnings.push(format!(
                "{}:{}: telemetry {key} is accepted for Vault compatibility but has no effect (only the Prometheus sink exists)",
                ctx.path.display(),
                ctx.line_of(attr.span())
            )),
            other => {
                return Err(ctx.invalid(
                    attr.span(),
                    format!("telemetry has no setting {other:?}; known: prometheus_retention_time, disable_hostname"),
                ));
            }
        }
    }
    if let Some(inner) = block.body.blocks().next() {
        return Err(ctx.invalid(
            inner.span(),
            format!(
                "unexpected block {:?} inside the telemetry stanza",
                inner.ident.as_str()
            ),
        ));
    }
    Ok(settings)
}

fn parse_kubernetes(ctx: &Ctx<'_>, block: &Block) -> Result<KubernetesRegistrationConfig, Error> {
    let mut config = KubernetesRegistrationConfig {
        namespace: None,
        pod_name: None,
        retry_interval: None,
        line: ctx.line_of(block.span()),
    };
    for attr in block.body.attributes() {
        match attr.key.as_str() {
            "namespace" => config.namespace = Some(ctx.string(attr)?),
            "pod_name" => config.pod_name = Some(ctx.string(attr)?),
            "retry_interval" => {
                let text = ctx.string(attr)?;
                let wait = vault_duration(&text)
                    .filter(|d| !d.is_zero())
                    .ok_or_else(|| {
                        ctx.invalid(
                            attr.span(),
                            format!(
                                "retry_interval {text:?} is not a positive duration such as \"5s\""
                            ),
                        )
                    })?;
                config.retry_interval = Some(wait);
            }
            other => {
                return Err(ctx.invalid(
                    attr.span(),
                    format!("service_registration \"kubernetes\" has no setting {other:?}; known: namespace, pod_name, retry_interval"),
                ));
            }
        }
    }
    if let Some(inner) = block.body.blocks().next() {
        return Err(ctx.invalid(
            inner.span(),
            format!(
                "unexpected block {:?} inside service_registration",
                inner.ident.as_str()
            ),
        ));
    }
    Ok(config)
}

fn parse_storage(ctx: &Ctx<'_>, block: &Block) -> Result<StorageConfig, Error> {
    let kind = block_label(ctx, block, "storage", "storage \"redb\" { path = \"...\" }")?;
    match kind.as_str() {
        "redb" => {
            let mut settings = ctx.settings(&block.body)?;
            let path = settings.remove("path").filter(|p| !p.is_empty()).ok_or_else(|| {
                ctx.invalid(block.span(), "storage \"redb\" needs path = \"<database file>\"")
            })?;
            if let Some(unknown) = settings.keys().next() {
                return Err(ctx.invalid(
                    attr_span(&block.body, unknown).or(block.span()),
                    format!("storage \"redb\" has no setting {unknown:?}; it takes only path"),
                ));
            }
            Ok(StorageConfig::Redb { path: PathBuf::from(path) })
        }
        "inmem" => {
            let settings = ctx.settings(&block.body)?;
            if let Some(unknown) = settings.keys().next() {
                return Err(ctx.invalid(
                    attr_span(&block.body, unknown).or(block.span()),
                    format!("storage \"inmem\" takes no settings, got {unknown:?}"),
                ));
            }
            Ok(StorageConfig::Inmem)
        }
        "consul" => Ok(StorageConfig::Consul {
            settings: ctx.settings(&block.body)?,
            line: ctx.line_of(block.span()),
        }),
        other => Err(ctx.invalid(
            block.span(),
            format!(
                "storage type {other:?} is not supported; use \"redb\" (embedded, one machine), \"consul\" (HA) or \"inmem\" (testing)"
            ),
        )),
    }
}

fn parse_seal(ctx: &Ctx<'_>, block: &Block) -> Result<Option<SealConfig>, Error> {
    let labels: Vec<&str> = block.labels.iter().map(|l| l.as_str()).collect();
    let (kind, label_name) = match labels.as_slice() {
        [kind] => (*kind, None),
        [kind, name] => (*kind, Some((*name).to_owned())),
        _ => {
            return Err(ctx.invalid(
                block.span(),
                "seal stanza needs a type label and optionally a name, e.g. seal \"awskms\" { kms_key_id = \"...\" }",
            ));
        }
    };
    let mut settings = ctx.settings(&block.body)?;
    let flag = |settings: &mut BTreeMap<String, String>, key: &str| -> Result<bool, Error> {
        match settings.remove(key) {
            None => Ok(false),
            Some(v) => match v.trim().to_ascii_lowercase().as_str() {
                "true" | "1" | "t" | "yes" => Ok(true),
                "false" | "0" | "f" | "no" | "" => Ok(false),
                _ => Err(ctx.invalid(
                    attr_span(&block.body, key),
                    format!("{key} must be true or false, got {v:?}"),
                )),
            },
        }
    };
    let disabled = flag(&mut settings, "disabled")?;
    let recovery_unseal = flag(&mut settings, "recovery_unseal")?;
    match kind {
        "awskms" => {
            let name = match (settings.remove("name"), label_name) {
                (Some(n), _) | (None, Some(n)) => n,
                (None, None) => "awskms".to_owned(),
            };
            if name.is_empty() {
                return Err(ctx.invalid(block.span(), "the seal name must not be empty"));
            }
            let priority = match settings.remove("priority") {
                None => 1,
                Some(p) => p.trim().parse::<u32>().ok().filter(|p| *p > 0).ok_or_else(|| {
                    ctx.invalid(
                        attr_span(&block.body, "priority"),
                        format!("priority must be a whole number of 1 or more, got {p:?}"),
                    )
                })?,
            };
            Ok(Some(SealConfig {
                name,
                priority,
                disabled,
                recovery_unseal,
                settings,
                line: ctx.line_of(block.span()),
            }))
        }
        "shamir" if disabled => Err(ctx.invalid(
            block.span(),
            "Shamir seals cannot be set disabled: to migrate to Shamir, mark the awskms seal disabled = \"true\" and leave no other seal enabled",
        )),
        "shamir" => Ok(None),
        other => Err(ctx.invalid(
            block.span(),
            format!(
                "seal type {other:?} is not supported; use \"awskms\" or leave the seal stanza out for Shamir unseal keys"
            ),
        )),
    }
}

/// Vault 1.16's multi-seal rules: several enabled seals need
/// `enable_multiseal = true` and distinct names and priorities.
fn check_seals(seals: &[SealConfig], multiseal: bool, path: &Path) -> Result<(), Error> {
    let enabled: Vec<&SealConfig> = seals.iter().filter(|s| !s.disabled).collect();
    let invalid = |line: usize, message: String| Error::ConfigInvalid {
        path: path.to_path_buf(),
        line,
        message,
    };
    if enabled.len() > 1 && !multiseal {
        return Err(invalid(
            enabled[1].line,
            "more than one enabled seal stanza: set enable_multiseal = true to wrap the root key with several seals (give each a name and a priority), or mark the old seal disabled = \"true\" to migrate".into(),
        ));
    }
    for group in [enabled, seals.iter().filter(|s| s.disabled).collect()] {
        for (i, seal) in group.iter().enumerate() {
            if let Some(other) = group[..i].iter().find(|o| o.name == seal.name) {
                return Err(invalid(
                    seal.line,
                    format!(
                        "seal name {:?} is also used at line {}: give each seal its own name",
                        seal.name, other.line
                    ),
                ));
            }
            if let Some(other) = group[..i].iter().find(|o| o.priority == seal.priority) {
                return Err(invalid(
                    seal.line,
                    format!(
                        "seal priority {} is also used at line {}: give each seal its own priority",
                        seal.priority, other.line
                    ),
                ));
            }
        }
    }
    Ok(())
}

fn attr_span(body: &Body, key: &str) -> Option<Range<usize>> {
    body.get_attribute(key).and_then(Span::span)
}

fn parse_listener(ctx: &Ctx<'_>, block: &Block) -> Result<ListenerConfig, Error> {
    let kind = block_label(
        ctx,
        block,
        "listener",
        "listener \"tcp\" { address = \"127.0.0.1:8200\" }",
    )?;
    if kind != "tcp" {
        return Err(ctx.invalid(
            block.span(),
            format!("listener type {kind:?} is not supported; use \"tcp\""),
        ));
    }
    let mut unauthenticated_metrics_access = false;
    for inner in block.body.blocks() {
        if inner.ident.as_str() != "telemetry" {
            return Err(ctx.invalid(
                inner.span(),
                format!(
                    "unexpected block {:?} inside the listener stanza (only telemetry is known)",
                    inner.ident.as_str()
                ),
            ));
        }
        for attr in inner.body.attributes() {
            match attr.key.as_str() {
                "unauthenticated_metrics_access" => {
                    unauthenticated_metrics_access = ctx.boolean(attr)?;
                }
                "prometheus_retention_time" | "disable_hostname" => {}
                other => {
                    return Err(ctx.invalid(
                        attr.span(),
                        format!(
                            "listener telemetry has no setting {other:?}; known: unauthenticated_metrics_access"
                        ),
                    ));
                }
            }
        }
    }
    let mut address = "127.0.0.1:8200".to_owned();
    let mut address_span = block.span();
    let mut tls_disable = false;
    let mut cert_file = None;
    let mut key_file = None;
    let mut max_request_size = DEFAULT_MAX_REQUEST_SIZE;
    for attr in block.body.attributes() {
        match attr.key.as_str() {
            "address" => {
                address = ctx.string(attr)?;
                address_span = attr.span();
            }
            "tls_disable" => tls_disable = ctx.boolean(attr)?,
            "tls_cert_file" => cert_file = Some(PathBuf::from(ctx.string(attr)?)),
            "tls_key_file" => key_file = Some(PathBuf::from(ctx.string(attr)?)),
            "max_request_size" => {
                let text = ctx.string(attr)?;
                let size: i64 = text.parse().map_err(|_| {
                    ctx.invalid(
                        attr.span(),
                        format!("max_request_size must be a number of bytes, got {text:?}"),
                    )
                })?;
                // Vault: 0 means the default, a negative value disables the limit.
                max_request_size = match size {
                    0 => DEFAULT_MAX_REQUEST_SIZE,
                    s if s < 0 => usize::MAX,
                    s => usize::try_from(s).unwrap_or(usize::MAX),
                };
            }
            "cluster_address"
            | "tls_min_version"
            | "tls_max_version"
            | "tls_cipher_suites"
            | "tls_require_and_verify_client_cert"
            | "tls_client_ca_file"
            | "tls_disable_client_certs"
            | "max_request_duration"
            | "proxy_protocol_behavior"
            | "x_forwarded_for_authorized_addrs"
            | "http_idle_timeout"
            | "http_read_timeout"
            | "http_read_header_timeout"
            | "http_write_timeout"
            | "unauthenticated_metrics_access" => {}
            other => {
                return Err(ctx.invalid(
                    attr.span(),
                    format!("listener \"tcp\" has no setting {other:?}; known: address, tls_disable, tls_cert_file, tls_key_file, max_request_size"),
                ));
            }
        }
    }
    let address: SocketAddr = address.parse().map_err(|_| {
        ctx.invalid(
            address_span,
            format!("listener address {address:?} is not an IP:port such as \"127.0.0.1:8200\""),
        )
    })?;
    let tls = if tls_disable {
        None
    } else {
        match (cert_file, key_file) {
            (Some(cert_file), Some(key_file)) => Some(TlsFiles {
                cert_file,
                key_file,
            }),
            _ => {
                return Err(ctx.invalid(
                    block.span(),
                    "listener \"tcp\" has TLS enabled but lacks tls_cert_file and tls_key_file; set both, or tls_disable = true",
                ));
            }
        }
    };
    Ok(ListenerConfig {
        address,
        tls,
        max_request_size,
        unauthenticated_metrics_access,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_ok(text: &str) -> ServerConfig {
        parse(text, Path::new("test.hcl")).unwrap()
    }

    fn parse_err(text: &str) -> String {
        parse(text, Path::new("test.hcl")).unwrap_err().to_string()
    }

    #[test]
    fn cache_settings_parse_as_vault_reads_them() {
        let base = "storage \"inmem\" {}\nlistener \"tcp\" {\n  tls_disable = true\n}\n";
        let default = parse_ok(base).cache();
        assert_eq!(default, strongroom::CacheConfig::default());
        assert_eq!(default.max_entries, 131_072, "Vault's default cache_size");
        let set = parse_ok(&format!(
            "{base}cache_size = 1000\ncache_max_bytes = 65536\n"
        ))
        .cache();
        assert!(set.enabled);
        assert_eq!((set.max_entries, set.max_bytes), (1000, 65536));
        // Vault: 0 means the default.
        assert_eq!(
            parse_ok(&format!("{base}cache_size = 0\n"))
                .cache()
                .max_entries,
            131_072
        );
        assert!(
            !parse_ok(&format!("{base}disable_cache = true\n"))
                .cache()
                .enabled
        );
        let err = parse_err(&format!("{base}cache_size = \"lots\"\n"));
        assert!(err.contains("cache_size must be a whole number"), "{err}");
    }

    #[test]
    fn a_full_vault_style_file_parses() {
        let cfg = parse_ok(
            r#"
storage "redb" {
  path = "/tmp/x.redb"
}
seal "awskms" {
  region     = "us-east-1"
  kms_key_id = "alias/k"
}
listener "tcp" {
  address     = "127.0.0.1:8210"
  tls_disable = true
}
api_addr      = "http://127.0.0.1:8210"
cluster_name  = "prod"
log_level     = "debug"
log_format    = "json"
disable_mlock = true
ui            = true
auto_unseal_max_backoff = "2s"
"#,
        );
        assert_eq!(
            cfg.storage,
            StorageConfig::Redb {
                path: "/tmp/x.redb".into()
            }
        );
        let Some(SealConfig { settings, line, .. }) = cfg.seals.first() else {
            panic!()
        };
        assert_eq!(settings["kms_key_id"], "alias/k");
        assert_eq!(*line, 5);
        assert_eq!(cfg.listeners.len(), 1);
        assert_eq!(cfg.listeners[0].address, "127.0.0.1:8210".parse().unwrap());
        assert_eq!(cfg.listeners[0].tls, None);
        assert!(!cfg.listeners[0].unauthenticated_metrics_access);
        assert_eq!(cfg.listeners[0].max_request_size, DEFAULT_MAX_REQUEST_SIZE);
        assert_eq!(cfg.api_addr.as_deref(), Some("http://127.0.0.1:8210"));
        assert_eq!(cfg.cluster_name.as_deref(), Some("prod"));
        assert_eq!(cfg.log_level.as_deref(), Some("debug"));
        assert_eq!(cfg.log_format, LogFormat::Json);
        assert!(cfg.disable_mlock);
        assert_eq!(
            cfg.auto_unseal_max_backoff,
            Some(std::time::Duration::from_secs(2))
        );
        assert!(cfg.ui);
        assert!(cfg.warnings.is_empty(), "{:?}", cfg.warnings);
    }

    #[test]
    fn several_seals_follow_vaults_multiseal_rules() {
        let base = "storage \"inmem\" {}\nlistener \"tcp\" {\n  tls_disable = true\n}\n";
        let east =
            "seal \"awskms\" {\n  name = \"east\"\n  priority = 1\n  kms_key_id = \"a\"\n}\n";
        let west = "seal \"awskms\" \"west\" {\n  priority = \"2\"\n  kms_key_id = \"b\"\n  recovery_unseal = true\n}\n";
        let err = parse_err(&format!("{base}{east}{west}"));
        assert!(err.contains("enable_multiseal = true"), "{err}");
        let cfg = parse_ok(&format!("{base}enable_multiseal = true\n{east}{west}"));
        let seals: Vec<_> = cfg
            .seals
            .iter()
            .map(|s| (s.name.as_str(), s.priority, s.disabled, s.recovery_unseal))
            .collect();
        assert_eq!(seals, [("east", 1, false, false), ("west", 2, false, true)]);
        assert!(!cfg.seals[0].settings.contains_key("name"));
        assert_eq!(cfg.seals[1].settings["kms_key_id"], "b");

        let same = west.replace("\"2\"", "1");
        let err = parse_err(&format!("{base}enable_multiseal = true\n{east}{same}"));
        assert!(err.contains("priority 1 is also used"), "{err}");

        // Migration: the old seal disabled beside the new one.
        let old =
            "seal \"awskms\" {\n  name = \"old\"\n  disabled = \"true\"\n  kms_key_id = \"o\"\n}\n";
        let cfg = parse_ok(&format!("{base}{east}{old}"));
        assert!(cfg.seals[1].disabled && !cfg.seals[0].disabled);
        let err = parse_err(&format!(
            "{base}seal \"shamir\" {{\n  disabled = true\n}}\n"
        ));
        assert!(err.contains("Shamir seals cannot be set disabled"), "{err}");
    }

    #[test]
    fn consul_settings_are_stringified() {
        let cfg = parse_ok(
            r#"
storage "consul" {
  address = "127.0.0.1:8500"
  path = "vault/"
  max_parallel = 64
  tls_skip_verify = true
  service_tags = ["a", "b"]
}
listener "tcp" {
  address = "127.0.0.1:8200"
  tls_disable = "true"
}
"#,
        );
        let StorageConfig::Consul { settings, line } = cfg.storage else {
            panic!()
        };
        assert_eq!(line, 2);
        assert_eq!(settings["max_parallel"], "64");
        assert_eq!(settings["tls_skip_verify"], "true");
        assert_eq!(settings["service_tags"], "a,b");
        assert_eq!(settings["path"], "vault/");
    }

    #[test]
    fn ha_settings_parse() {
        let cfg = parse_ok(
            r#"
storage "redb" { path = "/tmp/x.redb" }
ha_storage "consul" {
  address = "127.0.0.1:8500"
  path = "strongroom/"
  session_ttl = "5s"
  lock_delay = "1s"
}
service_registration "consul" {
  address = "127.0.0.1:8500"
  service = "sr"
}
listener "tcp" {
  address = "127.0.0.1:8200"
  tls_disable = true
}
api_addr = "http://10.0.0.1:8200"
cluster_addr = "https://10.0.0.1:8201"
ha_enabled = true
disable_clustering = true
"#,
        );
        assert_eq!(cfg.cluster_addr.as_deref(), Some("https://10.0.0.1:8201"));
        assert_eq!(cfg.ha_enabled, Some(true));
        let ha = cfg.ha_storage.unwrap();
        assert_eq!(ha.settings["session_ttl"], "5s");
        assert_eq!(ha.line, 3);
        assert_eq!(cfg.consul_registration.unwrap().settings["service"], "sr");
        assert!(
            cfg.warnings
                .iter()
                .any(|w| w.contains("disable_clustering")),
            "{:?}",
            cfg.warnings
        );
        let err = parse_err(
            "storage \"inmem\" {}\nha_storage \"raft\" {}\nlistener \"tcp\" { tls_disable = true }\n",
        );
        assert!(err.contains("line 2") && err.contains("\"raft\""), "{err}");
    }

    #[test]
    fn tls_listener_needs_both_files() {
        let cfg = parse_ok(
            r#"
storage "inmem" {}
listener "tcp" {
  address = "127.0.0.1:8200"
  tls_cert_file = "/c.pem"
  tls_key_file = "/k.pem"
  max_request_size = 1024
  telemetry {
    unauthenticated_metrics_access = true
  }
}
"#,
        );
        assert!(cfg.listeners[0].unauthenticated_metrics_access);
        assert_eq!(
            cfg.listeners[0].tls,
            Some(TlsFiles {
                cert_file: "/c.pem".into(),
                key_file: "/k.pem".into()
            })
        );
        assert_eq!(cfg.listeners[0].max_request_size, 1024);
        let err = parse_err(
            "storage \"inmem\" {}\n\nlistener \"tcp\" {\n  address = \"127.0.0.1:1\"\n}\n",
        );
        assert!(err.contains("line 3"), "{err}");
        assert!(err.contains("tls_cert_file"), "{err}");
    }

    #[test]
    fn unknown_storage_is_refused_naming_the_line() {
        let err = parse_err("\n\nstorage \"raft\" {\n path = \"/x\"\n}\nlistener \"tcp\" {}\n");
        assert!(err.contains("test.hcl"), "{err}");
        assert!(err.contains("line 3"), "{err}");
        assert!(err.contains("\"raft\" is not supported"), "{err}");
    }

    #[test]
    fn syntax_errors_name_line_and_column() {
        let err = parse_err("storage \"inmem\" {}\nlistener \"tcp\" {\n  address = \n}\n");
        assert!(err.contains("line 4") || err.contains("line 3"), "{err}");
    }

    #[test]
    fn semantic_errors_name_the_attribute_line() {
        let err = parse_err(
            "storage \"inmem\" {}\nlistener \"tcp\" {\n  tls_disable = true\n  address = \"not-an-addr\"\n}\n",
        );
        assert!(err.contains("line 4"), "{err}");
        let err = parse_err("storage \"redb\" {\n}\nlistener \"tcp\" { tls_disable = 1 }\n");
        assert!(err.contains("line 1") && err.contains("path"), "{err}");
        let err = parse_err(
            "storage \"inmem\" {}\nlistener \"tcp\" { tls_disable = 1 }\nlog_level = \"loud\"\n",
        );
        assert!(err.contains("line 3"), "{err}");
        let err =
            parse_err("storage \"inmem\" {}\nlistener \"tcp\" { tls_disable = 1 }\nfoo = 1\n");
        assert!(err.contains("line 3") && err.contains("\"foo\""), "{err}");
        let err = parse_err(
            "storage \"inmem\" {}\nlistener \"tcp\" { tls_disable = 1 }\nseal \"transit\" {}\n",
        );
        assert!(err.contains("line 3") && err.contains("transit"), "{err}");
    }

    #[test]
    fn the_telemetry_stanza_sets_the_prometheus_sink() {
        let base = "storage \"inmem\" {}\nlistener \"tcp\" { tls_disable = 1 }\n";
        assert_eq!(parse_ok(base).telemetry, TelemetrySettings::default());
        let cfg = parse_ok(&format!(
            "{base}telemetry {{\n  prometheus_retention_time = \"30s\"\n  disable_hostname = true\n  statsd_address = \"x:1\"\n}}\n"
        ));
        assert_eq!(
            cfg.telemetry,
            TelemetrySettings {
                prometheus_retention: std::time::Duration::from_secs(30),
                disable_hostname: true,
            }
        );
        assert!(
            cfg.warnings.iter().any(|w| w.contains("statsd_address")),
            "{:?}",
            cfg.warnings
        );
        let cfg = parse_ok(&format!(
            "{base}telemetry {{\n  prometheus_retention_time = 0\n}}\n"
        ));
        assert!(cfg.telemetry.prometheus_retention.is_zero());
        let err = parse_err(&format!(
            "{base}telemetry {{\n  prometheus_retention_time = \"soon\"\n}}\n"
        ));
        assert!(err.contains("line 4") && err.contains("soon"), "{err}");
        let err = parse_err(&format!("{base}telemetry {{\n  bogus = 1\n}}\n"));
        assert!(err.contains("line 4") && err.contains("bogus"), "{err}");
    }

    #[test]
    fn the_kubernetes_registration_stanza_parses() {
        let base = "storage \"inmem\" {}\nlistener \"tcp\" { tls_disable = 1 }\n";
        assert_eq!(parse_ok(base).kubernetes, None);
        let cfg = parse_ok(&format!("{base}service_registration \"kubernetes\" {{}}\n"));
        assert_eq!(
            cfg.kubernetes,
            Some(KubernetesRegistrationConfig {
                namespace: None,
                pod_name: None,
                retry_interval: None,
                line: 3
            })
        );
        let cfg = parse_ok(&format!(
            "{base}service_registration \"kubernetes\" {{\n  namespace = \"vault\"\n  pod_name = \"sr-0\"\n  retry_interval = \"200ms\"\n}}\n"
        ));
        let k = cfg.kubernetes.unwrap();
        assert_eq!(k.namespace.as_deref(), Some("vault"));
        assert_eq!(k.pod_name.as_deref(), Some("sr-0"));
        assert_eq!(
            k.retry_interval,
            Some(std::time::Duration::from_millis(200))
        );
        let err = parse_err(&format!(
            "{base}service_registration \"kubernetes\" {{\n  pods = \"x\"\n}}\n"
        ));
        assert!(err.contains("line 4") && err.contains("pods"), "{err}");
    }

    #[test]
    fn missing_stanzas_are_named() {
        assert!(parse_err("listener \"tcp\" { tls_disable = true }").contains("no storage stanza"));
        assert!(parse_err("storage \"inmem\" {}").contains("no listener stanza"));
    }

    #[test]
    fn interpolations_are_refused() {
        let err = parse_err(
            "storage \"redb\" {\n  path = \"${env}/x\"\n}\nlistener \"tcp\" { tls_disable = true }\n",
        );
        assert!(err.contains("line 2"), "{err}");
    }

    proptest::proptest! {
        #[test]
        fn never_panics_on_arbitrary_text(text in ".{0,200}") {
            let _ = parse(&text, Path::new("fuzz.hcl"));
        }
    }
}
