//! Root token generation (`sys/generate-root/*`): a quorum of key holders
//! makes a new root token when none is left (or the old one was revoked).
//!
//! Flow, as Vault's: `attempt` (PUT) starts an attempt and hands out a
//! nonce and a one-time pad (OTP) of the root token's length; each key
//! holder enters a key with the nonce through `update`; at the threshold the
//! keys are checked — unseal keys must open the stored root key (Shamir),
//! recovery keys must equal the stored recovery key (auto seal) — and a new
//! root token is made and returned XOR-ed with the OTP (unpadded base64), so
//! whoever sees the response without the OTP learns nothing. The operator
//! who started the attempt decodes it (`operator generate-root -decode`).
//!
//! The attempt lives in memory only (nonce, OTP and the collected key
//! shares, the latter two zeroized on drop): a restart or a seal loses it,
//! as in Vault, so nothing of it ever reaches storage.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD_NO_PAD as B64_RAW;
use seal_shamir::{ShamirError, Submit, UnsealProgress};
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, Zeroizing};

use crate::logical::random_base62;
use crate::{Core, CoreError};

/// Length of a root token (`hvs.` and 24 base62 characters), hence of the
/// OTP: the encoded token is the XOR of the two.
pub const ROOT_TOKEN_OTP_LENGTH: usize = 28;

/// One attempt in progress.
pub(crate) struct GenerateRootOp {
    nonce: String,
    otp: Zeroizing<String>,
    progress: UnsealProgress,
}

impl fmt::Debug for GenerateRootOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GenerateRootOp")
            .field("nonce", &self.nonce)
            .field("progress", &self.progress.status().progress)
            .finish_non_exhaustive()
    }
}

/// Vault's generate-root status body (`sys/generate-root/attempt` and
/// `/update`): every field always present, at the top level.
///
/// `otp` is set only in the answer that started the attempt with a
/// server-made OTP, `encoded_token` only in the answer that completed it.
/// `Debug` prints neither.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GenerateRootStatus {
    /// The attempt's nonce (`""` when none is in progress).
    pub nonce: String,
    /// Whether an attempt is in progress.
    pub started: bool,
    /// Keys entered so far.
    pub progress: usize,
    /// Keys needed: the unseal threshold (Shamir) or the recovery threshold
    /// (auto seal).
    pub required: usize,
    /// Whether the new root token was generated.
    pub complete: bool,
    /// The new root token XOR the OTP, unpadded standard base64.
    pub encoded_token: String,
    /// The same as `encoded_token` (Vault's older name).
    pub encoded_root_token: String,
    /// Always empty: PGP is not supported.
    pub pgp_fingerprint: String,
    /// The server-made OTP, only in the answer that started the attempt.
    pub otp: String,
    /// The OTP length clients must generate (the root token's length).
    pub otp_length: usize,
}

impl Drop for GenerateRootStatus {
    fn drop(&mut self) {
        self.otp.zeroize();
        self.encoded_token.zeroize();
        self.encoded_root_token.zeroize();
    }
}

impl fmt::Debug for GenerateRootStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GenerateRootStatus")
            .field("nonce", &self.nonce)
            .field("started", &self.started)
            .field("progress", &self.progress)
            .field("required", &self.required)
            .field("complete", &self.complete)
            .finish_non_exhaustive()
    }
}

/// XORs `token` with `otp` and encodes the result as Vault does (unpadded
/// standard base64).
///
/// # Errors
/// [`CoreError::InvalidRequest`] when the lengths differ.
pub fn encode_root_token(token: &str, otp: &str) -> Result<String, CoreError> {
    let mixed = xor(token.as_bytes(), otp.as_bytes())?;
    Ok(B64_RAW.encode(&*mixed))
}

/// Reverses [`encode_root_token`] (`sys/decode-token`, `-decode -otp`).
///
/// # Errors
/// [`CoreError::InvalidRequest`] for empty input, bad base64, a length that
/// does not match the OTP, or a result that is not text.
pub fn decode_root_token(encoded: &str, otp: &str) -> Result<Zeroizing<String>, CoreError> {
    if encoded.is_empty() || otp.is_empty() {
        return Err(CoreError::InvalidRequest(
            "provided 'encoded_token' or 'otp' is empty".into(),
        ));
    }
    let raw = Zeroizing::new(B64_RAW.decode(encoded.trim()).map_err(|_| {
        CoreError::InvalidRequest("error decoding base64'd token: invalid base64".into())
    })?);
    let plain = xor(&raw, otp.as_bytes())?;
    let text = std::str::from_utf8(&plain)
        .map_err(|_| CoreError::InvalidRequest("the decoded token is not text".into()))?;
    Ok(Zeroizing::new(text.to_owned()))
}

