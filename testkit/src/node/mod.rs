//! A Strongroom node as a child process: its config rendered from a
//! [`NodeConfig`], its listener (and cluster port) reserved, its log
//! captured, its API one [`Client`] away (`Node` derefs to it).
//!
//! ```no_run
//! # async fn example() {
//! use std::time::Duration;
//! use testkit::{NodeConfig, Scenario};
//!
//! let sc = Scenario::new("restart keeps data");
//! let node = NodeConfig::new()
//!     .binary(testkit::tools::strongroom_bin()) // in `examples`: env!("CARGO_BIN_EXE_strongroom")
//!     .start(&sc, "n1")
//!     .await;
//! let init = node.init_unsealed(1, 1).await;
//! node.mount_kv(&init.root_token, "kv", "1").await;
//! node.write(&init.root_token, "kv/a", serde_json::json!({"v": 1})).await;
//! sc.step("restart n1");
//! node.restart().await;
//! node.unseal(&init.keys_base64).await;
//! assert!(node.read(&init.root_token, "kv/a").await.is_some());
//! # }
//! ```

mod client;
mod config;

use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::Duration;

pub use client::{Client, InitKeys};
pub use config::{NodeConfig, SealStanza, StorageStanza, duration};

use crate::ports::{self, Port};
use crate::process::{Process, ProcessSpec, StartError, with_fresh_ports_async};
use crate::timeline::{Scenario, Timeline};
use crate::{tools, wait};

/// How long SIGTERM may take before SIGKILL (the server seals and flushes).
const TERM_GRACE: Duration = Duration::from_secs(40);

/// A running (or stopped) Strongroom node; killed when dropped.
#[derive(Debug)]
pub struct Node {
    name: String,
    config: NodeConfig,
    dir: PathBuf,
    process: Process,
    client: Client,
    port: Port,
    cluster_port: Port,
}

impl NodeConfig {
    /// Starts a node named `name` in the scenario's directory
    /// (`<scenario>/<name>/`) and waits until it answers HTTP.
    ///
    /// # Panics
    /// When the node does not start (with its log).
    pub async fn start(self, sc: &Scenario, name: &str) -> Node {
        Node::start_in(&sc.subdir(name), sc.timeline(), name, self).await
    }
}

impl Node {
    /// Starts a node keeping its config, data and log in `dir`; waits
    /// until it answers HTTP. A node that dies at start because its port
    /// was taken is started again on fresh ports (with a log line).
    ///
    /// # Panics
    /// When the node does not start (with its log).
    pub async fn start_in(dir: &Path, timeline: &Timeline, name: &str, config: NodeConfig) -> Self {
        let config = &config;
        with_fresh_ports_async(name, timeline, || async move {
            let node = Self::spawn_in(dir, timeline, name, config.clone());
            node.try_wait_ready().await.map(|()| node)
        })
        .await
    }

    /// Starts the process without waiting (for tests that expect it to
    /// fail, or that wait themselves).
    ///
    /// # Panics
    /// When the config cannot be written or the binary run.
    pub fn spawn_in(dir: &Path, timeline: &Timeline, name: &str, config: NodeConfig) -> Self {
        std::fs::create_dir_all(dir)
            .unwrap_or_else(|e| panic!("testkit: mkdir {}: {e}", dir.display()));
        let port = ports::reserve();
        let cluster_port = ports::reserve();
        let config_path = dir.join("server.hcl");
        if config.uses_file() {
            let hcl = config.render(dir, port.get(), cluster_port.get());
            std::fs::write(&config_path, hcl)
                .unwrap_or_else(|e| panic!("testkit: write {}: {e}", config_path.display()));
        }
        let binary = config.binary.clone().unwrap_or_else(tools::strongroom_bin);
        let mut spec = ProcessSpec::new(name, binary, dir.join("server.log"))
            .args(config.args(port.get(), &config_path))
            .env_remove("VAULT_ADDR")
            .env_remove("STRONGROOM_ADDR")
            .env_remove("VAULT_TOKEN");
        for (k, v) in &config.env {
            spec = match v {
                Some(v) => spec.env(k, v),
                None => spec.env_remove(k),
            };
        }
        let ca = config.tls_ca.as_ref().map(|p| {
            std::fs::read(p).unwrap_or_else(|e| panic!("testkit: read CA {}: {e}", p.display()))
        });
        let scheme = if config.is_tls() { "https" } else { "http" };
        let client = Client::new(
            format!("{scheme}://127.0.0.1:{}", port.get()),
            ca.as_deref(),
        );
        let process = Process::start(spec, timeline);
        Self {
            name: name.to_owned(),
            config,
            dir: dir.to_owned(),
            process,
            client,
            port,
            cluster_port,
        }
    }

