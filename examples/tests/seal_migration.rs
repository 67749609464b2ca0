//! Seal migration through the real server, as an operator does it: change
//! the `seal` stanzas, restart, `bao operator unseal -migrate` with the
//! keys. Shamir → AWS KMS key A → AWS KMS key B (A disabled) → Shamir (B
//! disabled), on redb and on a real Consul, data written before readable
//! after; and a `kill -9` (the test-only crash hook) right after every
//! durable migration step, then a restart that unseals and finishes.
//! KMS is a real moto server.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test helpers

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{Server, free_port, init, mount_kv, plain_listener, redb_storage, unseal};
use seal_awskms::testing::{MotoServer, TEST_ACCESS_KEY, TEST_REGION, TEST_SECRET_KEY};
use serde_json::{Value, json};
use storage_consul::testing::ConsulDev;

const CRASH_ENV: &str = "STRONGROOM_TEST_CRASH_AFTER_MIGRATION_STEP";

/// A `seal "awskms"` stanza for `key_id` on `moto`.
fn kms(moto: &MotoServer, key_id: &str, name: &str, priority: u32, disabled: bool) -> String {
    format!(
        "seal \"awskms\" {{\n  name = \"{name}\"\n  priority = {priority}\n  disabled = \
         \"{disabled}\"\n  region = \"{TEST_REGION}\"\n  kms_key_id = \"{key_id}\"\n  endpoint = \
         \"{endpoint}\"\n  access_key = \"{TEST_ACCESS_KEY}\"\n  secret_key = \
         \"{TEST_SECRET_KEY}\"\n  connect_timeout = \"1s\"\n  attempt_timeout = \"2s\"\n  \
         operation_timeout = \"5s\"\n  max_attempts = 1\n}}\n",
        endpoint = moto.endpoint(),
    )
}

/// One node's directory, port and storage, restarted with different seals.
struct Node {
    dir: PathBuf,
    port: u16,
    storage: String,
}

impl Node {
    fn new(dir: &Path, consul: Option<&ConsulDev>) -> Self {
        let storage = match consul {
            None => redb_storage(dir),
            Some(c) => format!(
                "storage \"consul\" {{\n  address = \"{}\"\n  path = \"strongroom-{}/\"\n}}\n",
                c.http_address(),
                uuid::Uuid::new_v4()
            ),
        };
        Self {
            dir: dir.to_path_buf(),
            port: free_port(),
            storage,
        }
    }

    fn config(&self, seals: &str) -> String {
        format!(
            "{}{seals}{}auto_unseal_max_backoff = \"1s\"\nseal_health_check_interval = \"1s\"\n",
            self.storage,
            plain_listener(self.port)
        )
    }

    async fn start(&self, seals: &str) -> Server {
        Server::start(&self.dir, self.port, &self.config(seals)).await
    }

    /// Starts with the test-only crash hook armed at `step`.
    async fn start_crashing(&self, seals: &str, step: &str) -> Server {
        let config_path = self.dir.join("server.hcl");
        std::fs::write(&config_path, self.config(seals)).unwrap();
        let mut server = Server::spawn_with_env(
            &self.dir,
            self.port,
            &["server", &format!("-config={}", config_path.display())],
            &[(CRASH_ENV, step)],
        );
        server.wait_ready().await;
        server
    }
}

async fn status(server: &Server) -> Value {
    let (code, body) = server.call("GET", "sys/seal-status", None, None).await;
    assert_eq!(code, 200, "{body}");
    body
}

async fn write_data(server: &Server, root: &str) {
    mount_kv(server, root, "kv", "1").await;
    let (code, body) = server
        .call("PUT", "kv/app", Some(root), Some(json!({"v": "before"})))
        .await;
    assert_eq!(code, 204, "{body}");
}

async fn data_readable(server: &Server, root: &str) {
    let (code, body) = server.call("GET", "kv/app", Some(root), None).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["data"]["v"], "before", "{body}");
}

