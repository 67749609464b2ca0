//! `sys/health` status codes through the server's lifecycle, with the
//! overrides Kubernetes probes and load balancers use, plus the other
//! unauthenticated status endpoints.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test helpers

mod common;

use serde_json::json;
use testkit::{Node, Scenario};

async fn code(server: &Node, method: &str, query: &str) -> (u16, String) {
    let response = server
        .http
        .request(
            reqwest::Method::from_bytes(method.as_bytes()).unwrap(),
            format!("{}/v1/sys/health{query}", server.base),
        )
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_codes_follow_the_lifecycle_and_overrides() {
    let sc = Scenario::new("health_codes_follow_the_lifecycle_and_overrides");
    let server = common::node().start(&sc, "server").await;

    // Uninitialised: 501, overridable.
    assert_eq!(code(&server, "GET", "").await.0, 501);
    assert_eq!(code(&server, "GET", "?uninitcode=204").await.0, 204);
    assert_eq!(
        code(
            &server,
            "GET",
            "?standbyok=true&sealedcode=204&uninitcode=204"
        )
        .await
        .0,
        204
    );
    let (status, body) = code(&server, "HEAD", "").await;
    assert_eq!((status, body.as_str()), (501, ""), "HEAD has no body");
    let (_, body) = code(&server, "GET", "").await;
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["initialized"], json!(false));
    assert_eq!(body["sealed"], json!(true));
    assert_eq!(body["standby"], json!(false));
    assert!(body["server_time_utc"].as_i64().unwrap() > 1_600_000_000);
    assert!(body["version"].is_string());

    // Sealed: 503, overridable; uninitcode no longer applies.
    let keys = server.init(2, 2).await.keys_base64;
    assert_eq!(code(&server, "GET", "").await.0, 503);
    assert_eq!(code(&server, "GET", "?sealedcode=200").await.0, 200);
    assert_eq!(code(&server, "GET", "?uninitcode=204").await.0, 503);
    assert_eq!(code(&server, "HEAD", "?sealedcode=299").await.0, 299);

    // Seal status and leader while sealed.
    let (c, status) = server.call("GET", "sys/seal-status", None, None).await;
    assert_eq!(c, 200);
    for field in [
        "type",
        "initialized",
        "sealed",
        "t",
        "n",
        "progress",
        "nonce",
        "version",
        "build_date",
        "migration",
        "recovery_seal",
        "storage_type",
    ] {
        assert!(
            status.get(field).is_some(),
            "seal-status lacks {field}: {status}"
        );
    }
    assert_eq!(status["type"], "shamir");
    assert_eq!(status["storage_type"], "redb");
    assert_eq!(status["recovery_seal"], json!(false));
    let (c, leader) = server.call("GET", "sys/leader", None, None).await;
    assert_eq!(c, 200);
    assert_eq!(leader["ha_enabled"], json!(false));

    // Active: 200 with the cluster identity; overrides apply.
    server.unseal(&keys).await;
    let (c, body) = code(&server, "GET", "").await;
    assert_eq!(c, 200);
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["sealed"], json!(false));
    assert!(
        body["cluster_id"].is_string() && body["cluster_name"].is_string(),
        "{body}"
    );
    assert_eq!(code(&server, "GET", "?activecode=299").await.0, 299);
    assert_eq!(code(&server, "GET", "?standbyok").await.0, 200);

    // Bad overrides: 400 (HEAD too, without a body).
    for query in [
        "?activecode=abc",
        "?sealedcode=42",
        "?standbyok=maybe",
        "?uninitcode=1000",
    ] {
        assert_eq!(code(&server, "GET", query).await.0, 400, "{query}");
    }
    assert_eq!(code(&server, "HEAD", "?activecode=x").await.0, 400);
    // Other methods are refused.
    assert_eq!(code(&server, "POST", "").await.0, 405);
}
