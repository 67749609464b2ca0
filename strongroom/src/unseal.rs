//! Unsealing (by key shares and by the auto seal), sealing, and the
//! background tasks that run around them.

use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError, Weak};
use std::time::{Duration, SystemTime};

use barrier::BarrierError;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use seal_core::{Kek, RecoveryKey, RootKey, Seal, SealError, TxnOp};
use seal_shamir::{ShamirError, ShamirSeal, Submit};
use subtle::ConstantTimeEq;
use tokio_util::sync::CancellationToken;
use zeroize::Zeroizing;

use crate::CoreError;
use crate::config::{
    CLUSTER_INFO_PATH, ClusterInfo, RECOVERY_KEY_PATH, REKEY_PENDING_PATH, SEAL_CONFIG_PATH,
    STORED_KEYS_PATH, SealConfig,
};
use crate::core::{Active, Core, Inner, SealKind, Unsealed};
use crate::error::corrupt;
use crate::logical::Operation;
use crate::types::SealStatus;

/// Why an auto-unseal attempt failed, classified for operators and metrics.
#[derive(Debug)]
pub(crate) enum AutoUnsealFailure {
    /// `core/seal-config` does not exist: nothing to unseal yet.
    NotInitialized,
    /// The seal backend could not be reached (network, timeout, throttling).
    Unreachable(SealError),
    /// The seal backend refused: credentials, key policy, disabled or
    /// missing key.
    AccessDenied(SealError),
    /// The seal answered but could not open the stored root key: it is not
    /// the key this storage was initialized with.
    WrongKey(SealError),
    /// The stored root key blob is missing, malformed, or decrypts to
    /// something that is not a root key for this keyring.
    Corrupt(String),
    /// A seal migration is pending: the operator enters the keys.
    Migration,
    /// Storage or another internal failure.
    Other(CoreError),
}

impl AutoUnsealFailure {
    /// A short machine label for metrics and structured logs.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Self::NotInitialized => "not_initialized",
            Self::Unreachable(_) => "seal_unreachable",
            Self::AccessDenied(_) => "seal_access_denied",
            Self::WrongKey(_) => "wrong_key",
            Self::Corrupt(_) => "corrupt_stored_keys",
            Self::Migration => "seal_migration_pending",
            Self::Other(_) => "internal",
        }
    }

    /// The error an API caller gets for this failure.
    fn into_core_error(self) -> CoreError {
        match self {
            Self::NotInitialized => CoreError::NotInitialized,
            Self::Unreachable(e) | Self::AccessDenied(e) | Self::WrongKey(e) => {
                CoreError::seal("fetching stored unseal keys failed", e)
            }
            Self::Corrupt(reason) => CoreError::Corrupt {
                path: STORED_KEYS_PATH,
                reason,
            },
            Self::Migration => CoreError::InvalidRequest(Self::Migration.to_string()),
            Self::Other(e) => e,
        }
    }

    fn from_seal(err: SealError) -> Self {
        match err {
            SealError::Unreachable(_) | SealError::Throttled(_) => Self::Unreachable(err),
            SealError::AccessDenied(_) | SealError::KeyDisabled(_) | SealError::KeyNotFound(_) => {
                Self::AccessDenied(err)
            }
            SealError::Decrypt => Self::WrongKey(err),
            SealError::Malformed(_) | SealError::WrongSealType { .. } => {
                Self::Corrupt(format!("the seal refused {STORED_KEYS_PATH}: {err}"))
            }
            other => Self::Unreachable(other),
        }
    }
}

impl std::fmt::Display for AutoUnsealFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NotInitialized => f.write_str(
                "stored unseal keys are supported, but none were found: the storage holds no \
                 core/seal-config; run `operator init`, or check that this node points at the \
                 right storage (path, Consul prefix)",
            ),
            Self::Unreachable(e) => write!(
                f,
                "fetching stored unseal keys failed: the seal backend is unreachable ({e}); \
                 check network access to the KMS endpoint; the node stays sealed and retries"
            ),
            Self::AccessDenied(e) => write!(
                f,
                "fetching stored unseal keys failed: the seal backend refused ({e}); check the \
                 node's credentials and the key policy (kms:Decrypt, kms:Encrypt, \
                 kms:DescribeKey) and that the key is enabled"
            ),
            Self::WrongKey(e) => write!(
                f,
                "fetching stored unseal keys failed: failed to decrypt keys from storage ({e}); \
                 the configured seal key is not the one this storage was initialized with, or \
                 core/hsm/barrier-unseal-keys was altered"
            ),
            Self::Corrupt(reason) => write!(
                f,
                "fetching stored unseal keys failed: {reason}; restore \
                 core/hsm/barrier-unseal-keys from a backup of the storage"
            ),
            Self::Migration => f.write_str(
                "cannot auto-unseal during seal migration: enter the keys with `operator unseal \
                 -migrate`",
            ),
            Self::Other(e) => write!(f, "auto-unseal failed: {e}"),
        }
    }
}

