//! The [`HaBackend`] trait: one lock that elects the active node.

use std::collections::HashMap;
use std::fmt::Debug;
use std::pin::pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// A lock service for leader election (Consul sessions, or memory).
///
/// One `HaBackend` value is one *contender*: one node's view of the lock
/// service. Several nodes each hold their own; the lock at a key is shared
/// by all of them.
///
/// # To ensure correctness
/// * **Mutual exclusion.** At most one [`HaLock`] for a key is held at a
///   time, across every process and every backend value sharing the lock
///   service, and across concurrent `try_lock` calls on one backend value.
/// * **Waiting, not polling.** [`HaBackend::try_lock`] takes the lock if it
///   is free. If another contender holds it, the call waits on a
///   notification (a Consul blocking query, a [`Notify`]) until the lock is
///   released or the backend's *lock wait time* passes, tries once more,
///   and returns `Ok(None)` if the lock is still held by someone else, so
///   the caller can refresh [`HaBackend::holder`] and call again. A lock
///   that is free but not acquirable yet (Consul's lock-delay after a
///   holder's session was invalidated) is retried inside `try_lock` at a
///   short interval until the wait time ends.
/// * **Cancel safety.** Dropping a `try_lock` future never leaves the lock
///   held: an acquisition that completed unseen is given up again.
/// * **Loss.** [`HaLock::lost`] is cancelled as soon as the backend can no
///   longer promise the lock is held: the session was invalidated (expired,
///   destroyed, its node failed), renewal failed for longer than its TTL,
///   the key was seen held by another session or deleted, or a write fenced
///   on the lock was refused. It is also cancelled by [`HaLock::release`]
///   and when the lock is dropped. Once cancelled, the holder must stop
///   writing at once; a lock is never regained: contend again with
///   `try_lock`.
/// * **Bounded takeover.** A crashed holder's lock is freed by the backend
///   after a bounded time (for Consul, session TTL — reaped at up to twice
///   the TTL — plus lock-delay); [`HaLock::release`] frees it immediately,
///   with no lock-delay for the next holder, and wakes waiting contenders.
/// * **Advertisement.** [`HaBackend::holder`] reports the `value` the
///   current holder passed to `try_lock`, or `None` when nobody holds the
///   lock (a released lock advertises nothing).
#[async_trait]
pub trait HaBackend: Send + Sync + Debug + 'static {
    /// Tries to take the lock at `key` (relative to the backend's storage
    /// prefix, e.g. `core/lock`), advertising `value` (the node's
    /// addresses), waiting at most the backend's lock wait time (see the
    /// trait docs). `Ok(None)`: not taken within the wait time, because
    /// another contender holds it (see [`HaBackend::holder`]) or a
    /// lock-delay still holds it back.
    ///
    /// # Errors
    /// [`HaError`] when the backend cannot be asked; nothing is held then.
    async fn try_lock(&self, key: &str, value: &[u8]) -> Result<Option<Box<dyn HaLock>>, HaError>;

    /// The value advertised by the current holder of `key`, or `None` when
    /// nobody holds it.
    ///
    /// # Errors
    /// [`HaError`] when the backend cannot be asked.
    async fn holder(&self, key: &str) -> Result<Option<Vec<u8>>, HaError>;
}

/// A held lock. Dropping it gives the lock up in the background (best
/// effort); call [`HaLock::release`] to give it up and know it is done.
#[async_trait]
pub trait HaLock: Send + Sync + Debug {
    /// A token cancelled when the lock is lost or given up (see
    /// [`HaBackend`]). Cancelling it from outside marks the lock lost too.
    fn lost(&self) -> CancellationToken;

    /// The identity of this holding, which writes can be fenced with: the
    /// Consul session ID, or a fresh number for the memory backend. Every
    /// acquisition has a different one.
    fn fencing_token(&self) -> Option<String>;

