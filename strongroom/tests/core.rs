//! The core's state machine, specified through its public API:
//! init, unseal (progress, nonce, wrong keys, reset), seal, auto-unseal
//! (restart, KMS outage and the retry loop), rotate, rekey.
//!
//! Storage is `MemoryStorage`; the auto seal is seal-core's
//! `InsecureTestSeal`, which can simulate an unreachable KMS.

// Helpers outside #[test] fns unwrap too: a failure there is a test failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use seal_core::testing::{FaultyStorage, InsecureTestSeal};
use seal_core::{MemoryStorage, Seal, Storage};
use strongroom::{
    Core, CoreError, CoreOptions, InitParams, LogicalRequest, Operation, RekeyParams,
    RotationConfigUpdate,
};

mod common;
use common::{
    auto_core, fast_options, init_auto, init_unsealed_shamir, new_shamir, recovery_params,
    rekey_params, shamir_core, shamir_params, try_shamir_core, unseal_with,
};

/// Polls `check` until it holds (10 s deadline; testkit's wait).
async fn wait_until(what: &str, mut check: impl FnMut() -> bool) {
    testkit::wait::until(what, Duration::from_secs(10), || {
        let holds = check();
        async move { holds }
    })
    .await;
}

#[tokio::test]
async fn uninitialized_status_reports_the_seal_type_and_nothing_else() {
    let (_, core) = new_shamir().await;
    let status = core.seal_status().await.unwrap();
    assert_eq!(status.seal_type, "shamir");
    assert!(!status.initialized);
    assert!(status.sealed);
    assert_eq!((status.t, status.n, status.progress), (0, 0, 0));
    assert_eq!(status.nonce, "");
    assert!(!status.recovery_seal);
    assert_eq!(status.storage_type.as_deref(), Some("inmem"));
    let health = core.health().await;
    assert!(!health.initialized && health.sealed && !health.standby);
    assert!(!core.leader().await.unwrap().ha_enabled);
    let err = core.unseal(&"ab".repeat(33)).await.unwrap_err();
    assert!(matches!(err, CoreError::NotInitialized), "{err}");
    assert_eq!(err.status(), 400);
}

#[tokio::test]
async fn init_5_of_3_then_unseal_with_progress_nonce_and_duplicates() {
    let (_, core) = new_shamir().await;
    let init = core.init(shamir_params(5, 3)).await.unwrap();
    assert_eq!(init.keys.len(), 5);
    assert_eq!(init.keys_base64.len(), 5);
    assert!(
        init.keys.iter().all(|k| k.len() == 66),
        "33-byte shares in hex"
    );
    assert!(init.recovery_keys.is_empty());
    assert!(!init.root_token.is_empty());

    // Shamir nodes stay sealed after init.
    let status = core.seal_status().await.unwrap();
    assert!(status.initialized && status.sealed);
    assert_eq!((status.t, status.n, status.progress), (3, 5, 0));
    assert_eq!(status.nonce, "");
    assert!(
        status.cluster_name.is_none(),
        "cluster name only while unsealed"
    );

    let first = core.unseal(&init.keys[0]).await.unwrap();
    assert_eq!(first.progress, 1);
    assert!(!first.nonce.is_empty());
    // A duplicate is ignored: same progress, same nonce.
    let dup = core.unseal(&init.keys[0]).await.unwrap();
    assert_eq!(
        (dup.progress, dup.nonce.as_str()),
        (1, first.nonce.as_str())
    );
    // The same share in base64 is the same share.
    let dup_b64 = core.unseal(&init.keys_base64[0]).await.unwrap();
    assert_eq!(dup_b64.progress, 1);
    let second = core.unseal(&init.keys_base64[3]).await.unwrap();
    assert_eq!(
        (second.progress, second.nonce.as_str()),
        (2, first.nonce.as_str())
    );
    assert!(second.sealed);
    let done = core.unseal(&init.keys[4]).await.unwrap();
    assert!(!done.sealed);
    assert_eq!((done.progress, done.nonce.as_str()), (0, ""));
    assert!(
        done.cluster_name
            .unwrap()
            .starts_with("strongroom-cluster-")
    );
    assert!(done.cluster_id.is_some());

    // Already unsealed: a key is a no-op that returns the status.
    let again = core.unseal(&init.keys[1]).await.unwrap();
    assert!(!again.sealed);
}

#[tokio::test]
async fn a_single_share_is_the_raw_key() {
    let (_, core) = new_shamir().await;
    let init = core.init(shamir_params(1, 1)).await.unwrap();
    assert_eq!(init.keys.len(), 1);
    assert_eq!(init.keys[0].len(), 64, "the raw 32-byte KEK, no x byte");
    let status = core.unseal(&init.keys_base64[0]).await.unwrap();
    assert!(!status.sealed);
}

#[tokio::test]
async fn a_wrong_key_set_is_a_400_and_resets_progress() {
    let (_, core) = new_shamir().await;
    let init = core.init(shamir_params(5, 3)).await.unwrap();
    let other = shamir_core(&Arc::new(MemoryStorage::new())).await;
    let foreign = other.init(shamir_params(5, 3)).await.unwrap();

    core.unseal(&init.keys[0]).await.unwrap();
    core.unseal(&init.keys[1]).await.unwrap();
    let err = core.unseal(&foreign.keys[2]).await.unwrap_err();
    assert_eq!(err.status(), 400, "{err}");
    let msg = err.to_string();
    assert!(msg.contains("invalid key"), "{msg}");
    assert!(msg.contains("progress was reset"), "{msg}");
    let status = core.seal_status().await.unwrap();
    assert!(status.sealed);
    assert_eq!((status.progress, status.nonce.as_str()), (0, ""));
    assert_eq!(core.metrics().await.unseal_failures, 1);

    // Three keys of a foreign set: combine fine, open nothing.
    for key in &foreign.keys[..2] {
        core.unseal(key).await.unwrap();
    }
    let err = core.unseal(&foreign.keys[2]).await.unwrap_err();
    assert!(
        err.to_string()
            .starts_with("unable to retrieve stored keys: invalid key"),
        "{err}"
    );
    // The right keys still work afterwards.
    unseal_with(&core, &init.keys[2..5]).await;
}

