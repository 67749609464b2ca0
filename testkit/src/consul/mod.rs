//! Real Consul for tests: a `consul agent -dev` (plain, ACL, TLS) and an
//! N-server cluster ([`ConsulCluster`]), on reserved ports, each agent a
//! [`Process`] under the watchdog.
//!
//! * [`ConsulDev`] runs one dev agent; [`ConsulOptions`] turns on ACLs
//!   (`default_policy = "deny"`, a random management token), HTTPS with a
//!   fresh test CA ([`TestPki`]), short session TTLs (`session_ttl_min =
//!   "1s"`, on by default: HA tests need lock sessions that expire fast),
//!   or any extra `-hcl` fragment.
//! * [`shared_dev`] is one plain dev agent per test process; [`isolated`]
//!   hands each test a [`ConsulStorage`] under a unique key prefix plus a
//!   [`PrefixGuard`] that deletes the prefix, so many tests share an agent.
//! * [`ConsulCluster`] runs n servers with per-server kill, stop, pause and
//!   start, for HA and fault tests.
//!
//! The binary comes from [`crate::tools::consul_bin`]; a missing binary is
//! a panic that says to run `scripts/setup-tools.sh`, never a skip.

mod cluster;

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

pub use crate::http::{RawResponse, raw_request};
pub use cluster::ConsulCluster;
use storage_consul::{ConsulConfig, ConsulStorage, ConsulToken, Scheme};

use crate::http::encode_key;
use crate::ports::{self, Port};
use crate::process::{Process, ProcessSpec, StartError, with_fresh_ports};
use crate::timeline::Timeline;
use crate::tls::TestPki;
use crate::tools;

/// How long an agent may take to elect itself leader on a loaded machine.
const START_TIMEOUT: Duration = Duration::from_secs(90);

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
    /// Reserves a set of ports; the guards must live as long as the agent.
    fn reserve(https: bool) -> (Self, Vec<Port>) {
        let mut held = ports::reserve_n(if https { 5 } else { 4 });
        let n = |i: usize, held: &[Port]| held[i].get();
        let ports = Self {
            http: n(0, &held),
            serf_lan: n(1, &held),
            serf_wan: n(2, &held),
            server: n(3, &held),
            https: https.then(|| n(4, &held)),
        };
        held.shrink_to_fit();
        (ports, held)
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

/// Options of a [`ConsulDev`] agent or a [`ConsulCluster`]'s servers.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ConsulOptions {
    /// ACLs on with `default_policy = "deny"` and a random
    /// `initial_management` token (dev agent only).
    pub acl: bool,
    /// An HTTPS listener with a certificate from a fresh test CA (dev
    /// agent only).
    pub tls: bool,
    /// With `tls`: the HTTPS listener demands a client certificate.
    pub tls_verify_incoming: bool,
    /// `session_ttl_min` (Consul's default is 10 s); `None` leaves it.
    pub session_ttl_min: Option<String>,
    /// Cluster only: `performance.rpc_hold_timeout`, how long a server
    /// holds a request while there is no leader (Consul: 7 s).
    pub rpc_hold_timeout: Duration,
    /// Extra `-hcl` fragments for every agent.
    pub extra_hcl: Vec<String>,
    /// Cluster only: client agents joined to the servers (default 0), what
    /// Vault nodes talk to in production — a client reaches whichever
    /// server leads, so losing one server is an election, not an outage.
    pub clients: usize,
    /// Where starts, signals and exits are recorded.
    pub timeline: Timeline,
}

impl Default for ConsulOptions {
    fn default() -> Self {
        Self {
            acl: false,
            tls: false,
            tls_verify_incoming: false,
            session_ttl_min: Some("1s".to_owned()),
            rpc_hold_timeout: Duration::from_secs(1),
            extra_hcl: Vec::new(),
            clients: 0,
            timeline: Timeline::new(),
        }
    }
}

impl ConsulOptions {
    /// ACL mode.
    #[must_use]
    pub fn acl() -> Self {
        Self {
            acl: true,
            ..Self::default()
        }
    }

    /// HTTPS mode (`verify_incoming`: demand client certificates).
    #[must_use]
    pub fn tls(verify_incoming: bool) -> Self {
        Self {
            tls: true,
            tls_verify_incoming: verify_incoming,
            ..Self::default()
        }
    }

    /// Sets `session_ttl_min` (`"1s"` by default); `None` keeps Consul's.
    #[must_use]
    pub fn session_ttl_min(mut self, ttl: Option<&str>) -> Self {
        self.session_ttl_min = ttl.map(str::to_owned);
        self
    }

    /// Adds an `-hcl` fragment.
    #[must_use]
    pub fn hcl(mut self, fragment: impl Into<String>) -> Self {
        self.extra_hcl.push(fragment.into());
        self
    }

    /// Cluster only: `n` client agents joined to the servers.
    #[must_use]
    pub fn clients(mut self, n: usize) -> Self {
        self.clients = n;
        self
    }

    /// Records on `timeline`.
    #[must_use]
    pub fn timeline(mut self, timeline: &Timeline) -> Self {
        self.timeline = timeline.clone();
        self
    }

