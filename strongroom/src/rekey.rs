//! Rekey: replacing the unseal keys (Shamir) or the recovery keys (auto
//! seal) with a new set, authorized by the threshold of the current keys.
//!
//! Flow, as Vault's `sys/rekey/*` and `sys/rekey-recovery-key/*`:
//! `init` fixes the new share count and threshold and hands out a nonce;
//! `update` collects current keys under that nonce; at the threshold they are
//! checked, a new secret is generated and its shares returned. Without
//! verification the new keys take effect at once. With
//! `require_verification` they take effect only after the threshold of the
//! *new* shares is entered through `verify` under a second nonce, so a
//! typo in distributing them cannot lock everyone out.
//!
//! As in Vault these endpoints take no token: the current keys authorize
//! the rekey. They need an unsealed, active node (a standby answers
//! [`CoreError::Standby`] so the request reaches the active node).

use std::fmt;

use seal_core::{Kek, RecoveryKey, RootKey, Seal, SealType, TxnOp};
use seal_shamir::{ShamirSeal, Submit, UnsealProgress};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::config::{
    RECOVERY_CONFIG_PATH, RECOVERY_KEY_PATH, REKEY_PENDING_PATH, SEAL_CONFIG_PATH,
    STORED_KEYS_PATH, SealConfig,
};
use crate::core::SealKind;
use crate::init::{make_shares, render_shares};
use crate::types::{
    RekeyParams, RekeyStatus, RekeyUpdateResult, RekeyVerifyResult, RekeyVerifyStatus,
};
use crate::unseal::encode_stored_keys;
use crate::{Core, CoreError};

/// The new secret waiting for its shares to be verified.
struct PendingVerification {
    secret: Zeroizing<Vec<u8>>,
    nonce: String,
    progress: UnsealProgress,
}

/// One rekey in progress.
struct RekeyOp {
    nonce: String,
    shares: usize,
    threshold: usize,
    require_verification: bool,
    progress: UnsealProgress,
    pending: Option<PendingVerification>,
}

impl fmt::Debug for RekeyOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RekeyOp")
            .field("nonce", &self.nonce)
            .field("shares", &self.shares)
            .field("threshold", &self.threshold)
            .field("verifying", &self.pending.is_some())
            .finish_non_exhaustive()
    }
}

/// The rekey of the unseal keys and the rekey of the recovery keys are
/// separate operations, as in Vault.
#[derive(Debug, Default)]
pub(crate) struct RekeySlots {
    barrier: Option<RekeyOp>,
    recovery: Option<RekeyOp>,
}

impl RekeySlots {
    fn slot(&mut self, recovery: bool) -> &mut Option<RekeyOp> {
        if recovery {
            &mut self.recovery
        } else {
            &mut self.barrier
        }
    }

    /// Forgets every rekey in progress (sealing does).
    pub(crate) fn clear(&mut self) {
        self.barrier = None;
        self.recovery = None;
    }
}

