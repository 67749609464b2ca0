//! Durability of the real server on redb: data survives a clean restart
//! (SIGTERM) and a crash (SIGKILL) loses no write the client saw
//! acknowledged.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test helpers

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;
use testkit::Scenario;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_write_restart_unseal_read_back() {
    let sc = Scenario::new("init_write_restart_unseal_read_back");
    let server = common::node().start(&sc, "server").await;

    let init = server.init(3, 2).await;
    let (keys, root) = (init.keys_base64, init.root_token);
    assert_eq!(keys.len(), 3);
    server.unseal(&keys[..2]).await;
    server.mount_kv(&root, "secret", "2").await;
    server.mount_kv(&root, "kv", "1").await;
    for i in 0..20 {
        let (code, body) = server
            .call(
                "PUT",
                &format!("secret/data/app/{i}"),
                Some(&root),
                Some(json!({"data": {"n": i.to_string()}})),
            )
            .await;
        assert_eq!(code, 200, "{body}");
    }
    // A second version of one secret.
    server
        .call(
            "PUT",
            "secret/data/app/0",
            Some(&root),
            Some(json!({"data": {"n": "zero-v2"}})),
        )
        .await;
    let (code, _) = server
        .call(
            "PUT",
            "kv/plain",
            Some(&root),
            Some(json!({"password": "hunter2"})),
        )
        .await;
    assert_eq!(code, 204);

    // Clean shutdown: drains, seals, exits 0.
    sc.step("SIGTERM");
    let status = server.terminate().expect("exits on SIGTERM");
    assert!(
        status.success(),
        "exit status {status}; log:\n{}",
        server.log()
    );
    assert!(
        server.log().contains("sealed and stopped"),
        "{}",
        server.log()
    );

    sc.step("start again");
    server.start_again().await;
    let status = server.wait_sealed(true, Duration::from_secs(5)).await;
    assert_eq!(status["initialized"], json!(true));
    assert_eq!(status["t"], json!(2));
    assert_eq!(status["n"], json!(3));
    assert_eq!(status["progress"], json!(0));
    // Sealed: the logical layer answers 503.
    let (code, body) = server.call("GET", "kv/plain", Some(&root), None).await;
    assert_eq!(code, 503, "{body}");
    assert_eq!(body["errors"][0], "Vault is sealed");

    // A different pair of keys than before.
    let (_, progress) = server
        .call("PUT", "sys/unseal", None, Some(json!({"key": keys[2]})))
        .await;
    assert_eq!(progress["progress"], json!(1));
    assert!(!progress["nonce"].as_str().unwrap().is_empty());
    server.unseal(&keys[..1]).await;

    for i in 1..20 {
        let (code, body) = server
            .call("GET", &format!("secret/data/app/{i}"), Some(&root), None)
            .await;
        assert_eq!(code, 200, "{body}");
        assert_eq!(body["data"]["data"]["n"], json!(i.to_string()));
    }
    let (_, body) = server
        .call("GET", "secret/data/app/0", Some(&root), None)
        .await;
    assert_eq!(body["data"]["data"]["n"], "zero-v2");
    assert_eq!(body["data"]["metadata"]["version"], json!(2));
    let (_, body) = server
        .call("GET", "secret/data/app/0?version=1", Some(&root), None)
        .await;
    assert_eq!(body["data"]["data"]["n"], "0");
    let (_, body) = server.call("GET", "kv/plain", Some(&root), None).await;
    assert_eq!(body["data"]["password"], "hunter2");
    let (code, body) = server
        .call("LIST", "secret/metadata/app", Some(&root), None)
        .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["data"]["keys"].as_array().unwrap().len(), 20);
    // GET with ?list=true is the same LIST.
    let (code, listed) = server
        .call("GET", "secret/metadata/app?list=true", Some(&root), None)
        .await;
    assert_eq!(code, 200, "{listed}");
    assert_eq!(listed["data"]["keys"], body["data"]["keys"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_during_writes_loses_no_acknowledged_write() {
    let sc = Scenario::new("kill_9_during_writes_loses_no_acknowledged_write");
    let server = common::node().start(&sc, "server").await;
    let init = server.init_unsealed(1, 1).await;
    let (keys, root) = (init.keys_base64, init.root_token);
    server.mount_kv(&root, "kv", "1").await;
    server.mount_kv(&root, "secret", "2").await;

    // Writers record every write the server acknowledged.
    let acked: Arc<Mutex<Vec<(String, String)>>> = Arc::new(Mutex::new(Vec::new()));
    let mut writers = Vec::new();
    let base = server.addr().to_owned();
    for writer in 0..8 {
        let acked = acked.clone();
        let base = base.clone();
        let root = root.clone();
        writers.push(tokio::spawn(async move {
            let http = reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()
                .unwrap();
            let deadline = Instant::now() + Duration::from_secs(20);
            let mut i = 0u64;
            while Instant::now() < deadline {
                let (path, body) = if i.is_multiple_of(2) {
                    (
                        format!("kv/w{writer}/k{i}"),
                        json!({"v": format!("value-{writer}-{i}")}),
                    )
                } else {
                    (
                        format!("secret/data/w{writer}/k{i}"),
                        json!({"data": {"v": format!("value-{writer}-{i}")}}),
                    )
                };
                let sent = http
                    .put(format!("{base}/v1/{path}"))
                    .header("X-Vault-Token", &root)
                    .json(&body)
                    .send()
                    .await;
                match sent {
                    Ok(r) if r.status().is_success() => {
                        acked
                            .lock()
                            .unwrap()
                            .push((path, format!("value-{writer}-{i}")));
                    }
                    Ok(r) => panic!("write {path} refused before the crash: {}", r.status()),
                    // The server is gone: stop writing.
                    Err(_) => return,
                }
                i += 1;
            }
        }));
    }
    // Let writes pile up, then crash the server mid-stream.
    let _ = testkit::wait::try_until(
        "300 writes acknowledged",
        Duration::from_secs(15),
        || async { acked.lock().unwrap().len() >= 300 },
    )
    .await;
    sc.step(format!(
        "SIGKILL after {} acknowledged writes",
        acked.lock().unwrap().len()
    ));
    server.kill9();
    for w in writers {
        w.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() >= 100,
        "only {} writes were acknowledged before the crash",
        acked.len()
    );

    server.start_again().await;
    server.unseal(&keys).await;
    let mut lost = Vec::new();
    for (path, value) in &acked {
        let (code, body) = server.call("GET", path, Some(&root), None).await;
        let got = if path.starts_with("secret/") {
            body["data"]["data"]["v"].clone()
        } else {
            body["data"]["v"].clone()
        };
        if code != 200 || got != json!(value) {
            lost.push(format!("{path}: {code} {body}"));
        }
    }
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged writes lost: {:?}",
        lost.len(),
        acked.len(),
        &lost[..lost.len().min(5)]
    );
}
