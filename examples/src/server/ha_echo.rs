//! A standby's echo to the active node every few seconds, so the active
//! node's `sys/ha-status` lists it with its last heartbeat (Vault's
//! standbys echo over their cluster connection; here over the API, the
//! echo encrypted by the barrier so only cluster members can send one).
//! Timed and counted under Vault's names: `vault.ha.rpc.client.echo` and
//! `vault.ha.rpc.client.echo.errors`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::json;
use strongroom::{Core, HaMode};
use tokio_util::sync::CancellationToken;

use crate::http::Forwarder;
use crate::metrics::Metrics;

/// How often a standby echoes.
pub(crate) const ECHO_INTERVAL: Duration = Duration::from_secs(2);

/// Starts the echo loop (HA nodes only); it ends with `shutdown`. The
/// echo goes out through the request forwarder's client: its connections
/// to the active node, and its trust of an HTTPS active node's private CA
/// (`VAULT_CACERT`).
pub(crate) fn spawn(
    core: Core,
    forwarder: &Forwarder,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) {
    if !core.ha_enabled() {
        return;
    }
    let client = forwarder.client().clone();
    tokio::spawn(async move {
        let mut last_duration = Duration::ZERO;
        let mut failing = false;
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(ECHO_INTERVAL) => {}
            }
            let state = core.node_state();
            let HaMode::Standby {
                leader: Some(leader),
            } = state.mode
            else {
                continue;
            };
            if state.sealed || leader.api_addr.is_empty() {
                continue;
            }
            let Ok(echo) = core.ha_echo(last_duration) else {
                continue;
            };
            let url = format!(
                "{}/v1/sys/ha-status/echo",
                leader.api_addr.trim_end_matches('/')
            );
            let started = Instant::now();
            let sent = client
                .put(&url)
                .header("X-Vault-No-Request-Forwarding", "true")
                .json(&json!({ "echo": B64.encode(echo) }))
                .timeout(ECHO_INTERVAL)
                .send()
                .await;
            metrics.echo.since(started);
            match sent {
                Ok(answer) if answer.status().is_success() => {
                    last_duration = started.elapsed();
                    if failing {
                        tracing::info!(active = %leader.api_addr, "HA echo to the active node works again");
                    }
                    failing = false;
                }
                outcome => {
                    metrics.echo_errors.inc();
                    if !failing {
                        let why = match outcome {
                            Ok(answer) => format!("it answered {}", answer.status()),
                            Err(e) => e.to_string(),
                        };
                        tracing::warn!(active = %leader.api_addr, "HA echo to the active node failed: {why}; sys/ha-status on the active node will show this node's last heartbeat ageing");
                    }
                    failing = true;
                }
            }
        }
    });
}
