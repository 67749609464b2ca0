//! A [`MemoryStorage`] with the faults a test switches on: transactions
//! that touch one key fail (a crash in the middle of a multi-step
//! operation), every read fails (an unreachable backend), transactions
//! above a size fail (Consul's 64-operation limit); and a log of the
//! durable writes (each is an fsync'd commit on redb or a Raft commit on
//! Consul). Tests of the core and the router share it instead of each
//! writing its own delegating wrapper.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use crate::{MemoryStorage, Storage, StorageError, StorageLimits, TxnOp};

/// See the [module docs](self).
#[derive(Debug, Default)]
pub struct FaultyStorage {
    inner: Arc<MemoryStorage>,
    fail_key: Mutex<Option<String>>,
    down: AtomicBool,
    max_transaction_ops: Option<usize>,
    writes: Mutex<Vec<String>>,
}

impl FaultyStorage {
    /// Over a new, empty [`MemoryStorage`], with no fault on.
    pub fn new() -> Self {
        Self::default()
    }

    /// Over `inner` (which the test may keep using directly), no fault on.
    pub fn over(inner: &Arc<MemoryStorage>) -> Self {
        Self {
            inner: inner.clone(),
            ..Self::default()
        }
    }

    /// Refuses transactions of more than `ops` operations (and says so in
    /// its [`StorageLimits`]), as Consul does above 64.
    #[must_use]
    pub fn with_max_transaction_ops(mut self, ops: usize) -> Self {
        self.max_transaction_ops = Some(ops);
        self
    }

    /// From now on, a transaction touching `key` fails and writes nothing
    /// (`None`: none fails).
    pub fn fail_transactions_touching(&self, key: Option<&str>) {
        *lock(&self.fail_key) = key.map(str::to_owned);
    }

    /// While `down`, every read fails as an unreachable backend's would.
    pub fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
    }

    /// The durable writes so far: `put <key>`, `delete <key>`,
    /// `txn <key>,<key>…`.
    pub fn writes(&self) -> Vec<String> {
        lock(&self.writes).clone()
    }

    /// Forgets the writes logged so far.
    pub fn clear_writes(&self) {
        lock(&self.writes).clear();
    }

    /// The storage underneath.
    pub fn inner(&self) -> &Arc<MemoryStorage> {
        &self.inner
    }

    fn log(&self, write: String) {
        lock(&self.writes).push(write);
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn unavailable(op: &'static str, key: &str, message: &str) -> StorageError {
    StorageError::Unavailable {
        op,
        key: key.to_owned(),
        message: message.to_owned(),
        source: None,
    }
}

#[async_trait::async_trait]
impl Storage for FaultyStorage {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StorageError> {
        if self.down.load(Ordering::SeqCst) {
            return Err(unavailable("get", key, "simulated outage"));
        }
        self.inner.get(key).await
    }

    async fn put(&self, key: &str, value: &[u8]) -> Result<(), StorageError> {
        self.log(format!("put {key}"));
        self.inner.put(key, value).await
    }

    async fn delete(&self, key: &str) -> Result<(), StorageError> {
        self.log(format!("delete {key}"));
        self.inner.delete(key).await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>, StorageError> {
        self.inner.list(prefix).await
    }

    async fn transaction(&self, ops: Vec<TxnOp>) -> Result<(), StorageError> {
        if let Some(max) = self.max_transaction_ops.filter(|max| ops.len() > *max) {
            return Err(StorageError::TransactionTooLarge {
                ops: ops.len(),
                reason: format!("at most {max} operations"),
            });
        }
        let fail = lock(&self.fail_key).clone();
        if let Some(key) = fail.filter(|k| ops.iter().any(|op| op.key() == k.as_str())) {
            return Err(unavailable("transaction", &key, "simulated crash"));
        }
        let keys: Vec<&str> = ops.iter().map(TxnOp::key).collect();
        self.log(format!("txn {}", keys.join(",")));
        self.inner.transaction(ops).await
    }

    fn limits(&self) -> StorageLimits {
        StorageLimits {
            max_transaction_ops: self.max_transaction_ops,
            ..self.inner.limits()
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[tokio::test]
    async fn faults_switch_on_and_off() {
        let s = FaultyStorage::new().with_max_transaction_ops(2);
        s.put("a", b"1").await.unwrap();
        s.fail_transactions_touching(Some("a"));
        let err = s.transaction(vec![TxnOp::delete("a")]).await.unwrap_err();
        assert!(err.to_string().contains("simulated crash"), "{err}");
        assert_eq!(s.get("a").await.unwrap().as_deref(), Some(&b"1"[..]));
        s.fail_transactions_touching(None);
        let three = vec![TxnOp::delete("x"), TxnOp::delete("y"), TxnOp::delete("z")];
        assert!(matches!(
            s.transaction(three).await,
            Err(StorageError::TransactionTooLarge { ops: 3, .. })
        ));
        s.transaction(vec![TxnOp::delete("a")]).await.unwrap();
        s.set_down(true);
        assert!(s.get("a").await.unwrap_err().is_transient());
        s.set_down(false);
        assert_eq!(s.get("a").await.unwrap(), None);
        assert_eq!(s.writes(), ["put a", "txn a"]);
        assert_eq!(s.limits().max_transaction_ops, Some(2));
    }
}
