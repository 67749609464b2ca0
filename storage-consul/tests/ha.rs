//! The Consul HA backend against a real Consul dev agent (started with
//! `session_ttl_min = "1s"` by the harness): the HA conformance suite,
//! fencing, loss by failed renewal, the ready session, the request lanes,
//! and dead-leader detection.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use seal_core::testing::HaHarness;
use seal_core::{HaBackend, HaLock, Storage};
use storage_consul::{
    ConsulConfig, ConsulError, ConsulHaBackend, ConsulStorage, LOCK_FLAGS, SESSION_NAME,
};
use testkit::consul::{PrefixGuard, raw_request, shared_dev, unique_path};
use tokio::time::Instant;

use common::consul_source;
use testkit::proxy::GateProxy;
use testkit::wait::until;

const KEY: &str = "core/lock";
const DEADLINE: Duration = Duration::from_secs(45);

/// Contenders on one key prefix of the shared dev agent: each its own
/// `ConsulStorage` (own connection pool), as separate nodes would be.
struct ConsulHa {
    path: String,
    contenders: std::sync::Mutex<Vec<ConsulHaBackend>>,
}

fn config(path: &str, tweak: impl FnOnce(&mut ConsulConfig)) -> ConsulConfig {
    let mut config = shared_dev().config();
    config.path = path.to_owned();
    config.session_ttl = Duration::from_secs(10);
    config.lock_delay = Duration::from_millis(500);
    config.lock_wait_time = Duration::from_secs(2);
    // The advertisements of these tests name addresses where nothing of
    // theirs listens; the dead-leader tests turn detection back on.
    config.dead_leader.enabled = false;
    tweak(&mut config);
    config
}

fn contender(config: ConsulConfig) -> (ConsulStorage, ConsulHaBackend) {
    let storage = ConsulStorage::new(config).unwrap();
    let ha = ConsulHaBackend::new(&storage);
    (storage, ha)
}

/// Destroys a session as its expiry would (the lock-delay starts).
async fn destroy_session(id: &str) {
    let http = shared_dev().http_address();
    let path = format!("/v1/session/destroy/{id}");
    let r = tokio::task::spawn_blocking(move || raw_request(&http, "PUT", &path, None, b""))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
}

async fn raw(method: &'static str, path: String, body: &'static [u8]) -> serde_json::Value {
    let http = shared_dev().http_address();
    let r = tokio::task::spawn_blocking(move || raw_request(&http, method, &path, None, body))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(r.status, 200, "{method}: {}", r.text());
    serde_json::from_slice(&r.body).unwrap()
}

#[async_trait]
impl HaHarness for ConsulHa {
    async fn contender(&self, wait: Duration) -> Arc<dyn HaBackend> {
        let ha = contender(config(&self.path, |c| c.lock_wait_time = wait)).1;
        self.contenders.lock().unwrap().push(ha.clone());
        Arc::new(ha)
    }

    async fn break_lock(&self, _key: &str, lock: &dyn HaLock) {
        destroy_session(&lock.fencing_token().unwrap()).await;
    }

    fn waiting(&self) -> usize {
        self.contenders
            .lock()
            .unwrap()
            .iter()
            .map(ConsulHaBackend::waiting)
            .sum()
    }
}

async fn consul_ha() -> (Arc<dyn HaHarness>, PrefixGuard) {
    let dev = shared_dev();
    let path = unique_path();
    let guard = PrefixGuard::new(dev.http_address(), path.clone(), None);
    let harness = ConsulHa {
        path,
        contenders: std::sync::Mutex::new(Vec::new()),
    };
    (Arc::new(harness), guard)
}

seal_core::ha_suite!(consul_ha);

async fn lock_within_deadline(ha: &ConsulHaBackend, value: &[u8]) -> Box<dyn HaLock> {
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Some(lock) = ha.try_lock(KEY, value).await.unwrap() {
            return lock;
        }
        assert!(Instant::now() < deadline, "no lock within {DEADLINE:?}");
    }
}

async fn until_lost(lock: &dyn HaLock, what: &str) {
    tokio::time::timeout(DEADLINE, lock.lost().cancelled())
        .await
        .unwrap_or_else(|_| panic!("{what}: not reported lost within {DEADLINE:?}"));
}