    /// Gives the lock up now: the key is released (the advertisement
    /// cleared, no lock-delay for the next holder), waiting contenders
    /// wake, the session is destroyed, and [`HaLock::lost`] is cancelled.
    ///
    /// # Errors
    /// [`HaError`] when the backend cannot be told; the lock then expires
    /// on its own (session TTL), and `lost` is cancelled all the same.
    async fn release(self: Box<Self>) -> Result<(), HaError>;
}

/// Why an HA call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HaError {
    /// The lock backend cannot be reached right now.
    #[error("HA backend unavailable while {op} lock {key}: {message}")]
    Unavailable {
        /// What was being done (`acquiring`, `reading`, `releasing`).
        op: &'static str,
        /// The lock key.
        key: String,
        /// What failed.
        message: String,
    },
    /// Any other failure.
    #[error("HA backend error while {op} lock {key}: {message}")]
    Backend {
        /// What was being done.
        op: &'static str,
        /// The lock key.
        key: String,
        /// What failed.
        message: String,
    },
}

impl HaError {
    /// Whether retrying later may succeed (the backend was unreachable).
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Unavailable { .. })
    }
}

/// The default lock wait time of [`MemoryHaBackend`]: short, so tests that
/// see `Ok(None)` do not wait long.
pub const MEMORY_LOCK_WAIT: Duration = Duration::from_secs(1);

#[derive(Debug)]
struct Holder {
    id: u64,
    value: Vec<u8>,
    lost: CancellationToken,
}

#[derive(Debug, Default)]
struct KeyState {
    holder: Option<Holder>,
    /// Acquisition refused until then (lock-delay after a broken lock).
    delay_until: Option<Instant>,
}

/// An [`HaBackend`] inside one process, with the same waits as Consul's:
/// `try_lock` sleeps on a [`Notify`] until the lock is released or the
/// wait time passes, and a broken lock can carry a lock-delay. For tests,
/// and for single-node servers that want the HA code path without a lock
/// service.
///
/// Clones share the locks: each clone (or each [`MemoryHaBackend::contender`])
/// stands for one node.
#[derive(Debug, Clone)]
pub struct MemoryHaBackend {
    inner: Arc<MemoryHaInner>,
    wait: Duration,
}

#[derive(Debug)]
struct MemoryHaInner {
    next_id: AtomicU64,
    keys: Mutex<HashMap<String, KeyState>>,
    released: Notify,
    lock_delay: Mutex<Duration>,
    /// `try_lock` calls parked on `released` right now.
    waiting: AtomicUsize,
}

/// Counts a parked `try_lock` for as long as it lives (cancel-safe), so a
/// backend can say how many contenders wait on its lock; shared by every
/// [`HaBackend`] implementation.
#[derive(Debug)]
pub struct Parked<'a>(&'a AtomicUsize);

impl<'a> Parked<'a> {
    /// Adds one to `counter` until the guard drops.
    #[must_use]
    pub fn new(counter: &'a AtomicUsize) -> Self {
        counter.fetch_add(1, Ordering::SeqCst);
        Self(counter)
    }
}

impl Drop for Parked<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl MemoryHaInner {
    fn keys(&self) -> MutexGuard<'_, HashMap<String, KeyState>> {
        self.keys.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn lock_delay(&self) -> Duration {
        *self
            .lock_delay
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Frees `key` if `id` holds it (any holder with `None`), cancelling
    /// its `lost` token, starting `delay` and waking waiters.
    fn free(&self, key: &str, id: Option<u64>, delay: Duration) -> bool {
        let mut keys = self.keys();
        let Some(state) = keys.get_mut(key) else {
            return false;
        };
        let matches = state
            .holder
            .as_ref()
            .is_some_and(|h| id.is_none_or(|id| h.id == id));
        if !matches {
            return false;
        }
        if let Some(h) = state.holder.take() {
            h.lost.cancel();
        }
        if !delay.is_zero() {
            state.delay_until = Some(Instant::now() + delay);
        }
        drop(keys);
        self.released.notify_waiters();
        true
    }
}

impl Default for MemoryHaBackend {
    fn default() -> Self {
        Self::new()
    }
}

/// What one acquisition attempt found.
enum Attempt {
    Won(Box<dyn HaLock>),
    /// Held by the holding with this id.
    Held(u64),
    Delayed(Instant),
}

impl MemoryHaBackend {
    /// A backend with no locks held, a [`MEMORY_LOCK_WAIT`] wait time and
    /// no lock-delay.
    pub fn new() -> Self {
        Self {
            inner: Arc::new(MemoryHaInner {
                next_id: AtomicU64::new(1),
                keys: Mutex::new(HashMap::new()),
                released: Notify::new(),
                lock_delay: Mutex::new(Duration::ZERO),
                waiting: AtomicUsize::new(0),
            }),
            wait: MEMORY_LOCK_WAIT,
        }
    }

