//! Active/standby in one process: several cores on one `MemoryStorage`,
//! each with its own contender on one `MemoryHaBackend`. Every wait polls
//! a condition with a deadline.

// Helpers outside #[test] fns unwrap too: a failure there is a test failure.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::Duration;

use seal_core::testing::InsecureTestSeal;
use seal_core::{HaBackend, MemoryHaBackend, MemoryStorage, Storage};
use serde_json::{Value, json};
use strongroom::{Core, CoreError, CoreOptions, HaMode, LogicalRequest, Operation};
use testkit::wait;

mod common;

const DEADLINE: Duration = Duration::from_secs(20);
const KEY: &str = "core/lock";

fn options(i: usize) -> CoreOptions {
    CoreOptions::new("inmem")
        .with_api_addr(format!("http://node{i}:8200"))
        .with_cluster_addr(format!("https://node{i}:8201"))
        .with_auto_unseal_backoff(Duration::from_millis(10), Duration::from_millis(50))
        // Long: a stepped-down node must wait for another node, not a timer.
        .with_step_down_grace(Duration::from_secs(60))
}

/// Cores sharing one storage and one lock service.
struct Cluster {
    storage: Arc<MemoryStorage>,
    ha: MemoryHaBackend,
    seal: Option<Arc<InsecureTestSeal>>,
    nodes: Vec<Core>,
    root: String,
    keys: Vec<String>,
}

impl Cluster {
    /// No nodes yet; auto-sealed by `seal`, else Shamir.
    fn empty(seal: Option<Arc<InsecureTestSeal>>) -> Cluster {
        Cluster {
            storage: Arc::new(MemoryStorage::new()),
            ha: MemoryHaBackend::new(),
            seal,
            nodes: Vec::new(),
            root: String::new(),
            keys: Vec::new(),
        }
    }

    /// `n` auto-seal nodes; node 0 initializes, the others unseal
    /// themselves when built.
    async fn auto(n: usize) -> Cluster {
        let mut cluster = Cluster::empty(Some(Arc::new(InsecureTestSeal::new())));
        let first = cluster.build(0).await;
        let init = first.init(common::recovery_params(1, 1)).await.unwrap();
        cluster.root.clone_from(&init.root_token);
        cluster.nodes.push(first);
        for i in 1..n {
            let node = cluster.build(i).await;
            cluster.nodes.push(node);
        }
        cluster
    }

    /// `n` Shamir nodes (one key share), all unsealed.
    async fn shamir(n: usize) -> Cluster {
        let mut cluster = Cluster::empty(None);
        for i in 0..n {
            let node = cluster.build(i).await;
            cluster.nodes.push(node);
        }
        let init = cluster.nodes[0]
            .init(common::shamir_params(1, 1))
            .await
            .unwrap();
        cluster.root.clone_from(&init.root_token);
        cluster.keys.clone_from(&init.keys);
        for node in &cluster.nodes {
            node.unseal(&init.keys[0]).await.unwrap();
        }
        cluster
    }

    async fn build(&self, i: usize) -> Core {
        let contender: Arc<dyn HaBackend> = Arc::new(self.ha.contender(Duration::from_millis(500)));
        let builder = Core::builder()
            .storage(self.storage.clone())
            .ha(contender)
            .options(options(i));
        let builder = match &self.seal {
            Some(seal) => builder.auto_seal(seal.clone()),
            None => builder.shamir(),
        };
        builder.build().await.unwrap()
    }

    /// Waits until exactly one node is active and serving, and every other
    /// unsealed node is its standby; returns the active node's index.
    /// Asserts at every look that no two nodes are active at once.
    async fn one_active(&self) -> usize {
        self.one_active_except(None).await
    }

