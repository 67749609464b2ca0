//! [`Core`] and [`CoreBuilder`]: the state machine and its shared state.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};

use barrier::Barrier;
use seal_core::{HaBackend, Seal, SealType, Storage};
use seal_shamir::{ShamirSeal, UnsealProgress};
use tokio_util::sync::CancellationToken;

use crate::CoreError;
use crate::config::{ClusterInfo, RECOVERY_CONFIG_PATH, SEAL_CONFIG_PATH, SealConfig};
use crate::generate_root::GenerateRootOp;
use crate::logical::{Logical, LogicalRequest, LogicalResponse};
use crate::rekey::RekeySlots;
use crate::types::{CoreMetrics, CoreOptions, HealthStatus, LeaderStatus, SealStatus, VERSION};

/// The seal protecting the root key, as the core needs to see it.
#[derive(Debug, Clone)]
pub(crate) enum SealKind {
    /// Operators hold the KEK's shares; the core owns the seal so it can
    /// install and forget the KEK.
    Shamir(Arc<ShamirSeal>),
    /// A seal that unseals on its own (AWS KMS, the insecure test seal).
    Auto(Arc<dyn Seal>),
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
    /// Unix milliseconds of the first failed attempt to use the seal in the
    /// current run of failures (0: the seal was reachable when last used).
    pub(crate) seal_unreachable_since_ms: AtomicU64,
}

/// What exists only while unsealed.
#[derive(Debug)]
pub(crate) struct Unsealed {
    pub(crate) logical: Arc<Logical>,
    pub(crate) cluster: ClusterInfo,
    /// Cancels the background tasks tied to this unsealed period.
    pub(crate) background: CancellationToken,
}

pub(crate) struct Inner {
    pub(crate) physical: Arc<dyn Storage>,
    pub(crate) barrier: Arc<Barrier>,
    pub(crate) seal: SealKind,
    pub(crate) ha: Option<Arc<dyn HaBackend>>,
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
    pub(crate) last_auto_unseal_error: RwLock<Option<String>>,
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
#[derive(Debug, Default)]
pub struct CoreBuilder {
    storage: Option<Arc<dyn Storage>>,
    auto_seal: Option<Arc<dyn Seal>>,
    ha: Option<Arc<dyn HaBackend>>,
    options: CoreOptions,
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
        self.auto_seal = None;
        self
    }

    /// Protect the root key with an auto seal (AWS KMS, or the insecure test
    /// seal): the core unseals itself and init hands out recovery keys.
    #[must_use]
    pub fn auto_seal(mut self, seal: Arc<dyn Seal>) -> Self {
        self.auto_seal = Some(seal);
        self
    }

