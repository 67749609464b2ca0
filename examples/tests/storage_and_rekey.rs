//! The server on Consul storage (a real `consul agent -dev`), and a rekey
//! driven through the CLI: new shares replace the old ones.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test helpers

mod common;

use std::time::Duration;

use common::cli;
use serde_json::json;
use testkit::{ConsulDev, Scenario, StorageStanza};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consul_storage_persists_across_restarts() {
    let sc = Scenario::new("consul_storage_persists_across_restarts");
    let consul = tokio::task::spawn_blocking(ConsulDev::start).await.unwrap();
    let server = common::node()
        .storage(StorageStanza::consul(
            &consul.http_address(),
            Some("strongroom-e2e/"),
        ))
        .attr("cluster_name", "consul-test")
        .start(&sc, "server")
        .await;
    let (_, status) = server.call("GET", "sys/seal-status", None, None).await;
    assert_eq!(status["storage_type"], "consul");
    let init = server.init(3, 2).await;
    let (keys, root) = (init.keys_base64, init.root_token);
    server.unseal(&keys[..2]).await;
    server.mount_kv(&root, "secret", "2").await;
    let (code, _) = server
        .call(
            "PUT",
            "secret/data/db",
            Some(&root),
            Some(json!({"data": {"pw": "x"}})),
        )
        .await;
    assert_eq!(code, 200);
    assert!(server.terminate().is_some_and(|s| s.success()));

    server.start_again().await;
    server.wait_sealed(true, Duration::from_secs(5)).await;
    server.unseal(&keys[1..]).await;
    let (code, body) = server
        .call("GET", "secret/data/db", Some(&root), None)
        .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["data"]["data"]["pw"], "x");
    drop(server);
    drop(consul);
}

/// The CLI against `addr` with `token`.
async fn rekey_cli(addr: &str, token: &str, args: &[&str]) -> (i32, String, String) {
    let out = cli(
        &[("STRONGROOM_ADDR", addr), ("STRONGROOM_TOKEN", token)],
        args,
    )
    .await;
    (out.code, out.stdout, out.stderr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_rekey_replaces_the_unseal_keys() {
    let sc = Scenario::new("operator_rekey_replaces_the_unseal_keys");
    let server = common::node().start(&sc, "server").await;
    let init = server.init(3, 2).await;
    let (old_keys, root) = (init.keys_base64, init.root_token);
    server.unseal(&old_keys[..2]).await;
    let addr = server.addr().to_owned();

    let (code, out, err) = rekey_cli(
        &addr,
        &root,
        &[
            "operator",
            "rekey",
            "-init",
            "-key-shares=4",
            "-key-threshold=3",
        ],
    )
    .await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("Started                  true"), "{out}");
    assert!(out.contains("Rekey Progress           0/2"), "{out}");
    assert!(out.contains("New Shares               4"), "{out}");
    let (code, out, _) = rekey_cli(
        &addr,
        &root,
        &["operator", "rekey", "-status", "-format=json"],
    )
    .await;
    assert_eq!(code, 0);
    let status: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(status["started"], json!(true));

    let (code, out, err) = rekey_cli(&addr, &root, &["operator", "rekey", &old_keys[0]]).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("Rekey Progress           1/2"), "{out}");
    let (code, out, err) = rekey_cli(&addr, &root, &["operator", "rekey", &old_keys[2]]).await;
    assert_eq!(code, 0, "{out}{err}");
    let new_keys: Vec<String> = out
        .lines()
        .filter_map(|l| {
            l.strip_prefix("Key ")
                .and_then(|rest| rest.split_once(": "))
                .map(|(_, k)| k.to_owned())
        })
        .collect();
    assert_eq!(new_keys.len(), 4, "{out}");
    assert!(out.contains("key threshold of 3"), "{out}");

    // The new keys unseal; the old ones no longer do.
    let (code, _) = server.call("PUT", "sys/seal", Some(&root), None).await;
    assert_eq!(code, 204);
    for key in &old_keys[..2] {
        server
            .call("PUT", "sys/unseal", None, Some(json!({"key": key})))
            .await;
    }
    let (_, status) = server.call("GET", "sys/seal-status", None, None).await;
    assert_eq!(
        status["sealed"],
        json!(true),
        "old keys must not unseal: {status}"
    );
    assert_eq!(status["t"], json!(3));
    assert_eq!(status["n"], json!(4));
    server
        .call("PUT", "sys/unseal", None, Some(json!({"reset": true})))
        .await;
    server.unseal(&new_keys[1..4]).await;
}
