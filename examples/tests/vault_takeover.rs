//! Taking over a data set that the real HashiCorp Vault v1.1.2 wrote to a
//! Consul prefix (real Consul; moto for AWS KMS): Strongroom unseals with
//! Vault's keys, serves Vault's mounts, secrets, versions and tokens, leaves
//! Vault's data byte for byte in the read-only trial mode (taking only
//! Vault's own HA lock, which it releases on a graceful stop, so Vault
//! resumes), and upgrades the data set in place — surviving kill -9 at every
//! step boundary of that upgrade. Nodes run HA on Consul (the server's
//! default there) with short session TTL and lock-delay; every check waits
//! for the node to be active.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test helpers

mod common;
#[path = "common/vault.rs"]
mod vault;

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{Value, json};
use testkit::consul::{PrefixGuard, unique_path};
use testkit::moto::{TEST_ACCESS_KEY, TEST_REGION, TEST_SECRET_KEY};
use testkit::{ConsulDev, MotoServer, Node, Scenario, SealStanza, StorageStanza};
use vault::{Vault, Written, write_data_set};

/// Vault's HA lock key, which Strongroom contends for too (same key, same
/// flags): the one key a read-only takeover touches.
const LOCK: &str = "core/lock";

/// Short HA timings, so a node started after a `kill -9` takes over the
/// killed node's lock within seconds (session TTL + lock-delay), not 30 s.
const SESSION_TTL: Duration = Duration::from_secs(2);
const LOCK_DELAY: Duration = Duration::from_secs(1);

/// How long a node may take to win the HA lock (a killed holder's session
/// expiring and its lock-delay included), on a loaded machine.
const ACTIVE_DEADLINE: Duration = Duration::from_secs(60);

/// One Consul KV entry as the HTTP API shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    value: String,
    flags: u64,
    session: Option<String>,
    modify_index: u64,
}

/// Every key under `prefix`, relative to it.
async fn consul_dump(consul: &str, prefix: &str) -> BTreeMap<String, Entry> {
    let url = format!("http://{consul}/v1/kv/{prefix}?recurse");
    let resp = reqwest::get(&url).await.expect("consul dump");
    if resp.status() == 404 {
        return BTreeMap::new();
    }
    let rows: Vec<Value> = resp.json().await.expect("consul json");
    rows.iter()
        .map(|r| {
            let key = r["Key"].as_str().unwrap();
            (
                key.strip_prefix(prefix).unwrap_or(key).to_owned(),
                Entry {
                    value: r["Value"].as_str().unwrap_or_default().to_owned(),
                    flags: r["Flags"].as_u64().unwrap(),
                    session: r["Session"].as_str().map(str::to_owned),
                    modify_index: r["ModifyIndex"].as_u64().unwrap(),
                },
            )
        })
        .collect()
}

/// The keys of `dump` other than the lock key.
fn data_keys(dump: &BTreeMap<String, Entry>) -> BTreeMap<&str, &Entry> {
    dump.iter()
        .filter(|(k, _)| *k != LOCK)
        .map(|(k, e)| (k.as_str(), e))
        .collect()
}

/// The lock key as Vault's Consul lock and Strongroom's both write it:
/// Consul's lock flags, held by `session` (`None`: free).
fn assert_lock(dump: &BTreeMap<String, Entry>, session: Option<&str>, when: &str) {
    let lock = dump
        .get(LOCK)
        .unwrap_or_else(|| panic!("{when}: no {LOCK} key"));
    assert_eq!(lock.flags, storage_consul::LOCK_FLAGS, "{when}: {lock:?}");
    assert_eq!(lock.session.as_deref(), session, "{when}: {lock:?}");
}

/// The name of the Consul session `id`; `None` once it is destroyed.
async fn session_name(consul: &str, id: &str) -> Option<String> {
    let url = format!("http://{consul}/v1/session/info/{id}");
    let rows: Value = reqwest::get(&url)
        .await
        .expect("session info")
        .json()
        .await
        .expect("session json");
    rows.get(0)
        .map(|r| r["Name"].as_str().unwrap_or_default().to_owned())
}

fn kms_stanza(moto: &MotoServer, key_id: &str) -> String {
    format!(
        "seal \"awskms\" {{\n  region = \"{TEST_REGION}\"\n  kms_key_id = \"{key_id}\"\n  endpoint = \"{}\"\n  access_key = \"{TEST_ACCESS_KEY}\"\n  secret_key = \"{TEST_SECRET_KEY}\"\n}}\n",
        moto.endpoint()
    )
}

