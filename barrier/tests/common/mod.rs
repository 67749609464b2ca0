//! Helpers shared by the barrier's integration tests.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use barrier::{AeadBackend, Barrier, BarrierError};
use seal_core::{MemoryStorage, RootKey, Storage};

/// A fresh storage, a barrier over it, its root key; initialized and
/// unsealed.
pub(crate) async fn unsealed(backend: AeadBackend) -> (Arc<MemoryStorage>, Barrier, RootKey) {
    let storage = Arc::new(MemoryStorage::new());
    let barrier = Barrier::with_backend(storage.clone(), backend);
    let root = RootKey::generate().unwrap();
    barrier.initialize(&root).await.unwrap();
    barrier.unseal(&root).await.unwrap();
    (storage, barrier, root)
}

/// A second barrier over the same storage, unsealed with `root`: another
/// node, or this one after a restart.
pub(crate) async fn reopen(
    storage: &Arc<MemoryStorage>,
    backend: AeadBackend,
    root: &RootKey,
) -> Barrier {
    let barrier = Barrier::with_backend(storage.clone(), backend);
    barrier.unseal(root).await.unwrap();
    barrier
}

/// The raw (encrypted) bytes at `key`.
pub(crate) async fn raw(storage: &Arc<MemoryStorage>, key: &str) -> Vec<u8> {
    Storage::get(storage.as_ref(), key)
        .await
        .unwrap()
        .expect(key)
}

pub(crate) fn copy(root: &RootKey) -> RootKey {
    RootKey::from_bytes(root.expose_secret()).unwrap()
}

#[track_caller]
pub(crate) fn assert_decrypt_error<T: std::fmt::Debug>(
    result: Result<T, BarrierError>,
    what: &str,
) {
    match result {
        Err(BarrierError::Decrypt) => {}
        other => panic!("{what}: expected the opaque Decrypt error, got {other:?}"),
    }
}

#[track_caller]
pub(crate) fn assert_sealed<T: std::fmt::Debug>(result: Result<T, BarrierError>, what: &str) {
    match result {
        Err(BarrierError::Sealed) => {}
        other => panic!("{what}: expected Sealed, got {other:?}"),
    }
}

/// Runs each listed `async fn name(backend)` of the `cases` module once per
/// compiled-in AEAD backend, as its own test.
#[macro_export]
macro_rules! for_each_backend {
    ($($case:ident),* $(,)?) => {
        #[cfg(feature = "aws-lc")]
        mod aws_lc {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    super::cases::$case(barrier::AeadBackend::AwsLc).await;
                }
            )*
        }
        #[cfg(feature = "rustcrypto")]
        mod rustcrypto {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    super::cases::$case(barrier::AeadBackend::RustCrypto).await;
                }
            )*
        }
    };
}
