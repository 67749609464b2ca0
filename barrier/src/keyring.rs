//! The keyring: the root key, every term key, and the rotation config.
//!
//! It is stored at [`KEYRING_PATH`](crate::KEYRING_PATH) as a barrier entry
//! of term 1 encrypted with the **root** key, in Vault's JSON shape
//! (`MasterKey`, `Keys[{Term, Version, Value, InstallTime, encryptions}]`,
//! `RotationConfig{Disabled, MaxOperations, Interval}`; byte fields base64,
//! durations in nanoseconds), so a keyring moves between Vault and
//! Strongroom unchanged.

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use seal_core::RootKey;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use time::OffsetDateTime;
use zeroize::Zeroizing;

use crate::BarrierError;
use crate::cipher::{AeadBackend, KeyCipher};

/// Most encryptions one term key may do before automatic rotation:
/// 2^32 × 0.9, 10 % under the NIST SP 800-38D limit for random 96-bit GCM
/// nonces (Vault's `absoluteOperationMaximum`). Also the default.
pub const MAX_OPERATIONS_LIMIT: u64 = 3_865_470_566;
/// The smallest `max_operations` accepted; lower values are raised to it.
pub const MIN_OPERATIONS_LIMIT: u64 = 1_000_000;
/// The shortest automatic rotation interval; shorter ones are raised to it.
pub const MIN_ROTATION_INTERVAL: Duration = Duration::from_secs(24 * 60 * 60);

/// When the barrier rotates its key on its own
/// ([`Barrier::check_auto_rotate`](crate::Barrier::check_auto_rotate)).
///
/// Stored inside the keyring, so every node follows the same policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RotationConfig {
    /// Whether automatic rotation happens at all (Vault's `enabled`).
    pub enabled: bool,
    /// Rotate once the active key has done more encryptions than this.
    /// Kept within [`MIN_OPERATIONS_LIMIT`]..=[`MAX_OPERATIONS_LIMIT`];
    /// 0 means the maximum.
    pub max_operations: u64,
    /// Rotate once the active key is older than this; `None` disables
    /// time-based rotation. At least [`MIN_ROTATION_INTERVAL`].
    pub interval: Option<Duration>,
}

impl Default for RotationConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            max_operations: MAX_OPERATIONS_LIMIT,
            interval: None,
        }
    }
}

impl RotationConfig {
    /// The config with out-of-range values brought into range, as Vault's
    /// `KeyRotationConfig.Sanitize` does: `max_operations` of 0 or above the
    /// limit becomes [`MAX_OPERATIONS_LIMIT`], below [`MIN_OPERATIONS_LIMIT`]
    /// becomes the minimum; an interval shorter than
    /// [`MIN_ROTATION_INTERVAL`] becomes 24 h, and a zero interval means none.
    #[must_use]
    pub fn sanitized(self) -> Self {
        let max_operations = match self.max_operations {
            0 => MAX_OPERATIONS_LIMIT,
            n if n > MAX_OPERATIONS_LIMIT => MAX_OPERATIONS_LIMIT,
            n if n < MIN_OPERATIONS_LIMIT => MIN_OPERATIONS_LIMIT,
            n => n,
        };
        let interval = match self.interval {
            Some(d) if d.is_zero() => None,
            Some(d) if d < MIN_ROTATION_INTERVAL => Some(MIN_ROTATION_INTERVAL),
            other => other,
        };
        Self {
            enabled: self.enabled,
            max_operations,
            interval,
        }
    }
}

/// The active key's term, age and use, as `sys/key-status` reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyStatus {
    /// The active term: new entries are encrypted with this key.
    pub term: u32,
    /// When the active key was installed.
    pub install_time: OffsetDateTime,
    /// Encryptions done with the active key (estimated across restarts:
    /// counts are persisted by rotation, config changes and
    /// [`Barrier::check_auto_rotate`](crate::Barrier::check_auto_rotate)).
    pub encryptions: u64,
}

/// One term's data key, prepared for use.
pub(crate) struct TermKey {
    pub(crate) term: u32,
    value: Zeroizing<Vec<u8>>,
    pub(crate) install_time: OffsetDateTime,
    /// Encryptions with this key; bumped with a relaxed atomic add on the
    /// hot path, never under a lock.
    pub(crate) encryptions: AtomicU64,
    /// The count last written to storage, to skip needless persists.
    pub(crate) persisted: AtomicU64,
    pub(crate) cipher: KeyCipher,
}