#[tokio::test]
async fn malformed_keys_are_refused_with_vaults_messages() {
    let (_, core) = new_shamir().await;
    core.init(shamir_params(3, 2)).await.unwrap();
    let err = core.unseal("not a key!").await.unwrap_err();
    assert_eq!(err.status(), 400);
    assert_eq!(
        err.to_string(),
        "'key' must be a valid hex or base64 string"
    );
    let err = core.unseal(&"ab".repeat(8 + 2)).await.unwrap_err();
    assert_eq!(err.status(), 400);
    let err = core.unseal(&"ab".repeat(40)).await.unwrap_err();
    assert!(err.to_string().contains("longer than maximum"), "{err}");
    assert_eq!(core.seal_status().await.unwrap().progress, 0);
}

#[tokio::test]
async fn unseal_reset_clears_progress_and_is_refused_when_unsealed() {
    let (_, core) = new_shamir().await;
    let init = core.init(shamir_params(5, 3)).await.unwrap();
    let first = core.unseal(&init.keys[0]).await.unwrap();
    assert_eq!(first.progress, 1);
    let reset = core.unseal_reset().await.unwrap();
    assert_eq!((reset.progress, reset.nonce.as_str()), (0, ""));
    // A new round gets a new nonce.
    let next = core.unseal(&init.keys[1]).await.unwrap();
    assert_ne!(next.nonce, first.nonce);
    unseal_with(&core, &init.keys[2..4]).await;
    let err = core.unseal_reset().await.unwrap_err();
    assert_eq!(
        (err.status(), err.to_string().as_str()),
        (400, "vault is unsealed")
    );
}

#[tokio::test]
async fn init_twice_is_refused() {
    let (storage, core) = new_shamir().await;
    core.init(shamir_params(3, 2)).await.unwrap();
    let err = core.init(shamir_params(3, 2)).await.unwrap_err();
    assert_eq!(err.to_string(), "Vault is already initialized");
    assert_eq!(err.status(), 400);
    // Another node over the same storage sees it too.
    let second = shamir_core(&storage).await;
    let err = second.init(shamir_params(3, 2)).await.unwrap_err();
    assert!(matches!(err, CoreError::AlreadyInitialized));
}

#[tokio::test]
async fn bad_init_parameters_are_refused_with_vaults_messages() {
    let (_, core) = new_shamir().await;
    let cases: Vec<(InitParams, &str)> = vec![
        (
            InitParams {
                recovery_shares: 5,
                recovery_threshold: 3,
                ..shamir_params(5, 3)
            },
            "parameters recovery_shares,recovery_threshold not applicable to seal type shamir",
        ),
        (shamir_params(3, 5), "invalid seal configuration: "),
        (shamir_params(0, 0), "invalid seal configuration: "),
        (shamir_params(5, 1), "invalid seal configuration: "),
        (shamir_params(256, 3), "invalid seal configuration: "),
        (
            InitParams {
                pgp_keys: Some(vec!["a".into(), "b".into(), "c".into()]),
                ..shamir_params(3, 2)
            },
            "pgp_keys is not supported",
        ),
        (
            InitParams {
                root_token_pgp_key: Some("k".into()),
                ..shamir_params(3, 2)
            },
            "root_token_pgp_key is not supported",
        ),
        (
            InitParams {
                stored_shares: 3,
                ..shamir_params(3, 2)
            },
            "stored_shares must be 0 or 1",
        ),
    ];
    for (params, expected) in cases {
        let err = core.init(params.clone()).await.unwrap_err();
        assert_eq!(err.status(), 400, "{params:?}: {err}");
        assert!(err.to_string().contains(expected), "{params:?}: {err}");
    }
    assert!(!core.seal_status().await.unwrap().initialized);

    let seal = Arc::new(InsecureTestSeal::new());
    let auto = auto_core(&Arc::new(MemoryStorage::new()), &seal).await;
    let err = auto
        .init(InitParams {
            secret_shares: 5,
            secret_threshold: 3,
            ..recovery_params(5, 3)
        })
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "parameters secret_shares,secret_threshold not applicable to seal type test"
    );
    let err = auto.init(recovery_params(0, 0)).await.unwrap_err();
    assert!(
        err.to_string()
            .starts_with("invalid recovery configuration: "),
        "{err}"
    );
}

#[tokio::test]
async fn seal_needs_a_root_token_and_unseal_works_again() {
    let (_storage, core, init) = init_unsealed_shamir(3, 2).await;
    for bad in ["", "hvs.not-a-token"] {
        let err = core.seal(bad).await.unwrap_err();
        assert_eq!(err.status(), 403, "{bad:?}: {err}");
        assert_eq!(err.to_string(), "permission denied");
    }
    assert!(!core.is_sealed());
    core.seal(&init.root_token).await.unwrap();
    assert!(core.is_sealed());
    // Sealing a sealed node is a no-op (Vault answers 204).
    core.seal("").await.unwrap();

    // Everything behind the barrier answers "sealed" (503).
    let req = LogicalRequest::new(Operation::Read, "auth/token/lookup-self")
        .with_token(init.root_token.clone());
    let err = core.handle(req.clone()).await.unwrap_err();
    assert_eq!(
        (err.status(), err.to_string().as_str()),
        (503, "Vault is sealed")
    );
    assert_eq!(
        core.rotate(&init.root_token).await.unwrap_err().status(),
        503
    );
    assert_eq!(
        core.key_status(&init.root_token)
            .await
            .unwrap_err()
            .status(),
        503
    );

    unseal_with(&core, &init.keys[1..3]).await;
    let resp = core.handle(req).await.unwrap();
    assert_eq!(resp.status, 200);
}

