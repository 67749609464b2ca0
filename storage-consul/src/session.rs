//! One Consul session per contender: created with the HA settings,
//! renewed every TTL/2 by a background loop, destroyed when given up.

use std::fmt;
use std::time::Duration;

use bytes::Bytes;
use reqwest::{Method, StatusCode};
use seal_core::HaError;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::client::{Reply, Request};
use crate::config::parse_duration;
use crate::error::ConsulError;
use crate::storage::{ConsulStorage, HaSettings};

/// The `Name` of every session the HA backend creates.
pub const SESSION_NAME: &str = "Strongroom Lock";

/// Spawns `task` when a Tokio runtime is running (drop handlers may run
/// outside one; the session then expires on its own).
pub(crate) fn spawn(task: impl Future<Output = ()> + Send + 'static) {
    if let Ok(handle) = tokio::runtime::Handle::try_current() {
        handle.spawn(task);
    }
}

pub(crate) fn go_duration(d: Duration) -> String {
    format!("{}ms", d.as_millis())
}

pub(crate) fn ha_error(op: &'static str, key: &str, err: &ConsulError) -> HaError {
    if let ConsulError::PermissionDenied { .. } = err {
        return HaError::Backend {
            op,
            key: key.to_owned(),
            message: format!(
                "{err}; the HA lock also needs `session_prefix \"\" {{ policy = \"write\" }}` (sessions are created on the agent's node)"
            ),
        };
    }
    if err.is_transient() {
        HaError::Unavailable {
            op,
            key: key.to_owned(),
            message: err.to_string(),
        }
    } else {
        HaError::Backend {
            op,
            key: key.to_owned(),
            message: err.to_string(),
        }
    }
}

/// One Consul session and its renewal loop. Dropping it stops the renewal
/// and destroys the session in the background.
pub(crate) struct Session {
    pub(crate) id: String,
    /// Cancelled when Consul invalidated the session (renewal answered
    /// 404) or renewal failed for longer than the TTL.
    pub(crate) dead: CancellationToken,
    /// Stops the renewal loop.
    pub(crate) stop: CancellationToken,
    storage: ConsulStorage,
    /// Whether `Drop` still has to destroy it.
    armed: bool,
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("id", &self.id)
            .field("dead", &self.dead.is_cancelled())
            .finish_non_exhaustive()
    }
}

impl Session {
    pub(crate) async fn create(
        storage: &ConsulStorage,
        settings: HaSettings,
        key: &str,
    ) -> Result<Self, HaError> {
        let body = serde_json::json!({
            "Name": SESSION_NAME,
            "TTL": go_duration(settings.session_ttl),
            "LockDelay": go_duration(settings.lock_delay),
            "Behavior": "release",
            "NodeChecks": [],
            "Checks": [],
        });
        let request = Request {
            method: Method::PUT,
            path_and_query: "/v1/session/create",
            body: Some(Bytes::from(body.to_string())),
        };
        let reply = storage
            .client()
            .send_ha(&request, settings.request_timeout)
            .await
            .map_err(|e| match &e {
                ConsulError::Status { status: 500, body } if body.contains("TTL") => {
                    HaError::Backend {
                        op: "creating the session for",
                        key: key.to_owned(),
                        message: format!(
                            "{e}; session_ttl is {:?}, which the Consul servers must allow (their session_ttl_min is 10s unless configured lower)",
                            settings.session_ttl
                        ),
                    }
                }
                // A fresh agent whose node the servers have not
                // registered yet (anti-entropy catches up within seconds).
                ConsulError::Status { status: 500, body }
                    if body.contains("Missing node registration") =>
                {
                    HaError::Unavailable {
                        op: "creating the session for",
                        key: key.to_owned(),
                        message: format!(
                            "{e}; the Consul agent's node is not in the catalog yet (agent just started?), retry shortly"
                        ),
                    }
                }
                _ => ha_error("creating the session for", key, &e),
            })?;
        #[derive(serde::Deserialize)]
        struct Created {
            #[serde(rename = "ID")]
            id: String,
        }
        let created: Created = match reply.status {
            StatusCode::OK => serde_json::from_slice(&reply.body).map_err(|e| {
                ha_error(
                    "creating the session for",
                    key,
                    &ConsulError::Decode {
                        what: "session create",
                        message: e.to_string(),
                    },
                )
            })?,
            other => {
                return Err(ha_error(
                    "creating the session for",
                    key,
                    &unexpected(other, &reply),
                ));
            }
        };
        let session = Self {
            id: created.id,
            dead: CancellationToken::new(),
            stop: CancellationToken::new(),
            storage: storage.clone(),
            armed: true,
        };
        tokio::spawn(renew_loop(
            storage.clone(),
            session.id.clone(),
            settings,
            session.dead.clone(),
            session.stop.clone(),
        ));
        tracing::debug!(session = %session.id, "created HA session");
        Ok(session)
    }

