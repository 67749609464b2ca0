//! Storage timings under Vault's names: the physical backend's
//! (`vault_consul_get`, `vault_consul_put`, …, from a [`Storage`] that
//! times every call of the one it wraps) and the barrier's above it
//! (`vault_barrier_get`, …, from the barrier's [`OpObserver`] hook: the
//! same calls plus encryption). Storage latency is the first thing to look
//! at when requests slow down, and Vault's dashboards chart these series.

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use barrier::{BarrierOp, OpObserver};
use seal_core::{Storage, StorageError, StorageLimits, TxnOp};

use super::{Definitions, Timer};

/// One timer per storage operation.
#[derive(Debug, Clone)]
pub(crate) struct StorageTimers {
    pub(crate) get: Timer,
    pub(crate) put: Timer,
    pub(crate) delete: Timer,
    pub(crate) list: Timer,
    pub(crate) transaction: Timer,
}

impl StorageTimers {
    pub(super) fn define(defs: &mut Definitions, kind: &str) -> Self {
        let mut timer =
            |op: &str, help: &'static str| defs.timer(&format!("vault.{kind}.{op}"), help);
        StorageTimers {
            get: timer("get", "Time to read one storage entry, in milliseconds"),
            put: timer("put", "Time to write one storage entry, in milliseconds"),
            delete: timer(
                "delete",
                "Time to delete one storage entry, in milliseconds",
            ),
            list: timer("list", "Time to list a storage prefix, in milliseconds"),
            transaction: timer(
                "transaction",
                "Time to apply one storage transaction, in milliseconds",
            ),
        }
    }
}

impl StorageTimers {
    fn timer(&self, op: BarrierOp) -> &Timer {
        match op {
            BarrierOp::Get => &self.get,
            BarrierOp::Put => &self.put,
            BarrierOp::Delete => &self.delete,
            BarrierOp::List => &self.list,
            BarrierOp::Transaction => &self.transaction,
        }
    }
}

/// `vault.barrier.*`: the same timers, named for the barrier.
impl OpObserver for StorageTimers {
    fn observed(&self, op: BarrierOp, elapsed: std::time::Duration) {
        self.timer(op).observe(elapsed);
    }
}

/// Times every call to the wrapped storage (successes and failures alike,
/// as Vault does).
#[derive(Debug)]
pub(crate) struct MeteredStorage {
    inner: Arc<dyn Storage>,
    timers: StorageTimers,
}

impl MeteredStorage {
    /// Wraps `inner`.
    pub(crate) fn new(inner: Arc<dyn Storage>, timers: StorageTimers) -> Self {
        MeteredStorage { inner, timers }
    }
}

#[async_trait]
impl Storage for MeteredStorage {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StorageError> {
        let start = Instant::now();
        let result = self.inner.get(key).await;
        self.timers.get.since(start);
        result
    }

    async fn put(&self, key: &str, value: &[u8]) -> Result<(), StorageError> {
        let start = Instant::now();
        let result = self.inner.put(key, value).await;
        self.timers.put.since(start);
        result
    }

    async fn delete(&self, key: &str) -> Result<(), StorageError> {
        let start = Instant::now();
        let result = self.inner.delete(key).await;
        self.timers.delete.since(start);
        result
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>, StorageError> {
        let start = Instant::now();
        let result = self.inner.list(prefix).await;
        self.timers.list.since(start);
        result
    }

    async fn transaction(&self, ops: Vec<TxnOp>) -> Result<(), StorageError> {
        let start = Instant::now();
        let result = self.inner.transaction(ops).await;
        self.timers.transaction.since(start);
        result
    }

    fn limits(&self) -> StorageLimits {
        self.inner.limits()
    }
}
