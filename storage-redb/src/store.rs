//! [`RedbStorage`]: the [`Storage`] implementation.

use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::thread::JoinHandle;

use async_trait::async_trait;
use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};
use seal_core::{
    Storage, StorageError, StorageLimits, TxnOp, list_children, validate_key, validate_prefix,
};
use tokio::sync::{mpsc, oneshot};

use crate::writer::{Counters, RedbStats, WriteRequest, Writer};
use crate::{RedbOptions, RedbStorageError};

/// Every Strongroom entry: key path → opaque bytes (barrier ciphertext).
pub(crate) const KV_TABLE: TableDefinition<&str, &[u8]> = TableDefinition::new("strongroom_kv");

/// Facts about the file itself, so a future layout change can be detected.
const META_TABLE: TableDefinition<&str, u64> = TableDefinition::new("strongroom_meta");
const LAYOUT_KEY: &str = "layout_version";
/// The layout this build writes: one table of `&str` keys to byte values.
const LAYOUT_VERSION: u64 = 1;

/// The durable embedded [`Storage`]: one redb file on local disk.
///
/// * Every acknowledged `put`, `delete` and `transaction` is committed with
///   [`Durability::Immediate`] (fsync'd) before the call returns, so it
///   survives a crash or `SIGKILL` of the process.
/// * Writes go to one writer thread that commits every write queued at the
///   time in a single transaction (group commit): concurrent writers share
///   one fsync instead of queueing for one each. Each caller's write stays
///   atomic and is validated before it is queued, so one caller's bad write
///   never fails another's.
/// * Reads run on Tokio's blocking pool against redb's MVCC snapshots; they
///   never wait for the writer and see every acknowledged write.
///
/// Dropping the store waits for the writer to commit what is queued and
/// releases the file lock (once any read already running on the blocking
/// pool finishes), so the same path can be reopened at once. A write whose
/// caller stopped waiting (a dropped future) may still commit.
pub struct RedbStorage {
    db: Arc<Database>,
    path: Arc<Path>,
    options: RedbOptions,
    /// `None` only while dropping.
    writes: Option<mpsc::Sender<WriteRequest>>,
    writer: Option<JoinHandle<()>>,
    counters: Arc<Counters>,
}

impl fmt::Debug for RedbStorage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedbStorage")
            .field("path", &self.path)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl RedbStorage {
    /// Opens the database at `path` with the default [`RedbOptions`],
    /// creating the file if it does not exist.
    ///
    /// This blocks on file I/O (a crashed database is repaired here); call
    /// it at startup or from [`tokio::task::spawn_blocking`].
    ///
    /// # Errors
    /// [`RedbStorageError::Locked`] when another process has the file open,
    /// [`RedbStorageError::NotADatabase`] / [`RedbStorageError::Corrupt`] for
    /// a file that is not a usable redb database,
    /// [`RedbStorageError::Io`] when the file cannot be created or opened.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, RedbStorageError> {
        Self::open_with(path, RedbOptions::default())
    }

    /// Opens the database at `path` with `options`, creating the file if it
    /// does not exist. See [`RedbStorage::open`].
    ///
    /// # Errors
    /// As [`RedbStorage::open`].
    pub fn open_with(
        path: impl AsRef<Path>,
        options: RedbOptions,
    ) -> Result<Self, RedbStorageError> {
        let path: Arc<Path> = Arc::from(path.as_ref());
        let mut builder = redb::Builder::new();
        if let Some(bytes) = options.cache_size {
            builder.set_cache_size(bytes);
        }
        let db = builder
            .create(&path)
            .map_err(|e| RedbStorageError::open(&path, e))?;
        init_layout(&db, &path)?;
        let db = Arc::new(db);

        let (writes, requests) = mpsc::channel(options.max_batch_writes.max(1));
        let counters = Arc::new(Counters::default());
        let writer = Writer {
            counters: Arc::clone(&counters),
            db: Arc::clone(&db),
            path: path.to_path_buf(),
            requests,
            max_batch_writes: options.max_batch_writes.max(1),
            max_batch_bytes: options.max_batch_bytes,
            two_phase_commit: options.two_phase_commit,
        };
        let writer = std::thread::Builder::new()
            .name("redb-writer".to_owned())
            .spawn(move || writer.run())
            .map_err(|source| RedbStorageError::Io {
                path: path.to_path_buf(),
                source,
            })?;
        tracing::debug!(path = %path.display(), "opened redb storage");
        Ok(Self {
            db,
            path,
            options,
            writes: Some(writes),
            writer: Some(writer),
            counters,
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The options this store was opened with.
    pub fn options(&self) -> &RedbOptions {
        &self.options
    }

    /// What the group-commit writer has done so far: commits, the writes
    /// they carried, failed batches. Cheap; meant for metrics.
    pub fn stats(&self) -> RedbStats {
        self.counters.snapshot()
    }

    /// Runs a read on the blocking pool, so disk reads never stall the
    /// async runtime.
    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Database, &Path) -> Result<T, RedbStorageError> + Send + 'static,
    ) -> Result<T, RedbStorageError> {
        let db = Arc::clone(&self.db);
        let path = Arc::clone(&self.path);
        let task_path = Arc::clone(&path);
        tokio::task::spawn_blocking(move || f(&db, &task_path))
            .await
            .map_err(|source| RedbStorageError::ReadTask {
                path: path.to_path_buf(),
                source,
            })?
    }

    /// Queues validated `ops` for the writer and waits for their durable
    /// commit.
    async fn write(&self, ops: Vec<TxnOp>) -> Result<(), RedbStorageError> {
        let stopped = || RedbStorageError::WriterStopped {
            path: self.path.to_path_buf(),
        };
        let sender = self.writes.as_ref().ok_or_else(stopped)?;
        let (reply, answer) = oneshot::channel();
        sender
            .send(WriteRequest { ops, reply })
            .await
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }

    fn check_value(&self, op: &'static str, key: &str, value: &[u8]) -> Result<(), StorageError> {
        let limit = self.options.max_value_size;
        if value.len() > limit {
            return Err(StorageError::ValueTooLarge {
                op,
                key: key.to_owned(),
                size: value.len(),
                limit,
            });
        }
        Ok(())
    }
}

