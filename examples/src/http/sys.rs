//! The `sys/*` endpoints the core serves itself (seal lifecycle, health,
//! keys, metrics). `sys/mounts*` and `sys/internal/ui/mounts/*` belong to
//! the logical router and are not handled here.
//!
//! Bodies and field names are Vault's, so `vault`, `bao` and `hvac` work
//! unchanged.

use axum::http::Method;
use axum::response::Response;
use serde::Deserialize;
use serde_json::json;
use strongroom::logical::Operation;
use strongroom::{InitParams, RekeyParams};

use super::health::HealthCodes;
use super::response::{self, HttpError, json_response, no_content, ok, sys_envelope};
use super::{ApiRequest, AppState};
use crate::metrics::{Format, NodeSample, OPENMETRICS_CONTENT_TYPE, PROMETHEUS_CONTENT_TYPE};

/// Answers `request` if it is one of the core's `sys/*` endpoints;
/// `Ok(None)` hands it to the logical router.
///
/// # Errors
///
/// The HTTP error to answer with (400 bad input, 403 token, 405 method,
/// 503 sealed, ...).
pub(crate) async fn handle(
    state: &AppState,
    request: &ApiRequest,
) -> Result<Option<Response>, HttpError> {
    let method = &request.method;
    let is_write = *method == Method::PUT || *method == Method::POST;
    let response = match request.path.as_str() {
        "sys/init" => match method.as_str() {
            "GET" => init_status(state).await?,
            "PUT" | "POST" => init(state, request).await?,
            _ => return Err(HttpError::method_not_allowed()),
        },
        "sys/seal-status" => {
            only(method, &[Method::GET])?;
            ok(&state.core.seal_status().await?)
        }
        "sys/seal-backend-status" => {
            only(method, &[Method::GET])?;
            ok(&state.core.seal_backend_status())
        }
        "sys/unseal" => {
            if !is_write {
                return Err(HttpError::method_not_allowed());
            }
            unseal(state, request).await?
        }
        "sys/health" => health(state, request).await?,
        "sys/ha-status" => {
            only(method, &[Method::GET])?;
            super::ha_status::ha_status(state, request).await?
        }
        // Not Vault: a standby's report to the active node.
        "sys/ha-status/echo" => {
            if !is_write {
                return Err(HttpError::method_not_allowed());
            }
            super::ha_status::echo(state, request)?
        }
        // Not Vault: what the auto-unseal loop is doing (state, last
        // error, next attempt), without a token like seal-status.
        "sys/auto-unseal-status" => {
            only(method, &[Method::GET])?;
            ok(&state.core.auto_unseal_status())
        }
        "sys/leader" => {
            only(method, &[Method::GET])?;
            ok(&state.core.leader().await?)
        }
        "sys/seal" => {
            if !is_write {
                return Err(HttpError::method_not_allowed());
            }
            state.core.seal(request.token_str()).await?;
            no_content()
        }
        "sys/step-down" => {
            if !is_write {
                return Err(HttpError::method_not_allowed());
            }
            step_down(state, request).await?
        }
        "sys/rotate" => {
            if !is_write {
                return Err(HttpError::method_not_allowed());
            }
            state.core.rotate(request.token_str()).await?;
            no_content()
        }
        "sys/rotate/config" => rotate_config(state, request).await?,
        "sys/key-status" => {
            only(method, &[Method::GET])?;
            let status = state.core.key_status(request.token_str()).await?;
            ok(&sys_envelope(&request.request_id, json!(status)))
        }
        // Vault's unauthenticated paths (vault CLI, hvac) answer bare JSON;
        // OpenBao's authenticated ones (the bao CLI) the usual envelope.
        "sys/generate-root/attempt" => generate_root_attempt(state, request, false).await?,
        "sys/generate-root/update" => generate_root_update(state, request, false).await?,
        "sys/generate-root-token/attempt" => generate_root_attempt(state, request, true).await?,
        "sys/generate-root-token/update" => generate_root_update(state, request, true).await?,
        "sys/decode-token" => {
            if !is_write {
                return Err(HttpError::method_not_allowed());
            }
            decode_token(request)?
        }
        "sys/metrics" => {
            only(method, &[Method::GET])?;
            metrics(state, request).await?
        }
        "sys/strongroom/adopt" => adopt(state, request).await?,
        path => {
            if let Some(step) = path.strip_prefix("sys/rekey/") {
                rekey(state, request, step, false).await?
            } else if let Some(step) = path.strip_prefix("sys/rekey-recovery-key/") {
                rekey(state, request, step, true).await?
            } else {
                return Ok(None);
            }
        }
    };
    Ok(Some(response))
}

