//! The load client of the OpenBao comparison (`benches/openbao-compare`).
//!
//! It drives any Vault-compatible server the same way, so the two servers
//! are compared with one client and one request mix: KV version 1 at
//! `<mount>/`, 100-byte values over 10 000 keys, 16 keep-alive connections,
//! PUT and GET phases measured separately, and the targets taken in
//! alternating order round after round (so neither always runs on a warmer
//! or cooler machine).
//!
//! ```text
//! kv_load --target openbao=http://127.0.0.1:8300=root \
//!         --target strongroom=http://127.0.0.1:8400=root \
//!         --rounds 3 --seconds 5
//! kv_load --init-time http://127.0.0.1:8500
//! ```
//!
//! Prints one line per phase while running and a Markdown table at the end
//! (throughput, p50, p99, and ratios against the first target).

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)] // a benchmark tool

use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use serde_json::json;

/// Command line of the load client.
#[derive(Debug, Parser)]
struct Args {
    /// NAME=URL=TOKEN; repeat for each server (the first is the baseline).
    #[arg(long = "target")]
    targets: Vec<String>,
    /// Rounds; each round runs every target once, order alternating.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Seconds per PUT or GET phase.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Concurrent keep-alive connections.
    #[arg(long, default_value_t = 16)]
    connections: usize,
    /// Distinct keys.
    #[arg(long, default_value_t = 10_000)]
    keys: u64,
    /// Value size in bytes.
    #[arg(long, default_value_t = 100)]
    value_size: usize,
    /// The KV v1 mount on every target.
    #[arg(long, default_value = "kv")]
    mount: String,
    /// Instead of load: time `PUT sys/init` (5 shares, threshold 3) on this
    /// uninitialised server.
    #[arg(long, value_name = "URL")]
    init_time: Option<String>,
}

#[derive(Debug, Clone)]
struct Target {
    name: String,
    url: String,
    token: String,
}

#[derive(Debug, Default, Clone)]
struct Stats {
    ops: u64,
    errors: u64,
    elapsed: Duration,
    latencies_us: Vec<u32>,
}

impl Stats {
    fn merge(&mut self, other: Stats) {
        self.ops += other.ops;
        self.errors += other.errors;
        self.elapsed += other.elapsed;
        self.latencies_us.extend(other.latencies_us);
    }
    fn rps(&self) -> f64 {
        self.ops as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
    fn percentile_ms(&mut self, p: f64) -> f64 {
        if self.latencies_us.is_empty() {
            return 0.0;
        }
        self.latencies_us.sort_unstable();
        let index = ((self.latencies_us.len() as f64 - 1.0) * p).round() as usize;
        f64::from(self.latencies_us[index]) / 1000.0
    }
}

fn parse_target(spec: &str) -> Target {
    let mut parts = spec.splitn(3, '=');
    let (Some(name), Some(url), Some(token)) = (parts.next(), parts.next(), parts.next()) else {
        panic!("--target must be NAME=URL=TOKEN, got {spec:?}");
    };
    Target {
        name: name.to_owned(),
        url: url.trim_end_matches('/').to_owned(),
        token: token.to_owned(),
    }
}

fn client(connections: usize) -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(connections)
        .tcp_nodelay(true)
        .http1_only()
        .build()
        .expect("HTTP client")
}

/// xorshift64*: a fast, dependency-free key picker.
fn next(state: &mut u64) -> u64 {
    *state ^= *state >> 12;
    *state ^= *state << 25;
    *state ^= *state >> 27;
    state.wrapping_mul(0x2545_F491_4F6C_DD1D)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Put,
    Get,
}

async fn phase(
    target: &Target,
    args: &Args,
    op: Op,
    duration: Duration,
    http: &reqwest::Client,
) -> Stats {
    let value = Arc::new(json!({ "value": "v".repeat(args.value_size) }));
    let deadline = Instant::now() + duration;
    let start = Instant::now();
    let mut workers = Vec::new();
    for worker in 0..args.connections {
        let http = http.clone();
        let target = target.clone();
        let value = value.clone();
        let mount = args.mount.clone();
        let keys = args.keys;
        workers.push(tokio::spawn(async move {
            let mut stats = Stats::default();
            let mut seed = 0x9E37_79B9_7F4A_7C15u64 ^ (worker as u64 + 1);
            while Instant::now() < deadline {
                let key = next(&mut seed) % keys;
                let url = format!("{}/v1/{mount}/bench/{key}", target.url);
                let sent = Instant::now();
                let request = match op {
                    Op::Put => http.put(&url).json(&*value),
                    Op::Get => http.get(&url),
                };
                let result = request.header("X-Vault-Token", &target.token).send().await;
                let ok = match result {
                    Ok(response) => {
                        let status = response.status();
                        let _ = response.bytes().await;
                        status.is_success()
                    }
                    Err(_) => false,
                };
                let micros = u32::try_from(sent.elapsed().as_micros()).unwrap_or(u32::MAX);
                if ok {
                    stats.ops += 1;
                    stats.latencies_us.push(micros);
                } else {
                    stats.errors += 1;
                }
            }
            stats
        }));
    }
    let mut total = Stats::default();
    for worker in workers {
        let stats = worker.await.expect("worker");
        total.ops += stats.ops;
        total.errors += stats.errors;
        total.latencies_us.extend(stats.latencies_us);
    }
    total.elapsed = start.elapsed();
    total
}

