//! `sys/ha-status` (Vault's: the nodes of the cluster as the active node
//! knows them) and `sys/ha-status/echo` (not Vault: how standbys report to
//! the active node; see `strongroom::Core::receive_ha_echo`).
//!
//! A standby that stopped echoing is asked for its `sys/seal-status` (no
//! token needed) so the list can say whether it is sealed or unreachable:
//! each node gets a `sealed` field (`null` when it cannot be reached),
//! beside Vault's fields. That question goes out through the request
//! forwarder's client, which trusts the cluster's private CA
//! (`VAULT_CACERT`) like every other node-to-node call.

use std::time::{Duration, SystemTime};

use axum::response::Response;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde::Deserialize;
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::response::{HttpError, no_content, ok, sys_envelope};
use super::{ApiRequest, AppState};
use crate::server::ECHO_INTERVAL;

/// A standby not heard from for this long (three missed echoes) is asked
/// whether it is sealed.
const STALE_AFTER: Duration = ECHO_INTERVAL.saturating_mul(3);

/// How long that question may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// `GET sys/ha-status`.
pub(crate) async fn ha_status(
    state: &AppState,
    request: &ApiRequest,
) -> Result<Response, HttpError> {
    let status = state.core.ha_status(request.token_str()).await?;
    let client = state.forwarder.client();
    let now = SystemTime::now();
    let nodes = futures::future::join_all(status.nodes.into_iter().map(|node| async move {
        let stale = node
            .last_echo
            .as_deref()
            .and_then(|t| OffsetDateTime::parse(t, &Rfc3339).ok())
            .is_some_and(|t| SystemTime::from(t) + STALE_AFTER < now);
        // A fresh echo comes only from an unsealed node; a silent one is
        // asked (sealed: null when it cannot be reached).
        let sealed = if stale {
            probe_sealed(client, &node.api_address).await
        } else {
            Some(false)
        };
        let mut value = serde_json::to_value(&node).unwrap_or(Value::Null);
        if let Value::Object(map) = &mut value {
            map.insert("sealed".into(), json!(sealed));
        }
        value
    }))
    .await;
    Ok(ok(&sys_envelope(
        &request.request_id,
        json!({ "nodes": nodes }),
    )))
}

async fn probe_sealed(client: &reqwest::Client, api_address: &str) -> Option<bool> {
    let url = format!("{}/v1/sys/seal-status", api_address.trim_end_matches('/'));
    let body: Value = client
        .get(url)
        .timeout(PROBE_TIMEOUT)
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()?;
    body.get("sealed").and_then(Value::as_bool)
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct EchoBody {
    echo: String,
}

/// `PUT sys/ha-status/echo`: a standby's report.
pub(crate) fn echo(state: &AppState, request: &ApiRequest) -> Result<Response, HttpError> {
    let body: EchoBody = request.parse()?;
    let sealed = B64
        .decode(body.echo.trim())
        .map_err(|_| HttpError::bad_request("\"echo\" must be the base64 of a standby's echo"))?;
    state.core.receive_ha_echo(&sealed)?;
    Ok(no_content())
}
