//! The HA conformance cases, one function each, run through
//! [`ha_suite!`](crate::ha_suite). Each case receives a fresh
//! [`HaHarness`]: a lock space of its own, from which it makes as many
//! contenders (nodes) as it needs. They panic (fail) on any departure from
//! the [`HaBackend`] contract.
//!
//! Waits are bounded polls, never bare sleeps; the only timing assertion
//! is that a released lock is handed over long before the waiter's lock
//! wait time (a minute) would have run out.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use tokio::time::Instant;

use crate::{HaBackend, HaLock};

/// The lock key every case contends for.
pub const KEY: &str = "core/lock";

/// A lock wait time long enough that a contender woken by a release is
/// clearly told apart from one that waited it out.
pub const LONG_WAIT: Duration = Duration::from_secs(60);

/// A lock wait time for contenders that are expected to give up.
pub const SHORT_WAIT: Duration = Duration::from_millis(300);

/// How long a case waits for something that must happen (a loss noticed,
/// a lock-delay over) before failing; generous for a loaded machine.
pub const DEADLINE: Duration = Duration::from_secs(45);

/// What a backend's test gives the HA suite: contenders on one shared lock
/// space, and a way to take a lock away as an expiry would.
#[async_trait]
pub trait HaHarness: Send + Sync + 'static {
    /// A new contender (as a separate node would hold) on this harness's
    /// lock space, whose `try_lock` waits at most `wait`.
    async fn contender(&self, wait: Duration) -> Arc<dyn HaBackend>;

    /// Takes `lock` (held at `key`) away from its holder as a session
    /// expiry would: Consul destroys the session, memory breaks the lock.
    /// The backend's lock-delay, if any, then applies.
    async fn break_lock(&self, key: &str, lock: &dyn HaLock);

    /// How many `try_lock` calls of this harness's contenders are parked
    /// waiting for a release right now (a blocking query, a notification).
    fn waiting(&self) -> usize;
}

type H = Arc<dyn HaHarness>;

async fn try_lock(ha: &Arc<dyn HaBackend>, value: &[u8]) -> Option<Box<dyn HaLock>> {
    ha.try_lock(KEY, value)
        .await
        .unwrap_or_else(|e| panic!("try_lock {KEY}: {e}"))
}

async fn holder(ha: &Arc<dyn HaBackend>) -> Option<Vec<u8>> {
    ha.holder(KEY)
        .await
        .unwrap_or_else(|e| panic!("holder {KEY}: {e}"))
}

/// Calls `try_lock` until it succeeds, at most [`DEADLINE`].
async fn lock_within_deadline(ha: &Arc<dyn HaBackend>, value: &[u8]) -> Box<dyn HaLock> {
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Some(lock) = try_lock(ha, value).await {
            return lock;
        }
        assert!(
            Instant::now() < deadline,
            "no lock within {DEADLINE:?}; holder advertises {:?}",
            holder(ha).await
        );
    }
}