#[tokio::test]
async fn data_survives_a_restart_of_a_shamir_node() {
    let (storage, core, init) = init_unsealed_shamir(3, 2).await;
    core.barrier().put("app/config", b"v1").await.unwrap();
    let cluster = core.seal_status().await.unwrap().cluster_id;
    drop(core);

    let restarted = shamir_core(&storage).await;
    let status = restarted.seal_status().await.unwrap();
    assert!(status.initialized && status.sealed);
    assert_eq!((status.t, status.n), (2, 3));
    unseal_with(&restarted, &init.keys[..2]).await;
    assert_eq!(
        restarted
            .barrier()
            .get("app/config")
            .await
            .unwrap()
            .as_deref(),
        Some(&b"v1"[..])
    );
    assert_eq!(restarted.seal_status().await.unwrap().cluster_id, cluster);
    // The root token from init still works after the restart.
    restarted.key_status(&init.root_token).await.unwrap();
}

#[tokio::test]
async fn auto_seal_init_returns_recovery_keys_and_unseals() {
    let (storage, _seal, core, init) = init_auto(5, 3).await;
    assert!(init.keys.is_empty() && init.keys_base64.is_empty());
    assert_eq!(init.recovery_keys.len(), 5);
    assert_eq!(init.recovery_keys_base64.len(), 5);
    let status = core.seal_status().await.unwrap();
    assert!(status.initialized && !status.sealed);
    assert_eq!(status.seal_type, "test");
    assert!(status.recovery_seal);
    assert_eq!((status.t, status.n), (3, 5));
    core.key_status(&init.root_token).await.unwrap();
    // Nothing in plain storage reveals the keys: the stored blobs are
    // seal-wrapped, the configs hold only counts.
    let config = storage.get("core/seal-config").await.unwrap().unwrap();
    let config: serde_json::Value = serde_json::from_slice(&config).unwrap();
    assert_eq!(config["type"], "test");
    assert_eq!(config["secret_shares"], 1);
    let recovery: serde_json::Value =
        serde_json::from_slice(&storage.get("core/recovery-config").await.unwrap().unwrap())
            .unwrap();
    assert_eq!(
        (
            recovery["type"].as_str(),
            recovery["secret_threshold"].as_u64()
        ),
        (Some("shamir"), Some(3))
    );
}

#[tokio::test]
async fn auto_seal_node_restarts_unsealed() {
    let (storage, seal, core, init) = init_auto(3, 2).await;
    core.barrier().put("app/x", b"1").await.unwrap();
    drop(core);

    let restarted = auto_core(&storage, &seal).await;
    assert!(!restarted.is_sealed(), "auto seal must unseal at start");
    assert_eq!(
        restarted.barrier().get("app/x").await.unwrap().as_deref(),
        Some(&b"1"[..])
    );
    restarted.key_status(&init.root_token).await.unwrap();
    assert_eq!(restarted.metrics().await.auto_unseal_failures, 0);
}

#[tokio::test]
async fn kms_outage_at_start_then_the_retry_loop_unseals_without_restart() {
    let (storage, seal, _, _) = init_auto(3, 2).await;

    seal.set_unreachable(true);
    let restarted = auto_core(&storage, &seal).await;
    assert!(restarted.is_sealed());
    let health = restarted.health().await;
    assert!(health.initialized && health.sealed);
    let reason = restarted.last_auto_unseal_error().unwrap();
    assert!(reason.contains("unreachable"), "{reason}");
    assert!(!reason.contains("not initialized"), "{reason}");

    let task = restarted.spawn_auto_unseal();
    let failures = |core: &Core| {
        let core = core.clone();
        async move { core.metrics().await.auto_unseal_failures }
    };
    testkit::wait::until(
        "the retry loop retries",
        Duration::from_secs(10),
        || async { failures(&restarted).await >= 3 },
    )
    .await;
    assert!(restarted.is_sealed());

    seal.set_unreachable(false);
    wait_until("the retry loop to unseal", || !restarted.is_sealed()).await;
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("the loop ends once unsealed")
        .unwrap();
    assert!(restarted.last_auto_unseal_error().is_none());
}

/// A node started while the KMS is down made its first attempt in
/// `build`; the retry loop's first attempt waits a backoff like any retry
/// (one failure line per attempt, no burst of two at start).
#[tokio::test(start_paused = true)]
async fn the_retry_loop_waits_after_the_attempt_made_at_start() {
    let (storage, seal, _, _) = init_auto(1, 1).await;
    seal.set_unreachable(true);
    let initial = Duration::from_millis(400);
    let restarted = Core::builder()
        .storage(storage.clone())
        .auto_seal(seal.clone())
        .options(CoreOptions::new("inmem").with_auto_unseal_backoff(initial, initial))
        .build()
        .await
        .unwrap();
    assert_eq!(restarted.metrics().await.auto_unseal_failures, 1);
    let task = restarted.spawn_auto_unseal();
    // Jitter waits at least half the backoff: nothing may happen before.
    tokio::time::sleep(initial / 2 - Duration::from_millis(10)).await;
    assert_eq!(
        restarted.metrics().await.auto_unseal_failures,
        1,
        "the loop retried at once after the attempt at start"
    );
    tokio::time::sleep(initial).await;
    assert!(
        restarted.metrics().await.auto_unseal_failures >= 2,
        "it retries"
    );
    seal.set_unreachable(false);
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("the loop ends once unsealed")
        .unwrap();
    assert!(!restarted.is_sealed());
}

