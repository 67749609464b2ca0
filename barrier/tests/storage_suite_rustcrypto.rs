//! seal-core's storage conformance suite against the barrier's encrypted
//! view (`Arc<Barrier>` as `Arc<dyn Storage>`), unsealed over
//! `MemoryStorage`, with the rustcrypto backend.
#![cfg(feature = "rustcrypto")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use barrier::{AeadBackend, Barrier};
use seal_core::{MemoryStorage, RootKey, Storage};

async fn build() -> (Arc<dyn Storage>, ()) {
    let barrier = Barrier::with_backend(Arc::new(MemoryStorage::new()), AeadBackend::RustCrypto);
    let root = RootKey::generate().unwrap();
    barrier.initialize(&root).await.unwrap();
    barrier.unseal(&root).await.unwrap();
    (Arc::new(barrier), ())
}

seal_core::storage_suite!(build);