    fn common_hcl(&self) -> Vec<String> {
        let mut hcl = vec!["disable_update_check = true".to_owned()];
        if let Some(ttl) = &self.session_ttl_min {
            hcl.push(format!(r#"session_ttl_min = "{ttl}""#));
        }
        hcl
    }
}

fn push_hcl(args: &mut Vec<String>, fragments: impl IntoIterator<Item = String>) {
    for fragment in fragments {
        args.push("-hcl".to_owned());
        args.push(fragment);
    }
}

/// A `consul agent -dev` on reserved loopback ports; killed when dropped.
///
/// Dev agents keep their data in memory: [`ConsulDev::restart`] brings the
/// agent back on the same ports with an empty store.
#[derive(Debug)]
pub struct ConsulDev {
    ports: AgentPorts,
    _reserved: Vec<Port>,
    token: Option<String>,
    pki: Option<TestPki>,
    process: Process,
    _dir: tempfile::TempDir,
}

impl ConsulDev {
    /// Starts a plain dev agent and waits until it has a leader.
    ///
    /// # Panics
    /// When Consul is missing or does not come up (with the agent's log).
    pub fn start() -> Self {
        Self::start_with(ConsulOptions::default())
    }

    /// Starts a dev agent with `options` and waits until it serves.
    ///
    /// # Panics
    /// As [`ConsulDev::start`].
    pub fn start_with(options: ConsulOptions) -> Self {
        let timeline = options.timeline.clone();
        with_fresh_ports("consul-dev", &timeline, || Self::try_start(&options))
    }

    fn try_start(options: &ConsulOptions) -> Result<Self, StartError> {
        let dir = tempfile::Builder::new()
            .prefix("strongroom-consul-")
            .tempdir()
            .map_err(|e| StartError::Other(format!("tempdir: {e}")))?;
        let (ports, reserved) = AgentPorts::reserve(options.tls);
        let mut args = vec![
            "agent".to_owned(),
            "-dev".to_owned(),
            "-log-level=warn".to_owned(),
        ];
        args.extend(ports.flags());
        let mut hcl = options.common_hcl();
        let token = options.acl.then(|| uuid::Uuid::new_v4().to_string());
        if let Some(token) = &token {
            hcl.push(format!(
                r#"acl {{ enabled = true
                   default_policy = "deny"
                   tokens {{ initial_management = "{token}" }} }}"#
            ));
        }
        let pki = options.tls.then(|| TestPki::generate(dir.path()));
        if let Some(pki) = &pki {
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
        }
        hcl.extend(options.extra_hcl.iter().cloned());
        push_hcl(&mut args, hcl);
        let spec = ProcessSpec::new(
            "consul-dev",
            tools::consul_bin(),
            dir.path().join("consul.log"),
        )
        .args(&args);
        let process = Process::start(spec, &options.timeline);
        let dev = Self {
            ports,
            _reserved: reserved,
            token,
            pki,
            process,
            _dir: dir,
        };
        dev.wait_serving()?;
        Ok(dev)
    }

    fn wait_serving(&self) -> Result<(), StartError> {
        self.process.until_serving_blocking(
            "consul -dev has a leader and its node in the catalog",
            START_TIMEOUT,
            || {
                leader_of(&self.http_address()).is_some()
                    && self.acl_ready()
                    && self.node_registered()
            },
        )
    }

    /// Sessions name the agent's node, and Consul refuses to create one
    /// ("Missing node registration") until the agent has synced its node
    /// into the catalog, a moment after the leader is elected.
    fn node_registered(&self) -> bool {
        let Ok(r) = raw_request(
            &self.http_address(),
            "GET",
            "/v1/catalog/nodes",
            self.token.as_deref(),
            b"",
        ) else {
            return false;
        };
        r.status == 200
            && serde_json::from_slice::<Vec<serde_json::Value>>(&r.body)
                .is_ok_and(|nodes| !nodes.is_empty())
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
        self.process.terminate(Duration::from_secs(20));
    }

    /// Kills the agent with SIGKILL, as a crash would.
    pub fn crash(&self) {
        self.process.kill9();
    }

    /// Freezes the agent (SIGSTOP): connections hang, nothing answers.
    pub fn pause(&self) {
        self.process.pause();
    }

    /// Resumes it after [`ConsulDev::pause`].
    pub fn resume(&self) {
        self.process.resume();
    }

    /// Starts the agent again on the same ports (stopping it first if it
    /// runs) and waits until it serves. A dev agent comes back empty.
    ///
    /// # Panics
    /// When the agent does not come back.
    pub fn restart(&self) {
        self.stop();
        let mut last = String::new();
        // Our ports stay reserved, so only a socket of the old process
        // lingering for a moment can be in the way.
        for _ in 0..5 {
            self.process.start_again();
            match self.wait_serving() {
                Ok(()) => return,
                Err(StartError::AddressInUse(e)) => {
                    last = e;
                    self.process.timeline().record(
                        "consul-dev",
                        "restart found its port still in use; retrying",
                    );
                    std::thread::sleep(Duration::from_millis(500));
                }
                Err(StartError::Other(e)) => panic!("testkit: consul -dev did not restart: {e}"),
            }
        }
        panic!("testkit: consul -dev did not restart: {last}");
    }

    /// Whether the agent process is running.
    pub fn is_running(&self) -> bool {
        self.process.is_running()
    }

    /// The agent's process (signals, log).
    pub fn process(&self) -> &Process {
        &self.process
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

    /// The last lines of the agent's log (for failure messages).
    pub fn log_tail(&self) -> String {
        self.process.tail(30)
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
        let path = format!("/v1/kv/{}?recurse", encode_key(&self.prefix));
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

/// The data directory of cluster server `i` under `root`.
fn node_dir(root: &std::path::Path, i: usize) -> PathBuf {
    root.join(format!("server{i}"))
}
