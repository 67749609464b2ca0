//! The AES-GCM backends and the barrier's ciphertext layout.
//!
//! Layout (Vault's `AESGCMVersion2`):
//!
//! ```text
//! | term: u32 big-endian | version: 0x02 | nonce: 12 random bytes | AES-GCM ciphertext | tag: 16 |
//! ```
//!
//! The storage path is the additional authenticated data, so an entry copied
//! to another path no longer decrypts.

use std::fmt;

use zeroize::Zeroizing;

use crate::BarrierError;

/// Bytes of the big-endian key term that starts every entry.
pub const TERM_LEN: usize = 4;
/// The version byte this barrier writes and reads: AES-GCM with the path as
/// additional authenticated data.
pub const VERSION: u8 = 0x02;
/// Bytes of the random GCM nonce.
pub const NONCE_LEN: usize = 12;
/// Bytes of the GCM authentication tag.
pub const TAG_LEN: usize = 16;
/// Bytes before the ciphertext proper: term, version, nonce.
pub const HEADER_LEN: usize = TERM_LEN + 1 + NONCE_LEN;
/// Bytes a barrier entry adds to its plaintext.
pub const OVERHEAD: usize = HEADER_LEN + TAG_LEN;
/// The shortest possible barrier entry (an empty plaintext).
pub const MIN_CIPHERTEXT_LEN: usize = OVERHEAD;

#[cfg(not(any(feature = "aws-lc", feature = "rustcrypto")))]
compile_error!(
    "the barrier crate needs an AES-GCM backend: enable its feature `aws-lc` (recommended) or `rustcrypto`"
);

/// Which AES-GCM implementation encrypts and decrypts.
///
/// Both produce and accept the same bytes (the layout is fixed, the nonce is
/// random), so a store written with one opens with the other; choose on
/// speed and build needs, not on data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum AeadBackend {
    /// aws-lc-rs: several times faster than RustCrypto on x86-64 and
    /// aarch64, FIPS-capable; needs a C toolchain to build. The default.
    #[cfg(feature = "aws-lc")]
    AwsLc,
    /// RustCrypto's `aes-gcm`: pure Rust, constant-time, builds anywhere.
    #[cfg(feature = "rustcrypto")]
    RustCrypto,
}

impl AeadBackend {
    /// Every backend compiled into this build, fastest first.
    pub const ALL: &'static [AeadBackend] = &[
        #[cfg(feature = "aws-lc")]
        AeadBackend::AwsLc,
        #[cfg(feature = "rustcrypto")]
        AeadBackend::RustCrypto,
    ];

    /// A short name for logs and benchmark labels.
    pub const fn name(self) -> &'static str {
        match self {
            #[cfg(feature = "aws-lc")]
            Self::AwsLc => "aws-lc-rs",
            #[cfg(feature = "rustcrypto")]
            Self::RustCrypto => "rustcrypto",
        }
    }
}

impl Default for AeadBackend {
    /// aws-lc-rs when its feature is on, otherwise RustCrypto.
    fn default() -> Self {
        #[cfg(feature = "aws-lc")]
        {
            Self::AwsLc
        }
        #[cfg(not(feature = "aws-lc"))]
        {
            Self::RustCrypto
        }
    }
}

impl fmt::Display for AeadBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One AES-GCM key, ready to use, in the chosen backend.
///
/// The key schedules are wiped when dropped: aws-lc frees its context with
/// `OPENSSL_free`, which cleanses the memory; RustCrypto's `aes` and `ghash`
/// zeroize on drop (workspace feature `zeroize`).
pub(crate) struct KeyCipher {
    inner: Inner,
}

enum Inner {
    #[cfg(feature = "aws-lc")]
    AwsLc(aws_lc_rs::aead::LessSafeKey),
    #[cfg(feature = "rustcrypto")]
    RustCrypto128(Box<aes_gcm::Aes128Gcm>),
    #[cfg(feature = "rustcrypto")]
    RustCrypto256(Box<aes_gcm::Aes256Gcm>),
}

impl fmt::Debug for KeyCipher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyCipher")
            .field("backend", &self.backend().name())
            .finish_non_exhaustive()
    }
}

