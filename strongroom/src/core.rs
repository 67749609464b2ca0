//! [`Core`] and [`CoreBuilder`]: the state machine and its shared state.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};

use barrier::Barrier;
use seal_core::{HaBackend, Seal, SealType, Storage};
use seal_shamir::{ShamirSeal, UnsealProgress};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::CoreError;
use crate::auto_unseal::{AutoUnsealStatus, AutoUnsealTracker};
use crate::cache::{CacheStats, ReadCache};
use crate::config::{ClusterInfo, RECOVERY_CONFIG_PATH, SEAL_CONFIG_PATH, SealConfig};
use crate::generate_root::GenerateRootOp;
use crate::ha::Ha;
use crate::logical::{AuditCounters, Logical, LogicalRequest, LogicalResponse};
use crate::migrate::{Migration, MigrationHook};
use crate::rekey::RekeySlots;
use crate::seal_set::{NamedSeal, SealBackendStatus, SealSet};
use crate::types::{
    CoreMetrics, CoreOptions, HaMode, HealthStatus, NodeState, SealBackendStatusReport, SealStatus,
    VERSION,
};

/// The seal protecting the root key, as the core needs to see it.
#[derive(Debug, Clone)]
pub(crate) enum SealKind {
    /// Operators hold the KEK's shares; the core owns the seal so it can
    /// install and forget the KEK.
    Shamir(Arc<ShamirSeal>),
    /// Auto seals (AWS KMS, the insecure test seal): one, or several
    /// wrapping the same keys (multi-seal).
    Auto(Arc<SealSet>),
}

impl SealKind {
    pub(crate) fn seal(&self) -> Arc<dyn Seal> {
        match self {
            Self::Shamir(s) => s.clone(),
            Self::Auto(s) => s.clone(),
        }
    }

    pub(crate) fn seal_type(&self) -> SealType {
        match self {
            Self::Shamir(_) => SealType::Shamir,
            Self::Auto(s) => s.seal_type(),
        }
    }

    pub(crate) fn is_auto(&self) -> bool {
        matches!(self, Self::Auto(_))
    }
}

/// Counters behind [`Core::metrics`].
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) auto_unseal_failures: AtomicU64,
    pub(crate) unseal_failures: AtomicU64,
    pub(crate) unseals: AtomicU64,
    pub(crate) auto_rotations: AtomicU64,
    /// Promotions that failed after the HA lock was taken.
    pub(crate) leadership_setup_failures: AtomicU64,
    /// Their total time from taking the lock to giving it up, in µs.
    pub(crate) leadership_setup_failed_micros: AtomicU64,
    /// Unix milliseconds of the first failed attempt to use the seal in the
    /// current run of failures (0: the seal was reachable when last used).
    pub(crate) seal_unreachable_since_ms: AtomicU64,
}

/// What exists only while unsealed.
#[derive(Debug)]
pub(crate) struct Unsealed {
    /// The cluster's identity; `None` only on an HA standby of a store
    /// initialized before init wrote it (the active node writes it).
    pub(crate) cluster: Option<ClusterInfo>,
    /// Cancels the background tasks tied to this unsealed period.
    pub(crate) background: CancellationToken,
    /// What serves requests: always there without HA, only on the active
    /// node with HA.
    pub(crate) active: Option<Active>,
}

/// What exists only while this node serves requests.
#[derive(Debug)]
pub(crate) struct Active {
    /// Mounts, tokens and engines, loaded from storage when the period
    /// began.
    pub(crate) logical: Arc<Logical>,
    /// The HA active period this serves (0 without HA).
    pub(crate) period: u64,
    /// Cancelled when the period ends: stops its background tasks and
    /// closes its storage view.
    pub(crate) ended: CancellationToken,
    /// Serving a Vault data set read-only (nothing is written; see
    /// `takeover`).
    pub(crate) read_only: bool,
}