    /// This contender with `try_lock` waiting at most `wait`.
    #[must_use]
    pub fn with_wait_time(mut self, wait: Duration) -> Self {
        self.wait = wait;
        self
    }

    /// Sets the lock-delay started by [`MemoryHaBackend::insecure_break_lock`]
    /// (as Consul's session `LockDelay` does on invalidation), for every
    /// contender sharing these locks. Default zero.
    pub fn set_lock_delay(&self, delay: Duration) {
        *self
            .inner
            .lock_delay
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = delay;
    }

    /// Another contender (another node) on the same locks, with its own
    /// wait time.
    pub fn contender(&self, wait: Duration) -> Self {
        Self {
            inner: self.inner.clone(),
            wait,
        }
    }

    /// This contender's lock wait time.
    pub fn wait_time(&self) -> Duration {
        self.wait
    }

    /// How many `try_lock` calls, of every contender sharing these locks,
    /// are parked waiting for a release right now (tests wait for this
    /// instead of sleeping).
    pub fn waiting(&self) -> usize {
        self.inner.waiting.load(Ordering::SeqCst)
    }

    /// Takes `key` away from its holder, as a session expiry would: the
    /// holder's [`HaLock::lost`] is cancelled and the lock-delay (see
    /// [`MemoryHaBackend::set_lock_delay`]) starts. Returns whether anyone
    /// held it. For tests.
    pub fn insecure_break_lock(&self, key: &str) -> bool {
        self.inner.free(key, None, self.inner.lock_delay())
    }

    fn attempt(&self, key: &str, value: &[u8]) -> Attempt {
        let mut keys = self.inner.keys();
        let state = keys.entry(key.to_owned()).or_default();
        if let Some(h) = &state.holder {
            return Attempt::Held(h.id);
        }
        if let Some(until) = state.delay_until {
            if until > Instant::now() {
                return Attempt::Delayed(until);
            }
            state.delay_until = None;
        }
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let lost = CancellationToken::new();
        state.holder = Some(Holder {
            id,
            value: value.to_vec(),
            lost: lost.clone(),
        });
        Attempt::Won(Box::new(MemoryLock {
            inner: self.inner.clone(),
            key: key.to_owned(),
            id,
            lost,
        }))
    }
}

/// How often a lock held back by lock-delay is tried again.
const MEMORY_DELAY_RETRY: Duration = Duration::from_millis(20);

#[async_trait]
impl HaBackend for MemoryHaBackend {
    async fn try_lock(&self, key: &str, value: &[u8]) -> Result<Option<Box<dyn HaLock>>, HaError> {
        let deadline = Instant::now() + self.wait;
        loop {
            // Registered before looking, so a release between the look and
            // the wait is not missed.
            let mut released = pin!(self.inner.released.notified());
            released.as_mut().enable();
            match self.attempt(key, value) {
                Attempt::Won(lock) => return Ok(Some(lock)),
                Attempt::Held(seen) => {
                    let parked = Parked::new(&self.inner.waiting);
                    let woken = tokio::time::timeout_at(deadline, released).await;
                    drop(parked);
                    if woken.is_err() {
                        // The wait time passed: one last try.
                        return Ok(match self.attempt(key, value) {
                            Attempt::Won(lock) => Some(lock),
                            Attempt::Held(_) | Attempt::Delayed(_) => None,
                        });
                    }
                    match self.attempt(key, value) {
                        Attempt::Won(lock) => return Ok(Some(lock)),
                        // Released and taken by someone else: report it so
                        // the caller refreshes the holder.
                        Attempt::Held(now) if now != seen => return Ok(None),
                        // Another key was released, or lock-delay: go on.
                        Attempt::Held(_) | Attempt::Delayed(_) => {}
                    }
                }
                Attempt::Delayed(until) => {
                    if Instant::now() >= deadline {
                        return Ok(None);
                    }
                    let next = (Instant::now() + MEMORY_DELAY_RETRY)
                        .min(until)
                        .min(deadline);
                    tokio::time::sleep_until(next).await;
                }
            }
        }
    }