/// The library-level fencing scenario: A holds the lock and has a write in
/// flight (held at a proxy), A's watch and renewals are stuck; A's session
/// is destroyed as an expiry would; B takes over and writes. A's next write
/// is refused as fenced and marks A's lock lost at once; A's in-flight write
/// is refused too; nothing of A's lands; B's data is intact. When A wins the
/// lock again later, the fence moves to its new session and it writes again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deposed_holder_cannot_write() {
    let dev = shared_dev();
    let path = unique_path();
    let _guard = PrefixGuard::new(dev.http_address(), path.clone(), None);
    let gate = GateProxy::start(
        dev.http_address(),
        vec!["inflight", "index=", "session/renew"],
    )
    .await;
    let (storage_a, ha_a) = contender(config(&path, |c| c.address = gate.address.clone()));
    let (storage_b, ha_b) = contender(config(&path, |_| {}));

    let lock_a = ha_a
        .try_lock(KEY, b"node-a")
        .await
        .unwrap()
        .expect("A wins");
    assert_eq!(storage_a.write_fence_session(), lock_a.fencing_token());
    storage_a.put("before", b"from A").await.unwrap();

    let in_flight = {
        let s = storage_a.clone();
        tokio::spawn(async move { s.put("inflight", b"from A, late").await })
    };
    until("A's write is held at the proxy", DEADLINE, || async {
        gate.held("inflight") > 0
    })
    .await;

    destroy_session(&lock_a.fencing_token().unwrap()).await;
    let lock_b = lock_within_deadline(&ha_b, b"node-b").await;
    storage_b.put("b/1", b"from B").await.unwrap();

    let err = storage_a.put("later", b"from A").await.unwrap_err();
    assert!(err.is_fenced(), "{err:?}");
    assert!(
        matches!(consul_source(&err), Some(ConsulError::Fenced { .. })),
        "{err:?}"
    );
    assert!(
        lock_a.lost().is_cancelled(),
        "a refused fenced write marks the lock lost at once"
    );

    gate.open();
    let err = in_flight.await.unwrap().unwrap_err();
    assert!(err.is_fenced(), "in-flight write: {err:?}");
    for err in [
        storage_a.delete("b/1").await.unwrap_err(),
        storage_a
            .transaction(vec![seal_core::TxnOp::put("t", b"x".to_vec())])
            .await
            .unwrap_err(),
    ] {
        assert!(err.is_fenced(), "{err:?}");
    }
    assert_eq!(storage_b.get("inflight").await.unwrap(), None);
    assert_eq!(storage_b.get("later").await.unwrap(), None);
    assert_eq!(storage_b.get("t").await.unwrap(), None);
    assert_eq!(
        storage_b.get("b/1").await.unwrap().as_deref(),
        Some(&b"from B"[..])
    );
    assert_eq!(
        storage_b.get("before").await.unwrap().as_deref(),
        Some(&b"from A"[..])
    );
    assert_eq!(
        ha_a.holder(KEY).await.unwrap().as_deref(),
        Some(&b"node-b"[..])
    );
    // The deposed holder's release does not disturb B.
    let _ = lock_a.release().await;
    assert!(!lock_b.lost().is_cancelled());

    lock_b.release().await.unwrap();
    let lock_a2 = lock_within_deadline(&ha_a, b"node-a").await;
    assert_eq!(storage_a.write_fence_session(), lock_a2.fencing_token());
    storage_a.put("after", b"from A again").await.unwrap();
    lock_a2.release().await.unwrap();
}

/// Renewals that fail for longer than the TTL make the holder give the
/// lock up by itself, before Consul reaps the session (at twice the TTL);
/// another contender then takes over once Consul has.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_renewals_lose_the_lock() {
    let dev = shared_dev();
    let path = unique_path();
    let _guard = PrefixGuard::new(dev.http_address(), path.clone(), None);
    let gate = GateProxy::start(dev.http_address(), vec!["session/renew", "index="]).await;
    let short = |c: &mut ConsulConfig| {
        c.session_ttl = Duration::from_secs(1);
        c.lock_delay = Duration::from_millis(200);
    };
    let (storage_a, ha_a) = contender(config(&path, |c| {
        short(c);
        c.address = gate.address.clone();
    }));
    let (_storage_b, ha_b) = contender(config(&path, short));
    let lock_a = ha_a.try_lock(KEY, b"a").await.unwrap().expect("A wins");
    let started = Instant::now();
    until_lost(lock_a.as_ref(), "A with stuck renewals").await;
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "lost after {:?}, before its TTL ran out without renewal",
        started.elapsed()
    );
    let _b = lock_within_deadline(&ha_b, b"b").await;
    let err = storage_a.put("x", b"1").await.unwrap_err();
    assert!(err.is_fenced(), "{err:?}");
    gate.open();
}

