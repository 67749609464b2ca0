//! Real Consul for tests (feature `testing`).
//!
//! * [`ConsulDev`] runs `consul agent -dev` on free loopback ports, plain,
//!   with ACLs ([`DevOptions::acl`]) or with HTTPS signed by a fresh rcgen
//!   test CA ([`DevOptions::tls`]); it can be stopped and restarted on the
//!   same ports.
//! * [`shared_dev`] is one plain dev agent per test process; [`isolated`]
//!   hands each test a [`ConsulStorage`] under a unique key prefix plus a
//!   [`PrefixGuard`] that deletes the prefix, so many tests share one agent.
//! * [`ConsulCluster`] runs a 3-server (or n-server) cluster with per-node
//!   crash, stop and start, for HA and chaos tests.
//!
//! The binary comes from `STRONGROOM_CONSUL_BIN`, else the cache that
//! `scripts/setup-tools.sh` fills (`~/.cache/strongroom/consul-<v>/consul`),
//! else `consul` on `PATH`. Nothing is skipped when it is missing: the
//! harness panics and says to run `scripts/setup-tools.sh`.
//!
//! Every agent runs under a small `sh` watchdog that holds the agent's
//! lifetime to a pipe from this process: when the guard drops, or the test
//! process dies however it dies, the pipe closes and the watchdog kills the
//! agent. No agent outlives its tests.
#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

mod http;
mod tls;

use std::collections::HashSet;
use std::fs::File;
use std::io::Write as _;
use std::net::{TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Duration, Instant};

pub use http::{RawResponse, raw_request};
pub use tls::TestPki;

use crate::{ConsulConfig, ConsulStorage, ConsulToken, Scheme};

/// Consul versions the setup script may have built, newest preferred first.
const CACHED_VERSIONS: &[&str] = &["1.14.11", "1.16.2", "1.15.6"];

/// How long an agent may take to elect itself leader.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// Finds the Consul binary (see the module docs).
///
/// # Panics
/// When no binary is found, with the command that installs one.
pub fn consul_binary() -> PathBuf {
    if let Some(bin) = std::env::var_os("STRONGROOM_CONSUL_BIN") {
        let bin = PathBuf::from(bin);
        assert!(
            bin.is_file(),
            "STRONGROOM_CONSUL_BIN={} does not exist; run scripts/setup-tools.sh",
            bin.display()
        );
        return bin;
    }
    let cache = std::env::var_os("STRONGROOM_CACHE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/strongroom")));
    if let Some(cache) = cache {
        for v in CACHED_VERSIONS {
            let bin = cache.join(format!("consul-{v}")).join("consul");
            if bin.is_file() {
                return bin;
            }
        }
    }
    if let Some(paths) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&paths) {
            let bin = dir.join("consul");
            if bin.is_file() {
                return bin;
            }
        }
    }
    panic!(
        "no Consul binary found (STRONGROOM_CONSUL_BIN unset, nothing in ~/.cache/strongroom/consul-*/, no consul on PATH); run scripts/setup-tools.sh"
    );
}

fn issued_ports() -> MutexGuard<'static, HashSet<u16>> {
    static PORTS: OnceLock<Mutex<HashSet<u16>>> = OnceLock::new();
    PORTS
        .get_or_init(|| Mutex::new(HashSet::new()))
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
}

/// A loopback port free for both TCP and UDP right now (Serf uses both),
/// never handed out twice by this process.
pub fn free_port() -> u16 {
    for _ in 0..200 {
        let Ok(tcp) = TcpListener::bind("127.0.0.1:0") else {
            continue;
        };
        let Ok(addr) = tcp.local_addr() else {
            continue;
        };
        let port = addr.port();
        if UdpSocket::bind(("127.0.0.1", port)).is_err() {
            continue;
        }
        if issued_ports().insert(port) {
            return port;
        }
    }
    panic!("no free loopback port found after 200 tries");
}

/// The ports one agent listens on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AgentPorts {
    /// Plain HTTP API.
    pub http: u16,
    /// HTTPS API (`None` without TLS).
    pub https: Option<u16>,
    /// Serf LAN gossip (TCP and UDP).
    pub serf_lan: u16,
    /// Serf WAN gossip (TCP and UDP).
    pub serf_wan: u16,
    /// Server RPC (raft).
    pub server: u16,
}

