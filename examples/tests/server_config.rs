//! Starting the server: `-dev`, TLS listeners, and clear refusals of bad
//! configuration (naming the file and line) and busy ports.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test helpers

mod common;

use std::process::Stdio;

use common::{Server, bin, free_port};
use serde_json::json;

async fn start_fails(dir: &std::path::Path, config: &str) -> String {
    let path = dir.join("bad.hcl");
    std::fs::write(&path, config).unwrap();
    let out = tokio::process::Command::new(bin())
        .args(["server", &format!("-config={}", path.display())])
        .stdin(Stdio::null())
        .output()
        .await
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "the server must refuse to start"
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_configs_are_refused_naming_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let listener = common::plain_listener(port);

    let err = start_fails(
        dir.path(),
        &format!("{listener}\nstorage \"raft\" {{\n  path = \"/x\"\n}}\n"),
    )
    .await;
    assert!(err.contains("bad.hcl, line 6"), "{err}");
    assert!(
        err.contains("storage type \"raft\" is not supported"),
        "{err}"
    );

    let err = start_fails(
        dir.path(),
        "storage \"inmem\" {}\nlistener \"tcp\" {\n  address = \n}\n",
    )
    .await;
    assert!(err.contains("HCL syntax error"), "{err}");
    assert!(err.contains("line 4") || err.contains("line 3"), "{err}");

    let err = start_fails(dir.path(), &format!("storage \"inmem\" {{}}\n{listener}seal \"awskms\" {{\n  kms_key_id = \"k\"\n  bogus = 1\n}}\n")).await;
    assert!(err.contains("seal \"awskms\" (config line 6)"), "{err}");
    assert!(err.contains("bogus"), "{err}");

    let err = start_fails(
        dir.path(),
        "storage \"inmem\" {}\nlistener \"tcp\" {\n  address = \"127.0.0.1:1\"\n  tls_cert_file = \"/nonexistent/cert.pem\"\n  tls_key_file = \"/nonexistent/key.pem\"\n}\n",
    )
    .await;
    assert!(err.contains("tls_cert_file /nonexistent/cert.pem"), "{err}");

    // A busy port.
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy_port = busy.local_addr().unwrap().port();
    let err = start_fails(
        dir.path(),
        &format!(
            "storage \"inmem\" {{}}\n{}",
            common::plain_listener(busy_port)
        ),
    )
    .await;
    assert!(
        err.contains(&format!("listening on 127.0.0.1:{busy_port}")),
        "{err}"
    );

    // Missing file.
    let out = tokio::process::Command::new(bin())
        .args(["server", "-config=/nonexistent/strongroom.hcl"])
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/strongroom.hcl"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_mode_is_unsealed_with_kv_v2_at_secret() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let server = Server::start_dev(dir.path(), port, "dev-root").await;
    let log = server.log();
    assert!(log.contains("Root Token: dev-root"), "{log}");
    assert!(log.contains("Unseal Key: "), "{log}");
    let (_, status) = server.call("GET", "sys/seal-status", None, None).await;
    assert_eq!(status["sealed"], json!(false));
    assert_eq!(status["t"], json!(1));
    assert_eq!(status["storage_type"], "inmem");
    let (code, mount) = server
        .call(
            "GET",
            "sys/internal/ui/mounts/secret/foo",
            Some("dev-root"),
            None,
        )
        .await;
    assert_eq!(code, 200, "{mount}");
    assert_eq!(mount["data"]["options"]["version"], "2");
    let (code, _) = server
        .call(
            "PUT",
            "secret/data/foo",
            Some("dev-root"),
            Some(json!({"data": {"a": "b"}})),
        )
        .await;
    assert_eq!(code, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_listener_serves_https() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let cert =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
            .unwrap();
    let cert_path = dir.path().join("cert.pem");
    let key_path = dir.path().join("key.pem");
    std::fs::write(&cert_path, cert.cert.pem()).unwrap();
    std::fs::write(&key_path, cert.key_pair.serialize_pem()).unwrap();
    let config = format!(
        "storage \"inmem\" {{}}\nlistener \"tcp\" {{\n  address = \"127.0.0.1:{port}\"\n  tls_cert_file = \"{}\"\n  tls_key_file = \"{}\"\n}}\n",
        cert_path.display(),
        key_path.display()
    );
    std::fs::write(dir.path().join("server.hcl"), &config).unwrap();
    let config_arg = format!("-config={}", dir.path().join("server.hcl").display());
    let mut server = Server::spawn(dir.path(), port, &["server", &config_arg]);
    server.base = format!("https://127.0.0.1:{port}");
    server.http = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(cert.cert.pem().as_bytes()).unwrap())
        .build()
        .unwrap();
    server.wait_ready().await;
    let (code, body) = server.call("GET", "sys/health", None, None).await;
    assert_eq!(code, 501, "{body}");
    assert!(
        server.log().contains("tls: \"enabled\""),
        "{}",
        server.log()
    );

    // Plain HTTP to a TLS port gets no HTTP answer.
    let plain = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{port}/v1/sys/health"))
        .send()
        .await;
    assert!(plain.map(|r| r.status().as_u16() != 501).unwrap_or(true));

    // The CLI trusts the CA given with -ca-cert.
    let out = tokio::process::Command::new(bin())
        .args([
            "status",
            &format!("-address=https://127.0.0.1:{port}"),
            &format!("-ca-cert={}", cert_path.display()),
        ])
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(2),
        "uninitialised = sealed: {stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("Initialized        false"), "{stdout}");
}