/// Decodes the stored-keys payload: JSON `["<base64 root key>"]`, as Vault
/// writes it.
pub(crate) fn decode_stored_keys(plain: &[u8]) -> Result<RootKey, String> {
    let keys: Vec<Zeroizing<String>> = serde_json::from_slice::<Vec<String>>(plain)
        .map_err(|_| "the decrypted stored keys are not a JSON list of keys".to_owned())?
        .into_iter()
        .map(Zeroizing::new)
        .collect();
    let [only] = keys.as_slice() else {
        return Err(format!(
            "expected exactly one stored key, found {}",
            keys.len()
        ));
    };
    let bytes = Zeroizing::new(
        B64.decode(only.as_bytes())
            .map_err(|_| "the stored key is not base64".to_owned())?,
    );
    RootKey::from_bytes(&bytes).map_err(|e| format!("the stored key is not a root key: {e}"))
}

/// Encodes the stored-keys payload (see [`decode_stored_keys`]).
pub(crate) fn encode_stored_keys(root: &RootKey) -> Zeroizing<Vec<u8>> {
    let b64 = Zeroizing::new(B64.encode(root.expose_secret()));
    // `["` + b64 + `"]`, allocated at final size.
    let mut out = Zeroizing::new(Vec::with_capacity(b64.len() + 4));
    out.extend_from_slice(b"[\"");
    out.extend_from_slice(b64.as_bytes());
    out.extend_from_slice(b"\"]");
    out
}

fn invalid_unseal_key(detail: &str) -> CoreError {
    CoreError::InvalidKey(format!(
        "unable to retrieve stored keys: invalid key: {detail}; unseal progress was reset: enter \
         the threshold number of keys of the current key set again"
    ))
}

impl Core {
    /// Enters one unseal key share (hex or base64 text), as `sys/unseal`.
    ///
    /// Shares accumulate (a duplicate is ignored) until the threshold; the
    /// share that reaches it combines them and unseals. On an auto-seal node
    /// sealed by hand, recovery key shares are entered instead, and the root
    /// key is then fetched through the seal. Already unsealed: nothing
    /// happens and the status is returned.
    ///
    /// # Errors
    /// [`CoreError::InvalidKey`] (400) for a malformed share or a set of
    /// shares that does not open the stored keys (progress is then reset);
    /// [`CoreError::NotInitialized`]; [`CoreError::Seal`] when the auto seal
    /// fails to fetch the root key; storage errors.
    pub async fn unseal(&self, key: &str) -> Result<SealStatus, CoreError> {
        self.unseal_with(key, false).await
    }

    /// Enters one key of a seal migration (`sys/unseal` with `migrate:
    /// true`, `operator unseal -migrate`): unseal keys when migrating from
    /// Shamir, recovery keys when migrating from an auto seal. At the
    /// threshold the migration runs (see the crate's seal migration docs)
    /// and the node unseals under its new seal.
    ///
    /// # Errors
    /// As [`unseal`](Self::unseal); [`CoreError::InvalidRequest`] when no
    /// migration is pending; seal and storage errors of the migration
    /// steps (what was committed stays; run it again to finish).
    pub async fn unseal_migrate(&self, key: &str) -> Result<SealStatus, CoreError> {
        self.unseal_with(key, true).await
    }

    async fn unseal_with(&self, key: &str, migrate: bool) -> Result<SealStatus, CoreError> {
        let share = seal_shamir::parse_share(key)?;
        if !self.is_sealed() {
            return self.seal_status().await;
        }
        if !self.is_initialized().await? {
            return Err(CoreError::NotInitialized);
        }
        match (self.pending_migration(), migrate) {
            (Some(m), false) => {
                return Err(CoreError::InvalidRequest(format!(
                    "migrate option not provided and seal migration is pending: this node's \
                     configuration changes the seal; enter the {} keys with `operator unseal \
                     -migrate` (sys/unseal with \"migrate\": true) to migrate, or restore the \
                     previous seal configuration",
                    if m.takes_recovery_keys() {
                        "recovery"
                    } else {
                        "unseal"
                    }
                )));
            }
            (None, true) => {
                return Err(CoreError::InvalidRequest(
                    "can't perform a seal migration, no migration seal found: the configured \
                     seal is the one the storage uses; unseal without -migrate, or change the \
                     seal configuration first (see the README's seal migration section)"
                        .into(),
                ));
            }
            _ => {}
        }
        let config = self.unseal_config().await?.ok_or(CoreError::Corrupt {
            path: if self.inner.seal.is_auto() {
                crate::config::RECOVERY_CONFIG_PATH
            } else {
                crate::config::SEAL_CONFIG_PATH
            },
            reason: "missing although the storage is initialized".into(),
        })?;
        let secret = match self.inner.progress.submit(share, config.secret_threshold) {
            Ok(Submit::Pending(_)) => return self.seal_status().await,
            Ok(Submit::Complete(secret)) => secret,
            Err(err @ ShamirError::Random(_)) => return Err(err.into()),
            Err(err) => {
                self.inner
                    .counters
                    .unseal_failures
                    .fetch_add(1, Ordering::Relaxed);
                return Err(invalid_unseal_key(&format!(
                    "failed to compute combined key: {err}"
                )));
            }
        };
        let result = self.unseal_with_secret(&secret).await;
        if result.is_err() {
            self.inner
                .counters
                .unseal_failures
                .fetch_add(1, Ordering::Relaxed);
        }
        result?;
        self.contend();
        self.seal_status().await
    }