impl fmt::Debug for TermKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TermKey")
            .field("term", &self.term)
            .field("install_time", &self.install_time)
            .field("encryptions", &self.encryptions.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl TermKey {
    pub(crate) fn new(
        backend: AeadBackend,
        term: u32,
        value: Zeroizing<Vec<u8>>,
        install_time: OffsetDateTime,
        encryptions: u64,
    ) -> Result<Self, BarrierError> {
        let cipher = KeyCipher::new(backend, &value, "a term key")?;
        Ok(Self {
            term,
            value,
            install_time,
            encryptions: AtomicU64::new(encryptions),
            persisted: AtomicU64::new(encryptions),
            cipher,
        })
    }

    pub(crate) fn value(&self) -> &[u8] {
        &self.value
    }
}

/// The unsealed state: the root key, every term key, the rotation config.
/// Immutable once built except for the counters; changes build a new one
/// that shares the unchanged term keys.
pub(crate) struct Keyring {
    pub(crate) root: Arc<RootKey>,
    pub(crate) root_cipher: Arc<KeyCipher>,
    pub(crate) terms: BTreeMap<u32, Arc<TermKey>>,
    pub(crate) active: Arc<TermKey>,
    pub(crate) rotation: RotationConfig,
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keyring")
            .field("active_term", &self.active.term)
            .field("terms", &self.terms.len())
            .field("rotation", &self.rotation)
            .finish_non_exhaustive()
    }
}

impl Keyring {
    /// Builds a keyring from its parts; the active term is the highest.
    pub(crate) fn new(
        root: Arc<RootKey>,
        root_cipher: Arc<KeyCipher>,
        terms: BTreeMap<u32, Arc<TermKey>>,
        rotation: RotationConfig,
    ) -> Result<Self, BarrierError> {
        let active =
            terms
                .values()
                .next_back()
                .cloned()
                .ok_or_else(|| BarrierError::CorruptKeyring {
                    reason: "it holds no term keys".to_owned(),
                })?;
        Ok(Self {
            root,
            root_cipher,
            terms,
            active,
            rotation: rotation.sanitized(),
        })
    }

    /// Serializes to Vault's JSON into a buffer that is zeroized on drop and
    /// allocated once at its final size.
    pub(crate) fn to_json(&self) -> Result<Zeroizing<Vec<u8>>, BarrierError> {
        let encoded = EncodedKeyringRef {
            root_key: SecretRef(self.root.expose_secret()),
            keys: self
                .terms
                .values()
                .map(|k| EncodedKeyRef {
                    term: k.term,
                    version: 1,
                    value: SecretRef(k.value()),
                    install_time: k.install_time,
                    encryptions: if k.term == self.active.term {
                        k.encryptions.load(Ordering::Relaxed)
                    } else {
                        0
                    },
                })
                .collect(),
            rotation_config: EncodedRotation::from(self.rotation),
        };
        to_zeroizing_json(&encoded)
    }
}

/// Serializes `value` to JSON in a `Zeroizing` buffer sized exactly: one
/// pass counts the bytes, the second writes them, so no growing `Vec`
/// leaves copies of key material behind.
pub(crate) fn to_zeroizing_json<T: Serialize>(
    value: &T,
) -> Result<Zeroizing<Vec<u8>>, BarrierError> {
    let mut counter = CountingWriter(0);
    serde_json::to_writer(&mut counter, value)
        .map_err(|e| BarrierError::Serialize(e.to_string()))?;
    let mut buf = Zeroizing::new(Vec::with_capacity(counter.0));
    serde_json::to_writer(&mut *buf, value).map_err(|e| BarrierError::Serialize(e.to_string()))?;
    Ok(buf)
}

struct CountingWriter(usize);

impl io::Write for CountingWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0 += buf.len();
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A key borrowed for serialization as standard base64 (Go's `[]byte`).
struct SecretRef<'a>(&'a [u8]);

impl Serialize for SecretRef<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let len = base64::encoded_len(self.0.len(), true)
            .ok_or_else(|| serde::ser::Error::custom("key too long to encode"))?;
        let mut buf = Zeroizing::new(vec![0u8; len]);
        let written = B64
            .encode_slice(self.0, &mut buf[..])
            .map_err(serde::ser::Error::custom)?;
        let text = std::str::from_utf8(&buf[..written]).map_err(serde::ser::Error::custom)?;
        serializer.serialize_str(text)
    }
}

/// A key read from base64 straight into a zeroizing buffer of its final size.
pub(crate) struct SecretBytes(pub(crate) Zeroizing<Vec<u8>>);

