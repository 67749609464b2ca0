//! The core's request and response types, shaped like Vault's API bodies.
//!
//! Each type derives `serde` with Vault's field names, so an HTTP layer can
//! parse a request body straight into a params type and serialize a result
//! as the response body.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use zeroize::Zeroize;

/// The version string reported in `seal-status` and `health`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Settings of a [`Core`](crate::Core) that do not change its behaviour
/// towards data: names and addresses it reports, and timings of its
/// background tasks.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct CoreOptions {
    /// The cluster name shown in `seal-status` and `health`. When `None`, a
    /// name `strongroom-cluster-<8 hex>` is generated at init and kept.
    pub cluster_name: Option<String>,
    /// The address clients reach this node at (Vault's `api_addr`). With
    /// HA it is advertised in the lock while this node is active: standbys
    /// forward requests to it, and `sys/leader` reports it.
    pub api_addr: Option<String>,
    /// The address for node-to-node traffic (Vault's `cluster_addr`),
    /// advertised beside `api_addr` and reported as
    /// `leader_cluster_address`.
    pub cluster_addr: Option<String>,
    /// With HA, after a step-down, the longest this node stays out of the
    /// contest waiting for another node to take the lock (it re-contends as
    /// soon as another node holds it). Vault always waits 10 s.
    pub step_down_grace: Duration,
    /// The storage backend's name for `seal-status` (`"redb"`,
    /// `"consul"`, `"inmem"`).
    pub storage_type: String,
    /// How often, while unsealed, the core asks the barrier whether the key
    /// must rotate (encryption count or interval). Vault checks every 5 min.
    pub auto_rotate_check_interval: Duration,
    /// First wait of the auto-unseal retry loop after a failure.
    pub auto_unseal_initial_backoff: Duration,
    /// Longest wait of the auto-unseal retry loop (the backoff doubles up to
    /// this, with jitter).
    pub auto_unseal_max_backoff: Duration,
    /// How often, while unsealed, each auto seal's health is checked (a
    /// tenth of it while one is failing or a wrap is missing). Vault: 10 min.
    pub seal_health_check_interval: Duration,
    /// With HA: how long a seal migration waits for this node to get the
    /// lock (the active node steps down or stops) before giving up.
    pub migration_lock_wait: Duration,
    /// What to do at unseal when the storage holds a data set HashiCorp
    /// Vault wrote: serve it read-only (the default) or upgrade it.
    pub vault_takeover: crate::VaultTakeover,
    /// Test hook: stop the Vault upgrade after this step (the step is
    /// durable) and hold there until the process is killed, so crash tests
    /// can kill -9 at each step boundary. Never set it in production.
    #[doc(hidden)]
    pub adopt_pause_after: Option<crate::AdoptStep>,
    /// The read cache in front of storage (Vault's `cache_size` and
    /// `disable_cache`); see [`ReadCache`](crate::ReadCache).
    pub cache: crate::CacheConfig,
}

impl Default for CoreOptions {
    fn default() -> Self {
        Self {
            cluster_name: None,
            api_addr: None,
            cluster_addr: None,
            step_down_grace: Duration::from_secs(5),
            storage_type: "inmem".to_owned(),
            auto_rotate_check_interval: Duration::from_secs(300),
            auto_unseal_initial_backoff: Duration::from_secs(1),
            auto_unseal_max_backoff: Duration::from_secs(30),
            seal_health_check_interval: Duration::from_secs(600),
            migration_lock_wait: Duration::from_secs(60),
            vault_takeover: crate::VaultTakeover::default(),
            adopt_pause_after: None,
            cache: crate::CacheConfig::default(),
        }
    }
}

impl CoreOptions {
    /// Options with the given storage type name and defaults elsewhere.
    pub fn new(storage_type: impl Into<String>) -> Self {
        Self {
            storage_type: storage_type.into(),
            ..Self::default()
        }
    }

    /// Sets the cluster name.
    pub fn with_cluster_name(mut self, name: impl Into<String>) -> Self {
        self.cluster_name = Some(name.into());
        self
    }

