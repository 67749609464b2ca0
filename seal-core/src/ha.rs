//! The [`HaBackend`] trait: one lock that elects the active node.

use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use async_trait::async_trait;
use tokio_util::sync::CancellationToken;

/// A lock service for leader election (Consul sessions, or memory).
///
/// # To ensure correctness
/// * At most one [`HaLock`] for a key is held at a time, across every
///   process sharing the backend.
/// * A lock is **lost** when the backend can no longer promise it is held:
///   the session was invalidated, renewal failed for longer than its TTL,
///   or the key was taken away. The backend then cancels
///   [`HaLock::lost`] promptly, and the holder must stop writing at once.
/// * A crashed holder's lock is freed by the backend after a bounded time
///   (session TTL plus lock-delay for Consul); [`HaLock::release`] frees it
///   immediately.
/// * [`HaBackend::holder`] reports the value advertised by the current
///   holder, or `None` when nobody holds the lock.
#[async_trait]
pub trait HaBackend: Send + Sync + Debug + 'static {
    /// Tries to take the lock at `key`, advertising `value` (typically the
    /// node's API address). Waits at most the backend's lock wait time;
    /// `Ok(None)` means another node holds it.
    ///
    /// # Errors
    /// [`HaError`] when the backend cannot be asked.
    async fn try_lock(&self, key: &str, value: &[u8]) -> Result<Option<Box<dyn HaLock>>, HaError>;

    /// The value advertised by the current holder of `key`, if held.
    ///
    /// # Errors
    /// [`HaError`] when the backend cannot be asked.
    async fn holder(&self, key: &str) -> Result<Option<Vec<u8>>, HaError>;
}

/// A held lock.
#[async_trait]
pub trait HaLock: Send + Sync + Debug {
    /// A token cancelled when the lock is lost (see [`HaBackend`]).
    fn lost(&self) -> CancellationToken;

    /// An identifier writes can be fenced with (a Consul session ID), if the
    /// backend supports fencing.
    fn fencing_token(&self) -> Option<String>;

    /// Gives the lock up now, so another node can take it without waiting.
    ///
    /// # Errors
    /// [`HaError`] when the backend cannot be told; the lock then expires
    /// on its own.
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

#[derive(Debug)]
struct Holder {
    id: u64,
    value: Vec<u8>,
    lost: CancellationToken,
}

/// An [`HaBackend`] inside one process: for tests, and for single-node
/// servers that want the HA code path without a lock service.
#[derive(Debug, Default, Clone)]
pub struct MemoryHaBackend {
    inner: Arc<MemoryHaInner>,
}

#[derive(Debug, Default)]
struct MemoryHaInner {
    next_id: AtomicU64,
    holders: Mutex<HashMap<String, Holder>>,
}

impl MemoryHaInner {
    fn holders(&self) -> MutexGuard<'_, HashMap<String, Holder>> {
        self.holders.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl MemoryHaBackend {
    /// A backend with no locks held.
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes `key` away from its holder, as a session expiry would; the
    /// holder's [`HaLock::lost`] is cancelled. For tests.
    pub fn insecure_break_lock(&self, key: &str) {
        if let Some(h) = self.inner.holders().remove(key) {
            h.lost.cancel();
        }
    }
}

#[async_trait]
impl HaBackend for MemoryHaBackend {
    async fn try_lock(&self, key: &str, value: &[u8]) -> Result<Option<Box<dyn HaLock>>, HaError> {
        let mut holders = self.inner.holders();
        if holders.contains_key(key) {
            return Ok(None);
        }
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let lost = CancellationToken::new();
        holders.insert(
            key.to_owned(),
            Holder {
                id,
                value: value.to_vec(),
                lost: lost.clone(),
            },
        );
        Ok(Some(Box::new(MemoryLock {
            backend: self.clone(),
            key: key.to_owned(),
            id,
            lost,
        })))
    }

    async fn holder(&self, key: &str) -> Result<Option<Vec<u8>>, HaError> {
        Ok(self.inner.holders().get(key).map(|h| h.value.clone()))
    }
}

#[derive(Debug)]
struct MemoryLock {
    backend: MemoryHaBackend,
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
        let mut holders = self.backend.inner.holders();
        if holders.get(&self.key).is_some_and(|h| h.id == self.id) {
            holders.remove(&self.key);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn one_holder_at_a_time_and_release_frees() {
        let ha = MemoryHaBackend::new();
        let a = ha.try_lock("core/lock", b"a").await.unwrap().unwrap();
        assert!(ha.try_lock("core/lock", b"b").await.unwrap().is_none());
        assert_eq!(
            ha.holder("core/lock").await.unwrap().as_deref(),
            Some(&b"a"[..])
        );
        a.release().await.unwrap();
        assert!(ha.holder("core/lock").await.unwrap().is_none());
        let b = ha.try_lock("core/lock", b"b").await.unwrap().unwrap();
        ha.insecure_break_lock("core/lock");
        assert!(b.lost().is_cancelled());
    }
}
