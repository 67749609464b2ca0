//! Group commit: concurrent writes share one `/v1/txn`.
//!
//! Most of what a write costs Consul is paid per request, not per
//! operation: the HTTP exchange, decoding the JSON body, one raft log entry
//! and its apply (profiled in BENCHMARKS.md: a fenced one-op `/v1/txn` cost
//! Consul about twice the CPU of a raw KV PUT). So at most
//! [`TXNS_IN_FLIGHT`] transactions are in flight per storage; writes that
//! arrive meanwhile wait in a [`Queue`], and the next free sender takes
//! every waiting write that fits one transaction (the fence's
//! `check-session` once, first; then each write's operations).
//!
//! What a caller can rely on, as without batching:
//!
//! * A write is acknowledged only after the transaction carrying it
//!   committed (Consul answered 200); whatever the outcome, the caller gets
//!   its own answer naming its own operation and key.
//! * A write ([`Unit`]: one put, delete or [`seal_core::Storage::transaction`])
//!   is never split, and writes keep their arrival order inside a
//!   transaction, so of two writes to one key the later wins, as it would
//!   one after the other. Writes in different transactions in flight at
//!   once were concurrent calls, which have no order to keep.
//! * A refused fence refuses every write of the transaction: none of them
//!   may land once the node lost the lock.
//! * A failure Consul attributes to operations (409 with `OpIndex`, e.g. an
//!   ACL refusing one key) fails only the writes owning those operations;
//!   the others are sent again without them. A body Consul refuses as too
//!   large (413, its limits lower than configured here) is sent again one
//!   write at a time, so each gets its own answer.
//! * Any other failure (Consul unreachable after the retries, no leader)
//!   fails every write of the transaction; nothing of it was written.

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard, PoisonError};

use bytes::Bytes;
use reqwest::{Method, StatusCode};
use seal_core::StorageError;
use tokio::sync::oneshot;

use crate::client::Request;
use crate::error::ConsulError;
use crate::storage::{ConsulStorage, Fence, TxnError, parse_txn_errors, rolled_back};

/// Transactions one storage keeps in flight at once. Above one, so a single
/// slow request (a stalled connection, a paused agent) does not hold every
/// other write until it times out; small, so that under load writes queue
/// and share transactions instead of each paying for its own.
pub(crate) const TXNS_IN_FLIGHT: usize = 2;

/// One caller's write, its operations already encoded.
pub(crate) struct Unit {
    /// The operations as JSON objects separated by commas.
    json: Vec<u8>,
    /// How many operations `json` holds.
    ops: usize,
    /// The caller's operation and key, for its errors.
    op: &'static str,
    key: String,
    done: oneshot::Sender<Result<(), StorageError>>,
}

impl Unit {
    /// A write of `ops` operations encoded in `json`, and where its answer
    /// will arrive.
    pub(crate) fn new(
        op: &'static str,
        key: &str,
        json: Vec<u8>,
        ops: usize,
    ) -> (Self, oneshot::Receiver<Result<(), StorageError>>) {
        let (done, answer) = oneshot::channel();
        let unit = Self {
            json,
            ops,
            op,
            key: key.to_owned(),
            done,
        };
        (unit, answer)
    }

    fn finish(self, result: Result<(), ConsulError>) {
        // A caller that stopped waiting has nobody to tell.
        let _ = self
            .done
            .send(result.map_err(|e| e.into_storage(self.op, &self.key)));
    }
}

/// The writes waiting for a transaction, and how many senders run.
#[derive(Default)]
pub(crate) struct Queue {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    waiting: VecDeque<Unit>,
    senders: usize,
}

impl Queue {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues `unit`; true when the caller must start a sender for it
    /// (fewer than [`TXNS_IN_FLIGHT`] run).
    pub(crate) fn push(&self, unit: Unit) -> bool {
        let mut state = self.lock();
        state.waiting.push_back(unit);
        if state.senders < TXNS_IN_FLIGHT {
            state.senders += 1;
            true
        } else {
            false
        }
    }

