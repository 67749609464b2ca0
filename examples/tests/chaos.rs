//! The fault-injection suite: the auto-unseal failure cases an operator
//! rehearses before trusting KMS auto-unseal in production, on three
//! `strongroom server` processes (`storage "consul"` on a 3-server Consul
//! cluster, `seal "awskms"` on moto with IAM enforced, HA on), with a load
//! of KV v2 writes and reads running through a readiness-probed "Service"
//! the whole time.
//!
//! Each scenario is its own test and ends with the same checks: every
//! acknowledged write reads back by version, each key's history is
//! linearizable (register model), no two acknowledged writes share a
//! version, and exactly one node is active at every sampled moment after
//! the cluster converged. A failure prints the scenario's timeline and
//! every process's log tail. The scenarios share one cluster (each leaves
//! it converged) and run one at a time; a failed one leaves a fresh cluster
//! to the next.
//!
//! `scripts/chaos-report.sh` runs the suite and writes
//! `benches/results/chaos.md` from the figures each scenario records.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

#[path = "chaos/report.rs"]
mod report;
#[path = "chaos/support.rs"]
mod support;
#[path = "chaos/vault_reference.rs"]
mod vault_reference;

use std::time::Duration;

use seal_awskms::AwsKmsSeal;
use serde_json::json;
use support::{Chaos, DEADLINE, LogRetries, scenario};
use testkit::load::{LIVENESS_PATH, READINESS_PATH};
use testkit::roles::Role;
use testkit::wait;

/// 1. `operator init` with recovery keys; every node comes up unsealed with
///    no key typed; kill -9 and restart each node in turn: each comes back
///    unsealed and rejoins as a standby.
#[test]
fn s1_auto_unseal_after_init_and_every_kill() {
    scenario(
        "s1",
        "Auto-unseal: init, then kill -9 and restart each node in turn",
        true,
        s1,
    );
}

async fn s1(c: &mut Chaos) {
    c.step("three uninitialized nodes, KMS key and IAM user ready");
    for node in c.cluster.nodes() {
        let status = node.seal_status().await;
        assert_eq!(status["initialized"], json!(false), "{status}");
        assert_eq!(status["type"], "awskms", "{status}");
    }
    let t = c.now();
    let keys = c.cluster.init_with_cli(5, 3).await;
    assert_eq!(keys.recovery_keys_base64.len(), 5, "{}", keys.body);
    assert_eq!(keys.body["recovery_keys_threshold"], json!(3));
    assert!(
        keys.keys_base64.is_empty(),
        "no unseal keys with an auto seal: {}",
        keys.body
    );
    for node in c.cluster.nodes() {
        node.wait_sealed(false, DEADLINE).await;
    }
    c.figure("init → all three unsealed, no key typed", c.now() - t);
    let active = c.cluster.active(DEADLINE).await;
    c.step(format!("{} is active", c.name(active)));
    c.cluster.mount_kv2("secret").await;
    c.start_load().await;

    for i in 0..c.cluster.nodes().len() {
        let was_active = c.cluster.active(DEADLINE).await == i;
        c.step(format!(
            "kill -9 {} ({})",
            c.name(i),
            if was_active {
                "the active node"
            } else {
                "a standby"
            }
        ));
        let t = c.now();
        c.cluster.node(i).kill9();
        c.cluster.node(i).start_again().await;
        c.cluster.node(i).wait_sealed(false, DEADLINE).await;
        c.cluster.wait_standby(i, DEADLINE).await;
        c.figure(
            &format!("kill -9 {} → back unsealed as a standby", c.name(i)),
            c.now() - t,
        );
        let served = c.write_acknowledged_after(t).await;
        if was_active {
            c.figure("kill -9 of the active → writes acknowledged again", served);
        }
    }
    c.converged().await;
}

