//! Taking over a data set that HashiCorp Vault (1.x) wrote: detect it,
//! serve it, and — only when asked — upgrade it in place.
//!
//! Strongroom shares Vault's barrier (ciphertext layout, keyring, seal
//! configuration) and reads those natively, and its mount table and KV v1
//! layout are Vault's too (the table may be gzip-compressed behind Vault's
//! canary byte, see [`decompress`]). Two things differ and are converted:
//!
//! * **KV v2**: Vault keeps protobuf metadata under encrypted key names and
//!   versions under salted hashes ([`kv2`]); Strongroom keeps JSON.
//! * **Tokens**: Vault names entries by an HMAC/SHA1 of the token under a
//!   UUID salt and keeps expiry in lease entries ([`tokens`]); Strongroom
//!   names them by SHA-256 under its own salt.
//!
//! [`plan`] reads everything once and returns the writes that express the
//! data set in Strongroom's layout. The same plan serves two modes:
//!
//! * **Read-only takeover** ([`VaultTakeover::ReadOnly`], the default): the
//!   writes go into an in-memory layer over the barrier
//!   ([`overlay::ReadOnlyOverlay`]) and every write is refused, so nothing
//!   reaches the Vault prefix.
//! * **Upgrade** ([`upgrade`]: `strongroom operator adopt`, or
//!   [`VaultTakeover::Upgrade`] in the config): one-way, in durable steps
//!   recorded in a marker inside the barrier, each safe to crash after and
//!   resumed on the next unseal: *copy* (converted data under new names
//!   nothing refers to yet), *switch* (one transaction: mount table, token
//!   salt, marker), *cleanup* (Vault's now unreferenced copies), *done*.
//!
//! Engines and auth methods Strongroom lacks stay in the mount tables and in
//! storage untouched, are listed at unseal, and are never served.
//! Policies (`sys/policy/<name>`) are stored the way Vault stores them and
//! need no conversion.

mod compress;
mod keysutil;
mod kv2;
mod overlay;
mod tokens;

use std::collections::BTreeMap;
use std::sync::Arc;

use seal_core::{Storage, StorageError, TxnOp};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::logical::LogicalError;
use crate::logical::mounts::{MOUNTS_PATH, MountTable};
use crate::logical::token::{self, SALT_PATH};
use crate::logical::{MountKind, kv2 as kv2_layout};

pub(crate) use compress::decompress;
pub(crate) use overlay::{READ_ONLY_MESSAGE, ReadOnlyOverlay};

/// Vault's table of local (non-replicated) mounts.
const LOCAL_MOUNTS_PATH: &str = "core/local-mounts";
/// Vault's auth method table.
const AUTH_PATH: &str = "core/auth";
/// The upgrade's progress marker (inside the barrier).
pub(crate) const MARKER_PATH: &str = "core/strongroom/vault-adopt";

/// What a node does when it unseals a data set Vault wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum VaultTakeover {
    /// Serve it read-only and write nothing to it (the trial mode). The
    /// upgrade then runs only through [`crate::Core::adopt_vault`].
    #[default]
    ReadOnly,
    /// Run the one-way upgrade to Strongroom's layout at unseal: the
    /// operator confirmed it by configuring this.
    Upgrade,
}

/// A step boundary of the upgrade; each one is durable once reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum AdoptStep {
    /// The marker with the plan's salt and names is stored.
    Planned,
    /// The converted data is stored under names nothing refers to yet.
    Copied,
    /// Mount table and token salt point at the converted data.
    Switched,
    /// Vault's unreferenced copies are deleted: the upgrade is complete.
    Done,
}

impl AdoptStep {
    /// The step's name (`planned`, `copied`, `switched`, `done`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Planned => "planned",
            Self::Copied => "copied",
            Self::Switched => "switched",
            Self::Done => "done",
        }
    }
}

/// Why a takeover or upgrade failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum AdoptError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Logical(#[from] LogicalError),
    #[error("Vault data set: corrupt {path}: {reason}")]
    Corrupt { path: String, reason: String },
}

/// The upgrade's progress, with what a resumed run must reuse.
#[derive(Clone, Serialize, Deserialize)]
struct Marker {
    step: AdoptStep,
    /// The new token salt (hex), so resumed copies match.
    salt: Zeroizing<String>,
    /// Old KV v2 mount uuid → new uuid.
    kv2_uuids: BTreeMap<String, String>,
}

/// Which layout the storage behind the barrier holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Layout {
    /// Strongroom's own (a fresh init, or an upgrade that finished).
    Strongroom,
    /// Vault's, untouched.
    Vault,
    /// An upgrade that stopped after this step.
    Upgrading(AdoptStep),
}

async fn load_marker(storage: &dyn Storage) -> Result<Option<Marker>, AdoptError> {
    match storage.get(MARKER_PATH).await? {
        Some(raw) => serde_json::from_slice(&raw)
            .map(Some)
            .map_err(|e| AdoptError::Corrupt {
                path: MARKER_PATH.to_owned(),
                reason: e.to_string(),
            }),
        None => Ok(None),
    }
}

