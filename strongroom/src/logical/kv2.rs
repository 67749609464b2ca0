//! KV version 2: versioned secrets with metadata, soft delete, undelete and
//! destroy, with Vault's paths (`data/`, `metadata/`, `delete/`,
//! `undelete/`, `destroy/`, `subkeys/`, `config`) and response shapes.
//!
//! Storage below the mount's folder `logical/<uuid>/`:
//! * `config` — mount-wide `max_versions`, `cas_required`,
//!   `delete_version_after`.
//! * `metadata/<path>` — the key's version index ([`KeyMeta`]); listing this
//!   folder is `LIST metadata/`.
//! * `versions/<sha256(path) hex>/<n>` — the data of version `n`. Hashing
//!   keeps version folders of `a` and `a/1` apart.
//!
//! Every change to one key happens under that key's stripe lock and is
//! written with one storage transaction (version data + metadata + pruned
//! versions), so concurrent writers never reuse a version number and a crash
//! never leaves metadata pointing at missing data.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use super::error::LogicalError;
use super::mounts::MountEntry;
use super::util::{
    Fields, StripedLocks, go_duration, now, rfc3339, validate_list_prefix, validate_secret_path,
};
use super::{Ctx, LogicalResponse, Operation};
use seal_core::{Storage, TxnOp};

/// Versions kept per key when neither the key nor the mount sets a limit
/// (Vault's default).
const DEFAULT_MAX_VERSIONS: u64 = 10;

const INVALID_PATH: &str = "Invalid path for a versioned K/V secrets engine. See the API docs for the appropriate API endpoints to use. If using the Vault CLI, use 'vault kv get' for this operation.";

/// Mount-wide settings (`<mount>/config`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
struct KvConfig {
    #[serde(default)]
    max_versions: u64,
    #[serde(default)]
    cas_required: bool,
    #[serde(default)]
    delete_version_after: u64,
}

/// One version's bookkeeping.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
struct VersionMeta {
    #[serde(with = "time::serde::rfc3339")]
    created_time: OffsetDateTime,
    #[serde(default, with = "time::serde::rfc3339::option")]
    deletion_time: Option<OffsetDateTime>,
    #[serde(default)]
    destroyed: bool,
}

impl VersionMeta {
    fn deleted_at(&self, at: OffsetDateTime) -> bool {
        self.deletion_time.is_some_and(|t| t <= at)
    }

    fn json(&self) -> Value {
        json!({
            "created_time": rfc3339(self.created_time),
            "deletion_time": self.deletion_time.map(rfc3339).unwrap_or_default(),
            "destroyed": self.destroyed,
        })
    }
}

/// A key's metadata and version index.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
struct KeyMeta {
    #[serde(with = "time::serde::rfc3339")]
    created_time: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    updated_time: OffsetDateTime,
    #[serde(default)]
    current_version: u64,
    #[serde(default)]
    oldest_version: u64,
    #[serde(default)]
    max_versions: u64,
    #[serde(default)]
    cas_required: bool,
    #[serde(default)]
    delete_version_after: u64,
    #[serde(default)]
    custom_metadata: Option<BTreeMap<String, String>>,
    #[serde(default)]
    versions: BTreeMap<u64, VersionMeta>,
}

impl KeyMeta {
    fn new(at: OffsetDateTime) -> Self {
        Self {
            created_time: at,
            updated_time: at,
            current_version: 0,
            oldest_version: 0,
            max_versions: 0,
            cas_required: false,
            delete_version_after: 0,
            custom_metadata: None,
            versions: BTreeMap::new(),
        }
    }

    /// Vault's per-version metadata block in `data/` responses.
    fn version_json(&self, version: u64, vm: &VersionMeta) -> Value {
        json!({
            "created_time": rfc3339(vm.created_time),
            "custom_metadata": self.custom_metadata,
            "deletion_time": vm.deletion_time.map(rfc3339).unwrap_or_default(),
            "destroyed": vm.destroyed,
            "version": version,
        })
    }

