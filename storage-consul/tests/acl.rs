//! Consul with ACLs on (`default_policy = "deny"`): the right token works,
//! a wrong or missing token is a permission error, and the token never
//! shows in errors.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::OnceLock;

mod common;

use seal_core::{Storage, StorageError, TxnOp};
use storage_consul::{ConsulStorage, ConsulToken};
use testkit::consul::{ConsulDev, ConsulOptions, isolated, raw_request};
use testkit::proxy::GateProxy;

use common::{occupy_senders, queue_in_order, release_queued};

fn acl_dev() -> &'static ConsulDev {
    static DEV: OnceLock<ConsulDev> = OnceLock::new();
    DEV.get_or_init(|| ConsulDev::start_with(ConsulOptions::acl()))
}

fn assert_denied<T: std::fmt::Debug>(result: Result<T, StorageError>, what: &str, secret: &str) {
    match result {
        Err(err @ StorageError::PermissionDenied { .. }) => {
            let text = format!("{err} {err:?}");
            assert!(
                text.contains("ACL refused") && text.contains("token"),
                "{what}: {text}"
            );
            assert!(
                !text.contains(secret),
                "{what}: the token leaked into {text}"
            );
        }
        other => panic!("{what}: expected PermissionDenied, got {other:?}"),
    }
}

