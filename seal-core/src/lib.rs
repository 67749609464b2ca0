//! The shared vocabulary of Strongroom.
//!
//! Every other crate speaks through the three traits defined here, so that
//! backends stay interchangeable and no crate depends on a sibling backend:
//!
//! * [`Storage`] — where ciphertext lives (embedded redb, Consul, memory).
//!   [`MemoryStorage`] is the in-process implementation for tests and `-dev`.
//! * [`Seal`] — what protects the barrier's root key (Shamir, AWS KMS).
//! * [`HaBackend`] — the lock that elects one active node among many.
//!
//! Key material travels in newtypes ([`RootKey`], [`Kek`], [`RecoveryKey`],
//! [`UnsealShare`]) that zeroize on drop, cannot be cloned, print no bytes and
//! compare in constant time.
//!
//! With the `testing` feature the crate also ships the conformance suites
//! ([`storage_suite!`], [`seal_suite!`], [`ha_suite!`]) every implementation must pass, and
//! an [`testing::InsecureTestSeal`] for tests that need an auto seal without a
//! cloud.
//!
//! ```
//! use seal_core::{MemoryStorage, Storage};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), seal_core::StorageError> {
//! let storage = MemoryStorage::new();
//! storage.put("core/seal-config", b"{}").await?;
//! storage.put("logical/abc/foo", b"1").await?;
//! assert_eq!(storage.list("").await?, vec!["core/", "logical/"]);
//! assert_eq!(storage.get("core/seal-config").await?.as_deref(), Some(&b"{}"[..]));
//! # Ok(())
//! # }
//! ```

mod ha;
mod memory;
pub mod protobuf;
mod seal;
mod secret;
mod storage;
pub mod vault_blob;

#[cfg(feature = "testing")]
pub mod testing;

pub use ha::{HaBackend, HaError, HaLock, MEMORY_LOCK_WAIT, MemoryHaBackend, Parked};
pub use memory::MemoryStorage;
pub use seal::{Seal, SealError, SealType, blob};
pub use secret::{Kek, RecoveryKey, RootKey, SecretError, UnsealShare, random_bytes};
pub use storage::{
    MAX_KEY_LEN, Storage, StorageError, StorageLimits, TxnOp, list_children, validate_key,
    validate_prefix,
};

/// A boxed error usable as an error `source` across crate boundaries.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;
