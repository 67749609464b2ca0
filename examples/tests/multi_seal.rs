//! Several seals at once and break-glass, through the real server: two
//! moto servers play two AWS regions, each with its own KMS key.
//!
//! * The primary region's key is revoked (IAM policy detached) and the node
//!   restarted: it unseals through the secondary; `sys/seal-backend-status`
//!   and the metrics show the primary unhealthy. Access comes back: the
//!   primary is healthy again and its wrap checked and refreshed
//!   (`fully_wrapped`), after which the primary alone unseals.
//! * Break-glass: with `recovery_unseal = true`, both regions gone and the
//!   node restarted, a quorum of recovery keys unseals it through the real
//!   `bao operator unseal`; with the option off the same keys are refused
//!   with a message that says why.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test helpers

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{Server, free_port, mount_kv, plain_listener, redb_storage};
use seal_awskms::testing::{MotoServer, TEST_ACCESS_KEY, TEST_REGION, TEST_SECRET_KEY};
use serde_json::{Value, json};

/// A named `seal "awskms"` stanza signing with `creds`.
fn stanza(
    moto: &MotoServer,
    key_id: &str,
    name: &str,
    priority: u32,
    creds: (&str, &str),
    extra: &str,
) -> String {
    format!(
        "seal \"awskms\" {{\n  name = \"{name}\"\n  priority = {priority}\n  region = \
         \"{TEST_REGION}\"\n  kms_key_id = \"{key_id}\"\n  endpoint = \"{endpoint}\"\n  access_key \
         = \"{}\"\n  secret_key = \"{}\"\n  connect_timeout = \"1s\"\n  attempt_timeout = \"2s\"\n  \
         operation_timeout = \"4s\"\n  max_attempts = 1\n{extra}}}\n",
        creds.0,
        creds.1,
        endpoint = moto.endpoint(),
    )
}

fn config(dir: &Path, port: u16, seals: &str) -> String {
    format!(
        "{}enable_multiseal = true\n{seals}{}auto_unseal_max_backoff = \
         \"1s\"\nseal_health_check_interval = \"1s\"\n",
        redb_storage(dir),
        plain_listener(port)
    )
}

async fn backend_status(server: &Server) -> Value {
    let (code, body) = server
        .call("GET", "sys/seal-backend-status", None, None)
        .await;
    assert_eq!(code, 200, "{body}");
    body
}

