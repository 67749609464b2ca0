//! [`ReadCache`]: a bounded cache of storage entries between the barrier
//! and the physical storage (Vault's physical cache, `cache_size` /
//! `disable_cache`).
//!
//! It holds what storage holds — barrier ciphertext and the few plain
//! entries — so nothing decrypted is kept beyond what serving already keeps
//! in memory, and a hit still pays the barrier's decryption. A hit does not
//! touch storage: on Consul that is one HTTP round trip (and its CPU on
//! both processes) saved per read.
//!
//! # Why a cache of a shared store is correct here
//!
//! A cache is only as good as its knowledge of every write. Strongroom
//! keeps that knowledge by having exactly one writer:
//!
//! * Only a serving node caches: a single node without HA, or the HA
//!   **active** node. A standby's cache is off (it forwards requests, and
//!   the only reads it makes — the keyring when a new term appears, the
//!   plain seal entries — must see the active node's writes), and the
//!   cache is emptied whenever the node stops serving (seal, step-down,
//!   loss of the lock) and again when it is promoted, so nothing cached
//!   while another node could write survives into an active period.
//! * While a node is active it is the only writer: the lock says so, and
//!   **fencing** enforces it. Every Consul write of an active node carries
//!   a `check-session` on the lock key, so once another node holds the
//!   lock, the old node's writes fail in Consul itself
//!   ([`seal_core::StorageError::Fenced`]) and never reach this cache
//!   either; the core's storage view refuses everything the moment the
//!   node learns it lost the lock. Hence every write that lands in
//!   storage during an active period went through this cache, and the
//!   cache can be kept equal to storage by updating it on each write.
//! * The remaining window is reads on a node that has lost the lock but
//!   not learned it yet (a process paused longer than the lock delay): it
//!   can answer from its cache what the new active node already changed,
//!   just as Vault's active node can. Anything it would write on that basis
//!   is fenced.
//!
//! # Coherence rules
//!
//! * A write or delete changes the cache only after storage acknowledged
//!   it; a failed or fenced write never puts its value into the cache. A
//!   failure that may have landed after all (a timeout, an unexpected
//!   answer) drops the key so the next read asks storage; a failure that
//!   certainly wrote nothing (invalid key, too large, permission denied,
//!   fenced) leaves the cache as it was.
//! * A read that misses stores what it read only if no write to that key's
//!   stripe was in flight when it started, none started or finished
//!   meanwhile, and the cache was not emptied meanwhile (per-stripe
//!   counters and an epoch, compared under the stripe's lock), so a slow
//!   read can never overwrite a newer write, and what a read sees while a
//!   write is in flight (either side of it) is served but not kept.
//! * A transaction drops its keys before it is sent (so readers meanwhile
//!   go to storage, which applies it atomically) and stores its results
//!   holding the locks of all its stripes, which readers take to look up
//!   the cache: no reader sees part of a transaction.
//! * Lists are not cached: they pass through to storage (as in Vault), so
//!   they always reflect every write under their prefix.
//! * Concurrent writes to one stripe both drop their keys instead of
//!   guessing which landed last.
//! * A write whose caller goes away before storage answered (the HTTP
//!   client hung up, so the request's future was dropped) may still land:
//!   its keys are dropped like those of an ambiguous failure, and its
//!   stripes count it as ended, so they cache reads again.
//!
//! The entries live in a `quick_cache` (sharded, CLOCK-Pro eviction)
//! bounded by weight: each entry weighs its size, but at least the byte
//! budget divided by the entry budget, so both bounds hold at once.

use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use async_trait::async_trait;
use seal_core::{Storage, StorageError, StorageLimits, TxnOp};

/// Vault's default `cache_size`: entries kept.
pub const DEFAULT_CACHE_ENTRIES: usize = 128 * 1024;
/// Default byte budget of the cache (keys and values).
pub const DEFAULT_CACHE_BYTES: usize = 128 * 1024 * 1024;
/// Bookkeeping bytes counted per entry beside its key and value.
const ENTRY_OVERHEAD: usize = 64;
/// Stripes of the coherence locks; a power of two.
const STRIPES: usize = 1024;

/// How big the cache may grow (see [`ReadCache`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheConfig {
    /// `false`: no caching at all (Vault's `disable_cache = true`).
    pub enabled: bool,
    /// Most entries kept (Vault's `cache_size`; default 131072).
    pub max_entries: usize,
    /// Most bytes of keys and values kept (default 128 MiB).
    pub max_bytes: usize,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            max_entries: DEFAULT_CACHE_ENTRIES,
            max_bytes: DEFAULT_CACHE_BYTES,
        }
    }
}