#[tokio::test]
async fn auto_unseal_on_an_uninitialized_store_says_so() {
    let storage = Arc::new(MemoryStorage::new());
    let seal = Arc::new(InsecureTestSeal::new());
    let core = auto_core(&storage, &seal).await;
    let task = core.spawn_auto_unseal();
    wait_until("a first attempt", || {
        core.last_auto_unseal_error().is_some()
    })
    .await;
    let reason = core.last_auto_unseal_error().unwrap();
    assert!(reason.contains("none were found"), "{reason}");
    assert_eq!(
        core.metrics().await.auto_unseal_failures,
        0,
        "waiting for init is no failure"
    );
    // Init through the API unseals; the loop notices and ends.
    core.init(recovery_params(1, 1)).await.unwrap();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("the loop ends once unsealed")
        .unwrap();
}

#[tokio::test]
async fn a_wrong_kms_key_is_named_as_such() {
    let (storage, _seal, _, _) = init_auto(1, 1).await;
    let other = Arc::new(InsecureTestSeal::new());
    let core = auto_core(&storage, &other).await;
    assert!(core.is_sealed());
    let reason = core.last_auto_unseal_error().unwrap();
    assert!(
        reason.contains("failed to decrypt keys from storage"),
        "{reason}"
    );
    assert!(
        reason.contains("not the one this storage was initialized with"),
        "{reason}"
    );
}

#[tokio::test]
async fn manually_sealed_auto_node_stays_sealed_until_recovery_keys() {
    let (_storage, seal, core, init) = init_auto(3, 2).await;
    core.seal(&init.root_token).await.unwrap();
    assert!(core.is_sealed());
    // The operator's seal sticks: the loop does not undo it.
    tokio::time::timeout(Duration::from_secs(5), core.spawn_auto_unseal())
        .await
        .unwrap()
        .unwrap();
    assert!(core.is_sealed());

    // Recovery keys of another store are refused.
    let other = auto_core(&Arc::new(MemoryStorage::new()), &seal).await;
    let foreign = other.init(recovery_params(3, 2)).await.unwrap();
    core.unseal(&foreign.recovery_keys[0]).await.unwrap();
    let err = core.unseal(&foreign.recovery_keys[1]).await.unwrap_err();
    assert_eq!(err.status(), 400, "{err}");
    assert!(err.to_string().contains("invalid recovery key"), "{err}");

    let status = core.unseal(&init.recovery_keys[0]).await.unwrap();
    assert_eq!((status.progress, status.t), (1, 2));
    let status = core.unseal(&init.recovery_keys_base64[2]).await.unwrap();
    assert!(!status.sealed);

    // With the KMS down, recovery keys alone cannot unseal (as Vault).
    core.seal(&init.root_token).await.unwrap();
    seal.set_unreachable(true);
    core.unseal(&init.recovery_keys[0]).await.unwrap();
    let err = core.unseal(&init.recovery_keys[1]).await.unwrap_err();
    assert!(err.to_string().contains("unreachable"), "{err}");
    assert!(core.is_sealed());
}

#[tokio::test]
async fn rotate_keeps_old_data_readable() {
    let (storage, core, init) = init_unsealed_shamir(3, 2).await;
    core.barrier().put("app/old", b"before").await.unwrap();
    assert_eq!(core.key_status(&init.root_token).await.unwrap().term, 1);
    assert_eq!(core.rotate("").await.unwrap_err().status(), 403);
    assert_eq!(core.rotate(&init.root_token).await.unwrap(), 2);
    let status = core.key_status(&init.root_token).await.unwrap();
    assert_eq!(status.term, 2);
    assert!(
        time::OffsetDateTime::parse(
            &status.install_time,
            &time::format_description::well_known::Rfc3339
        )
        .is_ok()
    );
    core.barrier().put("app/new", b"after").await.unwrap();
    assert_eq!(core.metrics().await.barrier_term, 2);
    drop(core);

    let restarted = shamir_core(&storage).await;
    unseal_with(&restarted, &init.keys[..2]).await;
    assert_eq!(
        restarted.barrier().get("app/old").await.unwrap().as_deref(),
        Some(&b"before"[..])
    );
    assert_eq!(
        restarted.barrier().get("app/new").await.unwrap().as_deref(),
        Some(&b"after"[..])
    );
}