impl KeyCipher {
    /// Prepares `key` (16 bytes: AES-128, 32 bytes: AES-256) for `backend`.
    pub(crate) fn new(
        backend: AeadBackend,
        key: &[u8],
        what: &'static str,
    ) -> Result<Self, BarrierError> {
        if key.len() != 16 && key.len() != 32 {
            return Err(BarrierError::InvalidKeyLength {
                what,
                len: key.len(),
            });
        }
        let inner = match backend {
            #[cfg(feature = "aws-lc")]
            AeadBackend::AwsLc => {
                use aws_lc_rs::aead::{AES_128_GCM, AES_256_GCM, LessSafeKey, UnboundKey};
                let alg = if key.len() == 16 {
                    &AES_128_GCM
                } else {
                    &AES_256_GCM
                };
                let unbound =
                    UnboundKey::new(alg, key).map_err(|_| BarrierError::InvalidKeyLength {
                        what,
                        len: key.len(),
                    })?;
                Inner::AwsLc(LessSafeKey::new(unbound))
            }
            #[cfg(feature = "rustcrypto")]
            AeadBackend::RustCrypto => {
                use aes_gcm::KeyInit;
                let invalid = |_| BarrierError::InvalidKeyLength {
                    what,
                    len: key.len(),
                };
                if key.len() == 16 {
                    Inner::RustCrypto128(Box::new(
                        aes_gcm::Aes128Gcm::new_from_slice(key).map_err(invalid)?,
                    ))
                } else {
                    Inner::RustCrypto256(Box::new(
                        aes_gcm::Aes256Gcm::new_from_slice(key).map_err(invalid)?,
                    ))
                }
            }
        };
        Ok(Self { inner })
    }

    pub(crate) fn backend(&self) -> AeadBackend {
        match self.inner {
            #[cfg(feature = "aws-lc")]
            Inner::AwsLc(_) => AeadBackend::AwsLc,
            #[cfg(feature = "rustcrypto")]
            Inner::RustCrypto128(_) | Inner::RustCrypto256(_) => AeadBackend::RustCrypto,
        }
    }

    /// Encrypts `plaintext` into a new barrier entry of `term`, with `aad`
    /// (the storage path) authenticated. The output is allocated once at its
    /// final size.
    pub(crate) fn seal(
        &self,
        term: u32,
        aad: &[u8],
        plaintext: &[u8],
    ) -> Result<Vec<u8>, BarrierError> {
        // One allocation at final size, filled by copying (no zero-fill
        // pass first): header, then the plaintext, encrypted in place while
        // it is still in cache, then the tag.
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(&mut nonce).map_err(|e| BarrierError::Random(e.to_string()))?;
        let mut out = Vec::with_capacity(OVERHEAD + plaintext.len());
        out.extend_from_slice(&term.to_be_bytes());
        out.push(VERSION);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(plaintext);
        let ciphertext = &mut out[HEADER_LEN..];
        let failed = || BarrierError::Encrypt {
            backend: self.backend().name(),
        };
        let tag: [u8; TAG_LEN] = match &self.inner {
            #[cfg(feature = "aws-lc")]
            Inner::AwsLc(key) => {
                use aws_lc_rs::aead::{Aad, Nonce};
                let t = key
                    .seal_in_place_separate_tag(
                        Nonce::assume_unique_for_key(nonce),
                        Aad::from(aad),
                        ciphertext,
                    )
                    .map_err(|_| failed())?;
                t.as_ref().try_into().map_err(|_| failed())?
            }
            #[cfg(feature = "rustcrypto")]
            Inner::RustCrypto128(cipher) => rc_seal(cipher.as_ref(), &nonce, aad, ciphertext)
                .map_err(|_| failed())?
                .into(),
            #[cfg(feature = "rustcrypto")]
            Inner::RustCrypto256(cipher) => rc_seal(cipher.as_ref(), &nonce, aad, ciphertext)
                .map_err(|_| failed())?
                .into(),
        };
        out.extend_from_slice(&tag);
        Ok(out)
    }

    /// Authenticates and decrypts the parts of a parsed entry. Every failure
    /// is [`BarrierError::Decrypt`]; a partly written output is wiped.
    pub(crate) fn open(
        &self,
        aad: &[u8],
        entry: &Parsed<'_>,
    ) -> Result<Zeroizing<Vec<u8>>, BarrierError> {
        let mut out = Zeroizing::new(vec![0u8; entry.ciphertext.len()]);
        match &self.inner {
            #[cfg(feature = "aws-lc")]
            Inner::AwsLc(key) => {
                use aws_lc_rs::aead::{Aad, Nonce};
                key.open_separate_gather(
                    Nonce::assume_unique_for_key(*entry.nonce),
                    Aad::from(aad),
                    entry.ciphertext,
                    entry.tag,
                    &mut out,
                )
                .map_err(|_| BarrierError::Decrypt)?;
            }
            #[cfg(feature = "rustcrypto")]
            Inner::RustCrypto128(cipher) => {
                out.copy_from_slice(entry.ciphertext);
                rc_open(cipher.as_ref(), entry, aad, &mut out)?;
            }
            #[cfg(feature = "rustcrypto")]
            Inner::RustCrypto256(cipher) => {
                out.copy_from_slice(entry.ciphertext);
                rc_open(cipher.as_ref(), entry, aad, &mut out)?;
            }
        }
        Ok(out)
    }
}

#[cfg(feature = "rustcrypto")]
fn rc_seal<C>(
    cipher: &C,
    nonce: &[u8; NONCE_LEN],
    aad: &[u8],
    buf: &mut [u8],
) -> Result<aes_gcm::Tag, aes_gcm::Error>
where
    C: aes_gcm::AeadInPlace<
            NonceSize = aes_gcm::aead::consts::U12,
            TagSize = aes_gcm::aead::consts::U16,
        >,
{
    cipher.encrypt_in_place_detached(nonce.into(), aad, buf)
}