impl AgentPorts {
    fn allocate(https: bool) -> Self {
        Self {
            http: free_port(),
            https: https.then(free_port),
            serf_lan: free_port(),
            serf_wan: free_port(),
            server: free_port(),
        }
    }

    fn flags(&self) -> Vec<String> {
        let mut flags = vec![
            format!("-http-port={}", self.http),
            format!("-serf-lan-port={}", self.serf_lan),
            format!("-serf-wan-port={}", self.serf_wan),
            format!("-server-port={}", self.server),
            "-dns-port=-1".to_owned(),
            "-grpc-port=-1".to_owned(),
            // Forced on for every server otherwise (8503), so agents on one
            // host would collide.
            "-grpc-tls-port=-1".to_owned(),
        ];
        if let Some(https) = self.https {
            flags.push(format!("-https-port={https}"));
        }
        flags
    }
}

/// One running agent process under its watchdog.
#[derive(Debug)]
struct Agent {
    watchdog: Child,
    control: Option<ChildStdin>,
}

/// The watchdog: runs the agent in the background, then waits for a line
/// (or EOF, when this process is gone) on stdin: `crash` kills the agent
/// with SIGKILL, anything else with SIGTERM and, after 10 s, SIGKILL.
const WATCHDOG: &str = r#""$@" &
child=$!
trap 'kill -9 $child 2>/dev/null' EXIT
read -r cmd
if [ "$cmd" != crash ]; then
  kill -TERM $child 2>/dev/null
  i=0
  while kill -0 $child 2>/dev/null && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done
fi
kill -9 $child 2>/dev/null
wait $child
trap - EXIT
"#;

impl Agent {
    fn spawn(args: &[String], log: &Path) -> Self {
        let out = File::create(log).unwrap_or_else(|e| panic!("create {}: {e}", log.display()));
        let err = out
            .try_clone()
            .unwrap_or_else(|e| panic!("clone log handle: {e}"));
        let mut watchdog = Command::new("sh")
            .arg("-c")
            .arg(WATCHDOG)
            .arg("consul-watchdog")
            .arg(consul_binary())
            .args(args)
            .stdin(Stdio::piped())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start sh to run consul: {e}"));
        let control = watchdog.stdin.take();
        Self { watchdog, control }
    }

    fn exited(&mut self) -> bool {
        matches!(self.watchdog.try_wait(), Ok(Some(_)))
    }

    /// Ends the agent (`crash`: SIGKILL, else SIGTERM) and waits for it.
    fn end(mut self, crash: bool) {
        if let Some(mut control) = self.control.take() {
            let _ = control.write_all(if crash { b"crash\n" } else { b"term\n" });
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if self.exited() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // The watchdog itself is stuck (it SIGKILLs the agent after 10 s):
        // end it so the test does not hang.
        let _ = self.watchdog.kill();
        let _ = self.watchdog.wait();
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        // Closing stdin makes the watchdog SIGTERM the agent.
        self.control.take();
    }
}

fn tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

/// Options of a [`ConsulDev`] agent.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct DevOptions {
    /// ACLs on with `default_policy = "deny"` and a random
    /// `initial_management` token ([`ConsulDev::management_token`]).
    pub acl: bool,
    /// An HTTPS listener with a certificate from a fresh test CA
    /// ([`ConsulDev::pki`]); [`ConsulDev::config`] then points at it.
    pub tls: bool,
    /// With `tls`: the HTTPS listener demands a client certificate signed by
    /// the test CA.
    pub tls_verify_incoming: bool,
    /// Extra `-hcl` fragments.
    pub extra_hcl: Vec<String>,
}

impl DevOptions {
    /// ACL mode.
    pub fn acl() -> Self {
        Self {
            acl: true,
            ..Self::default()
        }
    }

    /// HTTPS mode (`verify_incoming`: demand client certificates).
    pub fn tls(verify_incoming: bool) -> Self {
        Self {
            tls: true,
            tls_verify_incoming: verify_incoming,
            ..Self::default()
        }
    }
}

