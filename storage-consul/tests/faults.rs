//! Faults become distinct, clear errors; transient ones are retried; a
//! write is never reported done unless Consul acknowledged it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::type_complexity)]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use seal_core::{Storage, StorageError};
use storage_consul::{ConsulError, ConsulStorage};
use testkit::consul::{ConsulDev, isolated, raw_request, shared_dev};

use common::consul_source;
use testkit::proxy::{Fault, FaultProxy};

fn assert_unavailable(err: &StorageError, what: &str, check: impl Fn(&ConsulError) -> bool) {
    assert!(
        matches!(err, StorageError::Unavailable { .. }),
        "{what}: expected Unavailable, got {err:?}"
    );
    let source = consul_source(err).unwrap_or_else(|| panic!("{what}: no ConsulError in {err:?}"));
    assert!(check(source), "{what}: unexpected cause {source:?}");
}

/// The agent stops mid-run: every call fails fast with "connection
/// refused" naming the address; after a restart the same storage works
/// again without being rebuilt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consul_stopped_mid_run_then_recovers() {
    let dev = Arc::new(ConsulDev::start());
    let (storage, _guard) = isolated(&dev, |c| c.max_retries = 1);
    let storage = Arc::new(storage);
    storage.put("before/stop", b"1").await.unwrap();

    // A writer keeps going while the agent is stopped under it.
    let writer = {
        let s = storage.clone();
        tokio::spawn(async move {
            let mut outcomes = Vec::new();
            for i in 0..200 {
                let r = s.put(&format!("during/{i}"), b"x").await;
                let failed = r.is_err();
                outcomes.push((i, r));
                if failed && outcomes.iter().filter(|(_, r)| r.is_err()).count() >= 3 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            outcomes
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let stopper = dev.clone();
    tokio::task::spawn_blocking(move || stopper.stop())
        .await
        .unwrap();
    let outcomes = writer.await.unwrap();
    assert!(
        outcomes.iter().any(|(_, r)| r.is_err()),
        "the stop was noticed"
    );
    for (i, r) in &outcomes {
        if let Err(e) = r {
            assert!(e.is_transient(), "put during/{i}: {e:?}");
        }
    }

    let address = format!("http://{}", dev.http_address());
    let refused = |e: &ConsulError| matches!(e, ConsulError::ConnectionRefused { .. });
    let started = Instant::now();
    let err = storage.put("after/stop", b"x").await.unwrap_err();
    assert_unavailable(&err, "put", refused);
    let text = err.to_string();
    assert!(
        text.contains("after/stop") && text.contains(&address),
        "{text}"
    );
    assert!(
        text.contains("refused") && text.contains("running"),
        "{text}"
    );
    assert_unavailable(
        &storage.get("before/stop").await.unwrap_err(),
        "get",
        refused,
    );
    assert_unavailable(&storage.list("").await.unwrap_err(), "list", refused);
    assert_unavailable(
        &storage.delete("before/stop").await.unwrap_err(),
        "delete",
        refused,
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "refusals fail fast"
    );

    let restarter = dev.clone();
    tokio::task::spawn_blocking(move || restarter.restart())
        .await
        .unwrap();
    // A dev agent comes back empty; the same storage object works again.
    storage.put("after/restart", b"back").await.unwrap();
    assert_eq!(
        storage.get("after/restart").await.unwrap().as_deref(),
        Some(&b"back"[..])
    );
    assert_eq!(storage.list("").await.unwrap(), ["after/"]);
}

/// 429 and 503 are retried with backoff; the call succeeds once Consul
/// answers, and the retries are counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_are_retried_then_succeed() {
    let dev = shared_dev();
    let front = FaultProxy::start(
        dev.http_address(),
        vec![
            Fault::Respond(429, "rate limit exceeded"),
            Fault::Respond(503, "rate limit exceeded, please retry later"),
        ],
        Fault::Pass,
    )
    .await;
    let (storage, _guard) = isolated(dev, |c| {
        c.address = front.address.clone();
        c.max_retries = 3;
    });
    storage.put("retried", b"ok").await.unwrap();
    assert_eq!(storage.request_stats().retries, 2);
    assert_eq!(
        storage.get("retried").await.unwrap().as_deref(),
        Some(&b"ok"[..])
    );
}

/// Each kind of fault, when it persists past the retries, is its own error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persistent_faults_are_distinct_errors() {
    let dev = shared_dev();
    let cases: Vec<(Fault, &str, fn(&ConsulError) -> bool, &str)> = vec![
        (
            Fault::Respond(429, "rate limit exceeded"),
            "429",
            |e| matches!(e, ConsulError::RateLimited { status: 429, .. }),
            "rate limiting",
        ),
        (
            Fault::Respond(503, "rate limit exceeded, please retry later"),
            "503",
            |e| matches!(e, ConsulError::RateLimited { status: 503, .. }),
            "rate limiting",
        ),
        (
            Fault::Respond(500, "No cluster leader"),
            "no leader",
            |e| matches!(e, ConsulError::NoLeader),
            "quorum",
        ),
        (
            Fault::Hangup,
            "hangup",
            |e| matches!(e, ConsulError::Connect { .. }),
            "cannot connect",
        ),
    ];
    for (fault, name, check, words) in cases {
        let front = FaultProxy::start(dev.http_address(), Vec::new(), fault).await;
        let (storage, _guard) = isolated(dev, |c| {
            c.address = front.address.clone();
            c.max_retries = 2;
        });
        let err = storage.put("k", b"v").await.unwrap_err();
        assert_unavailable(&err, name, check);
        assert!(err.to_string().contains(words), "{name}: {err}");
        assert_eq!(front.connections(), 3, "{name}: one try and two retries");
        assert_eq!(storage.request_stats().retries, 2, "{name}");
    }
    // Not transient, so not retried: ACL refusals and unexpected errors.
    let front = FaultProxy::start(
        dev.http_address(),
        Vec::new(),
        Fault::Respond(500, "rpc error: boom"),
    )
    .await;
    let (storage, _guard) = isolated(dev, |c| c.address = front.address.clone());
    let err = storage.get("k").await.unwrap_err();
    assert!(matches!(err, StorageError::Backend { .. }), "{err:?}");
    assert!(err.to_string().contains("boom"), "{err}");
    assert_eq!(front.connections(), 1);
}

/// A Consul that accepts but never answers: the request times out with a
/// clear error after `request_timeout`, retries included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unanswered_requests_time_out() {
    let dev = shared_dev();
    let front = FaultProxy::start(dev.http_address(), Vec::new(), Fault::BlackHole).await;
    let (storage, _guard) = isolated(dev, |c| {
        c.address = front.address.clone();
        c.request_timeout = Duration::from_millis(300);
        c.max_retries = 1;
    });
    let started = Instant::now();
    let err = storage.get("k").await.unwrap_err();
    assert_unavailable(&err, "get", |e| matches!(e, ConsulError::Timeout { .. }));
    assert!(err.to_string().contains("did not answer within"), "{err}");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(600) && took < Duration::from_secs(5),
        "{took:?}"
    );
}

