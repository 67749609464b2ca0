//! [`ConsulServiceRegistration`]: the node's role and seal state published
//! as a Consul service, as Vault's `service_registration "consul"` does.
//!
//! The service `vault:<host>:<port>` (named by `service`, default `vault`)
//! carries the tags `active` or `standby` and, once initialised,
//! `initialized`, so `active.vault.service.consul` names the leader; a TTL
//! check "Vault Sealed Status" is passing while the node is unsealed and
//! critical while sealed, which takes a sealed node out of DNS and shows it
//! in the Consul UI.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use reqwest::{Method, StatusCode};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::client::{Client, Reply, Request};
use crate::config::{ConsulConfig, RegistrationConfig};
use crate::error::ConsulError;

/// The check's name, as Vault registers it.
pub const SEALED_CHECK_NAME: &str = "Vault Sealed Status";

/// How often the service is registered again even when nothing changed,
/// so a registration lost in any way comes back (Vault: 60 s).
const RECONCILE: Duration = Duration::from_secs(60);

/// Delay before retrying after a failed registration (Vault: 1 s).
const RETRY: Duration = Duration::from_secs(1);

/// What the registration says about the node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RegistrationState {
    /// Holds the HA lock (tag `active`; otherwise `standby`).
    pub active: bool,
    /// The barrier is sealed (the check is critical).
    pub sealed: bool,
    /// The storage holds an initialised Strongroom (tag `initialized`).
    pub initialized: bool,
}

impl RegistrationState {
    /// A sealed, uninitialised standby: what a node is when it starts.
    pub fn starting() -> Self {
        Self {
            active: false,
            sealed: true,
            initialized: false,
        }
    }
}

/// Registers this node as a Consul service and keeps the registration
/// true: a background loop pushes the sealed check every half
/// `check_timeout`, registers again at once when [`set_state`] changes the
/// role or seal state, when the agent has forgotten the service (it was
/// restarted), and every 60 s regardless.
///
/// Create it with [`ConsulServiceRegistration::start`] (unless
/// `disable_registration` is set), call [`set_state`] on every role or
/// seal change, and [`deregister`] on shutdown. Dropping it stops the loop
/// but leaves the service registered (its check then goes critical after
/// `check_timeout`).
///
/// [`set_state`]: ConsulServiceRegistration::set_state
/// [`deregister`]: ConsulServiceRegistration::deregister
#[derive(Clone)]
pub struct ConsulServiceRegistration {
    inner: Arc<Inner>,
}

