//! What the server's tests share beyond testkit: the binary under test as
//! a node config, and running its CLI.

#![allow(dead_code, unreachable_pub, missing_docs, clippy::expect_used)]

use std::process::Stdio;

use testkit::NodeConfig;

pub mod bao;
pub mod kube_api;

/// The binary under test.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_strongroom")
}

/// A node of the binary under test: redb storage in its directory, Shamir,
/// plain HTTP on a reserved port.
pub fn node() -> NodeConfig {
    NodeConfig::new().binary(bin())
}

/// `strongroom server -dev` of the binary under test, with root token
/// `root_token` (in memory, unsealed, KV v2 at `secret/`).
pub fn node_dev(root_token: &str) -> NodeConfig {
    NodeConfig::dev(root_token).binary(bin())
}

/// What a CLI run printed.
#[derive(Debug)]
pub struct Output {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// Runs the CLI with `args` and only the environment `env` adds to ours
/// (no address or token leaks in from the caller's shell).
pub async fn cli(env: &[(&str, &str)], args: &[&str]) -> Output {
    let mut command = tokio::process::Command::new(bin());
    command
        .args(args)
        .env_remove("STRONGROOM_ADDR")
        .env_remove("STRONGROOM_TOKEN")
        .env_remove("VAULT_ADDR")
        .env_remove("VAULT_TOKEN")
        .env_remove("BAO_ADDR")
        .env_remove("BAO_TOKEN")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    for (k, v) in env {
        command.env(k, v);
    }
    let out = command.output().await.expect("run strongroom");
    Output {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}