impl Drop for RedbStorage {
    fn drop(&mut self) {
        // Closing the channel lets the writer drain the queue and exit;
        // joining it means the file lock is released when drop returns.
        drop(self.writes.take());
        if let Some(writer) = self.writer.take()
            && writer.join().is_err()
        {
            tracing::error!(path = %self.path.display(), "redb writer thread panicked");
        }
    }
}

/// Creates the tables on first open and refuses a layout from the future.
fn init_layout(db: &Database, path: &Path) -> Result<(), RedbStorageError> {
    let mut txn = db
        .begin_write()
        .map_err(|e| RedbStorageError::redb("begin write transaction", path, e))?;
    txn.set_durability(Durability::Immediate)
        .map_err(|e| RedbStorageError::redb("set durability", path, e))?;
    {
        txn.open_table(KV_TABLE)
            .map_err(|e| RedbStorageError::redb("open table", path, e))?;
        let mut meta = txn
            .open_table(META_TABLE)
            .map_err(|e| RedbStorageError::redb("open table", path, e))?;
        let found = meta
            .get(LAYOUT_KEY)
            .map_err(|e| RedbStorageError::redb("read layout version", path, e))?
            .map(|guard| guard.value());
        match found {
            Some(LAYOUT_VERSION) => {}
            Some(found) => {
                return Err(RedbStorageError::UnsupportedLayout {
                    path: path.to_owned(),
                    found,
                    expected: LAYOUT_VERSION,
                });
            }
            None => {
                meta.insert(LAYOUT_KEY, LAYOUT_VERSION)
                    .map_err(|e| RedbStorageError::redb("write layout version", path, e))?;
            }
        }
    }
    txn.commit()
        .map_err(|e| RedbStorageError::redb("commit", path, e))
}

/// Bytes a write op carries, for batch sizing.
pub(crate) fn value_bytes(op: &TxnOp) -> usize {
    match op {
        TxnOp::Put { value, .. } => value.len(),
        TxnOp::Delete { .. } => 0,
    }
}

fn read_get(db: &Database, path: &Path, key: &str) -> Result<Option<Vec<u8>>, RedbStorageError> {
    let txn = db
        .begin_read()
        .map_err(|e| RedbStorageError::redb("begin read transaction", path, e))?;
    let table = txn
        .open_table(KV_TABLE)
        .map_err(|e| RedbStorageError::redb("open table", path, e))?;
    let value = table
        .get(key)
        .map_err(|e| RedbStorageError::redb("get", path, e))?;
    Ok(value.map(|guard| guard.value().to_vec()))
}

