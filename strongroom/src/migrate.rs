//! Seal migration: Shamir → auto seal, auto seal → Shamir, and auto seal A
//! → auto seal B, driven as in Vault: change the config, restart, and enter
//! the keys with `operator unseal -migrate`.
//!
//! | from → to | keys entered | what happens |
//! |---|---|---|
//! | Shamir → auto | unseal keys | a new root key re-encrypts the keyring; it is stored wrapped by the auto seal; the unseal keys' secret becomes the recovery key (so the old unseal keys are the recovery keys) |
//! | auto → Shamir | recovery keys | the root key is stored wrapped under the recovery key, which becomes the Shamir key (the recovery keys are the unseal keys) |
//! | auto → auto | recovery keys | the root key and the recovery key are wrapped by the new seal |
//!
//! # Crash safety
//!
//! Each migration is a sequence of durable steps, each one atomic write
//! (a storage transaction), ordered so that after a crash at any boundary
//! the node unseals with the old or the new configuration and the
//! migration can be run again to finish:
//!
//! * Shamir → auto has three: (1) a migration record at
//!   `core/seal-migration` holding the new root key wrapped under the old
//!   Shamir key *and* under the new seal, and the recovery key wrapped by
//!   the new seal; (2) the keyring re-encrypted under the new root key;
//!   (3) one transaction that stores the new wraps and configs and deletes
//!   the record. Running the migration again after (1) or (2) picks the
//!   new root key from the record and continues; going back to the Shamir
//!   config after (2) unseals too (the Shamir unseal finds the record and
//!   adopts the new root key, as an interrupted rekey does).
//! * auto → Shamir and auto → auto keep the root key and are one
//!   transaction each.
//!
//! [`MigrationStep`] names each boundary; a hook given to the builder is
//! called after each (the server binary uses it, test-only, to exit there).

use std::fmt;
use std::ops::ControlFlow;
use std::sync::Arc;

use barrier::BarrierError;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use seal_core::{Kek, RecoveryKey, RootKey, Seal, SealType, Storage, TxnOp};
use seal_shamir::ShamirSeal;
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

use crate::config::{
    MIGRATION_PATH, RECOVERY_CONFIG_PATH, RECOVERY_KEY_PATH, SEAL_CONFIG_PATH, SEAL_GEN_INFO_PATH,
    STORED_KEYS_PATH, SealConfig,
};
use crate::core::SealKind;
use crate::error::corrupt;
use crate::seal_set::SealSet;
use crate::unseal::{decode_stored_keys, encode_stored_keys};
use crate::{Core, CoreError};

/// Which migration this node's configuration asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Migration {
    /// Stored Shamir, configured auto seal.
    ShamirToAuto,
    /// Stored auto seal, configured Shamir with the old seal disabled.
    AutoToShamir,
    /// Stored auto seal, configured new auto seal with the old one disabled.
    AutoToAuto,
}

impl Migration {
    /// Whether the keys entered are recovery keys (else unseal keys).
    pub(crate) fn takes_recovery_keys(self) -> bool {
        !matches!(self, Self::ShamirToAuto)
    }

    fn label(self) -> &'static str {
        match self {
            Self::ShamirToAuto => "from shamir to the auto seal",
            Self::AutoToShamir => "from the auto seal to shamir",
            Self::AutoToAuto => "from the disabled auto seal to the enabled one",
        }
    }
}

/// A durable step boundary of a migration (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum MigrationStep {
    /// Shamir → auto: the migration record is stored.
    ShamirToAutoRecordWritten,
    /// Shamir → auto: the keyring is re-encrypted under the new root key.
    ShamirToAutoKeyringRekeyed,
    /// Shamir → auto: new wraps and configs committed, record removed.
    ShamirToAutoCommitted,
    /// Auto → Shamir: committed.
    AutoToShamirCommitted,
    /// Auto → auto: committed.
    AutoToAutoCommitted,
}

impl MigrationStep {
    /// Every step, in the order they happen.
    pub const ALL: [Self; 5] = [
        Self::ShamirToAutoRecordWritten,
        Self::ShamirToAutoKeyringRekeyed,
        Self::ShamirToAutoCommitted,
        Self::AutoToShamirCommitted,
        Self::AutoToAutoCommitted,
    ];

