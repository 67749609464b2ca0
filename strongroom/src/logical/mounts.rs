//! The mount table: which secrets engine serves which path prefix.
//!
//! Persisted as one JSON document at `core/mounts` (inside the barrier), in
//! the spirit of Vault's mount table. Each mount's data lives under
//! `logical/<mount uuid>/`, so disabling a mount removes exactly its data and
//! a re-enabled path starts empty.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::error::LogicalError;
use super::token::MAX_TTL_SECS;
use super::util::{Fields, random_base62, random_uuid};
use seal_core::{Storage, TxnOp};

/// What `running_plugin_version` reports: engines are built in.
const RUNNING_VERSION: &str = concat!("v", env!("CARGO_PKG_VERSION"), "+builtin.strongroom");

/// The accessor `sys/mounts` shows for the system backend.
pub(crate) const SYSTEM_ACCESSOR: &str = "system_00000000";

/// Storage key of the mount table.
pub(crate) const MOUNTS_PATH: &str = "core/mounts";

/// Prefixes no secrets engine may be mounted at or below, as in Vault
/// (`sys/` and `auth/` are served by the router itself; the others are
/// Vault built-ins a client would not expect to find replaced).
const PROTECTED: &[&str] = &["sys/", "auth/", "cubbyhole/", "identity/", "audit/"];

/// The secrets engines the router can mount.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum MountKind {
    /// Key/value version 1: one unversioned JSON object per path.
    KvV1,
    /// Key/value version 2: versioned secrets with metadata, soft delete,
    /// undelete and destroy.
    KvV2,
}

impl MountKind {
    fn version(self) -> &'static str {
        match self {
            Self::KvV1 => "1",
            Self::KvV2 => "2",
        }
    }
}

/// One row of the mount table.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct MountEntry {
    /// Always ends with `/`, never starts with one (`secret/`).
    pub(crate) path: String,
    /// The engine type as Vault reports it (`kv`, `generic`).
    #[serde(rename = "type")]
    pub(crate) kind_name: String,
    pub(crate) description: String,
    /// Names the engine's data folder `logical/<uuid>/`.
    pub(crate) uuid: String,
    pub(crate) accessor: String,
    /// Vault writes `null` for engines without options.
    #[serde(default, deserialize_with = "null_as_empty")]
    pub(crate) options: BTreeMap<String, String>,
    #[serde(default)]
    pub(crate) default_lease_ttl: u64,
    #[serde(default)]
    pub(crate) max_lease_ttl: u64,
    #[serde(default)]
    pub(crate) local: bool,
    #[serde(default)]
    pub(crate) seal_wrap: bool,
    /// Fields written by Vault that this router does not use (`table`,
    /// `config`, `backend_aware_uuid`, `namespace_id`...): kept so that a
    /// table taken over from Vault and written back loses nothing.
    #[serde(flatten)]
    pub(crate) extra: Map<String, Value>,
}

fn null_as_empty<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<BTreeMap<String, String>, D::Error> {
    Ok(Option::<BTreeMap<String, String>>::deserialize(d)?.unwrap_or_default())
}

impl MountEntry {
    /// The engine serving this mount, or `None` for a type this router
    /// does not implement (a mount taken over from Vault: `system`,
    /// `cubbyhole`, `identity`, `pki`...), which is kept in the table and
    /// in storage untouched but not served.
    pub(crate) fn kind(&self) -> Option<MountKind> {
        if !matches!(self.kind_name.as_str(), "kv" | "generic") {
            return None;
        }
        Some(if self.options.get("version").is_some_and(|v| v == "2") {
            MountKind::KvV2
        } else {
            MountKind::KvV1
        })
    }

    /// The error a request to a mount of an unsupported type gets.
    pub(crate) fn unsupported_error(&self) -> LogicalError {
        LogicalError::UnsupportedPath(format!(
            "the {:?} secrets engine mounted at {} is not supported by Strongroom; it was taken \
             over from Vault and is kept unchanged in storage, but not served",
            self.kind_name, self.path
        ))
    }

    /// The storage folder holding this mount's data.
    pub(crate) fn data_prefix(&self) -> String {
        format!("logical/{}/", self.uuid)
    }

    /// The lease duration KV v1 reads report (Vault: the mount's default
    /// lease TTL, else the system default of 768h).
    pub(crate) fn lease_ttl(&self) -> u64 {
        if self.default_lease_ttl > 0 {
            self.default_lease_ttl
        } else {
            MAX_TTL_SECS
        }
    }