#[tokio::test]
async fn rotation_config_round_trips_with_vaults_sanitising() {
    let (_storage, core, init) = init_unsealed_shamir(1, 1).await;
    let cfg = core.rotation_config(&init.root_token).await.unwrap();
    assert!(cfg.enabled);
    assert_eq!(cfg.max_operations, 3_865_470_566);
    assert_eq!(cfg.interval, "0s");
    let cfg = core
        .set_rotation_config(
            &init.root_token,
            RotationConfigUpdate {
                max_operations: Some(10),
                interval: Some("1h".into()),
                enabled: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(cfg.max_operations, 1_000_000, "raised to the minimum");
    assert_eq!(cfg.interval, "24h0m0s", "raised to the minimum");
    assert!(cfg.enabled);
    let err = core
        .set_rotation_config(
            &init.root_token,
            RotationConfigUpdate {
                interval: Some("soon".into()),
                ..RotationConfigUpdate::default()
            },
        )
        .await
        .unwrap_err();
    assert_eq!(err.status(), 400);
    assert_eq!(core.rotation_config("bad").await.unwrap_err().status(), 403);
}

async fn rekey_to(
    core: &Core,
    current: &[String],
    params: RekeyParams,
    recovery: bool,
) -> strongroom::RekeyUpdateResult {
    let status = core.rekey_init(params, recovery).await.unwrap();
    assert!(status.started);
    let mut last = None;
    for key in current {
        last = Some(
            core.rekey_update(key, &status.nonce, recovery)
                .await
                .unwrap(),
        );
    }
    let last = last.unwrap();
    assert!(last.complete);
    last
}

#[tokio::test]
async fn rekey_replaces_the_unseal_keys() {
    let (storage, core, init) = init_unsealed_shamir(3, 2).await;
    core.barrier().put("app/kept", b"yes").await.unwrap();
    let token = init.root_token.as_str();

    let status = core.rekey_init(rekey_params(5, 3), false).await.unwrap();
    assert!(status.started);
    assert_eq!(
        (status.t, status.n, status.progress, status.required),
        (3, 5, 0, 2)
    );
    assert!(!status.nonce.is_empty());
    // A second init while one runs is refused.
    let err = core
        .rekey_init(rekey_params(2, 2), false)
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("rekey already in progress"),
        "{err}"
    );
    // The nonce protects the progress.
    let err = core
        .rekey_update(&init.keys[0], "not-the-nonce", false)
        .await
        .unwrap_err();
    assert_eq!(err.status(), 400);
    assert!(err.to_string().contains("incorrect nonce"), "{err}");
    let step = core
        .rekey_update(&init.keys[0], &status.nonce, false)
        .await
        .unwrap();
    assert!(!step.complete && step.keys.is_empty());
    assert_eq!(step.progress, Some(1));
    assert_eq!(core.rekey_status(false).await.unwrap().progress, 1);
    let done = core
        .rekey_update(&init.keys[2], &status.nonce, false)
        .await
        .unwrap();
    assert!(done.complete);
    assert_eq!(done.keys.len(), 5);
    assert!(!core.rekey_status(false).await.unwrap().started);

    core.seal(token).await.unwrap();
    // The old keys no longer open anything.
    core.unseal(&init.keys[0]).await.unwrap();
    core.unseal(&init.keys[1]).await.unwrap();
    let err = core.unseal(&init.keys[2]).await.unwrap_err();
    assert_eq!(err.status(), 400, "{err}");
    assert!(core.is_sealed());
    let status = core.seal_status().await.unwrap();
    assert_eq!((status.t, status.n), (3, 5));
    unseal_with(&core, &done.keys_base64[2..5]).await;
    assert_eq!(
        core.barrier().get("app/kept").await.unwrap().as_deref(),
        Some(&b"yes"[..])
    );
    drop(core);
    // And after a restart.
    let restarted = shamir_core(&storage).await;
    unseal_with(&restarted, &done.keys[..3]).await;
}

#[tokio::test]
async fn rekey_with_the_wrong_current_keys_keeps_the_nonce() {
    let (_storage, core, init) = init_unsealed_shamir(3, 2).await;
    let token = init.root_token.as_str();
    let foreign = shamir_core(&Arc::new(MemoryStorage::new()))
        .await
        .init(shamir_params(3, 2))
        .await
        .unwrap();
    let status = core.rekey_init(rekey_params(3, 2), false).await.unwrap();
    core.rekey_update(&foreign.keys[0], &status.nonce, false)
        .await
        .unwrap();
    let err = core
        .rekey_update(&foreign.keys[1], &status.nonce, false)
        .await
        .unwrap_err();
    assert_eq!(err.status(), 400);
    assert!(
        err.to_string().contains("not the current unseal keys"),
        "{err}"
    );
    let after = core.rekey_status(false).await.unwrap();
    assert_eq!(
        (after.nonce.as_str(), after.progress),
        (status.nonce.as_str(), 0)
    );
    // Cancel: the current keys stay valid.
    core.rekey_cancel(false).await.unwrap();
    assert!(!core.rekey_status(false).await.unwrap().started);
    core.seal(token).await.unwrap();
    unseal_with(&core, &init.keys[..2]).await;
}

#[tokio::test]
async fn rekey_with_verification_commits_only_after_the_new_keys_are_entered() {
    let (_storage, core, init) = init_unsealed_shamir(3, 2).await;
    let token = init.root_token.as_str();
    let params = RekeyParams {
        secret_shares: 4,
        secret_threshold: 2,
        require_verification: true,
        ..RekeyParams::default()
    };
    let done = rekey_to(&core, &init.keys[..2], params, false).await;
    assert!(done.verification_required);
    assert!(!done.verification_nonce.is_empty());
    assert_eq!(done.keys.len(), 4);
    let status = core.rekey_status(false).await.unwrap();
    assert_eq!(status.verification_nonce, done.verification_nonce);
    // Updates are over; verification is next.
    let err = core
        .rekey_update(&init.keys[0], &done.nonce, false)
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("verification must be performed"),
        "{err}"
    );
    // Not yet in effect: the old keys are still the keys.
    let err = core
        .rekey_verify(&done.keys[0], &done.nonce, false)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("incorrect nonce"), "{err}");
    // Old keys entered as "new" keys do not verify.
    core.rekey_verify(&init.keys[0], &done.verification_nonce, false)
        .await
        .unwrap();
    let err = core
        .rekey_verify(&init.keys[1], &done.verification_nonce, false)
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("rekey verification failed"),
        "{err}"
    );
    let vstatus = core.rekey_verify_status(false).await.unwrap();
    assert_eq!((vstatus.progress, vstatus.t, vstatus.n), (0, 2, 4));

    let step = core
        .rekey_verify(&done.keys[3], &done.verification_nonce, false)
        .await
        .unwrap();
    assert!(!step.complete);
    assert_eq!(step.progress, Some(1));
    let fin = core
        .rekey_verify(&done.keys_base64[1], &done.verification_nonce, false)
        .await
        .unwrap();
    assert!(fin.complete);

    core.seal(token).await.unwrap();
    core.unseal(&init.keys[0]).await.unwrap();
    assert!(
        core.unseal(&init.keys[1]).await.is_err(),
        "old keys must fail"
    );
    unseal_with(&core, &done.keys[..2]).await;
}