    /// The step's name (`shamir-to-auto:record-written`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ShamirToAutoRecordWritten => "shamir-to-auto:record-written",
            Self::ShamirToAutoKeyringRekeyed => "shamir-to-auto:keyring-rekeyed",
            Self::ShamirToAutoCommitted => "shamir-to-auto:committed",
            Self::AutoToShamirCommitted => "auto-to-shamir:committed",
            Self::AutoToAutoCommitted => "auto-to-auto:committed",
        }
    }

    /// The step named `name`.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == name)
    }
}

impl fmt::Display for MigrationStep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Called after each durable step; `Break` stops the migration right there
/// (as a crash would), leaving what was written.
pub type MigrationHook = Arc<dyn Fn(MigrationStep) -> ControlFlow<()> + Send + Sync>;

/// The Shamir → auto record (plain JSON; every key in it is wrapped).
#[derive(Debug, Serialize, Deserialize)]
struct MigrationRecord {
    from: String,
    to: String,
    /// The new root key under the old Shamir key (base64 seal blob).
    root_under_old: String,
    /// The new root key under the new seal (stored bytes, base64).
    root_under_new: String,
    /// The recovery key (the old Shamir key) under the new seal.
    recovery_under_new: String,
}

impl MigrationRecord {
    fn parse(raw: &[u8]) -> Result<Self, CoreError> {
        serde_json::from_slice(raw).map_err(|e| CoreError::Corrupt {
            path: MIGRATION_PATH,
            reason: format!("not a migration record: {e}"),
        })
    }

    fn field(text: &str) -> Result<Vec<u8>, CoreError> {
        B64.decode(text).map_err(|_| CoreError::Corrupt {
            path: MIGRATION_PATH,
            reason: "a wrapped key is not base64".into(),
        })
    }
}

fn seal_err(op: &'static str) -> impl FnOnce(seal_core::SealError) -> CoreError {
    move |e| CoreError::seal(op, e)
}

