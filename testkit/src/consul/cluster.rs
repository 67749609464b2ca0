//! An N-server Consul cluster on loopback.

use std::time::Duration;

use storage_consul::ConsulConfig;

use super::{AgentPorts, ConsulOptions, START_TIMEOUT, leader_of, node_dir, push_hcl};
use crate::ports::Port;
use crate::process::{Process, ProcessSpec, StartError, with_fresh_ports};
use crate::tools;
use crate::wait;

#[derive(Debug)]
struct Server {
    ports: AgentPorts,
    process: Process,
}

/// A cluster of Consul servers on loopback (`-bootstrap-expect=n`, joined
/// with `-retry-join` on each other's Serf ports, data in temp dirs). Every
/// server is killed when the cluster is dropped; a server that dies at start
/// on a taken port makes the whole cluster start again on fresh ports.
///
/// Servers are configured for deterministic fault tests: dead servers are
/// not cleaned out of the raft configuration, joins retry every second,
/// `rpc_hold_timeout` is short, sessions may have TTLs down to 1 s (see
/// [`ConsulOptions`]). Servers are named `consul0`, `consul1`, … on the
/// timeline. With [`ConsulOptions::clients`], client agents `client0`, …
/// join them, as the agents Vault nodes talk to in production.
#[derive(Debug)]
pub struct ConsulCluster {
    servers: Vec<Server>,
    clients: Vec<Server>,
    _reserved: Vec<Port>,
    _dir: tempfile::TempDir,
}

impl ConsulCluster {
    /// Starts `n` servers and waits until all agree on a leader.
    ///
    /// # Panics
    /// When the cluster does not form (with every server's log tail).
    pub fn start(n: usize) -> Self {
        Self::start_with(n, ConsulOptions::default())
    }

    /// [`ConsulCluster::start`] with options.
    ///
    /// # Panics
    /// As [`ConsulCluster::start`].
    pub fn start_with(n: usize, options: ConsulOptions) -> Self {
        assert!(n >= 1, "a cluster needs at least one server");
        let timeline = options.timeline.clone();
        with_fresh_ports(&format!("consul cluster of {n}"), &timeline, || {
            Self::try_start(n, &options)
        })
    }

    fn try_start(n: usize, options: &ConsulOptions) -> Result<Self, StartError> {
        let dir = tempfile::Builder::new()
            .prefix("strongroom-consul-cluster-")
            .tempdir()
            .map_err(|e| StartError::Other(format!("tempdir: {e}")))?;
        let mut reserved = Vec::new();
        let ports: Vec<AgentPorts> = (0..n)
            .map(|_| {
                let (p, held) = AgentPorts::reserve(false);
                reserved.extend(held);
                p
            })
            .collect();
        let hold_ms = options.rpc_hold_timeout.as_millis();
        let mut servers = Vec::new();
        for (i, p) in ports.iter().enumerate() {
            let data = node_dir(dir.path(), i);
            std::fs::create_dir_all(&data).map_err(|e| StartError::Other(format!("mkdir: {e}")))?;
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
            let mut hcl = options.common_hcl();
            hcl.push(format!(
                r#"performance {{ raft_multiplier = 1 rpc_hold_timeout = "{hold_ms}ms" }}"#
            ));
            hcl.push("autopilot { cleanup_dead_servers = false }".to_owned());
            hcl.extend(options.extra_hcl.iter().cloned());
            push_hcl(&mut args, hcl);
            let name = format!("consul{i}");
            let spec = ProcessSpec::new(
                &name,
                tools::consul_bin(),
                dir.path().join(format!("{name}.log")),
            )
            .args(&args);
            servers.push(Server {
                ports: *p,
                process: Process::start(spec, &options.timeline),
            });
        }
        let mut clients = Vec::new();
        for i in 0..options.clients {
            let (p, held) = AgentPorts::reserve(false);
            reserved.extend(held);
            let data = dir.path().join(format!("client{i}"));
            std::fs::create_dir_all(&data).map_err(|e| StartError::Other(format!("mkdir: {e}")))?;
            let mut args = vec![
                "agent".to_owned(),
                format!("-node=client{i}"),
                "-bind=127.0.0.1".to_owned(),
                "-client=127.0.0.1".to_owned(),
                format!("-data-dir={}", data.display()),
                "-retry-interval=1s".to_owned(),
                "-log-level=warn".to_owned(),
            ];
            args.extend(p.flags());
            for server in &ports {
                args.push(format!("-retry-join=127.0.0.1:{}", server.serf_lan));
            }
            let mut hcl = options.common_hcl();
            hcl.extend(options.extra_hcl.iter().cloned());
            push_hcl(&mut args, hcl);
            let name = format!("consul-client{i}");
            let spec = ProcessSpec::new(
                &name,
                tools::consul_bin(),
                dir.path().join(format!("{name}.log")),
            )
            .args(&args);
            clients.push(Server {
                ports: p,
                process: Process::start(spec, &options.timeline),
            });
        }
        let cluster = Self {
            servers,
            clients,
            _reserved: reserved,
            _dir: dir,
        };
        let formed = wait::try_until_blocking(
            &format!(
                "the {n} Consul servers agree on a leader and the {} clients reach it",
                options.clients
            ),
            START_TIMEOUT,
            || {
                if cluster
                    .servers
                    .iter()
                    .chain(&cluster.clients)
                    .any(|s| s.process.exit_status().is_some())
                {
                    return Some(false);
                }
                cluster.leader()?;
                cluster
                    .clients
                    .iter()
                    .all(|c| leader_of(&format!("127.0.0.1:{}", c.ports.http)).is_some())
                    .then_some(true)
            },
        );
        match formed {
            Ok(true) => Ok(cluster),
            outcome => {
                let in_use = cluster
                    .servers
                    .iter()
                    .chain(&cluster.clients)
                    .any(|s| s.process.exit_status().is_some() && s.process.address_in_use());
                let report = format!(
                    "Consul cluster of {n} did not elect a leader ({}):\n{}",
                    outcome
                        .err()
                        .unwrap_or_else(|| "a server exited".to_owned()),
                    cluster.logs()
                );
                // Dropping the cluster kills what still runs.
                if in_use {
                    Err(StartError::AddressInUse(report))
                } else {
                    Err(StartError::Other(report))
                }
            }
        }
    }