#[tokio::test]
async fn recovery_keys_rekey_on_an_auto_seal() {
    let (_, _, core, init) = init_auto(3, 2).await;
    let token = init.root_token.as_str();
    let params = rekey_params(5, 3);
    // The unseal keys of an auto seal cannot be rekeyed; Shamir has no
    // recovery keys.
    let err = core.rekey_init(params.clone(), false).await.unwrap_err();
    assert!(
        err.to_string().contains("not applicable to seal type test"),
        "{err}"
    );
    let done = rekey_to(&core, &init.recovery_keys[..2], params, true).await;
    assert_eq!(done.keys.len(), 5);
    let status = core.seal_status().await.unwrap();
    assert_eq!((status.t, status.n), (3, 5));

    core.seal(token).await.unwrap();
    core.unseal(&init.recovery_keys[0]).await.unwrap();
    core.unseal(&init.recovery_keys[1]).await.unwrap();
    let err = core.unseal(&init.recovery_keys[2]).await.unwrap_err();
    assert!(err.to_string().contains("invalid recovery key"), "{err}");
    unseal_with(&core, &done.keys[..3]).await;

    let (_s, shamir, _sinit) = init_unsealed_shamir(1, 1).await;
    let err = shamir
        .rekey_init(rekey_params(1, 1), true)
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("recovery keys are not supported"),
        "{err}"
    );
}

#[tokio::test]
async fn rekey_needs_no_token_but_an_unsealed_node() {
    // As in Vault: the current keys authorize a rekey, not a token.
    let (_storage, core, init) = init_unsealed_shamir(1, 1).await;
    assert!(!core.rekey_status(false).await.unwrap().started);
    core.seal(&init.root_token).await.unwrap();
    assert_eq!(core.rekey_status(false).await.unwrap_err().status(), 503);
    let err = core
        .rekey_init(rekey_params(1, 1), false)
        .await
        .unwrap_err();
    assert_eq!(err.status(), 503);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_unseal_submissions_lose_no_share() {
    for _ in 0..5 {
        let (_, core) = new_shamir().await;
        let init = core.init(shamir_params(10, 10)).await.unwrap();
        let tasks: Vec<_> = init
            .keys
            .iter()
            .cloned()
            .map(|key| {
                let core = core.clone();
                tokio::spawn(async move { core.unseal(&key).await })
            })
            .collect();
        for task in tasks {
            task.await.unwrap().unwrap();
        }
        assert!(
            !core.is_sealed(),
            "ten distinct keys from ten tasks must unseal"
        );
    }
}

#[tokio::test]
async fn a_changed_seal_waits_for_a_migration() {
    // Shamir storage, auto seal configured: a migration, not a guess.
    let storage = Arc::new(MemoryStorage::new());
    shamir_core(&storage)
        .await
        .init(shamir_params(1, 1))
        .await
        .unwrap();
    let seal: Arc<dyn Seal> = Arc::new(InsecureTestSeal::new());
    let core = Core::builder()
        .storage(storage.clone())
        .auto_seal(seal.clone())
        .build()
        .await
        .unwrap();
    assert!(core.is_sealed());
    assert!(core.seal_status().await.unwrap().migration);

    // Auto-seal storage, Shamir configured without the old seal disabled:
    // refused with Vault's words.
    let storage = Arc::new(MemoryStorage::new());
    auto_core(&storage, &Arc::new(InsecureTestSeal::new()))
        .await
        .init(recovery_params(1, 1))
        .await
        .unwrap();
    let err = try_shamir_core(&storage).await.unwrap_err();
    assert!(
        err.to_string()
            .contains("no disabled seal in configuration"),
        "{err}"
    );
    let err = Core::builder().build().await.unwrap_err();
    assert!(err.to_string().contains("no storage given"), "{err}");
}

#[tokio::test]
async fn root_token_id_is_honoured_for_dev_servers() {
    let (_, core) = new_shamir().await;
    let init = core
        .init(InitParams {
            root_token_id: Some("dev-root".into()),
            ..shamir_params(1, 1)
        })
        .await
        .unwrap();
    assert_eq!(init.root_token, "dev-root");
    unseal_with(&core, &init.keys).await;
    core.key_status("dev-root").await.unwrap();
    let printed = format!("{init:?}");
    assert!(!printed.contains("dev-root") && !printed.contains(&init.keys[0]));
}

#[tokio::test]
async fn the_background_check_persists_encryption_counts_across_restarts() {
    let storage = Arc::new(MemoryStorage::new());
    let seal = Arc::new(InsecureTestSeal::new());
    let options = fast_options().with_auto_rotate_check_interval(Duration::from_millis(10));
    let core = Core::builder()
        .storage(storage.clone())
        .auto_seal(seal.clone())
        .options(options.clone())
        .build()
        .await
        .unwrap();
    let init = core.init(recovery_params(1, 1)).await.unwrap();
    for i in 0..20 {
        core.barrier().put(&format!("app/{i}"), b"x").await.unwrap();
    }
    let written = core.key_status(&init.root_token).await.unwrap().encryptions;
    assert!(written >= 20, "{written}");
    // The periodic check (10 ms here, 5 min by default) writes the count
    // into the keyring, so a restart keeps the estimate.
    testkit::wait::until(
        "the count is persisted",
        Duration::from_secs(10),
        || async {
            let restarted = Core::builder()
                .storage(storage.clone())
                .auto_seal(seal.clone())
                .options(options.clone())
                .build()
                .await
                .unwrap();
            let seen = restarted.metrics().await.barrier_encryptions;
            if seen >= written {
                Ok(())
            } else {
                Err(format!("{seen} of {written} encryptions counted"))
            }
        },
    )
    .await;
}

#[tokio::test]
async fn metrics_follow_the_state() {
    let (_, core) = new_shamir().await;
    let m = core.metrics().await;
    assert!(!m.initialized && m.sealed);
    assert_eq!(m.seal_type, "shamir");
    let init = core.init(shamir_params(2, 2)).await.unwrap();
    assert_eq!(
        core.metrics().await.unseals,
        0,
        "the init-time unseal is not counted"
    );
    unseal_with(&core, &init.keys).await;
    let m = core.metrics().await;
    assert!(m.initialized && !m.sealed);
    assert_eq!((m.unseals, m.barrier_term), (1, 1));
    assert!(m.barrier_encryptions > 0, "init wrote entries");
    core.seal(&init.root_token).await.unwrap();
    let m = core.metrics().await;
    assert!(m.sealed);
    assert_eq!((m.barrier_term, m.barrier_encryptions), (0, 0));
}

/// A Shamir node on `storage`, with default options.
async fn plain_shamir_core(storage: &Arc<FaultyStorage>) -> Core {
    Core::builder()
        .storage(storage.clone())
        .shamir()
        .build()
        .await
        .unwrap()
}

async fn interrupted_rekey_leaves_the_current_keys_working(fail_on: &'static str) {
    let memory = Arc::new(MemoryStorage::new());
    let flaky = Arc::new(FaultyStorage::over(&memory));
    let core = plain_shamir_core(&flaky).await;
    let init = core.init(shamir_params(3, 2)).await.unwrap();
    unseal_with(&core, &init.keys[..2]).await;
    core.barrier().put("app/precious", b"data").await.unwrap();

    flaky.fail_transactions_touching(Some(fail_on));
    let status = core.rekey_init(rekey_params(3, 2), false).await.unwrap();
    core.rekey_update(&init.keys[0], &status.nonce, false)
        .await
        .unwrap();
    let err = core
        .rekey_update(&init.keys[1], &status.nonce, false)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("simulated crash"), "{err}");
    drop(core);

    // "Restart" over what was durably written: the current keys still work.
    let restarted = shamir_core(&memory).await;
    unseal_with(&restarted, &init.keys[1..3]).await;
    assert_eq!(
        restarted
            .barrier()
            .get("app/precious")
            .await
            .unwrap()
            .as_deref(),
        Some(&b"data"[..])
    );
    assert!(
        memory
            .get("core/hsm/barrier-unseal-keys-rekey-pending")
            .await
            .unwrap()
            .is_none(),
        "the leftover is cleaned up"
    );
    // And again after one more restart, now without any leftover.
    drop(restarted);
    let again = shamir_core(&memory).await;
    unseal_with(&again, &init.keys[..2]).await;
}