/// Starts a Strongroom node named `name` on the test prefix (with the
/// auto seal when `kms` is given), `extra` top-level settings, and
/// optional test environment variables.
async fn start(
    s: &Setup,
    name: &str,
    kms: Option<&str>,
    extra: &[(&str, &str)],
    env: &[(&str, &str)],
) -> Node {
    let mut config = common::node().storage(
        StorageStanza::consul(&s.consul.http_address(), Some(&s.prefix))
            .session_ttl(SESSION_TTL)
            .lock_delay(LOCK_DELAY),
    );
    if let (Some(key), Some(moto)) = (kms, &s.moto) {
        config = config.seal(SealStanza::awskms(moto, key));
    }
    for (k, v) in extra {
        config = config.attr(k, *v);
    }
    for (k, v) in env {
        config = config.env(k, v);
    }
    config.start(&s.sc, name).await
}

/// Enters Vault's unseal keys 2..5 (not the ones Vault was unsealed with).
async fn unseal_with_vaults_keys(server: &Node, keys: &[String]) {
    for key in &keys[2..] {
        let (code, body) = server
            .client()
            .call("PUT", "sys/unseal", None, Some(json!({"key": key})))
            .await;
        assert_eq!(code, 200, "unseal: {body}; log:\n{}", server.log());
        if body["sealed"] == json!(false) {
            return;
        }
    }
    panic!("still sealed after Vault's keys; log:\n{}", server.log());
}

/// Unseals with Vault's keys and waits until the node holds the HA lock
/// (a killed predecessor's session must expire first).
async fn unseal_until_active(server: &Node, keys: &[String]) {
    unseal_with_vaults_keys(server, keys).await;
    server.client().wait_active(ACTIVE_DEADLINE).await;
}

async fn get(server: &Node, path: &str, token: &str) -> (u16, Value) {
    server.client().call("GET", path, Some(token), None).await
}

async fn call(
    server: &Node,
    method: &str,
    path: &str,
    token: &str,
    body: Option<Value>,
) -> (u16, Value) {
    server.client().call(method, path, Some(token), body).await
}

/// Everything Vault wrote is served: KV v1, every KV v2 version with its
/// delete/destroy state, the mount config, tokens with their policies and
/// TTL, and unsupported engines are listed but not served.
async fn check_served(server: &Node, w: &Written) {
    let root = w.root_token.as_str();
    let (code, body) = get(server, "kv1/app", root).await;
    assert_eq!(
        (code, &body["data"]),
        (200, &json!({"pw": "one"})),
        "{body}"
    );
    let (_, body) = get(server, "kv1/nested/deep", root).await;
    assert_eq!(body["data"], json!({"x": "y"}));
    let (_, body) = call(server, "LIST", "kv1/", root, None).await;
    assert_eq!(body["data"]["keys"], json!(["app", "nested/"]), "{body}");

    let (code, body) = get(server, "secret/data/app", root).await;
    assert_eq!(code, 200, "{body}; log:\n{}", server.log());
    assert_eq!(body["data"]["data"], json!({"pw": "v3"}));
    assert_eq!(body["data"]["metadata"]["version"], 3);
    let (_, body) = get(server, "secret/data/app?version=2", root).await;
    assert_eq!(body["data"]["data"], json!({"pw": "v2"}), "{body}");
    let (code, body) = get(server, "secret/data/app?version=1", root).await;
    assert_eq!(code, 404, "destroyed version: {body}");
    assert_eq!(body["data"]["metadata"]["destroyed"], true, "{body}");
    let (code, body) = get(server, "secret/metadata/app", root).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["data"]["current_version"], 3);
    assert_eq!(body["data"]["versions"]["1"]["destroyed"], true);
    assert_eq!(body["data"]["versions"]["3"]["destroyed"], false);
    let (code, body) = get(server, "secret/data/team/db", root).await;
    assert_eq!(code, 404, "deleted version: {body}");
    assert_ne!(body["data"]["metadata"]["deletion_time"], "", "{body}");
    let (_, body) = server
        .call("LIST", "secret/metadata/", Some(root), None)
        .await;
    assert_eq!(body["data"]["keys"], json!(["app", "team/"]), "{body}");
    let (_, body) = get(server, "secret/config", root).await;
    assert_eq!(body["data"]["max_versions"], 5, "{body}");

    // Vault's token keeps its policies, accessor and TTL.
    let (code, body) = get(server, "auth/token/lookup-self", &w.app_token).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["data"]["policies"], json!(["app", "default"]));
    assert_eq!(body["data"]["accessor"], w.app_accessor.as_str());
    let ttl = body["data"]["ttl"].as_u64().unwrap();
    assert!(ttl > 6000 && ttl <= 7200, "ttl {ttl}");
    let (code, body) = call(
        server,
        "POST",
        "auth/token/lookup-accessor",
        root,
        Some(json!({"accessor": w.app_accessor})),
    )
    .await;
    assert_eq!(code, 200, "{body}");
    // Outside its policies the token is refused.
    let (code, _) = get(server, "secret/data/team/db", &w.app_token).await;
    assert_eq!(code, 403);
    // Within them (Vault's policy `app`, loaded as Vault stored it) it reads.
    let (code, body) = get(server, "secret/data/app", &w.app_token).await;
    assert_eq!(
        (code, &body["data"]["data"]),
        (200, &json!({"pw": "v3"})),
        "{body}"
    );
    let (code, body) = get(server, "kv1/app", &w.app_token).await;
    assert_eq!(
        (code, &body["data"]),
        (200, &json!({"pw": "one"})),
        "{body}"
    );
    let (code, _) = call(
        server,
        "PUT",
        "kv1/app",
        &w.app_token,
        Some(json!({"pw": "x"})),
    )
    .await;
    assert_eq!(code, 403, "the policy grants read only");

    // Vault's pki engine is listed, not served, not deleted.
    let (_, mounts) = get(server, "sys/mounts", root).await;
    assert_eq!(mounts["data"]["pki/"]["type"], "pki", "{mounts}");
    let (code, body) = get(server, "pki/ca/pem", root).await;
    assert_eq!(code, 404);
    assert!(
        body.to_string().contains("not supported by Strongroom"),
        "{body}"
    );
    let (code, _) = server
        .call("DELETE", "sys/mounts/pki", Some(root), None)
        .await;
    assert_eq!(code, 404, "an unsupported engine is never deleted");
}