/// Counters of a [`ReadCache`], for metrics and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct CacheStats {
    /// Reads answered from the cache.
    pub hits: u64,
    /// Reads that went to storage while the cache was on.
    pub misses: u64,
    /// Entries stored after a read or an acknowledged write.
    pub stores: u64,
    /// Entries dropped because a write failed ambiguously or raced another.
    pub drops: u64,
    /// Times the cache was emptied (promotion, seal, step-down).
    pub purges: u64,
    /// Entries held now.
    pub entries: usize,
    /// Whether the cache is serving reads now.
    pub active: bool,
}

/// A cached read: the value, or the knowledge that the key is absent.
type Entry = Option<Arc<[u8]>>;

/// Weighs an entry by its size, with a floor that bounds the entry count.
#[derive(Debug, Clone)]
struct Weigher {
    floor: u64,
}

impl quick_cache::Weighter<String, Entry> for Weigher {
    fn weight(&self, key: &String, value: &Entry) -> u64 {
        let size = key.len() + value.as_ref().map_or(0, |v| v.len()) + ENTRY_OVERHEAD;
        (size as u64).max(self.floor)
    }
}

type Entries = quick_cache::sync::Cache<String, Entry, Weigher>;

/// A read cache in front of a [`Storage`] (see the module docs for the
/// coherence rules and why they hold).
///
/// It starts **off**: reads and writes pass through until
/// [`ReadCache::activate`] (the core calls it when the node starts
/// serving), and [`ReadCache::deactivate`] empties and stops it again.
pub struct ReadCache {
    inner: Arc<dyn Storage>,
    config: CacheConfig,
    entries: Entries,
    stripes: Box<[Mutex<Stripe>]>,
    hasher: RandomState,
    /// `epoch << 1 | on`; changed only with every stripe lock held, so a
    /// value read under any stripe lock is current for that stripe.
    state: AtomicU64,
    hits: AtomicU64,
    misses: AtomicU64,
    stores: AtomicU64,
    drops: AtomicU64,
    purges: AtomicU64,
}

impl std::fmt::Debug for ReadCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadCache")
            .field("config", &self.config)
            .field("active", &self.is_active())
            .field("entries", &self.entries.len())
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

/// One stripe of the coherence locks: how many writes to its keys started
/// or finished (`version`) and how many are in flight (`writing`).
#[derive(Debug, Default)]
struct Stripe {
    version: u64,
    writing: u32,
}

/// A write between sending and acknowledgement, holding its stripes open
/// (`writing`) until [`WriteTicket::finish`] applies the outcome.
///
/// Dropped unfinished — the caller's future was dropped while storage had
/// the write, as when an HTTP client hangs up mid-request — it cannot know
/// whether the write landed, so it ends like an ambiguous failure: its
/// keys are dropped (no entry older than storage survives) and its stripes
/// count it as ended (a stripe left "writing" would never cache a read
/// again).
struct WriteTicket<'a> {
    cache: &'a ReadCache,
    keys: Vec<&'a str>,
    /// Sorted, distinct stripe indices with the version each had after
    /// this write's start.
    stripes: Vec<(usize, u64)>,
    state: u64,
    finished: bool,
}

impl<'a> WriteTicket<'a> {
    fn lock_stripes(&self) -> Vec<MutexGuard<'a, Stripe>> {
        let cache = self.cache;
        self.stripes
            .iter()
            .map(|&(i, _)| lock(&cache.stripes[i]))
            .collect()
    }

    /// Applies an acknowledged (or failed) write to the cache, holding
    /// every stripe it touches so readers see all of it or none. `ops`
    /// are the written keys with their new entries, in order (a later
    /// entry for the same key wins).
    fn finish<'k>(
        mut self,
        ops: impl Iterator<Item = (&'k str, Entry)>,
        result: &Result<(), StorageError>,
    ) {
        let cache = self.cache;
        let guards = self.lock_stripes();
        let state = cache.state.load(Ordering::Acquire);
        match result {
            Ok(()) if state & 1 == 1 => {
                for (key, entry) in ops {
                    let stripe = cache.stripe_of(key);
                    // No other write to this stripe started or ended, and
                    // the cache was not emptied, since this one started.
                    let sole = state == self.state
                        && self
                            .stripes
                            .iter()
                            .zip(&guards)
                            .any(|(&(i, mine), guard)| i == stripe && guard.version == mine);
                    if sole {
                        cache.entries.insert(key.to_owned(), entry);
                        cache.stores.fetch_add(1, Ordering::Relaxed);
                    } else {
                        cache.drop_entry(key);
                    }
                }
            }
            Ok(()) => {}
            Err(err) if nothing_written(err) => {}
            Err(_) => {
                for (key, _) in ops {
                    cache.drop_entry(key);
                }
            }
        }
        end_write(guards);
        self.finished = true;
    }
}