    /// Finishes an unseal once the threshold of shares combined to `secret`.
    async fn unseal_with_secret(&self, secret: &[u8]) -> Result<(), CoreError> {
        let _op = self.inner.op_lock.lock().await;
        if !self.is_sealed() {
            return Ok(());
        }
        let outcome = match self.pending_migration() {
            Some(migration) => {
                let outcome = self.run_migration(migration, secret).await;
                if outcome.is_err() {
                    self.inner.barrier.seal();
                }
                outcome
            }
            None => self.unseal_with_secret_locked(secret).await,
        };
        if outcome.is_err() {
            // Never keep a KEK that did not lead to an unsealed barrier.
            if let SealKind::Shamir(shamir) = &self.inner.seal {
                shamir.clear_kek();
            }
        }
        outcome
    }

    async fn unseal_with_secret_locked(&self, secret: &[u8]) -> Result<(), CoreError> {
        let root = match &self.inner.seal {
            SealKind::Shamir(_) if self.is_legacy_shamir().await? => {
                // Vault ≤ 1.2: the combined shares are the root key itself.
                RootKey::from_bytes(secret).map_err(|_| {
                    invalid_unseal_key(&format!(
                        "the combined key is {} bytes, but a root key is 16 or 32 bytes",
                        secret.len()
                    ))
                })?
            }
            SealKind::Shamir(shamir) => {
                let kek = Kek::from_bytes(secret).map_err(|_| {
                    invalid_unseal_key(&format!(
                        "the combined key is {} bytes, but the key-encryption key is 32 bytes",
                        secret.len()
                    ))
                })?;
                shamir.set_kek(kek);
                let root = self
                    .fetch_stored_root_key()
                    .await
                    .map_err(|failure| match failure {
                        AutoUnsealFailure::WrongKey(_) => invalid_unseal_key(
                            "failed to decrypt keys from storage: the keys entered do not belong \
                             to this storage's current key set",
                        ),
                        other => other.into_core_error(),
                    })?;
                let root = self.recover_interrupted_rekey(shamir, root).await?;
                self.recover_interrupted_migration(shamir, root).await?
            }
            SealKind::Auto(_) => self.root_key_for_recovery_unseal(secret).await?,
        };
        self.unseal_barrier(&root, true, None).await
    }

