//! Key-material newtypes.
//!
//! Each type zeroizes its bytes on drop, has no `Clone` (a copy is a second
//! place to wipe), prints no bytes in `Debug`, and compares in constant time.
//! Bytes leave only through `expose_secret`, which makes every use greppable.

use std::fmt;

use subtle::ConstantTimeEq;
use zeroize::Zeroize;

/// Why a secret could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SecretError {
    /// The input has a length the key type does not allow.
    #[error("{kind} must be {expected} bytes, got {actual}")]
    InvalidLength {
        /// The key type, such as "root key".
        kind: &'static str,
        /// The allowed lengths, in words.
        expected: &'static str,
        /// The length received.
        actual: usize,
    },
    /// The operating system's random source failed.
    #[error("the operating system's random number generator failed: {0}")]
    Random(String),
}

/// Fills a new buffer of `len` bytes from the operating system's CSPRNG.
///
/// # Errors
/// [`SecretError::Random`] if the OS random source fails.
pub fn random_bytes(len: usize) -> Result<zeroize::Zeroizing<Vec<u8>>, SecretError> {
    let mut buf = zeroize::Zeroizing::new(vec![0u8; len]);
    getrandom::fill(&mut buf).map_err(|e| SecretError::Random(e.to_string()))?;
    Ok(buf)
}

macro_rules! secret_type {
    ($(#[$doc:meta])* $name:ident, $kind:literal, $expected:literal, $ok_len:expr, $gen_len:expr) => {
        $(#[$doc])*
        pub struct $name(Box<[u8]>);

        impl $name {
            /// Length in bytes of a freshly generated value.
            pub const GENERATED_LEN: usize = $gen_len;

            /// Generates a new value from the operating system's CSPRNG.
            ///
            /// # Errors
            /// [`SecretError::Random`] if the OS random source fails.
            pub fn generate() -> Result<Self, SecretError> {
                let mut bytes = vec![0u8; $gen_len].into_boxed_slice();
                if let Err(e) = getrandom::fill(&mut bytes) {
                    bytes.zeroize();
                    return Err(SecretError::Random(e.to_string()));
                }
                Ok(Self(bytes))
            }

            /// Copies `bytes` into a new value. The caller keeps (and should
            /// wipe) its own copy.
            ///
            /// # Errors
            /// [`SecretError::InvalidLength`] when the length is not allowed.
            pub fn from_bytes(bytes: &[u8]) -> Result<Self, SecretError> {
                let ok: fn(usize) -> bool = $ok_len;
                if !ok(bytes.len()) {
                    return Err(SecretError::InvalidLength {
                        kind: $kind,
                        expected: $expected,
                        actual: bytes.len(),
                    });
                }
                Ok(Self(Box::from(bytes)))
            }

            /// The raw bytes. Every call site is a place the secret is used.
            pub fn expose_secret(&self) -> &[u8] {
                &self.0
            }

            /// Number of bytes.
            pub fn len(&self) -> usize {
                self.0.len()
            }

            /// Always false: empty secrets cannot be built.
            pub fn is_empty(&self) -> bool {
                self.0.is_empty()
            }
        }

        impl Drop for $name {
            fn drop(&mut self) {
                self.0.zeroize();
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_struct(stringify!($name)).finish_non_exhaustive()
            }
        }

        impl ConstantTimeEq for $name {
            fn ct_eq(&self, other: &Self) -> subtle::Choice {
                self.0.ct_eq(&other.0)
            }
        }

        impl PartialEq for $name {
            fn eq(&self, other: &Self) -> bool {
                self.ct_eq(other).into()
            }
        }

        impl Eq for $name {}
    };
}

secret_type!(
    /// The barrier's root key: it encrypts the keyring. AES-256 (32 bytes)
    /// is generated; AES-128 (16 bytes) is accepted, as Vault does.
    RootKey, "root key", "16 or 32", |n| n == 16 || n == 32, 32
);

secret_type!(
    /// A key-encryption key: the key a Shamir unseal reconstructs, which
    /// AES-GCM-wraps the stored root key. Always 32 bytes.
    Kek, "key-encryption key", "32", |n| n == 32, 32
);

secret_type!(
    /// The auto-seal recovery key, split into recovery shares. 32 bytes.
    RecoveryKey, "recovery key", "32", |n| n == 32, 32
);

secret_type!(
    /// One unseal (or recovery) key share as an operator holds it: the
    /// y-bytes followed by the x-coordinate (Vault's format), or the raw key
    /// when there is a single share. Vault accepts 16..=33 bytes.
    UnsealShare, "unseal key share", "16 to 33", |n| (16..=33).contains(&n), 33
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_prints_no_bytes() {
        let key = RootKey::from_bytes(&[0xAB; 32]).unwrap();
        let printed = format!("{key:?}");
        assert_eq!(printed, "RootKey { .. }");
        assert!(!printed.to_lowercase().contains("ab"));
    }

    #[test]
    fn lengths_are_checked() {
        assert!(RootKey::from_bytes(&[0; 16]).is_ok());
        assert!(RootKey::from_bytes(&[0; 31]).is_err());
        assert!(Kek::from_bytes(&[0; 16]).is_err());
        assert!(UnsealShare::from_bytes(&[0; 15]).is_err());
        assert!(UnsealShare::from_bytes(&[0; 34]).is_err());
        let err = Kek::from_bytes(&[1; 3]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "key-encryption key must be 32 bytes, got 3"
        );
    }

    #[test]
    fn generated_keys_differ_and_compare_in_constant_time() {
        let a = RootKey::generate().unwrap();
        let b = RootKey::generate().unwrap();
        assert_eq!(a.len(), 32);
        assert!(a != b);
        let a2 = RootKey::from_bytes(a.expose_secret()).unwrap();
        assert!(bool::from(a.ct_eq(&a2)));
    }
}
