//! The election loop over `MemoryHaBackend`: who leads, what standbys see,
//! loss, step-down, withdraw, shutdown and backend failures. Every wait is
//! on a condition with a deadline.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use ha_lock::{ActivePeriod, Advertisement, Election, ElectionConfig, Role};
use seal_core::{HaBackend, HaError, HaLock, MemoryHaBackend};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

const DEADLINE: Duration = Duration::from_secs(20);
const KEY: &str = "core/lock";

fn ad(name: &str) -> Advertisement {
    Advertisement::new(
        format!("http://{name}:8200"),
        format!("http://{name}:8201"),
        name,
    )
}

fn config() -> ElectionConfig {
    ElectionConfig::default().with_step_down_grace(Duration::from_secs(30))
}

fn start(backend: &Arc<dyn HaBackend>, name: &str, config: ElectionConfig) -> Election {
    let election = Election::start(backend.clone(), ad(name), config);
    election.contend();
    election
}

/// Waits until `pred` holds for the election's role; returns that role.
async fn wait_role(election: &Election, what: &str, pred: impl Fn(&Role) -> bool) -> Role {
    let mut rx = election.role();
    match tokio::time::timeout(DEADLINE, rx.wait_for(|r| pred(r))).await {
        Ok(Ok(role)) => role.clone(),
        _ => panic!(
            "{} did not become {what} within {DEADLINE:?}; role is {:?}",
            election.advertisement().node_id,
            election.current()
        ),
    }
}

async fn wait_active(election: &Election) -> ActivePeriod {
    match wait_role(election, "active", Role::is_active).await {
        Role::Active { period, .. } => period,
        _ => unreachable!(),
    }
}

async fn wait_standby_of(election: &Election, leader: &str) {
    wait_role(
        election,
        &format!("standby of {leader}"),
        |r| matches!(r, Role::Standby { leader: Some(l) } if l.node_id == leader),
    )
    .await;
}

/// Waits until exactly one election is active; returns its index.
async fn one_active(elections: &[&Election]) -> usize {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    let mut rxs: Vec<watch::Receiver<Role>> = elections.iter().map(|e| e.role()).collect();
    loop {
        let mut active = Vec::new();
        for (i, rx) in rxs.iter_mut().enumerate() {
            if rx.borrow_and_update().is_active() {
                active.push(i);
            }
        }
        assert!(active.len() <= 1, "two active at once: {active:?}");
        if let [only] = active.as_slice() {
            return *only;
        }
        let changes = futures_any(&mut rxs);
        if tokio::time::timeout_at(deadline, changes).await.is_err() {
            panic!("no node became active within {DEADLINE:?}");
        }
    }
}