fn only(method: &Method, allowed: &[Method]) -> Result<(), HttpError> {
    if allowed.contains(method) {
        Ok(())
    } else {
        Err(HttpError::method_not_allowed())
    }
}

async fn init_status(state: &AppState) -> Result<Response, HttpError> {
    let status = state.core.seal_status().await?;
    Ok(ok(&json!({ "initialized": status.initialized })))
}

async fn init(state: &AppState, request: &ApiRequest) -> Result<Response, HttpError> {
    let mut params: InitParams = request.parse()?;
    // Choosing the root token's id is a -dev convenience, not an API feature.
    params.root_token_id = None;
    let result = state.core.init(params).await?;
    tracing::info!(
        keys = result.keys.len(),
        recovery_keys = result.recovery_keys.len(),
        "vault initialized through sys/init"
    );
    Ok(ok(&result))
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct UnsealBody {
    key: Option<String>,
    reset: bool,
    migrate: bool,
}

async fn unseal(state: &AppState, request: &ApiRequest) -> Result<Response, HttpError> {
    let body: UnsealBody = request.parse()?;
    let key = body.key.map(zeroize::Zeroizing::new);
    let status = if body.reset {
        state.core.unseal_reset().await?
    } else {
        match key.as_deref() {
            Some(key) if !key.trim().is_empty() && body.migrate => {
                state.core.unseal_migrate(key.trim()).await?
            }
            Some(key) if !key.trim().is_empty() => state.core.unseal(key.trim()).await?,
            _ => {
                return Err(HttpError::bad_request(
                    "'key' must be specified in request body as JSON, or 'reset' set to true",
                ));
            }
        }
    };
    Ok(ok(&status))
}

async fn health(state: &AppState, request: &ApiRequest) -> Result<Response, HttpError> {
    let head = request.method == Method::HEAD;
    if !head && request.method != Method::GET {
        return Err(HttpError::method_not_allowed());
    }
    let codes = match HealthCodes::from_query(&request.query) {
        Ok(codes) => codes,
        // Vault answers a bad override with 400 and no body on HEAD.
        Err(err) if head => return Ok(response::empty(err.status)),
        Err(err) => return Err(err),
    };
    let status = state.core.health().await;
    let code = codes.code_for(&status);
    if head {
        return Ok(response::empty(code));
    }
    Ok(json_response(code, &status))
}

/// `sys/step-down` on the active node (a standby forwarded it here): give
/// up the lock; answered once it is released and another node can take it.
async fn step_down(state: &AppState, request: &ApiRequest) -> Result<Response, HttpError> {
    state.core.step_down(request.token_str()).await?;
    Ok(no_content())
}

async fn rotate_config(state: &AppState, request: &ApiRequest) -> Result<Response, HttpError> {
    match request.method.as_str() {
        "GET" => {
            let config = state.core.rotation_config(request.token_str()).await?;
            Ok(ok(&sys_envelope(&request.request_id, json!(config))))
        }
        "PUT" | "POST" => {
            let update: strongroom::RotationConfigUpdate = request.parse()?;
            state
                .core
                .set_rotation_config(request.token_str(), update)
                .await?;
            Ok(no_content())
        }
        _ => Err(HttpError::method_not_allowed()),
    }
}

#[derive(Default, Deserialize)]
#[serde(default)]
struct GenerateRootInitBody {
    otp: Option<String>,
    pgp_key: Option<String>,
}

/// The generate-root status as Vault (bare) or OpenBao (`data` envelope)
/// answers it.
fn generate_root_response(
    request: &ApiRequest,
    status: &strongroom::GenerateRootStatus,
    enveloped: bool,
) -> Response {
    if enveloped {
        ok(&sys_envelope(&request.request_id, json!(status)))
    } else {
        ok(status)
    }
}

/// `sys/generate-root/attempt` (Vault, no token) and
/// `sys/generate-root-token/attempt` (OpenBao, token required).
async fn generate_root_attempt(
    state: &AppState,
    request: &ApiRequest,
    authenticated: bool,
) -> Result<Response, HttpError> {
    if authenticated {
        let op = match request.method.as_str() {
            "GET" => Operation::Read,
            "DELETE" => Operation::Delete,
            _ => Operation::Update,
        };
        state
            .core
            .authorize(request.token_str(), op, &request.path)
            .await?;
    }
    match request.method.as_str() {
        "GET" => {
            let status = state.core.generate_root_status().await?;
            Ok(generate_root_response(request, &status, authenticated))
        }
        "PUT" | "POST" => {
            let body: GenerateRootInitBody = request.parse()?;
            // Moved into a wiping buffer at once.
            let otp = body.otp.map(zeroize::Zeroizing::new);
            let status = state
                .core
                .generate_root_init(otp.as_deref().map(String::as_str), body.pgp_key.as_deref())
                .await?;
            Ok(generate_root_response(request, &status, authenticated))
        }
        "DELETE" => {
            state.core.generate_root_cancel().await?;
            Ok(no_content())
        }
        _ => Err(HttpError::method_not_allowed()),
    }
}

/// `sys/generate-root/update` and `sys/generate-root-token/update`.
async fn generate_root_update(
    state: &AppState,
    request: &ApiRequest,
    authenticated: bool,
) -> Result<Response, HttpError> {
    if request.method != Method::PUT && request.method != Method::POST {
        return Err(HttpError::method_not_allowed());
    }
    if authenticated {
        state
            .core
            .authorize(request.token_str(), Operation::Update, &request.path)
            .await?;
    }
    let (key, nonce) = request.parse::<RekeyKeyBody>()?.parts()?;
    let status = state.core.generate_root_update(key.trim(), &nonce).await?;
    Ok(generate_root_response(request, &status, authenticated))
}

#[derive(Default, Deserialize)]
#[serde(default)]
struct DecodeTokenBody {
    encoded_token: String,
    otp: String,
}

/// `sys/decode-token` (Vault 1.13+): XOR-decodes a generated root token
/// with its OTP, so clients need not do it themselves.
fn decode_token(request: &ApiRequest) -> Result<Response, HttpError> {
    let body: DecodeTokenBody = request.parse()?;
    let (encoded, otp) = (
        zeroize::Zeroizing::new(body.encoded_token),
        zeroize::Zeroizing::new(body.otp),
    );
    let token = strongroom::decode_root_token(&encoded, &otp)?;
    Ok(ok(&sys_envelope(
        &request.request_id,
        json!({ "token": token.as_str() }),
    )))
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct AdoptBody {
    confirm: bool,
}

/// Not Vault: `sys/strongroom/adopt`. GET tells whether this node serves a
/// Vault data set read-only; PUT with `{"confirm": true}` and a root token
/// runs the one-way upgrade to Strongroom's layout
/// (`strongroom operator adopt`).
async fn adopt(state: &AppState, request: &ApiRequest) -> Result<Response, HttpError> {
    match request.method.as_str() {
        "GET" => {
            state.core.check_token(request.token_str()).await?;
            let read_only = state.core.is_read_only_takeover();
            Ok(ok(&sys_envelope(
                &request.request_id,
                json!({ "read_only_takeover": read_only }),
            )))
        }
        "PUT" | "POST" => {
            let body: AdoptBody = request.parse()?;
            if !body.confirm {
                return Err(HttpError::bad_request(
                    "the upgrade of a Vault data set is one-way: Vault can no longer read it \
                     afterwards; back it up first (consul kv export <prefix>) and send \
                     {\"confirm\": true} to proceed",
                ));
            }
            let report = state.core.adopt_vault(request.token_str()).await?;
            tracing::warn!(
                upgraded = report.upgraded,
                "the Vault data set was upgraded to Strongroom's layout through sys/strongroom/adopt"
            );
            Ok(ok(&sys_envelope(
                &request.request_id,
                json!({
                    "upgraded": report.upgraded,
                    "not_carried_over": report.not_carried_over,
                }),
            )))
        }
        _ => Err(HttpError::method_not_allowed()),
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RekeyKeyBody {
    key: Option<String>,
    nonce: Option<String>,
}

impl RekeyKeyBody {
    fn parts(self) -> Result<(zeroize::Zeroizing<String>, String), HttpError> {
        let key = self
            .key
            .filter(|k| !k.trim().is_empty())
            .map(zeroize::Zeroizing::new)
            .ok_or_else(|| {
                HttpError::bad_request("'key' must be specified in request body as JSON")
            })?;
        let nonce = self.nonce.filter(|n| !n.trim().is_empty()).ok_or_else(|| {
            HttpError::bad_request("'nonce' must be specified in request body as JSON")
        })?;
        Ok((key, nonce))
    }
}

async fn rekey(
    state: &AppState,
    request: &ApiRequest,
    step: &str,
    recovery: bool,
) -> Result<Response, HttpError> {
    let core = &state.core;
    match (step, request.method.as_str()) {
        ("init", "GET") => Ok(ok(&core.rekey_status(recovery).await?)),
        ("init", "PUT" | "POST") => {
            let params: RekeyParams = request.parse()?;
            Ok(ok(&core.rekey_init(params, recovery).await?))
        }
        ("init", "DELETE") => {
            core.rekey_cancel(recovery).await?;
            Ok(no_content())
        }
        ("update", "PUT" | "POST") => {
            let (key, nonce) = request.parse::<RekeyKeyBody>()?.parts()?;
            Ok(ok(&core.rekey_update(key.trim(), &nonce, recovery).await?))
        }
        ("verify", "GET") => Ok(ok(&core.rekey_verify_status(recovery).await?)),
        ("verify", "PUT" | "POST") => {
            let (key, nonce) = request.parse::<RekeyKeyBody>()?.parts()?;
            Ok(ok(&core.rekey_verify(key.trim(), &nonce, recovery).await?))
        }
        ("init" | "update" | "verify", _) => Err(HttpError::method_not_allowed()),
        _ => Err(HttpError::not_found()),
    }
}

async fn metrics(state: &AppState, request: &ApiRequest) -> Result<Response, HttpError> {
    // Tokens live behind the barrier: a sealed node can only be scraped
    // when the listener allows unauthenticated metrics (as in Vault).
    if !state.unauthenticated_metrics {
        state
            .core
            .authorize(request.token_str(), Operation::Read, "sys/metrics")
            .await?;
    }
    let format = Format::negotiate(
        request.query.get("format").map(String::as_str),
        request.accept.as_deref(),
    )
    .map_err(HttpError::bad_request)?;
    let node = node_sample(state).await;
    let content_type = match format {
        Format::Json => return Ok(ok(&state.metrics.json(&node))),
        Format::Prometheus => PROMETHEUS_CONTENT_TYPE,
        Format::OpenMetrics => OPENMETRICS_CONTENT_TYPE,
    };
    if !state.metrics.prometheus_enabled() {
        return Err(HttpError::bad_request(
            "prometheus is not enabled: set telemetry { prometheus_retention_time = \"30s\" } (0 disables it)",
        ));
    }
    let body = state
        .metrics
        .text(format, &node)
        .map_err(|_| HttpError::new(500, "encoding the metrics failed"))?;
    Ok(response::text(200, body, content_type))
}

/// What the metrics sample from the core at scrape time.
async fn node_sample(state: &AppState) -> NodeSample {
    let core = state.core.metrics().await;
    let health = state.core.health().await;
    let node = state.core.node_state();
    NodeSample {
        // The lock holder, or any unsealed node without HA (Vault's HAState).
        active: !node.sealed && node.mode.serves(),
        cluster: health.cluster_name,
        core,
    }
}
