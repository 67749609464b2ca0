//! ConsulStorage against raw Consul KV HTTP requests, same agent, same
//! concurrency: throughput (ops/s) and latency percentiles of put and get.
//!
//! Runs a real `consul agent -dev` (testkit's `ConsulDev`). Each workload runs `CONSUL_BENCH_ROUNDS` times, interleaved with its raw
//! counterpart so drift in the agent (raft log growth, GC) hits both alike;
//! the median round is reported.
//!
//! `cargo bench -p benches --bench consul` (env: `CONSUL_BENCH_OPS`,
//! `CONSUL_BENCH_CONCURRENCY`, `CONSUL_BENCH_VALUE`, `CONSUL_BENCH_ROUNDS`).
#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::cast_precision_loss
)]

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use benches::{env_usize, runtime};
use seal_core::Storage;
use testkit::consul::{ConsulDev, isolated};

type OpFuture = Pin<Box<dyn Future<Output = ()> + Send>>;
type Op = Arc<dyn Fn(usize) -> OpFuture + Send + Sync>;

struct RoundResult {
    ops_per_sec: f64,
    latencies: Vec<Duration>,
}

/// Runs `ops` calls of `op` from `concurrency` tasks (each task takes the
/// next index until all are done) and records each call's latency.
async fn run(op: Op, ops: usize, concurrency: usize) -> RoundResult {
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let op = op.clone();
        let next = next.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(ops / concurrency + 1);
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= ops {
                    break;
                }
                let t = Instant::now();
                op(i).await;
                lat.push(t.elapsed());
            }
            lat
        }));
    }
    let mut latencies = Vec::with_capacity(ops);
    for t in tasks {
        latencies.extend(t.await.unwrap());
    }
    let elapsed = started.elapsed();
    latencies.sort();
    RoundResult {
        ops_per_sec: ops as f64 / elapsed.as_secs_f64(),
        latencies,
    }
}

fn pct(lat: &[Duration], p: f64) -> f64 {
    let idx = ((lat.len() as f64 - 1.0) * p).round() as usize;
    lat[idx].as_secs_f64() * 1e6
}

struct Summary {
    name: &'static str,
    ops_per_sec: f64,
    p50: f64,
    p90: f64,
    p99: f64,
}

fn summarize(name: &'static str, mut rounds: Vec<RoundResult>) -> Summary {
    rounds.sort_by(|a, b| a.ops_per_sec.total_cmp(&b.ops_per_sec));
    let median = &rounds[rounds.len() / 2];
    Summary {
        name,
        ops_per_sec: median.ops_per_sec,
        p50: pct(&median.latencies, 0.50),
        p90: pct(&median.latencies, 0.90),
        p99: pct(&median.latencies, 0.99),
    }
}

/// A raw HTTP PUT workload: `request(i)` is call `i`'s URL and body.
fn raw_put(
    client: &reqwest::Client,
    request: impl Fn(usize) -> (String, Vec<u8>) + Send + Sync + 'static,
) -> Op {
    let client = client.clone();
    Arc::new(move |i| {
        let client = client.clone();
        let (url, body) = request(i);
        Box::pin(async move {
            let r = client.put(url).body(body).send().await.unwrap();
            assert!(r.status().is_success());
            r.bytes().await.unwrap();
        })
    })
}

