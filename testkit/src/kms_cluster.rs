//! Strongroom's production shape on loopback, for fault-injection suites:
//! a Consul cluster (3 servers), `moto_server` enforcing IAM with a user
//! whose attached policy allows exactly what the seal needs
//! ([`SEAL_ACTIONS`]), and HA nodes with `storage "consul"` (node *i*
//! talks to its own Consul client agent, as Vault's deployment guide
//! recommends, or straight to server *i*) and
//! `seal "awskms"` signing as that user. Short session TTL, lock-delay and
//! auto-unseal retry come from [`KmsClusterOptions`], set through the
//! config like an operator would.
//!
//! The faults an operator rehearses are one call each: revoke or restore
//! the seal's KMS permissions (detach/attach the policy, checked to be in
//! effect), make the KMS unreachable (moto frozen behind its relay: calls
//! connect and hang), kill, stop, freeze and restart nodes or Consul
//! servers, change a node's KMS key for its next start.
//!
//! ```no_run
//! # async fn example() {
//! use std::time::Duration;
//! use testkit::kms_cluster::{KmsCluster, KmsClusterOptions};
//! use testkit::Timeline;
//!
//! let timeline = Timeline::new();
//! let mut cluster = KmsCluster::start(&timeline, testkit::tools::strongroom_bin(), KmsClusterOptions::default()).await;
//! cluster.init_with_cli(5, 3).await;
//! let active = cluster.active(Duration::from_secs(60)).await;
//! cluster.revoke_kms().await;
//! cluster.node(active).kill9();
//! # }
//! ```

use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;

use crate::consul::{ConsulCluster, ConsulOptions};
use crate::moto::{IamUser, MotoServer, TestKey};
use crate::node::{InitKeys, Node, NodeConfig, SealStanza, StorageStanza, duration};
use crate::timeline::Timeline;
use crate::wait;

/// The KMS actions the awskms seal needs, and all its IAM user may do.
pub const SEAL_ACTIONS: [&str; 3] = ["kms:Encrypt", "kms:Decrypt", "kms:DescribeKey"];

/// Sizes and timings of a [`KmsCluster`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct KmsClusterOptions {
    /// Strongroom nodes (default 3).
    pub nodes: usize,
    /// Consul servers (default 3).
    pub consul_servers: usize,
    /// Whether each node talks to its own Consul client agent (default) or
    /// straight to a server.
    pub consul_clients: bool,
    /// `session_ttl` of the HA lock session (default 2 s).
    pub session_ttl: Duration,
    /// `lock_delay` after an invalidated session (default 1 s).
    pub lock_delay: Duration,
    /// `lock_wait_time` (default 2 s).
    pub lock_wait_time: Duration,
    /// `auto_unseal_max_backoff`: the longest wait between auto-unseal
    /// attempts while the seal fails (default 2 s).
    pub unseal_retry: Duration,
    /// The Consul storage's `request_timeout` (default 3 s) and
    /// `max_retries` (default 1): how long a storage call may take when
    /// Consul cannot answer.
    pub consul_request_timeout: Duration,
    /// See [`KmsClusterOptions::consul_request_timeout`].
    pub consul_max_retries: u32,
    /// `seal_health_check_interval`: how often the active node checks the
    /// KMS while it answers (default 2 s; a tenth of it while it fails).
    pub seal_health_check: Duration,
}

impl Default for KmsClusterOptions {
    fn default() -> Self {
        Self {
            nodes: 3,
            consul_servers: 3,
            consul_clients: true,
            session_ttl: Duration::from_secs(2),
            lock_delay: Duration::from_secs(1),
            lock_wait_time: Duration::from_secs(2),
            unseal_retry: Duration::from_secs(2),
            consul_request_timeout: Duration::from_secs(3),
            consul_max_retries: 1,
            seal_health_check: Duration::from_secs(2),
        }
    }
}