/// Completes when any receiver sees a change.
async fn futures_any(rxs: &mut [watch::Receiver<Role>]) {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<()>(1);
    let mut tasks = Vec::new();
    for r in rxs.iter() {
        let mut r = r.clone();
        let tx = tx.clone();
        tasks.push(tokio::spawn(async move {
            if r.changed().await.is_ok() {
                let _ = tx.send(()).await;
            }
        }));
    }
    drop(tx);
    let _ = rx.recv().await;
    for t in tasks {
        t.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_of_two_leads_and_the_other_sees_its_advertisement() {
    let backend: Arc<dyn HaBackend> = Arc::new(MemoryHaBackend::new());
    let a = start(&backend, "a", config());
    let b = start(&backend, "b", config());
    let winner = one_active(&[&a, &b]).await;
    let (active, standby) = if winner == 0 { (&a, &b) } else { (&b, &a) };
    let leader = active.advertisement().node_id.clone();
    wait_standby_of(standby, &leader).await;
    assert_eq!(standby.leader(), Some(active.advertisement().clone()));
    assert_eq!(active.leader(), Some(active.advertisement().clone()));
    let stored = backend.holder(KEY).await.unwrap().unwrap();
    assert_eq!(
        Advertisement::from_json(&stored).unwrap(),
        *active.advertisement()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_node_never_takes_the_lock() {
    let backend: Arc<dyn HaBackend> = Arc::new(MemoryHaBackend::new());
    let idle = Election::start(backend.clone(), ad("idle"), config());
    let b = start(&backend, "b", config());
    wait_active(&b).await;
    b.withdraw().await;
    // Nobody holds the lock now, and the idle node does not take it.
    assert!(backend.holder(KEY).await.unwrap().is_none());
    assert_eq!(idle.current(), Role::Idle);
    assert!(idle.leader().is_none());
    idle.contend();
    wait_active(&idle).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_lock_ends_the_period_and_the_node_becomes_standby() {
    let memory = MemoryHaBackend::new();
    let backend: Arc<dyn HaBackend> = Arc::new(memory.clone());
    let a = start(&backend, "a", config());
    let period = wait_active(&a).await;
    // Another node grabs the key once the session is broken (as after a
    // session expiry); `a` may win the race and take it back, then break
    // it again.
    let deadline = tokio::time::Instant::now() + DEADLINE;
    let thief = loop {
        memory.insecure_break_lock(KEY);
        if let Some(lock) = backend.try_lock(KEY, &ad("thief").to_json()).await.unwrap() {
            break lock;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the thief never got the lock"
        );
        wait_active(&a).await;
    };
    tokio::time::timeout(DEADLINE, period.ended())
        .await
        .expect("the period ends when the lock is lost");
    wait_standby_of(&a, "thief").await;
    // The thief releases: `a` leads again, in a new period.
    thief.release().await.unwrap();
    let again = wait_active(&a).await;
    assert!(again.id() > period.id());
    assert!(!again.is_ended());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn step_down_hands_the_lock_to_another_node() {
    let backend: Arc<dyn HaBackend> = Arc::new(MemoryHaBackend::new());
    let a = start(&backend, "a", config());
    let period = wait_active(&a).await;
    let b = start(&backend, "b", config());
    wait_standby_of(&b, "a").await;
    assert!(a.step_down().await, "a was active");
    assert!(
        period.is_ended(),
        "the period ends before step_down returns"
    );
    wait_active(&b).await;
    // The grace is 30 s: `a` stays standby because `b` took the lock, not
    // because of a timer.
    wait_standby_of(&a, "b").await;
    assert!(!a.step_down().await, "a standby has nothing to give up");
    // And back: b steps down, a takes over.
    assert!(b.step_down().await);
    wait_active(&a).await;
    wait_standby_of(&b, "a").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lone_node_takes_the_lock_back_after_the_grace() {
    let backend: Arc<dyn HaBackend> = Arc::new(MemoryHaBackend::new());
    let grace = Duration::from_millis(300);
    let a = start(
        &backend,
        "a",
        ElectionConfig::default().with_step_down_grace(grace),
    );
    let first = wait_active(&a).await;
    let stepped = tokio::time::Instant::now();
    assert!(a.step_down().await);
    let second = wait_active(&a).await;
    assert!(second.id() > first.id());
    assert!(
        stepped.elapsed() >= grace,
        "re-contended after {:?}, before the grace",
        stepped.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn withdraw_releases_and_another_node_takes_over() {
    let backend: Arc<dyn HaBackend> = Arc::new(MemoryHaBackend::new());
    let a = start(&backend, "a", config());
    let period = wait_active(&a).await;
    let b = start(&backend, "b", config());
    wait_standby_of(&b, "a").await;
    a.withdraw().await;
    assert!(period.is_ended());
    assert_eq!(a.current(), Role::Idle);
    wait_active(&b).await;
    // Contending again: a standby of b.
    a.contend();
    wait_standby_of(&a, "b").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_releases_the_lock() {
    let backend: Arc<dyn HaBackend> = Arc::new(MemoryHaBackend::new());
    let a = start(&backend, "a", config());
    let period = wait_active(&a).await;
    a.shutdown().await;
    assert!(period.is_ended());
    assert_eq!(a.current(), Role::Idle);
    assert!(backend.holder(KEY).await.unwrap().is_none());
    a.shutdown().await; // idempotent
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_election_releases_the_lock() {
    let backend: Arc<dyn HaBackend> = Arc::new(MemoryHaBackend::new());
    let a = start(&backend, "a", config());
    let period = wait_active(&a).await;
    drop(a);
    tokio::time::timeout(DEADLINE, period.ended())
        .await
        .expect("period ends");
    let b = start(&backend, "b", config());
    wait_active(&b).await;
}

/// A backend that fails while `down` is set.
#[derive(Debug)]
struct Flaky {
    inner: MemoryHaBackend,
    down: AtomicBool,
    attempts: AtomicUsize,
}

#[async_trait]
impl HaBackend for Flaky {
    async fn try_lock(&self, key: &str, value: &[u8]) -> Result<Option<Box<dyn HaLock>>, HaError> {
        self.attempts.fetch_add(1, Ordering::SeqCst);
        if self.down.load(Ordering::SeqCst) {
            return Err(HaError::Unavailable {
                op: "acquiring",
                key: key.to_owned(),
                message: "connection refused".into(),
            });
        }
        self.inner.try_lock(key, value).await
    }

    async fn holder(&self, key: &str) -> Result<Option<Vec<u8>>, HaError> {
        if self.down.load(Ordering::SeqCst) {
            return Err(HaError::Unavailable {
                op: "reading",
                key: key.to_owned(),
                message: "connection refused".into(),
            });
        }
        self.inner.holder(key).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_errors_keep_the_node_standby_and_it_retries() {
    let flaky = Arc::new(Flaky {
        inner: MemoryHaBackend::new(),
        down: AtomicBool::new(true),
        attempts: AtomicUsize::new(0),
    });
    let backend: Arc<dyn HaBackend> = flaky.clone();
    let a = start(
        &backend,
        "a",
        config().with_retry(Duration::from_millis(10), Duration::from_millis(50)),
    );
    wait_role(&a, "standby", Role::is_standby).await;
    assert!(!a.current().is_active());
    flaky.down.store(false, Ordering::SeqCst);
    wait_active(&a).await;
    assert!(
        flaky.attempts.load(Ordering::SeqCst) >= 2,
        "a failed attempt, then a successful one"
    );
}

/// Wraps `MemoryHaBackend` and checks, at every release, that the
/// releasing node no longer reports itself active.
#[derive(Debug)]
struct Checking {
    inner: MemoryHaBackend,
    roles: Mutex<Vec<(String, watch::Receiver<Role>)>>,
    violations: Arc<AtomicUsize>,
}

#[derive(Debug)]
struct CheckedLock {
    inner: Box<dyn HaLock>,
    role: Option<watch::Receiver<Role>>,
    violations: Arc<AtomicUsize>,
}

#[async_trait]
impl HaBackend for Checking {
    async fn try_lock(&self, key: &str, value: &[u8]) -> Result<Option<Box<dyn HaLock>>, HaError> {
        let node = Advertisement::from_json(value)
            .map(|a| a.node_id)
            .unwrap_or_default();
        let role = self
            .roles
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .find(|(n, _)| *n == node)
            .map(|(_, r)| r.clone());
        Ok(self.inner.try_lock(key, value).await?.map(|inner| {
            Box::new(CheckedLock {
                inner,
                role,
                violations: self.violations.clone(),
            }) as Box<dyn HaLock>
        }))
    }

    async fn holder(&self, key: &str) -> Result<Option<Vec<u8>>, HaError> {
        self.inner.holder(key).await
    }
}

#[async_trait]
impl HaLock for CheckedLock {
    fn lost(&self) -> CancellationToken {
        self.inner.lost()
    }

    fn fencing_token(&self) -> Option<String> {
        self.inner.fencing_token()
    }

    async fn release(self: Box<Self>) -> Result<(), HaError> {
        if self.role.as_ref().is_some_and(|r| r.borrow().is_active()) {
            self.violations.fetch_add(1, Ordering::SeqCst);
        }
        self.inner.release().await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_period_always_ends_before_the_release_under_churn() {
    let checking = Arc::new(Checking {
        inner: MemoryHaBackend::new(),
        roles: Mutex::new(Vec::new()),
        violations: Arc::new(AtomicUsize::new(0)),
    });
    let backend: Arc<dyn HaBackend> = checking.clone();
    let cfg = ElectionConfig::default().with_step_down_grace(Duration::from_millis(50));
    let nodes: Vec<Election> = (0..3)
        .map(|i| {
            let e = Election::start(backend.clone(), ad(&format!("n{i}")), cfg.clone());
            checking
                .roles
                .lock()
                .unwrap()
                .push((format!("n{i}"), e.role()));
            e.contend();
            e
        })
        .collect();
    let refs: Vec<&Election> = nodes.iter().collect();
    for round in 0..20 {
        let leader = one_active(&refs).await;
        match round % 3 {
            0 => assert!(nodes[leader].step_down().await),
            1 => {
                checking.inner.insecure_break_lock(KEY);
            }
            _ => {
                nodes[leader].withdraw().await;
                nodes[leader].contend();
            }
        }
    }
    one_active(&refs).await;
    for n in &nodes {
        n.shutdown().await;
    }
    assert_eq!(checking.violations.load(Ordering::SeqCst), 0);
}
