//! `service_registration "kubernetes"` against a strict stand-in for the
//! API server on loopback: the pod's `vault-*` labels follow the node
//! through init, unseal, seal and shutdown, failed patches are retried
//! with the latest values, and a rotated service account token is read
//! again.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use std::time::{Duration, Instant};

use common::kube_api::KubeApi;
use serde_json::{Map, Value, json};
use testkit::{Node, NodeConfig, Scenario, StorageStanza};

const NS: &str = "vault";
const POD: &str = "strongroom-0";

/// A node on `storage` labelling pod `NS/pod` through `api`.
async fn start_pod(
    sc: &Scenario,
    api: &KubeApi,
    storage: StorageStanza,
    name: &str,
    pod: &str,
) -> Node {
    let registration = hcl::Block::builder("service_registration")
        .add_label("kubernetes")
        .add_attribute(("retry_interval", "200ms"))
        .build();
    let mut config = NodeConfig::new()
        .binary(env!("CARGO_BIN_EXE_strongroom"))
        .storage(storage)
        .block(registration);
    for (key, value) in api.pod_env(NS, pod) {
        config = config.env(&key, &value);
    }
    config.start(sc, name).await
}

/// A node on redb labelling pod `NS/POD`.
async fn start(sc: &Scenario, api: &KubeApi) -> Node {
    start_pod(sc, api, StorageStanza::redb(), "n1", POD).await
}

fn label_state(labels: &Map<String, Value>) -> (String, String, String) {
    let get = |k: &str| {
        labels
            .get(k)
            .and_then(Value::as_str)
            .unwrap_or("-")
            .to_owned()
    };
    (
        get("vault-active"),
        get("vault-sealed"),
        get("vault-initialized"),
    )
}

/// Waits until the pod's labels say (active, sealed, initialized).
async fn wait_labels(api: &KubeApi, server: &Node, want: (&str, &str, &str)) {
    wait_pod_labels(api, server, POD, want).await;
}

/// Waits until `pod`'s labels say (active, sealed, initialized).
async fn wait_pod_labels(api: &KubeApi, server: &Node, pod: &str, want: (&str, &str, &str)) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let labels = api.labels(NS, pod).unwrap_or_default();
        let got = label_state(&labels);
        if (got.0.as_str(), got.1.as_str(), got.2.as_str()) == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "labels did not become {want:?} (now {got:?}); rejected: {:?}; log:\n{}",
            api.rejected(),
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_labels_follow_the_node_from_start_to_shutdown() {
    let sc = Scenario::new("pod labels from start to shutdown");
    let api = KubeApi::start(&sc.subdir("sa")).await;
    // A pod without any labels map: the first patch adds the whole map.
    api.add_pod(NS, POD, None);
    let server = start(&sc, &api).await;

    wait_labels(&api, &server, ("false", "true", "false")).await;
    let first = &api.patches()[0];
    assert_eq!(
        first.ops,
        json!([{"op": "add", "path": "/metadata/labels", "value": {
            "vault-active": "false", "vault-sealed": "true", "vault-initialized": "false",
            "vault-perf-standby": "false", "vault-version": strongroom::VERSION,
        }}])
    );

    sc.step("init");
    let init = server.init(1, 1).await;
    let (keys, root) = (init.keys_base64, init.root_token);
    wait_labels(&api, &server, ("false", "true", "true")).await;
    sc.step("unseal");
    server.unseal(&keys).await;
    // Without HA an unsealed node serves: it is the active one.
    wait_labels(&api, &server, ("true", "false", "true")).await;
    let (code, _) = server.call("PUT", "sys/seal", Some(&root), None).await;
    assert_eq!(code, 204);
    wait_labels(&api, &server, ("false", "true", "true")).await;

    // The API server fails for a while: the change lands on a retry, and
    // only the latest values are written.
    sc.step("API server answers 503 three times");
    api.fail_patches(503, 3);
    server.unseal(&keys).await;
    wait_labels(&api, &server, ("true", "false", "true")).await;
    assert!(api.rejected().iter().filter(|(c, _)| *c == 503).count() == 3);

    // kubelet rotates the projected token: 401, the file is read again.
    sc.step("token rotated");
    api.rotate_token("sa-token-2");
    let (code, _) = server.call("PUT", "sys/seal", Some(&root), None).await;
    assert_eq!(code, 204);
    wait_labels(&api, &server, ("false", "true", "true")).await;
    assert!(api.rejected().iter().any(|(c, _)| *c == 401));
    server.unseal(&keys).await;
    wait_labels(&api, &server, ("true", "false", "true")).await;

    // Shutdown: sealed, not initialized, not active (as Vault leaves it).
    // (terminate() blocks while it waits: keep it off the runtime's
    // workers, which serve the stand-in API meanwhile.)
    sc.step("SIGTERM");
    let exit = tokio::task::block_in_place(|| server.terminate());
    assert!(
        exit.is_some_and(|e| e.success()),
        "{exit:?}; log:\n{}",
        server.log()
    );
    assert_eq!(
        label_state(&api.labels(NS, POD).unwrap()),
        ("false".into(), "true".into(), "false".into())
    );

    // Every patch after the first sets single labels, and only the ones
    // that changed; none was refused as malformed or inapplicable.
    for patch in &api.patches()[1..] {
        for op in patch.ops.as_array().unwrap() {
            assert_eq!(op["op"], "add", "{op}");
            assert!(
                op["path"]
                    .as_str()
                    .unwrap()
                    .starts_with("/metadata/labels/vault-"),
                "{op}"
            );
        }
    }
    assert!(
        !api.rejected()
            .iter()
            .any(|(c, _)| matches!(c, 400 | 415 | 422)),
        "{:?}",
        api.rejected()
    );
    assert_eq!(
        api.labels(NS, POD).unwrap()["vault-version"],
        strongroom::VERSION
    );
}

