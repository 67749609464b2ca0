//! [`ShamirSeal`]: the seal whose key operators assemble from shares.

use std::sync::{PoisonError, RwLock};

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use async_trait::async_trait;
use seal_core::{Kek, Seal, SealError, SealType, blob};
use zeroize::Zeroizing;

const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;

/// The Shamir seal: AES-256-GCM wrapping of the stored root key under the
/// key-encryption key (KEK) that the unseal shares combine to.
///
/// It starts without a key, so every call fails with
/// [`SealError::NotReady`]; the core calls [`ShamirSeal::set_kek`] once the
/// shares have been combined (or at init, with the freshly generated KEK),
/// and [`ShamirSeal::clear_kek`] when it seals again. Blob body:
/// `nonce (12) | ciphertext | tag (16)` after the [`blob`] header, the same
/// layout as Vault's Shamir wrapper (`iv || ct || tag`).
#[derive(Debug, Default)]
pub struct ShamirSeal {
    kek: RwLock<Option<Kek>>,
}

impl ShamirSeal {
    /// A seal with no key yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Installs the KEK (replacing any earlier one, e.g. after a rekey).
    pub fn set_kek(&self, kek: Kek) {
        *self.kek.write().unwrap_or_else(PoisonError::into_inner) = Some(kek);
    }

    /// Forgets (and zeroizes) the KEK, as sealing does.
    pub fn clear_kek(&self) {
        self.kek
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
    }

    /// Whether a KEK is installed, i.e. whether encrypt/decrypt can work.
    pub fn has_kek(&self) -> bool {
        self.kek
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .is_some()
    }

    /// Builds the cipher from the current KEK, holding the lock only for
    /// the key schedule.
    fn cipher(&self) -> Result<Aes256Gcm, SealError> {
        let guard = self.kek.read().unwrap_or_else(PoisonError::into_inner);
        let Some(kek) = guard.as_ref() else {
            return Err(SealError::NotReady(
                "the Shamir seal has no key yet: enter the unseal key shares first".into(),
            ));
        };
        Aes256Gcm::new_from_slice(kek.expose_secret())
            .map_err(|_| SealError::Backend("Shamir key-encryption key is not 32 bytes".into()))
    }
}

#[async_trait]
impl Seal for ShamirSeal {
    fn seal_type(&self) -> SealType {
        SealType::Shamir
    }

    async fn encrypt(&self, plaintext: &[u8], aad: &[u8]) -> Result<Vec<u8>, SealError> {
        let cipher = self.cipher()?;
        let nonce = seal_core::random_bytes(NONCE_LEN)
            .map_err(|e| SealError::Backend(format!("Shamir seal nonce: {e}")))?;
        let ct = cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad,
                },
            )
            .map_err(|_| {
                SealError::Backend("AES-GCM encryption under the Shamir KEK failed".into())
            })?;
        let mut body = Vec::with_capacity(NONCE_LEN + ct.len());
        body.extend_from_slice(&nonce);
        body.extend_from_slice(&ct);
        Ok(blob::encode(SealType::Shamir, &body))
    }

    /// Also opens Vault's Shamir wrapper blob (`EncryptedBlobInfo` whose
    /// ciphertext is `iv || ct || tag`, Vault ≥ 1.3 with stored keys), so a
    /// Vault data set unseals with Vault's keys. Vault wrapped without
    /// associated data, so `aad` does not apply to those blobs.
    async fn decrypt(&self, blob: &[u8], aad: &[u8]) -> Result<Zeroizing<Vec<u8>>, SealError> {
        let vault;
        let (body, aad) = if seal_core::vault_blob::is_vault_blob(blob) {
            vault = seal_core::vault_blob::parse(blob)?;
            (vault.ciphertext.as_slice(), &[][..])
        } else {
            (blob::decode(SealType::Shamir, blob)?, aad)
        };
        if body.len() < NONCE_LEN + TAG_LEN {
            return Err(SealError::Malformed(
                "Shamir seal blob shorter than nonce and tag",
            ));
        }
        let cipher = self.cipher()?;
        let (nonce, ct) = body.split_at(NONCE_LEN);
        cipher
            .decrypt(Nonce::from_slice(nonce), Payload { msg: ct, aad })
            .map(Zeroizing::new)
            .map_err(|_| SealError::Decrypt)
    }
}