    /// Writes waiting now.
    pub(crate) fn len(&self) -> usize {
        self.lock().waiting.len()
    }
}

/// A running sender's claim on its slot; given back when the queue is
/// empty, or when the task is dropped (runtime shutdown), in which case the
/// last sender fails what still waits rather than leave it waiting forever.
struct Slot<'a> {
    queue: &'a Queue,
    held: bool,
}

impl Slot<'_> {
    /// The next transaction's writes: from the front of the queue, as many
    /// as fit `max_ops` operations and `max_bytes` of operation JSON (the
    /// first always). `None`, giving the slot back, when nothing waits.
    fn next_batch(&mut self, max_ops: usize, max_bytes: usize) -> Option<Vec<Unit>> {
        let mut state = self.queue.lock();
        let Some(first) = state.waiting.pop_front() else {
            state.senders -= 1;
            self.held = false;
            return None;
        };
        let (mut ops, mut bytes) = (first.ops, first.json.len());
        let mut batch = vec![first];
        while let Some(next) = state.waiting.front() {
            if ops + next.ops > max_ops || bytes + 1 + next.json.len() > max_bytes {
                break;
            }
            ops += next.ops;
            bytes += 1 + next.json.len();
            batch.extend(state.waiting.pop_front());
        }
        Some(batch)
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        if !self.held {
            return;
        }
        let mut state = self.queue.lock();
        state.senders -= 1;
        if state.senders == 0 {
            // Dropping the units tells their callers the write was abandoned.
            state.waiting.clear();
        }
    }
}

impl ConsulStorage {
    /// Sends queued writes, one transaction at a time, until none waits.
    /// Runs as its own task, so a caller that stops waiting does not stop
    /// the writes batched with its own.
    pub(crate) async fn send_queued(self) {
        let queue = self.queue();
        let mut slot = Slot { queue, held: true };
        let (max_ops, max_bytes) = self.batch_room();
        while let Some(batch) = slot.next_batch(max_ops, max_bytes) {
            self.commit(batch).await;
        }
    }

    /// Sends `units` as one transaction (fewer on a partial failure, see
    /// the module docs) and answers each.
    async fn commit(&self, units: Vec<Unit>) {
        let mut work = VecDeque::from([units]);
        while let Some(units) = work.pop_front() {
            let fence = self.current_fence();
            let body = txn_body(fence.as_deref(), &units);
            let request = Request {
                method: Method::PUT,
                path_and_query: "/v1/txn",
                body: Some(Bytes::from(body)),
            };
            let (op, key) = (units[0].op, units[0].key.as_str());
            let outcome = self.client().send(op, key, &request).await;
            match outcome {
                Ok(reply) if reply.status == StatusCode::OK => {
                    units.into_iter().for_each(|u| u.finish(Ok(())));
                }
                Ok(reply) if reply.status == StatusCode::CONFLICT => {
                    match parse_txn_errors(&reply.body) {
                        Ok(errors) => {
                            let rest = self.answer_rolled_back(fence.as_deref(), units, &errors);
                            work.extend(rest);
                        }
                        Err(err) => fail_all(units, &err),
                    }
                }
                Ok(reply) => fail_all(
                    units,
                    &ConsulError::Status {
                        status: reply.status.as_u16(),
                        body: crate::error::truncate_body(&String::from_utf8_lossy(&reply.body)),
                    },
                ),
                Err(ConsulError::TooLarge { .. }) if units.len() > 1 => {
                    for unit in units.into_iter().rev() {
                        work.push_front(vec![unit]);
                    }
                }
                Err(err) => fail_all(units, &err),
            }
        }
    }

