//! Seal migration, several seals at once, and break-glass, specified
//! through the core's API over `MemoryStorage` with seal-core's
//! `InsecureTestSeal` (which can play an unreachable KMS). A "restart" is a
//! new core over the same storage; a "crash" at a migration step is the
//! migration hook stopping the migration right after that durable step.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::ops::ControlFlow;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use seal_core::testing::InsecureTestSeal;
use seal_core::{HaBackend, Kek, MemoryHaBackend, MemoryStorage};
use strongroom::{
    Core, CoreBuilder, CoreError, CoreOptions, HaMode, InitParams, InitResult, MigrationStep,
    NamedSeal, RekeyParams,
};

const PATH: &str = "app/secret";

fn options() -> CoreOptions {
    CoreOptions::new("inmem")
        .with_auto_unseal_backoff(Duration::from_millis(10), Duration::from_millis(50))
        .with_seal_health_check_interval(Duration::from_millis(200))
}

fn builder(storage: &Arc<MemoryStorage>) -> CoreBuilder {
    Core::builder().storage(storage.clone()).options(options())
}

fn named(name: &str, priority: u32, seal: &Arc<InsecureTestSeal>) -> NamedSeal {
    NamedSeal {
        name: name.into(),
        priority,
        seal: seal.clone(),
    }
}

async fn write(core: &Core) {
    core.barrier()
        .put(PATH, b"kept across migrations")
        .await
        .unwrap();
}

async fn readable(core: &Core) {
    assert_eq!(
        core.barrier().get(PATH).await.unwrap().as_deref(),
        Some(&b"kept across migrations"[..])
    );
}

