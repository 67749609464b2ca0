//! The conformance suites run against the in-process implementations.

use std::sync::Arc;

use seal_core::testing::{HaHarness, InsecureTestSeal, MemoryHaHarness};
use seal_core::{MemoryStorage, Seal, Storage};

async fn memory_storage() -> (Arc<dyn Storage>, ()) {
    (Arc::new(MemoryStorage::new()), ())
}

async fn test_seal() -> (Arc<dyn Seal>, ()) {
    (Arc::new(InsecureTestSeal::new()), ())
}

async fn memory_ha() -> (Arc<dyn HaHarness>, ()) {
    (Arc::new(MemoryHaHarness::new()), ())
}

seal_core::storage_suite!(memory_storage);
seal_core::seal_suite!(test_seal);
seal_core::ha_suite!(memory_ha);

#[tokio::test]
async fn unreachable_test_seal_reports_a_transient_error() {
    let seal = InsecureTestSeal::new();
    let blob = seal.encrypt(b"x", b"").await.unwrap();
    seal.set_unreachable(true);
    let err = seal.decrypt(&blob, b"").await.unwrap_err();
    assert!(err.is_transient(), "{err}");
    seal.set_unreachable(false);
    assert_eq!(seal.decrypt(&blob, b"").await.unwrap().as_slice(), b"x");
}
