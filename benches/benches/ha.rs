//! The Consul HA lock's two latencies that bound a graceful failover,
//! against raw Consul requests on the same agent in the same run:
//!
//! * **take**: a standby (session kept ready) takes a free lock, against
//!   one raw `PUT /v1/kv/<key>?acquire=<session>` with a session made in
//!   advance: the ready session makes it one request.
//! * **handover**: the holder calls `release()` while a standby waits in
//!   `try_lock` (parked on a blocking query) until the standby holds the
//!   lock, against one raw KV `PUT` round trip (the unit of the handover:
//!   release, destroy, the blocking query's answer, the acquire).
//!
//! Runs a real `consul agent -dev` (testkit's `ConsulDev`).
//! `cargo bench -p benches --bench ha` (env: `HA_BENCH_ROUNDS`, default 200).
#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::cast_precision_loss
)]

use std::time::{Duration, Instant};

use benches::{env_usize, runtime};
use seal_core::HaBackend;
use storage_consul::{ConsulHaBackend, ConsulStorage};
use testkit::consul::{ConsulDev, unique_path};

const KEY: &str = "core/lock";

fn contender(dev: &ConsulDev, path: &str, wait: Duration) -> (ConsulStorage, ConsulHaBackend) {
    let mut config = dev.config();
    config.path = path.to_owned();
    config.lock_wait_time = wait;
    config.session_ttl = Duration::from_secs(30);
    let storage = ConsulStorage::new(config).unwrap();
    let ha = ConsulHaBackend::new(&storage);
    (storage, ha)
}

fn stats(name: &str, mut samples: Vec<Duration>) -> f64 {
    samples.sort();
    let at = |p: f64| samples[((samples.len() - 1) as f64 * p).round() as usize];
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "{name:<44} median {:>7.3} ms  p90 {:>7.3} ms  max {:>7.3} ms  (n={})",
        ms(at(0.5)),
        ms(at(0.9)),
        ms(at(1.0)),
        samples.len()
    );
    ms(at(0.5))
}

async fn raw_session(client: &reqwest::Client, base: &str) -> String {
    let r = client
        .put(format!("{base}/v1/session/create"))
        .body(r#"{"TTL":"60s","LockDelay":"0s","NodeChecks":[],"Checks":[]}"#)
        .send()
        .await
        .unwrap();
    let v: serde_json::Value = r.json().await.unwrap();
    v["ID"].as_str().unwrap().to_owned()
}

fn main() {
    let rounds = env_usize("HA_BENCH_ROUNDS", 200).max(3);
    let runtime = runtime();
    let dev = ConsulDev::start();
    let base = format!("http://{}", dev.http_address());
    runtime.block_on(async {
        let raw = reqwest::Client::builder()
            .tcp_nodelay(true)
            .build()
            .unwrap();
        let path = unique_path();
        let (_sa, a) = contender(&dev, &path, Duration::from_millis(50));
        let (_sb, b) = contender(&dev, &path, Duration::from_millis(50));

        // take: a standby with a ready session takes the free lock.
        let mut take = Vec::with_capacity(rounds);
        let mut raw_acquire = Vec::with_capacity(rounds);
        let raw_key = format!("{base}/v1/kv/{path}raw/lock");
        for _ in 0..rounds {
            let held = a.try_lock(KEY, b"a").await.unwrap().unwrap();
            assert!(b.try_lock(KEY, b"b").await.unwrap().is_none());
            held.release().await.unwrap();
            let t = Instant::now();
            let lock = b.try_lock(KEY, b"b").await.unwrap().unwrap();
            take.push(t.elapsed());
            lock.release().await.unwrap();

            let session = raw_session(&raw, &base).await;
            let t = Instant::now();
            let r = raw
                .put(format!("{raw_key}?acquire={session}"))
                .body("b")
                .send()
                .await
                .unwrap();
            assert_eq!(r.text().await.unwrap().trim(), "true");
            raw_acquire.push(t.elapsed());
            raw.put(format!("{raw_key}?release={session}"))
                .send()
                .await
                .unwrap();
            raw.put(format!("{base}/v1/session/destroy/{session}"))
                .send()
                .await
                .unwrap();
        }

        // handover: release while a standby waits in try_lock.
        let (_sc, c) = contender(&dev, &path, Duration::from_secs(60));
        let (_sd, d) = contender(&dev, &path, Duration::from_secs(60));
        let mut handover = Vec::with_capacity(rounds);
        let mut raw_put = Vec::with_capacity(rounds);
        let mut holder = c.try_lock(KEY, b"c").await.unwrap().unwrap();
        let (mut waiting, mut holding) = (d, c);
        for i in 0..rounds {
            let w = waiting.clone();
            let task = tokio::spawn(async move { w.try_lock(KEY, b"w").await.unwrap() });
            // Parked: its blocking query is in flight.
            while waiting.waiting() == 0 {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            let t = Instant::now();
            holder.release().await.unwrap();
            let next = task.await.unwrap().expect("the waiter takes the lock");
            handover.push(t.elapsed());
            holder = next;
            std::mem::swap(&mut waiting, &mut holding);

            let t = Instant::now();
            let r = raw
                .put(format!("{base}/v1/kv/{path}raw/put/{i}"))
                .body("v")
                .send()
                .await
                .unwrap();
            assert!(r.status().is_success());
            r.bytes().await.unwrap();
            raw_put.push(t.elapsed());
        }
        holder.release().await.unwrap();

        println!("Consul HA lock, same dev agent, {rounds} rounds each:");
        let take_ms = stats("take a free lock (ready session)", take);
        let acquire_ms = stats("raw PUT ?acquire (session made before)", raw_acquire);
        let handover_ms = stats("handover: release() -> waiter holds", handover);
        let put_ms = stats("raw KV PUT round trip", raw_put);
        println!(
            "take / raw acquire = {:.2}x the time; handover = {:.1} raw PUT round trips",
            take_ms / acquire_ms,
            handover_ms / put_ms
        );
    });
}
