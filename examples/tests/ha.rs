//! HA with real processes: three `strongroom server` nodes on a real Consul
//! (short session TTL and lock-delay, an agent with `session_ttl_min =
//! "1s"`), orchestrated through testkit. Every scenario runs a
//! `LeaderSampler` that fails the test if two nodes ever say they are
//! active at the same time; failures print the timeline and log tails.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use testkit::ha::{HaCluster, HaOptions, LeaderSampler};
use testkit::{NodeConfig, Scenario, TestPki, wait};

const DEADLINE: Duration = Duration::from_secs(60);
const SAMPLE_EVERY: Duration = Duration::from_millis(25);

fn base() -> NodeConfig {
    NodeConfig::new().binary(env!("CARGO_BIN_EXE_strongroom"))
}

async fn cluster(sc: &Scenario) -> HaCluster {
    let consul = testkit::consul::shared_dev();
    HaCluster::start(sc, consul, base(), HaOptions::default()).await
}

/// A raw request with extra headers, no redirects followed.
async fn raw(
    url: &str,
    method: &str,
    token: &str,
    body: Option<Value>,
    headers: &[(&str, &str)],
) -> (u16, reqwest::header::HeaderMap, Value) {
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let mut request = http
        .request(reqwest::Method::from_bytes(method.as_bytes()).unwrap(), url)
        .header("X-Vault-Token", token);
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let bytes = response.bytes().await.unwrap();
    let value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (status, headers, value)
}

/// Writes `kv/<key>` through `node` until it succeeds; returns how long
/// that took from `since`.
async fn write_until_accepted(c: &HaCluster, node: usize, key: &str, since: Instant) -> Duration {
    wait::until(
        &format!("a write through {} is accepted", c.node(node).name()),
        DEADLINE,
        || async {
            match c
                .node(node)
                .try_call(
                    "PUT",
                    &format!("kv/{key}"),
                    Some(c.root()),
                    Some(json!({"v": key})),
                )
                .await
            {
                Ok((204 | 200, _)) => Ok(since.elapsed()),
                Ok((code, body)) => Err(format!("{code} {body}")),
                Err(e) => Err(e),
            }
        },
    )
    .await
}

