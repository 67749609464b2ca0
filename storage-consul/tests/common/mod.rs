//! What the Consul tests share beyond testkit: finding the Consul error in
//! a storage error, and queueing writes for group commit in a known order.
#![allow(dead_code, unreachable_pub)]

use std::time::Duration;

use seal_core::{Storage, StorageError, TxnOp};
use storage_consul::{ConsulError, ConsulStorage};
use testkit::proxy::GateProxy;
use testkit::wait::until;
use tokio::task::JoinHandle;

/// The [`ConsulError`] inside a storage error, if any.
pub fn consul_source(err: &StorageError) -> Option<&ConsulError> {
    let mut source = std::error::Error::source(err);
    while let Some(e) = source {
        if let Some(c) = e.downcast_ref::<ConsulError>() {
            return Some(c);
        }
        source = e.source();
    }
    None
}

/// How long the group-commit scenarios wait for a condition.
pub const BATCH_DEADLINE: Duration = Duration::from_secs(30);

/// Occupies both transaction slots of `storage` with writes to `hold/a`
/// and `hold/b`, held at `gate` (marker `hold`), one after the other so
/// each is its own transaction. Later writes queue until the gate opens.
pub async fn occupy_senders(
    storage: &ConsulStorage,
    gate: &GateProxy,
) -> Vec<JoinHandle<Result<(), StorageError>>> {
    let mut held = Vec::new();
    for (n, key) in ["hold/a", "hold/b"].into_iter().enumerate() {
        let s = storage.clone();
        held.push(tokio::spawn(async move { s.put(key, b"held").await }));
        until("the write is held at the proxy", BATCH_DEADLINE, || async {
            gate.held("hold") == n + 1
        })
        .await;
    }
    held
}

/// Starts `writes` (one op: a put or delete; more: a transaction) one at a
/// time, each once the one before is queued, so they queue in this order.
pub async fn queue_in_order(
    storage: &ConsulStorage,
    writes: Vec<Vec<TxnOp>>,
) -> Vec<JoinHandle<Result<(), StorageError>>> {
    let before = storage.request_stats().queued_writes;
    let mut started = Vec::new();
    for (n, ops) in writes.into_iter().enumerate() {
        let s = storage.clone();
        started.push(tokio::spawn(async move { write(&s, ops).await }));
        until("the write is queued", BATCH_DEADLINE, || async {
            storage.request_stats().queued_writes == before + n + 1
        })
        .await;
    }
    started
}

async fn write(storage: &ConsulStorage, mut ops: Vec<TxnOp>) -> Result<(), StorageError> {
    if ops.len() == 1 {
        match ops.pop() {
            Some(TxnOp::Put { key, value }) => return storage.put(&key, &value).await,
            Some(TxnOp::Delete { key }) => return storage.delete(&key).await,
            None => {}
        }
    }
    storage.transaction(ops).await
}

/// Opens `gate`, checks that the writes it held (from
/// [`occupy_senders`]) succeeded, and returns the queued writes' answers
/// in the order they were queued.
pub async fn release_queued(
    gate: &GateProxy,
    held: Vec<JoinHandle<Result<(), StorageError>>>,
    queued: Vec<JoinHandle<Result<(), StorageError>>>,
) -> std::vec::IntoIter<Result<(), StorageError>> {
    gate.open();
    for answer in answers(held).await {
        answer.expect("a write held at the gate");
    }
    answers(queued).await.into_iter()
}

/// Each write's answer, in order.
pub async fn answers(
    writes: Vec<JoinHandle<Result<(), StorageError>>>,
) -> Vec<Result<(), StorageError>> {
    let mut out = Vec::new();
    for w in writes {
        out.push(w.await.expect("write task"));
    }
    out
}
