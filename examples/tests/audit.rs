//! Audit devices against the real server: what the log holds, and what
//! happens when a device cannot write (fail closed, bounded by the write
//! timeout, counted in metrics, logged once per burst, always disableable),
//! and SIGHUP reopening the file for logrotate.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};
use testkit::{Node, Scenario, wait};

const ROOT: &str = "audit-test-root-token";

async fn dev_server(sc: &Scenario) -> Node {
    common::node_dev(ROOT).start(sc, "server").await
}

async fn root(server: &Node, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    server.call(method, path, Some(ROOT), body).await
}

fn lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

async fn hash(server: &Node, device: &str, input: &str) -> String {
    let (code, body) = root(
        server,
        "POST",
        &format!("sys/audit-hash/{device}"),
        Some(json!({"input": input})),
    )
    .await;
    assert_eq!(code, 200, "{body}");
    body["data"]["hash"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_request_is_logged_in_pairs_with_secrets_as_hmacs() {
    let sc = Scenario::new("every_request_is_logged_in_pairs_with_secrets_as_hmacs");
    let server = dev_server(&sc).await;
    let dir = sc.subdir("files");
    std::fs::create_dir_all(&dir).unwrap();
    let log = dir.join("audit/vault-audit.log");
    // hvac sends null description and options for missing values.
    let (code, body) = root(
        &server,
        "PUT",
        "sys/audit/file",
        Some(json!({"type": "file", "description": null, "options": {"file_path": log.to_str().unwrap()}})),
    )
    .await;
    assert_eq!(code, 204, "{body}");
    let (code, listed) = root(&server, "GET", "sys/audit", None).await;
    assert_eq!(code, 200);
    assert_eq!(listed["data"]["file/"]["type"], "file");
    assert_eq!(
        listed["file/"]["options"]["file_path"],
        log.to_str().unwrap()
    );

    // A secret write and read, a limited token, its allowed and denied
    // requests, and a request with a made-up token.
    root(
        &server,
        "PUT",
        "secret/data/app",
        Some(json!({"data": {"password": "hunter2-secret"}})),
    )
    .await;
    let (code, read) = root(&server, "GET", "secret/data/app", None).await;
    assert_eq!(code, 200);
    root(
        &server,
        "PUT",
        "sys/policies/acl/reader",
        Some(json!({"policy": "path \"secret/data/app\" { capabilities = [\"read\"] }"})),
    )
    .await;
    let (_, created) = root(
        &server,
        "POST",
        "auth/token/create",
        Some(json!({"policies": ["reader"]})),
    )
    .await;
    let child = created["auth"]["client_token"].as_str().unwrap().to_owned();
    let child_accessor = created["auth"]["accessor"].as_str().unwrap().to_owned();
    let (code, _) = server
        .call("GET", "secret/data/app", Some(&child), None)
        .await;
    assert_eq!(code, 200);
    let (code, _) = server
        .call(
            "PUT",
            "secret/data/app",
            Some(&child),
            Some(json!({"data": {"x": "y"}})),
        )
        .await;
    assert_eq!(code, 403);
    let (code, _) = server
        .call("GET", "secret/data/app", Some("made-up-token"), None)
        .await;
    assert_eq!(code, 403);

    let entries = lines(&log);
    let text = std::fs::read_to_string(&log).unwrap();
    // Pairs: every request id has one request and one response entry,
    // except the enable-time probe (request only).
    let mut by_id: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for e in &entries {
        by_id
            .entry(e["request"]["id"].as_str().unwrap().to_owned())
            .or_default()
            .push(e["type"].as_str().unwrap().to_owned());
    }
    for (id, kinds) in &by_id {
        let probe = entries
            .iter()
            .any(|e| e["request"]["id"] == json!(id) && e["request"]["path"] == "sys/audit/test");
        if probe {
            assert_eq!(kinds, &["request"], "probe {id}");
        } else {
            assert_eq!(kinds, &["request", "response"], "request {id}");
        }
    }
    // The read's request id is the one its HTTP answer carried.
    let read_id = read["request_id"].as_str().unwrap();
    assert_eq!(by_id[read_id], ["request", "response"]);

    // Secrets, tokens and accessors appear only as HMACs equal to sys/audit-hash.
    for secret in [
        "hunter2-secret",
        ROOT,
        child.as_str(),
        child_accessor.as_str(),
        "made-up-token",
    ] {
        assert!(
            !text.contains(secret),
            "{secret:?} appears in the audit log"
        );
    }
    let password = hash(&server, "file", "hunter2-secret").await;
    let root_hash = hash(&server, "file", ROOT).await;
    let child_hash = hash(&server, "file", &child).await;
    let made_up = hash(&server, "file", "made-up-token").await;
    let write = entries
        .iter()
        .find(|e| {
            e["type"] == "request"
                && e["request"]["path"] == "secret/data/app"
                && e["request"]["operation"] == "create"
        })
        .expect("the secret's write");
    assert_eq!(
        write["request"]["data"]["data"]["password"],
        json!(password)
    );
    assert_eq!(write["request"]["client_token"], json!(root_hash));
    assert_eq!(write["auth"]["client_token"], json!(root_hash));
    assert_eq!(write["request"]["mount_type"], "kv");
    let read_response = entries
        .iter()
        .find(|e| e["type"] == "response" && e["request"]["id"] == json!(read_id))
        .unwrap();
    assert_eq!(
        read_response["response"]["data"]["data"]["password"],
        json!(password)
    );
    let created_response = entries
        .iter()
        .find(|e| e["type"] == "response" && e["request"]["path"] == "auth/token/create")
        .unwrap();
    assert_eq!(
        created_response["response"]["auth"]["client_token"],
        json!(child_hash)
    );
    // Denied requests are recorded, with the caller and the error in
    // Vault's multierror text (as OpenBao writes it).
    let multierror = "1 error occurred:\n\t* permission denied\n\n";
    let denied: Vec<&Value> = entries
        .iter()
        .filter(|e| e["request"]["client_token"] == json!(child_hash) && e["error"] == multierror)
        .collect();
    assert_eq!(denied.len(), 2, "request and response of the refused write");
    assert_eq!(denied[0]["auth"]["policy_results"]["allowed"], false);
    assert_eq!(
        denied[0]["auth"]["token_policies"],
        json!(["default", "reader"])
    );
    // An unknown token: the request entry has the bare text, the response
    // entry the router's multierror, no `auth` beyond what is known.
    let unknown: Vec<&Value> = entries
        .iter()
        .filter(|e| e["request"]["client_token"] == json!(made_up))
        .collect();
    assert_eq!(unknown.len(), 2, "the made-up token's request and response");
    assert_eq!(unknown[0]["error"], "permission denied");
    assert_eq!(unknown[1]["error"], multierror);
    assert!(
        unknown[1]["response"]["data"]["error"]
            .as_str()
            .is_some_and(|h| h.starts_with("hmac-sha256:"))
    );
    let allowed = entries
        .iter()
        .find(|e| {
            e["request"]["client_token"] == json!(child_hash)
                && e["type"] == "request"
                && e["request"]["operation"] == "read"
        })
        .unwrap();
    assert_eq!(
        allowed["auth"]["policy_results"]["granting_policies"][0]["name"],
        "reader"
    );
    assert_eq!(allowed["request"]["remote_address"], "127.0.0.1");
    // Vault's shape: issue time in whole seconds, no `remaining_uses` for
    // a token without a use limit.
    let issued = allowed["auth"]["token_issue_time"].as_str().unwrap();
    assert!(
        issued.ends_with('Z') && !issued.contains('.') && issued.len() == 20,
        "{issued}"
    );
    assert!(allowed["auth"].get("remaining_uses").is_none(), "{allowed}");
}

async fn prometheus(server: &Node) -> String {
    let response = server
        .http
        .get(format!("{}/v1/sys/metrics?format=prometheus", server.base))
        .header("X-Vault-Token", ROOT)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    response.text().await.unwrap()
}

fn counter(metrics: &str, name: &str) -> u64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("{name} missing:\n{metrics}"))
}

