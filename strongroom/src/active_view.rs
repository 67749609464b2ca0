//! [`ActiveView`]: the barrier as an HA active node's logical layer sees it,
//! closed the moment the node stops being active.

use std::sync::Arc;

use async_trait::async_trait;
use seal_core::{Storage, StorageError, StorageLimits, TxnOp};
use tokio_util::sync::CancellationToken;

/// Storage for one active period: every operation passes through to the
/// barrier until `ended` is cancelled, and is refused from then on.
///
/// This is the core's half of fencing. A Consul lock also fences writes in
/// Consul itself (a `check-session` in every transaction), which catches a
/// write that was already on the wire; this view makes sure that once the
/// node knows it lost the lock, nothing it still has in flight (a request
/// holding the old logical layer, a background task) reaches storage, and
/// no read serves state the new active node may already have changed.
#[derive(Debug)]
pub(crate) struct ActiveView {
    inner: Arc<dyn Storage>,
    ended: CancellationToken,
}

impl ActiveView {
    pub(crate) fn new(inner: Arc<dyn Storage>, ended: CancellationToken) -> Self {
        Self { inner, ended }
    }

    fn check(&self, op: &'static str, key: &str) -> Result<(), StorageError> {
        if self.ended.is_cancelled() {
            return Err(StorageError::Unavailable {
                op,
                key: key.to_owned(),
                message: "this node is no longer the active node (the HA lock was lost or \
                          given up): refused, nothing was written; the active node serves this"
                    .to_owned(),
                source: None,
            });
        }
        Ok(())
    }
}

#[async_trait]
impl Storage for ActiveView {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StorageError> {
        self.check("get", key)?;
        self.inner.get(key).await
    }

    async fn put(&self, key: &str, value: &[u8]) -> Result<(), StorageError> {
        self.check("put", key)?;
        self.inner.put(key, value).await
    }

    async fn delete(&self, key: &str) -> Result<(), StorageError> {
        self.check("delete", key)?;
        self.inner.delete(key).await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>, StorageError> {
        self.check("list", prefix)?;
        self.inner.list(prefix).await
    }

    async fn transaction(&self, ops: Vec<TxnOp>) -> Result<(), StorageError> {
        self.check("transaction", ops.first().map_or("", TxnOp::key))?;
        self.inner.transaction(ops).await
    }

    fn limits(&self) -> StorageLimits {
        self.inner.limits()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use seal_core::MemoryStorage;

    #[tokio::test]
    async fn everything_is_refused_once_the_period_ends() {
        let memory = Arc::new(MemoryStorage::new());
        let ended = CancellationToken::new();
        let view = ActiveView::new(memory.clone(), ended.clone());
        view.put("a", b"1").await.unwrap();
        assert_eq!(view.get("a").await.unwrap().as_deref(), Some(&b"1"[..]));
        ended.cancel();
        for result in [
            view.put("a", b"2").await.err(),
            view.delete("a").await.err(),
            view.transaction(vec![TxnOp::put("b", b"3".to_vec())])
                .await
                .err(),
            view.get("a").await.err(),
            view.list("").await.err(),
        ] {
            let err = result.expect("refused");
            assert!(err.is_transient(), "{err}");
            assert!(
                err.to_string().contains("no longer the active node"),
                "{err}"
            );
        }
        assert_eq!(memory.get("a").await.unwrap().as_deref(), Some(&b"1"[..]));
        assert!(memory.get("b").await.unwrap().is_none());
    }
}