    /// Finishes what a Shamir rekey interrupted by a crash left behind (see
    /// `commit_rekey`): when a pending root key exists, whichever of the two
    /// root keys opens the keyring is the real one. If it is the pending
    /// one, it is stored wrapped under the current KEK (the keys operators
    /// still hold); the pending entry is removed either way. Returns the
    /// root key to unseal with.
    async fn recover_interrupted_rekey(
        &self,
        shamir: &ShamirSeal,
        stored: RootKey,
    ) -> Result<RootKey, CoreError> {
        let Some(blob) = self.inner.physical.get(REKEY_PENDING_PATH).await? else {
            return Ok(stored);
        };
        let pending = match shamir.decrypt(&blob, REKEY_PENDING_PATH.as_bytes()).await {
            Ok(plain) => decode_stored_keys(&plain).ok(),
            Err(_) => None,
        };
        let Some(pending) = pending else {
            tracing::warn!(
                path = REKEY_PENDING_PATH,
                "ignoring an unreadable leftover of an interrupted rekey"
            );
            return Ok(stored);
        };
        match self.inner.barrier.unseal(&stored).await {
            Ok(()) => {
                // The crash came before the keyring changed: the stored
                // root key is current and the pending one is stale.
                self.inner.barrier.seal();
                self.inner.physical.delete(REKEY_PENDING_PATH).await?;
                tracing::warn!(
                    "an interrupted rekey was found and discarded: the unseal keys did not \
                     change; run the rekey again"
                );
                Ok(stored)
            }
            Err(BarrierError::InvalidRootKey) => {
                self.inner.barrier.unseal(&pending).await?;
                self.inner.barrier.seal();
                let wrapped = shamir
                    .encrypt(&encode_stored_keys(&pending), STORED_KEYS_PATH.as_bytes())
                    .await
                    .map_err(|e| CoreError::seal("re-wrapping the recovered root key failed", e))?;
                self.inner
                    .physical
                    .transaction(vec![
                        TxnOp::put(STORED_KEYS_PATH, wrapped),
                        TxnOp::delete(REKEY_PENDING_PATH),
                    ])
                    .await?;
                tracing::warn!(
                    "an interrupted rekey was found after the keyring had been re-encrypted: the \
                     new root key was recovered and is now wrapped under the current unseal \
                     keys; the new unseal keys were never committed, run the rekey again"
                );
                Ok(pending)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// The root key for an unseal with recovery keys on an auto seal: the
    /// recovery key is checked through the seals and the root key fetched
    /// through them; when every seal fails and break-glass wrapped the root
    /// key under the recovery key, that copy opens instead.
    async fn root_key_for_recovery_unseal(&self, secret: &[u8]) -> Result<RootKey, CoreError> {
        let seal_failure = match self.verify_recovery_key(secret).await {
            Ok(()) => match self.fetch_stored_root_key().await {
                Ok(root) => return Ok(root),
                Err(
                    failure @ (AutoUnsealFailure::Unreachable(_)
                    | AutoUnsealFailure::AccessDenied(_)),
                ) => failure.to_string(),
                Err(other) => return Err(other.into_core_error()),
            },
            Err(e @ CoreError::Seal { .. }) => e.to_string(),
            Err(other) => return Err(other),
        };
        let stored = self
            .inner
            .physical
            .get(STORED_KEYS_PATH)
            .await?
            .unwrap_or_default();
        match crate::break_glass::open_recovery_slot(&stored, secret).await? {
            Some(root) => {
                tracing::warn!(
                    "unsealed with the recovery keys through the break-glass copy of the root \
                     key: no auto seal could be used ({seal_failure})"
                );
                Ok(root)
            }
            None => Err(CoreError::InvalidRequest(format!(
                "recovery keys cannot unseal this node: every auto seal failed ({seal_failure}), \
                 and recovery keys only authorize operations unless break-glass \
                 (recovery_unseal = true) wrapped the root key under them before the outage; \
                 restore access to a seal key"
            ))),
        }
    }

    /// Checks recovery key shares combined to `secret` against the stored
    /// recovery key (decrypted through the seal), in constant time.
    pub(crate) async fn verify_recovery_key(&self, secret: &[u8]) -> Result<(), CoreError> {
        let stored = self.load_recovery_key().await?;
        let candidate = RecoveryKey::from_bytes(secret).map_err(|_| {
            CoreError::InvalidKey(
                "invalid recovery key: the combined recovery key has the wrong length; progress \
                 was reset, enter the recovery keys again"
                    .into(),
            )
        })?;
        if bool::from(candidate.ct_eq(&stored)) {
            Ok(())
        } else {
            Err(CoreError::InvalidKey(
                "invalid recovery key: the recovery keys entered do not belong to this storage's \
                 current recovery key set; progress was reset, enter them again"
                    .into(),
            ))
        }
    }

    /// Reads a plain core entry that exists in every initialized store
    /// (stored keys, recovery key): absent, the store is damaged.
    pub(crate) async fn required_entry(&self, path: &'static str) -> Result<Vec<u8>, CoreError> {
        self.inner
            .physical
            .get(path)
            .await?
            .ok_or(CoreError::Corrupt {
                path,
                reason: "missing although the storage is initialized".into(),
            })
    }

    /// Whether `secret`, combined from key shares, is this store's current
    /// authorizing secret: the KEK that opens the stored root key (Shamir)
    /// or the stored recovery key (auto seal), compared in constant time.
    /// What generate-root and rekey check before acting.
    pub(crate) async fn secret_opens_current_keys(&self, secret: &[u8]) -> Result<bool, CoreError> {
        if self.inner.seal.is_auto() {
            return match self.verify_recovery_key(secret).await {
                Ok(()) => Ok(true),
                Err(CoreError::InvalidKey(_)) => Ok(false),
                Err(e) => Err(e),
            };
        }
        let Ok(kek) = Kek::from_bytes(secret) else {
            return Ok(false);
        };
        let probe = ShamirSeal::new();
        probe.set_kek(kek);
        let blob = self.required_entry(STORED_KEYS_PATH).await?;
        match probe.decrypt(&blob, STORED_KEYS_PATH.as_bytes()).await {
            Ok(plain) => {
                decode_stored_keys(&plain).map_err(corrupt(STORED_KEYS_PATH))?;
                Ok(true)
            }
            Err(_) => Ok(false),
        }
    }

    /// Decrypts `core/recovery-key` through the seal.
    pub(crate) async fn load_recovery_key(&self) -> Result<RecoveryKey, CoreError> {
        let blob = self.required_entry(RECOVERY_KEY_PATH).await?;
        let plain = self
            .inner
            .seal
            .seal()
            .decrypt(&blob, RECOVERY_KEY_PATH.as_bytes())
            .await
            .map_err(|e| CoreError::seal("decrypting the stored recovery key failed", e))?;
        RecoveryKey::from_bytes(&plain).map_err(|e| CoreError::Corrupt {
            path: RECOVERY_KEY_PATH,
            reason: e.to_string(),
        })
    }

    /// Whether the storage holds Vault's legacy Shamir layout (Vault ≤ 1.2):
    /// the seal configuration says no key is stored (`stored_shares` 0) and
    /// `core/hsm/barrier-unseal-keys` does not exist, so the combined unseal
    /// shares are the root key and open `core/keyring` directly. Detected
    /// from storage on every unseal, never assumed; Strongroom's own init
    /// and rekey always store the root key.
    pub(crate) async fn is_legacy_shamir(&self) -> Result<bool, CoreError> {
        let Some(config) = SealConfig::load(&*self.inner.physical, SEAL_CONFIG_PATH).await? else {
            return Ok(false);
        };
        if config.seal_type != "shamir" || config.stored_shares != 0 {
            return Ok(false);
        }
        Ok(self.inner.physical.get(STORED_KEYS_PATH).await?.is_none())
    }

    /// Reads `core/hsm/barrier-unseal-keys` and opens it with the seal.
    async fn fetch_stored_root_key(&self) -> Result<RootKey, AutoUnsealFailure> {
        let blob = match self.inner.physical.get(STORED_KEYS_PATH).await {
            Ok(Some(blob)) => blob,
            Ok(None) => {
                return Err(AutoUnsealFailure::Corrupt(format!(
                    "{STORED_KEYS_PATH} is missing although core/seal-config exists"
                )));
            }
            Err(e) => return Err(AutoUnsealFailure::Other(e.into())),
        };
        let plain = self
            .inner
            .seal
            .seal()
            .decrypt(&blob, STORED_KEYS_PATH.as_bytes())
            .await
            .map_err(AutoUnsealFailure::from_seal)?;
        decode_stored_keys(&plain).map_err(AutoUnsealFailure::Corrupt)
    }

    /// Opens the barrier with `root` and brings up what lives behind it.
    /// Called with `op_lock` held.
    /// `announce` is false for the temporary unseal inside a Shamir init;
    /// `new_cluster` is the identity init is about to store (it writes it in
    /// its final transaction).
    pub(crate) async fn unseal_barrier(
        &self,
        root: &RootKey,
        announce: bool,
        new_cluster: Option<ClusterInfo>,
    ) -> Result<(), CoreError> {
        match self.inner.barrier.unseal(root).await {
            Ok(()) => {}
            Err(BarrierError::InvalidRootKey) => {
                if let SealKind::Shamir(shamir) = &self.inner.seal {
                    shamir.clear_kek();
                }
                return Err(CoreError::InvalidKey(
                    "unable to retrieve stored keys: invalid key: the stored root key does not \
                     open core/keyring; the stored keys and the keyring do not belong together \
                     (restored from different backups?)"
                        .into(),
                ));
            }
            Err(e) => return Err(e.into()),
        }
        match self.post_unseal(new_cluster).await {
            Ok(()) => {
                self.inner.manually_sealed.store(false, Ordering::SeqCst);
                if announce {
                    self.inner.counters.unseals.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(seal_type = %self.inner.seal.seal_type(), "vault is unsealed");
                }
                Ok(())
            }
            Err(e) => {
                // Do not stay half-unsealed: no logical layer, no service.
                self.seal_barrier_locked();
                Err(e)
            }
        }
    }

    /// Loads what lives behind the barrier: the cluster identity and,
    /// without HA, the logical layer and the background tasks of serving.
    /// With HA those wait until this node takes the lock (see `ha`): a
    /// standby neither writes nor serves.
    async fn post_unseal(&self, new_cluster: Option<ClusterInfo>) -> Result<(), CoreError> {
        let generation = self.stored_seal_generation().await?;
        self.inner
            .seal_generation
            .store(generation, Ordering::SeqCst);
        let background = CancellationToken::new();
        let (cluster, active) = if self.inner.ha.is_some() {
            let cluster = match new_cluster {
                Some(info) => Some(info),
                None => self.read_cluster_info().await?,
            };
            (cluster, None)
        } else {
            // This node alone writes the storage from now on.
            self.inner.cache.activate();
            let storage: Arc<dyn seal_core::Storage> = self.inner.barrier.clone();
            let ended = background.child_token();
            let (logical, cluster, read_only) =
                self.start_serving(storage, new_cluster, &ended).await?;
            let active = Active {
                logical,
                period: 0,
                ended,
                read_only,
            };
            (Some(cluster), Some(active))
        };
        *self
            .inner
            .unsealed
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Some(Unsealed {
            cluster,
            background,
            active,
        });
        self.inner.serving.send_modify(|g| *g += 1);
        Ok(())
    }

    async fn read_cluster_info(&self) -> Result<Option<ClusterInfo>, CoreError> {
        match self.inner.barrier.get(CLUSTER_INFO_PATH).await? {
            Some(raw) => serde_json::from_slice(&raw)
                .map(Some)
                .map_err(|e| CoreError::Corrupt {
                    path: CLUSTER_INFO_PATH,
                    reason: e.to_string(),
                }),
            None => Ok(None),
        }
    }

    pub(crate) fn new_cluster_info(&self) -> Result<ClusterInfo, CoreError> {
        let id = uuid::Uuid::new_v4().to_string();
        let name = match &self.inner.options.cluster_name {
            Some(name) => name.clone(),
            None => {
                let suffix = seal_core::random_bytes(4)?;
                format!("strongroom-cluster-{}", hex::encode(&*suffix))
            }
        };
        Ok(ClusterInfo { name, id })
    }

    /// Drops every key and the unsealed state. Called with `op_lock` held.
    pub(crate) fn seal_barrier_locked(&self) {
        let previous = self
            .inner
            .unsealed
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(state) = previous {
            if let Some(active) = &state.active {
                active.ended.cancel();
            }
            state.background.cancel();
            self.inner.serving.send_modify(|g| *g += 1);
        }
        self.inner.cache.deactivate();
        self.inner.barrier.seal();
        if let SealKind::Shamir(shamir) = &self.inner.seal {
            shamir.clear_kek();
        }
        self.inner.progress.reset();
        self.publish_state();
    }

    /// Clears the unseal in progress (`sys/unseal` with `reset: true`).
    ///
    /// # Errors
    /// [`CoreError::AlreadyUnsealed`] (400 "vault is unsealed") when not
    /// sealed, as Vault; storage errors while reading the status.
    pub async fn unseal_reset(&self) -> Result<SealStatus, CoreError> {
        if !self.is_sealed() {
            return Err(CoreError::AlreadyUnsealed);
        }
        self.inner.progress.reset();
        self.seal_status().await
    }

    /// Seals the node (`sys/seal`): every key is dropped from memory and
    /// zeroized, the logical layer is torn down. Sealing a sealed node does
    /// nothing (as Vault). On an auto-seal node the operator's decision
    /// sticks: the node does not unseal itself again until it restarts or
    /// someone unseals it with recovery keys.
    ///
    /// With HA, only the active node can be sealed this way: it gives up
    /// the lock first, so a standby takes over.
    ///
    /// # Errors
    /// [`CoreError::PermissionDenied`] for a missing or invalid token; a 403
    /// [`CoreError::Logical`] for a token without `update` and `sudo` on
    /// `sys/seal`; [`CoreError::CannotSealStandby`] on an HA standby
    /// (Vault's answer: restart it instead).
    pub async fn seal(&self, token: &str) -> Result<(), CoreError> {
        if self.is_sealed() {
            return Ok(());
        }
        if !self.node_state().mode.serves() {
            return Err(CoreError::CannotSealStandby);
        }
        self.authorize(token, Operation::Update, "sys/seal").await?;
        let _op = self.inner.op_lock.lock().await;
        self.withdraw().await;
        self.seal_barrier_locked();
        self.inner.rekey.lock().await.clear();
        self.inner.generate_root.lock().await.take();
        if self.inner.seal.is_auto() {
            self.inner.manually_sealed.store(true, Ordering::SeqCst);
        }
        tracing::info!("vault is sealed by an operator request");
        Ok(())
    }

    /// Seals without a token, for process shutdown (SIGTERM): with HA the
    /// lock is released first (no lock-delay for the next active node) and
    /// the node stops contending for good; keys are zeroized and background
    /// tasks stop before the process exits, as Vault does on shutdown.
    /// Unlike [`seal`](Self::seal) it does not mark an auto-seal node as
    /// sealed on purpose (a restarted process unseals itself as usual).
    /// Idempotent.
    pub async fn shutdown(&self) {
        self.stop_election().await;
        let _op = self.inner.op_lock.lock().await;
        if !self.is_sealed() {
            self.seal_barrier_locked();
            tracing::info!("vault is sealed for shutdown: keys dropped from memory");
        }
        self.inner.rekey.lock().await.clear();
        self.inner.generate_root.lock().await.take();
    }

    /// One auto-unseal attempt: fetch the root key through the seal and open
    /// the barrier. Succeeds at once when already unsealed.
    pub(crate) async fn try_auto_unseal(&self) -> Result<(), AutoUnsealFailure> {
        if !self.is_sealed() {
            return Ok(());
        }
        if self.pending_migration().is_some() {
            return Err(AutoUnsealFailure::Migration);
        }
        match self.is_initialized().await {
            Ok(true) => {}
            Ok(false) => return Err(AutoUnsealFailure::NotInitialized),
            Err(e) => return Err(AutoUnsealFailure::Other(e)),
        }
        tracing::info!("stored unseal keys supported, attempting fetch");
        let root = self.fetch_stored_root_key().await?;
        let _op = self.inner.op_lock.lock().await;
        if !self.is_sealed() {
            return Ok(());
        }
        match self.unseal_barrier(&root, true, None).await {
            Ok(()) => {
                self.inner
                    .counters
                    .seal_unreachable_since_ms
                    .store(0, Ordering::Relaxed);
                self.inner.auto_unseal.succeeded();
                self.contend();
                Ok(())
            }
            Err(CoreError::InvalidKey(msg)) => Err(AutoUnsealFailure::Corrupt(msg)),
            Err(e) => Err(AutoUnsealFailure::Other(e)),
        }
    }

    pub(crate) fn record_auto_unseal_failure(&self, failure: &AutoUnsealFailure) {
        let message = failure.to_string();
        let waiting = matches!(
            failure,
            AutoUnsealFailure::NotInitialized | AutoUnsealFailure::Migration
        );
        if waiting {
            tracing::info!(reason = failure.kind(), "auto-unseal waiting: {message}");
        } else {
            self.inner
                .counters
                .auto_unseal_failures
                .fetch_add(1, Ordering::Relaxed);
            tracing::warn!(reason = failure.kind(), "failed to unseal core: {message}");
        }
        if matches!(
            failure,
            AutoUnsealFailure::Unreachable(_) | AutoUnsealFailure::AccessDenied(_)
        ) {
            let now = SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| {
                    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
                });
            // Keep the start of the run of failures.
            let _ = self
                .inner
                .counters
                .seal_unreachable_since_ms
                .compare_exchange(0, now, Ordering::Relaxed, Ordering::Relaxed);
        }
        self.inner
            .auto_unseal
            .failed(message, failure.kind(), !waiting);
    }

    /// Starts the auto-unseal loop: while the node is sealed, try to fetch
    /// the root key through the seal; after each failure log it (what
    /// failed and what to check), count it, and wait with exponential
    /// backoff and jitter (from `auto_unseal_initial_backoff` up to
    /// `auto_unseal_max_backoff`). The task ends once the node is unsealed,
    /// when it is a Shamir node, after an operator sealed it by hand, or
    /// when every handle to the core is dropped.
    ///
    /// Beyond Vault: a node that started while the KMS was down unseals
    /// itself when the KMS returns, without a restart. Like Vault, a node
    /// sealed on purpose stays sealed.
    ///
    /// # Panics
    /// When called outside a Tokio runtime (as `tokio::spawn`).
    pub fn spawn_auto_unseal(&self) -> tokio::task::JoinHandle<()> {
        let weak = Arc::downgrade(&self.inner);
        tokio::spawn(auto_unseal_loop(weak))
    }
}

async fn auto_unseal_loop(weak: Weak<Inner>) {
    let Some(tracker) = weak.upgrade().map(|inner| inner.auto_unseal.clone()) else {
        return;
    };
    let _running = tracker.running();
    let mut backoff = None;
    // The core's build made the first attempt: if it failed, this loop's
    // first attempt is its first retry and waits like one (otherwise a
    // node started while the KMS is down logs two failures at once).
    if tracker.failed_recently() {
        let Some(initial) = weak
            .upgrade()
            .map(|inner| inner.options.auto_unseal_initial_backoff)
        else {
            return;
        };
        backoff = Some(initial);
        let jittered = jitter(initial);
        tracker.next_attempt_in(jittered);
        tokio::time::sleep(jittered).await;
    }
    loop {
        let Some(inner) = weak.upgrade() else { return };
        let core = Core { inner };
        if !core.inner.seal.is_auto()
            || core.pending_migration().is_some()
            || !core.is_sealed()
            || core.inner.manually_sealed.load(Ordering::SeqCst)
        {
            return;
        }
        match core.try_auto_unseal().await {
            Ok(()) => return,
            Err(failure) => core.record_auto_unseal_failure(&failure),
        }
        let opts = &core.inner.options;
        let wait = backoff.map_or(opts.auto_unseal_initial_backoff, |b: Duration| {
            (b * 2).min(opts.auto_unseal_max_backoff)
        });
        backoff = Some(wait);
        let jittered = jitter(wait);
        tracker.next_attempt_in(jittered);
        drop(core);
        tokio::time::sleep(jittered).await;
    }
}

/// "Equal jitter": a uniform wait in `[d/2, d]`, so nodes restarted together
/// do not hammer the KMS in lockstep.
fn jitter(d: Duration) -> Duration {
    let mut buf = [0u8; 8];
    if getrandom::fill(&mut buf).is_err() {
        return d;
    }
    let frac =
        f64::from(u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]])) / f64::from(u32::MAX);
    d.mul_f64(0.5 + 0.5 * frac)
}