    /// Stops renewal and destroys the session now.
    pub(crate) async fn destroy(mut self) {
        self.armed = false;
        self.stop.cancel();
        destroy_session(&self.storage, &self.id).await;
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.stop.cancel();
        if self.armed {
            let storage = self.storage.clone();
            let id = std::mem::take(&mut self.id);
            spawn(async move { destroy_session(&storage, &id).await });
        }
    }
}

pub(crate) fn unexpected(status: StatusCode, reply: &Reply) -> ConsulError {
    ConsulError::Status {
        status: status.as_u16(),
        body: crate::error::truncate_body(&String::from_utf8_lossy(&reply.body)),
    }
}

pub(crate) async fn destroy_session(storage: &ConsulStorage, id: &str) {
    if let Err(e) = try_destroy_session(storage, id).await {
        // It expires on its own after its TTL.
        tracing::warn!(session = %id, error = %e, "destroying the HA session failed");
    }
}

/// `PUT /v1/session/destroy/<id>`. Destroying a session that no longer
/// exists succeeds too.
///
/// # Errors
/// The request's [`ConsulError`]; [`ConsulError::PermissionDenied`] when
/// the token may not write sessions on the session's node.
pub(crate) async fn try_destroy_session(
    storage: &ConsulStorage,
    id: &str,
) -> Result<(), ConsulError> {
    let url = format!("/v1/session/destroy/{}", encode_segment(id));
    let request = Request {
        method: Method::PUT,
        path_and_query: &url,
        body: None,
    };
    let timeout = storage.ha_settings().request_timeout;
    let reply = storage.client().send_ha(&request, timeout).await?;
    match reply.status {
        StatusCode::OK => Ok(()),
        other => Err(unexpected(other, &reply)),
    }
}

/// Session IDs are UUIDs; anything else is encoded rather than trusted.
pub(crate) fn encode_segment(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// Renews `id` every TTL/2 (the TTL Consul answers with). Consul answering
/// 404 (session invalidated) or no successful renewal for a whole TTL
/// cancels `dead`.
async fn renew_loop(
    storage: ConsulStorage,
    id: String,
    settings: HaSettings,
    dead: CancellationToken,
    stop: CancellationToken,
) {
    let url = format!("/v1/session/renew/{}", encode_segment(&id));
    let mut ttl = settings.session_ttl;
    let mut last_ok = Instant::now();
    let mut next = last_ok + ttl / 2;
    loop {
        tokio::select! {
            biased;
            () = stop.cancelled() => return,
            () = tokio::time::sleep_until(next) => {}
        }
        let give_up = last_ok + ttl;
        let request = Request {
            method: Method::PUT,
            path_and_query: &url,
            body: None,
        };
        let attempt = tokio::select! {
            biased;
            () = stop.cancelled() => return,
            r = tokio::time::timeout_at(
                give_up,
                storage.client().send_ha(&request, settings.request_timeout),
            ) => r,
        };
        match attempt {
            Ok(Ok(reply)) if reply.status == StatusCode::OK => {
                if let Some(granted) = renewed_ttl(&reply.body) {
                    ttl = granted;
                }
                last_ok = Instant::now();
                next = last_ok + ttl / 2;
            }
            Ok(Ok(reply)) if reply.status == StatusCode::NOT_FOUND => {
                tracing::warn!(
                    session = %id,
                    "Consul session was invalidated (expired, destroyed or its node failed); HA lock lost"
                );
                dead.cancel();
                return;
            }
            Ok(result) => {
                let error = match result {
                    Ok(reply) => unexpected(reply.status, &reply).to_string(),
                    Err(e) => e.to_string(),
                };
                if Instant::now() >= give_up {
                    tracing::error!(session = %id, %error, "failed to renew the Consul session for more than its TTL; HA lock lost");
                    dead.cancel();
                    return;
                }
                tracing::warn!(session = %id, %error, "renewing the Consul session failed; retrying");
                next = Instant::now()
                    + (ttl / 10).clamp(Duration::from_millis(50), Duration::from_secs(1));
            }
            Err(_) => {
                tracing::error!(
                    session = %id,
                    ?ttl,
                    "failed to renew the Consul session for more than its TTL; HA lock lost"
                );
                dead.cancel();
                return;
            }
        }
    }
}

/// The TTL in a renew answer (`[{"TTL":"15s",…}]`), if readable.
fn renewed_ttl(body: &[u8]) -> Option<Duration> {
    #[derive(serde::Deserialize)]
    struct Renewed {
        #[serde(rename = "TTL", default)]
        ttl: String,
    }
    let sessions: Vec<Renewed> = serde_json::from_slice(body).ok()?;
    parse_duration(&sessions.first()?.ttl).filter(|d| !d.is_zero())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn renewed_ttl_is_read() {
        assert_eq!(
            renewed_ttl(br#"[{"ID":"x","TTL":"30s"}]"#),
            Some(Duration::from_secs(30))
        );
        assert_eq!(renewed_ttl(br#"[{"ID":"x","TTL":""}]"#), None);
        assert_eq!(renewed_ttl(b"[]"), None);
        assert_eq!(renewed_ttl(b"nope"), None);
    }

    proptest! {
        #[test]
        fn renew_answers_never_panic(body in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = renewed_ttl(&body);
        }
    }
}