/// A `consul agent -dev` on free loopback ports; killed when dropped.
///
/// Dev agents keep their data in memory: [`ConsulDev::restart`] brings the
/// agent back on the same ports with an empty store.
#[derive(Debug)]
pub struct ConsulDev {
    ports: AgentPorts,
    args: Vec<String>,
    token: Option<String>,
    pki: Option<TestPki>,
    dir: tempfile::TempDir,
    agent: Mutex<Option<Agent>>,
}

impl ConsulDev {
    /// Starts a plain dev agent and waits until it has a leader.
    ///
    /// # Panics
    /// When Consul is missing or does not come up (the panic shows the
    /// agent's log).
    pub fn start() -> Self {
        Self::start_with(DevOptions::default())
    }

    /// Starts a dev agent with `options` and waits until it serves.
    ///
    /// # Panics
    /// As [`ConsulDev::start`].
    pub fn start_with(options: DevOptions) -> Self {
        let mut last = String::new();
        // A port taken between probing and binding makes the agent exit;
        // new ports fix that.
        for _ in 0..3 {
            match Self::try_start(&options) {
                Ok(dev) => return dev,
                Err(e) => last = e,
            }
        }
        panic!("consul agent -dev did not start:\n{last}");
    }

    fn try_start(options: &DevOptions) -> Result<Self, String> {
        let dir = tempfile::tempdir().map_err(|e| format!("tempdir: {e}"))?;
        let ports = AgentPorts::allocate(options.tls);
        let mut args = vec![
            "agent".to_owned(),
            "-dev".to_owned(),
            "-log-level=warn".to_owned(),
        ];
        args.extend(ports.flags());
        let mut hcl = vec![
            r#"session_ttl_min = "1s""#.to_owned(),
            "disable_update_check = true".to_owned(),
        ];
        let token = options.acl.then(|| uuid::Uuid::new_v4().to_string());
        if let Some(token) = &token {
            hcl.push(format!(
                r#"acl {{ enabled = true
                   default_policy = "deny"
                   tokens {{ initial_management = "{token}" }} }}"#
            ));
        }
        let pki = if options.tls {
            let pki = TestPki::generate(dir.path());
            hcl.push(format!(
                r#"tls {{
                     defaults {{ ca_file = "{}" cert_file = "{}" key_file = "{}" verify_incoming = false }}
                     https {{ verify_incoming = {} }}
                   }}"#,
                pki.ca_file.display(),
                pki.server_cert_file.display(),
                pki.server_key_file.display(),
                options.tls_verify_incoming,
            ));
            Some(pki)
        } else {
            None
        };
        hcl.extend(options.extra_hcl.iter().cloned());
        for fragment in hcl {
            args.push("-hcl".to_owned());
            args.push(fragment);
        }
        let dev = Self {
            ports,
            args,
            token,
            pki,
            dir,
            agent: Mutex::new(None),
        };
        dev.launch()?;
        Ok(dev)
    }

    fn slot(&self) -> MutexGuard<'_, Option<Agent>> {
        self.agent.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("consul.log")
    }

    fn launch(&self) -> Result<(), String> {
        let log = self.log_path();
        let agent = Agent::spawn(&self.args, &log);
        *self.slot() = Some(agent);
        let http = self.http_address();
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if self.slot().as_mut().is_some_and(Agent::exited) {
                return Err(format!("consul exited during start; log:\n{}", tail(&log)));
            }
            if leader_of(&http).is_some() && self.acl_ready() {
                return Ok(());
            }
            if Instant::now() > deadline {
                if let Some(agent) = self.slot().take() {
                    agent.end(true);
                }
                return Err(format!(
                    "no leader after {START_TIMEOUT:?}; log:\n{}",
                    tail(&log)
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// With ACLs, the management token works only once the leader has
    /// bootstrapped the ACL system, a moment after it is elected.
    fn acl_ready(&self) -> bool {
        let Some(token) = &self.token else {
            return true;
        };
        matches!(
            raw_request(&self.http_address(), "GET", "/v1/kv/?keys", Some(token), b""),
            Ok(r) if r.status == 200 || r.status == 404
        )
    }

    /// Stops the agent (SIGTERM) and waits for it to exit. The ports stay
    /// reserved for [`ConsulDev::restart`]; requests now get connection
    /// refused.
    pub fn stop(&self) {
        if let Some(agent) = self.slot().take() {
            agent.end(false);
        }
    }

    /// Kills the agent with SIGKILL, as a crash would.
    pub fn crash(&self) {
        if let Some(agent) = self.slot().take() {
            agent.end(true);
        }
    }

    /// Starts the agent again on the same ports (stopping it first if it
    /// runs) and waits until it serves. A dev agent comes back empty.
    ///
    /// # Panics
    /// When the agent does not come back.
    pub fn restart(&self) {
        self.stop();
        let mut last = String::new();
        // The old process's sockets may linger for a moment.
        for _ in 0..5 {
            match self.launch() {
                Ok(()) => return,
                Err(e) => {
                    last = e;
                    std::thread::sleep(Duration::from_millis(500));
                }
            }
        }
        panic!("consul agent -dev did not restart:\n{last}");
    }

    /// Whether the agent process is running.
    pub fn is_running(&self) -> bool {
        self.slot().as_mut().is_some_and(|a| !a.exited())
    }

    /// The ports the agent uses.
    pub fn ports(&self) -> AgentPorts {
        self.ports
    }

    /// `127.0.0.1:<http port>` (plain HTTP, also in TLS mode).
    pub fn http_address(&self) -> String {
        format!("127.0.0.1:{}", self.ports.http)
    }

    /// The `initial_management` token in ACL mode.
    pub fn management_token(&self) -> Option<&str> {
        self.token.as_deref()
    }

    /// The test PKI in TLS mode.
    pub fn pki(&self) -> Option<&TestPki> {
        self.pki.as_ref()
    }

    /// A configuration reaching this agent: HTTPS with the test CA in TLS
    /// mode, the management token in ACL mode, path `vault/`, and few quick
    /// retries so fault tests stay fast.
    pub fn config(&self) -> ConsulConfig {
        let mut config = ConsulConfig::default();
        match (&self.pki, self.ports.https) {
            (Some(pki), Some(https)) => {
                config.address = format!("127.0.0.1:{https}");
                config.scheme = Scheme::Https;
                config.tls_ca_file = Some(pki.ca_file.clone());
            }
            _ => config.address = self.http_address(),
        }
        config.token = self.token.as_deref().map(ConsulToken::new);
        config.request_timeout = Duration::from_secs(10);
        config.max_retries = 2;
        config
    }

    /// The agent's log so far (for failure messages).
    pub fn log_tail(&self) -> String {
        tail(&self.log_path())
    }
}

impl Drop for ConsulDev {
    fn drop(&mut self) {
        if let Some(agent) = self.slot().take() {
            agent.end(true);
        }
    }
}

/// The current leader as the agent at `http` reports it, if any.
pub fn leader_of(http: &str) -> Option<String> {
    let r = raw_request(http, "GET", "/v1/status/leader", None, b"").ok()?;
    if r.status != 200 {
        return None;
    }
    let leader: String = serde_json::from_slice(&r.body).ok()?;
    (!leader.is_empty()).then_some(leader)
}

/// One plain dev agent for the whole test process, started on first use.
/// It is never dropped (statics are not); its watchdog ends it when the
/// test process exits. Do not stop or restart it: use [`isolated`] prefixes.
pub fn shared_dev() -> &'static ConsulDev {
    static SHARED: OnceLock<ConsulDev> = OnceLock::new();
    SHARED.get_or_init(ConsulDev::start)
}

/// A unique key prefix `strongroom-test/<uuid>/` for one test.
pub fn unique_path() -> String {
    format!("strongroom-test/{}/", uuid::Uuid::new_v4())
}

/// Deletes a key prefix (recursively) from a Consul agent when dropped.
#[derive(Debug)]
pub struct PrefixGuard {
    http: String,
    prefix: String,
    token: Option<String>,
}

impl PrefixGuard {
    /// Guards `prefix` (ending in `/`) on the agent at `http` (`host:port`).
    pub fn new(http: String, prefix: String, token: Option<String>) -> Self {
        Self {
            http,
            prefix,
            token,
        }
    }

    /// The guarded prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }
}

impl Drop for PrefixGuard {
    fn drop(&mut self) {
        // Best effort: an agent stopped by the test has nothing to clean.
        let path = format!("/v1/kv/{}?recurse", http::encode_key(&self.prefix));
        let _ = raw_request(&self.http, "DELETE", &path, self.token.as_deref(), b"");
    }
}

/// A [`ConsulStorage`] on `dev` under a fresh unique prefix, with `tweak`
/// applied to its configuration, and the guard that removes the prefix.
///
/// # Panics
/// When the storage cannot be built from the tweaked configuration.
pub fn isolated(
    dev: &ConsulDev,
    tweak: impl FnOnce(&mut ConsulConfig),
) -> (ConsulStorage, PrefixGuard) {
    let mut config = dev.config();
    config.path = unique_path();
    tweak(&mut config);
    let guard = PrefixGuard::new(dev.http_address(), config.path.clone(), dev.token.clone());
    let storage = ConsulStorage::new(config).unwrap_or_else(|e| panic!("ConsulStorage::new: {e}"));
    (storage, guard)
}

/// Options of a [`ConsulCluster`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ClusterOptions {
    /// Consul's `performance.rpc_hold_timeout`: how long a server holds a
    /// request while there is no leader before answering `No cluster
    /// leader` (Consul's default is 7 s; 1 s keeps fault tests short).
    pub rpc_hold_timeout: Duration,
    /// Extra `-hcl` fragments for every server.
    pub extra_hcl: Vec<String>,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        Self {
            rpc_hold_timeout: Duration::from_secs(1),
            extra_hcl: Vec::new(),
        }
    }
}