/// `bao operator unseal -migrate KEY` for each key; the last output.
fn bao_unseal_migrate(server: &Server, keys: &[String]) -> String {
    let bao = std::env::var("STRONGROOM_BAO_BIN").unwrap_or_else(|_| {
        let cache = std::env::var("STRONGROOM_CACHE")
            .unwrap_or_else(|_| format!("{}/.cache/strongroom", std::env::var("HOME").unwrap()));
        format!("{cache}/venv/bin/bao")
    });
    assert!(
        Path::new(&bao).exists(),
        "the OpenBao CLI is not at {bao}: run scripts/setup-tools.sh"
    );
    let home = tempfile::tempdir().unwrap();
    let mut last = String::new();
    for key in keys {
        let out = Command::new(&bao)
            .args(["operator", "unseal", "-migrate", key])
            .env_clear()
            .env("HOME", home.path())
            .env("BAO_ADDR", &server.base)
            .output()
            .expect("run bao");
        assert!(
            out.status.success(),
            "bao operator unseal -migrate: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        last = String::from_utf8_lossy(&out.stdout).into_owned();
    }
    last
}

/// Enters keys with `migrate: true` over HTTP (the last may be cut by a
/// crash).
async fn migrate_http(server: &Server, keys: &[String]) -> Option<Value> {
    let mut last = None;
    for key in keys {
        let response = server
            .http
            .put(format!("{}/v1/sys/unseal", server.base))
            .json(&json!({"key": key, "migrate": true}))
            .send()
            .await;
        last = match response {
            Ok(r) => Some(r.json::<Value>().await.unwrap_or(Value::Null)),
            Err(_) => None,
        };
    }
    last
}

async fn wait_exit(server: &mut Server) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while server.exited().is_none() {
        assert!(
            Instant::now() < deadline,
            "the server did not crash at the hook; log:\n{}",
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Shamir → KMS A → KMS B → Shamir, with the data checked at each stage.
async fn every_direction(consul: Option<&ConsulDev>) {
    let moto = MotoServer::start().await;
    let (key_a, key_b) = (moto.create_key().await, moto.create_key().await);
    let dir = tempfile::tempdir().unwrap();
    let node = Node::new(dir.path(), consul);
    let kms_a = kms(&moto, &key_a.key_id, "a", 1, false);
    let kms_b = kms(&moto, &key_b.key_id, "b", 1, false);

    let server = node.start("").await;
    let (keys, root) = init(&server, 3, 2).await;
    unseal(&server, &keys[..2]).await;
    write_data(&server, &root).await;
    drop(server);

    // Shamir → A: add the stanza, restart, -migrate with the unseal keys.
    let server = node.start(&kms_a).await;
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
    let server = node.start(&kms_a).await;
    let s = server.wait_sealed(false, Duration::from_secs(20)).await;
    assert_eq!(s["type"], "awskms");
    assert_eq!(s["recovery_seal"], json!(true));
    data_readable(&server, &root).await;
    drop(server);

    // A → B: B enabled, A disabled; the old unseal keys are recovery keys.
    let server = node
        .start(&format!(
            "{kms_b}{}",
            kms(&moto, &key_a.key_id, "a", 1, true)
        ))
        .await;
    assert_eq!(status(&server).await["migration"], json!(true));
    migrate_http(&server, &keys[1..3]).await.unwrap();
    server.wait_sealed(false, Duration::from_secs(20)).await;
    data_readable(&server, &root).await;
    drop(server);
    let server = node.start(&kms_b).await;
    server.wait_sealed(false, Duration::from_secs(20)).await;
    data_readable(&server, &root).await;
    drop(server);

    // B → Shamir: B disabled, nothing else; the recovery keys unseal after.
    let server = node.start(&kms(&moto, &key_b.key_id, "b", 1, true)).await;
    assert_eq!(status(&server).await["migration"], json!(true));
    bao_unseal_migrate(&server, &keys[..2]);
    data_readable(&server, &root).await;
    drop(server);
    let server = node.start("").await;
    let s = status(&server).await;
    assert_eq!(
        (s["type"].clone(), s["t"].clone(), s["n"].clone()),
        (json!("shamir"), json!(2), json!(3))
    );
    unseal(&server, &keys[1..3]).await;
    data_readable(&server, &root).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_migration_direction_on_redb() {
    every_direction(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_migration_direction_on_consul() {
    let consul = tokio::task::spawn_blocking(ConsulDev::start).await.unwrap();
    every_direction(Some(&consul)).await;
}

/// kill -9 right after each durable step, restart, finish.
async fn crash_at_every_step(consul: Option<&ConsulDev>) {
    let moto = MotoServer::start().await;
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
        let dir = tempfile::tempdir().unwrap();
        let node = Node::new(dir.path(), consul);
        let server = node.start("").await;
        let (keys, root) = init(&server, 3, 2).await;
        unseal(&server, &keys[..2]).await;
        write_data(&server, &root).await;
        drop(server);

        let mut server = node.start_crashing(&kms_a, step).await;
        assert!(
            migrate_http(&server, &keys[..2]).await.is_none(),
            "{step}: no crash?"
        );
        wait_exit(&mut server).await;
        assert!(server.log().contains(step), "{step}");
        drop(server);

        if step == "shamir-to-auto:keyring-rekeyed" {
            // The old config still unseals after the keyring changed.
            let server = node.start("").await;
            unseal(&server, &keys[..2]).await;
            data_readable(&server, &root).await;
            drop(server);
        }
        let server = node.start(&kms_a).await;
        if step == "shamir-to-auto:committed" {
            server.wait_sealed(false, Duration::from_secs(20)).await;
        } else {
            assert_eq!(status(&server).await["migration"], json!(true), "{step}");
            migrate_http(&server, &keys[1..3]).await.unwrap();
        }
        data_readable(&server, &root).await;
        drop(server);
        let server = node.start(&kms_a).await;
        server.wait_sealed(false, Duration::from_secs(20)).await;
        data_readable(&server, &root).await;
    }

    // auto → auto and auto → Shamir: one step each.
    for (step, seals, after) in [
        (
            "auto-to-auto:committed",
            format!("{kms_b}{a_disabled}"),
            kms_b.clone(),
        ),
        (
            "auto-to-shamir:committed",
            a_disabled.clone(),
            String::new(),
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let node = Node::new(dir.path(), consul);
        let server = node.start(&kms_a).await;
        let (code, body) = server
            .call(
                "PUT",
                "sys/init",
                None,
                Some(json!({"recovery_shares": 3, "recovery_threshold": 2})),
            )
            .await;
        assert_eq!(code, 200, "{body}");
        let root = body["root_token"].as_str().unwrap().to_owned();
        let keys: Vec<String> = body["recovery_keys_base64"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k.as_str().unwrap().to_owned())
            .collect();
        server.wait_sealed(false, Duration::from_secs(20)).await;
        write_data(&server, &root).await;
        drop(server);

        let mut server = node.start_crashing(&seals, step).await;
        assert!(
            migrate_http(&server, &keys[..2]).await.is_none(),
            "{step}: no crash?"
        );
        wait_exit(&mut server).await;
        drop(server);
        let server = node.start(&after).await;
        if after.is_empty() {
            unseal(&server, &keys[..2]).await;
        } else {
            server.wait_sealed(false, Duration::from_secs(20)).await;
        }
        data_readable(&server, &root).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_at_every_migration_step_on_redb() {
    crash_at_every_step(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_at_every_migration_step_on_consul() {
    let consul = tokio::task::spawn_blocking(ConsulDev::start).await.unwrap();
    crash_at_every_step(Some(&consul)).await;
}