#[cfg(feature = "rustcrypto")]
fn rc_open<C>(
    cipher: &C,
    entry: &Parsed<'_>,
    aad: &[u8],
    buf: &mut [u8],
) -> Result<(), BarrierError>
where
    C: aes_gcm::AeadInPlace<
            NonceSize = aes_gcm::aead::consts::U12,
            TagSize = aes_gcm::aead::consts::U16,
        >,
{
    cipher
        .decrypt_in_place_detached(
            entry.nonce.into(),
            aad,
            buf,
            aes_gcm::Tag::from_slice(entry.tag),
        )
        .map_err(|_| BarrierError::Decrypt)
}

/// A barrier entry split into its fields, lengths already checked.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Parsed<'a> {
    pub(crate) term: u32,
    pub(crate) nonce: &'a [u8; NONCE_LEN],
    pub(crate) ciphertext: &'a [u8],
    pub(crate) tag: &'a [u8],
}

/// Splits untrusted bytes into a barrier entry's fields. Never panics: short
/// input and unknown versions are errors.
pub(crate) fn parse(input: &[u8]) -> Result<Parsed<'_>, BarrierError> {
    if input.len() < MIN_CIPHERTEXT_LEN {
        return Err(BarrierError::TooShort {
            len: input.len(),
            min: MIN_CIPHERTEXT_LEN,
        });
    }
    let (term, rest) = input.split_at(TERM_LEN);
    let (version, rest) = rest.split_at(1);
    if version[0] != VERSION {
        return Err(BarrierError::UnknownVersion {
            version: version[0],
        });
    }
    let (nonce, rest) = rest.split_at(NONCE_LEN);
    let (ciphertext, tag) = rest.split_at(rest.len() - TAG_LEN);
    let term = u32::from_be_bytes([term[0], term[1], term[2], term[3]]);
    let nonce: &[u8; NONCE_LEN] = nonce.try_into().map_err(|_| BarrierError::TooShort {
        len: input.len(),
        min: MIN_CIPHERTEXT_LEN,
    })?;
    Ok(Parsed {
        term,
        nonce,
        ciphertext,
        tag,
    })
}

/// Reads the term of an entry without authenticating it (for diagnostics
/// and for choosing the key).
///
/// # Errors
/// [`BarrierError::TooShort`] or [`BarrierError::UnknownVersion`] for input
/// that is not a barrier entry.
pub fn entry_term(ciphertext: &[u8]) -> Result<u32, BarrierError> {
    parse(ciphertext).map(|p| p.term)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_splits_the_fields() {
        let mut entry = vec![0, 0, 1, 2, VERSION];
        entry.extend(1..=12u8);
        entry.extend([0xc0; 5]);
        entry.extend([0x7a; TAG_LEN]);
        let parsed = parse(&entry).unwrap();
        assert_eq!(parsed.term, 0x0102);
        assert_eq!(parsed.nonce, &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]);
        assert_eq!(parsed.ciphertext, &[0xc0; 5]);
        assert_eq!(parsed.tag, &[0x7a; TAG_LEN]);
        assert_eq!(entry_term(&entry).unwrap(), 0x0102);
    }

    #[test]
    fn parse_refuses_short_and_unknown_versions() {
        for len in 0..MIN_CIPHERTEXT_LEN {
            let entry = vec![VERSION; len];
            assert!(
                matches!(parse(&entry), Err(BarrierError::TooShort { .. })),
                "{len}"
            );
        }
        let mut entry = vec![0u8; MIN_CIPHERTEXT_LEN];
        entry[TERM_LEN] = 1;
        assert!(matches!(
            parse(&entry),
            Err(BarrierError::UnknownVersion { version: 1 })
        ));
        entry[TERM_LEN] = VERSION;
        let empty = parse(&entry).unwrap();
        assert!(empty.ciphertext.is_empty());
    }

    #[test]
    fn keys_of_other_lengths_are_refused() {
        for &backend in AeadBackend::ALL {
            for len in [0, 15, 17, 24, 31, 33, 64] {
                assert!(
                    matches!(
                        KeyCipher::new(backend, &vec![1; len], "k"),
                        Err(BarrierError::InvalidKeyLength { len: l, .. }) if l == len
                    ),
                    "{backend} {len}"
                );
            }
            assert_eq!(
                KeyCipher::new(backend, &[1; 16], "k").unwrap().backend(),
                backend
            );
            assert_eq!(
                KeyCipher::new(backend, &[1; 32], "k").unwrap().backend(),
                backend
            );
        }
    }

    #[test]
    fn backend_names() {
        assert!(!AeadBackend::ALL.is_empty());
        assert_eq!(AeadBackend::ALL[0], AeadBackend::default());
        for &backend in AeadBackend::ALL {
            assert_eq!(backend.to_string(), backend.name());
        }
    }
}
