//! AWS KMS seal benches against a local `moto_server` (the real KMS JSON
//! protocol through aws-sdk-kms over loopback HTTP).
//!
//! * `awskms/wrap`: `Seal::encrypt` of a 32-byte root key — a fresh data
//!   key, one KMS `Encrypt` round trip, local AES-256-GCM.
//! * `awskms/unwrap`: `Seal::decrypt` of that blob — one KMS `Decrypt` round
//!   trip, local AES-256-GCM open.
//! * `awskms/wrap_16_concurrent`: 16 callers encrypt at once through one
//!   seal (one HTTP connection pool); throughput in wraps per second.
//!
//! The figures are informational: the HTTP round trip to moto (a Python
//! server) dominates, and a real KMS adds the network on top. The seal goes
//! straight to moto's port, not through the harness's outage relay.
//!
//! Needs moto_server (`eval "$(scripts/setup-tools.sh)"`).
//! Run: `cargo bench -p benches --bench awskms`.

use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, Throughput};
use seal_awskms::{AwsKmsConfig, AwsKmsSeal};
use seal_core::Seal;
use testkit::MotoServer;

const AAD: &[u8] = b"core/hsm/barrier-unseal-keys";
const ROOT_KEY: [u8; 32] = [0x42; 32];
const CALLERS: usize = 16;

fn main() {
    let rt = benches::runtime();
    let moto = rt.block_on(MotoServer::start());
    let key = rt.block_on(moto.create_key());
    let config = AwsKmsConfig {
        endpoint: Some(moto.moto_endpoint()),
        ..moto.config_for(&key.key_id)
    };
    let seal = Arc::new(
        rt.block_on(AwsKmsSeal::new(config))
            .unwrap_or_else(|e| panic!("seal: {e}")),
    );
    let blob = rt
        .block_on(seal.encrypt(&ROOT_KEY, AAD))
        .unwrap_or_else(|e| panic!("encrypt: {e}"));

    let mut c = Criterion::default()
        .configure_from_args()
        .sample_size(50)
        .measurement_time(Duration::from_secs(10));
    let mut group = c.benchmark_group("awskms");
    group.bench_function("wrap", |b| {
        b.to_async(&rt).iter(|| async {
            seal.encrypt(&ROOT_KEY, AAD)
                .await
                .unwrap_or_else(|e| panic!("encrypt: {e}"))
        });
    });
    group.bench_function("unwrap", |b| {
        b.to_async(&rt).iter(|| async {
            seal.decrypt(&blob, AAD)
                .await
                .unwrap_or_else(|e| panic!("decrypt: {e}"))
        });
    });
    group.throughput(Throughput::Elements(CALLERS as u64));
    group.bench_function("wrap_16_concurrent", |b| {
        b.to_async(&rt).iter(|| {
            let seal = seal.clone();
            async move {
                let calls = (0..CALLERS).map(|_| {
                    let seal = seal.clone();
                    async move { seal.encrypt(&ROOT_KEY, AAD).await }
                });
                for result in futures::future::join_all(calls).await {
                    result.unwrap_or_else(|e| panic!("encrypt: {e}"));
                }
            }
        });
    });
    group.finish();
    c.final_summary();
    drop(moto);
}
