//! A reference server of the Vault family (HashiCorp Vault v1.1.2, or
//! OpenBao) run from an HCL config, as tests and benches run it beside
//! Strongroom: `program server -config=<dir>/config.hcl` on a reserved API
//! port and cluster port, with plain HTTP, `HOME` in its directory and no
//! `VAULT_*`/`BAO_*` address or token inherited from the caller.
//!
//! The caller gives the stanzas that differ (storage, seal, log level);
//! [`listener_hcl`] adds the listener and the advertised addresses.
//! [`ReferenceServer::start`] waits until `sys/seal-status` answers (an
//! uninitialised server answers it too) and starts again on fresh ports
//! when one was taken.
//!
//! ```no_run
//! # async fn example() {
//! use testkit::{ReferenceServer, Scenario};
//!
//! let sc = Scenario::new("compare with OpenBao on raft");
//! let bao = ReferenceServer::start(
//!     &sc,
//!     "openbao",
//!     &testkit::tools::bao_bin(),
//!     "storage \"raft\" {\n  path = \"{dir}\"\n  node_id = \"a\"\n}\n",
//! )
//! .await;
//! let (code, _) = bao.client().call("GET", "sys/seal-status", None, None).await;
//! assert_eq!(code, 200);
//! # }
//! ```

use std::path::Path;
use std::time::Duration;

use crate::node::Client;
use crate::ports::{self, Port};
use crate::process::{Process, ProcessSpec, StartError, with_fresh_ports_async};
use crate::timeline::Scenario;

const START_TIMEOUT: Duration = Duration::from_secs(60);

/// The caller's variables a reference server must not inherit.
const INHERITED_ENV: &[&str] = &[
    "VAULT_ADDR",
    "VAULT_TOKEN",
    "VAULT_API_ADDR",
    "BAO_ADDR",
    "BAO_TOKEN",
];

/// The listener and advertised addresses of a Vault or OpenBao node: plain
/// HTTP on `api`, the cluster port on `cluster`, no mlock (tests run
/// unprivileged).
pub fn listener_hcl(api: &Port, cluster: &Port) -> String {
    let (api, cluster) = (api.addr(), cluster.addr());
    format!(
        "listener \"tcp\" {{\n  address = \"{api}\"\n  cluster_address = \"{cluster}\"\n  tls_disable = true\n}}\n\
         api_addr = \"http://{api}\"\ncluster_addr = \"https://{cluster}\"\ndisable_mlock = true\n"
    )
}

/// A running reference server; killed when dropped.
#[derive(Debug)]
pub struct ReferenceServer {
    process: Process,
    client: Client,
    _ports: (Port, Port),
}

impl ReferenceServer {
    /// Starts `program` as `name` in the scenario's directory with the
    /// HCL `stanzas` (each `{dir}` in them is that directory) and the
    /// listener of two ports it reserves.
    ///
    /// # Panics
    /// When it exits or does not answer within a minute (with its log).
    pub async fn start(sc: &Scenario, name: &str, program: &Path, stanzas: &str) -> Self {
        with_fresh_ports_async(name, sc.timeline(), || {
            Self::try_start_on(
                sc,
                name,
                program,
                ports::reserve(),
                ports::reserve(),
                stanzas,
            )
        })
        .await
    }

    /// As [`start`](Self::start), on the given ports: for a cluster whose
    /// configs name each other's addresses before any node runs.
    ///
    /// # Panics
    /// As `start`, and when a port turns out to be taken.
    pub async fn start_on(
        sc: &Scenario,
        name: &str,
        program: &Path,
        (api, cluster): (Port, Port),
        stanzas: &str,
    ) -> Self {
        Self::try_start_on(sc, name, program, api, cluster, stanzas)
            .await
            .unwrap_or_else(|e| panic!("testkit: {name} did not start: {e}"))
    }

    async fn try_start_on(
        sc: &Scenario,
        name: &str,
        program: &Path,
        api: Port,
        cluster: Port,
        stanzas: &str,
    ) -> Result<Self, StartError> {
        let dir = sc.subdir(name);
        std::fs::create_dir_all(&dir)
            .unwrap_or_else(|e| panic!("testkit: mkdir {}: {e}", dir.display()));
        let config = dir.join("config.hcl");
        let hcl = format!(
            "{}\n{}",
            stanzas.replace("{dir}", &dir.display().to_string()),
            listener_hcl(&api, &cluster)
        );
        std::fs::write(&config, hcl)
            .unwrap_or_else(|e| panic!("testkit: write {}: {e}", config.display()));
        let mut spec = ProcessSpec::new(name, program, dir.join("server.log"))
            .arg("server")
            .arg(format!("-config={}", config.display()))
            // Its CLI helpers read HOME; keep the caller's ~/.vault-token out.
            .env("HOME", &dir);
        for key in INHERITED_ENV {
            spec = spec.env_remove(key);
        }
        let process = Process::start(spec, sc.timeline());
        let client = Client::new(format!("http://{}", api.addr()), None);
        process
            .until_serving("sys/seal-status answers", START_TIMEOUT, || async {
                client
                    .try_call("GET", "sys/seal-status", None, None)
                    .await
                    .is_ok()
            })
            .await?;
        Ok(Self {
            process,
            client,
            _ports: (api, cluster),
        })
    }

    /// The process (signals, log, restart on the same ports).
    pub fn process(&self) -> &Process {
        &self.process
    }

    /// Its API client (no token).
    pub fn client(&self) -> &Client {
        &self.client
    }
}