    /// Sets the advertised API address.
    pub fn with_api_addr(mut self, addr: impl Into<String>) -> Self {
        self.api_addr = Some(addr.into());
        self
    }

    /// Sets the advertised cluster address.
    pub fn with_cluster_addr(mut self, addr: impl Into<String>) -> Self {
        self.cluster_addr = Some(addr.into());
        self
    }

    /// Sets the step-down grace (see [`CoreOptions::step_down_grace`]).
    pub fn with_step_down_grace(mut self, grace: Duration) -> Self {
        self.step_down_grace = grace;
        self
    }

    /// Sets the auto-unseal retry backoff bounds.
    pub fn with_auto_unseal_backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.auto_unseal_initial_backoff = initial;
        self.auto_unseal_max_backoff = max;
        self
    }

    /// Sets how long a seal migration waits for the HA lock.
    pub fn with_migration_lock_wait(mut self, wait: Duration) -> Self {
        self.migration_lock_wait = wait;
        self
    }

    /// Sets how often each auto seal's health is checked while unsealed.
    pub fn with_seal_health_check_interval(mut self, every: Duration) -> Self {
        self.seal_health_check_interval = every;
        self
    }

    /// Sets the read cache's bounds, or turns it off.
    pub fn with_cache(mut self, cache: crate::CacheConfig) -> Self {
        self.cache = cache;
        self
    }

    /// Sets how often the auto-rotation check runs while unsealed.
    pub fn with_auto_rotate_check_interval(mut self, every: Duration) -> Self {
        self.auto_rotate_check_interval = every;
        self
    }
}

/// Where a node stands, for routing requests and for registrations that
/// publish it (Consul service tags, Kubernetes labels). Published on
/// [`Core::watch_node_state`](crate::Core::watch_node_state).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeState {
    /// Whether `init` has run (as last observed).
    pub initialized: bool,
    /// Whether the barrier is sealed.
    pub sealed: bool,
    /// The node's HA role.
    pub mode: HaMode,
}

/// A node's HA role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HaMode {
    /// No HA backend: the node serves alone once unsealed.
    Disabled,
    /// The node holds the HA lock and serves requests (from the moment it
    /// takes the lock; requests that arrive while it loads its state wait
    /// for it).
    Active,
    /// Another node is active (or none is, yet), or this node is sealed:
    /// requests belong to the active node.
    Standby {
        /// The active node's addresses, when known.
        leader: Option<LeaderAddress>,
    },
}

impl HaMode {
    /// Whether this node serves requests itself (HA disabled, or active).
    pub fn serves(&self) -> bool {
        matches!(self, Self::Disabled | Self::Active)
    }
}

/// Where the active node can be reached, from its advertisement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaderAddress {
    /// Its `api_addr`: where standbys forward requests.
    pub api_addr: String,
    /// Its `cluster_addr` (may be empty).
    pub cluster_addr: String,
}

/// Vault's `sys/seal-status` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealStatus {
    /// The seal type: `"shamir"`, `"awskms"`, `"test"`.
    #[serde(rename = "type")]
    pub seal_type: String,
    /// Whether `init` has run against this storage.
    pub initialized: bool,
    /// Whether the barrier is sealed.
    pub sealed: bool,
    /// Threshold of the keys an unseal takes (recovery threshold for auto
    /// seals); 0 before init.
    pub t: usize,
    /// Number of keys handed out (recovery shares for auto seals).
    pub n: usize,
    /// Distinct keys entered so far in the unseal in progress.
    pub progress: usize,
    /// The nonce of the unseal in progress, `""` when none.
    pub nonce: String,
    /// This build's version.
    pub version: String,
    /// This build's date (empty when unknown).
    pub build_date: String,
    /// Whether a seal migration is in progress.
    pub migration: bool,
    /// The cluster name; only while unsealed (Vault omits it when sealed).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub cluster_name: Option<String>,
    /// The cluster id; only while unsealed.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub cluster_id: Option<String>,
    /// Whether the keys handed out are recovery keys (auto seal).
    pub recovery_seal: bool,
    /// The storage backend's name.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub storage_type: Option<String>,
}