/// A standby keeps its session between attempts, so when the lock comes
/// free it takes it with the session it already had; the session carries
/// the configured TTL, lock-delay, `release` behaviour and no node checks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standby_keeps_a_ready_session() {
    let dev = shared_dev();
    let path = unique_path();
    let _guard = PrefixGuard::new(dev.http_address(), path.clone(), None);
    let (_sa, ha_a) = contender(config(&path, |_| {}));
    let (_sb, ha_b) = contender(config(&path, |c| {
        c.lock_wait_time = Duration::from_millis(200);
        c.session_ttl = Duration::from_secs(30);
        c.lock_delay = Duration::from_millis(1500);
    }));
    let lock_a = ha_a.try_lock(KEY, b"a").await.unwrap().expect("A wins");
    assert!(ha_b.try_lock(KEY, b"b").await.unwrap().is_none());
    // A raft index after B's session was created.
    let marker = format!("/v1/kv/{path}marker");
    raw("PUT", marker.clone(), b"m").await;
    let index = raw("GET", marker, b"").await[0]["ModifyIndex"]
        .as_u64()
        .unwrap();

    lock_a.release().await.unwrap();
    let lock_b = ha_b.try_lock(KEY, b"b").await.unwrap().expect("B wins");
    let id = lock_b.fencing_token().unwrap();
    let info = raw("GET", format!("/v1/session/info/{id}"), b"").await;
    let info = &info[0];
    assert!(
        info["CreateIndex"].as_u64().unwrap() < index,
        "B took the lock with a session created after the release: {info}"
    );
    assert_eq!(info["Name"], SESSION_NAME);
    assert_eq!(info["Behavior"], "release");
    assert_eq!(info["LockDelay"], 1_500_000_000u64);
    assert_eq!(
        storage_consul::parse_duration(info["TTL"].as_str().unwrap()),
        Some(Duration::from_secs(30))
    );
    let checks = |field: &str| info[field].as_array().map_or(0, Vec::len);
    assert_eq!(checks("NodeChecks") + checks("Checks"), 0, "{info}");
    lock_b.release().await.unwrap();
    let gone = raw("GET", format!("/v1/session/info/{id}"), b"").await;
    assert!(
        gone.as_array().is_none_or(Vec::is_empty),
        "released session still exists: {gone}"
    );
}

/// With `max_parallel = 1`, a standby parked in a blocking query on the
/// lock does not hold the only storage permit: storage requests go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocking_queries_take_no_storage_permit() {
    let dev = shared_dev();
    let path = unique_path();
    let _guard = PrefixGuard::new(dev.http_address(), path.clone(), None);
    let (_sa, ha_a) = contender(config(&path, |_| {}));
    let (storage_b, ha_b) = contender(config(&path, |c| {
        c.max_parallel = 1;
        c.lock_wait_time = Duration::from_secs(60);
    }));
    let lock_a = ha_a.try_lock(KEY, b"a").await.unwrap().expect("A wins");
    let waiter = {
        let ha_b = ha_b.clone();
        tokio::spawn(async move { ha_b.try_lock(KEY, b"b").await.unwrap().is_some() })
    };
    until("B waits on the lock", DEADLINE, || async {
        ha_b.waiting() > 0
    })
    .await;
    assert!(storage_b.request_stats().ha_in_flight > 0);
    storage_b.reset_peak_in_flight();
    for i in 0..20 {
        storage_b.put(&format!("k{i}"), b"v").await.unwrap();
        assert_eq!(
            storage_b.get(&format!("k{i}")).await.unwrap().unwrap(),
            b"v"
        );
    }
    let stats = storage_b.request_stats();
    assert!(stats.peak_in_flight <= 1, "{stats:?}");
    assert!(!waiter.is_finished(), "B still waits for the lock");
    lock_a.release().await.unwrap();
    assert!(waiter.await.unwrap(), "B wins once A releases");
}

/// Someone deleting the lock key (`consul kv delete`) takes the lock away:
/// the holder reports it lost and its writes are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_lock_key_is_lost() {
    let dev = shared_dev();
    let path = unique_path();
    let _guard = PrefixGuard::new(dev.http_address(), path.clone(), None);
    let (storage, ha) = contender(config(&path, |_| {}));
    let lock = ha.try_lock(KEY, b"a").await.unwrap().expect("A wins");
    raw("DELETE", format!("/v1/kv/{path}{KEY}"), b"").await;
    until_lost(lock.as_ref(), "holder of a deleted key").await;
    let err = storage.put("x", b"1").await.unwrap_err();
    assert!(err.is_fenced(), "{err:?}");
    assert_eq!(ha.holder(KEY).await.unwrap(), None);
}