/// Lists `prefix`'s children with range scans that skip over each folder:
/// after meeting `prefix` + `name/…`, the scan resumes at `prefix` +
/// `name0` (`'0'` is the byte after `'/'`), so a folder holding a million
/// keys costs one seek, not a million reads.
fn read_list(db: &Database, path: &Path, prefix: &str) -> Result<Vec<String>, RedbStorageError> {
    let txn = db
        .begin_read()
        .map_err(|e| RedbStorageError::redb("begin read transaction", path, e))?;
    let table = txn
        .open_table(KV_TABLE)
        .map_err(|e| RedbStorageError::redb("open table", path, e))?;
    // One representative key per child; list_children turns them into names.
    let mut representatives: Vec<String> = Vec::new();
    let mut start = prefix.to_owned();
    'seek: loop {
        let range = table
            .range::<&str>(start.as_str()..)
            .map_err(|e| RedbStorageError::redb("range scan", path, e))?;
        for entry in range {
            let (key, _) = entry.map_err(|e| RedbStorageError::redb("range scan", path, e))?;
            let key = key.value();
            let Some(rest) = key.strip_prefix(prefix) else {
                break 'seek;
            };
            match rest.find('/') {
                Some(slash) => {
                    let folder_end = prefix.len() + slash;
                    representatives.push(key[..=folder_end].to_owned());
                    start.clear();
                    start.push_str(&key[..folder_end]);
                    start.push('0');
                    continue 'seek;
                }
                None => representatives.push(key.to_owned()),
            }
        }
        break;
    }
    Ok(list_children(
        prefix,
        representatives.iter().map(String::as_str),
    ))
}

/// The key an error about `ops` names: the first one, and how many more.
fn txn_key(ops: &[TxnOp]) -> String {
    match ops {
        [] => String::new(),
        [only] => only.key().to_owned(),
        [first, rest @ ..] => format!("{} (and {} more)", first.key(), rest.len()),
    }
}

#[async_trait]
impl Storage for RedbStorage {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StorageError> {
        validate_key(key)?;
        let owned = key.to_owned();
        self.read(move |db, path| read_get(db, path, &owned))
            .await
            .map_err(|e| StorageError::backend("get", key, e))
    }

    async fn put(&self, key: &str, value: &[u8]) -> Result<(), StorageError> {
        validate_key(key)?;
        self.check_value("put", key, value)?;
        self.write(vec![TxnOp::put(key, value)])
            .await
            .map_err(|e| StorageError::backend("put", key, e))
    }

    async fn delete(&self, key: &str) -> Result<(), StorageError> {
        validate_key(key)?;
        self.write(vec![TxnOp::delete(key)])
            .await
            .map_err(|e| StorageError::backend("delete", key, e))
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>, StorageError> {
        validate_prefix(prefix)?;
        let owned = prefix.to_owned();
        self.read(move |db, path| read_list(db, path, &owned))
            .await
            .map_err(|e| StorageError::backend("list", prefix, e))
    }

    async fn transaction(&self, ops: Vec<TxnOp>) -> Result<(), StorageError> {
        // Validate everything before queueing: a batch must only ever hold
        // writes that can succeed, so no caller's mistake reaches another's
        // commit.
        let limit = self.options.max_transaction_ops;
        if ops.len() > limit {
            return Err(StorageError::TransactionTooLarge {
                ops: ops.len(),
                reason: format!(
                    "the redb storage accepts at most {limit} operations per transaction \
                     (RedbOptions::max_transaction_ops)"
                ),
            });
        }
        for op in &ops {
            validate_key(op.key())?;
            if let TxnOp::Put { key, value } = op {
                self.check_value("transaction", key, value)?;
            }
        }
        if ops.is_empty() {
            return Ok(());
        }
        let key = txn_key(&ops);
        self.write(ops)
            .await
            .map_err(|e| StorageError::backend("transaction", &key, e))
    }

    fn limits(&self) -> StorageLimits {
        StorageLimits {
            max_value_size: Some(self.options.max_value_size),
            max_transaction_ops: Some(self.options.max_transaction_ops),
        }
    }
}
