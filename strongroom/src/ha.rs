//! Active/standby: how the core follows the HA election.
//!
//! With an HA backend every unsealed node contends for the lock
//! ([`ha_lock::Election`]); the holder is **active**, the others are
//! **standbys**. The core reacts to the election's role:
//!
//! * **Promotion** (the lock was taken): reload the keyring from storage
//!   (the previous active node may have rotated it or rekeyed the root
//!   key), load mounts and tokens fresh, start the active period's
//!   background tasks (auto-rotation), then serve. Requests that arrive
//!   meanwhile wait for it.
//! * **Demotion** (the lock was lost, given up, or the node seals): the
//!   active period ends *before* the lock is released — its storage view
//!   refuses every operation from then on and its tasks stop — and the
//!   logical layer is dropped. The barrier stays unsealed: a standby can be
//!   promoted again without operators.
//!
//! Only the active node reads and writes through the logical layer, so its
//! caches (mounts, tokens, and the read cache in front of storage, which is
//! emptied and turned on at promotion and emptied and turned off at
//! demotion) are coherent; a standby answers [`CoreError::Standby`] with the
//! active node's address, which the HTTP layer forwards to.

use std::sync::{Arc, PoisonError, Weak};
use std::time::{Duration, Instant};

use ha_lock::{ActivePeriod, Advertisement, Election, ElectionConfig, Role};
use seal_core::{HaBackend, Storage};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::CoreError;
use crate::active_view::ActiveView;
use crate::config::{CLUSTER_INFO_PATH, ClusterInfo};
use crate::core::{Active, Core, Inner};
use crate::logical::{Logical, Operation};
use crate::types::{CoreOptions, HaMode, LeaderAddress, LeaderStatus, NodeState};

/// How long a request waits for a node that has just taken the lock to
/// finish loading its state before it is told to go elsewhere.
const PROMOTION_WAIT: Duration = Duration::from_secs(10);

/// The HA side of a core: its election.
#[derive(Debug)]
pub(crate) struct Ha {
    pub(crate) election: Election,
}

impl Ha {
    /// Starts the election (idle until the node unseals).
    pub(crate) fn start(backend: Arc<dyn HaBackend>, options: &CoreOptions) -> Self {
        let api_addr = options.api_addr.clone().unwrap_or_default();
        if api_addr.is_empty() {
            tracing::warn!(
                "HA is enabled but no api_addr is set: standbys will not know where to send \
                 requests while this node is active; set api_addr"
            );
        }
        let me = Advertisement::new(
            api_addr,
            options.cluster_addr.clone().unwrap_or_default(),
            uuid::Uuid::new_v4().to_string(),
        );
        let config = ElectionConfig::default().with_step_down_grace(options.step_down_grace);
        Self {
            election: Election::start(backend, me, config),
        }
    }
}

fn leader_address(ad: &Advertisement) -> LeaderAddress {
    LeaderAddress {
        api_addr: ad.api_addr.clone(),
        cluster_addr: ad.cluster_addr.clone(),
    }
}

impl Core {
    /// Whether an HA backend is configured.
    pub fn ha_enabled(&self) -> bool {
        self.inner.ha.is_some()
    }

    /// Where this node stands now: sealed or not, and its HA role with the
    /// active node's address.
    pub fn node_state(&self) -> NodeState {
        let sealed = self.is_sealed();
        let mode = match &self.inner.ha {
            None => HaMode::Disabled,
            Some(_) if sealed => HaMode::Standby { leader: None },
            Some(ha) => match ha.election.current() {
                Role::Active { .. } => HaMode::Active,
                Role::Standby { leader } => HaMode::Standby {
                    leader: leader.as_ref().map(leader_address),
                },
                Role::Idle => HaMode::Standby { leader: None },
            },
        };
        NodeState {
            initialized: self
                .inner
                .initialized
                .load(std::sync::atomic::Ordering::SeqCst),
            sealed,
            mode,
        }
    }

    /// A receiver of [`node_state`](Self::node_state) changes (seal,
    /// unseal, promotion, demotion, a new active node), for whoever
    /// publishes the node's state: Consul service registration, Kubernetes
    /// labels, metrics.
    pub fn watch_node_state(&self) -> watch::Receiver<NodeState> {
        self.inner.state.subscribe()
    }

    /// Publishes the current state if it changed.
    pub(crate) fn publish_state(&self) {
        let now = self.node_state();
        self.inner.state.send_if_modified(|state| {
            if *state == now {
                false
            } else {
                *state = now;
                true
            }
        });
    }

    /// The standby error with the active node's address, if known.
    pub(crate) fn standby_error(&self) -> CoreError {
        CoreError::Standby {
            leader_address: match self.node_state().mode {
                HaMode::Standby {
                    leader: Some(leader),
                } => Some(leader.api_addr),
                _ => None,
            },
        }
    }