/// Tells the layouts apart from what is stored: the marker first, then
/// what only Vault writes — an auth table (`core/auth`), or a `system`
/// mount in the mount table. Strongroom writes neither.
pub(crate) async fn detect(storage: &dyn Storage) -> Result<Layout, AdoptError> {
    if let Some(marker) = load_marker(storage).await? {
        return Ok(match marker.step {
            AdoptStep::Done => Layout::Strongroom,
            step => Layout::Upgrading(step),
        });
    }
    if storage.get(AUTH_PATH).await?.is_some() {
        return Ok(Layout::Vault);
    }
    let table = MountTable::load(storage).await?;
    if table.entries.iter().any(|m| m.kind_name == "system") {
        return Ok(Layout::Vault);
    }
    Ok(Layout::Strongroom)
}

/// The conversion of a Vault data set (see the module docs).
pub(crate) struct Plan {
    /// What is not carried over, one line each, for the unseal log.
    pub(crate) report: Vec<String>,
    copy: Vec<TxnOp>,
    switch: Vec<TxnOp>,
    marker: Marker,
}

impl std::fmt::Debug for Plan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plan")
            .field("report", &self.report)
            .field("copy_ops", &self.copy.len())
            .finish_non_exhaustive()
    }
}

impl Plan {
    /// Every write of the plan, for the read-only overlay.
    pub(crate) fn into_overlay_ops(self) -> Vec<TxnOp> {
        let mut ops = self.copy;
        ops.extend(self.switch);
        ops
    }
}

/// Reads a Vault data set and plans its conversion. `resume` carries the
/// salt and names of an upgrade that already started.
async fn plan(storage: &dyn Storage, resume: Option<Marker>) -> Result<Plan, AdoptError> {
    let mut marker = match resume {
        Some(m) => m,
        None => Marker {
            step: AdoptStep::Planned,
            salt: token::new_salt_hex()?,
            kv2_uuids: BTreeMap::new(),
        },
    };
    let mut report = Vec::new();
    let mut copy = Vec::new();
    let mut switch = Vec::new();

    let mut table = MountTable::load(storage).await?;
    if let Some(local) = MountTable::load_path(storage, LOCAL_MOUNTS_PATH).await? {
        table.entries.extend(local.entries);
        switch.push(TxnOp::delete(LOCAL_MOUNTS_PATH));
    }
    for entry in &mut table.entries {
        match entry.kind() {
            Some(MountKind::KvV1) => {}
            Some(MountKind::KvV2) => {
                let old_base = entry.data_prefix();
                let backend_uuid = entry
                    .extra
                    .get("backend_aware_uuid")
                    .and_then(serde_json::Value::as_str)
                    .unwrap_or_default()
                    .to_owned();
                let vault = kv2::read_mount(storage, &old_base, &backend_uuid).await?;
                let new_uuid = match marker.kv2_uuids.get(&entry.uuid) {
                    Some(u) => u.clone(),
                    None => crate::logical::util::random_uuid()?,
                };
                marker
                    .kv2_uuids
                    .insert(entry.uuid.clone(), new_uuid.clone());
                let new_base = format!("logical/{new_uuid}/");
                copy.push(kv2_layout::import_config_op(
                    &new_base,
                    vault.max_versions,
                    vault.cas_required,
                )?);
                for key in &vault.keys {
                    copy.extend(kv2_layout::import_key_ops(&new_base, key)?);
                }
                entry.uuid = new_uuid;
            }
            None if entry.kind_name == "system" => {}
            None => report.push(format!(
                "secrets engine {:?} at {}: not supported by Strongroom; kept in the mount \
                 table and in storage unchanged, not served",
                entry.kind_name, entry.path
            )),
        }
    }
    if let Some(raw) = storage.get(AUTH_PATH).await? {
        let json = decompress(&raw).map_err(|reason| AdoptError::Corrupt {
            path: AUTH_PATH.to_owned(),
            reason,
        })?;
        let auth: AuthTable = serde_json::from_slice(&json).map_err(|e| AdoptError::Corrupt {
            path: AUTH_PATH.to_owned(),
            reason: e.to_string(),
        })?;
        for method in auth.entries.iter().filter(|m| m.kind != "token") {
            report.push(format!(
                "auth method {:?} at auth/{}: not supported by Strongroom; its configuration \
                 and data are kept unchanged, but logins through it do not work",
                method.kind, method.path
            ));
        }
    }
    let vault_tokens = tokens::read_tokens(storage).await?;
    for t in &vault_tokens.tokens {
        copy.extend(token::import_token_ops(&marker.salt, t)?);
    }
    report.extend(
        vault_tokens
            .skipped
            .into_iter()
            .map(|s| format!("{s}; not taken over")),
    );
    switch.push(TxnOp::put(MOUNTS_PATH, table.to_bytes()?));
    switch.push(TxnOp::put(SALT_PATH, marker.salt.as_bytes().to_vec()));
    Ok(Plan {
        report,
        copy,
        switch,
        marker,
    })
}

/// The parts of Vault's auth table entries the report needs.
#[derive(Deserialize)]
struct AuthTable {
    #[serde(default)]
    entries: Vec<AuthEntry>,
}