    fn json(&self) -> Value {
        let versions: Map<String, Value> = self
            .versions
            .iter()
            .map(|(n, vm)| (n.to_string(), vm.json()))
            .collect();
        json!({
            "cas_required": self.cas_required,
            "created_time": rfc3339(self.created_time),
            "current_version": self.current_version,
            "custom_metadata": self.custom_metadata,
            "delete_version_after": go_duration(self.delete_version_after),
            "max_versions": self.max_versions,
            "oldest_version": self.oldest_version,
            "updated_time": rfc3339(self.updated_time),
            "versions": versions,
        })
    }
}

/// Paths of one key inside a mount.
struct KeyPaths {
    meta: String,
    versions: String,
    lock: String,
}

impl KeyPaths {
    fn new(mount: &MountEntry, key: &str) -> Self {
        Self::under(&mount.data_prefix(), &mount.uuid, key)
    }

    fn under(base: &str, uuid: &str, key: &str) -> Self {
        let digest = hex::encode(Sha256::digest(key.as_bytes()));
        Self {
            meta: format!("{base}metadata/{key}"),
            versions: format!("{base}versions/{digest}/"),
            lock: format!("{uuid}/{key}"),
        }
    }

    fn version(&self, n: u64) -> String {
        format!("{}{n}", self.versions)
    }
}

async fn load_json<T: for<'de> Deserialize<'de>>(
    storage: &dyn Storage,
    path: &str,
) -> Result<Option<T>, LogicalError> {
    match storage.get(path).await? {
        Some(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| LogicalError::corrupt(path, e)),
        None => Ok(None),
    }
}

fn to_bytes<T: Serialize>(path: &str, value: &T) -> Result<Vec<u8>, LogicalError> {
    serde_json::to_vec(value).map_err(|e| LogicalError::corrupt(path, e))
}

async fn load_config(storage: &dyn Storage, mount: &MountEntry) -> Result<KvConfig, LogicalError> {
    let path = format!("{}config", mount.data_prefix());
    Ok(load_json(storage, &path).await?.unwrap_or_default())
}

/// Vault's existence check for writes to `data/<key>` and
/// `metadata/<key>`: whether the key has metadata (a write to an absent key
/// is a `create`, otherwise an `update`). `None` for paths without one.
pub(crate) async fn exists(
    storage: &dyn Storage,
    mount: &MountEntry,
    rest: &str,
) -> Result<Option<bool>, LogicalError> {
    let Some((section, key)) = rest.split_once('/') else {
        return Ok(None);
    };
    if !matches!(section, "data" | "metadata") || validate_secret_path(key).is_err() {
        return Ok(None);
    }
    let paths = KeyPaths::new(mount, key);
    Ok(Some(storage.get(&paths.meta).await?.is_some()))
}

pub(crate) async fn handle(
    ctx: &mut Ctx<'_>,
    locks: &StripedLocks,
    mount: &MountEntry,
    rest: &str,
) -> Result<LogicalResponse, LogicalError> {
    if rest == "config" || rest == "config/" {
        return config(ctx, mount).await;
    }
    let (section, key) = match rest.split_once('/') {
        Some((section, key)) => (section, key),
        None => (rest, ""),
    };
    let op = ctx.req.operation;
    match (section, op) {
        ("metadata", Operation::List) => list(ctx, mount, key).await,
        ("metadata", Operation::Read) if key.is_empty() || key.ends_with('/') => {
            Err(LogicalError::NotFound(ctx.req.path.clone()))
        }
        ("metadata", _) => {
            validate_secret_path(key)?;
            metadata(ctx, locks, mount, key).await
        }
        ("data" | "subkeys", Operation::Read) if key.is_empty() || key.ends_with('/') => {
            Err(LogicalError::NotFound(ctx.req.path.clone()))
        }
        ("data", Operation::Read) => {
            validate_secret_path(key)?;
            read(ctx, mount, key).await
        }
        ("data", Operation::Create | Operation::Update) => {
            validate_secret_path(key)?;
            write(ctx, locks, mount, key, false).await
        }
        ("data", Operation::Patch) => {
            validate_secret_path(key)?;
            write(ctx, locks, mount, key, true).await
        }
        ("data", Operation::Delete) => {
            validate_secret_path(key)?;
            delete_latest(ctx, locks, mount, key).await
        }
        ("subkeys", Operation::Read) => {
            validate_secret_path(key)?;
            subkeys(ctx, mount, key).await
        }
        ("delete" | "undelete" | "destroy", Operation::Create | Operation::Update) => {
            validate_secret_path(key)?;
            change_versions(ctx, locks, mount, key, section).await
        }
        ("data" | "subkeys" | "delete" | "undelete" | "destroy", _) => Err(ctx.unsupported()),
        // Vault answers a path outside the engine's layout with a 404 whose
        // body carries the explanation as a warning (no `errors`).
        _ => Ok(LogicalResponse {
            status: 404,
            warnings: vec![INVALID_PATH.to_owned()],
            ..LogicalResponse::default()
        }),
    }
}

