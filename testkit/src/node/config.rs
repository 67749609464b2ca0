//! A Strongroom node's configuration as a typed builder, rendered to HCL.
//!
//! Tests say what they want (`redb` storage, an `awskms` seal on this moto,
//! HA on) and the builder writes the file; the listener address, `api_addr`
//! and `cluster_addr` come from the node's reserved ports. Anything the
//! builder does not know yet is passed through: [`NodeConfig::attr`] and
//! [`NodeConfig::block`] at the top level, `attr` on every stanza — so a new
//! server feature adds its stanza in its own test without editing testkit.

use std::path::{Path, PathBuf};
use std::time::Duration;

use hcl::{Block, Body, Expression};

use crate::moto::{MotoServer, TEST_ACCESS_KEY, TEST_REGION, TEST_SECRET_KEY};

/// Formats a duration the way Vault's config does (`"1500ms"`, `"15s"`).
pub fn duration(d: Duration) -> String {
    if d.subsec_millis() == 0 && d.as_secs() > 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

/// Attributes in insertion order; a later value for a key replaces the
/// earlier one.
#[derive(Debug, Clone, Default)]
struct Attrs(Vec<(String, Expression)>);

impl Attrs {
    fn set(&mut self, key: &str, value: impl Into<Expression>) {
        let value = value.into();
        match self.0.iter_mut().find(|(k, _)| k == key) {
            Some(slot) => slot.1 = value,
            None => self.0.push((key.to_owned(), value)),
        }
    }

    fn block(&self, ident: &str, label: Option<&str>, blocks: &[Block]) -> Block {
        let mut b = Block::builder(ident);
        if let Some(label) = label {
            b = b.add_label(label);
        }
        for (k, v) in &self.0 {
            b = b.add_attribute((k.as_str(), v.clone()));
        }
        b.add_blocks(blocks.iter().cloned()).build()
    }
}

/// The `storage` stanza.
#[derive(Debug, Clone)]
pub struct StorageStanza {
    kind: String,
    attrs: Attrs,
    /// redb without a path: `<node dir>/data.redb`.
    redb_in_node_dir: bool,
}

impl StorageStanza {
    /// `storage "inmem" {}`: gone when the process ends.
    pub fn inmem() -> Self {
        Self::other("inmem")
    }

    /// `storage "redb"` in the node's directory (kept across restarts).
    pub fn redb() -> Self {
        Self {
            redb_in_node_dir: true,
            ..Self::other("redb")
        }
    }

    /// `storage "redb"` at `path`.
    pub fn redb_at(path: &Path) -> Self {
        Self::other("redb").attr("path", path.display().to_string())
    }

    /// `storage "consul"` reaching `address` (`host:port`), keys under
    /// `path` (`vault/` when `None`).
    pub fn consul(address: &str, path: Option<&str>) -> Self {
        let s = Self::other("consul").attr("address", address);
        match path {
            Some(p) => s.attr("path", p),
            None => s,
        }
    }

    /// `storage "consul"` on a [`crate::ConsulDev`] (its token, TLS CA and
    /// address) under `path`.
    pub fn consul_dev(dev: &crate::ConsulDev, path: &str) -> Self {
        let config = dev.config();
        let mut s = Self::consul(&config.address, Some(path));
        if let Some(token) = dev.management_token() {
            s = s.attr("token", token);
        }
        if let (Some(pki), Some(_)) = (dev.pki(), dev.ports().https) {
            s = s
                .attr("scheme", "https")
                .attr("tls_ca_file", pki.ca_file.display().to_string());
        }
        s
    }

    /// Any other storage type.
    pub fn other(kind: &str) -> Self {
        Self {
            kind: kind.to_owned(),
            attrs: Attrs::default(),
            redb_in_node_dir: false,
        }
    }

    /// Consul: the lock session's TTL (`session_ttl`).
    #[must_use]
    pub fn session_ttl(self, ttl: Duration) -> Self {
        self.attr("session_ttl", duration(ttl))
    }

    /// Consul: how long a lock acquisition waits (`lock_wait_time`).
    #[must_use]
    pub fn lock_wait_time(self, wait: Duration) -> Self {
        self.attr("lock_wait_time", duration(wait))
    }

    /// Consul: the lock delay after a session is invalidated (`lock_delay`).
    #[must_use]
    pub fn lock_delay(self, delay: Duration) -> Self {
        self.attr("lock_delay", duration(delay))
    }

    /// Any attribute (`token`, `consistency_mode`, `max_parallel`, …).
    #[must_use]
    pub fn attr(mut self, key: &str, value: impl Into<Expression>) -> Self {
        self.attrs.set(key, value);
        self
    }

    fn render(&self, node_dir: &Path) -> Block {
        let mut attrs = self.attrs.clone();
        if self.redb_in_node_dir && !attrs.0.iter().any(|(k, _)| k == "path") {
            attrs.set("path", node_dir.join("data.redb").display().to_string());
        }
        attrs.block("storage", Some(&self.kind), &[])
    }
}

/// The `seal` stanza (none means Shamir).
#[derive(Debug, Clone)]
pub struct SealStanza {
    kind: String,
    attrs: Attrs,
}

impl SealStanza {
    /// `seal "awskms"` for `key_id` on `moto`: the harness's static
    /// credentials, and short timeouts (1 s connect, 2 s per attempt, 5 s
    /// per operation, one attempt) so outage tests stay quick.
    pub fn awskms(moto: &MotoServer, key_id: &str) -> Self {
        Self::other("awskms")
            .attr("region", TEST_REGION)
            .attr("kms_key_id", key_id)
            .attr("endpoint", moto.endpoint())
            .attr("access_key", TEST_ACCESS_KEY)
            .attr("secret_key", TEST_SECRET_KEY)
            .attr("connect_timeout", "1s")
            .attr("attempt_timeout", "2s")
            .attr("operation_timeout", "5s")
            .attr("max_attempts", 1)
    }

    /// As [`SealStanza::awskms`], signing as an IAM user.
    pub fn awskms_as(moto: &MotoServer, key_id: &str, user: &crate::moto::IamUser) -> Self {
        Self::awskms(moto, key_id)
            .attr("access_key", user.access_key_id.as_str())
            .attr("secret_key", user.secret_access_key.expose_secret())
    }

    /// `seal "shamir" {}` spelled out (the default is no stanza).
    pub fn shamir() -> Self {
        Self::other("shamir")
    }

    /// Any other seal type.
    pub fn other(kind: &str) -> Self {
        Self {
            kind: kind.to_owned(),
            attrs: Attrs::default(),
        }
    }

    /// Any attribute.
    #[must_use]
    pub fn attr(mut self, key: &str, value: impl Into<Expression>) -> Self {
        self.attrs.set(key, value);
        self
    }
}

/// How the node is started.
#[derive(Debug, Clone)]
enum Mode {
    /// `server -config=<rendered file>`.
    Config,
    /// `server -dev` with this root token (no config file).
    Dev(String),
}

/// A node's configuration (see the [module docs](self)).
///
/// ```
/// use std::time::Duration;
/// use testkit::{NodeConfig, StorageStanza};
///
/// let config = NodeConfig::new()
///     .storage(
///         StorageStanza::consul("127.0.0.1:8500", Some("vault/"))
///             .session_ttl(Duration::from_secs(2))
///             .lock_delay(Duration::from_millis(500)),
///     )
///     .ha_enabled(true)
///     .attr("cluster_name", "ha-test");
/// let hcl = config.render(std::path::Path::new("/tmp/n1"), 18200, 18201);
/// assert!(hcl.contains("session_ttl = \"2s\""), "{hcl}");
/// assert!(hcl.contains("api_addr = \"http://127.0.0.1:18200\""), "{hcl}");
/// assert!(hcl.contains("cluster_addr = \"https://127.0.0.1:18201\""), "{hcl}");
/// ```
#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub(crate) binary: Option<PathBuf>,
    mode: Mode,
    storage: StorageStanza,
    seals: Vec<SealStanza>,
    listener: Attrs,
    listener_blocks: Vec<Block>,
    pub(crate) tls_ca: Option<PathBuf>,
    api_addr: Option<String>,
    cluster_addr: Option<String>,
    ha_enabled: Option<bool>,
    attrs: Attrs,
    telemetry: Attrs,
    blocks: Vec<Block>,
    pub(crate) env: Vec<(String, Option<String>)>,
    pub(crate) ready_timeout: Duration,
}