    /// An HA lock backend. Accepted and reported, but active/standby
    /// election is not implemented yet: the node behaves as the only one.
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
        let seal = match self.auto_seal {
            Some(seal) if seal.seal_type() == SealType::Shamir => {
                return Err(CoreError::Config(
                    "a Shamir seal is not an auto seal: call CoreBuilder::shamir instead".into(),
                ));
            }
            Some(seal) => SealKind::Auto(seal),
            None => SealKind::Shamir(Arc::new(ShamirSeal::new())),
        };
        if self.options.auto_unseal_initial_backoff.is_zero()
            || self.options.auto_unseal_max_backoff < self.options.auto_unseal_initial_backoff
        {
            return Err(CoreError::Config(
                "auto-unseal backoff: the initial wait must be above zero and at most the maximum"
                    .into(),
            ));
        }
        let barrier = Arc::new(Barrier::new(storage.clone()));
        let core = Core {
            inner: Arc::new(Inner {
                physical: storage,
                barrier,
                seal,
                ha: self.ha,
                options: self.options,
                op_lock: tokio::sync::Mutex::new(()),
                progress: UnsealProgress::new(),
                unsealed: RwLock::new(None),
                initialized: AtomicBool::new(false),
                manually_sealed: AtomicBool::new(false),
                rekey: tokio::sync::Mutex::new(RekeySlots::default()),
                generate_root: tokio::sync::Mutex::new(None),
                counters: Counters::default(),
                last_auto_unseal_error: RwLock::new(None),
            }),
        };
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
        if core.inner.seal.is_auto() && core.is_initialized().await? {
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

    /// Refuses to run a Shamir core on storage an auto seal initialized (and
    /// the reverse): that is a seal migration, which is not supported yet,
    /// and guessing would lock operators out.
    async fn check_stored_seal_type(&self) -> Result<(), CoreError> {
        let Some(config) = SealConfig::load(&*self.inner.physical, SEAL_CONFIG_PATH).await? else {
            return Ok(());
        };
        let configured = self.inner.seal.seal_type();
        let stored_auto = config.seal_type != SealType::Shamir.as_str();
        if stored_auto != configured.is_auto() {
            return Err(CoreError::Config(format!(
                "the storage was initialized with a {:?} seal but this node is configured with a \
                 {} seal; seal migration is not supported: configure the seal the storage was \
                 initialized with",
                config.seal_type,
                configured.as_str()
            )));
        }
        self.inner.initialized.store(true, Ordering::SeqCst);
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
    /// KV v2 at `secret/`). It lives only while unsealed: drop it when done.
    ///
    /// # Errors
    /// [`CoreError::Sealed`] while sealed.
    pub fn logical(&self) -> Result<Arc<Logical>, CoreError> {
        self.unsealed_state(|u| u.logical.clone())
            .ok_or(CoreError::Sealed)
    }

    /// The configuration whose shares unseal this node: the barrier config
    /// for Shamir, the recovery config for auto seals.
    pub(crate) async fn unseal_config(&self) -> Result<Option<SealConfig>, CoreError> {
        let path = if self.inner.seal.is_auto() {
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
        let cluster = self.unsealed_state(|u| u.cluster.clone());
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
            migration: false,
            cluster_name: cluster.as_ref().map(|c| c.name.clone()),
            cluster_id: cluster.map(|c| c.id),
            recovery_seal: self.inner.seal.is_auto(),
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
        let cluster = self.unsealed_state(|u| u.cluster.clone());
        HealthStatus {
            initialized,
            sealed: self.is_sealed(),
            standby: false,
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

    /// Vault's `sys/leader`. Until HA lands, `ha_enabled` is false (which
    /// Vault answers with 200 even while sealed).
    ///
    /// # Errors
    /// None today; the HA issue adds [`CoreError::Sealed`] for HA nodes.
    pub async fn leader(&self) -> Result<LeaderStatus, CoreError> {
        Ok(LeaderStatus {
            ha_enabled: false,
            is_self: false,
            active_time: None,
            leader_address: String::new(),
            leader_cluster_address: String::new(),
            performance_standby: false,
            performance_standby_last_remote_wal: 0,
        })
    }

    /// Serves a logical request (KV, tokens, mounts) through the barrier.
    ///
    /// # Errors
    /// [`CoreError::Sealed`] while sealed; otherwise the logical layer's
    /// error ([`CoreError::Logical`]), whose `status()` is Vault's code.
    pub async fn handle(&self, req: LogicalRequest) -> Result<LogicalResponse, CoreError> {
        let logical = self.logical()?;
        Ok(logical.handle(req).await?)
    }

    /// A snapshot of the core's figures for `sys/metrics`.
    pub async fn metrics(&self) -> CoreMetrics {
        let c = &self.inner.counters;
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
            seal_unreachable_since: match c.seal_unreachable_since_ms.load(Ordering::Relaxed) {
                0 => None,
                ms => Some(std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms)),
            },
        }
    }

    /// Why the last auto-unseal attempt failed, in operator words (`None`
    /// after a success or when none failed). For logs and status pages.
    pub fn last_auto_unseal_error(&self) -> Option<String> {
        self.inner
            .last_auto_unseal_error
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}
