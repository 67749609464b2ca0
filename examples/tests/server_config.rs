//! Starting the server: `-dev`, TLS listeners, and clear refusals of bad
//! configuration (naming the file and line) and busy ports.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test helpers

mod common;

use std::path::Path;
use std::time::Duration;

use common::bin;
use serde_json::json;
use testkit::{NodeConfig, Process, ProcessSpec, Scenario, StorageStanza, Timeline};

/// Runs the server with `args` and returns its output once it has exited
/// with status 1, as a refused start must.
fn refused(dir: &Path, args: &[&str]) -> String {
    let spec = ProcessSpec::new("server", bin(), dir.join("refused.log")).args(args);
    let server = Process::start(spec, &Timeline::new());
    let status = server
        .wait_exit(Duration::from_secs(30))
        .unwrap_or_else(|| {
            panic!(
                "the server must refuse to start, not run:\n{}",
                server.log()
            )
        });
    assert_eq!(status.code(), Some(1), "the server must refuse to start");
    server.log_since_start()
}

fn start_fails(dir: &Path, config: &str) -> String {
    let path = dir.join("bad.hcl");
    std::fs::write(&path, config).unwrap();
    refused(dir, &["server", &format!("-config={}", path.display())])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_configs_are_refused_naming_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let port = testkit::ports::reserve();
    let listener = format!(
        "listener \"tcp\" {{\n  address = \"{}\"\n  tls_disable = true\n}}\n",
        port.addr()
    );

    let err = start_fails(
        dir.path(),
        &format!("{listener}\nstorage \"raft\" {{\n  path = \"/x\"\n}}\n"),
    );
    assert!(err.contains("bad.hcl, line 6"), "{err}");
    assert!(
        err.contains("storage type \"raft\" is not supported"),
        "{err}"
    );

    let err = start_fails(
        dir.path(),
        "storage \"inmem\" {}\nlistener \"tcp\" {\n  address = \n}\n",
    );
    assert!(err.contains("HCL syntax error"), "{err}");
    assert!(err.contains("line 4") || err.contains("line 3"), "{err}");

    let err = start_fails(
        dir.path(),
        &format!(
            "storage \"inmem\" {{}}\n{listener}seal \"awskms\" {{\n  kms_key_id = \"k\"\n  bogus = 1\n}}\n"
        ),
    );
    assert!(err.contains("seal \"awskms\" (config line 6)"), "{err}");
    assert!(err.contains("bogus"), "{err}");

    let err = start_fails(
        dir.path(),
        "storage \"inmem\" {}\nlistener \"tcp\" {\n  address = \"127.0.0.1:1\"\n  tls_cert_file = \"/nonexistent/cert.pem\"\n  tls_key_file = \"/nonexistent/key.pem\"\n}\n",
    );
    assert!(err.contains("tls_cert_file /nonexistent/cert.pem"), "{err}");

    // A busy port: held by this test's own listener.
    let busy = std::net::TcpListener::bind(("127.0.0.1", port.get())).unwrap();
    let busy_port = port.get();
    let err = start_fails(dir.path(), &format!("storage \"inmem\" {{}}\n{listener}"));
    assert!(
        err.contains(&format!("listening on 127.0.0.1:{busy_port}")),
        "{err}"
    );

    drop(busy);

    // Missing file.
    let err = refused(
        dir.path(),
        &["server", "-config=/nonexistent/strongroom.hcl"],
    );
    assert!(err.contains("/nonexistent/strongroom.hcl"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_mode_is_unsealed_with_kv_v2_at_secret() {
    let sc = Scenario::new("dev_mode_is_unsealed_with_kv_v2_at_secret");
    let server = NodeConfig::dev("dev-root")
        .binary(bin())
        .start(&sc, "dev")
        .await;
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
    let sc = Scenario::new("tls_listener_serves_https");
    let dir = sc.subdir("pki");
    let cert =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
            .unwrap();
    let cert_path = dir.join("cert.pem");
    let key_path = dir.join("key.pem");
    std::fs::write(&cert_path, cert.cert.pem()).unwrap();
    std::fs::write(&key_path, cert.key_pair.serialize_pem()).unwrap();
    let server = common::node()
        .storage(StorageStanza::inmem())
        .listener_tls(&cert_path, &key_path, &cert_path)
        .start(&sc, "server")
        .await;
    let port = server.port();
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
    let out = common::cli(
        &[],
        &[
            "status",
            &format!("-address=https://127.0.0.1:{port}"),
            &format!("-ca-cert={}", cert_path.display()),
        ],
    )
    .await;
    let stdout = &out.stdout;
    assert_eq!(
        out.code, 2,
        "uninitialised = sealed: {stdout} {}",
        out.stderr
    );
    assert!(stdout.contains("Initialized        false"), "{stdout}");
}
