//! seal-core's storage conformance suite against the barrier's encrypted
//! view (`Arc<Barrier>` as `Arc<dyn Storage>`), unsealed over
//! `MemoryStorage`, with the rustcrypto backend.
#![cfg(feature = "rustcrypto")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use barrier::{AeadBackend, Barrier};
use seal_core::{MemoryStorage, RootKey, Storage};

/// The suite's `list_root` case writes `core/keyring` as an ordinary key;
/// the barrier refuses that by default (it would destroy the keyring), so
/// the suite runs with the test-only `insecure_allow_reserved_writes`.
/// Everything else is the default barrier.
async fn build() -> (Arc<dyn Storage>, ()) {
    let barrier = Barrier::with_backend(Arc::new(MemoryStorage::new()), AeadBackend::RustCrypto)
        .insecure_allow_reserved_writes();
    let root = RootKey::generate().unwrap();
    barrier.initialize(&root).await.unwrap();
    barrier.unseal(&root).await.unwrap();
    (Arc::new(barrier), ())
}

seal_core::storage_suite!(build);