fn xor(a: &[u8], b: &[u8]) -> Result<Zeroizing<Vec<u8>>, CoreError> {
    if a.len() != b.len() {
        return Err(CoreError::InvalidRequest(format!(
            "length of byte slices is not equivalent: {} != {}",
            a.len(),
            b.len()
        )));
    }
    let mut out = Zeroizing::new(Vec::with_capacity(a.len()));
    out.extend(a.iter().zip(b).map(|(x, y)| x ^ y));
    Ok(out)
}

fn no_attempt() -> CoreError {
    CoreError::InvalidRequest("no root generation in progress".into())
}

impl Core {
    /// The keys that authorize a root generation: the unseal threshold, or
    /// the recovery threshold on an auto seal.
    async fn generate_root_required(&self) -> Result<usize, CoreError> {
        if !self.is_initialized().await? {
            return Err(CoreError::InvalidRequest(
                "server is not yet initialized".into(),
            ));
        }
        if self.is_sealed() {
            return Err(CoreError::Sealed);
        }
        // The attempt lives on the active node (a standby answers with the
        // active node's address, which the HTTP layer forwards to), so every
        // key holder reaches the same attempt.
        self.serving().await?;
        Ok(self
            .unseal_config()
            .await?
            .map_or(0, |c| c.secret_threshold))
    }

    fn generate_root_status_of(op: Option<&GenerateRootOp>, required: usize) -> GenerateRootStatus {
        let mut status = GenerateRootStatus::default();
        status.required = required;
        status.otp_length = ROOT_TOKEN_OTP_LENGTH;
        if let Some(op) = op {
            status.nonce.clone_from(&op.nonce);
            status.started = true;
            status.progress = op.progress.status().progress;
        }
        status
    }

    /// The root generation in progress (`GET sys/generate-root/attempt`).
    ///
    /// # Errors
    /// [`CoreError::InvalidRequest`] before init; [`CoreError::Sealed`];
    /// [`CoreError::Standby`] on an HA standby.
    pub async fn generate_root_status(&self) -> Result<GenerateRootStatus, CoreError> {
        let required = self.generate_root_required().await?;
        let slot = self.inner.generate_root.lock().await;
        Ok(Self::generate_root_status_of(slot.as_ref(), required))
    }

    /// Starts a root generation (`PUT sys/generate-root/attempt`). Without
    /// an `otp` the server makes one and returns it in this answer only;
    /// a client OTP must have the root token's length.
    ///
    /// # Errors
    /// [`CoreError::InvalidRequest`] when an attempt is already running, for
    /// an OTP of the wrong length, for a PGP key (not supported), before
    /// init; [`CoreError::Sealed`].
    pub async fn generate_root_init(
        &self,
        otp: Option<&str>,
        pgp_key: Option<&str>,
    ) -> Result<GenerateRootStatus, CoreError> {
        let required = self.generate_root_required().await?;
        let otp = otp.filter(|o| !o.is_empty());
        if otp.is_none() && pgp_key.is_some_and(|k| !k.is_empty()) {
            return Err(CoreError::InvalidRequest(
                "pgp_key is not supported: strongroom does not PGP-encrypt tokens; start the \
                 attempt without pgp_key and decode the token with the OTP"
                    .into(),
            ));
        }
        if otp.is_some_and(|o| o.len() != ROOT_TOKEN_OTP_LENGTH) {
            return Err(CoreError::InvalidRequest(
                "OTP string is wrong length".into(),
            ));
        }
        let mut slot = self.inner.generate_root.lock().await;
        if slot.is_some() {
            return Err(CoreError::InvalidRequest(
                "root generation already in progress".into(),
            ));
        }
        let generated = otp.is_none();
        let otp = Zeroizing::new(match otp {
            Some(otp) => otp.to_owned(),
            None => random_base62(ROOT_TOKEN_OTP_LENGTH)
                .map_err(|e| CoreError::Random(e.to_string()))?,
        });
        // The nonce is checked here, so the progress itself is a plain one:
        // at the threshold it clears the shares and the attempt keeps its
        // nonce and OTP whatever the outcome.
        let op = GenerateRootOp {
            nonce: uuid::Uuid::new_v4().to_string(),
            otp,
            progress: UnsealProgress::new(),
        };
        let mut status = Self::generate_root_status_of(Some(&op), required);
        if generated {
            status.otp.clone_from(&op.otp);
        }
        *slot = Some(op);
        tracing::info!(required, "root generation started");
        Ok(status)
    }