/// A new token whose one policy has `rules`; its secret.
fn token_with_rules(dev: &ConsulDev, rules: &str) -> String {
    let management = dev.management_token().unwrap();
    let policy_name = format!("strongroom-{}", uuid::Uuid::new_v4());
    let policy = serde_json::json!({"Name": policy_name, "Rules": rules});
    let r = raw_request(
        &dev.http_address(),
        "PUT",
        "/v1/acl/policy",
        Some(management),
        policy.to_string().as_bytes(),
    )
    .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let token = serde_json::json!({"Policies": [{"Name": policy_name}]});
    let r = raw_request(
        &dev.http_address(),
        "PUT",
        "/v1/acl/token",
        Some(management),
        token.to_string().as_bytes(),
    )
    .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let secret: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    secret["SecretID"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn management_token_works() {
    let (storage, _guard) = isolated(acl_dev(), |_| {});
    storage.put("core/keyring", b"k").await.unwrap();
    assert_eq!(
        storage.get("core/keyring").await.unwrap().as_deref(),
        Some(&b"k"[..])
    );
    assert_eq!(storage.list("").await.unwrap(), ["core/"]);
    storage.delete("core/keyring").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_token_is_permission_denied() {
    let wrong = uuid::Uuid::new_v4().to_string();
    let (storage, guard) = isolated(acl_dev(), |c| {
        c.token = Some(ConsulToken::new(wrong.clone()))
    });
    assert_denied(storage.put("k", b"v").await, "put", &wrong);
    assert_denied(storage.get("k").await, "get", &wrong);
    assert_denied(storage.delete("k").await, "delete", &wrong);
    assert_denied(storage.list("").await, "list", &wrong);
    let debug = format!("{storage:?}");
    assert!(!debug.contains(&wrong), "{debug}");
    // Nothing was written under the prefix.
    let token = acl_dev().management_token().unwrap();
    let path = format!("/v1/kv/{}?keys", guard.prefix());
    let raw = raw_request(&acl_dev().http_address(), "GET", &path, Some(token), b"").unwrap();
    assert_eq!(raw.status, 404, "{}", raw.text());
}

/// Without a token Consul uses the anonymous token, which the deny policy
/// refuses. Consul filters key listings by ACL instead of refusing them
/// (unless `acl.enable_key_list_policy`), so a list shows nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_token_is_permission_denied() {
    let (writer, _guard) = isolated(acl_dev(), |_| {});
    writer.put("secret/entry", b"s").await.unwrap();
    let mut config = acl_dev().config();
    config.path = writer.path().to_owned();
    config.token = None;
    let anonymous = storage_consul::ConsulStorage::new(config).unwrap();
    assert_denied(anonymous.put("k", b"v").await, "put", "\u{0}no-token");
    assert_denied(anonymous.get("secret/entry").await, "get", "\u{0}no-token");
    assert_denied(
        anonymous.delete("secret/entry").await,
        "delete",
        "\u{0}no-token",
    );
    assert!(
        anonymous.list("").await.unwrap().is_empty(),
        "listing leaks no keys"
    );
    assert_eq!(
        writer.get("secret/entry").await.unwrap().as_deref(),
        Some(&b"s"[..])
    );
}

/// A least-privilege token (`key_prefix "<path>" { policy = "write" }`), as
/// an operator would issue for Strongroom, works under its path only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scoped_token_works_under_its_path_only() {
    let dev = acl_dev();
    let (own, _guard) = isolated(dev, |_| {});
    let rules = format!(r#"key_prefix "{}" {{ policy = "write" }}"#, own.path());
    let secret = token_with_rules(dev, &rules);

    let mut config = dev.config();
    config.path = own.path().to_owned();
    config.token = Some(ConsulToken::new(secret.clone()));
    let scoped = storage_consul::ConsulStorage::new(config.clone()).unwrap();
    scoped.put("logical/x", b"1").await.unwrap();
    scoped
        .transaction(vec![
            seal_core::TxnOp::put("logical/y", b"2".to_vec()),
            seal_core::TxnOp::delete("logical/x"),
        ])
        .await
        .unwrap();
    assert_eq!(scoped.list("logical/").await.unwrap(), ["y"]);

    config.path = format!("elsewhere-{}/", uuid::Uuid::new_v4());
    let outside = storage_consul::ConsulStorage::new(config).unwrap();
    assert_denied(
        outside.put("logical/x", b"1").await,
        "put outside the policy",
        &secret,
    );
}

/// The stanza as Vault reads it, with the token from `CONSUL_HTTP_TOKEN`
/// (passed through the explicit environment lookup), reaches the real agent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stanza_with_env_token_works() {
    let dev = acl_dev();
    let token = dev.management_token().unwrap().to_owned();
    let stanza: std::collections::BTreeMap<String, String> = [
        ("address", format!("http://{}", dev.http_address())),
        ("path", format!("stanza-{}", uuid::Uuid::new_v4())),
        ("max_parallel", "4".to_owned()),
        ("consistency_mode", "strong".to_owned()),
        ("service_tags", "ignored".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let env = |name: &str| (name == "CONSUL_HTTP_TOKEN").then(|| token.clone());
    let config = storage_consul::ConsulConfig::from_map_with_env(&stanza, env).unwrap();
    assert!(config.path.ends_with('/'));
    let _guard = testkit::consul::PrefixGuard::new(
        dev.http_address(),
        config.path.clone(),
        Some(token.clone()),
    );
    let storage = storage_consul::ConsulStorage::new(config).unwrap();
    storage.put("from/stanza", b"1").await.unwrap();
    assert_eq!(storage.list("from/").await.unwrap(), ["stanza"]);

    let no_env = |_: &str| None;
    let config = storage_consul::ConsulConfig::from_map_with_env(&stanza, no_env).unwrap();
    let anonymous = storage_consul::ConsulStorage::new(config).unwrap();
    assert_denied(
        anonymous.get("from/stanza").await,
        "get without token",
        &token,
    );
}

/// The HA lock and the service registration work with a token that may
/// write them, and a wrong token gives a clear error without the token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ha_lock_and_registration_under_acls() {
    use seal_core::HaBackend;
    use storage_consul::{ConsulHaBackend, ConsulServiceRegistration, RegistrationState};

    let (storage, _guard) = isolated(acl_dev(), |_| {});
    let ha = ConsulHaBackend::new(&storage);
    let lock = ha
        .try_lock("core/lock", b"a")
        .await
        .unwrap()
        .expect("free lock");
    storage.put("fenced", b"1").await.unwrap();
    assert_eq!(
        ha.holder("core/lock").await.unwrap().as_deref(),
        Some(&b"a"[..])
    );
    lock.release().await.unwrap();

    let wrong = uuid::Uuid::new_v4().to_string();
    let (denied, _guard2) = isolated(acl_dev(), |c| {
        c.token = Some(ConsulToken::new(wrong.clone()))
    });
    let err = ConsulHaBackend::new(&denied)
        .try_lock("core/lock", b"b")
        .await
        .unwrap_err();
    let text = format!("{err} {err:?}");
    assert!(text.contains("ACL") && text.contains("session"), "{text}");
    assert!(!text.contains(&wrong), "the token leaked into {text}");

    let mut config = acl_dev().config();
    config.registration.service = format!("vault-acl-{}", &wrong[..8]);
    let reg = ConsulServiceRegistration::start(
        &config,
        "http://127.0.0.1:18299",
        RegistrationState::starting(),
    )
    .unwrap();
    let token = acl_dev().management_token().unwrap().to_owned();
    let path = format!("/v1/catalog/service/{}", config.registration.service);
    testkit::wait::until(
        "the service is registered under ACLs",
        std::time::Duration::from_secs(45),
        || async {
            let raw =
                raw_request(&acl_dev().http_address(), "GET", &path, Some(&token), b"").unwrap();
            let entries: serde_json::Value = serde_json::from_slice(&raw.body).unwrap();
            if entries.as_array().is_some_and(|a| a.len() == 1) {
                Ok(())
            } else {
                Err(format!("catalog: {entries}"))
            }
        },
    )
    .await;
    reg.deregister().await.unwrap();
}

/// Group commit: a write the ACL refuses inside a batch (Consul's 409
/// names its operation) fails alone with a permission error; the writes
/// queued with it are sent again without it and land.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_write_does_not_fail_its_batch() {
    let dev = acl_dev();
    let (direct, _guard) = isolated(dev, |_| {});
    let rules = format!(
        r#"key_prefix "{p}" {{ policy = "write" }}
key_prefix "{p}denied/" {{ policy = "read" }}"#,
        p = direct.path()
    );
    let secret = token_with_rules(dev, &rules);
    let gate = GateProxy::start(dev.http_address(), vec!["hold"]).await;
    let mut config = dev.config();
    config.path = direct.path().to_owned();
    config.token = Some(ConsulToken::new(secret.clone()));
    config.address = gate.address.clone();
    let storage = ConsulStorage::new(config).unwrap();

    let held = occupy_senders(&storage, &gate).await;
    let sent_before = storage.request_stats().requests;
    let queued = queue_in_order(
        &storage,
        vec![
            vec![TxnOp::put("ok/1", "1")],
            vec![TxnOp::put("denied/x", "no")],
            vec![TxnOp::put("ok/2", "2"), TxnOp::put("ok/3", "3")],
            vec![TxnOp::put("ok/2", "2b"), TxnOp::put("denied/y", "no")],
            vec![TxnOp::delete("ok/1")],
            vec![TxnOp::put("ok/4", "4")],
        ],
    )
    .await;
    let mut answers = release_queued(&gate, held, queued).await;
    answers.next().unwrap().unwrap();
    assert_denied(answers.next().unwrap(), "the refused put", &secret);
    answers.next().unwrap().unwrap();
    assert_denied(
        answers.next().unwrap(),
        "the transaction with a refused op",
        &secret,
    );
    answers.next().unwrap().unwrap();
    answers.next().unwrap().unwrap();
    assert_eq!(
        storage.request_stats().requests - sent_before,
        2,
        "the batch, then the same batch without the refused writes"
    );
    assert_eq!(direct.get("ok/1").await.unwrap(), None);
    assert_eq!(
        direct.get("ok/2").await.unwrap().as_deref(),
        Some(&b"2"[..]),
        "nothing of the refused transaction landed"
    );
    assert_eq!(direct.list("ok/").await.unwrap(), ["2", "3", "4"]);
    assert_eq!(direct.list("denied/").await.unwrap(), Vec::<String>::new());
}
