//! What the core's integration tests share: nodes on `MemoryStorage`,
//! Shamir or auto-sealed by seal-core's `InsecureTestSeal`, initialized
//! and unsealed in one call.

#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use seal_core::MemoryStorage;
use seal_core::testing::InsecureTestSeal;
use strongroom::{Core, CoreError, CoreOptions, InitParams, InitResult, RekeyParams};

/// Init parameters for `shares`/`threshold` Shamir keys.
pub fn shamir_params(shares: usize, threshold: usize) -> InitParams {
    InitParams {
        secret_shares: shares,
        secret_threshold: threshold,
        ..InitParams::default()
    }
}

/// Rekey parameters for `shares`/`threshold` new keys.
pub fn rekey_params(shares: usize, threshold: usize) -> RekeyParams {
    RekeyParams {
        secret_shares: shares,
        secret_threshold: threshold,
        ..RekeyParams::default()
    }
}

/// Init parameters for `shares`/`threshold` recovery keys (auto seal).
pub fn recovery_params(shares: usize, threshold: usize) -> InitParams {
    InitParams {
        recovery_shares: shares,
        recovery_threshold: threshold,
        ..InitParams::default()
    }
}

/// Options with a fast auto-unseal retry.
pub fn fast_options() -> CoreOptions {
    CoreOptions::new("inmem")
        .with_auto_unseal_backoff(Duration::from_millis(10), Duration::from_millis(50))
}

/// A Shamir node on `storage`.
pub async fn shamir_core(storage: &Arc<MemoryStorage>) -> Core {
    try_shamir_core(storage).await.unwrap()
}

/// [`shamir_core`], failures included.
pub async fn try_shamir_core(storage: &Arc<MemoryStorage>) -> Result<Core, CoreError> {
    Core::builder()
        .storage(storage.clone())
        .shamir()
        .options(fast_options())
        .build()
        .await
}

/// A node on `storage` auto-sealed by `seal`.
pub async fn auto_core(storage: &Arc<MemoryStorage>, seal: &Arc<InsecureTestSeal>) -> Core {
    Core::builder()
        .storage(storage.clone())
        .auto_seal(seal.clone())
        .options(fast_options())
        .build()
        .await
        .unwrap()
}

/// Enters `keys`; the node must be unsealed after them.
pub async fn unseal_with(core: &Core, keys: &[String]) {
    for key in keys {
        core.unseal(key).await.unwrap();
    }
    assert!(!core.is_sealed(), "still sealed after entering the keys");
}

/// A new Shamir node on new storage.
pub async fn new_shamir() -> (Arc<MemoryStorage>, Core) {
    let storage = Arc::new(MemoryStorage::new());
    let core = shamir_core(&storage).await;
    (storage, core)
}

/// A new auto-sealed node, initialized with `shares`/`threshold` recovery
/// keys (and so unsealed): its storage and seal, for restarts.
pub async fn init_auto(
    shares: usize,
    threshold: usize,
) -> (Arc<MemoryStorage>, Arc<InsecureTestSeal>, Core, InitResult) {
    let storage = Arc::new(MemoryStorage::new());
    let seal = Arc::new(InsecureTestSeal::new());
    let core = auto_core(&storage, &seal).await;
    let init = core.init(recovery_params(shares, threshold)).await.unwrap();
    (storage, seal, core, init)
}

/// A new Shamir node, initialized with `shares`/`threshold` keys and
/// unsealed: its storage, for restarts.
pub async fn init_unsealed_shamir(
    shares: usize,
    threshold: usize,
) -> (Arc<MemoryStorage>, Core, InitResult) {
    let (storage, core) = new_shamir().await;
    let init = core.init(shamir_params(shares, threshold)).await.unwrap();
    unseal_with(&core, &init.keys[..threshold]).await;
    (storage, core, init)
}