impl Drop for WriteTicket<'_> {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        let guards = self.lock_stripes();
        for key in &self.keys {
            self.cache.drop_entry(key);
        }
        end_write(guards);
    }
}

/// Counts a write as ended on its (locked) stripes.
fn end_write(guards: Vec<MutexGuard<'_, Stripe>>) {
    for mut guard in guards {
        guard.version += 1;
        guard.writing -= 1;
    }
}

impl ReadCache {
    /// A cache (off until activated) in front of `inner`.
    pub fn new(inner: Arc<dyn Storage>, config: CacheConfig) -> Self {
        let max_entries = config.max_entries.max(1);
        let max_bytes = config.max_bytes.max(1);
        let floor = (max_bytes / max_entries).max(1) as u64;
        Self {
            inner,
            config,
            entries: Entries::with_weighter(
                max_entries.min(4096),
                max_bytes as u64,
                Weigher { floor },
            ),
            stripes: (0..STRIPES).map(|_| Mutex::default()).collect(),
            hasher: RandomState::new(),
            state: AtomicU64::new(0),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            stores: AtomicU64::new(0),
            drops: AtomicU64::new(0),
            purges: AtomicU64::new(0),
        }
    }

    /// The storage behind the cache.
    pub fn inner(&self) -> &Arc<dyn Storage> {
        &self.inner
    }

    /// How the cache was configured.
    pub fn config(&self) -> CacheConfig {
        self.config
    }

    /// Whether reads are answered from the cache now.
    pub fn is_active(&self) -> bool {
        self.state.load(Ordering::Acquire) & 1 == 1
    }

    /// Empties the cache and turns it on (a node starts serving). Does
    /// nothing but empty it when caching is disabled by configuration.
    pub fn activate(&self) {
        self.reset(self.config.enabled);
    }

    /// Empties the cache and turns it off (the node stops serving: seal,
    /// step-down, lost lock).
    pub fn deactivate(&self) {
        self.reset(false);
    }