async fn config(ctx: &mut Ctx<'_>, mount: &MountEntry) -> Result<LogicalResponse, LogicalError> {
    let path = format!("{}config", mount.data_prefix());
    match ctx.req.operation {
        Operation::Read => {
            let cfg = load_config(ctx.storage, mount).await?;
            Ok(LogicalResponse::ok(json!({
                "cas_required": cfg.cas_required,
                "delete_version_after": go_duration(cfg.delete_version_after),
                "max_versions": cfg.max_versions,
            })))
        }
        Operation::Create | Operation::Update => {
            let fields = ctx.fields();
            ctx.warnings.extend(fields.unknown_warning(&[
                "max_versions",
                "cas_required",
                "delete_version_after",
            ]));
            let mut cfg = load_config(ctx.storage, mount).await?;
            if let Some(n) = fields.u64("max_versions")? {
                cfg.max_versions = n;
            }
            if let Some(b) = fields.bool("cas_required")? {
                cfg.cas_required = b;
            }
            if let Some(d) = fields.duration("delete_version_after")? {
                cfg.delete_version_after = d;
            }
            ctx.storage.put(&path, &to_bytes(&path, &cfg)?).await?;
            Ok(LogicalResponse::no_content())
        }
        _ => Err(ctx.unsupported()),
    }
}

async fn list(
    ctx: &mut Ctx<'_>,
    mount: &MountEntry,
    prefix: &str,
) -> Result<LogicalResponse, LogicalError> {
    validate_list_prefix(prefix)?;
    let prefix = if prefix.is_empty() || prefix.ends_with('/') {
        prefix.to_owned()
    } else {
        format!("{prefix}/")
    };
    let keys = ctx
        .storage
        .list(&format!("{}metadata/{prefix}", mount.data_prefix()))
        .await?;
    if keys.is_empty() {
        return Err(LogicalError::NotFound(ctx.req.path.clone()));
    }
    Ok(LogicalResponse::ok(json!({ "keys": keys })))
}

fn query_version(ctx: &Ctx<'_>) -> Result<u64, LogicalError> {
    match ctx.req.query.get("version") {
        None => Ok(0),
        Some(v) if v.trim().is_empty() => Ok(0),
        Some(v) => v.trim().parse::<u64>().map_err(|_| {
            LogicalError::invalid(format!(
                "invalid value for query parameter \"version\": expected a non-negative integer, got {v:?}"
            ))
        }),
    }
}

/// Finds the version a read asks for: its metadata, or the 404 to answer.
async fn resolve_version(
    ctx: &Ctx<'_>,
    paths: &KeyPaths,
) -> Result<(KeyMeta, u64, VersionMeta), LogicalError> {
    let requested = query_version(ctx)?;
    let meta: KeyMeta = load_json(ctx.storage, &paths.meta)
        .await?
        .ok_or_else(|| LogicalError::NotFound(ctx.req.path.clone()))?;
    let version = if requested == 0 {
        meta.current_version
    } else {
        requested
    };
    let vm = meta
        .versions
        .get(&version)
        .cloned()
        .ok_or_else(|| LogicalError::NotFound(ctx.req.path.clone()))?;
    Ok((meta, version, vm))
}

/// Vault answers a deleted or destroyed version with 404 and a body whose
/// `data` is null and whose `metadata` says why.
fn gone(meta: &KeyMeta, version: u64, vm: &VersionMeta) -> LogicalResponse {
    LogicalResponse {
        status: 404,
        ..LogicalResponse::ok(json!({"data": null, "metadata": meta.version_json(version, vm)}))
    }
}

