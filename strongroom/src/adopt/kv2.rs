//! Reads a KV version 2 mount as Vault's `vault-plugin-secrets-kv` stores it
//! below `logical/<mount uuid>/<backend-aware uuid>/` (the mount entry's
//! `backend_aware_uuid`, which also starts every name-encryption context):
//!
//! * `policy/metadata` — the keysutil policy that encrypts key names
//!   ([`super::keysutil`]).
//! * `metadata/<enc a>/<enc b>` — protobuf `KeyMetadata` of key `a/b`
//!   (`key = 1, versions = 2 (map<uint64, VersionMetadata>),
//!   current_version = 3, oldest_version = 4, created_time = 5,
//!   updated_time = 6, max_versions = 7, cas_required = 8`).
//! * `salt` — a UUID; version `n` of key `k` lives at
//!   `versions/<h[0..3]>/<h[3..]>` with `h = hex(sha256(salt ‖ "k|n"))`, as
//!   protobuf `Version` (`data = 1` (JSON), `created_time = 2`,
//!   `deletion_time = 3`). Destroyed versions have no entry.
//! * `config` — protobuf `Configuration` (`max_versions = 1`,
//!   `cas_required = 2`).

use std::collections::BTreeMap;

use seal_core::Storage;
use seal_core::protobuf::{Fields, ProtoError, timestamp};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use super::AdoptError;
use super::keysutil::NamePolicy;
use crate::logical::kv2::{ImportedKey, ImportedVersion};

/// A Vault KV v2 mount's contents.
#[derive(Debug, Default)]
pub(crate) struct VaultKv2 {
    pub(crate) max_versions: u64,
    pub(crate) cas_required: bool,
    pub(crate) keys: Vec<ImportedKey>,
}

fn corrupt(path: &str, reason: impl std::fmt::Display) -> AdoptError {
    AdoptError::Corrupt {
        path: path.to_owned(),
        reason: reason.to_string(),
    }
}

fn time_of(message: &[u8]) -> Result<OffsetDateTime, String> {
    let (secs, nanos) = timestamp(message).map_err(|e| e.to_string())?;
    let nanos = i128::from(secs) * 1_000_000_000 + i128::from(nanos);
    OffsetDateTime::from_unix_timestamp_nanos(nanos)
        .map_err(|_| "timestamp out of range".to_owned())
}

fn p(e: ProtoError) -> String {
    e.to_string()
}

/// Version bookkeeping from a `VersionMetadata` message.
fn version_meta(msg: &[u8]) -> Result<(OffsetDateTime, Option<OffsetDateTime>, bool), String> {
    let mut created = OffsetDateTime::UNIX_EPOCH;
    let mut deleted = None;
    let mut destroyed = false;
    for field in Fields::new(msg) {
        match field.map_err(p)? {
            (1, v) => created = time_of(v.bytes().map_err(p)?)?,
            (2, v) => deleted = Some(time_of(v.bytes().map_err(p)?)?),
            (3, v) => destroyed = v.varint().map_err(p)? != 0,
            _ => {}
        }
    }
    Ok((created, deleted, destroyed))
}

/// A key's metadata, without version data yet.
fn key_metadata(msg: &[u8]) -> Result<(String, ImportedKey), String> {
    let mut key = ImportedKey {
        key: String::new(),
        created_time: OffsetDateTime::UNIX_EPOCH,
        updated_time: OffsetDateTime::UNIX_EPOCH,
        current_version: 0,
        oldest_version: 0,
        max_versions: 0,
        cas_required: false,
        versions: BTreeMap::new(),
    };
    for field in Fields::new(msg) {
        match field.map_err(p)? {
            (1, v) => key.key = v.string().map_err(p)?.to_owned(),
            (2, v) => {
                let (mut n, mut meta) = (0u64, None);
                for entry in Fields::new(v.bytes().map_err(p)?) {
                    match entry.map_err(p)? {
                        (1, k) => n = k.varint().map_err(p)?,
                        (2, m) => meta = Some(version_meta(m.bytes().map_err(p)?)?),
                        _ => {}
                    }
                }
                let (created_time, deletion_time, destroyed) =
                    meta.unwrap_or((OffsetDateTime::UNIX_EPOCH, None, false));
                key.versions.insert(
                    n,
                    ImportedVersion {
                        created_time,
                        deletion_time,
                        destroyed,
                        data: None,
                    },
                );
            }
            (3, v) => key.current_version = v.varint().map_err(p)?,
            (4, v) => key.oldest_version = v.varint().map_err(p)?,
            (5, v) => key.created_time = time_of(v.bytes().map_err(p)?)?,
            (6, v) => key.updated_time = time_of(v.bytes().map_err(p)?)?,
            (7, v) => key.max_versions = v.varint().map_err(p)?,
            (8, v) => key.cas_required = v.varint().map_err(p)? != 0,
            _ => {}
        }
    }
    let name = key.key.clone();
    Ok((name, key))
}

/// A version's data (`Version.data`).
fn version_data(msg: &[u8]) -> Result<Option<Vec<u8>>, String> {
    for field in Fields::new(msg) {
        if let (1, v) = field.map_err(p)? {
            return Ok(Some(v.bytes().map_err(p)?.to_vec()));
        }
    }
    Ok(None)
}

