//! Seal migration through the real server, as an operator does it: change
//! the `seal` stanzas, restart, `bao operator unseal -migrate` with the
//! keys. Shamir → AWS KMS key A → AWS KMS key B (A disabled) → Shamir (B
//! disabled), on redb and on a real Consul, data written before readable
//! after; and a `kill -9` (the test-only crash hook) right after every
//! durable migration step, then a restart that unseals and finishes.
//! With HA, three nodes on a real Consul migrate as the README says. KMS
//! is a real moto server.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test helpers

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};
use testkit::ha::{HaCluster, HaOptions};
use testkit::{
    ConsulDev, MotoServer, Node, NodeConfig, Scenario, SealStanza, StorageStanza, Timeline,
};

const CRASH_ENV: &str = "STRONGROOM_TEST_CRASH_AFTER_MIGRATION_STEP";

/// A `seal "awskms"` stanza for `key_id` on `moto`.
fn kms(moto: &MotoServer, key_id: &str, name: &str, priority: u32, disabled: bool) -> SealStanza {
    SealStanza::awskms(moto, key_id)
        .attr("name", name)
        .attr("priority", priority)
        .attr("disabled", disabled.to_string())
}

/// One node's directory and storage, restarted with different seals (each
/// start a fresh process on fresh ports over the same data).
struct Site {
    dir: PathBuf,
    timeline: Timeline,
    config: NodeConfig,
}

impl Site {
    fn new(sc: &Scenario, name: &str, consul: Option<&ConsulDev>) -> Self {
        // One node, killed between steps: with HA (on by default with
        // Consul) each new process would first wait for its predecessor's
        // lock session to expire (2 x TTL + lock-delay). These tests are
        // about seal migration, so HA is off.
        let storage = match consul {
            None => StorageStanza::redb(),
            Some(c) => StorageStanza::consul(
                &c.http_address(),
                Some(&format!("strongroom-{}/", uuid::Uuid::new_v4())),
            )
            .attr("ha_enabled", "false"),
        };
        Self {
            dir: sc.subdir(name),
            timeline: sc.timeline().clone(),
            config: common::node()
                .storage(storage)
                .attr("auto_unseal_max_backoff", "1s")
                .attr("seal_health_check_interval", "1s"),
        }
    }

    fn with_seals(&self, seals: &[SealStanza]) -> NodeConfig {
        seals
            .iter()
            .fold(self.config.clone(), |c, seal| c.seal(seal.clone()))
    }

    async fn start(&self, seals: &[SealStanza]) -> Node {
        Node::start_in(&self.dir, &self.timeline, "server", self.with_seals(seals)).await
    }

    /// Starts with the test-only crash hook armed at `step`.
    async fn start_crashing(&self, seals: &[SealStanza], step: &str) -> Node {
        let config = self.with_seals(seals).env(CRASH_ENV, step);
        Node::start_in(&self.dir, &self.timeline, "server", config).await
    }
}

async fn status(server: &Node) -> Value {
    let (code, body) = server.call("GET", "sys/seal-status", None, None).await;
    assert_eq!(code, 200, "{body}");
    body
}

async fn write_data(server: &Node, root: &str) {
    server.mount_kv(root, "kv", "1").await;
    let (code, body) = server
        .call("PUT", "kv/app", Some(root), Some(json!({"v": "before"})))
        .await;
    assert_eq!(code, 204, "{body}");
}

async fn data_readable(server: &Node, root: &str) {
    let (code, body) = server.call("GET", "kv/app", Some(root), None).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["data"]["v"], "before", "{body}");
}

/// `bao operator unseal -migrate KEY` for each key; the last output.
fn bao_unseal_migrate(server: &Node, keys: &[String]) -> String {
    let mut last = String::new();
    for key in keys {
        last = common::bao::success(
            &common::bao::unseal(server, key, true),
            "bao operator unseal -migrate",
        );
    }
    last
}

/// Enters keys with `migrate: true` over HTTP (the last may be cut by a
/// crash).
async fn migrate_http(server: &Node, keys: &[String]) -> Option<Value> {
    let mut last = None;
    for key in keys {
        last = server
            .try_call(
                "PUT",
                "sys/unseal",
                None,
                Some(json!({"key": key, "migrate": true})),
            )
            .await
            .ok()
            .map(|(_, body)| body);
    }
    last
}