/// 2. KMS permissions revoked (and, second, the KMS unreachable) while
///    every node runs: all stay unsealed and serving, no operation fails.
#[test]
fn s2_kms_down_every_node_keeps_serving() {
    scenario(
        "s2",
        "KMS down while running: every node stays unsealed and serving",
        false,
        s2,
    );
}

async fn s2(c: &mut Chaos) {
    c.start_load().await;
    c.acknowledged_writes_after(c.now(), 20).await;
    for unreachable in [false, true] {
        let t = c.now();
        if unreachable {
            c.cluster.make_kms_unreachable();
        } else {
            c.cluster.revoke_kms().await;
        }
        let active = c.cluster.active(DEADLINE).await;
        // The active node's seal health check notices the KMS is gone...
        let unhealthy = c.seal_healthy(active, false).await;
        c.step(format!(
            "{} reports its seal unhealthy: {unhealthy}",
            c.name(active)
        ));
        let said = if unreachable { "unreachable" } else { "denied" };
        assert!(
            unhealthy.contains(said),
            "the seal status says {said}: {unhealthy}"
        );
        // ...and the load keeps going through a couple of its checks.
        c.acknowledged_writes_after(c.now(), 150).await;
        let end = c.now();
        let failed = c.load().history().unacknowledged_between(t, end);
        assert!(
            failed.is_empty(),
            "operations failed while the KMS was down:\n{}",
            failed
                .iter()
                .map(|op| format!("  {op}\n"))
                .collect::<String>()
        );
        for node in c.cluster.nodes() {
            assert_eq!(node.seal_status().await["sealed"], json!(false));
        }
        let s = c.load().history().summary_between(t, end);
        let what = if unreachable {
            "unreachable"
        } else {
            "revoked"
        };
        c.note(format!(
            "KMS {what} for {:.1} s: {} operations, none failed; every node stayed unsealed",
            (end - t).as_secs_f64(),
            s.attempted
        ));
        c.figure(
            &format!("KMS {what}: longest gap between acknowledged writes"),
            c.load().history().longest_write_gap(t, end),
        );
        if unreachable {
            c.cluster.make_kms_reachable();
        } else {
            c.cluster.restore_kms().await;
        }
        let t = c.now();
        c.seal_healthy(active, true).await;
        c.figure(
            &format!("KMS back → {} reports its seal healthy", c.name(active)),
            c.now() - t,
        );
    }
    c.converged().await;
}

/// 3. KMS down and one node restarted: it waits sealed (liveness passes,
///    readiness fails), says why once per retry, the other two serve; when
///    the KMS returns it unseals itself within one retry interval.
#[test]
fn s3_kms_down_one_node_restarted_waits_sealed_then_heals() {
    scenario(
        "s3",
        "KMS down + one node restarted: sealed, probes, one log line per retry, heals itself",
        false,
        s3,
    );
}

