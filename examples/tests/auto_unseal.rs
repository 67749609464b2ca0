//! Auto-unseal through AWS KMS, against a real `moto_server` speaking the
//! KMS protocol: init hands out recovery keys, restarts come back unsealed
//! without anyone typing keys, a KMS outage leaves a restarted node sealed
//! (health 503, a log that names the failure), and the node unseals itself
//! when the KMS returns — without a restart.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test helpers

mod common;

use std::time::Duration;

use serde_json::json;
use testkit::{MotoServer, Scenario, SealStanza};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kms_auto_unseal_survives_restarts_and_outages() {
    let sc = Scenario::new("kms_auto_unseal_survives_restarts_and_outages");
    let moto = MotoServer::start_on(sc.timeline(), false).await;
    let key = moto.create_key().await;
    let server = common::node()
        .seal(SealStanza::awskms(&moto, &key.key_id))
        .unauthenticated_metrics()
        .attr("cluster_name", "auto-unseal-test")
        .attr("auto_unseal_max_backoff", "1s")
        .telemetry_attr("disable_hostname", true)
        .start(&sc, "server")
        .await;

    // Before init: an auto seal reports recovery keys.
    let (_, status) = server.call("GET", "sys/seal-status", None, None).await;
    assert_eq!(status["type"], "awskms");
    assert_eq!(status["recovery_seal"], json!(true));
    assert_eq!(status["initialized"], json!(false));

    // Shamir parameters do not apply to an auto seal.
    let (code, body) = server
        .call(
            "PUT",
            "sys/init",
            None,
            Some(json!({"secret_shares": 5, "secret_threshold": 3})),
        )
        .await;
    assert_eq!(code, 400, "{body}");

    let (code, init) = server
        .call(
            "PUT",
            "sys/init",
            None,
            Some(json!({"recovery_shares": 5, "recovery_threshold": 3})),
        )
        .await;
    assert_eq!(code, 200, "{init}");
    assert_eq!(init["recovery_keys"].as_array().unwrap().len(), 5);
    assert_eq!(init["recovery_keys_base64"].as_array().unwrap().len(), 5);
    assert!(
        init["keys"].as_array().unwrap().is_empty(),
        "no unseal keys with an auto seal: {init}"
    );
    let root = init["root_token"].as_str().unwrap().to_owned();

    // Unsealed right after init, without keys.
    let status = server.wait_sealed(false, Duration::from_secs(10)).await;
    assert_eq!(status["t"], json!(3));
    assert_eq!(status["n"], json!(5));
    assert_eq!(status["cluster_name"], "auto-unseal-test");
    server.mount_kv(&root, "kv", "1").await;
    let (code, _) = server
        .call(
            "PUT",
            "kv/db",
            Some(&root),
            Some(json!({"password": "s3cret"})),
        )
        .await;
    assert_eq!(code, 204);

    // Restart: unsealed again without anyone typing keys.
    sc.step("restart");
    server.restart().await;
    server.wait_sealed(false, Duration::from_secs(15)).await;
    let (_, body) = server.call("GET", "kv/db", Some(&root), None).await;
    assert_eq!(body["data"]["password"], "s3cret");

    // KMS down + restart: the node comes back sealed, fails readiness, and
    // says why in its log.
    sc.step("KMS down, then restart");
    assert!(server.terminate().is_some_and(|s| s.success()));
    moto.stop().await;
    server.start_again().await;
    let log = server
        .wait_log(
            "fetching stored unseal keys failed",
            Duration::from_secs(20),
        )
        .await;
    assert!(
        log.contains("unreachable"),
        "the log should say the KMS is unreachable:\n{log}"
    );
    let (_, status) = server.call("GET", "sys/seal-status", None, None).await;
    assert_eq!(status["sealed"], json!(true), "{status}");
    assert_eq!(server.health_code("").await, 503);
    let (code, body) = server.call("GET", "kv/db", Some(&root), None).await;
    assert_eq!(code, 503, "{body}");
    // Liveness-style probes still pass.
    let response = server
        .http
        .get(format!("{}/v1/sys/health?sealedcode=200", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    // A sealed node can still be scraped (unauthenticated metrics listener).
    let metrics = server
        .http
        .get(format!("{}/v1/sys/metrics?format=prometheus", server.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("\nvault_core_unsealed 0\n"), "{metrics}");
    // Vault's counter naming: no `_total` in the Prometheus text.
    assert!(
        metrics.lines().any(|l| l
            .strip_prefix("strongroom_core_auto_unseal_failures ")
            .is_some_and(|n| n != "0")),
        "{metrics}"
    );
    // The KMS is down: the seal has been unreachable for a measurable time.
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("vault_core_seal_unreachable_time ") && !l.ends_with(" 0")),
        "{metrics}"
    );

    // KMS back: the retry loop unseals the node, no restart needed.
    sc.step("KMS back");
    moto.restart().await;
    server.wait_sealed(false, Duration::from_secs(30)).await;
    assert_eq!(server.health_code("").await, 200);
    let (_, body) = server.call("GET", "kv/db", Some(&root), None).await;
    assert_eq!(body["data"]["password"], "s3cret");
    assert!(
        server.log().contains("vault is unsealed"),
        "{}",
        server.log()
    );
}
