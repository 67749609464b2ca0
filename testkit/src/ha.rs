//! Several Strongroom nodes on one Consul, electing an active node: the
//! setup every HA scenario and the failover bench share, and a
//! [`LeaderSampler`] that checks "never two active nodes at once" from
//! what the nodes say about themselves.
//!
//! ```no_run
//! # async fn example() {
//! use std::time::Duration;
//! use testkit::ha::{HaCluster, HaOptions};
//! use testkit::{NodeConfig, Scenario};
//!
//! let sc = Scenario::new("step-down hands over");
//! let base = NodeConfig::new().binary(testkit::tools::strongroom_bin());
//! let cluster = HaCluster::start(&sc, testkit::consul::shared_dev(), base, HaOptions::default()).await;
//! let old = cluster.active(Duration::from_secs(30)).await;
//! cluster.node(old).call("PUT", "sys/step-down", Some(cluster.root()), None).await;
//! let new = cluster.active_except(old, Duration::from_secs(30)).await;
//! assert_ne!(old, new);
//! # }
//! ```

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use serde_json::Value;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::consul::{PrefixGuard, unique_path};
use crate::node::{InitKeys, Node, NodeConfig, StorageStanza};
use crate::timeline::Scenario;
use crate::{ConsulDev, wait};

/// Timings and size of an [`HaCluster`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct HaOptions {
    /// How many nodes (default 3).
    pub nodes: usize,
    /// `session_ttl` (default 2 s; the shared dev agent allows 1 s).
    pub session_ttl: Duration,
    /// `lock_delay` (default 1 s).
    pub lock_delay: Duration,
    /// `lock_wait_time` (default 5 s).
    pub lock_wait_time: Duration,
    /// The base config has an auto seal (`seal "awskms"` stanzas): init
    /// with recovery keys and wait until every node unseals itself,
    /// instead of one Shamir key entered on every node (default false).
    pub auto_seal: bool,
    /// With [`auto_seal`](Self::auto_seal): recovery shares and threshold
    /// (default 1 and 1).
    pub recovery_keys: (u32, u32),
}

impl Default for HaOptions {
    fn default() -> Self {
        Self {
            nodes: 3,
            session_ttl: Duration::from_secs(2),
            lock_delay: Duration::from_secs(1),
            lock_wait_time: Duration::from_secs(5),
            auto_seal: false,
            recovery_keys: (1, 1),
        }
    }
}

/// Nodes `n1`, `n2`, … sharing a Consul key prefix (their own, removed at
/// the end) and a Consul service name (their own), initialised with one
/// Shamir key (or recovery keys, with [`HaOptions::auto_seal`]) and
/// unsealed.
#[derive(Debug)]
pub struct HaCluster {
    nodes: Vec<Node>,
    keys: InitKeys,
    path: String,
    service: String,
    consul_http: String,
    _guard: PrefixGuard,
}

impl HaCluster {
    /// Starts the nodes from `base` (binary, extra settings) with
    /// `storage "consul"` on `consul`, initialises through `n1` and unseals
    /// every node.
    ///
    /// # Panics
    /// When a node does not start, init or unseal.
    pub async fn start(
        sc: &Scenario,
        consul: &ConsulDev,
        base: NodeConfig,
        options: HaOptions,
    ) -> Self {
        let path = unique_path();
        let service = format!("sr-{}", uuid::Uuid::new_v4().simple());
        let guard = PrefixGuard::new(
            consul.http_address(),
            path.clone(),
            consul.management_token().map(str::to_owned),
        );
        let storage = StorageStanza::consul_dev(consul, &path)
            .session_ttl(options.session_ttl)
            .lock_delay(options.lock_delay)
            .lock_wait_time(options.lock_wait_time)
            .attr("service", service.as_str())
            .attr("check_timeout", "2s");
        let config = base.storage(storage).ha_enabled(true);
        let mut nodes = Vec::new();
        for i in 1..=options.nodes {
            nodes.push(config.clone().start(sc, &format!("n{i}")).await);
        }
        let keys = if options.auto_seal {
            sc.step("init through n1 with recovery keys; every node unseals itself");
            let (shares, threshold) = options.recovery_keys;
            let keys = nodes[0].init_recovery(shares, threshold).await;
            for node in &nodes {
                node.wait_sealed(false, Duration::from_secs(60)).await;
            }
            keys
        } else {
            sc.step("init through n1 and unseal every node");
            let keys = nodes[0].init(1, 1).await;
            for node in &nodes {
                node.unseal(&keys.keys_base64).await;
            }
            keys
        };
        Self {
            nodes,
            keys,
            path,
            service,
            consul_http: consul.http_address(),
            _guard: guard,
        }
    }