/// A standby whose ready session was invalidated (destroyed behind its
/// back, as a Consul restore or an operator would) notices at its next
/// acquire and takes the lock with a fresh session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standby_replaces_an_invalidated_ready_session() {
    let dev = tokio::task::spawn_blocking(testkit::ConsulDev::start)
        .await
        .unwrap();
    let http = dev.http_address();
    let list = |http: String| async move {
        let r = tokio::task::spawn_blocking(move || {
            raw_request(&http, "GET", "/v1/session/list", None, b"")
        })
        .await
        .unwrap()
        .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        v.as_array()
            .unwrap()
            .iter()
            .map(|s| s["ID"].as_str().unwrap().to_owned())
            .collect::<Vec<_>>()
    };
    let mk = |wait: Duration| {
        let mut c = dev.config();
        c.path = "replace/".to_owned();
        c.session_ttl = Duration::from_secs(30);
        c.lock_wait_time = wait;
        contender(c).1
    };
    let a = mk(Duration::from_millis(200));
    let b = mk(Duration::from_millis(200));
    let lock_a = a.try_lock(KEY, b"a").await.unwrap().expect("A wins");
    assert!(b.try_lock(KEY, b"b").await.unwrap().is_none());
    let a_session = lock_a.fencing_token().unwrap();
    let ready: Vec<String> = list(http.clone())
        .await
        .into_iter()
        .filter(|id| *id != a_session)
        .collect();
    assert_eq!(
        ready.len(),
        1,
        "B keeps exactly one ready session: {ready:?}"
    );
    let path = format!("/v1/session/destroy/{}", ready[0]);
    let h = http.clone();
    tokio::task::spawn_blocking(move || raw_request(&h, "PUT", &path, None, b""))
        .await
        .unwrap()
        .unwrap();
    lock_a.release().await.unwrap();
    let lock_b = b.try_lock(KEY, b"b").await.unwrap().expect("B wins");
    let b_session = lock_b.fencing_token().unwrap();
    assert_ne!(b_session, ready[0]);
    assert_eq!(list(http).await, [b_session]);
}

/// The lock key carries Consul's lock marker in its `Flags` while held and
/// after release, as Vault's Consul lock writes it: a Vault started again on
/// the prefix (after a read-only takeover) contends for it instead of
/// refusing a key "that does not match lock use". A key Vault left behind
/// (its flags, its leader id as value, no session) is taken as it is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_key_carries_consuls_lock_flags() {
    let dev = shared_dev();
    let path = unique_path();
    let _guard = PrefixGuard::new(dev.http_address(), path.clone(), None);
    let url = format!("/v1/kv/{path}{KEY}");
    // As a Vault 1.x node leaves it after a graceful stop.
    raw(
        "PUT",
        format!("{url}?flags={LOCK_FLAGS}"),
        b"6f1d1a5e-vault-leader",
    )
    .await;
    let (_storage, ha) = contender(config(&path, |_| {}));
    let lock = ha.try_lock(KEY, b"a").await.unwrap().expect("A wins");
    let held = raw("GET", url.clone(), b"").await;
    assert_eq!(held[0]["Flags"], LOCK_FLAGS, "{held}");
    assert_eq!(
        held[0]["Session"].as_str(),
        lock.fencing_token().as_deref(),
        "{held}"
    );
    lock.release().await.unwrap();
    let released = raw("GET", url, b"").await;
    assert_eq!(released[0]["Flags"], LOCK_FLAGS, "{released}");
    assert!(released[0]["Session"].is_null(), "{released}");
}

/// Dead-leader detection with a session TTL far beyond the test's deadline
/// and fast probes.
fn detecting(path: &str) -> ConsulConfig {
    config(path, |c| {
        c.session_ttl = Duration::from_secs(120);
        c.dead_leader.enabled = true;
        c.dead_leader.probe_interval = Duration::from_millis(50);
        c.dead_leader.probe_window = Duration::from_millis(200);
    })
}

fn advertisement(api_addr: &str, node_id: &str) -> Vec<u8> {
    serde_json::json!({"api_addr": api_addr, "node_id": node_id})
        .to_string()
        .into_bytes()
}