async fn s3(c: &mut Chaos) {
    c.start_load().await;
    c.reference_vault_1_1_2().await;
    for unreachable in [false, true] {
        let active = c.cluster.active(DEADLINE).await;
        // Revoked: restart the active node (a failover too). Unreachable:
        // restart a standby.
        let victim = if unreachable {
            (active + 1) % 3
        } else {
            active
        };
        let what = if unreachable {
            "unreachable"
        } else {
            "revoked"
        };
        if unreachable {
            c.cluster.make_kms_unreachable();
        } else {
            c.cluster.revoke_kms().await;
        }
        c.step(format!("restart {} (SIGTERM, start)", c.name(victim)));
        let t = c.now();
        assert!(c.cluster.node(victim).terminate().is_some());
        c.cluster.node(victim).start_again().await;
        let node = c.cluster.node(victim);

        // The other two serve.
        let others = c.cluster.active(DEADLINE).await;
        assert_ne!(others, victim);
        let served = c.write_acknowledged_after(t).await;
        c.figure(
            &format!(
                "KMS {what}, {} restarted → writes acknowledged",
                c.name(victim)
            ),
            served,
        );

        // It waits sealed, alive but not ready, and says why.
        let retries = LogRetries::wait_for(node, 4, c.cluster.options().unseal_retry).await;
        assert_eq!(node.seal_status().await["sealed"], json!(true));
        let (ready, live) = (
            node.health_code(READINESS_PATH.trim_start_matches("sys/health?"))
                .await,
            node.health_code(LIVENESS_PATH.trim_start_matches("sys/health?"))
                .await,
        );
        assert_eq!((ready, live), (503, 204), "readiness, liveness");
        c.step(format!(
            "{}: readiness /v1/{READINESS_PATH} {ready}, liveness /v1/{LIVENESS_PATH} {live}",
            c.name(victim)
        ));
        let line = retries.lines.last().cloned().unwrap_or_default();
        assert!(
            line.contains("fetching stored unseal keys failed"),
            "the log says what failed: {line}"
        );
        if unreachable {
            assert!(
                line.to_lowercase().contains("unreachable") || line.contains("timed out"),
                "the log says the KMS cannot be reached: {line}"
            );
        } else {
            assert!(
                line.contains("denied") && line.contains(&c.cluster.key().key_id),
                "the log says KMS denied access and names the key: {line}"
            );
        }
        retries.assert_backoff(c.cluster.options().unseal_retry);
        c.note(format!(
            "KMS {what}: {} sealed after restart; one log line per attempt, {} attempts in {:.1} s, gaps {}; the line: `{}`",
            c.name(victim),
            retries.lines.len(),
            retries.span.as_secs_f64(),
            retries.gaps_text(),
            support::without_timestamp(&line)
        ));
        let status = node
            .call("GET", "sys/auto-unseal-status", None, None)
            .await
            .1;
        c.step(format!(
            "{} sys/auto-unseal-status: {status}",
            c.name(victim)
        ));

        // KMS back: it unseals itself, no restart.
        if unreachable {
            c.cluster.make_kms_reachable();
        } else {
            c.cluster.restore_kms().await;
        }
        let t = c.now();
        node.wait_sealed(false, DEADLINE).await;
        let healed = c.now() - t;
        c.figure(
            &format!(
                "KMS {what} → back: {} unsealed itself (retry interval {:?})",
                c.name(victim),
                c.cluster.options().unseal_retry
            ),
            healed,
        );
        // One retry interval, plus the attempt itself (a KMS call, a few
        // storage reads).
        let bound = c.cluster.options().unseal_retry + Duration::from_secs(5);
        assert!(
            healed <= bound,
            "{} took {healed:?} to unseal after the KMS returned (retry interval {:?})",
            c.name(victim),
            c.cluster.options().unseal_retry
        );
        c.cluster.wait_standby(victim, DEADLINE).await;
    }
    c.converged().await;
}

/// 4. KMS down and two nodes restarted: both wait sealed, the remaining
///    one holds the lock (it was active) or takes it (it was a standby) and
///    serves alone.
#[test]
fn s4_kms_down_two_restarted_the_last_node_serves_alone() {
    scenario(
        "s4",
        "KMS down + two nodes restarted: the remaining node serves alone",
        false,
        s4,
    );
}

