//! Hostile and clumsy clients get clear 4xx answers with Vault's
//! `{"errors":[...]}` body, and the server keeps serving everyone else.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test helpers

mod common;

use serde_json::{Value, json};
use testkit::{Node, Scenario};

/// Sends `body` as is; the status and the JSON answer (`Null` if none).
async fn raw(
    server: &Node,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Vec<u8>,
) -> (u16, Value) {
    let (status, value) = server
        .try_call_bytes(method, path, token, Some(body))
        .await
        .unwrap();
    (
        status,
        if value.is_string() {
            Value::Null
        } else {
            value
        },
    )
}

fn first_error(body: &Value) -> String {
    body["errors"][0].as_str().unwrap_or_default().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_clear_4xx_and_the_server_keeps_serving() {
    let sc = Scenario::new("bad_requests_get_clear_4xx_and_the_server_keeps_serving");
    let server = common::node()
        .listener_attr("max_request_size", 4096)
        .telemetry_attr("disable_hostname", true)
        .start(&sc, "server")
        .await;

    // Malformed JSON and wrong types on sys/init.
    let (code, body) = raw(
        &server,
        "PUT",
        "sys/init",
        None,
        b"{\"secret_shares\": 5,".to_vec(),
    )
    .await;
    assert_eq!(code, 400, "{body}");
    assert!(
        first_error(&body).contains("failed to parse JSON input"),
        "{body}"
    );
    let (code, body) = server
        .call(
            "PUT",
            "sys/init",
            None,
            Some(json!({"secret_shares": "five", "secret_threshold": 3})),
        )
        .await;
    assert_eq!(code, 400, "{body}");
    assert!(
        first_error(&body).contains("secret_shares") || first_error(&body).contains("invalid type"),
        "{body}"
    );

    // Invalid share counts (Vault's limits).
    for (shares, threshold) in [(0, 0), (3, 5), (256, 3), (5, 1)] {
        let (code, body) = server
            .call(
                "PUT",
                "sys/init",
                None,
                Some(json!({"secret_shares": shares, "secret_threshold": threshold})),
            )
            .await;
        assert_eq!(code, 400, "{shares}/{threshold}: {body}");
        assert!(!first_error(&body).is_empty(), "{body}");
    }
    // Still uninitialised after all that.
    let (_, body) = server.call("GET", "sys/init", None, None).await;
    assert_eq!(body, json!({"initialized": false}));

    // Unseal before init, and unseal without a key.
    let (code, _) = server
        .call("PUT", "sys/unseal", None, Some(json!({"key": "abcd"})))
        .await;
    assert_eq!(code, 400);

    let init = server.init(3, 2).await;
    let (keys, root) = (init.keys_base64, init.root_token);

    let (code, body) = server
        .call("PUT", "sys/unseal", None, Some(json!({})))
        .await;
    assert_eq!(code, 400);
    assert_eq!(
        first_error(&body),
        "'key' must be specified in request body as JSON, or 'reset' set to true"
    );
    let (code, body) = server
        .call(
            "PUT",
            "sys/unseal",
            None,
            Some(json!({"key": "not a key!"})),
        )
        .await;
    assert_eq!(code, 400, "{body}");
    let (code, body) = server
        .call("PUT", "sys/unseal", None, Some(json!({"key": 12})))
        .await;
    assert_eq!(code, 400, "{body}");
    // A share of the wrong length (valid hex, 20 bytes).
    let (code, body) = server
        .call(
            "PUT",
            "sys/unseal",
            None,
            Some(json!({"key": "00112233445566778899aabbccddeeff00112233"})),
        )
        .await;
    assert!(code == 400 || code == 200, "{code} {body}");
    server
        .call("PUT", "sys/unseal", None, Some(json!({"reset": true})))
        .await;
    // Two shares from different key sets never unseal: a made-up share plus a real one → 400 at threshold.
    let (code, _) = server
        .call("PUT", "sys/unseal", None, Some(json!({"key": keys[0]})))
        .await;
    assert_eq!(code, 200);
    let mut bogus = base64_decode(&keys[1]);
    bogus[0] ^= 0xff;
    let (code, body) = server
        .call(
            "PUT",
            "sys/unseal",
            None,
            Some(json!({"key": base64_encode(&bogus)})),
        )
        .await;
    assert_eq!(code, 400, "{body}");
    let (_, status) = server.call("GET", "sys/seal-status", None, None).await;
    assert_eq!(status["sealed"], json!(true));
    assert_eq!(
        status["progress"],
        json!(0),
        "progress resets after a failed attempt"
    );

    server.unseal(&keys[..2]).await;
    server.mount_kv(&root, "secret", "2").await;

    // Tokens: none, wrong, Bearer.
    let (code, body) = server.call("GET", "secret/data/x", None, None).await;
    assert_eq!(code, 403, "{body}");
    assert_eq!(first_error(&body), "permission denied");
    let (code, _) = server
        .call("GET", "secret/data/x", Some("s.wrong"), None)
        .await;
    assert_eq!(code, 403);
    let response = server
        .http
        .get(format!("{}/v1/secret/data/x", server.base))
        .bearer_auth(&root)
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status().as_u16(),
        404,
        "Bearer token accepted; secret absent"
    );
    let (code, _) = server.call("PUT", "sys/seal", None, None).await;
    assert_eq!(code, 403, "sys/seal needs a token");

    // Malformed bodies on the logical path.
    let (code, body) = raw(
        &server,
        "PUT",
        "secret/data/x",
        Some(&root),
        b"{not json".to_vec(),
    )
    .await;
    assert_eq!(code, 400, "{body}");
    let (code, body) = raw(
        &server,
        "PUT",
        "secret/data/x",
        Some(&root),
        b"[1,2,3]".to_vec(),
    )
    .await;
    assert_eq!(code, 400, "{body}");
    let (code, body) = server
        .call(
            "PUT",
            "secret/data/x",
            Some(&root),
            Some(json!({"data": "not-an-object"})),
        )
        .await;
    assert_eq!(code, 400, "{body}");

    // Oversized bodies: declared length, and chunked without a length.
    let (code, body) = raw(
        &server,
        "PUT",
        "secret/data/big",
        Some(&root),
        vec![b' '; 8192],
    )
    .await;
    assert_eq!(code, 413, "{body}");
    assert!(first_error(&body).contains("too large"), "{body}");
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        (0..8).map(|_| Ok(vec![b' '; 1024])).collect();
    let response = server
        .http
        .put(format!("{}/v1/secret/data/big", server.base))
        .header("X-Vault-Token", &root)
        .body(reqwest::Body::wrap_stream(futures::stream::iter(chunks)))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 413);

    // Unknown paths and methods.
    let (code, _) = server
        .call("GET", "nonexistent/path", Some(&root), None)
        .await;
    assert!((400..500).contains(&code), "{code}");
    let response = server
        .http
        .get(format!("{}/not-v1", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 404);
    let (code, _) = server.call("DELETE", "sys/seal-status", None, None).await;
    assert_eq!(code, 405);
    let (code, body) = server
        .call("GET", "sys/health?sealedcode=abc", None, None)
        .await;
    assert_eq!(code, 400, "{body}");
    let (code, _) = server
        .call(
            "PUT",
            "sys/init",
            None,
            Some(json!({"secret_shares": 1, "secret_threshold": 1})),
        )
        .await;
    assert_eq!(code, 400, "already initialised");

    // The server still serves: a normal write and read.
    let (code, _) = server
        .call(
            "PUT",
            "secret/data/ok",
            Some(&root),
            Some(json!({"data": {"a": "b"}})),
        )
        .await;
    assert_eq!(code, 200);
    let (code, body) = server
        .call("GET", "secret/data/ok", Some(&root), None)
        .await;
    assert_eq!(code, 200);
    assert_eq!(body["data"]["data"]["a"], "b");
    let (code, _) = server.call("GET", "sys/health", None, None).await;
    assert_eq!(code, 200);

    // And the metrics saw it all: Vault's request timing, counts by
    // method and status code, the core's figures.
    let response = server
        .http
        .get(format!("{}/v1/sys/metrics?format=prometheus", server.base))
        .header("X-Vault-Token", &root)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let text = response.text().await.unwrap();
    for expected in [
        "strongroom_http_requests{method=\"PUT\",code=\"400\"}",
        "strongroom_http_requests{method=\"PUT\",code=\"413\"}",
        "strongroom_http_requests{method=\"GET\",code=\"200\"}",
        "# TYPE vault_core_handle_request summary\n",
        "vault_core_handle_request{quantile=\"0.99\"} ",
        "vault_redb_put_count ",
        "vault_barrier_put{quantile=\"0.5\"} ",
        "vault_barrier_get_count ",
        "strongroom_core_unseal_failures 1",
        "vault_barrier_estimated_encryptions{term=\"1\"}",
    ] {
        assert!(text.contains(expected), "{expected} missing from\n{text}");
    }
    // Prometheus asks for OpenMetrics; it ends with the EOF marker.
    let response = server
        .http
        .get(format!("{}/v1/sys/metrics", server.base))
        .header("X-Vault-Token", &root)
        .header(
            "Accept",
            "application/openmetrics-text;version=1.0.0,text/plain;q=0.3",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/openmetrics-text")
    );
    assert!(response.text().await.unwrap().ends_with("# EOF\n"));
    let (code, _) = server.call("GET", "sys/metrics", None, None).await;
    assert_eq!(code, 403, "metrics need a token");
}

fn base64_decode(text: &str) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .unwrap()
}

fn base64_encode(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}