impl Core {
    /// The migration this node is in, if any.
    pub(crate) fn pending_migration(&self) -> Option<Migration> {
        *self
            .inner
            .migration
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(crate) fn set_pending_migration(&self, value: Option<Migration>) {
        *self
            .inner
            .migration
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = value;
    }

    /// Decides, from the stored seal config and this node's seals, whether
    /// a migration is pending (at build). Auto → auto is confirmed at the
    /// first unseal attempt: if the enabled seal already opens the stored
    /// keys, the migration was finished earlier.
    ///
    /// # Errors
    /// [`CoreError::Config`] with Vault's words when the config cannot
    /// work with the storage.
    pub(crate) fn decide_migration(&self, stored: &SealConfig) -> Result<(), CoreError> {
        let stored_auto = stored.seal_type != SealType::Shamir.as_str();
        let configured_auto = self.inner.seal.is_auto();
        let disabled = self.inner.migrate_from.is_some();
        let migration = match (stored_auto, configured_auto, disabled) {
            (false, false, leftover) => {
                if leftover {
                    tracing::warn!(
                        "a disabled seal is configured but the storage already uses shamir: the \
                         migration is finished; remove the disabled seal stanza"
                    );
                }
                None
            }
            (false, true, _) => Some(Migration::ShamirToAuto),
            (true, false, true) => Some(Migration::AutoToShamir),
            (true, false, false) => {
                return Err(CoreError::Config(format!(
                    "cannot seal migrate from {:?} to Shamir, no disabled seal in configuration: \
                     keep the seal stanza with disabled = \"true\" to migrate to Shamir, or \
                     configure the seal the storage was initialized with",
                    stored.seal_type
                )));
            }
            (true, true, false) => None,
            (true, true, true) => Some(Migration::AutoToAuto),
        };
        if let Some(m) = migration {
            tracing::warn!(
                migration = m.label(),
                "entering seal migration mode; the node will not unseal automatically: enter the \
                 {} keys with `operator unseal -migrate`",
                if m.takes_recovery_keys() {
                    "recovery"
                } else {
                    "unseal"
                }
            );
        }
        self.set_pending_migration(migration);
        Ok(())
    }

    /// Auto → auto at start: if the enabled seals already open the stored
    /// keys and no migration record is left, the migration was finished
    /// earlier and the node unseals as usual.
    pub(crate) async fn confirm_auto_to_auto(&self) -> bool {
        let SealKind::Auto(set) = &self.inner.seal else {
            return false;
        };
        let Ok(Some(raw)) = self.inner.physical.get(STORED_KEYS_PATH).await else {
            return false;
        };
        let finished = set.owns(&raw, STORED_KEYS_PATH.as_bytes()).await
            && self
                .inner
                .physical
                .get(MIGRATION_PATH)
                .await
                .ok()
                .flatten()
                .is_none();
        if finished {
            tracing::warn!(
                "the enabled seal opens the stored keys: the seal migration is finished; remove \
                 the disabled seal stanza"
            );
            self.set_pending_migration(None);
            return true;
        }
        false
    }

    fn migration_step(&self, step: MigrationStep) -> Result<(), CoreError> {
        tracing::info!(step = step.as_str(), "seal migration step is durable");
        if let Some(hook) = &self.inner.migration_hook
            && hook(step).is_break()
        {
            return Err(CoreError::Config(format!(
                "seal migration stopped after step {step} by the migration hook"
            )));
        }
        Ok(())
    }

    /// The stored seal generation (0 before the first migration).
    pub(crate) async fn stored_seal_generation(&self) -> Result<u64, CoreError> {
        read_seal_generation(&*self.inner.physical).await
    }

    /// The write that bumps the seal generation, for a migration's commit.
    async fn next_seal_generation(&self) -> Result<TxnOp, CoreError> {
        let next = self.stored_seal_generation().await? + 1;
        Ok(seal_generation_op(next))
    }

    /// With HA, a migration rewrites the keys every node depends on: only
    /// the lock holder may, so the migrating node takes the lock first
    /// (Vault: the node that becomes active performs the migration). The
    /// active node must step down (`sys/step-down`) or stop for it.
    async fn take_lock_for_migration(&self) -> Result<(), CoreError> {
        let Some(ha) = &self.inner.ha else {
            return Ok(());
        };
        ha.election.contend();
        let mut roles = ha.election.role();
        let wait = self.inner.options.migration_lock_wait;
        let deadline = tokio::time::Instant::now() + wait;
        let mut told = false;
        loop {
            if matches!(&*roles.borrow_and_update(), ha_lock::Role::Active { period, .. } if !period.is_ended())
            {
                tracing::info!("took the HA lock for the seal migration");
                return Ok(());
            }
            if !told {
                // The operator has a step to do: say which.
                tracing::info!(
                    wait = ?wait,
                    "seal migration: waiting for the HA lock; step the active node down \
                     (sys/step-down, `operator step-down`) or stop it"
                );
                told = true;
            }
            if tokio::time::timeout_at(deadline, roles.changed())
                .await
                .is_err()
            {
                // Give the lock back in the background: the follower may wait
                // for the operation lock this caller holds.
                let core = self.clone();
                tokio::spawn(async move { core.withdraw().await });
                return Err(CoreError::InvalidRequest(format!(
                    "seal migration needs this node to hold the HA lock, and another node kept \
                     it for {wait:?}: step the active node down (sys/step-down, `operator \
                     step-down`) or stop it, then enter the keys again; progress was reset"
                )));
            }
        }
    }

    /// Runs the pending migration with `secret` (combined from the keys
    /// entered) and unseals. Called with `op_lock` held, while sealed.
    pub(crate) async fn run_migration(
        &self,
        migration: Migration,
        secret: &[u8],
    ) -> Result<(), CoreError> {
        self.take_lock_for_migration().await?;
        let root = match migration {
            Migration::ShamirToAuto => self.migrate_shamir_to_auto(secret).await,
            Migration::AutoToShamir | Migration::AutoToAuto => {
                self.migrate_from_auto(migration, secret).await
            }
        };
        let root = match root {
            Ok(root) => root,
            Err(e) => {
                if self.inner.ha.is_some() {
                    // A sealed node must not keep the lock from the others.
                    let core = self.clone();
                    tokio::spawn(async move { core.withdraw().await });
                }
                return Err(e);
            }
        };
        self.set_pending_migration(None);
        self.inner.barrier.seal();
        self.unseal_barrier(&root, true, None).await?;
        tracing::info!(migration = migration.label(), "seal migration completed");
        Ok(())
    }

    async fn migrate_shamir_to_auto(&self, secret: &[u8]) -> Result<RootKey, CoreError> {
        let SealKind::Auto(dest) = &self.inner.seal else {
            return Err(CoreError::Config("no auto seal to migrate to".into()));
        };
        let wrong = || {
            CoreError::InvalidKey(
                "unable to retrieve stored keys: invalid key: the unseal keys entered do not \
                 open the stored keys; progress was reset, enter the current unseal keys with \
                 -migrate"
                    .into(),
            )
        };
        let kek = Kek::from_bytes(secret).map_err(|_| wrong())?;
        let old = ShamirSeal::new();
        old.set_kek(Kek::from_bytes(secret).map_err(|_| wrong())?);
        let stored = self.required_entry(STORED_KEYS_PATH).await?;
        let old_root = decode_stored_keys(
            &old.decrypt(&stored, STORED_KEYS_PATH.as_bytes())
                .await
                .map_err(|_| wrong())?,
        )
        .map_err(corrupt(STORED_KEYS_PATH))?;
        let barrier_config = SealConfig::load(&*self.inner.physical, SEAL_CONFIG_PATH)
            .await?
            .ok_or(CoreError::NotInitialized)?;

        // (1) The record: resume from it, or write it.
        let record = match self.inner.physical.get(MIGRATION_PATH).await? {
            Some(raw) => {
                tracing::warn!("resuming an interrupted seal migration from its record");
                MigrationRecord::parse(&raw)?
            }
            None => {
                let new_root = RootKey::generate()?;
                let encoded = encode_stored_keys(&new_root);
                let root_under_new = self
                    .wrap_root_for_store(dest, &encoded, Some(kek.expose_secret()))
                    .await?;
                let recovery_under_new = dest
                    .encrypt(kek.expose_secret(), RECOVERY_KEY_PATH.as_bytes())
                    .await
                    .map_err(seal_err(
                        "wrapping the recovery key with the new seal failed",
                    ))?;
                let root_under_old = old
                    .encrypt(&encoded, MIGRATION_PATH.as_bytes())
                    .await
                    .map_err(seal_err(
                        "wrapping the new root key under the unseal keys failed",
                    ))?;
                let record = MigrationRecord {
                    from: SealType::Shamir.as_str().to_owned(),
                    to: dest.seal_type().as_str().to_owned(),
                    root_under_old: B64.encode(root_under_old),
                    root_under_new: B64.encode(root_under_new),
                    recovery_under_new: B64.encode(recovery_under_new),
                };
                let raw = serde_json::to_vec(&record)
                    .map_err(|e| CoreError::Config(format!("serializing the record: {e}")))?;
                self.inner.physical.put(MIGRATION_PATH, &raw).await?;
                self.migration_step(MigrationStep::ShamirToAutoRecordWritten)?;
                record
            }
        };
        let new_root = decode_stored_keys(
            &old.decrypt(
                &MigrationRecord::field(&record.root_under_old)?,
                MIGRATION_PATH.as_bytes(),
            )
            .await
            .map_err(seal_err("opening the migration record failed"))?,
        )
        .map_err(corrupt(MIGRATION_PATH))?;

        // (2) The keyring under the new root key (unless already).
        match self.inner.barrier.unseal(&new_root).await {
            Ok(()) => {}
            Err(BarrierError::InvalidRootKey) => {
                self.inner.barrier.unseal(&old_root).await?;
                self.inner.barrier.rekey_root(&new_root).await?;
                self.migration_step(MigrationStep::ShamirToAutoKeyringRekeyed)?;
            }
            Err(e) => return Err(e.into()),
        }

        // (3) Commit.
        let mut recovery_config = barrier_config.clone();
        recovery_config.seal_type = SealType::Shamir.as_str().to_owned();
        let new_config = SealConfig::new(dest.seal_type().as_str(), 1, 1);
        self.inner
            .physical
            .transaction(vec![
                TxnOp::put(
                    STORED_KEYS_PATH,
                    MigrationRecord::field(&record.root_under_new)?,
                ),
                TxnOp::put(
                    RECOVERY_KEY_PATH,
                    MigrationRecord::field(&record.recovery_under_new)?,
                ),
                TxnOp::put(RECOVERY_CONFIG_PATH, recovery_config.to_json()?),
                TxnOp::put(SEAL_CONFIG_PATH, new_config.to_json()?),
                TxnOp::delete(MIGRATION_PATH),
                self.next_seal_generation().await?,
            ])
            .await?;
        self.migration_step(MigrationStep::ShamirToAutoCommitted)?;
        Ok(new_root)
    }

    /// Auto → Shamir and auto → auto: check the recovery key through the
    /// disabled seal, then store the root key under the new seal.
    async fn migrate_from_auto(
        &self,
        migration: Migration,
        secret: &[u8],
    ) -> Result<RootKey, CoreError> {
        let source = self
            .inner
            .migrate_from
            .clone()
            .ok_or_else(|| CoreError::Config("no disabled seal to migrate from".into()))?;
        let rk_blob = self.required_entry(RECOVERY_KEY_PATH).await?;
        let stored_rk = RecoveryKey::from_bytes(
            &source
                .decrypt(&rk_blob, RECOVERY_KEY_PATH.as_bytes())
                .await
                .map_err(seal_err(
                    "decrypting the stored recovery key with the disabled seal failed",
                ))?,
        )
        .map_err(|e| CoreError::Corrupt {
            path: RECOVERY_KEY_PATH,
            reason: e.to_string(),
        })?;
        let entered = RecoveryKey::from_bytes(secret).ok();
        if !entered.is_some_and(|k| bool::from(k.ct_eq(&stored_rk))) {
            return Err(CoreError::InvalidKey(
                "invalid recovery key: the recovery keys entered do not belong to this storage's \
                 current recovery key set; progress was reset, enter them again with -migrate"
                    .into(),
            ));
        }
        let stored = self.required_entry(STORED_KEYS_PATH).await?;
        let root = decode_stored_keys(
            &source
                .decrypt(&stored, STORED_KEYS_PATH.as_bytes())
                .await
                .map_err(seal_err(
                    "fetching stored unseal keys with the disabled seal failed",
                ))?,
        )
        .map_err(corrupt(STORED_KEYS_PATH))?;
        // The root key must open the keyring before anything is rewritten.
        self.inner.barrier.unseal(&root).await?;
        let encoded = encode_stored_keys(&root);
        match (&self.inner.seal, migration) {
            (SealKind::Shamir(shamir), Migration::AutoToShamir) => {
                let recovery = SealConfig::load(&*self.inner.physical, RECOVERY_CONFIG_PATH)
                    .await?
                    .ok_or(CoreError::Corrupt {
                        path: RECOVERY_CONFIG_PATH,
                        reason: "missing although the storage is initialized with an auto seal"
                            .into(),
                    })?;
                shamir.set_kek(Kek::from_bytes(secret)?);
                let wrapped = shamir
                    .encrypt(&encoded, STORED_KEYS_PATH.as_bytes())
                    .await
                    .map_err(seal_err(
                        "wrapping the root key under the Shamir key failed",
                    ))?;
                let config = SealConfig::new(
                    SealType::Shamir.as_str(),
                    recovery.secret_shares,
                    recovery.secret_threshold,
                );
                self.inner
                    .physical
                    .transaction(vec![
                        TxnOp::put(STORED_KEYS_PATH, wrapped),
                        TxnOp::put(SEAL_CONFIG_PATH, config.to_json()?),
                        TxnOp::delete(RECOVERY_CONFIG_PATH),
                        TxnOp::delete(RECOVERY_KEY_PATH),
                        self.next_seal_generation().await?,
                    ])
                    .await?;
                self.migration_step(MigrationStep::AutoToShamirCommitted)?;
            }
            (SealKind::Auto(dest), Migration::AutoToAuto) => {
                let wrapped = self
                    .wrap_root_for_store(dest, &encoded, Some(stored_rk.expose_secret()))
                    .await?;
                let rk = dest
                    .encrypt(stored_rk.expose_secret(), RECOVERY_KEY_PATH.as_bytes())
                    .await
                    .map_err(seal_err(
                        "wrapping the recovery key with the new seal failed",
                    ))?;
                let config = SealConfig::new(dest.seal_type().as_str(), 1, 1);
                self.inner
                    .physical
                    .transaction(vec![
                        TxnOp::put(STORED_KEYS_PATH, wrapped),
                        TxnOp::put(RECOVERY_KEY_PATH, rk),
                        TxnOp::put(SEAL_CONFIG_PATH, config.to_json()?),
                        self.next_seal_generation().await?,
                    ])
                    .await?;
                self.migration_step(MigrationStep::AutoToAutoCommitted)?;
            }
            _ => {
                return Err(CoreError::Config(
                    "the configured seal does not match the pending migration".into(),
                ));
            }
        }
        Ok(root)
    }

    /// A Shamir unseal that finds the record of an interrupted Shamir →
    /// auto migration (the config went back to Shamir after a crash):
    /// whichever root key opens the keyring is the real one. If it is the
    /// migration's new root key, it is stored under the unseal keys; the
    /// record is removed either way, so the store is plain Shamir again.
    pub(crate) async fn recover_interrupted_migration(
        &self,
        shamir: &ShamirSeal,
        stored: RootKey,
    ) -> Result<RootKey, CoreError> {
        let Some(raw) = self.inner.physical.get(MIGRATION_PATH).await? else {
            return Ok(stored);
        };
        let record = MigrationRecord::parse(&raw)?;
        let pending = match shamir
            .decrypt(
                &MigrationRecord::field(&record.root_under_old)?,
                MIGRATION_PATH.as_bytes(),
            )
            .await
        {
            Ok(plain) => decode_stored_keys(&plain).ok(),
            Err(_) => None,
        };
        let Some(pending) = pending else {
            tracing::warn!("ignoring an unreadable record of an interrupted seal migration");
            return Ok(stored);
        };
        match self.inner.barrier.unseal(&stored).await {
            Ok(()) => {
                self.inner.barrier.seal();
                self.inner.physical.delete(MIGRATION_PATH).await?;
                tracing::warn!(
                    "an interrupted seal migration to an auto seal was found and discarded (the \
                     keyring had not changed); the store stays on shamir"
                );
                Ok(stored)
            }
            Err(BarrierError::InvalidRootKey) => {
                self.inner.barrier.unseal(&pending).await?;
                self.inner.barrier.seal();
                let wrapped = shamir
                    .encrypt(&encode_stored_keys(&pending), STORED_KEYS_PATH.as_bytes())
                    .await
                    .map_err(seal_err("re-wrapping the recovered root key failed"))?;
                self.inner
                    .physical
                    .transaction(vec![
                        TxnOp::put(STORED_KEYS_PATH, wrapped),
                        TxnOp::delete(MIGRATION_PATH),
                    ])
                    .await?;
                tracing::warn!(
                    "an interrupted seal migration to an auto seal was found after the keyring \
                     had been re-encrypted: its new root key is now stored under the unseal keys; \
                     the store stays on shamir, run the migration again to move to the auto seal"
                );
                Ok(pending)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Wraps the encoded root key with every seal of `set` and, when
    /// break-glass is on, under `recovery_key` too: the bytes to store at
    /// `core/hsm/barrier-unseal-keys`.
    pub(crate) async fn wrap_root_for_store(
        &self,
        set: &SealSet,
        encoded_root: &[u8],
        recovery_key: Option<&[u8]>,
    ) -> Result<Vec<u8>, CoreError> {
        let (mut doc, complete) = set
            .wrap_all(encoded_root, STORED_KEYS_PATH.as_bytes())
            .await
            .map_err(seal_err("wrapping the root key with the seal failed"))?;
        if !complete {
            set.set_fully_wrapped(false);
        }
        if self.inner.recovery_unseal
            && let Some(rk) = recovery_key
        {
            doc.put(crate::break_glass::recovery_slot(rk, encoded_root).await?);
        }
        set.store_form(&doc)
            .map_err(seal_err("encoding the wrapped root key failed"))
    }
}

/// The write that stores seal generation `generation`.
pub(crate) fn seal_generation_op(generation: u64) -> TxnOp {
    TxnOp::put(
        SEAL_GEN_INFO_PATH,
        format!("{{\"generation\":{generation}}}").into_bytes(),
    )
}

/// The seal generation stored in `storage` (0 before the first migration).
pub(crate) async fn read_seal_generation(storage: &dyn Storage) -> Result<u64, CoreError> {
    #[derive(Deserialize)]
    struct GenInfo {
        generation: u64,
    }
    match storage.get(SEAL_GEN_INFO_PATH).await? {
        None => Ok(0),
        Some(raw) => serde_json::from_slice::<GenInfo>(&raw)
            .map(|g| g.generation)
            .map_err(|e| CoreError::Corrupt {
                path: SEAL_GEN_INFO_PATH,
                reason: e.to_string(),
            }),
    }
}