async fn s4(c: &mut Chaos) {
    c.start_load().await;
    for survivor_was_standby in [false, true] {
        let active = c.cluster.active(DEADLINE).await;
        let (survivor, restarted) = if survivor_was_standby {
            let s = (active + 1) % 3;
            (s, [active, (active + 2) % 3])
        } else {
            (active, [(active + 1) % 3, (active + 2) % 3])
        };
        c.cluster.revoke_kms().await;
        c.step(format!(
            "restart {} and {}; {} ({}) remains",
            c.name(restarted[0]),
            c.name(restarted[1]),
            c.name(survivor),
            if survivor_was_standby {
                "a standby"
            } else {
                "the active node"
            }
        ));
        let t = c.now();
        for &i in &restarted {
            assert!(c.cluster.node(i).terminate().is_some());
        }
        for &i in &restarted {
            c.cluster.node(i).start_again().await;
        }
        let now_active = c.cluster.active(DEADLINE).await;
        assert_eq!(now_active, survivor, "the remaining node is active");
        let restarted_at = c.now();
        let served = c.write_acknowledged_after(restarted_at).await;
        if survivor_was_standby {
            let took = c.seen_as(survivor, Role::Active, t).await;
            c.figure(
                &format!(
                    "SIGTERM of the active → {} takes the lock",
                    c.name(survivor)
                ),
                took,
            );
        }
        c.figure(
            &format!(
                "two restarted, {} alone → writes acknowledged",
                c.name(survivor)
            ),
            served,
        );
        // Served alone for a while: everything goes through the survivor.
        let from = c.now();
        c.acknowledged_writes_after(from, 40).await;
        for &i in &restarted {
            assert_eq!(c.cluster.node(i).seal_status().await["sealed"], json!(true));
        }
        let answered: std::collections::BTreeSet<String> = c
            .load()
            .history()
            .ops()
            .into_iter()
            .filter(|op| op.invoke >= from && op.outcome.is_ok())
            .map(|op| op.node)
            .collect();
        assert_eq!(
            answered.into_iter().collect::<Vec<_>>(),
            vec![c.name(survivor)],
            "only the survivor is ready behind the service"
        );
        c.cluster.restore_kms().await;
        let t = c.now();
        for &i in &restarted {
            c.cluster.node(i).wait_sealed(false, DEADLINE).await;
            c.cluster.wait_standby(i, DEADLINE).await;
        }
        c.figure("KMS back → both unsealed standbys", c.now() - t);
    }
    c.converged().await;
}

/// 5. Everything down — KMS revoked, every node killed, Consul stopped —
///    then back in two orders: Consul, KMS, nodes; and nodes first, KMS
///    last. The cluster comes back unsealed with one active node and
///    nothing lost, with no operator step.
#[test]
fn s5_everything_down_then_back_in_either_order() {
    scenario(
        "s5",
        "Everything down (KMS, all nodes, Consul), back in either order",
        false,
        s5,
    );
}

async fn s5(c: &mut Chaos) {
    c.start_load().await;
    for nodes_first in [false, true] {
        c.acknowledged_writes_after(c.now(), 20).await;
        c.cluster.revoke_kms().await;
        c.step("kill -9 every node");
        for node in c.cluster.nodes() {
            node.kill9();
        }
        c.cluster.stop_consul();
        let last = if nodes_first {
            c.step("start the nodes first (Consul down, KMS revoked)");
            for node in c.cluster.nodes() {
                node.start_again().await;
            }
            // Up, alive, not ready, and saying why.
            for (i, node) in c.cluster.nodes().iter().enumerate() {
                let health = node.health_code("").await;
                let live = node
                    .health_code(LIVENESS_PATH.trim_start_matches("sys/health?"))
                    .await;
                let ready = node
                    .health_code(READINESS_PATH.trim_start_matches("sys/health?"))
                    .await;
                assert!(
                    (live, ready) == (204, health) && health >= 500,
                    "{}: liveness {live}, readiness {ready}, health {health}",
                    c.name(i)
                );
                let kind = c.auto_unseal_error_kind(i, "internal").await;
                c.note(format!(
                    "Consul down: {} started, sys/health {health} (liveness 204, readiness {ready}); auto-unseal says {kind:?}",
                    c.name(i)
                ));
            }
            c.cluster.start_consul().await;
            for i in 0..c.cluster.nodes().len() {
                c.auto_unseal_error_kind(i, "seal_access_denied").await;
                assert_eq!(
                    c.cluster.node(i).health_code("").await,
                    503,
                    "{} waits sealed",
                    c.name(i)
                );
            }
            c.cluster.restore_kms().await;
            c.now()
        } else {
            c.cluster.start_consul().await;
            c.cluster.restore_kms().await;
            c.step("start the nodes");
            let t = c.now();
            for node in c.cluster.nodes() {
                node.start_again().await;
            }
            t
        };
        c.cluster.active(DEADLINE).await;
        let served = c.write_acknowledged_after(last).await;
        let order = if nodes_first {
            "nodes, Consul, then KMS last"
        } else {
            "Consul, KMS, then nodes"
        };
        c.figure(&format!("{order}: last step → writes acknowledged"), served);
        for node in c.cluster.nodes() {
            node.wait_sealed(false, DEADLINE).await;
        }
    }
    c.converged().await;
}