async fn check_writable(server: &Node, w: &Written) {
    let root = w.root_token.as_str();
    let (code, body) = server
        .call("PUT", "kv1/new", Some(root), Some(json!({"a": "b"})))
        .await;
    assert_eq!(code, 204, "{body}");
    let (code, body) = server
        .call(
            "PUT",
            "secret/data/app",
            Some(root),
            Some(json!({"data": {"pw": "v4"}})),
        )
        .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["data"]["version"], 4);
    let (_, body) = get(server, "secret/data/app?version=2", root).await;
    assert_eq!(body["data"]["data"], json!({"pw": "v2"}));
}

struct Setup {
    sc: Scenario,
    consul: ConsulDev,
    moto: Option<MotoServer>,
    prefix: String,
    _guard: PrefixGuard,
}

async fn setup(name: &str, kms: bool) -> Setup {
    let sc = Scenario::new(name);
    let consul = tokio::task::spawn_blocking(ConsulDev::start).await.unwrap();
    let prefix = unique_path();
    let guard = PrefixGuard::new(consul.http_address(), prefix.clone(), None);
    let moto = if kms {
        Some(MotoServer::start().await)
    } else {
        None
    };
    Setup {
        sc,
        consul,
        moto,
        prefix,
        _guard: guard,
    }
}