#[tokio::test]
async fn rekey_interrupted_after_the_keyring_changed_is_recovered() {
    interrupted_rekey_leaves_the_current_keys_working("core/seal-config").await;
}

#[tokio::test]
async fn rekey_interrupted_before_the_keyring_changed_is_discarded() {
    interrupted_rekey_leaves_the_current_keys_working("core/keyring").await;
}

#[tokio::test]
async fn a_damaged_stored_key_blob_is_reported_as_corrupt() {
    let (storage, seal, _, _) = init_auto(1, 1).await;
    storage
        .put("core/hsm/barrier-unseal-keys", b"\x53\x01")
        .await
        .unwrap();
    let core = auto_core(&storage, &seal).await;
    assert!(core.is_sealed());
    let reason = core.last_auto_unseal_error().unwrap();
    assert!(
        reason.contains("restore core/hsm/barrier-unseal-keys"),
        "{reason}"
    );
    assert_eq!(core.metrics().await.auto_unseal_failures, 1);
}

#[tokio::test]
async fn storage_down_at_start_starts_sealed_and_recovers_without_restart() {
    let (memory, seal, _, _) = init_auto(1, 1).await;
    let flaky = Arc::new(FaultyStorage::over(&memory));
    flaky.set_down(true);
    let core = Core::builder()
        .storage(flaky.clone())
        .auto_seal(seal.clone())
        .options(fast_options())
        .build()
        .await
        .unwrap();
    assert!(core.is_sealed());
    assert!(core.seal_status().await.is_err());
    let task = core.spawn_auto_unseal();
    wait_until("a failed attempt", || {
        core.last_auto_unseal_error().is_some()
    })
    .await;
    let reason = core.last_auto_unseal_error().unwrap();
    assert!(reason.contains("simulated outage"), "{reason}");
    flaky.set_down(false);
    wait_until("the retry loop to unseal", || !core.is_sealed()).await;
    task.await.unwrap();
}