/// 6. Consul loses one of three servers: service continues. Consul loses
///    quorum: writes fail within a bounded time with a clear error; quorum
///    back: the cluster serves again on its own.
#[test]
fn s6_consul_loses_a_server_then_quorum() {
    scenario(
        "s6",
        "Consul loses one server, then quorum, then gets it back",
        false,
        s6,
    );
}

async fn s6(c: &mut Chaos) {
    c.start_load().await;
    c.acknowledged_writes_after(c.now(), 20).await;
    let consul = c.cluster.consul();
    let first = c.cluster.wait_consul_leader().await;
    c.step(format!("kill -9 consul{first} (the raft leader)"));
    let t = c.now();
    consul.kill(first);
    c.cluster.wait_consul_leader().await;
    c.cluster.active(DEADLINE).await;
    c.acknowledged_writes_after(c.now(), 20).await;
    let end = c.now();
    c.figure(
        "one Consul server lost: longest gap between acknowledged writes",
        c.load().history().longest_write_gap(t, end),
    );

    let second = (0..consul.len())
        .find(|&i| i != first)
        .expect("three servers");
    c.step(format!(
        "kill -9 consul{second}: quorum lost (the client agents stay up)"
    ));
    let t = c.now();
    consul.kill(second);
    // Without a leader the active node cannot renew its lock session: it
    // steps down, and no node is active until quorum is back.
    let lost = c.no_active_after(t).await;
    c.figure("quorum lost → no node active", lost);
    // Writes fail, each within a bounded time, with an error that says so.
    let failures = c.failed_writes_after(c.now(), 8).await;
    let failures: Vec<_> = failures.into_iter().filter(|op| op.invoke >= t).collect();
    let bound = support::storage_bound(c.cluster.options());
    let slowest = failures
        .iter()
        .map(|op| op.complete - op.invoke)
        .max()
        .unwrap_or_default();
    assert!(
        slowest <= bound,
        "a write took {slowest:?} to fail without quorum (bound {bound:?})"
    );
    let hung: Vec<_> = failures
        .iter()
        .filter(|op| support::outcome_text(&op.outcome).contains("timed out"))
        .collect();
    assert!(hung.is_empty(), "writes hung without quorum: {hung:?}");
    let acknowledged = c
        .load()
        .history()
        .ops()
        .into_iter()
        .filter(|op| op.invoke >= t + lost && op.is_acknowledged_write())
        .count();
    assert_eq!(
        acknowledged, 0,
        "writes acknowledged without a Consul leader"
    );
    let errors = support::distinct_errors(&failures);
    c.note(format!(
        "without quorum every write failed, the slowest after {:.1} s ({} failed writes, none hung); errors: {}",
        slowest.as_secs_f64(),
        failures.len(),
        errors.join(" | ")
    ));
    let reads = c.load().history().summary_between(t, c.now());
    c.note(format!(
        "without quorum, reads: {} answered, {} refused (Consul's default consistency needs a leader, and without the lock no node serves)",
        reads.reads_acknowledged,
        reads.attempted - reads.writes - reads.reads_acknowledged
    ));
    c.figure("quorum lost: slowest failed write", slowest);

    c.step("restart both Consul servers: quorum back");
    let t = c.now();
    consul.start_node(first);
    consul.start_node(second);
    c.cluster.wait_consul_leader().await;
    c.cluster.active(DEADLINE).await;
    let served = c.write_acknowledged_after(t).await;
    c.figure("quorum back → writes acknowledged", served);
    c.converged().await;
}