    async fn try_wait_ready(&self) -> Result<(), StartError> {
        self.process
            .until_serving(
                &format!("{} answers HTTP", self.name),
                self.config.ready_timeout,
                || async {
                    self.client
                        .try_call("GET", "sys/health", None, None)
                        .await
                        .is_ok()
                },
            )
            .await
    }

    /// Waits until the node answers HTTP.
    ///
    /// # Panics
    /// When it exits first or does not answer in time (with its log).
    pub async fn wait_ready(&self) {
        if let Err(e) = self.try_wait_ready().await {
            panic!("testkit: {e}");
        }
    }

    /// The node's name (its timeline label).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The API client.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The node's process (signals, log).
    pub fn process(&self) -> &Process {
        &self.process
    }

    /// The listener port.
    pub fn port(&self) -> u16 {
        self.port.get()
    }

    /// The reserved cluster port (`cluster_addr` with HA on).
    pub fn cluster_port(&self) -> u16 {
        self.cluster_port.get()
    }

    /// `http(s)://127.0.0.1:<port>`, what `VAULT_ADDR` would be.
    pub fn addr(&self) -> &str {
        &self.client.base
    }

    /// The node's directory (config, data, log).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The rendered config file.
    pub fn config_path(&self) -> PathBuf {
        self.dir.join("server.hcl")
    }

    /// The configuration the node was started with.
    pub fn config(&self) -> &NodeConfig {
        &self.config
    }

    /// Rewrites the node's config file from `config` (same ports, same
    /// directory); the node runs with it from its next start on — a
    /// rolling restart with a changed setting. The process environment
    /// stays as first started.
    ///
    /// # Panics
    /// When the file cannot be written.
    pub fn reconfigure(&mut self, config: NodeConfig) {
        if config.uses_file() {
            let hcl = config.render(&self.dir, self.port.get(), self.cluster_port.get());
            let path = self.config_path();
            std::fs::write(&path, hcl)
                .unwrap_or_else(|e| panic!("testkit: write {}: {e}", path.display()));
        }
        self.config = config;
    }

    /// The whole log (every run).
    pub fn log(&self) -> String {
        self.process.log()
    }

    /// The current run's log.
    pub fn log_since_start(&self) -> String {
        self.process.log_since_start()
    }

    /// Waits until the current run's log contains `needle`; returns it.
    ///
    /// # Panics
    /// When it does not within `timeout`.
    pub async fn wait_log(&self, needle: &str, timeout: Duration) -> String {
        wait::until(
            &format!("{} logs {needle:?}", self.name),
            timeout,
            || async {
                let log = self.process.log_since_start();
                log.contains(needle).then_some(log)
            },
        )
        .await
    }

    /// SIGKILL: a crash, nothing flushed or sealed.
    pub fn kill9(&self) {
        self.process.kill9();
    }

    /// SIGTERM; the exit status (`None` if it had to be SIGKILLed after
    /// 40 s, or was not running).
    pub fn terminate(&self) -> Option<ExitStatus> {
        self.process.terminate(TERM_GRACE)
    }

    /// SIGSTOP: the node freezes with its sockets and lock session open.
    pub fn pause(&self) {
        self.process.pause();
    }

    /// SIGCONT after [`Node::pause`].
    pub fn resume(&self) {
        self.process.resume();
    }

    /// Whether the process has exited (and with what).
    pub fn exited(&self) -> Option<ExitStatus> {
        self.process.exit_status()
    }

    /// Starts the node again after a kill or exit (same ports, same config,
    /// same data) and waits until it answers HTTP.
    ///
    /// # Panics
    /// When it does not come back.
    pub async fn start_again(&self) {
        self.process.start_again();
        self.wait_ready().await;
    }

    /// SIGTERM, then start again (same ports and data); waits until it
    /// answers HTTP.
    ///
    /// # Panics
    /// When it does not come back.
    pub async fn restart(&self) {
        self.terminate();
        self.start_again().await;
    }
}

impl Deref for Node {
    type Target = Client;

    fn deref(&self) -> &Client {
        &self.client
    }
}