pub(crate) struct Inner {
    /// The storage as the core sees it: the read cache in front of the
    /// injected storage (everything the core and the barrier read and
    /// write goes through it, so it sees every write of this node).
    pub(crate) physical: Arc<dyn Storage>,
    /// The same cache, for turning it on and off with the serving state.
    pub(crate) cache: Arc<ReadCache>,
    pub(crate) barrier: Arc<Barrier>,
    pub(crate) seal: SealKind,
    /// The disabled seals of a migration away from them (`disabled =
    /// "true"` in the config).
    pub(crate) migrate_from: Option<Arc<SealSet>>,
    /// The migration this node is in, if any (see `migrate`).
    pub(crate) migration: RwLock<Option<Migration>>,
    /// Break-glass: also wrap the root key under the recovery key.
    pub(crate) recovery_unseal: bool,
    /// The seal generation this node unsealed under (see
    /// `SEAL_GEN_INFO_PATH`).
    pub(crate) seal_generation: std::sync::atomic::AtomicU64,
    /// Called after each durable migration step.
    pub(crate) migration_hook: Option<MigrationHook>,
    pub(crate) ha: Option<Ha>,
    pub(crate) options: CoreOptions,
    /// Orders the state changes (init, the end of an unseal, seal, rekey
    /// commit) so they never interleave.
    pub(crate) op_lock: tokio::sync::Mutex<()>,
    /// Shares of the unseal in progress (unseal keys, or recovery keys on
    /// an auto seal sealed by hand).
    pub(crate) progress: UnsealProgress,
    pub(crate) unsealed: RwLock<Option<Unsealed>>,
    /// Once true, stays true: `core/seal-config` was seen.
    pub(crate) initialized: AtomicBool,
    /// An operator sealed this auto-seal node: do not unseal it behind
    /// their back (until restart or an explicit unseal).
    pub(crate) manually_sealed: AtomicBool,
    pub(crate) rekey: tokio::sync::Mutex<RekeySlots>,
    /// The root generation in progress (memory only).
    pub(crate) generate_root: tokio::sync::Mutex<Option<GenerateRootOp>>,
    pub(crate) counters: Counters,
    /// Audit failures, kept across unseals (each logical layer counts here).
    pub(crate) audit_counters: Arc<AuditCounters>,
    /// The node's state as last published (see [`Core::watch_node_state`]).
    pub(crate) state: watch::Sender<NodeState>,
    /// Bumped whenever the serving state (`Unsealed::active`) changes, so
    /// requests that arrive during a promotion can wait for it.
    pub(crate) serving: watch::Sender<u64>,
    /// The auto-unseal loop's last failure and next attempt.
    pub(crate) auto_unseal: Arc<AutoUnsealTracker>,
    /// The standbys this node heard from (`sys/ha-status`).
    pub(crate) ha_peers: crate::ha_status::Peers,
}

impl fmt::Debug for Inner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Core")
            .field("seal_type", &self.seal.seal_type())
            .field("sealed", &self.barrier.is_sealed())
            .field("ha", &self.ha.is_some())
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

/// The Strongroom core: one storage, one seal, and the state machine
/// uninitialized → sealed → unsealed around them.
///
/// Cheap to clone (an `Arc` inside); every clone drives the same core. See
/// the crate docs for an example.
#[derive(Clone)]
pub struct Core {
    pub(crate) inner: Arc<Inner>,
}

impl fmt::Debug for Core {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.inner.fmt(f)
    }
}

/// Assembles a [`Core`] from injected parts (see [`Core::builder`]).
#[derive(Default)]
pub struct CoreBuilder {
    storage: Option<Arc<dyn Storage>>,
    auto_seals: Option<Vec<NamedSeal>>,
    migrate_from: Vec<NamedSeal>,
    recovery_unseal: bool,
    migration_hook: Option<MigrationHook>,
    ha: Option<Arc<dyn HaBackend>>,
    options: CoreOptions,
}