    async fn holder(&self, key: &str) -> Result<Option<Vec<u8>>, HaError> {
        Ok(self
            .inner
            .keys()
            .get(key)
            .and_then(|s| s.holder.as_ref())
            .map(|h| h.value.clone()))
    }
}

#[derive(Debug)]
struct MemoryLock {
    inner: Arc<MemoryHaInner>,
    key: String,
    id: u64,
    lost: CancellationToken,
}

#[async_trait]
impl HaLock for MemoryLock {
    fn lost(&self) -> CancellationToken {
        self.lost.clone()
    }

    fn fencing_token(&self) -> Option<String> {
        Some(self.id.to_string())
    }

    async fn release(self: Box<Self>) -> Result<(), HaError> {
        // Drop does the work; nothing can fail in memory.
        Ok(())
    }
}

impl Drop for MemoryLock {
    fn drop(&mut self) {
        self.inner.free(&self.key, Some(self.id), Duration::ZERO);
        self.lost.cancel();
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn one_holder_at_a_time_and_release_frees() {
        let ha = MemoryHaBackend::new().with_wait_time(Duration::from_millis(10));
        let a = ha.try_lock("core/lock", b"a").await.unwrap().unwrap();
        assert!(ha.try_lock("core/lock", b"b").await.unwrap().is_none());
        assert_eq!(
            ha.holder("core/lock").await.unwrap().as_deref(),
            Some(&b"a"[..])
        );
        let a_lost = a.lost();
        a.release().await.unwrap();
        assert!(a_lost.is_cancelled());
        assert!(ha.holder("core/lock").await.unwrap().is_none());
        let b = ha.try_lock("core/lock", b"b").await.unwrap().unwrap();
        assert!(ha.insecure_break_lock("core/lock"));
        assert!(b.lost().is_cancelled());
        assert!(!ha.insecure_break_lock("core/lock"));
    }

    #[tokio::test]
    async fn lock_delay_holds_back_the_next_holder() {
        let ha = MemoryHaBackend::new().with_wait_time(Duration::from_secs(30));
        ha.set_lock_delay(Duration::from_millis(100));
        let a = ha.try_lock("k", b"a").await.unwrap().unwrap();
        ha.insecure_break_lock("k");
        let started = Instant::now();
        let b = ha.try_lock("k", b"b").await.unwrap();
        assert!(b.is_some());
        assert!(started.elapsed() >= Duration::from_millis(100));
        drop(a);
        // The broken holder's late drop does not free the new holder's lock.
        assert_eq!(ha.holder("k").await.unwrap().as_deref(), Some(&b"b"[..]));
    }

    #[tokio::test]
    async fn lock_delay_longer_than_the_wait_gives_none() {
        let ha = MemoryHaBackend::new().with_wait_time(Duration::from_millis(50));
        ha.set_lock_delay(Duration::from_secs(60));
        let _a = ha.try_lock("k", b"a").await.unwrap().unwrap();
        ha.insecure_break_lock("k");
        assert!(ha.try_lock("k", b"b").await.unwrap().is_none());
        assert!(ha.holder("k").await.unwrap().is_none());
    }
}