async fn read(
    ctx: &mut Ctx<'_>,
    mount: &MountEntry,
    key: &str,
) -> Result<LogicalResponse, LogicalError> {
    let paths = KeyPaths::new(mount, key);
    let (meta, version, vm) = resolve_version(ctx, &paths).await?;
    if vm.destroyed || vm.deleted_at(now()) {
        return Ok(gone(&meta, version, &vm));
    }
    let data: Value = load_json(ctx.storage, &paths.version(version))
        .await?
        .ok_or_else(|| LogicalError::NotFound(ctx.req.path.clone()))?;
    Ok(LogicalResponse::ok(object([
        ("data", data),
        ("metadata", meta.version_json(version, &vm)),
    ])))
}

/// A JSON object from owned values. `json!` would re-serialize every
/// interpolated `Value` (a deep copy of the secret) — measurable on reads.
fn object<const N: usize>(pairs: [(&str, Value); N]) -> Value {
    Value::Object(pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
}

fn subkeys_of(value: &Value, depth: u64, level: u64) -> Value {
    match value {
        Value::Object(obj) if depth == 0 || level < depth => Value::Object(
            obj.iter()
                .map(|(k, v)| {
                    let child = if v.is_object() {
                        subkeys_of(v, depth, level + 1)
                    } else {
                        Value::Null
                    };
                    (k.clone(), child)
                })
                .collect(),
        ),
        _ => Value::Null,
    }
}

async fn subkeys(
    ctx: &mut Ctx<'_>,
    mount: &MountEntry,
    key: &str,
) -> Result<LogicalResponse, LogicalError> {
    let depth = match ctx.req.query.get("depth") {
        None => 0,
        Some(d) => d.trim().parse::<u64>().map_err(|_| {
            LogicalError::invalid(format!(
                "invalid value for query parameter \"depth\": expected a non-negative integer, got {d:?}"
            ))
        })?,
    };
    let paths = KeyPaths::new(mount, key);
    let (meta, version, vm) = resolve_version(ctx, &paths).await?;
    if vm.destroyed || vm.deleted_at(now()) {
        return Ok(LogicalResponse {
            status: 404,
            ..LogicalResponse::ok(
                json!({"subkeys": null, "metadata": meta.version_json(version, &vm)}),
            )
        });
    }
    let data: Value = load_json(ctx.storage, &paths.version(version))
        .await?
        .ok_or_else(|| LogicalError::NotFound(ctx.req.path.clone()))?;
    Ok(LogicalResponse::ok(object([
        ("subkeys", subkeys_of(&data, depth, 0)),
        ("metadata", meta.version_json(version, &vm)),
    ])))
}

/// RFC 7396 JSON merge patch.
fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch_obj) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    if let Value::Object(target_obj) = target {
        for (k, v) in patch_obj {
            if v.is_null() {
                target_obj.remove(k);
            } else {
                merge_patch(target_obj.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
    }
}

async fn write(
    ctx: &mut Ctx<'_>,
    locks: &StripedLocks,
    mount: &MountEntry,
    key: &str,
    patch: bool,
) -> Result<LogicalResponse, LogicalError> {
    let fields = ctx.fields();
    ctx.warnings
        .extend(fields.unknown_warning(&["data", "options", "version"]));
    let data = fields
        .object("data")?
        .ok_or_else(|| LogicalError::invalid("no data provided"))?;
    let cas = match fields.object("options")? {
        Some(options) => Fields::new(Some(options)).u64("cas")?,
        None => None,
    };
    let cfg = load_config(ctx.storage, mount).await?;
    let paths = KeyPaths::new(mount, key);
    let _guard = locks.lock(&paths.lock).await;
    let at = now();
    let existing: Option<KeyMeta> = load_json(ctx.storage, &paths.meta).await?;
    if patch && existing.is_none() {
        return Err(LogicalError::NotFound(ctx.req.path.clone()));
    }
    let mut meta = existing.unwrap_or_else(|| KeyMeta::new(at));
    if (meta.cas_required || cfg.cas_required) && cas.is_none() {
        return Err(LogicalError::invalid(
            "check-and-set parameter required for this call",
        ));
    }
    if let Some(cas) = cas
        && cas != meta.current_version
    {
        return Err(LogicalError::invalid(
            "check-and-set parameter did not match the current version",
        ));
    }
    let new_data = if patch {
        let current = meta
            .versions
            .get(&meta.current_version)
            .filter(|vm| !vm.destroyed && !vm.deleted_at(at))
            .ok_or_else(|| LogicalError::NotFound(ctx.req.path.clone()))?;
        let _ = current;
        let mut value: Value = load_json(ctx.storage, &paths.version(meta.current_version))
            .await?
            .ok_or_else(|| LogicalError::NotFound(ctx.req.path.clone()))?;
        merge_patch(&mut value, &Value::Object(data.clone()));
        value
    } else {
        Value::Object(data.clone())
    };

    let version = meta.current_version + 1;
    let dva = if meta.delete_version_after > 0 {
        meta.delete_version_after
    } else {
        cfg.delete_version_after
    };
    let vm = VersionMeta {
        created_time: at,
        deletion_time: (dva > 0)
            .then(|| at + time::Duration::seconds(i64::try_from(dva).unwrap_or(i64::MAX / 2))),
        destroyed: false,
    };
    meta.versions.insert(version, vm.clone());
    meta.current_version = version;
    meta.updated_time = at;

    let version_path = paths.version(version);
    let pruned = prune(&mut meta, &cfg, &paths);
    let primary = vec![
        TxnOp::put(version_path.clone(), to_bytes(&version_path, &new_data)?),
        TxnOp::put(paths.meta.clone(), to_bytes(&paths.meta, &meta)?),
    ];
    apply(ctx.storage, primary, pruned).await?;
    Ok(LogicalResponse::ok(meta.version_json(version, &vm)))
}

/// Copies every KV v1 secret under `v1_prefix` into `mount`'s (v2) folder
/// as version 1 of the same key, in transactions the backend accepts.
/// Returns how many secrets were copied. Nothing under `v1_prefix` changes.
pub(crate) async fn import_v1(
    storage: &dyn Storage,
    v1_prefix: &str,
    mount: &MountEntry,
) -> Result<usize, LogicalError> {
    let batch = storage
        .limits()
        .max_transaction_ops
        .unwrap_or(64)
        .clamp(2, 64);
    let at = now();
    let mut copied = 0;
    let mut ops = Vec::new();
    let mut folders = vec![String::new()];
    while let Some(folder) = folders.pop() {
        for child in storage.list(&format!("{v1_prefix}{folder}")).await? {
            let key = format!("{folder}{child}");
            if child.ends_with('/') {
                folders.push(key);
                continue;
            }
            let source = format!("{v1_prefix}{key}");
            let Some(bytes) = storage.get(&source).await? else {
                continue;
            };
            // Check it decodes: a v2 version must be a JSON object.
            serde_json::from_slice::<Map<String, Value>>(&bytes)
                .map_err(|e| LogicalError::corrupt(&source, e))?;
            let paths = KeyPaths::new(mount, &key);
            let mut meta = KeyMeta::new(at);
            meta.current_version = 1;
            meta.versions.insert(
                1,
                VersionMeta {
                    created_time: at,
                    deletion_time: None,
                    destroyed: false,
                },
            );
            if ops.len() + 2 > batch {
                storage.transaction(std::mem::take(&mut ops)).await?;
            }
            ops.push(TxnOp::put(paths.version(1), bytes));
            ops.push(TxnOp::put(
                paths.meta.clone(),
                to_bytes(&paths.meta, &meta)?,
            ));
            copied += 1;
        }
    }
    if !ops.is_empty() {
        storage.transaction(ops).await?;
    }
    Ok(copied)
}

/// One version of a key being imported from another layout (a Vault data
/// set being adopted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ImportedVersion {
    pub(crate) created_time: OffsetDateTime,
    pub(crate) deletion_time: Option<OffsetDateTime>,
    pub(crate) destroyed: bool,
    /// The version's data (a JSON object); `None` once destroyed.
    pub(crate) data: Option<Vec<u8>>,
}

/// One key with its metadata and versions, to import.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ImportedKey {
    pub(crate) key: String,
    pub(crate) created_time: OffsetDateTime,
    pub(crate) updated_time: OffsetDateTime,
    pub(crate) current_version: u64,
    pub(crate) oldest_version: u64,
    pub(crate) max_versions: u64,
    pub(crate) cas_required: bool,
    pub(crate) versions: BTreeMap<u64, ImportedVersion>,
}