fn main() {
    let ops = env_usize("CONSUL_BENCH_OPS", 3000);
    let concurrency = env_usize("CONSUL_BENCH_CONCURRENCY", 16);
    let value_len = env_usize("CONSUL_BENCH_VALUE", 1024);
    let rounds_n = env_usize("CONSUL_BENCH_ROUNDS", 8).max(1);
    let runtime = runtime();
    let dev = ConsulDev::start();
    let http = dev.http_address();
    let base = format!("http://{http}");

    let (storage, guard) = isolated(&dev, |_| {});
    let prefix = guard.prefix().to_owned();
    let storage = Arc::new(storage);
    let raw = reqwest::Client::builder()
        .pool_max_idle_per_host(128)
        .tcp_nodelay(true)
        .build()
        .unwrap();
    let value: Arc<Vec<u8>> = Arc::new((0..value_len).map(|i| (i % 251) as u8).collect());

    let ours_put: Op = {
        let s = storage.clone();
        let v = value.clone();
        Arc::new(move |i| {
            let s = s.clone();
            let v = v.clone();
            Box::pin(async move { s.put(&format!("bench/ours/{i}"), &v).await.unwrap() })
        })
    };
    // Raw /v1/txn with the same single `set`: the client overhead
    // comparison (same server work).
    let raw_txn_put = raw_put(&raw, {
        let (v, base, prefix) = (value.clone(), base.clone(), prefix.clone());
        move |i| {
            let b64 = base64::engine::general_purpose::STANDARD.encode(&*v);
            let body = format!(
                r#"[{{"KV":{{"Verb":"set","Key":"{prefix}bench/rawtxn/{i}","Value":"{b64}"}}}}]"#
            );
            (format!("{base}/v1/txn"), body.into_bytes())
        }
    });
    // Raw KV PUT: what a minimal client would send (no txn, no fencing).
    let raw_kv_put = raw_put(&raw, {
        let (v, base, prefix) = (value.clone(), base.clone(), prefix.clone());
        move |i| (format!("{base}/v1/kv/{prefix}bench/rawkv/{i}"), v.to_vec())
    });
    let ours_get: Op = {
        let s = storage.clone();
        Arc::new(move |i| {
            let s = s.clone();
            Box::pin(async move {
                let got = s.get(&format!("bench/ours/{i}")).await.unwrap();
                assert!(got.is_some());
            })
        })
    };
    let raw_get: Op = {
        let c = raw.clone();
        let base = base.clone();
        let prefix = prefix.clone();
        Arc::new(move |i| {
            let c = c.clone();
            let url = format!("{base}/v1/kv/{prefix}bench/ours/{i}?raw");
            Box::pin(async move {
                let r = c.get(url).send().await.unwrap();
                assert!(r.status().is_success());
                r.bytes().await.unwrap();
            })
        })
    };

    let workloads: [(&'static str, &Op); 5] = [
        ("ConsulStorage::put (/v1/txn)", &ours_put),
        ("raw PUT /v1/txn", &raw_txn_put),
        ("raw PUT /v1/kv", &raw_kv_put),
        ("ConsulStorage::get", &ours_get),
        ("raw GET /v1/kv?raw", &raw_get),
    ];
    let mut rounds: Vec<Vec<RoundResult>> = (0..workloads.len()).map(|_| Vec::new()).collect();
    runtime.block_on(async {
        // Warm up connections and the agent.
        for (_, op) in &workloads {
            run((*op).clone(), 200, concurrency).await;
        }
        // Alternate the order each round so neither side always runs on
        // a fresher (or more loaded) agent.
        for round in 0..rounds_n {
            let mut order: Vec<usize> = (0..workloads.len()).collect();
            if round % 2 == 1 {
                order.reverse();
            }
            for w in order {
                let op = workloads[w].1.clone();
                rounds[w].push(run(op, ops, concurrency).await);
            }
        }
    });
    // Paired per-round ratios: each round's two runs are back to back, so
    // the machine's load hits both alike (the CI box has 2 shared cores).
    let paired = |a: usize, b: usize| {
        let mut r: Vec<f64> = rounds[a]
            .iter()
            .zip(&rounds[b])
            .map(|(x, y)| x.ops_per_sec / y.ops_per_sec)
            .collect();
        r.sort_by(f64::total_cmp);
        r[r.len() / 2]
    };
    let ratios = [
        ("put vs raw PUT /v1/txn", paired(0, 1)),
        ("put vs raw PUT /v1/kv", paired(0, 2)),
        ("get vs raw GET", paired(3, 4)),
    ];
    let summaries: Vec<Summary> = workloads
        .iter()
        .zip(rounds)
        .map(|((name, _), r)| summarize(name, r))
        .collect();

    let version = std::process::Command::new(testkit::tools::consul_bin())
        .arg("version")
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .map(str::to_owned)
        })
        .unwrap_or_else(|| "Consul (version unknown)".to_owned());
    println!(
        "\n{version} dev agent, {ops} ops x {rounds_n} rounds (median round per workload), concurrency {concurrency}, value {value_len} B\n"
    );
    println!("| workload | ops/s | p50 µs | p90 µs | p99 µs |");
    println!("|---|---:|---:|---:|---:|");
    for s in &summaries {
        println!(
            "| {} | {:.0} | {:.0} | {:.0} | {:.0} |",
            s.name, s.ops_per_sec, s.p50, s.p90, s.p99
        );
    }
    println!();
    println!("median of per-round paired throughput ratios:");
    for (name, r) in ratios {
        println!("- {name}: {r:.2}x");
    }
    drop(guard);
    drop(dev);
}