impl fmt::Debug for CoreBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CoreBuilder")
            .field("auto_seals", &self.auto_seals.as_ref().map(Vec::len))
            .field("migrate_from", &self.migrate_from.len())
            .field("recovery_unseal", &self.recovery_unseal)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl CoreBuilder {
    /// The physical storage (redb, Consul, memory). Required.
    #[must_use]
    pub fn storage(mut self, storage: Arc<dyn Storage>) -> Self {
        self.storage = Some(storage);
        self
    }

    /// Protect the root key with Shamir unseal keys (the default): the core
    /// creates its own [`ShamirSeal`] and operators enter key shares.
    #[must_use]
    pub fn shamir(mut self) -> Self {
        self.auto_seals = None;
        self
    }

    /// Protect the root key with an auto seal (AWS KMS, or the insecure test
    /// seal): the core unseals itself and init hands out recovery keys.
    #[must_use]
    pub fn auto_seal(mut self, seal: Arc<dyn Seal>) -> Self {
        self.auto_seals = Some(vec![NamedSeal::single(seal)]);
        self
    }

    /// Protects the root key with several auto seals at once (Vault 1.16's
    /// multi-seal): each wraps it, any one unseals, tried by priority.
    #[must_use]
    pub fn auto_seals(mut self, seals: Vec<NamedSeal>) -> Self {
        self.auto_seals = Some(seals);
        self
    }

    /// The seals this node migrates away from (Vault's `disabled = "true"`
    /// stanzas). With [`shamir`](Self::shamir) it is a migration to Shamir;
    /// with auto seals, from these to those. The migration runs when the
    /// keys are entered with `migrate` ([`Core::unseal_migrate`]).
    #[must_use]
    pub fn migrate_from(mut self, seals: Vec<NamedSeal>) -> Self {
        self.migrate_from = seals;
        self
    }

    /// Break-glass (off by default): also wrap the root key under the
    /// recovery key, so a quorum of recovery-key holders can unseal when
    /// every auto seal is gone. They become able to unseal: that is the
    /// point, and the trade-off.
    #[must_use]
    pub fn recovery_unseal(mut self, on: bool) -> Self {
        self.recovery_unseal = on;
        self
    }

    /// Called after each durable step of a seal migration (logging, tests
    /// that stop there as a crash would).
    #[must_use]
    pub fn migration_hook(mut self, hook: MigrationHook) -> Self {
        self.migration_hook = Some(hook);
        self
    }

    /// An HA lock backend (Consul sessions; `MemoryHaBackend` for several
    /// cores in one process). With it an unsealed node contends for the
    /// lock and serves requests only while it holds it; otherwise it is a
    /// standby that knows the active node's address (from
    /// [`CoreOptions::api_addr`] and [`CoreOptions::cluster_addr`], which
    /// every node should set).
    #[must_use]
    pub fn ha(mut self, ha: Arc<dyn HaBackend>) -> Self {
        self.ha = Some(ha);
        self
    }

    /// Names, addresses and background-task timings.
    #[must_use]
    pub fn options(mut self, options: CoreOptions) -> Self {
        self.options = options;
        self
    }

    /// Builds the core. It starts sealed; with an auto seal it tries once
    /// to unseal itself (a failure is logged and counted, not returned: the
    /// node stays sealed and [`Core::spawn_auto_unseal`] keeps trying).
    ///
    /// A storage that is unavailable at start (a transient error) does not
    /// fail the build: the node starts sealed and the auto-unseal loop keeps
    /// trying.
    ///
    /// # Errors
    /// [`CoreError::Config`] without a storage, with an auto seal of the
    /// Shamir type, with a zero backoff, or when the storage was initialized
    /// with the other kind of seal; [`CoreError::Storage`] (non-transient) /
    /// [`CoreError::Corrupt`] when the stored seal configuration cannot be
    /// read.
    pub async fn build(self) -> Result<Core, CoreError> {
        let storage = self.storage.ok_or_else(|| {
            CoreError::Config("no storage given: call CoreBuilder::storage".into())
        })?;
        let seal = match self.auto_seals {
            Some(seals) if seals.iter().any(|s| s.seal.seal_type() == SealType::Shamir) => {
                return Err(CoreError::Config(
                    "a Shamir seal is not an auto seal: call CoreBuilder::shamir instead".into(),
                ));
            }
            Some(seals) => SealKind::Auto(Arc::new(
                SealSet::new(seals, false).map_err(CoreError::Config)?,
            )),
            None => SealKind::Shamir(Arc::new(ShamirSeal::new())),
        };
        let migrate_from = if self.migrate_from.is_empty() {
            None
        } else {
            Some(Arc::new(
                SealSet::new(self.migrate_from, true).map_err(CoreError::Config)?,
            ))
        };
        if self.recovery_unseal {
            if seal.is_auto() {
                tracing::warn!(
                    "recovery_unseal (break-glass) is on: the root key is also wrapped under the \
                     recovery key, so a quorum of recovery-key holders can unseal without any \
                     auto seal; guard the recovery keys like unseal keys"
                );
            } else {
                tracing::warn!("recovery_unseal has no effect with Shamir unseal keys");
            }
        }
        if self.options.auto_unseal_initial_backoff.is_zero()
            || self.options.auto_unseal_max_backoff < self.options.auto_unseal_initial_backoff
        {
            return Err(CoreError::Config(
                "auto-unseal backoff: the initial wait must be above zero and at most the maximum"
                    .into(),
            ));
        }
        let cache = Arc::new(ReadCache::new(storage, self.options.cache));
        let storage: Arc<dyn Storage> = cache.clone();
        let barrier = Arc::new(Barrier::new(storage.clone()));
        let ha = self.ha.map(|backend| Ha::start(backend, &self.options));
        let core = Core {
            inner: Arc::new(Inner {
                physical: storage,
                cache,
                barrier,
                seal,
                migrate_from,
                migration: RwLock::new(None),
                recovery_unseal: self.recovery_unseal,
                seal_generation: std::sync::atomic::AtomicU64::new(0),
                migration_hook: self.migration_hook,
                ha,
                options: self.options,
                op_lock: tokio::sync::Mutex::new(()),
                progress: UnsealProgress::new(),
                unsealed: RwLock::new(None),
                initialized: AtomicBool::new(false),
                manually_sealed: AtomicBool::new(false),
                rekey: tokio::sync::Mutex::new(RekeySlots::default()),
                generate_root: tokio::sync::Mutex::new(None),
                counters: Counters::default(),
                audit_counters: Arc::default(),
                state: watch::Sender::new(NodeState {
                    initialized: false,
                    sealed: true,
                    mode: HaMode::Disabled,
                }),
                serving: watch::Sender::new(0),
                auto_unseal: Arc::default(),
                ha_peers: crate::ha_status::Peers::default(),
            }),
        };
        core.start_following_election();
        core.publish_state();
        match core.check_stored_seal_type().await {
            Ok(()) => {}
            // Storage down at start (Consul restarting): start sealed and
            // let the retry loop and probes report it, rather than refuse
            // to start.
            Err(CoreError::Storage(e)) if e.is_transient() => {
                tracing::warn!(error = %e, "storage unavailable at start: the node starts sealed");
                return Ok(core);
            }
            Err(e) => return Err(e),
        }
        if core.pending_migration() == Some(Migration::AutoToAuto) {
            core.confirm_auto_to_auto().await;
        }
        if core.inner.seal.is_auto()
            && core.pending_migration().is_none()
            && core.is_initialized().await?
        {
            // One attempt now; the retry loop is the caller's to start.
            if let Err(failure) = core.try_auto_unseal().await {
                core.record_auto_unseal_failure(&failure);
            }
        }
        Ok(core)
    }
}