    /// The nodes, `n1` first.
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// Node `i` (0 is `n1`).
    pub fn node(&self, i: usize) -> &Node {
        &self.nodes[i]
    }

    /// Node `i`, to [`reconfigure`](Node::reconfigure) before a restart.
    pub fn node_mut(&mut self, i: usize) -> &mut Node {
        &mut self.nodes[i]
    }

    /// The root token.
    pub fn root(&self) -> &str {
        &self.keys.root_token
    }

    /// The unseal keys (none with [`HaOptions::auto_seal`]).
    pub fn keys(&self) -> &[String] {
        &self.keys.keys_base64
    }

    /// The recovery keys (with [`HaOptions::auto_seal`]).
    pub fn recovery_keys(&self) -> &[String] {
        &self.keys.recovery_keys_base64
    }

    /// The Consul key prefix.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The Consul service name the nodes register as.
    pub fn service(&self) -> &str {
        &self.service
    }

    /// `host:port` of the Consul agent.
    pub fn consul_http(&self) -> &str {
        &self.consul_http
    }

    /// Waits until exactly one running node answers `sys/health` with 200
    /// and every other running, unsealed node with 429; returns its index.
    ///
    /// # Panics
    /// When that does not hold within `timeout`.
    pub async fn active(&self, timeout: Duration) -> usize {
        self.wait_active(None, timeout).await
    }

    /// As [`HaCluster::active`], then waits until every other running node
    /// is a standby naming it in `sys/leader`: a standby learns the active
    /// node from its own reads of the HA lock, a moment after it unseals,
    /// and cannot forward before. Returns the active node's index.
    ///
    /// # Panics
    /// When that does not hold within `timeout` (for each wait).
    pub async fn followed(&self, timeout: Duration) -> usize {
        let active = self.active(timeout).await;
        let leader = &self.nodes[active].base;
        for (i, node) in self.nodes.iter().enumerate() {
            if i != active && node.process().is_running() {
                node.wait_standby_of(leader, timeout).await;
            }
        }
        active
    }

    /// As [`HaCluster::active`], and the active node is not `not`.
    ///
    /// # Panics
    /// As [`HaCluster::active`].
    pub async fn active_except(&self, not: usize, timeout: Duration) -> usize {
        self.wait_active(Some(not), timeout).await
    }

    async fn wait_active(&self, not: Option<usize>, timeout: Duration) -> usize {
        // A paused node does not answer: give each a second, and count
        // only what the nodes that answer say. (Each node's own client:
        // it trusts the node's test CA in TLS mode.)
        wait::until("exactly one active node", timeout, || async {
            let mut active = Vec::new();
            let mut seen = Vec::new();
            for (i, node) in self.nodes.iter().enumerate() {
                if !node.process().is_running() {
                    continue;
                }
                let url = format!("{}/v1/sys/health", node.base);
                let asked = node.client().http.get(&url).timeout(Duration::from_secs(1));
                let code = match asked.send().await {
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
                [only] if Some(*only) != not => Ok(*only),
                _ => Err(seen.join(", ")),
            }
        })
        .await
    }
}

/// One answer of `sys/leader`.
#[derive(Debug, Clone)]
struct Sample {
    node: usize,
    asked: SystemTime,
    /// `Some(since)` when the node said it is the active node.
    active_since: Option<SystemTime>,
}

#[derive(Debug, Default)]
struct Samples {
    all: Vec<Sample>,
    /// Nodes whose claims are not held against them from this time until
    /// they first answer that they are not active (a paused node cannot
    /// know it was deposed until it runs again; its writes are fenced).
    excused: BTreeMap<usize, SystemTime>,
}

/// Asks every node `sys/leader` in a loop and checks afterwards that no
/// two nodes were ever active at the same time.
///
/// A node that answers "active since T" at time A was active during
/// [T, A]. Two such intervals of different nodes that overlap prove two
/// active nodes at once; sampling order cannot produce a false alarm.
#[derive(Debug)]
pub struct LeaderSampler {
    samples: Arc<Mutex<Samples>>,
    stop: CancellationToken,
    task: Option<JoinHandle<()>>,
}

impl Drop for LeaderSampler {
    fn drop(&mut self) {
        // A test that panics must not leave it polling.
        self.stop.cancel();
    }
}

impl LeaderSampler {
    /// Starts sampling `cluster` every `every`.
    pub fn start(cluster: &HaCluster, every: Duration) -> Self {
        Self::start_on(&cluster.nodes, every)
    }

