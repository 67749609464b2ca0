//! The server on Consul storage (a real `consul agent -dev`), and a rekey
//! driven through the CLI: new shares replace the old ones.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test helpers

mod common;

use std::time::Duration;

use common::{Server, bin, free_port, init, mount_kv, plain_listener, unseal};
use serde_json::json;
use storage_consul::testing::ConsulDev;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consul_storage_persists_across_restarts() {
    let consul = tokio::task::spawn_blocking(ConsulDev::start).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = format!(
        "storage \"consul\" {{\n  address = \"{}\"\n  path = \"strongroom-e2e/\"\n}}\n{}cluster_name = \"consul-test\"\n",
        consul.http_address(),
        plain_listener(port)
    );
    let mut server = Server::start(dir.path(), port, &config).await;
    let (_, status) = server.call("GET", "sys/seal-status", None, None).await;
    assert_eq!(status["storage_type"], "consul");
    let (keys, root) = init(&server, 3, 2).await;
    unseal(&server, &keys[..2]).await;
    mount_kv(&server, &root, "secret", "2").await;
    let (code, _) = server
        .call(
            "PUT",
            "secret/data/db",
            Some(&root),
            Some(json!({"data": {"pw": "x"}})),
        )
        .await;
    assert_eq!(code, 200);
    assert!(server.terminate().success());

    let server = Server::start(dir.path(), port, &config).await;
    server.wait_sealed(true, Duration::from_secs(5)).await;
    unseal(&server, &keys[1..]).await;
    let (code, body) = server
        .call("GET", "secret/data/db", Some(&root), None)
        .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["data"]["data"]["pw"], "x");
    drop(server);
    drop(consul);
}

async fn cli(addr: &str, token: &str, args: &[&str]) -> (i32, String, String) {
    let out = tokio::process::Command::new(bin())
        .args(args)
        .env("STRONGROOM_ADDR", addr)
        .env("STRONGROOM_TOKEN", token)
        .env_remove("VAULT_ADDR")
        .env_remove("VAULT_TOKEN")
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_rekey_replaces_the_unseal_keys() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_redb(dir.path()).await;
    let (old_keys, root) = init(&server, 3, 2).await;
    unseal(&server, &old_keys[..2]).await;
    let addr = server.base.clone();

    let (code, out, err) = cli(
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
    let (code, out, _) = cli(
        &addr,
        &root,
        &["operator", "rekey", "-status", "-format=json"],
    )
    .await;
    assert_eq!(code, 0);
    let status: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(status["started"], json!(true));

    let (code, out, err) = cli(&addr, &root, &["operator", "rekey", &old_keys[0]]).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("Rekey Progress           1/2"), "{out}");
    let (code, out, err) = cli(&addr, &root, &["operator", "rekey", &old_keys[2]]).await;
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
    unseal(&server, &new_keys[1..4]).await;
}