/// Vault's `sys/seal-backend-status` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealBackendStatusReport {
    /// Whether every enabled seal is healthy.
    pub healthy: bool,
    /// Since when the first enabled seal has been failing (RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub unhealthy_since: Option<String>,
    /// Whether every enabled seal holds a checked wrap of the stored keys.
    pub fully_wrapped: bool,
    /// Each seal, enabled ones by priority, then disabled ones.
    pub backends: Vec<crate::seal_set::SealBackendStatus>,
}

/// Vault's `sys/health` body. The HTTP layer picks the status code from
/// `initialized`, `sealed` and `standby` (and the request's overrides).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthStatus {
    /// Whether `init` has run.
    pub initialized: bool,
    /// Whether the barrier is sealed.
    pub sealed: bool,
    /// Whether this node is an HA standby.
    pub standby: bool,
    /// Always false: no performance standbys.
    pub performance_standby: bool,
    /// Always `"disabled"`: no replication.
    pub replication_performance_mode: String,
    /// Always `"disabled"`: no replication.
    pub replication_dr_mode: String,
    /// Seconds since the Unix epoch at the time of the call.
    pub server_time_utc: i64,
    /// This build's version.
    pub version: String,
    /// Always false.
    pub enterprise: bool,
    /// The cluster name, once known (after an unseal).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub cluster_name: Option<String>,
    /// The cluster id, once known.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub cluster_id: Option<String>,
}

/// Vault's `sys/leader` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaderStatus {
    /// Whether an HA backend is configured.
    pub ha_enabled: bool,
    /// Whether this node is the active one.
    pub is_self: bool,
    /// When this node became active (RFC 3339), only when it is.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub active_time: Option<String>,
    /// The active node's API address (`""` when unknown).
    pub leader_address: String,
    /// The active node's cluster address (`""` when unknown).
    pub leader_cluster_address: String,
    /// Always false.
    pub performance_standby: bool,
    /// Always 0.
    pub performance_standby_last_remote_wal: u64,
}

/// Vault's `sys/init` request body.
///
/// Zero counts mean "not given", as in Vault. Which counts apply depends on
/// the seal: Shamir takes `secret_*`, auto seals take `recovery_*`; the
/// other set is refused.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct InitParams {
    /// Number of unseal key shares (Shamir).
    pub secret_shares: usize,
    /// Shares needed to unseal (Shamir).
    pub secret_threshold: usize,
    /// Vault's stored-shares count; only 0 or 1 is accepted (the root key is
    /// always stored wrapped by the seal).
    pub stored_shares: usize,
    /// PGP keys to encrypt the unseal shares with: refused (not supported).
    pub pgp_keys: Option<Vec<String>>,
    /// Number of recovery key shares (auto seal).
    pub recovery_shares: usize,
    /// Recovery shares needed (auto seal).
    pub recovery_threshold: usize,
    /// PGP keys for recovery shares: refused (not supported).
    pub recovery_pgp_keys: Option<Vec<String>>,
    /// PGP key for the root token: refused (not supported).
    pub root_token_pgp_key: Option<String>,
    /// Not Vault: use this id for the root token instead of a random one
    /// (the dev server's `-dev-root-token-id`).
    pub root_token_id: Option<String>,
}

