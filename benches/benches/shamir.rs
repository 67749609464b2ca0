//! Shamir benches: split and combine of a 32-byte key (the Shamir KEK) in
//! Vault's share format, for the common 5-of-3 and the largest 255-of-128
//! configuration; and a full unseal through `UnsealProgress` (threshold
//! submissions, the last one combining).
//!
//! The field arithmetic is constant-time (masked shift-and-add, no tables),
//! so these figures are the price of not leaking key bytes through the
//! cache. Split is O(shares · threshold · 32) multiplications; combine is
//! O(threshold² + threshold · 32).
//!
//! Run: `cargo bench -p benches --bench shamir`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion};
use seal_core::UnsealShare;
use seal_shamir::{Submit, UnsealProgress, combine, split};

const CONFIGS: [(usize, usize); 2] = [(5, 3), (255, 128)];

fn copies(shares: &[UnsealShare]) -> Vec<UnsealShare> {
    shares
        .iter()
        .map(|s| UnsealShare::from_bytes(s.expose_secret()).unwrap())
        .collect()
}

fn bench_split(c: &mut Criterion) {
    let secret = [0x42u8; 32];
    let mut group = c.benchmark_group("shamir/split");
    for (n, k) in CONFIGS {
        group.bench_with_input(
            BenchmarkId::from_parameter(format!("{n}of{k}")),
            &(n, k),
            |b, &(n, k)| {
                b.iter(|| split(black_box(&secret), n, k).unwrap());
            },
        );
    }
    group.finish();
}

fn bench_combine(c: &mut Criterion) {
    let secret = [0x42u8; 32];
    let mut group = c.benchmark_group("shamir/combine");
    for (n, k) in CONFIGS {
        let shares = split(&secret, n, k).unwrap();
        let subset = copies(&shares[n - k..]);
        group.bench_with_input(
            BenchmarkId::from_parameter(format!("{n}of{k}")),
            &subset,
            |b, subset| {
                b.iter(|| {
                    let out = combine(black_box(subset)).unwrap();
                    assert_eq!(out.len(), 32);
                    out
                });
            },
        );
    }
    group.finish();
}

/// `threshold` submissions into a fresh `UnsealProgress`, the last one
/// combining: what an unseal costs the server, minus the root-key unwrap.
fn bench_progress(c: &mut Criterion) {
    let secret = [0x42u8; 32];
    let mut group = c.benchmark_group("shamir/unseal_progress");
    for (n, k) in CONFIGS {
        let shares = split(&secret, n, k).unwrap();
        group.bench_with_input(
            BenchmarkId::from_parameter(format!("{n}of{k}")),
            &shares[..k],
            |b, subset| {
                b.iter_batched(
                    || copies(subset),
                    |batch| {
                        let p = UnsealProgress::new();
                        let mut done = None;
                        for s in batch {
                            if let Submit::Complete(v) = p.submit(s, k).unwrap() {
                                done = Some(v);
                            }
                        }
                        done.unwrap()
                    },
                    criterion::BatchSize::SmallInput,
                );
            },
        );
    }
    group.finish();
}

fn main() {
    let mut c = Criterion::default()
        .sample_size(30)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    bench_split(&mut c);
    bench_combine(&mut c);
    bench_progress(&mut c);
    c.final_summary();
}