/// The writes that store `key` in this engine's layout below the mount
/// folder `base` (`logical/<uuid>/`): its metadata and every version that
/// still has data.
///
/// # Errors
/// [`LogicalError::Corrupt`] when a version's data is not a JSON object.
pub(crate) fn import_key_ops(base: &str, key: &ImportedKey) -> Result<Vec<TxnOp>, LogicalError> {
    let paths = KeyPaths::under(base, "", &key.key);
    let mut meta = KeyMeta::new(key.created_time);
    meta.updated_time = key.updated_time;
    meta.current_version = key.current_version;
    meta.oldest_version = key.oldest_version;
    meta.max_versions = key.max_versions;
    meta.cas_required = key.cas_required;
    let mut ops = Vec::with_capacity(key.versions.len() + 1);
    for (n, v) in &key.versions {
        meta.versions.insert(
            *n,
            VersionMeta {
                created_time: v.created_time,
                deletion_time: v.deletion_time,
                destroyed: v.destroyed,
            },
        );
        if let Some(data) = &v.data {
            let path = paths.version(*n);
            serde_json::from_slice::<Map<String, Value>>(data)
                .map_err(|e| LogicalError::corrupt(&path, e))?;
            ops.push(TxnOp::put(path, data.clone()));
        }
    }
    ops.push(TxnOp::put(
        paths.meta.clone(),
        to_bytes(&paths.meta, &meta)?,
    ));
    Ok(ops)
}