impl Default for NodeConfig {
    fn default() -> Self {
        Self::new()
    }
}

impl NodeConfig {
    /// redb storage in the node's directory, Shamir seal, a plain-HTTP
    /// listener on a reserved port, `api_addr` pointing at it.
    pub fn new() -> Self {
        Self {
            binary: None,
            mode: Mode::Config,
            storage: StorageStanza::redb(),
            seals: Vec::new(),
            listener: Attrs::default(),
            listener_blocks: Vec::new(),
            tls_ca: None,
            api_addr: None,
            cluster_addr: None,
            ha_enabled: None,
            attrs: Attrs::default(),
            telemetry: Attrs::default(),
            blocks: Vec::new(),
            env: Vec::new(),
            ready_timeout: Duration::from_secs(60),
        }
    }

    /// `strongroom server -dev` with root token `root_token` (in-memory,
    /// unsealed, KV v2 at `secret/`); no config file.
    pub fn dev(root_token: &str) -> Self {
        Self {
            mode: Mode::Dev(root_token.to_owned()),
            ..Self::new()
        }
    }

    /// The server binary (tests in `examples` pass
    /// `env!("CARGO_BIN_EXE_strongroom")`; default: `STRONGROOM_BIN`).
    #[must_use]
    pub fn binary(mut self, path: impl Into<PathBuf>) -> Self {
        self.binary = Some(path.into());
        self
    }