    /// Starts sampling `nodes` (any HA nodes, e.g. a
    /// [`crate::kms_cluster::KmsCluster`]'s) every `every`; node `i` is
    /// `n<i+1>` in messages.
    pub fn start_on(nodes: &[Node], every: Duration) -> Self {
        let clients: Vec<(usize, reqwest::Client, String)> = nodes
            .iter()
            .enumerate()
            .map(|(i, n)| {
                let http = reqwest::Client::builder()
                    .timeout(Duration::from_secs(1))
                    .build()
                    .unwrap_or_else(|e| panic!("testkit: HTTP client: {e}"));
                (i, http, format!("{}/v1/sys/leader", n.base))
            })
            .collect();
        let samples = Arc::new(Mutex::new(Samples::default()));
        let stop = CancellationToken::new();
        let task = tokio::spawn(sample_loop(clients, samples.clone(), stop.clone(), every));
        Self {
            samples,
            stop,
            task: Some(task),
        }
    }

    /// Excuses node `i` from now until it first says it is not active
    /// (call it before pausing the node).
    pub fn excuse_until_standby(&self, i: usize) {
        self.lock().excused.insert(i, SystemTime::now());
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Samples> {
        self.samples.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Stops sampling and checks the samples.
    ///
    /// # Panics
    /// When two nodes were active at the same time, naming both periods;
    /// or when no node was ever seen active.
    pub async fn stop_and_check(mut self) -> usize {
        self.stop.cancel();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
        let samples = self.samples.lock().unwrap_or_else(PoisonError::into_inner);
        // The latest "still active" answer of each (node, period).
        let mut periods: BTreeMap<(usize, SystemTime), SystemTime> = BTreeMap::new();
        let mut excused_done: BTreeMap<usize, bool> = BTreeMap::new();
        for s in &samples.all {
            if let Some(from) = samples.excused.get(&s.node)
                && s.asked >= *from
                && !excused_done.get(&s.node).copied().unwrap_or(false)
            {
                if s.active_since.is_none() {
                    excused_done.insert(s.node, true);
                }
                continue;
            }
            if let Some(since) = s.active_since {
                let last = periods.entry((s.node, since)).or_insert(s.asked);
                *last = (*last).max(s.asked);
            }
        }
        let list: Vec<_> = periods.iter().collect();
        for (i, ((a, since_a), seen_a)) in list.iter().enumerate() {
            for ((b, since_b), seen_b) in &list[i + 1..] {
                if a != b && (*since_a).max(*since_b) < (**seen_a).min(**seen_b) {
                    panic!(
                        "two active nodes at once: n{} active since {:?} and still at {:?}, n{} active since {:?} and still at {:?}",
                        a + 1,
                        since_a,
                        seen_a,
                        b + 1,
                        since_b,
                        seen_b
                    );
                }
            }
        }
        assert!(!periods.is_empty(), "no node was ever seen active");
        samples.all.len()
    }
}

async fn sample_loop(
    clients: Vec<(usize, reqwest::Client, String)>,
    samples: Arc<Mutex<Samples>>,
    stop: CancellationToken,
    every: Duration,
) {
    while !stop.is_cancelled() {
        let round = clients.iter().map(|(i, http, url)| async move {
            let asked = SystemTime::now();
            let answer = http.get(url).send().await.ok()?;
            let body: Value = answer.json().await.ok()?;
            let active_since = if body["is_self"] == Value::Bool(true) {
                body["active_time"]
                    .as_str()
                    .and_then(|t| OffsetDateTime::parse(t, &Rfc3339).ok())
                    .map(SystemTime::from)
            } else {
                None
            };
            Some(Sample {
                node: *i,
                asked,
                active_since,
            })
        });
        let answers = futures::future::join_all(round).await;
        samples
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .all
            .extend(answers.into_iter().flatten());
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(every) => {}
        }
    }
}