#[derive(Deserialize)]
struct AuthEntry {
    #[serde(default)]
    path: String,
    #[serde(rename = "type", default)]
    kind: String,
}

fn encode_marker(marker: &Marker) -> Result<Vec<u8>, AdoptError> {
    serde_json::to_vec(marker).map_err(|e| AdoptError::Corrupt {
        path: MARKER_PATH.to_owned(),
        reason: e.to_string(),
    })
}

/// Writes `ops` in transactions small enough for any backend (the barrier
/// over Consul: 64 operations, and well under its byte limit).
async fn apply_in_batches(storage: &dyn Storage, ops: Vec<TxnOp>) -> Result<(), AdoptError> {
    const MAX_OPS: usize = 32;
    const MAX_BYTES: usize = 96 * 1024;
    let mut batch = Vec::new();
    let mut bytes = 0;
    for op in ops {
        let size = match &op {
            TxnOp::Put { key, value } => key.len() + value.len(),
            TxnOp::Delete { key } => key.len(),
        };
        if !batch.is_empty() && (batch.len() == MAX_OPS || bytes + size > MAX_BYTES) {
            storage.transaction(std::mem::take(&mut batch)).await?;
            bytes = 0;
        }
        bytes += size;
        batch.push(op);
    }
    if !batch.is_empty() {
        storage.transaction(batch).await?;
    }
    Ok(())
}

/// Every Vault token index entry (names that are not this store's hashes)
/// below `sys/token/`.
async fn vault_token_keys(storage: &dyn Storage) -> Result<Vec<String>, AdoptError> {
    let mut keys = Vec::new();
    for folder in [token::ID_PREFIX, token::ACCESSOR_PREFIX] {
        for name in storage.list(folder).await? {
            if !name.ends_with('/') && !token::is_own_hash(&name) {
                keys.push(format!("{folder}{name}"));
            }
        }
    }
    for parent in storage.list(token::PARENT_PREFIX).await? {
        let Some(name) = parent.strip_suffix('/') else {
            continue;
        };
        if token::is_own_hash(name) {
            continue;
        }
        for child in storage
            .list(&format!("{}{parent}", token::PARENT_PREFIX))
            .await?
        {
            keys.push(format!("{}{parent}{child}", token::PARENT_PREFIX));
        }
    }
    Ok(keys)
}

/// Called at each durable step boundary; see
/// [`crate::CoreOptions::adopt_pause_after`].
pub(crate) type StepHook<'a> = &'a (dyn Fn(AdoptStep) + Send + Sync);

/// Runs (or resumes) the one-way upgrade of a Vault data set to
/// Strongroom's layout on `storage` (the unsealed barrier). Returns the
/// plan's report when there was a Vault layout to upgrade, `None` when the
/// storage already holds Strongroom's layout.
pub(crate) async fn upgrade(
    storage: &dyn Storage,
    hook: StepHook<'_>,
) -> Result<Option<Vec<String>>, AdoptError> {
    let resume = match detect(storage).await? {
        Layout::Strongroom => return Ok(None),
        Layout::Vault => None,
        Layout::Upgrading(_) => load_marker(storage).await?,
    };
    let mut report = Vec::new();
    let mut marker = match resume {
        Some(m) if m.step >= AdoptStep::Switched => m,
        resume => {
            let plan = plan(storage, resume).await?;
            report = plan.report;
            let mut marker = plan.marker;
            if marker.step < AdoptStep::Copied {
                marker.step = AdoptStep::Planned;
                storage.put(MARKER_PATH, &encode_marker(&marker)?).await?;
                hook(AdoptStep::Planned);
                apply_in_batches(storage, plan.copy).await?;
                marker.step = AdoptStep::Copied;
                storage.put(MARKER_PATH, &encode_marker(&marker)?).await?;
                hook(AdoptStep::Copied);
            }
            marker.step = AdoptStep::Switched;
            let mut switch = plan.switch;
            switch.push(TxnOp::put(MARKER_PATH, encode_marker(&marker)?));
            storage.transaction(switch).await?;
            hook(AdoptStep::Switched);
            marker
        }
    };
    for old_uuid in marker.kv2_uuids.keys() {
        crate::logical::mounts::delete_tree(storage, &format!("logical/{old_uuid}/")).await?;
    }
    let stale = vault_token_keys(storage).await?;
    apply_in_batches(storage, stale.into_iter().map(TxnOp::delete).collect()).await?;
    marker.step = AdoptStep::Done;
    storage.put(MARKER_PATH, &encode_marker(&marker)?).await?;
    hook(AdoptStep::Done);
    Ok(Some(report))
}

/// The storage to serve a read-only takeover from, and the plan's report.
pub(crate) async fn read_only_view(
    barrier: Arc<dyn Storage>,
) -> Result<(Arc<dyn Storage>, Vec<String>), AdoptError> {
    let plan = plan(barrier.as_ref(), None).await?;
    let report = plan.report.clone();
    let view: Arc<dyn Storage> = Arc::new(ReadOnlyOverlay::new(barrier, plan.into_overlay_ops()));
    Ok((view, report))
}