impl fmt::Debug for SecretBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretBytes").finish_non_exhaustive()
    }
}

impl<'de> Deserialize<'de> for SecretBytes {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = SecretBytes;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a base64 string")
            }

            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<SecretBytes, E> {
                let mut buf = Zeroizing::new(vec![0u8; base64::decoded_len_estimate(text.len())]);
                let len = B64
                    .decode_slice(text.as_bytes(), &mut buf[..])
                    .map_err(|_| E::custom("a key is not valid base64"))?;
                buf.truncate(len);
                Ok(SecretBytes(buf))
            }

            fn visit_string<E: serde::de::Error>(self, text: String) -> Result<SecretBytes, E> {
                let text = Zeroizing::new(text);
                self.visit_str(&text)
            }
        }
        deserializer.deserialize_str(Visitor)
    }
}

#[derive(Serialize)]
struct EncodedKeyringRef<'a> {
    #[serde(rename = "MasterKey")]
    root_key: SecretRef<'a>,
    #[serde(rename = "Keys")]
    keys: Vec<EncodedKeyRef<'a>>,
    #[serde(rename = "RotationConfig")]
    rotation_config: EncodedRotation,
}

#[derive(Serialize)]
struct EncodedKeyRef<'a> {
    #[serde(rename = "Term")]
    term: u32,
    #[serde(rename = "Version")]
    version: i64,
    #[serde(rename = "Value")]
    value: SecretRef<'a>,
    #[serde(rename = "InstallTime", with = "time::serde::rfc3339")]
    install_time: OffsetDateTime,
    #[serde(rename = "encryptions", skip_serializing_if = "is_zero")]
    encryptions: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// The keyring as read from storage.
#[derive(Debug, Deserialize)]
pub(crate) struct EncodedKeyring {
    #[serde(rename = "MasterKey", alias = "RootKey")]
    pub(crate) root_key: SecretBytes,
    #[serde(rename = "Keys", default)]
    pub(crate) keys: Vec<EncodedKey>,
    #[serde(rename = "RotationConfig", default)]
    pub(crate) rotation_config: EncodedRotation,
}

#[derive(Debug, Deserialize)]
pub(crate) struct EncodedKey {
    #[serde(rename = "Term")]
    pub(crate) term: u32,
    #[serde(rename = "Value")]
    pub(crate) value: SecretBytes,
    #[serde(
        rename = "InstallTime",
        default = "unix_epoch",
        with = "time::serde::rfc3339"
    )]
    pub(crate) install_time: OffsetDateTime,
    #[serde(rename = "encryptions", alias = "Encryptions", default)]
    pub(crate) encryptions: u64,
}

fn unix_epoch() -> OffsetDateTime {
    OffsetDateTime::UNIX_EPOCH
}

/// Vault's `KeyRotationConfig`: `Interval` is a Go duration (nanoseconds).
#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct EncodedRotation {
    #[serde(rename = "Disabled", default)]
    disabled: bool,
    #[serde(rename = "MaxOperations", default)]
    max_operations: i64,
    #[serde(rename = "Interval", default)]
    interval: i64,
}

impl From<RotationConfig> for EncodedRotation {
    fn from(cfg: RotationConfig) -> Self {
        Self {
            disabled: !cfg.enabled,
            max_operations: i64::try_from(cfg.max_operations).unwrap_or(i64::MAX),
            interval: cfg
                .interval
                .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)),
        }
    }
}

impl From<&EncodedRotation> for RotationConfig {
    fn from(enc: &EncodedRotation) -> Self {
        Self {
            enabled: !enc.disabled,
            max_operations: u64::try_from(enc.max_operations).unwrap_or(0),
            interval: u64::try_from(enc.interval)
                .ok()
                .filter(|n| *n > 0)
                .map(Duration::from_nanos),
        }
        .sanitized()
    }
}

/// Vault's `Key` for `core/master`: the root key, readable by anyone holding
/// the active term key, so a standby learns a new root key after a rekey.
#[derive(Serialize)]
pub(crate) struct RootKeyEntryRef<'a> {
    #[serde(rename = "Term")]
    pub(crate) term: u32,
    #[serde(rename = "Version")]
    pub(crate) version: i64,
    #[serde(rename = "Value")]
    value: SecretRef<'a>,
    #[serde(rename = "InstallTime", with = "time::serde::rfc3339")]
    pub(crate) install_time: OffsetDateTime,
}