struct Inner {
    client: Client,
    config: RegistrationConfig,
    request_timeout: Duration,
    service_id: String,
    check_id: String,
    address: Option<String>,
    port: u16,
    state: watch::Sender<RegistrationState>,
    stop: CancellationToken,
    /// The loop, awaited by `deregister` so that no registration it had
    /// in flight can land after the deregistration.
    task: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl fmt::Debug for ConsulServiceRegistration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConsulServiceRegistration")
            .field("service_id", &self.inner.service_id)
            .field("state", &*self.inner.state.borrow())
            .finish_non_exhaustive()
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl ConsulServiceRegistration {
    /// Starts registering the node whose API is reachable at `api_addr`
    /// (`https://host:port`; the port defaults to 443/80 by scheme) with
    /// the agent of `config` (address, token, TLS) and the settings in
    /// `config.registration`, starting from `state`. The first
    /// registration is sent from the background loop at once; a Consul
    /// that is down is retried every second, never failing the caller.
    ///
    /// # Errors
    /// [`ConsulError::Config`] for a malformed `api_addr` or configuration;
    /// the errors of building the HTTP client (TLS files).
    ///
    /// # Panics
    /// Outside a Tokio runtime (the loop is spawned on it).
    pub fn start(
        config: &ConsulConfig,
        api_addr: &str,
        state: RegistrationState,
    ) -> Result<Self, ConsulError> {
        let inner = Arc::new(Inner::new(config, api_addr, state)?);
        let task = tokio::spawn(run(Arc::downgrade(&inner), inner.stop.clone()));
        *inner
            .task
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(task);
        Ok(Self { inner })
    }

    /// The Consul service ID (`<service>:<host>:<port>`).
    pub fn service_id(&self) -> &str {
        &self.inner.service_id
    }

    /// The ID of the sealed-status TTL check (`<service id>:vault-sealed-check`).
    pub fn check_id(&self) -> &str {
        &self.inner.check_id
    }

    /// Publishes a new role or seal state; the loop registers it at once
    /// (tags) and pushes the check. Cheap, never blocks.
    pub fn set_state(&self, state: RegistrationState) {
        self.inner.state.send_if_modified(|current| {
            let changed = *current != state;
            *current = state;
            changed
        });
    }

    /// The state last given to [`ConsulServiceRegistration::set_state`].
    pub fn state(&self) -> RegistrationState {
        *self.inner.state.borrow()
    }

    /// Stops the loop and removes the service (and its check) from the
    /// agent, for shutdown.
    ///
    /// # Errors
    /// [`ConsulError`] when the agent cannot be told; the service then
    /// stays registered with a check that goes critical.
    pub async fn deregister(&self) -> Result<(), ConsulError> {
        self.inner.stop.cancel();
        let task = self
            .inner
            .task
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(task) = task {
            // Ends after the request it has in flight, if any.
            let _ = task.await;
        }
        let url = format!(
            "/v1/agent/service/deregister/{}",
            encode(&self.inner.service_id)
        );
        let reply = self.inner.put(&url, None).await?;
        match reply.status {
            StatusCode::OK | StatusCode::NOT_FOUND => Ok(()),
            other => Err(status_error(other, &reply)),
        }
    }
}

fn status_error(status: StatusCode, reply: &Reply) -> ConsulError {
    ConsulError::Status {
        status: status.as_u16(),
        body: crate::error::truncate_body(&String::from_utf8_lossy(&reply.body)),
    }
}

fn encode(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// Host and port of an `api_addr` such as `https://10.0.0.1:8200` or
/// `http://[::1]:8200`.
fn parse_api_addr(api_addr: &str) -> Result<(String, u16), ConsulError> {
    let bad = |why: &str| {
        ConsulError::config(
            "api_addr",
            format!("{api_addr:?} {why} (expected scheme://host:port, e.g. https://10.0.0.1:8200)"),
        )
    };
    let (scheme, rest) = api_addr
        .split_once("://")
        .ok_or_else(|| bad("has no scheme"))?;
    let default_port = match scheme {
        "https" => 443,
        "http" => 80,
        _ => return Err(bad("is neither http nor https")),
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if authority.is_empty() || authority.contains('@') {
        return Err(bad("has no usable host"));
    }
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (host, after) = v6
            .split_once(']')
            .ok_or_else(|| bad("has an unclosed '['"))?;
        match after.strip_prefix(':') {
            Some(p) => (host, Some(p)),
            None if after.is_empty() => (host, None),
            None => return Err(bad("has junk after the IPv6 host")),
        }
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    if host.is_empty() {
        return Err(bad("has no host"));
    }
    let port = match port {
        Some(p) => p
            .parse::<u16>()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| bad("has an invalid port"))?,
        None => default_port,
    };
    Ok((host.to_owned(), port))
}

impl Inner {
    fn new(
        config: &ConsulConfig,
        api_addr: &str,
        state: RegistrationState,
    ) -> Result<Self, ConsulError> {
        config.validate()?;
        let (host, port) = parse_api_addr(api_addr)?;
        let registration = config.registration.clone();
        let service_id = format!("{}:{host}:{port}", registration.service);
        let check_id = format!("{service_id}:vault-sealed-check");
        let address = match &registration.service_address {
            Some(a) if a.is_empty() => None,
            Some(a) => Some(a.clone()),
            None => Some(host),
        };
        let (state, _) = watch::channel(state);
        Ok(Self {
            client: Client::new(config)?,
            config: registration,
            request_timeout: config.request_timeout,
            service_id,
            check_id,
            address,
            port,
            state,
            stop: CancellationToken::new(),
            task: std::sync::Mutex::new(None),
        })
    }

    async fn put(&self, path: &str, body: Option<Vec<u8>>) -> Result<Reply, ConsulError> {
        let request = Request {
            method: Method::PUT,
            path_and_query: path,
            body: body.map(Bytes::from),
        };
        self.client.send_ha(&request, self.request_timeout).await
    }

    fn tags(&self, state: RegistrationState) -> Vec<String> {
        let mut tags = self.config.service_tags.clone();
        tags.push(if state.active { "active" } else { "standby" }.to_owned());
        if state.initialized {
            tags.push("initialized".to_owned());
        }
        tags
    }

    fn check_status(state: RegistrationState) -> (&'static str, &'static str) {
        if state.sealed {
            ("critical", "Vault Sealed")
        } else {
            ("passing", "Vault Unsealed")
        }
    }

    fn registration_body(&self, state: RegistrationState) -> Vec<u8> {
        let (status, _) = Self::check_status(state);
        let mut body = serde_json::json!({
            "ID": self.service_id,
            "Name": self.config.service,
            "Tags": self.tags(state),
            "Port": self.port,
            "Meta": { "external-source": "vault" },
            "EnableTagOverride": false,
            "Check": {
                "CheckID": self.check_id,
                "Name": SEALED_CHECK_NAME,
                "Notes": "Vault service is healthy when Vault is in an unsealed status and can become an active Vault server",
                "TTL": format!("{}ms", self.config.check_timeout.as_millis()),
                "Status": status,
            },
        });
        if let Some(address) = &self.address {
            body["Address"] = serde_json::Value::String(address.clone());
        }
        body.to_string().into_bytes()
    }

    /// # Errors
    /// An ACL refusal names the `service:write` rule it needs.
    async fn register(&self, state: RegistrationState) -> Result<(), ConsulError> {
        let reply = self
            .put(
                "/v1/agent/service/register",
                Some(self.registration_body(state)),
            )
            .await
            .map_err(|e| match e {
                ConsulError::PermissionDenied { status, body } => ConsulError::PermissionDenied {
                    status,
                    body: format!(
                        "{body}; registering needs `service \"{}\" {{ policy = \"write\" }}`",
                        self.config.service
                    ),
                },
                other => other,
            })?;
        match reply.status {
            StatusCode::OK => Ok(()),
            other => Err(status_error(other, &reply)),
        }
    }

    /// Pushes the TTL check; `Ok(false)` when the agent does not know it
    /// (it was restarted, or the service deregistered by someone).
    async fn push_check(&self, state: RegistrationState) -> Result<bool, ConsulError> {
        let (status, output) = Self::check_status(state);
        let body = serde_json::json!({ "Status": status, "Output": output });
        let url = format!("/v1/agent/check/update/{}", encode(&self.check_id));
        match self.put(&url, Some(body.to_string().into_bytes())).await {
            Ok(reply) if reply.status == StatusCode::OK => Ok(true),
            Ok(reply) if reply.status == StatusCode::NOT_FOUND => Ok(false),
            Ok(reply) => Err(status_error(reply.status, &reply)),
            // Consul answers 500 "Unknown check" for a check it lost.
            Err(ConsulError::Status { status: 500, body })
                if body.contains("Unknown check")
                    || body.contains("does not have associated TTL") =>
            {
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }
}

/// The registration loop: registers, then pushes the check every half
/// `check_timeout`, registering again on a state change, a forgotten
/// check, a failure, or every [`RECONCILE`]. Ends on `stop` or when the
/// registration is dropped.
async fn run(inner: std::sync::Weak<Inner>, stop: CancellationToken) {
    let Some(first) = inner.upgrade() else {
        return;
    };
    let mut changes = first.state.subscribe();
    let push_every = first.config.check_timeout / 2;
    drop(first);
    let mut registered: Option<(RegistrationState, tokio::time::Instant)> = None;
    loop {
        let Some(inner) = inner.upgrade() else {
            return;
        };
        let state = *changes.borrow_and_update();
        let due =
            registered.is_none_or(|(at_state, at)| at_state != state || at.elapsed() >= RECONCILE);
        let mut wait = push_every;
        if due {
            // Registration sets the status; the push adds its output.
            match inner
                .register(state)
                .await
                .and(inner.push_check(state).await)
            {
                Ok(_) => registered = Some((state, tokio::time::Instant::now())),
                Err(e) => {
                    tracing::warn!(service = %inner.service_id, error = %e, "Consul service registration failed; retrying");
                    registered = None;
                    wait = RETRY.min(push_every);
                }
            }
        } else {
            match inner.push_check(state).await {
                Ok(true) => {}
                Ok(false) => {
                    tracing::info!(service = %inner.service_id, "the Consul agent forgot the service (restarted?); registering again");
                    registered = None;
                    wait = Duration::ZERO;
                }
                Err(e) => {
                    tracing::warn!(service = %inner.service_id, error = %e, "updating the sealed check failed; registering again");
                    registered = None;
                    wait = RETRY.min(push_every);
                }
            }
        }
        drop(inner);
        tokio::select! {
            biased;
            () = stop.cancelled() => return,
            changed = changes.changed() => {
                if changed.is_err() {
                    return;
                }
            }
            () = tokio::time::sleep(wait) => {}
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn api_addresses_parse() {
        assert_eq!(
            parse_api_addr("https://10.0.0.1:8200").unwrap(),
            ("10.0.0.1".to_owned(), 8200)
        );
        assert_eq!(
            parse_api_addr("http://node-1.internal:8200/").unwrap(),
            ("node-1.internal".to_owned(), 8200)
        );
        assert_eq!(
            parse_api_addr("https://vault.example.com").unwrap(),
            ("vault.example.com".to_owned(), 443)
        );
        assert_eq!(
            parse_api_addr("http://[::1]:8200").unwrap(),
            ("::1".to_owned(), 8200)
        );
        for bad in [
            "10.0.0.1:8200",
            "ftp://x:1",
            "https://",
            "https://:8200",
            "https://h:0",
            "https://h:99999",
            "https://[::1",
            "https://u@h:1",
        ] {
            assert!(parse_api_addr(bad).is_err(), "{bad} accepted");
        }
    }

    #[tokio::test]
    async fn registration_body_follows_state() {
        let mut config = ConsulConfig::default();
        config.registration.service_tags = vec!["blue".to_owned()];
        // Built without its loop: nothing is sent anywhere.
        let reg = ConsulServiceRegistration {
            inner: Arc::new(
                Inner::new(
                    &config,
                    "https://10.0.0.1:8200",
                    RegistrationState::starting(),
                )
                .unwrap(),
            ),
        };
        assert_eq!(reg.service_id(), "vault:10.0.0.1:8200");
        assert_eq!(reg.check_id(), "vault:10.0.0.1:8200:vault-sealed-check");
        let body = |state| -> serde_json::Value {
            serde_json::from_slice(&reg.inner.registration_body(state)).unwrap()
        };
        let sealed = body(RegistrationState::starting());
        assert_eq!(sealed["Tags"], serde_json::json!(["blue", "standby"]));
        assert_eq!(sealed["Check"]["Status"], "critical");
        assert_eq!(sealed["Address"], "10.0.0.1");
        assert_eq!(sealed["Port"], 8200);
        assert_eq!(sealed["Meta"]["external-source"], "vault");
        let active = body(RegistrationState {
            active: true,
            sealed: false,
            initialized: true,
        });
        assert_eq!(
            active["Tags"],
            serde_json::json!(["blue", "active", "initialized"])
        );
        assert_eq!(active["Check"]["Status"], "passing");
        assert_eq!(active["Check"]["Name"], SEALED_CHECK_NAME);
        assert_eq!(active["Check"]["TTL"], "5000ms");
    }

    proptest! {
        #[test]
        fn api_addr_parser_never_panics(s in "\\PC{0,40}") {
            let _ = parse_api_addr(&s);
        }
    }
}
