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
use std::sync::atomic::{AtomicU64, Ordering};

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

/// Counters the writer keeps and [`RedbStorage::stats`](crate::RedbStorage::stats) reads.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    commits: AtomicU64,
    writes: AtomicU64,
    failed_batches: AtomicU64,
}

impl Counters {
    pub(crate) fn snapshot(&self) -> RedbStats {
        RedbStats {
            commits: self.commits.load(Ordering::Relaxed),
            writes: self.writes.load(Ordering::Relaxed),
            failed_batches: self.failed_batches.load(Ordering::Relaxed),
        }
    }
}

/// What the group-commit writer has done since the store was opened.
///
/// `writes / commits` is the average batch size: near 1 under a single
/// caller, higher under concurrent load. Export it as a metric to see
/// whether the disk's flush latency is what bounds write throughput.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct RedbStats {
    /// Durable redb commits that succeeded.
    pub commits: u64,
    /// Write requests (puts, deletes, transactions) those commits carried.
    pub writes: u64,
    /// Batches that failed as a whole and were retried write by write.
    pub failed_batches: u64,
}

/// What the writer thread needs, moved into it at spawn.
pub(crate) struct Writer {
    pub(crate) db: Arc<Database>,
    pub(crate) path: PathBuf,
    pub(crate) requests: mpsc::Receiver<WriteRequest>,
    pub(crate) max_batch_writes: usize,
    pub(crate) max_batch_bytes: usize,
    pub(crate) two_phase_commit: bool,
    pub(crate) counters: Arc<Counters>,
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

    fn commit(&self, requests: &[WriteRequest]) -> Result<(), RedbStorageError> {
        commit(
            &self.db,
            &self.path,
            self.two_phase_commit,
            requests.iter().map(|r| r.ops.as_slice()),
        )?;
        self.counters.commits.fetch_add(1, Ordering::Relaxed);
        self.counters
            .writes
            .fetch_add(requests.len() as u64, Ordering::Relaxed);
        Ok(())
    }

    fn commit_batch(&self, batch: &mut Vec<WriteRequest>) {
        match self.commit(batch) {
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
                self.counters.failed_batches.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    path = %self.path.display(),
                    writes = batch.len(),
                    error = %err,
                    "redb group commit failed; retrying each write in its own transaction"
                );
                for request in batch.drain(..) {
                    let result = self.commit(std::slice::from_ref(&request));
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
                        #[cfg(test)]
                        if key == tests::FAIL_KEY {
                            return Err(RedbStorageError::WriterStopped {
                                path: path.to_owned(),
                            });
                        }
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use crate::store::KV_TABLE;
    use redb::{ReadableDatabase, ReadableTableMetadata};

    /// A put of this key fails inside the transaction (fault injection).
    pub(super) const FAIL_KEY: &str = "test/fail-inside-transaction";

    fn writer(dir: &tempfile::TempDir, capacity: usize) -> (Writer, mpsc::Sender<WriteRequest>) {
        let path = dir.path().join("writer.redb");
        let db = Arc::new(Database::create(&path).unwrap());
        let txn = db.begin_write().unwrap();
        txn.open_table(KV_TABLE).unwrap();
        txn.commit().unwrap();
        let (sender, requests) = mpsc::channel(capacity);
        let writer = Writer {
            db,
            path,
            requests,
            max_batch_writes: 64,
            max_batch_bytes: 1 << 20,
            two_phase_commit: true,
            counters: Arc::default(),
        };
        (writer, sender)
    }

    fn request(
        ops: Vec<TxnOp>,
    ) -> (
        WriteRequest,
        oneshot::Receiver<Result<(), RedbStorageError>>,
    ) {
        let (reply, answer) = oneshot::channel();
        (WriteRequest { ops, reply }, answer)
    }

    /// Writes queued while the writer is busy share one durable commit,
    /// and each caller is answered.
    #[test]
    fn queued_writes_share_one_commit() {
        let dir = tempfile::tempdir().unwrap();
        let (writer, sender) = writer(&dir, 128);
        let mut answers = Vec::new();
        for i in 0..40 {
            let (req, answer) = request(vec![TxnOp::put(format!("k/{i}"), vec![i as u8])]);
            sender.try_send(req).unwrap();
            answers.push(answer);
        }
        drop(sender);
        let counters = Arc::clone(&writer.counters);
        let db = Arc::clone(&writer.db);
        writer.run();
        for mut answer in answers {
            answer.try_recv().unwrap().unwrap();
        }
        let stats = counters.snapshot();
        assert_eq!(
            (stats.commits, stats.writes, stats.failed_batches),
            (1, 40, 0)
        );
        let txn = db.begin_read().unwrap();
        assert_eq!(txn.open_table(KV_TABLE).unwrap().len().unwrap(), 40);
    }

    /// A batch never grows past `max_batch_writes`.
    #[test]
    fn batches_are_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let (writer, sender) = writer(&dir, 256);
        for i in 0..150 {
            let (req, _answer) = request(vec![TxnOp::delete(format!("k/{i}"))]);
            sender.try_send(req).unwrap();
        }
        drop(sender);
        let counters = Arc::clone(&writer.counters);
        writer.run();
        let stats = counters.snapshot();
        assert_eq!((stats.commits, stats.writes), (3, 150), "64 + 64 + 22");
    }

    /// One request that fails inside the transaction (injected: validation
    /// leaves redb nothing to refuse but I/O) fails alone; the batch is
    /// retried write by write and its neighbours commit.
    #[test]
    fn failed_batch_is_retried_write_by_write() {
        let dir = tempfile::tempdir().unwrap();
        let (writer, sender) = writer(&dir, 16);
        let (good_a, answer_a) = request(vec![TxnOp::put("a", b"a".to_vec())]);
        let (bad, answer_bad) = request(vec![
            TxnOp::put("b", b"b".to_vec()),
            TxnOp::put(FAIL_KEY, b"x".to_vec()),
        ]);
        let (good_c, answer_c) = request(vec![TxnOp::delete("zz"), TxnOp::put("c", b"c".to_vec())]);
        for req in [good_a, bad, good_c] {
            sender.try_send(req).unwrap();
        }
        drop(sender);
        let counters = Arc::clone(&writer.counters);
        let db = Arc::clone(&writer.db);
        writer.run();
        answer_a.blocking_recv().unwrap().unwrap();
        assert!(answer_bad.blocking_recv().unwrap().is_err());
        answer_c.blocking_recv().unwrap().unwrap();
        let stats = counters.snapshot();
        assert_eq!(
            (stats.commits, stats.writes, stats.failed_batches),
            (2, 2, 1)
        );
        let txn = db.begin_read().unwrap();
        let table = txn.open_table(KV_TABLE).unwrap();
        assert!(table.get("a").unwrap().is_some());
        assert!(
            table.get("b").unwrap().is_none(),
            "the failed request wrote nothing"
        );
        assert!(table.get("c").unwrap().is_some());
    }
}