async fn wait_for(server: &Server, what: &str, check: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let status = backend_status(server).await;
        if check(&status) {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting until {what}; last status {status}; log:\n{}",
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn init_recovery(server: &Server) -> (Vec<String>, String) {
    let (code, body) = server
        .call(
            "PUT",
            "sys/init",
            None,
            Some(json!({"recovery_shares": 3, "recovery_threshold": 2})),
        )
        .await;
    assert_eq!(code, 200, "{body}");
    let keys = body["recovery_keys_base64"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k.as_str().unwrap().to_owned())
        .collect();
    (keys, body["root_token"].as_str().unwrap().to_owned())
}

async fn write_and_check(server: &Server, root: &str, write: bool) {
    if write {
        mount_kv(server, root, "kv", "1").await;
        let (code, body) = server
            .call("PUT", "kv/app", Some(root), Some(json!({"v": "regions"})))
            .await;
        assert_eq!(code, 204, "{body}");
    }
    let (code, body) = server.call("GET", "kv/app", Some(root), None).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["data"]["v"], "regions");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_secondary_region_unseals_while_the_primary_is_revoked() {
    let east = MotoServer::start_with_iam().await;
    let west = MotoServer::start().await;
    let east_key = east.create_key().await;
    let west_key = west.create_key().await;
    let user = east.create_kms_user("strongroom-node").await;
    let east_creds = (
        user.access_key_id.clone(),
        user.secret_access_key.expose_secret().to_owned(),
    );
    let seals = format!(
        "{}{}",
        stanza(
            &east,
            &east_key.key_id,
            "east",
            1,
            (&east_creds.0, &east_creds.1),
            ""
        ),
        stanza(
            &west,
            &west_key.key_id,
            "west",
            2,
            (TEST_ACCESS_KEY, TEST_SECRET_KEY),
            ""
        ),
    );
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let cfg = config(dir.path(), port, &seals);
    let server = Server::start(dir.path(), port, &cfg).await;
    let (_, root) = init_recovery(&server).await;
    server.wait_sealed(false, Duration::from_secs(20)).await;
    write_and_check(&server, &root, true).await;
    let status = wait_for(&server, "both seals hold a wrap", |s| {
        s["fully_wrapped"] == json!(true)
    })
    .await;
    assert_eq!(status["healthy"], json!(true));
    let names: Vec<&str> = status["backends"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["east", "west"]);
    drop(server);

    // The primary region's key is revoked; the node restarts.
    east.revoke_kms_access(&user).await;
    let server = Server::start(dir.path(), port, &cfg).await;
    server.wait_sealed(false, Duration::from_secs(30)).await;
    write_and_check(&server, &root, false).await;
    let status = wait_for(&server, "the primary is reported unhealthy", |s| {
        s["backends"][0]["healthy"] == json!(false)
    })
    .await;
    assert_eq!(status["healthy"], json!(false), "{status}");
    assert!(status["unhealthy_since"].is_string(), "{status}");
    assert_eq!(status["backends"][1]["healthy"], json!(true), "{status}");
    assert_eq!(status["fully_wrapped"], json!(false), "{status}");
    let (code, metrics) = server
        .call("GET", "sys/metrics?format=prometheus", Some(&root), None)
        .await;
    assert_eq!(code, 200);
    let text = metrics.as_str().unwrap_or_default().to_owned();
    assert!(
        text.lines()
            .any(|l| l.starts_with("strongroom_seal_healthy{")
                && l.contains("name=\"east\"")
                && l.ends_with(" 0")),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("strongroom_seal_healthy{")
                && l.contains("name=\"west\"")
                && l.ends_with(" 1")),
        "{text}"
    );

    // Access returns: the primary is checked, its wrap refreshed.
    east.grant_kms_access(&user).await;
    let status = wait_for(&server, "the primary is healthy and wrapped again", |s| {
        s["healthy"] == json!(true) && s["fully_wrapped"] == json!(true)
    })
    .await;
    assert!(status["backends"][0].get("unhealthy_since").is_none());
    drop(server);

    // And the primary alone unseals (the secondary region is down now).
    west.stop().await;
    let server = Server::start(dir.path(), port, &cfg).await;
    server.wait_sealed(false, Duration::from_secs(30)).await;
    write_and_check(&server, &root, false).await;
}

fn bao_unseal(server: &Server, key: &str) -> std::process::Output {
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
    Command::new(&bao)
        .args(["operator", "unseal", key])
        .env_clear()
        .env("HOME", home.path())
        .env("BAO_ADDR", &server.base)
        .output()
        .expect("run bao")
}

async fn break_glass_scenario(on: bool) {
    let east = MotoServer::start().await;
    let west = MotoServer::start().await;
    let (east_key, west_key) = (east.create_key().await, west.create_key().await);
    let glass = if on { "  recovery_unseal = true\n" } else { "" };
    let creds = (TEST_ACCESS_KEY, TEST_SECRET_KEY);
    let seals = format!(
        "{}{}",
        stanza(&east, &east_key.key_id, "east", 1, creds, glass),
        stanza(&west, &west_key.key_id, "west", 2, creds, ""),
    );
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let cfg = config(dir.path(), port, &seals);
    let server = Server::start(dir.path(), port, &cfg).await;
    let (keys, root) = init_recovery(&server).await;
    server.wait_sealed(false, Duration::from_secs(20)).await;
    write_and_check(&server, &root, true).await;
    if on {
        assert!(
            server.log().contains("recovery_unseal (break-glass) is on"),
            "the start warning is missing:\n{}",
            server.log()
        );
    }
    drop(server);

    // Both regions are gone; the node restarts sealed.
    east.stop().await;
    west.stop().await;
    let server = Server::start(dir.path(), port, &cfg).await;
    let (_, status) = server.call("GET", "sys/seal-status", None, None).await;
    assert_eq!(status["sealed"], json!(true));
    let first = bao_unseal(&server, &keys[0]);
    assert!(first.status.success(), "{first:?}");
    let second = bao_unseal(&server, &keys[2]);
    if on {
        assert!(second.status.success(), "{second:?}");
        server.wait_sealed(false, Duration::from_secs(10)).await;
        write_and_check(&server, &root, false).await;
    } else {
        assert!(!second.status.success());
        let stderr = String::from_utf8_lossy(&second.stderr);
        assert!(
            stderr.contains("recovery keys cannot unseal this node")
                && stderr.contains("recovery_unseal"),
            "{stderr}"
        );
        let (_, status) = server.call("GET", "sys/seal-status", None, None).await;
        assert_eq!(status["sealed"], json!(true));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn break_glass_recovery_keys_unseal_when_every_kms_is_gone() {
    break_glass_scenario(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_break_glass_recovery_keys_are_refused_for_unseal() {
    break_glass_scenario(false).await;
}
