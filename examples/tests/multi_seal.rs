//! Several seals at once and break-glass, through the real server: two
//! moto servers play two AWS regions, each with its own KMS key.
//!
//! * Three HA nodes on a real Consul: the primary region's key is revoked
//!   (IAM policy detached) and every node restarted: each unseals through
//!   the secondary, one becomes active, all serve; `sys/seal-backend-status`
//!   and the metrics show the primary unhealthy. Access comes back: the
//!   primary is healthy again and its wrap checked and refreshed
//!   (`fully_wrapped`), after which the primary alone unseals every node.
//! * Break-glass, on three HA nodes: with `recovery_unseal = true`, both
//!   regions gone and every node restarted, a quorum of recovery keys
//!   unseals each through the real `bao operator unseal`, one becomes
//!   active and all serve; with the option off the same keys are refused
//!   with a message that says why.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test helpers

mod common;

use std::time::Duration;

use serde_json::{Value, json};
use testkit::ha::{HaCluster, HaOptions};
use testkit::moto::IamUser;
use testkit::{MotoServer, Node, NodeConfig, Scenario, SealStanza};

/// A named `seal "awskms"` stanza (signing as `user`, else with the
/// harness's static credentials).
fn stanza(
    moto: &MotoServer,
    key_id: &str,
    name: &str,
    priority: u32,
    user: Option<&IamUser>,
) -> SealStanza {
    let seal = match user {
        Some(user) => SealStanza::awskms_as(moto, key_id, user),
        None => SealStanza::awskms(moto, key_id),
    };
    seal.attr("name", name)
        .attr("priority", priority)
        .attr("operation_timeout", "4s")
}

/// A multi-seal node over `seals`.
fn config(seals: [SealStanza; 2]) -> NodeConfig {
    seals.into_iter().fold(
        common::node()
            .attr("enable_multiseal", true)
            .attr("auto_unseal_max_backoff", "1s")
            .attr("seal_health_check_interval", "1s"),
        NodeConfig::seal,
    )
}

async fn backend_status(server: &Node) -> Value {
    let (code, body) = server
        .call("GET", "sys/seal-backend-status", None, None)
        .await;
    assert_eq!(code, 200, "{body}");
    body
}

async fn wait_for(server: &Node, what: &str, check: impl Fn(&Value) -> bool) -> Value {
    testkit::wait::until(what, Duration::from_secs(30), || async {
        let status = backend_status(server).await;
        if check(&status) {
            Ok(status)
        } else {
            Err(format!("status {status}"))
        }
    })
    .await
}

async fn write_and_check(server: &Node, root: &str, write: bool) {
    if write {
        server.mount_kv(root, "kv", "1").await;
        let (code, body) = server
            .call("PUT", "kv/app", Some(root), Some(json!({"v": "regions"})))
            .await;
        assert_eq!(code, 204, "{body}");
    }
    let (code, body) = server.call("GET", "kv/app", Some(root), None).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["data"]["v"], "regions");
}

/// Kills every node, then starts them all again (same config and data).
async fn restart_every_node(c: &HaCluster) {
    for node in c.nodes() {
        node.kill9();
    }
    for node in c.nodes() {
        node.start_again().await;
    }
}