/// Real Vault initialises the prefix and writes the data set, then stops.
async fn vault_writes(s: &Setup, seal: &str, auto: bool) -> Written {
    s.sc.step("Vault 1.1.2 initialises the prefix and writes the data set");
    let vault = Vault::start(&s.sc, &s.consul.http_address(), &s.prefix, seal).await;
    let written = write_data_set(&vault, auto).await;
    vault.stop();
    written
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_takeover_serves_vaults_data_leaves_it_intact_and_vault_resumes() {
    let s = setup("read-only takeover", false).await;
    let w = vault_writes(&s, "", false).await;
    let consul = s.consul.http_address();
    let before = consul_dump(&consul, &s.prefix).await;
    assert!(before.contains_key("core/keyring"));
    assert_lock(&before, None, "after Vault stopped");

    s.sc.step("Strongroom on the prefix, unsealed with Vault's keys");
    let server = start(&s, "read-only", None, &[], &[]).await;
    let status = server
        .client()
        .wait_sealed(true, Duration::from_secs(10))
        .await;
    assert_eq!(
        (status["t"].as_u64(), status["n"].as_u64()),
        (Some(3), Some(5))
    );
    unseal_until_active(&server, &w.keys).await;
    check_served(&server, &w).await;
    let (code, body) = get(&server, "sys/strongroom/adopt", &w.root_token).await;
    assert_eq!(body["data"]["read_only_takeover"], true, "{code} {body}");
    let (code, body) = call(
        &server,
        "PUT",
        "kv1/new",
        &w.root_token,
        Some(json!({"a": "b"})),
    )
    .await;
    assert_eq!(code, 400, "{body}");
    assert!(body.to_string().contains("read-only"), "{body}");
    assert!(
        server.log().contains("auth method \"userpass\""),
        "{}",
        server.log()
    );
    // The one key it touches is Vault's own HA lock, held by its session
    // while it serves: a Vault started meanwhile stays a standby.
    let running = consul_dump(&consul, &s.prefix).await;
    let session = running
        .get(LOCK)
        .and_then(|e| e.session.clone())
        .expect("Strongroom holds the lock");
    assert_lock(&running, Some(&session), "while Strongroom serves");
    assert_eq!(
        session_name(&consul, &session).await.as_deref(),
        Some("Strongroom Lock")
    );
    server.terminate();
    assert_eq!(
        session_name(&consul, &session).await,
        None,
        "a graceful stop destroys the lock session"
    );

    s.sc.step("after a graceful stop: Vault's data as it was, the lock free");
    let after = consul_dump(&consul, &s.prefix).await;
    let (was, is) = (data_keys(&before), data_keys(&after));
    let changed: Vec<&str> = was
        .keys()
        .chain(is.keys())
        .filter(|k| was.get(*k) != is.get(*k))
        .copied()
        .collect();
    assert!(
        changed.is_empty(),
        "the read-only takeover changed Vault's keys (value, flags or modify index): {changed:?}"
    );
    assert_lock(&after, None, "after Strongroom stopped");

    s.sc.step("Vault 1.1.2 resumes on the prefix and becomes active");
    let vault = Vault::start(&s.sc, &consul, &s.prefix, "").await;
    for key in &w.keys[..3] {
        vault
            .expect(200, "PUT", "sys/unseal", None, Some(json!({"key": key})))
            .await;
    }
    vault.wait_active().await;
    let t = Some(w.root_token.as_str());
    let body = vault.expect(200, "GET", "kv1/app", t, None).await;
    assert_eq!(body["data"], json!({"pw": "one"}), "{body}");
    let body = vault.expect(200, "GET", "secret/data/app", t, None).await;
    assert_eq!(body["data"]["data"], json!({"pw": "v3"}), "{body}");

    s.sc.step("Strongroom beside the active Vault stays a standby");
    let server = start(&s, "beside-vault", None, &[], &[]).await;
    unseal_with_vaults_keys(&server, &w.keys).await;
    server.client().wait_standby(ACTIVE_DEADLINE).await;
    let (_, leader) = server.client().call("GET", "sys/leader", None, None).await;
    assert_eq!(leader["is_self"], false, "{leader}");
    let held = consul_dump(&consul, &s.prefix).await;
    let vaults = held.get(LOCK).and_then(|e| e.session.clone());
    assert!(
        vaults.is_some(),
        "Vault holds the lock: {:?}",
        held.get(LOCK)
    );
    assert_eq!(
        session_name(&consul, vaults.as_deref().unwrap())
            .await
            .as_deref(),
        Some("Vault Lock"),
        "Vault's own session holds it"
    );
    s.sc.step("Vault stops; Strongroom takes the lock over");
    vault.stop();
    server.client().wait_active(ACTIVE_DEADLINE).await;
    check_served(&server, &w).await;
    server.terminate();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrade_survives_kill_9_at_every_step_boundary() {
    let s = setup("upgrade crash safety", false).await;
    let w = vault_writes(&s, "", false).await;
    let upgrade = [("vault_takeover", "upgrade")];
    for step in ["planned", "copied", "switched", "done"] {
        s.sc.step(format!("upgrade held after step {step}, then kill -9"));
        let server = start(
            &s,
            &format!("paused-{step}"),
            None,
            &upgrade,
            &[("STRONGROOM_TEST_ADOPT_PAUSE_AFTER", step)],
        )
        .await;
        // The last key's unseal runs the upgrade and blocks at the pause.
        let (client, keys) = (server.client().clone(), w.keys.clone());
        let unsealing = tokio::spawn(async move {
            for key in &keys[..3] {
                let _ = client
                    .try_call("PUT", "sys/unseal", None, Some(json!({"key": key})))
                    .await;
            }
        });
        server
            .wait_log(
                &format!("adopt_pause_after) step=\"{step}\""),
                Duration::from_secs(60),
            )
            .await;
        server.kill9();
        unsealing.abort();
        if step == "switched" {
            // Interrupted after the switch: a node without the upgrade flag
            // serves the switched data read-only.
            s.sc.step("a node without the upgrade flag serves it read-only");
            let server = start(&s, "read-only-after-switch", None, &[], &[]).await;
            unseal_until_active(&server, &w.keys).await;
            check_served(&server, &w).await;
            server.kill9();
        }
    }
    s.sc.step("restart with the upgrade flag: finished, read-write");
    let server = start(&s, "final", None, &upgrade, &[]).await;
    unseal_until_active(&server, &w.keys).await;
    check_served(&server, &w).await;
    check_writable(&server, &w).await;
    let (_, body) = get(&server, "sys/strongroom/adopt", &w.root_token).await;
    assert_eq!(body["data"]["read_only_takeover"], false, "{body}");
    server.terminate();
    // Vault's KV v2 copy and token entries are gone; policies stay as Vault
    // stored them; the engine Strongroom lacks is untouched.
    let dump = consul_dump(&s.consul.http_address(), &s.prefix).await;
    assert!(dump.keys().any(|k| k.ends_with("sys/policy/app")));
    assert!(
        !dump.keys().any(|k| k.contains("/sys/token/id/h")),
        "{:?}",
        dump.keys()
    );
    assert!(
        !dump.keys().any(|k| k.contains("/policy/metadata")),
        "{:?}",
        dump.keys()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn awskms_takeover_auto_unseals_and_recovery_keys_stay_valid() {
    let s = setup("awskms takeover", true).await;
    let moto = s.moto.as_ref().unwrap();
    let key = moto.create_key().await;
    let w = vault_writes(&s, &kms_stanza(moto, &key.key_id), true).await;

    s.sc.step("Strongroom with the same KMS key auto-unseals");
    let server = start(&s, "kms", Some(&key.key_id), &[], &[]).await;
    let status = server
        .client()
        .wait_sealed(false, Duration::from_secs(60))
        .await;
    server.client().wait_active(ACTIVE_DEADLINE).await;
    assert_eq!(status["type"], "awskms");
    assert_eq!(status["recovery_seal"], true);
    check_served(&server, &w).await;

    s.sc.step("strongroom operator adopt: a confirmation and a root token");
    let root_env = [
        ("STRONGROOM_ADDR", server.addr()),
        ("STRONGROOM_TOKEN", w.root_token.as_str()),
    ];
    let out = common::cli(&root_env, &["operator", "adopt", "-status"]).await;
    assert_eq!(out.code, 0, "read-only until upgraded: {out:?}");
    assert!(out.stdout.contains("read-only"), "{out:?}");
    let out = common::cli(&root_env, &["operator", "adopt"]).await;
    assert_ne!(out.code, 0, "{out:?}");
    assert!(out.stderr.contains("consul kv export"), "{out:?}");
    let app_env = [
        ("STRONGROOM_ADDR", server.addr()),
        ("STRONGROOM_TOKEN", w.app_token.as_str()),
    ];
    let out = common::cli(&app_env, &["operator", "adopt", "-confirm"]).await;
    assert!(out.code != 0 && out.stderr.contains("Code: 403"), "{out:?}");
    let (_, body) = get(&server, "sys/strongroom/adopt", &w.root_token).await;
    assert_eq!(body["data"]["read_only_takeover"], true, "{body}");
    let out = common::cli(
        &root_env,
        &["operator", "adopt", "-confirm", "-format=json"],
    )
    .await;
    assert_eq!(out.code, 0, "{out:?}; log:\n{}", server.log());
    let report: Value = serde_json::from_str(&out.stdout).expect("adopt JSON");
    assert_eq!(report["upgraded"], true, "{report}");
    let left = report["not_carried_over"].to_string();
    assert!(left.contains("pki") && left.contains("userpass"), "{left}");
    let out = common::cli(&root_env, &["operator", "adopt", "-status"]).await;
    assert_eq!(out.code, 2, "upgraded: {out:?}");
    let out = common::cli(&root_env, &["operator", "adopt", "-confirm"]).await;
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains("Nothing to do"), "{out:?}");
    check_served(&server, &w).await;
    check_writable(&server, &w).await;

    s.sc.step("Vault's recovery keys unseal a node sealed by hand");
    let (code, _) = call(&server, "PUT", "sys/seal", &w.root_token, None).await;
    assert_eq!(code, 204);
    unseal_until_active(&server, &w.keys).await;
    server.terminate();

    s.sc.step("a restart auto-unseals the upgraded data set");
    let server = start(&s, "kms-restart", Some(&key.key_id), &[], &[]).await;
    server
        .client()
        .wait_sealed(false, Duration::from_secs(60))
        .await;
    server.client().wait_active(ACTIVE_DEADLINE).await;
    let (_, body) = get(&server, "secret/data/app", &w.root_token).await;
    assert_eq!(body["data"]["data"], json!({"pw": "v4"}));
    server.terminate();
}