    async fn one_active_except(&self, not: Option<usize>) -> usize {
        wait::until(
            "exactly one node active, the others its standbys",
            DEADLINE,
            || async {
                let active: Vec<usize> = (0..self.nodes.len())
                    .filter(|i| self.nodes[*i].node_state().mode == HaMode::Active)
                    .collect();
                assert!(active.len() <= 1, "two active nodes at once: {active:?}");
                match active.as_slice() {
                    [leader]
                        if Some(*leader) != not
                            && self.nodes[*leader].logical().is_ok()
                            && self.standbys_follow(*leader) =>
                    {
                        Ok(*leader)
                    }
                    _ => Err(format!(
                        "{:?}",
                        self.nodes.iter().map(Core::node_state).collect::<Vec<_>>()
                    )),
                }
            },
        )
        .await
    }

    fn standbys_follow(&self, leader: usize) -> bool {
        let address = format!("http://node{leader}:8200");
        self.nodes.iter().enumerate().all(|(i, node)| {
            i == leader
                || node.is_sealed()
                || matches!(node.node_state().mode,
                    HaMode::Standby { leader: Some(l) } if l.api_addr == address)
        })
    }

    async fn write(&self, node: usize, path: &str, data: Value) -> Result<(), CoreError> {
        let req = LogicalRequest::new(Operation::Update, path)
            .with_token(self.root.clone())
            .with_data(json!({ "data": data }));
        self.nodes[node].handle(req).await.map(|_| ())
    }

    async fn read(&self, node: usize, path: &str) -> Value {
        let req = LogicalRequest::new(Operation::Read, path).with_token(self.root.clone());
        let response = self.nodes[node].handle(req).await.unwrap();
        response.data.unwrap()["data"].clone()
    }