/// `root_token_id` is a token: `Debug` says only whether it is set.
impl fmt::Debug for InitParams {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InitParams")
            .field("secret_shares", &self.secret_shares)
            .field("secret_threshold", &self.secret_threshold)
            .field("stored_shares", &self.stored_shares)
            .field("pgp_keys", &self.pgp_keys.as_ref().map(Vec::len))
            .field("recovery_shares", &self.recovery_shares)
            .field("recovery_threshold", &self.recovery_threshold)
            .field(
                "recovery_pgp_keys",
                &self.recovery_pgp_keys.as_ref().map(Vec::len),
            )
            .field("root_token_pgp_key", &self.root_token_pgp_key.is_some())
            .field(
                "root_token_id",
                &self.root_token_id.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

/// Vault's `sys/init` response body: the keys and the root token, handed out
/// exactly once. `Debug` prints no key or token.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InitResult {
    /// Unseal key shares, hex (empty for auto seals).
    pub keys: Vec<String>,
    /// Unseal key shares, standard base64.
    pub keys_base64: Vec<String>,
    /// Recovery key shares, hex (auto seals only).
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub recovery_keys: Vec<String>,
    /// Recovery key shares, standard base64.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub recovery_keys_base64: Vec<String>,
    /// The initial root token.
    pub root_token: String,
}

/// The keys and token are wiped from memory when the result is dropped.
impl Drop for InitResult {
    fn drop(&mut self) {
        self.keys.zeroize();
        self.keys_base64.zeroize();
        self.recovery_keys.zeroize();
        self.recovery_keys_base64.zeroize();
        self.root_token.zeroize();
    }
}

impl fmt::Debug for InitResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InitResult")
            .field("keys", &self.keys.len())
            .field("recovery_keys", &self.recovery_keys.len())
            .finish_non_exhaustive()
    }
}

/// Vault's `sys/rekey/init` (and `sys/rekey-recovery-key/init`) body.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct RekeyParams {
    /// Number of new shares.
    pub secret_shares: usize,
    /// New threshold.
    pub secret_threshold: usize,
    /// Vault's stored-shares count; 0 or 1 only.
    pub stored_shares: usize,
    /// Refused (PGP not supported).
    pub pgp_keys: Option<Vec<String>>,
    /// Refused (needs PGP).
    pub backup: bool,
    /// The new shares must be entered once more (`rekey_verify`) before
    /// they replace the old ones.
    pub require_verification: bool,
}

/// Vault's rekey status body (`GET sys/rekey/init`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RekeyStatus {
    /// The rekey's nonce (`""` when none started).
    pub nonce: String,
    /// Whether a rekey is in progress.
    pub started: bool,
    /// The new threshold.
    pub t: usize,
    /// The new number of shares.
    pub n: usize,
    /// Current keys entered so far.
    pub progress: usize,
    /// Current keys needed (the current threshold).
    pub required: usize,
    /// Always null (no PGP).
    pub pgp_fingerprints: Option<Vec<String>>,
    /// Always false (no PGP backup).
    pub backup: bool,
    /// Whether the new shares must be verified before commit.
    pub verification_required: bool,
    /// The verification nonce, once the new shares have been generated.
    #[serde(skip_serializing_if = "String::is_empty", default)]
    pub verification_nonce: String,
}

/// Vault's `sys/rekey/update` response body. `Debug` prints no key.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RekeyUpdateResult {
    /// The rekey's nonce.
    pub nonce: String,
    /// Whether the new keys were generated (they are in `keys`).
    pub complete: bool,
    /// The new shares, hex (only when `complete`).
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub keys: Vec<String>,
    /// The new shares, base64 (only when `complete`).
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub keys_base64: Vec<String>,
    /// Always null (no PGP).
    pub pgp_fingerprints: Option<Vec<String>>,
    /// Always false.
    pub backup: bool,
    /// Whether the new shares must be verified before they take effect.
    pub verification_required: bool,
    /// The nonce to verify with, when verification is required.
    #[serde(skip_serializing_if = "String::is_empty", default)]
    pub verification_nonce: String,
    /// Before completion: current keys entered so far.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub progress: Option<usize>,
    /// Before completion: current keys needed.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub required: Option<usize>,
    /// Before completion: whether a rekey is in progress (always true).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub started: Option<bool>,
}

/// The new keys are wiped from memory when the result is dropped.
impl Drop for RekeyUpdateResult {
    fn drop(&mut self) {
        self.keys.zeroize();
        self.keys_base64.zeroize();
    }
}