    /// The storage stanza.
    #[must_use]
    pub fn storage(mut self, storage: StorageStanza) -> Self {
        self.storage = storage;
        self
    }

    /// Adds a seal stanza (none: Shamir; several: Vault 1.16's
    /// multi-seal, told apart by their `name`/`priority` attributes).
    #[must_use]
    pub fn seal(mut self, seal: SealStanza) -> Self {
        self.seals.push(seal);
        self
    }

    /// HTTPS on the listener with this certificate and key; the node's
    /// client trusts `ca` (the certificate itself when self-signed).
    #[must_use]
    pub fn listener_tls(mut self, cert: &Path, key: &Path, ca: &Path) -> Self {
        self.listener
            .set("tls_cert_file", cert.display().to_string());
        self.listener.set("tls_key_file", key.display().to_string());
        self.tls_ca = Some(ca.to_owned());
        self
    }

    /// Any attribute of the `listener "tcp"` stanza.
    #[must_use]
    pub fn listener_attr(mut self, key: &str, value: impl Into<Expression>) -> Self {
        self.listener.set(key, value);
        self
    }

    /// `telemetry { unauthenticated_metrics_access = true }` in the
    /// listener, so a sealed node can be scraped.
    #[must_use]
    pub fn unauthenticated_metrics(mut self) -> Self {
        self.listener_blocks.push(
            Block::builder("telemetry")
                .add_attribute(("unauthenticated_metrics_access", true))
                .build(),
        );
        self
    }

    /// `api_addr` (default: this node's own listener URL).
    #[must_use]
    pub fn api_addr(mut self, addr: &str) -> Self {
        self.api_addr = Some(addr.to_owned());
        self
    }

    /// `cluster_addr` (default with HA on: `https://127.0.0.1:<reserved>`).
    #[must_use]
    pub fn cluster_addr(mut self, addr: &str) -> Self {
        self.cluster_addr = Some(addr.to_owned());
        self
    }

    /// `ha_enabled` (rendered at the top level as Vault reads it).
    #[must_use]
    pub fn ha_enabled(mut self, on: bool) -> Self {
        self.ha_enabled = Some(on);
        self
    }

    /// Any top-level attribute (`cluster_name`, `log_level`,
    /// `auto_unseal_max_backoff`, …).
    #[must_use]
    pub fn attr(mut self, key: &str, value: impl Into<Expression>) -> Self {
        self.attrs.set(key, value);
        self
    }

    /// An attribute of the top-level `telemetry` block
    /// (`disable_hostname`, `prometheus_retention_time`, …).
    #[must_use]
    pub fn telemetry_attr(mut self, key: &str, value: impl Into<Expression>) -> Self {
        self.telemetry.set(key, value);
        self
    }

    /// Any top-level block (`service_registration "consul" {…}`, …).
    #[must_use]
    pub fn block(mut self, block: Block) -> Self {
        self.blocks.push(block);
        self
    }