/// 7. Leader isolation: SIGSTOP the active node past its session expiry;
///    a standby takes over; SIGCONT: the old active is fenced, steps down
///    and forwards.
#[test]
fn s7_frozen_active_is_replaced_then_fenced() {
    scenario(
        "s7",
        "Leader isolation: SIGSTOP the active node, a standby takes over, SIGCONT fences it",
        false,
        s7,
    );
}

async fn s7(c: &mut Chaos) {
    c.start_load().await;
    c.acknowledged_writes_after(c.now(), 20).await;
    let old = c.cluster.active(DEADLINE).await;
    c.step(format!("SIGSTOP {} (the active node)", c.name(old)));
    c.excuse_until_standby(old);
    let t = c.now();
    c.cluster.node(old).pause();
    // Writes sent to the frozen node wait in its socket until SIGCONT.
    let stuck = c.writes_to(old, 3);
    let new = c.cluster.active(DEADLINE).await;
    assert_ne!(new, old);
    let took = c.seen_as(new, Role::Active, t).await;
    c.figure(
        &format!("SIGSTOP {} → {} active", c.name(old), c.name(new)),
        took,
    );
    // A client that reaches the new active node is served at once...
    let direct = c
        .load()
        .write_via(98, &c.name(new), "chaos/s7/through-new", "after-takeover")
        .await;
    assert!(direct.is_ok(), "a write through the new active: {direct:?}");
    c.figure(
        &format!(
            "SIGSTOP {} → a write sent to {} acknowledged",
            c.name(old),
            c.name(new)
        ),
        c.now() - t,
    );
    // ...and the load's workers waiting on requests a standby forwarded to
    // the frozen node before the takeover are answered (503 to retry, or a
    // 307 for a read) once the standby has seen the new active node for the
    // forwarding grace, well before the client's own timeout.
    let served = c.write_acknowledged_after(t).await;
    c.figure(
        &format!(
            "SIGSTOP {} → the load's writes acknowledged again (forwards to the frozen node abandoned after a new active node is seen, client timeout {:?})",
            c.name(old),
            c.load().options().timeout
        ),
        served,
    );
    c.acknowledged_writes_after(c.now(), 20).await;

    c.step(format!("SIGCONT {}", c.name(old)));
    let t = c.now();
    c.cluster.node(old).resume();
    c.cluster.wait_standby(old, DEADLINE).await;
    c.figure(&format!("SIGCONT {} → standby", c.name(old)), c.now() - t);
    let outcomes = stuck.await.unwrap();
    c.note(format!(
        "writes sent to the frozen {} before the takeover: {}",
        c.name(old),
        outcomes
            .iter()
            .map(support::outcome_text)
            .collect::<Vec<_>>()
            .join("; ")
    ));
    let log = c.cluster.node(old).log_since_start();
    assert!(
        log.contains("leadership lost"),
        "{} says it lost the lock",
        c.name(old)
    );
    let said: Vec<String> = log
        .lines()
        .filter(|l| {
            ["leadership lost", "fenc", "lost the HA lock", "standby:"]
                .iter()
                .any(|w| l.contains(w))
        })
        .take(4)
        .map(support::without_timestamp)
        .collect();
    c.note(format!(
        "{} after SIGCONT logged: `{}`",
        c.name(old),
        said.join("` / `")
    ));
    // It forwards now: a write through it lands on the new active node.
    let outcome = c
        .load()
        .write_via(99, &c.name(old), "chaos/s7/through-old", "after-sigcont")
        .await;
    assert!(
        outcome.is_ok(),
        "a write through the old active: {outcome:?}"
    );
    let (_, leader) = c
        .cluster
        .node(old)
        .call("GET", "sys/leader", None, None)
        .await;
    assert_eq!(leader["is_self"], json!(false), "{leader}");
    assert_eq!(
        leader["leader_address"],
        json!(c.cluster.node(new).addr()),
        "{leader}"
    );
    c.converged().await;
}