impl Core {
    /// Starts assembling a core.
    pub fn builder() -> CoreBuilder {
        CoreBuilder::default()
    }

    /// Compares the stored seal config with this node's seals: the same
    /// kind runs as usual; another kind is a seal migration (see
    /// `migrate`), which this node then waits for.
    async fn check_stored_seal_type(&self) -> Result<(), CoreError> {
        let Some(config) = SealConfig::load(&*self.inner.physical, SEAL_CONFIG_PATH).await? else {
            return Ok(());
        };
        self.decide_migration(&config)?;
        self.inner.initialized.store(true, Ordering::SeqCst);
        self.publish_state();
        Ok(())
    }

    /// Whether `init` has run against the storage (`core/seal-config`
    /// exists). Once seen, remembered.
    pub(crate) async fn is_initialized(&self) -> Result<bool, CoreError> {
        if self.inner.initialized.load(Ordering::SeqCst) {
            return Ok(true);
        }
        let found = self.inner.physical.get(SEAL_CONFIG_PATH).await?.is_some();
        if found {
            self.inner.initialized.store(true, Ordering::SeqCst);
        }
        Ok(found)
    }

    /// Whether the barrier is sealed.
    pub fn is_sealed(&self) -> bool {
        self.inner.barrier.is_sealed()
    }

    /// The seal type this core was built with.
    pub fn seal_type(&self) -> SealType {
        self.inner.seal.seal_type()
    }

    /// The read cache's counters (hits, misses, entries, whether it is on).
    /// It is on only while this node serves: unsealed without HA, or
    /// active with HA.
    pub fn read_cache_stats(&self) -> CacheStats {
        self.inner.cache.stats()
    }

    /// The barrier, for callers that need raw encrypted storage (benches,
    /// embedders that keep their own data beside the logical layer).
    pub fn barrier(&self) -> &Arc<Barrier> {
        &self.inner.barrier
    }

    pub(crate) fn unsealed_state<T>(&self, f: impl FnOnce(&Unsealed) -> T) -> Option<T> {
        self.inner
            .unsealed
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .map(f)
    }