    /// Vault's `sys/leader`: whether HA is enabled, whether this node is the
    /// active one (and since when), and the active node's addresses.
    ///
    /// # Errors
    /// [`CoreError::Sealed`] on a sealed HA node (as Vault); without HA it
    /// answers `ha_enabled: false` even while sealed.
    pub async fn leader(&self) -> Result<LeaderStatus, CoreError> {
        let mut status = LeaderStatus {
            ha_enabled: false,
            is_self: false,
            active_time: None,
            leader_address: String::new(),
            leader_cluster_address: String::new(),
            performance_standby: false,
            performance_standby_last_remote_wal: 0,
        };
        let Some(ha) = &self.inner.ha else {
            return Ok(status);
        };
        if self.is_sealed() {
            return Err(CoreError::Sealed);
        }
        status.ha_enabled = true;
        match ha.election.current() {
            Role::Active { since, .. } => {
                let me = ha.election.advertisement();
                status.is_self = true;
                status.active_time = OffsetDateTime::from(since).format(&Rfc3339).ok();
                status.leader_address.clone_from(&me.api_addr);
                status.leader_cluster_address.clone_from(&me.cluster_addr);
            }
            Role::Standby {
                leader: Some(leader),
            } => {
                status.leader_address = leader.api_addr;
                status.leader_cluster_address = leader.cluster_addr;
            }
            Role::Standby { leader: None } | Role::Idle => {}
        }
        Ok(status)
    }

    /// Vault's `sys/step-down`: the active node gives up the lock so another
    /// node takes over; it becomes a standby (still unsealed) and contends
    /// again only once another node holds the lock (or after
    /// [`CoreOptions::step_down_grace`] when none does). Without HA there
    /// is nothing to give up and it succeeds, as in Vault.
    ///
    /// # Errors
    /// [`CoreError::PermissionDenied`] for a missing or invalid token, a 403
    /// [`CoreError::Logical`] without `update` and `sudo` on
    /// `sys/step-down` (the token's ACL decides, as for `sys/seal`);
    /// [`CoreError::Standby`] on a standby (the request belongs to the
    /// active node); [`CoreError::Sealed`].
    pub async fn step_down(&self, token: &str) -> Result<(), CoreError> {
        self.authorize(token, Operation::Update, "sys/step-down")
            .await?;
        if let Some(ha) = &self.inner.ha
            && ha.election.step_down().await
        {
            tracing::info!("stepped down: the HA lock was released for another node to take");
        }
        Ok(())
    }

    /// The serving logical layer and the token that ends its period. On an
    /// HA node that holds the lock but is still loading its state, waits
    /// for it (up to [`PROMOTION_WAIT`]).
    pub(crate) async fn serving(&self) -> Result<(Arc<Logical>, CancellationToken), CoreError> {
        let deadline = tokio::time::Instant::now() + PROMOTION_WAIT;
        let mut changes = self.inner.serving.subscribe();
        loop {
            changes.borrow_and_update();
            // A period that ended is not serving, even before the follower
            // has dropped it.
            let current = self.unsealed_state(|u| {
                u.active
                    .as_ref()
                    .filter(|a| !a.ended.is_cancelled())
                    .map(|a| (a.logical.clone(), a.ended.clone()))
            });
            let ha = match (current, &self.inner.ha) {
                (None, _) => return Err(CoreError::Sealed),
                (Some(Some(serving)), _) => return Ok(serving),
                (Some(None), None) => return Err(CoreError::Sealed),
                (Some(None), Some(ha)) => ha,
            };
            match ha.election.current() {
                Role::Active { period, .. } if !period.is_ended() => {
                    if tokio::time::timeout_at(deadline, changes.changed())
                        .await
                        .is_err()
                    {
                        return Err(CoreError::Standby {
                            leader_address: None,
                        });
                    }
                }
                _ => return Err(self.standby_error()),
            }
        }
    }

    /// Starts the task that follows the election's role (with HA only).
    pub(crate) fn start_following_election(&self) {
        let Some(ha) = &self.inner.ha else { return };
        let roles = ha.election.role();
        tokio::spawn(follow(Arc::downgrade(&self.inner), roles));
    }

    /// Starts contending, after an unseal.
    pub(crate) fn contend(&self) {
        if let Some(ha) = &self.inner.ha {
            ha.election.contend();
        }
        self.publish_state();
    }

    /// Stops contending and waits until the lock is released (before a
    /// seal): the active period ends first.
    pub(crate) async fn withdraw(&self) {
        if let Some(ha) = &self.inner.ha {
            ha.election.withdraw().await;
            self.demote_unless(None);
        }
    }

    /// Stops the election for good, releasing the lock (process shutdown).
    pub(crate) async fn stop_election(&self) {
        if let Some(ha) = &self.inner.ha {
            ha.election.shutdown().await;
            self.demote_unless(None);
        }
    }

