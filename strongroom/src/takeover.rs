//! The core's side of taking over a Vault data set (see [`crate::adopt`]):
//! choosing what storage the logical layer serves at unseal, and the
//! explicit upgrade ([`Core::adopt_vault`]).

use std::sync::{Arc, PoisonError};
use std::time::Duration;

use seal_core::Storage;

use tokio_util::sync::CancellationToken;

use crate::CoreError;
use crate::adopt::{self, AdoptStep, Layout, ReadOnlyOverlay, VaultTakeover};
use crate::config::{CLUSTER_INFO_PATH, ClusterInfo};
use crate::core::Core;
use crate::logical::Logical;

/// What [`Core::adopt_vault`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct AdoptReport {
    /// `false` when the storage already held Strongroom's layout.
    pub upgraded: bool,
    /// What was not carried over (unsupported engines and auth methods,
    /// tokens Vault itself would no longer honour), one line each.
    pub not_carried_over: Vec<String>,
}

fn adopt_error(e: adopt::AdoptError) -> CoreError {
    CoreError::VaultTakeover(e.to_string())
}

impl Core {
    /// Builds what serves one active period over `storage` (the barrier,
    /// or the HA active view): the logical layer — over a Vault data set
    /// read-only, upgraded when configured, or over Strongroom's layout —,
    /// the cluster identity (`known`, else read, else created; never
    /// written in a read-only takeover), and the background tasks of a node
    /// that writes (key rotation, seal upkeep), stopped by `ended`. Returns
    /// whether the period is a read-only takeover.
    pub(crate) async fn start_serving(
        &self,
        storage: Arc<dyn Storage>,
        known: Option<ClusterInfo>,
        ended: &CancellationToken,
    ) -> Result<(Arc<Logical>, ClusterInfo, bool), CoreError> {
        let (storage, read_only) = self.takeover_storage(storage).await?;
        let cluster = match known {
            Some(cluster) => cluster,
            None if read_only => match storage.get(CLUSTER_INFO_PATH).await? {
                Some(raw) => serde_json::from_slice(&raw).map_err(|e| CoreError::Corrupt {
                    path: CLUSTER_INFO_PATH,
                    reason: e.to_string(),
                })?,
                None => self.new_cluster_info()?,
            },
            None => self.load_or_create_cluster(storage.as_ref()).await?,
        };
        let logical = Arc::new(
            Logical::with_audit_counters(storage, self.inner.audit_counters.clone()).await?,
        );
        if !read_only {
            self.spawn_writer_tasks(ended);
        }
        Ok((logical, cluster, read_only))
    }

    /// Key-rotation checks and, on auto seals, seal upkeep (re-wrapping
    /// stored keys): both write, so only a node that writes runs them.
    fn spawn_writer_tasks(&self, ended: &CancellationToken) {
        crate::unseal::spawn_rotation_check(Arc::downgrade(&self.inner), ended.clone());
        if self.inner.seal.is_auto() {
            crate::seal_upkeep::spawn(Arc::downgrade(&self.inner), ended.clone());
        }
    }

    /// Runs after the barrier opened: decides which storage the logical
    /// layer serves. Returns it and whether it is a read-only takeover.
    pub(crate) async fn takeover_storage(
        &self,
        barrier: Arc<dyn Storage>,
    ) -> Result<(Arc<dyn Storage>, bool), CoreError> {
        let layout = adopt::detect(barrier.as_ref()).await.map_err(adopt_error)?;
        let mode = self.inner.options.vault_takeover;
        match layout {
            Layout::Strongroom => Ok((barrier, false)),
            Layout::Vault | Layout::Upgrading(_) if mode == VaultTakeover::Upgrade => {
                tracing::warn!(
                    "this storage holds a Vault data set and the configuration asks for the \
                     one-way upgrade to Strongroom's layout: upgrading now"
                );
                self.run_upgrade(barrier.as_ref()).await?;
                Ok((barrier, false))
            }
            Layout::Upgrading(step) if step >= AdoptStep::Switched => {
                tracing::warn!(
                    step = step.as_str(),
                    "an upgrade of this Vault data set was interrupted after it switched to \
                     Strongroom's layout; serving read-only until `strongroom operator adopt \
                     -confirm` finishes it"
                );
                let view: Arc<dyn Storage> = Arc::new(ReadOnlyOverlay::new(barrier, Vec::new()));
                Ok((view, true))
            }
            Layout::Vault | Layout::Upgrading(_) => {
                if let Layout::Upgrading(step) = layout {
                    tracing::warn!(
                        step = step.as_str(),
                        "an upgrade of this Vault data set was interrupted before it switched \
                         layouts; Vault's data is intact and served read-only; run \
                         `strongroom operator adopt -confirm` to finish the upgrade"
                    );
                }
                let (view, report) = adopt::read_only_view(barrier).await.map_err(adopt_error)?;
                tracing::warn!(
                    "this storage holds a data set written by HashiCorp Vault: serving it \
                     READ-ONLY (none of its data is written; with HA only Vault's own lock \
                     key is taken, as Vault takes it); `strongroom operator adopt -confirm` \
                     upgrades it to Strongroom's layout (one-way: back it up first with \
                     `consul kv export`)"
                );
                for line in &report {
                    tracing::warn!("vault takeover: {line}");
                }
                Ok((view, true))
            }
        }
    }