    /// The logical layer (mounts, tokens, KV engines) of the unsealed core,
    /// for embedders that mount engines themselves (the `-dev` server mounts
    /// KV v2 at `secret/`). It lives only while unsealed (and, with HA,
    /// active): drop it when done.
    ///
    /// # Errors
    /// [`CoreError::Sealed`] while sealed; [`CoreError::Standby`] on an HA
    /// node that is not active.
    pub fn logical(&self) -> Result<Arc<Logical>, CoreError> {
        let serving = |u: &Unsealed| {
            u.active
                .as_ref()
                .filter(|a| !a.ended.is_cancelled())
                .map(|a| a.logical.clone())
        };
        match self.unsealed_state(serving) {
            None => Err(CoreError::Sealed),
            Some(Some(logical)) => Ok(logical),
            Some(None) => Err(self.standby_error()),
        }
    }

    /// The configuration whose shares unseal this node: the barrier config
    /// for Shamir, the recovery config for auto seals.
    pub(crate) async fn unseal_config(&self) -> Result<Option<SealConfig>, CoreError> {
        let recovery = match self.pending_migration() {
            Some(m) => m.takes_recovery_keys(),
            None => self.inner.seal.is_auto(),
        };
        let path = if recovery {
            RECOVERY_CONFIG_PATH
        } else {
            SEAL_CONFIG_PATH
        };
        SealConfig::load(&*self.inner.physical, path).await
    }

    /// Vault's `sys/seal-status`.
    ///
    /// # Errors
    /// [`CoreError::Storage`] / [`CoreError::Corrupt`] when the stored seal
    /// configuration cannot be read.
    pub async fn seal_status(&self) -> Result<SealStatus, CoreError> {
        let initialized = self.is_initialized().await?;
        let config = if initialized {
            self.unseal_config().await?
        } else {
            None
        };
        let progress = self.inner.progress.status();
        let cluster = self.unsealed_state(|u| u.cluster.clone()).flatten();
        Ok(SealStatus {
            seal_type: self.inner.seal.seal_type().as_str().to_owned(),
            initialized,
            sealed: self.is_sealed(),
            t: config.as_ref().map_or(0, |c| c.secret_threshold),
            n: config.as_ref().map_or(0, |c| c.secret_shares),
            progress: progress.progress,
            nonce: progress.nonce.unwrap_or_default(),
            version: VERSION.to_owned(),
            build_date: String::new(),
            migration: self.pending_migration().is_some(),
            cluster_name: cluster.as_ref().map(|c| c.name.clone()),
            cluster_id: cluster.map(|c| c.id),
            recovery_seal: match self.pending_migration() {
                Some(m) => m.takes_recovery_keys(),
                None => self.inner.seal.is_auto(),
            },
            storage_type: Some(self.inner.options.storage_type.clone()),
        })
    }

    /// Vault's `sys/health` body. Never fails: a storage error while
    /// checking initialization reads as "not initialized", which probes
    /// then report as unhealthy.
    pub async fn health(&self) -> HealthStatus {
        let initialized = match self.is_initialized().await {
            Ok(v) => v,
            Err(err) => {
                // Debug, not warn: probes call this every few seconds, and
                // the outage is already logged by whatever else needs storage.
                tracing::debug!(error = %err, "health: cannot read core/seal-config");
                false
            }
        };
        let cluster = self.unsealed_state(|u| u.cluster.clone()).flatten();
        let sealed = self.is_sealed();
        HealthStatus {
            initialized,
            sealed,
            standby: !sealed && !self.node_state().mode.serves(),
            performance_standby: false,
            replication_performance_mode: "disabled".to_owned(),
            replication_dr_mode: "disabled".to_owned(),
            server_time_utc: time::OffsetDateTime::now_utc().unix_timestamp(),
            version: VERSION.to_owned(),
            enterprise: false,
            cluster_name: cluster.as_ref().map(|c| c.name.clone()),
            cluster_id: cluster.map(|c| c.id),
        }
    }

    /// Serves a logical request (KV, tokens, mounts) through the barrier.
    /// On an HA node that has just taken the lock, waits (briefly) until it
    /// has loaded its state from storage.
    ///
    /// # Errors
    /// [`CoreError::Sealed`] while sealed; [`CoreError::Standby`] on an HA
    /// standby (carrying the active node's address);
    /// [`CoreError::LeadershipLost`] when the node stopped being active
    /// while serving the request; otherwise the logical layer's error
    /// ([`CoreError::Logical`]), whose `status()` is Vault's code.
    pub async fn handle(&self, req: LogicalRequest) -> Result<LogicalResponse, CoreError> {
        let (logical, ended) = self.serving().await?;
        match logical.handle(req).await {
            Ok(response) => Ok(response),
            Err(_) if ended.is_cancelled() => Err(CoreError::LeadershipLost),
            Err(e) => Err(e.into()),
        }
    }