    /// The JSON Vault shows for a mount in `sys/mounts` and
    /// `sys/internal/ui/mounts/<path>`.
    pub(crate) fn to_json(&self) -> Value {
        json!({
            "accessor": self.accessor,
            "config": {
                "default_lease_ttl": self.default_lease_ttl,
                "force_no_cache": false,
                "max_lease_ttl": self.max_lease_ttl,
            },
            "description": self.description,
            "external_entropy_access": false,
            "local": self.local,
            "options": self.options,
            "deprecation_status": "supported",
            "plugin_version": "",
            "running_plugin_version": RUNNING_VERSION,
            "running_sha256": "",
            "seal_wrap": self.seal_wrap,
            "type": self.kind_name,
            "uuid": self.uuid,
        })
    }

    fn tune_json(&self) -> Value {
        let or_default = |ttl: u64| if ttl == 0 { MAX_TTL_SECS } else { ttl };
        json!({
            "default_lease_ttl": or_default(self.default_lease_ttl),
            "max_lease_ttl": or_default(self.max_lease_ttl),
            "force_no_cache": false,
            "description": self.description,
            "options": self.options,
        })
    }
}

/// The mount table as stored at [`MOUNTS_PATH`].
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct MountTable {
    #[serde(rename = "type", default = "table_type")]
    kind: String,
    #[serde(default)]
    pub(crate) entries: Vec<MountEntry>,
}

fn table_type() -> String {
    "mounts".to_owned()
}

/// Normalises a mount path the way Vault does: no leading `/`, exactly one
/// trailing `/`; refuses empty, `.`/`..` and control characters.
pub(crate) fn normalize_mount_path(raw: &str) -> Result<String, LogicalError> {
    let trimmed = raw.trim_matches('/');
    if trimmed.is_empty() {
        return Err(LogicalError::invalid("missing mount path"));
    }
    if trimmed.len() > 256 {
        return Err(LogicalError::invalid("mount path is longer than 256 bytes"));
    }
    for segment in trimmed.split('/') {
        if segment.is_empty() || segment == "." || segment == ".." {
            return Err(LogicalError::invalid(format!(
                "invalid mount path {raw:?}: empty, '.' or '..' segment"
            )));
        }
    }
    if trimmed
        .chars()
        .any(|c| c.is_control() || c == '*' || c == '+')
    {
        return Err(LogicalError::invalid(format!(
            "invalid mount path {raw:?}: control characters, '*' and '+' are not allowed"
        )));
    }
    Ok(format!("{trimmed}/"))
}

impl MountTable {
    /// Loads the table, or an empty one when none was stored yet.
    pub(crate) async fn load(storage: &dyn Storage) -> Result<Self, LogicalError> {
        Ok(Self::load_path(storage, MOUNTS_PATH)
            .await?
            .unwrap_or_else(|| Self {
                kind: table_type(),
                entries: Vec::new(),
            }))
    }

    /// Loads a table stored at `path` in this layout or Vault's (which
    /// gzip-compresses it behind a canary byte and may write `null`
    /// entries).
    pub(crate) async fn load_path(
        storage: &dyn Storage,
        path: &str,
    ) -> Result<Option<Self>, LogicalError> {
        let Some(bytes) = storage.get(path).await? else {
            return Ok(None);
        };
        let json = crate::adopt::decompress(&bytes).map_err(|e| LogicalError::corrupt(path, e))?;
        #[derive(Deserialize)]
        struct Raw {
            #[serde(rename = "type", default = "table_type")]
            kind: String,
            #[serde(default)]
            entries: Option<Vec<MountEntry>>,
        }
        let raw: Raw = serde_json::from_slice(&json).map_err(|e| LogicalError::corrupt(path, e))?;
        Ok(Some(Self {
            kind: raw.kind,
            entries: raw.entries.unwrap_or_default(),
        }))
    }

    /// The table as this router stores it (plain JSON).
    pub(crate) fn to_bytes(&self) -> Result<Vec<u8>, LogicalError> {
        serde_json::to_vec(self).map_err(|e| LogicalError::corrupt(MOUNTS_PATH, e))
    }

    pub(crate) async fn persist(&self, storage: &dyn Storage) -> Result<(), LogicalError> {
        storage.put(MOUNTS_PATH, &self.to_bytes()?).await?;
        Ok(())
    }