#[tokio::test]
async fn sys_operations_follow_the_token_policies() {
    let (_storage, core, init) = init_unsealed_shamir(1, 1).await;
    let child = token_with(
        &core,
        &init.root_token,
        serde_json::json!({"policies": ["default"], "ttl": "1h"}),
    )
    .await;
    let entry = core.check_token(&child).await.unwrap();
    assert!(!entry.is_root());
    for err in [
        core.seal(&child).await.unwrap_err(),
        core.rotate(&child).await.map(|_| ()).unwrap_err(),
        core.key_status(&child).await.map(|_| ()).unwrap_err(),
    ] {
        assert_eq!(err.status(), 403, "{err}");
    }
    // The same operations once a policy grants them (sudo where Vault
    // needs it).
    core.handle(
        LogicalRequest::new(Operation::Update, "sys/policies/acl/keys")
            .with_token(init.root_token.clone())
            .with_data(serde_json::json!({"policy": "path \"sys/key-status\" { capabilities = [\"read\"] }\npath \"sys/rotate\" { capabilities = [\"update\", \"sudo\"] }"})),
    )
    .await
    .unwrap();
    let operator = token_with(
        &core,
        &init.root_token,
        serde_json::json!({"policies": ["keys"]}),
    )
    .await;
    assert_eq!(core.rotate(&operator).await.unwrap(), 2);
    assert_eq!(core.key_status(&operator).await.unwrap().term, 2);
    assert_eq!(core.seal(&operator).await.unwrap_err().status(), 403);
    assert!(!core.is_sealed());
}

/// A token created by `parent` with `body` (`auth/token/create`).
async fn token_with(core: &Core, parent: &str, body: serde_json::Value) -> String {
    let created = core
        .handle(
            LogicalRequest::new(Operation::Update, "auth/token/create")
                .with_token(parent)
                .with_data(body),
        )
        .await
        .unwrap();
    created.auth.unwrap()["client_token"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn any_threshold_subset_in_any_order_unseals() {
    // (shares, threshold, the indices entered, in order)
    let cases: &[(usize, usize, &[usize])] = &[
        (2, 2, &[1, 0]),
        (5, 3, &[4, 2, 0]),
        (5, 5, &[3, 1, 4, 0, 2]),
        (7, 4, &[6, 5, 1, 3]),
        (10, 2, &[9, 3]),
    ];
    for &(shares, threshold, order) in cases {
        let (_, core) = new_shamir().await;
        let init = core.init(shamir_params(shares, threshold)).await.unwrap();
        for (entered, &i) in order.iter().enumerate() {
            // Alternate hex and base64, as operators do.
            let key = if entered % 2 == 0 {
                &init.keys[i]
            } else {
                &init.keys_base64[i]
            };
            let status = core.unseal(key).await.unwrap();
            if entered + 1 < threshold {
                assert_eq!(status.progress, entered + 1, "{shares}/{threshold}");
                assert!(status.sealed);
            } else {
                assert!(!status.sealed, "{shares}/{threshold} with {order:?}");
            }
        }
    }
}

#[tokio::test]
async fn shutdown_drops_the_keys_without_a_token() {
    let (_storage, core, init) = init_unsealed_shamir(3, 2).await;
    core.shutdown().await;
    assert!(core.is_sealed());
    core.shutdown().await;
    unseal_with(&core, &init.keys[..2]).await;
}

#[tokio::test]
async fn an_interrupted_init_never_looks_initialized() {
    let memory = Arc::new(MemoryStorage::new());
    let flaky = Arc::new(FaultyStorage::over(&memory));
    flaky.fail_transactions_touching(Some("core/seal-config"));
    let core = plain_shamir_core(&flaky).await;
    let err = core.init(shamir_params(3, 2)).await.unwrap_err();
    assert!(err.to_string().contains("simulated crash"), "{err}");
    let status = core.seal_status().await.unwrap();
    assert!(!status.initialized && status.sealed);
    assert!(
        memory
            .get("core/hsm/barrier-unseal-keys")
            .await
            .unwrap()
            .is_none()
    );
    flaky.fail_transactions_touching(None);
    let err = core.init(shamir_params(3, 2)).await.unwrap_err();
    assert!(
        err.to_string().contains("an earlier init was interrupted"),
        "{err}"
    );
}

#[tokio::test]
async fn init_and_unseal_cost_few_durable_writes() {
    // Each durable write is an fsync'd commit (redb) or a Raft commit
    // (Consul), which is what `operator init` costs on real storage.
    let storage = Arc::new(FaultyStorage::new());
    let core = plain_shamir_core(&storage).await;
    let init = core.init(shamir_params(5, 3)).await.unwrap();
    let writes = storage.writes();
    // keyring, token salt, root token, and last the wrapped keys, cluster
    // identity and seal-config: a crash before the last leaves nothing that
    // looks initialized.
    assert!(writes.len() <= 4, "{writes:#?}");
    let last = writes.last().unwrap();
    assert!(
        last.contains("core/seal-config") && last.contains("core/hsm/barrier-unseal-keys"),
        "{writes:#?}"
    );
    assert_eq!(
        writes
            .iter()
            .filter(|w| w.contains("core/seal-config"))
            .count(),
        1
    );
    storage.clear_writes();
    // Unsealing reads only: a sealed node never writes while it unseals.
    unseal_with(&core, &init.keys[..3]).await;
    let writes = storage.writes();
    assert!(writes.is_empty(), "{writes:#?}");
}

#[tokio::test]
async fn dropping_an_unsealed_core_releases_the_storage() {
    let storage = Arc::new(MemoryStorage::new());
    let seal = Arc::new(InsecureTestSeal::new());
    let core = auto_core(&storage, &seal).await;
    core.init(recovery_params(1, 1)).await.unwrap();
    assert!(!core.is_sealed());
    drop(core);
    // Background tasks hold only weak references: nothing keeps the
    // storage (an open database file) alive once the core is gone.
    tokio::task::yield_now().await;
    assert_eq!(Arc::strong_count(&storage), 1);
}