fn nonces_equal(a: &str, b: &str) -> bool {
    bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

fn no_rekey() -> CoreError {
    CoreError::InvalidRequest("no rekey in progress: start one with rekey init".into())
}

impl Core {
    /// Rekeying needs the unsealed, active node (and no token).
    fn require_serving(&self) -> Result<(), CoreError> {
        self.logical().map(|_| ())
    }

    /// Which keys a rekey replaces on this seal, refusing the kind that does
    /// not apply.
    fn check_rekey_target(&self, recovery: bool) -> Result<(), CoreError> {
        match (self.inner.seal.is_auto(), recovery) {
            (true, false) => Err(CoreError::InvalidRequest(format!(
                "rekeying the unseal keys is not applicable to seal type {}: an auto seal hands \
                 out recovery keys; rekey the recovery keys instead (sys/rekey-recovery-key, \
                 `operator rekey -target=recovery`)",
                self.inner.seal.seal_type()
            ))),
            (false, true) => Err(CoreError::InvalidRequest(
                "recovery keys are not supported with seal type shamir: rekey the unseal keys \
                 instead (sys/rekey)"
                    .into(),
            )),
            _ => Ok(()),
        }
    }

    /// The current threshold of the keys that authorize the rekey.
    async fn current_threshold(&self) -> Result<usize, CoreError> {
        Ok(self
            .unseal_config()
            .await?
            .map_or(0, |c| c.secret_threshold))
    }

    /// Starts a rekey (`sys/rekey/init`, or `sys/rekey-recovery-key/init`
    /// with `recovery`).
    ///
    /// # Errors
    /// [`CoreError::Sealed`]; [`CoreError::Standby`]; [`CoreError::InvalidRequest`] for a rekey already in progress,
    /// keys that do not apply to the seal type, PGP options, or share counts
    /// outside Vault's limits.
    pub async fn rekey_init(
        &self,
        params: RekeyParams,
        recovery: bool,
    ) -> Result<RekeyStatus, CoreError> {
        self.require_serving()?;
        self.check_rekey_target(recovery)?;
        if params.pgp_keys.as_ref().is_some_and(|k| !k.is_empty()) || params.backup {
            return Err(CoreError::InvalidRequest(
                "pgp_keys and backup are not supported: strongroom does not PGP-encrypt keys; \
                 omit them and distribute the new keys over a secure channel"
                    .into(),
            ));
        }
        if params.stored_shares > 1 {
            return Err(CoreError::InvalidRequest(
                "stored_shares must be 0 or 1: key shares are never stored".into(),
            ));
        }
        seal_shamir::validate_config(params.secret_shares, params.secret_threshold)
            .map_err(|e| CoreError::InvalidRequest(format!("invalid seal configuration: {e}")))?;
        let mut slots = self.inner.rekey.lock().await;
        let slot = slots.slot(recovery);
        if slot.is_some() {
            return Err(CoreError::InvalidRequest(
                "rekey already in progress: finish it or cancel it first".into(),
            ));
        }
        *slot = Some(RekeyOp {
            nonce: uuid::Uuid::new_v4().to_string(),
            shares: params.secret_shares,
            threshold: params.secret_threshold,
            require_verification: params.require_verification,
            // Shares are checked against our own nonce and collected with
            // plain submits, so a wrong key set resets progress but keeps
            // the nonce operators were given (as Vault).
            progress: UnsealProgress::new(),
            pending: None,
        });
        drop(slots);
        tracing::info!(recovery, "rekey started");
        self.rekey_status(recovery).await
    }

    /// The rekey in progress (`GET sys/rekey/init`).
    ///
    /// # Errors
    /// [`CoreError::Sealed`]; [`CoreError::Standby`].
    pub async fn rekey_status(&self, recovery: bool) -> Result<RekeyStatus, CoreError> {
        self.require_serving()?;
        let required = self.current_threshold().await?;
        let mut slots = self.inner.rekey.lock().await;
        Ok(match slots.slot(recovery).as_ref() {
            None => RekeyStatus {
                required,
                ..RekeyStatus::default()
            },
            Some(op) => RekeyStatus {
                nonce: op.nonce.clone(),
                started: true,
                t: op.threshold,
                n: op.shares,
                progress: op.progress.status().progress,
                required,
                pgp_fingerprints: None,
                backup: false,
                verification_required: op.require_verification,
                verification_nonce: op
                    .pending
                    .as_ref()
                    .map(|p| p.nonce.clone())
                    .unwrap_or_default(),
            },
        })
    }

    /// Cancels the rekey in progress (`DELETE sys/rekey/init`); the current
    /// keys stay valid. Cancelling when none is in progress is not an error.
    ///
    /// # Errors
    /// [`CoreError::Sealed`]; [`CoreError::Standby`].
    pub async fn rekey_cancel(&self, recovery: bool) -> Result<(), CoreError> {
        self.require_serving()?;
        if self
            .inner
            .rekey
            .lock()
            .await
            .slot(recovery)
            .take()
            .is_some()
        {
            tracing::info!(recovery, "rekey cancelled");
        }
        Ok(())
    }

    /// Enters one *current* key for the rekey under `nonce`
    /// (`sys/rekey/update`). At the threshold the keys are checked and the
    /// new shares are returned (`complete: true`); without verification
    /// they are already in effect.
    ///
    /// # Errors
    /// [`CoreError::InvalidRequest`] without a rekey in progress, for a
    /// wrong nonce, or when the new keys already await verification;
    /// [`CoreError::InvalidKey`] for a malformed key or a key set that is
    /// not the current one (progress reset, nonce kept);
    /// [`CoreError::Sealed`]; [`CoreError::Standby`]; seal and
    /// storage errors while committing.
    pub async fn rekey_update(
        &self,
        key: &str,
        nonce: &str,
        recovery: bool,
    ) -> Result<RekeyUpdateResult, CoreError> {
        self.require_serving()?;
        let share = seal_shamir::parse_share(key)?;
        let required = self.current_threshold().await?;
        let mut slots = self.inner.rekey.lock().await;
        let op = slots.slot(recovery).as_mut().ok_or_else(no_rekey)?;
        if !nonces_equal(&op.nonce, nonce) {
            return Err(CoreError::InvalidRequest(format!(
                "incorrect nonce supplied; nonce for this rekey operation is {}",
                op.nonce
            )));
        }
        if let Some(pending) = &op.pending {
            return Err(CoreError::InvalidRequest(format!(
                "rekey operation already finished; verification must be performed; nonce for \
                 the verification operation is {}",
                pending.nonce
            )));
        }
        let secret = match op.progress.submit(share, required) {
            Ok(Submit::Pending(status)) => {
                let mut result = RekeyUpdateResult::default();
                result.nonce.clone_from(&op.nonce);
                result.verification_required = op.require_verification;
                result.progress = Some(status.progress);
                result.required = Some(required);
                result.started = Some(true);
                return Ok(result);
            }
            Ok(Submit::Complete(secret)) => secret,
            Err(e) => {
                return Err(CoreError::InvalidKey(format!(
                    "rekey: failed to compute the combined key: {e}; progress was reset"
                )));
            }
        };
        self.verify_current_secret(&secret, recovery).await?;

        // The current keys are proven: make the new secret and its shares.
        let new_secret = Zeroizing::new(if recovery {
            RecoveryKey::generate()?.expose_secret().to_vec()
        } else {
            Kek::generate()?.expose_secret().to_vec()
        });
        let shares = make_shares(&new_secret, op.shares, op.threshold)?;
        let mut result = RekeyUpdateResult::default();
        (result.keys, result.keys_base64) = render_shares(&shares);
        result.nonce.clone_from(&op.nonce);
        result.complete = true;
        result.verification_required = op.require_verification;
        if op.require_verification {
            let verification_nonce = uuid::Uuid::new_v4().to_string();
            result.verification_nonce.clone_from(&verification_nonce);
            op.pending = Some(PendingVerification {
                secret: new_secret,
                nonce: verification_nonce,
                progress: UnsealProgress::new(),
            });
            tracing::info!(recovery, "rekey: new keys generated, awaiting verification");
            return Ok(result);
        }
        let (shares_n, threshold) = (op.shares, op.threshold);
        *slots.slot(recovery) = None;
        drop(slots);
        self.commit_rekey(&new_secret, shares_n, threshold, recovery)
            .await?;
        Ok(result)
    }

    /// The verification in progress (`GET sys/rekey/verify`).
    ///
    /// # Errors
    /// [`CoreError::InvalidRequest`] when no new keys await verification;
    /// [`CoreError::Sealed`]; [`CoreError::Standby`].
    pub async fn rekey_verify_status(
        &self,
        recovery: bool,
    ) -> Result<RekeyVerifyStatus, CoreError> {
        self.require_serving()?;
        let mut slots = self.inner.rekey.lock().await;
        let op = slots.slot(recovery).as_ref().ok_or_else(no_rekey)?;
        let pending = op
            .pending
            .as_ref()
            .ok_or_else(|| CoreError::InvalidRequest("no rekey verification in progress".into()))?;
        Ok(RekeyVerifyStatus {
            nonce: pending.nonce.clone(),
            started: true,
            t: op.threshold,
            n: op.shares,
            progress: pending.progress.status().progress,
        })
    }

    /// Enters one *new* key under the verification nonce
    /// (`sys/rekey/verify`). When the threshold of new keys combines to the
    /// new secret, the rekey takes effect (`complete: true`).
    ///
    /// # Errors
    /// [`CoreError::InvalidRequest`] without a verification in progress or
    /// for a wrong nonce; [`CoreError::InvalidKey`] for a malformed key or
    /// new keys that do not combine to the new secret (verification progress
    /// reset; the new keys stay pending); [`CoreError::Sealed`];
    /// [`CoreError::Standby`]; seal and storage errors while
    /// committing.
    pub async fn rekey_verify(
        &self,
        key: &str,
        nonce: &str,
        recovery: bool,
    ) -> Result<RekeyVerifyResult, CoreError> {
        self.require_serving()?;
        let share = seal_shamir::parse_share(key)?;
        let mut slots = self.inner.rekey.lock().await;
        let op = slots.slot(recovery).as_mut().ok_or_else(no_rekey)?;
        let (shares_n, threshold) = (op.shares, op.threshold);
        let pending = op
            .pending
            .as_ref()
            .ok_or_else(|| CoreError::InvalidRequest("no rekey verification in progress".into()))?;
        if !nonces_equal(&pending.nonce, nonce) {
            return Err(CoreError::InvalidRequest(format!(
                "incorrect nonce supplied; nonce for this verify operation is {}",
                pending.nonce
            )));
        }
        let combined = match pending.progress.submit(share, threshold) {
            Ok(Submit::Pending(status)) => {
                return Ok(RekeyVerifyResult {
                    nonce: pending.nonce.clone(),
                    complete: false,
                    progress: Some(status.progress),
                });
            }
            Ok(Submit::Complete(secret)) => secret,
            Err(e) => {
                return Err(CoreError::InvalidKey(format!(
                    "rekey verification: failed to compute the combined key: {e}; verification \
                     progress was reset"
                )));
            }
        };
        if !bool::from(combined.as_slice().ct_eq(pending.secret.as_slice())) {
            return Err(CoreError::InvalidKey(
                "rekey verification failed: the keys entered do not combine to the new key; \
                 verification progress was reset, enter the new keys again"
                    .into(),
            ));
        }
        let nonce = pending.nonce.clone();
        let Some(pending) = slots.slot(recovery).take().and_then(|op| op.pending) else {
            return Err(no_rekey());
        };
        drop(slots);
        self.commit_rekey(&pending.secret, shares_n, threshold, recovery)
            .await?;
        Ok(RekeyVerifyResult {
            nonce,
            complete: true,
            progress: None,
        })
    }

    /// Checks that `secret` (combined from current keys) is the current KEK
    /// or recovery key.
    async fn verify_current_secret(&self, secret: &[u8], recovery: bool) -> Result<(), CoreError> {
        if self.secret_opens_current_keys(secret).await? {
            // The keys are proven current: hold this KEK from now on. With
            // HA the node may have been unsealed before another node
            // rekeyed, and the commit wraps its crash-recovery copy under
            // the held KEK.
            if !recovery
                && let SealKind::Shamir(shamir) = &self.inner.seal
                && let Ok(kek) = Kek::from_bytes(secret)
            {
                shamir.set_kek(kek);
            }
            return Ok(());
        }
        Err(CoreError::InvalidKey(if recovery {
            "rekey: the recovery keys entered are not the current recovery keys; progress was \
             reset, enter the current recovery keys again"
                .into()
        } else {
            "rekey: the unseal keys entered are not the current unseal keys; progress was \
             reset, enter the current unseal keys again"
                .into()
        }))
    }

    /// Puts the new secret in effect.
    ///
    /// * Shamir: a new root key re-encrypts the keyring, is wrapped under
    ///   the new KEK, and the seal config gets the new counts. Crash-safe:
    ///   the new root key is first stored wrapped under the *current* KEK at
    ///   a pending path; the keyring is re-encrypted; then the stored keys,
    ///   the config and the removal of the pending entry are one
    ///   transaction. A crash in between leaves the current keys working
    ///   (the unseal path finds the pending root key), where Vault would be
    ///   left with a keyring nothing can open.
    /// * Recovery: the new recovery key, wrapped by the seal, and the new
    ///   recovery config are written in one transaction.
    async fn commit_rekey(
        &self,
        secret: &[u8],
        shares: usize,
        threshold: usize,
        recovery: bool,
    ) -> Result<(), CoreError> {
        let _op = self.inner.op_lock.lock().await;
        if self.is_sealed() {
            return Err(CoreError::Sealed);
        }
        if recovery {
            let key = RecoveryKey::from_bytes(secret)?;
            let blob = self
                .inner
                .seal
                .seal()
                .encrypt(key.expose_secret(), RECOVERY_KEY_PATH.as_bytes())
                .await
                .map_err(|e| {
                    CoreError::seal("wrapping the new recovery key with the seal failed", e)
                })?;
            let config = SealConfig::new(SealType::Shamir.as_str(), shares, threshold);
            let mut ops = vec![
                TxnOp::put(RECOVERY_KEY_PATH, blob),
                TxnOp::put(RECOVERY_CONFIG_PATH, config.to_json()?),
            ];
            // The break-glass copy follows the new recovery key in the same
            // transaction: the old recovery keys must not unseal any more.
            if let SealKind::Auto(set) = &self.inner.seal
                && let Some(stored) = self.inner.physical.get(STORED_KEYS_PATH).await?
                && (self.inner.recovery_unseal || crate::break_glass::has_recovery_slot(&stored))
            {
                let root = set
                    .unwrap_any(&stored, STORED_KEYS_PATH.as_bytes())
                    .await
                    .map_err(|e| CoreError::seal("reading the stored keys failed", e))?;
                let restamped = crate::break_glass::restamp(
                    set,
                    &stored,
                    &root,
                    self.inner.recovery_unseal.then_some(key.expose_secret()),
                )
                .await?;
                ops.push(TxnOp::put(STORED_KEYS_PATH, restamped));
            }
            self.inner.physical.transaction(ops).await?;
            tracing::info!(shares, threshold, "recovery keys rekeyed");
            return Ok(());
        }
        let SealKind::Shamir(shamir) = &self.inner.seal else {
            return Err(CoreError::InvalidRequest(
                "unseal keys cannot be rekeyed on an auto seal".into(),
            ));
        };
        let new_root = RootKey::generate()?;
        let new_seal = ShamirSeal::new();
        new_seal.set_kek(Kek::from_bytes(secret)?);
        let blob = new_seal
            .encrypt(&encode_stored_keys(&new_root), STORED_KEYS_PATH.as_bytes())
            .await
            .map_err(|e| {
                CoreError::seal("wrapping the new root key under the new KEK failed", e)
            })?;
        // Crash safety: until the new wrapped root key is stored, keep the
        // new root key wrapped under the *current* KEK, so the current
        // unseal keys still open a keyring that was already re-encrypted
        // (see `recover_interrupted_rekey`).
        let pending = shamir
            .encrypt(
                &encode_stored_keys(&new_root),
                REKEY_PENDING_PATH.as_bytes(),
            )
            .await
            .map_err(|e| {
                CoreError::seal("wrapping the new root key under the current KEK failed", e)
            })?;
        self.inner
            .physical
            .put(REKEY_PENDING_PATH, &pending)
            .await?;
        let config = SealConfig::new(SealType::Shamir.as_str(), shares, threshold);
        let config_json = config.to_json()?;
        self.inner.barrier.rekey_root(&new_root).await?;
        self.inner
            .physical
            .transaction(vec![
                TxnOp::put(STORED_KEYS_PATH, blob),
                TxnOp::put(SEAL_CONFIG_PATH, config_json),
                TxnOp::delete(REKEY_PENDING_PATH),
            ])
            .await?;
        shamir.set_kek(Kek::from_bytes(secret)?);
        tracing::info!(
            shares,
            threshold,
            "unseal keys rekeyed: new root key installed"
        );
        Ok(())
    }
}