/// Every node unsealed by its seals; exactly one active, which the others
/// know (so they forward). Returns it.
async fn all_unsealed(c: &HaCluster) -> usize {
    const DEADLINE: Duration = Duration::from_secs(60);
    for node in c.nodes() {
        node.wait_sealed(false, DEADLINE).await;
    }
    c.followed(DEADLINE).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_node_restarts_and_unseals_through_the_secondary_while_the_primary_is_revoked() {
    let sc = Scenario::new(
        "every_node_restarts_and_unseals_through_the_secondary_while_the_primary_is_revoked",
    );
    let east = MotoServer::start_on(sc.timeline(), true).await;
    let west = MotoServer::start_on(sc.timeline(), false).await;
    let east_key = east.create_key().await;
    let west_key = west.create_key().await;
    let user = east.create_kms_user("strongroom-node").await;
    let mut options = HaOptions::default();
    options.auto_seal = true;
    let c = HaCluster::start(
        &sc,
        testkit::consul::shared_dev(),
        config([
            stanza(&east, &east_key.key_id, "east", 1, Some(&user)),
            stanza(&west, &west_key.key_id, "west", 2, None),
        ]),
        options,
    )
    .await;
    let root = c.root().to_owned();
    let active = c.active(Duration::from_secs(60)).await;
    write_and_check(c.node(active), &root, true).await;
    let status = wait_for(c.node(active), "both seals hold a wrap", |s| {
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

    // The primary region's key is revoked; every node restarts.
    sc.step("revoke the primary's KMS access, restart every node");
    east.revoke_kms_access(&user).await;
    restart_every_node(&c).await;
    let active = all_unsealed(&c).await;
    for node in c.nodes() {
        write_and_check(node, &root, false).await;
    }
    let status = wait_for(c.node(active), "the primary is reported unhealthy", |s| {
        s["backends"][0]["healthy"] == json!(false)
    })
    .await;
    assert_eq!(status["healthy"], json!(false), "{status}");
    assert!(status["unhealthy_since"].is_string(), "{status}");
    assert_eq!(status["backends"][1]["healthy"], json!(true), "{status}");
    assert_eq!(status["fully_wrapped"], json!(false), "{status}");
    let (code, metrics) = c
        .node(active)
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
    sc.step("grant the primary's KMS access again");
    east.grant_kms_access(&user).await;
    let status = wait_for(
        c.node(active),
        "the primary is healthy and wrapped again",
        |s| s["healthy"] == json!(true) && s["fully_wrapped"] == json!(true),
    )
    .await;
    assert!(status["backends"][0].get("unhealthy_since").is_none());

    // And the primary alone unseals (the secondary region is down now).
    sc.step("secondary region down, restart every node");
    west.stop().await;
    restart_every_node(&c).await;
    let active = all_unsealed(&c).await;
    write_and_check(c.node(active), &root, false).await;
}

async fn break_glass_scenario(sc: &Scenario, on: bool) {
    let east = MotoServer::start_on(sc.timeline(), false).await;
    let west = MotoServer::start_on(sc.timeline(), false).await;
    let (east_key, west_key) = (east.create_key().await, west.create_key().await);
    let mut primary = stanza(&east, &east_key.key_id, "east", 1, None);
    if on {
        primary = primary.attr("recovery_unseal", true);
    }
    let mut options = HaOptions::default();
    options.auto_seal = true;
    options.recovery_keys = (3, 2);
    let c = HaCluster::start(
        sc,
        testkit::consul::shared_dev(),
        config([primary, stanza(&west, &west_key.key_id, "west", 2, None)]),
        options,
    )
    .await;
    let (keys, root) = (c.recovery_keys().to_vec(), c.root().to_owned());
    let active = c.active(Duration::from_secs(60)).await;
    write_and_check(c.node(active), &root, true).await;
    for node in c.nodes() {
        assert_eq!(
            node.log().contains("recovery_unseal (break-glass) is on"),
            on,
            "the start warning (only with the option):\n{}",
            node.log()
        );
    }

    // Both regions are gone; every node restarts sealed.
    sc.step("both regions down, restart every node");
    east.stop().await;
    west.stop().await;
    restart_every_node(&c).await;
    for node in c.nodes() {
        let (_, status) = node.call("GET", "sys/seal-status", None, None).await;
        assert_eq!(status["sealed"], json!(true), "{}: {status}", node.name());
    }
    sc.step("two recovery-key holders at every node: bao operator unseal");
    for node in c.nodes() {
        let first = common::bao::unseal(node, &keys[0], false);
        let out = common::bao::success(&first, "bao operator unseal (first recovery key)");
        assert!(out.contains("1/2"), "progress 1/2 expected: {out}");
        let second = common::bao::unseal(node, &keys[2], false);
        if on {
            common::bao::success(&second, "bao operator unseal (second recovery key)");
            node.wait_sealed(false, Duration::from_secs(10)).await;
        } else {
            assert!(!second.status.success());
            let stderr = String::from_utf8_lossy(&second.stderr);
            assert!(
                stderr.contains("recovery keys cannot unseal this node")
                    && stderr.contains("recovery_unseal"),
                "{stderr}"
            );
            let (_, status) = node.call("GET", "sys/seal-status", None, None).await;
            assert_eq!(status["sealed"], json!(true));
        }
    }
    if on {
        let active = all_unsealed(&c).await;
        for node in c.nodes() {
            write_and_check(node, &root, false).await;
        }
        assert_eq!(c.active(Duration::from_secs(60)).await, active);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn break_glass_recovery_keys_unseal_when_every_kms_is_gone() {
    let sc = Scenario::new("break_glass_recovery_keys_unseal_when_every_kms_is_gone");
    break_glass_scenario(&sc, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_break_glass_recovery_keys_are_refused_for_unseal() {
    let sc = Scenario::new("without_break_glass_recovery_keys_are_refused_for_unseal");
    break_glass_scenario(&sc, false).await;
}