/// The holder of a process that is gone: a session nobody renews (TTL
/// 120 s) holding the lock with `value`, made through the HTTP API.
async fn orphaned_lock(path: &str, value: Vec<u8>) -> String {
    let http = shared_dev().http_address();
    let lock = format!("/v1/kv/{path}{KEY}");
    tokio::task::spawn_blocking(move || {
        let body = br#"{"TTL":"120s","LockDelay":"500ms","Behavior":"release","NodeChecks":[]}"#;
        let created = raw_request(&http, "PUT", "/v1/session/create", None, body).unwrap();
        assert_eq!(created.status, 200, "{}", created.text());
        let created: serde_json::Value = serde_json::from_slice(&created.body).unwrap();
        let id = created["ID"].as_str().unwrap().to_owned();
        let acquire = format!("{lock}?acquire={id}&flags={LOCK_FLAGS}");
        let taken = raw_request(&http, "PUT", &acquire, None, &value).unwrap();
        assert_eq!(taken.text().trim(), "true");
        id
    })
    .await
    .unwrap()
}

/// Whether Consul still knows session `id`.
async fn session_exists(id: &str) -> bool {
    let info = raw("GET", format!("/v1/session/info/{id}"), b"").await;
    info.as_array().is_some_and(|a| !a.is_empty())
}

/// The holder's advertised address answers, then refuses connections (its
/// listener is gone, the reserved port stays free): a standby destroys its
/// session and takes the lock long before the 120 s TTL could have run out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_holder_whose_address_refuses_connections_is_deposed() {
    let path = unique_path();
    let _guard = PrefixGuard::new(shared_dev().http_address(), path.clone(), None);
    let (listener, port) = testkit::ports::listen_tokio();
    let dead = orphaned_lock(
        &path,
        advertisement(&format!("http://{}", port.addr()), "old"),
    )
    .await;
    let (_storage, ha) = contender(detecting(&path));
    let standby = tokio::spawn(async move {
        lock_within_deadline(&ha, &advertisement("http://127.0.0.1:1", "b")).await
    });
    // The standby's first probe reached the holder; now the holder dies.
    let (probe, _) = tokio::time::timeout(DEADLINE, listener.accept())
        .await
        .expect("the standby probes the holder's address")
        .unwrap();
    drop((probe, listener));
    let lock = standby.await.unwrap();
    assert!(
        !session_exists(&dead).await,
        "the dead holder's session was destroyed"
    );
    assert_ne!(lock.fencing_token().as_deref(), Some(dead.as_str()));
    lock.release().await.unwrap();
}

/// A contender with detection on, parked for its whole `lock_wait_time`
/// (2 s: ten probe windows), does not get the lock, and `held` keeps it.
async fn keeps_the_lock(path: &str, held: &str) {
    let (_storage, ha) = contender(detecting(path));
    assert!(
        ha.try_lock(KEY, &advertisement("http://127.0.0.1:1", "b"))
            .await
            .unwrap()
            .is_none()
    );
    assert!(session_exists(held).await);
    destroy_session(held).await;
}

/// An address that never answered (a wrong `api_addr` of a live node looks
/// so) is not taken for dead: the lock stays with its session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_holder_whose_address_never_answered_keeps_the_lock() {
    let path = unique_path();
    let _guard = PrefixGuard::new(shared_dev().http_address(), path.clone(), None);
    let nowhere = testkit::ports::reserve();
    let held = orphaned_lock(
        &path,
        advertisement(&format!("http://{}", nowhere.addr()), "a"),
    )
    .await;
    keeps_the_lock(&path, &held).await;
}

/// A holder whose address accepts connections (a listener that never
/// accepts, as a paused process's) keeps the lock: no destroy for as long
/// as several probe windows, and the lock stays with its session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_holder_that_accepts_connections_keeps_the_lock() {
    let path = unique_path();
    let _guard = PrefixGuard::new(shared_dev().http_address(), path.clone(), None);
    let (_frozen, port) = testkit::ports::listen();
    let alive = orphaned_lock(
        &path,
        advertisement(&format!("http://{}", port.addr()), "a"),
    )
    .await;
    keeps_the_lock(&path, &alive).await;
}

/// A node that starts and finds the lock held by a session advertising its
/// own api_addr under another node id (its previous process, killed)
/// destroys it at once, although its own address answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_node_reclaims_its_previous_session() {
    let path = unique_path();
    let _guard = PrefixGuard::new(shared_dev().http_address(), path.clone(), None);
    let (_listening, port) = testkit::ports::listen();
    let me = format!("http://{}", port.addr());
    let previous = orphaned_lock(&path, advertisement(&me, "first-process")).await;
    let (_storage, ha) = contender(detecting(&path));
    let lock = lock_within_deadline(&ha, &advertisement(&me, "second-process")).await;
    assert!(!session_exists(&previous).await);
    lock.release().await.unwrap();
}
