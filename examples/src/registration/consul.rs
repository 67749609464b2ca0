//! [`ConsulRegistration`]: the node as a Consul service (Vault's
//! `service_registration "consul"`), through storage-consul's
//! [`ConsulServiceRegistration`]: tags `active`/`standby` and
//! `initialized`, and a TTL check that is critical while sealed.

use async_trait::async_trait;
use storage_consul::{ConsulConfig, ConsulServiceRegistration, RegistrationState};

use super::{NodeStatus, ServiceRegistration};
use crate::error::Error;

/// The Consul service registration of this node.
#[derive(Debug)]
pub(crate) struct ConsulRegistration {
    inner: ConsulServiceRegistration,
}

fn state(status: NodeStatus) -> RegistrationState {
    RegistrationState {
        active: status.active,
        sealed: status.sealed,
        initialized: status.initialized,
    }
}

impl ConsulRegistration {
    /// Registers the node reachable at `api_addr` with the agent and
    /// settings of `config`, starting from `status`. Consul being down is
    /// retried in the background.
    ///
    /// # Errors
    ///
    /// [`Error::Backend`] for a malformed `api_addr` or settings.
    pub(crate) fn start(
        config: &ConsulConfig,
        api_addr: &str,
        status: NodeStatus,
    ) -> Result<Self, Error> {
        let inner =
            ConsulServiceRegistration::start(config, api_addr, state(status)).map_err(|e| {
                Error::Backend {
                    what: "service_registration \"consul\"".into(),
                    message: e.to_string(),
                }
            })?;
        tracing::info!(
            service_id = inner.service_id(),
            "registering this node as a Consul service"
        );
        Ok(Self { inner })
    }
}

#[async_trait]
impl ServiceRegistration for ConsulRegistration {
    fn notify(&self, status: NodeStatus) {
        self.inner.set_state(state(status));
    }

    /// Vault deregisters the service on shutdown.
    async fn shutdown(&self) {
        if let Err(err) = self.inner.deregister().await {
            tracing::warn!(
                error = %err,
                "deregistering the Consul service failed; its check goes critical on its own"
            );
        }
    }
}