    /// Answers the writes of a transaction Consul rolled back with
    /// `errors`; returns the writes to send again without the failed ones.
    fn answer_rolled_back(
        &self,
        fence: Option<&Fence>,
        units: Vec<Unit>,
        errors: &[TxnError],
    ) -> Option<Vec<Unit>> {
        if let Some(f) = fence
            && errors.iter().any(|e| e.op_index == 0)
        {
            tracing::error!(
                op = units[0].op,
                key = %units[0].key,
                writes = units.len(),
                lock_key = %f.full_key,
                "session check failed on write: this node lost the HA lock; stepping down"
            );
            if let Some(token) = &f.on_refused {
                token.cancel();
            }
            let err = ConsulError::Fenced {
                lock_key: f.full_key.clone(),
                session: f.session.clone(),
            };
            fail_all(units, &err);
            return None;
        }
        let mut start = usize::from(fence.is_some());
        let mut rest = Vec::with_capacity(units.len());
        let mut failed = false;
        for unit in units {
            let end = start + unit.ops;
            let own: Vec<TxnError> = errors
                .iter()
                .filter(|e| (start..end).contains(&e.op_index))
                .map(|e| TxnError {
                    op_index: e.op_index - start,
                    what: e.what.clone(),
                })
                .collect();
            start = end;
            if own.is_empty() {
                rest.push(unit);
            } else {
                failed = true;
                unit.finish(Err(rolled_back(&own)));
            }
        }
        if !failed {
            // Errors that name no write's operation: nothing to leave out,
            // so sending again would fail the same way.
            fail_all(rest, &rolled_back(errors));
            return None;
        }
        (!rest.is_empty()).then_some(rest)
    }
}

fn fail_all(units: Vec<Unit>, err: &ConsulError) {
    for unit in units {
        unit.finish(Err(err.clone()));
    }
}

