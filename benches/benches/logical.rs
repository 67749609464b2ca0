//! Logical router benches: what one KV request costs inside the router,
//! without HTTP — token check, mount routing, the engine and storage.
//!
//! * `logical/<storage>/kv1_put`, `kv1_get`: KV v1 at `kv/`, 100-byte values
//!   over 10k keys (the load mix).
//! * `logical/<storage>/kv2_put`, `kv2_get`: the same on KV v2 at `secret/`
//!   (a put writes the version and the metadata in one transaction).
//! * `logical/<storage>/token_check`: `check_token` alone (the cached path).
//!
//! `<storage>` is `memory` (router CPU cost alone) or `barrier` (the
//! production stack: AES-256-GCM barrier over `MemoryStorage`, so no fsync).
//!
//! Run: `cargo bench -p benches --bench logical`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use criterion::Criterion;
use seal_core::{MemoryStorage, Storage};
use serde_json::json;
use strongroom::logical::{Logical, LogicalRequest, MountKind, Operation};

const KEYS: u64 = 10_000;

async fn storage(kind: &str) -> Arc<dyn Storage> {
    if kind == "memory" {
        return Arc::new(MemoryStorage::new());
    }
    benches::unsealed_barrier().await
}

fn value() -> serde_json::Value {
    json!({ "value": "x".repeat(100) })
}

fn bench(c: &mut Criterion) {
    let rt = benches::current_thread_runtime();
    for kind in ["memory", "barrier"] {
        let (logical, root) = rt.block_on(async {
            let logical = Logical::new(storage(kind).await)
                .await
                .unwrap_or_else(|e| panic!("logical: {e}"));
            let root = logical
                .create_root_token(None)
                .await
                .unwrap_or_else(|e| panic!("root token: {e}"));
            logical
                .mount("kv/", MountKind::KvV1, "")
                .await
                .unwrap_or_else(|e| panic!("mount kv: {e}"));
            logical
                .mount("secret/", MountKind::KvV2, "")
                .await
                .unwrap_or_else(|e| panic!("mount secret: {e}"));
            // Pre-fill so reads always hit.
            for i in 0..KEYS {
                for (path, body) in [
                    (format!("kv/key-{i}"), value()),
                    (format!("secret/data/key-{i}"), json!({ "data": value() })),
                ] {
                    let req = LogicalRequest::new(Operation::Update, path)
                        .with_token(root.as_str())
                        .with_data(body);
                    logical
                        .handle(req)
                        .await
                        .unwrap_or_else(|e| panic!("prefill: {e}"));
                }
            }
            (logical, root)
        });
        let mut group = c.benchmark_group(format!("logical/{kind}"));
        let counter = AtomicU64::new(0);
        let next = || counter.fetch_add(1, Ordering::Relaxed) % KEYS;

        group.bench_function("kv1_put", |b| {
            b.to_async(&rt).iter(|| {
                let req = LogicalRequest::new(Operation::Update, format!("kv/key-{}", next()))
                    .with_token(root.as_str())
                    .with_data(value());
                let logical = &logical;
                async move { logical.handle(req).await.unwrap_or_else(|e| panic!("{e}")) }
            });
        });
        group.bench_function("kv1_get", |b| {
            b.to_async(&rt).iter(|| {
                let req = LogicalRequest::new(Operation::Read, format!("kv/key-{}", next()))
                    .with_token(root.as_str());
                let logical = &logical;
                async move { logical.handle(req).await.unwrap_or_else(|e| panic!("{e}")) }
            });
        });
        group.bench_function("kv2_put", |b| {
            b.to_async(&rt).iter(|| {
                let req =
                    LogicalRequest::new(Operation::Update, format!("secret/data/key-{}", next()))
                        .with_token(root.as_str())
                        .with_data(json!({ "data": value() }));
                let logical = &logical;
                async move { logical.handle(req).await.unwrap_or_else(|e| panic!("{e}")) }
            });
        });
        group.bench_function("kv2_get", |b| {
            b.to_async(&rt).iter(|| {
                let req =
                    LogicalRequest::new(Operation::Read, format!("secret/data/key-{}", next()))
                        .with_token(root.as_str());
                let logical = &logical;
                async move { logical.handle(req).await.unwrap_or_else(|e| panic!("{e}")) }
            });
        });
        group.bench_function("token_check", |b| {
            b.to_async(&rt).iter(|| {
                let logical = &logical;
                let root = root.as_str();
                async move {
                    logical
                        .check_token(root)
                        .await
                        .unwrap_or_else(|e| panic!("{e}"))
                }
            });
        });
        group.finish();
    }
}

fn main() {
    let mut c = Criterion::default()
        .configure_from_args()
        .sample_size(30)
        .measurement_time(std::time::Duration::from_secs(3))
        .warm_up_time(std::time::Duration::from_secs(1));
    bench(&mut c);
    c.final_summary();
}