/// The write that stores a mount-wide configuration below `base`.
///
/// # Errors
/// [`LogicalError::Corrupt`] when it does not serialise (never in practice).
pub(crate) fn import_config_op(
    base: &str,
    max_versions: u64,
    cas_required: bool,
) -> Result<TxnOp, LogicalError> {
    let path = format!("{base}config");
    let cfg = KvConfig {
        max_versions,
        cas_required,
        delete_version_after: 0,
    };
    Ok(TxnOp::put(path.clone(), to_bytes(&path, &cfg)?))
}

/// Drops the oldest versions beyond the effective `max_versions` (the key's
/// setting, else the mount's, else 10) and returns the deletes to apply.
fn prune(meta: &mut KeyMeta, cfg: &KvConfig, paths: &KeyPaths) -> Vec<TxnOp> {
    let max = [meta.max_versions, cfg.max_versions]
        .into_iter()
        .find(|m| *m > 0)
        .unwrap_or(DEFAULT_MAX_VERSIONS);
    let mut ops = Vec::new();
    let cutoff = meta.current_version.saturating_sub(max);
    let doomed: Vec<u64> = meta.versions.range(..=cutoff).map(|(n, _)| *n).collect();
    if doomed.is_empty() {
        return ops;
    }
    for n in doomed {
        meta.versions.remove(&n);
        ops.push(TxnOp::delete(paths.version(n)));
    }
    // Like Vault, `oldest_version` stays 0 until pruning first drops a
    // version, then names the oldest version still kept.
    meta.oldest_version = meta
        .versions
        .keys()
        .next()
        .copied()
        .unwrap_or(meta.current_version);
    ops
}

async fn delete_latest(
    ctx: &mut Ctx<'_>,
    locks: &StripedLocks,
    mount: &MountEntry,
    key: &str,
) -> Result<LogicalResponse, LogicalError> {
    let paths = KeyPaths::new(mount, key);
    let _guard = locks.lock(&paths.lock).await;
    let Some(mut meta) = load_json::<KeyMeta>(ctx.storage, &paths.meta).await? else {
        return Ok(LogicalResponse::no_content());
    };
    let at = now();
    let current = meta.current_version;
    if let Some(vm) = meta.versions.get_mut(&current)
        && !vm.destroyed
        && !vm.deleted_at(at)
    {
        vm.deletion_time = Some(at);
        ctx.storage
            .put(&paths.meta, &to_bytes(&paths.meta, &meta)?)
            .await?;
    }
    Ok(LogicalResponse::no_content())
}