impl fmt::Debug for RekeyUpdateResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RekeyUpdateResult")
            .field("nonce", &self.nonce)
            .field("complete", &self.complete)
            .field("keys", &self.keys.len())
            .field("verification_required", &self.verification_required)
            .finish_non_exhaustive()
    }
}

/// Vault's rekey verification status (`GET sys/rekey/verify`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RekeyVerifyStatus {
    /// The verification nonce.
    pub nonce: String,
    /// Whether a verification is in progress.
    pub started: bool,
    /// The new threshold.
    pub t: usize,
    /// The new number of shares.
    pub n: usize,
    /// New shares entered so far.
    pub progress: usize,
}

/// Vault's `sys/rekey/verify` response body.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RekeyVerifyResult {
    /// The verification nonce.
    pub nonce: String,
    /// Whether the rekey took effect.
    pub complete: bool,
    /// Before completion: new shares entered so far.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub progress: Option<usize>,
}

/// Vault's `sys/key-status` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyStatus {
    /// The active key term.
    pub term: u32,
    /// When the active term was installed (RFC 3339).
    pub install_time: String,
    /// Encryptions under the active term so far (estimated).
    pub encryptions: u64,
}

/// Vault's `sys/rotate/config` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RotationConfig {
    /// Encryptions after which the key rotates on its own.
    pub max_operations: u64,
    /// Time after which the key rotates on its own, as a Go-style duration
    /// (`"0s"`: never).
    pub interval: String,
    /// Whether automatic rotation is on.
    pub enabled: bool,
}

/// Figures for `sys/metrics`: a snapshot, cheap to take.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CoreMetrics {
    /// Whether `init` has run (as last observed).
    pub initialized: bool,
    /// Whether the barrier is sealed.
    pub sealed: bool,
    /// The seal type name.
    pub seal_type: String,
    /// Failed auto-unseal attempts since start.
    pub auto_unseal_failures: u64,
    /// Failed manual unseal attempts (wrong key sets) since start.
    pub unseal_failures: u64,
    /// Successful unseals since start.
    pub unseals: u64,
    /// The barrier's active key term (0 while sealed).
    pub barrier_term: u32,
    /// Estimated encryptions under the active term (0 while sealed).
    pub barrier_encryptions: u64,
    /// Automatic key rotations since start.
    pub auto_rotations: u64,
    /// Times this node took the HA lock but could not become active
    /// (loading the keyring, mounts or tokens failed) and gave the lock up
    /// (Vault's `vault.core.leadership_setup_failed` count).
    pub leadership_setup_failures: u64,
    /// The total time those attempts held the lock before giving it up.
    pub leadership_setup_failed_time: std::time::Duration,
    /// Since when the seal has been failing (unreachable or refusing
    /// access) when this node tried to use it; `None` once it worked again.
    /// Drives Vault's `vault.core.seal.unreachable.time`.
    pub seal_unreachable_since: Option<std::time::SystemTime>,
    /// Each seal's health (as `sys/seal-backend-status`).
    pub seals: Vec<crate::seal_set::SealBackendStatus>,
    /// Whether every enabled seal holds a checked wrap.
    pub seals_fully_wrapped: bool,
    /// Whether a seal migration is pending.
    pub seal_migration_pending: bool,
    /// Requests refused since start because no audit device could record
    /// them (Vault's `vault.audit.log_request_failure`).
    pub audit_log_request_failures: u64,
    /// Responses withheld since start because no audit device could record
    /// them (Vault's `vault.audit.log_response_failure`).
    pub audit_log_response_failures: u64,
}

#[cfg(test)]
mod debug_tests {
    use super::InitParams;

    #[test]
    fn init_params_debug_hides_the_root_token_id() {
        let params = InitParams {
            secret_shares: 1,
            secret_threshold: 1,
            root_token_id: Some("my-dev-root-token".into()),
            ..InitParams::default()
        };
        let printed = format!("{params:?}");
        assert!(!printed.contains("my-dev-root-token"), "{printed}");
        assert!(printed.contains("<redacted>"));
    }
}
