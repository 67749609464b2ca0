//! `sys/ha-status`: the nodes of an HA cluster as the active node knows
//! them — itself, and every standby it has heard from since it became
//! active (Vault's semantics and JSON shape).
//!
//! Standbys report to the active node over the public API: every few
//! seconds a standby sends an **echo** (its node id, addresses, version and
//! the time on its clock) encrypted by the barrier under a fixed path used
//! only as associated data. Only a node holding the cluster's keyring can
//! produce one, so the active node believes an echo exactly when it
//! decrypts — no extra key to distribute, and a sealed node cannot report.
//! The active node keeps, per node id, the last echo and when it arrived;
//! an echo older than the one already seen, or far from the active node's
//! clock, is refused (no replays).

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use ha_lock::Role;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::logical::Operation;
use crate::types::VERSION;
use crate::{Core, CoreError};

/// The associated data of every echo: a path nothing is stored under, so
/// an echo can never be confused with (or replayed as) a storage entry.
const ECHO_PATH: &str = "core/ha-status/echo";

/// How far an echo's clock may be from the active node's before it is
/// refused as a replay or a badly wrong clock.
const MAX_CLOCK_SKEW: Duration = Duration::from_secs(300);

/// What a standby tells the active node about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Echo {
    node_id: String,
    hostname: String,
    api_address: String,
    cluster_address: String,
    version: String,
    /// The standby's clock when it sent the echo (Unix milliseconds).
    sent_at_ms: i64,
    /// How long the standby's previous echo took, round trip.
    echo_duration_ms: u64,
}

/// One node of `sys/ha-status` (Vault's fields; Enterprise-only ones left
/// out).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HaNode {
    /// The node's host name.
    pub hostname: String,
    /// Its `api_addr`.
    pub api_address: String,
    /// Its `cluster_addr` (may be empty).
    pub cluster_address: String,
    /// Whether it is the active node (the one answering).
    pub active_node: bool,
    /// When the active node last heard from it (RFC 3339); `null` for the
    /// active node itself.
    pub last_echo: Option<String>,
    /// Its Strongroom version.
    pub version: String,
    /// Its clock minus the active node's, at its last echo (includes the
    /// one-way network delay).
    pub clock_skew_ms: i64,
    /// How long its echoes take, round trip, as it last measured.
    pub echo_duration_ms: u64,
}

/// Vault's `sys/ha-status` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HaStatus {
    /// The active node first, then the standbys by API address.
    pub nodes: Vec<HaNode>,
}

#[derive(Debug, Clone)]
struct Heard {
    echo: Echo,
    at: SystemTime,
}

/// The standbys the active node has heard from.
#[derive(Debug, Default)]
pub(crate) struct Peers {
    heard: Mutex<HashMap<String, Heard>>,
}

fn unix_ms(t: SystemTime) -> i64 {
    match t.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_millis()).unwrap_or(i64::MAX),
    }
}

fn rfc3339(t: SystemTime) -> Option<String> {
    OffsetDateTime::from(t).format(&Rfc3339).ok()
}

/// This machine's host name, as Vault reports it.
fn hostname() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|h| h.trim().to_owned())
        .unwrap_or_default()
}

impl Core {
    /// A standby's echo for the active node: who this node is and the time
    /// on its clock, encrypted by the barrier. `echo_duration` is how long
    /// the previous echo took (zero for the first).
    ///
    /// # Errors
    /// [`CoreError::Sealed`] while sealed (a sealed node cannot report);
    /// [`CoreError::InvalidRequest`] without HA.
    pub fn ha_echo(&self, echo_duration: Duration) -> Result<Vec<u8>, CoreError> {
        let Some(ha) = &self.inner.ha else {
            return Err(CoreError::InvalidRequest(
                "this node has no HA backend: there is no active node to report to".into(),
            ));
        };
        let me = ha.election.advertisement();
        let echo = Echo {
            node_id: me.node_id.clone(),
            hostname: hostname(),
            api_address: me.api_addr.clone(),
            cluster_address: me.cluster_addr.clone(),
            version: VERSION.to_owned(),
            sent_at_ms: unix_ms(SystemTime::now()),
            echo_duration_ms: u64::try_from(echo_duration.as_millis()).unwrap_or(u64::MAX),
        };
        let plain = serde_json::to_vec(&echo)
            .map_err(|e| CoreError::InvalidRequest(format!("encoding the HA echo failed: {e}")))?;
        self.inner
            .barrier
            .encrypt(ECHO_PATH, &plain)
            .map_err(|_| CoreError::Sealed)
    }

