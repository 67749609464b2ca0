//! The client subcommands against a real server: Vault's flags (single
//! dash), environment variables, output shapes and exit codes.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test helpers

mod common;

use common::cli as run;
use serde_json::{Value, json};
use testkit::Scenario;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_status_and_kv_commands_work_like_vaults() {
    let sc = Scenario::new("operator_status_and_kv_commands_work_like_vaults");
    let server = common::node().start(&sc, "server").await;
    let addr = server.addr().to_owned();
    let env = [("STRONGROOM_ADDR", addr.as_str())];

    // Uninitialised: init -status says so with exit 2.
    let out = run(&env, &["operator", "init", "-status"]).await;
    assert_eq!(out.code, 2, "{}{}", out.stdout, out.stderr);

    let out = run(
        &env,
        &[
            "operator",
            "init",
            "-key-shares=3",
            "-key-threshold=2",
            "-format=json",
        ],
    )
    .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let init: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(init["unseal_shares"], json!(3));
    assert_eq!(init["unseal_threshold"], json!(2));
    let keys: Vec<String> = init["unseal_keys_b64"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k.as_str().unwrap().to_owned())
        .collect();
    let hex: Vec<String> = init["unseal_keys_hex"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k.as_str().unwrap().to_owned())
        .collect();
    assert_eq!((keys.len(), hex.len()), (3, 3));
    let root = init["root_token"].as_str().unwrap().to_owned();

    // Sealed: status prints the table and exits 2.
    let out = run(&env, &["status"]).await;
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(
        out.stdout.contains("Sealed             true"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("Unseal Progress    0/2"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("Total Shares       3"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("Storage Type       redb"),
        "{}",
        out.stdout
    );

    // One key: progress 1/2 with a nonce; reset clears it.
    let out = run(&env, &["operator", "unseal", &keys[0]]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout.contains("Unseal Progress    1/2"),
        "{}",
        out.stdout
    );
    assert!(
        !out.stdout.contains("Unseal Nonce       n/a"),
        "{}",
        out.stdout
    );
    let out = run(&env, &["operator", "unseal", "-reset"]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout.contains("Unseal Progress    0/2"),
        "{}",
        out.stdout
    );

    // VAULT_ADDR works too, and hex keys as well as base64.
    let vault_env = [("VAULT_ADDR", addr.as_str())];
    run(&vault_env, &["operator", "unseal", &hex[1]]).await;
    let out = run(&vault_env, &["operator", "unseal", &keys[2]]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout.contains("Sealed          false"),
        "{}",
        out.stdout
    );
    let out = run(&[], &["status", &format!("-address={addr}")]).await;
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stdout.contains("HA Enabled      false"),
        "{}",
        out.stdout
    );

    // A bad key is a clear API error, exit 1.
    let out = run(&env, &["operator", "seal"]).await;
    assert_eq!(
        out.code, 1,
        "seal without a token must fail: {}",
        out.stdout
    );
    assert!(out.stderr.contains("Code: 403"), "{}", out.stderr);

    // KV: mount v2 at secret/ and v1 at kv/ over the API, then use the CLI.
    server.mount_kv(&root, "secret", "2").await;
    server.mount_kv(&root, "kv", "1").await;
    let tok = [
        ("STRONGROOM_ADDR", addr.as_str()),
        ("STRONGROOM_TOKEN", root.as_str()),
    ];
    let out = run(
        &tok,
        &["kv", "put", "secret/app", "user=admin", "password=hunter2"],
    )
    .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout.starts_with("= Secret Path =\nsecret/data/app\n"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("secret/data/app"), "{}", out.stdout);
    assert!(
        out.stdout.contains("version            1"),
        "{}",
        out.stdout
    );
    let out = run(&tok, &["kv", "get", "secret/app"]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stdout.contains("====== Data ======"), "{}", out.stdout);
    assert!(out.stdout.contains("password    hunter2"), "{}", out.stdout);
    let out = run(&tok, &["kv", "get", "-field=user", "secret/app"]).await;
    assert_eq!(out.stdout.trim(), "admin");
    let out = run(&tok, &["kv", "get", "-mount=secret", "-format=json", "app"]).await;
    let body: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(body["data"]["data"]["user"], "admin");
    let out = run(&tok, &["kv", "put", "kv/plain", "a=b"]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout.contains("Success! Data written to: kv/plain"),
        "{}",
        out.stdout
    );
    let out = run(&tok, &["kv", "get", "kv/plain"]).await;
    assert!(
        out.stdout
            .contains("\nrefresh_interval    768h\na                   b\n"),
        "{}",
        out.stdout
    );
    let out = run(&tok, &["kv", "list", "secret/"]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout.starts_with("Keys\n----\napp\n"),
        "{}",
        out.stdout
    );
    let out = run(&tok, &["kv", "delete", "secret/app"]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let out = run(&tok, &["kv", "get", "secret/app"]).await;
    assert_eq!(out.code, 2, "a deleted secret is not found: {}", out.stdout);
    let out = run(&tok, &["kv", "put", "secret/bad", "novalue"]).await;
    assert_eq!(out.code, 2, "usage errors exit 2");

    // Rotate (needs the token) and seal: status exits 2 again.
    let out = run(&tok, &["operator", "rotate"]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout.contains("Key Term            2"),
        "{}",
        out.stdout
    );
    let out = run(&tok, &["operator", "seal"]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(run(&env, &["status"]).await.code, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_against_no_server_is_an_error() {
    // Reserved and held: nothing listens there during the test.
    let port = testkit::ports::reserve();
    let out = run(
        &[("STRONGROOM_ADDR", &format!("http://{}", port.addr()))],
        &["status"],
    )
    .await;
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.contains("is the server running"),
        "{}",
        out.stderr
    );
}
