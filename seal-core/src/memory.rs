//! [`MemoryStorage`]: the in-process [`Storage`], for tests and `-dev` servers.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard, PoisonError};

use async_trait::async_trait;

use crate::storage::{Storage, StorageError, TxnOp, list_children, validate_key, validate_prefix};

/// A [`Storage`] kept in a sorted map in memory. Nothing survives the process.
///
/// It follows the trait contract exactly (same key rules, same list
/// semantics, all-or-nothing transactions), so code tested against it
/// behaves the same on a durable backend.
#[derive(Debug, Default)]
pub struct MemoryStorage {
    entries: Mutex<BTreeMap<String, Vec<u8>>>,
}

impl MemoryStorage {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn entries(&self) -> MutexGuard<'_, BTreeMap<String, Vec<u8>>> {
        // A panic while holding the lock cannot leave the map half-updated:
        // every mutation below is a single insert/remove or is pre-validated.
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[async_trait]
impl Storage for MemoryStorage {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StorageError> {
        validate_key(key)?;
        Ok(self.entries().get(key).cloned())
    }

    async fn put(&self, key: &str, value: &[u8]) -> Result<(), StorageError> {
        validate_key(key)?;
        self.entries().insert(key.to_owned(), value.to_vec());
        Ok(())
    }

    async fn delete(&self, key: &str) -> Result<(), StorageError> {
        validate_key(key)?;
        self.entries().remove(key);
        Ok(())
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>, StorageError> {
        validate_prefix(prefix)?;
        let entries = self.entries();
        let under = entries
            .range(prefix.to_owned()..)
            .map(|(k, _)| k.as_str())
            .take_while(|k| k.starts_with(prefix));
        Ok(list_children(prefix, under))
    }

    async fn transaction(&self, ops: Vec<TxnOp>) -> Result<(), StorageError> {
        for op in &ops {
            validate_key(op.key())?;
        }
        let mut entries = self.entries();
        for op in ops {
            match op {
                TxnOp::Put { key, value } => {
                    entries.insert(key, value);
                }
                TxnOp::Delete { key } => {
                    entries.remove(&key);
                }
            }
        }
        Ok(())
    }
}
