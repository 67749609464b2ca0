//! Group commit against a real Consul dev agent: writes queued while both
//! transactions are in flight (held at a proxy) go to Consul as one
//! `/v1/txn` in arrival order, each caller answered only after it
//! committed; a fence refused by Consul refuses the whole batch.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use seal_core::{HaBackend, Storage, TxnOp};
use storage_consul::{ConsulError, ConsulHaBackend, ConsulStorage};
use testkit::consul::{PrefixGuard, isolated, raw_request, shared_dev};
use testkit::proxy::GateProxy;

use common::{answers, consul_source, occupy_senders, queue_in_order};

/// A storage on a fresh prefix of the shared agent whose requests pass
/// through a gate holding those that mention `hold`, and one beside it
/// that talks to the agent directly (to look at what landed).
async fn gated() -> (ConsulStorage, ConsulStorage, GateProxy, PrefixGuard) {
    let dev = shared_dev();
    let gate = GateProxy::start(dev.http_address(), vec!["hold"]).await;
    let (direct, guard) = isolated(dev, |c| c.session_ttl = Duration::from_secs(10));
    let mut config = dev.config();
    config.path = direct.path().to_owned();
    config.address = gate.address.clone();
    let storage = ConsulStorage::new(config).unwrap();
    (storage, direct, gate, guard)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_writes_share_one_transaction_in_arrival_order() {
    let (storage, direct, gate, _guard) = gated().await;
    let held = occupy_senders(&storage, &gate).await;
    let sent_before = storage.request_stats().requests;

    let mut writes: Vec<Vec<TxnOp>> = (0..40)
        .map(|i| vec![TxnOp::put(format!("k/{i}"), format!("v{i}"))])
        .collect();
    writes.push(vec![TxnOp::put("same", "first")]);
    writes.push(vec![TxnOp::put("same", "second")]);
    writes.push(vec![TxnOp::delete("k/0")]);
    writes.push(vec![TxnOp::put("t/1", "x"), TxnOp::put("t/2", "y")]);
    let queued = queue_in_order(&storage, writes).await;
    assert_eq!(storage.request_stats().requests, sent_before, "all wait");

    gate.open();
    for answer in answers(held).await.into_iter().chain(answers(queued).await) {
        answer.unwrap();
    }
    assert_eq!(
        storage.request_stats().requests,
        sent_before + 1,
        "45 operations in 44 writes fit one transaction"
    );
    assert_eq!(
        direct.get("same").await.unwrap().as_deref(),
        Some(&b"second"[..]),
        "the later write to a key wins, as it would one after the other"
    );
    assert_eq!(direct.get("k/0").await.unwrap(), None);
    for i in 1..40 {
        let value = direct.get(&format!("k/{i}")).await.unwrap();
        assert_eq!(value, Some(format!("v{i}").into_bytes()));
    }
    assert_eq!(direct.list("t/").await.unwrap(), ["1", "2"]);
}

/// More writes than one transaction holds (63 operations besides the
/// fence) go in as many transactions as they need, none split.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_transaction_leaves_the_rest_for_the_next() {
    let (storage, direct, gate, _guard) = gated().await;
    let held = occupy_senders(&storage, &gate).await;
    let sent_before = storage.request_stats().requests;
    let mut writes: Vec<Vec<TxnOp>> = (0..60)
        .map(|i| vec![TxnOp::put(format!("k/{i}"), "v")])
        .collect();
    writes.push((0..10).map(|i| TxnOp::put(format!("t/{i}"), "w")).collect());
    let queued = queue_in_order(&storage, writes).await;
    gate.open();
    for answer in answers(held).await.into_iter().chain(answers(queued).await) {
        answer.unwrap();
    }
    let sent = storage.request_stats().requests - sent_before;
    assert!(
        sent == 2,
        "60 puts, then the 10-op transaction that no longer fits: {sent} requests"
    );
    assert_eq!(direct.list("k/").await.unwrap().len(), 60);
    assert_eq!(direct.list("t/").await.unwrap().len(), 10);
}

/// A node that lost its lock while writes waited: Consul refuses the
/// batch's `check-session`, and every write of it (the held ones too) is
/// refused as fenced, nothing of them lands, and the lock is marked lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fenced_batch_is_refused_as_a_whole() {
    let (storage, direct, gate, _guard) = gated().await;
    let ha = ConsulHaBackend::new(&storage);
    let lock = ha
        .try_lock("core/lock", b"node-a")
        .await
        .unwrap()
        .expect("the only contender gets the lock");
    let session = lock.fencing_token().unwrap();
    assert_eq!(storage.write_fence_session().as_deref(), Some(&*session));

    let held = occupy_senders(&storage, &gate).await;
    let queued = queue_in_order(
        &storage,
        vec![
            vec![TxnOp::put("a", "1")],
            vec![TxnOp::put("b", "2"), TxnOp::delete("c")],
            vec![TxnOp::put("d", "3")],
        ],
    )
    .await;

    let http = shared_dev().http_address();
    let path = format!("/v1/session/destroy/{session}");
    let r = tokio::task::spawn_blocking(move || raw_request(&http, "PUT", &path, None, b""))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());

    gate.open();
    for answer in answers(held).await.into_iter().chain(answers(queued).await) {
        let err = answer.unwrap_err();
        assert!(err.is_fenced(), "{err:?}");
        assert!(
            matches!(consul_source(&err), Some(ConsulError::Fenced { .. })),
            "{err:?}"
        );
    }
    assert!(
        lock.lost().is_cancelled(),
        "the refused fence marks it lost"
    );
    for key in ["hold/a", "hold/b", "a", "b", "d"] {
        assert_eq!(direct.get(key).await.unwrap(), None, "{key} landed");
    }
}