async fn change_versions(
    ctx: &mut Ctx<'_>,
    locks: &StripedLocks,
    mount: &MountEntry,
    key: &str,
    action: &str,
) -> Result<LogicalResponse, LogicalError> {
    let fields = ctx.fields();
    ctx.warnings.extend(fields.unknown_warning(&["versions"]));
    let versions = fields.u64_list("versions")?.unwrap_or_default();
    if versions.is_empty() {
        return Err(LogicalError::invalid("No version number provided"));
    }
    let paths = KeyPaths::new(mount, key);
    let _guard = locks.lock(&paths.lock).await;
    let Some(mut meta) = load_json::<KeyMeta>(ctx.storage, &paths.meta).await? else {
        return Ok(LogicalResponse::no_content());
    };
    let at = now();
    let mut ops = Vec::new();
    for n in versions {
        let Some(vm) = meta.versions.get_mut(&n) else {
            continue;
        };
        if vm.destroyed {
            continue;
        }
        match action {
            "delete" => {
                if !vm.deleted_at(at) {
                    vm.deletion_time = Some(at);
                }
            }
            "undelete" => vm.deletion_time = None,
            _ => {
                vm.destroyed = true;
                ops.push(TxnOp::delete(paths.version(n)));
            }
        }
    }
    let primary = vec![TxnOp::put(
        paths.meta.clone(),
        to_bytes(&paths.meta, &meta)?,
    )];
    apply(ctx.storage, primary, ops).await?;
    Ok(LogicalResponse::no_content())
}

/// Writes `primary` (the new metadata, and the new version's data) and the
/// `cleanup` deletes of data no metadata refers to any more. One atomic
/// transaction when the backend accepts that many operations; otherwise
/// `primary` first, then `cleanup` in batches: a crash in between leaves
/// only unreferenced data behind, never metadata pointing at lost data.
async fn apply(
    storage: &dyn Storage,
    mut primary: Vec<TxnOp>,
    cleanup: Vec<TxnOp>,
) -> Result<(), LogicalError> {
    let limit = storage
        .limits()
        .max_transaction_ops
        .unwrap_or(usize::MAX)
        .max(primary.len());
    if primary.len() + cleanup.len() <= limit {
        primary.extend(cleanup);
        storage.transaction(primary).await?;
        return Ok(());
    }
    storage.transaction(primary).await?;
    let mut rest = cleanup;
    while !rest.is_empty() {
        let tail = rest.split_off(rest.len().min(limit));
        storage
            .transaction(std::mem::replace(&mut rest, tail))
            .await?;
    }
    Ok(())
}

