//! The read cache as the core drives it: on only while the node serves,
//! emptied when it stops (seal, step-down, lost lock) and when it is
//! promoted, off with `disable_cache`, and a hit never reaches storage.
//!
//! Cores run on a `MemoryStorage` wrapped in a read counter; HA cores
//! share it and one `MemoryHaBackend`. Every wait polls a condition with
//! a deadline.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use seal_core::testing::InsecureTestSeal;
use seal_core::{
    HaBackend, MemoryHaBackend, MemoryStorage, Storage, StorageError, StorageLimits, TxnOp,
};
use serde_json::{Value, json};
use strongroom::{CacheConfig, Core, CoreOptions, HaMode, InitParams, LogicalRequest, Operation};
use testkit::wait;

const DEADLINE: Duration = Duration::from_secs(20);

/// Memory storage that counts the reads reaching it.
#[derive(Debug, Default)]
struct Counted {
    memory: MemoryStorage,
    gets: AtomicUsize,
}

impl Counted {
    fn gets(&self) -> usize {
        self.gets.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl Storage for Counted {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StorageError> {
        self.gets.fetch_add(1, Ordering::SeqCst);
        self.memory.get(key).await
    }
    async fn put(&self, key: &str, value: &[u8]) -> Result<(), StorageError> {
        self.memory.put(key, value).await
    }
    async fn delete(&self, key: &str) -> Result<(), StorageError> {
        self.memory.delete(key).await
    }
    async fn list(&self, prefix: &str) -> Result<Vec<String>, StorageError> {
        self.memory.list(prefix).await
    }
    async fn transaction(&self, ops: Vec<TxnOp>) -> Result<(), StorageError> {
        self.memory.transaction(ops).await
    }
    fn limits(&self) -> StorageLimits {
        self.memory.limits()
    }
}

async fn kv1(core: &Core, root: &str) {
    let mount = LogicalRequest::new(Operation::Update, "sys/mounts/kv")
        .with_token(root.to_owned())
        .with_data(json!({"type": "kv", "options": {"version": "1"}}));
    core.handle(mount).await.unwrap();
}

async fn write(core: &Core, root: &str, path: &str, data: Value) {
    let req = LogicalRequest::new(Operation::Update, path)
        .with_token(root.to_owned())
        .with_data(data);
    core.handle(req).await.unwrap();
}

async fn read(core: &Core, root: &str, path: &str) -> Value {
    let req = LogicalRequest::new(Operation::Read, path).with_token(root.to_owned());
    core.handle(req).await.unwrap().data.unwrap()
}

/// One Shamir core without HA, initialized and unsealed.
async fn single(cache: CacheConfig) -> (Arc<Counted>, Core, String, Vec<String>) {
    let storage = Arc::new(Counted::default());
    let core = Core::builder()
        .storage(storage.clone())
        .shamir()
        .options(CoreOptions::new("inmem").with_cache(cache))
        .build()
        .await
        .unwrap();
    let init = core
        .init(InitParams {
            secret_shares: 1,
            secret_threshold: 1,
            ..InitParams::default()
        })
        .await
        .unwrap();
    core.unseal(&init.keys[0]).await.unwrap();
    (storage, core, init.root_token.clone(), init.keys.clone())
}

#[tokio::test]
async fn a_serving_node_answers_repeated_reads_without_storage() {
    let (storage, core, root, _) = single(CacheConfig::default()).await;
    assert!(core.read_cache_stats().active);
    kv1(&core, &root).await;
    write(&core, &root, "kv/app", json!({"password": "s3cret"})).await;
    let before = storage.gets();
    for _ in 0..5 {
        assert_eq!(
            read(&core, &root, "kv/app").await,
            json!({"password": "s3cret"})
        );
    }
    assert_eq!(storage.gets(), before, "every read was a cache hit");
    // Overwritten through the core: the next read sees the new value, still
    // without storage.
    write(&core, &root, "kv/app", json!({"password": "rotated"})).await;
    assert_eq!(
        read(&core, &root, "kv/app").await,
        json!({"password": "rotated"})
    );
    assert_eq!(storage.gets(), before);
    assert!(core.read_cache_stats().hits >= 6);
}

#[tokio::test]
async fn sealing_empties_and_stops_the_cache_and_unsealing_starts_it_empty() {
    let (storage, core, root, keys) = single(CacheConfig::default()).await;
    kv1(&core, &root).await;
    write(&core, &root, "kv/a", json!({"v": 1})).await;
    read(&core, &root, "kv/a").await;
    assert!(core.read_cache_stats().entries > 0);
    core.seal(&root).await.unwrap();
    let stats = core.read_cache_stats();
    assert!(!stats.active && stats.entries == 0, "{stats:?}");
    // While sealed, nothing is cached: status reads go to storage each time.
    let before = storage.gets();
    core.seal_status().await.unwrap();
    core.seal_status().await.unwrap();
    assert_eq!(storage.gets(), before + 2);
    assert_eq!(core.read_cache_stats().entries, 0);
    core.unseal(&keys[0]).await.unwrap();
    let stats = core.read_cache_stats();
    assert!(stats.active, "{stats:?}");
    assert_eq!(read(&core, &root, "kv/a").await, json!({"v": 1}));
}

#[tokio::test]
async fn disable_cache_sends_every_read_to_storage() {
    let (storage, core, root, _) = single(CacheConfig {
        enabled: false,
        ..CacheConfig::default()
    })
    .await;
    kv1(&core, &root).await;
    write(&core, &root, "kv/a", json!({"v": 1})).await;
    let before = storage.gets();
    read(&core, &root, "kv/a").await;
    read(&core, &root, "kv/a").await;
    assert!(storage.gets() >= before + 2);
    let stats = core.read_cache_stats();
    assert!(
        !stats.active && stats.entries == 0 && stats.hits == 0,
        "{stats:?}"
    );
}

/// Auto-seal HA cores on one counted storage and one lock service.
struct Pair {
    storage: Arc<Counted>,
    ha: MemoryHaBackend,
    nodes: Vec<Core>,
    root: String,
}

impl Pair {
    async fn start() -> Pair {
        let storage = Arc::new(Counted::default());
        let ha = MemoryHaBackend::new();
        let seal = Arc::new(InsecureTestSeal::new());
        let mut nodes = Vec::new();
        let mut root = String::new();
        for i in 0..2 {
            let contender: Arc<dyn HaBackend> = Arc::new(ha.contender(Duration::from_millis(500)));
            let node = Core::builder()
                .storage(storage.clone())
                .ha(contender)
                .auto_seal(seal.clone())
                .options(
                    CoreOptions::new("inmem")
                        .with_api_addr(format!("http://node{i}:8200"))
                        .with_auto_unseal_backoff(
                            Duration::from_millis(10),
                            Duration::from_millis(50),
                        )
                        .with_step_down_grace(Duration::from_secs(60)),
                )
                .build()
                .await
                .unwrap();
            if i == 0 {
                let init = node
                    .init(InitParams {
                        recovery_shares: 1,
                        recovery_threshold: 1,
                        ..InitParams::default()
                    })
                    .await
                    .unwrap();
                root.clone_from(&init.root_token);
            }
            nodes.push(node);
        }
        Pair {
            storage,
            ha,
            nodes,
            root,
        }
    }

    /// Waits until one node serves and the other is sealed or its standby.
    async fn active(&self, not: Option<usize>) -> usize {
        wait::until("a single serving node", DEADLINE, || async {
            let active: Vec<usize> = (0..2)
                .filter(|&i| self.nodes[i].node_state().mode == HaMode::Active)
                .collect();
            match active[..] {
                [leader]
                    if Some(leader) != not
                        && self.nodes[leader].logical().is_ok()
                        && (self.nodes[1 - leader].is_sealed()
                            || matches!(
                                self.nodes[1 - leader].node_state().mode,
                                HaMode::Standby { leader: Some(_) }
                            )) =>
                {
                    Ok(leader)
                }
                _ => Err(format!(
                    "{:?}",
                    self.nodes.iter().map(Core::node_state).collect::<Vec<_>>()
                )),
            }
        })
        .await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_active_node_caches_and_each_promotion_starts_empty() {
    let p = Pair::start().await;
    let first = p.active(None).await;
    kv1(&p.nodes[first], &p.root).await;
    write(&p.nodes[first], &p.root, "kv/shared", json!({"v": 1})).await;
    read(&p.nodes[first], &p.root, "kv/shared").await;
    let standby = p.nodes[1 - first].read_cache_stats();
    assert!(!standby.active && standby.entries == 0, "{standby:?}");
    assert!(p.nodes[first].read_cache_stats().active);

    // Step-down: the old active node's cache is emptied and turned off.
    let purges = p.nodes[first].read_cache_stats().purges;
    p.nodes[first].step_down(&p.root).await.unwrap();
    let second = p.active(Some(first)).await;
    let old = p.nodes[first].read_cache_stats();
    assert!(!old.active && old.entries == 0, "{old:?}");
    assert!(old.purges > purges);

    // The new active node writes what the old one had cached.
    write(&p.nodes[second], &p.root, "kv/shared", json!({"v": 2})).await;
    let purges = p.nodes[first].read_cache_stats().purges;
    p.nodes[second].step_down(&p.root).await.unwrap();
    let again = p.active(Some(second)).await;
    assert_eq!(again, first);
    // Promoted again: emptied at promotion, and it reads the other node's
    // write, not its own earlier view.
    assert!(p.nodes[first].read_cache_stats().purges > purges);
    assert_eq!(
        read(&p.nodes[first], &p.root, "kv/shared").await,
        json!({"v": 2})
    );
    let before = p.storage.gets();
    read(&p.nodes[first], &p.root, "kv/shared").await;
    assert_eq!(p.storage.gets(), before, "the new period caches again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_the_lock_or_sealing_drops_the_cache() {
    let p = Pair::start().await;
    let first = p.active(None).await;
    kv1(&p.nodes[first], &p.root).await;
    write(&p.nodes[first], &p.root, "kv/x", json!({"v": 1})).await;
    read(&p.nodes[first], &p.root, "kv/x").await;
    let stats = p.nodes[first].read_cache_stats();
    assert!(stats.entries > 0, "{stats:?}");

    // The lock is taken away (a Consul session invalidation): the node
    // empties its cache when it learns it, whoever is promoted next.
    assert!(
        p.ha.insecure_break_lock("core/lock"),
        "nobody held the lock"
    );
    wait::until(
        "the cache is emptied after the lock was lost",
        DEADLINE,
        || async {
            let now = p.nodes[first].read_cache_stats();
            if now.purges == stats.purges {
                Err(format!("{:?} {now:?}", p.nodes[first].node_state()))
            } else {
                Ok(())
            }
        },
    )
    .await;
    let now = p.active(None).await;
    assert_eq!(read(&p.nodes[now], &p.root, "kv/x").await, json!({"v": 1}));

    // Sealing the active node gives up the lock; its cache is emptied and
    // stays off while sealed.
    p.nodes[now].seal(&p.root).await.unwrap();
    let sealed = p.nodes[now].read_cache_stats();
    assert!(!sealed.active && sealed.entries == 0, "{sealed:?}");
    let other = p.active(Some(now)).await;
    assert_eq!(
        read(&p.nodes[other], &p.root, "kv/x").await,
        json!({"v": 1})
    );
}
