//! [`UnsealProgress`]: collecting shares from several operators until the
//! threshold is reached.

use std::fmt;
use std::sync::{Mutex, MutexGuard, PoisonError};

use seal_core::UnsealShare;
use subtle::{Choice, ConstantTimeEq};
use zeroize::Zeroizing;

use crate::{MAX_SHARES, ShamirError, combine};

/// What an observer may know about an operation in progress: how many
/// distinct shares were accepted and the nonce that names the operation.
/// Both are public in Vault (`sys/seal-status` shows `progress` and `nonce`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProgressStatus {
    /// Distinct shares accepted so far.
    pub progress: usize,
    /// The operation's nonce (a UUID), `None` when nothing is in progress.
    pub nonce: Option<String>,
}

/// The outcome of an accepted share.
pub enum Submit {
    /// Below the threshold (or a duplicate share, ignored): the status after
    /// this share.
    Pending(ProgressStatus),
    /// The threshold was reached: the combined secret. Progress has been
    /// cleared. The caller must still check the secret (by unwrapping the
    /// stored root key with it), since a wrong set of shares also combines
    /// to *some* value.
    Complete(Zeroizing<Vec<u8>>),
}

impl fmt::Debug for Submit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Pending(status) => f.debug_tuple("Pending").field(status).finish(),
            Self::Complete(_) => f.debug_tuple("Complete").finish_non_exhaustive(),
        }
    }
}

#[derive(Default)]
struct Inner {
    parts: Vec<UnsealShare>,
    nonce: Option<String>,
    /// The nonce was fixed by [`UnsealProgress::start_with_nonce`]: shares
    /// must present it.
    nonce_protected: bool,
}

impl Inner {
    fn status(&self) -> ProgressStatus {
        ProgressStatus {
            progress: self.parts.len(),
            nonce: self.nonce.clone(),
        }
    }

    fn clear(&mut self) {
        // Dropping the shares zeroizes them.
        self.parts.clear();
        self.nonce = None;
        self.nonce_protected = false;
    }
}

/// The progress of an operation that needs `threshold` distinct shares:
/// unseal, unseal with recovery keys, rekey, generate-root.
///
/// Safe to share between request handlers (an internal mutex orders the
/// submissions, so none is lost). Semantics follow Vault's
/// `unlockInformation`:
///
/// * the first accepted share creates the nonce (a random UUID);
/// * a share equal to one already held (compared in constant time) is
///   ignored without error;
/// * at the threshold the shares are combined and progress is cleared,
///   whatever the outcome, so the next share starts a new operation with a
///   new nonce;
/// * [`reset`](Self::reset) clears progress.
///
/// Operations that hand out their nonce up front (rekey, generate-root)
/// begin with [`start_with_nonce`](Self::start_with_nonce) and submit with
/// [`submit_with_nonce`](Self::submit_with_nonce), which refuses another
/// operation's nonce.
#[derive(Default)]
pub struct UnsealProgress {
    inner: Mutex<Inner>,
}

impl fmt::Debug for UnsealProgress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UnsealProgress")
            .field("status", &self.status())
            .finish()
    }
}

impl UnsealProgress {
    /// No operation in progress.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave Inner half-updated in
        // a way that matters (worst case: a share too many is dropped), so a
        // poisoned lock is used as is rather than failing every later call.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Shares accepted so far and the current nonce.
    pub fn status(&self) -> ProgressStatus {
        self.lock().status()
    }

    /// Clears progress and the nonce; held shares are zeroized.
    pub fn reset(&self) {
        self.lock().clear();
    }

    /// Begins a nonce-protected operation (rekey, generate-root): clears any
    /// progress and returns the new operation's nonce, which every share of
    /// it must present through [`submit_with_nonce`](Self::submit_with_nonce).
    pub fn start_with_nonce(&self) -> String {
        let mut inner = self.lock();
        inner.clear();
        let nonce = new_nonce();
        inner.nonce = Some(nonce.clone());
        inner.nonce_protected = true;
        nonce
    }

    /// Adds one share of an unseal (no nonce needed, as in Vault's
    /// `sys/unseal`).
    ///
    /// With `threshold` 1 the share is the secret itself. Otherwise shares
    /// accumulate; the one that reaches `threshold` triggers [`combine`].
    ///
    /// # Errors
    /// * [`ShamirError::InvalidThreshold`] for a threshold outside 1..=255
    ///   (nothing changes).
    /// * [`ShamirError::NonceRequired`] while a nonce-protected operation is
    ///   in progress (nothing changes).
    /// * At the threshold, [`combine`]'s errors (shares of different lengths,
    ///   duplicate x-coordinates); progress is cleared as on success.
    pub fn submit(&self, share: UnsealShare, threshold: usize) -> Result<Submit, ShamirError> {
        check_threshold(threshold)?;
        let mut inner = self.lock();
        if inner.nonce_protected {
            return Err(ShamirError::NonceRequired {
                expected: inner.nonce.clone().unwrap_or_default(),
            });
        }
        accept(&mut inner, share, threshold)
    }

    /// Adds one share of a nonce-protected operation started with
    /// [`start_with_nonce`](Self::start_with_nonce). Also accepts the nonce
    /// of an operation begun by a plain [`submit`](Self::submit), so a
    /// client that read the nonce from the status can continue it.
    ///
    /// # Errors
    /// * [`ShamirError::NoOperation`] when nothing is in progress.
    /// * [`ShamirError::NonceMismatch`] when `nonce` is not the current
    ///   operation's (nothing changes).
    /// * Otherwise as [`submit`](Self::submit).
    pub fn submit_with_nonce(
        &self,
        share: UnsealShare,
        threshold: usize,
        nonce: &str,
    ) -> Result<Submit, ShamirError> {
        check_threshold(threshold)?;
        let mut inner = self.lock();
        let Some(current) = inner.nonce.as_deref() else {
            return Err(ShamirError::NoOperation);
        };
        if !bool::from(current.as_bytes().ct_eq(nonce.as_bytes())) {
            return Err(ShamirError::NonceMismatch {
                expected: current.to_owned(),
            });
        }
        accept(&mut inner, share, threshold)
    }
}

fn check_threshold(threshold: usize) -> Result<(), ShamirError> {
    if (1..=MAX_SHARES).contains(&threshold) {
        Ok(())
    } else {
        Err(ShamirError::InvalidThreshold { threshold })
    }
}

fn new_nonce() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// The common path of both submits, under the lock.
fn accept(inner: &mut Inner, share: UnsealShare, threshold: usize) -> Result<Submit, ShamirError> {
    if threshold == 1 {
        // A single-share configuration: the share is the secret, whatever
        // was held before (stale shares of an earlier configuration).
        inner.clear();
        return Ok(Submit::Complete(Zeroizing::new(
            share.expose_secret().to_vec(),
        )));
    }
    let duplicate = inner
        .parts
        .iter()
        .fold(Choice::from(0), |acc, held| acc | held.ct_eq(&share));
    if bool::from(duplicate) {
        // `share` is dropped (zeroized) here.
        return Ok(Submit::Pending(inner.status()));
    }
    if inner.nonce.is_none() {
        inner.nonce = Some(new_nonce());
    }
    inner.parts.push(share);
    if inner.parts.len() < threshold {
        return Ok(Submit::Pending(inner.status()));
    }

    // Threshold reached: whatever happens, the operation is over.
    let parts = std::mem::take(&mut inner.parts);
    inner.clear();
    combine(&parts).map(Submit::Complete)
}