/// `sys/ha-status` on `node`: the status code, the body and its node rows.
async fn ha_status(c: &HaCluster, node: usize) -> (u16, Value, Vec<Value>) {
    let (code, body) = c
        .node(node)
        .call("GET", "sys/ha-status", Some(c.root()), None)
        .await;
    let nodes = body["data"]["nodes"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    (code, body, nodes)
}

async fn read(c: &HaCluster, node: usize, key: &str) -> Option<Value> {
    c.node(node).read(c.root(), &format!("kv/{key}")).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_active_writes_anywhere_read_everywhere_and_standbys_forward() {
    let sc = Scenario::new("three nodes: one active, standbys forward or redirect");
    let c = cluster(&sc).await;
    let sampler = LeaderSampler::start(&c, SAMPLE_EVERY);
    let active = c.followed(DEADLINE).await;
    let standby = (active + 1) % 3;
    c.node(active).mount_kv(c.root(), "kv", "1").await;

    sc.step("a write through each node, read back through each node");
    for i in 0..3 {
        c.node(i)
            .write(c.root(), &format!("kv/from-n{}", i + 1), json!({"by": i}))
            .await;
    }
    for reader in 0..3 {
        for writer in 0..3 {
            let got = read(&c, reader, &format!("from-n{}", writer + 1)).await;
            assert_eq!(
                got,
                Some(json!({"by": writer})),
                "n{} reading n{}'s write",
                reader + 1,
                writer + 1
            );
        }
    }

    sc.step("sys/leader and sys/health on each node");
    let active_addr = c.node(active).base.clone();
    for (i, node) in c.nodes().iter().enumerate() {
        let (code, leader) = node.call("GET", "sys/leader", None, None).await;
        assert_eq!(code, 200);
        assert_eq!(leader["ha_enabled"], true);
        assert_eq!(leader["is_self"], i == active, "{leader}");
        assert_eq!(leader["leader_address"], active_addr.as_str(), "{leader}");
        assert_eq!(leader["performance_standby"], false);
        let want = if i == active { 200 } else { 429 };
        assert_eq!(node.health_code("").await, want);
        assert_eq!(node.health_code("standbyok=true").await, 200);
    }

    sc.step("a standby redirects with 307 when asked not to forward");
    let url = format!("{}/v1/kv/from-n1?x=1", c.node(standby).base);
    let (code, headers, _) = raw(
        &url,
        "GET",
        c.root(),
        None,
        &[("X-Vault-No-Request-Forwarding", "true")],
    )
    .await;
    assert_eq!(code, 307);
    assert_eq!(
        headers["location"],
        format!("{active_addr}/v1/kv/from-n1?x=1").as_str()
    );

    sc.step("without the header it forwards: same answer as the active node");
    let (direct, _, direct_body) = raw(
        &format!("{active_addr}/v1/kv/from-n1"),
        "GET",
        c.root(),
        None,
        &[],
    )
    .await;
    let (forwarded, _, forwarded_body) = raw(&url, "GET", c.root(), None, &[]).await;
    assert_eq!(
        (forwarded, &forwarded_body["data"]),
        (direct, &direct_body["data"])
    );
    // Errors are relayed as they are, token checks included.
    let (denied, _, body) = raw(&url, "GET", "not-a-token", None, &[]).await;
    assert_eq!(denied, 403, "{body}");

    sc.step("strongroom status and operator unseal (an unsealed node answers with its status) on a standby and on the active node");
    let key = c.keys()[0].as_str();
    let commands: [&[&str]; 2] = [&["status"], &["operator", "unseal", key]];
    for ((i, want_mode), command) in [(standby, "standby"), (active, "active")]
        .into_iter()
        .flat_map(|node| commands.iter().map(move |c| (node, c)))
    {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_strongroom"))
            .args(command.iter().copied())
            .arg(format!("-address={}", c.node(i).base))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let row = |key: &str| {
            text.lines().find_map(|l| {
                l.strip_prefix(key)
                    .filter(|r| r.starts_with("  "))
                    .map(|r| r.trim().to_owned())
            })
        };
        assert_eq!(row("HA Enabled").as_deref(), Some("true"), "{text}");
        assert_eq!(row("HA Mode").as_deref(), Some(want_mode), "{text}");
        assert!(row("HA Cluster").is_some(), "{text}");
        if want_mode == "standby" {
            assert_eq!(
                row("Active Node Address").as_deref(),
                Some(active_addr.as_str()),
                "{text}"
            );
        } else {
            assert!(row("Active Since").is_some(), "{text}");
        }
    }
    sampler.stop_and_check().await;
}

/// Every node serves HTTPS with a certificate from a private CA, which
/// the nodes trust through `VAULT_CACERT` (as Vault's docs set it for a
/// cluster): hvac talks to a standby, which forwards to the active node,
/// and the standbys' echoes reach the active node's `sys/ha-status`; once
/// a standby stops echoing, the active node asks it whether it is sealed
/// (`sealed: true` after a restart, `null` once killed). All of it goes
/// through the forwarder's client and its CA.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hvac_through_a_standby_works_unchanged_over_https_with_a_private_ca() {
    let sc = Scenario::new("hvac against a standby, HTTPS with a private CA");
    let pki = TestPki::generate(&sc.subdir("pki"));
    let ca = pki.ca_file.display().to_string();
    let base = base()
        .listener_tls(&pki.server_cert_file, &pki.server_key_file, &pki.ca_file)
        .env("VAULT_CACERT", &ca);
    let c = HaCluster::start(
        &sc,
        testkit::consul::shared_dev(),
        base,
        HaOptions::default(),
    )
    .await;
    let active = c.followed(DEADLINE).await;
    let standby = (active + 1) % 3;
    assert!(c.node(standby).base.starts_with("https://"));
    let python = std::env::var("STRONGROOM_PYTHON").unwrap_or_else(|_| {
        testkit::tools::cache_dir()
            .join("venv/bin/python")
            .display()
            .to_string()
    });
    let script = r#"
import sys, hvac
client = hvac.Client(url=sys.argv[1], token=sys.argv[2], verify=sys.argv[3])
assert client.is_authenticated()
client.sys.enable_secrets_engine("kv", path="secret", options={"version": "2"})
client.secrets.kv.v2.create_or_update_secret(path="app/db", secret={"password": "s3cret"}, mount_point="secret")
got = client.secrets.kv.v2.read_secret_version(path="app/db", mount_point="secret", raise_on_deleted_version=True)
assert got["data"]["data"] == {"password": "s3cret"}, got
leader = client.sys.read_leader_status()
assert leader["ha_enabled"] and not leader["is_self"], leader
assert leader["leader_address"].startswith("https://"), leader
assert client.sys.read_health_status(method="GET", standby_ok=True)["standby"] is True
print("hvac ok")
"#;
    let out = tokio::process::Command::new(&python)
        .args(["-c", script, &c.node(standby).base, c.root(), &ca])
        .output()
        .await
        .unwrap_or_else(|e| {
            panic!("run {python} (scripts/setup-tools.sh installs the venv with hvac): {e}")
        });
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("hvac ok"),
        "hvac failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The secret is on the active node, where the standby sent it.
    let (code, body) = c
        .node(active)
        .call("GET", "secret/data/app/db", Some(c.root()), None)
        .await;
    assert_eq!(code, 200);
    assert_eq!(body["data"]["data"], json!({"password": "s3cret"}));

    sc.step("the standbys' echoes reach the HTTPS active node");
    let nodes = wait::until(
        "sys/ha-status on the active node lists both standbys with an echo",
        DEADLINE,
        || async {
            let (code, body, nodes) = ha_status(&c, active).await;
            let echoed = nodes
                .iter()
                .filter(|n| n["active_node"] == false && n["last_echo"].is_string())
                .count();
            if code == 200 && nodes.len() == 3 && echoed == 2 {
                Ok(nodes)
            } else {
                Err(format!("{code} {body}"))
            }
        },
    )
    .await;
    let mut listed: Vec<&str> = nodes
        .iter()
        .map(|n| n["api_address"].as_str().unwrap())
        .collect();
    listed.sort_unstable();
    let mut want: Vec<&str> = c.nodes().iter().map(|n| n.base.as_str()).collect();
    want.sort_unstable();
    assert_eq!(listed, want);
    for node in c.nodes() {
        assert!(
            !node.log().contains("HA echo to the active node failed"),
            "{}: an echo failed:\n{}",
            node.name(),
            node.log()
        );
    }

    // A standby that stops echoing is asked over HTTPS (the forwarder's
    // client and its CA) whether it is sealed: one restarted (sealed,
    // Shamir), one killed (no answer, `sealed: null`).
    let gone = (active + 2) % 3;
    sc.step(format!(
        "{} restarts sealed, {} is killed: sys/ha-status says so",
        c.node(standby).name(),
        c.node(gone).name()
    ));
    c.node(standby).restart().await;
    c.node(gone).kill9();
    let sealed_of = |nodes: &[Value], i: usize| {
        nodes
            .iter()
            .find(|n| n["api_address"] == json!(c.node(i).base))
            .map(|n| n["sealed"].clone())
    };
    wait::until(
        "sys/ha-status: the restarted standby sealed, the killed one unknown",
        DEADLINE,
        || async {
            let (code, body, nodes) = ha_status(&c, active).await;
            if code == 200
                && sealed_of(&nodes, standby) == Some(json!(true))
                && sealed_of(&nodes, gone) == Some(Value::Null)
                && sealed_of(&nodes, active) == Some(json!(false))
            {
                Ok(())
            } else {
                Err(format!("{code} {body}"))
            }
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_of_the_active_hands_over_at_once() {
    let sc = Scenario::new("graceful: SIGTERM the active node");
    let c = cluster(&sc).await;
    let sampler = LeaderSampler::start(&c, SAMPLE_EVERY);
    let old = c.followed(DEADLINE).await;
    c.node(old).mount_kv(c.root(), "kv", "1").await;
    c.node(old)
        .write(c.root(), "kv/before", json!({"v": 1}))
        .await;
    let (reader, audit_log, reader_hash) = policy_token_and_audit_device(&sc, &c, old).await;
    let survivor = (old + 1) % 3;
    sc.step(format!("SIGTERM {}", c.node(old).name()));
    let sent = Instant::now();
    let status = c.node(old).terminate();
    assert!(status.is_some_and(|s| s.success()), "exit: {status:?}");
    let took = write_until_accepted(&c, survivor, "after", sent).await;
    sc.step(format!("a write was accepted {took:?} after the SIGTERM"));
    eprintln!("graceful failover: write accepted {took:?} after SIGTERM");
    let new = c.active_except(old, DEADLINE).await;
    assert_eq!(read(&c, new, "before").await, Some(json!({"v": 1})));
    assert!(
        c.node(old).log().contains("giving up the HA lock"),
        "the old node released the lock on its way out"
    );
    promoted_node_enforces_and_audits(&c, new, &reader, &audit_log, &reader_hash).await;
    sampler.stop_and_check().await;
}

/// On the active node: a read-only policy, a token holding it, and a file
/// audit device; returns the token, the log's path and the token's HMAC.
async fn policy_token_and_audit_device(
    sc: &Scenario,
    c: &HaCluster,
    active: usize,
) -> (String, std::path::PathBuf, String) {
    let node = c.node(active);
    let policy = r#"path "kv/*" { capabilities = ["read"] }"#;
    node.write(
        c.root(),
        "sys/policies/acl/kv-reader",
        json!({ "policy": policy }),
    )
    .await;
    let (code, created) = node
        .call(
            "POST",
            "auth/token/create",
            Some(c.root()),
            Some(json!({"policies": ["kv-reader"]})),
        )
        .await;
    assert_eq!(code, 200, "{created}");
    let token = created["auth"]["client_token"].as_str().unwrap().to_owned();
    let dir = sc.subdir("audit");
    std::fs::create_dir_all(&dir).unwrap();
    let log = dir.join("audit.log");
    node.write(
        c.root(),
        "sys/audit/file",
        json!({"type": "file", "options": {"file_path": log.to_str().unwrap()}}),
    )
    .await;
    let hash = audit_hash(c, active, &token).await;
    (token, log, hash)
}

async fn audit_hash(c: &HaCluster, node: usize, input: &str) -> String {
    let (code, body) = c
        .node(node)
        .call(
            "POST",
            "sys/audit-hash/file",
            Some(c.root()),
            Some(json!({ "input": input })),
        )
        .await;
    assert_eq!(code, 200, "audit-hash on {}: {body}", c.node(node).name());
    body["data"]["hash"].as_str().unwrap().to_owned()
}

/// The promoted node enforces the policy written on the old active node and
/// records through the audit device enabled there, with the same salt.
async fn promoted_node_enforces_and_audits(
    c: &HaCluster,
    new: usize,
    reader: &str,
    audit_log: &std::path::Path,
    reader_hash: &str,
) {
    let node = c.node(new);
    assert_eq!(
        node.read(reader, "kv/before").await,
        Some(json!({"v": 1})),
        "the policy's read on the promoted node"
    );
    let (code, body) = node
        .call("PUT", "kv/before", Some(reader), Some(json!({"v": 2})))
        .await;
    assert_eq!(code, 403, "the policy grants no write: {body}");
    assert_eq!(audit_hash(c, new, reader).await, reader_hash);
    let text = std::fs::read_to_string(audit_log).unwrap();
    let refused: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|e| {
            e["request"]["client_token"] == json!(reader_hash)
                && e["request"]["operation"] == "update"
        })
        .collect();
    assert_eq!(
        refused.len(),
        2,
        "the refused write's request and response entries, written by the promoted node"
    );
    assert!(!text.contains(reader), "the token appears only as an HMAC");
}

/// A session TTL no test waits for: a crash noticed before it could have
/// run out was noticed by dead-leader detection.
const LONG_TTL: Duration = Duration::from_secs(30);

/// Well inside [`LONG_TTL`] (Consul expires a session 1x to 2x its TTL
/// after the last renewal).
const BEFORE_TTL: Duration = Duration::from_secs(20);

/// What a node logs when it destroyed a dead holder's session.
const DESTROYED: &str = "destroyed the HA lock session of a dead active node";

async fn long_ttl_cluster(sc: &Scenario, nodes: usize) -> HaCluster {
    let mut options = HaOptions::default();
    options.nodes = nodes;
    options.session_ttl = LONG_TTL;
    HaCluster::start(sc, testkit::consul::shared_dev(), base(), options).await
}

/// Writes `kv/<prefix>-<i>` through `node` (no forwarding) until `stop`;
/// the keys it acknowledged.
fn acknowledged_writes(
    c: &HaCluster,
    node: usize,
    prefix: &'static str,
    stop: tokio_util::sync::CancellationToken,
) -> tokio::task::JoinHandle<Vec<String>> {
    let url = c.node(node).base.clone();
    let token = c.root().to_owned();
    tokio::spawn(async move {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .unwrap();
        let mut acked = Vec::new();
        let mut i = 0;
        while !stop.is_cancelled() {
            i += 1;
            let key = format!("{prefix}-{i}");
            let answer = http
                .put(format!("{url}/v1/kv/{key}"))
                .header("X-Vault-Token", &token)
                .header("X-Vault-No-Request-Forwarding", "true")
                .json(&json!({"v": i}))
                .send()
                .await;
            match answer.map(|r| r.status().as_u16()) {
                Ok(200 | 204) => acked.push(key),
                // The node is gone: nothing more to acknowledge.
                Err(_) => break,
                Ok(_) => {}
            }
        }
        acked
    })
}

/// SIGKILL of the active node with a 30 s session TTL: a standby finds the
/// dead node's address refusing connections, destroys its session, and
/// after lock-delay (1 s) a standby is active, well before the TTL could
/// have freed the lock. Every write the dead node acknowledged is intact.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_of_the_active_is_detected_before_its_session_ttl() {
    let sc = Scenario::new("crash: SIGKILL the active node, session TTL 30 s");
    let c = long_ttl_cluster(&sc, 3).await;
    let sampler = LeaderSampler::start(&c, SAMPLE_EVERY);
    let old = c.active(DEADLINE).await;
    c.node(old).mount_kv(c.root(), "kv", "1").await;
    let stop = tokio_util::sync::CancellationToken::new();
    let writer = acknowledged_writes(&c, old, "crash", stop.clone());
    wait::until("the writer got through", DEADLINE, || async {
        c.node(old).read(c.root(), "kv/crash-3").await.is_some()
    })
    .await;
    sc.step(format!(
        "SIGKILL {} with writes in flight",
        c.node(old).name()
    ));
    let killed = Instant::now();
    c.node(old).kill9();
    let acked = writer.await.unwrap();
    stop.cancel();
    let survivor = (old + 2) % 3;
    let took = write_until_accepted(&c, survivor, "after", killed).await;
    let new = c.active_except(old, BEFORE_TTL).await;
    sc.step(format!(
        "{} is active; a write was accepted {took:?} after the SIGKILL",
        c.node(new).name()
    ));
    eprintln!(
        "crash failover (session TTL 30 s, lock-delay 1 s): write accepted {took:?} after SIGKILL"
    );
    assert!(
        killed.elapsed() < BEFORE_TTL,
        "the takeover waited for the session TTL"
    );
    let destroyers: Vec<_> = (0..3)
        .filter(|i| *i != old && c.node(*i).log().contains(DESTROYED))
        .collect();
    assert!(
        !destroyers.is_empty(),
        "no standby logged destroying the dead node's session"
    );
    assert!(!acked.is_empty());
    for key in &acked {
        assert!(
            read(&c, new, key).await.is_some(),
            "acknowledged write {key} is lost"
        );
    }
    eprintln!("crash: {} acknowledged writes intact", acked.len());
    sampler.stop_and_check().await;
}

/// A lone node killed with SIGKILL and started again finds the lock held by
/// its previous process's session (30 s TTL): it destroys it at once and is
/// active again after lock-delay, well before the TTL.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_restarted_node_reclaims_the_lock_of_its_killed_process() {
    let sc = Scenario::new("restart after SIGKILL: reclaim the previous process's session");
    let c = long_ttl_cluster(&sc, 1).await;
    c.active(DEADLINE).await;
    c.node(0).mount_kv(c.root(), "kv", "1").await;
    c.node(0)
        .write(c.root(), "kv/before", json!({"v": 1}))
        .await;
    sc.step("SIGKILL n1 and start it again");
    let killed = Instant::now();
    c.node(0).kill9();
    c.node(0).start_again().await;
    c.node(0).unseal(c.keys()).await;
    c.node(0).wait_active(BEFORE_TTL).await;
    assert!(
        killed.elapsed() < BEFORE_TTL,
        "the restarted node waited for the session TTL"
    );
    let log = c.node(0).log_since_start();
    assert!(
        log.contains(DESTROYED) && log.contains("previous process"),
        "the node logged reclaiming its previous session"
    );
    assert_eq!(read(&c, 0, "before").await, Some(json!({"v": 1})));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn step_down_through_a_standby_hands_over_and_the_old_active_forwards() {
    let sc = Scenario::new("sys/step-down");
    let c = cluster(&sc).await;
    let sampler = LeaderSampler::start(&c, SAMPLE_EVERY);
    let old = c.active(DEADLINE).await;
    c.node(old).mount_kv(c.root(), "kv", "1").await;
    // Read twice on the active node: its read cache holds the value now.
    c.node(old)
        .write(c.root(), "kv/flip", json!({"v": 1}))
        .await;
    assert_eq!(read(&c, old, "flip").await, Some(json!({"v": 1})));
    assert_eq!(read(&c, old, "flip").await, Some(json!({"v": 1})));
    let via = (old + 1) % 3;
    // Only a sudo token may step down; the standby forwards the refusal.
    let (code, _) = c
        .node(via)
        .call("PUT", "sys/step-down", Some("nope"), None)
        .await;
    assert_eq!(code, 403);
    sc.step(format!(
        "sys/step-down through standby {}",
        c.node(via).name()
    ));
    let (code, body) = c
        .node(via)
        .call("PUT", "sys/step-down", Some(c.root()), None)
        .await;
    assert_eq!(code, 204, "{body}");
    let new = c.active_except(old, DEADLINE).await;
    sc.step(format!("{} is active", c.node(new).name()));
    c.node(old).wait_standby(DEADLINE).await;
    // The old active node is a forwarding standby now.
    c.node(old)
        .write(c.root(), "kv/through-old", json!({"v": 2}))
        .await;
    assert_eq!(read(&c, new, "through-old").await, Some(json!({"v": 2})));
    // The new active node changes what the old one had cached; the old
    // node, a standby now, never answers from that cache.
    c.node(new)
        .write(c.root(), "kv/flip", json!({"v": 2}))
        .await;
    assert_eq!(read(&c, old, "flip").await, Some(json!({"v": 2})));
    let (_, leader) = c.node(old).call("GET", "sys/leader", None, None).await;
    assert_eq!(leader["leader_address"], c.node(new).base.as_str());
    sampler.stop_and_check().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_standby_promoted_after_a_rotation_reads_old_and_new_terms() {
    let sc = Scenario::new("rotation on the active, promotion later");
    let c = cluster(&sc).await;
    let old = c.followed(DEADLINE).await;
    c.node(old).mount_kv(c.root(), "kv", "1").await;
    c.node(old)
        .write(c.root(), "kv/term1", json!({"v": 1}))
        .await;
    let via = (old + 1) % 3;
    sc.step("sys/rotate through a standby");
    let (code, body) = c
        .node(via)
        .call("PUT", "sys/rotate", Some(c.root()), None)
        .await;
    assert_eq!(code, 204, "{body}");
    c.node(via)
        .write(c.root(), "kv/term2", json!({"v": 2}))
        .await;
    sc.step(format!("SIGTERM {}", c.node(old).name()));
    c.node(old).terminate();
    let new = c.active_except(old, DEADLINE).await;
    assert_eq!(read(&c, new, "term1").await, Some(json!({"v": 1})));
    assert_eq!(read(&c, new, "term2").await, Some(json!({"v": 2})));
    let (code, status) = c
        .node(new)
        .call("GET", "sys/key-status", Some(c.root()), None)
        .await;
    assert_eq!(code, 200);
    assert_eq!(status["term"], 2, "{status}");
    c.node(new)
        .write(c.root(), "kv/after", json!({"v": 3}))
        .await;
}

/// One write by the old active node's clients: key, and the answer.
#[derive(Debug)]
struct Attempt {
    key: String,
    status: Option<u16>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_paused_active_node_cannot_write_after_another_took_over() {
    let sc = Scenario::new(
        "fencing: SIGSTOP the active node past its session (standbys end their forwards to it at the takeover), SIGCONT with writes in flight",
    );
    let c = cluster(&sc).await;
    let sampler = LeaderSampler::start(&c, SAMPLE_EVERY);
    let old = c.active(DEADLINE).await;
    c.node(old).mount_kv(c.root(), "kv", "1").await;
    c.node(old)
        .write(c.root(), "kv/contended", json!({"v": "before"}))
        .await;

    sc.step(format!(
        "8 writers hammer {} directly (no forwarding)",
        c.node(old).name()
    ));
    let stop = tokio_util::sync::CancellationToken::new();
    let mut writers = Vec::new();
    for w in 0..8 {
        let url = c.node(old).base.clone();
        let token = c.root().to_owned();
        let stop = stop.clone();
        writers.push(tokio::spawn(async move {
            let http = reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap();
            let mut attempts = Vec::new();
            let mut i = 0;
            while !stop.is_cancelled() {
                i += 1;
                for key in [format!("old-{w}-{i}"), "contended".to_owned()] {
                    let status = http
                        .put(format!("{url}/v1/kv/{key}"))
                        .header("X-Vault-Token", &token)
                        .header("X-Vault-No-Request-Forwarding", "true")
                        .json(&json!({"v": format!("old-{w}-{i}")}))
                        .send()
                        .await
                        .ok()
                        .map(|r| r.status().as_u16());
                    attempts.push(Attempt { key, status });
                }
            }
            attempts
        }));
    }
    wait::until("the writers got through", DEADLINE, || async {
        c.node(old).read(c.root(), "kv/old-0-3").await.is_some()
    })
    .await;

    sc.step(format!("SIGSTOP {}", c.node(old).name()));
    sampler.excuse_until_standby(old);
    c.node(old).pause();
    sc.step("a read and a write through each standby, forwarded to the frozen node");
    let forwarded = forward_through_standbys(&c, old);
    let new = c.active_except(old, DEADLINE).await;
    sc.step(format!(
        "{} took over; the forwards to the frozen node end while it is still frozen",
        c.node(new).name()
    ));
    let forwarded = forwards_end(&c, new, forwarded).await;
    sc.step(format!(
        "{} took over; it writes the contended key",
        c.node(new).name()
    ));
    c.node(new)
        .write(c.root(), "kv/contended", json!({"v": "new"}))
        .await;
    c.node(new)
        .write(c.root(), "kv/by-new", json!({"v": "new"}))
        .await;

    sc.step(format!(
        "SIGCONT {} with its writes in flight",
        c.node(old).name()
    ));
    c.node(old).resume();
    c.node(old).wait_standby(DEADLINE).await;
    sc.step(format!("{} is a standby", c.node(old).name()));
    stop.cancel();
    let mut attempts = Vec::new();
    for w in writers {
        attempts.extend(w.await.unwrap());
    }

    sc.step("check every write");
    assert_eq!(
        read(&c, new, "contended").await,
        Some(json!({"v": "new"})),
        "the old node overwrote the new active's write"
    );
    assert_eq!(read(&c, new, "by-new").await, Some(json!({"v": "new"})));
    let (mut acked, mut refused) = (0, 0);
    for a in attempts.iter().filter(|a| a.key != "contended") {
        let stored = read(&c, new, &a.key).await;
        match a.status {
            Some(200 | 204) => {
                acked += 1;
                assert!(stored.is_some(), "acknowledged write {} is lost", a.key);
            }
            _ => {
                refused += 1;
                assert!(
                    stored.is_none(),
                    "write {} landed although it was answered {:?}",
                    a.key,
                    a.status
                );
            }
        }
    }
    let mut answers = std::collections::BTreeMap::new();
    for a in &attempts {
        *answers.entry(a.status).or_insert(0) += 1;
    }
    eprintln!(
        "fencing: {acked} acknowledged writes intact, {refused} refused writes absent; answers {answers:?}"
    );
    for key in &forwarded {
        assert_eq!(
            read(&c, new, key).await,
            None,
            "{key}, answered 503 after its forward to the frozen node was abandoned, landed"
        );
    }
    sc.step(format!(
        "{acked} acknowledged writes intact, {refused} refused writes absent"
    ));
    assert!(acked > 0 && refused > 0, "acked {acked}, refused {refused}");
    let log = c.node(old).log();
    assert!(
        log.contains("leadership lost"),
        "the old node says it lost the lock"
    );
    // A paused node's address accepts connections: nobody took it for
    // dead; its session ran out.
    for i in 0..3 {
        assert!(
            !c.node(i).log().contains(DESTROYED),
            "{} destroyed a session although no node had died",
            c.node(i).name()
        );
    }
    for line in log
        .lines()
        .filter(|l| l.contains("WARN") || l.contains("ERROR"))
        .take(20)
    {
        eprintln!("old active: {line}");
    }
    sampler.stop_and_check().await;
}

/// One request sent through a standby: where, what, and its answer.
type Forward = (
    usize,
    &'static str,
    String,
    tokio::task::JoinHandle<Option<(u16, Option<String>)>>,
);

/// Sends a read and a write through every node but `old` (standbys that
/// still name `old` as the active node) without waiting for the answers.
/// The client's own timeout is far beyond the test's deadlines, so only
/// the standby can end these requests.
fn forward_through_standbys(c: &HaCluster, old: usize) -> Vec<Forward> {
    let mut sent = Vec::new();
    for node in (0..c.nodes().len()).filter(|&n| n != old) {
        for method in ["GET", "PUT"] {
            let key = format!("forwarded-{node}-{method}");
            let url = format!("{}/v1/kv/{key}", c.node(node).base);
            let token = c.root().to_owned();
            sent.push((
                node,
                method,
                key,
                tokio::spawn(async move {
                    let http = reqwest::Client::builder()
                        .redirect(reqwest::redirect::Policy::none())
                        .timeout(Duration::from_secs(600))
                        .build()
                        .unwrap();
                    let mut request = http
                        .request(reqwest::Method::from_bytes(method.as_bytes()).unwrap(), url)
                        .header("X-Vault-Token", token);
                    if method == "PUT" {
                        request = request.json(&json!({"v": "forwarded"}));
                    }
                    let answer = request.send().await.ok()?;
                    let location = answer
                        .headers()
                        .get("location")
                        .and_then(|l| l.to_str().ok())
                        .map(str::to_owned);
                    Some((answer.status().as_u16(), location))
                }),
            ));
        }
    }
    sent
}

/// Waits (the old active node still frozen) until every forward in
/// `sent` is answered, and checks the answers: a read goes to the new
/// active node `new` with a 307 (or gets a 503 when its standby knew no
/// other active node, or became it), a write gets a 503 to retry. Returns
/// the keys of the writes.
async fn forwards_end(c: &HaCluster, new: usize, sent: Vec<Forward>) -> Vec<String> {
    wait::until(
        "the standbys end their forwards to the frozen node",
        DEADLINE,
        || async { sent.iter().all(|(_, _, _, answer)| answer.is_finished()) },
    )
    .await;
    let mut writes = Vec::new();
    for (node, method, key, answer) in sent {
        let answer = answer.await.unwrap();
        let through = c.node(node).name();
        match (method, &answer) {
            ("GET", Some((307, Some(location)))) => assert!(
                location.starts_with(&c.node(new).base),
                "{method} {key} through {through}: redirected to {location}, not the new active node"
            ),
            ("GET" | "PUT", Some((503, _))) => {}
            _ => panic!("{method} {key} through {through}: {answer:?}"),
        }
        if method == "PUT" {
            writes.push(key);
        }
    }
    writes
}

/// The instances of `service` in the Consul catalog: (port, tags, check
/// statuses).
async fn catalog(c: &HaCluster) -> Entries {
    let url = format!(
        "http://{}/v1/health/service/{}",
        c.consul_http(),
        c.service()
    );
    let entries: Value = reqwest::get(&url).await.unwrap().json().await.unwrap();
    entries
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let tags = e["Service"]["Tags"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t.as_str().unwrap().to_owned())
                .collect();
            let checks = e["Checks"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|c| {
                    c["CheckID"]
                        .as_str()
                        .is_some_and(|id| id.ends_with("vault-sealed-check"))
                })
                .map(|c| c["Status"].as_str().unwrap().to_owned())
                .collect();
            (e["Service"]["Port"].as_u64().unwrap(), tags, checks)
        })
        .collect()
}

type Entries = Vec<(u64, Vec<String>, Vec<String>)>;

/// The catalog, once exactly the node on `port` carries the `active` tag.
async fn one_active_tag(c: &HaCluster, port: u64) -> Result<Entries, String> {
    let entries = catalog(c).await;
    let active: Vec<u64> = entries
        .iter()
        .filter(|(_, tags, _)| tags.iter().any(|t| t == "active"))
        .map(|(p, _, _)| *p)
        .collect();
    if active == [port] {
        Ok(entries)
    } else {
        Err(format!("{entries:?}"))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_consul_catalog_names_one_active_node_and_shows_sealed_ones() {
    let sc = Scenario::new("service registration follows the roles");
    let c = cluster(&sc).await;
    let first = c.active(DEADLINE).await;
    let port = |i: usize| u64::from(c.node(i).port());
    // Each node updates its sealed check when it unseals, on its own
    // schedule: wait for the settled catalog, not for the first active tag.
    wait::until(
        "one active tag, every node initialized and unsealed in the catalog",
        DEADLINE,
        || async {
            let entries = one_active_tag(&c, port(first)).await?;
            let settled = entries.len() == 3
                && entries.iter().all(|(_, tags, checks)| {
                    tags.iter().any(|t| t == "initialized") && checks == &["passing"]
                });
            settled.then_some(()).ok_or_else(|| format!("{entries:?}"))
        },
    )
    .await;

    sc.step(format!("seal the active node {}", c.node(first).name()));
    let (code, body) = c
        .node(first)
        .call("PUT", "sys/seal", Some(c.root()), None)
        .await;
    assert_eq!(code, 204, "{body}");
    let second = c.active_except(first, DEADLINE).await;
    let entries = wait::until(
        "the new active tagged, the sealed node critical",
        DEADLINE,
        || async {
            let entries = one_active_tag(&c, port(second)).await?;
            let sealed = entries
                .iter()
                .find(|(p, _, _)| *p == port(first))
                .ok_or("sealed node missing")?;
            (sealed.2 == ["critical"] && sealed.1.iter().any(|t| t == "standby"))
                .then_some(entries.clone())
                .ok_or_else(|| format!("{entries:?}"))
        },
    )
    .await;
    sc.step(format!("catalog: {entries:?}"));

    sc.step(format!("SIGTERM {}: it deregisters", c.node(second).name()));
    c.node(second).terminate();
    let third = c.active_except(second, DEADLINE).await;
    wait::until("the stopped node left the catalog", DEADLINE, || async {
        let entries = one_active_tag(&c, port(third)).await?;
        (entries.len() == 2)
            .then_some(())
            .ok_or_else(|| format!("{entries:?}"))
    })
    .await;
}