    /// Closes and reopens every audit device's file, so `logrotate` can move
    /// them away (the server calls it on SIGHUP). Does nothing while sealed.
    pub fn reopen_audit_files(&self) {
        if let Ok(logical) = self.logical() {
            logical.reopen_audit_files();
        }
    }

    /// A snapshot of the core's figures for `sys/metrics`.
    pub async fn metrics(&self) -> CoreMetrics {
        let c = &self.inner.counters;
        let backends = self.seal_backend_status();
        let (barrier_term, barrier_encryptions) = match self.inner.barrier.key_status().await {
            Ok(status) => (status.term, status.encryptions),
            Err(_) => (0, 0),
        };
        CoreMetrics {
            initialized: self.inner.initialized.load(Ordering::SeqCst),
            sealed: self.is_sealed(),
            seal_type: self.inner.seal.seal_type().as_str().to_owned(),
            auto_unseal_failures: c.auto_unseal_failures.load(Ordering::Relaxed),
            unseal_failures: c.unseal_failures.load(Ordering::Relaxed),
            unseals: c.unseals.load(Ordering::Relaxed),
            barrier_term,
            barrier_encryptions,
            auto_rotations: c.auto_rotations.load(Ordering::Relaxed),
            leadership_setup_failures: c.leadership_setup_failures.load(Ordering::Relaxed),
            leadership_setup_failed_time: std::time::Duration::from_micros(
                c.leadership_setup_failed_micros.load(Ordering::Relaxed),
            ),
            seal_unreachable_since: match c.seal_unreachable_since_ms.load(Ordering::Relaxed) {
                0 => None,
                ms => Some(std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms)),
            },
            seals: backends.backends,
            seals_fully_wrapped: backends.fully_wrapped,
            seal_migration_pending: self.pending_migration().is_some(),
            audit_log_request_failures: self.inner.audit_counters.request_failures(),
            audit_log_response_failures: self.inner.audit_counters.response_failures(),
        }
    }

    /// Vault's `sys/seal-backend-status`: each seal's health, and whether
    /// every enabled seal holds a checked wrap of the keys
    /// (`fully_wrapped`). Disabled (migration source) seals are listed with
    /// `disabled: true`.
    pub fn seal_backend_status(&self) -> SealBackendStatusReport {
        let (mut backends, fully_wrapped) = match &self.inner.seal {
            SealKind::Shamir(_) => (
                vec![SealBackendStatus {
                    name: "shamir".into(),
                    seal_type: "shamir".into(),
                    priority: 1,
                    healthy: true,
                    configured: true,
                    disabled: false,
                    unhealthy_since: None,
                    last_error: None,
                }],
                !self.is_sealed(),
            ),
            SealKind::Auto(set) => (set.backend_status(), set.fully_wrapped()),
        };
        let enabled_healthy = backends.iter().all(|b| b.healthy);
        let unhealthy_since = backends
            .iter()
            .filter_map(|b| b.unhealthy_since.clone())
            .min();
        if let Some(from) = &self.inner.migrate_from {
            backends.extend(from.backend_status());
        }
        SealBackendStatusReport {
            healthy: enabled_healthy,
            unhealthy_since,
            fully_wrapped,
            backends,
        }
    }

    /// Why the last auto-unseal attempt failed, in operator words (`None`
    /// after a success or when none failed). For logs and status pages.
    pub fn last_auto_unseal_error(&self) -> Option<String> {
        self.inner.auto_unseal.last_error()
    }

    /// What the auto-unseal loop is doing: the last failure, since when the
    /// seal fails, the next attempt. Needs no token (a sealed node has none
    /// to check); Shamir nodes answer [`AutoUnsealState::NotApplicable`](crate::AutoUnsealState::NotApplicable).
    pub fn auto_unseal_status(&self) -> AutoUnsealStatus {
        self.inner.auto_unseal.status(
            self.inner.seal.seal_type().as_str(),
            self.inner.seal.is_auto(),
            self.is_sealed(),
            self.inner.manually_sealed.load(Ordering::SeqCst),
        )
    }
}