    async fn run_upgrade(&self, barrier: &dyn Storage) -> Result<Vec<String>, CoreError> {
        let pause = self.inner.options.adopt_pause_after;
        let hook = move |step: AdoptStep| {
            tracing::info!(step = step.as_str(), "vault adopt: step is durable");
            if pause == Some(step) {
                tracing::warn!(
                    step = step.as_str(),
                    "vault adopt: paused after this step (test hook adopt_pause_after)"
                );
                // Test-only: hold this step boundary until the test kills
                // the process (blocks one runtime worker for good).
                loop {
                    std::thread::sleep(Duration::from_secs(3600));
                }
            }
        };
        let report = adopt::upgrade(barrier, &hook)
            .await
            .map_err(adopt_error)?
            .unwrap_or_default();
        for line in &report {
            tracing::warn!("vault adopt: not carried over: {line}");
        }
        tracing::info!("vault adopt: the data set now uses Strongroom's layout");
        Ok(report)
    }

    /// Upgrades a Vault data set served read-only to Strongroom's layout,
    /// in place and one-way (`strongroom operator adopt`,
    /// `sys/strongroom/adopt`). Crash-safe: every step is durable and an
    /// interrupted upgrade resumes on the next call or unseal. Afterwards
    /// the node serves the same mounts, secrets, policies and tokens
    /// read-write.
    ///
    /// # Errors
    /// [`CoreError::Sealed`]; [`CoreError::PermissionDenied`] without a
    /// root token; [`CoreError::VaultTakeover`] when the data set does not
    /// convert (nothing visible changed then); storage errors.
    pub async fn adopt_vault(&self, token: &str) -> Result<AdoptReport, CoreError> {
        if self.is_sealed() {
            return Err(CoreError::Sealed);
        }
        // One-way: the root token only, whatever other policies grant.
        let entry = self
            .authorize(token, crate::Operation::Update, "sys/strongroom/adopt")
            .await?;
        if !entry.is_root() {
            return Err(CoreError::PermissionDenied);
        }
        let _op = self.inner.op_lock.lock().await;
        // Only the node that serves writes; with HA its writes go through
        // the fenced view of its active period.
        let ended = self
            .unsealed_state(|u| u.active.as_ref().map(|a| a.ended.clone()))
            .flatten()
            .filter(|e| !e.is_cancelled())
            .ok_or_else(|| self.standby_error())?;
        let view: Arc<dyn Storage> = Arc::new(crate::active_view::ActiveView::new(
            self.inner.barrier.clone(),
            ended.clone(),
        ));
        let layout = adopt::detect(view.as_ref()).await.map_err(adopt_error)?;
        if layout == Layout::Strongroom {
            return Ok(AdoptReport {
                upgraded: false,
                not_carried_over: Vec::new(),
            });
        }
        let report = self.run_upgrade(view.as_ref()).await?;
        let logical =
            Arc::new(Logical::with_audit_counters(view, self.inner.audit_counters.clone()).await?);
        let mut swapped = false;
        if let Some(active) = self
            .inner
            .unsealed
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .as_mut()
            .and_then(|u| u.active.as_mut())
            .filter(|a| a.read_only)
        {
            active.logical = logical;
            active.read_only = false;
            swapped = true;
        }
        if swapped {
            self.spawn_writer_tasks(&ended);
        }
        Ok(AdoptReport {
            upgraded: true,
            not_carried_over: report,
        })
    }

    /// Whether this node serves a Vault data set read-only (the takeover
    /// trial mode); `None` while sealed.
    pub fn is_read_only_takeover(&self) -> Option<bool> {
        self.unsealed_state(|u| u.active.as_ref().map(|a| a.read_only))
            .flatten()
    }
}