impl<'a> RootKeyEntryRef<'a> {
    pub(crate) fn new(root: &'a RootKey, install_time: OffsetDateTime) -> Self {
        Self {
            term: 1,
            version: 1,
            value: SecretRef(root.expose_secret()),
            install_time,
        }
    }
}

/// `core/master` as read back.
#[derive(Debug, Deserialize)]
pub(crate) struct RootKeyEntry {
    #[serde(rename = "Value")]
    pub(crate) value: SecretBytes,
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: Duration = MIN_ROTATION_INTERVAL;

    fn cfg(max_operations: u64, interval: Option<Duration>) -> RotationConfig {
        RotationConfig {
            enabled: true,
            max_operations,
            interval,
        }
    }

    /// Vault's `KeyRotationConfig.Sanitize`, case by case.
    #[test]
    fn sanitize_matches_vault() {
        let cases = [
            (0, None, MAX_OPERATIONS_LIMIT, None),
            (1, None, MIN_OPERATIONS_LIMIT, None),
            (999_999, None, MIN_OPERATIONS_LIMIT, None),
            (1_000_000, None, 1_000_000, None),
            (2_000_000_000, None, 2_000_000_000, None),
            (MAX_OPERATIONS_LIMIT, None, MAX_OPERATIONS_LIMIT, None),
            (MAX_OPERATIONS_LIMIT + 1, None, MAX_OPERATIONS_LIMIT, None),
            (u64::MAX, None, MAX_OPERATIONS_LIMIT, None),
            (0, Some(Duration::ZERO), MAX_OPERATIONS_LIMIT, None),
            (
                0,
                Some(Duration::from_secs(1)),
                MAX_OPERATIONS_LIMIT,
                Some(DAY),
            ),
            (
                0,
                Some(DAY - Duration::from_nanos(1)),
                MAX_OPERATIONS_LIMIT,
                Some(DAY),
            ),
            (0, Some(DAY), MAX_OPERATIONS_LIMIT, Some(DAY)),
            (0, Some(DAY * 30), MAX_OPERATIONS_LIMIT, Some(DAY * 30)),
        ];
        for (ops, interval, want_ops, want_interval) in cases {
            let got = cfg(ops, interval).sanitized();
            assert_eq!(
                (got.max_operations, got.interval),
                (want_ops, want_interval),
                "{ops} {interval:?}"
            );
            assert!(got.enabled);
        }
        let disabled = RotationConfig {
            enabled: false,
            ..RotationConfig::default()
        };
        assert!(!disabled.sanitized().enabled, "sanitize keeps `enabled`");
        assert_eq!(
            RotationConfig::default(),
            RotationConfig::default().sanitized()
        );
    }

    #[test]
    fn rotation_config_round_trips_through_vaults_encoding() {
        let original = cfg(5_000_000, Some(DAY * 7));
        let json = serde_json::to_string(&EncodedRotation::from(original)).unwrap();
        assert_eq!(
            json,
            r#"{"Disabled":false,"MaxOperations":5000000,"Interval":604800000000000}"#
        );
        let back: EncodedRotation = serde_json::from_str(&json).unwrap();
        assert_eq!(RotationConfig::from(&back), original);
        // Negative values from a foreign writer sanitize instead of failing.
        let odd: EncodedRotation =
            serde_json::from_str(r#"{"MaxOperations":-5,"Interval":-1}"#).unwrap();
        assert_eq!(RotationConfig::from(&odd), RotationConfig::default());
    }

    #[test]
    fn secret_bytes_decode_base64_and_refuse_garbage() {
        let ok: SecretBytes = serde_json::from_str(r#""AAECAw==""#).unwrap();
        assert_eq!(&*ok.0, &[0, 1, 2, 3]);
        // An escaped string takes serde_json's owned path.
        let escaped: SecretBytes = serde_json::from_str(r#""AAEC\u0041w==""#).unwrap();
        assert_eq!(&*escaped.0, &[0, 1, 2, 3]);
        assert!(serde_json::from_str::<SecretBytes>(r#""not base64!""#).is_err());
        assert!(serde_json::from_str::<SecretBytes>("12").is_err());
        assert_eq!(format!("{ok:?}"), "SecretBytes { .. }");
    }

    #[test]
    fn zeroizing_json_is_allocated_at_final_size() {
        let value = serde_json::json!({"a": [1, 2, 3], "b": "text"});
        let buf = to_zeroizing_json(&value).unwrap();
        assert_eq!(buf.len(), buf.capacity());
        assert_eq!(&buf[..], serde_json::to_vec(&value).unwrap().as_slice());
    }
}
