//! The read cache over Consul storage with group commit: writes wait in a
//! queue and share transactions, and the cache still changes only when
//! Consul acknowledged a write; a batch refused by the fence leaves no
//! trace in it. Consul's requests pass a gate that holds the ones naming
//! `hold`, so writes queue behind them in a known order.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use seal_core::{HaBackend, Storage, StorageError};
use storage_consul::{ConsulHaBackend, ConsulStorage};
use strongroom::{CacheConfig, ReadCache};
use testkit::consul::{PrefixGuard, isolated, raw_request, shared_dev};
use testkit::proxy::GateProxy;
use testkit::wait::until;
use tokio::task::JoinHandle;

const DEADLINE: Duration = Duration::from_secs(30);

struct Setup {
    cache: Arc<ReadCache>,
    consul: ConsulStorage,
    direct: ConsulStorage,
    gate: GateProxy,
    _guard: PrefixGuard,
}

/// An active cache over a gated Consul storage, and a storage on the same
/// prefix that talks to Consul directly.
async fn setup() -> Setup {
    let dev = shared_dev();
    let gate = GateProxy::start(dev.http_address(), vec!["hold"]).await;
    let (direct, guard) = isolated(dev, |_| {});
    let mut config = dev.config();
    config.path = direct.path().to_owned();
    config.address = gate.address.clone();
    let consul = ConsulStorage::new(config).unwrap();
    let cache = Arc::new(ReadCache::new(
        Arc::new(consul.clone()),
        CacheConfig::default(),
    ));
    cache.activate();
    Setup {
        cache,
        consul,
        direct,
        gate,
        _guard: guard,
    }
}

fn put(cache: &Arc<ReadCache>, key: &'static str, value: &'static str) -> Write {
    let cache = cache.clone();
    tokio::spawn(async move { cache.put(key, value.as_bytes()).await })
}

type Write = JoinHandle<Result<(), StorageError>>;

impl Setup {
    /// Both transaction slots busy with writes held at the gate.
    async fn occupy_senders(&self) -> Vec<Write> {
        let mut held = Vec::new();
        for (n, key) in ["hold/a", "hold/b"].into_iter().enumerate() {
            held.push(put(&self.cache, key, "held"));
            until("the write is held at the gate", DEADLINE, || async {
                self.gate.held("hold") == n + 1
            })
            .await;
        }
        held
    }

    /// A put through the cache, started once the ones before are queued.
    async fn queue_put(&self, key: &'static str, value: &'static str) -> Write {
        let before = self.consul.request_stats().queued_writes;
        let write = put(&self.cache, key, value);
        until("the write is queued", DEADLINE, || async {
            self.consul.request_stats().queued_writes == before + 1
        })
        .await;
        write
    }
}

async fn outcomes(writes: Vec<Write>) -> Vec<Result<(), StorageError>> {
    let mut out = Vec::new();
    for w in writes {
        out.push(w.await.unwrap());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batched_writes_reach_the_cache_only_once_committed() {
    let s = setup().await;
    s.cache.put("k", b"old").await.unwrap();
    let mut writes = s.occupy_senders().await;
    writes.push(s.queue_put("k", "new").await);
    writes.push(s.queue_put("j", "1").await);
    assert_eq!(
        s.cache.get("k").await.unwrap().as_deref(),
        Some(&b"old"[..]),
        "a queued write is not in the cache"
    );
    assert_eq!(s.cache.get("j").await.unwrap(), None);

    s.gate.open();
    for outcome in outcomes(writes).await {
        outcome.unwrap();
    }
    for (key, value) in [("k", &b"new"[..]), ("j", b"1")] {
        assert_eq!(s.direct.get(key).await.unwrap().as_deref(), Some(value));
        assert_eq!(s.cache.get(key).await.unwrap().as_deref(), Some(value));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fenced_batch_leaves_no_trace_in_the_cache() {
    let s = setup().await;
    let ha = ConsulHaBackend::new(&s.consul);
    let lock = ha
        .try_lock("core/lock", b"node")
        .await
        .unwrap()
        .expect("the only contender gets the lock");
    s.cache.put("k", b"old").await.unwrap();
    assert_eq!(s.cache.get("j").await.unwrap(), None, "cached as absent");
    let mut writes = s.occupy_senders().await;
    writes.push(s.queue_put("k", "new").await);
    writes.push(s.queue_put("j", "1").await);

    let http = shared_dev().http_address();
    let path = format!("/v1/session/destroy/{}", lock.fencing_token().unwrap());
    let r = tokio::task::spawn_blocking(move || raw_request(&http, "PUT", &path, None, b""))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    s.gate.open();
    for outcome in outcomes(writes).await {
        let err = outcome.unwrap_err();
        assert!(err.is_fenced(), "{err:?}");
    }
    assert_eq!(
        s.cache.get("k").await.unwrap().as_deref(),
        Some(&b"old"[..])
    );
    assert_eq!(s.cache.get("j").await.unwrap(), None);
    assert_eq!(s.cache.get("hold/a").await.unwrap(), None);
    assert_eq!(
        s.direct.get("k").await.unwrap().as_deref(),
        Some(&b"old"[..])
    );
}