#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unwritable_device_refuses_requests_before_the_backend_runs() {
    let sc = Scenario::new("an_unwritable_device_refuses_requests_before_the_backend_runs");
    let server = dev_server(&sc).await;
    let dir = sc.subdir("files");
    std::fs::create_dir_all(&dir).unwrap();
    // /dev/full: every write fails with ENOSPC, like a full disk. The
    // enable-time probe notices and refuses the device...
    let (code, body) = root(
        &server,
        "PUT",
        "sys/audit/full",
        Some(json!({"type": "file", "options": {"file_path": "/dev/full"}})),
    )
    .await;
    assert_eq!(code, 400, "{body}");
    assert!(
        body["errors"][0]
            .as_str()
            .unwrap()
            .contains("sanity check failed"),
        "{body}"
    );
    // ...unless told to skip it.
    let (code, body) = root(
        &server,
        "PUT",
        "sys/audit/full",
        Some(json!({"type": "file", "options": {"file_path": "/dev/full", "skip_test": "true"}})),
    )
    .await;
    assert_eq!(code, 204, "{body}");

    for i in 0..5 {
        let (code, body) = root(
            &server,
            "PUT",
            &format!("secret/data/lost-{i}"),
            Some(json!({"data": {"a": "b"}})),
        )
        .await;
        assert_eq!(code, 500, "{body}");
        assert_eq!(
            body["errors"][0],
            "1 error occurred:\n\t* internal error\n\n"
        );
    }
    let metrics = prometheus(&server).await;
    assert!(
        counter(&metrics, "vault_audit_log_request_failure") >= 5,
        "{metrics}"
    );
    // One log line for the whole burst, not one per request.
    let log = server.log();
    assert_eq!(
        log.matches("audit device failed to record").count(),
        1,
        "{log}"
    );

    // Disabling the broken device works although nothing can be recorded.
    let (code, body) = root(&server, "DELETE", "sys/audit/full", None).await;
    assert_eq!(code, 204, "{body}");
    for i in 0..5 {
        let (code, _) = root(&server, "GET", &format!("secret/data/lost-{i}"), None).await;
        assert_eq!(code, 404, "the refused write {i} must not have run");
    }
    let (code, _) = root(
        &server,
        "PUT",
        "secret/data/after",
        Some(json!({"data": {"a": "b"}})),
    )
    .await;
    assert_eq!(code, 200);
    assert!(
        server.log().contains("audit logging recovered")
            || server.log().contains("disabled audit device")
    );
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipe_nobody_reads_fails_within_the_write_timeout() {
    let sc = Scenario::new("a_pipe_nobody_reads_fails_within_the_write_timeout");
    let server = dev_server(&sc).await;
    let dir = sc.subdir("files");
    std::fs::create_dir_all(&dir).unwrap();
    let fifo = dir.join("audit.pipe");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success(), "mkfifo failed");
    // A reader that opens the pipe and never reads: writes block once the
    // kernel's pipe buffer is full.
    let reader_path = fifo.clone();
    let reader = std::thread::spawn(move || std::fs::File::open(reader_path).unwrap());
    let (code, body) = root(
        &server,
        "PUT",
        "sys/audit/pipe",
        Some(json!({"type": "file", "options": {"file_path": fifo.to_str().unwrap(), "write_timeout": "500ms"}})),
    )
    .await;
    assert_eq!(code, 204, "{body}");
    let held_reader = reader.join().unwrap();
    root(
        &server,
        "POST",
        "sys/mounts/kv",
        Some(json!({"type": "kv", "options": {"version": "1"}})),
    )
    .await;

    // Fill the pipe until the device blocks; the request that finds it
    // blocked comes back (bounded by the timeout) with 500.
    // (That request may have run: only its response entry may have been
    // the one that could not be written.)
    let filler = "x".repeat(1024);
    let mut filled = false;
    for i in 0..2000 {
        let (code, body) = root(
            &server,
            "PUT",
            &format!("kv/n-{i}"),
            Some(json!({"v": filler})),
        )
        .await;
        if code == 500 {
            filled = true;
            break;
        }
        assert_eq!(code, 204, "{body}");
    }
    assert!(filled, "the pipe never filled up");
    // While the device stays blocked, requests are refused before they run.
    let (code, _) = root(&server, "PUT", "kv/blocked", Some(json!({"v": "w"}))).await;
    assert_eq!(code, 500);
    let (code, _) = root(&server, "GET", "kv/n-0", None).await;
    assert_eq!(code, 500);

    let (code, body) = root(&server, "DELETE", "sys/audit/pipe", None).await;
    assert_eq!(code, 204, "{body}");
    let (code, _) = root(&server, "GET", "kv/blocked", None).await;
    assert_eq!(code, 404, "the refused write must not have run");
    let (code, _) = root(&server, "GET", "kv/n-0", None).await;
    assert_eq!(code, 200);
    drop(held_reader);
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reopens_the_file_for_logrotate() {
    let sc = Scenario::new("sighup_reopens_the_file_for_logrotate");
    let server = dev_server(&sc).await;
    let dir = sc.subdir("files");
    std::fs::create_dir_all(&dir).unwrap();
    let log = dir.join("audit.log");
    let (code, body) = root(
        &server,
        "PUT",
        "sys/audit/file",
        Some(json!({"type": "file", "options": {"file_path": log.to_str().unwrap()}})),
    )
    .await;
    assert_eq!(code, 204, "{body}");
    let (code, _) = root(&server, "GET", "sys/policy", None).await;
    assert_eq!(code, 200);
    let rotated = dir.join("audit.log.1");
    std::fs::rename(&log, &rotated).unwrap();
    sc.step("SIGHUP");
    server.process().signal("HUP");
    // Until the server has handled the signal, lines still go to the
    // renamed file; then a new file appears.
    wait::until(
        "a new audit file after SIGHUP",
        Duration::from_secs(30),
        || async {
            let (_, body) = root(&server, "GET", "sys/policy", None).await;
            let id = body["request_id"].as_str().unwrap_or_default().to_owned();
            lines(&log)
                .iter()
                .any(|e| e["request"]["id"] == json!(id))
                .then_some(())
        },
    )
    .await;
    assert!(!lines(&rotated).is_empty());
    assert!(
        server
            .log()
            .contains("SIGHUP: reopening audit device files")
    );
    assert!(server.exited().is_none(), "SIGHUP must not stop the server");
}