    async fn mount_kv2(&self, node: usize, path: &str) {
        let req = LogicalRequest::new(Operation::Update, format!("sys/mounts/{path}"))
            .with_token(self.root.clone())
            .with_data(json!({"type": "kv", "options": {"version": "2"}}));
        self.nodes[node].handle(req).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_one_of_three_is_active_and_standbys_know_it() {
    let c = Cluster::auto(3).await;
    let leader = c.one_active().await;
    let me = &c.nodes[leader];
    let status = me.leader().await.unwrap();
    assert!(status.ha_enabled && status.is_self);
    assert_eq!(status.leader_address, format!("http://node{leader}:8200"));
    assert_eq!(
        status.leader_cluster_address,
        format!("https://node{leader}:8201")
    );
    assert!(status.active_time.is_some());
    assert!(!status.performance_standby);
    assert!(!me.health().await.standby);
    for (i, node) in c.nodes.iter().enumerate().filter(|(i, _)| *i != leader) {
        let status = node.leader().await.unwrap();
        assert!(status.ha_enabled && !status.is_self, "node {i}");
        assert_eq!(status.leader_address, format!("http://node{leader}:8200"));
        assert!(status.active_time.is_none());
        let health = node.health().await;
        assert!(health.standby && !health.sealed && health.initialized);
        // Requests belong to the active node: the error names it.
        let req = LogicalRequest::new(Operation::Read, "sys/mounts").with_token(c.root.clone());
        match node.handle(req).await {
            Err(CoreError::Standby {
                leader_address: Some(addr),
            }) => assert_eq!(addr, format!("http://node{leader}:8200")),
            other => panic!("node {i}: {other:?}"),
        }
        assert!(matches!(node.logical(), Err(CoreError::Standby { .. })));
        // A standby cannot be sealed (Vault: restart it instead).
        let err = node.seal(&c.root).await.unwrap_err();
        assert!(matches!(err, CoreError::CannotSealStandby), "{err}");
        assert!(!node.is_sealed());
    }
    // The lock's value is the advertisement.
    let holder = c.ha.holder(KEY).await.unwrap().unwrap();
    let ad: Value = serde_json::from_slice(&holder).unwrap();
    assert_eq!(ad["api_addr"], format!("http://node{leader}:8200"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_lock_stops_writes_at_once_and_another_node_takes_over() {
    let c = Cluster::auto(2).await;
    c.mount_kv2(c.one_active().await, "kv").await;
    let old = c.one_active().await;
    c.write(old, "kv/data/before", json!({"v": 1}))
        .await
        .unwrap();
    // A request that already holds the old logical layer.
    let in_flight = c.nodes[old].logical().unwrap();
    c.ha.insecure_break_lock(KEY);
    // The old node refuses everything from the moment it knows.
    let put = LogicalRequest::new(Operation::Update, "kv/data/after-loss")
        .with_token(c.root.clone())
        .with_data(json!({"data": {"v": 2}}));
    // Until the node notices the loss, the write may still succeed.
    let err = wait::until("the old active node refuses writes", DEADLINE, || async {
        in_flight.handle(put.clone()).await.err()
    })
    .await;
    assert!(
        err.to_string().contains("no longer the active node"),
        "{err}"
    );
    // Someone is active again (either node: the lock was free), in a new
    // period with a fresh logical layer, and the data is there.
    let now = c.one_active().await;
    assert_eq!(c.read(now, "kv/data/before").await, json!({"v": 1}));
    c.write(now, "kv/data/after", json!({"v": 3}))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_lost_the_lock_answers_standby_without_a_known_leader() {
    let c = Cluster::auto(2).await;
    let old = c.one_active().await;
    c.mount_kv2(old, "kv").await;
    // Hold the lock elsewhere once it is broken, so the old node stays
    // standby.
    let thief = wait::until("another holder has the lock", DEADLINE, || async {
        c.ha.insecure_break_lock(KEY);
        c.ha.try_lock(KEY, b"{}").await.unwrap()
    })
    .await;
    wait::until("no node is active", DEADLINE, || async {
        let states: Vec<_> = c.nodes.iter().map(Core::node_state).collect();
        if states.iter().any(|s| s.mode == HaMode::Active) {
            Err(format!("{states:?}"))
        } else {
            Ok(())
        }
    })
    .await;
    let err = c
        .write(old, "kv/data/x", json!({"v": 1}))
        .await
        .unwrap_err();
    // No active node is known (the thief advertised nothing useful).
    assert!(matches!(err, CoreError::Standby { .. }), "{err}");
    assert_eq!(err.status(), 503);
    drop(thief);
    c.one_active().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn step_down_hands_over_and_the_old_active_becomes_a_standby() {
    let c = Cluster::auto(3).await;
    let old = c.one_active().await;
    // Only a sudo token may step down.
    let err = c.nodes[old].step_down("not-a-token").await.unwrap_err();
    assert!(matches!(err, CoreError::PermissionDenied), "{err}");
    c.nodes[old].step_down(&c.root).await.unwrap();
    let new = c.one_active_except(Some(old)).await;
    assert_ne!(new, old);
    // The grace is a minute: the old node is standby because another node
    // took the lock, and it stays a standby of the new one.
    assert!(matches!(
        c.nodes[old].node_state().mode,
        HaMode::Standby { leader: Some(l) } if l.api_addr == format!("http://node{new}:8200")
    ));
    assert!(!c.nodes[old].is_sealed(), "the barrier stays unsealed");
    // A standby's step-down belongs to the active node.
    let err = c.nodes[old].step_down(&c.root).await.unwrap_err();
    assert!(matches!(err, CoreError::Standby { .. }), "{err}");
}

/// Vault's `vault.core.leadership_setup_failed`: a node that takes the
/// lock but cannot load what the active node serves counts the failure
/// and gives the lock up instead of serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_promotion_is_counted_and_the_lock_given_up() {
    let c = Cluster::shamir(2).await;
    let old = c.one_active().await;
    let next = 1 - old;
    assert_eq!(c.nodes[next].metrics().await.leadership_setup_failures, 0);
    // Garbage where the keyring lives: the next node to be promoted cannot
    // reload it (the active node keeps its copy in memory).
    c.storage
        .put("core/keyring", b"not a keyring")
        .await
        .unwrap();
    c.nodes[old].step_down(&c.root).await.unwrap();
    let metrics = wait::until("a failed promotion is counted", DEADLINE, || async {
        let metrics = c.nodes[next].metrics().await;
        if metrics.leadership_setup_failures >= 1 {
            Ok(metrics)
        } else {
            Err(format!("{:?}", c.nodes[next].node_state()))
        }
    })
    .await;
    assert!(metrics.leadership_setup_failed_time > Duration::ZERO);
    assert!(c.nodes[next].logical().is_err(), "it never served");
    assert_eq!(c.nodes[old].metrics().await.leadership_setup_failures, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promotion_loads_mounts_tokens_and_data_written_by_the_previous_active() {
    let c = Cluster::auto(2).await;
    let first = c.one_active().await;
    c.mount_kv2(first, "app").await;
    c.write(first, "app/data/db", json!({"password": "s3cret"}))
        .await
        .unwrap();
    // A token made on the first active node works on the next one.
    let created = c.nodes[first]
        .handle(
            LogicalRequest::new(Operation::Update, "auth/token/create")
                .with_token(c.root.clone())
                .with_data(json!({"policies": ["root"]})),
        )
        .await
        .unwrap();
    let child = created.auth.unwrap()["client_token"]
        .as_str()
        .unwrap()
        .to_owned();
    c.nodes[first].step_down(&c.root).await.unwrap();
    let second = c.one_active_except(Some(first)).await;
    assert_eq!(
        c.read(second, "app/data/db").await,
        json!({"password": "s3cret"})
    );
    let lookup = c.nodes[second]
        .handle(LogicalRequest::new(Operation::Read, "auth/token/lookup-self").with_token(child))
        .await
        .unwrap();
    assert!(lookup.data.is_some());
    // A mount added by the second active node is seen by the first once it
    // is promoted again: never a stale mount table.
    c.mount_kv2(second, "later").await;
    c.write(second, "later/data/x", json!({"n": 1}))
        .await
        .unwrap();
    c.nodes[second].step_down(&c.root).await.unwrap();
    let third = c.one_active_except(Some(second)).await;
    assert_eq!(third, first);
    assert_eq!(c.read(third, "later/data/x").await, json!({"n": 1}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_promoted_after_a_rotation_reads_old_and_new_terms() {
    let c = Cluster::auto(2).await;
    let first = c.one_active().await;
    c.mount_kv2(first, "kv").await;
    c.write(first, "kv/data/old", json!({"term": 1}))
        .await
        .unwrap();
    let term = c.nodes[first].rotate(&c.root).await.unwrap();
    assert_eq!(term, 2);
    c.write(first, "kv/data/new", json!({"term": 2}))
        .await
        .unwrap();
    // The raw entries really are under different terms.
    let mut terms = std::collections::BTreeSet::new();
    for path in c.storage.list("logical/").await.unwrap() {
        collect_terms(&c.storage, &format!("logical/{path}"), &mut terms).await;
    }
    assert!(terms.contains(&1) && terms.contains(&2), "{terms:?}");
    c.nodes[first].step_down(&c.root).await.unwrap();
    let second = c.one_active_except(Some(first)).await;
    assert_eq!(c.read(second, "kv/data/old").await, json!({"term": 1}));
    assert_eq!(c.read(second, "kv/data/new").await, json!({"term": 2}));
    // It writes under the new term too.
    assert_eq!(c.nodes[second].key_status(&c.root).await.unwrap().term, 2);
    c.write(second, "kv/data/third", json!({"by": "second"}))
        .await
        .unwrap();
}

async fn collect_terms(
    storage: &MemoryStorage,
    prefix: &str,
    terms: &mut std::collections::BTreeSet<u32>,
) {
    let mut pending = vec![prefix.to_owned()];
    while let Some(folder) = pending.pop() {
        for child in storage.list(&folder).await.unwrap() {
            let path = format!("{folder}{child}");
            if child.ends_with('/') {
                pending.push(path);
            } else if let Some(raw) = storage.get(&path).await.unwrap() {
                terms.insert(barrier::cipher::entry_term(&raw).unwrap());
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_follows_a_shamir_rekey_made_by_the_active() {
    let c = Cluster::shamir(2).await;
    let first = c.one_active().await;
    c.mount_kv2(first, "kv").await;
    c.write(first, "kv/data/k", json!({"v": "before rekey"}))
        .await
        .unwrap();
    let keys = rekey(&c.nodes[first], &c.keys[0]).await;
    c.nodes[first].step_down(&c.root).await.unwrap();
    let second = c.one_active_except(Some(first)).await;
    // Promoted after the rekey: it loads the new root key from storage.
    assert_eq!(
        c.read(second, "kv/data/k").await,
        json!({"v": "before rekey"})
    );
    // And it can rekey again with the keys of the first rekey.
    let newest = rekey(&c.nodes[second], &keys[0]).await;
    c.write(second, "kv/data/k2", json!({"v": "after"}))
        .await
        .unwrap();
    // Every node unseals with the newest keys after a restart.
    for node in [first, second] {
        let restarted = c.build(node + 10).await;
        restarted.unseal(&newest[0]).await.unwrap();
        assert!(!restarted.is_sealed());
        restarted.shutdown().await;
    }
}

async fn rekey(core: &Core, current: &str) -> Vec<String> {
    let status = core
        .rekey_init(common::rekey_params(1, 1), false)
        .await
        .unwrap();
    let done = core
        .rekey_update(current, &status.nonce, false)
        .await
        .unwrap();
    assert!(done.complete);
    done.keys.clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sealing_the_active_releases_the_lock_to_a_standby() {
    let c = Cluster::auto(2).await;
    let old = c.one_active().await;
    c.nodes[old].seal(&c.root).await.unwrap();
    assert!(c.nodes[old].is_sealed());
    assert!(matches!(
        c.nodes[old].leader().await.unwrap_err(),
        CoreError::Sealed
    ));
    let new = c.one_active().await;
    assert_ne!(new, old);
    let state = c.nodes[old].node_state();
    assert!(state.sealed);
    assert_eq!(state.mode, HaMode::Standby { leader: None });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_releases_the_lock_and_the_state_is_published() {
    let c = Cluster::auto(2).await;
    let old = c.one_active().await;
    let other = 1 - old;
    let mut watched = c.nodes[other].watch_node_state();
    c.nodes[old].shutdown().await;
    assert!(c.nodes[old].is_sealed());
    let became_active = tokio::time::timeout(
        DEADLINE,
        watched.wait_for(|s| s.mode == HaMode::Active && !s.sealed),
    )
    .await;
    assert!(became_active.is_ok(), "{:?}", c.nodes[other].node_state());
    c.mount_kv2(other, "kv").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shamir_node_contends_only_once_unsealed() {
    let c = Cluster::shamir(1).await;
    let leader = c.one_active().await;
    let late = c.build(5).await;
    assert!(late.is_sealed());
    assert_eq!(late.node_state().mode, HaMode::Standby { leader: None });
    assert!(matches!(
        late.leader().await.unwrap_err(),
        CoreError::Sealed
    ));
    c.nodes[leader].step_down(&c.root).await.unwrap();
    // Nobody else contends: the lone unsealed node takes the lock back
    // only after the grace (60 s here), and the sealed one never does.
    assert!(late.node_state().mode != HaMode::Active);
    late.unseal(&c.keys[0]).await.unwrap();
    wait::until("the late node is active", DEADLINE, || async {
        let state = late.node_state();
        if state.mode == HaMode::Active {
            Ok(())
        } else {
            Err(format!("{state:?}"))
        }
    })
    .await;
    assert!(late.leader().await.unwrap().is_self);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_active_node_lists_the_standbys_that_echo_to_it() {
    let c = Cluster::auto(3).await;
    let leader = c.one_active().await;
    let active = &c.nodes[leader];
    // Before any echo: the active node alone.
    let alone = active.ha_status(&c.root).await.unwrap();
    assert_eq!(alone.nodes.len(), 1);
    assert!(alone.nodes[0].active_node && alone.nodes[0].last_echo.is_none());
    assert_eq!(
        alone.nodes[0].api_address,
        format!("http://node{leader}:8200")
    );

    let mut standbys = Vec::new();
    for (i, node) in c.nodes.iter().enumerate().filter(|(i, _)| *i != leader) {
        let echo = node.ha_echo(Duration::from_millis(3)).unwrap();
        active.receive_ha_echo(&echo).unwrap();
        assert!(
            matches!(active.receive_ha_echo(&echo), Err(CoreError::InvalidRequest(m)) if m.contains("not newer")),
            "a replayed echo is refused"
        );
        // Echoes and the cluster view belong to the active node.
        assert!(matches!(
            node.receive_ha_echo(&echo),
            Err(CoreError::Standby { .. })
        ));
        assert!(matches!(
            node.ha_status(&c.root).await,
            Err(CoreError::Standby { .. })
        ));
        standbys.push(format!("http://node{i}:8200"));
    }
    let status = active.ha_status(&c.root).await.unwrap();
    assert_eq!(status.nodes.len(), 3, "{status:?}");
    assert!(status.nodes[0].active_node);
    let listed: Vec<_> = status.nodes[1..]
        .iter()
        .map(|n| n.api_address.clone())
        .collect();
    assert_eq!(listed, standbys);
    for node in &status.nodes[1..] {
        assert!(!node.active_node && node.last_echo.is_some() && node.echo_duration_ms == 3);
        assert!(node.cluster_address.starts_with("https://node"));
        assert_eq!(node.version, strongroom::VERSION);
    }
    let body = serde_json::to_value(&status).unwrap();
    for key in [
        "hostname",
        "api_address",
        "cluster_address",
        "active_node",
        "last_echo",
        "version",
    ] {
        assert!(body["nodes"][0].get(key).is_some(), "{key} missing: {body}");
    }
    assert!(body["nodes"][0]["last_echo"].is_null());

    // Only the cluster's keyring makes an echo: tampered bytes, garbage,
    // and another cluster's echo are refused.
    let other = (0..3).find(|i| *i != leader).unwrap();
    let mut tampered = c.nodes[other].ha_echo(Duration::ZERO).unwrap();
    let last = tampered.len() - 1;
    tampered[last] ^= 1;
    assert!(matches!(
        active.receive_ha_echo(&tampered),
        Err(CoreError::InvalidRequest(_))
    ));
    assert!(matches!(
        active.receive_ha_echo(b"hello"),
        Err(CoreError::InvalidRequest(_))
    ));
    let stranger = Cluster::auto(2).await;
    let stranger_leader = stranger.one_active().await;
    let outsider = stranger.nodes[1 - stranger_leader]
        .ha_echo(Duration::ZERO)
        .unwrap();
    assert!(matches!(
        active.receive_ha_echo(&outsider),
        Err(CoreError::InvalidRequest(_))
    ));
    assert_eq!(active.ha_status(&c.root).await.unwrap().nodes.len(), 3);

    // A token is needed.
    assert!(matches!(
        active.ha_status("").await,
        Err(CoreError::PermissionDenied)
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_active_node_lists_only_what_it_heard_since_it_took_over() {
    let c = Cluster::auto(3).await;
    let leader = c.one_active().await;
    for (_, node) in c.nodes.iter().enumerate().filter(|(i, _)| *i != leader) {
        c.nodes[leader]
            .receive_ha_echo(&node.ha_echo(Duration::ZERO).unwrap())
            .unwrap();
    }
    c.nodes[leader].step_down(&c.root).await.unwrap();
    let next = c.one_active_except(Some(leader)).await;
    let status = c.nodes[next].ha_status(&c.root).await.unwrap();
    assert_eq!(status.nodes.len(), 1, "nothing heard yet: {status:?}");
    c.nodes[next]
        .receive_ha_echo(&c.nodes[leader].ha_echo(Duration::ZERO).unwrap())
        .unwrap();
    let status = c.nodes[next].ha_status(&c.root).await.unwrap();
    assert_eq!(status.nodes.len(), 2);
    assert_eq!(
        status.nodes[1].api_address,
        format!("http://node{leader}:8200")
    );
}
