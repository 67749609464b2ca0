//! Break-glass (opt-in, `recovery_unseal = true`): a copy of the root key
//! wrapped under the recovery key, stored beside the auto seals' wraps, so a
//! quorum of recovery-key holders can unseal when every auto seal is gone
//! (a deleted or long-unavailable KMS key).
//!
//! The trade-off, plainly: with it on, the recovery keys are unseal keys
//! too. Whoever gathers the recovery threshold and a copy of the storage
//! can read everything, without the KMS. That is the point — it turns a
//! lost KMS key from "data lost" into "quorum needed" — and the reason it
//! is off unless asked for. Turning it off removes the copy at the next
//! unseal.
//!
//! The wrap is AES-256-GCM under the 32-byte recovery key with the stored
//! keys' path as associated data (the same construction as the Shamir seal
//! under its key-encryption key), in the slot named `recovery-key` of the
//! multi-seal document at `core/hsm/barrier-unseal-keys`. A recovery rekey
//! re-wraps it under the new recovery key in the same transaction.

use seal_core::{Kek, RootKey, Seal, SealError};
use seal_shamir::ShamirSeal;

use crate::CoreError;
use crate::config::STORED_KEYS_PATH;
use crate::error::corrupt;
use crate::seal_set::{MultiWrap, RECOVERY_SLOT, RECOVERY_SLOT_TYPE, Slot};
use crate::unseal::decode_stored_keys;

fn sealer(recovery_key: &[u8]) -> Result<ShamirSeal, CoreError> {
    let seal = ShamirSeal::new();
    seal.set_kek(Kek::from_bytes(recovery_key)?);
    Ok(seal)
}

/// The break-glass slot: `encoded_root` wrapped under `recovery_key`.
///
/// # Errors
/// [`CoreError::InvalidKey`] for a recovery key that is not 32 bytes;
/// [`CoreError::Seal`] if encryption fails.
pub(crate) async fn recovery_slot(
    recovery_key: &[u8],
    encoded_root: &[u8],
) -> Result<Slot, CoreError> {
    let blob = sealer(recovery_key)?
        .encrypt(encoded_root, STORED_KEYS_PATH.as_bytes())
        .await
        .map_err(|e| CoreError::seal("wrapping the root key under the recovery key failed", e))?;
    Ok(Slot::new(RECOVERY_SLOT, RECOVERY_SLOT_TYPE, &blob))
}

/// Whether the stored keys hold a break-glass slot.
pub(crate) fn has_recovery_slot(stored: &[u8]) -> bool {
    matches!(MultiWrap::parse(stored), Ok(Some(doc)) if doc.slot(RECOVERY_SLOT).is_some())
}

/// Opens the break-glass slot with the recovery key combined from the
/// shares entered. `Ok(None)`: there is no slot.
///
/// # Errors
/// [`CoreError::InvalidKey`] when the recovery key does not open it
/// (wrong shares); [`CoreError::Corrupt`] for a damaged slot.
pub(crate) async fn open_recovery_slot(
    stored: &[u8],
    recovery_key: &[u8],
) -> Result<Option<RootKey>, CoreError> {
    let Ok(Some(doc)) = MultiWrap::parse(stored) else {
        return Ok(None);
    };
    let Some(slot) = doc.slot(RECOVERY_SLOT) else {
        return Ok(None);
    };
    let wrong = || {
        CoreError::InvalidKey(
            "invalid recovery key: the recovery keys entered do not open the break-glass copy of \
             the root key; progress was reset, enter the current recovery keys again"
                .into(),
        )
    };
    let blob = slot.bytes().map_err(|e| CoreError::Corrupt {
        path: STORED_KEYS_PATH,
        reason: e.to_string(),
    })?;
    let Ok(seal) = sealer(recovery_key) else {
        return Err(wrong());
    };
    match seal.decrypt(&blob, STORED_KEYS_PATH.as_bytes()).await {
        Ok(plain) => decode_stored_keys(&plain)
            .map(Some)
            .map_err(corrupt(STORED_KEYS_PATH)),
        Err(SealError::Decrypt) => Err(wrong()),
        Err(e) => Err(CoreError::Corrupt {
            path: STORED_KEYS_PATH,
            reason: format!("the break-glass slot: {e}"),
        }),
    }
}

/// The stored keys with the break-glass slot replaced: wrapped under
/// `recovery_key` when given, removed otherwise (break-glass off, or the
/// recovery key changed and the caller passes the new one).
///
/// # Errors
/// [`CoreError::Seal`] / [`CoreError::Corrupt`] when the stored keys are
/// not readable as a seal document.
pub(crate) async fn restamp(
    set: &crate::seal_set::SealSet,
    stored: &[u8],
    encoded_root: &[u8],
    recovery_key: Option<&[u8]>,
) -> Result<Vec<u8>, CoreError> {
    let mut doc = set.as_doc(stored).map_err(|e| CoreError::Corrupt {
        path: STORED_KEYS_PATH,
        reason: e.to_string(),
    })?;
    doc.slots.retain(|s| s.name != RECOVERY_SLOT);
    if let Some(rk) = recovery_key {
        doc.put(recovery_slot(rk, encoded_root).await?);
    }
    set.store_form(&doc).map_err(|e| CoreError::Corrupt {
        path: STORED_KEYS_PATH,
        reason: e.to_string(),
    })
}