/// While serving (unsealed, and active with HA), asks the barrier every
/// `auto_rotate_check_interval` whether its key must rotate (encryption
/// count, interval). Stops when `stop` is cancelled.
pub(crate) fn spawn_rotation_check(weak: Weak<Inner>, stop: CancellationToken) {
    let Ok(handle) = tokio::runtime::Handle::try_current() else {
        return;
    };
    handle.spawn(async move {
        loop {
            let every = match weak.upgrade() {
                Some(inner) => inner.options.auto_rotate_check_interval,
                None => return,
            };
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(every) => {}
            }
            let Some(inner) = weak.upgrade() else { return };
            match inner.barrier.check_auto_rotate().await {
                Ok(Some(term)) => {
                    inner
                        .counters
                        .auto_rotations
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::info!(term, "barrier key rotated automatically");
                }
                Ok(None) => {}
                Err(BarrierError::Sealed) => return,
                Err(e) => tracing::warn!(error = %e, "automatic key rotation check failed"),
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn stored_keys_round_trip_in_vaults_layout() {
        let root = RootKey::from_bytes(&[7u8; 32]).unwrap();
        let encoded = encode_stored_keys(&root);
        let as_json: Vec<String> = serde_json::from_slice(&encoded).unwrap();
        assert_eq!(as_json, [B64.encode([7u8; 32])]);
        assert!(decode_stored_keys(&encoded).unwrap() == root);
    }

    #[test]
    fn bad_stored_keys_are_refused() {
        for (raw, expected) in [
            (&b"[]"[..], "expected exactly one stored key, found 0"),
            (br#"["a","b"]"#, "expected exactly one stored key, found 2"),
            (br#"["!!"]"#, "the stored key is not base64"),
            (br#"["AAAA"]"#, "the stored key is not a root key"),
            (b"{}", "not a JSON list"),
        ] {
            let err = decode_stored_keys(raw).unwrap_err();
            assert!(err.contains(expected), "{err}");
        }
    }

    #[test]
    fn seal_failures_are_classified_for_operators() {
        let cases = [
            (
                SealError::Unreachable("timeout".into()),
                "seal_unreachable",
                "unreachable",
            ),
            (
                SealError::Throttled("slow down".into()),
                "seal_unreachable",
                "unreachable",
            ),
            (
                SealError::AccessDenied("no kms:Decrypt".into()),
                "seal_access_denied",
                "refused",
            ),
            (
                SealError::KeyDisabled("arn".into()),
                "seal_access_denied",
                "enabled",
            ),
            (
                SealError::KeyNotFound("arn".into()),
                "seal_access_denied",
                "key policy",
            ),
            (
                SealError::Decrypt,
                "wrong_key",
                "not the one this storage was initialized with",
            ),
            (
                SealError::Malformed("short"),
                "corrupt_stored_keys",
                "restore",
            ),
        ];
        for (err, kind, words) in cases {
            let failure = AutoUnsealFailure::from_seal(err);
            assert_eq!(failure.kind(), kind);
            let text = failure.to_string();
            assert!(text.contains(words), "{text}");
            assert!(
                text.starts_with("fetching stored unseal keys failed"),
                "{text}"
            );
        }
        let text = AutoUnsealFailure::NotInitialized.to_string();
        assert!(text.contains("run `operator init`"), "{text}");
    }

    #[test]
    fn jitter_stays_within_half_to_full() {
        for _ in 0..100 {
            let j = jitter(Duration::from_millis(1000));
            assert!(
                j >= Duration::from_millis(500) && j <= Duration::from_millis(1000),
                "{j:?}"
            );
        }
    }

    proptest! {
        #[test]
        fn decode_never_panics(raw in proptest::collection::vec(any::<u8>(), 0..128)) {
            let _ = decode_stored_keys(&raw);
        }
    }
}
