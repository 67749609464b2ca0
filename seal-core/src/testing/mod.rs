//! Conformance suites every implementation runs, and test helpers.
//!
//! One macro call in an implementation's tests expands to one
//! `#[tokio::test]` per case, so a failure names its case:
//!
//! ```text
//! async fn build() -> (Arc<dyn Storage>, tempfile::TempDir) { … }
//! seal_core::storage_suite!(build);
//!
//! async fn build_seal() -> (Arc<dyn Seal>, ()) { … }
//! seal_core::seal_suite!(build_seal);
//!
//! async fn build_ha() -> (Arc<dyn HaHarness>, PrefixGuard) { … }
//! seal_core::ha_suite!(build_ha);
//! ```
//!
//! The builder is an `async fn` (or any path callable with no arguments
//! returning a future) that gives a fresh backend plus a guard; the guard is
//! dropped when the case ends, so it can remove a temporary directory or a
//! Consul key prefix. The macros expand into a module (`storage_suite` /
//! `seal_suite` / `ha_suite`) that sees the caller's items through
//! `use super::*`.

mod faulty_storage;
pub mod ha_cases;
pub mod seal_cases;
pub mod storage_cases;
mod test_seal;

pub use faulty_storage::FaultyStorage;
pub use ha_cases::HaHarness;
pub use test_seal::InsecureTestSeal;

/// The [`HaHarness`] of [`crate::MemoryHaBackend`]: contenders are
/// [`crate::MemoryHaBackend::contender`]s of one backend with a short
/// lock-delay, and breaking a lock is
/// [`crate::MemoryHaBackend::insecure_break_lock`].
#[derive(Debug, Clone)]
pub struct MemoryHaHarness {
    backend: crate::MemoryHaBackend,
}

impl MemoryHaHarness {
    /// A fresh lock space with a 50 ms lock-delay, so the suite exercises
    /// the wait for it.
    pub fn new() -> Self {
        let backend = crate::MemoryHaBackend::new();
        backend.set_lock_delay(std::time::Duration::from_millis(50));
        Self { backend }
    }
}

impl Default for MemoryHaHarness {
    fn default() -> Self {
        Self::new()
    }
}

#[async_trait::async_trait]
impl HaHarness for MemoryHaHarness {
    async fn contender(&self, wait: std::time::Duration) -> std::sync::Arc<dyn crate::HaBackend> {
        std::sync::Arc::new(self.backend.contender(wait))
    }

    async fn break_lock(&self, key: &str, _lock: &dyn crate::HaLock) {
        assert!(
            self.backend.insecure_break_lock(key),
            "break_lock: nobody held {key}"
        );
    }

    fn waiting(&self) -> usize {
        self.backend.waiting()
    }
}

/// Expands to a `storage_suite` module with one `#[tokio::test]` per storage
/// conformance case. The argument is a builder path: called with no
/// arguments, it returns a future of `(Arc<dyn Storage>, Guard)`.
#[macro_export]
macro_rules! storage_suite {
    ($build:path) => {
        $crate::storage_suite!(@cases $build;
            round_trip, overwrite, get_missing, delete_missing, delete_then_get,
            empty_value, binary_value, large_value, list_empty_storage, list_root,
            list_nested_folders, list_partial_prefix, list_missing_prefix, list_sorted,
            list_leaf_and_folder_same_name, list_after_delete, unicode_and_space_keys,
            invalid_keys_rejected, invalid_prefix_rejected, long_keys, keys_are_case_sensitive,
            concurrent_writers, concurrent_writers_same_key, transaction_applies_all,
            transaction_put_and_delete, transaction_later_op_wins, transaction_empty,
            transaction_invalid_key_writes_nothing, transaction_oversized_value_writes_nothing,
            transaction_op_limit
        );
    };
    (@cases $build:path; $($case:ident),* $(,)?) => {
        #[allow(clippy::unwrap_used, clippy::expect_used)]
        mod storage_suite {
            #[allow(unused_imports)]
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let (storage, _guard) = $build().await;
                    $crate::testing::storage_cases::$case(storage).await;
                }
            )*
        }
    };
}

/// Expands to a `seal_suite` module with one `#[tokio::test]` per seal
/// conformance case. The argument is a builder path: called with no
/// arguments, it returns a future of `(Arc<dyn Seal>, Guard)`; the seal must
/// be ready to encrypt (a Shamir seal with its KEK set).
#[macro_export]
macro_rules! seal_suite {
    ($build:path) => {
        $crate::seal_suite!(@cases $build;
            round_trip, round_trip_sizes, encryption_is_randomized, blob_has_seal_header,
            wrong_aad_is_decrypt_error, tampered_tag_is_decrypt_error, every_byte_flip_refused,
            truncated_refused, foreign_seal_type_refused, arbitrary_bytes_never_panic,
            health_check_passes, concurrent_round_trips
        );
    };
    (@cases $build:path; $($case:ident),* $(,)?) => {
        #[allow(clippy::unwrap_used, clippy::expect_used)]
        mod seal_suite {
            #[allow(unused_imports)]
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let (seal, _guard) = $build().await;
                    $crate::testing::seal_cases::$case(seal).await;
                }
            )*
        }
    };
}

/// Expands to an `ha_suite` module with one `#[tokio::test]` per HA
/// conformance case. The argument is a builder path: called with no
/// arguments, it returns a future of `(Arc<dyn HaHarness>, Guard)`.
#[macro_export]
macro_rules! ha_suite {
    ($build:path) => {
        $crate::ha_suite!(@cases $build;
            holder_while_nobody_holds, one_of_two_wins, loser_sees_winner_advertisement,
            release_hands_over_promptly, broken_lock_is_lost_and_another_wins,
            release_cancels_lost, dropped_lock_is_given_up, fencing_tokens_differ_per_acquisition,
            concurrent_calls_on_one_contender, cancelled_try_lock_never_keeps_the_lock,
            sixteen_contenders_never_overlap, reacquire_after_release
        );
    };
    (@cases $build:path; $($case:ident),* $(,)?) => {
        #[allow(clippy::unwrap_used, clippy::expect_used)]
        mod ha_suite {
            #[allow(unused_imports)]
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let (harness, _guard) = $build().await;
                    $crate::testing::ha_cases::$case(harness).await;
                }
            )*
        }
    };
}