    /// The active node records a standby's echo.
    ///
    /// # Errors
    /// [`CoreError::Standby`] unless this node is active;
    /// [`CoreError::Sealed`]; [`CoreError::InvalidRequest`] when the echo
    /// does not decrypt with this cluster's keyring, is malformed, is not
    /// newer than the last one from that node, or its clock is more than
    /// five minutes off.
    pub fn receive_ha_echo(&self, sealed_echo: &[u8]) -> Result<(), CoreError> {
        let Some(ha) = &self.inner.ha else {
            return Err(CoreError::InvalidRequest(
                "this node has no HA backend: it takes no echoes".into(),
            ));
        };
        if self.is_sealed() {
            return Err(CoreError::Sealed);
        }
        if !matches!(ha.election.current(), Role::Active { .. }) {
            return Err(self.standby_error());
        }
        let refused = |why: &str| CoreError::InvalidRequest(format!("HA echo refused: {why}"));
        let plain = self
            .inner
            .barrier
            .decrypt(ECHO_PATH, sealed_echo)
            .map_err(|_| refused("it was not made with this cluster's keyring"))?;
        let echo: Echo =
            serde_json::from_slice(&plain).map_err(|_| refused("it is not an echo"))?;
        if echo.node_id == ha.election.advertisement().node_id {
            return Err(refused("it is this node's own"));
        }
        let now = SystemTime::now();
        let skew = echo.sent_at_ms.saturating_sub(unix_ms(now));
        if skew.unsigned_abs() > MAX_CLOCK_SKEW.as_millis() as u64 {
            return Err(refused(&format!(
                "the sender's clock is {} s off this node's; fix the clocks (NTP)",
                skew / 1000
            )));
        }
        let mut heard = self
            .inner
            .ha_peers
            .heard
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(last) = heard.get(&echo.node_id)
            && last.echo.sent_at_ms >= echo.sent_at_ms
        {
            return Err(refused("it is not newer than the last one from that node"));
        }
        // A node restarted at the same address has a new id: its old
        // entry goes.
        heard.retain(|id, h| *id == echo.node_id || h.echo.api_address != echo.api_address);
        heard.insert(echo.node_id.clone(), Heard { echo, at: now });
        Ok(())
    }

    /// Vault's `sys/ha-status`: the active node and every standby it has
    /// heard from since it became active. Without HA, this node alone.
    ///
    /// # Errors
    /// [`CoreError::PermissionDenied`] when the token may not read
    /// `sys/ha-status`; [`CoreError::Standby`] on a standby (the request
    /// belongs to the active node); [`CoreError::Sealed`].
    pub async fn ha_status(&self, token: &str) -> Result<HaStatus, CoreError> {
        self.audited(token, Operation::Read, "sys/ha-status", async {
            self.ha_nodes()
        })
        .await
    }

    fn ha_nodes(&self) -> Result<HaStatus, CoreError> {
        let (me, since) = match &self.inner.ha {
            None => (None, None),
            Some(ha) => match ha.election.current() {
                Role::Active { since, .. } => {
                    (Some(ha.election.advertisement().clone()), Some(since))
                }
                _ => return Err(self.standby_error()),
            },
        };
        let mut nodes = vec![HaNode {
            hostname: hostname(),
            api_address: me
                .as_ref()
                .map(|m| m.api_addr.clone())
                .or_else(|| self.inner.options.api_addr.clone())
                .unwrap_or_default(),
            cluster_address: me
                .as_ref()
                .map(|m| m.cluster_addr.clone())
                .unwrap_or_default(),
            active_node: true,
            last_echo: None,
            version: VERSION.to_owned(),
            clock_skew_ms: 0,
            echo_duration_ms: 0,
        }];
        if let Some(since) = since {
            let heard = self
                .inner
                .ha_peers
                .heard
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let mut standbys: Vec<HaNode> = heard
                .values()
                .filter(|h| h.at >= since)
                .map(|h| HaNode {
                    hostname: h.echo.hostname.clone(),
                    api_address: h.echo.api_address.clone(),
                    cluster_address: h.echo.cluster_address.clone(),
                    active_node: false,
                    last_echo: rfc3339(h.at),
                    version: h.echo.version.clone(),
                    clock_skew_ms: h.echo.sent_at_ms.saturating_sub(unix_ms(h.at)),
                    echo_duration_ms: h.echo.echo_duration_ms,
                })
                .collect();
            standbys.sort_by(|a, b| a.api_address.cmp(&b.api_address));
            nodes.extend(standbys);
        }
        Ok(HaStatus { nodes })
    }
}
