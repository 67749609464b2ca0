//! Storage benches: `MemoryStorage` against the durable `RedbStorage`.
//!
//! * `storage/put` and `storage/get`: one caller, 128-byte values. A redb
//!   put is a durable (fsync'd) commit, so its time is the disk's flush
//!   latency, not CPU.
//! * `storage/put_16_concurrent`: 16 callers each put one value at once;
//!   throughput is in writes per second. `redb` (group commit, the default)
//!   folds the queued writes into one commit; `redb-no-group-commit`
//!   (`max_batch_writes(1)`) commits each write alone, as a naive
//!   one-transaction-per-write store would.
//! * `redb-1pc` is redb's one-fsync commit (`two_phase_commit(false)`), to
//!   show what the default two-phase commit's second fsync costs.
//!
//! Run: `cargo bench -p benches --bench storage`.

use std::sync::Arc;
use std::time::Duration;

use benches::runtime;
use criterion::{BenchmarkId, Criterion, SamplingMode, Throughput};
use seal_core::{MemoryStorage, Storage, TxnOp};
use storage_redb::{RedbOptions, RedbStorage};
use tempfile::TempDir;

const VALUE: [u8; 128] = [0x5a; 128];
const WRITERS: usize = 16;

/// A store under test plus whatever keeps it alive (the temp directory).
struct Subject {
    name: &'static str,
    storage: Arc<dyn Storage>,
    /// The same store, typed, for its commit statistics.
    redb: Option<Arc<RedbStorage>>,
    _dir: Option<TempDir>,
}

fn redb(name: &'static str, options: RedbOptions) -> Subject {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("temp dir: {e}"));
    let storage = Arc::new(
        RedbStorage::open_with(dir.path().join("bench.redb"), options)
            .unwrap_or_else(|e| panic!("open redb: {e}")),
    );
    Subject {
        name,
        storage: storage.clone(),
        redb: Some(storage),
        _dir: Some(dir),
    }
}

fn subjects() -> Vec<Subject> {
    vec![
        Subject {
            name: "memory",
            storage: Arc::new(MemoryStorage::new()),
            redb: None,
            _dir: None,
        },
        redb("redb", RedbOptions::default()),
        redb("redb-1pc", RedbOptions::default().two_phase_commit(false)),
        redb(
            "redb-no-group-commit",
            RedbOptions::default().max_batch_writes(1),
        ),
    ]
}

fn bench_put_get(c: &mut Criterion, rt: &tokio::runtime::Runtime) {
    let mut put = c.benchmark_group("storage/put");
    put.throughput(Throughput::Elements(1));
    // Durable commits take milliseconds and jitter with the disk: flat
    // sampling reports the plain mean per write instead of a regression
    // slope that a few slow flushes can swing.
    put.sampling_mode(SamplingMode::Flat);
    for subject in subjects()
        .into_iter()
        .filter(|s| s.name != "redb-no-group-commit")
    {
        let storage = Arc::clone(&subject.storage);
        let mut i = 0u64;
        put.bench_function(BenchmarkId::from_parameter(subject.name), |b| {
            b.to_async(rt).iter(|| {
                i += 1;
                let key = format!("bench/put/{}", i % 4096);
                let storage = Arc::clone(&storage);
                async move {
                    storage
                        .put(&key, &VALUE)
                        .await
                        .unwrap_or_else(|e| panic!("{e}"));
                }
            });
        });
    }
    put.finish();

    let mut get = c.benchmark_group("storage/get");
    get.throughput(Throughput::Elements(1));
    for subject in subjects()
        .into_iter()
        .filter(|s| matches!(s.name, "memory" | "redb"))
    {
        let storage = Arc::clone(&subject.storage);
        let fill = (0..1024)
            .map(|i| TxnOp::put(format!("bench/get/{i}"), VALUE.to_vec()))
            .collect();
        rt.block_on(storage.transaction(fill))
            .unwrap_or_else(|e| panic!("{e}"));
        let mut i = 0u64;
        get.bench_function(BenchmarkId::from_parameter(subject.name), |b| {
            b.to_async(rt).iter(|| {
                i += 1;
                let key = format!("bench/get/{}", i % 1024);
                let storage = Arc::clone(&storage);
                async move {
                    let value = storage.get(&key).await.unwrap_or_else(|e| panic!("{e}"));
                    assert_eq!(value.map(|v| v.len()), Some(VALUE.len()));
                }
            });
        });
    }
    get.finish();
}

fn bench_concurrent_put(c: &mut Criterion, rt: &tokio::runtime::Runtime) {
    let mut group = c.benchmark_group("storage/put_16_concurrent");
    group.throughput(Throughput::Elements(WRITERS as u64));
    group.sampling_mode(SamplingMode::Flat);
    for subject in subjects() {
        let storage = Arc::clone(&subject.storage);
        let mut round = 0u64;
        group.bench_function(BenchmarkId::from_parameter(subject.name), |b| {
            b.to_async(rt).iter(|| {
                round += 1;
                let storage = Arc::clone(&storage);
                async move {
                    let tasks: Vec<_> = (0..WRITERS)
                        .map(|w| {
                            let storage = Arc::clone(&storage);
                            let key = format!("bench/conc/{w}/{}", round % 256);
                            tokio::spawn(async move { storage.put(&key, &VALUE).await })
                        })
                        .collect();
                    for result in futures::future::join_all(tasks).await {
                        result
                            .unwrap_or_else(|e| panic!("{e}"))
                            .unwrap_or_else(|e| panic!("{e}"));
                    }
                }
            });
        });
        // How many writes each durable commit carried: the batching that
        // the timings above are the effect of.
        if let Some(redb) = &subject.redb {
            let stats = redb.stats();
            println!(
                "{}: {} writes in {} commits ({:.1} writes per commit)",
                subject.name,
                stats.writes,
                stats.commits,
                stats.writes as f64 / stats.commits.max(1) as f64
            );
        }
    }
    group.finish();
}

fn main() {
    let rt = runtime();
    let mut c = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    bench_put_get(&mut c, &rt);
    bench_concurrent_put(&mut c, &rt);
    c.final_summary();
}