    /// The mount serving `path` (longest prefix wins) and the rest of the
    /// path below it. `secret` finds the mount `secret/` with an empty rest.
    pub(crate) fn route<'p>(&self, path: &'p str) -> Option<(&MountEntry, &'p str)> {
        self.entries
            .iter()
            .filter_map(|m| {
                if let Some(rest) = path.strip_prefix(m.path.as_str()) {
                    Some((m, rest))
                } else if path.len() + 1 == m.path.len() && m.path.starts_with(path) {
                    Some((m, ""))
                } else {
                    None
                }
            })
            .max_by_key(|(m, _)| m.path.len())
    }

    pub(crate) fn get(&self, path: &str) -> Option<&MountEntry> {
        self.entries.iter().find(|m| m.path == path)
    }

    /// Checks that `path` may be mounted: not protected, not overlapping.
    pub(crate) fn check_free(&self, path: &str) -> Result<(), LogicalError> {
        if PROTECTED.iter().any(|p| path.starts_with(p)) {
            return Err(LogicalError::invalid(format!("cannot mount {path:?}")));
        }
        if let Some(existing) = self
            .entries
            .iter()
            .find(|m| m.path.starts_with(path) || path.starts_with(m.path.as_str()))
        {
            return Err(LogicalError::invalid(format!(
                "path is already in use at {}",
                existing.path
            )));
        }
        Ok(())
    }

    /// `sys/mounts` data: every mount keyed by path, plus the `sys/` mount
    /// the router serves itself.
    pub(crate) fn list_json(&self) -> Map<String, Value> {
        let mut out = Map::new();
        for m in &self.entries {
            out.insert(m.path.clone(), m.to_json());
        }
        out.insert(
            "sys/".to_owned(),
            json!({
                "accessor": SYSTEM_ACCESSOR,
                "config": {"default_lease_ttl": 0, "force_no_cache": false, "max_lease_ttl": 0},
                "description": "system endpoints used for control, policy and debugging",
                "external_entropy_access": false,
                "local": false,
                "options": null,
                "plugin_version": "",
                "running_plugin_version": RUNNING_VERSION,
                "running_sha256": "",
                "seal_wrap": true,
                "type": "system",
                "uuid": "00000000-0000-0000-0000-000000000000",
            }),
        );
        out
    }
}

/// A new mount decoded from `sys/mounts/<path>`'s body.
pub(crate) fn parse_enable(
    path: &str,
    body: Option<&Map<String, Value>>,
    warnings: &mut Vec<String>,
) -> Result<MountEntry, LogicalError> {
    let fields = Fields::new(body);
    warnings.extend(fields.unknown_warning(&[
        "type",
        "description",
        "config",
        "options",
        "local",
        "seal_wrap",
        "external_entropy_access",
        "plugin_name",
        "plugin_version",
        "path",
    ]));
    let kind_raw = fields
        .string("type")?
        .filter(|t| !t.is_empty())
        .ok_or_else(|| LogicalError::invalid("backend type must be specified as a string"))?;
    let mut options = BTreeMap::new();
    if let Some(opts) = fields.object("options")? {
        let opt_fields = Fields::new(Some(opts));
        for key in opts.keys() {
            if let Some(value) = opt_fields.string(key)? {
                options.insert(key.clone(), value);
            }
        }
    }
    let kind_name = match kind_raw.as_str() {
        "kv" | "generic" => {
            // Like Vault, a plain `kv` mount keeps empty options; clients
            // read a missing version as 1.
            match options.get("version").map(String::as_str) {
                None | Some("1" | "2") => {}
                Some("") => {
                    options.remove("version");
                }
                Some(other) => {
                    return Err(LogicalError::invalid(format!(
                        "invalid KV version {other:?}: use \"1\" or \"2\""
                    )));
                }
            }
            kind_raw.clone()
        }
        "kv-v2" => {
            options.insert("version".to_owned(), "2".to_owned());
            "kv".to_owned()
        }
        other => {
            return Err(LogicalError::invalid(format!(
                "plugin not found in the catalog: {other} (this server provides \"kv\" (options.version \"1\" or \"2\"), \"kv-v2\" and \"generic\")"
            )));
        }
    };
    let (default_lease_ttl, max_lease_ttl) = match fields.object("config")? {
        Some(config) => {
            let cf = Fields::new(Some(config));
            (
                cf.duration("default_lease_ttl")?.unwrap_or(0),
                cf.duration("max_lease_ttl")?.unwrap_or(0),
            )
        }
        None => (0, 0),
    };
    Ok(MountEntry {
        path: path.to_owned(),
        kind_name,
        description: fields.string("description")?.unwrap_or_default(),
        uuid: random_uuid()?,
        accessor: format!("kv_{}", random_base62(8)?.to_lowercase()),
        options,
        default_lease_ttl,
        max_lease_ttl,
        local: fields.bool("local")?.unwrap_or(false),
        seal_wrap: fields.bool("seal_wrap")?.unwrap_or(false),
        extra: Map::new(),
    })
}

/// A mount entry for [`super::Logical::mount`].
pub(crate) fn new_entry(
    path: &str,
    kind: MountKind,
    description: &str,
) -> Result<MountEntry, LogicalError> {
    let mut options = BTreeMap::new();
    options.insert("version".to_owned(), kind.version().to_owned());
    Ok(MountEntry {
        path: path.to_owned(),
        kind_name: "kv".to_owned(),
        description: description.to_owned(),
        uuid: random_uuid()?,
        accessor: format!("kv_{}", random_base62(8)?.to_lowercase()),
        options,
        default_lease_ttl: 0,
        max_lease_ttl: 0,
        local: false,
        seal_wrap: false,
        extra: Map::new(),
    })
}