#[derive(Debug)]
struct ClusterNode {
    ports: AgentPorts,
    args: Vec<String>,
    log: PathBuf,
    agent: Mutex<Option<Agent>>,
}

impl ClusterNode {
    fn slot(&self) -> MutexGuard<'_, Option<Agent>> {
        self.agent.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A cluster of Consul servers on loopback (`-bootstrap-expect=n`, joined
/// with `-retry-join` on each other's Serf ports, data in temp dirs). Every
/// server is killed when the cluster is dropped.
///
/// Servers are configured for deterministic fault tests: dead servers are
/// not cleaned out of the raft configuration, retries to join every second,
/// sessions may have TTLs down to 1 s.
#[derive(Debug)]
pub struct ConsulCluster {
    nodes: Vec<ClusterNode>,
    _dir: tempfile::TempDir,
}

impl ConsulCluster {
    /// Starts `n` servers and waits until all agree on a leader.
    ///
    /// # Panics
    /// When the cluster does not form within a minute (with the logs).
    pub fn start(n: usize) -> Self {
        Self::start_with(n, ClusterOptions::default())
    }

    /// [`ConsulCluster::start`] with options.
    ///
    /// # Panics
    /// As [`ConsulCluster::start`].
    pub fn start_with(n: usize, options: ClusterOptions) -> Self {
        assert!(n >= 1, "a cluster needs at least one server");
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        let ports: Vec<AgentPorts> = (0..n).map(|_| AgentPorts::allocate(false)).collect();
        let hold_ms = options.rpc_hold_timeout.as_millis();
        let mut nodes = Vec::new();
        for (i, p) in ports.iter().enumerate() {
            let data = dir.path().join(format!("node{i}"));
            std::fs::create_dir_all(&data).unwrap_or_else(|e| panic!("mkdir: {e}"));
            let mut args = vec![
                "agent".to_owned(),
                "-server".to_owned(),
                format!("-bootstrap-expect={n}"),
                format!("-node=node{i}"),
                "-bind=127.0.0.1".to_owned(),
                "-client=127.0.0.1".to_owned(),
                format!("-data-dir={}", data.display()),
                "-retry-interval=1s".to_owned(),
                "-log-level=warn".to_owned(),
            ];
            args.extend(p.flags());
            // Only the others: joining yourself counts as success and stops
            // the retries.
            for (j, other) in ports.iter().enumerate() {
                if i != j {
                    args.push(format!("-retry-join=127.0.0.1:{}", other.serf_lan));
                }
            }
            let mut hcl = vec![
                r#"session_ttl_min = "1s""#.to_owned(),
                "disable_update_check = true".to_owned(),
                format!(
                    r#"performance {{ raft_multiplier = 1 rpc_hold_timeout = "{hold_ms}ms" }}"#
                ),
                "autopilot { cleanup_dead_servers = false }".to_owned(),
            ];
            hcl.extend(options.extra_hcl.iter().cloned());
            for fragment in hcl {
                args.push("-hcl".to_owned());
                args.push(fragment);
            }
            nodes.push(ClusterNode {
                ports: *p,
                args,
                log: dir.path().join(format!("node{i}.log")),
                agent: Mutex::new(None),
            });
        }
        let cluster = Self { nodes, _dir: dir };
        for i in 0..n {
            cluster.start_node(i);
        }
        if !cluster.wait_for_leader(START_TIMEOUT) {
            let logs: Vec<String> = (0..n)
                .map(|i| format!("--- node{i}:\n{}", tail(&cluster.nodes[i].log)))
                .collect();
            panic!(
                "Consul cluster of {n} did not elect a leader:\n{}",
                logs.join("\n")
            );
        }
        cluster
    }

    /// Number of servers.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether the cluster has no servers (never, once started).
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// `127.0.0.1:<http port>` of server `i`.
    pub fn http_address(&self, i: usize) -> String {
        format!("127.0.0.1:{}", self.nodes[i].ports.http)
    }

    /// Ports of server `i`.
    pub fn ports(&self, i: usize) -> AgentPorts {
        self.nodes[i].ports
    }

    /// A configuration reaching server `i`, with few quick retries.
    pub fn config(&self, i: usize) -> ConsulConfig {
        ConsulConfig {
            address: self.http_address(i),
            request_timeout: Duration::from_secs(10),
            max_retries: 2,
            ..ConsulConfig::default()
        }
    }

    /// Starts server `i` (again) with its data dir; does not wait.
    pub fn start_node(&self, i: usize) {
        let node = &self.nodes[i];
        let mut slot = node.slot();
        if slot.as_mut().is_some_and(|a| !a.exited()) {
            return;
        }
        *slot = Some(Agent::spawn(&node.args, &node.log));
    }

    /// Kills server `i` with SIGKILL (a crash: it stays in the raft
    /// configuration as failed).
    pub fn kill(&self, i: usize) {
        if let Some(agent) = self.nodes[i].slot().take() {
            agent.end(true);
        }
    }

    /// Stops server `i` with SIGTERM (no leave: it stays a raft peer).
    pub fn stop(&self, i: usize) {
        if let Some(agent) = self.nodes[i].slot().take() {
            agent.end(false);
        }
    }

    /// Whether server `i` runs.
    pub fn is_running(&self, i: usize) -> bool {
        self.nodes[i].slot().as_mut().is_some_and(|a| !a.exited())
    }

    /// The index of the server that is raft leader, as the running servers
    /// agree, if they do.
    pub fn leader(&self) -> Option<usize> {
        let mut agreed: Option<String> = None;
        for i in 0..self.nodes.len() {
            if !self.is_running(i) {
                continue;
            }
            let leader = leader_of(&self.http_address(i))?;
            match &agreed {
                Some(l) if *l != leader => return None,
                _ => agreed = Some(leader),
            }
        }
        let leader = agreed?;
        self.nodes
            .iter()
            .position(|n| leader == format!("127.0.0.1:{}", n.ports.server))
    }

    /// Waits until the running servers agree on a leader.
    pub fn wait_for_leader(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.leader().is_some() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        false
    }

    /// Log tail of server `i`.
    pub fn log_tail(&self, i: usize) -> String {
        tail(&self.nodes[i].log)
    }
}

impl Drop for ConsulCluster {
    fn drop(&mut self) {
        for node in &self.nodes {
            if let Some(agent) = node.slot().take() {
                agent.end(true);
            }
        }
    }
}