    /// Drops the serving state unless it belongs to active period `keep`.
    fn demote_unless(&self, keep: Option<u64>) {
        let previous = {
            let mut guard = self
                .inner
                .unsealed
                .write()
                .unwrap_or_else(PoisonError::into_inner);
            guard.as_mut().and_then(|u| {
                if u.active.as_ref().is_some_and(|a| Some(a.period) != keep) {
                    u.active.take()
                } else {
                    None
                }
            })
        };
        if let Some(active) = previous {
            active.ended.cancel();
            // Another node may write from now on.
            self.inner.cache.deactivate();
            self.inner.serving.send_modify(|g| *g += 1);
            tracing::info!(
                "standby: the active period's tasks stopped and its mounts and tokens were \
                 dropped; the barrier stays unsealed"
            );
        }
    }

    /// Loads what the active node serves from storage and starts serving.
    /// On failure the node steps down so another node can try.
    async fn promote(&self, period: ActivePeriod) {
        let started = Instant::now();
        match self.promote_inner(&period).await {
            Ok(true) => tracing::info!(
                elapsed = ?started.elapsed(),
                "active: keyring, mounts and tokens loaded from storage; serving requests"
            ),
            Ok(false) => {}
            Err(err) => {
                tracing::error!(
                    error = %err,
                    "becoming active failed (loading the keyring, mounts or tokens from \
                     storage); stepping down so another node can take over"
                );
                // Counted before the step-down, so whoever sees this node
                // leave the active role also sees the failure.
                let counters = &self.inner.counters;
                let held = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
                counters
                    .leadership_setup_failed_micros
                    .fetch_add(held, std::sync::atomic::Ordering::Relaxed);
                counters
                    .leadership_setup_failures
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if let Some(ha) = &self.inner.ha {
                    ha.election.step_down().await;
                }
            }
        }
    }

    async fn promote_inner(&self, period: &ActivePeriod) -> Result<bool, CoreError> {
        let _op = self.inner.op_lock.lock().await;
        let current = self.unsealed_state(|u| {
            (
                u.active.as_ref().map(|a| a.period),
                u.cluster.clone(),
                u.background.clone(),
            )
        });
        let Some((serving_period, cluster, background)) = current else {
            return Ok(false);
        };
        if period.is_ended() || serving_period == Some(period.id()) {
            return Ok(false);
        }
        // From here on this node is the only writer (fencing refuses the
        // previous active node's writes), so a cache emptied now stays
        // coherent; see `cache`.
        self.inner.cache.activate();
        // The previous active node may have rotated the keyring or rekeyed
        // the root key while this node was standby.
        self.inner.barrier.reload_keyring().await?;
        let ended = period.token().child_token();
        let view: Arc<dyn Storage> =
            Arc::new(ActiveView::new(self.inner.barrier.clone(), ended.clone()));
        // Loads mounts, tokens and policies from storage (a Vault data set
        // read-only, or upgraded when so configured) and starts the
        // writing node's background tasks.
        let (logical, cluster, read_only) = self.start_serving(view, cluster, &ended).await?;
        if period.is_ended() || background.is_cancelled() {
            ended.cancel();
            return Ok(false);
        }
        {
            let mut guard = self
                .inner
                .unsealed
                .write()
                .unwrap_or_else(PoisonError::into_inner);
            let Some(unsealed) = guard.as_mut() else {
                ended.cancel();
                return Ok(false);
            };
            unsealed.cluster = Some(cluster);
            unsealed.active = Some(Active {
                logical,
                period: period.id(),
                ended,
                read_only,
            });
        }
        self.inner.serving.send_modify(|g| *g += 1);
        Ok(true)
    }

    /// Reads the cluster identity, creating it when an old store lacks it.
    pub(crate) async fn load_or_create_cluster(
        &self,
        storage: &dyn Storage,
    ) -> Result<ClusterInfo, CoreError> {
        match storage.get(CLUSTER_INFO_PATH).await? {
            Some(raw) => serde_json::from_slice(&raw).map_err(|e| CoreError::Corrupt {
                path: CLUSTER_INFO_PATH,
                reason: e.to_string(),
            }),
            None => {
                let info = self.new_cluster_info()?;
                let raw = serde_json::to_vec(&info)
                    .map_err(|e| CoreError::Config(format!("serializing cluster info: {e}")))?;
                storage.put(CLUSTER_INFO_PATH, &raw).await?;
                Ok(info)
            }
        }
    }
}

/// Follows the election's role for as long as the core lives.
async fn follow(weak: Weak<Inner>, mut roles: watch::Receiver<Role>) {
    loop {
        let role = roles.borrow_and_update().clone();
        {
            let Some(inner) = weak.upgrade() else { return };
            let core = Core { inner };
            match role {
                Role::Active { period, .. } => {
                    core.demote_unless(Some(period.id()));
                    core.publish_state();
                    core.promote(period).await;
                }
                Role::Standby { .. } | Role::Idle => {
                    core.demote_unless(None);
                    // Also after a promotion that never finished serving.
                    core.inner.cache.deactivate();
                }
            }
            core.publish_state();
        }
        if roles.changed().await.is_err() {
            return;
        }
    }
}
