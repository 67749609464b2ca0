//! A real 3-server Consul cluster: losing quorum gives the distinct
//! "no cluster leader" error; when the servers return, everything written
//! before is still there and writes work again.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use seal_core::{Storage, StorageError};
use storage_consul::{ConsulError, ConsulStorage};
use testkit::ConsulCluster;
use testkit::wait::until;

use common::consul_source;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quorum_loss_is_no_leader_then_recovers_without_loss() {
    let cluster = tokio::task::spawn_blocking(|| ConsulCluster::start(3))
        .await
        .unwrap();
    let leader = cluster.leader().unwrap();
    // Talk to a follower, then crash the leader and the other follower.
    let survivor = (leader + 1) % 3;
    let mut config = cluster.config(survivor);
    config.path = "quorum-test/".to_owned();
    config.max_retries = 1;
    let storage = ConsulStorage::new(config).unwrap();
    for i in 0..10 {
        storage.put(&format!("kept/{i}"), &[i]).await.unwrap();
    }

    for i in 0..3 {
        if i != survivor {
            cluster.kill(i);
        }
    }
    // Until the survivor notices the leader is gone it still forwards to it
    // (a transient ServerRpc error); then it holds requests for
    // rpc_hold_timeout (1 s here) and answers "No cluster leader". Every
    // error on the way is transient; none is a write.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let err = loop {
        let err = storage.put("lost/quorum", b"x").await.unwrap_err();
        assert!(matches!(err, StorageError::Unavailable { .. }), "{err:?}");
        match consul_source(&err) {
            Some(ConsulError::NoLeader) => break err,
            Some(ConsulError::ServerRpc { .. }) if std::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            other => panic!("expected NoLeader, got {other:?}"),
        }
    };
    assert!(err.to_string().contains("quorum"), "{err}");
    let err = storage.get("kept/1").await.unwrap_err();
    assert!(
        matches!(consul_source(&err), Some(ConsulError::NoLeader)),
        "a default-mode read needs the leader too: {err:?}"
    );

    for i in 0..3 {
        cluster.start_node(i);
    }
    let (cluster, leader) = tokio::task::spawn_blocking(move || {
        let leader = cluster.wait_for_leader(Duration::from_secs(60));
        (cluster, leader)
    })
    .await
    .unwrap();
    leader.unwrap_or_else(|e| panic!("no leader after restart: {e}"));
    // The election may still be settling on the node we talk to.
    let mut written = Err(None);
    for _ in 0..50 {
        match storage.put("after/recovery", b"ok").await {
            Ok(()) => {
                written = Ok(());
                break;
            }
            Err(e) if e.is_transient() => {
                written = Err(Some(e));
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("{e:?}"),
        }
    }
    written.unwrap_or_else(|e| panic!("no recovery: {e:?}"));
    assert_eq!(
        storage.list("kept/").await.unwrap().len(),
        10,
        "nothing lost"
    );
    assert_eq!(storage.get("kept/7").await.unwrap(), Some(vec![7]));
    assert_eq!(
        storage.get("lost/quorum").await.unwrap(),
        None,
        "the refused write never landed"
    );
    drop(cluster);
}

/// The HA lock across a Consul leader failover: the holder and a standby
/// talk to the two followers; the raft leader crashes. Renewals and watches
/// fail for the length of the election, shorter than the session TTL, so
/// the holder keeps its lock (Consul resets session TTLs on failover): its
/// fenced writes keep landing, the standby still cannot take the lock, and
/// a release afterwards hands over to the standby at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ha_lock_survives_a_consul_leader_failover() {
    use seal_core::HaBackend;
    use storage_consul::ConsulHaBackend;

    let cluster = tokio::task::spawn_blocking(|| ConsulCluster::start(3))
        .await
        .unwrap();
    let leader = cluster.leader().unwrap();
    let (a_node, b_node) = ((leader + 1) % 3, (leader + 2) % 3);
    let contender = |node: usize, wait: Duration| {
        let mut config = cluster.config(node);
        config.path = "ha-failover/".to_owned();
        config.session_ttl = Duration::from_secs(15);
        config.lock_delay = Duration::from_secs(1);
        config.lock_wait_time = wait;
        let storage = ConsulStorage::new(config).unwrap();
        let ha = ConsulHaBackend::new(&storage);
        (storage, ha)
    };
    let (storage_a, ha_a) = contender(a_node, Duration::from_millis(500));
    let (_storage_b, ha_b) = contender(b_node, Duration::from_millis(500));
    let wait = Duration::from_secs(45);
    // Transient errors (a fresh agent not in the catalog yet, no leader)
    // are waited out; any other error fails at once.
    let transient = |r: Result<_, seal_core::HaError>| match r {
        Err(err) if !err.is_transient() => panic!("{err}"),
        r => r,
    };
    let lock = until("A takes the free lock", wait, || async {
        transient(ha_a.try_lock("core/lock", b"a").await)
    })
    .await
    .expect("A wins");
    storage_a.put("before", b"1").await.unwrap();

    cluster.kill(leader);
    // Writes fail while there is no leader, then land again, still fenced
    // on A's session.
    until("A writes again after the election", wait, || async {
        let r = storage_a.put("after", b"2").await;
        if let Err(err) = &r {
            assert!(err.is_transient(), "{err:?}");
        }
        r
    })
    .await;
    assert!(!lock.lost().is_cancelled(), "the election cost A its lock");
    let standby = until("B's attempt gets an answer", wait, || async {
        transient(ha_b.try_lock("core/lock", b"b").await)
    })
    .await;
    assert!(standby.is_none(), "B took a lock A still holds");
    assert_eq!(
        ha_b.holder("core/lock").await.unwrap().as_deref(),
        Some(&b"a"[..])
    );
    lock.release().await.unwrap();
    let (_storage_b2, ha_b2) = contender(b_node, Duration::from_secs(30));
    let started = std::time::Instant::now();
    assert!(ha_b2.try_lock("core/lock", b"b").await.unwrap().is_some());
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
}