    /// An environment variable for the server process.
    #[must_use]
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_owned(), Some(value.to_owned())));
        self
    }

    /// Removes an environment variable the test process has.
    #[must_use]
    pub fn env_remove(mut self, key: &str) -> Self {
        self.env.push((key.to_owned(), None));
        self
    }

    /// How long a start may take before the node must answer HTTP
    /// (default 60 s).
    #[must_use]
    pub fn ready_timeout(mut self, timeout: Duration) -> Self {
        self.ready_timeout = timeout;
        self
    }

    /// Whether the listener serves HTTPS.
    pub fn is_tls(&self) -> bool {
        self.tls_ca.is_some()
    }

    /// The arguments after the binary name, for a node listening on
    /// `port` whose rendered config is at `config_path`.
    pub(crate) fn args(&self, port: u16, config_path: &Path) -> Vec<String> {
        match &self.mode {
            Mode::Config => vec![
                "server".to_owned(),
                format!("-config={}", config_path.display()),
            ],
            Mode::Dev(token) => vec![
                "server".to_owned(),
                "-dev".to_owned(),
                format!("-dev-listen-address=127.0.0.1:{port}"),
                format!("-dev-root-token-id={token}"),
            ],
        }
    }

    /// Whether a config file is used (not `-dev`).
    pub(crate) fn uses_file(&self) -> bool {
        matches!(self.mode, Mode::Config)
    }

    /// The HCL for a node in `dir` listening on `port`, with
    /// `cluster_port` for `cluster_addr`.
    pub fn render(&self, dir: &Path, port: u16, cluster_port: u16) -> String {
        let scheme = if self.is_tls() { "https" } else { "http" };
        let mut listener = Attrs::default();
        listener.set("address", format!("127.0.0.1:{port}"));
        if !self.is_tls() {
            listener.set("tls_disable", true);
        }
        for (k, v) in &self.listener.0 {
            listener.set(k, v.clone());
        }
        let mut top = Attrs::default();
        top.set(
            "api_addr",
            self.api_addr
                .clone()
                .unwrap_or_else(|| format!("{scheme}://127.0.0.1:{port}")),
        );
        let cluster_addr = self.cluster_addr.clone().or_else(|| {
            self.ha_enabled
                .filter(|on| *on)
                .map(|_| format!("https://127.0.0.1:{cluster_port}"))
        });
        if let Some(addr) = cluster_addr {
            top.set("cluster_addr", addr);
        }
        if let Some(on) = self.ha_enabled {
            top.set("ha_enabled", on);
        }
        for (k, v) in &self.attrs.0 {
            top.set(k, v.clone());
        }
        let mut body = Body::builder()
            .add_attributes(top.0.iter().map(|(k, v)| (k.as_str(), v.clone())))
            .add_block(self.storage.render(dir));
        for seal in &self.seals {
            body = body.add_block(seal.attrs.block("seal", Some(&seal.kind), &[]));
        }
        body = body.add_block(listener.block("listener", Some("tcp"), &self.listener_blocks));
        if !self.telemetry.0.is_empty() {
            body = body.add_block(self.telemetry.block("telemetry", None, &[]));
        }
        body = body.add_blocks(self.blocks.iter().cloned());
        hcl::to_string(&body.build()).unwrap_or_else(|e| panic!("testkit: render node HCL: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_storage_seal_listener_and_passthrough() {
        let config = NodeConfig::new()
            .storage(StorageStanza::redb())
            .seal(SealStanza::other("transit").attr("key_name", "k"))
            .unauthenticated_metrics()
            .attr("auto_unseal_max_backoff", "1s")
            .telemetry_attr("prometheus_retention_time", "30s")
            .block(
                Block::builder("telemetry")
                    .add_attribute(("disable_hostname", true))
                    .build(),
            );
        let hcl = config.render(Path::new("/d"), 12000, 12001);
        for want in [
            "storage \"redb\"",
            "path = \"/d/data.redb\"",
            "seal \"transit\"",
            "key_name = \"k\"",
            "address = \"127.0.0.1:12000\"",
            "tls_disable = true",
            "unauthenticated_metrics_access = true",
            "auto_unseal_max_backoff = \"1s\"",
            "disable_hostname = true",
            "prometheus_retention_time = \"30s\"",
            "api_addr = \"http://127.0.0.1:12000\"",
        ] {
            assert!(hcl.contains(want), "{want} missing in:\n{hcl}");
        }
        assert!(
            !hcl.contains("cluster_addr"),
            "no cluster_addr without HA:\n{hcl}"
        );
    }

    #[test]
    fn durations_render_like_vault() {
        assert_eq!(duration(Duration::from_secs(15)), "15s");
        assert_eq!(duration(Duration::from_millis(1500)), "1500ms");
    }
}
