//! Service registration: publishing the node's role and seal state where
//! operators and load balancers look (Vault's `service_registration`).
//!
//! Each place is a [`ServiceRegistration`]: [`KubernetesRegistration`]
//! labels the pod (`vault-active`, `vault-sealed`, …) so the chart's
//! `-active` Service always selects the leader; [`ConsulRegistration`]
//! registers the `vault` service with `active`/`standby` tags and a sealed
//! check, so `active.vault.service.consul` names the leader. The server feeds every
//! registration the same [`NodeStatus`] whenever it changes
//! ([`publish_status`]), and tells each one on shutdown.

mod consul;
mod kubernetes;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use strongroom::Core;
use tokio_util::sync::CancellationToken;

pub(crate) use consul::ConsulRegistration;
pub(crate) use kubernetes::KubernetesRegistration;

/// What a registration publishes about the node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct NodeStatus {
    /// The node serves requests itself (the HA lock holder, or any
    /// unsealed node without HA).
    pub(crate) active: bool,
    /// The barrier is sealed.
    pub(crate) sealed: bool,
    /// The storage holds an initialized Strongroom.
    pub(crate) initialized: bool,
}

impl NodeStatus {
    /// What a node reports once it is shutting down (Vault: sealed,
    /// inactive, not initialized).
    pub(crate) const SHUT_DOWN: NodeStatus = NodeStatus {
        active: false,
        sealed: true,
        initialized: false,
    };

    /// The core's current status.
    pub(crate) async fn of(core: &Core) -> NodeStatus {
        let state = core.node_state();
        // The core learns that another node initialized the storage only
        // when asked; health() asks (reading storage until it is true).
        let initialized = state.initialized || core.health().await.initialized;
        NodeStatus {
            // The lock holder, or any unsealed node without HA (Vault's HAState).
            active: !state.sealed && state.mode.serves(),
            sealed: state.sealed,
            initialized,
        }
    }
}

/// One place the node's status is published.
#[async_trait]
pub(crate) trait ServiceRegistration: Send + Sync + std::fmt::Debug {
    /// Publishes `status`. Cheap and never blocks: the registration
    /// applies it in the background and retries until it sticks.
    fn notify(&self, status: NodeStatus);

    /// Publishes [`NodeStatus::SHUT_DOWN`] (waiting briefly for it to
    /// apply) and stops, for server shutdown.
    async fn shutdown(&self);
}

/// How often the status is read even without a change notice: `init`
/// through another node is only seen by asking.
const POLL: Duration = Duration::from_secs(1);

/// Feeds every registration the node's status until `stop` fires: at once
/// on every seal, unseal, promotion or demotion (the core's node-state
/// watch), and at least every second.
pub(crate) async fn publish_status(
    core: Core,
    registrations: Vec<Arc<dyn ServiceRegistration>>,
    stop: CancellationToken,
) {
    let mut changes = core.watch_node_state();
    let mut last = None;
    loop {
        let status = NodeStatus::of(&core).await;
        if stop.is_cancelled() {
            return;
        }
        if last != Some(status) {
            tracing::debug!(?status, "publishing the node's status");
            for registration in &registrations {
                registration.notify(status);
            }
            last = Some(status);
        }
        tokio::select! {
            biased;
            () = stop.cancelled() => return,
            changed = changes.changed() => if changed.is_err() { return },
            () = tokio::time::sleep(POLL) => {}
        }
    }
}
