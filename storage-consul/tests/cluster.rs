//! A real 3-server Consul cluster: losing quorum gives the distinct
//! "no cluster leader" error; when the servers return, everything written
//! before is still there and writes work again.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use seal_core::{Storage, StorageError};
use storage_consul::testing::ConsulCluster;
use storage_consul::{ConsulError, ConsulStorage};

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
    let back = tokio::task::spawn_blocking(move || {
        let ok = cluster.wait_for_leader(Duration::from_secs(60));
        (cluster, ok)
    })
    .await
    .unwrap();
    let (cluster, ok) = back;
    assert!(ok, "no leader after restart:\n{}", cluster.log_tail(0));
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