/// 8. A new KMS key id in the config, rolled out by restarting one node at
///    a time: every node unseals with the old key's blob, the active one
///    re-wraps the stored keys under the new key (the blobs in Consul name
///    it), and every node unseals from them on the next restart.
#[test]
fn s8_kms_key_changed_on_a_rolling_restart() {
    scenario(
        "s8",
        "KMS key changed on a rolling restart: old blob opens, re-wrapped under the new key",
        false,
        s8,
    );
}

async fn s8(c: &mut Chaos) {
    c.start_load().await;
    let old_key = c.cluster.key().clone();
    let new_key = c.cluster.moto().create_key().await;
    c.step(format!(
        "new KMS key {}; rolling restart onto it, standbys first",
        new_key.key_id
    ));
    for path in STORED_KEYS {
        assert_eq!(stored_key_id(c, path).await.unwrap(), old_key.arn, "{path}");
    }
    let t = c.now();
    let active = c.cluster.active(DEADLINE).await;
    let order = [(active + 1) % 3, (active + 2) % 3, active];
    for &i in &order {
        c.cluster.set_node_key(i, &new_key.key_id);
        c.rolling_restart(i).await;
    }
    let active = c.cluster.active(DEADLINE).await;
    wait::until(
        "the active node's seal reports the keys fully wrapped",
        DEADLINE,
        || async {
            let (_, status) = c
                .cluster
                .node(active)
                .call(
                    "GET",
                    "sys/seal-backend-status",
                    Some(c.cluster.root()),
                    None,
                )
                .await;
            status["fully_wrapped"] == json!(true)
        },
    )
    .await;
    let end = c.now();
    c.figure("rolling restart onto the new key: total", end - t);
    c.figure(
        "rolling restart: longest gap between acknowledged writes",
        c.load().history().longest_write_gap(t, end),
    );

    // The stored keys now name the new key: read both blobs from Consul
    // and the key id each records. (Disabling the old key would prove
    // nothing here: moto's Decrypt ignores a key's state.)
    for path in STORED_KEYS {
        let recorded = wait::until(
            &format!("{path} in Consul is wrapped under the new key"),
            DEADLINE,
            || async {
                let recorded = stored_key_id(c, path).await?;
                if recorded == new_key.arn {
                    Ok(recorded)
                } else {
                    Err(format!("still {recorded}"))
                }
            },
        )
        .await;
        c.step(format!("{path}: wrapped under {recorded}"));
    }
    c.step("restart every node again: each unseals from the re-wrapped blob");
    let active = c.cluster.active(DEADLINE).await;
    for i in [(active + 1) % 3, (active + 2) % 3, active] {
        c.rolling_restart(i).await;
    }
    c.note(format!(
        "after the rolling restart onto {} the stored root key and recovery key were re-wrapped under it (the key id each blob in Consul records, first wrapped under {}); a second rolling restart unsealed every node from them",
        new_key.key_id, old_key.key_id
    ));
    c.cluster.use_key(new_key);
    c.converged().await;
}

/// The seal-wrapped entries: the root key and the recovery key.
const STORED_KEYS: [&str; 2] = ["core/hsm/barrier-unseal-keys", "core/recovery-key"];

/// The KMS key a seal-wrapped entry is wrapped under: the key id its blob
/// in Consul records (read raw from the KV store, under the nodes'
/// `path = "vault/"`).
async fn stored_key_id(c: &Chaos, path: &str) -> Result<String, String> {
    let url = format!(
        "http://{}/v1/kv/vault/{path}?raw",
        c.cluster.consul().http_address(0)
    );
    let answer = reqwest::get(url).await.map_err(|e| e.to_string())?;
    let blob = answer.bytes().await.map_err(|e| e.to_string())?;
    AwsKmsSeal::blob_key_id(&blob).map_err(|e| e.to_string())
}