    /// The counters.
    pub fn stats(&self) -> CacheStats {
        CacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            stores: self.stores.load(Ordering::Relaxed),
            drops: self.drops.load(Ordering::Relaxed),
            purges: self.purges.load(Ordering::Relaxed),
            entries: self.entries.len(),
            active: self.is_active(),
        }
    }

    /// Whether `key` has a cached entry (present or absent), for tests.
    pub fn contains(&self, key: &str) -> bool {
        self.entries.contains_key(key)
    }

    fn reset(&self, on: bool) {
        let guards: Vec<MutexGuard<'_, Stripe>> = self.stripes.iter().map(lock).collect();
        let epoch = (self.state.load(Ordering::Acquire) >> 1) + 1;
        self.entries.clear();
        self.state
            .store(epoch << 1 | u64::from(on), Ordering::Release);
        drop(guards);
        self.purges.fetch_add(1, Ordering::Relaxed);
    }

    fn stripe_of(&self, key: &str) -> usize {
        // STRIPES is a power of two; the mask keeps the index in range.
        (self.hasher.hash_one(key) as usize) & (STRIPES - 1)
    }

    /// Marks the start of a write to `keys`: bumps each stripe's version so
    /// reads in flight do not store what they read. With `drop_keys`, also
    /// drops the keys (transactions, see the module docs).
    fn begin_write<'a>(&'a self, keys: Vec<&'a str>, drop_keys: bool) -> WriteTicket<'a> {
        let mut indices: Vec<usize> = keys.iter().map(|k| self.stripe_of(k)).collect();
        indices.sort_unstable();
        indices.dedup();
        let guards: Vec<_> = indices.iter().map(|&i| lock(&self.stripes[i])).collect();
        let state = self.state.load(Ordering::Acquire);
        if drop_keys && state & 1 == 1 {
            for key in &keys {
                self.entries.remove(*key);
            }
        }
        let stripes = indices
            .iter()
            .zip(guards)
            .map(|(&i, mut guard)| {
                guard.version += 1;
                guard.writing += 1;
                (i, guard.version)
            })
            .collect();
        WriteTicket {
            cache: self,
            keys,
            stripes,
            state,
            finished: false,
        }
    }

    /// Drops `key`'s entry, if any (a write whose outcome is unknown or
    /// raced another).
    fn drop_entry(&self, key: &str) {
        if self.entries.remove(key).is_some() {
            self.drops.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A put (`Some`) or delete (`None`) of one key.
    async fn write_one(&self, key: &str, value: Option<&[u8]>) -> Result<(), StorageError> {
        let ticket = self.begin_write(vec![key], false);
        let result = match value {
            Some(value) => self.inner.put(key, value).await,
            None => self.inner.delete(key).await,
        };
        let entry = match (&result, value) {
            (Ok(()), Some(value)) if ticket.state & 1 == 1 => Some(Arc::from(value)),
            _ => None,
        };
        ticket.finish(std::iter::once((key, entry)), &result);
        result
    }
}

fn lock(stripe: &Mutex<Stripe>) -> MutexGuard<'_, Stripe> {
    stripe.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Failures after which storage certainly holds what it held before.
fn nothing_written(err: &StorageError) -> bool {
    matches!(
        err,
        StorageError::InvalidKey { .. }
            | StorageError::ValueTooLarge { .. }
            | StorageError::TransactionTooLarge { .. }
            | StorageError::PermissionDenied { .. }
            | StorageError::Fenced { .. }
    )
}

#[async_trait]
impl Storage for ReadCache {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StorageError> {
        if !self.is_active() {
            return self.inner.get(key).await;
        }
        let stripe = self.stripe_of(key);
        let (version, state, quiet) = {
            let guard = lock(&self.stripes[stripe]);
            let state = self.state.load(Ordering::Acquire);
            if state & 1 == 0 {
                drop(guard);
                return self.inner.get(key).await;
            }
            if let Some(entry) = self.entries.get(key) {
                drop(guard);
                self.hits.fetch_add(1, Ordering::Relaxed);
                return Ok(entry.map(|v| v.to_vec()));
            }
            // What storage answers while a write is in flight may be
            // either side of it: serve it, do not keep it.
            (guard.version, state, guard.writing == 0)
        };
        self.misses.fetch_add(1, Ordering::Relaxed);
        let value = self.inner.get(key).await?;
        let guard = lock(&self.stripes[stripe]);
        if quiet && guard.version == version && self.state.load(Ordering::Acquire) == state {
            self.entries
                .insert(key.to_owned(), value.as_deref().map(Arc::from));
            self.stores.fetch_add(1, Ordering::Relaxed);
        }
        drop(guard);
        Ok(value)
    }

    async fn put(&self, key: &str, value: &[u8]) -> Result<(), StorageError> {
        self.write_one(key, Some(value)).await
    }

    async fn delete(&self, key: &str) -> Result<(), StorageError> {
        self.write_one(key, None).await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>, StorageError> {
        self.inner.list(prefix).await
    }

    async fn transaction(&self, ops: Vec<TxnOp>) -> Result<(), StorageError> {
        if ops.is_empty() {
            return self.inner.transaction(ops).await;
        }
        // The entries are taken before the ops go to storage by value.
        let pending: Vec<(String, Entry)> = ops
            .iter()
            .map(|op| match op {
                TxnOp::Put { key, value } => (key.clone(), Some(Arc::from(value.as_slice()))),
                TxnOp::Delete { key } => (key.clone(), None),
            })
            .collect();
        let ticket = self.begin_write(pending.iter().map(|(k, _)| k.as_str()).collect(), true);
        let result = self.inner.transaction(ops).await;
        ticket.finish(
            pending.iter().map(|(k, e)| (k.as_str(), e.clone())),
            &result,
        );
        result
    }

    fn limits(&self) -> StorageLimits {
        self.inner.limits()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use seal_core::MemoryStorage;
    use tokio::sync::oneshot;

    use super::*;

    /// Where a held operation pauses.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum At {
        /// Before storage applies it (a write not yet acknowledged, or a
        /// read that has not looked yet).
        Before,
        /// After storage applied it, before the answer reaches the caller
        /// (a write whose acknowledgement is slow, a read answered late).
        After,
    }

    #[derive(Debug)]
    struct Hold {
        at: At,
        reached: oneshot::Sender<()>,
        release: oneshot::Receiver<()>,
    }

    /// Memory storage that counts reads and can fail or hold the next
    /// operation, to put a write or read in flight at a chosen moment.
    #[derive(Debug, Default)]
    struct Scripted {
        memory: MemoryStorage,
        gets: AtomicUsize,
        fail_next_write: Mutex<Option<fn() -> StorageError>>,
        hold_get: Mutex<Option<Hold>>,
        hold_write: Mutex<Option<Hold>>,
    }

    /// The two ends of a hold: wait for `reached`, then send on `release`.
    struct Held {
        reached: oneshot::Receiver<()>,
        release: oneshot::Sender<()>,
    }

    impl Held {
        async fn reached(&mut self) {
            (&mut self.reached).await.unwrap();
        }
        fn release(self) {
            self.release.send(()).unwrap();
        }
    }

    fn hold(slot: &Mutex<Option<Hold>>, at: At) -> Held {
        let (reached_tx, reached_rx) = oneshot::channel();
        let (release_tx, release_rx) = oneshot::channel();
        *slot.lock().unwrap() = Some(Hold {
            at,
            reached: reached_tx,
            release: release_rx,
        });
        Held {
            reached: reached_rx,
            release: release_tx,
        }
    }

    async fn pause(slot: &Mutex<Option<Hold>>, at: At) {
        let taken = {
            let mut guard = slot.lock().unwrap();
            match guard.as_ref() {
                Some(h) if h.at == at => guard.take(),
                _ => None,
            }
        };
        if let Some(h) = taken {
            h.reached.send(()).unwrap();
            h.release.await.unwrap();
        }
    }

    impl Scripted {
        fn gets(&self) -> usize {
            self.gets.load(Ordering::SeqCst)
        }

        async fn around_write<F>(&self, apply: F) -> Result<(), StorageError>
        where
            F: std::future::Future<Output = Result<(), StorageError>>,
        {
            pause(&self.hold_write, At::Before).await;
            let fail = self.fail_next_write.lock().unwrap().take();
            if let Some(fail) = fail {
                return Err(fail());
            }
            let result = apply.await;
            pause(&self.hold_write, At::After).await;
            result
        }
    }

    #[async_trait]
    impl Storage for Scripted {
        async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StorageError> {
            self.gets.fetch_add(1, Ordering::SeqCst);
            pause(&self.hold_get, At::Before).await;
            let value = self.memory.get(key).await;
            pause(&self.hold_get, At::After).await;
            value
        }
        async fn put(&self, key: &str, value: &[u8]) -> Result<(), StorageError> {
            self.around_write(self.memory.put(key, value)).await
        }
        async fn delete(&self, key: &str) -> Result<(), StorageError> {
            self.around_write(self.memory.delete(key)).await
        }
        async fn list(&self, prefix: &str) -> Result<Vec<String>, StorageError> {
            self.memory.list(prefix).await
        }
        async fn transaction(&self, ops: Vec<TxnOp>) -> Result<(), StorageError> {
            self.around_write(self.memory.transaction(ops)).await
        }
    }

    fn unavailable() -> StorageError {
        StorageError::Unavailable {
            op: "put",
            key: "k".into(),
            message: "timed out after sending".into(),
            source: None,
        }
    }

    fn fenced() -> StorageError {
        StorageError::Fenced {
            op: "put",
            key: "k".into(),
            source: "session check failed".into(),
        }
    }

    fn active_cache() -> (Arc<Scripted>, Arc<ReadCache>) {
        let storage = Arc::new(Scripted::default());
        let cache = Arc::new(ReadCache::new(storage.clone(), CacheConfig::default()));
        cache.activate();
        (storage, cache)
    }

    type WriteFuture =
        std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), StorageError>> + Send>>;

    async fn get(cache: &ReadCache, key: &str) -> Option<Vec<u8>> {
        cache.get(key).await.unwrap()
    }

    #[tokio::test]
    async fn hits_do_not_touch_storage_and_absence_is_cached_too() {
        let (storage, cache) = active_cache();
        cache.put("a", b"1").await.unwrap();
        assert_eq!(get(&cache, "a").await.as_deref(), Some(&b"1"[..]));
        assert_eq!(get(&cache, "a").await.as_deref(), Some(&b"1"[..]));
        assert_eq!(storage.gets(), 0, "a written key is served from the cache");
        assert_eq!(get(&cache, "missing").await, None);
        assert_eq!(get(&cache, "missing").await, None);
        assert_eq!(storage.gets(), 1, "the absence was cached");
        cache.delete("a").await.unwrap();
        assert_eq!(get(&cache, "a").await, None);
        assert_eq!(storage.gets(), 1, "a deleted key is known absent");
        let stats = cache.stats();
        assert_eq!((stats.hits, stats.misses), (4, 1));
        assert!(stats.active);
    }

    #[tokio::test]
    async fn an_inactive_or_disabled_cache_passes_everything_through() {
        let storage = Arc::new(Scripted::default());
        let cache = ReadCache::new(storage.clone(), CacheConfig::default());
        cache.put("a", b"1").await.unwrap();
        get(&cache, "a").await;
        get(&cache, "a").await;
        assert_eq!(storage.gets(), 2);
        assert_eq!(cache.stats().entries, 0);

        let disabled = ReadCache::new(
            storage.clone(),
            CacheConfig {
                enabled: false,
                ..CacheConfig::default()
            },
        );
        disabled.activate();
        assert!(!disabled.is_active(), "disable_cache wins over activation");
        disabled.put("b", b"2").await.unwrap();
        get(&disabled, "b").await;
        assert_eq!(storage.gets(), 3);
        assert_eq!(disabled.stats().entries, 0);
    }

    #[tokio::test]
    async fn a_write_reaches_the_cache_only_once_storage_acknowledged_it() {
        let (storage, cache) = active_cache();
        cache.put("k", b"old").await.unwrap();
        let mut held = hold(&storage.hold_write, At::Before);
        let writer = tokio::spawn({
            let cache = cache.clone();
            async move { cache.put("k", b"new").await }
        });
        held.reached().await;
        // Sent, not acknowledged: readers still get the old value, from the
        // cache.
        assert_eq!(get(&cache, "k").await.as_deref(), Some(&b"old"[..]));
        assert_eq!(storage.gets(), 0);
        held.release();
        writer.await.unwrap().unwrap();
        assert_eq!(get(&cache, "k").await.as_deref(), Some(&b"new"[..]));
        assert_eq!(storage.gets(), 0, "the acknowledged value was cached");
    }

    #[tokio::test]
    async fn a_failed_or_fenced_write_leaves_no_trace() {
        let (storage, cache) = active_cache();
        cache.put("k", b"v1").await.unwrap();

        // Fenced: Consul refused the whole write; the cached entry stays.
        *storage.fail_next_write.lock().unwrap() = Some(fenced);
        assert!(cache.put("k", b"v2").await.unwrap_err().is_fenced());
        assert!(cache.contains("k"));
        assert_eq!(get(&cache, "k").await.as_deref(), Some(&b"v1"[..]));
        *storage.fail_next_write.lock().unwrap() = Some(fenced);
        assert!(cache.delete("k").await.is_err());
        assert_eq!(get(&cache, "k").await.as_deref(), Some(&b"v1"[..]));
        assert_eq!(storage.gets(), 0);

        // A failure that may have landed: the key is dropped and the next
        // read asks storage (which here still has v1).
        *storage.fail_next_write.lock().unwrap() = Some(unavailable);
        assert!(cache.put("k", b"v3").await.is_err());
        assert!(!cache.contains("k"));
        assert_eq!(get(&cache, "k").await.as_deref(), Some(&b"v1"[..]));
        assert_eq!(storage.gets(), 1);

        // A failed write of a new key caches nothing; nor does a failed
        // transaction.
        *storage.fail_next_write.lock().unwrap() = Some(unavailable);
        assert!(cache.put("new", b"x").await.is_err());
        assert!(!cache.contains("new"));
        *storage.fail_next_write.lock().unwrap() = Some(fenced);
        let txn = vec![TxnOp::put("t1", b"x".to_vec()), TxnOp::delete("k")];
        assert!(cache.transaction(txn).await.is_err());
        assert!(!cache.contains("t1"));
        assert_eq!(get(&cache, "new").await, None);
        assert_eq!(get(&cache, "t1").await, None);
        assert_eq!(get(&cache, "k").await.as_deref(), Some(&b"v1"[..]));

        // Refused before anything is sent (invalid key): nothing changes.
        assert!(cache.put("bad//key", b"x").await.is_err());
        assert_eq!(cache.stats().drops, 1);
    }

    #[tokio::test]
    async fn a_write_whose_caller_went_away_leaves_no_stale_entry_and_no_stuck_stripe() {
        let (storage, cache) = active_cache();
        cache.put("k", b"old").await.unwrap();
        cache.put("t", b"old").await.unwrap();
        // Each write lands in storage, then its caller is dropped before
        // the acknowledgement (an HTTP client that hung up mid-request).
        let put = {
            let cache = cache.clone();
            async move { cache.put("k", b"new").await }
        };
        let txn = {
            let cache = cache.clone();
            async move {
                cache
                    .transaction(vec![TxnOp::put("t", b"new".to_vec())])
                    .await
            }
        };
        let writes: [(&str, WriteFuture); 2] = [("k", Box::pin(put)), ("t", Box::pin(txn))];
        for (key, write) in writes {
            let mut held = hold(&storage.hold_write, At::After);
            let writer = tokio::spawn(write);
            held.reached().await;
            writer.abort();
            assert!(writer.await.unwrap_err().is_cancelled());
            drop(held);
            let before = storage.gets();
            assert_eq!(
                get(&cache, key).await.as_deref(),
                Some(&b"new"[..]),
                "{key}: not the entry from before the write"
            );
            assert_eq!(storage.gets(), before + 1, "{key}: read from storage");
            assert_eq!(get(&cache, key).await.as_deref(), Some(&b"new"[..]));
            assert_eq!(
                storage.gets(),
                before + 1,
                "{key}: its stripe caches reads again"
            );
        }
    }

    #[tokio::test]
    async fn a_slow_read_never_overwrites_a_newer_write() {
        let (storage, cache) = active_cache();
        storage.memory.put("k", b"old").await.unwrap();
        // The read has looked at storage (old) but not answered yet.
        let mut held = hold(&storage.hold_get, At::After);
        let reader = tokio::spawn({
            let cache = cache.clone();
            async move { cache.get("k").await }
        });
        held.reached().await;
        cache.put("k", b"new").await.unwrap();
        held.release();
        // The late reader may return what it saw…
        assert_eq!(reader.await.unwrap().unwrap().as_deref(), Some(&b"old"[..]));
        // …but it must not have replaced the newer cached value.
        assert_eq!(get(&cache, "k").await.as_deref(), Some(&b"new"[..]));
        assert_eq!(storage.gets(), 1);
    }

    #[tokio::test]
    async fn a_read_racing_a_slow_acknowledgement_is_not_cached() {
        let (storage, cache) = active_cache();
        storage.memory.put("k", b"old").await.unwrap();
        // The write has landed in storage but is not acknowledged yet; a
        // read that started before it landed answers late with "old".
        let mut read_held = hold(&storage.hold_get, At::After);
        let reader = tokio::spawn({
            let cache = cache.clone();
            async move { cache.get("k").await }
        });
        read_held.reached().await;
        let mut write_held = hold(&storage.hold_write, At::After);
        let writer = tokio::spawn({
            let cache = cache.clone();
            async move { cache.put("k", b"new").await }
        });
        write_held.reached().await;
        read_held.release();
        assert_eq!(reader.await.unwrap().unwrap().as_deref(), Some(&b"old"[..]));
        assert!(
            !cache.contains("k"),
            "a read overlapping a write is not cached"
        );
        write_held.release();
        writer.await.unwrap().unwrap();
        assert_eq!(get(&cache, "k").await.as_deref(), Some(&b"new"[..]));
    }

    #[tokio::test]
    async fn overlapping_writes_to_one_key_leave_what_storage_holds() {
        let (storage, cache) = active_cache();
        // First write lands, then its acknowledgement is held; the second
        // lands and is acknowledged; then the first is acknowledged.
        let mut first_held = hold(&storage.hold_write, At::After);
        let first = tokio::spawn({
            let cache = cache.clone();
            async move { cache.put("k", b"first").await }
        });
        first_held.reached().await;
        cache.put("k", b"second").await.unwrap();
        first_held.release();
        first.await.unwrap().unwrap();
        assert_eq!(get(&cache, "k").await.as_deref(), Some(&b"second"[..]));
    }

    #[tokio::test]
    async fn emptying_the_cache_is_not_undone_by_a_read_in_flight() {
        let (storage, cache) = active_cache();
        storage.memory.put("k", b"before").await.unwrap();
        let mut held = hold(&storage.hold_get, At::After);
        let reader = tokio::spawn({
            let cache = cache.clone();
            async move { cache.get("k").await }
        });
        held.reached().await;
        // Demotion, another node writes, promotion: all while the read of
        // the previous period is in flight.
        cache.deactivate();
        storage.memory.put("k", b"other node").await.unwrap();
        cache.activate();
        held.release();
        reader.await.unwrap().unwrap();
        assert!(!cache.contains("k"));
        assert_eq!(get(&cache, "k").await.as_deref(), Some(&b"other node"[..]));
    }

    #[tokio::test]
    async fn activation_and_deactivation_empty_the_cache() {
        let (_storage, cache) = active_cache();
        cache.put("k", b"v").await.unwrap();
        assert_eq!(cache.stats().entries, 1);
        cache.activate();
        assert_eq!(cache.stats().entries, 0);
        cache.put("k", b"v").await.unwrap();
        cache.deactivate();
        let stats = cache.stats();
        assert_eq!(stats.entries, 0);
        assert!(!stats.active);
        // A write that started while the cache was off and finishes after
        // it was turned on does not fill it.
        let storage = Arc::new(Scripted::default());
        let cache = Arc::new(ReadCache::new(storage.clone(), CacheConfig::default()));
        let mut held = hold(&storage.hold_write, At::After);
        let writer = tokio::spawn({
            let cache = cache.clone();
            async move { cache.put("k", b"v").await }
        });
        held.reached().await;
        cache.activate();
        held.release();
        writer.await.unwrap().unwrap();
        assert!(!cache.contains("k"));
    }

    #[tokio::test]
    async fn a_transaction_in_flight_is_read_from_storage_and_then_cached_whole() {
        let (storage, cache) = active_cache();
        cache.put("a", b"1").await.unwrap();
        cache.put("b", b"1").await.unwrap();
        let mut held = hold(&storage.hold_write, At::After);
        let txn = tokio::spawn({
            let cache = cache.clone();
            async move {
                cache
                    .transaction(vec![
                        TxnOp::put("a", b"2".to_vec()),
                        TxnOp::put("b", b"2".to_vec()),
                    ])
                    .await
            }
        });
        held.reached().await;
        // Applied in storage, not acknowledged: readers go to storage for
        // both keys and never pair a new `a` with a cached old `b`.
        assert_eq!(get(&cache, "a").await.as_deref(), Some(&b"2"[..]));
        assert_eq!(get(&cache, "b").await.as_deref(), Some(&b"2"[..]));
        assert!(!cache.contains("a") && !cache.contains("b"));
        held.release();
        txn.await.unwrap().unwrap();
        let before = storage.gets();
        assert_eq!(get(&cache, "a").await.as_deref(), Some(&b"2"[..]));
        assert_eq!(get(&cache, "b").await.as_deref(), Some(&b"2"[..]));
        assert_eq!(storage.gets(), before, "both results were cached");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn readers_never_see_part_of_a_transaction() {
        let storage: Arc<dyn Storage> = Arc::new(MemoryStorage::new());
        let cache = Arc::new(ReadCache::new(storage, CacheConfig::default()));
        cache.activate();
        let pair = |i: u32| {
            vec![
                TxnOp::put("pair/a", i.to_be_bytes().to_vec()),
                TxnOp::put("pair/b", i.to_be_bytes().to_vec()),
            ]
        };
        cache.transaction(pair(0)).await.unwrap();
        let read = |v: Option<Vec<u8>>| u32::from_be_bytes(v.unwrap().try_into().unwrap());
        let writer = tokio::spawn({
            let cache = cache.clone();
            async move {
                for i in 1..=5000 {
                    cache.transaction(pair(i)).await.unwrap();
                    if i % 7 == 0 {
                        // Some reads of `b` miss, so both paths race.
                        cache.deactivate();
                        cache.activate();
                    }
                }
            }
        });
        let mut readers = Vec::new();
        for _ in 0..3 {
            let cache = cache.clone();
            readers.push(tokio::spawn(async move {
                let mut reads = 0;
                loop {
                    let a = read(cache.get("pair/a").await.unwrap());
                    let b = read(cache.get("pair/b").await.unwrap());
                    // The writer writes a and b together, in increasing
                    // order: seeing a newer `a` than `b` would be half a
                    // transaction.
                    assert!(b >= a, "read a = {a} then b = {b}");
                    reads += 1;
                    if a == 5000 {
                        return reads;
                    }
                    tokio::task::yield_now().await;
                }
            }));
        }
        writer.await.unwrap();
        for r in readers {
            assert!(r.await.unwrap() > 0);
        }
    }

    #[tokio::test]
    async fn lists_are_not_cached() {
        let (storage, cache) = active_cache();
        cache.put("dir/a", b"1").await.unwrap();
        assert_eq!(cache.list("dir/").await.unwrap(), ["a"]);
        cache.put("dir/b", b"1").await.unwrap();
        storage.memory.put("dir/c", b"1").await.unwrap();
        assert_eq!(cache.list("dir/").await.unwrap(), ["a", "b", "c"]);
        cache.delete("dir/a").await.unwrap();
        assert_eq!(cache.list("dir/").await.unwrap(), ["b", "c"]);
    }

    #[tokio::test]
    async fn bounded_by_entries_and_by_bytes() {
        let storage: Arc<dyn Storage> = Arc::new(MemoryStorage::new());
        let by_count = ReadCache::new(
            storage.clone(),
            CacheConfig {
                enabled: true,
                max_entries: 100,
                max_bytes: 1 << 30,
            },
        );
        by_count.activate();
        let by_bytes = ReadCache::new(
            storage,
            CacheConfig {
                enabled: true,
                max_entries: 100_000,
                max_bytes: 20_000,
            },
        );
        by_bytes.activate();
        for i in 0..2000 {
            let key = format!("k{i}");
            by_count.put(&key, b"small").await.unwrap();
            by_bytes.put(&key, &[0u8; 1000]).await.unwrap();
        }
        let count = by_count.stats().entries;
        assert!((1..=100).contains(&count), "{count} entries");
        let kept = by_bytes.stats().entries;
        assert!((1..=20).contains(&kept), "{kept} entries of about 1 KiB");
    }
}