    /// Every server's log tail.
    pub fn logs(&self) -> String {
        self.servers
            .iter()
            .chain(&self.clients)
            .map(|s| s.process.failure_report())
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Number of servers.
    pub fn len(&self) -> usize {
        self.servers.len()
    }

    /// Whether the cluster has no servers (never, once started).
    pub fn is_empty(&self) -> bool {
        self.servers.is_empty()
    }

    /// `127.0.0.1:<http port>` of server `i`.
    pub fn http_address(&self, i: usize) -> String {
        format!("127.0.0.1:{}", self.servers[i].ports.http)
    }

    /// Number of client agents.
    pub fn clients(&self) -> usize {
        self.clients.len()
    }

    /// `127.0.0.1:<http port>` of client agent `i`.
    pub fn client_http_address(&self, i: usize) -> String {
        format!("127.0.0.1:{}", self.clients[i].ports.http)
    }

    /// Client agent `i`'s process (signals, log).
    pub fn client_process(&self, i: usize) -> &Process {
        &self.clients[i].process
    }

    /// Ports of server `i`.
    pub fn ports(&self, i: usize) -> AgentPorts {
        self.servers[i].ports
    }

    /// Server `i`'s process (signals, log).
    pub fn process(&self, i: usize) -> &Process {
        &self.servers[i].process
    }

    /// A configuration reaching server `i`, with few quick retries.
    pub fn config(&self, i: usize) -> ConsulConfig {
        let mut config = ConsulConfig::default();
        config.address = self.http_address(i);
        config.request_timeout = Duration::from_secs(10);
        config.max_retries = 2;
        config
    }

    /// Starts server `i` again (same ports, same data dir) if it is not
    /// running; does not wait.
    pub fn start_node(&self, i: usize) {
        self.servers[i].process.start_again();
    }

    /// Kills server `i` with SIGKILL (a crash: it stays in the raft
    /// configuration as failed).
    pub fn kill(&self, i: usize) {
        self.servers[i].process.kill9();
    }

    /// Stops server `i` with SIGTERM (no leave: it stays a raft peer).
    pub fn stop(&self, i: usize) {
        self.servers[i].process.terminate(Duration::from_secs(20));
    }

    /// Freezes server `i` (SIGSTOP).
    pub fn pause(&self, i: usize) {
        self.servers[i].process.pause();
    }

    /// Resumes server `i` after [`ConsulCluster::pause`].
    pub fn resume(&self, i: usize) {
        self.servers[i].process.resume();
    }

    /// Whether server `i` runs.
    pub fn is_running(&self, i: usize) -> bool {
        self.servers[i].process.is_running()
    }

    /// The index of the raft leader, as the running servers agree, if they
    /// do.
    pub fn leader(&self) -> Option<usize> {
        let mut agreed: Option<String> = None;
        for i in 0..self.servers.len() {
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
        self.servers
            .iter()
            .position(|s| leader == format!("127.0.0.1:{}", s.ports.server))
    }

    /// Waits until the running servers agree on a leader.
    ///
    /// # Errors
    /// When they do not within `timeout` (with every server's log tail).
    pub fn wait_for_leader(&self, timeout: Duration) -> Result<usize, String> {
        wait::try_until_blocking(
            "the running Consul servers agree on a leader",
            timeout,
            || self.leader(),
        )
        .map_err(|e| format!("{e}\n{}", self.logs()))
    }

    /// Log tail of server `i`.
    pub fn log_tail(&self, i: usize) -> String {
        self.servers[i].process.tail(30)
    }
}