/// Consul applies a write but its answer is lost: the put is reported as
/// failed (transient), never as done, because only a 200 counts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_without_acknowledgement_is_not_reported_done() {
    let dev = shared_dev();
    let front = FaultProxy::start(dev.http_address(), Vec::new(), Fault::DropAnswer).await;
    let (storage, guard) = isolated(dev, |c| {
        c.address = front.address.clone();
        c.max_retries = 1;
    });
    let err = storage.put("unacked", b"v").await.unwrap_err();
    assert!(err.is_transient(), "{err:?}");
    // Consul did apply it, which is why the error says "unavailable", not
    // "nothing happened": the caller must treat the outcome as unknown.
    let raw = raw_request(
        &dev.http_address(),
        "GET",
        &format!("/v1/kv/{}unacked?raw", guard.prefix()),
        None,
        b"",
    )
    .unwrap();
    assert_eq!(raw.status, 200);
}

/// Fencing: with a write fence set, writes go through only while the
/// session holds the lock; once it does not, they are refused and nothing
/// is written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fenced_writes_stop_when_the_session_loses_the_lock() {
    let dev = shared_dev();
    let (storage, guard) = isolated(dev, |_| {});
    let http = dev.http_address();
    // The lock holder's session. A loaded agent has once answered this with
    // something that was not a session (the flake check did not keep it):
    // each such answer is printed, and the wait names the last.
    let session = testkit::wait::until_blocking(
        "Consul creates the holder's session",
        Duration::from_secs(30),
        || {
            let answer = raw_request(
                &http,
                "PUT",
                "/v1/session/create",
                None,
                br#"{"TTL":"30s","LockDelay":"0s"}"#,
            )
            .map_err(|e| e.to_string())?;
            let id = serde_json::from_slice::<serde_json::Value>(&answer.body)
                .ok()
                .and_then(|v| v["ID"].as_str().map(str::to_owned));
            id.filter(|_| answer.status == 200).ok_or_else(|| {
                let said = format!("{} {:?}", answer.status, answer.text());
                eprintln!("session create answered {said}");
                said
            })
        },
    );
    let lock = format!("/v1/kv/{}core/lock?acquire={session}", guard.prefix());
    let acquired = raw_request(&http, "PUT", &lock, None, b"node-a").unwrap();
    assert_eq!(acquired.text().trim(), "true");

    storage
        .set_write_fence(Some(storage_consul::WriteFence {
            lock_key: "core/lock".into(),
            session: session.clone(),
        }))
        .unwrap();
    storage.put("fenced/one", b"1").await.unwrap();
    storage.delete("fenced/one").await.unwrap();

    raw_request(
        &http,
        "PUT",
        &format!("/v1/session/destroy/{session}"),
        None,
        b"",
    )
    .unwrap();
    let err = storage.put("fenced/two", b"2").await.unwrap_err();
    assert!(
        matches!(consul_source(&err), Some(ConsulError::Fenced { .. })),
        "{err:?}"
    );
    assert!(err.to_string().contains("lost leadership"), "{err}");
    assert_eq!(storage.get("fenced/two").await.unwrap(), None);

    storage.set_write_fence(None).unwrap();
    storage.put("fenced/two", b"2").await.unwrap();
}

/// A storage built for an address nobody listens on is constructed fine
/// (nothing is sent at construction) and fails with connection refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_address_is_connection_refused() {
    // Reserved and held, so nothing listens there for the whole test.
    let port = testkit::ports::reserve();
    let mut config = storage_consul::ConsulConfig::with_address(&port.addr()).unwrap();
    config.max_retries = 0;
    let storage = ConsulStorage::new(config).unwrap();
    let err = storage.get("anything").await.unwrap_err();
    assert_unavailable(&err, "get", |e| {
        matches!(e, ConsulError::ConnectionRefused { .. })
    });
}
