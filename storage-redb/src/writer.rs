//! The group-commit writer: one thread owns every write transaction.
//!
//! A durable commit costs an fsync (two with two-phase commit), which takes
//! far longer than applying a few puts in memory. One commit per write would
//! bound the store at a few hundred writes a second however many callers
//! wait. So callers queue their (already validated) writes on a channel; the
//! writer takes the first, then everything else already queued, applies the
//! whole batch in one redb transaction, commits it durably once, and only
//! then answers every caller. A batch that fails is retried one request at a
//! time, so one caller's failure never fails or leaks into another's write.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use redb::{Database, Durability};
use seal_core::TxnOp;
use tokio::sync::{mpsc, oneshot};

use crate::RedbStorageError;
use crate::store::{KV_TABLE, value_bytes};

/// One caller's write: applied atomically, answered after a durable commit.
pub(crate) struct WriteRequest {
    pub(crate) ops: Vec<TxnOp>,
    pub(crate) reply: oneshot::Sender<Result<(), RedbStorageError>>,
}

/// What the writer thread needs, moved into it at spawn.
pub(crate) struct Writer {
    pub(crate) db: Arc<Database>,
    pub(crate) path: PathBuf,
    pub(crate) requests: mpsc::Receiver<WriteRequest>,
    pub(crate) max_batch_writes: usize,
    pub(crate) max_batch_bytes: usize,
    pub(crate) two_phase_commit: bool,
}

impl Writer {
    /// Runs until every sender is gone and the queue is drained.
    pub(crate) fn run(mut self) {
        let mut batch = Vec::with_capacity(self.max_batch_writes);
        while let Some(first) = self.requests.blocking_recv() {
            let mut bytes = request_bytes(&first);
            batch.push(first);
            while batch.len() < self.max_batch_writes && bytes < self.max_batch_bytes {
                match self.requests.try_recv() {
                    Ok(next) => {
                        bytes += request_bytes(&next);
                        batch.push(next);
                    }
                    Err(_) => break,
                }
            }
            self.commit_batch(&mut batch);
        }
        tracing::debug!(path = %self.path.display(), "redb writer stopped: store closed");
    }

    fn commit_batch(&self, batch: &mut Vec<WriteRequest>) {
        let result = commit(
            &self.db,
            &self.path,
            self.two_phase_commit,
            batch.iter().map(|r| r.ops.as_slice()),
        );
        match result {
            Ok(()) => {
                for request in batch.drain(..) {
                    // A caller that stopped waiting still had its write
                    // committed; there is nobody left to tell.
                    let _ = request.reply.send(Ok(()));
                }
            }
            Err(err) if batch.len() == 1 => {
                if let Some(request) = batch.pop() {
                    let _ = request.reply.send(Err(err));
                }
            }
            Err(err) => {
                tracing::warn!(
                    path = %self.path.display(),
                    writes = batch.len(),
                    error = %err,
                    "redb group commit failed; retrying each write in its own transaction"
                );
                for request in batch.drain(..) {
                    let result = commit(
                        &self.db,
                        &self.path,
                        self.two_phase_commit,
                        std::iter::once(request.ops.as_slice()),
                    );
                    let _ = request.reply.send(result);
                }
            }
        }
    }
}

fn request_bytes(request: &WriteRequest) -> usize {
    request
        .ops
        .iter()
        .map(|op| op.key().len() + value_bytes(op))
        .sum()
}

/// Applies every request's operations, in order, in one durable
/// transaction. On error nothing is committed (the transaction aborts on
/// drop).
fn commit<'a>(
    db: &Database,
    path: &Path,
    two_phase_commit: bool,
    requests: impl Iterator<Item = &'a [TxnOp]>,
) -> Result<(), RedbStorageError> {
    let mut txn = db
        .begin_write()
        .map_err(|e| RedbStorageError::redb("begin write transaction", path, e))?;
    txn.set_durability(Durability::Immediate)
        .map_err(|e| RedbStorageError::redb("set durability", path, e))?;
    txn.set_two_phase_commit(two_phase_commit);
    {
        let mut table = txn
            .open_table(KV_TABLE)
            .map_err(|e| RedbStorageError::redb("open table", path, e))?;
        for ops in requests {
            for op in ops {
                match op {
                    TxnOp::Put { key, value } => {
                        table
                            .insert(key.as_str(), value.as_slice())
                            .map_err(|e| RedbStorageError::redb("insert", path, e))?;
                    }
                    TxnOp::Delete { key } => {
                        table
                            .remove(key.as_str())
                            .map_err(|e| RedbStorageError::redb("remove", path, e))?;
                    }
                }
            }
        }
    }
    txn.commit()
        .map_err(|e| RedbStorageError::redb("commit", path, e))
}