/// The running cluster (see the [module docs](self)). Everything is killed
/// when it drops.
#[derive(Debug)]
pub struct KmsCluster {
    // Field order: nodes go before what they depend on.
    nodes: Vec<Node>,
    moto: MotoServer,
    consul: ConsulCluster,
    key: TestKey,
    user: IamUser,
    keys: Option<InitKeys>,
    binary: PathBuf,
    options: KmsClusterOptions,
    timeline: Timeline,
    dir: tempfile::TempDir,
}

impl KmsCluster {
    /// Starts Consul and moto (at once), creates the KMS key and the seal's
    /// IAM user, and starts the nodes (uninitialized) from `binary`.
    ///
    /// # Panics
    /// When a component does not come up.
    pub async fn start(timeline: &Timeline, binary: PathBuf, options: KmsClusterOptions) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("strongroom-kms-cluster-")
            .tempdir()
            .unwrap_or_else(|e| panic!("testkit: temp dir: {e}"));
        timeline.step(format!(
            "start {} Consul servers and moto_server (IAM enforced)",
            options.consul_servers
        ));
        let servers = options.consul_servers;
        let clients = if options.consul_clients {
            options.nodes
        } else {
            0
        };
        let consul_timeline = timeline.clone();
        let consul = tokio::task::spawn_blocking(move || {
            ConsulCluster::start_with(
                servers,
                ConsulOptions::default()
                    .clients(clients)
                    .timeline(&consul_timeline),
            )
        });
        let moto = MotoServer::start_on(timeline, true).await;
        let consul = consul
            .await
            .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
        let key = moto.create_key().await;
        let user = moto
            .create_user_allowing("strongroom-seal", &SEAL_ACTIONS)
            .await;
        timeline.step(format!(
            "KMS key {} for IAM user {} allowed only {}",
            key.key_id,
            user.user_name,
            SEAL_ACTIONS.join(", ")
        ));
        let mut cluster = Self {
            nodes: Vec::new(),
            moto,
            consul,
            key,
            user,
            keys: None,
            binary,
            options,
            timeline: timeline.clone(),
            dir,
        };
        for i in 0..cluster.options.nodes {
            let name = format!("n{}", i + 1);
            let config = cluster.node_config(i, &cluster.key.key_id.clone());
            let node =
                Node::start_in(&cluster.dir.path().join(&name), timeline, &name, config).await;
            cluster.nodes.push(node);
        }
        cluster
    }

    /// Node `i`'s configuration with KMS key `key_id`.
    pub fn node_config(&self, i: usize, key_id: &str) -> NodeConfig {
        let o = &self.options;
        let consul = if self.consul.clients() > 0 {
            self.consul.client_http_address(i % self.consul.clients())
        } else {
            self.consul.http_address(i % self.consul.len())
        };
        NodeConfig::new()
            .binary(&self.binary)
            .storage(
                StorageStanza::consul(&consul, Some("vault/"))
                    .session_ttl(o.session_ttl)
                    .lock_delay(o.lock_delay)
                    .lock_wait_time(o.lock_wait_time)
                    .attr("request_timeout", duration(o.consul_request_timeout))
                    .attr("max_retries", i64::from(o.consul_max_retries)),
            )
            .seal(SealStanza::awskms_as(&self.moto, key_id, &self.user))
            .ha_enabled(true)
            .attr("cluster_name", "strongroom-kms-cluster")
            .attr("auto_unseal_max_backoff", duration(o.unseal_retry))
            .attr("seal_health_check_interval", duration(o.seal_health_check))
    }

    /// Initializes through `n1` with the CLI as an operator would
    /// (`strongroom operator init -recovery-shares=N -recovery-threshold=T
    /// -format=json`); returns the keys (no unseal keys: the seal holds the
    /// root key).
    ///
    /// # Panics
    /// When the command fails or prints something else.
    pub async fn init_with_cli(&mut self, shares: u32, threshold: u32) -> InitKeys {
        self.timeline.step(format!(
            "strongroom operator init -recovery-shares={shares} -recovery-threshold={threshold} (through n1)"
        ));
        let binary = self.binary.clone();
        let addr = self.nodes[0].addr().to_owned();
        let out = tokio::task::spawn_blocking(move || {
            std::process::Command::new(&binary)
                .args([
                    "operator",
                    "init",
                    &format!("-recovery-shares={shares}"),
                    &format!("-recovery-threshold={threshold}"),
                    "-format=json",
                    &format!("-address={addr}"),
                ])
                .env_remove("VAULT_TOKEN")
                .env_remove("STRONGROOM_TOKEN")
                .output()
        })
        .await
        .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
        .unwrap_or_else(|e| panic!("testkit: run strongroom operator init: {e}"));
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "operator init failed ({}):\n{stdout}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        let body: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| {
            panic!("operator init -format=json printed no JSON ({e}): {stdout}")
        });
        let strings = |key: &str| -> Vec<String> {
            body[key]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|v| v.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default()
        };
        let keys = InitKeys {
            keys_base64: strings("unseal_keys_b64"),
            recovery_keys_base64: strings("recovery_keys_b64"),
            root_token: body["root_token"].as_str().unwrap_or_default().to_owned(),
            body: body.clone(),
        };
        self.keys = Some(keys.clone());
        keys
    }

    /// Mounts KV v2 at `path` (through whichever node is active).
    ///
    /// # Panics
    /// When no node is active within a minute or the mount is refused.
    pub async fn mount_kv2(&self, path: &str) {
        let active = self.active(Duration::from_secs(60)).await;
        self.nodes[active].mount_kv(self.root(), path, "2").await;
    }

    /// The root token.
    ///
    /// # Panics
    /// Before init.
    pub fn root(&self) -> &str {
        &self
            .keys
            .as_ref()
            .expect("the cluster is initialized")
            .root_token
    }

    /// The nodes, `n1` first.
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// Node `i` (0 is `n1`).
    pub fn node(&self, i: usize) -> &Node {
        &self.nodes[i]
    }

    /// The Consul servers.
    pub fn consul(&self) -> &ConsulCluster {
        &self.consul
    }

    /// The KMS.
    pub fn moto(&self) -> &MotoServer {
        &self.moto
    }

    /// The KMS key the nodes were started with.
    pub fn key(&self) -> &TestKey {
        &self.key
    }

    /// The seal's IAM user.
    pub fn user(&self) -> &IamUser {
        &self.user
    }

    /// The options the cluster runs with.
    pub fn options(&self) -> &KmsClusterOptions {
        &self.options
    }

    /// The timeline everything records on.
    pub fn timeline(&self) -> &Timeline {
        &self.timeline
    }

    /// Starts node `i` with KMS key `key_id` from its next start on.
    pub fn set_node_key(&mut self, i: usize, key_id: &str) {
        let config = self.node_config(i, key_id);
        self.nodes[i].reconfigure(config);
    }

    /// Records `key` as the cluster's KMS key (after every node was moved
    /// to it with [`KmsCluster::set_node_key`]).
    pub fn use_key(&mut self, key: TestKey) {
        self.key = key;
    }

    /// Detaches the seal user's policy and waits until KMS denies it
    /// (what revoked IAM permissions look like to the seal).
    ///
    /// # Panics
    /// When moto refuses, or still allows the user after 30 s.
    pub async fn revoke_kms(&self) {
        self.timeline
            .step("KMS permissions revoked (policy detached from the seal's IAM user)");
        self.moto.revoke_kms_access(&self.user).await;
        self.wait_kms_allowed(false).await;
    }

    /// Re-attaches the policy and waits until KMS allows the user again.
    ///
    /// # Panics
    /// When moto refuses, or still denies after 30 s.
    pub async fn restore_kms(&self) {
        self.timeline
            .step("KMS permissions restored (policy attached again)");
        self.moto.grant_kms_access(&self.user).await;
        self.wait_kms_allowed(true).await;
    }

    async fn wait_kms_allowed(&self, allowed: bool) {
        let client = self.moto.kms_client_for(&self.user);
        wait::until(
            &format!("KMS DescribeKey as the seal's user is allowed = {allowed}"),
            Duration::from_secs(30),
            || async {
                let answer = client.describe_key().key_id(&self.key.key_id).send().await;
                answer.is_ok() == allowed
            },
        )
        .await;
    }

    /// Freezes the KMS process behind its relay: the endpoint accepts
    /// connections and never answers.
    pub fn make_kms_unreachable(&self) {
        self.timeline
            .step("KMS unreachable (moto frozen with SIGSTOP, its relay still accepting)");
        self.moto.pause();
    }

    /// Undoes [`KmsCluster::make_kms_unreachable`].
    pub fn make_kms_reachable(&self) {
        self.timeline.step("KMS reachable again (SIGCONT)");
        self.moto.resume();
    }

    /// Waits until exactly one running node says it is active (200) and
    /// every other running node that answers says standby or sealed;
    /// returns its index.
    ///
    /// # Panics
    /// When that does not hold within `timeout`.
    pub async fn active(&self, timeout: Duration) -> usize {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(1))
            .build()
            .unwrap_or_else(|e| panic!("testkit: HTTP client: {e}"));
        wait::until("exactly one active node", timeout, || async {
            let mut active = Vec::new();
            let mut seen = Vec::new();
            for (i, node) in self.nodes.iter().enumerate() {
                if !node.process().is_running() {
                    seen.push(format!("{}: not running", node.name()));
                    continue;
                }
                let code = match http
                    .get(format!("{}/v1/sys/health", node.addr()))
                    .send()
                    .await
                {
                    Ok(answer) => answer.status().as_u16(),
                    Err(_) => {
                        seen.push(format!("{}: no answer", node.name()));
                        continue;
                    }
                };
                seen.push(format!("{}: {code}", node.name()));
                if code == 200 {
                    active.push(i);
                }
            }
            match active.as_slice() {
                [only] => Ok(*only),
                _ => Err(seen.join(", ")),
            }
        })
        .await
    }

    /// Waits until node `i` is an unsealed standby (health 429).
    ///
    /// # Panics
    /// When it is not within `timeout`.
    pub async fn wait_standby(&self, i: usize, timeout: Duration) {
        self.nodes[i].wait_standby(timeout).await;
    }

    /// Stops every Consul agent, servers and clients (SIGTERM).
    pub fn stop_consul(&self) {
        self.timeline.step("stop every Consul agent");
        for i in 0..self.consul.len() {
            self.consul.stop(i);
        }
        for i in 0..self.consul.clients() {
            self.consul
                .client_process(i)
                .terminate(Duration::from_secs(20));
        }
    }

    /// Starts every stopped Consul agent and waits for a leader that every
    /// client reaches.
    ///
    /// # Panics
    /// When they elect none within 60 s.
    pub async fn start_consul(&self) {
        self.timeline.step("start every Consul agent");
        for i in 0..self.consul.len() {
            if !self.consul.is_running(i) {
                self.consul.start_node(i);
            }
        }
        for i in 0..self.consul.clients() {
            if !self.consul.client_process(i).is_running() {
                self.consul.client_process(i).start_again();
            }
        }
        self.wait_consul_leader().await;
        let consul = &self.consul;
        wait::until(
            "every Consul client agent reaches the leader",
            Duration::from_secs(60),
            || async {
                (0..consul.clients())
                    .all(|i| crate::consul::leader_of(&consul.client_http_address(i)).is_some())
            },
        )
        .await;
    }

    /// Waits until the running Consul servers agree on a leader.
    ///
    /// # Panics
    /// When they do not within 60 s.
    pub async fn wait_consul_leader(&self) -> usize {
        let consul = &self.consul;
        tokio::task::block_in_place(|| consul.wait_for_leader(Duration::from_secs(60)))
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// The last lines of every process's log: nodes, Consul servers, moto.
    pub fn log_tails(&self) -> String {
        let mut out = String::new();
        for node in &self.nodes {
            out.push_str(&node.process().failure_report());
            out.push('\n');
        }
        out.push_str(&self.consul.logs());
        out.push('\n');
        out.push_str(&self.moto.process().failure_report());
        out
    }
}
