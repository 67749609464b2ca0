//! Core benches: what `operator init` and `operator unseal` cost inside the
//! core, without HTTP.
//!
//! * `core/init_shamir_5_3`: a fresh store initialized with 5 shares and a
//!   threshold of 3 (root key, KEK split, keyring, root token, configs).
//! * `core/init_unseal_shamir_5_3`: the same plus entering three shares.
//! * `core/init_auto`: init with an auto seal (in-process test seal, so no
//!   KMS round trip), which also unseals.
//!
//! Each runs on `MemoryStorage` (CPU cost) and on `RedbStorage` (durable:
//! every commit is fsync'd, so the disk's flush latency dominates). Only
//! `init` (and the unseal) is timed; creating the store and the core is
//! setup. The target is `operator init` under 50 ms.
//!
//! Run: `cargo bench -p benches --bench core`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use benches::runtime;
use criterion::Criterion;
use seal_core::testing::InsecureTestSeal;
use seal_core::{MemoryStorage, Storage};
use storage_redb::RedbStorage;
use strongroom::{Core, InitParams};
use tempfile::TempDir;

/// A fresh, empty store and whatever keeps it alive.
fn fresh(kind: &str) -> (Arc<dyn Storage>, Option<TempDir>) {
    match kind {
        "memory" => (Arc::new(MemoryStorage::new()), None),
        _ => {
            let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("temp dir: {e}"));
            let storage = RedbStorage::open(dir.path().join("core.redb"))
                .unwrap_or_else(|e| panic!("open redb: {e}"));
            (Arc::new(storage), Some(dir))
        }
    }
}

fn shamir_5_3() -> InitParams {
    InitParams {
        secret_shares: 5,
        secret_threshold: 3,
        ..InitParams::default()
    }
}

/// A fresh core over a fresh store, ready for `init`.
async fn fresh_core(kind: &str, auto: bool) -> (Core, Option<TempDir>) {
    let (storage, dir) = fresh(kind);
    let builder = Core::builder().storage(storage);
    let builder = if auto {
        builder.auto_seal(Arc::new(InsecureTestSeal::new()))
    } else {
        builder.shamir()
    };
    let core = builder
        .build()
        .await
        .unwrap_or_else(|e| panic!("build: {e}"));
    (core, dir)
}

/// Times `init` (and the unseal when asked) only: creating the store and
/// the core is setup.
async fn timed_inits(kind: &str, auto: bool, unseal: bool, iters: u64) -> Duration {
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        let (core, _dir) = fresh_core(kind, auto).await;
        let params = if auto {
            InitParams {
                recovery_shares: 5,
                recovery_threshold: 3,
                ..InitParams::default()
            }
        } else {
            shamir_5_3()
        };
        let start = Instant::now();
        let init = core
            .init(params)
            .await
            .unwrap_or_else(|e| panic!("init: {e}"));
        if unseal {
            for key in &init.keys[..3] {
                core.unseal(key)
                    .await
                    .unwrap_or_else(|e| panic!("unseal: {e}"));
            }
            assert!(!core.is_sealed());
        }
        total += start.elapsed();
        // Untimed: stop the core's background task and drop its keys.
        core.shutdown().await;
    }
    total
}

fn bench_core(c: &mut Criterion) {
    let rt = runtime();
    let mut group = c.benchmark_group("core");
    group.measurement_time(Duration::from_secs(5));
    group.sample_size(30);
    for kind in ["memory", "redb"] {
        group.bench_function(format!("init_shamir_5_3/{kind}"), |b| {
            b.iter_custom(|iters| rt.block_on(timed_inits(kind, false, false, iters)));
        });
        group.bench_function(format!("init_unseal_shamir_5_3/{kind}"), |b| {
            b.iter_custom(|iters| rt.block_on(timed_inits(kind, false, true, iters)));
        });
        group.bench_function(format!("init_auto/{kind}"), |b| {
            b.iter_custom(|iters| rt.block_on(timed_inits(kind, true, false, iters)));
        });
    }
    group.finish();
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    bench_core(&mut c);
    c.final_summary();
}