/// Reads the whole Vault KV v2 mount stored below `base`
/// (`logical/<uuid>/`).
///
/// # Errors
/// [`AdoptError::Storage`]; [`AdoptError::Corrupt`] when an entry does not
/// decode (the path says which).
pub(crate) async fn read_mount(
    storage: &dyn Storage,
    mount_base: &str,
    backend_uuid: &str,
) -> Result<VaultKv2, AdoptError> {
    // The plugin keeps everything below its backend-aware uuid, and that
    // prefix is part of the name-encryption context too.
    let (base, context_root) = if backend_uuid.is_empty() {
        (mount_base.to_owned(), "metadata".to_owned())
    } else {
        (
            format!("{mount_base}{backend_uuid}/"),
            format!("{backend_uuid}/metadata"),
        )
    };
    let base = base.as_str();
    let mut out = VaultKv2::default();
    let config_path = format!("{base}config");
    if let Some(raw) = storage.get(&config_path).await? {
        for field in Fields::new(&raw) {
            match field.map_err(|e| corrupt(&config_path, e))? {
                (1, v) => out.max_versions = v.varint().map_err(|e| corrupt(&config_path, e))?,
                (2, v) => {
                    out.cas_required = v.varint().map_err(|e| corrupt(&config_path, e))? != 0;
                }
                _ => {}
            }
        }
    }
    let policy_path = format!("{base}policy/metadata");
    let Some(raw_policy) = storage.get(&policy_path).await? else {
        // No key was ever written.
        return Ok(out);
    };
    let policy = NamePolicy::parse(&raw_policy).map_err(|e| corrupt(&policy_path, e))?;
    let salt_path = format!("{base}salt");
    let salt = storage
        .get(&salt_path)
        .await?
        .ok_or_else(|| corrupt(&salt_path, "missing although keys exist"))?;

    // Depth-first over metadata/, decrypting each name with its context.
    let mut folders = vec![(format!("{base}metadata/"), context_root, String::new())];
    while let Some((stored_folder, context, plain_folder)) = folders.pop() {
        for child in storage.list(&stored_folder).await? {
            let (name, is_folder) = match child.strip_suffix('/') {
                Some(n) => (n, true),
                None => (child.as_str(), false),
            };
            let stored_path = format!("{stored_folder}{name}");
            let plain = policy
                .decrypt_name(&context, name)
                .map_err(|e| corrupt(&stored_path, format!("key name: {e}")))?;
            if is_folder {
                folders.push((
                    format!("{stored_path}/"),
                    format!("{context}/{plain}"),
                    format!("{plain_folder}{plain}/"),
                ));
                continue;
            }
            let Some(raw) = storage.get(&stored_path).await? else {
                continue;
            };
            let (_, mut key) = key_metadata(&raw).map_err(|e| corrupt(&stored_path, e))?;
            // The name in the message is authoritative; the path is its
            // encrypted form.
            if key.key.is_empty() {
                key.key = format!("{plain_folder}{plain}");
            }
            for (n, version) in &mut key.versions {
                if version.destroyed {
                    continue;
                }
                let path = version_path(base, &salt, &key.key, *n);
                if let Some(raw) = storage.get(&path).await? {
                    version.data = version_data(&raw).map_err(|e| corrupt(&path, e))?;
                }
            }
            out.keys.push(key);
        }
    }
    out.keys.sort_by(|a, b| a.key.cmp(&b.key));
    Ok(out)
}

/// Where Vault keeps version `n` of `key`.
fn version_path(base: &str, salt: &[u8], key: &str, n: u64) -> String {
    let mut hasher = Sha256::new();
    hasher.update(salt);
    hasher.update(format!("{key}|{n}").as_bytes());
    let h = hex::encode(hasher.finalize());
    format!("{base}versions/{}/{}", &h[..3], &h[3..])
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn version_paths_follow_the_salted_layout() {
        // sha256("salt" + "a|1")
        let p = version_path("logical/u/", b"salt", "a", 1);
        let h = hex::encode(Sha256::digest(b"salta|1"));
        assert_eq!(p, format!("logical/u/versions/{}/{}", &h[..3], &h[3..]));
    }

    #[test]
    fn key_metadata_decodes() {
        // key = "app", current_version = 2, versions {2: {destroyed: true}}
        let version_entry = [0x08, 0x02, 0x12, 0x02, 0x18, 0x01];
        let mut msg = vec![0x0a, 0x03, b'a', b'p', b'p', 0x18, 0x02, 0x12];
        msg.push(u8::try_from(version_entry.len()).unwrap());
        msg.extend_from_slice(&version_entry);
        let (name, key) = key_metadata(&msg).unwrap();
        assert_eq!(name, "app");
        assert_eq!(key.current_version, 2);
        assert!(key.versions[&2].destroyed);
    }

    proptest! {
        #[test]
        fn arbitrary_messages_never_panic(raw in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = key_metadata(&raw);
            let _ = version_data(&raw);
            let _ = version_meta(&raw);
        }
    }
}