/// Waits until `holder` reports `want`, at most [`DEADLINE`].
async fn until_holder(ha: &Arc<dyn HaBackend>, want: Option<&[u8]>) {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let now = holder(ha).await;
        if now.as_deref() == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "holder is {now:?}, expected {want:?}, after {DEADLINE:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until `lock` reports itself lost, at most [`DEADLINE`].
async fn until_lost(lock: &dyn HaLock) {
    let lost = lock.lost();
    if tokio::time::timeout(DEADLINE, lost.cancelled())
        .await
        .is_err()
    {
        panic!("lock not reported lost within {DEADLINE:?}");
    }
}

pub async fn holder_while_nobody_holds(h: H) {
    let a = h.contender(SHORT_WAIT).await;
    assert_eq!(holder(&a).await, None, "fresh lock space has no holder");
    let lock = try_lock(&a, b"node-a").await.expect("a free lock is taken");
    assert_eq!(holder(&a).await.as_deref(), Some(&b"node-a"[..]));
    lock.release().await.unwrap();
    assert_eq!(holder(&a).await, None, "a released lock advertises nothing");
}

pub async fn one_of_two_wins(h: H) {
    let a = h.contender(SHORT_WAIT).await;
    let b = h.contender(SHORT_WAIT).await;
    let (ra, rb) = tokio::join!(try_lock(&a, b"a"), try_lock(&b, b"b"));
    match (&ra, &rb) {
        (Some(_), None) => assert_eq!(holder(&b).await.as_deref(), Some(&b"a"[..])),
        (None, Some(_)) => assert_eq!(holder(&a).await.as_deref(), Some(&b"b"[..])),
        _ => panic!(
            "expected exactly one winner, got a={} b={}",
            ra.is_some(),
            rb.is_some()
        ),
    }
}

pub async fn loser_sees_winner_advertisement(h: H) {
    let a = h.contender(SHORT_WAIT).await;
    let b = h.contender(SHORT_WAIT).await;
    let value = br#"{"api_addr":"https://10.0.0.1:8200","cluster_addr":"https://10.0.0.1:8201"}"#;
    let lock = try_lock(&a, value).await.expect("a takes the free lock");
    let started = Instant::now();
    assert!(try_lock(&b, b"b").await.is_none(), "b must not win");
    // The loser gave up after its wait time, not never.
    assert!(started.elapsed() < DEADLINE, "{:?}", started.elapsed());
    assert_eq!(holder(&b).await.as_deref(), Some(&value[..]));
    assert!(!lock.lost().is_cancelled());
}

pub async fn release_hands_over_promptly(h: H) {
    let a = h.contender(SHORT_WAIT).await;
    let b = h.contender(LONG_WAIT).await;
    let lock = try_lock(&a, b"a").await.expect("a takes the free lock");
    let started = Instant::now();
    let waiter = tokio::spawn(async move { try_lock(&b, b"b").await });
    let deadline = Instant::now() + DEADLINE;
    while h.waiting() == 0 {
        assert!(Instant::now() < deadline, "the waiter never parked");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    lock.release().await.unwrap();
    let won = tokio::time::timeout(DEADLINE, waiter)
        .await
        .expect("the waiter wakes on the release")
        .unwrap();
    assert!(won.is_some(), "the waiter takes the released lock");
    assert!(
        started.elapsed() < LONG_WAIT / 2,
        "the waiter woke only after {:?}: it waited out its wait time instead of the release",
        started.elapsed()
    );
    assert_eq!(holder(&a).await.as_deref(), Some(&b"b"[..]));
}

pub async fn broken_lock_is_lost_and_another_wins(h: H) {
    let a = h.contender(SHORT_WAIT).await;
    let b = h.contender(SHORT_WAIT).await;
    let lock = try_lock(&a, b"a").await.expect("a takes the free lock");
    h.break_lock(KEY, lock.as_ref()).await;
    until_lost(lock.as_ref()).await;
    let b_lock = lock_within_deadline(&b, b"b").await;
    assert_eq!(holder(&a).await.as_deref(), Some(&b"b"[..]));
    assert!(!b_lock.lost().is_cancelled());
    // The deposed holder's late release does not free the new holder.
    let _ = lock.release().await;
    assert_eq!(holder(&b).await.as_deref(), Some(&b"b"[..]));
    assert!(!b_lock.lost().is_cancelled());
}

pub async fn release_cancels_lost(h: H) {
    let a = h.contender(SHORT_WAIT).await;
    let lock = try_lock(&a, b"a").await.expect("a takes the free lock");
    let lost = lock.lost();
    assert!(!lost.is_cancelled());
    lock.release().await.unwrap();
    assert!(lost.is_cancelled(), "release ends the active period");
}

pub async fn dropped_lock_is_given_up(h: H) {
    let a = h.contender(SHORT_WAIT).await;
    let b = h.contender(SHORT_WAIT).await;
    let lock = try_lock(&a, b"a").await.expect("a takes the free lock");
    let lost = lock.lost();
    drop(lock);
    assert!(lost.is_cancelled());
    until_holder(&b, None).await;
    let _b = lock_within_deadline(&b, b"b").await;
}

pub async fn fencing_tokens_differ_per_acquisition(h: H) {
    let a = h.contender(SHORT_WAIT).await;
    let b = h.contender(SHORT_WAIT).await;
    let mut seen = std::collections::HashSet::new();
    for (i, ha) in [&a, &b, &a, &a].into_iter().enumerate() {
        let lock = lock_within_deadline(ha, format!("n{i}").as_bytes()).await;
        let token = lock.fencing_token().expect("a fencing token");
        assert!(seen.insert(token.clone()), "token {token} handed out twice");
        lock.release().await.unwrap();
    }
}

pub async fn concurrent_calls_on_one_contender(h: H) {
    // Two tasks of one node contend with each other: still one holder.
    let a = h.contender(SHORT_WAIT).await;
    let a2 = a.clone();
    let (r1, r2) = tokio::join!(try_lock(&a, b"x"), try_lock(&a2, b"y"));
    assert!(
        r1.is_some() != r2.is_some(),
        "one contender's two calls: exactly one must win, got {} and {}",
        r1.is_some(),
        r2.is_some()
    );
}

pub async fn cancelled_try_lock_never_keeps_the_lock(h: H) {
    let a = h.contender(SHORT_WAIT).await;
    let b = h.contender(SHORT_WAIT).await;
    for round in 0..5u64 {
        // Cancelled at different points of its progress.
        let task = {
            let a = a.clone();
            tokio::spawn(async move { a.try_lock(KEY, b"cancelled").await.map(|l| l.is_some()) })
        };
        tokio::time::sleep(Duration::from_millis(round * 7)).await;
        task.abort();
        let _ = task.await;
    }
    // Whatever the cancelled calls got is given up again.
    until_holder(&b, None).await;
    let lock = lock_within_deadline(&b, b"b").await;
    assert_eq!(holder(&a).await.as_deref(), Some(&b"b"[..]));
    lock.release().await.unwrap();
}

pub async fn sixteen_contenders_never_overlap(h: H) {
    const CONTENDERS: usize = 16;
    const ROUNDS: usize = 3;
    let holders = Arc::new(AtomicUsize::new(0));
    let acquired = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for i in 0..CONTENDERS {
        let ha = h.contender(Duration::from_secs(5)).await;
        let (holders, acquired) = (holders.clone(), acquired.clone());
        tasks.push(tokio::spawn(async move {
            let deadline = Instant::now() + DEADLINE * 2;
            let mut mine = 0;
            while mine < ROUNDS {
                assert!(
                    Instant::now() < deadline,
                    "contender {i} won only {mine} times"
                );
                let Some(lock) = try_lock(&ha, format!("c{i}").as_bytes()).await else {
                    continue;
                };
                let before = holders.fetch_add(1, Ordering::SeqCst);
                assert_eq!(before, 0, "contender {i} holds the lock while another does");
                tokio::task::yield_now().await;
                assert!(!lock.lost().is_cancelled(), "contender {i} lost its lock");
                holders.fetch_sub(1, Ordering::SeqCst);
                mine += 1;
                acquired.fetch_add(1, Ordering::SeqCst);
                lock.release().await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(acquired.load(Ordering::SeqCst), CONTENDERS * ROUNDS);
}

pub async fn reacquire_after_release(h: H) {
    let a = h.contender(SHORT_WAIT).await;
    for round in 0..3 {
        let value = format!("round-{round}");
        let lock = try_lock(&a, value.as_bytes())
            .await
            .unwrap_or_else(|| panic!("round {round}: the released lock is free again"));
        assert_eq!(holder(&a).await.as_deref(), Some(value.as_bytes()));
        lock.release().await.unwrap();
    }
}