async fn wait_until(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn init_shamir(storage: &Arc<MemoryStorage>) -> InitResult {
    let core = builder(storage).shamir().build().await.unwrap();
    let init = core
        .init(InitParams {
            secret_shares: 3,
            secret_threshold: 2,
            ..InitParams::default()
        })
        .await
        .unwrap();
    for k in &init.keys[..2] {
        core.unseal(k).await.unwrap();
    }
    write(&core).await;
    core.shutdown().await;
    init
}

async fn init_auto(storage: &Arc<MemoryStorage>, seals: Vec<NamedSeal>, glass: bool) -> InitResult {
    let core = builder(storage)
        .auto_seals(seals)
        .recovery_unseal(glass)
        .build()
        .await
        .unwrap();
    let init = init_recovery(&core).await;
    assert!(!core.is_sealed());
    write(&core).await;
    core.shutdown().await;
    init
}

/// Initializes `core` (an auto seal) with three recovery keys, two to use.
async fn init_recovery(core: &Core) -> InitResult {
    core.init(InitParams {
        recovery_shares: 3,
        recovery_threshold: 2,
        ..InitParams::default()
    })
    .await
    .unwrap()
}

async fn migrate_with(core: &Core, keys: &[String]) -> Result<(), CoreError> {
    for k in keys {
        core.unseal_migrate(k).await?;
    }
    Ok(())
}

async fn stop_after(step: MigrationStep) -> strongroom::MigrationHook {
    Arc::new(move |done| {
        if done == step {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    })
}

#[tokio::test]
async fn shamir_to_auto_and_the_unseal_keys_become_recovery_keys() {
    let storage = Arc::new(MemoryStorage::new());
    let init = init_shamir(&storage).await;
    let kms = Arc::new(InsecureTestSeal::new());

    let core = builder(&storage)
        .auto_seal(kms.clone())
        .build()
        .await
        .unwrap();
    let status = core.seal_status().await.unwrap();
    assert!(status.sealed && status.migration, "{status:?}");
    assert_eq!((status.t, status.n), (2, 3));
    let err = core.unseal(&init.keys[0]).await.unwrap_err();
    assert!(
        err.to_string()
            .starts_with("migrate option not provided and seal migration is pending"),
        "{err}"
    );
    assert_eq!(err.status(), 400);
    migrate_with(&core, &init.keys[1..3]).await.unwrap();
    let status = core.seal_status().await.unwrap();
    assert!(!status.sealed && !status.migration, "{status:?}");
    assert!(status.recovery_seal);
    readable(&core).await;
    core.shutdown().await;

    // Restart: auto-unsealed; the old unseal keys authorize as recovery keys.
    let core = builder(&storage)
        .auto_seal(kms.clone())
        .build()
        .await
        .unwrap();
    assert!(!core.is_sealed());
    readable(&core).await;
    let started = core.generate_root_init(None, None).await.unwrap();
    core.generate_root_update(&init.keys[0], &started.nonce)
        .await
        .unwrap();
    let done = core
        .generate_root_update(&init.keys[2], &started.nonce)
        .await
        .unwrap();
    assert!(done.complete);
    // Unseal without -migrate on a migrated node: nothing to migrate.
    core.seal(&init.root_token).await.unwrap();
    let err = core.unseal_migrate(&init.keys[0]).await.unwrap_err();
    assert!(
        err.to_string()
            .starts_with("can't perform a seal migration, no migration seal found"),
        "{err}"
    );
}

#[tokio::test]
async fn auto_to_shamir_and_the_recovery_keys_become_unseal_keys() {
    let storage = Arc::new(MemoryStorage::new());
    let kms = Arc::new(InsecureTestSeal::new());
    let init = init_auto(&storage, vec![NamedSeal::single(kms.clone())], false).await;

    // Shamir without the old seal disabled: refused with Vault's words.
    let err = builder(&storage).shamir().build().await.unwrap_err();
    assert!(
        err.to_string().contains(
            "cannot seal migrate from \"test\" to Shamir, no disabled seal in configuration"
        ),
        "{err}"
    );

    let core = builder(&storage)
        .shamir()
        .migrate_from(vec![NamedSeal::single(kms.clone())])
        .build()
        .await
        .unwrap();
    let status = core.seal_status().await.unwrap();
    assert!(status.sealed && status.migration && status.recovery_seal);
    migrate_with(&core, &init.recovery_keys[..2]).await.unwrap();
    assert!(!core.is_sealed());
    readable(&core).await;
    core.shutdown().await;

    // A plain Shamir node now; the recovery keys unseal it.
    let core = builder(&storage).shamir().build().await.unwrap();
    let status = core.seal_status().await.unwrap();
    assert_eq!(
        (status.seal_type.as_str(), status.t, status.n),
        ("shamir", 2, 3)
    );
    for k in &init.recovery_keys[1..3] {
        core.unseal(k).await.unwrap();
    }
    assert!(!core.is_sealed());
    readable(&core).await;
}

#[tokio::test]
async fn auto_to_auto_moves_the_wraps_to_the_new_key() {
    let storage = Arc::new(MemoryStorage::new());
    let old = Arc::new(InsecureTestSeal::new());
    let new = Arc::new(InsecureTestSeal::new());
    let init = init_auto(&storage, vec![named("old", 1, &old)], false).await;

    let core = builder(&storage)
        .auto_seals(vec![named("new", 1, &new)])
        .migrate_from(vec![named("old", 1, &old)])
        .build()
        .await
        .unwrap();
    assert!(core.seal_status().await.unwrap().migration);
    assert!(core.is_sealed(), "no auto-unseal during a migration");
    // Wrong recovery keys are refused and nothing changes.
    let other = init_auto(
        &Arc::new(MemoryStorage::new()),
        vec![named("x", 1, &old)],
        false,
    )
    .await;
    let err = migrate_with(&core, &other.recovery_keys[..2])
        .await
        .unwrap_err();
    assert!(err.to_string().starts_with("invalid recovery key"), "{err}");
    migrate_with(&core, &init.recovery_keys[..2]).await.unwrap();
    readable(&core).await;
    core.shutdown().await;

    // The old key may go: only the new one is needed.
    old.set_unreachable(true);
    let core = builder(&storage)
        .auto_seals(vec![named("new", 1, &new)])
        .build()
        .await
        .unwrap();
    assert!(!core.is_sealed());
    readable(&core).await;
    core.shutdown().await;
    // A leftover disabled stanza is harmless: the migration is finished.
    let core = builder(&storage)
        .auto_seals(vec![named("new", 1, &new)])
        .migrate_from(vec![named("old", 1, &old)])
        .build()
        .await
        .unwrap();
    assert!(!core.is_sealed());
    assert!(!core.seal_status().await.unwrap().migration);
}

#[tokio::test]
async fn shamir_to_auto_survives_a_crash_at_every_step() {
    for step in [
        MigrationStep::ShamirToAutoRecordWritten,
        MigrationStep::ShamirToAutoKeyringRekeyed,
        MigrationStep::ShamirToAutoCommitted,
    ] {
        let storage = Arc::new(MemoryStorage::new());
        let init = init_shamir(&storage).await;
        let kms = Arc::new(InsecureTestSeal::new());
        let crashing = builder(&storage)
            .auto_seal(kms.clone())
            .migration_hook(stop_after(step).await)
            .build()
            .await
            .unwrap();
        let err = migrate_with(&crashing, &init.keys[..2]).await.unwrap_err();
        assert!(err.to_string().contains(step.as_str()), "{step}: {err}");
        assert!(crashing.is_sealed(), "{step}");
        drop(crashing);

        if step != MigrationStep::ShamirToAutoCommitted {
            // Going back to the Shamir config works at every step...
            let back = builder(&storage).shamir().build().await.unwrap();
            for k in &init.keys[..2] {
                back.unseal(k).await.unwrap();
            }
            readable(&back).await;
            back.shutdown().await;
        }
        // ...and so does finishing the migration.
        let core = builder(&storage)
            .auto_seal(kms.clone())
            .build()
            .await
            .unwrap();
        if step == MigrationStep::ShamirToAutoCommitted {
            assert!(!core.is_sealed(), "{step}: committed means migrated");
        } else {
            assert!(core.seal_status().await.unwrap().migration, "{step}");
            migrate_with(&core, &init.keys[1..3]).await.unwrap();
        }
        readable(&core).await;
        core.shutdown().await;
        let core = builder(&storage)
            .auto_seal(kms.clone())
            .build()
            .await
            .unwrap();
        assert!(!core.is_sealed(), "{step}");
        readable(&core).await;
    }
}

#[tokio::test]
async fn auto_migrations_commit_in_one_step() {
    // auto -> shamir, stopped right after its one durable step.
    let storage = Arc::new(MemoryStorage::new());
    let kms = Arc::new(InsecureTestSeal::new());
    let init = init_auto(&storage, vec![NamedSeal::single(kms.clone())], false).await;
    let crashing = builder(&storage)
        .shamir()
        .migrate_from(vec![NamedSeal::single(kms.clone())])
        .migration_hook(stop_after(MigrationStep::AutoToShamirCommitted).await)
        .build()
        .await
        .unwrap();
    assert!(
        migrate_with(&crashing, &init.recovery_keys[..2])
            .await
            .is_err()
    );
    drop(crashing);
    let core = builder(&storage).shamir().build().await.unwrap();
    for k in &init.recovery_keys[..2] {
        core.unseal(k).await.unwrap();
    }
    readable(&core).await;

    // auto -> auto, likewise.
    let storage = Arc::new(MemoryStorage::new());
    let (a, b) = (
        Arc::new(InsecureTestSeal::new()),
        Arc::new(InsecureTestSeal::new()),
    );
    let init = init_auto(&storage, vec![named("a", 1, &a)], false).await;
    let crashing = builder(&storage)
        .auto_seals(vec![named("b", 1, &b)])
        .migrate_from(vec![named("a", 1, &a)])
        .migration_hook(stop_after(MigrationStep::AutoToAutoCommitted).await)
        .build()
        .await
        .unwrap();
    assert!(
        migrate_with(&crashing, &init.recovery_keys[..2])
            .await
            .is_err()
    );
    drop(crashing);
    a.set_unreachable(true);
    let core = builder(&storage)
        .auto_seals(vec![named("b", 1, &b)])
        .build()
        .await
        .unwrap();
    assert!(!core.is_sealed());
    readable(&core).await;
}

#[tokio::test]
async fn any_one_of_several_seals_unseals_and_a_returning_seal_is_rewrapped() {
    let storage = Arc::new(MemoryStorage::new());
    let (east, west) = (
        Arc::new(InsecureTestSeal::new()),
        Arc::new(InsecureTestSeal::new()),
    );
    let seals = || vec![named("east", 1, &east), named("west", 2, &west)];
    init_auto(&storage, seals(), false).await;

    // The primary is gone; a restarted node unseals through the secondary.
    east.set_unreachable(true);
    let core = builder(&storage).auto_seals(seals()).build().await.unwrap();
    assert!(!core.is_sealed());
    readable(&core).await;
    let status = core.seal_backend_status();
    assert!(!status.healthy);
    assert!(!status.backends[0].healthy && status.backends[0].unhealthy_since.is_some());
    assert!(status.backends[1].healthy);
    assert!(!status.fully_wrapped);
    let metrics = core.metrics().await;
    assert_eq!(metrics.seals.len(), 2);
    assert!(!metrics.seals[0].healthy);

    // It returns: the upkeep loop sees it and checks (or refreshes) its wrap.
    east.set_unreachable(false);
    wait_until("the primary is healthy and fully wrapped", async || {
        let s = core.seal_backend_status();
        s.healthy && s.fully_wrapped
    })
    .await;
    core.shutdown().await;

    // A seal added while it is down gets its wrap when it answers.
    let north = Arc::new(InsecureTestSeal::new());
    north.set_unreachable(true);
    let three = || {
        vec![
            named("east", 1, &east),
            named("west", 2, &west),
            named("north", 3, &north),
        ]
    };
    let core = builder(&storage).auto_seals(three()).build().await.unwrap();
    assert!(!core.is_sealed());
    wait_until("the others are wrapped", async || {
        !core.seal_backend_status().backends[2].healthy
    })
    .await;
    assert!(!core.seal_backend_status().fully_wrapped);
    north.set_unreachable(false);
    wait_until("north holds a wrap", async || {
        core.seal_backend_status().fully_wrapped
    })
    .await;
    core.shutdown().await;
    east.set_unreachable(true);
    west.set_unreachable(true);
    let core = builder(&storage).auto_seals(three()).build().await.unwrap();
    assert!(!core.is_sealed(), "north alone unseals");
    readable(&core).await;
    core.shutdown().await;

    // Removing a seal from the config drops its wrap at the next unseal.
    east.set_unreachable(false);
    west.set_unreachable(false);
    let core = builder(&storage)
        .auto_seals(vec![named("west", 1, &west)])
        .build()
        .await
        .unwrap();
    wait_until("the wraps are refreshed", async || {
        core.seal_backend_status().fully_wrapped
    })
    .await;
    core.shutdown().await;
    west.set_unreachable(true);
    let core = builder(&storage)
        .auto_seals(vec![named("east", 1, &east)])
        .build()
        .await
        .unwrap();
    assert!(core.is_sealed(), "east's wrap was removed with it");
}

#[tokio::test]
async fn break_glass_unseals_with_recovery_keys_when_every_seal_is_gone() {
    let storage = Arc::new(MemoryStorage::new());
    let (a, b) = (
        Arc::new(InsecureTestSeal::new()),
        Arc::new(InsecureTestSeal::new()),
    );
    let seals = || vec![named("a", 1, &a), named("b", 2, &b)];
    let init = init_auto(&storage, seals(), true).await;

    a.set_unreachable(true);
    b.set_unreachable(true);
    let core = builder(&storage)
        .auto_seals(seals())
        .recovery_unseal(true)
        .build()
        .await
        .unwrap();
    assert!(core.is_sealed());
    // Wrong recovery keys do not open the copy.
    let elsewhere = Arc::new(InsecureTestSeal::new());
    let other = init_auto(
        &Arc::new(MemoryStorage::new()),
        vec![named("a", 1, &elsewhere)],
        false,
    )
    .await;
    core.unseal(&other.recovery_keys[0]).await.unwrap();
    let err = core.unseal(&other.recovery_keys[1]).await.unwrap_err();
    assert!(err.to_string().starts_with("invalid recovery key"), "{err}");
    core.unseal(&init.recovery_keys[0]).await.unwrap();
    core.unseal(&init.recovery_keys[2]).await.unwrap();
    assert!(!core.is_sealed());
    readable(&core).await;
    core.shutdown().await;

    // A recovery rekey moves the copy to the new recovery keys.
    a.set_unreachable(false);
    let core = builder(&storage)
        .auto_seals(seals())
        .recovery_unseal(true)
        .build()
        .await
        .unwrap();
    assert!(!core.is_sealed());
    let started = core
        .rekey_init(
            RekeyParams {
                secret_shares: 2,
                secret_threshold: 2,
                ..RekeyParams::default()
            },
            true,
        )
        .await
        .unwrap();
    core.rekey_update(&init.recovery_keys[0], &started.nonce, true)
        .await
        .unwrap();
    let rekeyed = core
        .rekey_update(&init.recovery_keys[1], &started.nonce, true)
        .await
        .unwrap();
    let new_keys = rekeyed.keys.clone();
    core.shutdown().await;
    a.set_unreachable(true);
    let core = builder(&storage)
        .auto_seals(seals())
        .recovery_unseal(true)
        .build()
        .await
        .unwrap();
    core.unseal(&init.recovery_keys[0]).await.unwrap();
    let err = core.unseal(&init.recovery_keys[1]).await.unwrap_err();
    assert!(err.to_string().starts_with("invalid recovery key"), "{err}");
    for k in &new_keys {
        core.unseal(k).await.unwrap();
    }
    assert!(!core.is_sealed());
    core.shutdown().await;

    // Off: the next unseal removes the copy; recovery keys then cannot
    // unseal, and say why.
    a.set_unreachable(false);
    b.set_unreachable(false);
    let core = builder(&storage).auto_seals(seals()).build().await.unwrap();
    wait_until("the copy is removed", async || {
        core.seal_backend_status().fully_wrapped
    })
    .await;
    core.shutdown().await;
    a.set_unreachable(true);
    b.set_unreachable(true);
    let core = builder(&storage).auto_seals(seals()).build().await.unwrap();
    core.unseal(&new_keys[0]).await.unwrap();
    let err = core.unseal(&new_keys[1]).await.unwrap_err();
    assert!(
        err.to_string()
            .starts_with("recovery keys cannot unseal this node"),
        "{err}"
    );
    assert!(err.to_string().contains("recovery_unseal"), "{err}");
    assert!(core.is_sealed());
}

/// Node `i` of an HA cluster over `storage` and `ha`, with the seals
/// `seals` sets on its builder (the node's config).
fn ha_node(
    storage: &Arc<MemoryStorage>,
    ha: &MemoryHaBackend,
    i: usize,
    seals: impl FnOnce(CoreBuilder) -> CoreBuilder,
) -> impl std::future::Future<Output = Core> {
    let contender: Arc<dyn HaBackend> = Arc::new(ha.contender(Duration::from_millis(500)));
    let options = options()
        .with_api_addr(format!("http://node{i}:8200"))
        // A stepped-down node waits for others rather than a timer.
        .with_step_down_grace(Duration::from_secs(60))
        .with_migration_lock_wait(Duration::from_secs(20));
    let builder = seals(
        Core::builder()
            .storage(storage.clone())
            .ha(contender)
            .options(options),
    );
    async move { builder.build().await.unwrap() }
}

async fn wait_active(node: &Core, what: &str) {
    wait_until(what, async || node.node_state().mode == HaMode::Active).await;
}

/// Until `node` is a standby that knows node `leader` is active (it
/// learns that from its election task's reads of the lock, after its
/// unseal or a step-down: until then it is a standby that knows no leader).
async fn wait_standby_of(node: &Core, name: &str, leader: usize) {
    let addr = format!("http://node{leader}:8200");
    wait_until(&format!("{name} is a standby of {addr}"), async || {
        matches!(
            node.node_state().mode,
            HaMode::Standby { leader: Some(ref l) } if l.api_addr == addr
        )
    })
    .await;
}

/// East was taken out and stays so: alone it opens nothing (`why` says
/// what it would mean if it did); west opens and the data is readable.
async fn only_west_opens(
    storage: &Arc<MemoryStorage>,
    east: &Arc<InsecureTestSeal>,
    west: &Arc<InsecureTestSeal>,
    why: &str,
) {
    let core = builder(storage)
        .auto_seal(east.clone())
        .build()
        .await
        .unwrap();
    assert!(core.is_sealed(), "{why}");
    core.shutdown().await;
    let core = builder(storage)
        .auto_seal(west.clone())
        .build()
        .await
        .unwrap();
    assert!(!core.is_sealed());
    readable(&core).await;
}

/// Until node `i` logged that it leaves the stored keys alone because
/// another node moved the seal generation on.
async fn wait_generation_warning(logs: &Mutex<Vec<u8>>, i: usize) {
    let addr = format!("http://node{i}:8200");
    wait_until(
        &format!("{addr} warns that the seals were changed by another node"),
        async || {
            String::from_utf8_lossy(&logs.lock().unwrap())
                .lines()
                .any(|l| {
                    l.contains("the seals were migrated (or a seal removed)") && l.contains(&addr)
                })
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_ha_one_node_migrates_and_the_others_follow_after_restart() {
    let storage = Arc::new(MemoryStorage::new());
    let ha = MemoryHaBackend::new();
    let kms = Arc::new(InsecureTestSeal::new());
    let n0 = ha_node(&storage, &ha, 0, CoreBuilder::shamir).await;
    let init = n0
        .init(InitParams {
            secret_shares: 3,
            secret_threshold: 2,
            ..InitParams::default()
        })
        .await
        .unwrap();
    let n1 = ha_node(&storage, &ha, 1, CoreBuilder::shamir).await;
    let n2 = ha_node(&storage, &ha, 2, CoreBuilder::shamir).await; // stays sealed
    for k in &init.keys[..2] {
        n0.unseal(k).await.unwrap();
    }
    wait_active(&n0, "node 0 is active").await;
    write(&n0).await;
    for k in &init.keys[..2] {
        n1.unseal(k).await.unwrap();
    }

    // Node 0 gets the new config and restarts: node 1 takes over.
    n0.shutdown().await;
    drop(n0);
    wait_active(&n1, "node 1 took over").await;
    let n0 = ha_node(&storage, &ha, 0, |b| b.auto_seal(kms.clone())).await;
    assert!(n0.seal_status().await.unwrap().migration);

    // The migration waits for the lock; the active node steps down for it.
    let migrating = {
        let n0 = n0.clone();
        let keys = init.keys.clone();
        tokio::spawn(async move { migrate_with(&n0, &keys[..2]).await })
    };
    wait_until("node 0 waits for the HA lock", async || ha.waiting() > 0).await;
    assert!(n0.is_sealed(), "no migration without the lock");
    n1.step_down(&init.root_token).await.unwrap();
    migrating.await.unwrap().unwrap();
    wait_active(&n0, "node 0 migrated and is active").await;
    readable(&n0).await;
    assert!(!n0.seal_status().await.unwrap().migration);
    // Node 1 stays an unsealed standby on its old config meanwhile.
    assert!(!n1.is_sealed());
    // Root generation belongs to the active node: a standby sends callers on.
    let err = n1.generate_root_status().await.unwrap_err();
    assert!(matches!(err, CoreError::Standby { .. }), "{err:?}");
    assert!(n0.generate_root_status().await.is_ok());

    // The others follow once restarted with the new config.
    n1.shutdown().await;
    drop(n1);
    drop(n2);
    let n1 = ha_node(&storage, &ha, 1, |b| b.auto_seal(kms.clone())).await;
    let n2 = ha_node(&storage, &ha, 2, |b| b.auto_seal(kms.clone())).await;
    assert!(!n1.is_sealed() && !n2.is_sealed());
    wait_standby_of(&n1, "node 1", 0).await;
    wait_standby_of(&n2, "node 2", 0).await;
    // The old config no longer fits: the Shamir node is told why.
    let err = Core::builder()
        .storage(storage.clone())
        .shamir()
        .build()
        .await
        .unwrap_err();
    assert!(err.to_string().contains("no disabled seal"), "{err}");
}

/// Everything logged in this test binary from the first call on (a
/// process-wide subscriber: a thread-scoped one misses events of tasks on
/// other threads, and now and then others too, see storage-consul's
/// `retry_logs.rs`). Only the seal generation test reads it.
fn captured_logs() -> Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        #[derive(Clone)]
        struct Buffer(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Buffer {
            fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(data);
                Ok(data.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let logs = Arc::new(Mutex::new(Vec::new()));
        let writer = Buffer(logs.clone());
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::INFO)
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::set_global_default(subscriber).unwrap();
        logs
    })
    .clone()
}

/// The seal generation (`core/seal-gen-info`) guard. Node 1 runs with
/// two seals, east and west, but cannot reach west (its own view of the
/// KMS: the same key, its own outage), so only east wraps the keys. Node
/// 0 then migrates east → west (west enabled, east the disabled stanza)
/// while node 1 keeps running on its old config. When node 1 is active
/// again and reaches west, its seal upkeep would open the keys through
/// west and re-wrap them with every seal it knows, east included, giving
/// the retired key its wrap back. The generation bumped by the migration
/// tells it the stored keys moved on: it warns and leaves them alone, and
/// east alone opens nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_on_the_old_seals_never_rewraps_keys_another_node_migrated() {
    let logs = captured_logs();
    let storage = Arc::new(MemoryStorage::new());
    let ha = MemoryHaBackend::new();
    let east = Arc::new(InsecureTestSeal::new());
    // West's KMS key, as node 0 and node 1 each reach it.
    let west_key = seal_core::random_bytes(32).unwrap();
    let west_for = || {
        Arc::new(InsecureTestSeal::with_key(
            Kek::from_bytes(&west_key).unwrap(),
        ))
    };
    let (west, west_from_n1) = (west_for(), west_for());
    west_from_n1.set_unreachable(true);
    let n0 = ha_node(&storage, &ha, 0, |b| b.auto_seal(east.clone())).await;
    let init = init_recovery(&n0).await;
    wait_active(&n0, "node 0 is active").await;
    write(&n0).await;
    let n1 = ha_node(&storage, &ha, 1, |b| {
        b.auto_seals(vec![
            named("east", 1, &east),
            named("west", 2, &west_from_n1),
        ])
    })
    .await;
    assert!(!n1.is_sealed());

    // Node 0 restarts to migrate; node 1 holds the lock meanwhile (its
    // upkeep finds west down: the keys stay wrapped by east alone).
    n0.shutdown().await;
    drop(n0);
    wait_active(&n1, "node 1 took over").await;
    let n0 = ha_node(&storage, &ha, 0, |b| {
        b.auto_seals(vec![named("west", 1, &west)])
            .migrate_from(vec![named("east", 1, &east)])
    })
    .await;
    assert!(n0.seal_status().await.unwrap().migration);
    let migrating = {
        let n0 = n0.clone();
        let keys = init.recovery_keys.clone();
        tokio::spawn(async move { migrate_with(&n0, &keys[..2]).await })
    };
    wait_until("node 0 waits for the HA lock", async || ha.waiting() > 0).await;
    n1.step_down(&init.root_token).await.unwrap();
    migrating.await.unwrap().unwrap();
    wait_active(&n0, "node 0 migrated and is active").await;

    // Node 1, on the old seals and reaching west now, is active again:
    // its upkeep finds the keys migrated and leaves them alone. (Having
    // stepped down, it contends again once it saw node 0 take over.)
    wait_standby_of(&n1, "node 1", 0).await;
    west_from_n1.set_unreachable(false);
    n0.shutdown().await;
    drop(n0);
    wait_active(&n1, "node 1 on the old seals is active again").await;
    wait_generation_warning(&logs, 1).await;
    readable(&n1).await;
    n1.shutdown().await;
    drop(n1);
    only_west_opens(&storage, &east, &west, "the retired seal got its wrap back").await;
}

/// The same guard for a seal removed from a multi-seal config, which is a
/// config change rather than a migration. Node 10 writes the keys wrapped
/// by east and west; node 11 runs with both but cannot reach west, so it
/// never holds a full set of checked wraps. Node 10 restarts with west
/// only and, as the active node, drops east's wraps: the seal generation
/// moves on. When node 11 is active again and reaches west, it would put
/// east's wraps back; the generation stops it, and east alone opens
/// nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_still_listing_a_removed_seal_never_puts_its_wraps_back() {
    let logs = captured_logs();
    let storage = Arc::new(MemoryStorage::new());
    let ha = MemoryHaBackend::new();
    let east = Arc::new(InsecureTestSeal::new());
    let west_key = seal_core::random_bytes(32).unwrap();
    let west_for = || {
        Arc::new(InsecureTestSeal::with_key(
            Kek::from_bytes(&west_key).unwrap(),
        ))
    };
    let (west, west_from_n11) = (west_for(), west_for());
    let n10 = ha_node(&storage, &ha, 10, |b| {
        b.auto_seals(vec![named("east", 1, &east), named("west", 2, &west)])
    })
    .await;
    let init = init_recovery(&n10).await;
    wait_active(&n10, "node 10 is active").await;
    write(&n10).await;
    west_from_n11.set_unreachable(true);
    let n11 = ha_node(&storage, &ha, 11, |b| {
        b.auto_seals(vec![
            named("east", 1, &east),
            named("west", 2, &west_from_n11),
        ])
    })
    .await;
    assert!(!n11.is_sealed());

    // Node 10 restarts with west only; node 11 holds the lock meanwhile,
    // then steps down for it.
    n10.shutdown().await;
    drop(n10);
    wait_active(&n11, "node 11 took over").await;
    let n10 = ha_node(&storage, &ha, 10, |b| {
        b.auto_seals(vec![named("west", 1, &west)])
    })
    .await;
    assert!(!n10.is_sealed());
    n11.step_down(&init.root_token).await.unwrap();
    wait_active(&n10, "node 10 is active on west alone").await;
    wait_until("node 10 dropped east's wraps", async || {
        n10.seal_backend_status().fully_wrapped
    })
    .await;
    readable(&n10).await;
    wait_standby_of(&n11, "node 11", 10).await;

    // Node 11, still listing east and reaching west now, is active again.
    west_from_n11.set_unreachable(false);
    n10.shutdown().await;
    drop(n10);
    wait_active(&n11, "node 11 with east still listed is active again").await;
    wait_generation_warning(&logs, 11).await;
    readable(&n11).await;
    n11.shutdown().await;
    drop(n11);
    only_west_opens(
        &storage,
        &east,
        &west,
        "the removed seal got its wraps back",
    )
    .await;
}