async fn metadata(
    ctx: &mut Ctx<'_>,
    locks: &StripedLocks,
    mount: &MountEntry,
    key: &str,
) -> Result<LogicalResponse, LogicalError> {
    let paths = KeyPaths::new(mount, key);
    match ctx.req.operation {
        Operation::Read => {
            let meta: KeyMeta = load_json(ctx.storage, &paths.meta)
                .await?
                .ok_or_else(|| LogicalError::NotFound(ctx.req.path.clone()))?;
            Ok(LogicalResponse::ok(meta.json()))
        }
        Operation::Create | Operation::Update | Operation::Patch => {
            let patch = ctx.req.operation == Operation::Patch;
            let fields = ctx.fields();
            ctx.warnings.extend(fields.unknown_warning(&[
                "max_versions",
                "cas_required",
                "delete_version_after",
                "custom_metadata",
            ]));
            let max_versions = fields.u64("max_versions")?;
            let cas_required = fields.bool("cas_required")?;
            let dva = fields.duration("delete_version_after")?;
            // PATCH follows JSON merge patch: a null value removes that key.
            let mut removed_keys = Vec::new();
            let custom = match fields.object("custom_metadata")? {
                Some(obj) if patch => {
                    let mut kept = Map::new();
                    for (k, v) in obj {
                        if v.is_null() {
                            removed_keys.push(k.clone());
                        } else {
                            kept.insert(k.clone(), v.clone());
                        }
                    }
                    let mut wrapper = Map::new();
                    wrapper.insert("custom_metadata".to_owned(), Value::Object(kept));
                    Fields::new(Some(&wrapper)).string_map("custom_metadata")?
                }
                _ => fields.string_map("custom_metadata")?,
            };
            if let Some(custom) = &custom {
                validate_custom_metadata(custom)?;
            }
            let _guard = locks.lock(&paths.lock).await;
            let at = now();
            let existing: Option<KeyMeta> = load_json(ctx.storage, &paths.meta).await?;
            if patch && existing.is_none() {
                return Err(LogicalError::NotFound(ctx.req.path.clone()));
            }
            let mut meta = existing.unwrap_or_else(|| KeyMeta::new(at));
            if let Some(n) = max_versions {
                meta.max_versions = n;
            }
            if let Some(b) = cas_required {
                meta.cas_required = b;
            }
            if let Some(d) = dva {
                meta.delete_version_after = d;
            }
            if let Some(custom) = custom {
                if patch {
                    let merged = meta.custom_metadata.get_or_insert_with(BTreeMap::new);
                    merged.extend(custom);
                    for k in &removed_keys {
                        merged.remove(k);
                    }
                    if let Some(total) = meta.custom_metadata.as_ref() {
                        validate_custom_metadata(total)?;
                    }
                } else {
                    meta.custom_metadata = Some(custom);
                }
            }
            meta.updated_time = at;
            ctx.storage
                .put(&paths.meta, &to_bytes(&paths.meta, &meta)?)
                .await?;
            Ok(LogicalResponse::no_content())
        }
        Operation::Delete => {
            let _guard = locks.lock(&paths.lock).await;
            let Some(meta) = load_json::<KeyMeta>(ctx.storage, &paths.meta).await? else {
                return Ok(LogicalResponse::no_content());
            };
            let limit = ctx
                .storage
                .limits()
                .max_transaction_ops
                .unwrap_or(usize::MAX)
                .max(2);
            let mut ops: Vec<TxnOp> = meta
                .versions
                .keys()
                .map(|n| TxnOp::delete(paths.version(*n)))
                .collect();
            // Version data first (in batches the backend accepts), metadata
            // last: a crash midway leaves metadata whose reads 404, never
            // data that no metadata reaches.
            while ops.len() >= limit {
                let rest = ops.split_off(limit - 1);
                ctx.storage
                    .transaction(std::mem::replace(&mut ops, rest))
                    .await?;
            }
            ops.push(TxnOp::delete(paths.meta.clone()));
            ctx.storage.transaction(ops).await?;
            Ok(LogicalResponse::no_content())
        }
        Operation::List => Err(ctx.unsupported()),
    }
}

fn validate_custom_metadata(custom: &BTreeMap<String, String>) -> Result<(), LogicalError> {
    if custom.len() > 64 {
        return Err(LogicalError::invalid(format!(
            "custom_metadata has {} keys; the maximum is 64",
            custom.len()
        )));
    }
    for (k, v) in custom {
        if k.is_empty() || k.len() > 128 {
            return Err(LogicalError::invalid(format!(
                "custom_metadata key {k:?} must be 1 to 128 bytes"
            )));
        }
        if v.len() > 512 {
            return Err(LogicalError::invalid(format!(
                "custom_metadata value for key {k:?} is longer than 512 bytes"
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_patch_follows_rfc7396() {
        let mut target = json!({"a": "b", "c": {"d": "e", "f": "g"}});
        merge_patch(&mut target, &json!({"a": "z", "c": {"f": null}, "n": 1}));
        assert_eq!(target, json!({"a": "z", "c": {"d": "e"}, "n": 1}));
    }

    #[test]
    fn subkeys_replace_leaves_with_null() {
        let data = json!({"foo": "abc", "bar": {"baz": {"x": 1}}});
        assert_eq!(
            subkeys_of(&data, 0, 0),
            json!({"foo": null, "bar": {"baz": {"x": null}}})
        );
        assert_eq!(subkeys_of(&data, 1, 0), json!({"foo": null, "bar": null}));
    }

    #[test]
    fn custom_metadata_limits() {
        let mut m = BTreeMap::new();
        m.insert("k".to_owned(), "v".to_owned());
        validate_custom_metadata(&m).unwrap();
        m.insert("x".repeat(129), "v".to_owned());
        assert!(validate_custom_metadata(&m).is_err());
    }
}
