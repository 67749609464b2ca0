//! Keeping every auto seal's wrap of the keys current while unsealed.
//!
//! Right after an unseal, and again whenever a seal that was failing
//! answers again, the stored root key and recovery key are brought up to
//! date with the configured seals ([`SealSet::refresh`]): a seal that was
//! down when the keys were last written, or that was just added to the
//! config, gets its wrap; a seal whose KMS key changed is re-wrapped; a
//! seal removed from the config loses its wrap (and the seal generation
//! moves on, so no node still configured with it puts it back); the
//! break-glass copy
//! follows `recovery_unseal`. Between refreshes each seal's health is
//! checked (Vault: every 10 minutes, every minute while unhealthy), which
//! `sys/seal-backend-status` and the metrics report.

use std::sync::Weak;
use std::sync::atomic::Ordering;
use std::time::Duration;

use seal_core::{Storage as _, TxnOp};
use tokio_util::sync::CancellationToken;

use crate::active_view::ActiveView;
use crate::config::{RECOVERY_KEY_PATH, STORED_KEYS_PATH};
use crate::core::{Core, Inner, SealKind};
use crate::migrate::{read_seal_generation, seal_generation_op};
use crate::seal_set::SealSet;
use crate::{CoreError, break_glass};

/// Starts the upkeep loop for this unsealed period.
pub(crate) fn spawn(weak: Weak<Inner>, stop: CancellationToken) {
    let Ok(handle) = tokio::runtime::Handle::try_current() else {
        return;
    };
    handle.spawn(async move {
        loop {
            let Some(inner) = weak.upgrade() else { return };
            let core = Core { inner };
            let SealKind::Auto(set) = &core.inner.seal else {
                return;
            };
            let set = set.clone();
            if set.fully_wrapped() {
                set.check_health().await;
            }
            if !set.fully_wrapped() {
                match core.refresh_seal_wraps(&set, &stop).await {
                    Ok(()) | Err(CoreError::Sealed) => {}
                    // The period ended mid-refresh: nothing was written.
                    Err(_) if stop.is_cancelled() => return,
                    Err(e) => tracing::warn!(error = %e, "refreshing the seals' wraps failed"),
                }
            }
            let every = core.inner.options.seal_health_check_interval;
            let wait = if set.all_healthy() && set.fully_wrapped() {
                every
            } else {
                (every / 10).max(Duration::from_millis(100))
            };
            drop(core);
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(wait) => {}
            }
        }
    });
}

impl Core {
    /// Brings the stored root key and recovery key up to date with the
    /// configured seals (see the module docs), in one transaction under
    /// the operation lock so it never races this node's rekey or
    /// migration. Every read and the write go through the view of the
    /// active period `active` (cancelled before the HA lock is released):
    /// a refresh still in flight when this node steps down never
    /// overwrites what the next active node writes, such as the keys of
    /// its seal migration.
    pub(crate) async fn refresh_seal_wraps(
        &self,
        set: &SealSet,
        active: &CancellationToken,
    ) -> Result<(), CoreError> {
        let _op = self.inner.op_lock.lock().await;
        if self.is_sealed() {
            return Err(CoreError::Sealed);
        }
        let storage = ActiveView::new(self.inner.physical.clone(), active.clone());
        let generation = read_seal_generation(&storage).await?;
        if generation != self.inner.seal_generation.load(Ordering::SeqCst) {
            tracing::warn!(
                api_addr = self.inner.options.api_addr.as_deref().unwrap_or(""),
                "the seals were migrated (or a seal removed) by another node since this node \
                 unsealed: the stored keys are left alone; restart this node with the new seal \
                 configuration"
            );
            return Ok(());
        }
        let stored = storage.get(STORED_KEYS_PATH).await?;
        let recovery = storage.get(RECOVERY_KEY_PATH).await?;
        let (Some(stored), Some(recovery)) = (stored, recovery) else {
            return Ok(());
        };
        let root_plain = set
            .unwrap_any(&stored, STORED_KEYS_PATH.as_bytes())
            .await
            .map_err(|e| CoreError::seal("reading the stored keys for a refresh failed", e))?;
        let rk_plain = set
            .unwrap_any(&recovery, RECOVERY_KEY_PATH.as_bytes())
            .await
            .map_err(|e| CoreError::seal("reading the recovery key for a refresh failed", e))?;
        let root = set
            .refresh(&stored, &root_plain, STORED_KEYS_PATH.as_bytes())
            .await
            .map_err(|e| CoreError::seal("re-wrapping the stored keys failed", e))?;
        let rk = set
            .refresh(&recovery, &rk_plain, RECOVERY_KEY_PATH.as_bytes())
            .await
            .map_err(|e| CoreError::seal("re-wrapping the recovery key failed", e))?;
        let refreshed = root.replacement.unwrap_or_else(|| stored.clone());
        let with_glass = break_glass::restamp(
            set,
            &refreshed,
            &root_plain,
            self.inner.recovery_unseal.then_some(&rk_plain[..]),
        )
        .await?;
        let mut ops = Vec::new();
        if with_glass != stored {
            ops.push(TxnOp::put(STORED_KEYS_PATH, with_glass));
        }
        if let Some(new_rk) = rk.replacement {
            ops.push(TxnOp::put(RECOVERY_KEY_PATH, new_rk));
        }
        // A seal removed from the config loses its wraps for good: a new
        // generation keeps nodes still configured with it (unsealed before
        // this) from putting them back, as after a migration.
        let bumped = (root.dropped || rk.dropped).then_some(generation + 1);
        if let (Some(next), false) = (bumped, ops.is_empty()) {
            ops.push(seal_generation_op(next));
        }
        if !ops.is_empty() {
            storage.transaction(ops).await?;
            if let Some(next) = bumped {
                self.inner.seal_generation.store(next, Ordering::SeqCst);
                tracing::info!(
                    generation = next,
                    "a seal no longer in the config lost its wraps of the stored keys; nodes \
                     still configured with it leave the keys alone until restarted with this \
                     node's seal configuration"
                );
            }
            tracing::info!(
                seals = ?set.names(),
                complete = root.complete && rk.complete,
                "the seals' wraps of the stored keys were refreshed"
            );
        }
        set.set_fully_wrapped(root.complete && rk.complete);
        Ok(())
    }
}