    /// Cancels the root generation in progress (`DELETE
    /// sys/generate-root/attempt`); the nonce, OTP and entered keys are
    /// forgotten. Cancelling when none runs is not an error.
    ///
    /// # Errors
    /// [`CoreError::InvalidRequest`] before init; [`CoreError::Sealed`].
    pub async fn generate_root_cancel(&self) -> Result<(), CoreError> {
        self.generate_root_required().await?;
        if self.inner.generate_root.lock().await.take().is_some() {
            tracing::info!("root generation cancelled");
        }
        Ok(())
    }

    /// Enters one key (unseal key, or recovery key on an auto seal) for the
    /// root generation under `nonce` (`sys/generate-root/update`). At the
    /// threshold the keys are checked and, when they are the current ones,
    /// a new root token is created and returned encoded with the OTP
    /// (`complete: true`); the attempt then ends.
    ///
    /// # Errors
    /// [`CoreError::InvalidRequest`] without an attempt, for a wrong nonce
    /// or a key already entered; [`CoreError::InvalidKey`] for a malformed
    /// key, or at the threshold for keys that are not the current ones
    /// ("root generation aborted: …": the entered keys are cleared, the
    /// attempt, its nonce and OTP stay); [`CoreError::Sealed`]; storage
    /// errors.
    pub async fn generate_root_update(
        &self,
        key: &str,
        nonce: &str,
    ) -> Result<GenerateRootStatus, CoreError> {
        let required = self.generate_root_required().await?;
        let share = seal_shamir::parse_share(key)?;
        let mut slot = self.inner.generate_root.lock().await;
        let op = slot.as_mut().ok_or_else(no_attempt)?;
        if !bool::from(op.nonce.as_bytes().ct_eq(nonce.as_bytes())) {
            return Err(CoreError::InvalidRequest(format!(
                "incorrect nonce supplied; nonce for this root generation operation is {:?}",
                op.nonce
            )));
        }
        let before = op.progress.status().progress;
        let secret = match op.progress.submit(share, required) {
            Ok(Submit::Pending(status)) => {
                if status.progress == before {
                    return Err(CoreError::InvalidRequest(
                        "given key has already been provided during this generation operation"
                            .into(),
                    ));
                }
                return Ok(Self::generate_root_status_of(Some(op), required));
            }
            Ok(Submit::Complete(secret)) => secret,
            Err(err @ ShamirError::Random(_)) => return Err(err.into()),
            Err(err) => {
                // The shares were cleared; the attempt (nonce, OTP) stays.
                return Err(CoreError::InvalidKey(format!(
                    "root generation aborted: failed to compute the combined key: {err}; the \
                     entered keys were cleared, enter the current keys again"
                )));
            }
        };
        if !self.secret_opens_current_keys(&secret).await? {
            let what = if self.inner.seal.is_auto() {
                "recovery key verification failed: the recovery keys entered are not the current \
                 recovery keys"
            } else {
                "the unseal keys entered are not the current unseal keys"
            };
            return Err(CoreError::InvalidKey(format!(
                "root generation aborted: {what}; the entered keys were cleared, enter the current \
                 keys again under the same nonce"
            )));
        }
        let Some(op) = slot.take() else {
            return Err(no_attempt());
        };
        drop(slot);
        let logical = self.logical()?;
        let token = Zeroizing::new(logical.create_root_token(None).await?);
        let encoded = encode_root_token(&token, &op.otp)?;
        tracing::info!("root generation completed: a new root token was created");
        let mut status = Self::generate_root_status_of(None, required);
        status.nonce.clone_from(&op.nonce);
        status.started = true;
        status.progress = required;
        status.complete = true;
        status.encoded_root_token.clone_from(&encoded);
        status.encoded_token = encoded;
        Ok(status)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn encoding_is_unpadded_base64_of_the_xor() {
        let token = "hvs.abcdefghijklmnopqrstuvwx";
        let otp = "0123456789abcdefghijklmnopq1";
        assert_eq!(token.len(), ROOT_TOKEN_OTP_LENGTH);
        let encoded = encode_root_token(token, otp).unwrap();
        assert_eq!(encoded.len(), 38);
        assert!(!encoded.contains('='));
        assert_eq!(decode_root_token(&encoded, otp).unwrap().as_str(), token);
    }

    #[test]
    fn decode_refuses_bad_input() {
        assert!(decode_root_token("", "x").is_err());
        assert!(decode_root_token("AAAA", "").is_err());
        assert!(decode_root_token("!!!!", "abc").is_err());
        assert!(decode_root_token("AAAA", "ab").is_err());
    }

    proptest! {
        #[test]
        fn decode_never_panics(enc in ".{0,64}", otp in ".{0,40}") {
            let _ = decode_root_token(&enc, &otp);
        }
    }
}