/// Applies `sys/mounts/<path>/tune` to an entry. Returns `true` when the
/// body asks to upgrade a KV version 1 mount to version 2 (what
/// `kv enable-versioning` sends); the caller migrates the data.
pub(crate) fn apply_tune(
    entry: &mut MountEntry,
    body: Option<&Map<String, Value>>,
    warnings: &mut Vec<String>,
) -> Result<bool, LogicalError> {
    let fields = Fields::new(body);
    warnings.extend(fields.unknown_warning(&[
        "description",
        "default_lease_ttl",
        "max_lease_ttl",
        "options",
    ]));
    if let Some(description) = fields.string("description")? {
        entry.description = description;
    }
    if let Some(ttl) = fields.duration("default_lease_ttl")? {
        entry.default_lease_ttl = ttl;
    }
    if let Some(ttl) = fields.duration("max_lease_ttl")? {
        entry.max_lease_ttl = ttl;
    }
    if let Some(opts) = fields.object("options")? {
        let of = Fields::new(Some(opts));
        if let Some(version) = of.string("version")? {
            let current = entry.kind().ok_or_else(|| entry.unsupported_error())?;
            match (current, version.as_str()) {
                (_, "") | (MountKind::KvV1, "1") | (MountKind::KvV2, "2") => {}
                (MountKind::KvV1, "2") => return Ok(true),
                (MountKind::KvV2, "1") => {
                    return Err(LogicalError::invalid(format!(
                        "cannot downgrade {} from KV version 2 to 1: versions and metadata would be lost; mount a new path and copy the data",
                        entry.path
                    )));
                }
                (_, other) => {
                    return Err(LogicalError::invalid(format!(
                        "invalid KV version {other:?}: use \"1\" or \"2\""
                    )));
                }
            }
        }
    }
    Ok(false)
}

pub(crate) fn tune_response(entry: &MountEntry) -> Value {
    entry.tune_json()
}

/// Deletes every key under `prefix` (a folder ending in `/`), in
/// transactions no larger than the backend accepts.
pub(crate) async fn delete_tree(storage: &dyn Storage, prefix: &str) -> Result<(), LogicalError> {
    let batch = storage
        .limits()
        .max_transaction_ops
        .unwrap_or(64)
        .clamp(1, 64);
    let mut folders = vec![prefix.to_owned()];
    let mut ops = Vec::new();
    while let Some(folder) = folders.pop() {
        for child in storage.list(&folder).await? {
            let full = format!("{folder}{child}");
            if child.ends_with('/') {
                folders.push(full);
            } else {
                ops.push(TxnOp::delete(full));
                if ops.len() >= batch {
                    storage.transaction(std::mem::take(&mut ops)).await?;
                }
            }
        }
    }
    if !ops.is_empty() {
        storage.transaction(ops).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_paths_normalise() {
        assert_eq!(normalize_mount_path("secret").unwrap(), "secret/");
        assert_eq!(normalize_mount_path("/a/b/").unwrap(), "a/b/");
        assert!(normalize_mount_path("").is_err());
        assert!(normalize_mount_path("/").is_err());
        assert!(normalize_mount_path("a//b").is_err());
        assert!(normalize_mount_path("a/../b").is_err());
    }

    #[test]
    fn routing_prefers_longest_prefix() {
        let mut table = MountTable::default();
        table
            .entries
            .push(new_entry("a/", MountKind::KvV1, "").unwrap());
        table
            .entries
            .push(new_entry("a/b/", MountKind::KvV2, "").unwrap());
        let (m, rest) = table.route("a/b/data/x").unwrap();
        assert_eq!((m.path.as_str(), rest), ("a/b/", "data/x"));
        let (m, rest) = table.route("a/c").unwrap();
        assert_eq!((m.path.as_str(), rest), ("a/", "c"));
        let (m, rest) = table.route("a").unwrap();
        assert_eq!((m.path.as_str(), rest), ("a/", ""));
        assert!(table.route("ab/x").is_none());
        assert!(table.route("b").is_none());
    }

    #[test]
    fn overlap_and_reserved() {
        let mut table = MountTable::default();
        table
            .entries
            .push(new_entry("kv/", MountKind::KvV1, "").unwrap());
        assert!(
            table
                .check_free("kv/")
                .unwrap_err()
                .to_string()
                .contains("path is already in use at kv/")
        );
        assert!(table.check_free("kv/sub/").is_err());
        table.entries[0].path = "x/y/".into();
        assert!(table.check_free("x/").is_err());
        assert!(table.check_free("sys/").is_err());
        assert!(table.check_free("auth/foo/").is_err());
        table.check_free("kv2/").unwrap();
    }
}
