//! Root token generation end to end: the unmodified OpenBao CLI
//! (`bao operator generate-root -init / -nonce / -decode -otp / -cancel`)
//! against the real server, with unseal keys (Shamir) and with recovery keys
//! (AWS KMS auto seal on a real moto server); and Vault's unauthenticated
//! `sys/generate-root/*` paths plus `sys/decode-token`, as hvac and the
//! vault CLI use them.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test helpers

mod common;

use common::bao::{bao, cli_generate_root, json_out};
use serde_json::{Value, json};
use testkit::{MotoServer, Node, Scenario, SealStanza};

async fn token_is_root(server: &Node, token: &str) {
    let (code, body) = server
        .call("GET", "auth/token/lookup-self", Some(token), None)
        .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["data"]["policies"], json!(["root"]), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bao_cli_generates_a_root_token_with_unseal_keys() {
    let sc = Scenario::new("bao_cli_generates_a_root_token_with_unseal_keys");
    let home = tempfile::tempdir().unwrap();
    let server = common::node().start(&sc, "server").await;
    let init = server.init(5, 3).await;
    let (keys, root) = (init.keys_base64, init.root_token);
    server.unseal(&keys[..3]).await;

    // Progress through the CLI's status, then cancel.
    let started = json_out(
        &bao(
            &server,
            home.path(),
            &root,
            &["operator", "generate-root", "-init", "-format=json"],
            None,
        ),
        "init",
    );
    let nonce = started["nonce"].as_str().unwrap();
    json_out(
        &bao(
            &server,
            home.path(),
            &root,
            &[
                "operator",
                "generate-root",
                &format!("-nonce={nonce}"),
                "-format=json",
                "-",
            ],
            Some(&keys[0]),
        ),
        "first key",
    );
    let status = json_out(
        &bao(
            &server,
            home.path(),
            &root,
            &["operator", "generate-root", "-status", "-format=json"],
            None,
        ),
        "status",
    );
    assert_eq!(
        (status["progress"].clone(), status["required"].clone()),
        (json!(1), json!(3))
    );
    assert_eq!(status["otp"], json!(""));
    let cancelled = bao(
        &server,
        home.path(),
        &root,
        &["operator", "generate-root", "-cancel"],
        None,
    );
    assert!(cancelled.status.success(), "{cancelled:?}");
    let status = json_out(
        &bao(
            &server,
            home.path(),
            &root,
            &["operator", "generate-root", "-status", "-format=json"],
            None,
        ),
        "status after cancel",
    );
    assert_eq!(status["started"], json!(false));

    // A full run with keys 3..5 (any quorum works).
    let new_root = cli_generate_root(&server, home.path(), &root, &keys[2..5]);
    assert!(new_root.starts_with("hvs."), "{new_root}");
    assert_ne!(new_root, root);
    token_is_root(&server, &new_root).await;
    token_is_root(&server, &root).await;

    // Wrong keys: the CLI reports Vault's error; the attempt stays.
    let other_keys = {
        let other = common::node().start(&sc, "other").await;
        other.init(3, 2).await.keys_base64
    };
    let started = json_out(
        &bao(
            &server,
            home.path(),
            &root,
            &["operator", "generate-root", "-init", "-format=json"],
            None,
        ),
        "init",
    );
    let nonce = started["nonce"].as_str().unwrap();
    let mut last = None;
    for key in &other_keys[..3] {
        last = Some(bao(
            &server,
            home.path(),
            &root,
            &["operator", "generate-root", &format!("-nonce={nonce}"), "-"],
            Some(key),
        ));
    }
    let last = last.unwrap();
    assert!(!last.status.success());
    let stderr = String::from_utf8_lossy(&last.stderr);
    assert!(stderr.contains("root generation aborted"), "{stderr}");
    let (code, status) = server
        .call("GET", "sys/generate-root/attempt", None, None)
        .await;
    assert_eq!(code, 200);
    assert_eq!(status["started"], json!(true));
    assert_eq!(status["progress"], json!(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bao_cli_generates_a_root_token_with_recovery_keys_on_awskms() {
    let sc = Scenario::new("bao_cli_generates_a_root_token_with_recovery_keys_on_awskms");
    let moto = MotoServer::start_on(sc.timeline(), false).await;
    let key = moto.create_key().await;
    let home = tempfile::tempdir().unwrap();
    let server = common::node()
        .seal(SealStanza::awskms(&moto, &key.key_id))
        .start(&sc, "server")
        .await;
    let init = server.init_recovery(3, 2).await;
    let (recovery, root) = (init.recovery_keys_base64, init.root_token);
    server
        .wait_sealed(false, std::time::Duration::from_secs(20))
        .await;
    let new_root = cli_generate_root(&server, home.path(), &root, &recovery[..2]);
    token_is_root(&server, &new_root).await;
    token_is_root(&server, &root).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vaults_unauthenticated_paths_and_decode_token() {
    let sc = Scenario::new("vaults_unauthenticated_paths_and_decode_token");
    let server = common::node().start(&sc, "server").await;
    let init = server.init(3, 2).await;
    let (keys, root) = (init.keys_base64, init.root_token);

    // Sealed: 503.
    let (code, _) = server
        .call("GET", "sys/generate-root/attempt", None, None)
        .await;
    assert_eq!(code, 503);
    server.unseal(&keys[..2]).await;

    // Bare JSON, every field present, no token needed (Vault's paths).
    let (code, status) = server
        .call("GET", "sys/generate-root/attempt", None, None)
        .await;
    assert_eq!(code, 200, "{status}");
    for field in [
        "nonce",
        "started",
        "progress",
        "required",
        "complete",
        "encoded_token",
        "encoded_root_token",
        "pgp_fingerprint",
        "otp",
        "otp_length",
    ] {
        assert!(status.get(field).is_some(), "{field} missing: {status}");
    }
    let (code, started) = server
        .call(
            "PUT",
            "sys/generate-root/attempt",
            None,
            Some(json!({"otp": "", "pgp_key": ""})),
        )
        .await;
    assert_eq!(code, 200, "{started}");
    let otp = started["otp"].as_str().unwrap().to_owned();
    let nonce = started["nonce"].as_str().unwrap().to_owned();
    let (code, body) = server
        .call("PUT", "sys/generate-root/attempt", None, Some(json!({})))
        .await;
    assert_eq!(code, 400);
    assert_eq!(body["errors"][0], "root generation already in progress");
    let mut done = Value::Null;
    for key in &keys[..2] {
        let (code, body) = server
            .call(
                "PUT",
                "sys/generate-root/update",
                None,
                Some(json!({"key": key, "nonce": nonce})),
            )
            .await;
        assert_eq!(code, 200, "{body}");
        done = body;
    }
    assert_eq!(done["complete"], json!(true));
    let (code, decoded) = server
        .call(
            "PUT",
            "sys/decode-token",
            None,
            Some(json!({"encoded_token": done["encoded_token"], "otp": otp})),
        )
        .await;
    assert_eq!(code, 200, "{decoded}");
    let new_root = decoded["data"]["token"].as_str().unwrap();
    token_is_root(&server, new_root).await;
    token_is_root(&server, &root).await;

    // OpenBao's authenticated paths want a token.
    let (code, _) = server
        .call("GET", "sys/generate-root-token/attempt", None, None)
        .await;
    assert_eq!(code, 403);
    let (code, body) = server
        .call("DELETE", "sys/generate-root/attempt", None, None)
        .await;
    assert_eq!(code, 204, "{body}");
}
