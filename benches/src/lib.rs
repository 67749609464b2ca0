//! What the benchmarks in `benches/benches/` share: the runtime they drive
//! async code on, the knobs they read from the environment, and the
//! storage a serving node's logical layer writes through.

use std::sync::Arc;

use barrier::Barrier;
use seal_core::{MemoryStorage, RootKey, Storage};

/// A runtime with two workers: the size of the CI machine that the figures
/// in `BENCHMARKS.md` come from.
///
/// # Panics
/// When tokio cannot start it.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("tokio runtime: {e}"))
}

/// A current-thread runtime, for benches that time one caller's work
/// without scheduler hand-offs.
///
/// # Panics
/// When tokio cannot start it.
pub fn current_thread_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("tokio runtime: {e}"))
}

/// An initialized, unsealed barrier over `MemoryStorage` with a fresh root
/// key: the storage a serving node's logical layer writes through.
///
/// # Panics
/// When the barrier cannot be initialized or unsealed.
pub async fn unsealed_barrier() -> Arc<dyn Storage> {
    let barrier = Barrier::new(Arc::new(MemoryStorage::new()));
    let root = RootKey::generate().unwrap_or_else(|e| panic!("root key: {e}"));
    barrier
        .initialize(&root)
        .await
        .unwrap_or_else(|e| panic!("barrier init: {e}"));
    barrier
        .unseal(&root)
        .await
        .unwrap_or_else(|e| panic!("barrier unseal: {e}"));
    Arc::new(barrier)
}

/// The number in environment variable `name`, else `default` (unset or
/// not a number).
pub fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}
