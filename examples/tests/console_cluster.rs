//! The operator console on three real nodes sharing a real Consul: the
//! browser journey of `tests/e2e/test_console.py` (headless Debian chromium
//! through Selenium) run against an uninitialised HA cluster. The page
//! initializes through n1, unseals it, the other nodes are unsealed with
//! the downloaded keys, and the Cluster page lists all three nodes with
//! exactly one active (the standbys through their echoes), until n1 is
//! sealed by API.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test helpers

mod common;

use std::time::Duration;

use testkit::consul::{PrefixGuard, shared_dev, unique_path};
use testkit::{Scenario, StorageStanza};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_shows_three_nodes_with_one_active() {
    let sc = Scenario::new("the_console_shows_three_nodes_with_one_active");
    let consul = shared_dev();
    let path = unique_path();
    let _guard = PrefixGuard::new(
        consul.http_address(),
        path.clone(),
        consul.management_token().map(str::to_owned),
    );
    // No failover is part of this journey (the seal at its end releases
    // the lock explicitly): a long session TTL keeps n1 active while
    // Chromium and three nodes share two busy cores.
    let storage = StorageStanza::consul_dev(consul, &path)
        .session_ttl(Duration::from_secs(15))
        .lock_delay(Duration::from_secs(1))
        .attr(
            "service",
            format!("sr-{}", uuid::Uuid::new_v4().simple()).as_str(),
        );
    let config = common::node()
        .storage(storage)
        .ha_enabled(true)
        .attr("ui", true);
    let mut nodes = Vec::new();
    for i in 1..=3 {
        nodes.push(config.clone().start(&sc, &format!("n{i}")).await);
    }
    let named: Vec<String> = nodes
        .iter()
        .map(|n| format!("{}={}", n.addr(), n.dir().join("server.log").display()))
        .collect();

    sc.step("browser journey through n1 (pytest test_operator_journey)");
    let python = std::env::var_os("STRONGROOM_PYTHON")
        .filter(|p| !p.is_empty())
        .map_or_else(
            || testkit::tools::cache_dir().join("venv/bin/python"),
            Into::into,
        );
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace root")
        .to_path_buf();
    let output = tokio::process::Command::new(&python)
        .args([
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "tests/e2e/test_console.py::test_operator_journey",
        ])
        .current_dir(&root)
        .env("STRONGROOM_BIN", common::bin())
        .env("STRONGROOM_CONSOLE_NODES", named.join(","))
        .env(
            "STRONGROOM_CONSOLE_OUTPUT",
            root.join("tests/e2e/output/console-cluster"),
        )
        .output()
        .await
        .unwrap_or_else(|e| {
            panic!(
                "running {} -m pytest: {e}; scripts/setup-tools.sh creates the venv",
                python.display()
            )
        });
    assert!(
        output.status.success(),
        "the browser journey on three nodes failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}