/// What the chart's `-active` Service selects: pods labelled
/// `vault-active=true`.
fn active_service_endpoints(api: &KubeApi, pods: &[&str]) -> Vec<String> {
    pods.iter()
        .filter(|p| {
            api.labels(NS, p)
                .and_then(|l| l.get("vault-active").cloned())
                .is_some_and(|v| v == "true")
        })
        .map(|p| (*p).to_owned())
        .collect()
}

/// Two HA pods on one Consul: the `-active` Service (selector
/// `vault-active=true`) follows the leader through a failover.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_active_service_follows_the_leader() {
    let sc = Scenario::new("the -active Service follows the leader");
    let consul = testkit::ConsulDev::start();
    let api = KubeApi::start(&sc.subdir("sa")).await;
    let pods = ["strongroom-0", "strongroom-1"];
    for pod in pods {
        api.add_pod(NS, pod, Some(json!({"component": "server"})));
    }
    let storage = || {
        StorageStanza::consul_dev(&consul, "vault/")
            .session_ttl(Duration::from_secs(10))
            .lock_delay(Duration::from_millis(500))
    };
    let n0 = start_pod(&sc, &api, storage(), "n0", pods[0]).await;
    let n1 = start_pod(&sc, &api, storage(), "n1", pods[1]).await;
    sc.step("init on n0, unseal both");
    let init = n0.init(1, 1).await;
    n0.unseal(&init.keys_base64).await;
    n0.wait_active(Duration::from_secs(30)).await;
    n1.unseal(&init.keys_base64).await;
    n1.wait_standby(Duration::from_secs(30)).await;
    wait_pod_labels(&api, &n0, pods[0], ("true", "false", "true")).await;
    wait_pod_labels(&api, &n1, pods[1], ("false", "false", "true")).await;
    assert_eq!(active_service_endpoints(&api, &pods), ["strongroom-0"]);

    sc.step("SIGTERM the active pod: it releases the lock, the standby takes over");
    let sigterm = Instant::now();
    let exit = tokio::task::block_in_place(|| n0.terminate());
    let took = sigterm.elapsed();
    assert!(
        exit.is_some_and(|e| e.success()),
        "{exit:?}; log:\n{}",
        n0.log()
    );
    // The chart's grace period is 10 s, 5 of them spent in the preStop
    // sleep: shutdown (drain, lock release, labels) must fit the rest, or
    // kubelet SIGKILLs the pod with the lock still held.
    assert!(took < Duration::from_secs(5), "shutdown took {took:?}");
    n1.wait_active(Duration::from_secs(30)).await;
    wait_pod_labels(&api, &n1, pods[1], ("true", "false", "true")).await;
    wait_pod_labels(&api, &n0, pods[0], ("false", "true", "false")).await;
    assert_eq!(active_service_endpoints(&api, &pods), ["strongroom-1"]);

    sc.step("the old pod comes back as a standby");
    n0.start_again().await;
    n0.unseal(&init.keys_base64).await;
    n0.wait_standby(Duration::from_secs(30)).await;
    wait_pod_labels(&api, &n0, pods[0], ("false", "false", "true")).await;
    assert_eq!(active_service_endpoints(&api, &pods), ["strongroom-1"]);
    // Vault's five labels beside the StatefulSet's own, on both pods.
    for pod in pods {
        let labels = api.labels(NS, pod).unwrap();
        assert_eq!(labels["vault-perf-standby"], "false", "{labels:?}");
        assert_eq!(labels["vault-version"], strongroom::VERSION, "{labels:?}");
        assert_eq!(labels["component"], "server", "{labels:?}");
        assert_eq!(labels.len(), 6, "{labels:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn labels_are_added_beside_the_statefulsets_own() {
    let sc = Scenario::new("labels beside the StatefulSet's own");
    let api = KubeApi::start(&sc.subdir("sa")).await;
    api.add_pod(
        NS,
        POD,
        Some(json!({"app.kubernetes.io/name": "strongroom", "component": "server"})),
    );
    let server = start(&sc, &api).await;
    wait_labels(&api, &server, ("false", "true", "false")).await;
    let labels = api.labels(NS, POD).unwrap();
    assert_eq!(labels["component"], "server");
    assert_eq!(labels.len(), 7, "{labels:?}");
    assert_eq!(api.patches()[0].ops.as_array().unwrap().len(), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_outside_a_cluster_refuses_to_start_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let port = testkit::ports::reserve();
    std::fs::write(
        dir.path().join("server.hcl"),
        format!(
            "storage \"inmem\" {{}}\nlistener \"tcp\" {{\n  address = \"{}\"\n  tls_disable = true\n}}\nservice_registration \"kubernetes\" {{}}\n",
            port.addr()
        ),
    )
    .unwrap();
    let arg = format!("-config={}", dir.path().join("server.hcl").display());
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_strongroom"))
        .args(["server", &arg])
        .env_remove("KUBERNETES_SERVICE_HOST")
        .env("VAULT_K8S_NAMESPACE", NS)
        .env("VAULT_K8S_POD_NAME", POD)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("KUBERNETES_SERVICE_HOST"), "{stderr}");
}

/// The stand-in answers bad patches as the API server does, so the
/// labelling above was held to the real rules.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stand_in_rejects_malformed_and_inapplicable_patches() {
    let dir = tempfile::tempdir().unwrap();
    let api = KubeApi::start(&dir.path().join("sa")).await;
    api.add_pod(NS, POD, None);
    let http = api.client();
    let url = format!("https://{}/api/v1/namespaces/{NS}/pods/{POD}", api.addr);
    let patch = |body: String, content_type: &'static str, token: &'static str| {
        http.patch(&url)
            .bearer_auth(token)
            .header("content-type", content_type)
            .body(body)
            .send()
    };
    let json_patch = "application/json-patch+json";
    let cases: [(&str, &str, &str, u16); 9] = [
        (r#"{"op":"add"}"#, json_patch, "sa-token-1", 400),
        (
            r#"[{"op":"add","path":"/metadata/labels/a"}]"#,
            json_patch,
            "sa-token-1",
            400,
        ),
        (
            r#"[{"op":"add","path":"metadata/labels","value":{}}]"#,
            json_patch,
            "sa-token-1",
            400,
        ),
        (
            r#"[{"op":"frobnicate","path":"/metadata","value":1}]"#,
            json_patch,
            "sa-token-1",
            400,
        ),
        (
            r#"[{"op":"replace","path":"/metadata/labels/a","value":"x"}]"#,
            json_patch,
            "sa-token-1",
            422,
        ),
        (
            r#"[{"op":"add","path":"/metadata/labels/a","value":"x"}]"#,
            json_patch,
            "sa-token-1",
            422,
        ),
        (
            r#"[{"op":"add","path":"/metadata/labels","value":{"a":"not valid!"}}]"#,
            json_patch,
            "sa-token-1",
            422,
        ),
        (
            r#"[{"op":"add","path":"/metadata/labels","value":{"a":"b"}}]"#,
            "application/json",
            "sa-token-1",
            415,
        ),
        (
            r#"[{"op":"add","path":"/metadata/labels","value":{"a":"b"}}]"#,
            json_patch,
            "wrong",
            401,
        ),
    ];
    for (body, content_type, token, want) in cases {
        let response = patch(body.to_owned(), content_type, token).await.unwrap();
        assert_eq!(response.status().as_u16(), want, "{body}");
        let status: Value = response.json().await.unwrap();
        assert_eq!(status["kind"], "Status", "{body}");
    }
    assert_eq!(api.labels(NS, POD), None, "nothing was applied");
    let ok = patch(
        r#"[{"op":"add","path":"/metadata/labels","value":{"a":"b"}},{"op":"test","path":"/metadata/labels/a","value":"b"}]"#.into(),
        json_patch,
        "sa-token-1",
    )
    .await
    .unwrap();
    assert_eq!(ok.status().as_u16(), 200);
    assert_eq!(api.labels(NS, POD).unwrap()["a"], "b");
}
