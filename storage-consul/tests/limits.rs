//! Limits are stated, enforced before anything is sent, and match what the
//! real Consul refuses; `max_parallel` really bounds requests in flight.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use seal_core::{Storage, StorageError, TxnOp};
use storage_consul::{ConsulError, MAX_TRANSACTION_OPS};
use testkit::consul::{isolated, raw_request, shared_dev};

use common::{consul_source, occupy_senders, queue_in_order, release_queued};
use testkit::proxy::{CountingProxy, GateProxy};

/// Why the value limit is below 512 KiB: the real Consul refuses a
/// `/v1/txn` carrying one 512 KiB value, because base64 inflates it past
/// `txn_max_req_len` (consul#19021), while the stated limit goes through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stated_value_limit_is_what_consul_txn_accepts() {
    let dev = shared_dev();
    let (storage, guard) = isolated(dev, |_| {});
    let max = storage.limits().max_value_size.unwrap();
    assert!(max < 512 * 1024 && max > 370 * 1024, "{max}");

    let txn_with = |key: &str, len: usize| {
        let value = base64::engine::general_purpose::STANDARD.encode(vec![1u8; len]);
        serde_json::to_vec(
            &serde_json::json!([{"KV": {"Verb": "set", "Key": key, "Value": value}}]),
        )
        .unwrap()
    };
    let key = format!("{}raw/half-meg", guard.prefix());
    let raw = raw_request(
        &dev.http_address(),
        "PUT",
        "/v1/txn",
        None,
        &txn_with(&key, 512 * 1024),
    )
    .unwrap();
    assert_eq!(
        raw.status,
        413,
        "Consul accepted a 512 KiB txn value: {}",
        raw.text()
    );
    assert!(raw.text().contains("too large"), "{}", raw.text());

    // The stated maximum, under the longest key, is accepted by Consul.
    let long_key = format!("big/{}", "k".repeat(2000));
    storage.put(&long_key, &vec![3u8; max]).await.unwrap();
    assert_eq!(storage.get(&long_key).await.unwrap().unwrap().len(), max);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_put_is_refused_before_sending() {
    let (storage, _guard) = isolated(shared_dev(), |_| {});
    let limit = storage.limits().max_value_size.unwrap();
    let before = storage.request_stats().requests;
    let err = storage
        .put("blob/too-big", &vec![0u8; limit + 10])
        .await
        .unwrap_err();
    match &err {
        StorageError::ValueTooLarge {
            op,
            key,
            size,
            limit: l,
        } => {
            assert_eq!(
                (*op, key.as_str(), *size, *l),
                ("put", "blob/too-big", limit + 10, limit)
            );
        }
        other => panic!("expected ValueTooLarge, got {other:?}"),
    }
    let text = err.to_string();
    assert!(
        text.contains("blob/too-big") && text.contains(&limit.to_string()),
        "{text}"
    );
    assert_eq!(storage.request_stats().requests, before, "nothing was sent");
    assert_eq!(storage.get("blob/too-big").await.unwrap(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transaction_limits_refuse_and_write_nothing() {
    let (storage, _guard) = isolated(shared_dev(), |_| {});
    let limit = storage.limits().max_value_size.unwrap();
    assert_eq!(
        storage.limits().max_transaction_ops,
        Some(MAX_TRANSACTION_OPS)
    );
    let before = storage.request_stats().requests;

    // Too many operations.
    let ops = (0..=MAX_TRANSACTION_OPS)
        .map(|i| TxnOp::put(format!("many/{i}"), vec![1]))
        .collect();
    match storage.transaction(ops).await {
        Err(StorageError::TransactionTooLarge { ops, reason }) => {
            assert_eq!(ops, 64);
            assert!(
                reason.contains("63") && reason.contains("atomicity"),
                "{reason}"
            );
        }
        other => panic!("expected TransactionTooLarge, got {other:?}"),
    }

    // Every value fits, but together their base64 body does not.
    let ops = (0..3)
        .map(|i| TxnOp::put(format!("fat/{i}"), vec![9u8; 200 * 1024]))
        .collect();
    match storage.transaction(ops).await {
        Err(StorageError::TransactionTooLarge { ops, reason }) => {
            assert_eq!(ops, 3);
            assert!(
                reason.contains("txn_max_req_len") && reason.contains("524288"),
                "{reason}"
            );
        }
        other => panic!("expected TransactionTooLarge, got {other:?}"),
    }

    // One value over the limit fails the whole transaction, naming it.
    let ops = vec![
        TxnOp::put("ok/a", b"a".to_vec()),
        TxnOp::put("ok/huge", vec![0u8; limit + 1]),
    ];
    match storage.transaction(ops).await {
        Err(StorageError::ValueTooLarge { op, key, size, .. }) => {
            assert_eq!(
                (op, key.as_str(), size),
                ("transaction", "ok/huge", limit + 1)
            );
        }
        other => panic!("expected ValueTooLarge, got {other:?}"),
    }
    assert_eq!(storage.request_stats().requests, before, "nothing was sent");
    assert!(storage.list("").await.unwrap().is_empty());
}

/// Configured limits above the servers' are caught by Consul's own 413,
/// reported as such.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_limit_lower_than_configured_is_a_clear_error() {
    let (storage, _guard) = isolated(shared_dev(), |c| c.kv_max_value_size = 1024 * 1024);
    let err = storage
        .put("too/big/for/server", &vec![5u8; 600 * 1024])
        .await
        .unwrap_err();
    assert!(matches!(err, StorageError::Backend { .. }), "{err:?}");
    assert!(
        matches!(consul_source(&err), Some(ConsulError::TooLarge { .. })),
        "{err:?}"
    );
    assert!(err.to_string().contains("413"), "{err}");
    assert_eq!(storage.get("too/big/for/server").await.unwrap(), None);
}

/// `max_parallel` bounds requests in flight as seen from the network: a
/// proxy in front of Consul counts overlapping requests. With the bound
/// raised, the same load overlaps far more, so the check can fail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_parallel_bounds_requests_in_flight() {
    let dev = shared_dev();
    async fn load(dev_http: String, max_parallel: usize) -> (usize, usize) {
        let proxy = CountingProxy::start(dev_http, Duration::from_millis(15)).await;
        let (storage, _guard) = isolated(shared_dev(), |c| {
            c.address = proxy.address.clone();
            c.max_parallel = max_parallel;
        });
        let storage = Arc::new(storage);
        let mut tasks = Vec::new();
        for t in 0..32 {
            let s = storage.clone();
            tasks.push(tokio::spawn(async move {
                for i in 0..4 {
                    s.put(&format!("p/{t}/{i}"), b"v").await.unwrap();
                    s.get(&format!("p/{t}/{i}")).await.unwrap();
                }
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
        let stats = storage.request_stats();
        assert_eq!(stats.in_flight, 0);
        // Every get is a request of its own; puts that queue share
        // transactions (group commit), so they may take fewer.
        assert!(
            (32 * 4 + 1..=32 * 4 * 2).contains(&stats.requests),
            "{stats:?}"
        );
        assert!(stats.peak_in_flight <= max_parallel, "{stats:?}");
        (proxy.peak(), stats.peak_in_flight)
    }
    let (seen, gauge) = load(dev.http_address(), 4).await;
    assert!(
        seen <= 4,
        "proxy saw {seen} requests in flight with max_parallel = 4"
    );
    assert_eq!(
        gauge, 4,
        "the bound was reached, so the load was enough to test it"
    );
    let (seen_unbounded, _) = load(dev.http_address(), 64).await;
    assert!(
        seen_unbounded > 8,
        "with max_parallel = 64 the proxy saw only {seen_unbounded} in flight"
    );
}

/// Group commit: a batch Consul refuses as too large (413: the servers'
/// limits are lower than configured here) is sent again one write at a
/// time, so only the oversized write fails and the others land.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_refused_as_too_large_is_sent_one_write_at_a_time() {
    let dev = shared_dev();
    let gate = GateProxy::start(dev.http_address(), vec!["hold"]).await;
    let (direct, _guard) = isolated(dev, |_| {});
    let mut config = dev.config();
    config.path = direct.path().to_owned();
    config.address = gate.address.clone();
    config.kv_max_value_size = 1024 * 1024;
    let storage = storage_consul::ConsulStorage::new(config).unwrap();
    let held = occupy_senders(&storage, &gate).await;
    let queued = queue_in_order(
        &storage,
        vec![
            vec![TxnOp::put("small/1", "1")],
            vec![TxnOp::put("too/big", vec![5u8; 600 * 1024])],
            vec![TxnOp::put("small/2", "2")],
        ],
    )
    .await;
    let mut answers = release_queued(&gate, held, queued).await;
    answers.next().unwrap().unwrap();
    let err = answers.next().unwrap().unwrap_err();
    assert!(
        matches!(consul_source(&err), Some(ConsulError::TooLarge { .. })),
        "{err:?}"
    );
    assert!(err.to_string().contains("too/big"), "{err}");
    answers.next().unwrap().unwrap();
    assert_eq!(direct.list("small/").await.unwrap(), ["1", "2"]);
    assert_eq!(direct.get("too/big").await.unwrap(), None);
}
