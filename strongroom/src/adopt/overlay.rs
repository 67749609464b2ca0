//! The storage a read-only takeover serves from: the Vault data set as it
//! is, seen through an in-memory layer holding its conversion to
//! Strongroom's layout. Reads look in the layer first, then in the barrier;
//! every write is refused, so nothing reaches the Vault prefix.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use seal_core::{Storage, StorageError, StorageLimits, TxnOp, list_children};
use zeroize::Zeroizing;

/// Why a write was refused (shown to API clients).
pub(crate) const READ_ONLY_MESSAGE: &str = "this node serves a Vault data set read-only (the \
    takeover trial mode): nothing is written to it until the one-way upgrade `strongroom \
    operator adopt` runs";

/// A read-only view: `layer` over `base`.
pub(crate) struct ReadOnlyOverlay {
    base: Arc<dyn Storage>,
    /// Plaintext (the base is the barrier): zeroized when dropped.
    layer: BTreeMap<String, Zeroizing<Vec<u8>>>,
}

impl fmt::Debug for ReadOnlyOverlay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReadOnlyOverlay")
            .field("entries", &self.layer.len())
            .finish_non_exhaustive()
    }
}

impl ReadOnlyOverlay {
    /// `base` seen with `ops` applied (in memory only).
    pub(crate) fn new(base: Arc<dyn Storage>, ops: Vec<TxnOp>) -> Self {
        let mut layer = BTreeMap::new();
        for op in ops {
            match op {
                TxnOp::Put { key, value } => {
                    layer.insert(key, Zeroizing::new(value));
                }
                // The conversion only deletes in the upgrade's cleanup,
                // which a read-only view never runs.
                TxnOp::Delete { key } => {
                    layer.remove(&key);
                }
            }
        }
        Self { base, layer }
    }

    fn refuse(op: &'static str, key: &str) -> StorageError {
        StorageError::PermissionDenied {
            op,
            key: key.to_owned(),
            message: READ_ONLY_MESSAGE.to_owned(),
        }
    }
}

#[async_trait]
impl Storage for ReadOnlyOverlay {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StorageError> {
        if let Some(value) = self.layer.get(key) {
            return Ok(Some(value.to_vec()));
        }
        self.base.get(key).await
    }

    async fn put(&self, key: &str, _value: &[u8]) -> Result<(), StorageError> {
        Err(Self::refuse("put", key))
    }

    async fn delete(&self, key: &str) -> Result<(), StorageError> {
        Err(Self::refuse("delete", key))
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>, StorageError> {
        let mut children = self.base.list(prefix).await?;
        let ours = list_children(
            prefix,
            self.layer
                .range(prefix.to_owned()..)
                .take_while(|(k, _)| k.starts_with(prefix))
                .map(|(k, _)| k.as_str()),
        );
        children.extend(ours);
        children.sort();
        children.dedup();
        Ok(children)
    }

    async fn transaction(&self, ops: Vec<TxnOp>) -> Result<(), StorageError> {
        let key = ops.first().map_or("", TxnOp::key).to_owned();
        Err(Self::refuse("transaction", &key))
    }

    fn limits(&self) -> StorageLimits {
        self.base.limits()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use seal_core::MemoryStorage;

    #[tokio::test]
    async fn reads_merge_and_writes_are_refused() {
        let base = Arc::new(MemoryStorage::new());
        base.put("a/x", b"base").await.unwrap();
        base.put("a/y", b"base").await.unwrap();
        let view = ReadOnlyOverlay::new(
            base.clone(),
            vec![
                TxnOp::put("a/y", b"layer".to_vec()),
                TxnOp::put("a/z/1", b"z".to_vec()),
            ],
        );
        assert_eq!(view.get("a/y").await.unwrap().unwrap(), b"layer");
        assert_eq!(view.get("a/x").await.unwrap().unwrap(), b"base");
        assert_eq!(view.list("a/").await.unwrap(), vec!["x", "y", "z/"]);
        let err = view.put("a/x", b"new").await.unwrap_err();
        assert!(err.to_string().contains("read-only"), "{err}");
        assert!(view.delete("a/x").await.is_err());
        assert!(view.transaction(vec![TxnOp::delete("a/x")]).await.is_err());
        assert_eq!(base.get("a/x").await.unwrap().unwrap(), b"base");
    }
}