async fn wait_exit(server: &Node) {
    testkit::wait::until(
        "the server crashes at the hook",
        Duration::from_secs(30),
        || async { server.exited() },
    )
    .await;
}

/// Shamir → KMS A → KMS B → Shamir, with the data checked at each stage.
async fn every_direction(sc: &Scenario, consul: Option<&ConsulDev>) {
    let moto = MotoServer::start_on(sc.timeline(), false).await;
    let (key_a, key_b) = (moto.create_key().await, moto.create_key().await);
    let node = Site::new(sc, "node", consul);
    let kms_a = kms(&moto, &key_a.key_id, "a", 1, false);
    let kms_b = kms(&moto, &key_b.key_id, "b", 1, false);

    let server = node.start(&[]).await;
    let init = server.init(3, 2).await;
    let (keys, root) = (init.keys_base64, init.root_token);
    server.unseal(&keys[..2]).await;
    write_data(&server, &root).await;
    drop(server);

    // Shamir → A: add the stanza, restart, -migrate with the unseal keys.
    let server = node.start(std::slice::from_ref(&kms_a)).await;
    let s = status(&server).await;
    assert_eq!(
        (s["sealed"].clone(), s["migration"].clone()),
        (json!(true), json!(true)),
        "{s}"
    );
    let (code, body) = server
        .call("PUT", "sys/unseal", None, Some(json!({"key": keys[0]})))
        .await;
    assert_eq!(code, 400, "{body}");
    assert!(
        body["errors"][0]
            .as_str()
            .unwrap()
            .starts_with("migrate option not provided and seal migration is pending"),
        "{body}"
    );
    let out = bao_unseal_migrate(&server, &keys[..2]);
    assert!(out.contains("Sealed") && out.contains("false"), "{out}");
    data_readable(&server, &root).await;
    drop(server);
    let server = node.start(std::slice::from_ref(&kms_a)).await;
    let s = server.wait_sealed(false, Duration::from_secs(20)).await;
    assert_eq!(s["type"], "awskms");
    assert_eq!(s["recovery_seal"], json!(true));
    data_readable(&server, &root).await;
    drop(server);

    // A → B: B enabled, A disabled; the old unseal keys are recovery keys.
    let server = node
        .start(&[kms_b.clone(), kms(&moto, &key_a.key_id, "a", 1, true)])
        .await;
    assert_eq!(status(&server).await["migration"], json!(true));
    // This time with Strongroom's own CLI.
    for key in &keys[1..3] {
        let out = Command::new(env!("CARGO_BIN_EXE_strongroom"))
            .args(["operator", "unseal", "-migrate", key])
            .env_clear()
            .env("STRONGROOM_ADDR", server.addr())
            .output()
            .expect("run strongroom");
        assert!(out.status.success(), "{out:?}");
    }
    server.wait_sealed(false, Duration::from_secs(20)).await;
    data_readable(&server, &root).await;
    drop(server);
    let server = node.start(std::slice::from_ref(&kms_b)).await;
    server.wait_sealed(false, Duration::from_secs(20)).await;
    data_readable(&server, &root).await;
    drop(server);

    // B → Shamir: B disabled, nothing else; the recovery keys unseal after.
    let server = node.start(&[kms(&moto, &key_b.key_id, "b", 1, true)]).await;
    assert_eq!(status(&server).await["migration"], json!(true));
    bao_unseal_migrate(&server, &keys[..2]);
    data_readable(&server, &root).await;
    drop(server);
    let server = node.start(&[]).await;
    let s = status(&server).await;
    assert_eq!(
        (s["type"].clone(), s["t"].clone(), s["n"].clone()),
        (json!("shamir"), json!(2), json!(3))
    );
    server.unseal(&keys[1..3]).await;
    data_readable(&server, &root).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_migration_direction_on_redb() {
    let sc = Scenario::new("every_migration_direction_on_redb");
    every_direction(&sc, None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_migration_direction_on_consul() {
    let sc = Scenario::new("every_migration_direction_on_consul");
    let consul = tokio::task::spawn_blocking(ConsulDev::start).await.unwrap();
    every_direction(&sc, Some(&consul)).await;
}

/// kill -9 right after each durable step, restart, finish.
async fn crash_at_every_step(sc: &Scenario, consul: Option<&ConsulDev>) {
    let moto = MotoServer::start_on(sc.timeline(), false).await;
    let (key_a, key_b) = (moto.create_key().await, moto.create_key().await);
    let kms_a = kms(&moto, &key_a.key_id, "a", 1, false);
    let kms_b = kms(&moto, &key_b.key_id, "b", 1, false);
    let a_disabled = kms(&moto, &key_a.key_id, "a", 1, true);

    // Shamir → auto: three steps.
    for step in [
        "shamir-to-auto:record-written",
        "shamir-to-auto:keyring-rekeyed",
        "shamir-to-auto:committed",
    ] {
        let node = Site::new(sc, step, consul);
        let server = node.start(&[]).await;
        let init = server.init(3, 2).await;
        let (keys, root) = (init.keys_base64, init.root_token);
        server.unseal(&keys[..2]).await;
        write_data(&server, &root).await;
        drop(server);

        let server = node
            .start_crashing(std::slice::from_ref(&kms_a), step)
            .await;
        assert!(
            migrate_http(&server, &keys[..2]).await.is_none(),
            "{step}: no crash?"
        );
        wait_exit(&server).await;
        assert!(server.log().contains(step), "{step}");
        drop(server);

        if step == "shamir-to-auto:keyring-rekeyed" {
            // The old config still unseals after the keyring changed.
            let server = node.start(&[]).await;
            server.unseal(&keys[..2]).await;
            data_readable(&server, &root).await;
            drop(server);
        }
        let server = node.start(std::slice::from_ref(&kms_a)).await;
        if step == "shamir-to-auto:committed" {
            server.wait_sealed(false, Duration::from_secs(20)).await;
        } else {
            assert_eq!(status(&server).await["migration"], json!(true), "{step}");
            migrate_http(&server, &keys[1..3]).await.unwrap();
        }
        data_readable(&server, &root).await;
        drop(server);
        let server = node.start(std::slice::from_ref(&kms_a)).await;
        server.wait_sealed(false, Duration::from_secs(20)).await;
        data_readable(&server, &root).await;
    }

    // auto → auto and auto → Shamir: one step each.
    for (step, seals, after) in [
        (
            "auto-to-auto:committed",
            vec![kms_b.clone(), a_disabled.clone()],
            vec![kms_b.clone()],
        ),
        ("auto-to-shamir:committed", vec![a_disabled.clone()], vec![]),
    ] {
        let node = Site::new(sc, step, consul);
        let server = node.start(std::slice::from_ref(&kms_a)).await;
        let init = server.init_recovery(3, 2).await;
        let (keys, root) = (init.recovery_keys_base64, init.root_token);
        server.wait_sealed(false, Duration::from_secs(20)).await;
        write_data(&server, &root).await;
        drop(server);

        let server = node.start_crashing(&seals, step).await;
        assert!(
            migrate_http(&server, &keys[..2]).await.is_none(),
            "{step}: no crash?"
        );
        wait_exit(&server).await;
        drop(server);
        let server = node.start(&after).await;
        if after.is_empty() {
            server.unseal(&keys[..2]).await;
        } else {
            server.wait_sealed(false, Duration::from_secs(20)).await;
        }
        data_readable(&server, &root).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_at_every_migration_step_on_redb() {
    let sc = Scenario::new("kill9_at_every_migration_step_on_redb");
    crash_at_every_step(&sc, None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_at_every_migration_step_on_consul() {
    let sc = Scenario::new("kill9_at_every_migration_step_on_consul");
    let consul = tokio::task::spawn_blocking(ConsulDev::start).await.unwrap();
    crash_at_every_step(&sc, Some(&consul)).await;
}

/// README "Seal migration", with HA, on three nodes sharing a real Consul:
/// Shamir → AWS KMS (moto). One standby restarts with the new stanza and
/// takes the keys with `bao operator unseal -migrate`, waiting for the HA
/// lock; the active node steps down (`bao operator step-down`); the
/// migrating node takes the lock, migrates and serves. Meanwhile the
/// third node stays sealed and the old active node stays a standby on the
/// old config; restarted with the new config, both follow (auto-unseal).
/// Then a new root token is generated with the old unseal keys (now the
/// recovery keys) through the bao CLI pointed at a standby.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_ha_one_node_migrates_and_the_others_follow_after_restart() {
    let sc = Scenario::new("in_ha_one_node_migrates_and_the_others_follow_after_restart");
    const DEADLINE: Duration = Duration::from_secs(60);
    let moto = MotoServer::start_on(sc.timeline(), false).await;
    let key = moto.create_key().await;
    let mut c = HaCluster::start(
        &sc,
        testkit::consul::shared_dev(),
        common::node().attr("auto_unseal_max_backoff", "1s"),
        HaOptions::default(),
    )
    .await;
    let (keys, root) = (c.keys().to_vec(), c.root().to_owned());
    let active = c.active(DEADLINE).await;
    let (migrating, sealed) = ((active + 1) % 3, (active + 2) % 3);
    write_data(c.node(active), &root).await;
    let name = |i: usize| c.node(i).name().to_owned();
    let (n_active, n_migrating, n_sealed) = (name(active), name(migrating), name(sealed));

    sc.step(format!(
        "{n_sealed} restarts on the old config and stays sealed"
    ));
    c.node(sealed).restart().await;
    assert_eq!(status(c.node(sealed)).await["sealed"], json!(true));

    sc.step(format!("{n_migrating} restarts with the awskms stanza"));
    let with_kms = |c: &HaCluster, i: usize| {
        c.node(i)
            .config()
            .clone()
            .seal(SealStanza::awskms(&moto, &key.key_id))
    };
    let config = with_kms(&c, migrating);
    c.node_mut(migrating).reconfigure(config);
    c.node(migrating).restart().await;
    let s = status(c.node(migrating)).await;
    assert_eq!(
        (s["sealed"].clone(), s["migration"].clone()),
        (json!(true), json!(true)),
        "{s}"
    );

    sc.step(format!(
        "bao operator unseal -migrate on {n_migrating}: it waits for the HA lock"
    ));
    let addr = c.node(migrating).addr().to_owned();
    let key = keys[0].clone();
    let unseal = tokio::task::spawn_blocking(move || {
        let home = tempfile::tempdir().unwrap();
        let args = ["operator", "unseal", "-migrate", &key];
        common::bao::bao_at(&addr, home.path(), None, &args, None)
    });
    c.node(migrating)
        .wait_log("seal migration: waiting for the HA lock", DEADLINE)
        .await;
    assert_eq!(status(c.node(migrating)).await["sealed"], json!(true));
    assert_eq!(c.node(active).health_code("").await, 200);

    sc.step(format!("bao operator step-down on {n_active}"));
    let home = tempfile::tempdir().unwrap();
    let args = ["operator", "step-down"];
    let out = common::bao::bao(c.node(active), home.path(), &root, &args, None);
    common::bao::success(&out, "bao operator step-down");
    let out = unseal.await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("Sealed") && stdout.contains("false"),
        "bao operator unseal -migrate: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(c.active(DEADLINE).await, migrating);
    let s = status(c.node(migrating)).await;
    assert_eq!(
        (
            s["type"].clone(),
            s["recovery_seal"].clone(),
            s["migration"].clone()
        ),
        (json!("awskms"), json!(true), json!(false)),
        "{s}"
    );
    data_readable(c.node(migrating), &root).await;

    sc.step(format!(
        "{n_active} stays a standby on the old config, {n_sealed} stays sealed"
    ));
    c.node(active)
        .wait_standby_of(&c.node(migrating).base, DEADLINE)
        .await;
    data_readable(c.node(active), &root).await;
    assert_eq!(status(c.node(sealed)).await["sealed"], json!(true));

    sc.step(format!(
        "{n_active} and {n_sealed} restart with the awskms stanza and follow"
    ));
    for i in [active, sealed] {
        let config = with_kms(&c, i);
        c.node_mut(i).reconfigure(config);
        c.node(i).restart().await;
        let s = c.node(i).wait_sealed(false, DEADLINE).await;
        assert_eq!(s["type"], "awskms", "{s}");
        c.node(i)
            .wait_standby_of(&c.node(migrating).base, DEADLINE)
            .await;
        data_readable(c.node(i), &root).await;
    }
    assert_eq!(c.active(DEADLINE).await, migrating);

    sc.step(format!(
        "bao operator generate-root through the standby {n_sealed}, with the recovery keys"
    ));
    let home = tempfile::tempdir().unwrap();
    let new_root = common::bao::cli_generate_root(c.node(sealed), home.path(), &root, &keys);
    let (code, body) = c
        .node(sealed)
        .call("GET", "auth/token/lookup-self", Some(&new_root), None)
        .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["data"]["policies"], json!(["root"]), "{body}");
    data_readable(c.node(sealed), &new_root).await;
}