/// The `/v1/txn` body: the fence's `check-session` first, then each
/// write's operations in arrival order.
pub(crate) fn txn_body(fence: Option<&Fence>, units: &[Unit]) -> Vec<u8> {
    let len = 2
        + fence.map_or(0, |f| f.json.len() + 1)
        + units.iter().map(|u| u.json.len() + 1).sum::<usize>();
    let mut body = Vec::with_capacity(len);
    body.push(b'[');
    if let Some(f) = fence {
        body.extend_from_slice(&f.json);
    }
    for (i, unit) in units.iter().enumerate() {
        if i > 0 || fence.is_some() {
            body.push(b',');
        }
        body.extend_from_slice(&unit.json);
    }
    body.push(b']');
    body
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn unit(json: &str, ops: usize) -> Unit {
        Unit::new("put", "k", json.as_bytes().to_vec(), ops).0
    }

    #[test]
    fn a_batch_takes_what_fits_in_arrival_order() {
        let queue = Queue::default();
        assert!(queue.push(unit("a", 1)), "first write starts a sender");
        assert!(queue.push(unit("bb", 60)), "second starts the other");
        assert!(!queue.push(unit("c", 2)), "the third waits");
        queue.push(unit("d", 1));
        let mut slot = Slot {
            queue: &queue,
            held: true,
        };
        let batch = slot.next_batch(63, 1000).unwrap();
        let names: Vec<&[u8]> = batch.iter().map(|u| u.json.as_slice()).collect();
        assert_eq!(names, [&b"a"[..], b"bb", b"c"], "stops before 64 ops");
        let batch = slot.next_batch(63, 1000).unwrap();
        assert_eq!(batch.len(), 1);
        assert!(slot.next_batch(63, 1000).is_none());
        assert!(!slot.held);
        assert_eq!(queue.lock().senders, 1);
    }

    #[test]
    fn the_byte_budget_counts_separators_and_admits_a_lone_write() {
        let queue = Queue::default();
        queue.push(unit("aaaa", 1));
        queue.push(unit("bbbb", 1));
        let mut slot = Slot {
            queue: &queue,
            held: true,
        };
        assert_eq!(slot.next_batch(63, 8).unwrap().len(), 1, "4 + 1 + 4 > 8");
        assert_eq!(slot.next_batch(63, 2).unwrap().len(), 1, "alone, always");
    }

    #[test]
    fn a_dropped_last_sender_abandons_what_waits() {
        let queue = Queue::default();
        let (u, mut answer) = Unit::new("put", "k", b"x".to_vec(), 1);
        queue.push(u);
        drop(Slot {
            queue: &queue,
            held: true,
        });
        assert_eq!(queue.len(), 0);
        assert!(answer.try_recv().is_err(), "the caller is told, not left");
        assert!(queue.push(unit("y", 1)), "a new sender starts");
    }

    fn errors(indices: &[usize]) -> Vec<TxnError> {
        indices
            .iter()
            .map(|&op_index| TxnError {
                op_index,
                what: "Permission denied: lacks permission 'key:write'".into(),
            })
            .collect()
    }

    fn fence(on_refused: Option<tokio_util::sync::CancellationToken>) -> Fence {
        Fence {
            full_key: "p/core/lock".into(),
            session: "s".into(),
            json: b"F".to_vec(),
            on_refused,
        }
    }

    /// Units of 1, 2 and 1 operations behind the fence: operations 1, 2-3
    /// and 4. An error at operation 3 fails the second unit alone.
    #[test]
    fn an_operation_error_fails_only_its_write() {
        let storage = ConsulStorage::new(crate::ConsulConfig::default()).unwrap();
        let (a, mut answer_a) = Unit::new("put", "a", b"A".to_vec(), 1);
        let (b, mut answer_b) = Unit::new("transaction", "b", b"B".to_vec(), 2);
        let (c, mut answer_c) = Unit::new("delete", "c", b"C".to_vec(), 1);
        let f = fence(None);
        let rest = storage
            .answer_rolled_back(Some(&f), vec![a, b, c], &errors(&[3]))
            .unwrap();
        let keys: Vec<&str> = rest.iter().map(|u| u.key.as_str()).collect();
        assert_eq!(keys, ["a", "c"], "sent again, in order");
        let err = answer_b.try_recv().unwrap().unwrap_err();
        assert!(
            matches!(err, StorageError::PermissionDenied { op: "transaction", ref key, .. } if key == "b"),
            "{err:?}"
        );
        assert!(answer_a.try_recv().is_err() && answer_c.try_recv().is_err());
    }

    #[test]
    fn a_refused_fence_fails_every_write() {
        let storage = ConsulStorage::new(crate::ConsulConfig::default()).unwrap();
        let token = tokio_util::sync::CancellationToken::new();
        let f = fence(Some(token.clone()));
        let (a, mut answer_a) = Unit::new("put", "a", b"A".to_vec(), 1);
        let (b, mut answer_b) = Unit::new("put", "b", b"B".to_vec(), 1);
        assert!(
            storage
                .answer_rolled_back(Some(&f), vec![a, b], &errors(&[0, 2]))
                .is_none()
        );
        for answer in [&mut answer_a, &mut answer_b] {
            let err = answer.try_recv().unwrap().unwrap_err();
            assert!(err.is_fenced(), "{err:?}");
        }
        assert!(token.is_cancelled(), "the lock is marked lost");
    }

    #[test]
    fn errors_naming_no_write_fail_all() {
        let storage = ConsulStorage::new(crate::ConsulConfig::default()).unwrap();
        let (a, mut answer) = Unit::new("put", "a", b"A".to_vec(), 1);
        assert!(
            storage
                .answer_rolled_back(None, vec![a], &errors(&[7]))
                .is_none()
        );
        assert!(answer.try_recv().unwrap().is_err());
    }

    #[test]
    fn body_puts_the_fence_first() {
        let fence = fence(None);
        let units = [unit("A", 1), unit("B", 1)];
        assert_eq!(txn_body(Some(&fence), &units), b"[F,A,B]");
        assert_eq!(txn_body(None, &units), b"[A,B]");
    }
}