async fn prefill(target: &Target, args: &Args, http: &reqwest::Client) {
    let value = json!({ "value": "v".repeat(args.value_size) });
    let mut tasks = Vec::new();
    let per = args.keys.div_ceil(args.connections as u64);
    for worker in 0..args.connections as u64 {
        let http = http.clone();
        let target = target.clone();
        let value = value.clone();
        let mount = args.mount.clone();
        let end = ((worker + 1) * per).min(args.keys);
        tasks.push(tokio::spawn(async move {
            for key in worker * per..end {
                let response = http
                    .put(format!("{}/v1/{mount}/bench/{key}", target.url))
                    .header("X-Vault-Token", &target.token)
                    .json(&value)
                    .send()
                    .await
                    .expect("prefill PUT");
                assert!(
                    response.status().is_success(),
                    "prefill PUT on {} failed: {}",
                    target.name,
                    response.status()
                );
            }
        }));
    }
    for task in tasks {
        task.await.expect("prefill");
    }
}

async fn init_time(url: &str) {
    let http = client(1);
    let started = Instant::now();
    let response = http
        .put(format!("{}/v1/sys/init", url.trim_end_matches('/')))
        .json(&json!({"secret_shares": 5, "secret_threshold": 3}))
        .send()
        .await
        .expect("PUT sys/init");
    let status = response.status();
    let _ = response.bytes().await;
    let elapsed = started.elapsed();
    assert!(status.is_success(), "sys/init answered {status}");
    println!("init_ms {:.2}", elapsed.as_secs_f64() * 1000.0);
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    if let Some(url) = &args.init_time {
        init_time(url).await;
        return;
    }
    let targets: Vec<Target> = args.targets.iter().map(|t| parse_target(t)).collect();
    assert!(
        !targets.is_empty(),
        "give at least one --target NAME=URL=TOKEN"
    );
    let http = client(args.connections);
    for target in &targets {
        prefill(target, &args, &http).await;
    }
    let duration = Duration::from_secs(args.seconds);
    let mut totals: Vec<(Stats, Stats)> = vec![(Stats::default(), Stats::default()); targets.len()];
    for round in 0..args.rounds {
        let mut order: Vec<usize> = (0..targets.len()).collect();
        order.rotate_left(round % targets.len());
        for &i in &order {
            let target = &targets[i];
            let put = phase(target, &args, Op::Put, duration, &http).await;
            let get = phase(target, &args, Op::Get, duration, &http).await;
            println!(
                "round {} {:<12} PUT {:>9.0} req/s ({} errors)   GET {:>9.0} req/s ({} errors)",
                round + 1,
                target.name,
                put.rps(),
                put.errors,
                get.rps(),
                get.errors
            );
            totals[i].0.merge(put);
            totals[i].1.merge(get);
        }
    }
    println!();
    println!(
        "| server | PUT req/s | PUT p50 ms | PUT p99 ms | GET req/s | GET p50 ms | GET p99 ms | errors |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    let mut summary = Vec::new();
    for (target, (put, get)) in targets.iter().zip(totals.iter_mut()) {
        let row = (
            put.rps(),
            put.percentile_ms(0.50),
            put.percentile_ms(0.99),
            get.rps(),
            get.percentile_ms(0.50),
            get.percentile_ms(0.99),
        );
        println!(
            "| {} | {:.0} | {:.2} | {:.2} | {:.0} | {:.2} | {:.2} | {} |",
            target.name,
            row.0,
            row.1,
            row.2,
            row.3,
            row.4,
            row.5,
            put.errors + get.errors
        );
        summary.push(row);
    }
    if summary.len() > 1 {
        let base = summary[0];
        println!();
        for (target, row) in targets.iter().zip(&summary).skip(1) {
            println!(
                "{} vs {}: PUT {:.2}x throughput, p99 {:.2} vs {:.2} ms; GET {:.2}x throughput, p99 {:.2} vs {:.2} ms",
                target.name,
                targets[0].name,
                row.0 / base.0,
                row.2,
                base.2,
                row.3 / base.3,
                row.5,
                base.5
            );
        }
    }
}
