//! The AES-256-GCM keyring barrier: the encrypted view of storage that
//! everything Strongroom keeps at rest goes through.
//!
//! Use [`Barrier`] over any [`seal_core::Storage`] (redb, Consul, memory).
//! [`Barrier::initialize`] creates the keyring under a root key,
//! [`Barrier::unseal`] loads it, and from then on [`Barrier::get`] /
//! [`Barrier::put`] (or the [`Storage`](seal_core::Storage) impl, so an
//! `Arc<Barrier>` goes wherever an `Arc<dyn Storage>` does) encrypt and
//! decrypt with the active term key. [`Barrier::rotate`] adds a term;
//! [`Barrier::seal`] forgets every key.
//!
//! The bytes on disk follow Vault's layout, so stores move between the two:
//! an entry is `term (u32 BE) | 0x02 | 12-byte random nonce | AES-GCM
//! ciphertext | 16-byte tag` with the storage path as AAD ([`cipher`]), and
//! the keyring at [`KEYRING_PATH`] is Vault's JSON encrypted with the root
//! key ([`keyring`]).
//!
//! Two AES-GCM implementations, chosen with [`AeadBackend`]: aws-lc-rs
//! (feature `aws-lc`, the default: several times faster, FIPS-capable) and
//! RustCrypto's pure-Rust `aes-gcm` (feature `rustcrypto`). They read each
//! other's ciphertexts.
//!
//! ```
//! use std::sync::Arc;
//! use barrier::{Barrier, BarrierError};
//! use seal_core::{MemoryStorage, RootKey};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let storage = Arc::new(MemoryStorage::new());
//! let barrier = Barrier::new(storage.clone());
//! let root = RootKey::generate()?;
//! barrier.initialize(&root).await?;
//! barrier.unseal(&root).await?;
//!
//! barrier.put("secret/app", b"hunter2").await?;
//! assert_eq!(barrier.get("secret/app").await?.as_deref(), Some(&b"hunter2"[..]));
//! // Underneath, only ciphertext.
//! let raw = seal_core::Storage::get(storage.as_ref(), "secret/app").await?.unwrap_or_default();
//! assert!(!raw.windows(7).any(|w| w == b"hunter2"));
//!
//! let term = barrier.rotate().await?;
//! assert_eq!(barrier.key_status().await?.term, term);
//!
//! barrier.seal();
//! assert!(matches!(barrier.get("secret/app").await, Err(BarrierError::Sealed)));
//! # Ok(())
//! # }
//! ```

mod barrier;
pub mod cipher;
mod error;
pub mod keyring;
mod observer;

pub use barrier::{Barrier, KEYRING_PATH, ROOT_KEY_PATH};
pub use cipher::{AeadBackend, MIN_CIPHERTEXT_LEN, OVERHEAD};
pub use error::BarrierError;
pub use keyring::{KeyStatus, RotationConfig};
pub use observer::{BarrierOp, OpObserver};
