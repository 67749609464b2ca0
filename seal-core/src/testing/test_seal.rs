//! [`InsecureTestSeal`]: an auto seal that needs no cloud, for tests.

use std::sync::atomic::{AtomicBool, Ordering};

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use async_trait::async_trait;
use zeroize::Zeroizing;

use crate::{Kek, Seal, SealError, SealType, blob};

const NONCE_LEN: usize = 12;

/// An auto seal holding its AES-256-GCM key in process memory.
///
/// Insecure by design: whoever has the process has the key. It behaves like
/// a KMS seal (auto-unseal, recovery keys) and can be told to fail as an
/// unreachable KMS would, so the core's retry paths are testable without a
/// network. Blob body: `nonce (12) | ciphertext | tag (16)`.
#[derive(Debug)]
pub struct InsecureTestSeal {
    key: Kek,
    unreachable: AtomicBool,
}

impl InsecureTestSeal {
    /// A seal with a fresh random key.
    ///
    /// # Panics
    /// If the OS random source fails (tests only).
    #[allow(clippy::expect_used)]
    pub fn new() -> Self {
        Self::with_key(Kek::generate().expect("OS random source"))
    }

    /// A seal with the given key, so two instances can share blobs (as two
    /// nodes sharing one KMS key do).
    pub fn with_key(key: Kek) -> Self {
        Self {
            key,
            unreachable: AtomicBool::new(false),
        }
    }

    /// Makes every call fail with [`SealError::Unreachable`] (as a KMS
    /// outage would) until called again with `false`.
    pub fn set_unreachable(&self, unreachable: bool) {
        self.unreachable.store(unreachable, Ordering::SeqCst);
    }

    fn check_reachable(&self) -> Result<(), SealError> {
        if self.unreachable.load(Ordering::SeqCst) {
            return Err(SealError::Unreachable(
                "insecure test seal is set to unreachable".into(),
            ));
        }
        Ok(())
    }

    fn cipher(&self) -> Result<Aes256Gcm, SealError> {
        Aes256Gcm::new_from_slice(self.key.expose_secret())
            .map_err(|_| SealError::Backend("test seal key has the wrong length".into()))
    }
}

impl Default for InsecureTestSeal {
    fn default() -> Self {
        Self::new()
    }
}

#[async_trait]
impl Seal for InsecureTestSeal {
    fn seal_type(&self) -> SealType {
        SealType::Test
    }

    async fn encrypt(&self, plaintext: &[u8], aad: &[u8]) -> Result<Vec<u8>, SealError> {
        self.check_reachable()?;
        let nonce =
            crate::random_bytes(NONCE_LEN).map_err(|e| SealError::Backend(e.to_string()))?;
        let ct = self
            .cipher()?
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad,
                },
            )
            .map_err(|_| SealError::Backend("AES-GCM encryption failed".into()))?;
        let mut body = Vec::with_capacity(NONCE_LEN + ct.len());
        body.extend_from_slice(&nonce);
        body.extend_from_slice(&ct);
        Ok(blob::encode(SealType::Test, &body))
    }

    async fn decrypt(&self, blob: &[u8], aad: &[u8]) -> Result<Zeroizing<Vec<u8>>, SealError> {
        self.check_reachable()?;
        let body = blob::decode(SealType::Test, blob)?;
        if body.len() < NONCE_LEN + 16 {
            return Err(SealError::Malformed(
                "test seal blob shorter than nonce and tag",
            ));
        }
        let (nonce, ct) = body.split_at(NONCE_LEN);
        self.cipher()?
            .decrypt(Nonce::from_slice(nonce), Payload { msg: ct, aad })
            .map(Zeroizing::new)
            .map_err(|_| SealError::Decrypt)
    }
}
